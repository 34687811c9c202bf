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
