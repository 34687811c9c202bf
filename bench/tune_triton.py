"""Tune the Triton conv tiles for every distinct PP-HGNet layer shape on this GPU, offline.

    PYTHONPATH=. python bench/tune_triton.py --models tiny small base --dtypes float16 float32

Times a small config space per (shape, dtype) with ``triton.testing.do_bench`` and merges the
winners into ``hgnet_kernels/configs/triton_<arch>.json``, which the library only looks up at run
time. ``--budget`` (seconds) stops early and keeps what was tuned. A config is kept only if it
beats the built-in heuristic, so an entry never makes a layer slower than having none.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hgnet_kernels import configs  # noqa: E402
from hgnet_kernels.shapes import conv_shapes  # noqa: E402
from hgnet_kernels.verify import DTYPES  # noqa: E402

CANDIDATES = [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=w, num_stages=s) for m, n, k, w, s in [
    (64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3),
    (128, 128, 64, 8, 3), (64, 64, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
    (128, 128, 32, 4, 4), (256, 64, 32, 8, 3), (64, 256, 32, 8, 3), (32, 64, 64, 4, 3),
]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float16", "float32"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds; stop early after this")
    parser.add_argument("--out", default=None, help="default: hgnet_kernels/configs/triton_<arch>.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("tune_triton.py needs a CUDA GPU: configs are per GPU architecture", file=sys.stderr)
        return 2
    import triton.testing

    from hgnet_kernels.kernels.spec import pack_conv_weight
    from hgnet_kernels.kernels.triton.conv_bn_act import launch_conv
    device = torch.device("cuda")
    arch = configs.arch_name(device)
    out_path = args.out or os.path.join(configs.CONFIG_DIR, f"triton_{arch}.json")
    table = json.load(open(out_path)) if os.path.exists(out_path) else {}
    entries = table.setdefault("conv_bn_act", {})
    start = time.time()
    shapes = {s for m in args.models for s in conv_shapes(m, args.size) if s.kind != "depthwise"}
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for shape in sorted(shapes, key=lambda s: -s.macs()):
            if time.time() - start > args.budget:
                print(f"budget of {args.budget:.0f}s spent; stopping", file=sys.stderr)
                break
            x = torch.randn(args.batch, shape.c_in, shape.h, shape.w, device=device, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            w = pack_conv_weight(torch.randn(shape.c_out, shape.c_in, shape.kernel, shape.kernel,
                                             device=device, dtype=dtype))
            b = torch.randn(shape.c_out, device=device)
            partial = shape.kind == "aggregation"

            def timed(cfg, x=x, w=w, b=b, stride=shape.stride, partial=partial):
                return triton.testing.do_bench(
                    lambda: launch_conv(x, w, b, stride, True, None, partial, False, cfg), warmup=5, rep=20)
            key = configs.conv_key(shape.h_out * shape.w_out, shape.c_in, shape.c_out, shape.kernel,
                                   shape.stride, dtype)
            baseline = timed(configs.conv_config(shape.h_out * shape.w_out, shape.c_in, shape.c_out,
                                                 shape.kernel, shape.stride, dtype, arch=None))
            best_ms, best_cfg = baseline, None
            for cfg in CANDIDATES:
                try:
                    ms = timed(cfg)
                except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for this tile
                    print(f"  {cfg} failed: {type(e).__name__}", file=sys.stderr)
                    continue
                if ms < best_ms:
                    best_ms, best_cfg = ms, cfg
            if best_cfg:
                entries[key] = best_cfg
            print(f"{shape.label():45s} {dtype_name:8s} heuristic {baseline * 1e3:8.1f} us -> "
                  f"best {best_ms * 1e3:8.1f} us {best_cfg or '(heuristic kept)'}")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    print(f"wrote {len(entries)} entries to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
