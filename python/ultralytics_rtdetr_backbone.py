"""The PP-HGNetV2 backbone of an ultralytics RT-DETR (l = B4, x = B5), fused.

    python python/ultralytics_rtdetr_backbone.py [--weights rtdetr-l.pt] [--size 640]

ultralytics keeps the backbone as HGStem / HGBlock / DWConv layers at flat indices of its
``DetectionModel``; every BatchNorm there has eps = 1e-3, which ``FusedPPHGNet`` takes from the
modules (and ``load_model`` from ultralytics' known value for a bare state dict). A model whose
Conv+BN ultralytics already fused (after ``predict`` / ``export``) loads exactly too; a half-
precision one is refused. Nothing is downloaded: without ``--weights``, ``rtdetr-l.yaml`` with
random weights stands in for yours.
"""
import argparse

import torch
from ultralytics import RTDETR

from hgnet_kernels import FusedPPHGNet
from hgnet_kernels.models import randomize_statistics

STAGE_INDICES = {"b4": (3, 7, 9), "b5": (4, 10, 13)}  # the layers whose outputs are strides 8, 16, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="an ultralytics RT-DETR .pt (default: random rtdetr-l)")
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args()

    detector = RTDETR(args.weights or "rtdetr-l.yaml")
    model = detector.model.float().eval()
    if args.weights is None:
        randomize_statistics(model, seed=0)
    fused = FusedPPHGNet(detector, out_indices=(1, 2, 3))
    image = torch.randn(1, 3, args.size, args.size)
    maps = fused.forward_features(image)
    with torch.no_grad():  # ultralytics' own layers, in its index order
        x, outputs = image, []
        for layer in model.model[:STAGE_INDICES[fused.config.name][-1] + 1]:
            x = layer(x)
            outputs.append(x)
    for stride, got, index in zip((8, 16, 32), maps, STAGE_INDICES[fused.config.name]):
        want = outputs[index]
        err = ((got - want).abs().max() / want.abs().max()).item()
        print(f"stride {stride:2d}: {tuple(got.shape)}  (rel. err vs ultralytics layer {index}: {err:.1e})")
        assert err < 1e-5
    print(f"ultralytics RT-DETR backbone: PP-HGNetV2_{fused.config.name.upper()}, BN eps "
          f"{model.model[0].stem1.bn.eps if hasattr(model.model[0].stem1, 'bn') else 'fused'}")


if __name__ == "__main__":
    main()
