"""A Hugging Face transformers HGNetV2 (the backbone of D-FINE, PP-OCRv5 server det, or the
classifier), fused: from the module, or from its ``save_pretrained`` folder.

    python python/hf_transformers_backbone.py [--folder PATH] [--height 640] [--width 640]

``FusedPPHGNet(module)`` takes an ``HGNetV2Backbone`` / ``HGNetV2ForImageClassification``
(D-FINE's is ``model.model.backbone.model``); ``load_model(folder)`` reads a folder with
config.json and model.safetensors (sharded too) and checks one against the other. Nothing is
downloaded: without ``--folder``, a random-weight B0 backbone stands in for yours and is saved
to a temporary folder first.
"""
import argparse
import tempfile

import torch
from transformers import HGNetV2Backbone, HGNetV2Config

from hgnet_kernels import FusedPPHGNet, load_model
from hgnet_kernels.models import randomize_statistics

# PaddleClas's PPHGNetV2_B0 in transformers' config terms (D-FINE N / S use it).
B0 = dict(stem_channels=[3, 16, 16], stage_in_channels=[16, 64, 256, 512], stage_mid_channels=[16, 32, 64, 128],
          stage_out_channels=[64, 256, 512, 1024], stage_num_blocks=[1, 1, 2, 1],
          stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
          stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[3, 3, 3, 3], use_learnable_affine_block=True,
          hidden_sizes=[64, 256, 512, 1024], depths=[1, 1, 2, 1], out_features=["stage2", "stage3", "stage4"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=None, help="a save_pretrained folder (default: a random B0)")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args()
    image = torch.randn(1, 3, args.height, args.width)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            theirs = randomize_statistics(HGNetV2Backbone(HGNetV2Config(**B0)).eval(), seed=0)
            theirs.save_pretrained(tmp)
            folder = tmp
        backbone = load_model(folder)  # the backbone (or classifier) the folder holds, checked against config.json
    fused = FusedPPHGNet(backbone, out_indices=(1, 2, 3))
    maps = fused.forward_features(image)
    if args.folder is None:  # the module itself works too, and gives the same maps as transformers
        direct = FusedPPHGNet(theirs, out_indices=(1, 2, 3)).forward_features(image)
        with torch.no_grad():
            want = theirs(image).feature_maps
        for stride, got, again, ref in zip((8, 16, 32), maps, direct, want):
            err = max(((g - ref).abs().max() / ref.abs().max()).item() for g in (got, again))
            print(f"stride {stride:2d}: {tuple(got.shape)}  (rel. err vs transformers {err:.1e})")
            assert err < 1e-5
    print(f"PP-HGNetV2_{backbone.config.name.upper()} from {'a save_pretrained folder' if args.folder is None else folder}"
          f", stem pool padding {backbone.stem_pool_padding!r}")


if __name__ == "__main__":
    main()
