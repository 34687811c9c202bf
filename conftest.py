import dataclasses
import gc
import os

# Each pytest-xdist worker gets its share of the cores for the thread pools of torch (oneDNN) and
# OpenBLAS (the Triton interpreter's dots): with two workers of two threads each on two cores the
# threads spin-wait on each other, and a narrow PP-HGNet forward on the torch backend took 1.2 s
# instead of 50 ms on a loaded box. Set before torch or numpy is imported; an explicit setting wins.
# The xdist controller imports this file before it knows of any worker, and its workers inherit its
# environment: a worker replaces the controller's defaults (named in HGNET_TEST_DEFAULT_POOLS) with
# its own share, or every worker ran with every core's threads.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_defaults = set(filter(None, os.environ.get("HGNET_TEST_DEFAULT_POOLS", "").split(",")))
for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    if _pool not in os.environ or _pool in _defaults:
        os.environ[_pool] = str(max(1, (os.cpu_count() or 1) // _workers))
        _defaults.add(_pool)
os.environ["HGNET_TEST_DEFAULT_POOLS"] = ",".join(sorted(_defaults))

# Without a GPU, Triton kernels run through Triton's interpreter (chosen before any @triton.jit
# function is defined) and CUDA kernels through the CPU emulator. HGNET_TEST_GPU=1 (set by
# bench/gpu_check.sh) runs both for real.
if not os.environ.get("HGNET_TEST_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("HGNET_KERNELS_CUDA_EMULATE", "1")

import pytest
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (run by bench/gpu_check.sh)")


# Triton's interpreter builds an int32 overflow check after every int32 add, sub and mul (both
# operands cast to int64, compared with the int32 range) and hands it to device_assert, which drops
# it unless the kernel is compiled with debug, and the interpreter's options leave debug off
# (Triton 3.6 and 3.8): the check asserts nothing, and building it was half the CPU time of
# test_guarantees' triton cases and 45 % of test_triton_conv's. Every worker skips building it;
# tests/test_harness.py fails if a Triton's interpreter starts asserting it (then keep it).
def _skip_unasserted_overflow_checks() -> None:
    from triton.runtime import interpreter
    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if (dataclasses.is_dataclass(options) and not getattr(options, "debug", True)
            and getattr(options, "sanitize_overflow", False)):
        builder.options = dataclasses.replace(options, sanitize_overflow=False)


# Triton's interpreter wraps every builtin of triton.language for itself at each launch and again at
# each call of a @triton.jit helper inside a kernel, listing them with inspect.getmembers every time:
# a fifth of the conv kernel's interpreted time in a profile of the suite. A module's builtins do
# not change, so each list is taken once, here, before any kernel runs (the wrapping stays Triton's);
# a module not listed here keeps Triton's own function. tests/test_harness.py compares the lists
# with fresh ones after a kernel has called a helper.
def _list_the_interpreters_builtins_once() -> None:
    import inspect
    import triton.language as tl
    from triton.runtime import interpreter
    patch_attr, patch_builtin = getattr(interpreter, "_patch_attr", None), getattr(interpreter, "_patch_builtin", None)
    if patch_attr is None or patch_builtin is None or \
            list(inspect.signature(patch_builtin).parameters) != ["pkg", "builder", "scope"]:
        return
    builtin_lists = {pkg: [(name, member) for name, member in inspect.getmembers(pkg) if tl.core.is_builtin(member)]
                     for pkg in (tl, tl.core, tl.tensor, tl.math, tl.core.tensor_descriptor_base)}

    def listed_once(pkg, builder, scope):
        if pkg not in builtin_lists:
            return patch_builtin(pkg, builder, scope)
        for name, member in builtin_lists[pkg]:
            patch_attr(pkg, name, member, builder, scope)

    listed_once.builtin_lists = builtin_lists
    interpreter._patch_builtin = listed_once


# Each call of a @triton.jit helper inside a kernel makes Triton's interpreter wrap triton.language
# again (every builtin: a new lambda and a recorded attribute, ~200 per call), with the same wrappers
# of the same builtins as its launch already installed: ~15 % of test_triton_conv.py's CPU time. During
# a launch, a helper whose language modules that launch has patched patches nothing; one that sees
# another module (tl.sum's code sees tl.core, a kernel tl) patches it as Triton does. Outside a launch,
# and after it (Triton's restore), everything is Triton's own. tests/test_harness.py checks both.
def _patch_the_language_once_per_launch() -> None:
    import inspect
    import triton.language as tl
    from triton.runtime import interpreter
    patch_lang, executor = getattr(interpreter, "_patch_lang", None), getattr(interpreter, "GridExecutor", None)
    if patch_lang is None or executor is None or list(inspect.signature(patch_lang).parameters) != ["fn"]:
        return
    launch = executor.__call__
    patched = []  # per running launch: the ids of the language modules it has patched

    def once_per_launch(fn):
        if not patched:
            return patch_lang(fn)
        langs = {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}
        if langs <= patched[-1]:
            return interpreter._LangPatchScope()  # nothing changed, nothing to restore
        patched[-1] |= langs
        return patch_lang(fn)

    def tracked_launch(self, *args, **kwargs):
        patched.append(set())
        try:
            return launch(self, *args, **kwargs)
        finally:
            patched.pop()

    once_per_launch.patched = patched
    interpreter._patch_lang = once_per_launch
    executor.__call__ = tracked_launch


if os.environ.get("TRITON_INTERPRET") == "1":
    _skip_unasserted_overflow_checks()
    _list_the_interpreters_builtins_once()
    _patch_the_language_once_per_launch()


# What is alive once the tests are collected (torch, transformers, timm, the test modules: most of a
# worker's objects) stays alive to the end; frozen, Python's full collections stop walking it every
# time (the workers' full collections: 27 s of CPU in a run of the suite, 19 s frozen).
def pytest_collection_finish(session):
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; bench/gpu_check.sh runs these on a lent GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The CUDA emulator's one prerequisite: a test that reaches it on a machine without a C++ compiler
# is skipped naming the missing tool (its message, exactly; any other error still fails the test).
_NO_COMPILER = "the CUDA emulator needs a C++17 compiler (g++)"


def _skip_without_compiler(error: RuntimeError) -> None:
    if _NO_COMPILER in str(error):
        pytest.skip("g++ not found: the CUDA emulator tests need a C++17 compiler (apt install g++, or set CXX)")
    raise error


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):  # fixtures that build a cuda-backend model
    try:
        return (yield)
    except RuntimeError as e:
        _skip_without_compiler(e)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    try:
        return (yield)
    except RuntimeError as e:
        _skip_without_compiler(e)
