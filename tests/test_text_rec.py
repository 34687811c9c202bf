"""PP-OCR text recognition: PP-OCRv4 server rec (PaddleOCR ``PPHGNet_small(det=False)``) and PP-OCRv5
server rec (``PPHGNetV2_B4(text_rec=True)``, also transformers' ``PPOCRV5ServerRec``), whose LDS
downsamples stride (2, 1) / (1, 2). Checked against real PaddlePaddle (goldens of PaddleOCR's own
rec backbones, random weights and BN statistics, 3×48×W crops), transformers, and float64, in every
kernel family: the strided depthwise op into poisoned slices, and ``forward_features`` at 48×W
(reduced widths where the interpreter / emulator would be slow)."""
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hgnet_kernels as hk
from hgnet_kernels import backends
from hgnet_kernels.kernels import spec
from hgnet_kernels.models import (PPHGNet, PPHGNetConfig, PPHGNetV2, PPHGNetV2Config, StageConfig, StageV2Config,
                                  randomize_statistics)
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.plan import output_size
from hgnet_kernels.shapes import model_plan

from helpers import DEVICE, poisoned_slice, untouched_outside

GOLDEN = Path(__file__).with_name("data") / "paddle_golden" / "rec"
REC_GOLDENS = sorted(p.stem for p in GOLDEN.glob("*.json"))
FAMILIES = ["torch", "triton", "cuda"]
REC_STRIDES = [(2, 1), (1, 2)]


def _paddle_names(state):
    """Our state dict in Paddle's names (BN statistics), as PaddleOCR's paddle.save writes them."""
    return {k.replace("bn.running_mean", "bn._mean").replace("bn.running_var", "bn._variance"):
            v.detach().numpy().astype(np.float32) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _reduced(version: int, **options):
    """A text-rec backbone at reduced widths (the same layout as PP-OCR's, small enough for the
    Triton interpreter and the CUDA emulator)."""
    if version == 1:
        stages = (StageConfig(16, 8, 16, 1, False), StageConfig(16, 8, 24, 1, True),
                  StageConfig(24, 16, 32, 2, True), StageConfig(32, 16, 40, 1, True))
        model = PPHGNet(PPHGNetConfig("rec_test", (8, 8, 16), stages, 2, 0.0), num_classes=0, class_expand=None,
                        text_rec=True, **options)
    else:
        stages = (StageV2Config(16, 8, 16, 1, False, False, 3, 2), StageV2Config(16, 8, 24, 1, True, False, 3, 2),
                  StageV2Config(24, 16, 32, 2, True, True, 5, 2), StageV2Config(32, 16, 40, 1, True, True, 5, 2))
        model = PPHGNetV2(PPHGNetV2Config("rec_test", (8, 16), stages, True), num_classes=0, class_expand=None,
                          text_rec=True, **options)
    return randomize_statistics(model, seed=version)


# ---- the layout ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["small", "b4"], ids=["v4_small", "v5_b4"])
def test_plan_has_paddleocr_rec_strides_and_map_sizes(model):
    """At 48×320 the stage maps are (12, 160), (12, 80), (6, 80), (3, 80), as in PaddleOCR."""
    plan = model_plan(model, text_rec=True)
    sizes = plan.spatial(48, 320)
    assert [sizes[name] for name in plan.features] == [(12, 160), (12, 80), (6, 80), (3, 80)]
    downsamples = {op.name: op for op in plan.ops if op.name.endswith("downsample")}
    assert [downsamples[f"stages.{i}.downsample"].stride for i in range(4)] == [(2, 1), (1, 2), (2, 1), (2, 1)]
    assert downsamples["stages.0.downsample"].describe() == "depthwise 3×3/2x1"
    assert not any(op.kind == "max_pool" and op.stride == (2, 2) for op in plan.ops)  # no v1 stem pool
    assert all(op.stride[0] == op.stride[1] for op in plan.ops if op.kind != "depthwise")
    assert plan.model.endswith("text_rec")


@pytest.mark.parametrize("stride", [1, 2, (2, 1), (1, 2)], ids=str)
@pytest.mark.parametrize("kernel,padding", [(3, (1, 1, 1, 1)), (5, (2, 2, 2, 2)), (2, (0, 1, 0, 1)), (3, (1, 2, 0, 1))])
def test_output_size_formula_is_pytorchs(kernel, padding, stride):
    top, bottom, left, right = padding
    x = torch.zeros(1, 1, 11, 8)
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), torch.zeros(1, 1, kernel, kernel), stride=stride).shape
    assert output_size(11, 8, kernel, stride, padding) == tuple(expected[2:])


# ---- the strided depthwise op in every family ------------------------------------------------------------

SMALL_TILES = dict(BLOCK_P=32, BLOCK_C=16, num_warps=4)  # most pixel tiles straddle two rows / images


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("stride", REC_STRIDES, ids=str)
@pytest.mark.parametrize("offset,c", [(8, 24), (5, 20)], ids=["aligned", "odd_slice"])
@pytest.mark.parametrize("name", FAMILIES)
def test_strided_depthwise_into_poisoned_slices(name, offset, c, stride, dtype):
    """The LDS downsample at (2, 1) / (1, 2) from a channel slice into a channel slice of NaN-filled
    buffers, odd sizes, 3 images: exact to float64 within the dtype's tolerance, nothing written
    outside the slice, nothing left unwritten."""
    family = backends.family(name)
    n, h, w = 3, 9, 13
    g = torch.Generator().manual_seed(offset + 10 * stride[0])
    x64 = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    w64 = torch.randn(c, 1, 3, 3, generator=g, dtype=torch.float64) / 3
    b64 = torch.randn(c, generator=g, dtype=torch.float64)
    _, x = poisoned_slice(n, c, h, w, offset, offset + 3, dtype)
    x.copy_(x64)
    ho, wo = output_size(h, w, 3, stride, spec.symmetric(3))
    assert (ho, wo) == ((5, 13) if stride == (2, 1) else (9, 7))
    out_buf, out = poisoned_slice(n, c, ho, wo, offset, offset + 3, dtype)
    weight, bias = w64.to(DEVICE, dtype), b64.to(DEVICE, dtype)
    extra = dict(config=SMALL_TILES) if name == "triton" else {}
    family.depthwise_conv(x, family.pack_depthwise_weight(weight), bias, stride, out=out, **extra)
    assert untouched_outside(out_buf, offset, c) and not torch.isnan(out).any()
    packed = spec.pack_depthwise_weight(weight)
    exact = spec.depthwise_conv_reference(x.double(), packed.double(), bias.double(), stride)
    if dtype == torch.float32:
        assert relative_error(out, exact) <= FP32_REL_TOL
    else:
        eager = spec.depthwise_conv_reference(x.float(), packed.float(), bias.float(), stride).to(dtype)
        assert relative_error(out, exact) <= tolerance(dtype, relative_error(eager, exact))


@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_strides_outside_the_kernels_are_refused(name):
    family = backends.family(name)
    x = torch.randn(1, 16, 9, 9).to(DEVICE)
    weight, bias = spec.pack_depthwise_weight(torch.randn(16, 1, 3, 3)).to(DEVICE), torch.randn(16).to(DEVICE)
    for stride in [(3, 1), (2, 1, 1), 3]:
        with pytest.raises(ValueError, match="stride must be"):
            family.depthwise_conv(x, weight, bias, stride)
    dense = next(op for op in model_plan("tiny").ops if op.kind == "conv")
    assert "conv stride 2x1" in spec.not_supported_reasons(dataclasses.replace(dense, stride=(2, 1)), family.SUPPORTS)


# ---- forward_features at 48×W in every family ----------------------------------------------------------

# (family, batch, width, version) on the torch and cuda families. Triton's interpreter (one numpy
# pass per program, ~4 s a forward even at 48×32) runs the rec layouts' forward_features in
# test_fused_equals_paddleocr[*-triton] (both layouts; _reduced(1) is the v4 golden's layout and
# _reduced(2) the v5 golden's plus LAB, whose Triton path, both signs, is
# test_pphgnet_v2.py::test_fused_equals_paddle[v2_lab_mixed_sign-triton]'s), and the strided
# depthwise on 3 images in test_strided_depthwise_into_poisoned_slices[triton-*].
CROPS = [(name, batch, width, version) for name in ("torch", "cuda") for version in (1, 2)
         for batch, width in ((3, 32), (1, 100), (2, 320))]


@pytest.mark.parametrize("name,batch,width,version", CROPS,
                         ids=[f"{n}-{b}-{w}-v{3 + v}_rec" for n, b, w, v in CROPS])
def test_forward_features_on_ocr_crops(name, batch, width, version):
    eager = _reduced(version)
    x = torch.randn(batch, 3, 48, width, generator=torch.Generator().manual_seed(width))
    with torch.no_grad():
        exact = eager.double().forward_features(x.double())
    fused = hk.FusedPPHGNet(eager.float().to(DEVICE), backend=name)
    got = [g.cpu() for g in fused.forward_features(x.to(DEVICE))]
    assert [tuple(g.shape) for g in got] == [(batch, c, h, w) for c, h, w in zip(
        (16, 24, 32, 40), (12, 12, 6, 3), (width // 2, width // 4, width // 4, width // 4))]
    assert all(relative_error(g, e) <= FP32_REL_TOL for g, e in zip(got, exact))


def test_full_width_rec_backbones_fused_equal_float64():
    """The real PP-OCRv4 / v5 server rec widths on the torch family at 48×320 (one crop: batches of
    the rec layout are test_forward_features_on_ocr_crops's)."""
    x = torch.randn(1, 3, 48, 320, generator=torch.Generator().manual_seed(3))
    for model in (PPHGNet("small", num_classes=0, class_expand=None, text_rec=True),
                  PPHGNetV2("b4", num_classes=0, class_expand=None, text_rec=True)):
        randomize_statistics(model, seed=5)
        with torch.no_grad():
            exact = model.double().forward_features(x.double())
        got = hk.FusedPPHGNet(model.float(), backend="torch").forward_features(x)
        assert [tuple(g.shape[2:]) for g in got] == [(12, 160), (12, 80), (6, 80), (3, 80)]
        assert all(relative_error(g, e) <= FP32_REL_TOL for g, e in zip(got, exact))


# ---- PaddleOCR checkpoints and real PaddlePaddle ----------------------------------------------------

def _golden_model(name: str):
    """Our model built with the arguments the golden was made with, loaded from its whole-model
    .pdparams (backbone under ``backbone.``, the rest ignored)."""
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    kw = meta["constructor_kwargs"]
    if meta["arch"] == "PPHGNet":
        stages = tuple(StageConfig(*row[:5]) for row in kw["stage_config"].values())
        model = PPHGNet(PPHGNetConfig(name, tuple(kw["stem_channels"]), stages, kw["layer_num"], 0.0),
                        num_classes=0, class_expand=None, text_rec=True)
    else:
        stages = tuple(StageV2Config(*row[:8]) for row in kw["stage_config"].values())
        model = PPHGNetV2(PPHGNetV2Config(name, tuple(kw["stem_channels"][1:]), stages, kw["use_lab"]),
                          num_classes=0, class_expand=None, text_rec=True)
    assert all(tuple(row[-1]) == s.stride for row, s in zip(kw["stage_config"].values(), model.config.stages))
    return hk.load_weights(model, GOLDEN / f"{name}.pdparams").eval()


def _golden_inputs(name):
    data = np.load(GOLDEN / f"{name}.npz")
    for i in range(len([k for k in data.files if k.startswith("x_")])):
        yield (torch.from_numpy(data[f"x_{i}"]), [torch.from_numpy(data[f"stage{s}_{i}"]) for s in range(1, 5)],
               torch.from_numpy(data[f"pooled_{i}"]))


def test_the_rec_goldens_cover_v4_and_v5_at_two_widths():
    assert REC_GOLDENS == ["ppocrv4_rec_v1_small_reduced", "ppocrv5_rec_v2_b4_reduced"]
    for name in REC_GOLDENS:
        widths = {x.shape[3] for x, _, _ in _golden_inputs(name)}
        assert len(widths) == 2 and all(x.shape[2] == 48 for x, _, _ in _golden_inputs(name))


@pytest.mark.parametrize("name", REC_GOLDENS)
def test_eager_float64_equals_paddleocr(name):
    """Our eager model equals PaddleOCR's backbone run by PaddlePaddle (fp32: ~1e-6), and PaddleOCR's
    (3, 2) average pool of our stage 4, which stays with the caller, equals its forward."""
    model = _golden_model(name).double()
    for x, stages, pooled in _golden_inputs(name):
        with torch.no_grad():
            feats = model.forward_features(x.double())
        for got, want in zip(feats, stages):
            assert got.shape == want.shape and relative_error(got, want) <= FP32_REL_TOL
        assert relative_error(F.avg_pool2d(feats[-1], (3, 2)), pooled) <= FP32_REL_TOL


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("golden", REC_GOLDENS)
def test_fused_equals_paddleocr(golden, name):
    model = _golden_model(golden)
    fused = hk.FusedPPHGNet(model.to(DEVICE), backend=name)
    inputs = list(_golden_inputs(golden))
    if name == "triton":
        # Triton's interpreter: one image, the first of the odd-width (48×41) pair, with its own
        # golden maps (Paddle's eval forward is per image). Both crops run on the torch and cuda
        # families here; 3 images through Triton on the rec layout are test_forward_features_on_ocr_crops's.
        x, stages, _ = next(item for item in inputs if item[0].shape[3] % 2)
        inputs = [(x[:1], [s[:1] for s in stages], None)]
    for x, stages, _ in inputs:
        with torch.no_grad():
            exact = model.cpu().double().forward_features(x.double())
        got = [g.cpu() for g in fused.forward_features(x.to(DEVICE))]
        assert all(relative_error(g, e) <= FP32_REL_TOL for g, e in zip(got, exact))
        assert all(relative_error(g, s) <= 2 * FP32_REL_TOL for g, s in zip(got, stages))


@pytest.mark.parametrize("version", [1, 2], ids=["v4_small", "v5_b4"])
def test_load_model_of_a_whole_paddleocr_rec_checkpoint(tmp_path, version):
    """A PaddleOCR rec training checkpoint: the backbone under ``backbone.`` (B4 text_rec with the
    ImageNet head PaddleOCR builds and never runs), neck and head beside it: load_model and
    FusedPPHGNet.from_checkpoint build the text_rec backbone and ignore the rest."""
    if version == 1:
        source = PPHGNet("small", num_classes=0, class_expand=None, text_rec=True)
        state = source.state_dict()
    else:
        source = PPHGNetV2("b4", num_classes=0, class_expand=None, text_rec=True)
        state = {**source.state_dict(), "last_conv.weight": torch.randn(2048, 2048, 1, 1),
                 "fc.weight": torch.randn(2048, 1000), "fc.bias": torch.randn(1000)}
    randomize_statistics(source, seed=7)
    paddle = {f"backbone.{k}": v for k, v in _paddle_names(state).items()}
    paddle["head.ctc_encoder.encoder.conv1.conv.weight"] = np.zeros((8, 8, 1, 3), np.float32)
    paddle["head.ctc_head.fc.weight"] = np.zeros((8, 5), np.float32)
    with open(tmp_path / "rec.pdparams", "wb") as f:
        pickle.dump(paddle, f, protocol=4)
    model = hk.load_model(tmp_path / "rec.pdparams")
    assert type(model) is type(source) and model.text_rec and model.config.name == ("small" if version == 1 else "b4")
    assert model.fc is None and model.last_conv is None
    ours = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ours.items())
    fused = hk.FusedPPHGNet.from_checkpoint(tmp_path / "rec.pdparams", backend="torch")
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        exact = source.double().forward_features(x.double())
    assert all(relative_error(g, e) <= FP32_REL_TOL for g, e in zip(fused.forward_features(x), exact))


def test_a_rec_checkpoint_into_a_det_model_says_what_it_holds():
    source = PPHGNetV2("b4", num_classes=0, class_expand=None, text_rec=True)
    with pytest.raises(hk.CheckpointError, match="holds a PPHGNetV2_B4 text_rec, not a PPHGNetV2_B4"):
        hk.load_weights(PPHGNetV2("b4", num_classes=0, class_expand=None), source.state_dict())


def test_plan_report_of_a_rec_backbone_names_its_strides_and_grids():
    from hgnet_kernels.plan_report import report
    rows = report("small", 2, (48, 320), torch.float16, "H100", text_rec=True)
    downsamples = [r for r in rows if r.kind.startswith("depthwise")]
    assert [r.kind for r in downsamples] == ["depthwise 3×3/2x1", "depthwise 3×3/1x2", "depthwise 3×3/2x1",
                                             "depthwise 3×3/2x1"]
    assert downsamples[0].output == "2×128×12×160 [0:128]" and all(r.programs for r in downsamples)
    assert not any(r.kind.startswith("max_pool") for r in rows)
