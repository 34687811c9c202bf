"""Every fused op of the Triton and CUDA C++ kernel families against a float64 PyTorch reference.

On the CPU the Triton kernels run through Triton's interpreter and the CUDA kernels through the
CPU emulator build of the same .cu source (hgnet_kernels.kernels.cuda.emulator); on a GPU, for real.
"""
import pytest
import torch

from hgnet_kernels.kernels import cuda as cuda_family
from hgnet_kernels.kernels import triton as triton_family
from hgnet_kernels.kernels.cuda import ops as cuda_ops
from hgnet_kernels.kernels.spec import (aggregation_ese_reference, conv_bn_act_reference, depthwise_conv_reference,
                                        ese_gate_reference, max_pool_reference, pack_conv_weight,
                                        pack_depthwise_weight, scale_residual_reference)
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance

from helpers import DEVICE, low_precision_eager, poisoned_slice, untouched_outside

FAMILIES = {"triton": triton_family, "cuda": cuda_family}


@pytest.fixture(params=sorted(FAMILIES))
def impl(request):
    return FAMILIES[request.param]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def assert_close_to_reference(got, low_precision_eager, exact, dtype):
    """fp32: rel. error ≤ 1e-5; fp16/bf16: ≤ 2× eager PyTorch's own error at that dtype."""
    if dtype == torch.float32:
        assert relative_error(got, exact) <= FP32_REL_TOL
    else:
        eager_err = relative_error(low_precision_eager, exact)
        assert relative_error(got, exact) <= tolerance(dtype, eager_err), (relative_error(got, exact), eager_err)






CONV_CASES = [  # n, c_in, c_out, k, stride, h, w, input layout
    (1, 3, 48, 3, 2, 33, 31, "nchw"),
    (3, 17, 160, 3, 1, 7, 9, "slice"),
    (1, 160, 17, 1, 1, 9, 7, "slice"),
    (3, 160, 33, 3, 2, 17, 15, "channels_last"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv_bn_act(impl, case, dtype):
    n, c_in, c_out, k, stride, h, w, layout = case
    x64 = torch.randn(n, c_in, h, w, dtype=torch.float64, device=DEVICE)
    w64 = torch.randn(c_out, c_in, k, k, dtype=torch.float64, device=DEVICE) / (c_in * k * k) ** 0.5
    b64 = torch.randn(c_out, dtype=torch.float64, device=DEVICE)
    if layout == "slice":
        in_buf, x = poisoned_slice(n, c_in, h, w, 5, 11, dtype)
        x.copy_(x64)
    elif layout == "channels_last":
        x = x64.to(dtype).contiguous(memory_format=torch.channels_last)
    else:
        x = x64.to(dtype)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out_buf, out = poisoned_slice(n, c_out, ho, wo, 7, 9, dtype)
    result = impl.conv_bn_act(x, pack_conv_weight(w64.to(dtype)), b64.to(dtype), stride, relu=True, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert not torch.isnan(out).any(), "unwritten output elements"
    assert untouched_outside(out_buf, 7, c_out), "the kernel wrote outside its channel slice"
    exact = conv_bn_act_reference(x.double(), pack_conv_weight(w64), b64.to(dtype).double(), stride)
    eager = low_precision_eager(conv_bn_act_reference, dtype, x, pack_conv_weight(w64), b64,
                                stride=stride) if dtype != torch.float32 else None
    assert_close_to_reference(out, eager, exact, dtype)


def test_conv_without_relu_keeps_negatives(impl):
    x = torch.randn(1, 17, 9, 7, device=DEVICE)
    w = pack_conv_weight(torch.randn(19, 17, 3, 3, device=DEVICE))
    b = torch.randn(19, device=DEVICE)
    y = impl.conv_bn_act(x, w, b, 1, relu=False)
    assert (y < 0).any()
    assert relative_error(y, conv_bn_act_reference(x.double(), w.double(), b.double(), 1, relu=False)) <= 1e-5


def test_conv_rejects_bad_arguments(impl):
    x = torch.randn(1, 16, 8, 8, device=DEVICE)
    w = pack_conv_weight(torch.randn(8, 16, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="expected 16 channels, got 15"):
        impl.conv_bn_act(x[:, :15], w, torch.zeros(8, device=DEVICE))
    with pytest.raises(ValueError, match="pack_conv_weight"):
        impl.conv_bn_act(x, torch.randn(8, 16, 3, 3, device=DEVICE), torch.zeros(8, device=DEVICE))
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        impl.conv_bn_act(x, w, torch.zeros(8, device=DEVICE), stride=3)
    with pytest.raises(ValueError, match="out: expected"):
        impl.conv_bn_act(x, w, torch.zeros(8, device=DEVICE), out=torch.empty(1, 8, 4, 4, device=DEVICE))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,c,h,w", [(1, 17, 33, 31), (3, 160, 7, 9)])
def test_depthwise_conv_into_buffer_slot(impl, n, c, h, w, dtype):
    x64 = torch.randn(n, c, h, w, dtype=torch.float64, device=DEVICE)
    w64 = torch.randn(c, 1, 3, 3, dtype=torch.float64, device=DEVICE) / 3
    b64 = torch.randn(c, dtype=torch.float64, device=DEVICE)
    x = x64.to(dtype).contiguous(memory_format=torch.channels_last)
    out_buf, out = poisoned_slice(n, c, (h - 1) // 2 + 1, (w - 1) // 2 + 1, 0, 13, dtype)
    impl.depthwise_conv(x, pack_depthwise_weight(w64.to(dtype)), b64.to(dtype), 2, out=out)
    assert not torch.isnan(out).any()
    assert untouched_outside(out_buf, 0, c), "the kernel wrote outside its channel slice"
    exact = depthwise_conv_reference(x.double(), pack_depthwise_weight(w64.to(dtype).double()), b64.to(dtype).double())
    eager = low_precision_eager(depthwise_conv_reference, dtype, x, pack_depthwise_weight(w64), b64) \
        if dtype != torch.float32 else None
    assert_close_to_reference(out, eager, exact, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,c,h,w", [(1, 17, 33, 31), (3, 160, 7, 9)])
def test_max_pool_into_buffer_slot(impl, n, c, h, w, dtype):
    x = torch.randn(n, c, h, w, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    out_buf, out = poisoned_slice(n, c, (h - 1) // 2 + 1, (w - 1) // 2 + 1, 0, 5, dtype)
    impl.max_pool(x, out=out)
    assert untouched_outside(out_buf, 0, c), "the kernel wrote outside its channel slice"
    assert torch.equal(out, max_pool_reference(x.float()).to(dtype))  # max is exact


def test_max_pool_propagates_nan(impl):
    x = torch.randn(1, 3, 9, 9, device=DEVICE)
    x[0, 1, 4, 4] = float("nan")
    torch.testing.assert_close(impl.max_pool(x), max_pool_reference(x), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,c_total,c_out,h,w", [(1, 194, 17, 33, 31), (3, 51, 160, 7, 9)])
def test_aggregation_ese_partial_sums(impl, n, c_total, c_out, h, w, dtype):
    x64 = torch.randn(n, c_total, h, w, dtype=torch.float64, device=DEVICE).abs()
    w64 = torch.randn(c_out, c_total, 1, 1, dtype=torch.float64, device=DEVICE) / c_total ** 0.5
    b64 = torch.randn(c_out, dtype=torch.float64, device=DEVICE)
    x = x64.to(dtype).contiguous(memory_format=torch.channels_last)
    packed = pack_conv_weight(w64.to(dtype))
    y, psum = impl.aggregation_ese(x, packed, b64.to(dtype))
    assert psum.dtype == torch.float32
    assert psum.shape == impl.partial_sums_shape(n, h * w, c_total, c_out, dtype, x.device)
    exact_y, exact_sums = aggregation_ese_reference(x.double(), packed.double(), b64.to(dtype).double())
    eager = low_precision_eager(conv_bn_act_reference, dtype, x, pack_conv_weight(w64), b64) \
        if dtype != torch.float32 else None
    assert_close_to_reference(y, eager, exact_y, dtype)
    # The partial sums add the fp32 accumulators (before rounding y to dtype).
    assert relative_error(psum.sum(1), exact_sums) <= (1e-5 if dtype == torch.float32 else 1e-2)
    y2, psum2 = impl.aggregation_ese(x, packed, b64.to(dtype))
    assert torch.equal(y, y2) and torch.equal(psum, psum2), "not deterministic"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,tiles,c", [(1, 3, 17), (3, 70, 160)])
def test_ese_gate(impl, n, tiles, c, dtype):
    psum = torch.randn(n, tiles, c, device=DEVICE) * 10
    weight = (torch.randn(c, c, device=DEVICE) / c ** 0.5).to(dtype)
    bias = torch.randn(c, device=DEVICE).to(dtype)
    gate = impl.ese_gate(psum, weight, bias, hw=tiles * 13)
    expected = ese_gate_reference(psum.double().sum(1), weight.double(), bias.double(), tiles * 13)
    assert gate.dtype == torch.float32
    assert relative_error(gate, expected) <= 1e-5  # fp32 math on dtype weights


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("residual", [False, True])
def test_scale_residual_into_slot(impl, dtype, residual):
    n, c, h, w = 3, 160, 7, 9
    y = torch.randn(n, c, h, w, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    gate = torch.rand(n, c, device=DEVICE)
    id_buf, identity = poisoned_slice(n, c, h, w, 0, 17, dtype)
    identity.copy_(torch.randn(n, c, h, w))
    out_buf, out = poisoned_slice(n, c, h, w, 0, 33, dtype)
    impl.scale_residual(y, gate, identity if residual else None, out=out)
    assert untouched_outside(out_buf, 0, c), "the kernel wrote outside its channel slice"
    exact = scale_residual_reference(y.double(), gate.double(), identity.double() if residual else None)
    eager = scale_residual_reference(y, gate, identity if residual else None) if dtype != torch.float32 else None
    assert_close_to_reference(out, eager, exact, dtype)


# Channel slices of block buffers for the CUDA memory-bound kernels (depthwise, max pool, scale +
# residual): channels, slice offset, channels after the slice, whether they take 8 channels per thread.
CHANNEL_SLICES = [
    (24, 8, 8, True),     # offset 8 of a 40-channel buffer: every 8-channel group 16-byte aligned
    (24, 5, 11, False),   # an odd offset: one channel per thread
    (20, 0, 4, False),    # C not a multiple of 8
]


@pytest.fixture(params=["int32", "int64"])
def cuda_index_type(request):
    """The emulated CUDA launchers index in int32 (as a GPU does for these sizes), or, with the limit
    lowered to 0, in int64 (on a GPU only for tensors past 2**31 elements)."""
    if DEVICE == "cuda":
        pytest.skip("the int32 indexing limit can only be lowered in the emulator")
    from hgnet_kernels.kernels.cuda import emulator
    emulator.call("hgk_emu_set_int32_index_limit", 0 if request.param == "int64" else -1)
    yield request.param
    emulator.call("hgk_emu_set_int32_index_limit", -1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CHANNEL_SLICES, ids=lambda c: f"c{c[0]}_at{c[1]}")
def test_cuda_memory_bound_kernels_on_channel_slices(case, dtype, cuda_index_type):
    """Each memory-bound CUDA kernel reads and writes channel slices 8 channels at a time where they
    are aligned and one at a time where not, in int32 and int64 indexing, with the same numerics."""
    from hgnet_kernels.kernels.cuda import emulator
    c, offset, extra, vectorized = case
    n, h, w = 2, 9, 7
    lib = emulator.library()

    def slice_of(values, height, width):
        buf, view = poisoned_slice(n, c, height, width, offset, extra, dtype)
        view.copy_(values)
        return buf, view

    def check_views(*views):
        for v in views:
            assert bool(lib.hgk_emu_channels_vectorizable(cuda_ops._ptr(v), cuda_ops._dims(v))) == vectorized

    x64 = torch.randn(n, c, h, w, dtype=torch.float64)
    x64[0, 3, 4, 4] = float("nan")  # NaN propagates through the pool, in one lane of a vector group
    _, x = slice_of(x64, h, w)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1

    # depthwise 3×3/2 (the LDS downsample): fp32 accumulation, same tolerance as the full-width test
    w64 = torch.randn(c, 1, 3, 3, dtype=torch.float64) / 3
    b64 = torch.randn(c, dtype=torch.float64)
    x_finite = x64.nan_to_num(0.5)
    _, xf = slice_of(x_finite, h, w)
    out_buf, out = poisoned_slice(n, c, ho, wo, offset, extra, dtype)
    check_views(xf, out)
    cuda_family.depthwise_conv(xf, pack_depthwise_weight(w64.to(dtype)), b64.to(dtype), 2, out=out, relu=True)
    assert untouched_outside(out_buf, offset, c) and not torch.isnan(out).any()
    exact = depthwise_conv_reference(xf.double(), pack_depthwise_weight(w64.to(dtype).double()),
                                     b64.to(dtype).double(), 2, relu=True)
    eager = low_precision_eager(depthwise_conv_reference, dtype, xf, pack_depthwise_weight(w64), b64,
                                relu=True) if dtype != torch.float32 else None
    assert_close_to_reference(out, eager, exact, dtype)

    # max pool 3×3/2: exact, NaN kept
    out_buf, out = poisoned_slice(n, c, ho, wo, offset, extra, dtype)
    cuda_family.max_pool(x, out=out)
    assert untouched_outside(out_buf, offset, c)
    torch.testing.assert_close(out, max_pool_reference(x.float()).to(dtype), rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(out[0, 3]).any() and not torch.isnan(out[0, 2]).any()

    # scale + residual, every operand a slice
    gate = torch.rand(n, c)
    _, y = slice_of(torch.randn(n, c, h, w), h, w)
    _, identity = slice_of(torch.randn(n, c, h, w), h, w)
    out_buf, out = poisoned_slice(n, c, h, w, offset, extra, dtype)
    check_views(y, identity, out)
    cuda_family.scale_residual(y, gate, identity, out=out)
    assert untouched_outside(out_buf, offset, c)
    exact = scale_residual_reference(y.double(), gate.double(), identity.double())
    eager = scale_residual_reference(y, gate, identity) if dtype != torch.float32 else None
    assert_close_to_reference(out, eager, exact, dtype)


@pytest.mark.parametrize("arch", [70, 75, 90], ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_conv_paths_by_arch(arch, dtype):
    """The CUDA conv picks SIMT or WMMA by arch (bf16 WMMA from sm_80, fp16 from sm_75): both paths
    give the same answer within the low-precision tolerance, partial sums included."""
    if DEVICE == "cuda":
        pytest.skip("the arch override only exists for the emulator; the GPU runs its own arch")
    # C_in = 40 and C_out = 64 are multiples of 8 and channels_last is 16-byte aligned: the WMMA path
    # takes its 16-byte loads for both tiles (the CONV_CASES above cover the other combinations).
    x = torch.randn(2, 40, 11, 13).to(dtype).contiguous(memory_format=torch.channels_last)
    w64 = torch.randn(64, 40, 1, 1, dtype=torch.float64) / 40 ** 0.5
    b = torch.randn(64).to(dtype)
    y, psum = cuda_ops.aggregation_ese(x, pack_conv_weight(w64.to(dtype)), b, arch=arch)
    exact, sums = aggregation_ese_reference(x.double(), pack_conv_weight(w64.to(dtype).double()), b.double())
    eager = low_precision_eager(conv_bn_act_reference, dtype, x, pack_conv_weight(w64), b)
    assert_close_to_reference(y, eager, exact, dtype)
    assert relative_error(psum.sum(1), sums) <= 1e-2
    # 143 pixels: 3 per-image tiles (SIMT, WMMA), and 3 slabs per image over both images' rows (sm_80+)
    assert psum.shape == cuda_ops.partial_sums_shape(2, 11 * 13, 40, 64, dtype, x.device, arch=arch) == (2, 3, 64)


def test_cuda_ops_reject_mixed_devices():
    x = torch.randn(1, 8, 8, 8)
    w = pack_conv_weight(torch.randn(8, 8, 3, 3))
    with pytest.raises(ValueError, match="expected 16 channels|one device|expected 8 channels"):
        cuda_ops.conv_bn_act(torch.randn(1, 16, 8, 8), w, torch.zeros(8))
    meta = torch.empty(8, device="meta")
    with pytest.raises(ValueError, match="one device"):
        cuda_ops.conv_bn_act(x, w, meta)
