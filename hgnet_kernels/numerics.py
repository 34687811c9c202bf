"""Error measures shared by the tests, ``verify`` and the benchmarks."""
import torch

# Floor under which an fp32 result counts as exact (TF32 off): far above fp32 rounding through the
# network (~1e-7 relative), far below any real kernel bug.
FP32_REL_TOL = 1e-5


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual − expected| / max |expected|, computed in float64."""
    expected = expected.detach().double()
    diff = (actual.detach().double() - expected).abs().max()
    return (diff / expected.abs().max().clamp_min(1e-30)).item()


def max_abs_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.detach().double() - expected.detach().double()).abs().max().item()


def tolerance(dtype: torch.dtype, eager_error: float) -> float:
    """Allowed relative error of a fused result: twice eager PyTorch's own error at that dtype
    (flash-attention's rule), never below the fp32 floor."""
    return max(2.0 * eager_error, FP32_REL_TOL)


# ---- fp32 convs on the tensor cores as 3×TF32 (the opt-in ``tf32x3`` of the triton and cuda families)
#
# Per output, a conv is an inner product s = Σ_k a_k·b_k over K = C_in·k·k terms; write
# S = Σ_k |a_k|·|b_k|. The tests measure |ŝ − s| / max|s|, so what a bound on |ŝ − s| / S means
# there depends on the data's condition S / |s| (1 for positive data).
#
# The split. TF32 keeps 11 significant bits: rounding to nearest has unit roundoff u_t = 2^-11.
# a_hi = tf32(a) (cvt.rna); r = a − a_hi is exact in fp32 (a_hi is within half a TF32 ulp of a:
# Sterbenz) and |r| ≤ u_t·|a|. The low part the tensor core multiplies is a_lo = r + ε_a, where
#   * the cuda family rounds it, a_lo = tf32(r):                         |ε_a| ≤ u_t·|r| ≤ 2^-22·|a|;
#   * Triton's compiler passes r's fp32 bits, of which the tensor core
#     reads the top 19 (truncation; the emulator's model of the hardware): |ε_a| ≤ 2u_t·|r| ≤ 2^-21·|a|.
# A product of two TF32 values (11 × 11 significant bits) is exact in fp32 (24), barring
# underflow. Three products t = a_hi·b_hi + a_hi·b_lo + a_lo·b_hi stand in for a·b (a_lo·b_lo is
# dropped), and with s_b, ε_b the same for b:
#   a·b − t = r·s_b − a_hi·ε_b − ε_a·b_hi,   |a_hi| ≤ (1 + u_t)|a|,
#   |a·b − t| ≤ (c1 + (c1 − 1)·u_t)·u_t²·|a·b| ≈ c1·2^-22·|a·b|,   c1 = 3 (rounded low part), 5 (truncated).
#
# The accumulation. Both families sum a block's 3·B products from zero (small terms first) and add
# that sum to the running sum once: Triton's F32DotTC pass (3.6 and 3.8, read from their TTGIR)
# emits dot(a_lo, b_hi, 0) → dot(a_hi, b_lo, ·) → dot(a_hi, b_hi, ·) → + acc per K step, B = BLOCK_K;
# conv_mma.cuh does the same per m16n8k8, B = 8 (a step-wide sum would need 32 more registers).
# A product then goes through at most d = 3·B + ⌈K / B⌉ fp32 additions (split-K: one more), each
# rounding to nearest (|δ| ≤ u = 2^-24), so the sum is off by at most γ_d·Σ|t| with
# γ_d = d·u / (1 − d·u) (Higham, Accuracy and Stability of Numerical Algorithms, §4.2), and
# Σ|t| ≤ (1 + 2^-8)·S. So
#   |ŝ − s| ≤ (c1·2^-22 + γ_d·(1 + 2^-8))·S  ≈  (c1·2^-22 + (3·B + K / B)·2^-24)·S,
# at base's largest K (11520) 2.9e-5·S for Triton at BLOCK_K 32 and 8.8e-5·S for cuda, against
# K·2^-24 ≈ 6.9e-4·S for a plain fp32 FMA chain. Summing the small products straight into the
# running sum instead (as the cuda kernel did) loses them once that sum passes ~2^11 products of
# one sign, giving the split's gain back (1.4e-4·S at base's K).
#
# What a GPU may do differently (why tf32x3 stays opt-in until a GPU run): the tensor cores do not
# add like a sequence of IEEE fp32 additions (multi-term adders that align to the largest exponent
# and truncate have been measured on V100 to A100: Fasi et al., PeerJ Comput. Sci. 2021), which can
# double u, lose low bits of the small products inside one MMA, and flush subnormal products.

TF32_UNIT = 2.0 ** -11   # unit roundoff of TF32 (10 stored + 1 implicit significand bits)
FP32_UNIT = 2.0 ** -24


def tf32x3_error_bound(k: int, block_k: int, low_part_rounded: bool) -> float:
    """Bound on |ŝ − s| / Σ|a||b| for one 3×TF32 inner product over ``k`` terms summed ``block_k``
    at a time (Triton's BLOCK_K; 8 for the cuda family), derived above: c1·u_t² for the split
    (c1 = 3 with a rounded low part, the cuda family; 5 truncated, Triton's) plus γ_d for the fp32
    accumulation, d = 3·block_k + ⌈k / block_k⌉."""
    c1 = 3.0 if low_part_rounded else 5.0
    split = (c1 + (c1 - 1.0) * TF32_UNIT) * TF32_UNIT ** 2
    d = 3 * block_k + -(-k // block_k)
    return split + d * FP32_UNIT / (1 - d * FP32_UNIT) * (1 + 2.0 ** -8)
