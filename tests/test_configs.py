"""The launch configs each kernel family resolves for every layer of every model stay what they
were when the twin lookup / padding / split helpers of ``configs.py`` were merged into one each
(issue #20): a digest per family and model, recorded from main at fa54f6c, over every conv,
aggregation and depthwise shape at 224×224 and 640×640, every dtype, batches across the bucket
edges, arch unknown / sm_80 / sm_90 (and Triton's interpreter config)."""
import functools
import hashlib
import json
import os

import pytest
import torch

from hgnet_kernels import configs
from hgnet_kernels.kernels.cuda.ops import mma_k_step, mma_tiles
from hgnet_kernels.models import MODEL_NAMES
from hgnet_kernels.shapes import conv_shapes

RECORDED = os.path.join(os.path.dirname(__file__), "data", "configs_resolved_fa54f6c.json")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BATCHES = (1, 2, 8, 16, 17, 64, 256)
ARCHS = (None, "sm80", "sm90")


@functools.lru_cache(maxsize=None)
def _shapes(model: str, size: int):
    return sorted(conv_shapes(model, size), key=lambda s: s.ident())


def resolved(family: str, model: str):
    """Every config ``family`` resolves for ``model``'s layers, as (what was asked, what came back)."""
    rows = []
    for size in (224, 640):
        for shape in _shapes(model, size):
            hw = shape.h_out * shape.w_out
            for dtype in DTYPES:
                for batch in BATCHES:
                    for arch in ARCHS:
                        asked = (shape.ident(), size, str(dtype), batch, arch)
                        if shape.kind == "depthwise":
                            if family == "triton":
                                rows.append((asked, configs.tile_config(
                                    "depthwise_conv", shape.c_out, dtype, arch, hw=hw, batch=batch,
                                    geometry=f"k{shape.kernel}s{shape.stride}")))
                            continue
                        if family == "triton":
                            cfg = configs.conv_config(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype,
                                                      arch, batch=batch)
                            rows.append((asked, cfg, configs.conv_grid(batch, hw, shape.c_in, shape.c_out,
                                                                       shape.kernel, cfg)))
                        else:
                            cfg = configs.cuda_conv_config(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride,
                                                           dtype, arch, batch=batch, tiles=mma_tiles(dtype, "cpu"),
                                                           k_step=mma_k_step("cpu"))
                            rows.append((asked, cfg, configs.cuda_conv_workspace(
                                batch, hw, shape.c_in, shape.c_out, shape.kernel, cfg, k_step=mma_k_step("cpu"))))
                if family == "triton" and shape.kind != "depthwise":
                    rows.append(((shape.ident(), size, str(dtype), "interpreter"), configs.conv_config(
                        hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, None, True)))
    return rows


def digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("family", ["triton", "cuda"])
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_layer_resolves_the_configs_recorded_from_main(family, model):
    with open(RECORDED) as f:
        recorded = json.load(f)
    rows = resolved(family, model)
    assert len(rows) > 100
    assert digest(rows) == recorded[f"{family}/{model}"], (
        f"the {family} configs of {model}'s layers differ from those recorded from main (fa54f6c)")
