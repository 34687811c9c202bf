"""The Triton conv kernel (issue #11): one flattened K loop over (tap, channel block) or flat K,
GEMM rows spanning images, split-K with a fixed-order reduction, the ESE partial sums per
(tile, image) — at odd sizes through the interpreter, against float64.

Configs are passed explicitly where a test needs a tile geometry (tiles crossing images, split-K,
the GPU heuristic's small tiles); the rest use the interpreter's config.
"""
import importlib

import pytest
import torch

from hgnet_kernels import backends, configs
from hgnet_kernels.kernels import triton as fam
from hgnet_kernels.kernels.spec import (conv_bn_act_reference, ese_gate_reference, pack_conv_weight, psum_tiles,
                                        symmetric)
from hgnet_kernels.kernels.triton._common import dot_precision
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.plan import output_size

from helpers import DEVICE, expected_partial_sums, poisoned_slice, untouched_outside

# The module (the package's ``conv_bn_act`` attribute is the function of that name).
conv_module = importlib.import_module("hgnet_kernels.kernels.triton.conv_bn_act")






def cfg(block_m, block_n, block_k, split=1, flat=False, swap=False):
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split, FLAT_K=flat, GROUP_M=2,
                num_warps=4, num_stages=2, SWAP_AB=swap)


def problem(n, c_in, c_out, k, h, w, seed, stride=1, padding=None, residual=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64) / (c_in * k * k) ** 0.5
    b = torch.randn(c_out, generator=g, dtype=torch.float64)
    ho, wo = output_size(h, w, k, stride, padding or symmetric(k))
    r = torch.randn(n, c_out, ho, wo, generator=g, dtype=torch.float64).to(DEVICE) if residual else None
    return x.to(DEVICE), wt.to(DEVICE), b.to(DEVICE), r, (ho, wo)


def run_into_slices(x64, w64, b64, r64, stride, relu, dtype, config=None, padding=None, affine=None):
    """The conv reading a channel slice of a poisoned buffer and writing into another; returns the
    output view, the exact float64 reference (of the dtype-rounded operands) and eager at dtype."""
    n, c_in, h, w = x64.shape
    c_out = w64.shape[0]
    in_buf, x = poisoned_slice(n, c_in, h, w, 3, 8, dtype)
    x.copy_(x64)
    ho, wo = output_size(h, w, w64.shape[-1], stride, padding or symmetric(w64.shape[-1]))
    out_buf, out = poisoned_slice(n, c_out, ho, wo, 5, 11, dtype)
    res = None
    if r64 is not None:
        res_buf, res = poisoned_slice(n, c_out, ho, wo, 2, 3, dtype)
        res.copy_(r64)
    packed, bias = pack_conv_weight(w64.to(dtype)), b64.to(dtype)
    got = fam.conv_bn_act(x, packed, bias, stride, relu, out, padding=padding, affine=affine, residual=res,
                          config=config)
    assert got.data_ptr() == out.data_ptr()
    assert untouched_outside(out_buf, 5, c_out), "wrote outside the output slice"
    assert untouched_outside(in_buf, 3, c_in)
    exact = conv_bn_act_reference(x.double(), packed.double(), bias.double(), stride, relu, padding, affine,
                                  None if res is None else res.double())
    return out, exact, x, packed, bias, res


ODD_CASES = [  # id, n, c_in, c_out, k, stride, h, w, config
    # 37×53 through stage 1's 3×3 (96→96, here 24→40): 1,961 rows, odd in both sizes, over many
    # row tiles and a partial last one
    ("37x53", 1, 24, 40, 3, 1, 37, 53, None),
    # N = 3 of 7×7 maps (stage 4's size) with 64-row tiles: every tile but the first straddles two images
    ("n3_7x7_cross", 3, 24, 40, 3, 1, 7, 7, cfg(64, 32, 16)),
    ("n3_7x7_cross_split", 3, 24, 40, 3, 1, 7, 7, cfg(64, 32, 16, split=3)),
    ("n1_7x7_split_flat", 1, 24, 40, 3, 1, 7, 7, cfg(32, 32, 32, split=4, flat=True)),
    ("n3_stride2_odd", 3, 17, 33, 3, 2, 9, 7, cfg(16, 32, 16, split=2)),
    # The transposed tile (Yᵀ = Wᵀ·Xᵀ, sm_90's few-pixel layers): tiles across images, split-K,
    # partial channel blocks per tap (24 channels in blocks of 16)
    ("n3_7x7_swap_split", 3, 24, 40, 3, 1, 7, 7, cfg(16, 64, 16, split=3, swap=True)),
    ("n2_stride2_swap", 2, 32, 72, 3, 2, 9, 13, cfg(32, 64, 32, swap=True)),
    # 1×1 convs: C_in not a multiple of BLOCK_K (a masked last block), plain and transposed, split
    ("k1_odd_cin", 2, 40, 24, 1, 1, 5, 9, cfg(32, 32, 32, split=2)),
    ("k1_odd_cin_swap", 2, 40, 24, 1, 1, 5, 9, cfg(16, 32, 32, swap=True)),
]


@pytest.mark.parametrize("case", ODD_CASES, ids=lambda c: c[0])
def test_odd_sizes_fp32_into_slices(case):
    _, n, c_in, c_out, k, stride, h, w, config = case
    x64, w64, b64, _, _ = problem(n, c_in, c_out, k, h, w, seed=n * 100 + h, stride=stride)
    out, exact, *_ = run_into_slices(x64, w64, b64, None, stride, True, torch.float32, config)
    assert not torch.isnan(out).any(), "unwritten output elements"
    assert relative_error(out, exact) <= FP32_REL_TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_split_k_low_precision_with_residual_and_affine(dtype):
    """Split-K's epilogue (bias, ReLU, a·y + c, + residual, rounding) runs once, after the fp32 sum."""
    x64, w64, b64, r64, _ = problem(3, 24, 40, 3, 5, 5, seed=7, residual=True)  # 32-row tiles across images
    for swap in (False, True):
        out, exact, x, packed, bias, res = run_into_slices(x64, w64, b64, r64, 1, True, dtype,
                                                           cfg(32, 32, 16, split=3, swap=swap), affine=(-0.75, 0.5))
        eager = conv_bn_act_reference(x.float(), packed.float(), bias.float(), 1, True, None, (-0.75, 0.5),
                                      res.float()).to(dtype)
        assert relative_error(out, exact) <= tolerance(dtype, relative_error(eager, exact)), swap


def test_same_2x2_padding_tiles_across_images():
    x64, w64, b64, r64, _ = problem(3, 16, 24, 2, 9, 11, seed=3, padding=(0, 1, 0, 1), residual=True)
    for config in (cfg(64, 32, 16), cfg(64, 32, 16, split=2, flat=True)):
        out, exact, *_ = run_into_slices(x64, w64, b64, r64, 1, True, torch.float32, config, padding=(0, 1, 0, 1),
                                         affine=(1.3, -0.4))
        assert relative_error(out, exact) <= FP32_REL_TOL


def test_tap_blocked_flat_and_split_agree_with_float64_and_are_deterministic():
    x64, w64, b64, _, _ = problem(2, 40, 24, 3, 5, 7, seed=5)
    results = []
    for config in (cfg(64, 32, 16), cfg(64, 32, 32, flat=True), cfg(32, 32, 16, split=5), cfg(32, 32, 16, split=16)):
        out, exact, x, packed, bias, _ = run_into_slices(x64, w64, b64, None, 1, False, torch.float32, config)
        assert relative_error(out, exact) <= FP32_REL_TOL, config
        if config["SPLIT_K"] > 1:  # the fixed-order reduction of the workspace; the one-pass forms'
            # determinism: test_partial_sums_per_tile_and_image, test_guarantees.py's bitwise test
            again = fam.conv_bn_act(x, packed, bias, 1, False, config=config)
            assert torch.equal(again, out), f"not bitwise deterministic: {config}"
        results.append(out.clone())
    # Different split points sum in a different order: close, not necessarily equal bits.
    assert relative_error(results[2], results[0]) <= FP32_REL_TOL


@pytest.mark.parametrize("n,h,w,config", [
    (3, 7, 7, cfg(32, 32, 16)),             # T = 3; images 0 and 2 overlap 2 tiles: a zero row each
    (3, 7, 7, cfg(32, 32, 16, split=3)),    # the same layout from the split-K reduction
    (1, 5, 9, cfg(16, 32, 32)),
    (2, 3, 3, cfg(16, 32, 32, split=2)),    # several images in one tile
    (3, 7, 7, cfg(32, 32, 16, split=3, swap=True)),  # the transposed tile: same layout
], ids=["n3_bm32", "n3_bm32_split", "n1_bm16", "n2_3x3_split", "n3_bm32_swap_split"])
def test_partial_sums_per_tile_and_image(n, h, w, config):
    x64, w64, b64, _, _ = problem(n, 40, 24, 1, h, w, seed=h * w)
    x = x64.float().contiguous(memory_format=torch.channels_last)
    packed, bias = pack_conv_weight(w64.float()), b64.float()
    y, psum = fam.aggregation_ese(x, packed, bias, config=config)
    exact = conv_bn_act_reference(x.double(), packed.double(), bias.double(), 1, True)
    assert relative_error(y, exact) <= FP32_REL_TOL
    want = expected_partial_sums(exact, config["BLOCK_M"]).to(DEVICE)
    assert fam.partial_sums_shape(n, h * w, 40, 24, x.dtype, x.device, config=config) == tuple(want.shape)
    assert psum.shape == want.shape
    assert torch.allclose(psum.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    assert relative_error(psum.sum(1), exact.sum((2, 3))) <= FP32_REL_TOL
    y2, psum2 = fam.aggregation_ese(x, packed, bias, config=config)
    assert torch.equal(y, y2) and torch.equal(psum, psum2), "not bitwise deterministic"
    # The gate consumes that layout in a fixed order.
    weight = torch.randn(24, 24, dtype=torch.float64, device=DEVICE) / 24 ** 0.5
    gate = fam.ese_gate(psum, weight.float(), bias, h * w)
    assert relative_error(gate, ese_gate_reference(exact.sum((2, 3)), weight, bias.double(), h * w)) <= FP32_REL_TOL
    assert torch.equal(gate, fam.ese_gate(psum2, weight.float(), bias, h * w))


@pytest.mark.parametrize("n,hw,block_m", [(1, 49, 64), (3, 49, 64), (3, 49, 32), (64, 49, 128), (5, 128, 64),
                                          (7, 3136, 128), (2, 9, 16)])
def test_psum_tiles_is_the_most_tiles_an_image_overlaps(n, hw, block_m):
    counts = [(i * hw + hw - 1) // block_m - (i * hw) // block_m + 1 for i in range(n)]
    assert psum_tiles(n, hw, block_m) == max(counts)


def test_gpu_heuristic_configs_compute_correctly():
    """The heuristic's batch-1 configs for late-stage shapes (small tiles, split-K), run through
    the interpreter: the configs a GPU would launch give the float64 answer."""
    for n, c_in, c_out, hw in [(1, 64, 48, 7), (2, 32, 40, 5)]:
        config = configs.conv_config(hw * hw, c_in, c_out, 3, 1, torch.float32, "sm90", batch=n)
        assert config["SPLIT_K"] > 1 and config["BLOCK_M"] <= 64
        x64, w64, b64, _, _ = problem(n, c_in, c_out, 3, hw, hw, seed=c_in)
        out, exact, *_ = run_into_slices(x64, w64, b64, None, 1, True, torch.float32, config)
        assert relative_error(out, exact) <= FP32_REL_TOL


@pytest.mark.parametrize("split", [1, 3])
def test_nan_and_inf_propagate_through_relu_and_split_k(split):
    x64, w64, b64, _, _ = problem(2, 24, 32, 3, 7, 7, seed=11)
    x64[0, 3, 2, 2] = float("nan")
    x64[1, 5, 6, 6] = float("inf")
    out, exact, *_ = run_into_slices(x64, w64, b64, None, 1, True, torch.float32, cfg(32, 32, 16, split=split))
    assert torch.equal(torch.isnan(out), torch.isnan(exact)) and torch.isnan(out).any()
    assert torch.equal(torch.isinf(out), torch.isinf(exact))
    finite = torch.isfinite(exact)
    assert relative_error(out[finite], exact[finite]) <= FP32_REL_TOL


def test_residual_may_be_the_output_itself():
    x64, w64, b64, r64, _ = problem(2, 16, 24, 1, 5, 7, seed=13, residual=True)
    x = x64.float().contiguous(memory_format=torch.channels_last)
    packed, bias = pack_conv_weight(w64.float()), b64.float()
    for config in (cfg(32, 32, 16), cfg(16, 32, 16, split=1)):
        out = r64.float().contiguous(memory_format=torch.channels_last)
        fam.conv_bn_act(x, packed, bias, 1, True, out, residual=out, config=config)
        exact = conv_bn_act_reference(x.double(), packed.double(), bias.double(), 1, True, residual=r64)
        assert relative_error(out, exact) <= FP32_REL_TOL


def test_fp32_precision_options():
    """IEEE unless asked; TF32 and 3×TF32 are exclusive; what is asked reaches the kernel and keeps
    fp32's 1e-5 here (the interpreter computes IEEE whatever it is; on a GPU, run by
    bench/gpu_check.sh, this is the compiled 3×TF32 path; its error bound at the models' largest K is
    tests/test_tf32x3_bound.py's)."""
    assert dot_precision(torch.float32, False) == "ieee"
    assert dot_precision(torch.float32, False, True) == "tf32x3" and dot_precision(torch.float32, True) == "tf32"
    assert dot_precision(torch.float16, False, True) == "ieee"
    with pytest.raises(ValueError, match="exclusive"):
        dot_precision(torch.float32, True, True)
    backends.check_options("triton", "triton", torch.device(DEVICE), {"tf32x3": True})  # FusedPPHGNet(..., tf32x3=True)
    x = torch.randn(1, 16, 5, 5, device=DEVICE)
    w = pack_conv_weight(torch.randn(8, 16, 3, 3, device=DEVICE))
    b = torch.zeros(8, device=DEVICE)
    y = fam.conv_bn_act(x, w, b, tf32x3=True)
    assert relative_error(y, conv_bn_act_reference(x.double(), w.double(), b.double())) <= FP32_REL_TOL


def test_int64_offsets_give_the_same_bits(monkeypatch):
    """Tensors past 2^31 elements take the int64-offset variant; forced here on small tensors, it
    computes the same bits as the int32 one in every loop form (taps, flat K, 1×1 with ESE sums,
    transposed split-K)."""
    x64, w64, b64, r64, _ = problem(2, 24, 40, 3, 5, 5, seed=17, residual=True)
    x1, w1, b1, _, _ = problem(2, 40, 24, 1, 5, 7, seed=19)
    xs = x1.float().contiguous(memory_format=torch.channels_last)
    packed1 = pack_conv_weight(w1.float())
    configs_k3 = (cfg(32, 32, 16), cfg(32, 32, 32, flat=True), cfg(16, 64, 16, split=2, swap=True))
    results = []
    for force_int64 in (False, True):
        if force_int64:
            monkeypatch.setattr(conv_module, "fits_int32", lambda t: False)
        got = [run_into_slices(x64, w64, b64, r64, 1, True, torch.float32, config, affine=(0.5, 0.25))[0].clone()
               for config in configs_k3]
        got += list(fam.aggregation_ese(xs, packed1, b1.float(), config=cfg(16, 32, 32, split=2)))
        results.append(got)
    exact = run_into_slices(x64, w64, b64, r64, 1, True, torch.float32, configs_k3[0], affine=(0.5, 0.25))[1]
    for narrow, wide in zip(*results):
        assert torch.equal(narrow, wide)
    assert relative_error(results[1][0], exact) <= FP32_REL_TOL
