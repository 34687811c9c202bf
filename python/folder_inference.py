"""Batch inference over a folder of images with a progress bar.

    python python/folder_inference.py [FOLDER] [--batch 8] [--size 224] [--weights PATH]

Without FOLDER it first writes a few synthetic PNGs into a temporary folder (nothing is downloaded).
Images are resized (shorter side), centre-cropped, normalised with ImageNet statistics and run in
batches; the top-1 class of each file is printed.
"""
import argparse
import os
import tempfile

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from hgnet_kernels import FusedPPHGNet, load_model, pphgnet_tiny

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def write_synthetic_images(folder: str, count: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = rng.integers(160, 320, size=2)
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"synthetic_{i:02d}.png"))


def load_image(path: str, size: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))))
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - MEAN) / STD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or tmp
        if args.folder is None:
            write_synthetic_images(folder)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(SUFFIXES))
        if not files:
            raise SystemExit(f"no images ({', '.join(SUFFIXES)}) in {folder}")
        model = load_model(args.weights) if args.weights else pphgnet_tiny()
        fused = FusedPPHGNet(model)
        results = []
        for start in tqdm(range(0, len(files), args.batch), desc="batches", unit="batch"):
            names = files[start:start + args.batch]
            batch = torch.stack([load_image(os.path.join(folder, n), args.size) for n in names])
            probs = fused(batch).softmax(-1)
            results += [(n, int(p.argmax()), float(p.max())) for n, p in zip(names, probs)]
    for name, cls, p in results:
        print(f"{name}: class {cls} (p={p:.3f})")
    print(f"{len(results)} images, backend={fused.backend}")


if __name__ == "__main__":
    main()
