"""``torch.library`` registrations: the fused network as two custom ops.

``hgnet_kernels::pphgnet_logits`` and ``hgnet_kernels::pphgnet_features`` are what
``FusedPPHGNet.forward`` and ``forward_features`` call, so ``torch.compile`` of a pipeline that
contains a FusedPPHGNet sees one opaque op with known output shapes instead of breaking its graph
on our kernels. Each op finds its network by an integer id (ops take no module arguments): a
registered network is any object with

* ``execute(x, features: bool) -> list of tensors``: the stage maps, or ``[head output]``;
* ``output_specs(x, features: bool) -> list of (shape, dtype, memory_format)``: the same outputs'
  metadata, without running (the fake implementation).

Networks are held weakly: a freed FusedPPHGNet leaves no trace here.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from typing import List

import torch
from torch.library import custom_op

_NETWORKS: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_next_id = itertools.count()
_id_lock = threading.Lock()


def register(network) -> int:
    """An id under which the custom ops find ``network`` (held weakly)."""
    with _id_lock:
        network_id = next(_next_id)
    _NETWORKS[network_id] = network
    return network_id


def _network(network_id: int):
    network = _NETWORKS.get(network_id)
    if network is None:
        raise RuntimeError(f"FusedPPHGNet #{network_id} no longer exists")
    return network


def _fake(x: torch.Tensor, network_id: int, features: bool) -> List[torch.Tensor]:
    return [torch.empty(shape, dtype=dtype, device=x.device, memory_format=memory_format)
            for shape, dtype, memory_format in _network(network_id).output_specs(x, features)]


@custom_op("hgnet_kernels::pphgnet_logits", mutates_args=())
def pphgnet_logits(x: torch.Tensor, network_id: int) -> torch.Tensor:
    return _network(network_id).execute(x, False)[0]


@pphgnet_logits.register_fake
def _(x, network_id):
    return _fake(x, network_id, False)[0]


@custom_op("hgnet_kernels::pphgnet_features", mutates_args=())
def pphgnet_features(x: torch.Tensor, network_id: int) -> List[torch.Tensor]:
    return list(_network(network_id).execute(x, True))


@pphgnet_features.register_fake
def _(x, network_id):
    return _fake(x, network_id, True)
