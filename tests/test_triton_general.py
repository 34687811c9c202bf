"""The general op forms in the Triton family (PP-HGNetV2): depthwise k×k (3, 5) with ReLU, affine
and any padding, max pools 2×2 / 3×3 with ignored or zero padding, scale + residual — with pixel
tiles spanning images, channel slices in and out (NaN-poisoned around them), against float64; and
``unsupported`` claiming exactly what the family runs."""
import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.folding import fold_model
from hgnet_kernels.kernels import triton as fam
from hgnet_kernels.kernels.spec import (depthwise_conv_reference, max_pool_reference, pack_depthwise_weight,
                                        scale_residual_reference, symmetric)
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.plan import Op, Ref, build_plan, output_size, stride_pair

from helpers import DEVICE, poisoned_slice, untouched_outside
SMALL_TILES = dict(BLOCK_P=32, BLOCK_C=16, num_warps=4)  # 7×7 maps: most pixel tiles straddle two images






DEPTHWISE_CASES = [  # kernel, stride, padding, relu, affine, n, h, w
    (5, 1, None, True, (0.8, -0.1), 3, 7, 7),
    (5, 2, (1, 2, 2, 1), True, (-1.2, 0.5), 3, 9, 8),
    (3, 1, (0, 1, 0, 1), False, None, 1, 7, 9),
    (3, 2, None, False, None, 3, 13, 11),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: f"k{c[0]}s{c[1]}_pad{c[2]}_n{c[5]}")
@pytest.mark.parametrize("tiles", [None, SMALL_TILES], ids=["interp_cfg", "small_tiles"])
def test_depthwise_general_into_slices(case, dtype, tiles):
    kernel, stride, padding, relu, affine, n, h, w = case
    c = 20
    g = torch.Generator().manual_seed(kernel * 10 + stride + n)
    x64 = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    w64 = (torch.randn(c, 1, kernel, kernel, generator=g, dtype=torch.float64) / kernel).to(DEVICE)
    b64 = torch.randn(c, generator=g, dtype=torch.float64).to(DEVICE)
    in_buf, x = poisoned_slice(n, c, h, w, 4, 6, dtype)
    x.copy_(x64)
    ho, wo = output_size(h, w, kernel, stride, padding or symmetric(kernel))
    out_buf, out = poisoned_slice(n, c, ho, wo, 7, 12, dtype)
    packed, bias = pack_depthwise_weight(w64.to(dtype)), b64.to(dtype)
    fam.depthwise_conv(x, packed, bias, stride, out, relu=relu, affine=affine, padding=padding, config=tiles)
    assert untouched_outside(out_buf, 7, c) and not torch.isnan(out).any()
    exact = depthwise_conv_reference(x.double(), packed.double(), bias.double(), stride, relu, affine, padding)
    if dtype == torch.float32:
        assert relative_error(out, exact) <= FP32_REL_TOL
    else:
        eager = depthwise_conv_reference(x.float(), packed.float(), bias.float(), stride, relu, affine, padding)
        assert relative_error(out, exact) <= tolerance(dtype, relative_error(eager.to(dtype), exact))


@pytest.mark.parametrize("kernel,stride,padding,zero_pad", [
    (2, 1, (0, 1, 0, 1), False), (2, 1, (0, 1, 0, 1), True), (3, 2, None, False), (3, 1, (1, 1, 0, 2), True),
    (2, 2, (0, 0, 0, 0), False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_max_pool_general_into_slices(kernel, stride, padding, zero_pad, dtype):
    n, c, h, w = 3, 12, 7, 9
    x = (torch.randn(n, c, h, w) - 1.0).to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    x[1, 2, 0, 0] = float("nan")
    ho, wo = output_size(h, w, kernel, stride, padding or symmetric(kernel))
    out_buf, out = poisoned_slice(n, c, ho, wo, 0, 4, dtype)
    fam.max_pool(x, out, kernel=kernel, stride=stride, padding=padding, zero_pad=zero_pad, config=SMALL_TILES)
    assert untouched_outside(out_buf, 0, c)
    expected = max_pool_reference(x.double(), kernel, stride, padding, zero_pad)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=0, equal_nan=True)  # a max is exact


@pytest.mark.parametrize("residual", [False, True])
def test_scale_residual_gate_per_image_across_tiles(residual):
    """A pixel tile spanning images must read each pixel's own image's gate."""
    n, c, h, w = 3, 24, 7, 7
    y = torch.randn(n, c, h, w, device=DEVICE).contiguous(memory_format=torch.channels_last)
    gate = torch.rand(n, c, device=DEVICE) + torch.arange(n, device=DEVICE)[:, None]  # images differ a lot
    id_buf, identity = poisoned_slice(n, c, h, w, 3, 5, torch.float32)
    identity.copy_(torch.randn(n, c, h, w))
    out_buf, out = poisoned_slice(n, c, h, w, 0, 9, torch.float32)
    fam.scale_residual(y, gate, identity if residual else None, out=out, config=SMALL_TILES)
    assert untouched_outside(out_buf, 0, c)
    exact = scale_residual_reference(y.double(), gate.double(), identity.double() if residual else None)
    assert relative_error(out, exact) <= FP32_REL_TOL


def _op(kind, kernel=3, stride=1, padding=None, groups=1, c=16, relu=True, affine=False, residual=False):
    reads = (Ref("x", 0, c), Ref("r", 0, c)) if residual else (Ref("x", 0, c),)
    return Op(kind, "t", reads, (Ref("y", 0, c),), (), kernel, stride_pair(stride),
              padding if padding is not None else symmetric(kernel), groups, relu, affine, residual)


@pytest.mark.parametrize("op,refused", [
    (_op("conv", 2, 1, (0, 1, 0, 1), affine=True, residual=True), None),
    (_op("conv", 3, 2), None),
    (_op("depthwise", 5, 1, groups=16, affine=True), None),
    (_op("max_pool", 2, 1, (0, 1, 0, 1), relu=False), None),
    (_op("aggregation", 1, 1), None),
    (_op("conv", 5, 1), "5×5 conv"),
    (_op("conv", 3, 3), "stride 3"),
    (_op("conv", 3, 1, groups=4), "4 groups"),
    (_op("conv", 3, 1, (3, 1, 1, 1)), "padding"),
    (_op("depthwise", 7, 1, groups=16), "7×7 depthwise"),
    (_op("depthwise", 3, 1, groups=16, residual=True), "residual"),
    (_op("depthwise", 3, 1, groups=8), "8 groups"),
    (_op("aggregation", 1, 1, affine=True), "aggregation epilogue"),
    (_op("max_pool", 4, 2, relu=False), "4×4 max_pool"),
], ids=lambda v: v if isinstance(v, str) or v is None else v.describe())
def test_unsupported_claims_exactly_what_runs(op, refused):
    reason = fam.unsupported(op)
    assert (reason is None) if refused is None else (refused in reason)


@pytest.mark.parametrize("model", ["tiny", "b0", "b4"])
def test_every_op_of_v1_and_v2_plans_is_claimed(model):
    name = {"b0": "PPHGNetV2", "b4": "PPHGNetV2"}.get(model, "PPHGNet")
    if not hasattr(hk, name) and name == "PPHGNetV2":
        pytest.skip("PP-HGNetV2 is not in this tree")
    from hgnet_kernels.models import build_model
    plan = build_plan(fold_model(build_model(model)))
    assert [fam.unsupported(op) for op in plan.ops if fam.unsupported(op)] == []


def test_bf16_dot_and_rounding_are_the_gpus_under_the_interpreter():
    """The kernels have no interpreter branch for bf16: ``kernels/triton/_common.py`` fixes the
    interpreter instead (bf16 tl.dot operands widened to fp32, fp32 → bf16 casts rounded to nearest
    even). A bf16 dot then gives the exact-product fp32 sum, and its bf16 store torch's rounding."""
    import triton
    import triton.language as tl

    @triton.jit
    def dot_and_store(a_ptr, b_ptr, y_ptr, z_ptr):
        r = tl.arange(0, 16)
        tile = r[:, None] * 16 + r[None, :]
        acc = tl.dot(tl.load(a_ptr + tile), tl.load(b_ptr + tile))
        tl.store(y_ptr + tile, acc)
        tl.store(z_ptr + tile, acc.to(z_ptr.dtype.element_ty))

    g = torch.Generator().manual_seed(5)
    a, b = (torch.randn(16, 16, generator=g).to(torch.bfloat16).to(DEVICE) for _ in range(2))
    y = torch.full((16, 16), float("nan"), device=DEVICE)
    z = torch.full((16, 16), float("nan"), device=DEVICE, dtype=torch.bfloat16)
    dot_and_store[(1,)](a, b, y, z)
    exact = a.double() @ b.double()
    assert relative_error(y, exact) <= 1e-6  # products exact, 16 fp32 additions
    assert torch.equal(z, y.to(torch.bfloat16))  # round to nearest even, as torch (and the GPU)
    assert not torch.equal(z, (y.view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16))
