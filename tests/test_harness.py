"""The test harness's own settings (conftest.py) lose nothing: under Triton's interpreter the int32
overflow checks it skips building are checks the interpreter would not assert, the builtins it
lists once are the ones Triton would list at every call, and a launch's helpers find the language
patched as Triton would patch it again."""
import dataclasses
import inspect
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


@triton.jit
def _scaled(x, FACTOR: tl.constexpr):
    return x * FACTOR


@triton.jit
def _helper_kernel(x_ptr, y_ptr, N: tl.constexpr, FACTOR: tl.constexpr):
    offsets = tl.arange(0, N)
    tl.store(y_ptr + offsets, _scaled(tl.load(x_ptr + offsets), FACTOR) + tl.sum(tl.load(x_ptr + offsets)))


def _unwrapped(value):
    """A builtin behind Triton's interpreter wrapper (``lambda *args, member=builtin, **kwargs``)."""
    return (getattr(value, "__kwdefaults__", None) or {}).get("member", value)


def test_the_builtins_listed_once_are_the_ones_triton_lists_at_each_call():
    """Every builtin a module holds now, seen through the wrappers Triton leaves behind (a helper's,
    e.g. ``tl.sum``'s, are never removed), is in conftest's list of that module, as the same object."""
    from triton.runtime import interpreter
    lists = getattr(interpreter._patch_builtin, "builtin_lists", None)
    assert lists, ("conftest.py's lists are not in use: this Triton's interpreter changed _patch_builtin; "
                   "adapt or drop _list_the_interpreters_builtins_once")
    x, y = torch.arange(8, dtype=torch.float32), torch.full((8,), float("nan"))
    _helper_kernel[(1,)](x, y, N=8, FACTOR=3.0)  # a launch, and @triton.jit helpers called inside it
    assert torch.equal(y, x * 3 + x.sum())
    assert {tl, tl.core, tl.tensor, tl.math} <= set(lists)
    for pkg, builtins in lists.items():
        now = {name: _unwrapped(value) for name, value in inspect.getmembers(pkg)}
        assert builtins and {(name, member) for name, member in now.items() if tl.core.is_builtin(member)} <= \
            set(builtins), pkg


def test_a_launch_patches_each_language_module_once(monkeypatch):
    """conftest's once-per-launch patching: in a launch of ``_helper_kernel`` (its module sees tl),
    ``_scaled`` (the same module) patches nothing and ``tl.sum`` (its code sees tl.core) patches:
    two patches, where Triton makes three (one per launch and helper call). The result is the
    kernel's, and after the launch nothing is held as patched."""
    from triton.runtime import interpreter
    once = interpreter._patch_lang
    assert hasattr(once, "patched"), ("conftest.py's once-per-launch patch is not in use: this Triton's "
                                      "interpreter changed _patch_lang; adapt or drop _patch_the_language_once_per_launch")
    patches = []
    patch_builtin = interpreter._patch_builtin

    def counted(pkg, builder, scope):
        if pkg is tl.core.tensor_descriptor_base:  # patched once by every _patch_lang, last
            patches.append(pkg)
        return patch_builtin(pkg, builder, scope)
    monkeypatch.setattr(interpreter, "_patch_builtin", counted)
    x, y = torch.arange(8, dtype=torch.float32), torch.full((8,), float("nan"))
    _helper_kernel[(1,)](x, y, N=8, FACTOR=3.0)
    assert torch.equal(y, x * 3 + x.sum())
    assert len(patches) == 2 and once.patched == []
