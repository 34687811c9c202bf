"""The general forms of the ops (PP-HGNetV2 needs them): 2×2 convs with "SAME" padding, the
learnable affine after ReLU, a residual in the conv epilogue, 5×5 and stride-1 depthwise convs
with ReLU, and the 2×2 stride-1 stem pool with ignored or zero padding — in every kernel family,
against float64.

A family that does not implement one of these yet must leave it out of its ``SUPPORTS`` table, and then
its op must refuse the arguments (raise) rather than compute something else; the test checks
whichever of the two the family claims.
"""
import pytest
import torch

from hgnet_kernels import backends
from hgnet_kernels.kernels import spec
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.plan import Op, Ref, output_size, stride_pair

from helpers import DEVICE, low_precision_eager
FAMILIES = ["torch", "triton", "cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SAME_2x2 = (0, 1, 0, 1)


@pytest.fixture(params=FAMILIES)
def family(request):
    return backends.family(request.param)


def _op(kind, kernel, stride, c_in, c_out, padding=None, relu=False, affine=False, residual=False, zero_pad=False):
    x = Ref("x", 0, c_in)
    reads = (x, Ref("r", 0, c_out)) if residual else (x,)
    return Op(kind, "test", reads, (Ref("y", 0, c_out),), (), kernel, stride_pair(stride),
              padding if padding is not None else spec.symmetric(kernel), c_in if kind == "depthwise" else 1,
              relu, affine, residual, zero_pad)


def _check(family, op, run, exact, eager, dtype):
    reason = spec.not_supported_reasons(op, family.SUPPORTS)
    if reason:
        with pytest.raises((TypeError, ValueError, NotImplementedError)):
            run()
        return
    got = run()
    allowed = FP32_REL_TOL if dtype == torch.float32 else tolerance(dtype, relative_error(eager(), exact))
    assert relative_error(got, exact) <= allowed


CONV_CASES = [  # kernel, stride, c_in, c_out, h, w, padding, relu, affine, residual
    (2, 1, 8, 16, 9, 11, SAME_2x2, True, (1.3, -0.4), False),     # v2 stem2a/2b
    (3, 2, 3, 16, 17, 15, None, True, (-0.7, 0.25), False),      # stem1 with a negative LAB scale
    (1, 1, 40, 24, 7, 9, None, True, (1.0, 0.3), True),          # excitation conv + residual
    (1, 1, 24, 40, 7, 9, None, False, None, False),              # LightConv's 1×1, no activation
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"k{c[0]}s{c[1]}_{c[2]}to{c[3]}")
def test_conv_general_epilogue(family, case, dtype):
    kernel, stride, c_in, c_out, h, w, padding, relu, affine, residual = case
    g = torch.Generator().manual_seed(kernel * 100 + c_in)
    x64 = torch.randn(2, c_in, h, w, generator=g, dtype=torch.float64)
    w64 = torch.randn(c_out, c_in, kernel, kernel, generator=g, dtype=torch.float64) / (c_in * kernel ** 2) ** 0.5
    b64 = torch.randn(c_out, generator=g, dtype=torch.float64)
    ho, wo = output_size(h, w, kernel, stride, padding or spec.symmetric(kernel))
    r64 = torch.randn(2, c_out, ho, wo, generator=g, dtype=torch.float64) if residual else None
    x = x64.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    weight, bias = w64.to(DEVICE, dtype), b64.to(DEVICE, dtype)
    res = r64.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last) if residual else None
    kwargs = dict(padding=padding, affine=affine, residual=res)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    op = _op("conv", kernel, stride, c_in, c_out, padding, relu, affine is not None, residual)
    packed = spec.pack_conv_weight(weight)

    def run():
        return family.conv_bn_act(x, family.pack_conv_weight(weight), bias, stride, relu, **kwargs)
    exact = spec.conv_bn_act_reference(x.double(), packed.double(), bias.double(), stride, relu, padding, affine,
                                       res.double() if residual else None)

    def eager():
        return low_precision_eager(spec.conv_bn_act_reference, dtype, x, packed, bias, stride, relu, padding, affine,
                                   res)
    _check(family, op, run, exact, eager, dtype)


DEPTHWISE_CASES = [  # kernel, stride, channels, h, w, relu, affine
    (5, 1, 24, 9, 7, True, (0.8, -0.1)),    # v2 LightConv depthwise 5×5 + ReLU + LAB
    (5, 1, 24, 9, 7, True, (-1.2, 0.5)),    # a negative LAB scale stays in the epilogue
    (3, 1, 16, 8, 8, True, None),           # LightConv 3×3 without LAB (B4–B6)
    (3, 2, 16, 9, 11, False, None),         # the LDS downsample
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: f"k{c[0]}s{c[1]}_relu{int(c[5])}_aff{int(bool(c[6]))}")
def test_depthwise_general_epilogue(family, case, dtype):
    kernel, stride, c, h, w, relu, affine = case
    g = torch.Generator().manual_seed(kernel * 10 + stride)
    x64 = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    w64 = torch.randn(c, 1, kernel, kernel, generator=g, dtype=torch.float64) / kernel
    b64 = torch.randn(c, generator=g, dtype=torch.float64)
    x = x64.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    weight, bias = w64.to(DEVICE, dtype), b64.to(DEVICE, dtype)
    kwargs = {k: v for k, v in dict(relu=relu or None, affine=affine).items() if v is not None}
    op = _op("depthwise", kernel, stride, c, c, None, relu, affine is not None)
    packed = spec.pack_depthwise_weight(weight)

    def run():
        return family.depthwise_conv(x, family.pack_depthwise_weight(weight), bias, stride, **kwargs)
    exact = spec.depthwise_conv_reference(x.double(), packed.double(), bias.double(), stride, relu, affine)

    def eager():
        return low_precision_eager(spec.depthwise_conv_reference, dtype, x, packed, bias, stride, relu, affine)
    _check(family, op, run, exact, eager, dtype)


@pytest.mark.parametrize("zero_pad", [False, True], ids=["ignored-pad", "zero-pad"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stem_pool_2x2_same(family, dtype, zero_pad):
    """The v2 stem's 2×2 stride-1 pool on a map with negative values at the bottom/right border:
    Paddle ignores the padded cells, timm's zero padding takes part in the max."""
    x = (torch.randn(2, 12, 9, 7) - 1.0).to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    op = _op("max_pool", 2, 1, 12, 12, SAME_2x2, zero_pad=zero_pad)

    def run():
        return family.max_pool(x, kernel=2, stride=1, padding=SAME_2x2, zero_pad=zero_pad)
    exact = spec.max_pool_reference(x.double(), 2, 1, SAME_2x2, zero_pad)
    reason = spec.not_supported_reasons(op, family.SUPPORTS)
    if reason:
        with pytest.raises((TypeError, ValueError, NotImplementedError)):
            run()
        return
    got = run()
    assert torch.equal(got.double(), exact)  # a max is exact
    assert (got[:, :, -1] == 0).any() == zero_pad  # the border shows which padding was used


def test_references_pad_like_paddle_same():
    """"SAME" for a 2×2 stride-1 conv pads one zero row and column at the bottom and right."""
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    w = torch.ones(2, 2, 1, 1)
    y = spec.conv_bn_act_reference(x, w, torch.zeros(1), 1, False, SAME_2x2)
    assert y.shape == x.shape
    assert y[0, 0, -1, -1] == x[0, 0, -1, -1]  # only the corner itself inside the window
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].sum()
