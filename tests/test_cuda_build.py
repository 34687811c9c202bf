"""The CUDA C++ sources build with nvcc, without register spills, and as a torch extension.

These need the CUDA toolkit (nvcc) and, for the extension, a CUDA build of torch; CI has both.
The kernels' numerics are checked by tests/test_ops.py through the CPU emulator.
"""
import pytest
import torch

from hgnet_kernels.kernels.cuda import build as cuda_build
from hgnet_kernels.kernels.cuda import emulator as cuda_emulator
from hgnet_kernels.kernels.cuda import extension as cuda_ext
from hgnet_kernels.kernels.cuda import ops as cuda_ops
from hgnet_kernels.kernels.cuda import sass as cuda_sass

needs_nvcc = pytest.mark.skipif(cuda_build.find_nvcc() is None, reason="nvcc is not installed (CUDA toolkit)")


# The sm_90 compile these checks read: the JIT extension's own where one can be built (its objects
# and build log: torch's nvcc flags, and no second compile of the same sources), else a device-only
# nvcc compile of the same sources (a CPU-only torch).
EXTENSION_BUILDS = cuda_build.can_build_extension() is None


def sm90_report() -> str:
    if EXTENSION_BUILDS:
        return cuda_build.for_arch(cuda_ext.ptxas_report("9.0"), "9.0")
    return cuda_build.ptxas_report("9.0")


def sm90_mma_main_loops() -> dict:
    if EXTENSION_BUILDS:
        return cuda_sass.main_loops_of([cuda_ext.object_path(s, "9.0") for s in cuda_build.MMA_SOURCES], "9.0")
    return cuda_sass.mma_main_loops("9.0", sources=cuda_build.KERNEL_SOURCES)


@needs_nvcc
def test_kernels_compile_for_sm90_without_spills():
    kernels = cuda_build.spills(sm90_report())
    # 6 SIMT (fp32: 4 load paths) + 4 WMMA conv kernels, (4 fp16/bf16 tiles + 1 fp32) × 2 load paths +
    # split-K reductions, 3 dtypes × (2 kernel sizes × 4 (vector width, index type) depthwise and pool,
    # gate), 3 × 2 × 4 scale, the PTX probes
    assert len(kernels) >= 10 + 2 * 10 + 2 + 3 * (8 + 8 + 1) + 24 + 10, sorted(kernels)
    spilling = {k: v for k, v in kernels.items() if v != (0, 0)}
    assert not spilling, f"kernels spill registers (stores, loads): {spilling}"


@needs_nvcc
@pytest.mark.parametrize("arch", ["8.0", "8.6", "8.9"])
def test_sm80_conv_kernel_compiles_without_spills_on_every_target(arch):
    """The sm_80+ conv kernel (conv_mma.cuh) on the other archs of the default build: no spills, and
    the 16-byte-copy instantiations within the 128 registers their launch bounds allow (2 blocks of
    256 or 4 of 128 threads per SM)."""
    report = cuda_build.ptxas_report(arch, sources=cuda_build.MMA_SOURCES, archs=cuda_build.SM80_ARCHS)
    kernels = cuda_build.spills(report)
    assert len(kernels) >= 2 * 10 + 2, sorted(kernels)
    spilling = {k: v for k, v in kernels.items() if v != (0, 0)}
    assert not spilling, f"sm_{arch}: kernels spill registers (stores, loads): {spilling}"
    fast = {k: r for k, r in cuda_build.registers(report).items()
            if "conv_mma_kernel" in k and k.endswith("Lb1EEEvNS0_6ParamsE")}  # VEC = true
    assert fast and max(fast.values()) <= 128, fast


def test_no_preprocessor_branch_tells_sm80_sm86_sm89_apart():
    """The spill checks above compile sm_80, sm_86 and sm_89 from one front end (compute_80's PTX):
    that is the build's code only while no ``__CUDA_ARCH__`` comparison in csrc/ differs between them."""
    import operator
    import re
    from pathlib import Path

    ops = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
           "!=": operator.ne}
    comparisons = []
    for path in sorted(Path(cuda_build.csrc_dir()).rglob("*")):
        if path.suffix in (".cu", ".cuh", ".h", ".cpp"):
            text = path.read_text()
            assert "__CUDA_ARCH_SPECIFIC__" not in text and "__CUDA_ARCH_FAMILY_SPECIFIC__" not in text, path
            comparisons += [(path.name, op, int(value))
                            for op, value in re.findall(r"__CUDA_ARCH__\s*(>=|<=|==|!=|>|<)\s*(\d+)", text)]
    assert comparisons  # the >= 800 branches of the sm_80+ conv kernel and the PTX wrappers
    assert len(comparisons) == sum(len(re.findall(r"__CUDA_ARCH__\s*[<>=!]", p.read_text()))
                                   for p in Path(cuda_build.csrc_dir()).rglob("*") if p.is_file())
    nums = [int(arch.replace(".", "")) * 10 for arch in cuda_build.SM80_ARCHS]
    differing = [c for c in comparisons if len({ops[c[1]](num, c[2]) for num in nums}) > 1]
    assert not differing, f"these branches tell {cuda_build.SM80_ARCHS} apart: compile each from its own PTX {differing}"


@needs_nvcc
@pytest.mark.parametrize("arch", ["9.0", "8.0"])
def test_sm80_conv_kernel_main_loop_issues_hmma(arch):
    """Every instantiation of the sm_80+ conv kernel has HMMA (mma.sync) in its main loop, read from
    the SASS of the compile the spill checks above made."""
    if arch == "9.0":
        loops = sm90_mma_main_loops()
    else:
        loops = cuda_sass.mma_main_loops(arch, sources=cuda_build.MMA_SOURCES, archs=cuda_build.SM80_ARCHS)
    # f16 and bf16: 4 tiles each, f32 (3×TF32): 1; each with 16-byte cp.async and scalar loads
    assert len(loops) == 2 * (4 + 4 + 1), sorted(loops)
    missing = [label for label, loop in loops.items() if loop is None or loop["mix"].get("HMMA", 0) == 0]
    assert not missing, f"sm_{arch}: no HMMA in the main loop of {missing}"


def test_sass_report_names_instantiations():
    mangled = "_ZN3hgk3mma15conv_mma_kernelI13__nv_bfloat16Li128ELi64ELi2ELi2ELi4ELb1EEEvNS0_6ParamsE"
    assert cuda_sass.instantiation(mangled) == "bf16 128x64 warps 2x2 stages 4 cp.async16"
    assert cuda_sass.instantiation("_ZN3hgk3mma25conv_splitk_reduce_kernelI6__halfLi64EEEvNS0_6ParamsEi") is None
    lines = cuda_sass.format_report("8.0", {"f16 64x64 warps 2x2 stages 4 scalar": None, "f32 64x64 warps 2x2 "
                                            "stages 3 cp.async16": dict(instructions=40, tensor_core=8,
                                                                        per_tensor_core=5.0, mix={"HMMA": 8})})
    assert "no tensor-core instruction inside a loop" in lines[2] and lines[3].split()[-2:] == ["5.00", "HMMA:8"]


@pytest.mark.skipif(cuda_build.can_build_extension() is not None,
                    reason=f"cannot build a torch CUDA extension here: {cuda_build.can_build_extension()}")
def test_torch_extension_builds_and_checks_arguments():
    ext = cuda_ext.jit_build(archs="9.0")
    assert ext.conv_path(1, 90, False) == 2  # fp16 on sm_90: the mma.sync kernel
    # The sm_80+ kernel's tiles and K step, from the extension as from the emulator (one C++ source).
    assert tuple(map(tuple, ext.conv_mma_tiles(1))) == cuda_ops.mma_tiles(torch.float16, "cpu")
    assert ext.conv_mma_k_step() == cuda_ops.mma_k_step("cpu") == 32
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="x must be a CUDA tensor"):
        ext.conv_bn_act(x, torch.randn(3, 3, 3, 4), torch.randn(4), 1, True, torch.empty(1, 4, 8, 8), None, 90)


def test_jit_build_keeps_ninja_output_in_its_log(monkeypatch, tmp_path, capfd):
    """What torch's verbose build writes to file descriptor 1 (ninja's output, ptxas's report in it,
    which test_kernels_compile_for_sm90_without_spills reads) goes to the build directory's log, and
    into the error when the build fails; file descriptor 1 is given back after."""
    import os
    from pathlib import Path

    import torch.utils.cpp_extension as cpp_extension

    for name, value in ((cuda_build.CACHE_ENV, str(tmp_path)), ("CUDA_HOME", str(tmp_path)),
                        ("TORCH_CUDA_ARCH_LIST", "")):
        monkeypatch.setenv(name, value)  # jit_build sets the last two; undone after the test
    monkeypatch.setattr(cuda_build, "can_build_extension", lambda: None)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)

    def failing_build(**kwargs):
        assert kwargs["verbose"] and kwargs["build_directory"] == cuda_ext.build_directory("9.0")
        os.write(1, b"ptxas info    : Used 32 registers\n")
        raise RuntimeError("Error building extension")
    monkeypatch.setattr(cpp_extension, "load", failing_build)
    with pytest.raises(RuntimeError, match="(?s)Error building extension.*Used 32 registers"):
        cuda_ext.jit_build(archs="9.0")
    assert (Path(cuda_ext.build_directory("9.0")) / cuda_ext.BUILD_LOG).read_text() == \
        "ptxas info    : Used 32 registers\n"
    os.write(1, b"after the build\n")
    assert capfd.readouterr().out == "after the build\n"


def test_spill_parser_reads_ptxas_reports():
    report = ("ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n"
              "    8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads\n"
              "ptxas info    : Used 96 registers, used 1 barriers\n"
              "ptxas info    : Compiling entry function '_Z1jv' for 'sm_90'\n"
              "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
              "ptxas info    : Used 32 registers, used 0 barriers\n")
    assert cuda_build.spills(report) == {"_Z1kv": (12, 4), "_Z1jv": (0, 0)}
    assert cuda_build.registers(report) == {"_Z1kv": 96, "_Z1jv": 32}


def test_arch_flags_and_toolkit_root():
    assert cuda_build.nvcc_arch_flags("8.0;9.0+PTX") == [
        "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90"]
    if cuda_build.find_nvcc():
        import os
        assert os.path.exists(os.path.join(cuda_build.cuda_home(), "bin", "nvcc"))


def test_availability_probe_never_compiles(monkeypatch):
    """``unavailable_reason`` is cheap: with a GPU but no prebuilt extension it checks the toolchain
    and leaves the build to the first use."""
    def no_build(*args, **kwargs):
        raise AssertionError("unavailable_reason must not build the extension")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_ext, "jit_build", no_build)
    monkeypatch.setattr(cuda_ext, "_prebuilt", no_build)
    monkeypatch.setattr(cuda_ext.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(cuda_build, "can_build_extension", lambda: "nvcc is not on the PATH")
    assert "cannot be built here: nvcc is not on the PATH" in cuda_ext.unavailable_reason()
    monkeypatch.setattr(cuda_build, "can_build_extension", lambda: None)
    assert cuda_ext.unavailable_reason() is None


def test_emulator_entry_points_have_declared_c_signatures():
    """Every ``hgk_emu_*`` function of emu_api.cpp has its ctypes signature declared, argument for
    argument, so a mismatch is a ctypes error rather than silent memory corruption."""
    import ctypes
    import re
    from pathlib import Path

    source = (Path(cuda_build.csrc_dir()) / "emulator" / "emu_api.cpp").read_text()
    c_types = {"void*": ctypes.c_void_p, "const void*": ctypes.c_void_p, "const int64_t*": ctypes.POINTER(ctypes.c_int64),
               "int64_t*": ctypes.POINTER(ctypes.c_int64),
               "float*": ctypes.POINTER(ctypes.c_float), "const float*": ctypes.POINTER(ctypes.c_float),
               "int": ctypes.c_int, "int64_t": ctypes.c_int64, "float": ctypes.c_float}
    found = {}
    for result, name, params in re.findall(r"^(int|const char\*) (hgk_emu_\w+)\(([^)]*)\)", source, re.MULTILINE):
        types = [c_types[" ".join(p.split()[:-1])] for p in params.replace("\n", " ").split(",") if p.strip()]
        found[name] = (types, ctypes.c_char_p if result == "const char*" else ctypes.c_int)
    assert found and set(found) == set(cuda_emulator.SIGNATURES)
    for name, (argtypes, restype) in found.items():
        declared, declared_result = cuda_emulator.SIGNATURES[name]
        assert declared == argtypes and declared_result == restype, name
    lib = cuda_emulator.library()
    assert lib.hgk_emu_conv_bn_act.argtypes == cuda_emulator.SIGNATURES["hgk_emu_conv_bn_act"][0]
    with pytest.raises(ctypes.ArgumentError):
        lib.hgk_emu_conv_path(1.5, 90, 0)
