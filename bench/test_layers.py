"""Kernel microbenchmarks over the real PP-HGNet layer shapes (pytest-benchmark).

    python -m pytest bench/test_layers.py --benchmark-enable [--layers-model small] [--layers-dtype float16]

Each distinct conv of the model at 224×224 (stem, 3×3 layers, aggregation 1×1 + ESE sums,
depthwise LDS) runs through every implementation available on the device, on the same folded
weights: ``pytorch`` (F.conv2d + ReLU: cuDNN / oneDNN), ``torch_backend`` (the PyTorch kernel
family: oneDNN with packed weights on the CPU) and, on a GPU, ``triton`` and ``cuda``. Every
result is checked against float64 first. ``extra_info`` holds GFLOP/s, GB/s and, on a GPU whose
peaks are known (``hgnet_kernels/configs/devices.json``), the fraction of the roofline; on a GPU
the time also comes from ``triton.testing.do_bench`` (median, CUDA events).

CI runs this file with ``--benchmark-disable`` (pytest.ini's default): each case runs once,
a smoke test of every path.
"""
import pytest
import torch
import torch.nn.functional as F

from hgnet_kernels import configs
from hgnet_kernels.kernels import pytorch as pytorch_family
from hgnet_kernels.folding import FoldedConv
from hgnet_kernels.numerics import relative_error, tolerance
from hgnet_kernels.shapes import distinct
from hgnet_kernels.verify import DTYPES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        model = metafunc.config.getoption("layers_model")
        shapes = distinct(model, 224)
        metafunc.parametrize("shape", shapes, ids=[s.ident() for s in shapes])
    if "impl" in metafunc.fixturenames:
        impls = ["pytorch", "torch_backend"] + (["triton", "cuda"] if DEVICE.type == "cuda" else [])
        metafunc.parametrize("impl", impls)


def _make(shape, dtype, generator):
    groups = shape.c_in if shape.kind == "depthwise" else 1
    x = torch.randn(1, shape.c_in, shape.h, shape.w, generator=generator).to(DEVICE, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape.c_out, shape.c_in // groups, shape.kernel, shape.kernel, generator=generator)
    w = (w / (w[0].numel() ** 0.5)).to(DEVICE, dtype)
    b = torch.randn(shape.c_out, generator=generator).to(DEVICE, dtype)
    return x, FoldedConv(w, b, shape.stride, groups, relu=shape.kind != "depthwise")


def _runner(impl, conv, shape, x):
    if impl == "pytorch":
        def run():
            y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.kernel_size // 2, 1, conv.groups)
            y = torch.relu(y) if conv.relu else y
            return (y, y.float().sum((2, 3))) if shape.kind == "aggregation" else y
        return run
    family = pytorch_family
    if impl != "torch_backend":
        from hgnet_kernels.kernels import cuda, triton
        family = triton if impl == "triton" else cuda
    pack = family.pack_depthwise_weight if shape.kind == "depthwise" else family.pack_conv_weight
    packed = pack(conv.weight)
    if shape.kind == "depthwise":
        return lambda: family.depthwise_conv(x, packed, conv.bias, conv.stride)
    if shape.kind == "aggregation":
        return lambda: family.aggregation_ese(x, packed, conv.bias)
    return lambda: family.conv_bn_act(x, packed, conv.bias, conv.stride, conv.relu)


def test_layer(benchmark, shape, impl, request):
    dtype = DTYPES[request.config.getoption("layers_dtype")]
    if DEVICE.type == "cpu" and dtype != torch.float32:
        pytest.skip("CPU microbenchmarks are fp32 (oneDNN); low precision is measured on a GPU")
    x, conv = _make(shape, dtype, torch.Generator().manual_seed(0))
    run = _runner(impl, conv, shape, x)
    out = run()
    y = out[0] if isinstance(out, tuple) else out
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), conv.stride, conv.kernel_size // 2, 1, conv.groups)
    exact = torch.relu(exact) if conv.relu else exact
    eager = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.kernel_size // 2, 1, conv.groups)
    eager = torch.relu(eager) if conv.relu else eager
    assert relative_error(y, exact) <= tolerance(dtype, relative_error(eager, exact)), "wrong result"

    def timed():
        run()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    benchmark.group = shape.label()
    benchmark(timed)
    flops = 2 * shape.macs()
    moved = (x.numel() + conv.weight.numel() + y.numel()) * x.element_size()
    info = {"shape": shape.label(), "impl": impl, "dtype": str(dtype), "flops": flops, "bytes": moved}
    seconds = None
    if DEVICE.type == "cuda":
        import triton.testing
        seconds = triton.testing.do_bench(run, warmup=10, rep=50) / 1e3
    elif benchmark.stats is not None:
        seconds = benchmark.stats.stats.median
    if seconds:
        info.update(seconds=seconds, gflops=flops / seconds / 1e9, gbytes_per_s=moved / seconds / 1e9)
        peaks = configs.device_peaks(DEVICE)
        if peaks:
            compute_peak = peaks["tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
                                 else str(dtype).split(".")[-1]]
            attainable = min(compute_peak, flops / moved * peaks["bandwidth"])
            info["roofline_fraction"] = flops / seconds / attainable
    benchmark.extra_info.update(info)
