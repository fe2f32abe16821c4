"""Command line: `python -m openhcs_workflow demo [--plates N] [--wells N] [--fields N]
[--workers N] [--size PX] [--seed N] [--output DIR]`.

Exit status: 0 when every plate completed, 1 when a plate failed (or the demo could not
start), 2 for bad arguments, 130 when stopped with Ctrl-C. See `openhcs_workflow.demo`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from openhcs_workflow.demo import LIMITS, DemoOptions, main

__all__ = ["cli", "parser"]


def _bounded(name: str) -> Callable[[str], int]:
    low, high = LIMITS[name]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def parser() -> argparse.ArgumentParser:
    """The argument parser (`demo` is the one command)."""
    top = argparse.ArgumentParser(
        prog="python -m openhcs_workflow",
        description="Plate batch workflow: run the demo on synthetic plates.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = DemoOptions()
    demo = commands.add_parser(
        "demo",
        help="generate plates, start a loopback server, compile and run them with live progress",
        description=(
            "Generate seeded synthetic plates, start an execution server on 127.0.0.1, compile "
            "and run every plate with progress bars, then print a per-plate summary (objects "
            "counted against cells planted). Ctrl-C stops the batch cleanly."
        ),
    )
    options = (
        ("--plates", "plates", "number of plates"),
        ("--wells", "wells", "wells per plate"),
        ("--fields", "fields", "fields (images) per well"),
        ("--workers", "workers", "server worker processes"),
        ("--size", "size", "image width and height in pixels"),
        ("--seed", "seed", "seed of the plate generator"),
    )
    for flag, name, text in options:
        low, high = LIMITS[name]
        demo.add_argument(
            flag,
            type=_bounded(name),
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text}, {low}-{high} (default: %(default)s)",
        )
    demo.add_argument(
        "--output",
        metavar="DIR",
        help="a new or empty directory for plates and results (default: a fresh temporary one)",
    )
    return top


def cli(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the command; returns the exit status."""
    top = parser()
    args = top.parse_args(argv)
    try:
        options = DemoOptions(
            plates=args.plates,
            wells=args.wells,
            fields=args.fields,
            workers=args.workers,
            size=args.size,
            seed=args.seed,
            output=args.output,
        )
    except ValueError as exc:
        top.error(f"argument --{exc}")
    return main(options)


if __name__ == "__main__":
    sys.exit(cli())
