"""Command line: ``python -m hgnet_kernels verify|bench``."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hgnet_kernels",
                                     description="PP-HGNet fused inference: check and measure")
    sub = parser.add_subparsers(dest="command", required=True)
    from . import bench, verify
    verify.add_arguments(sub.add_parser("verify", help="fuse a model, compare with eager, time both"))
    bench.add_arguments(sub.add_parser("bench", help="end-to-end latency of every method, side by side"))
    args = parser.parse_args(argv)
    if args.command == "verify":
        return verify.run(args)
    if args.command == "bench":
        return bench.run(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
