"""The CUDA family's sm_80+ conv kernel (csrc/conv_mma.cuh): its main loop per instantiation, from the
SASS of an nvcc compile — instructions per tensor-core instruction (HMMA) and the opcode mix, the
metric ``python -m hgnet_kernels aot`` reports for the Triton kernels. Needs nvcc (and cuobjdump:
the toolkit's or the Triton wheel's), no GPU: compiled, not run.

    python bench/cuda_sass.py [--archs 9.0 8.0] [--mix 8]
"""
import argparse

from hgnet_kernels.kernels.cuda import sass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["9.0", "8.0"], help="compute capabilities to compile for")
    parser.add_argument("--mix", type=int, default=8, help="opcodes of the mix to print, most frequent first")
    args = parser.parse_args()
    for arch in args.archs:
        print("\n".join(sass.format_report(arch, sass.mma_main_loops(arch), args.mix)))
        print()


if __name__ == "__main__":
    main()
