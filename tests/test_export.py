"""Export paths (README: "Deploying"): the folded network as standard ONNX operators, checked in
ONNX Runtime against the fused model and a float64 eager reference; torch.jit.script refused in
one line."""
import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.export import StandardOpsNet
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error

from helpers import NARROW, float64_reference, randomize

onnx = pytest.importorskip("onnx", reason="onnx is a dev dependency: pip install -e '.[dev]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a dev dependency: pip install -e '.[dev]'")

# What ONNX Runtime and TensorRT both run; a custom op or a framework-specific one would fail this.
STANDARD_OPS = {"Add", "Cast", "Concat", "Conv", "Div", "Gemm", "MatMul", "MaxPool", "Mul", "Pad", "ReduceMax",
                "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Squeeze", "Sub", "Unsqueeze"}


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(out) for out in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


def test_export_onnx_runs_in_onnx_runtime_like_the_fused_model(tmp_path):
    """PP-HGNet v1 in the narrow configuration (tiny's every form; tracing for ONNX costs CPU per
    op, ~15 s for tiny). PP-HGNetV2's forms (LAB, zero-padded stem pool, avgmax head) are the next
    test's, which exports B0 with them."""
    model = randomize(hk.PPHGNet(NARROW, num_classes=10), seed=71)
    fused = hk.FusedPPHGNet(model, backend="torch")
    fused.export_onnx(tmp_path / "model.onnx", size=(64, 64))
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert {node.op_type for node in graph.node} <= STANDARD_OPS and {node.domain for node in graph.node} <= {""}
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    x = torch.randn(2, 3, 96, 72)  # not the traced size: batch, height and width are dynamic
    with torch.no_grad():
        exact = float64_reference(model)(x.double())
    (got,) = _run_onnx(tmp_path / "model.onnx", x)
    assert got.shape == (2, 10)
    assert relative_error(got, exact) <= FP32_REL_TOL
    assert relative_error(got, fused(x)) <= FP32_REL_TOL


def test_export_onnx_features_and_torch_onnx_export_of_the_fused_model(tmp_path):
    """``features=True`` writes the out_indices maps; ``torch.onnx.export(fused, …)`` itself writes
    the same standard-op graph (the custom ops are never traced). B0 with LAB, a zero-padded stem
    pool (in the maps) and an avgmax head (in the logits of ``torch.onnx.export``): one export
    each, not a third one of ``export_onnx``'s logits, whose names and dynamic sizes the test above
    checks."""
    model = randomize(hk.PPHGNetV2("b0", stem_pool_padding="zero", global_pool="avgmax"), seed=72)
    fused = hk.FusedPPHGNet(model, backend="torch", out_indices=(1, 3))
    fused.export_onnx(tmp_path / "features.onnx", size=(64, 64), features=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        exact = float64_reference(model).forward_features(x.double())
    outputs = _run_onnx(tmp_path / "features.onnx", x)
    assert [o.name for o in onnx.load(str(tmp_path / "features.onnx")).graph.output] == ["stage2", "stage4"]
    assert len(outputs) == 2
    for got, want in zip(outputs, (exact[1], exact[3])):
        assert relative_error(got, want) <= FP32_REL_TOL

    torch.onnx.export(fused, (x,), str(tmp_path / "direct.onnx"))
    graph = onnx.load(str(tmp_path / "direct.onnx")).graph
    assert {node.op_type for node in graph.node} <= STANDARD_OPS
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # the standard operator set only
    (logits,) = _run_onnx(tmp_path / "direct.onnx", x)
    assert relative_error(logits, float64_reference(model)(x.double())) <= FP32_REL_TOL


def test_standard_ops_net_equals_the_fused_model_on_every_output():
    model = randomize(hk.PPHGNet("tiny"), seed=73)
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert relative_error(StandardOpsNet(fused.net, fused.plan)(x), fused(x)) <= FP32_REL_TOL
        maps = StandardOpsNet(fused.net, fused.plan, (0, 1, 2, 3), features=True)(x)
    for got, want in zip(maps, fused.forward_features(x)):
        assert relative_error(got, want) <= FP32_REL_TOL


def test_torch_jit_script_is_refused_in_one_line_pointing_to_export_onnx():
    fused = hk.FusedPPHGNet(hk.pphgnet_tiny(), backend="torch")
    with pytest.raises(TypeError, match=r"torch\.jit\.script cannot compile FusedPPHGNet.*export_onnx") as info:
        torch.jit.script(fused)
    assert "\n" not in str(info.value)
