"""The PP-HGNetV2 backbone of a D-FINE / DEIM / RT-DETR checkpoint, fused, feeding the detector.

    python python/detector_checkpoint_backbone.py [--variant b0] [--height 640] [--width 640]

A detector checkpoint keeps the backbone under a prefix (``backbone.``) beside its encoder and
decoder, often inside ``{"model": ..., "ema": {"module": ...}}``. ``load_model`` finds the
backbone, picks the variant (B0 … B6) and LAB from the tensor shapes, and ignores the rest; the
detector keeps its own neck and head and receives the stride-8/16/32 maps it always did.
Nothing is downloaded: a checkpoint with random weights, laid out like D-FINE's, stands in for
yours (pass ``--checkpoint PATH`` to use a real one).
"""
import argparse
import os
import tempfile

import torch

from hgnet_kernels import FusedPPHGNet, PPHGNetV2, load_model
from hgnet_kernels.models import randomize_statistics


def stand_in_checkpoint(variant: str, directory: str) -> str:
    """A D-FINE-style file: timm-like backbone names under "backbone.", EMA weights, a decoder."""
    backbone = randomize_statistics(PPHGNetV2(variant, num_classes=0, class_expand=None), seed=0)
    state = {}
    for key, value in backbone.state_dict().items():  # D-FINE names the aggregation convs 0 and 1
        key = key.replace("aggregation_squeeze_conv.", "aggregation.0.").replace("aggregation_excitation_conv.",
                                                                                  "aggregation.1.")
        state[f"backbone.{key}"] = value
    state["decoder.query_pos_head.layers.0.weight"] = torch.randn(256, 4)
    path = os.path.join(directory, f"dfine_hgnetv2_{variant}.pth")
    torch.save({"model": state, "ema": {"module": state, "updates": 1}}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint or stand_in_checkpoint(args.variant, tmp)
        backbone = load_model(path)  # the backbone only: no classifier head
    fused = FusedPPHGNet(backbone, out_indices=(1, 2, 3))  # D-FINE / RT-DETR take strides 8, 16, 32
    image = torch.randn(1, 3, args.height, args.width)
    maps = fused.forward_features(image)
    with torch.no_grad():
        eager = backbone.forward_features(image)[1:]
    for stride, got, want in zip((8, 16, 32), maps, eager):
        err = ((got - want).abs().max() / want.abs().max()).item()
        print(f"stride {stride:2d}: {tuple(got.shape)}  (rel. err vs eager {err:.1e})")
        assert err < 1e-5
    print(f"{path.rsplit('/', 1)[-1]}: PP-HGNetV2_{backbone.config.name.upper()}, LAB {backbone.use_lab}, "
          f"stem pool padding {backbone.stem_pool_padding!r}")


if __name__ == "__main__":
    main()
