import warnings

import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.checkpoints import to_hgnet_kernels_keys

from helpers import randomize, rel_err

timm = pytest.importorskip("timm", reason="timm is a dev dependency: pip install -e '.[dev]'")

SIZES = ["tiny", "small", "base"]
BUILDERS = {"tiny": hk.pphgnet_tiny, "small": hk.pphgnet_small, "base": hk.pphgnet_base}


@pytest.mark.parametrize("size", SIZES)
def test_parameters_and_shapes_match_timm(size):
    with torch.device("meta"):  # shapes and names only: no weights initialised
        ours = hk.PPHGNet(size)
        theirs = timm.create_model(f"hgnet_{size}", pretrained=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    mapped = to_hgnet_kernels_keys(theirs.state_dict(), ours.config.dropout_prob)
    ours_sd = ours.state_dict()
    assert set(mapped) == set(ours_sd)
    for key, value in ours_sd.items():
        assert value.shape == mapped[key].shape, key


# small is left out: the timm key mapping is the same name rules for every size, checked here on
# tiny and base (the most blocks and layers); small's every key and shape is
# test_parameters_and_shapes_match_timm[small]'s, and its timm weights landing in the same places
# from a file and a module test_weights.py::test_timm_state_dict_file_and_module's.
@pytest.mark.parametrize("size", ["tiny", "base"])
def test_logits_match_timm_with_its_random_weights(size):
    theirs = randomize(timm.create_model(f"hgnet_{size}", pretrained=False), seed=1)
    ours = hk.load_weights(hk.PPHGNet(size), theirs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        assert rel_err(ours(x), expected) <= 1e-5
        for a, b in zip(ours.forward_features(x), theirs.forward_intermediates(x, intermediates_only=True)):
            assert a.shape == b.shape and rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("size", SIZES)
def test_forward_features_strides(size):
    with torch.device("meta"):  # PyTorch's own shape rules, without computing a value
        model = BUILDERS[size]()
    cfg = hk.CONFIGS[size]
    with torch.no_grad():
        feats = model.forward_features(torch.empty(1, 3, 96, 64, device="meta"))
    assert [tuple(f.shape) for f in feats] == [
        (1, s.out_channels, 96 // stride, 64 // stride) for s, stride in zip(cfg.stages, (4, 8, 16, 32))]


def test_constructor_is_eval_with_configurable_classes():
    model = hk.pphgnet_tiny(num_classes=10)
    assert not model.training
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_paddle_init_is_kaiming_normal_fan_in():
    torch.manual_seed(3)
    conv = hk.PPHGNet("tiny").stages[3].blocks[0].aggregation_conv.conv
    fan_in = conv.weight[0].numel()
    assert abs(conv.weight.std().item() / (2.0 / fan_in) ** 0.5 - 1) < 0.05


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown PP-HGNet size 'huge'"):
        hk.PPHGNet("huge")


# ---- timm variants: converted exactly, or refused naming the option -----------------------------

TIMM_VARIANTS = [dict(global_pool="max"), dict(global_pool="avgmax"), dict(global_pool="fastavg"),
                 dict(num_classes=0), dict(head_hidden_size=None), dict(head_hidden_size=512, num_classes=7),
                 dict(in_chans=1), dict(drop_rate=0.3, drop_path_rate=0.1)]


@pytest.mark.parametrize("kwargs", TIMM_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_timm_variants_are_converted_exactly(kwargs):
    theirs = randomize(timm.create_model("hgnet_tiny", pretrained=False, **kwargs), seed=31)
    fused = hk.FusedPPHGNet(theirs, backend="torch")
    x = torch.randn(1, kwargs.get("in_chans", 3), 64, 96)  # the options act per image
    with torch.no_grad():
        expected = theirs.double()(x.double())
    got = fused(x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) <= 1e-5
    # the same options survive a trip through a state dict, which does not record the pooling type:
    # load_model takes it, and warns when a classifier's could have been another
    pool = kwargs.get("global_pool", "avg").replace("fast", "")
    rebuilt = hk.load_model(theirs.float().state_dict(), global_pool=pool)
    with torch.no_grad():
        assert rel_err(rebuilt(x), expected) <= 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hk.load_model(theirs.state_dict())
    assert len([w for w in caught if "global_pool" in str(w.message)]) == 1


def test_load_model_global_pool_is_checked():
    theirs = timm.create_model("hgnet_tiny", pretrained=False, global_pool="max").eval()
    with pytest.raises(ValueError, match="global_pool='avg' contradicts the timm model's own 'max'"):
        hk.load_model(theirs, global_pool="avg")
    with pytest.raises(ValueError, match="global_pool='mean' is not supported"):
        hk.load_model(theirs.state_dict(), global_pool="mean")
    assert hk.load_model(theirs).global_pool == "max"


@pytest.mark.parametrize("kwargs,message", [
    (dict(global_pool="", num_classes=0), "global_pool=''"),
    (dict(use_lab=True), "use_lab=True"),
    (dict(features_only=True, feature_cls="dict"), "FeatureDictNet"),
], ids=["no-pool", "use_lab", "features_only-dict"])
def test_unsupported_timm_variants_are_refused_before_any_work(kwargs, message):
    theirs = timm.create_model("hgnet_tiny", pretrained=False, **kwargs).eval()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        hk.FusedPPHGNet(theirs, backend="torch")


def test_fused_timm_model_keeps_its_dtype():
    theirs = randomize(timm.create_model("hgnet_tiny", pretrained=False), seed=32).to(torch.bfloat16)
    fused = hk.FusedPPHGNet(theirs, backend="torch")
    assert fused.dtype == torch.bfloat16 and fused.net.stem[0].weight.dtype == torch.bfloat16


@pytest.mark.gpu
def test_fused_timm_model_lives_on_the_timm_models_device():
    theirs = randomize(timm.create_model("hgnet_tiny", pretrained=False), seed=33).cuda()
    fused = hk.FusedPPHGNet(theirs)
    assert fused.device.type == "cuda"
    x = torch.randn(1, 3, 224, 224, device="cuda")
    with torch.no_grad():
        assert rel_err(fused(x), theirs.double()(x.double())) <= 1e-5
