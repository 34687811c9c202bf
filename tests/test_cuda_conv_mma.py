"""The sm_80+ CUDA conv kernel (csrc/conv_mma.cuh: cp.async ring, ldmatrix, mma.sync, split-K) and
the general epilogue on every CUDA conv path, against float64.

On the CPU every case runs through the emulator, whose warp-level PTX follows the ISA's fragment
layouts (tests/test_cuda_ptx.py) and whose cp.async lands data only at the wait_group, reading as
NaN until then; on a GPU (HGNET_TEST_GPU=1) the same cases run on the hardware.
Sizes are odd on purpose: N 1 and 3, channel counts that fill no tile, maps whose pixels fill no
tile, channel slices of NaN-poisoned buffers in and out.
"""
import os
import shutil

import pytest
import torch

from hgnet_kernels import configs
from hgnet_kernels.kernels import spec
from hgnet_kernels.kernels.cuda import ops as cuda_ops
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.plan import output_size

from helpers import DEVICE, expected_partial_sums, low_precision_eager, poisoned_slice
SAME_2x2 = (0, 1, 0, 1)
EMULATOR_ONLY = pytest.mark.skipif(DEVICE == "cuda", reason="the arch override exists for the emulator only")


DTYPES = [torch.float16, torch.bfloat16, torch.float32]  # fp32: 3×TF32 on the tensor cores (tf32x3=True)


def _mma(dtype):
    """The sm_80+ kernel for every dtype: fp32 reaches it only through the opt-in 3×TF32."""
    return dict(tf32x3=dtype == torch.float32)


def _tile(index, split=1, dtype=torch.float16):
    """The index-th instantiated tile for dtype (fp32 has one) with SPLIT_K = split."""
    tiles = cuda_ops.mma_tiles(dtype, DEVICE)
    return dict(zip(cuda_ops.TILE_FIELDS, tiles[index % len(tiles)] + (split,)))




def _check(got, dtype, x, packed, bias, stride, relu, padding=None, affine=None, residual=None):
    exact = spec.conv_bn_act_reference(x.double(), packed.double(), bias.double(), stride, relu, padding, affine,
                                       residual.double() if residual is not None else None)
    if dtype == torch.float32:
        allowed = FP32_REL_TOL
    else:
        eager = low_precision_eager(spec.conv_bn_act_reference, dtype, x, packed, bias, stride, relu, padding, affine,
                                    residual)
        allowed = tolerance(dtype, relative_error(eager, exact))
    err = relative_error(got, exact)
    assert err <= allowed, (err, allowed)


def _problem(n, c_in, c_out, k, h, w, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64) * scale
    weight = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64) / (c_in * k * k) ** 0.5
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    return x, spec.pack_conv_weight(weight.to(dtype)).to(DEVICE), bias.to(dtype).to(DEVICE)


CASES = [  # n, c_in, c_out, k, stride, h, w, padding, relu, affine, residual, tile, split
    (1, 40, 72, 3, 1, 9, 11, None, True, None, False, 0, 1),            # 128×128 tile, 72 of 128 channels
    (3, 48, 24, 3, 2, 13, 10, None, True, (0.7, -0.2), True, 1, 3),    # 128×64, split-K 3, affine + residual
    (3, 16, 136, 2, 1, 7, 9, SAME_2x2, True, (-1.3, 0.4), False, 2, 2),  # 64×128, v2's 2×2 SAME stem conv
    (1, 96, 40, 1, 1, 5, 7, None, False, None, True, 3, 2),             # 64×64, 1×1 + residual, no ReLU
    (3, 24, 64, 3, 1, 8, 8, (2, 0, 0, 2), True, None, False, 3, 1),     # one-sided padding
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c[0]}_{c[1]}to{c[2]}_k{c[3]}s{c[4]}_tile{c[11]}_split{c[12]}")
def test_mma_conv_general_epilogue_into_poisoned_slices(case, dtype):
    n, c_in, c_out, k, stride, h, w, padding, relu, affine, residual, tile, split = case
    x64, packed, bias = _problem(n, c_in, c_out, k, h, w, dtype, seed=c_in + 7 * c_out)
    in_buf, x = poisoned_slice(n, c_in, h, w, 8, 16, dtype)  # 8-channel offset: the 16-byte cp.async path
    x.copy_(x64)
    ho, wo = output_size(h, w, k, stride, padding or spec.symmetric(k))
    res = None
    if residual:
        res_buf, res = poisoned_slice(n, c_out, ho, wo, 8, 16, dtype)
        res.copy_(torch.randn(n, c_out, ho, wo, dtype=torch.float64))
    out_buf, out = poisoned_slice(n, c_out, ho, wo, 8, 24, dtype)
    y = cuda_ops.conv_bn_act(x, packed, bias, stride, relu, out=out, padding=padding, affine=affine, residual=res,
                             **_mma(dtype),
                             config=_tile(tile, split, dtype))
    assert y.data_ptr() == out.data_ptr()
    assert not torch.isnan(out).any(), "output elements left unwritten (or a copy read before it landed)"
    assert torch.isnan(out_buf[:, :8]).all() and torch.isnan(out_buf[:, 8 + c_out:]).all(), "wrote outside the slice"
    _check(out, dtype, x, packed, bias, stride, relu, padding, affine, res)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "odd_slice", "odd_channels"])
def test_mma_conv_element_load_path(layout, dtype):
    """Inputs the 16-byte copies cannot take (the stem's NCHW image, a slice at an odd channel
    offset, C_in or C_out not multiples of 8) go through the element-load instantiation."""
    c_in, c_out = (3, 16) if layout == "nchw" else ((17, 33) if layout == "odd_channels" else (24, 40))
    x64, packed, bias = _problem(3, c_in, c_out, 3, 11, 9, dtype, seed=c_in)
    if layout == "nchw":
        x = x64.to(dtype).to(DEVICE)
    else:
        _, x = poisoned_slice(3, c_in, 11, 9, 3, 5, dtype)
        x.copy_(x64)
    for tile, split in ((0, 1), (3, 2)):
        y = cuda_ops.conv_bn_act(x, packed, bias, 2, True, config=_tile(tile, split, dtype), **_mma(dtype))
        _check(y, dtype, x, packed, bias, 2, True)


AGGREGATIONS = [  # n, h, w, tile, split: maps whose pixels fill no 64-row slab, slabs straddling images
    (3, 7, 7, 1, 1),     # 49 pixels (stage 4 at 224): T = 2, each slab after the first holds two images
    (3, 14, 14, 0, 1),   # 196 pixels (stage 3 at 224), 128-row tiles of two slabs
    (3, 9, 15, 3, 3),    # 135 pixels, split-K: the reduction writes the sums
    (5, 3, 5, 1, 2),     # 15 pixels: up to five images in one slab, split-K
    (1, 5, 9, 2, 1),     # one image of 45 pixels: T = 1
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", AGGREGATIONS, ids=lambda c: f"n{c[0]}_{c[1]}x{c[2]}_tile{c[3]}_split{c[4]}")
def test_mma_aggregation_partial_sums_across_images(case, dtype):
    """The ESE partial sums of the sm_80+ kernel: 64-row slabs over the N·H·W rows (no padding rows
    per image), each slab's rows of each image summed into that image's row for the slab, as the
    Triton kernels lay out their row tiles (spec.psum_tiles with 64-row tiles), whatever the tile
    and split-K; every entry written (into a NaN-poisoned buffer), the same bits on a rerun."""
    n, h, w, tile, split = case
    c_in, c_out = 136, 80
    x64, packed, bias = _problem(n, c_in, c_out, 1, h, w, dtype, seed=h * w + n)
    x = x64.to(dtype).to(DEVICE).contiguous(memory_format=torch.channels_last)
    exact_y, exact_sums = spec.aggregation_ese_reference(x.double(), packed.double(), bias.double())
    shape = cuda_ops.partial_sums_shape(n, h * w, c_in, c_out, dtype, x.device, **_mma(dtype))
    want = expected_partial_sums(exact_y, configs.CUDA_PSUM_ROWS).to(DEVICE)
    assert shape == tuple(want.shape)
    runs = []
    for _ in range(2):
        psum = torch.full(shape, float("nan"), device=DEVICE)
        y, got = cuda_ops.aggregation_ese(x, packed, bias, config=_tile(tile, split, dtype), psum=psum, **_mma(dtype))
        assert got.data_ptr() == psum.data_ptr() and not torch.isnan(psum).any(), "partial sums left unwritten"
        runs.append((y, psum))
    (y, psum), (y2, psum2) = runs
    assert torch.equal(y, y2) and torch.equal(psum, psum2), "not bitwise deterministic"
    _check(y, dtype, x, packed, bias, 1, True)
    # The sums add the fp32 values before rounding y: fp32-accurate at every dtype.
    assert relative_error(psum, want) <= 1e-5
    assert torch.equal(psum[want.abs().sum(2) == 0], torch.zeros_like(psum[want.abs().sum(2) == 0]))
    assert relative_error(psum.sum(1), exact_sums) <= 1e-5
    gate = cuda_ops.ese_gate(psum, torch.eye(c_out, dtype=dtype, device=DEVICE),
                             torch.zeros(c_out, dtype=dtype, device=DEVICE), h * w)
    assert relative_error(gate, torch.sigmoid(exact_sums / (h * w))) <= 1e-5


@EMULATOR_ONLY
def test_partial_sums_layout_follows_the_conv_path():
    """The SIMT (fp32) and WMMA (fp16 on sm_75) kernels tile each image apart: T = cdiv(H·W, 64),
    row j the image's pixels [64j, 64j + 64); the extension and the emulator refuse a buffer of
    any other T (the layout is checked, never reinterpreted)."""
    n, h, w, c_in, c_out = 3, 7, 11, 24, 40
    for dtype, arch in ((torch.float32, 90), (torch.float16, 75)):
        x64, packed, bias = _problem(n, c_in, c_out, 1, h, w, dtype, seed=arch)
        x = x64.to(dtype).contiguous(memory_format=torch.channels_last)
        assert cuda_ops.partial_sums_shape(n, h * w, c_in, c_out, dtype, x.device, arch=arch) == (n, 2, c_out)
        psum = torch.full((n, 2, c_out), float("nan"))
        y, _ = cuda_ops.aggregation_ese(x, packed, bias, arch=arch, psum=psum)
        flat = spec.aggregation_ese_reference(x.double(), packed.double(), bias.double())[0].flatten(2)
        want = torch.stack([flat[:, :, :64].sum(2), flat[:, :, 64:].sum(2)], dim=1)
        assert relative_error(psum, want) <= 1e-5
    with pytest.raises(ValueError, match=r"psum: expected a contiguous fp32 \(3, 2, 40\) tensor"):
        cuda_ops.aggregation_ese(x, packed, bias, arch=75, psum=torch.empty(n, 3, c_out))
    launch, _ = cuda_ops.resolve_aggregation_ese(x, packed, bias, arch=75)  # replays check nothing in Python
    with pytest.raises(RuntimeError, match="psum has 3 rows per image, the kernel writes 2"):
        launch(x, packed, bias, torch.empty_like(y), psum=torch.empty(n, 3, c_out))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mma_conv_is_bitwise_deterministic(dtype):
    """Split-K adds its slices in a fixed order and the partial sums have one writer each: the
    same inputs give the same bits, run after run."""
    x64, packed, bias = _problem(3, 64, 72, 3, 9, 7, dtype, seed=9)
    x = x64.to(dtype).to(DEVICE).contiguous(memory_format=torch.channels_last)
    for tile, split in ((1, 4), (3, 1)):
        first = cuda_ops.conv_bn_act(x, packed, bias, 1, True, config=_tile(tile, split, dtype), **_mma(dtype))
        second = cuda_ops.conv_bn_act(x, packed, bias, 1, True, config=_tile(tile, split, dtype), **_mma(dtype))
        assert torch.equal(first, second)
    packed1 = packed[:, :, :, :64].contiguous()[:1, :1]
    y1, s1 = cuda_ops.aggregation_ese(x, packed1, bias[:64], config=_tile(1, 2, dtype), **_mma(dtype))
    y2, s2 = cuda_ops.aggregation_ese(x, packed1, bias[:64], config=_tile(1, 2, dtype), **_mma(dtype))
    assert torch.equal(y1, y2) and torch.equal(s1, s2)


def test_3xtf32_keeps_fp32_accuracy_where_tf32_alone_would_not():
    """fp32 on the tensor cores as 3×TF32: within 1e-5 of float64 over a K of 9 · 256, where one TF32
    product per term (10-bit mantissas) is off by ~1e-3."""
    x64, packed, bias = _problem(1, 256, 64, 3, 6, 6, torch.float32, seed=21)
    x = x64.float().to(DEVICE).contiguous(memory_format=torch.channels_last)
    y = cuda_ops.conv_bn_act(x, packed, bias, 1, False, config=_tile(0, 2, torch.float32), tf32x3=True)
    exact = spec.conv_bn_act_reference(x.double(), packed.double(), bias.double(), 1, False)
    assert relative_error(y, exact) <= FP32_REL_TOL
    tf32 = lambda t: (t.view(torch.int32) & ~0x1FFF).view(torch.float32)  # noqa: E731 - truncated to tf32
    one_tf32 = spec.conv_bn_act_reference(tf32(x.cpu()).double(), tf32(packed.cpu()).double(), bias.cpu().double(),
                                          1, False)
    assert relative_error(one_tf32, exact.cpu()) > 10 * FP32_REL_TOL


def test_mma_conv_keeps_nan_and_inf():
    """NaN and inf in the input reach the output through the tensor cores and the ReLU."""
    x64, packed, bias = _problem(1, 16, 16, 1, 4, 4, torch.float16, seed=3)
    x = x64.to(torch.float16).to(DEVICE).contiguous(memory_format=torch.channels_last)
    x[0, :, 1, 1] = float("nan")
    x[0, :, 2, 2] = float("inf")
    y = cuda_ops.conv_bn_act(x, packed, bias, 1, True)
    assert torch.isnan(y[0, :, 1, 1]).all()
    assert not torch.isfinite(y[0, :, 2, 2]).all()
    assert torch.isfinite(y[0, :, 0, 0]).all()


@EMULATOR_ONLY
@pytest.mark.parametrize("arch,dtype", [(70, torch.float32), (75, torch.float16), (75, torch.bfloat16)],
                         ids=["simt-fp32", "wmma-fp16", "simt-bf16"])
def test_older_paths_run_the_general_epilogue(arch, dtype):
    """The SIMT and WMMA kernels (fp32 everywhere; fp16 on sm_75; bf16 before sm_80) implement the
    same general forms: 2×2 SAME, one-sided padding, affine, residual."""
    for k, stride, padding, affine in ((2, 1, SAME_2x2, (1.3, -0.4)), (3, 2, (0, 2, 1, 0), (-0.5, 0.1))):
        x64, packed, bias = _problem(3, 24, 40, k, 9, 11, dtype, seed=k)
        x = x64.to(dtype).contiguous(memory_format=torch.channels_last)
        ho, wo = output_size(9, 11, k, stride, padding)
        res = torch.randn(3, 40, ho, wo).to(dtype).contiguous(memory_format=torch.channels_last)
        y = cuda_ops.conv_bn_act(x, packed, bias, stride, True, arch=arch, padding=padding, affine=affine,
                                 residual=res)
        _check(y, dtype, x, packed, bias, stride, True, padding, affine, res)


def test_tile_config_is_checked_and_split_k_needs_its_workspace():
    x64, packed, bias = _problem(1, 64, 64, 3, 5, 5, torch.float16, seed=1)
    x = x64.to(torch.float16).to(DEVICE).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="not an instantiated tile"):
        cuda_ops.conv_bn_act(x, packed, bias, config=dict(BM=32, BN=64, WARPS_M=2, WARPS_N=2, STAGES=4, SPLIT_K=1))
    with pytest.raises(ValueError, match="not an instantiated tile"):  # fp32 has its own tiles
        cuda_ops.conv_bn_act(x.float(), packed.float(), bias.float(), config=_tile(0), tf32x3=True)
    cfg = _tile(3, 4)
    k_step = cuda_ops.mma_k_step(DEVICE)
    assert k_step == 32
    floats = configs.cuda_conv_workspace(1, 25, 64, 64, 3, cfg, k_step=k_step)
    assert floats == 4 * 64 * 64  # 18 K steps in 4 slices of 5 (the last of 3), one 64×64 tile each
    steps = configs.cuda_conv_k_steps(64, 3, k_step)
    assert configs.conv_split(steps, 4) == (4, 5) and configs.conv_split(steps, 64) == (18, 1)


def test_heuristic_tiles_and_tuned_entries(monkeypatch, tmp_path):
    """Tiles come from configs/cuda_<arch>.json when an entry exists for the layer and batch bucket,
    else from the heuristic: large tiles for big GEMMs, split-K when the tiles cannot fill the GPU."""
    kernel = dict(tiles=cuda_ops.mma_tiles(torch.float16, DEVICE), k_step=cuda_ops.mma_k_step(DEVICE))
    big = configs.cuda_conv_config(3136, 96, 96, 3, 1, torch.float16, "sm90", batch=256, **kernel)
    assert (big["BM"], big["BN"], big["SPLIT_K"]) == (128, 128, 1)
    small = configs.cuda_conv_config(49, 1024, 1024, 3, 1, torch.float16, "sm90", batch=1, sms=132, **kernel)
    assert small["SPLIT_K"] > 1 and small["BM"] == 64
    for cfg in (big, small):
        assert tuple(cfg[f] for f in cuda_ops.TILE_FIELDS[:5]) in kernel["tiles"]
    key = configs.conv_key(49, 1024, 1024, 3, 1, torch.float16) + "_b1"
    (tmp_path / "cuda_sm90.json").write_text(
        '{"conv_bn_act": {"%s": {"BM": 64, "BN": 128, "WARPS_M": 2, "WARPS_N": 2, "STAGES": 4, "SPLIT_K": 6,'
        ' "_ms": 0.01}}}' % key)
    shutil.copy(os.path.join(configs.CONFIG_DIR, "devices.json"), tmp_path)
    monkeypatch.setattr(configs, "CONFIG_DIR", str(tmp_path))
    configs._load.cache_clear()
    try:
        tuned = configs.cuda_conv_config(49, 1024, 1024, 3, 1, torch.float16, "sm90", batch=1, **kernel)
        assert tuned == dict(BM=64, BN=128, WARPS_M=2, WARPS_N=2, STAGES=4, SPLIT_K=6)
        assert configs.cuda_conv_config(49, 1024, 1024, 3, 1, torch.float16, "sm90", batch=64,
                                        **kernel) != tuned  # other bucket
    finally:
        configs._load.cache_clear()


def test_tile_side_takes_the_least_padding_relatively():
    """16 output channels: a 64-wide tile (25 % useful) over a 128-wide one (12.5 %); 160: 64-wide."""
    assert configs._fit(16, [128, 64]) == 64
    assert configs._fit(160, [128, 64]) == 64
    assert configs._fit(256, [128, 64]) == 128
