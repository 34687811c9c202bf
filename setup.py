"""Install hgnet_kernels: ``pip install -e ".[dev]"``. Pure Python; needs no GPU and no nvcc."""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("hgnet_kernels").joinpath("__init__.py").read_text()).group(1)

setup(
    name="hgnet_kernels",
    version=version,
    description="PP-HGNet inference with BN folding and fused Triton / CUDA C++ kernels",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hgnet_kernels", "hgnet_kernels.*"]),
    package_data={"hgnet_kernels": ["configs/*.json"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4,<2.15",
        "numpy",
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        "dev": ["pytest", "pytest-benchmark", "ninja", "pybind11", "timm", "safetensors", "rich",
                "matplotlib", "tqdm"],
    },
    entry_points={"console_scripts": ["hgnet-kernels=hgnet_kernels.__main__:main"]},
)
