"""The general op forms in the Triton family (PP-HGNetV2): depthwise k×k (3, 5) with ReLU, affine
and any padding, max pools 2×2 / 3×3 with ignored or zero padding, scale + residual — with pixel
tiles spanning images, channel slices in and out (NaN-poisoned around them), against float64
(what the family claims to run: tests/test_capabilities.py)."""
import pytest
import torch

from hgnet_kernels.kernels import triton as fam
from hgnet_kernels.kernels.spec import (depthwise_conv_reference, max_pool_reference, pack_depthwise_weight,
                                        scale_residual_reference, symmetric)
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.plan import output_size

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
