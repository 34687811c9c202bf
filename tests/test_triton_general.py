"""The general op forms in the Triton family (PP-HGNetV2): depthwise k×k (3, 5) with ReLU, affine
and any padding, max pools 2×2 / 3×3 with ignored or zero padding, scale + residual — with pixel
tiles spanning images, channel slices in and out (NaN-poisoned around them), against float64
(what the family claims to run: tests/test_capabilities.py)."""
import importlib

import pytest
import torch

from hgnet_kernels.kernels import triton as fam
from hgnet_kernels.kernels.triton._common import tile_offsets_int64
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


TILE_MODULES = {name: importlib.import_module(f"hgnet_kernels.kernels.triton.{name}")
                for name in ("depthwise_conv", "max_pool", "scale_residual")}


def test_int64_indices_are_chosen_from_the_tensors():
    """int32 index maths unless a tensor's offsets or the last tile's pixel indices pass 2^31."""
    assert not tile_offsets_int64(2 ** 31, 8, True)   # the last tile's last index is 2^31 − 1
    assert tile_offsets_int64(2 ** 31 + 1, 8, True)   # the last tile runs to 2^31 + 7
    assert tile_offsets_int64(100, 8, False)
    # A view's extent, not its storage, decides (meta tensors: resolved, never launched).
    packed = pack_depthwise_weight(torch.randn(16, 1, 5, 5)).to("meta")
    bias = torch.zeros(16, device="meta")
    small = torch.empty(2, 16, 9, 9, device="meta").contiguous(memory_format=torch.channels_last)
    huge = torch.empty_strided((2, 16, 9, 9), (2 ** 30, 1, 16 * 9, 16), device="meta")
    for x, wide in ((small, False), (huge, True)):
        assert fam.resolve_depthwise(x, packed, bias, 1)[0].kwargs["INT64"] == wide
        assert fam.resolve_max_pool(x)[0].kwargs["INT64"] == wide
        assert fam.resolve_scale_residual(x, torch.ones(2, 16, device="meta"))[0].kwargs["INT64"] == wide


def test_int64_indices_give_the_same_bits(monkeypatch):
    """The int64-index variant (tensors past 2^31 elements), forced on small tensors, computes the
    same bits as the int32 one: tiles straddling images, 5×5 taps past every border, slices."""
    n, c, h, w = 3, 20, 7, 9
    g = torch.Generator().manual_seed(64)
    x = torch.randn(n, c + 8, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)[:, 3:3 + c]
    packed = pack_depthwise_weight(torch.randn(c, 1, 5, 5, generator=g).to(DEVICE))
    bias = torch.randn(c, generator=g).to(DEVICE)
    gate = torch.rand(n, c, generator=g).to(DEVICE)
    identity = torch.randn(n, c, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    runs = {
        "depthwise_conv": lambda: fam.resolve_depthwise(x, packed, bias, 1, relu=True, padding=(4, 0, 1, 3),
                                                        config=SMALL_TILES),
        "max_pool": lambda: fam.resolve_max_pool(x, kernel=3, stride=2, config=SMALL_TILES),
        "scale_residual": lambda: fam.resolve_scale_residual(x, gate, identity, config=SMALL_TILES),
    }
    operands = {"depthwise_conv": (x, packed, bias), "max_pool": (x,), "scale_residual": (x, gate, identity)}
    results = {}
    for force_int64 in (False, True):
        if force_int64:
            for module in TILE_MODULES.values():
                monkeypatch.setattr(module, "fits_int32", lambda t: False)
        for name, resolve in runs.items():
            launch, out = resolve()
            assert launch.kwargs["INT64"] == force_int64
            out.fill_(float("nan"))
            launch(*operands[name], out)
            assert not torch.isnan(out).any()
            results.setdefault(name, []).append(out)
    for narrow, wide in results.values():
        assert torch.equal(narrow, wide)
    exact = depthwise_conv_reference(x.double(), packed.double(), bias.double(), 1, True, None, (4, 0, 1, 3))
    assert relative_error(results["depthwise_conv"][1], exact) <= FP32_REL_TOL
