"""`mnist-lab`: data and the DVC remote (`cli.data`), experiments and their runs (`cli.experiments`), the
models: promote, predict, serve (`cli.models`), and the experiments page (`cli.board`). Each module holds its
commands' handlers and arguments; the work itself lives in the package's other layers."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from mnist_lab.cli import board, data, experiments, models
from mnist_lab.core.errors import MnistLabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for area in (data, experiments, models, board):
        area.add_commands(commands)
    return parser


def _reader_left() -> bool:
    """Whether this process's stdout or stderr is a pipe whose reader has gone (poll reports an error)."""
    import select

    for stream in (sys.stdout, sys.stderr):
        try:
            poller = select.poll()
            poller.register(stream.fileno(), select.POLLOUT)
            if any(event & select.POLLERR for _, event in poller.poll(0)):
                return True
        except (OSError, ValueError, AttributeError):  # closed, or not a real file (a test's capture)
            continue
    return False


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (the terminal closed), unwound as Ctrl-C is (see main); args[0]: the signal."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def quiet_progress_bars() -> None:
    """No MLflow download bars where stderr is no terminal (a log, CI, a pipe): each bar's redraws are
    lines of noise there. A value set in the environment wins."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        terminal = False
    if not terminal:
        os.environ.setdefault(PROGRESS_BAR_ENV, "false")


def main(argv: list[str] | None = None) -> int:
    import signal

    if argv is None:
        # `kill` (SIGTERM) unwinds like Ctrl-C: half-written outputs and temporary folders are removed by
        # the code that made them, as on any error (the default action ended the process on the spot)
        signal.signal(signal.SIGTERM, _terminated)
        # the terminal closed (SIGHUP) likewise: it left a predict's partial output beside the real one;
        # unless the caller ignores it (`nohup mnist-lab ...`)
        if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
            signal.signal(signal.SIGHUP, _terminated)
    args = build_parser().parse_args(argv)
    quiet_progress_bars()
    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at the interpreter's exit
    except BrokenPipeError:
        if not _reader_left():
            raise  # another pipe or socket (a server's connection): an error like any other
        # `mnist-lab history | head`: the reader left. The command stopped where it was, cleaning up as on
        # any error; nothing more is written to the closed pipe (Python's own advice, `signal` docs)
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) cannot be written to: EIO
            print("terminated" if terminated else "interrupted", file=sys.stderr)
        signum = (
            int(exc.args[0]) if terminated and exc.args else (signal.SIGTERM if terminated else signal.SIGINT)
        )
        return 128 + signum  # as a shell reports it: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
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
