// bindings.cpp — torch entry points of the CUDA ops. Every argument is checked here (device, dtype,
// rank, shapes, slice bounds) with a message that says what to fix, before anything launches; the
// work then runs on the current CUDA stream under a guard for the tensors' device.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "ops.h"

namespace {

hgk::DType dtype_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return hgk::DType::f32;
    case at::kHalf: return hgk::DType::f16;
    case at::kBFloat16: return hgk::DType::bf16;
    default: TORCH_CHECK(false, name, ": dtype ", t.scalar_type(), " is not supported (float32, float16, bfloat16)");
  }
  return hgk::DType::f32;
}

void check_cuda(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got ", t.device(), "; move it with .cuda()");
  TORCH_CHECK(t.device() == like.device(), name, " is on ", t.device(), " but the input is on ", like.device());
}

hgk::View4 view_of(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, name, ": expected a 4-D (N, C, H, W) tensor, got ", t.sizes());
  return hgk::View4{t.data_ptr(), t.size(0), t.size(1), t.size(2), t.size(3),
                    t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

int64_t out_size(int64_t size, int64_t kernel, int64_t stride) { return (size + 2 * (kernel / 2) - kernel) / stride + 1; }

void check_out(const at::Tensor& out, const at::Tensor& x, at::IntArrayRef expected) {
  check_cuda(out, "out", x);
  TORCH_CHECK(out.sizes() == expected, "out: expected shape ", expected, ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "out: expected ", x.scalar_type(), ", got ", out.scalar_type());
}

void check_vector(const at::Tensor& t, const char* name, int64_t size, const at::Tensor& x) {
  check_cuda(t, name, x);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == size && t.is_contiguous(), name, ": expected a contiguous (", size,
              ",) tensor, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, ": expected ", x.scalar_type(), ", got ", t.scalar_type());
}

int64_t conv_tile_rows(int64_t dtype, int64_t arch) {
  return hgk::conv_tile_rows(static_cast<hgk::DType>(dtype), static_cast<int>(arch));
}

void conv_bn_act(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride, bool relu,
                 const at::Tensor& out, const c10::optional<at::Tensor>& psum, int64_t arch) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  const auto dtype = dtype_of(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D (N, C, H, W) tensor, got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == weight.size(1) && (weight.size(0) == 1 || weight.size(0) == 3) &&
                  weight.is_contiguous(),
              "weight: expected a contiguous (k, k, C_in, C_out) tensor with k 1 or 3, got ", weight.sizes());
  check_cuda(weight, "weight", x);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight: expected ", x.scalar_type());
  TORCH_CHECK(weight.size(2) == x.size(1), "x has ", x.size(1), " channels but weight expects ", weight.size(2));
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2, got ", stride);
  const int64_t k = weight.size(0), c_out = weight.size(3);
  check_vector(bias, "bias", c_out, x);
  check_out(out, x, {x.size(0), c_out, out_size(x.size(2), k, stride), out_size(x.size(3), k, stride)});
  float* psum_ptr = nullptr;
  if (psum.has_value()) {
    const int64_t rows = hgk::conv_tile_rows(dtype, static_cast<int>(arch));
    const int64_t tiles = (out.size(2) * out.size(3) + rows - 1) / rows;
    check_cuda(*psum, "psum", x);
    TORCH_CHECK(psum->scalar_type() == at::kFloat && psum->is_contiguous() &&
                    psum->sizes() == at::IntArrayRef({x.size(0), tiles, c_out}),
                "psum: expected a contiguous float32 (", x.size(0), ", ", tiles, ", ", c_out, ") tensor, got ",
                psum->sizes());
    psum_ptr = psum->data_ptr<float>();
  }
  const c10::cuda::CUDAGuard guard(x.device());
  hgk::ConvArgs a{view_of(x, "x"), view_of(out, "out"), weight.data_ptr(), bias.data_ptr(), psum_ptr, dtype,
                  static_cast<int>(k), static_cast<int>(stride), relu, static_cast<int>(arch)};
  hgk::conv_bn_act(a, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void depthwise_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride,
                    const at::Tensor& out) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  const auto dtype = dtype_of(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D (N, C, H, W) tensor, got ", x.sizes());
  check_cuda(weight, "weight", x);
  TORCH_CHECK(weight.sizes() == at::IntArrayRef({3, 3, x.size(1)}) && weight.is_contiguous() &&
                  weight.scalar_type() == x.scalar_type(),
              "weight: expected a contiguous (3, 3, ", x.size(1), ") ", x.scalar_type(), " tensor, got ", weight.sizes());
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2, got ", stride);
  check_vector(bias, "bias", x.size(1), x);
  check_out(out, x, {x.size(0), x.size(1), out_size(x.size(2), 3, stride), out_size(x.size(3), 3, stride)});
  const c10::cuda::CUDAGuard guard(x.device());
  hgk::depthwise_conv(view_of(x, "x"), view_of(out, "out"), weight.data_ptr(), bias.data_ptr(), dtype,
                      static_cast<int>(stride), at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void max_pool(const at::Tensor& x, const at::Tensor& out) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  const auto dtype = dtype_of(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D (N, C, H, W) tensor, got ", x.sizes());
  check_out(out, x, {x.size(0), x.size(1), out_size(x.size(2), 3, 2), out_size(x.size(3), 3, 2)});
  const c10::cuda::CUDAGuard guard(x.device());
  hgk::max_pool(view_of(x, "x"), view_of(out, "out"), dtype, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void ese_gate(const at::Tensor& psum, const at::Tensor& weight, const at::Tensor& bias, int64_t hw,
              const at::Tensor& gate) {
  TORCH_CHECK(psum.is_cuda() && psum.dim() == 3 && psum.scalar_type() == at::kFloat && psum.is_contiguous(),
              "psum: expected a contiguous float32 CUDA (N, tiles, C) tensor, got ", psum.sizes(), " on ",
              psum.device());
  const int64_t n = psum.size(0), c = psum.size(2);
  check_cuda(weight, "weight", psum);
  const auto dtype = dtype_of(weight, "weight");
  TORCH_CHECK(weight.sizes() == at::IntArrayRef({c, c}) && weight.is_contiguous(),
              "weight: expected a contiguous (", c, ", ", c, ") tensor, got ", weight.sizes());
  check_vector(bias, "bias", c, weight);
  TORCH_CHECK(hw > 0, "hw must be positive, got ", hw);
  check_cuda(gate, "gate", psum);
  TORCH_CHECK(gate.sizes() == at::IntArrayRef({n, c}) && gate.scalar_type() == at::kFloat && gate.is_contiguous(),
              "gate: expected a contiguous float32 (", n, ", ", c, ") tensor, got ", gate.sizes());
  const c10::cuda::CUDAGuard guard(psum.device());
  hgk::ese_gate(psum.data_ptr<float>(), n, psum.size(1), c, weight.data_ptr(), bias.data_ptr(), dtype,
                1.0f / static_cast<float>(hw), gate.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void scale_residual(const at::Tensor& y, const at::Tensor& gate, const c10::optional<at::Tensor>& identity,
                    const at::Tensor& out) {
  TORCH_CHECK(y.is_cuda(), "y must be a CUDA tensor, got ", y.device());
  const auto dtype = dtype_of(y, "y");
  TORCH_CHECK(y.dim() == 4, "y: expected a 4-D (N, C, H, W) tensor, got ", y.sizes());
  check_cuda(gate, "gate", y);
  TORCH_CHECK(gate.sizes() == at::IntArrayRef({y.size(0), y.size(1)}) && gate.scalar_type() == at::kFloat &&
                  gate.is_contiguous(),
              "gate: expected a contiguous float32 (", y.size(0), ", ", y.size(1), ") tensor, got ", gate.sizes());
  hgk::View4 id_view{};
  if (identity.has_value()) {
    check_cuda(*identity, "identity", y);
    TORCH_CHECK(identity->sizes() == y.sizes() && identity->scalar_type() == y.scalar_type(),
                "identity: expected ", y.sizes(), " ", y.scalar_type(), ", got ", identity->sizes());
    id_view = view_of(*identity, "identity");
  }
  check_out(out, y, y.sizes());
  const c10::cuda::CUDAGuard guard(y.device());
  hgk::scale_residual(view_of(y, "y"), gate.data_ptr<float>(), identity.has_value() ? &id_view : nullptr,
                      view_of(out, "out"), dtype, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hgnet_kernels CUDA ops (see csrc/*.cu)";
  m.def("conv_tile_rows", &conv_tile_rows, "pixel rows per conv tile for (dtype code, arch)");
  m.def("conv_bn_act", &conv_bn_act, "fused conv + folded BN + ReLU (+ ESE partial sums)");
  m.def("depthwise_conv", &depthwise_conv, "depthwise 3x3 conv + folded BN");
  m.def("max_pool", &max_pool, "3x3 stride-2 max pool");
  m.def("ese_gate", &ese_gate, "ESE gate from partial sums");
  m.def("scale_residual", &scale_residual, "y * gate (+ identity)");
}
