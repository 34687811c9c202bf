"""Shared test utilities: random BN statistics, float64 references, error measures, poisoned buffers."""
import copy

import torch
import torch.nn as nn

from hgnet_kernels.models import PPHGNet, PPHGNetConfig, StageConfig
from hgnet_kernels.models import randomize_statistics as randomize
from hgnet_kernels.numerics import relative_error as rel_err  # noqa: F401


def float64_reference(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Every form of PP-HGNet tiny (three stem convs, four stages, three of them downsampling, a stage of
# two blocks with its identity residual, several layers per block, ESE, the head) at about a tenth of
# its widths. Whole networks through Triton's interpreter and the CUDA emulator test the executor's
# glue, which does not depend on the widths, in seconds instead of minutes (a tiny 64×64 forward
# costs ~40 s of interpreter CPU time); the kernels at full widths and at every tile geometry are
# the per-op tests' (test_ops*.py, test_triton_*.py, test_cuda_*.py), and full widths on a GPU
# the gpu-marked tests'.
NARROW = PPHGNetConfig("narrow", (8, 8, 16), (StageConfig(16, 8, 24, 1, False), StageConfig(24, 12, 40, 1, True),
                                              StageConfig(40, 12, 48, 2, True), StageConfig(48, 16, 56, 1, True)),
                       layer_num=3, dropout_prob=0.0)


def narrow_pphgnet(seed: int) -> PPHGNet:
    """A PP-HGNet of the ``NARROW`` configuration with random weights and BN statistics."""
    return randomize(PPHGNet(NARROW), seed=seed)


def low_precision_eager(fn, dtype, *args, **kwargs):
    """Eager PyTorch ``fn`` with its floating-point tensors at ``dtype`` (the reference fp16/bf16
    results are judged against); where the CPU lacks the op at that dtype (fp16 convs), it runs in
    fp32 and the result is rounded to ``dtype``."""
    def cast(to):
        return [to(a) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    try:
        return fn(*cast(lambda t: t.to(dtype)), **kwargs)
    except RuntimeError:
        return fn(*cast(lambda t: t.float()), **kwargs).to(dtype)


def poisoned_slice(n, c, h, w, offset, extra, dtype):
    """Channels [offset, offset + c) of a NaN-filled channels_last buffer with ``extra`` more
    channels, and the buffer: a kernel that writes outside its slice, or leaves part of it
    unwritten, shows up as NaN where it should not be."""
    buf = torch.full((n, c + extra, h, w), float("nan"), dtype=dtype, device=DEVICE)
    buf = buf.contiguous(memory_format=torch.channels_last)
    return buf, buf[:, offset:offset + c]


def untouched_outside(buf, offset, c) -> bool:
    """Whether every channel of ``buf`` outside [offset, offset + c) is still NaN."""
    return bool(torch.isnan(torch.cat([buf[:, :offset], buf[:, offset + c:]], dim=1)).all())


def expected_partial_sums(y: torch.Tensor, block_rows: int) -> torch.Tensor:
    """The cross-image ESE partial-sum layout (``spec.psum_tiles``) from a float64 output y:
    psum[n, j] = Σ of image n's pixels inside its j-th row tile (tiles of block_rows rows over the
    N·H·W rows, image n starting at row n·H·W), zeros past its last tile."""
    from hgnet_kernels.kernels.spec import psum_tiles
    y = y.cpu()
    n, c, h, w = y.shape
    hw = h * w
    rows = y.permute(0, 2, 3, 1).reshape(n * hw, c)
    m = torch.arange(n * hw)
    image = m // hw
    j = m // block_rows - (image * hw) // block_rows
    out = torch.zeros(n, psum_tiles(n, hw, block_rows), c, dtype=y.dtype)
    out.index_put_((image, j), rows, accumulate=True)
    return out


def assert_same_model(got: nn.Module, want: nn.Module) -> None:
    """That two models compute the same function, without running either: the same tree of module
    classes with the same settings (strides, paddings, BN eps, pooling modes…) and every parameter
    and buffer bitwise equal, in the same dtype. For checking that several sources of one checkpoint
    load as the same model once one of them has been compared with a forward (a float64 forward of a
    full-width network costs seconds)."""
    def settings(model):
        return [(name, type(m), {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"})
                for name, m in model.named_modules()]
    assert settings(got) == settings(want)
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
