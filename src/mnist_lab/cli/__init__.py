"""`mnist-lab`: data and the DVC remote (`cli.data`), experiments and their runs (`cli.experiments`), the
models: promote, predict, serve (`cli.models`), and the experiments page (`cli.board`). Each module holds its
commands' handlers and arguments; the work itself lives in the package's other layers."""

from __future__ import annotations

import argparse
import sys

from mnist_lab.cli import board, data, experiments, models
from mnist_lab.core.errors import MnistLabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for area in (data, experiments, models, board):
        area.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    import signal

    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `mnist-lab history | head` ends quietly
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except MnistLabError as exc:
        from mnist_lab.system.redact import redact

        # messages quote what git, DVC and servers said: URL credentials and secret values masked
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        from mnist_lab.system.redact import redact
        from mnist_lab.tracking.server import describe_store_failure

        message = describe_store_failure(exc)  # a server away or refusing: one line, not a traceback
        if message is None:
            raise
        print(f"error: {redact(message)}", file=sys.stderr)
        return 2
    return code or 0
