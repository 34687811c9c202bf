"""The execution plan: one description of the network, consistent with the eager model, and the
`plan` command's figures computed from it."""
import functools
import json
import os
import shutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hgnet_kernels as hk
from hgnet_kernels import configs
from hgnet_kernels.__main__ import main
from hgnet_kernels.folding import fold_model
from hgnet_kernels.kernels import pytorch as torch_family
from hgnet_kernels.kernels import spec
from hgnet_kernels.kernels.cuda import ops as cuda_ops
from hgnet_kernels.models import build_model, randomize_statistics
from hgnet_kernels.plan import OP_KINDS, build_plan
from hgnet_kernels.plan_report import report
from hgnet_kernels.shapes import folded_structure, model_plan

# PaddleClas's published figures at 224×224 (its PP-HGNet documentation), in GMACs ("FLOPs" there).
PUBLISHED_GMACS = {"tiny": 4.54, "small": 8.53, "base": 25.14}


class DispatchedOps(TorchDispatchMode):
    """The names of the aten ops dispatched inside its ``with`` block."""

    def __enter__(self):
        self.names = set()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _plan(size):
    """The folded net (its parameters' shapes) and plan of a model, structure only (meta device)."""
    net = folded_structure(size)
    return net, build_plan(net)


@pytest.mark.parametrize("model, text_rec", [("tiny", False), ("b0", False), ("b4", True)])
def test_a_plan_of_the_meta_model_is_the_plan_of_the_model(model, text_rec):
    """``model_plan`` and the ``plan`` command build on the meta device, without values: the plan
    (every op, buffer and shape) is the one of a real model, a LAB's scale of either sign included.
    Nothing is computed on the way: torch's arithmetic on meta tensors runs Python references whose
    first use imports torch._dynamo (~2.3 s of CPU in every process that plans)."""
    real = randomize_statistics(build_model(model, text_rec=text_rec), seed=3)
    labs = [m for m in real.modules() if type(m).__name__ == "LearnableAffineBlock"]
    signs = {lab.scale.item() > 0 for lab in labs}
    assert signs == ({True, False} if model == "b0" else set())  # b4 text_rec is built without LAB
    with DispatchedOps() as dispatched:
        meta = model_plan(model, text_rec)
    computed = dispatched.names & {"add", "sub", "mul", "div", "sqrt", "rsqrt", "stack", "cat", "normal_"}
    assert {"empty", "view"} <= dispatched.names and not computed, computed  # folding (and LAB) ran
    plan = build_plan(fold_model(real))
    assert repr(plan.ops) == repr(meta.ops) and plan.buffers == meta.buffers
    assert plan.spatial(97, 65) == meta.spatial(97, 65) and plan.feature_shapes(2, 97, 65) == meta.feature_shapes(2, 97, 65)


@pytest.mark.parametrize("size", sorted(PUBLISHED_GMACS))
def test_summed_macs_match_the_published_figures(size):
    net, plan = _plan(size)
    params = {name: tuple(t.shape) for name, t in net.named_buffers()}
    partial_sums = functools.partial(torch_family.partial_sums_shape, dtype=torch.float32, device=torch.device("cpu"))
    gmacs = sum(c.macs for c in plan.costs(1, 224, 224, 4, params, partial_sums)) / 1e9
    assert abs(gmacs / PUBLISHED_GMACS[size] - 1) <= 0.02, gmacs


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_plan_shapes_are_the_eager_models(size):
    with torch.device("meta"):  # PyTorch's own shape rules, without computing a value
        model = hk.PPHGNet(size).eval()
    _, plan = _plan(size)
    for h, w in [(97, 65), (32, 33), (224, 224)]:
        with torch.no_grad():
            eager = [tuple(f.shape) for f in model.forward_features(torch.empty(2, 3, h, w, device="meta"))]
        assert plan.feature_shapes(2, h, w) == eager


def test_every_read_is_written_first_and_slots_tile_their_buffer():
    _, plan = _plan("small")
    written = {plan.input}
    slots = {name: [] for name in plan.concat_buffers}
    for op in plan.ops:
        assert op.kind in OP_KINDS
        for ref in op.reads:
            if ref.buffer in slots:  # a slot, or the whole concat once every slot is written
                covered = sorted(slots[ref.buffer])
                assert any(s <= ref.start and ref.stop <= e for s, e in covered) or \
                    (ref.start, ref.stop) == (0, plan.buffers[ref.buffer].channels) == (covered[0][0], covered[-1][1])
            else:
                assert ref.buffer in written, f"{op.name} reads {ref} before it is written"
        for ref in op.writes:
            if ref.buffer in slots:
                slots[ref.buffer].append((ref.start, ref.stop))
            written.add(ref.buffer)
    for name, ranges in slots.items():
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == plan.buffers[name].channels
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), f"{name}: slots overlap or leave gaps"
    assert plan.output in written and all(f in written for f in plan.features)


def test_partial_sums_are_a_buffer_of_their_aggregation_in_each_familys_layout():
    """The ESE partial sums are declared as "partial sums of op X", their (N, T, C) given by the
    family that runs X: the torch family's one row per image, the sm_80+ CUDA kernel's 64-row slabs
    across images; bytes are counted in the layout asked for, and never without one."""
    net, plan = _plan("tiny")
    sums = [b for b in plan.buffers.values() if b.kind == "partial_sums"]
    assert len(sums) == sum(op.kind == "aggregation" for op in plan.ops) > 0
    producers = {op.name: op for op in plan.ops}
    assert all(producers[b.producer].kind == "aggregation" and producers[b.producer].writes[1].buffer == b.name
               for b in sums)
    cpu = torch.device("cpu")
    by_torch = plan.shapes(3, 224, 224, functools.partial(torch_family.partial_sums_shape, dtype=torch.float32,
                                                          device=cpu))
    by_cuda = plan.shapes(3, 224, 224, functools.partial(cuda_ops.partial_sums_shape, dtype=torch.float16,
                                                         device=cpu, arch=90))
    spatial = plan.spatial(224, 224)
    for b in sums:
        h, w = spatial[b.name]
        assert by_torch[b.name] == (3, 1, b.channels)
        assert by_cuda[b.name] == (3, spec.psum_tiles(3, h * w, configs.CUDA_PSUM_ROWS), b.channels)
    assert not any(b.name in plan.shapes(3, 224, 224) for b in sums)  # no family: no layout
    params = {name: tuple(t.shape) for name, t in net.named_buffers()}
    with pytest.raises(ValueError, match="partial_sums=<family>.partial_sums_shape"):
        plan.costs(3, 224, 224, 2, params)
    torch_costs = plan.costs(3, 224, 224, 2, params, functools.partial(torch_family.partial_sums_shape,
                                                                       dtype=torch.float16, device=cpu))
    cuda_costs = plan.costs(3, 224, 224, 2, params, functools.partial(cuda_ops.partial_sums_shape,
                                                                      dtype=torch.float16, device=cpu, arch=90))
    for a, b in zip(torch_costs, cuda_costs):
        if a.op.kind == "aggregation":
            t = by_cuda[a.op.writes[1].buffer][1]
            assert b.bytes_written - a.bytes_written == 3 * (t - 1) * a.op.writes[1].channels * 4
        elif a.op.kind == "ese_gate":
            assert b.input_shape == by_cuda[a.op.reads[0].buffer] and a.input_shape == by_torch[a.op.reads[0].buffer]


def test_every_backend_runs_the_same_plan():
    fused = {b: hk.FusedPPHGNet(hk.pphgnet_tiny(), backend=b) for b in ("torch", "triton", "cuda")}
    ops = {b: [(op.kind, op.name) for op in f._backend.plan.ops] for b, f in fused.items()}
    assert ops["torch"] == ops["triton"] == ops["cuda"]
    assert len(fused["triton"]._backend.binders) == len(ops["triton"])


def test_plan_command_table_and_json(capsys):
    assert main(["plan", "--model", "tiny", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "GMACs" in out and "aggregation" in out and "s2.b1.l4" in out
    assert main(["plan", "--model", "tiny", "--batch", "2", "--gpu", "H100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["rows"]
    assert data["gpu"] == "H100" and len(rows) == len(_plan("tiny")[1].ops)
    conv = next(r for r in rows if r["kind"].startswith("conv 3×3/1"))
    assert conv["programs"] > 0 and 0 < conv["mma_efficiency"] <= 1 and conv["roofline_us"] > 0
    assert conv["programs_per_sm"] == pytest.approx(conv["programs"] / 132)


def test_a_tuned_config_file_is_picked_up(tmp_path, monkeypatch):
    """A triton_<arch>.json entry replaces the heuristic, for the kernels and for the plan's grids."""
    key = configs.conv_key(56 * 56, 96, 96, 3, 1, torch.float16)
    shutil.copy(os.path.join(configs.CONFIG_DIR, "devices.json"), tmp_path)
    (tmp_path / "triton_sm90.json").write_text(json.dumps({
        "conv_bn_act": {key: {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "num_warps": 2, "num_stages": 2}},
        "scale_residual": {"c224_float16": {"BLOCK_P": 16, "BLOCK_C": 32, "num_warps": 2}}}))
    heuristic = configs.conv_config(56 * 56, 96, 96, 3, 1, torch.float16, "sm90")
    monkeypatch.setattr(configs, "CONFIG_DIR", str(tmp_path))
    assert configs.conv_config(56 * 56, 96, 96, 3, 1, torch.float16, "sm90")["BLOCK_M"] == 32
    assert configs.conv_config(56 * 56, 96, 96, 3, 1, torch.float16, "sm80") == heuristic  # another arch
    assert configs.tile_config("scale_residual", 224, torch.float16, "sm90")["BLOCK_P"] == 16
    rows = report("tiny", 1, 224, torch.float16, "H100")
    layer = next(r for r in rows if r.name == "s0.b0.l1")
    assert layer.programs == configs.cdiv(56 * 56, 32) * configs.cdiv(96, 32)
