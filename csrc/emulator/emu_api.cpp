// emu_api.cpp — a C ABI over the host launchers for the CPU emulator build (g++ -DHGK_EMULATE):
// hgnet_kernels/kernels/cuda/emulator.py loads it with ctypes and passes CPU tensors' pointers. The
// launchers and kernels are the very ones nvcc compiles; only this thin entry layer differs from
// the torch bindings. Each call returns 0, or 1 with the message left in hgk_emu_last_error().
#include <string>

#include "../ops.h"

namespace {
std::string last_error;

hgk::View4 view(void* data, const int64_t* dims) {  // dims: n, c, h, w, sn, sc, sh, sw
  return hgk::View4{data, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7]};
}

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}
}  // namespace

extern "C" {

const char* hgk_emu_last_error() { return last_error.c_str(); }

int hgk_emu_conv_tile_rows(int dtype, int arch) { return hgk::conv_tile_rows(static_cast<hgk::DType>(dtype), arch); }

int hgk_emu_conv_bn_act(void* x, const int64_t* x_dims, void* y, const int64_t* y_dims, const void* weight,
                        const void* bias, float* psum, int dtype, int kernel, int stride, int relu, int arch) {
  return guarded([&] {
    hgk::ConvArgs a{view(x, x_dims), view(y, y_dims), weight, bias, psum, static_cast<hgk::DType>(dtype),
                    kernel, stride, relu != 0, arch};
    hgk::conv_bn_act(a, nullptr);
  });
}

int hgk_emu_depthwise_conv(void* x, const int64_t* x_dims, void* y, const int64_t* y_dims, const void* weight,
                           const void* bias, int dtype, int stride) {
  return guarded([&] {
    hgk::depthwise_conv(view(x, x_dims), view(y, y_dims), weight, bias, static_cast<hgk::DType>(dtype), stride,
                        nullptr);
  });
}

int hgk_emu_max_pool(void* x, const int64_t* x_dims, void* y, const int64_t* y_dims, int dtype) {
  return guarded([&] { hgk::max_pool(view(x, x_dims), view(y, y_dims), static_cast<hgk::DType>(dtype), nullptr); });
}

int hgk_emu_ese_gate(const float* psum, int64_t n, int64_t tiles, int64_t c, const void* weight, const void* bias,
                     int dtype, float inv_hw, float* gate) {
  return guarded([&] {
    hgk::ese_gate(psum, n, tiles, c, weight, bias, static_cast<hgk::DType>(dtype), inv_hw, gate, nullptr);
  });
}

int hgk_emu_scale_residual(void* y, const int64_t* y_dims, const float* gate, void* identity,
                           const int64_t* identity_dims, void* out, const int64_t* out_dims, int dtype) {
  return guarded([&] {
    hgk::View4 id = identity ? view(identity, identity_dims) : hgk::View4{};
    hgk::scale_residual(view(y, y_dims), gate, identity ? &id : nullptr, view(out, out_dims),
                        static_cast<hgk::DType>(dtype), nullptr);
  });
}

}  // extern "C"
