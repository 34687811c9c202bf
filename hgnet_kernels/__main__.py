"""Command line: ``python -m hgnet_kernels verify|bench|plan|aot|warmup|tune`` (also installed as ``hgnet-kernels``).

User errors (bad arguments, a missing or unreadable weights file, a backend that cannot run here)
print one line saying what to do and exit with status 2; a failed check exits with 1.
"""
import sys


def main(argv=None) -> int:
    from . import __version__, aot, bench, plan_report, tune, verify, warmup
    from .backends import BackendUnavailable
    from .cli import Parser, UserError
    from .checkpoints import CheckpointError

    parser = Parser(prog="python -m hgnet_kernels", description="PP-HGNet fused inference: check and measure")
    parser.add_argument("--version", action="version", version=f"hgnet_kernels {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    verify.add_arguments(sub.add_parser("verify", help="fuse a model, compare with eager, time both"))
    bench.add_arguments(sub.add_parser("bench", help="end-to-end latency of every method, side by side"))
    plan_report.add_arguments(sub.add_parser("plan", help="the execution plan: shapes, MACs, bytes, roofline, grids"))
    aot.add_arguments(sub.add_parser("aot", help="compile every Triton launch for GPUs this machine lacks; read "
                                                 "registers, spills, wgmma use and the main loop"))
    warmup.add_arguments(sub.add_parser("warmup", help="compile kernels and capture graphs for a list of shapes "
                                                       "before traffic"))
    tune.add_arguments(sub.add_parser("tune", help="time one kernel family's launch configs for every layer of every "
                                                   "model on this GPU; write configs/<family>_<arch>.json"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argument error already printed
        return e.code if isinstance(e.code, int) else 2
    command = {"verify": verify.run, "bench": bench.run, "plan": plan_report.run, "aot": aot.run,
               "warmup": warmup.run, "tune": tune.run}[args.command]
    try:
        return command(args)
    except (UserError, CheckpointError, BackendUnavailable, FileNotFoundError, IsADirectoryError) as e:
        message = str(e).splitlines()
        print(f"{parser.prog} {args.command}: error: {message[0]}", file=sys.stderr)
        for line in message[1:6]:  # a CheckpointError lists each problem on its own line
            print(line, file=sys.stderr)
        if len(message) > 6:
            print(f"  ... and {len(message) - 6} more lines", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
