"""Golden reference outputs for PP-HGNet (v1) and PP-HGNetV2 from real PaddlePaddle.

This script runs in a *separate* Paddle virtualenv, never in the project's own
environment. It does not import torch or hgnet_kernels.

Environment (CPU only; created outside the repo)::

    python -m venv ../paddle-venv
    ../paddle-venv/bin/pip install paddlepaddle==3.3.1 numpy
    ../paddle-venv/bin/pip install paddleclas==2.6.0 --no-deps

Regenerate all fixtures (from the repo root)::

    ../paddle-venv/bin/python tools/paddle_golden.py

Only re-check the fixtures already on disk (reload each .pdparams into a freshly
built Paddle model, rerun, compare bit-for-bit, and also compare against
PaddleClas' own TheseusLayer.update_res() feature return)::

    ../paddle-venv/bin/python tools/paddle_golden.py --verify

What it does: builds reduced-width models from PaddleClas 2.6.0's own classes
(``ppcls/arch/backbone/legendary_models/pp_hgnet.py::PPHGNet`` and
``pp_hgnet_v2.py::PPHGNetV2``), overwrites every parameter and BN buffer with
seeded random values (conv weights, conv biases, BN affine, BN running
mean/variance, LAB scale/bias, fc), switches to eval mode and runs odd,
non-square float32 inputs. For each case it writes to
``tests/data/paddle_golden/``:

* ``<name>.pdparams`` -- ``paddle.save(model.state_dict(), ...)``;
* ``<name>.npz``      -- inputs, logits and intermediate feature maps, keyed
  ``<tensor>_<input index>`` (e.g. ``x_0``, ``logits_0``, ``stage3_1``);
* ``<name>.json``     -- exact constructor arguments, stage config, seeds,
  versions, npz key descriptions and output shapes.

``ppcls/__init__.py`` imports heavy optional dependencies (sklearn, cv2, ...),
so the two backbone modules are loaded through stub parent packages; the
backbone files themselves (and base/theseus_layer.py, custom_devices_layers.py,
utils/logger.py) are PaddleClas' unmodified code.

PaddleClas 2.6.0's PPHGNetV2 has no ``det`` / ``text_rec`` / ``out_indx``
arguments (those live in PaddleDetection / PaddleOCR), so no such case exists
here; unknown kwargs are swallowed by ``**kwargs`` and ignored.
"""

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import types

import numpy as np

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "paddle_golden")

V2_FIELDS = ["in_channels", "mid_channels", "out_channels", "block_num",
             "is_downsample", "light_block", "kernel_size", "layer_num"]
V1_FIELDS = ["in_channels", "mid_channels", "out_channels", "block_num",
             "downsample"]

# Odd, non-square sizes (67x45 and 33x47 give odd maps at every stride and hit
# ceil-mode / border handling); 64x96 and 32x64 divide exactly by 32.
INPUT_SHAPES = [(1, 3, 67, 45), (2, 3, 64, 96), (1, 3, 33, 47)]
INPUT_SHAPES_SMALL = [(1, 3, 67, 45), (2, 3, 32, 64), (1, 3, 33, 47)]

# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------
CASES = [
    {
        # (a) v1: ESE aggregation, dropout (downscale_in_infer) in the head.
        "name": "v1_ese_dropout",
        "arch": "PPHGNet",
        "seed": 1001,
        "kwargs": {
            "stem_channels": [8, 8, 12],
            "stage_config": {
                "stage1": [12, 8, 16, 1, False],
                "stage2": [16, 12, 32, 2, True],
                "stage3": [32, 12, 40, 1, True],
                "stage4": [40, 16, 48, 1, True],
            },
            "layer_num": 3,
            "use_last_conv": True,
            "class_expand": 32,
            "dropout_prob": 0.25,
            "class_num": 10,
        },
        "inputs": INPUT_SHAPES,
    },
    {
        # (b) v2 like B0-B3: use_lab, light blocks + 5x5 dw in stages 3-4,
        # some negative LAB scales, stem1 LAB bias < 0 (negative stem acts).
        "name": "v2_lab_mixed_sign",
        "arch": "PPHGNetV2",
        "seed": 2002,
        "lab_mode": "mixed",
        "kwargs": {
            "stem_channels": [3, 8, 16],
            "stage_config": {
                "stage1": [16, 16, 24, 1, False, False, 3, 2],
                "stage2": [24, 16, 32, 1, True, False, 3, 2],
                "stage3": [32, 24, 48, 2, True, True, 5, 2],
                "stage4": [48, 32, 64, 1, True, True, 5, 2],
            },
            "use_lab": True,
            "use_last_conv": True,
            "class_expand": 48,
            "dropout_prob": 0.1,
            "class_num": 10,
        },
        "inputs": INPUT_SHAPES,
        "stem_internals": True,
    },
    {
        # (b') v2 use_lab with all LAB scales positive; 2 blocks in stages 1
        # and 2 (identity residuals), layer_num 3, stem mid 12 (stem2a -> 6).
        "name": "v2_lab_positive",
        "arch": "PPHGNetV2",
        "seed": 3003,
        "lab_mode": "positive",
        "kwargs": {
            "stem_channels": [3, 12, 16],
            "stage_config": {
                "stage1": [16, 8, 24, 2, False, False, 3, 3],
                "stage2": [24, 8, 32, 2, True, False, 3, 3],
                "stage3": [32, 16, 40, 1, True, True, 5, 3],
                "stage4": [40, 20, 56, 1, True, True, 5, 3],
            },
            "use_lab": True,
            "use_last_conv": True,
            "class_expand": 40,
            "dropout_prob": 0.0,
            "class_num": 7,
        },
        "inputs": INPUT_SHAPES_SMALL,
    },
    {
        # (c) v2 like B4-B6: no LAB.
        "name": "v2_nolab",
        "arch": "PPHGNetV2",
        "seed": 4004,
        "kwargs": {
            "stem_channels": [3, 8, 16],
            "stage_config": {
                "stage1": [16, 12, 24, 1, False, False, 3, 3],
                "stage2": [24, 12, 32, 2, True, False, 3, 3],
                "stage3": [32, 16, 48, 2, True, True, 5, 3],
                "stage4": [48, 16, 56, 1, True, True, 5, 3],
            },
            "use_lab": False,
            "use_last_conv": True,
            "class_expand": 48,
            "dropout_prob": 0.2,
            "class_num": 10,
        },
        "inputs": INPUT_SHAPES_SMALL,
    },
    {
        # v2 without the last 1x1 conv head (fc straight from stage4 channels).
        "name": "v2_nolab_no_last_conv",
        "arch": "PPHGNetV2",
        "seed": 5005,
        "kwargs": {
            "stem_channels": [3, 8, 16],
            "stage_config": {
                "stage1": [16, 8, 16, 1, False, False, 3, 2],
                "stage2": [16, 8, 24, 1, True, False, 3, 2],
                "stage3": [24, 12, 32, 1, True, True, 5, 2],
                "stage4": [32, 16, 40, 1, True, True, 3, 2],
            },
            "use_lab": False,
            "use_last_conv": False,
            "class_expand": 2048,
            "dropout_prob": 0.0,
            "class_num": 5,
        },
        "inputs": [(1, 3, 67, 45), (1, 3, 33, 47)],
    },
]


# --------------------------------------------------------------------------
# Loading PaddleClas' backbone modules without ppcls/__init__.py
# --------------------------------------------------------------------------
def _paddleclas_root():
    spec = importlib.util.find_spec("paddleclas")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("paddleclas is not installed in this interpreter")
    return list(spec.submodule_search_locations)[0]


def load_ppcls_backbones():
    root = _paddleclas_root()
    ppcls_dir = os.path.join(root, "ppcls")

    def stub_pkg(name, path):
        if name in sys.modules:
            return sys.modules[name]
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        mod.__package__ = name
        sys.modules[name] = mod
        return mod

    stub_pkg("ppcls", ppcls_dir)
    stub_pkg("ppcls.utils", os.path.join(ppcls_dir, "utils"))
    importlib.import_module("ppcls.utils.logger")  # real module, light deps
    if "ppcls.utils.save_load" not in sys.modules:
        sl = types.ModuleType("ppcls.utils.save_load")

        def load_dygraph_pretrain(*a, **k):
            raise RuntimeError("pretrained loading is stubbed out here")

        sl.load_dygraph_pretrain = load_dygraph_pretrain
        sys.modules["ppcls.utils.save_load"] = sl
    stub_pkg("ppcls.arch", os.path.join(ppcls_dir, "arch"))
    stub_pkg("ppcls.arch.backbone", os.path.join(ppcls_dir, "arch", "backbone"))
    stub_pkg("ppcls.arch.backbone.base",
             os.path.join(ppcls_dir, "arch", "backbone", "base"))
    stub_pkg("ppcls.arch.backbone.legendary_models",
             os.path.join(ppcls_dir, "arch", "backbone", "legendary_models"))
    v1 = importlib.import_module(
        "ppcls.arch.backbone.legendary_models.pp_hgnet")
    v2 = importlib.import_module(
        "ppcls.arch.backbone.legendary_models.pp_hgnet_v2")
    return v1, v2


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _paddleclas_version():
    root = _paddleclas_root()
    try:
        from importlib.metadata import version
        return version("paddleclas")
    except Exception:
        with open(os.path.join(root, "version.txt")) as f:
            return f.read().strip()


# --------------------------------------------------------------------------
# Model construction and randomisation
# --------------------------------------------------------------------------
def build_model(case, mods):
    v1, v2 = mods
    kw = json.loads(json.dumps(case["kwargs"]))  # deep copy (v1 mutates stem_channels)
    if case["arch"] == "PPHGNet":
        model = v1.PPHGNet(**kw)
    else:
        model = v2.PPHGNetV2(**kw)
    model.eval()
    return model


def randomize(model, case, v2mod):
    """Overwrite every parameter / BN buffer with seeded random values."""
    rng = np.random.default_rng(case["seed"])
    lab_mode = case.get("lab_mode")
    lab_values = {}
    lab_layers = []
    for name, layer in model.named_sublayers(include_self=False):
        if isinstance(layer, nn.Conv2D):
            w = layer.weight
            fan_in = int(np.prod(w.shape[1:]))
            w.set_value(rng.normal(0.0, np.sqrt(1.5 / fan_in),
                                   size=w.shape).astype("float32"))
            if layer.bias is not None:
                layer.bias.set_value(
                    rng.normal(0.0, 0.5, size=layer.bias.shape).astype("float32"))
        elif isinstance(layer, nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.bias.set_value(rng.normal(0.0, 0.2, c).astype("float32"))
            layer._mean.set_value(rng.normal(0.0, 0.2, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, c).astype("float32"))
        elif isinstance(layer, nn.Linear):
            fin, fout = layer.weight.shape  # paddle Linear weight is [in, out]
            layer.weight.set_value(rng.normal(0.0, 1.0 / np.sqrt(fin),
                                              size=(fin, fout)).astype("float32"))
            layer.bias.set_value(rng.normal(0.0, 0.1, fout).astype("float32"))
        elif isinstance(layer, v2mod.LearnableAffineBlock):
            lab_layers.append((name, layer))

    for i, (name, layer) in enumerate(lab_layers):
        mag = float(rng.uniform(0.6, 1.4))
        bias = float(rng.normal(0.0, 0.2))
        if lab_mode == "mixed":
            if name == "stem.stem1.lab":
                # ReLU output 0 -> -0.25: stem1 output is negative wherever
                # the pre-activation is <= 0, including the bottom/right border.
                scale, bias = 1.1, -0.25
            else:
                neg = (i % 3 == 1) or rng.uniform() < 0.2
                scale = -mag if neg else mag
        elif lab_mode == "positive":
            scale = mag
        else:
            raise ValueError("model has LAB layers but case has no lab_mode")
        layer.scale.set_value(np.array([scale], "float32"))
        layer.bias.set_value(np.array([bias], "float32"))
        lab_values[name] = {"scale": float(np.float32(scale)),
                            "bias": float(np.float32(bias))}
    return lab_values


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------
def capture_forward(model, case, x, want_internals):
    """Run model(x) with forward hooks; return dict name -> np.ndarray.

    want_internals (first input only, to keep files small): v2 -> stem1 /
    stem.pool / stem2b outputs (if the case asks) and the zero-pad pool
    emulation; v1 -> the stride-2 stem output.
    """
    caps = {}
    handles = []

    def post(key):
        def hook(layer, inputs, output):
            caps[key] = output.numpy().copy()
        return hook

    def pre(key):
        def hook(layer, inputs):
            caps[key] = inputs[0].numpy().copy()
        return hook

    is_v1 = case["arch"] == "PPHGNet"
    if is_v1:
        if want_internals:
            handles.append(model.stem.register_forward_post_hook(post("stem")))
        handles.append(model.pool.register_forward_post_hook(post("stem_pool")))
    else:
        handles.append(model.stem.register_forward_post_hook(post("stem")))
        if want_internals:
            handles.append(model.stem.stem1.register_forward_post_hook(post("stem1")))
            handles.append(model.stem.pool.register_forward_post_hook(post("stem_pool")))
            handles.append(model.stem.stem2b.register_forward_post_hook(post("stem2b")))
    for i, st in enumerate(model.stages):
        handles.append(st.register_forward_post_hook(post("stage%d" % (i + 1))))
    handles.append(model.avg_pool.register_forward_post_hook(post("pooled")))
    handles.append(model.fc.register_forward_pre_hook(pre("pre_fc")))
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x))
    for h in handles:
        h.remove()
    caps["logits"] = logits.numpy().copy()
    if want_internals and not is_v1:
        # Paddle-computed emulation of timm's StemV2 pool: F.pad(0,1,0,1) with
        # zeros, then an unpadded 2x2/s1 ceil_mode max pool.
        s1 = paddle.to_tensor(caps["stem1"])
        zp = F.pad(s1, [0, 1, 0, 1], mode="constant", value=0.0,
                   data_format="NCHW")
        caps["stem_pool_zeropad"] = F.max_pool2d(
            zp, kernel_size=2, stride=1, padding=0, ceil_mode=True).numpy()
    return caps


KEY_DOC = {
    "x": "input, NCHW float32",
    "logits": "model(x) in eval mode",
    "stem": "output of model.stem (v2: StemBlock, stride 4; v1: 3 ConvBNAct, stride 2)",
    "stem_pool": "v1: model.pool output (3x3/s2/p1 max pool, stride 4); "
                 "v2: model.stem.pool output (2x2/s1 ceil_mode padding='SAME' max pool on stem1 output)",
    "stem1": "v2: model.stem.stem1 output (after BN, ReLU and LAB)",
    "stem2b": "v2: model.stem.stem2b output",
    "stem_pool_zeropad": "v2: Paddle F.pad(stem1, [0,1,0,1], value=0) + F.max_pool2d(k=2, s=1, p=0, ceil_mode=True) "
                         "-- emulates timm StemV2 and is NOT what PaddleClas computes",
    "stage1": "model.stages[0] output (stride 4)",
    "stage2": "model.stages[1] output (stride 8)",
    "stage3": "model.stages[2] output (stride 16)",
    "stage4": "model.stages[3] output (stride 32)",
    "pooled": "model.avg_pool output, [N, C, 1, 1]",
    "pre_fc": "input of model.fc, [N, F] (after last_conv/ReLU/LAB/dropout and flatten when use_last_conv)",
}


def generate(mods, only=None):
    v1, v2 = mods
    os.makedirs(OUT_DIR, exist_ok=True)
    root = _paddleclas_root()
    src = {
        "pp_hgnet.py": os.path.join(root, "ppcls/arch/backbone/legendary_models/pp_hgnet.py"),
        "pp_hgnet_v2.py": os.path.join(root, "ppcls/arch/backbone/legendary_models/pp_hgnet_v2.py"),
    }
    for case in CASES:
        if only and case["name"] not in only:
            continue
        paddle.seed(case["seed"])
        model = build_model(case, mods)
        lab_values = randomize(model, case, v2)
        model.eval()
        rng = np.random.default_rng(case["seed"] + 7)
        arrays = {}
        for idx, shape in enumerate(case["inputs"]):
            x = rng.normal(0.0, 1.0, size=shape).astype("float32")
            caps = capture_forward(model, case, x,
                                   want_internals=(idx == 0 and (case["arch"] == "PPHGNet"
                                                  or case.get("stem_internals", False))))
            arrays["x_%d" % idx] = x
            for k, v in caps.items():
                arrays["%s_%d" % (k, idx)] = np.ascontiguousarray(v, dtype=np.float32)

        base = os.path.join(OUT_DIR, case["name"])
        paddle.save(model.state_dict(), base + ".pdparams")
        np.savez_compressed(base + ".npz", **arrays)

        fields = V1_FIELDS if case["arch"] == "PPHGNet" else V2_FIELDS
        kw = case["kwargs"]
        meta = {
            "name": case["name"],
            "arch": case["arch"],
            "paddleclas_class": ("ppcls.arch.backbone.legendary_models.pp_hgnet.PPHGNet"
                                 if case["arch"] == "PPHGNet" else
                                 "ppcls.arch.backbone.legendary_models.pp_hgnet_v2.PPHGNetV2"),
            "constructor_kwargs": kw,
            "stage_config_fields": fields,
            "stage_config_named": {
                k: dict(zip(fields, v)) for k, v in kw["stage_config"].items()},
            "effective": {},
            "seed": case["seed"],
            "input_seed": case["seed"] + 7,
            "dtype": "float32",
            "mode": "eval",
            "bn_epsilon": 1e-5,
            "dropout": {"p": kw.get("dropout_prob", 0.0), "mode": "downscale_in_infer",
                        "eval_semantics": "y = x * (1 - p)"},
            "feature_strides": {"stem": 4 if case["arch"] == "PPHGNetV2" else 2,
                                "stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32},
            "lab_values": lab_values,
            "npz_keys": {k: KEY_DOC[k.rsplit("_", 1)[0]] for k in sorted(arrays)},
            "shapes": {k: list(v.shape) for k, v in sorted(arrays.items())},
            "randomization": {
                "conv_weight": "N(0, sqrt(1.5/fan_in))",
                "conv_bias": "N(0, 0.5) (only ESE convs in v1 have biases)",
                "bn_weight": "U(0.5, 1.5)", "bn_bias": "N(0, 0.2)",
                "bn_mean": "N(0, 0.2)", "bn_var": "U(0.5, 2.0)",
                "fc_weight": "N(0, 1/sqrt(in)), stored [in, out]", "fc_bias": "N(0, 0.1)",
                "lab": case.get("lab_mode"),
                "input": "N(0, 1)",
            },
            "feature_capture": "paddle forward hooks; stages/logits cross-checked against "
                               "TheseusLayer.update_res() by --verify",
            "versions": {"paddle": paddle.__version__,
                         "paddleclas": _paddleclas_version(),
                         "numpy": np.__version__},
            "source_sha256": {k: _sha256(p) for k, p in src.items()},
            "regenerate": "<paddle venv>/bin/python tools/paddle_golden.py",
        }
        if case["arch"] == "PPHGNetV2":
            meta["paddle_semantics"] = {
                "stem2a_stem2b_conv": "padding='SAME', k=2, s=1: zero pad 0 top/left, 1 bottom/right; output HxW",
                "stem_pool": "MaxPool2D(k=2, s=1, ceil_mode=True, padding='SAME'): output HxW, windows "
                             "clipped at bottom/right (padding never selected, i.e. -inf), NOT zero padding",
                "lab": "only in ConvBNAct with use_act (y = scale*relu(bn(conv(x))) + bias); none on "
                       "LightConvBNAct.conv1 or the stage downsample conv",
                "head": "avg_pool -> last_conv(1x1, no bias) -> ReLU -> LAB (if use_lab) -> dropout "
                        "(eval: *(1-p)) -> flatten -> fc (weight [in, out])",
            }
        else:
            meta["paddle_semantics"] = {
                "stem": "ConvBNAct 3x3 s2, then 3x3 s1 ..., then MaxPool2D(3, 2, padding=1)",
                "block": "concat -> aggregation ConvBNAct 1x1 -> ESE (avgpool, 1x1 conv with bias, "
                         "sigmoid, multiply) -> + identity for blocks after the first",
                "head": "avg_pool -> last_conv(1x1, no bias) -> ReLU -> dropout (eval: *(1-p)) -> flatten -> fc",
            }
        if case["arch"] == "PPHGNet":
            meta["effective"]["stem_channels"] = [3] + kw["stem_channels"]
            meta["effective"]["note"] = ("PPHGNet.__init__ does stem_channels.insert(0, 3); "
                                         "layer_num is global to all stages; ESE conv has bias")
        else:
            meta["effective"]["stem_channels"] = kw["stem_channels"]
            meta["effective"]["note"] = ("stem_channels = [in, mid, out]; stem2a outputs mid//2; "
                                         "stem3 input is 2*mid")
        with open(base + ".json", "w") as f:
            json.dump(meta, f, indent=1, sort_keys=False)
            f.write("\n")
        diff = ""
        if "stem_pool_zeropad_0" in arrays:
            d = arrays["stem_pool_0"] != arrays["stem_pool_zeropad_0"]
            diff = " stem_pool vs zero-pad emulation: %d/%d elements differ" % (d.sum(), d.size)
        print("wrote %s (logits_0 %s)%s" % (case["name"], arrays["logits_0"].ravel()[:3], diff))


def verify(mods, only=None):
    """Reload each .pdparams into a fresh model and compare bit-for-bit."""
    ok = True
    for case in CASES:
        if only and case["name"] not in only:
            continue
        base = os.path.join(OUT_DIR, case["name"])
        paddle.seed(12345)  # different init; everything must come from the file
        model = build_model(case, mods)
        sd = paddle.load(base + ".pdparams")
        missing, unexpected = model.set_state_dict(sd)
        assert not missing and not unexpected, (missing, unexpected)
        model.eval()
        ref = np.load(base + ".npz")
        # Paddle's own multi-output mechanism (TheseusLayer.update_res); the
        # stages are HG_Stage/HGV2_Stage TheseusLayers, keyed by full_name().
        model.update_res(["stages[%d]" % i for i in range(len(model.stages))])
        stage_keys = [st.res_name for st in model.stages]
        n_in = len(case["inputs"])
        worst = 0.0
        for idx in range(n_in):
            x = ref["x_%d" % idx]
            with paddle.no_grad():
                out = model(paddle.to_tensor(x))
            assert isinstance(out, dict) and "logits" in out
            pairs = [("logits", out["logits"])] + [
                ("stage%d" % (i + 1), out[k]) for i, k in enumerate(stage_keys)]
            for key, t in pairs:
                a, b = t.numpy(), ref["%s_%d" % (key, idx)]
                if a.shape != b.shape:
                    print("  %s %s_%d shape %s != %s" % (case["name"], key, idx, a.shape, b.shape))
                    ok = False
                    continue
                if not np.array_equal(a, b):
                    err = float(np.max(np.abs(a - b)))
                    worst = max(worst, err)
                    if not np.allclose(a, b, rtol=1e-5, atol=1e-5):
                        ok = False
        # plain forward (no update_res) once more on a fresh model == logits
        model2 = build_model(case, mods)
        model2.set_state_dict(paddle.load(base + ".pdparams"))
        model2.eval()
        with paddle.no_grad():
            out2 = model2(paddle.to_tensor(ref["x_0"]))
        exact2 = np.array_equal(out2.numpy(), ref["logits_0"])
        print("verify %-24s keys=%3d  update_res outputs %s  plain forward exact=%s" % (
            case["name"], len(sd),
            "bit-exact" if worst == 0.0 else "max|diff|=%.3g" % worst, exact2))
        ok = ok and (exact2 or np.allclose(out2.numpy(), ref["logits_0"], rtol=1e-5, atol=1e-5))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verify", action="store_true",
                    help="only reload and re-check existing fixtures")
    ap.add_argument("--case", action="append", help="limit to this case name")
    args = ap.parse_args()
    paddle.set_device("cpu")
    mods = load_ppcls_backbones()
    if not args.verify:
        generate(mods, args.case)
    if not verify(mods, args.case):
        raise SystemExit("verification FAILED")
    print("all fixtures verified")


if __name__ == "__main__":
    main()
