import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.checkpoints import CheckpointError
from hgnet_kernels.models import PPHGNetConfig, StageConfig
from hgnet_kernels.weights import model_to_load, read_checkpoint

from helpers import randomize, rel_err

KEYS_FILE = Path(__file__).with_name("data") / "paddle_pphgnet_tiny_keys.txt"


def paddle_state_dict(model: hk.PPHGNet) -> dict:
    """What paddle.save(model.state_dict()) of PaddleClas's PPHGNet writes, built from our model."""
    p = model.config.dropout_prob
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("bn.running_mean", "bn._mean").replace("bn.running_var", "bn._variance")
        array = value.detach().numpy().astype(np.float32)
        if key == "fc.weight":  # Paddle: [in, out], and its dropout scales by (1-p) in inference
            array = np.ascontiguousarray(array.T / (1.0 - p))
        out[key] = array
    out["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(out)}
    return out


def write_pdparams(path, state):
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, rtol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=0, msg=k)


def test_paddle_layout_matches_real_paddle_key_list():
    expected = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, dtype, shape = line.split(" ", 2)
            expected[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    written = {k: v.shape for k, v in paddle_state_dict(hk.PPHGNet("tiny")).items()
               if k != "StructuredToParameterName@@"}
    assert written == expected


# base's form (stages of 2 and 3 blocks, 7 layers a block) and its dropout of 0.2, whose (1 - p)
# Paddle's eval logits carry, at narrow widths: a full-width base costs ~6 s of initialising and
# pickling 280 MB. Paddle's names follow the same rules at every size and width (tiny's are checked
# against real Paddle's key list above).
NARROW_BASE = PPHGNetConfig("narrow_base", (8, 8, 16), (
    StageConfig(16, 8, 24, 1, False), StageConfig(24, 12, 40, 2, True), StageConfig(40, 12, 48, 3, True),
    StageConfig(48, 16, 56, 2, True)), layer_num=7, dropout_prob=0.2)


@pytest.mark.parametrize("size", ["tiny", NARROW_BASE], ids=["tiny", "narrow_base"])
def test_pdparams_round_trip(tmp_path, size):
    source = randomize(hk.PPHGNet(size), seed=2)
    path = tmp_path / "model.pdparams"
    paddle = paddle_state_dict(source)
    write_pdparams(path, paddle)
    loaded = hk.PPHGNet(size)
    hk.load_weights(loaded, path)
    assert_same_weights(loaded.eval(), source, rtol=1e-6)
    # Paddle's eval logits include its (1 - p) dropout scale; our loader folds it into fc.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = source.forward_features(x)[-1]
        hidden = torch.relu(source.last_conv(feats.mean((2, 3), keepdim=True))).flatten(1)
        paddle_fc = torch.from_numpy(paddle["fc.weight"])
        paddle_logits = (1 - source.config.dropout_prob) * hidden @ paddle_fc + source.fc.bias
        assert rel_err(loaded(x), paddle_logits) <= 1e-5


def test_format_is_detected_from_content_not_suffix(tmp_path):
    source = randomize(hk.PPHGNet("tiny"), seed=3)
    path = tmp_path / "weights.pt"  # a Paddle pickle behind a torch suffix
    write_pdparams(path, paddle_state_dict(source))
    assert_same_weights(hk.pphgnet_tiny(weights=str(path)), source, rtol=1e-6)


def test_paddle_reader_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"stem.0.conv.weight": Path("x")}, f, protocol=4)
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(path)


def test_our_torch_save_and_safetensors(tmp_path):
    source = randomize(hk.PPHGNet("tiny"), seed=4)
    torch.save(source.state_dict(), tmp_path / "ours.pth")
    torch.save({"epoch": 3, "state_dict": source.state_dict()}, tmp_path / "wrapped.ckpt")
    assert_same_weights(hk.pphgnet_tiny(weights=tmp_path / "ours.pth"), source)
    assert_same_weights(hk.pphgnet_tiny(weights=tmp_path / "wrapped.ckpt"), source)
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()},
                                str(tmp_path / "ours.safetensors"))
    assert_same_weights(hk.pphgnet_tiny(weights=tmp_path / "ours.safetensors"), source)


def test_timm_state_dict_file_and_module(tmp_path):
    timm = pytest.importorskip("timm")
    theirs = randomize(timm.create_model("hgnet_small", pretrained=False), seed=5)
    torch.save(theirs.state_dict(), tmp_path / "timm.pth")
    from_file = hk.pphgnet_small(weights=tmp_path / "timm.pth")
    from_module = hk.load_weights(hk.PPHGNet("small"), theirs).eval()
    assert_same_weights(from_file, from_module)
    assert from_file.stem[0].conv.weight.data_ptr() != theirs.stem.stem[0].conv.weight.data_ptr()
    torch.testing.assert_close(from_file.stages[1].blocks[0].att.conv.bias,
                               theirs.stages[1].blocks[0].aggregation[1].conv.bias)


def test_load_model_infers_size_and_classes(tmp_path):
    source = randomize(hk.PPHGNet("small", num_classes=7), seed=6)
    write_pdparams(tmp_path / "s.pdparams", paddle_state_dict(source))
    model = hk.load_model(tmp_path / "s.pdparams")
    assert model.config.name == "small" and model.num_classes == 7
    assert_same_weights(model, source, rtol=1e-6)


def test_loading_builds_without_random_initialisation(tmp_path):
    """load_model and the builders given weights skip the random initialisation that the load
    overwrites (most of the cost of building a model): the global RNG is not drawn from, and a
    model to load starts as NaN (BN step counters at 0), so an entry a load missed would show."""
    source = randomize(hk.PPHGNetV2("b0", num_classes=5), seed=7)
    torch.save(source.state_dict(), tmp_path / "b0.pth")
    rng = torch.get_rng_state()
    loaded = [hk.load_model(tmp_path / "b0.pth"), hk.pphgnetv2_b0(weights=tmp_path / "b0.pth", num_classes=5)]
    assert torch.equal(torch.get_rng_state(), rng)
    for model in loaded:
        assert_same_weights(model, source)
    for key, value in model_to_load(lambda: hk.PPHGNet("tiny")).state_dict().items():
        assert (value.isnan() if value.is_floating_point() else value == 0).all(), key


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed after a failed load"


@pytest.mark.parametrize("builder,held,held_builder", [
    (hk.pphgnet_tiny, lambda: hk.pphgnetv2_b0(), "pphgnetv2_b0"),
    (hk.pphgnet_tiny, lambda: hk.pphgnet_small(), "pphgnet_small"),
    (hk.pphgnetv2_b4, lambda: hk.PPHGNetV2("b0", num_classes=0, class_expand=None), "pphgnetv2_b0"),
], ids=["v2-file-into-v1", "small-into-tiny", "b0-backbone-into-b4"])
def test_a_checkpoint_of_another_model_is_named_with_the_call_that_loads_it(tmp_path, builder, held, held_builder):
    source = held()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        builder(weights=path)
    msg = str(info.value)
    label = hk.models.model_label(source)
    assert f"holds a {label}" in msg and f"load_model({str(path)!r})" in msg and f"{held_builder}(weights=" in msg
    assert "\n" not in msg and len(msg.replace(str(path), "PATH")) < 300  # one short line, whatever the path
    model = hk.load_model(path)  # what the message says to call
    assert hk.models.model_label(model) == label


def test_long_problem_lists_name_a_few_keys_and_count_the_rest(tmp_path):
    state = {k: v for k, v in hk.PPHGNet("tiny").state_dict().items() if not k.startswith("stages.3.")}
    state["stem.0.conv.weight"] = torch.zeros(48, 4, 3, 3)
    state.update({f"extra.{i}": torch.zeros(1) for i in range(9)})
    torch.save(state, tmp_path / "partial.pth")
    model = hk.PPHGNet("tiny")
    before = snapshot(model)
    with pytest.raises(CheckpointError) as info:
        hk.load_weights(model, tmp_path / "partial.pth")
    msg = str(info.value)
    missing = sum(1 for k in model.state_dict() if k.startswith("stages.3.") and not k.endswith("num_batches_tracked"))
    assert f"{missing} missing: stages.3." in msg and f"({missing - 5} more)" in msg
    assert "9 unexpected: extra.0" in msg and "(4 more)" in msg
    assert "stem.0.conv.weight: shape (48, 4, 3, 3)" in msg and "in_channels" in msg
    assert len(msg.splitlines()) <= 6 and len(msg) < 1500
    assert_untouched(model, before)


def test_missing_and_nan_entries_are_reported_together(tmp_path):
    state = hk.PPHGNet("tiny").state_dict()
    del state["fc.bias"]
    bad = {"stem.1.conv.weight": float("nan"), "stages.0.blocks.0.att.conv.bias": float("inf"),
           "stem.2.bn.running_var": -float("inf")}
    for key, value in bad.items():
        state[key] = state[key].clone()
        state[key].view(-1)[3] = value
    state["stages.1.blocks.0.att.conv.bias"] = state["stages.1.blocks.0.att.conv.bias"].half()  # fp16 accepted
    torch.save(state, tmp_path / "bad.pth")
    model = hk.PPHGNet("tiny")
    before = snapshot(model)
    with pytest.raises(CheckpointError) as info:
        hk.load_weights(model, tmp_path / "bad.pth")
    assert "1 missing: fc.bias" in str(info.value)
    assert [line.split(":")[0].strip() for line in str(info.value).splitlines() if "contains NaN or Inf" in line] \
        == sorted(bad), str(info.value)
    assert_untouched(model, before)


def test_truncated_and_unknown_files(tmp_path):
    torch.save(hk.PPHGNet("tiny").state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "tiny.bin").write_bytes(b"abc")
    for name in ("cut.pth", "noise.bin", "tiny.bin"):
        model = hk.PPHGNet("tiny")
        before = snapshot(model)
        with pytest.raises(CheckpointError, match="cannot read|not a checkpoint"):
            hk.load_weights(model, tmp_path / name)
        assert_untouched(model, before)


def test_missing_file_says_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        hk.pphgnet_tiny(weights=tmp_path / "nope.pdparams")


def test_fused_model_straight_from_a_paddle_checkpoint(tmp_path):
    source = randomize(hk.PPHGNet("tiny", num_classes=5), seed=7)
    write_pdparams(tmp_path / "t.pdparams", paddle_state_dict(source))
    fused = hk.FusedPPHGNet.from_checkpoint(tmp_path / "t.pdparams", backend="torch")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(fused(x), source(x)) <= 1e-5


def test_a_directory_is_not_reported_as_missing(tmp_path):
    (tmp_path / "PPHGNet_tiny_pretrained.pdparams").write_bytes(b"x" * 16)
    with pytest.raises(IsADirectoryError, match="is a directory.*PPHGNet_tiny_pretrained.pdparams"):
        hk.pphgnet_tiny(weights=tmp_path)


def test_truncated_pdparams_says_truncated_without_torch_advice(tmp_path):
    path = tmp_path / "cut.pdparams"
    import io
    buffer = io.BytesIO()
    pickle.dump(paddle_state_dict(hk.PPHGNet("tiny")), buffer, protocol=4)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "PaddleClas .pdparams" in message and "truncated" in message
    assert "weights_only" not in message


def test_torch_files_with_objects_are_refused_without_unsafe_advice(tmp_path):
    torch.save({"state_dict": hk.PPHGNet("tiny").state_dict(), "optimizer": Path("not a tensor")},
               tmp_path / "objects.pth")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "objects.pth")
    assert "never unpickles" in str(info.value) and "weights_only=False" not in str(info.value)


def test_legacy_torch_save_format(tmp_path):
    source = randomize(hk.PPHGNet("tiny"), seed=8)
    torch.save(source.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert_same_weights(hk.pphgnet_tiny(weights=tmp_path / "legacy.pth"), source)
