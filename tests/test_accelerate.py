"""``hgnet_kernels.accelerate``: whole pipelines of the real frameworks (transformers D-FINE,
PP-OCRv5 server rec and HGNetV2 classifier, ultralytics RT-DETR) with their backbones swapped in
place; the whole model's outputs equal the eager model's within fp32 tolerance, on every backend
(triton and cuda through the interpreter / emulator on a reduced transformers backbone); refusals
change nothing.

A detector selects its queries by a top-k over encoder scores, whose order fp32 rounding can swap
between near-equal scores; the decoder treats queries as a set (attention with positions from
their boxes), so the tests give it every anchor as a query and compare the output rows as a set:
each accelerated row must match a distinct eager row within tolerance."""
import copy

import pytest
import torch
from transformers import (DFineConfig, DFineForObjectDetection, HGNetV2Config, HGNetV2ForImageClassification,
                          PPOCRV5ServerRecConfig, PPOCRV5ServerRecForTextRecognition, PPOCRV5ServerRecModel)
from ultralytics.nn.tasks import RTDETRDetectionModel

import hgnet_kernels as hk
from hgnet_kernels.accelerate import FusedHFBackbone, FusedUltralyticsBackbone, UltralyticsStageTap
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error

from helpers import randomize
from test_interop import HF_B0, STAGES



def _rows_match(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Every row of ``got`` (N, D) is within FP32_REL_TOL (relative to ``want``'s largest value) of
    a distinct row of ``want``."""
    got, want = got.reshape(-1, got.shape[-1]).double(), want.reshape(-1, want.shape[-1]).double()
    dist = torch.cdist(got, want, p=float("inf")) / want.abs().max()
    nearest = dist.argmin(dim=1)
    return len(set(nearest.tolist())) == len(want) and bool((dist.min(dim=1).values <= FP32_REL_TOL).all())


def _dfine(anchors):
    backbone = HGNetV2Config(**HF_B0, out_features=STAGES[1:])
    config = DFineConfig(backbone_config=backbone, d_model=32, encoder_hidden_dim=32, encoder_layers=1,
                         decoder_layers=2, num_queries=anchors, encoder_in_channels=[256, 512, 1024],
                         decoder_in_channels=[32, 32, 32], num_feature_levels=3, decoder_ffn_dim=64,
                         encoder_ffn_dim=64, decoder_n_points=[1, 1, 1], hidden_expansion=0.34)
    return randomize(DFineForObjectDetection(config).eval(), seed=80)


@pytest.mark.parametrize("backend,h,w", [("torch", 64, 96), ("triton", 32, 64), ("cuda", 32, 64)])
def test_hf_dfine_whole_model_equals_eager(backend, h, w):
    """Smaller images through Triton's interpreter and the CUDA emulator (slow on the CPU). The
    triton case is this file's one run of Triton's interpreter (the reduced rec model below takes
    the CUDA emulator)."""
    detector = _dfine(anchors=(h // 8) * (w // 8) + (h // 16) * (w // 16) + (h // 32) * (w // 32))
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        want = detector(pixel_values=x)
    fast = hk.accelerate(copy.deepcopy(detector), backend=backend)
    assert isinstance(fast.model.backbone.model, FusedHFBackbone)
    assert fast.model.backbone.model.fused.out_indices == (1, 2, 3)
    with torch.no_grad():
        got = fast(pixel_values=x)
    assert _rows_match(torch.cat([got.logits, got.pred_boxes], -1), torch.cat([want.logits, want.pred_boxes], -1))


def test_hf_classifier_in_place_equals_eager():
    model = randomize(HGNetV2ForImageClassification(HGNetV2Config(**HF_B0, num_labels=5)).eval(), seed=81)
    x = torch.randn(2, 3, 61, 77)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double()).logits
    assert hk.accelerate(model, backend="torch") is model
    with torch.no_grad():
        assert relative_error(model(x).logits, want) <= FP32_REL_TOL
        assert relative_error(model(x, return_dict=False)[0], want) <= FP32_REL_TOL
    with pytest.raises(ValueError, match="output_hidden_states"):
        model(x, output_hidden_states=True)


def test_a_bare_hf_backbone_is_returned_fused():
    from transformers import HGNetV2Backbone
    backbone = randomize(HGNetV2Backbone(HGNetV2Config(**HF_B0, out_features=["stage2", "stage4"])).eval(), seed=82)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = copy.deepcopy(backbone).double()(x.double()).feature_maps
    fast = hk.accelerate(backbone, backend="torch")
    got = fast(x)
    assert isinstance(got.feature_maps, tuple) and len(got.feature_maps) == 2
    assert all(relative_error(g, w) <= FP32_REL_TOL for g, w in zip(got.feature_maps, want))
    assert all(relative_error(g, w) <= FP32_REL_TOL for g, w in zip(fast(x, return_dict=False)[0], want))


def test_hf_ppocrv5_server_rec_whole_model_equals_eager():
    """PP-OCRv5 server rec at full width (B4 text_rec) on 48×100 crops: its PPOCRV5ServerRecModel
    reads the last of the backbone's four feature maps and pools it (3, 2) for the SVTR neck and CTC
    head, whose softmax is the model's output."""
    rec = randomize(PPOCRV5ServerRecForTextRecognition(PPOCRV5ServerRecConfig(head_out_channels=50)).eval(), seed=89)
    x = torch.randn(1, 3, 48, 100)
    with torch.no_grad():
        reference = copy.deepcopy(rec).double()
        want_maps, want = _backbone_maps_and_output(reference, x.double())
    assert hk.accelerate(rec, backend="torch") is rec
    assert isinstance(rec.model.backbone, FusedHFBackbone) and rec.model.backbone.fused.out_indices == (0, 1, 2, 3)
    with torch.no_grad():
        maps, got = _backbone_maps_and_output(rec, x)
        got_tuple = rec(x, return_dict=False)[0]
    assert isinstance(maps, tuple) and [m.shape for m in maps] == [m.shape for m in want_maps]
    assert all(m.dtype == torch.float32 and relative_error(m, w) <= FP32_REL_TOL for m, w in zip(maps, want_maps))
    assert got.shape == want.shape == (1, 12, 50)
    assert relative_error(got, want) <= FP32_REL_TOL and relative_error(got_tuple, want) <= FP32_REL_TOL


def _backbone_maps_and_output(rec, x):
    """The feature maps ``rec.model.backbone`` hands the rec model, and the model's output, from one
    pass of the whole model (not an extra pass of its backbone)."""
    seen = []
    hook = rec.model.backbone.register_forward_hook(lambda module, args, output: seen.append(output.feature_maps))
    try:
        output = rec(x).last_hidden_state
    finally:
        hook.remove()
    assert len(seen) == 1
    return seen[0], output


def _reduced_rec_config(stage_downsample_strides=((2, 1), (1, 2), (2, 1), (2, 1))):
    """PP-OCRv5 server rec's layout (stem3 at stride 1, every stage downsampled) at B0's widths,
    with a one-block SVTR neck: small enough for the Triton interpreter."""
    backbone = HGNetV2Config(**{**HF_B0, "stem_strides": [2, 1, 1, 1, 1], "stage_downsample": [True] * 4,
                                "stage_downsample_strides": [list(s) for s in stage_downsample_strides],
                                "out_features": STAGES})
    return PPOCRV5ServerRecConfig(backbone_config=backbone, hidden_size=16, num_attention_heads=2, depth=1,
                                  head_out_channels=11)


def test_hf_ppocrv5_server_rec_model_through_a_kernel_backend_equals_eager():
    """Through the CUDA emulator, not Triton's interpreter (~13 s of CPU there): the rec layout's
    strides through Triton's kernels are test_text_rec.py's test_fused_equals_paddleocr[*-triton]
    (the v4 and v5 rec layouts), and accelerate(backend="triton") on a transformers model is the
    D-FINE test's."""
    model = randomize(PPOCRV5ServerRecModel(_reduced_rec_config()).eval(), seed=90)
    x = torch.randn(1, 3, 48, 41)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double()).last_hidden_state
    assert hk.accelerate(model, backend="cuda") is model
    assert isinstance(model.backbone, FusedHFBackbone)
    with torch.no_grad():
        got = model(x).last_hidden_state
    assert got.shape == want.shape == (1, 1024, 1, 5) and relative_error(got, want) <= FP32_REL_TOL


def test_hf_rec_that_cannot_be_swapped_is_refused_naming_it_and_nothing_changes():
    """A rec model with strides no PP-OCR model has, after one that could be swapped: refused naming
    where its backbone is, and neither is swapped."""
    pipeline = torch.nn.ModuleDict({
        "ok": PPOCRV5ServerRecForTextRecognition(_reduced_rec_config()).eval(),
        "odd": PPOCRV5ServerRecForTextRecognition(_reduced_rec_config([(2, 1)] * 4)).eval()})
    with pytest.raises(ValueError, match=r"^odd\.model\.backbone: .*stage downsample strides "
                                         r"\[\(2, 1\), \(2, 1\), \(2, 1\), \(2, 1\)\] is not supported"):
        hk.accelerate(pipeline, backend="torch")
    assert [type(rec.model.backbone).__name__ for rec in pipeline.values()] == ["HGNetV2Backbone"] * 2


@pytest.fixture(scope="module")
def rtdetr_l():
    model = randomize(RTDETRDetectionModel("rtdetr-l.yaml", nc=3, verbose=False).eval(), seed=83)
    model.model[-1].num_queries = 8 * 8 + 4 * 4 + 2 * 2  # every anchor of a 64×64 image (see the docstring)
    return model


def test_ultralytics_rtdetr_whole_model_equals_eager(rtdetr_l):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = rtdetr_l(x)
    fast = hk.accelerate(copy.deepcopy(rtdetr_l), backend="torch")
    kinds = [type(m) for m in fast.model[:11]]
    assert kinds[0] is FusedUltralyticsBackbone and kinds[1:10] == [UltralyticsStageTap] * 9
    assert fast.model[0].fused.out_indices == (1, 2, 3)  # the head reads layers 3, 7 and 9's successor
    with torch.no_grad():
        got = fast(x)
    assert _rows_match(got[0], want[0])
    assert fast.model[0].maps == []  # the stage maps are released once the last backbone layer ran


def test_ultralytics_wrapper_is_found_through_its_model(rtdetr_l):
    from ultralytics import RTDETR
    wrapper = RTDETR("rtdetr-l.yaml")
    wrapper.model = copy.deepcopy(rtdetr_l)
    assert hk.accelerate(wrapper, backend="torch") is wrapper
    assert isinstance(wrapper.model.model[0], FusedUltralyticsBackbone)


def test_refusals_are_atomic_and_name_the_module(rtdetr_l):
    both = torch.nn.ModuleDict({"det": copy.deepcopy(rtdetr_l), "cls": HGNetV2ForImageClassification(
        HGNetV2Config(**HF_B0, hidden_act="gelu")).eval()})
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        hk.accelerate(both, backend="torch")
    assert type(both["det"].model[0]).__name__ == "HGStem"  # the detector found first was not swapped
    inside = copy.deepcopy(rtdetr_l)
    inside.save.append(5)  # something reads a layer inside stage 3
    with pytest.raises(ValueError, match=r"model.5 \(HGBlock\).*inside a stage"):
        hk.accelerate(inside, backend="torch")
    assert type(inside.model[0]).__name__ == "HGStem"
    with pytest.raises(ValueError, match="no PP-HGNet backbone found inside Linear"):
        hk.accelerate(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="out_indices"):
        hk.accelerate(copy.deepcopy(rtdetr_l), out_indices=(1,))


def test_timm_model_and_features_only_inside_a_pipeline():
    import timm
    classifier = randomize(timm.create_model("hgnetv2_b0", num_classes=4).eval(), seed=84)
    features = randomize(timm.create_model("hgnet_tiny", features_only=True, out_indices=(1, 3)).eval(), seed=85)
    pipeline = torch.nn.ModuleDict({"cls": classifier, "feats": features}).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        reference = copy.deepcopy(pipeline).double()
        want_logits, want_last = reference["cls"](x.double()), reference["cls"].forward_features(x.double())
        want_head = reference["cls"].forward_head(want_last)
        want_maps = reference["feats"](x.double())
    assert hk.accelerate(pipeline, backend="torch") is pipeline
    with torch.no_grad():
        assert relative_error(pipeline["cls"](x), want_logits) <= FP32_REL_TOL
        last = pipeline["cls"].forward_features(x)
        assert relative_error(last, want_last) <= FP32_REL_TOL
        assert relative_error(pipeline["cls"].forward_head(last), want_head) <= FP32_REL_TOL
        maps = pipeline["feats"](x)
    assert isinstance(maps, list) and len(maps) == 2
    assert all(relative_error(g, w) <= FP32_REL_TOL for g, w in zip(maps, want_maps))


class _PortDetector(torch.nn.Module):
    """A detector around a torch port's HGNetv2: a 1×1 conv per returned map, as an encoder's input
    projection reads them."""

    def __init__(self, backbone, channels):
        super().__init__()
        self.backbone = backbone
        self.proj = torch.nn.ModuleList(torch.nn.Conv2d(c, 8, 1) for c in channels)

    def forward(self, x):
        return [proj(m) for proj, m in zip(self.proj, self.backbone(x))]


@pytest.mark.parametrize("port, name, return_idx, channels", [("dfine", "B0", [1, 2, 3], (256, 512, 1024)),
                                                                ("rtdetrv2", "L", [0, 2], (128, 1024))])
def test_torch_port_hgnetv2_inside_a_detector_equals_eager(port, name, return_idx, channels):
    """D-FINE's (frozen BNs, LAB, F.pad stem) and RT-DETRv2's (ZeroPad2d stem, BatchNorm2d) HGNetv2,
    rebuilt in tests/torch_port_hgnetv2.py with their names and forward; random BN eps too."""
    from torch_port_hgnetv2 import HGNetv2
    from hgnet_kernels.accelerate import FusedTorchPortHGNetv2
    backbone = HGNetv2(name, use_lab=port == "dfine", return_idx=return_idx, freeze_norm=port == "dfine", port=port)
    detector = randomize(_PortDetector(backbone, channels), seed=87)
    for i, m in enumerate(m for m in detector.modules() if hasattr(m, "running_var")):
        m.eps = (1e-5, 1e-3, 1e-2)[i % 3]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = copy.deepcopy(detector).double()(x.double())
    assert hk.accelerate(detector, backend="torch") is detector
    assert isinstance(detector.backbone, FusedTorchPortHGNetv2)
    assert detector.backbone.fused.out_indices == tuple(return_idx)
    assert detector.backbone.fused.net.stem_pool_zero  # both ports pad the stem pool with zeros
    maps = []  # what the swapped backbone hands the detector, seen during its one forward
    detector.backbone.register_forward_hook(lambda module, args, output: maps.append(output))
    with torch.no_grad():
        got = detector(x)
    assert len(maps) == 1 and isinstance(maps[0], list) and len(got) == len(want) == len(return_idx)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and relative_error(g, w) <= FP32_REL_TOL


def test_torch_port_hgnetv2_that_cannot_be_swapped_is_refused_and_nothing_changes():
    from torch_port_hgnetv2 import HGNetv2
    backbone = randomize(HGNetv2("B0", return_idx=[4]), seed=88)
    pipeline = torch.nn.ModuleDict({"backbone": backbone})
    with pytest.raises(ValueError, match=r"backbone \(torch-port HGNetv2\) has return_idx \[4\]: it returns no stage"):
        hk.accelerate(pipeline)
    backbone.return_idx = [1, 2, 3]
    with pytest.raises(ValueError, match="backbone: FusedPPHGNet folds BatchNorm .* eval"):
        hk.accelerate(pipeline.train())
    assert pipeline["backbone"] is backbone


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_backbone_in_a_float32_pipeline(dtype):
    """The fused backbone computes in ``dtype``; the classifier around it gets the float32 it
    always got, within twice eager's own error at that dtype."""
    from hgnet_kernels.numerics import tolerance
    model = randomize(HGNetV2ForImageClassification(HGNetV2Config(**HF_B0, num_labels=5)).eval(), seed=86)
    x = torch.randn(2, 3, 32, 32)  # the CPU's fp16/bf16 convs are slow: the dtype plumbing is what is checked
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double()).logits
        eager = copy.deepcopy(model).to(dtype)(x.to(dtype)).logits
        hk.accelerate(model, backend="torch", dtype=dtype)
        got = model(x).logits
    assert got.dtype == torch.float32
    assert relative_error(got, exact) <= tolerance(dtype, relative_error(eager, exact))
