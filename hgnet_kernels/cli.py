"""What the command line shares: argument types that reject bad values with a one-line message,
and the parser that prints user errors as one line with exit status 2 (no traceback)."""
from __future__ import annotations

import argparse
import sys
from typing import Tuple

import torch


class UserError(Exception):
    """A mistake in the command's arguments or inputs: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints the whole usage first
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def at_least(minimum: int, what: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{what}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def device(text: str) -> torch.device:
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu or cuda") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                                         "use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device type {parsed.type!r} is not supported; use cpu or cuda")
    return parsed


def image_size(text: str) -> Tuple[int, int]:
    """``224`` (square) or ``48x320`` (height × width), each at least 32 (the network downsamples by 32)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 48x320, got {text!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 32:
        raise argparse.ArgumentTypeError(f"must be H or HxW with both at least 32 (the network downsamples by 32), "
                                         f"got {text!r}")
    return size


def size_label(size: Tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
