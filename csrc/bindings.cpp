// bindings.cpp — torch entry points of the CUDA ops. What the family runs (kernel sizes, strides,
// epilogues) is one table in Python (hgnet_kernels/kernels/cuda/capabilities.py), checked by the
// launchers; here only what keeps the kernels' memory accesses in bounds is checked (device, dtype,
// rank, shapes, slice bounds, instantiated tiles, workspace sizes), with a message that says what to
// fix, before anything launches. The work then runs on the current CUDA stream under a guard for
// the tensors' device.
// Only what the bindings use, not <torch/extension.h> (all of libtorch's C++ API): this file then
// compiles in ~23 s of CPU instead of ~64, on every first JIT build and every cold CI run.
#include <ATen/cuda/CUDAContextLight.h>  // at::cuda::getCurrentCUDAStream
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with the at::Tensor and optional casters

#include <vector>

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

// The extent of a k×k window with stride s over `size` padded by `before` and `after`: the output
// shape the Python launchers allocate by hgnet_kernels.plan.output_size, recomputed here only to
// keep a wrong `out` from being written out of bounds.
int64_t out_size(int64_t size, int64_t kernel, int64_t stride, int64_t before, int64_t after) {
  return (size + before + after - kernel) / stride + 1;
}

// padding: (top, bottom, left, right), each in [0, kernel); default kernel / 2 all round.
std::vector<int64_t> check_padding(const c10::optional<std::vector<int64_t>>& padding, int64_t kernel) {
  if (!padding.has_value()) return std::vector<int64_t>(4, kernel / 2);
  TORCH_CHECK(padding->size() == 4, "padding must be (top, bottom, left, right), got ", padding->size(), " values");
  for (int64_t p : *padding)
    TORCH_CHECK(p >= 0 && p < kernel, "padding must be (top, bottom, left, right), each in [0, ", kernel, "), got ",
                at::IntArrayRef(*padding));
  return *padding;
}

void check_out(const at::Tensor& out, const at::Tensor& x, at::IntArrayRef expected) {
  check_cuda(out, "out", x);
  TORCH_CHECK(expected[2] > 0 && expected[3] > 0, "the input is too small for this window: output shape ", expected);
  TORCH_CHECK(out.sizes() == expected, "out: expected shape ", expected, ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "out: expected ", x.scalar_type(), ", got ", out.scalar_type());
}

void check_vector(const at::Tensor& t, const char* name, int64_t size, const at::Tensor& x) {
  check_cuda(t, name, x);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == size && t.is_contiguous(), name, ": expected a contiguous (", size,
              ",) tensor, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, ": expected ", x.scalar_type(), ", got ", t.scalar_type());
}

// affine: (scale, shift) or none.
void check_affine(const c10::optional<std::vector<double>>& affine, bool& on, float& a, float& c) {
  on = affine.has_value();
  a = 1.f, c = 0.f;
  if (on) {
    TORCH_CHECK(affine->size() == 2, "affine must be (scale, shift), got ", affine->size(), " values");
    a = static_cast<float>((*affine)[0]);
    c = static_cast<float>((*affine)[1]);
  }
}

int64_t conv_path(int64_t dtype, int64_t arch, bool tf32x3) {
  return hgk::conv_path(static_cast<hgk::DType>(dtype), static_cast<int>(arch), tf32x3);
}

std::vector<std::vector<int64_t>> conv_mma_tiles(int64_t dtype) {
  std::vector<std::vector<int64_t>> tiles;
  for (const auto& t : hgk::conv_mma_tiles(static_cast<hgk::DType>(dtype)))
    tiles.push_back({t.bm, t.bn, t.warps_m, t.warps_n, t.stages});
  return tiles;
}

void conv_bn_act(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride, bool relu,
                 const at::Tensor& out, const c10::optional<at::Tensor>& psum, int64_t arch,
                 const c10::optional<std::vector<int64_t>>& padding, const c10::optional<std::vector<double>>& affine,
                 const c10::optional<at::Tensor>& residual, const std::vector<int64_t>& tile,
                 const c10::optional<at::Tensor>& workspace, bool tf32x3) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  const auto dtype = dtype_of(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D (N, C, H, W) tensor, got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == weight.size(1) && weight.size(0) >= 1 && weight.is_contiguous(),
              "weight: expected a contiguous (k, k, C_in, C_out) tensor, got ", weight.sizes());
  check_cuda(weight, "weight", x);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight: expected ", x.scalar_type());
  TORCH_CHECK(weight.size(2) == x.size(1), "x has ", x.size(1), " channels but weight expects ", weight.size(2));
  TORCH_CHECK(stride >= 1, "stride must be positive, got ", stride);
  const int64_t k = weight.size(0), c_out = weight.size(3);
  const auto pad = check_padding(padding, k);
  check_vector(bias, "bias", c_out, x);
  const int64_t ho = out_size(x.size(2), k, stride, pad[0], pad[1]);
  const int64_t wo = out_size(x.size(3), k, stride, pad[2], pad[3]);
  check_out(out, x, {x.size(0), c_out, ho, wo});
  hgk::View4 res_view{};
  if (residual.has_value()) {
    check_cuda(*residual, "residual", x);
    TORCH_CHECK(residual->sizes() == out.sizes() && residual->scalar_type() == x.scalar_type(),
                "residual: expected ", out.sizes(), " ", x.scalar_type(), ", got ", residual->sizes(), " ",
                residual->scalar_type());
    res_view = view_of(*residual, "residual");
  }
  hgk::ConvArgs a;
  a.x = view_of(x, "x");
  a.y = view_of(out, "out");
  a.weight = weight.data_ptr();
  a.bias = bias.data_ptr();
  a.dtype = dtype;
  a.kernel = static_cast<int>(k);
  a.stride = static_cast<int>(stride);
  a.pad_top = static_cast<int>(pad[0]);
  a.pad_left = static_cast<int>(pad[2]);
  a.relu = relu;
  check_affine(affine, a.affine, a.affine_a, a.affine_c);
  a.residual = residual.has_value() ? &res_view : nullptr;
  a.arch = static_cast<int>(arch);
  a.tf32x3 = tf32x3;
  TORCH_CHECK(tile.size() == 6, "tile: expected (BM, BN, WARPS_M, WARPS_N, STAGES, SPLIT_K), got ", tile.size(),
              " values");
  a.tile = hgk::ConvTile{static_cast<int>(tile[0]), static_cast<int>(tile[1]), static_cast<int>(tile[2]),
                         static_cast<int>(tile[3]), static_cast<int>(tile[4]), static_cast<int>(tile[5])};
  if (hgk::conv_path(dtype, a.arch, a.tf32x3) == 2) {
    TORCH_CHECK(hgk::conv_tile_supported(a.dtype, a.tile), "tile: ", at::IntArrayRef(tile),
                " is not an instantiated tile of the sm_80+ conv kernel (csrc/conv_mma.cuh: HGK_MMA_TILES)");
    TORCH_CHECK(x.size(2) < 32768 && x.size(3) < 32768, "x: H and W must be below 32768, got ", x.sizes());
  }
  if (psum.has_value()) {
    const int64_t tiles = hgk::conv_psum_tiles(a);
    check_cuda(*psum, "psum", x);
    TORCH_CHECK(psum->scalar_type() == at::kFloat && psum->is_contiguous() &&
                    psum->sizes() == at::IntArrayRef({x.size(0), tiles, c_out}),
                "psum: expected a contiguous float32 (", x.size(0), ", ", tiles, ", ", c_out, ") tensor, got ",
                psum->sizes(), " (rows per image: hgk::conv_psum_tiles)");
    a.psum = psum->data_ptr<float>();
    a.psum_tiles = tiles;
  }
  const int64_t need = hgk::conv_workspace_floats(a);
  if (need > 0) {
    TORCH_CHECK(workspace.has_value(), "workspace: split-K needs an fp32 workspace of ", need, " elements");
    check_cuda(*workspace, "workspace", x);
    TORCH_CHECK(workspace->scalar_type() == at::kFloat && workspace->is_contiguous() && workspace->numel() >= need,
                "workspace: expected a contiguous float32 tensor of at least ", need, " elements, got ",
                workspace->sizes(), " ", workspace->scalar_type());
    a.workspace = workspace->data_ptr<float>();
    a.workspace_floats = workspace->numel();
  }
  const c10::cuda::CUDAGuard guard(x.device());
  hgk::conv_bn_act(a, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void depthwise_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    const std::vector<int64_t>& stride, const at::Tensor& out, const c10::optional<std::vector<int64_t>>& padding, bool relu,
                    const c10::optional<std::vector<double>>& affine) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  const auto dtype = dtype_of(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D (N, C, H, W) tensor, got ", x.sizes());
  check_cuda(weight, "weight", x);
  const int64_t k = weight.dim() == 3 ? weight.size(0) : 0;
  // The kernel is instantiated for 3 and 5 taps a side: any other k would read past the weight.
  TORCH_CHECK((k == 3 || k == 5) && weight.sizes() == at::IntArrayRef({k, k, x.size(1)}) && weight.is_contiguous() &&
                  weight.scalar_type() == x.scalar_type(),
              "weight: expected a contiguous (k, k, ", x.size(1), ") ", x.scalar_type(), " tensor with k 3 or 5, got ",
              weight.sizes());
  TORCH_CHECK(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, "stride must be (sh, sw), each positive, got ",
              at::IntArrayRef(stride));
  const auto pad = check_padding(padding, k);
  check_vector(bias, "bias", x.size(1), x);
  check_out(out, x, {x.size(0), x.size(1), out_size(x.size(2), k, stride[0], pad[0], pad[1]),
                     out_size(x.size(3), k, stride[1], pad[2], pad[3])});
  hgk::Epilogue e;
  e.relu = relu;
  check_affine(affine, e.affine, e.a, e.c);
  const c10::cuda::CUDAGuard guard(x.device());
  hgk::depthwise_conv(view_of(x, "x"), view_of(out, "out"), weight.data_ptr(), bias.data_ptr(), dtype,
                      static_cast<int>(k), static_cast<int>(stride[0]), static_cast<int>(stride[1]),
                      static_cast<int>(pad[0]), static_cast<int>(pad[2]), e, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void max_pool(const at::Tensor& x, const at::Tensor& out, int64_t kernel, int64_t stride,
              const c10::optional<std::vector<int64_t>>& padding, bool zero_pad) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  const auto dtype = dtype_of(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D (N, C, H, W) tensor, got ", x.sizes());
  TORCH_CHECK(kernel >= 1 && stride >= 1, "max pool: kernel and stride must be positive, got ", kernel, " and ",
              stride);
  const auto pad = check_padding(padding, kernel);
  check_out(out, x, {x.size(0), x.size(1), out_size(x.size(2), kernel, stride, pad[0], pad[1]),
                     out_size(x.size(3), kernel, stride, pad[2], pad[3])});
  const c10::cuda::CUDAGuard guard(x.device());
  hgk::max_pool(view_of(x, "x"), view_of(out, "out"), dtype, static_cast<int>(kernel), static_cast<int>(stride),
                static_cast<int>(pad[0]), static_cast<int>(pad[2]), zero_pad, at::cuda::getCurrentCUDAStream());
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

void ptx_probe(int64_t probe, const at::Tensor& in, const at::Tensor& out) {
  TORCH_CHECK(probe >= 0 && probe <= static_cast<int64_t>(hgk::PtxProbe::cp_async), "probe: unknown probe ", probe);
  const auto p = static_cast<hgk::PtxProbe>(probe);
  TORCH_CHECK(in.is_cuda() && in.is_contiguous() && in.scalar_type() == at::kByte &&
                  in.numel() == hgk::ptx_probe_in_bytes(p),
              "in: expected a contiguous uint8 CUDA tensor of ", hgk::ptx_probe_in_bytes(p), " bytes");
  check_cuda(out, "out", in);
  TORCH_CHECK(out.is_contiguous() && out.scalar_type() == at::kByte && out.numel() == hgk::ptx_probe_out_bytes(p),
              "out: expected a contiguous uint8 tensor of ", hgk::ptx_probe_out_bytes(p), " bytes");
  const c10::cuda::CUDAGuard guard(in.device());
  hgk::ptx_probe(p, in.data_ptr(), out.data_ptr(), at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "hgnet_kernels CUDA ops (see csrc/*.cu)";
  m.def("conv_path", &conv_path, "the conv kernel for (dtype code, arch, tf32x3): 2 mma.sync, 1 WMMA, 0 SIMT");
  m.def("conv_mma_tiles", &conv_mma_tiles,
        "the sm_80+ conv kernel's instantiated tiles (BM, BN, WARPS_M, WARPS_N, STAGES) for a dtype code");
  m.def("conv_mma_k_step", &hgk::conv_mma_k_step, "K elements per step of the sm_80+ conv kernel");
  m.def("conv_bn_act", &conv_bn_act, "fused conv + folded BN + ReLU / affine / residual (+ ESE partial sums)",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("relu"), py::arg("out"),
        py::arg("psum"), py::arg("arch"), py::arg("padding") = py::none(), py::arg("affine") = py::none(),
        py::arg("residual") = py::none(), py::arg("tile") = std::vector<int64_t>{64, 64, 2, 2, 4, 1},
        py::arg("workspace") = py::none(), py::arg("tf32x3") = false);
  m.def("depthwise_conv", &depthwise_conv, "depthwise 3x3 / 5x5 conv + folded BN (+ ReLU, affine), stride (sh, sw)", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("out"), py::arg("padding") = py::none(),
        py::arg("relu") = false, py::arg("affine") = py::none());
  m.def("max_pool", &max_pool, "2x2 / 3x3 max pool", py::arg("x"), py::arg("out"), py::arg("kernel") = 3,
        py::arg("stride") = 2, py::arg("padding") = py::none(), py::arg("zero_pad") = false);
  m.def("ptx_probe", &ptx_probe, "runs one PTX wrapper of csrc/ptx.h in a one-warp kernel (layout tests)");
  m.def("ese_gate", &ese_gate, "ESE gate from partial sums");
  m.def("scale_residual", &scale_residual, "y * gate (+ identity)");
}
