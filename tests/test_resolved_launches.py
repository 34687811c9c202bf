"""Launches resolved once (issue #17 item 3): the triton and cuda backends check, configure and size
every launch at the first run of an input shape and replay those launches for later inputs of that
shape; the public ops resolve and launch on each call. Runs through Triton's interpreter and the
CUDA emulator."""
import copy
import sys

import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels import configs
from hgnet_kernels.models import build_model
from hgnet_kernels.kernels import cuda as cuda_family
from hgnet_kernels.kernels import triton as triton_family
from hgnet_kernels.kernels.cuda import ops as cuda_ops
from hgnet_kernels.kernels.spec import conv_bn_act_reference, pack_conv_weight
from hgnet_kernels.numerics import FP32_REL_TOL, tolerance

from helpers import DEVICE, float64_reference, narrow_pphgnet, poisoned_slice, randomize, rel_err, untouched_outside

FAMILIES = {"triton": triton_family, "cuda": cuda_family}
RESOLVERS = ("resolve_conv_bn_act", "resolve_aggregation_ese", "resolve_depthwise", "resolve_max_pool",
             "resolve_ese_gate", "resolve_scale_residual")
# Where a launch's tile comes from: the lookups (tuned entry, else heuristic) of either family.
CONFIG_LOOKUPS = ("conv_config", "cuda_conv_config", "tile_config", "gate_config")


def counting(monkeypatch, fam) -> list:
    """Every call, by name, from now on, of the family's ``resolve_*``, of the argument checks
    (``spec.prepare_*``) its modules call, and of the config lookups."""
    calls = []

    def count(owner, name):
        def counted(*args, _name=name, _call=getattr(owner, name), **kwargs):
            calls.append(_name)
            return _call(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)

    for name in RESOLVERS:
        count(fam, name)
    for module in [m for key, m in sys.modules.items() if key.startswith(fam.__name__ + ".")]:
        for name in [n for n in vars(module) if n.startswith("prepare_")]:
            count(module, name)
    for name in CONFIG_LOOKUPS:
        count(configs, name)
    return calls


def checks_and_lookups(calls: list) -> list:
    return [name for name in calls if name.startswith("prepare_") or name in CONFIG_LOOKUPS]


@pytest.mark.parametrize("family,model,dtype", [("triton", "narrow", torch.float32), ("cuda", "narrow", torch.float32),
                                                ("cuda", "narrow", torch.float16), ("cuda", "b0", torch.float16)],
                         ids=lambda v: str(v).replace("torch.", ""))
def test_each_input_shape_is_resolved_once_and_later_inputs_replay_it(monkeypatch, family, model, dtype):
    """The narrow PP-HGNet reaches all six resolvers (aggregation, ESE gate, scale + residual);
    B0 the LightConv depthwise (ReLU, affine) and the zero-padded stem pool. fp16 takes the CUDA
    family's sm_80+ kernel, whose tiles are looked up (fp32 runs its SIMT kernel, which has none)."""
    fam = FAMILIES[family]
    net = narrow_pphgnet(seed=21) if model == "narrow" else randomize(build_model(model), seed=21)
    fused = hk.FusedPPHGNet(net.to(DEVICE), backend=family, dtype=dtype)
    with monkeypatch.context() as plain:  # the same network through the public ops, resolved per call
        plain.setattr(fam, "RESOLVES", False)
        per_call = hk.FusedPPHGNet(net.to(DEVICE), backend=family, dtype=dtype)
    backend, reference = fused._backend, float64_reference(net)
    calls = counting(monkeypatch, fam)
    first, second = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fused(first.to(DEVICE))
        resolved = len(calls)
        assert calls.count("prepare_conv") > 0
        resolvers = [name for name in calls if name in RESOLVERS]
        assert len(resolvers) == sum(op.kind not in ("copy", "head") for op in backend.plan.ops)
        looked_up = not (family == "cuda" and dtype == torch.float32)
        assert any(name in CONFIG_LOOKUPS for name in calls) == looked_up
        got = fused(second.to(DEVICE))  # a new input of the same shape replays the resolved launches
        assert len(calls) == resolved, f"replayed with {calls[resolved:]}"
        assert torch.equal(got, per_call(second.to(DEVICE)))
        eager = copy.deepcopy(net).to(DEVICE).to(dtype)
        x = second.to(DEVICE, dtype)  # fp16: the reference takes the input as the kernels see it
        assert rel_err(got, reference(x.double())) <= allowed(dtype, eager(x), reference(x.double()))
        # A new shape resolves its own launches, only for the ops a run needs: stage 1's first.
        wider = torch.randn(1, 3, 32, 40).to(DEVICE, dtype)  # the backend takes the compute dtype
        stage1 = backend.run(wider, (0,))[0]
        early = calls[resolved:]
        stage2 = backend.run(wider, (1,))[0]
        later = calls[resolved + len(early):]
        assert 0 < sum(n in RESOLVERS for n in early) < sum(n in RESOLVERS for n in early + later) < len(resolvers)
        assert checks_and_lookups(early) and checks_and_lookups(later)
        assert torch.equal(stage2, per_call._backend.run(wider, (1,))[0])
        want, eager_maps = reference.forward_features(wider.double()), eager.forward_features(wider)
        for index, got in enumerate((stage1, stage2)):
            assert rel_err(got, want[index]) <= allowed(dtype, eager_maps[index], want[index])


def allowed(dtype: torch.dtype, eager: torch.Tensor, exact: torch.Tensor) -> float:
    """The relative error a fused result may have: fp32's bound, or twice eager PyTorch's own at fp16."""
    return FP32_REL_TOL if dtype == torch.float32 else tolerance(dtype, rel_err(eager, exact))


def _cuda_tile(split):
    return dict(zip(cuda_ops.TILE_FIELDS, cuda_ops.mma_tiles(torch.float32, torch.device(DEVICE).type)[0] + (split,)))


# fp32 convs: Triton's interpreter computes IEEE; the CUDA family's sm_80+ kernel runs them as
# 3×TF32 (tf32x3), the one fp32 path with a tile (and a split-K workspace) to resolve.
CONV_CASES = [("triton", dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16), {}),
              ("triton", dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, SPLIT_K=3), {}),
              ("cuda", 1, dict(tf32x3=True)), ("cuda", 3, dict(tf32x3=True))]


@pytest.mark.parametrize("family,config,options", CONV_CASES, ids=["triton", "triton_split_k", "cuda", "cuda_split_k"])
def test_a_resolved_conv_launch_replays_on_new_tensors_of_its_shape(family, config, options):
    """Resolved once against one set of tensors, the launch writes the right result into other
    tensors of the same shapes and strides (a NaN-poisoned slice of a wider buffer, a residual),
    bit for bit what the public op (resolving on the call) writes."""
    fam = FAMILIES[family]
    if family == "cuda":
        config = _cuda_tile(config)
    g = torch.Generator().manual_seed(5)
    n, c_in, c_out, h, w = 2, 24, 40, 5, 7
    weight = pack_conv_weight(torch.randn(c_out, c_in, 3, 3, generator=g) / 15).to(DEVICE)
    bias = torch.randn(c_out, generator=g).to(DEVICE)
    buf, out = poisoned_slice(n, c_out, h, w, 8, 16, torch.float32)
    x0 = torch.randn(n, c_in, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    r0 = torch.randn(n, c_out, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    launch, _ = fam.resolve_conv_bn_act(x0, weight, bias, 1, True, out, affine=(0.5, -0.25), residual=r0,
                                        config=config, **options)
    assert (launch.workspace_shape is not None) == (config.get("SPLIT_K", 1) > 1)
    x = torch.randn(n, c_in, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    r = torch.randn(n, c_out, h, w, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    launch(x, weight, bias, out, r)
    expected = conv_bn_act_reference(x.double(), weight.double(), bias.double(), 1, True,
                                     affine=(0.5, -0.25), residual=r.double())
    assert rel_err(out, expected) <= FP32_REL_TOL
    assert untouched_outside(buf, 8, c_out)
    assert torch.equal(out, fam.conv_bn_act(x, weight, bias, 1, True, affine=(0.5, -0.25), residual=r,
                                            config=config, **options))


@pytest.mark.parametrize("family", FAMILIES)
def test_public_ops_keep_their_checks(family):
    fam = FAMILIES[family]
    x = torch.randn(1, 8, 5, 5, device=DEVICE)
    with pytest.raises(ValueError, match="pack_conv_weight"):
        fam.conv_bn_act(x, torch.randn(16, 8, 3, 3, device=DEVICE), torch.zeros(16, device=DEVICE))
    with pytest.raises(ValueError, match="pack_conv_weight"):
        fam.resolve_conv_bn_act(x, torch.randn(16, 8, 3, 3, device=DEVICE), torch.zeros(16, device=DEVICE))
