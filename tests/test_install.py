"""What the README's set-up section promises about test prerequisites: a missing one is a skip
that names it, not an error."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_emulator_tests_without_a_compiler_are_skipped_naming_g_plus_plus(tmp_path):
    # An empty PATH (python is called by its full path), no CXX and an empty cache: nothing can
    # build the emulator, so its tests must say so instead of erroring.
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env.update(PATH=str(tmp_path), HGNET_KERNELS_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-n", "0", "-p", "no:cacheprovider",
                             "tests/test_ops.py", "-k", "max_pool and cuda"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ skipped", result.stdout) and "failed" not in result.stdout and "error" not in result.stdout
    assert "g++ not found: the CUDA emulator tests need a C++17 compiler" in result.stdout
