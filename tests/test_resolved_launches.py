"""Launches resolved once (issue #17 item 3): the triton backend checks, configures and sizes every
launch at the first run of an input shape and replays those launches for later inputs of that
shape; the public ops resolve and launch on each call. Runs through Triton's interpreter."""
import pytest
import torch

import hgnet_kernels as hk
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
    model = randomize(hk.PPHGNet("tiny"), seed=21)
    fused = hk.FusedPPHGNet(model.to(DEVICE), backend="triton", dtype=torch.float32)
    reference = float64_reference(model)
    calls = counting_resolvers(monkeypatch)
    first, second = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused(first.to(DEVICE))
        resolved = len(calls)
        assert resolved >= len(fused._backend.plan.ops) - 2  # every kernel op but the copy and the head
        got = fused(second.to(DEVICE))  # a new input of the same shape: the resolved launches
        assert len(calls) == resolved
        assert rel_err(got, reference(second.double())) <= FP32_REL_TOL
        wider = torch.randn(1, 3, 64, 96)  # a new shape resolves its own launches
        got = fused(wider.to(DEVICE))
        assert len(calls) == 2 * resolved
        assert rel_err(got, reference(wider.double())) <= FP32_REL_TOL


def test_a_run_of_early_outputs_resolves_only_the_ops_it_runs(monkeypatch):
    model = randomize(hk.PPHGNet("tiny"), seed=22)
    fused = hk.FusedPPHGNet(model.to(DEVICE), backend="triton", dtype=torch.float32)
    backend, x = fused._backend, torch.randn(1, 3, 64, 64, device=DEVICE)
    calls = counting_resolvers(monkeypatch)
    with torch.no_grad():
        stage1 = backend.run(x, (0,))[0]
        early = len(calls)
        logits = backend.run(x, (len(backend.plan.features),))[0]  # binds the remaining ops
        later = len(calls)
        again = backend.run(x, (0, len(backend.plan.features)))
    assert 0 < early < later and len(calls) == later
    assert torch.equal(again[0], stage1) and torch.equal(again[1], logits)


@pytest.mark.parametrize("config", [dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16),
                                    dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, SPLIT_K=3)], ids=["plain", "split_k"])
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
    for seed in (6, 7):
        g.manual_seed(seed)
        x = torch.randn(n, c_in, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
        r = torch.randn(n, c_out, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
        out.fill_(float("nan"))
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
