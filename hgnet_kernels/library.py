"""``torch.library`` registrations: every fused op, and the whole fused network, as custom ops.

* ``hgnet_kernels::conv_bn_act``, ``aggregation_ese``, ``depthwise_conv``, ``max_pool``,
  ``ese_gate``, ``scale_residual`` — the functional form of each op (outputs freshly allocated),
  with a ``backend`` argument (``"triton"`` or ``"cuda"``) and a fake (meta) implementation that
  is the op's own argument check and allocation. Tested with ``torch.library.opcheck``.
* ``hgnet_kernels::pphgnet_logits`` and ``pphgnet_features`` — what ``FusedPPHGNet.forward`` and
  ``forward_features`` call, so ``torch.compile`` of a pipeline that contains a FusedPPHGNet sees
  one opaque op with known output shapes instead of breaking the graph on our kernels.

Importing this module registers the ops; it imports no kernel code until an op runs.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from typing import List, Optional

import torch
from torch.library import custom_op

from .ops import checks

_FUSED_MODELS: "weakref.WeakValueDictionary[int, torch.nn.Module]" = weakref.WeakValueDictionary()
_next_id = itertools.count()
_id_lock = threading.Lock()


def register_model(model: torch.nn.Module) -> int:
    """An id under which the network-level ops find ``model`` (held weakly)."""
    with _id_lock:
        model_id = next(_next_id)
    _FUSED_MODELS[model_id] = model
    return model_id


def _model(model_id: int):
    model = _FUSED_MODELS.get(model_id)
    if model is None:
        raise RuntimeError(f"FusedPPHGNet #{model_id} no longer exists")
    return model


def feature_shapes(n: int, h: int, w: int, config) -> List[tuple]:
    """Shapes of the four stage outputs of a PP-HGNet on an n×3×h×w input."""
    def halve(s):
        return (s - 1) // 2 + 1
    h, w = halve(halve(h)), halve(halve(w))  # stem conv s2, max pool s2
    shapes = []
    for stage in config.stages:
        if stage.downsample:
            h, w = halve(h), halve(w)
        shapes.append((n, stage.out_channels, h, w))
    return shapes


@custom_op("hgnet_kernels::pphgnet_logits", mutates_args=())
def pphgnet_logits(x: torch.Tensor, model_id: int) -> torch.Tensor:
    return _model(model_id)._logits_impl(x)


@pphgnet_logits.register_fake
def _(x, model_id):
    model = _model(model_id)
    return x.new_empty((x.shape[0], model.num_outputs), dtype=model.dtype)


@custom_op("hgnet_kernels::pphgnet_features", mutates_args=())
def pphgnet_features(x: torch.Tensor, model_id: int) -> List[torch.Tensor]:
    return list(_model(model_id)._features_impl(x))


@pphgnet_features.register_fake
def _(x, model_id):
    model = _model(model_id)
    return [torch.empty(s, dtype=model.dtype, device=x.device, memory_format=torch.channels_last)
            for s in feature_shapes(x.shape[0], x.shape[2], x.shape[3], model.config)]


def _impl(backend: str):
    if backend == "triton":
        from .ops import aggregation_ese, conv_bn_act, depthwise_conv, ese_gate, max_pool, scale_residual
        return dict(conv=conv_bn_act.conv_bn_act, aggregation=aggregation_ese.aggregation_ese,
                    depthwise=depthwise_conv.depthwise_conv, gate=ese_gate.ese_gate, max_pool=max_pool.max_pool,
                    scale_residual=scale_residual.scale_residual)
    if backend == "cuda":
        from . import cuda_ops
        return dict(conv=cuda_ops.conv_bn_act, aggregation=cuda_ops.aggregation_ese,
                    depthwise=cuda_ops.depthwise_conv, gate=cuda_ops.ese_gate, max_pool=cuda_ops.max_pool,
                    scale_residual=cuda_ops.scale_residual)
    raise ValueError(f"backend must be 'triton' or 'cuda', got {backend!r}")


@custom_op("hgnet_kernels::conv_bn_act", mutates_args=())
def conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int, relu: bool,
                backend: str) -> torch.Tensor:
    return _impl(backend)["conv"](x, packed_weight, bias, stride, relu)


@conv_bn_act.register_fake
def _(x, packed_weight, bias, stride, relu, backend):
    return checks.prepare_conv(x, packed_weight, bias, stride, None)


@custom_op("hgnet_kernels::aggregation_ese", mutates_args=())
def aggregation_ese(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                    backend: str) -> List[torch.Tensor]:
    """``[y, sums]`` with sums (N, 1, C_out) fp32: the partial sums reduced in tile order, so the
    result's shape does not depend on the kernel's tiling (and feeds ``ese_gate`` as is)."""
    y, psum = _impl(backend)["aggregation"](x, packed_weight, bias)
    return [y, psum.sum(1, keepdim=True)]


@aggregation_ese.register_fake
def _(x, packed_weight, bias, backend):
    out = checks.prepare_conv(x, packed_weight, bias, 1, None)
    return [out, x.new_empty((x.shape[0], 1, out.shape[1]), dtype=torch.float32)]


@custom_op("hgnet_kernels::depthwise_conv", mutates_args=())
def depthwise_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int,
                   backend: str) -> torch.Tensor:
    return _impl(backend)["depthwise"](x, packed_weight, bias, stride)


@depthwise_conv.register_fake
def _(x, packed_weight, bias, stride, backend):
    return checks.prepare_depthwise(x, packed_weight, bias, stride, None)


@custom_op("hgnet_kernels::max_pool", mutates_args=())
def max_pool(x: torch.Tensor, backend: str) -> torch.Tensor:
    return _impl(backend)["max_pool"](x)


@max_pool.register_fake
def _(x, backend):
    return checks.prepare_max_pool(x, None)


@custom_op("hgnet_kernels::ese_gate", mutates_args=())
def ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int, backend: str) -> torch.Tensor:
    return _impl(backend)["gate"](psum, weight, bias, hw)


@ese_gate.register_fake
def _(psum, weight, bias, hw, backend):
    return checks.prepare_ese_gate(psum, weight, bias, hw)


@custom_op("hgnet_kernels::scale_residual", mutates_args=())
def scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor],
                   backend: str) -> torch.Tensor:
    return _impl(backend)["scale_residual"](y, gate, identity)


@scale_residual.register_fake
def _(y, gate, identity, backend):
    return checks.prepare_scale_residual(y, gate, identity, None)
