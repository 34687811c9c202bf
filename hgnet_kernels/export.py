"""The folded network in standard PyTorch ops, for ONNX export.

``FusedPPHGNet``'s kernels are custom ops that no ONNX runtime knows, but the network they run is
the plan over folded weights (BN and the positive LAB scales folded into the convolutions), and
every plan op has a PyTorch reference in ``kernels/spec.py`` made of standard ops: convolutions
(with explicit padding where it is asymmetric), ReLU, scalar multiply-adds, concatenation, max
pools, means, sigmoid and matrix products. ``StandardOpsNet`` walks the plan through those
references; ``export_onnx`` traces it with ``torch.onnx.export``, so the ONNX graph is the folded
network in operators that ONNX Runtime and TensorRT load.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .kernels import pytorch as torch_family
from .kernels import spec
from .plan import Plan, Ref


def lab_scalars(net: nn.Module, plan: Plan) -> Dict[str, Tuple[float, float]]:
    """The folded LABs' (scale, shift) as Python floats, by op name (``""``: the head's). Read
    before tracing: while the exporter traces, buffers are fake tensors without values."""
    scalars = {op.name: tuple(net.get_submodule(op.name).lab.tolist()) for op in plan.ops if op.affine}
    if net.head_lab is not None:
        scalars[""] = tuple(net.head_lab.tolist())
    return scalars


class StandardOpsNet(nn.Module):
    """``plan`` over the folded weights ``net`` in standard PyTorch ops. ``forward(x)`` returns
    the head's output, or with ``features`` the stage maps of ``out_indices``, in the weights'
    dtype; HG-Block concatenations are ``torch.cat`` of their slots. ``scalars``: ``lab_scalars``
    of ``net`` when made outside a trace."""

    def __init__(self, net: nn.Module, plan: Plan, out_indices: Sequence[int] = (0, 1, 2, 3),
                 features: bool = False, scalars: Optional[Dict[str, Tuple[float, float]]] = None):
        super().__init__()
        self.net = net
        self.plan = plan
        self.outputs = [plan.features[i] for i in out_indices] if features else [plan.output]
        written = {ref.buffer: index for index, op in enumerate(plan.ops) for ref in op.writes}
        self.steps = plan.ops[:max(written[name] for name in self.outputs) + 1]
        self.slots: Dict[str, List[Ref]] = {name: [] for name in plan.concat_buffers}
        for op in plan.ops:
            for ref in op.writes:
                if ref.buffer in self.slots:
                    self.slots[ref.buffer].append(ref)
        for refs in self.slots.values():
            refs.sort(key=lambda ref: ref.start)
        self.affine = lab_scalars(net, plan) if scalars is None else scalars

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        plan, net = self.plan, self.net
        values: Dict[Ref, torch.Tensor] = {plan.buffers[plan.input].whole(): x}
        sizes = plan.spatial(x.shape[2], x.shape[3])

        def read(ref: Ref) -> torch.Tensor:
            if ref in values:
                return values[ref]
            return torch.cat([values[slot] for slot in self.slots[ref.buffer]], dim=1)  # a whole concat

        for op in self.steps:
            source = read(op.reads[0])
            if op.kind in ("conv", "depthwise"):
                module = net.get_submodule(op.name)
                affine = self.affine.get(op.name)
                if op.kind == "depthwise":
                    out = spec.depthwise_conv_reference(source, spec.pack_depthwise_weight(module.weight),
                                                        module.bias, op.stride, op.relu, affine, op.padding)
                else:
                    out = spec.conv_bn_act_reference(source, spec.pack_conv_weight(module.weight), module.bias,
                                                     op.stride, op.relu, op.padding, affine,
                                                     read(op.reads[-1]) if op.residual else None)
                values[op.writes[0]] = out
            elif op.kind == "aggregation":
                module = net.get_submodule(op.name)
                y, sums = spec.aggregation_ese_reference(source, spec.pack_conv_weight(module.weight), module.bias)
                # The plan's partial sums in the torch family's layout: one row per image, its sums.
                h, w = sizes[op.writes[1].buffer]
                values[op.writes[0]] = y
                values[op.writes[1]] = sums.reshape(torch_family.partial_sums_shape(
                    source.shape[0], h * w, source.shape[1], sums.shape[1], sums.dtype, sums.device))
            elif op.kind == "ese_gate":
                block = net.get_submodule(op.name)
                h, w = sizes[op.reads[0].buffer]
                values[op.writes[0]] = spec.ese_gate_reference(source.sum(1), block.ese_weight, block.ese_bias, h * w)
            elif op.kind == "scale_residual":
                values[op.writes[0]] = spec.scale_residual_reference(
                    source, read(op.reads[1]), read(op.reads[2]) if op.residual else None)
            elif op.kind == "max_pool":
                values[op.writes[0]] = spec.max_pool_reference(source, op.kernel, op.stride, op.padding, op.zero_pad)
            elif op.kind == "copy":
                values[op.writes[0]] = source
            elif op.kind == "head":
                values[op.writes[0]] = spec.head_reference(source, net.global_pool, net.last_conv_weight,
                                                           self.affine.get(""), net.fc_weight, net.fc_bias)
            else:
                raise AssertionError(f"plan op kind {op.kind!r} has no standard-ops lowering")
        outputs = [values[plan.buffers[name].whole()] for name in self.outputs]
        return outputs if len(self.outputs) > 1 or self.outputs[0] != plan.output else outputs[0]


def export_onnx(fused, path: Union[str, os.PathLike], size: Tuple[int, int] = (224, 224), batch: int = 1,
                features: bool = False, opset_version: int = 18) -> None:
    """Write ``fused``'s folded network to ``path`` as an ONNX model of standard operators.

    The graph's input ``image`` is NCHW in ``fused.dtype``, with the batch, height and width
    dynamic (``size`` and ``batch`` only shape the example traced). Its output is ``logits`` (the
    head's output), or with ``features`` one map per ``out_indices`` stage (``stage1`` … ``stage4``,
    NCHW). Needs the ``onnx`` and ``onnxscript`` packages (``pip install onnx onnxscript``)."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ImportError(f"export_onnx needs the {package} package: pip install onnx onnxscript") from None
    module = StandardOpsNet(fused.net, fused.plan, fused.out_indices, features).eval()
    example = torch.randn(batch, fused.in_channels, *size, dtype=fused.dtype, device=fused.device)
    names = [f"stage{i + 1}" for i in fused.out_indices] if features else ["logits"]
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=32),
            3: torch.export.Dim("width", min=32)}
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["image"], output_names=names,
                                    dynamic_shapes={"x": dims}, opset_version=opset_version, verbose=False)
    program.save(os.fspath(path))
