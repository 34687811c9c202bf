"""Launches resolved once (issue #17 item 3): the triton backend checks, configures and sizes every
launch at the first run of an input shape and replays those launches for later inputs of that
shape; the public ops resolve and launch on each call. Runs through Triton's interpreter."""
import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.models import build_model
from hgnet_kernels.kernels import triton as fam
from hgnet_kernels.kernels.spec import conv_bn_act_reference, pack_conv_weight
from hgnet_kernels.numerics import FP32_REL_TOL

from helpers import DEVICE, float64_reference, poisoned_slice, randomize, rel_err, untouched_outside

RESOLVERS = ("resolve_conv_bn_act", "resolve_aggregation_ese", "resolve_depthwise", "resolve_max_pool",
             "resolve_ese_gate", "resolve_scale_residual")


def counting_resolvers(monkeypatch) -> list:
    """Every ``resolve_*`` call of the family from now on, by name."""
    calls = []
    for name in RESOLVERS:
        def counted(*args, _name=name, _resolve=getattr(fam, name), **kwargs):
            calls.append(_name)
            return _resolve(*args, **kwargs)
        monkeypatch.setattr(fam, name, counted)
    return calls


def test_each_input_shape_is_resolved_once_and_later_inputs_replay_it(monkeypatch):
    model = randomize(build_model("b0"), seed=21)
    fused = hk.FusedPPHGNet(model.to(DEVICE), backend="triton", dtype=torch.float32)
    backend, reference = fused._backend, float64_reference(model)
    calls = counting_resolvers(monkeypatch)
    first, second = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fused(first.to(DEVICE))
        resolved = len(calls)
        assert resolved == sum(op.kind not in ("copy", "head") for op in backend.plan.ops)
        got = fused(second.to(DEVICE))  # a new input of the same shape replays the resolved launches
        assert len(calls) == resolved
        assert rel_err(got, reference(second.double())) <= FP32_REL_TOL
        # A new shape resolves its own launches, only for the ops a run needs: stage 1's first.
        wider = torch.randn(1, 3, 32, 64)
        stage1 = backend.run(wider.to(DEVICE), (0,))[0]
        early = len(calls) - resolved
        stage2 = backend.run(wider.to(DEVICE), (1,))[0]
        assert 0 < early < len(calls) - resolved < resolved
        want = reference.forward_features(wider.double())
        assert rel_err(stage1, want[0]) <= FP32_REL_TOL and rel_err(stage2, want[1]) <= FP32_REL_TOL


@pytest.mark.parametrize("config", [dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16),
                                    dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, SPLIT_K=3)], ids=["plain", "split_k"])
def test_a_resolved_conv_launch_replays_on_new_tensors_of_its_shape(config):
    """Resolved once against one set of tensors, the launch writes the right result into other
    tensors of the same shapes and strides (a NaN-poisoned slice of a wider buffer, a residual)."""
    g = torch.Generator().manual_seed(5)
    n, c_in, c_out, h, w = 2, 24, 40, 7, 9
    weight = pack_conv_weight(torch.randn(c_out, c_in, 3, 3, generator=g) / 15)
    bias = torch.randn(c_out, generator=g)
    buf, out = poisoned_slice(n, c_out, h, w, 8, 16, torch.float32)
    x0 = torch.randn(n, c_in, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    r0 = torch.randn(n, c_out, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    launch, _ = fam.resolve_conv_bn_act(x0, weight.to(DEVICE), bias.to(DEVICE), 1, True, out,
                                        affine=(0.5, -0.25), residual=r0, config=config)
    x = torch.randn(n, c_in, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    r = torch.randn(n, c_out, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    launch(x, weight.to(DEVICE), bias.to(DEVICE), out, r)
    expected = conv_bn_act_reference(x.double(), weight.double(), bias.double(), 1, True,
                                     affine=(0.5, -0.25), residual=r.double())
    assert rel_err(out, expected) <= FP32_REL_TOL
    assert untouched_outside(buf, 8, c_out)
    assert torch.equal(out, fam.conv_bn_act(x, weight.to(DEVICE), bias.to(DEVICE), 1, True, affine=(0.5, -0.25),
                                            residual=r, config=config))


def test_public_ops_keep_their_checks():
    x = torch.randn(1, 8, 5, 5, device=DEVICE)
    with pytest.raises(ValueError, match="pack_conv_weight"):
        fam.conv_bn_act(x, torch.randn(16, 8, 3, 3, device=DEVICE), torch.zeros(16, device=DEVICE))
    with pytest.raises(ValueError, match="pack_conv_weight"):
        fam.resolve_conv_bn_act(x, torch.randn(16, 8, 3, 3, device=DEVICE), torch.zeros(16, device=DEVICE))
