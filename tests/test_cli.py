import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hgnet_kernels
from hgnet_kernels import bench, verify
from hgnet_kernels.__main__ import main

from helpers import NARROW


def test_verify_passes_on_random_weights(capsys):
    assert main(["verify", "--size", "32", "--iters", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: fused relative error" in out and "FusedPPHGNet[torch]" in out


def test_verify_fails_on_a_wrong_fused_result(narrow_tiny, monkeypatch, capsys):
    real_forward = hgnet_kernels.FusedPPHGNet.forward
    monkeypatch.setattr(hgnet_kernels.FusedPPHGNet, "forward",
                        lambda self, x: real_forward(self, x) * (1 + 1e-3))
    assert main(["verify", "--size", "32", "--iters", "1"]) == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_verify_loads_weights(tmp_path, capsys):
    model = hgnet_kernels.models.randomize_statistics(hgnet_kernels.PPHGNet("tiny"), seed=9)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert main(["verify", "--size", "32", "--iters", "1", "--weights", str(tmp_path / "w.pth")]) == 0


def test_bench_writes_json_csv_png(narrow_tiny, tmp_path):
    assert main(["bench", "--models", "tiny", "--batches", "1", "--size", "64", "--rounds", "2",
                 "--iters", "1", "--no-compile", "--backends", "torch", "--out", str(tmp_path),
                 "--tag", "smoke"]) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    methods = {r["method"]: r for r in report["rows"]}
    assert set(methods) == {"eager", "eager_channels_last", "fused_torch"}
    assert all(r["correct"] and r["latency_ms"] > 0 for r in methods.values())
    assert report["machine"]["torch"] == torch.__version__
    assert (tmp_path / "smoke.csv").read_text().count("\n") == 4
    assert (tmp_path / "smoke.png").read_bytes()[:4] == b"\x89PNG"


def test_module_entry_point_and_cheap_import():
    """One interpreter (each costs ~5 s of CPU importing torch): the import first, then the package
    run as ``python -m hgnet_kernels`` runs it (``runpy.run_module`` as ``__main__``, argv[0] set)."""
    code = ("import runpy, sys, hgnet_kernels; "
            "assert 'triton' not in sys.modules and 'timm' not in sys.modules, sorted(sys.modules); "
            "sys.argv[1:] = ['verify', '--help']; "
            "runpy.run_module('hgnet_kernels', run_name='__main__', alter_sys=True)")
    help_text = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "--backend" in help_text and "--weights" in help_text


def _table_row(out, method):
    return next(line for line in out.splitlines() if method in line)


@pytest.fixture
def narrow_tiny(monkeypatch):
    """``--model tiny`` builds the narrow PP-HGNet (tiny's every form at a tenth of its widths): what
    the stand-in tests check is the command's glue (the stand-in chosen and named, no timings), and
    a full-width tiny through the interpreter costs minutes of CPU for nothing the per-op tests and
    the gpu-marked tests do not cover. The bench tests and the mismatch test use it too: what they
    check (files, rows, errors, exit status) does not depend on the widths; the full-width tiny is
    verified by test_verify_passes_on_random_weights and test_verify_loads_weights."""
    def build(name, **kwargs):
        return hgnet_kernels.PPHGNet(NARROW).eval() if name == "tiny" else real(name, **kwargs)
    real = verify.build_model
    monkeypatch.setattr(verify, "build_model", build)
    monkeypatch.setattr(bench, "build_model", build)


def test_verify_triton_backend_on_the_interpreter(narrow_tiny, capsys):
    assert main(["verify", "--backend", "triton", "--size", "32", "--batch", "2"]) == 0
    out = capsys.readouterr()
    assert "FusedPPHGNet[triton]" in out.out and "TRITON_INTERPRET=1" in out.err
    # an interpreter's speed means nothing: the timing columns are blank, not a number
    assert "×" not in _table_row(out.out, "FusedPPHGNet[triton]") and "×" not in _table_row(out.out, "eager (NCHW)")
    assert "no timings" in out.out


def test_verify_cuda_backend_on_the_emulator(narrow_tiny, capsys):
    assert main(["verify", "--backend", "cuda", "--size", "32"]) == 0
    assert "FusedPPHGNet[cuda]" in capsys.readouterr().out


# ---- user errors: one line saying what to do, exit status 2, never a traceback ----------------

USER_ERRORS = [
    (["verify", "--weights", "/nonexistent/w.pdparams"], "does not exist"),
    (["verify", "--weights", "."], "is a directory"),
    (["verify", "--backend", "foo"], "invalid choice: 'foo'"),
    (["verify", "--size", "16"], "both at least 32"),
    (["verify", "--batch", "0"], "must be at least 1"),
    (["verify", "--device", "cuda"], "no CUDA GPU is visible"),
    (["verify", "--device", "tpu"], "unknown device"),
    (["bench", "--backends", "foo"], "invalid choice: 'foo'"),
    (["bench", "--batches", "0"], "must be at least 1"),
    (["bench", "--size", "8x64"], "both at least 32"),
]


@pytest.mark.parametrize("argv,message", USER_ERRORS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_user_errors_are_one_line_with_status_2(argv, message, capsys):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("there is a GPU here")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err


def test_truncated_weights_are_a_user_error(tmp_path, capsys):
    torch.save(hgnet_kernels.PPHGNet("tiny").state_dict(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "w.pth").write_bytes(data[: len(data) // 3])
    assert main(["verify", "--weights", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert "damaged or truncated" in err and "weights_only" not in err and "Traceback" not in err


def test_verify_infers_the_size_from_the_weights(tmp_path, capsys):
    model = hgnet_kernels.models.randomize_statistics(hgnet_kernels.PPHGNet("small", num_classes=3), seed=4)
    torch.save(model.state_dict(), tmp_path / "small.pth")
    assert main(["verify", "--weights", str(tmp_path / "small.pth"), "--size", "32", "--iters", "1"]) == 0
    assert "PPHGNet_small" in capsys.readouterr().out
    assert main(["verify", "--weights", str(tmp_path / "small.pth"), "--model", "tiny"]) == 2
    assert "holds a PPHGNet_small" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hgnet_kernels {hgnet_kernels.__version__}"


# ---- bench: a failing method fails the run ----------------------------------------------------

def _bench(tmp_path, *extra):
    return main(["bench", "--models", "tiny", "--batches", "1", "--size", "32", "--rounds", "1", "--iters", "1",
                 "--no-compile", "--out", str(tmp_path), "--tag", "t", *extra])


def test_bench_exits_nonzero_when_a_method_raises(narrow_tiny, tmp_path, monkeypatch, capsys):
    def broken(self, x):
        raise RuntimeError("kernel exploded")
    monkeypatch.setattr(hgnet_kernels.FusedPPHGNet, "forward", broken)
    assert _bench(tmp_path, "--backends", "torch") == 1
    rows = {r["method"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert "kernel exploded" in rows["fused_torch"]["error"] and rows["fused_torch"]["latency_ms"] is None
    assert rows["eager"]["error"] == "" and rows["eager"]["correct"]
    out = capsys.readouterr()
    assert "FAILED" in out.out and "kernel exploded" in out.err


def test_bench_survives_a_failing_eager(narrow_tiny, tmp_path, monkeypatch):
    real_forward = hgnet_kernels.PPHGNet.forward

    def broken(self, x):  # the float64 reference still works
        if x.dtype != torch.float64:
            raise RuntimeError("eager broke")
        return real_forward(self, x)
    monkeypatch.setattr(hgnet_kernels.PPHGNet, "forward", broken)
    assert _bench(tmp_path, "--backends", "torch") == 1
    rows = {r["method"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert "eager broke" in rows["eager"]["error"]
    assert rows["fused_torch"]["correct"] is True  # fp32 keeps its absolute floor without eager


def test_bench_reports_a_backend_that_cannot_run(narrow_tiny, tmp_path, monkeypatch, capsys):
    real = bench.unavailable_reason
    monkeypatch.setattr(bench, "unavailable_reason",
                        lambda name, *a: "no such device here" if name == "cuda" else real(name, *a))
    assert _bench(tmp_path, "--backends", "torch", "cuda") == 1  # named in --backends: the run fails
    rows = {r["method"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert rows["fused_cuda"]["error"] == "unavailable: no such device here"
    capsys.readouterr()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("HGNET_KERNELS_CUDA_EMULATE", "0")
    assert _bench(tmp_path) == 0  # by default, backends that cannot run here are only listed, saying why
    rows = {r["method"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert rows["fused_triton"]["error"].startswith("unavailable:")
    out = capsys.readouterr().out
    # one footnote line per backend under the table, not a wrapped table row
    assert "fused_triton" not in out.split("not run here")[0]
    assert len([line for line in out.splitlines() if line.startswith("not run here: fused_triton: ")]) == 1


def test_bench_runs_named_stand_in_backends_on_the_cpu_without_timing_them(narrow_tiny, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # bench sets it, as verify does (restored after the test)
    assert _bench(tmp_path, "--backends", "torch", "triton") == 0
    assert os.environ["TRITON_INTERPRET"] == "1"
    rows = {r["method"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert rows["fused_triton"]["correct"] and rows["fused_triton"]["latency_ms"] is None
    assert "not timed" in rows["fused_triton"]["note"] and rows["fused_torch"]["latency_ms"] > 0
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err


def test_plan_defaults_to_float32_and_its_json_carries_totals(capsys):
    assert main(["plan", "--model", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype"] == "float32"
    totals = report["totals"]
    assert totals["macs"] == sum(r["macs"] for r in report["rows"]) and 4.4e9 < totals["macs"] < 4.7e9
    assert totals["bytes_read"] == sum(r["bytes_read"] for r in report["rows"])
    assert totals["intensity"] == pytest.approx(2 * totals["macs"] / (totals["bytes_read"] + totals["bytes_written"]))
    assert main(["plan", "--model", "tiny", "--json", "--gpu", "H100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["roofline_us"] == pytest.approx(sum(r["roofline_us"] for r in report["rows"]))


def test_gpu_check_steps_report_failures(tmp_path):
    root = Path(__file__).resolve().parents[1]
    script = ("source bench/gpu_check_steps.sh; step fine 5 true; step broken 5 false; "
              "step slow 1 sleep 5; finish")
    result = subprocess.run(["bash", "-c", script], cwd=root, capture_output=True, text=True)
    assert result.returncode == 1
    assert re.search(r"broken\s+FAILED", result.stdout) and re.search(r"slow\s+TIMED OUT", result.stdout)
    assert re.search(r"fine\s+ok", result.stdout)
    good = subprocess.run(["bash", "-c", "source bench/gpu_check_steps.sh; step fine 5 true; finish"], cwd=root,
                          capture_output=True, text=True)
    assert good.returncode == 0


def test_pphgnetv2_through_the_command_line(tmp_path, capsys):
    assert main(["verify", "--model", "b0", "--size", "64x96", "--iters", "1"]) == 0
    assert "PPHGNetV2_B0" in capsys.readouterr().out
    assert main(["plan", "--model", "b4", "--size", "640", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert any(r["kind"].startswith("depthwise 5×5/1 relu") for r in rows)
    assert _bench(tmp_path, "--models", "b0", "--backends", "torch") == 0
    row = next(r for r in json.loads((tmp_path / "t.json").read_text())["rows"] if r["method"] == "fused_torch")
    assert row["model"] == "b0" and row["correct"] and row["size"] == "32x32"
