"""Command line: `python -m bench list` shows the models that can be benchmarked."""

from __future__ import annotations

import argparse
import sys

from models.config import PRESETS, describe, preset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the model presets")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in PRESETS:
            print(describe(preset(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
