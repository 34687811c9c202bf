// emu_api.cpp — a C ABI over the host launchers for the CPU emulator build (g++ -DHGK_EMULATE):
// hgnet_kernels/kernels/cuda/emulator.py loads it with ctypes and passes CPU tensors' pointers. The
// launchers and kernels are the very ones nvcc compiles; only this thin entry layer differs from
// the torch bindings. Each call returns 0, or 1 with the message left in hgk_emu_last_error().
#include <stdexcept>
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

int hgk_emu_conv_path(int dtype, int arch, int tf32x3) {
  return hgk::conv_path(static_cast<hgk::DType>(dtype), arch, tf32x3 != 0);
}

// Writes the sm_80+ tiles instantiated for dtype, 5 values each (bm, bn, warps_m, warps_n, stages),
// into out (room for `capacity` tiles); returns how many there are.
int hgk_emu_conv_mma_tiles(int dtype, int64_t* out, int capacity) {
  const auto tiles = hgk::conv_mma_tiles(static_cast<hgk::DType>(dtype));
  for (int i = 0; i < static_cast<int>(tiles.size()) && i < capacity; ++i) {
    const auto& t = tiles[i];
    const int64_t values[5] = {t.bm, t.bn, t.warps_m, t.warps_n, t.stages};
    for (int j = 0; j < 5; ++j) out[5 * i + j] = values[j];
  }
  return static_cast<int>(tiles.size());
}

int hgk_emu_conv_mma_k_step() { return hgk::conv_mma_k_step(); }

// tile: bm, bn, warps_m, warps_n, stages, splits (the sm_80+ kernel's; ignored by the others);
// psum_tiles: psum's rows per image, which must be hgk::conv_psum_tiles (as the bindings check).
int hgk_emu_conv_bn_act(void* x, const int64_t* x_dims, void* y, const int64_t* y_dims, const void* weight,
                        const void* bias, float* psum, int64_t psum_tiles, int dtype, int kernel, int stride,
                        int pad_top, int pad_left, int relu, int affine, float affine_a, float affine_c, void* residual,
                        const int64_t* residual_dims, int arch, const int64_t* tile, float* workspace,
                        int64_t workspace_floats, int tf32x3) {
  return guarded([&] {
    hgk::ConvArgs a;
    a.x = view(x, x_dims);
    a.y = view(y, y_dims);
    a.weight = weight;
    a.bias = bias;
    a.psum = psum;
    a.psum_tiles = psum_tiles;
    a.dtype = static_cast<hgk::DType>(dtype);
    a.kernel = kernel;
    a.stride = stride;
    a.pad_top = pad_top;
    a.pad_left = pad_left;
    a.relu = relu != 0;
    a.affine = affine != 0;
    a.affine_a = affine_a;
    a.affine_c = affine_c;
    const hgk::View4 res = residual ? view(residual, residual_dims) : hgk::View4{};
    a.residual = residual ? &res : nullptr;
    a.arch = arch;
    a.tf32x3 = tf32x3 != 0;
    a.tile = hgk::ConvTile{static_cast<int>(tile[0]), static_cast<int>(tile[1]), static_cast<int>(tile[2]),
                           static_cast<int>(tile[3]), static_cast<int>(tile[4]), static_cast<int>(tile[5])};
    a.workspace = workspace;
    a.workspace_floats = workspace_floats;
    if (hgk::conv_path(a.dtype, arch, a.tf32x3) == 2 && !hgk::conv_tile_supported(a.dtype, a.tile))
      throw std::invalid_argument("conv: tile configuration not instantiated");
    if (psum != nullptr && psum_tiles != hgk::conv_psum_tiles(a))
      throw std::invalid_argument("conv: psum has " + std::to_string(psum_tiles) + " rows per image, the kernel " +
                                  "writes " + std::to_string(hgk::conv_psum_tiles(a)) + " (hgk::conv_psum_tiles)");
    if (hgk::conv_workspace_floats(a) > workspace_floats)
      throw std::invalid_argument("conv: the split-K workspace is too small");
    hgk::conv_bn_act(a, nullptr);
  });
}

int hgk_emu_depthwise_conv(void* x, const int64_t* x_dims, void* y, const int64_t* y_dims, const void* weight,
                           const void* bias, int dtype, int kernel, int stride_h, int stride_w, int pad_top,
                           int pad_left, int relu, int affine, float affine_a, float affine_c) {
  return guarded([&] {
    hgk::Epilogue e;
    e.relu = relu != 0;
    e.affine = affine != 0;
    e.a = affine_a;
    e.c = affine_c;
    hgk::depthwise_conv(view(x, x_dims), view(y, y_dims), weight, bias, static_cast<hgk::DType>(dtype), kernel,
                        stride_h, stride_w, pad_top, pad_left, e, nullptr);
  });
}

int hgk_emu_max_pool(void* x, const int64_t* x_dims, void* y, const int64_t* y_dims, int dtype, int kernel,
                     int stride, int pad_top, int pad_left, int zero_pad) {
  return guarded([&] {
    hgk::max_pool(view(x, x_dims), view(y, y_dims), static_cast<hgk::DType>(dtype), kernel, stride, pad_top,
                  pad_left, zero_pad != 0, nullptr);
  });
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

// Whether the memory-bound kernels can take 8 channels at a time of this view (16-byte accesses).
int hgk_emu_channels_vectorizable(void* data, const int64_t* dims) {
  return hgk::channels_vectorizable(view(data, dims)) ? 1 : 0;
}

// The largest count or offset the launchers index in int32; -1 restores the GPU's limit.
int hgk_emu_set_int32_index_limit(int64_t limit) {
  hgk_emu::int32_index_limit_override() = limit;
  return 0;
}

int hgk_emu_ptx_probe(int probe, const void* in, void* out) {
  return guarded([&] { hgk::ptx_probe(static_cast<hgk::PtxProbe>(probe), in, out, nullptr); });
}

}  // extern "C"
