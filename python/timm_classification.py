"""Drop FusedPPHGNet into an existing timm hgnet_tiny classification pipeline.

    python python/timm_classification.py [--size 224] [--batch 4]

The pipeline (timm's own preprocessing config, softmax, top-5) stays as it is; only the model
call changes. Random weights stand in for a checkpoint (nothing is downloaded): pass your own
with timm.create_model("hgnet_tiny", pretrained=False, checkpoint_path=...).
"""
import argparse

import timm
import torch

from hgnet_kernels import FusedPPHGNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    model = timm.create_model("hgnet_tiny", pretrained=False).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    images = torch.rand(args.batch, 3, args.size, args.size)  # stand-in for decoded RGB images in [0, 1]
    batch = (images - mean) / std

    fused = FusedPPHGNet(model)  # the one new line: same logits, fused kernels
    with torch.no_grad():
        eager_probs = model(batch).softmax(-1)
    fused_probs = fused(batch).softmax(-1)

    top5 = fused_probs.topk(5, dim=-1)
    for i in range(args.batch):
        print(f"image {i}: top-5 classes {top5.indices[i].tolist()}")
    diff = (fused_probs - eager_probs).abs().max().item()
    print(f"backend={fused.backend}  max |fused - timm| probability difference: {diff:.2e}")
    assert diff < 1e-5, "fused and eager disagree"


if __name__ == "__main__":
    main()
