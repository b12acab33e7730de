"""What every stage shares: argument parsing, error reporting, timing and atomic array/object files."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.settings import Settings, load_settings
from mnist_lab.system.redact import redact

# benchmarks and tests set it to a file that collects, per stage, its compute time and this package's modules
# it loaded (a test checks that dvc.yaml makes each stage depend on all of them)
TIMINGS_ENV = "MNIST_LAB_TIMINGS"
INTERRUPTED = 130  # run_stage's status after Ctrl-C (128 + SIGINT); main_for then ends by the signal itself


def stage_parser(description: str, model_argument: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    if model_argument:
        parser.add_argument("model", help="model name: a key of `models` in params.yaml")
    parser.add_argument(
        "--params", default="params.yaml", type=Path, help="settings file (default: params.yaml)"
    )
    return parser


class StageContext:
    """Handed to a stage's body: its settings and a timer for the part that is the stage's own work."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.compute_seconds = 0.0
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.args.params)
        return self._settings

    @contextmanager
    def compute(self) -> Iterator[None]:
        """Time the stage's own computation (as opposed to start-up, imports, I/O and tracking)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.compute_seconds += time.perf_counter() - started


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread: results then do not depend on the machine's core count (a BLAS reduction's order
    does), and OpenBLAS's spinning threads cannot stall under contention (an MLP epoch ran about 3x faster
    with one thread on 2 busy cores: README, Performance). Models parallelise elsewhere (forests)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextmanager
def _interrupts() -> Iterator[list[int]]:
    """Record every SIGINT while the body runs (and raise KeyboardInterrupt as Python does). Python drops
    an exception raised inside a garbage-collector callback: a Ctrl-C that landed in JAX's, while the
    evaluate stage was logging, printed "Exception ignored in: <function _xla_gc_callback>" and the stage
    went on and exited 0, so DVC (which ignores SIGINT while a stage runs) ran the rest of the pipeline.
    The record (a non-empty list) lets the stage fail anyway."""
    received: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):  # another thread, or SIGINT ignored (`cmd &` in a script, where Ctrl-C is not for it) or handled
        yield received
        return

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def run_stage(
    name: str,
    parser: argparse.ArgumentParser,
    body: Callable[[StageContext], None],
    argv: list[str] | None = None,
) -> int:
    """Parse arguments, run `body`, turn a MnistLabError into one clear message and exit code 2, and Ctrl-C
    (SIGINT) into one line and exit code 130, also where the interrupt was swallowed (see _interrupts)."""
    args = parser.parse_args(argv)
    context = StageContext(name if not getattr(args, "model", None) else f"{name}@{args.model}", args)
    started = time.perf_counter()
    try:
        with single_threaded_blas(), _interrupts() as interrupted:
            body(context)
        if interrupted:  # raised where Python drops exceptions (a gc callback): the stage must still fail
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        print(f"error: {context.name}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except MnistLabError as exc:
        print(f"error: {context.name}: {redact(str(exc))}{_outputs_removed(context.name)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from mnist_lab.tracking.server import describe_store_failure

        message = describe_store_failure(exc)  # a server refusing a request mid-run: one line
        if message is None:
            raise
        print(f"error: {context.name}: {redact(message)}", file=sys.stderr)
        return 2
    timings = os.environ.get(TIMINGS_ENV)
    if timings:
        record = {
            "stage": context.name,
            "pid": os.getpid(),
            "ppid": os.getppid(),  # a warm server's pid when the stage ran warm (system/warm.py)
            "compute_s": round(context.compute_seconds, 4),
            "body_s": round(time.perf_counter() - started, 4),
            "modules": loaded_package_files(),
        }
        with open(timings, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return 0


def _outputs_removed(stage: str) -> str:
    """Under DVC, which removed the stage's outputs just before running it (but `validate`'s and `code`'s,
    which it keeps): how to get the last good run's back. `dvc checkout` brings back only those in its
    cache; those git keeps (`cache: false`: reports/, metrics.json, best_model.json...) come from git."""
    if not os.environ.get("DVC_ROOT") or stage.partition("@")[0] in ("validate", "code"):
        return ""
    return (
        f"\n  (DVC removed its outputs before running it: `dvc checkout {stage}` brings back those in the "
        "DVC cache, `git checkout -- <file>` those git keeps, which `git status` lists as deleted)"
    )


def keep_compiled_programs(variable: str) -> None:
    """Have a CNN this process trains or loads keep XLA's compiled programs in the user's cache directory,
    unless the environment `variable` (core/cnn.py's COMPILE_CACHE_ENV: the stages that may meet a CNN pass
    it, so that the others do not run core/cnn.py, see system/sources.py) names another or "0". Outside the
    repository: a cache, not a result (the same programs give the same results). Call before the first
    Keras import."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ.setdefault(variable, os.path.join(base, "mnist-lab", "jax"))


def loaded_package_files() -> list[str]:
    """The files of this package's modules loaded in this process, relative to the repository (`src/...`)."""
    package = Path(str(sys.modules[__name__.partition(".")[0]].__file__)).parent
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).is_relative_to(package):
            files.add(f"src/{package.name}/{Path(path).relative_to(package).as_posix()}")
    return sorted(files)


def main_for(name: str, parser: argparse.ArgumentParser, body: Callable[[StageContext], None]) -> None:
    """The `__main__` of a stage: run it, then exit without tearing the interpreter down.

    With scikit-learn, pandas and MLflow loaded, CPython's module teardown takes about a second (README,
    Performance) and does nothing useful for a process that is about to end: every output was written and
    closed by then. Exit handlers still run, in the interpreter's own order; only the teardown is skipped.

    That order matters: the interpreter first runs the handlers registered with `threading` (and waits for
    its non-daemon threads), then `atexit`'s. joblib's process pool (a grid search's workers) stops its
    workers from a `threading` handler, and `multiprocessing`'s `atexit` handler waits for every child: run
    alone, it waited for the idle workers until they gave up, 300 s later."""
    code = run_stage(name, parser, body)
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls at exit, before atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if code == INTERRUPTED:
        # end by the signal, as Python does after an uncaught KeyboardInterrupt: a shell running a script
        # stops at a command killed by SIGINT, but goes on after one that merely exited 130
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)
