"""The runnable examples in python/ work on the CPU (smoke tests, small sizes), and so does every
Python snippet of the README, as pasted.

The examples and the snippets all run in one fresh interpreter (``RUNNER``), once for both tests
of this file (an xdist_group mark keeps them on one pytest-xdist worker), not one per script or
snippet: a Python process that imports torch, transformers and timm costs ~8 s of CPU before it
does anything, twelve of them were half of this file's time. Inside it every script runs as
``python script.py ARGS`` would run it (``runpy`` as ``__main__``, its argv and its folder on
sys.path) and every snippet in a namespace of its own,
each from an empty folder of its own: a name a snippet uses without importing or defining it fails
it as it would in a fresh interpreter. What a shared process cannot show, a snippet leaning on a
module-level side effect of an earlier one (none of them sets global state), is the one thing given
up, and each snippet's traceback is reported under its own number."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.xdist_group("examples_and_readme_snippets")  # one shared interpreter run

RUNNER = r"""
import contextlib, io, json, os, runpy, sys, traceback
jobs, report = json.load(open(sys.argv[1])), sys.argv[2]
results = {}
for job in jobs:
    os.chdir(job["cwd"])
    saved_argv, saved_path = sys.argv, list(sys.path)
    out = io.StringIO()
    error = ""
    try:
        with contextlib.redirect_stdout(out):
            if "script" in job:
                sys.argv = [job["script"], *job["args"]]
                sys.path.insert(0, os.path.dirname(job["script"]))
                runpy.run_path(job["script"], run_name="__main__")
            else:
                exec(compile(job["code"], job["name"], "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        error = "" if e.code in (0, None) else f"exit status {e.code}"
    except BaseException:
        error = traceback.format_exc()
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    results[job["name"]] = {"stdout": out.getvalue(), "error": error}
with open(report, "w") as f:
    json.dump(results, f)
"""


def run_in_one_interpreter(jobs, tmp_path):
    """Run ``jobs`` (dicts with a ``name`` and a ``script`` + ``args`` or a snippet's ``code``) in
    one fresh interpreter, each from an empty folder of its own; {name: {"stdout", "error"}}."""
    for i, job in enumerate(jobs):
        job["cwd"] = str(tmp_path / f"job{i}")
        os.mkdir(job["cwd"])
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "jobs.json"), str(tmp_path / "report.json")],
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


# script, its arguments (small sizes), and what its output must say
EXAMPLES = [
    ("timm_classification.py", ["--size", "64", "--batch", "2"],
     lambda out: "top-5 classes" in out and "backend=torch" in out),
    ("detection_backbone.py", ["--height", "96", "--width", "128"],
     lambda out: "stride 32: backbone (1, 768, 3, 4) -> neck (1, 64, 3, 4)" in out),
    ("folder_inference.py", ["--size", "64", "--batch", "4"],
     lambda out: "10 images" in out and out.count(": class ") == 10),
    ("detector_checkpoint_backbone.py", ["--height", "96", "--width", "160"],
     lambda out: "stride 32: (1, 1024, 3, 5)" in out and "PP-HGNetV2_B0, LAB True, stem pool padding 'zero'" in out),
    ("hf_transformers_backbone.py", ["--height", "64", "--width", "96"],
     lambda out: "stride 32: (1, 1024, 2, 3)" in out and "PP-HGNetV2_B0 from a save_pretrained folder" in out),
    ("ultralytics_rtdetr_backbone.py", ["--size", "64"],
     lambda out: "stride 32: (1, 2048, 2, 2)" in out and "PP-HGNetV2_B4, BN eps 0.001" in out),
]


README_SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every example and every README snippet, run in one fresh interpreter."""
    jobs = [dict(name=script, script=str(ROOT / "python" / script), args=args) for script, args, _ in EXAMPLES]
    jobs += [dict(name=f"README snippet {i}", code=code) for i, code in enumerate(README_SNIPPETS)]
    return run_in_one_interpreter(jobs, tmp_path_factory.mktemp("examples"))


def test_the_examples_run(request):
    pytest.importorskip("timm")
    results = request.getfixturevalue("results")
    failed = {script: results[script]["error"] or f"unexpected output:\n{results[script]['stdout']}"
              for script, _, expected in EXAMPLES
              if results[script]["error"] or not expected(results[script]["stdout"])}
    assert not failed, "\n\n".join(f"python/{script}: {why[-3000:]}" for script, why in failed.items())


def test_readme_snippets_run_as_pasted(request):
    """Each snippet as pasted, in a namespace and an empty folder of its own: nothing it uses may be
    defined elsewhere. Their cost is what they show: the D-FINE one builds the default D-FINE and
    runs it at 640×640, the export one traces PP-HGNet tiny for ONNX (~20 s of CPU)."""
    pytest.importorskip("onnxruntime")
    results = request.getfixturevalue("results")
    failed = [(code, results[f"README snippet {i}"]["error"]) for i, code in enumerate(README_SNIPPETS)
              if results[f"README snippet {i}"]["error"]]
    assert not failed, "\n\n".join(f"{code}\n{error[-3000:]}" for code, error in failed)


def test_the_readme_has_its_snippets():
    assert len(README_SNIPPETS) >= 3 and any("export_onnx" in snippet for snippet in README_SNIPPETS)
