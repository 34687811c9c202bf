"""The runnable examples in python/ work on the CPU (smoke tests, small sizes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "python" / script), *args], env=env, check=True,
                          capture_output=True, text=True, timeout=600).stdout


def test_timm_classification():
    pytest.importorskip("timm")
    out = run("timm_classification.py", "--size", "64", "--batch", "2")
    assert "top-5 classes" in out and "backend=torch" in out


def test_detection_backbone():
    out = run("detection_backbone.py", "--height", "96", "--width", "128")
    assert "stride 32: backbone (1, 768, 3, 4) -> neck (1, 64, 3, 4)" in out


def test_folder_inference_on_generated_images():
    out = run("folder_inference.py", "--size", "64", "--batch", "4")
    assert "10 images" in out and out.count(": class ") == 10


def test_detector_checkpoint_backbone():
    out = run("detector_checkpoint_backbone.py", "--height", "96", "--width", "160")
    assert "stride 32: (1, 1024, 3, 5)" in out and "PP-HGNetV2_B0, LAB True, stem pool padding 'zero'" in out


def test_hf_transformers_backbone():
    out = run("hf_transformers_backbone.py", "--height", "64", "--width", "96")
    assert "stride 32: (1, 1024, 2, 3)" in out and "PP-HGNetV2_B0 from a save_pretrained folder" in out


def test_ultralytics_rtdetr_backbone():
    out = run("ultralytics_rtdetr_backbone.py", "--size", "64")
    assert "stride 32: (1, 2048, 2, 2)" in out and "PP-HGNetV2_B4, BN eps 0.001" in out
