"""FusedPPHGNet.forward_features as a detection backbone: multi-scale maps for an FPN neck.

    python python/detection_backbone.py [--height 320] [--width 480]

A tiny FPN-style neck (1×1 lateral convs + top-down upsampling) consumes the four stage outputs
(strides 4, 8, 16, 32), exactly as it would consume an eager backbone's.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from hgnet_kernels import CONFIGS, FusedPPHGNet, pphgnet_tiny


class TinyFPN(nn.Module):
    def __init__(self, in_channels, width=64):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)

    def forward(self, features):
        maps = [lat(f) for lat, f in zip(self.lateral, features)]
        for i in range(len(maps) - 2, -1, -1):
            maps[i] = maps[i] + F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
        return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=480)
    args = parser.parse_args()

    backbone = pphgnet_tiny()  # or pphgnet_tiny(weights="PPHGNet_tiny_pretrained.pdparams")
    fused = FusedPPHGNet(backbone)
    neck = TinyFPN([s.out_channels for s in CONFIGS["tiny"].stages]).eval()
    image = torch.randn(1, 3, args.height, args.width)

    features = fused.forward_features(image)
    with torch.no_grad():
        pyramid = neck(features)
        eager_features = backbone.forward_features(image)
    for stride, f, p, e in zip((4, 8, 16, 32), features, pyramid, eager_features):
        err = (f - e).abs().max().item()
        print(f"stride {stride:2d}: backbone {tuple(f.shape)} -> neck {tuple(p.shape)}  (max |fused - eager| {err:.1e})")
        assert err < 1e-4


if __name__ == "__main__":
    main()
