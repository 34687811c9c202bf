"""Install hgnet_kernels.

    pip install -e ".[dev]"                        # pure Python; the CUDA extension is JIT-built on first use
    pip install -e . --no-build-isolation          # also builds the CUDA extension now, when torch is a
                                                   # CUDA build and nvcc is on the PATH

CPU-only machines: first `pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu`;
`[dev]` then keeps both (README, "CPU-only machines").

Environment: HGNET_KERNELS_SKIP_CUDA_BUILD=1 skips the extension; HGNET_KERNELS_CUDA_ARCHS sets the
arch list (default 7.5;8.0;8.6;8.9;9.0+PTX — nvcc 13 has no sm_70). pip's default build isolation
hides torch from this script, so the extension is then not built (a message says so).
"""
import importlib.util
import json
import os
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
version = re.search(r'__version__ = "([^"]+)"', (HERE / "hgnet_kernels" / "__init__.py").read_text()).group(1)


def _load_cuda_build():
    # By path: importing the package would import torch, which build isolation may hide.
    spec = importlib.util.spec_from_file_location("_hgk_cuda_build", HERE / "hgnet_kernels" / "kernels" / "cuda" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cuda_extension_setup():
    if os.environ.get("HGNET_KERNELS_SKIP_CUDA_BUILD") == "1":
        print("hgnet_kernels: HGNET_KERNELS_SKIP_CUDA_BUILD=1, not building the CUDA extension")
        return {}
    cuda_build = _load_cuda_build()
    reason = cuda_build.can_build_extension()
    if reason:
        print(f"hgnet_kernels: not building the CUDA extension ({reason}); backend='cuda' will JIT-build it "
              "on first use on a GPU")
        return {}
    import torch
    from torch.utils import cpp_extension

    home = cuda_build.cuda_home()
    os.environ["CUDA_HOME"] = home
    cpp_extension.CUDA_HOME = home
    archs = cuda_build.arch_list()
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs.replace(",", ";")
    csrc = cuda_build.csrc_dir()

    class BuildWithInfo(cpp_extension.BuildExtension):
        def run(self):
            super().run()
            info = {"torch": torch.__version__, "cuda": torch.version.cuda, "archs": archs,
                    "sources": cuda_build.source_hash()}
            for target in {HERE / "hgnet_kernels", Path(self.build_lib) / "hgnet_kernels"}:
                if target.is_dir():
                    (target / "_C_build.json").write_text(json.dumps(info, indent=1))

    ext = cpp_extension.CUDAExtension(
        "hgnet_kernels._C",
        sources=[os.path.join("csrc", s) for s in cuda_build.KERNEL_SOURCES + ["bindings.cpp"]],
        include_dirs=[csrc],
        extra_compile_args={"cxx": cuda_build.host_compile_flags(), "nvcc": cuda_build.NVCC_FLAGS})
    print(f"hgnet_kernels: building the CUDA extension for {archs} (CUDA_HOME={home})")
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildWithInfo}}


setup(
    name="hgnet_kernels",
    version=version,
    description="PP-HGNet inference with BN folding and fused Triton / CUDA C++ kernels",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hgnet_kernels", "hgnet_kernels.*"]),
    package_data={"hgnet_kernels": ["configs/*.json", "_C_build.json"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4,<2.15",
        "numpy",
        "triton; platform_system == 'Linux'",
    ],
    # No torch or torchvision here: a CPU-only torch and torchvision installed first (README) are kept.
    # Pinned to the versions verified: onnx / onnxscript / onnxruntime for export_onnx and its tests;
    # transformers and ultralytics, the real frameworks test_interop.py checks against.
    extras_require={
        "dev": ["pytest", "pytest-xdist>=2.5", "pytest-benchmark", "ninja", "pybind11", "timm", "safetensors", "rich",
                "matplotlib", "tqdm", "transformers==5.24.0", "ultralytics==8.4.190", "onnx==1.23.2",
                "onnxscript==0.7.2", "onnxruntime==1.32.0"],
    },
    entry_points={"console_scripts": ["hgnet-kernels=hgnet_kernels.__main__:main"]},
    **cuda_extension_setup(),
)
