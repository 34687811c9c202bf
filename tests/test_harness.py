"""The test harness's own settings (conftest.py) lose nothing: under Triton's interpreter the int32
overflow checks it skips building are checks the interpreter would not assert."""
import dataclasses
import os

import pytest
import torch
import triton
import triton.language as tl

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="about Triton's interpreter (a GPU compile checks overflow only with debug)")


@triton.jit
def _times_kernel(x_ptr, y_ptr, FACTOR: tl.constexpr):
    tl.store(y_ptr, tl.load(x_ptr) * FACTOR)


def _times(x: int, factor: int) -> int:
    src, out = torch.tensor([x], dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    _times_kernel[(1,)](src, out, FACTOR=factor)
    return int(out)


def test_the_skipped_int32_overflow_checks_are_ones_the_interpreter_does_not_assert(monkeypatch):
    from triton.runtime import interpreter
    builder = interpreter.interpreter_builder
    assert not builder.options.sanitize_overflow and not builder.options.debug  # conftest's setting
    assert _times(3, 1 << 20) == 3 << 20
    assert _times(1 << 20, 1 << 12) == 0  # 2^32 wraps to 0 in int32, as compiled GPU code does
    # Triton's own setting: the check is built, and still nothing is asserted.
    monkeypatch.setattr(builder, "options", dataclasses.replace(builder.options, sanitize_overflow=True))
    assert _times(1 << 20, 1 << 12) == 0, (
        "this Triton's interpreter asserts int32 overflow: conftest.py must stop switching its check off")
