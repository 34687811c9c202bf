"""Models where users hold them, against the real frameworks: Hugging Face transformers (HGNetV2
backbone and classifier, D-FINE, PP-OCRv5 server det / rec) and ultralytics RT-DETR (l = B4,
x = B5), both pinned in the dev extra, and timm features_only state dicts.

Every source gets random weights, random BN statistics, LABs of both signs (B0) and, where the
framework keeps one per BN (modules), random BN eps; outputs are compared with the framework's
own model in float64 at odd input sizes. What a state dict cannot carry is checked too: ultralytics'
eps = 1e-3 (loading with 1e-5 instead is measurably wrong, so the check can fail), its pre-fused
convs (no BN), and a transformers folder's config.json against its weights."""
import copy
import json
import os

import pytest
import timm
import torch
import transformers
import ultralytics
from transformers import (DFineConfig, DFineForObjectDetection, HGNetV2Backbone, HGNetV2Config,
                          HGNetV2ForImageClassification, PPOCRV5ServerDetConfig, PPOCRV5ServerRecConfig,
                          PPOCRV5ServerRecForTextRecognition)
from ultralytics.nn.tasks import RTDETRDetectionModel

import hgnet_kernels as hk
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance
from hgnet_kernels.checkpoints import CheckpointError

from helpers import assert_same_model, randomize

# transformers' HGNetV2Config for PaddleClas's PPHGNetV2_B0 (LAB, light blocks in stages 3-4).
HF_B0 = dict(stem_channels=[3, 16, 16], stage_in_channels=[16, 64, 256, 512], stage_mid_channels=[16, 32, 64, 128],
             stage_out_channels=[64, 256, 512, 1024], stage_num_blocks=[1, 1, 2, 1],
             stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
             stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[3, 3, 3, 3], use_learnable_affine_block=True,
             hidden_sizes=[64, 256, 512, 1024], depths=[1, 1, 2, 1])
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def test_pinned_framework_versions():
    """The versions the dev extra pins and these tests were written against."""
    assert transformers.__version__ == "5.24.0" and ultralytics.__version__ == "8.4.190"


def _hf_backbone(seed, **config):
    model = HGNetV2Backbone(HGNetV2Config(**{**HF_B0, "out_features": STAGES, **config})).eval()
    return randomize(model, seed=seed)


def _hf_maps(module, x):
    with torch.no_grad():
        return copy.deepcopy(module).double()(x.double()).feature_maps


def _assert_maps(got, want, tol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and relative_error(g, w) <= tol


# ---- transformers -----------------------------------------------------------------------------------

def test_hf_backbone_module_converts_exactly_and_fuses():
    theirs = _hf_backbone(60)
    assert any(m.scale.item() < 0 for m in theirs.modules() if type(m).__name__.endswith("LearnableAffineBlock"))
    x = torch.randn(2, 3, 61, 83)
    want = _hf_maps(theirs, x)
    ours = hk.load_model(theirs)
    assert ours.config.name == "b0" and ours.use_lab and ours.fc is None and ours.stem_pool_padding == "zero"
    with torch.no_grad():
        _assert_maps(ours.double().forward_features(x.double()), want, 1e-12)
    _assert_maps(hk.FusedPPHGNet(theirs, backend="torch").forward_features(x), want, FP32_REL_TOL)


def test_hf_classifier_has_no_head_conv_and_loads_from_its_folder(tmp_path):
    theirs = randomize(HGNetV2ForImageClassification(HGNetV2Config(**HF_B0, num_labels=7)).eval(), seed=61)
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        want = copy.deepcopy(theirs).double()(x.double()).logits
    fused = hk.FusedPPHGNet(theirs, backend="torch")
    assert fused.num_outputs == 7 and fused.net.last_conv_weight is None
    assert relative_error(fused(x), want) <= FP32_REL_TOL
    theirs.save_pretrained(tmp_path / "hf")
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]
    model = hk.load_model(tmp_path / "hf")
    assert_same_model(hk.load_model(tmp_path / "hf" / "model.safetensors"), model)  # before .double()
    with torch.no_grad():
        assert relative_error(model.double()(x.double()), want) <= 1e-12
    assert relative_error(hk.FusedPPHGNet.from_checkpoint(tmp_path / "hf", backend="torch")(x), want) <= FP32_REL_TOL


def test_hf_sharded_folder_and_a_missing_shard(tmp_path):
    theirs = _hf_backbone(62)
    theirs.save_pretrained(tmp_path / "hf", max_shard_size="2MB")
    assert "model.safetensors.index.json" in os.listdir(tmp_path / "hf")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_maps(hk.load_model(tmp_path / "hf").double().forward_features(x.double()), _hf_maps(theirs, x), 1e-12)
    shards = sorted(f for f in os.listdir(tmp_path / "hf") if f.startswith("model-"))
    assert len(shards) > 1
    os.remove(tmp_path / "hf" / shards[-1])
    target = hk.pphgnetv2_b0(num_classes=0)
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(CheckpointError, match=f"shards.*missing: {shards[-1]}"):
        hk.load_weights(target, tmp_path / "hf")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_hf_dfine_whole_model_folder_state_dict_and_frozen_bn_module(tmp_path):
    """D-FINE: the backbone under model.backbone.model., its BNs transformers' frozen BN (eps
    1e-5 in its forward), the encoder and decoder ignored."""
    backbone = HGNetV2Config(**HF_B0, out_features=STAGES[1:])
    config = DFineConfig(backbone_config=backbone, d_model=32, encoder_hidden_dim=32, encoder_layers=1,
                         decoder_layers=2, num_queries=10, encoder_in_channels=[256, 512, 1024],
                         decoder_in_channels=[32, 32, 32], num_feature_levels=3, decoder_ffn_dim=64,
                         encoder_ffn_dim=64, decoder_n_points=[1, 1, 1], hidden_expansion=0.34)
    detector = randomize(DFineForObjectDetection(config).eval(), seed=63)
    inner = detector.model.backbone.model
    assert type(inner.embedder.stem1.normalization).__name__ == "DFineFrozenBatchNorm2d"
    x = torch.randn(1, 3, 64, 96)
    want = _hf_maps(inner, x)
    detector.save_pretrained(tmp_path / "dfine")
    torch.save(detector.state_dict(), tmp_path / "dfine.pth")
    # One source checked with a float64 forward; the others load as that same model.
    model = hk.load_model(tmp_path / "dfine")
    for source in (tmp_path / "dfine.pth", inner):
        assert_same_model(hk.load_model(source), model)
    assert model.config.name == "b0" and model.fc is None and model.stem_pool_padding == "zero"
    with torch.no_grad():
        _assert_maps(model.double().forward_features(x.double())[1:], want, 1e-12)
    fused = hk.FusedPPHGNet(inner, backend="torch", out_indices=(1, 2, 3))
    _assert_maps(fused.forward_features(x), want, FP32_REL_TOL)


def test_hf_ppocrv5_server_det_backbone_under_its_prefix(tmp_path):
    config = PPOCRV5ServerDetConfig()
    backbone = randomize(HGNetV2Backbone(config.backbone_config).eval(), seed=64)
    state = {f"model.backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["model.neck.conv_reduce_channel.weight"] = torch.zeros(24, 96, 1, 1)
    state["head.binarize.conv1.weight"] = torch.zeros(64, 256, 3, 3)
    torch.save(state, tmp_path / "ppocrv5_server_det.pth")
    model = hk.load_model(tmp_path / "ppocrv5_server_det.pth")
    assert model.config.name == "b4" and not model.use_lab
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        _assert_maps(model.double().forward_features(x.double()), _hf_maps(backbone, x), 1e-12)


def _ppocrv5_rec_folder(path, config_json):
    """PP-OCRv5 server rec's backbone (B4 text_rec) as PPOCRV5ServerRecForTextRecognition holds it,
    with the given config.json."""
    rec = PPOCRV5ServerRecConfig(head_out_channels=50)
    backbone = HGNetV2Backbone(rec.backbone_config).eval()
    state = {f"model.backbone.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    path.mkdir()
    from safetensors.torch import save_file
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config_json))
    return state


def test_hf_ppocrv5_server_rec_module_folder_and_state_dict(tmp_path):
    """PP-OCRv5 server rec (PPOCRV5ServerRecForTextRecognition): its B4 text_rec backbone (stem3 at
    stride 1, stage strides (2, 1) / (1, 2)) under model.backbone., the SVTR neck and CTC head
    ignored; a config.json with other strides is refused, naming them."""
    rec = randomize(PPOCRV5ServerRecForTextRecognition(PPOCRV5ServerRecConfig(head_out_channels=50)).eval(), seed=66)
    backbone = rec.model.backbone
    x = torch.randn(2, 3, 48, 72)
    want = _hf_maps(backbone, x)
    assert [tuple(m.shape[2:]) for m in want] == [(12, 36), (12, 18), (6, 18), (3, 18)]
    rec.save_pretrained(tmp_path / "rec")
    torch.save(rec.state_dict(), tmp_path / "rec.pth")
    # One source checked with a float64 forward (~2 s at B4's widths); the others load as that same model.
    model = hk.load_model(tmp_path / "rec")
    for source in (tmp_path / "rec.pth", rec, backbone):
        assert_same_model(hk.load_model(source), model)
    assert model.config.name == "b4" and model.text_rec and model.fc is None and model.stem_pool_padding == "zero"
    with torch.no_grad():
        _assert_maps(model.double().forward_features(x.double()), want, 1e-12)
    _assert_maps(hk.FusedPPHGNet(rec, backend="torch").forward_features(x), want, FP32_REL_TOL)
    config = json.loads((tmp_path / "rec" / "config.json").read_text())
    config["backbone_config"]["stage_downsample_strides"] = [[2, 1], [2, 1], [2, 1], [2, 1]]
    (tmp_path / "rec" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"stage downsample strides \[\(2, 1\), \(2, 1\), \(2, 1\), \(2, 1\)\] "
                                              r"is not supported"):
        hk.load_model(tmp_path / "rec")


def test_hf_rec_weights_with_a_det_config_is_one_clear_error(tmp_path):
    _ppocrv5_rec_folder(tmp_path / "rec", PPOCRV5ServerDetConfig().to_dict())
    with pytest.raises(CheckpointError, match=r"config.json does not describe these weights(.|\n)*"
                                              r"stages.0.downsample.conv.weight: config absent"):
        hk.load_model(tmp_path / "rec")


def test_hf_config_not_matching_weights_or_unsupported_is_refused(tmp_path):
    theirs = _hf_backbone(65)
    theirs.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "stage_num_blocks": [1, 1, 3, 1]}))
    with pytest.raises(CheckpointError, match="config.json does not describe these weights"):
        hk.load_model(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(CheckpointError, match="Hugging Face transformers HGNetV2 with hidden_act='gelu'"):
        hk.load_model(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="hidden_act='gelu'"):
        hk.FusedPPHGNet(_hf_backbone(65, hidden_act="gelu"))


# ---- ultralytics ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rtdetr_l():
    """RT-DETR l (B4 backbone) with random weights and statistics and a random eps in every BN."""
    model = randomize(RTDETRDetectionModel("rtdetr-l.yaml", nc=3, verbose=False).eval(), seed=66)
    g = torch.Generator().manual_seed(67)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = float(10 ** (-5 + 3 * torch.rand(1, generator=g)))
    return model


def _ultralytics_maps(model, x, stage_indices):
    """The four stage maps, running ultralytics' own layers in its index order."""
    maps, x = [], x.double()
    with torch.no_grad():
        for layer in copy.deepcopy(model.model[:max(stage_indices) + 1]).double():  # the backbone's layers only
            x = layer(x)
            maps.append(x)
    return [maps[i] for i in stage_indices]


L_STAGES = (1, 3, 7, 9)


def test_ultralytics_module_carries_every_bn_eps(rtdetr_l):
    x = torch.randn(1, 3, 64, 96)
    want = _ultralytics_maps(rtdetr_l, x, L_STAGES)
    ours = hk.load_model(rtdetr_l)
    assert ours.config.name == "b4" and ours.stem_pool_padding == "zero"
    assert ours.stem.stem1.bn.eps == rtdetr_l.model[0].stem1.bn.eps != 1e-3
    with torch.no_grad():
        _assert_maps(ours.double().forward_features(x.double()), want, 1e-12)
    fused = hk.FusedPPHGNet(rtdetr_l, backend="torch", out_indices=(1, 2, 3))
    _assert_maps(fused.forward_features(x), want[1:], FP32_REL_TOL)


def test_ultralytics_state_dict_uses_its_eps_of_1e3(rtdetr_l, tmp_path):
    model = copy.deepcopy(rtdetr_l)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3  # what ultralytics' initialize_weights gives every BN
    x = torch.randn(1, 3, 64, 64)
    want = _ultralytics_maps(model, x, L_STAGES)
    torch.save(model.state_dict(), tmp_path / "rtdetr_l_state.pt")
    ours = hk.load_model(tmp_path / "rtdetr_l_state.pt")
    assert {m.eps for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    with torch.no_grad():
        got = ours.double().forward_features(x.double())
        _assert_maps(got, want, 1e-12)
        for m in ours.modules():  # a key-only conversion: PyTorch's default eps
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-5
        assert relative_error(ours.forward_features(x.double())[-1], want[-1]) > 1e-4


def test_ultralytics_pre_fused_model_loads_exactly(rtdetr_l, tmp_path):
    model = copy.deepcopy(rtdetr_l).fuse(verbose=False)
    assert not hasattr(model.model[0].stem1, "bn") and model.model[0].stem1.conv.bias is not None
    x = torch.randn(1, 3, 64, 64)
    want = _ultralytics_maps(model, x, L_STAGES)
    torch.save(model.state_dict(), tmp_path / "fused.pt")
    ours = hk.load_model(model)
    assert_same_model(hk.load_model(tmp_path / "fused.pt"), ours)  # the file loads as the module does
    with torch.no_grad():
        _assert_maps(ours.double().forward_features(x.double()), want, 1e-12)


def test_ultralytics_half_precision_is_refused(rtdetr_l, tmp_path):
    half = copy.deepcopy(rtdetr_l).half()
    with pytest.raises(ValueError, match="ultralytics model in half precision"):
        hk.FusedPPHGNet(half)
    torch.save(half.state_dict(), tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="ultralytics model in half precision"):
        hk.load_model(tmp_path / "half.pt")


def test_ultralytics_pickled_checkpoint_says_what_it_is(rtdetr_l, tmp_path):
    torch.save({"model": rtdetr_l, "epoch": 3}, tmp_path / "rtdetr-l.pt")  # what ultralytics' trainer writes
    with pytest.raises(CheckpointError, match="an ultralytics checkpoint.*RTDETR"):
        hk.load_model(tmp_path / "rtdetr-l.pt")


def test_ultralytics_rtdetr_x_wrapper_is_b5():
    from ultralytics import RTDETR
    wrapper = RTDETR("rtdetr-x.yaml")
    randomize(wrapper.model.eval(), seed=68)
    x = torch.randn(1, 3, 64, 64)
    want = _ultralytics_maps(wrapper.model, x, (1, 4, 10, 13))
    fused = hk.FusedPPHGNet(wrapper, backend="torch")
    assert fused.config.name == "b5"
    _assert_maps(fused.forward_features(x), want, FP32_REL_TOL)


@pytest.fixture(scope="module")
def rtdetr_l_input_and_float64_stage4(rtdetr_l):
    """An input and RT-DETR l's float64 last stage map, shared by both low-precision dtypes."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(71))
    return x, _ultralytics_maps(rtdetr_l, x, L_STAGES)[-1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_ultralytics_low_precision_within_twice_eagers_error(rtdetr_l, rtdetr_l_input_and_float64_stage4, dtype):
    x, exact = rtdetr_l_input_and_float64_stage4
    eager = _ultralytics_maps_in(rtdetr_l, x, dtype)
    fused = hk.FusedPPHGNet(rtdetr_l, backend="torch", dtype=dtype)
    assert relative_error(fused.forward_features(x)[-1], exact) <= tolerance(dtype, relative_error(eager, exact))


def _ultralytics_maps_in(model, x, dtype):
    with torch.no_grad():
        x = x.to(dtype)
        for layer in copy.deepcopy(model.model[:L_STAGES[-1] + 1]).to(dtype):
            x = layer(x)
    return x


# ---- timm features_only and other frameworks' BN eps --------------------------------------------------

def test_timm_features_only_state_dict_loads_as_the_backbone():
    theirs = randomize(timm.create_model("hgnetv2_b0", features_only=True).eval(), seed=69)
    assert any(k.startswith("stages_0.") for k in theirs.state_dict())
    x = torch.randn(1, 3, 64, 80)
    ours = hk.load_model(theirs.state_dict())
    assert ours.config.name == "b0" and ours.fc is None and ours.stem_pool_padding == "zero"
    with torch.no_grad():
        _assert_maps(ours.double().forward_features(x.double()), copy.deepcopy(theirs).double()(x.double()), 1e-12)


@pytest.mark.parametrize("name, out_indices", [("hgnetv2_b0", (1, 3)), ("hgnet_tiny", None)])
def test_fused_timm_features_only_module_returns_its_maps(name, out_indices):
    """``FusedPPHGNet(features_only module).forward_features`` is the module's own list of maps: its
    ``out_indices`` (timm's default: every stage), in order."""
    options = {} if out_indices is None else {"out_indices": out_indices}
    theirs = randomize(timm.create_model(name, features_only=True, **options).eval(), seed=72)
    fused = hk.FusedPPHGNet(theirs, backend="torch")
    assert fused.out_indices == (out_indices or (0, 1, 2, 3)) == tuple(theirs.feature_info.out_indices)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        want = copy.deepcopy(theirs).double()(x.double())
        got = fused.forward_features(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and relative_error(g, w) <= FP32_REL_TOL
    assert hk.FusedPPHGNet(theirs, backend="torch", out_indices=(2,)).out_indices == (2,)  # asked for: as asked


def test_timm_features_only_modules_that_cannot_be_fused_are_refused_by_name():
    truncated = timm.create_model("hgnetv2_b0", features_only=True, out_indices=(0, 1)).eval()
    with pytest.raises(ValueError, match=r"holding stages \[0, 1\] .*out_indices ending at 3"):
        hk.FusedPPHGNet(truncated)
    as_dict = timm.create_model("hgnetv2_b0", features_only=True, feature_cls="dict").eval()
    with pytest.raises(ValueError, match="class FeatureDictNet is not supported: create it with the default"):
        hk.FusedPPHGNet(as_dict)
    with pytest.raises(ValueError, match="eval mode"):
        hk.FusedPPHGNet(timm.create_model("hgnetv2_b0", features_only=True).train())


def test_a_timm_modules_bn_eps_is_honoured():
    theirs = randomize(timm.create_model("hgnet_tiny", num_classes=5).eval(), seed=70)
    for i, m in enumerate(m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        m.eps = 1e-3 if i % 2 else 1e-2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = copy.deepcopy(theirs).double()(x.double())
        assert relative_error(hk.load_model(theirs).double()(x.double()), want) <= 1e-12
