import json
import subprocess
import sys

import torch

import hgnet_kernels
from hgnet_kernels.__main__ import main


def test_verify_passes_on_random_weights(capsys):
    assert main(["verify", "--size", "64", "--iters", "2", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: fused relative error" in out and "FusedPPHGNet[torch]" in out


def test_verify_fails_on_a_wrong_fused_result(monkeypatch, capsys):
    real_forward = hgnet_kernels.FusedPPHGNet.forward
    monkeypatch.setattr(hgnet_kernels.FusedPPHGNet, "forward",
                        lambda self, x: real_forward(self, x) * (1 + 1e-3))
    assert main(["verify", "--size", "64", "--iters", "1"]) == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_verify_loads_weights(tmp_path, capsys):
    model = hgnet_kernels.models.randomize_statistics(hgnet_kernels.PPHGNet("tiny"), seed=9)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert main(["verify", "--size", "32", "--iters", "1", "--weights", str(tmp_path / "w.pth")]) == 0


def test_bench_writes_json_csv_png(tmp_path):
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
    code = ("import sys, hgnet_kernels; "
            "assert 'triton' not in sys.modules and 'timm' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    help_text = subprocess.run([sys.executable, "-m", "hgnet_kernels", "verify", "--help"],
                               check=True, capture_output=True, text=True).stdout
    assert "--backend" in help_text and "--weights" in help_text


def test_verify_triton_backend_on_the_interpreter(capsys):
    assert main(["verify", "--backend", "triton", "--size", "32", "--batch", "2"]) == 0
    assert "FusedPPHGNet[triton]" in capsys.readouterr().out


def test_verify_cuda_backend_on_the_emulator(capsys):
    assert main(["verify", "--backend", "cuda", "--size", "32"]) == 0
    assert "FusedPPHGNet[cuda]" in capsys.readouterr().out
