"""``python -m hgnet_kernels tune``: the one tuner of both kernel families. Without a GPU it lists
(``--dry-run``) every layer of every model and the candidates it would time, and refuses the real
run naming the missing GPU; its tuning loop runs here through Triton's interpreter and the CUDA
emulator, into a file the library reads back."""
import json
import os
import shutil
import time

import pytest
import torch

from hgnet_kernels import cli, configs, tune
from hgnet_kernels.__main__ import main
from hgnet_kernels.kernels.cuda.ops import mma_k_step, mma_tiles
from hgnet_kernels.models import MODEL_NAMES
from hgnet_kernels.shapes import conv_shapes

BUCKET_BATCHES = [timed_at for _, _, timed_at in configs.BATCH_BUCKETS.values()]


def _cpu_timer(fn):
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1e3, result


@pytest.mark.parametrize("family", ["triton", "cuda"])
def test_dry_run_lists_every_layer_of_every_model_and_writes_nothing(family, tmp_path, monkeypatch, capsys):
    # The layers expected are conv_shapes' answers to the dry run's own calls, recorded as it makes
    # them, not computed a second time by the same function (building every model's plan costs ~6 s
    # of CPU): that it asks for every model at 224 with the family's kinds is asserted.
    answers = {}

    def recording(model, size, kinds):
        answers[model, size, kinds] = conv_shapes(model, size, kinds)
        return answers[model, size, kinds]
    monkeypatch.setattr(tune, "conv_shapes", recording)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert main(["tune", "--family", family, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert sorted(answers) == sorted((model, 224, tune.TUNED_KINDS[family]) for model in MODEL_NAMES)
    for model in MODEL_NAMES:  # v1 and v2: PP-HGNetV2 could not be tuned before (issue #20)
        for shape in answers[model, 224, tune.TUNED_KINDS[family]]:
            if shape.kind not in ("conv", "aggregation"):
                continue
            hw = shape.h_out * shape.w_out
            for dtype in (torch.float16, torch.bfloat16, torch.float32):
                for batch in BUCKET_BATCHES:
                    key = configs.conv_key(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype,
                                           shape.padding, batch)
                    assert f" conv_bn_act     {key} " in listed, (model, shape)
    assert "_p0101_" in listed  # the v2 stem's asymmetric "SAME" padding is part of its key
    ops = {"triton": ["conv_bn_act", "depthwise_conv", "ese_gate", "max_pool", "scale_residual"],
           "cuda": ["conv_bn_act"]}[family]
    for op in ops:
        assert f"\n{op} float16: up to " in listed and f"\n  {op} " in listed
    if family == "cuda":  # every instantiated tile × split-K is a candidate
        assert f"{list(mma_tiles(torch.float16, 'cpu'))} × SPLIT_K [1, 2, 4, 8, 16]" in listed
    else:
        assert "BLOCK_M 16/32/64/128; BLOCK_N 32/64/128; SPLIT_K 1/2/4/8/16" in listed
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU answers")
@pytest.mark.parametrize("family", ["triton", "cuda"])
def test_the_real_run_is_refused_without_a_gpu(family, tmp_path, capsys):
    assert main(["tune", "--family", family, "--models", "b0", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "CUDA GPU" in error and "torch.cuda.is_available() is False" in error and "--dry-run" in error
    assert len(error.splitlines()) == 1 and os.listdir(tmp_path) == []


def test_bad_arguments_say_what_is_wrong(capsys):
    assert main(["tune", "--family", "cuda", "--dry-run", "--ops", "max_pool"]) == 2
    assert "--family cuda has no tuned configs for max_pool; it tunes conv_bn_act" in capsys.readouterr().err
    assert main(["tune", "--family", "triton", "--dry-run", "--commit"]) == 2
    assert "--dry-run times nothing and writes nothing" in capsys.readouterr().err
    assert main(["tune", "--dry-run"]) == 2  # the family is required
    assert "--family" in capsys.readouterr().err


def test_the_committed_directory_is_written_only_when_asked(tmp_path, monkeypatch):
    def args(*extra):
        parser = cli.Parser(prog="tune")
        tune.add_arguments(parser)
        return parser.parse_args(["--family", "cuda", *extra])
    with pytest.raises(cli.UserError, match="pass --commit"):
        tune.output_path(args("--out", configs.CONFIG_DIR), "sm90")
    with pytest.raises(cli.UserError, match="drop --out"):
        tune.output_path(args("--commit", "--out", str(tmp_path)), "sm90")
    assert tune.output_path(args("--commit"), "sm90") == os.path.join(os.path.abspath(configs.CONFIG_DIR),
                                                                     "cuda_sm90.json")
    monkeypatch.setenv("OUT", str(tmp_path))
    assert tune.output_path(args(), "sm80") == os.path.join(str(tmp_path), "cuda_sm80.json")


def test_search_discards_a_faster_config_with_a_wrong_result():
    reference = torch.ones(8)
    results = {1: (5.0, reference), 2: (1.0, reference * 2), 4: (3.0, reference)}  # SPLIT_K: (ms, output)
    calls = []

    def run(cfg):
        calls.append(cfg["SPLIT_K"])
        return results[cfg["SPLIT_K"]][1]

    def timed(fn):
        out = fn()
        return results[calls[-1]][0], out
    logged = []
    best_ms, best = tune.search(run, {"SPLIT_K": 1}, 5.0, reference, torch.float32,
                                (("SPLIT_K", ({"SPLIT_K": 2}, {"SPLIT_K": 4})),), timed, logged.append)
    assert (best_ms, best) == (3.0, {"SPLIT_K": 4}) and calls == [2, 4]
    assert logged == ["    {'SPLIT_K': 2}: wrong result, discarded"]


@pytest.mark.parametrize("family, dtype", [("triton", torch.float32), ("cuda", torch.float16)])
def test_tuning_loop_writes_entries_the_library_reads(family, dtype, tmp_path, monkeypatch):
    """The loop the GPU run makes, on the CPU (interpreter / emulator, wall-clock timing) for
    PP-HGNetV2 B0's stem conv at 32×32, over a one-candidate walk to keep it short."""
    found = tune.cases(family, ["b0"], [dtype], [1], 32, ["conv_bn_act"], "sm90", configs.arch_sms("sm90"))[:1]
    shape, baseline = found[0].shape, found[0].baseline
    split = {**baseline, "SPLIT_K": 2}
    monkeypatch.setattr(tune, "axes", lambda *_: (("SPLIT_K", ({"SPLIT_K": 2},)),))
    table = {"conv_bn_act": {"k1s1_cin8_cout8_hw64_float16_b1": {"SPLIT_K": 1}}}  # an entry already there stays
    won = tune.tune_cases(family, found, torch.device("cpu"), _cpu_timer, table, time.time() + 600,
                          min_gain=-10.0, log=lambda text: None)  # keep whichever of the two wins
    assert won == 1 and len(table["conv_bn_act"]) == 2
    entry = table["conv_bn_act"][found[0].key]
    assert entry["_us"] > 0 and entry["_heuristic_us"] > 0
    written = {k: v for k, v in entry.items() if not k.startswith("_")}
    assert written in (baseline, split)
    tune.write_table(str(tmp_path / f"{family}_sm90.json"), table, {"family": family})
    shutil.copy(os.path.join(configs.CONFIG_DIR, "devices.json"), tmp_path)
    monkeypatch.setattr(configs, "CONFIG_DIR", str(tmp_path))
    hw = shape.h_out * shape.w_out
    key = configs.conv_key(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, shape.padding)
    assert configs.tuned("conv_bn_act", key, "sm90", 1, family=family) == written  # found under the library's key
    if family == "triton":
        resolved = configs.conv_config(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, "sm90",
                                       batch=1, padding=shape.padding)
    else:
        resolved = configs.cuda_conv_config(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, "sm90",
                                            batch=1, padding=shape.padding, tiles=mma_tiles(dtype, "cpu"),
                                            k_step=mma_k_step("cpu"))
    assert resolved == written
    assert json.loads((tmp_path / f"{family}_sm90.json").read_text())["_meta"] == {"family": family}
