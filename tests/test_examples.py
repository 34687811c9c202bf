"""The runnable examples in python/ work on the CPU (smoke tests, small sizes), and so does every
Python snippet of the README, as pasted."""
import os
import re
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


README_SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("index", range(len(README_SNIPPETS)))
def test_readme_snippets_run_as_pasted(index, tmp_path):
    """Each snippet alone in a fresh interpreter, from an empty folder: nothing it uses may be
    defined elsewhere."""
    pytest.importorskip("onnxruntime")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", README_SNIPPETS[index]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"README snippet {index}:\n{README_SNIPPETS[index]}\n{result.stderr[-3000:]}"


def test_the_readme_has_its_snippets():
    assert len(README_SNIPPETS) >= 3 and any("export_onnx" in snippet for snippet in README_SNIPPETS)
