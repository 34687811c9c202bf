"""fp32 convs on the tensor cores as 3×TF32 (the opt-in ``tf32x3``) against the error bound derived
in ``hgnet_kernels/numerics.py``, at the largest K (C_in·k·k) of PP-HGNet base and PP-HGNetV2 B6.

The data are positive, so Σ|a||b| = Σab (condition 1), and every input and weight has a planted
TF32 remainder: a = a TF32 value + up to 0.45 of a TF32 ulp, so a_hi is that value and a_lo > 0.
A dropped cross term or a broken split then costs ~1.5e-4 of the sum, above the bound (≤ 9e-5 at
these K); ``test_the_bound_catches_a_broken_split`` shows it on a model of each family's arithmetic.

What runs where: the cuda family's split (``conv_mma.cuh``) runs in the CUDA emulator, whose
mma.m16n8k8.tf32 reads only the tf32 bits and adds exact products in k order. Triton's split is
made by Triton's compiler (its F32DotTC pass), which the interpreter does not run (its fp32 dots are
IEEE whatever the precision asked): for Triton the model follows the TTGIR the compiler emits, and
``test_triton_tf32x3_compiles_to_the_three_tf32_products`` checks that this is what gets compiled.
On a GPU (bench/gpu_check.sh) both kernels run for real against the same bound — not yet run.
"""
import functools
import json

import numpy as np
import pytest
import torch

from hgnet_kernels import shapes
from hgnet_kernels.kernels import spec
from hgnet_kernels.kernels.cuda import ops as cuda_ops
from hgnet_kernels.kernels import triton as triton_family
from hgnet_kernels.kernels.triton.conv_bn_act import launch_config
from hgnet_kernels.numerics import tf32x3_error_bound

from helpers import DEVICE

BLOCK = {"cuda": 8, "triton": 32}  # products summed from zero per block: one m16n8k8; a BLOCK_K of 32


@functools.lru_cache(maxsize=None)
def _largest_k_layer(model: str) -> shapes.ConvShape:
    """The dense conv with the largest C_in·k·k of the model, as its plan builds it."""
    dense = [c for c in shapes.conv_shapes(model) if c.kind != "depthwise"]
    return max(dense, key=lambda c: c.c_in * c.kernel * c.kernel)


@pytest.fixture(params=["base", "b6"])
def largest_k(request):
    return _largest_k_layer(request.param)


def _planted(shape, generator) -> torch.Tensor:
    """fp32 values in [0.5, 1) whose TF32 rounding is known: a TF32 value (11 significant bits,
    ulp 2^-11 there) plus a remainder in [0, 0.45) of an ulp."""
    hi = torch.randint(2 ** 10, 2 ** 11, shape, generator=generator, dtype=torch.float64) * 2.0 ** -11
    lo = torch.rand(shape, generator=generator, dtype=torch.float64) * 0.45 * 2.0 ** -11
    return (hi + lo).float()


def _tf32(x: np.ndarray, rounded: bool) -> np.ndarray:
    """fp32 → TF32 kept in fp32: cvt.rna (nearest, ties away) or the tensor core's truncation."""
    bits = x.astype(np.float32).view(np.uint32)
    if rounded:
        bits = bits + np.uint32(0x1000)
    return (bits & np.uint32(0xFFFFE000)).view(np.float32)


def _model(a: np.ndarray, b: np.ndarray, family: str, broken: str = "") -> np.ndarray:
    """Σ_k a[:, k]·b[k] as each family computes it with 3×TF32, in fp32 arithmetic: per block of
    BLOCK[family] k, the small·big, big·small and big·big products summed from zero, then added to
    the running sum. ``broken``: "no_low" (plain TF32), "drop_a_lo" (the a_lo·b_hi products left
    out), "into_running_sum" (every product added straight into the running sum)."""
    f32 = np.float32
    a_hi, b_hi = _tf32(a, True), _tf32(b, True)
    rounded = family == "cuda"  # cuda rounds the remainder (cvt.rna); Triton hands over r = a − a_hi
    a_lo, b_lo = _tf32((a - a_hi).astype(f32), rounded), _tf32((b - b_hi).astype(f32), rounded)
    if broken == "no_low":
        a_lo, b_lo = np.zeros_like(a_lo), np.zeros_like(b_lo)
    products = [a_lo * b_hi, a_hi * b_lo, a_hi * b_hi]  # exact in fp32: TF32 × TF32
    if broken == "drop_a_lo":
        products = products[1:]
    k_total, block = a.shape[1], BLOCK[family]
    acc = np.zeros(a.shape[0], dtype=f32)
    for k0 in range(0, k_total, block):
        block_sum = acc if broken == "into_running_sum" else np.zeros_like(acc)
        for p in products:
            for k in range(k0, min(k0 + block, k_total)):
                block_sum = (block_sum + p[:, k]).astype(f32)
        acc = block_sum if broken == "into_running_sum" else (acc + block_sum).astype(f32)
    return acc


def _problem(k: int):
    g = torch.Generator().manual_seed(k)
    a, b = _planted((16, k), g).numpy(), _planted((k,), g).numpy()
    return a, b, a.astype(np.float64) @ b.astype(np.float64)  # the exact sum = Σ|a||b|: all positive


@pytest.mark.parametrize("family", ["cuda", "triton"])
def test_the_bound_catches_a_broken_split(largest_k, family):
    """On this data the modelled 3×TF32 stays within the bound at the largest K, and a split that
    drops the low parts or one cross term exceeds it: the kernel tests below can fail."""
    k = largest_k.c_in * largest_k.kernel * largest_k.kernel
    a, b, exact = _problem(k)
    bound = tf32x3_error_bound(k, BLOCK[family], low_part_rounded=family == "cuda")
    error = np.abs(_model(a, b, family) - exact) / exact
    assert error.max() <= bound, (error.max(), bound)
    for broken in ("no_low", "drop_a_lo"):
        broken_error = np.abs(_model(a, b, family, broken) - exact) / exact
        assert broken_error.min() > bound, (broken, broken_error.min(), bound)


@pytest.mark.parametrize("family", ["cuda", "triton"])
def test_small_products_added_to_the_running_sum_are_lost_at_base_k(family):
    """Why each block is summed from zero: at base's largest K (11520, the largest of the models)
    the small products added straight into a running sum of positive products round away, past the
    bound (the cuda kernel's order before; at B6's, 6656, the loss is still within cuda's bound)."""
    layer = _largest_k_layer("base")
    k = layer.c_in * layer.kernel * layer.kernel
    a, b, exact = _problem(k)
    bound = tf32x3_error_bound(k, BLOCK[family], low_part_rounded=family == "cuda")
    assert (np.abs(_model(a, b, family, "into_running_sum") - exact) / exact).min() > bound


def _layer_problem(layer, seed_offset=0):
    """Positive planted data at the layer's C_in and kernel on a 3×3 map (its centre pixel has all
    k·k taps), 8 output channels, and the float64 answer (= Σ|x||w| per output: all positive)."""
    c, kernel = layer.c_in, layer.kernel
    g = torch.Generator().manual_seed(c + seed_offset)
    x = _planted((1, c, 3, 3), g).contiguous(memory_format=torch.channels_last)
    packed, bias = spec.pack_conv_weight(_planted((8, c, kernel, kernel), g)), torch.zeros(8)
    exact = spec.conv_bn_act_reference(x.double(), packed.double(), bias.double(), 1, False)
    return x.to(DEVICE), packed.to(DEVICE), bias.to(DEVICE), exact


def test_cuda_3xtf32_stays_within_the_bound_at_the_largest_k(largest_k):
    """The cuda family's sm_80+ kernel with tf32x3 (in the emulator as sm_80; on a GPU for real,
    through bench/gpu_check.sh), no split-K: every output within the bound of its own Σ|x||w|."""
    x, packed, bias, exact = _layer_problem(largest_k)
    tile = dict(zip(cuda_ops.TILE_FIELDS, cuda_ops.mma_tiles(torch.float32, x.device.type)[0] + (1,)))
    arch = {} if DEVICE == "cuda" else dict(arch=80)
    y = cuda_ops.conv_bn_act(x, packed, bias, 1, False, config=tile, tf32x3=True, **arch)
    bound = tf32x3_error_bound(largest_k.c_in * largest_k.kernel ** 2, BLOCK["cuda"], low_part_rounded=True)
    error = ((y.double().cpu() - exact).abs() / exact).max().item()
    assert error <= bound, (error, bound)


@pytest.mark.gpu
def test_triton_3xtf32_stays_within_the_bound_at_the_largest_k(largest_k):
    """Triton's tf32x3 on the tensor cores (a GPU only: the interpreter computes fp32 dots in IEEE),
    the launcher's own tile without split-K: every output within the bound at its BLOCK_K."""
    x, packed, bias, exact = _layer_problem(largest_k, seed_offset=1)
    n, c_in, h, w = x.shape
    config = dict(launch_config(x.device, x.dtype, n, c_in, packed.shape[3], largest_k.kernel, 1,
                                spec.symmetric(largest_k.kernel), h * w), SPLIT_K=1)
    y = triton_family.conv_bn_act(x, packed, bias, 1, False, tf32x3=True, config=config)
    bound = tf32x3_error_bound(largest_k.c_in * largest_k.kernel ** 2, config["BLOCK_K"], low_part_rounded=False)
    error = ((y.double().cpu() - exact).abs() / exact).max().item()
    assert error <= bound, (error, bound)


_COMPILE_CONV_AT_EACH_PRECISION = """
import json, sys
from hgnet_kernels import aot
launches = aot.collect(["tiny"], ["float32"], [256], [64], 90, 132)
conv = next(l for l in launches.values()
            if l.name == "conv_bn_act_kernel" and l.constants["KW"] == 3 and not l.constants["FLAT_K"])
found = {}
for precision in ("ieee", "tf32", "tf32x3"):
    constants = dict(conv.constants, INPUT_PRECISION=precision)
    r = aot.analyse(conv.kernel, conv.signature, constants, conv.attrs, conv.options, 90)
    assert r["ok"], r
    found[precision] = dict(hgmma=r["hgmma"], ffma=r["ffma"])
json.dump(found, sys.stdout)
"""


@pytest.mark.xdist_group("triton_compiles")  # test_aot.py's worker: its fork server compiles this too
def test_triton_tf32x3_compiles_to_the_three_tf32_products():
    """Triton's side of the split, compiled for sm_90 (not run): a 3×3 fp32 conv of the plan issues
    three times the TF32 wgmma of plain TF32 with tf32x3, and none in IEEE (FFMA)."""
    from test_aot import _python  # compiling needs Triton without its interpreter: another process

    found = json.loads(_python(_COMPILE_CONV_AT_EACH_PRECISION))
    assert found["ieee"]["hgmma"] == 0 and found["ieee"]["ffma"] > 0
    assert found["tf32"]["hgmma"] > 0
    assert found["tf32x3"]["hgmma"] == 3 * found["tf32"]["hgmma"], found
