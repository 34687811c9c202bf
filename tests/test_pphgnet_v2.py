"""PP-HGNetV2 (B0–B6): equal to real PaddlePaddle (golden outputs from tools/paddle_golden.py, with
random BN statistics and random LAB values, at odd input sizes) and to timm, from every checkpoint
layout its users have (PaddleClas, timm, D-FINE / DEIM, RT-DETR and its torch port), and fused."""
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.backends import BackendUnavailable
from hgnet_kernels.models import (CONFIGS_V2, PPHGNet, PPHGNetConfig, PPHGNetV2, PPHGNetV2Config, StageConfig,
                                  StageV2Config)
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error
from hgnet_kernels.checkpoints import CheckpointError, to_hgnet_kernels_keys
from hgnet_kernels.weights import infer_model_name, load_model, load_weights

from helpers import randomize

GOLDEN = Path(__file__).with_name("data") / "paddle_golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))


def timm_model(name: str, **kwargs):
    """A timm model; only the tests that compare against timm need it (a skip naming it without)."""
    timm = pytest.importorskip("timm", reason="timm is a dev dependency: pip install -e '.[dev]'")
    return timm.create_model(name, **kwargs)


def golden_model(name: str, **options):
    """Our model built with the exact constructor arguments the golden file was made with."""
    cfg = json.loads((GOLDEN / f"{name}.json").read_text())
    kw = cfg["constructor_kwargs"]
    if cfg["arch"] == "PPHGNetV2":
        stages = tuple(StageV2Config(*row) for row in kw["stage_config"].values())
        config = PPHGNetV2Config(name, tuple(kw["stem_channels"][1:]), stages, kw["use_lab"])
        model = PPHGNetV2(config, num_classes=kw["class_num"], dropout_prob=kw["dropout_prob"],
                          class_expand=kw["class_expand"] if kw.get("use_last_conv", True) else None, **options)
    else:
        stages = tuple(StageConfig(*row) for row in kw["stage_config"].values())
        config = PPHGNetConfig(name, tuple(kw["stem_channels"]), stages, kw["layer_num"], kw["dropout_prob"])
        model = PPHGNet(config, num_classes=kw["class_num"], class_expand=kw["class_expand"])
    return load_weights(model, GOLDEN / f"{name}.pdparams").eval()


def golden_inputs(name):
    data = np.load(GOLDEN / f"{name}.npz")
    i = 0
    while f"x_{i}" in data:
        yield (torch.from_numpy(data[f"x_{i}"]), torch.from_numpy(data[f"logits_{i}"]),
               [torch.from_numpy(data[f"stage{s}_{i}"]) for s in range(1, 5)])
        i += 1


def test_the_golden_files_cover_v1_v2_lab_signs_and_no_last_conv():
    assert {"v1_ese_dropout", "v2_lab_mixed_sign", "v2_lab_positive", "v2_nolab", "v2_nolab_no_last_conv"} <= set(CASES)
    labs = json.loads((GOLDEN / "v2_lab_mixed_sign.json").read_text())["lab_values"]
    scales = [v["scale"] for v in labs.values()] if isinstance(labs, dict) else [v[0] for v in labs]
    assert min(scales) < 0 < max(scales)


@pytest.mark.parametrize("name", CASES)
def test_eager_float64_equals_paddle(name):
    model = golden_model(name).double()
    for x, logits, stages in golden_inputs(name):
        with torch.no_grad():
            feats = model.forward_features(x.double())
            out = model.forward_head(feats[-1])
        assert relative_error(out, logits) <= FP32_REL_TOL  # Paddle's own fp32 rounding is ~1e-7
        for got, want in zip(feats, stages):
            assert got.shape == want.shape and relative_error(got, want) <= FP32_REL_TOL


def test_the_stem_pool_padding_is_paddles_not_timms():
    """Paddle's "SAME" stem pool ignores the padded cells; with timm's zero padding a model whose
    stem can go negative (a LAB with a negative shift) is off by percents at stage 1, and still
    past 1e-5 at the logits."""
    ignore, zero = golden_model("v2_lab_mixed_sign"), golden_model("v2_lab_mixed_sign", stem_pool_padding="zero")
    x, logits, stages = next(golden_inputs("v2_lab_mixed_sign"))
    with torch.no_grad():
        assert relative_error(ignore.double()(x.double()), logits) <= FP32_REL_TOL
        assert relative_error(zero.double()(x.double()), logits) > 4 * FP32_REL_TOL
        assert relative_error(zero.double().forward_features(x.double())[0], stages[0]) > 1e-3


BACKENDS = ["torch", "triton", "cuda"]


# v2_nolab is left to the torch and cuda families: on Triton's interpreter (~4 s a forward) its ops
# are the other two goldens' (v2_lab_mixed_sign's v2 stem, blocks and light blocks; v1_ese_dropout's
# convolutions without a LAB).
FUSED_GOLDENS = [(name, backend) for name in ("v2_lab_mixed_sign", "v2_nolab", "v1_ese_dropout") for backend in BACKENDS
                 if (name, backend) != ("v2_nolab", "triton")]


@pytest.mark.parametrize("name,backend", FUSED_GOLDENS)
def test_fused_equals_paddle(name, backend):
    """Every backend that claims the plan's ops reproduces Paddle within 1e-5; one that does not is
    refused up front, naming the op."""
    model = golden_model(name)
    try:
        fused = hk.FusedPPHGNet(model, backend=backend)
    except BackendUnavailable as e:
        assert backend != "torch" and "exactly" in str(e) and ("stages." in str(e) or "stem." in str(e))
        return
    inputs = list(golden_inputs(name))
    if backend == "triton":
        # Triton's interpreter takes ~4 s a forward even on these narrow goldens: one pass on the
        # smallest (odd-sized) input yields the logits and every stage map together. The public
        # forward / forward_features around that pass are family-independent code, checked on two
        # inputs by this test's torch and cuda cases; Triton at batch 2 and odd sizes on a whole
        # network is test_fused_kernels.py::test_fp32's.
        x, logits, stages = min(inputs, key=lambda item: item[0].numel())
        *feats, out = fused._backend.run(fused.check_input(x), tuple(range(len(stages) + 1)))
        assert relative_error(out, logits) <= FP32_REL_TOL
        assert all(relative_error(got, want) <= FP32_REL_TOL for got, want in zip(feats, stages, strict=True))
        return
    for x, logits, stages in inputs[:2]:
        assert relative_error(fused(x), logits) <= FP32_REL_TOL
        for got, want in zip(fused.forward_features(x), stages, strict=True):
            assert relative_error(got, want) <= FP32_REL_TOL


# ---- timm ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(CONFIGS_V2))
def test_parameters_and_shapes_match_timm(variant):
    with torch.device("meta"):
        theirs = timm_model(f"hgnetv2_{variant}", pretrained=False)
        ours = PPHGNetV2(variant)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    mapped = to_hgnet_kernels_keys(theirs.state_dict(), 0.0)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert infer_model_name(mapped) == variant


@pytest.mark.parametrize("variant", ["b0", "b4"])
def test_timm_model_converts_exactly_and_fuses(variant):
    theirs = randomize(timm_model(f"hgnetv2_{variant}", pretrained=False), seed=41)
    ours = load_model(theirs)
    assert ours.stem_pool_padding == "zero" and ours.use_lab == CONFIGS_V2[variant].use_lab
    x = torch.randn(1, 3, 67, 45)  # one image: the conversion is per weight; batches are test_fused_torch.py's
    with torch.no_grad():
        expected = theirs.double()(x.double())
        expected_feats = theirs.forward_intermediates(x.double(), intermediates_only=True)
        assert relative_error(ours.double()(x.double()), expected) <= 1e-12
    fused = hk.FusedPPHGNet(theirs.float(), backend="torch")
    assert relative_error(fused(x), expected) <= FP32_REL_TOL
    for got, want in zip(fused.forward_features(x), expected_feats):
        assert relative_error(got, want) <= FP32_REL_TOL


def test_out_indices_return_the_detector_strides():
    model = randomize(PPHGNetV2("b0"), seed=42)
    fused = hk.FusedPPHGNet(model, backend="torch", out_indices=(1, 2, 3))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model.forward_features(x)[1:]
    got = fused.forward_features(x)
    assert [g.shape[-1] for g in got] == [96 // 8, 96 // 16, 96 // 32]
    assert all(relative_error(g, e) <= FP32_REL_TOL for g, e in zip(got, expected))
    with pytest.raises(ValueError, match="out_indices"):
        hk.FusedPPHGNet(model, backend="torch", out_indices=(3, 1))


# ---- detector and OCR checkpoints ----------------------------------------------------------------

def _timm_backbone_state(variant, seed):
    """A timm model and its backbone's state dict (what a detector checkpoint holds: no head)."""
    theirs = randomize(timm_model(f"hgnetv2_{variant}", pretrained=False), seed=seed)
    return theirs, {k: v for k, v in theirs.state_dict().items() if not k.startswith("head.")}


def test_dfine_checkpoint_with_prefix_ema_and_a_decoder(tmp_path):
    """D-FINE / DEIM: timm-like names under "backbone.", inside {"model", "ema": {"module"}}; the
    EMA weights are the ones loaded, the decoder's keys ignored."""
    theirs, state = _timm_backbone_state("b0", 43)
    ema = {f"backbone.{k}": v for k, v in state.items()}
    ema["decoder.query_embed.weight"] = torch.randn(300, 256)
    training = {k: torch.zeros_like(v) for k, v in ema.items()}
    torch.save({"model": training, "ema": {"module": ema, "updates": 7}, "last_epoch": 71}, tmp_path / "dfine_n.pth")
    model = load_model(tmp_path / "dfine_n.pth")
    assert model.config.name == "b0" and model.fc is None and model.last_conv is None
    assert model.use_lab and model.stem_pool_padding == "zero"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(model.forward_features(x), theirs.forward_intermediates(x, intermediates_only=True)):
            assert relative_error(got, want) <= 1e-6


def _paddle_names(state, prefix=""):
    """Our key names as Paddle (PaddleDetection's RT-DETR) writes them."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("bn.running_mean", "bn._mean").replace("bn.running_var", "bn._variance")
        out[prefix + key] = value.numpy() if key != "fc.weight" else value.t().contiguous().numpy()
    return out


def test_rtdetr_paddle_and_torch_port_checkpoints(tmp_path):
    import pickle
    source = randomize(PPHGNetV2("b4", num_classes=0, class_expand=None), seed=44)
    state = source.state_dict()
    paddle = _paddle_names(state, "backbone.")
    paddle["transformer.enc_output.0.weight"] = np.zeros((256, 256), np.float32)
    with open(tmp_path / "rtdetr_hgnetv2_l.pdparams", "wb") as f:
        pickle.dump(paddle, f, protocol=4)
    model = load_model(tmp_path / "rtdetr_hgnetv2_l.pdparams")
    assert model.config.name == "b4" and not model.use_lab and model.stem_pool_padding == "ignore"
    x = torch.randn(1, 3, 65, 71)
    with torch.no_grad():
        expected = source.forward_features(x)
        assert all(relative_error(a, b) <= 1e-6 for a, b in zip(model.forward_features(x), expected))
    # lyuwenyu's RT-DETRv2 port: Paddle's names, torch BN buffers, a ZeroPad2d before the 2×2 stem convs
    port = {("backbone." + re.sub(r"^stem\.(stem2[ab])\.conv\.", r"stem.\1.conv.1.", k)): v for k, v in state.items()}
    torch.save({"ema": {"module": port}}, tmp_path / "rtdetrv2_l.pth")
    model = load_model(tmp_path / "rtdetrv2_l.pth")
    assert model.config.name == "b4" and model.stem_pool_padding == "zero"


def test_unknown_v2_shapes_are_a_clear_error_whose_hint_works():
    source = golden_model("v2_nolab")
    state = source.state_dict()
    with pytest.raises(CheckpointError, match="match none of B0–B6") as info:
        load_model(state)
    assert "PPHGNetV2(PPHGNetV2Config(" in str(info.value)
    # the hint, followed: the configuration built by hand takes the weights
    model = PPHGNetV2(source.config, num_classes=source.num_classes, class_expand=source.class_expand,
                      use_lab=source.use_lab)
    load_weights(model, state)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values()))


def _ours_with_channels(variant, channels):
    return PPHGNetV2(variant, in_channels=channels, num_classes=5)


@pytest.mark.parametrize("variant,channels,make", [
    ("b0", 1, lambda v, c: timm_model(f"hgnetv2_{v}", pretrained=False, in_chans=c, num_classes=5)),
    ("b4", 4, lambda v, c: timm_model(f"hgnetv2_{v}", pretrained=False, in_chans=c, num_classes=5)),
    ("b0", 1, _ours_with_channels),
], ids=["timm-b0-in_chans=1", "timm-b4-in_chans=4", "ours-b0-in_channels=1"])
def test_variant_is_identified_whatever_the_input_channels(variant, channels, make, tmp_path):
    source = randomize(make(variant, channels), seed=47).eval()
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = load_model(tmp_path / "weights.pth")
    assert model.config.name == variant and model.in_channels == channels
    x = torch.randn(1, channels, 64, 64)
    with torch.no_grad():
        assert relative_error(model.double()(x.double()), source.double()(x.double())) <= 1e-12


@pytest.mark.parametrize("variant", ["b0", "b6"])
def test_builders_and_load_model_round_trip(variant, tmp_path):
    model = randomize(getattr(hk, f"pphgnetv2_{variant}")(num_classes=7), seed=45)
    torch.save(model.state_dict(), tmp_path / "ours.pth")
    again = hk.pphgnetv2_b0(weights=tmp_path / "ours.pth", num_classes=7) if variant == "b0" else load_model(
        tmp_path / "ours.pth")
    assert again.config.name == variant and again.num_classes == 7
    for a, b in zip(again.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def b0_and_its_float64_logits():
    """A random B0, an input and the float64 logits, shared by both low-precision dtypes."""
    model = randomize(PPHGNetV2("b0"), seed=46)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(46))
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double())
    return model, x, exact


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_within_twice_eagers_error(dtype, b0_and_its_float64_logits):
    shared, x, exact = b0_and_its_float64_logits
    model = copy.deepcopy(shared)
    with torch.no_grad():
        eager = model.to(dtype)(x.to(dtype))
    fused = hk.FusedPPHGNet(model, backend="torch", dtype=dtype)
    from hgnet_kernels.numerics import tolerance
    assert relative_error(fused(x), exact) <= tolerance(dtype, relative_error(eager, exact))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant,size", [("b0", 224), ("b4", 224), ("b4", 640)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_real_size_on_gpu(variant, size, dtype, backend):
    model = randomize(PPHGNetV2(variant), seed=47).cuda()
    x = torch.randn(2 if size == 224 else 1, 3, size, size, device="cuda")
    with torch.no_grad():
        exact_feats = model.double().forward_features(x.double())
        exact = model.forward_head(exact_feats[-1])
        eager_feats = model.float().to(dtype).forward_features(x.to(dtype))
        eager = model.forward_head(eager_feats[-1])
    from hgnet_kernels.numerics import tolerance

    def allowed(eager_out, exact_out):  # each output against eager's own error on that output
        return FP32_REL_TOL if dtype == torch.float32 else tolerance(dtype, relative_error(eager_out, exact_out))
    fused = hk.FusedPPHGNet(model.float(), backend=backend, dtype=dtype)
    assert relative_error(fused(x), exact) <= allowed(eager, exact)
    for got, want, eager_feat in zip(fused.forward_features(x), exact_feats, eager_feats, strict=True):
        assert relative_error(got, want) <= allowed(eager_feat, want)
