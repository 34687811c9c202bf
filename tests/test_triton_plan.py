"""Issue #11 without a GPU: the `plan` cost view of the new conv launch (programs per SM, tensor-core
work lost to padding) against the per-image tiling it replaces, launch configs as data keyed by
shape, dtype and batch bucket (the tuner: tests/test_tune.py)."""
import importlib
import json
import os
import shutil

import pytest
import torch

from hgnet_kernels import configs
from hgnet_kernels.kernels import triton as fam
from hgnet_kernels.plan_report import report
from hgnet_kernels.shapes import conv_shapes

from helpers import DEVICE

H100_SMS = 132
# The module (the package's ``conv_bn_act`` attribute is the function of that name).
conv_module = importlib.import_module("hgnet_kernels.kernels.triton.conv_bn_act")


def per_image_tiling(n, hw, c_in, c_out, kernel, dtype):
    """The launch before issue #11 (commit ea12403's configs.conv_config and conv_grid): tiles
    within one image, 64 or 128 pixels, 64 or 128 channels, one K loop per tap, no split."""
    block_k = 16 if c_in <= 16 else (32 if dtype == torch.float32 else 64)
    block_m, block_n = (128 if hw >= 4096 else 64), (128 if c_out >= 128 else 64)
    programs = n * configs.cdiv(hw, block_m) * configs.cdiv(c_out, block_n)
    padded = programs * block_m * block_n * kernel ** 2 * configs.cdiv(c_in, block_k) * block_k
    return programs, padded


def _gemm_rows(batch, dtype=torch.float16):
    rows = [r for r in report("tiny", batch, 224, dtype, "H100") if r.kind.startswith(("conv", "aggregation"))]
    out = []
    for r in rows:
        n, c_in, h, w = map(int, r.input.split(" ")[0].split("×"))
        c_out, ho, wo = map(int, r.output.split(" ")[0].split("×")[1:])
        kernel = int(r.kind.split(" ")[1][0])
        out.append((r, per_image_tiling(n, ho * wo, c_in, c_out, kernel, dtype)))
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_batch1_tiny_on_h100_fills_the_gpu_and_wastes_less_than_per_image_tiles(dtype):
    """Stages 3–4 (s2, s3) at batch 1: every conv and aggregation launches more programs per SM and
    loses no more tensor-core work to padding than the per-image tiling; over each stage, strictly less."""
    for stage in ("s2.", "s3."):
        layers = [(r, old) for r, old in _gemm_rows(1, dtype) if r.name.startswith(stage)]
        assert layers
        useful = padded_new = padded_old = 0
        for r, (old_programs, old_padded) in layers:
            assert r.programs_per_sm > old_programs / H100_SMS, r.name
            assert r.mma_efficiency >= r.macs / old_padded - 1e-12, r.name
            useful += r.macs
            padded_new += r.macs / r.mma_efficiency
            padded_old += old_padded
        assert useful / padded_new > useful / padded_old + 0.05, stage


def test_plan_launch_is_the_launchers_grid(monkeypatch):
    """``plan_report.launch`` and the launcher use the same config and grid functions: the grid the
    launcher passes to the kernel (recorded here) is ``configs.conv_grid`` of the plan's config."""
    launched = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launched.append((self.kernel, grid))
            return lambda *args, **kwargs: None

    monkeypatch.setattr(conv_module, "conv_bn_act_kernel", Recorder("conv"))
    monkeypatch.setattr(conv_module, "split_k_reduce_kernel", Recorder("reduce"))
    for batch in (1, 3, 64):
        for hw, c_in, c_out, kernel in [(7, 192, 192, 3), (14, 1248, 512, 1), (56, 96, 96, 3)]:
            cfg = configs.conv_config(hw * hw, c_in, c_out, kernel, 1, torch.float16, "sm90", batch=batch,
                                      sms=H100_SMS)
            launched.clear()
            x = torch.empty(batch, c_in, hw, hw, dtype=torch.float16, device=DEVICE)
            fam.conv_bn_act(x, torch.empty(kernel, kernel, c_in, c_out, dtype=torch.float16, device=DEVICE),
                            torch.empty(c_out, device=DEVICE), config=cfg)
            tiles, splits = configs.conv_grid(batch, hw * hw, c_in, c_out, kernel, cfg)
            assert launched[0] == ("conv", (tiles, splits))
            if splits > 1:
                assert launched[1] == ("reduce", (configs.cdiv(batch * hw * hw, cfg["BLOCK_M"]),
                                                  configs.cdiv(c_out, cfg["BLOCK_N"])))
            else:
                assert len(launched) == 1
    rows = report("tiny", 1, 224, torch.float16, "H100")
    row = next(r for r in rows if r.name == "s3.b0.l1")
    cfg = configs.conv_config(49, 192, 192, 3, 1, torch.float16, "sm90", batch=1, padding=(1, 1, 1, 1), sms=H100_SMS)
    tiles, splits = configs.conv_grid(1, 49, 192, 192, 3, cfg)
    assert row.programs == tiles * splits and splits > 1
    assert row.mma_efficiency == pytest.approx(49 * 192 * 9 * 192 / configs.conv_padded_macs(1, 49, 192, 192, 3, cfg))


def test_heuristic_depends_on_batch_and_sms():
    small = configs.conv_config(196, 160, 160, 3, 1, torch.float16, "sm90", batch=1, sms=H100_SMS)
    large = configs.conv_config(196, 160, 160, 3, 1, torch.float16, "sm90", batch=256, sms=H100_SMS)
    assert small["SPLIT_K"] > 1 and large["SPLIT_K"] == 1 and large["BLOCK_M"] > small["BLOCK_M"]
    assert configs.conv_config(3136, 3, 48, 3, 2, torch.float16, "sm90", batch=1)["FLAT_K"]  # the stem's 3 channels
    few = configs.conv_config(196, 160, 160, 3, 1, torch.float16, None, batch=1, sms=20)
    assert few["SPLIT_K"] < small["SPLIT_K"]


def test_keys_and_batch_buckets():
    assert [configs.batch_bucket(b) for b in (1, 2, 16, 17, 64, 256)] == ["b1", "b16", "b16", "b64", "b64", "b64"]
    assert configs.conv_key(3136, 96, 96, 3, 1, torch.float16) == "k3s1_cin96_cout96_hw3136_float16"
    assert configs.conv_key(3136, 96, 96, 3, 1, torch.float16, (1, 1, 1, 1), 1) == "k3s1_cin96_cout96_hw3136_float16_b1"
    assert configs.conv_key(3136, 16, 16, 2, 1, torch.bfloat16, (0, 1, 0, 1), 8) == \
        "k2s1_cin16_cout16_hw3136_bfloat16_p0101_b16"
    assert configs.tile_key(224, torch.float16, 784, "k3s2") == "k3s2_c224_hw784_float16"


def _config_dir(tmp_path, table, arch="sm90"):
    shutil.copy(os.path.join(configs.CONFIG_DIR, "devices.json"), tmp_path)
    (tmp_path / f"triton_{arch}.json").write_text(json.dumps(table))


def test_tuned_entries_by_bucket(tmp_path, monkeypatch):
    key = configs.conv_key(196, 160, 160, 3, 1, torch.float16)
    _config_dir(tmp_path, {
        "_meta": {"arch": "sm90"},
        "conv_bn_act": {key + "_b1": {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 5, "_us": 3.2},
                        key: {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}},
        "depthwise_conv": {configs.tile_key(448, torch.float16, 196, "k3s2"): {"BLOCK_P": 8, "BLOCK_C": 32,
                                                                              "num_warps": 2}}})
    monkeypatch.setattr(configs, "CONFIG_DIR", str(tmp_path))
    b1 = configs.conv_config(196, 160, 160, 3, 1, torch.float16, "sm90", batch=1)
    assert b1["SPLIT_K"] == 5 and b1["BLOCK_M"] == 16 and "_us" not in b1 and b1["GROUP_M"] == 8  # defaults filled
    assert configs.conv_config(196, 160, 160, 3, 1, torch.float16, "sm90", batch=64)["BLOCK_M"] == 64  # bucket-less
    assert configs.tile_config("depthwise_conv", 448, torch.float16, "sm90", hw=196, batch=1,
                               geometry="k3s2")["BLOCK_P"] == 8
    rows = report("tiny", 1, 224, torch.float16, "H100")
    layer = next(r for r in rows if r.name == "s2.b0.l1")
    assert layer.programs == configs.cdiv(196, 16) * configs.cdiv(160, 32) * 5


@pytest.mark.parametrize("model", ["tiny", "b0", "b4"])
@pytest.mark.parametrize("batch", [1, 256])
def test_sm90_fp16_convs_keep_a_64_row_mma_side(model, batch):
    """wgmma takes the MMA's M side in 64-row warpgroup tiles: every fp16 conv of the plan on an H100
    has 64+ pixel rows, or is computed transposed (Yᵀ = Wᵀ·Xᵀ) with 64+ output channels as M."""
    rows = [r for r in report(model, batch, 224, torch.float16, "H100") if r.kind.startswith(("conv", "aggregation"))]
    assert rows
    for r in rows:
        n, c_in, h, w = map(int, r.input.split(" ")[0].split("×"))
        c_out, ho, wo = map(int, r.output.split(" ")[0].split("×")[1:])
        kernel = int(r.kind.split(" ")[1][0])
        cfg = configs.conv_config(ho * wo, c_in, c_out, kernel, 1, torch.float16, "sm90", batch=n, sms=H100_SMS)
        mma_rows = cfg["BLOCK_N"] if cfg["SWAP_AB"] else cfg["BLOCK_M"]
        assert mma_rows >= configs.WGMMA_ROWS, (r.name, cfg)
    # Off sm_90 (mma.sync takes 16 rows) and for fp32, nothing is swapped.
    assert not configs.conv_config(49, 192, 192, 3, 1, torch.float16, "sm80", batch=1)["SWAP_AB"]
    assert not configs.conv_config(49, 192, 192, 3, 1, torch.float32, "sm90", batch=1)["SWAP_AB"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_gpu_convs_share_one_k_step(dtype):
    """Each BLOCK_K is one more compiled kernel per layer form: every GPU conv config of the five
    models' plans (batch 1 and 256, H100 and A100) steps K by CONV_BLOCK_K, or by 16 where that
    does not divide C_in, but the flat-K loop of convs whose C_in is not a multiple of 16 (stems)."""
    steps = set()
    for model in ("tiny", "small", "base", "b0", "b4"):
        # The plan's distinct conv shapes (the configs' inputs), read once per model.
        for shape in conv_shapes(model, 224, kinds=("conv", "aggregation")):
            for batch, gpu in ((1, "H100"), (256, "H100"), (1, "A100")):
                peaks = configs.known_gpus()[gpu]
                cfg = configs.conv_config(shape.h_out * shape.w_out, shape.c_in, shape.c_out, shape.kernel, 1, dtype,
                                          peaks["arch"], batch=batch, sms=int(peaks["sms"]))
                assert cfg["FLAT_K"] == (shape.kernel > 1 and shape.c_in % 16 != 0), (model, shape.label(), cfg)
                if not cfg["FLAT_K"]:
                    assert cfg["BLOCK_K"] == (configs.CONV_BLOCK_K if shape.c_in % configs.CONV_BLOCK_K == 0 else 16)
                    steps.add(cfg["BLOCK_K"])
    assert steps == {configs.CONV_BLOCK_K, 16}


def test_int32_offsets_and_pixel_alignment_are_chosen_from_the_tensors():
    small = torch.empty(2, 8, 4, 4)
    assert conv_module.fits_int32(small)
    # A view's extent, not its storage, decides: 2^31 elements of extent need int64 offsets.
    huge = torch.empty_strided((2, 16, 1, 1), (2 ** 30, 1, 1, 1), dtype=torch.float16, device="meta")
    assert not conv_module.fits_int32(huge)
    nhwc = torch.empty(2, 96, 7, 9).contiguous(memory_format=torch.channels_last)
    assert conv_module.pixel_alignment(nhwc) == 16
    assert conv_module.pixel_alignment(nhwc[:, 8:32]) == 16        # a slice keeps the buffer's strides
    odd = torch.empty(2, 24, 7, 9).contiguous(memory_format=torch.channels_last)
    assert conv_module.pixel_alignment(odd) == 8                   # the same for every H and W
    assert conv_module.pixel_alignment(torch.empty(2, 24, 8, 8).contiguous(memory_format=torch.channels_last)) == 8
    # NCHW (the stem's input) has strided channels: read element by element, no alignment claimed.
    assert conv_module.pixel_alignment(torch.empty(1, 3, 5, 5)) == 1
    assert conv_module.pixel_alignment(nhwc, torch.empty(1, 96, 5, 5)) == 1


def test_depthwise_tiles_fit_in_128_registers():
    """Unrolled taps keep every tap's loads in flight: the depthwise tile shrinks with the window,
    so that it compiles within the ceiling of 128 registers without spilling (4 programs an SM;
    sm_90, Triton 3.8, uncapped: 16-bit 3×3 at 16 pixels 72 registers, 5×5 at 8 pixels 96, at 16
    pixels 164; fp32 5×5 at 8 pixels 131)."""
    k3 = configs.tile_config("depthwise_conv", 448, torch.float16, "sm90", hw=3136, batch=256, geometry="k3s1")
    k5 = configs.tile_config("depthwise_conv", 448, torch.float16, "sm90", hw=3136, batch=256, geometry="k5s1")
    assert (k3["BLOCK_P"], k5["BLOCK_P"]) == (16, 8) and k3["num_warps"] == k5["num_warps"] == 4
    assert configs.tile_config("depthwise_conv", 448, torch.float32, "sm90", hw=3136, batch=256,
                               geometry="k5s1")["BLOCK_P"] == 4
    assert configs.tile_config("max_pool", 448, torch.float16, "sm90", hw=3136, batch=256)["BLOCK_P"] == 32
    # The launcher passes the ceiling (Triton's maxnreg) with every depthwise launch.
    assert configs.DEPTHWISE_MAX_REGISTERS * k5["num_warps"] * 32 * 4 <= 65536
    x = torch.empty(2, 448, 56, 56, device="meta").contiguous(memory_format=torch.channels_last)
    packed, bias = fam.pack_depthwise_weight(torch.randn(448, 1, 5, 5)).to("meta"), torch.zeros(448, device="meta")
    launch = fam.resolve_depthwise(x, packed, bias, 1, relu=True)[0]
    assert launch.kwargs["maxnreg"] == configs.DEPTHWISE_MAX_REGISTERS
