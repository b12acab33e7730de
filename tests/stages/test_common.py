"""What every stage shares (stages/common.py): how a stage's process ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STAGE = textwrap.dedent(
    """
    import time

    from joblib import Parallel, delayed

    from mnist_lab.stages.common import main_for, stage_parser


    def body(context):
        # a grid search's way: joblib's process pool (loky), whose workers stay up for the next call; the
        # tasks last long enough for both workers to be up and waiting when the stage ends
        Parallel(n_jobs=2)(delayed(time.sleep)(0.3) for _ in range(4))
        print(Parallel(n_jobs=2)(delayed(abs)(-number) for number in range(4)))


    main_for("pool", stage_parser("a stage with a process pool"), body)
    """
)


def test_a_stage_that_used_a_process_pool_ends_at_once(tmp_path: Path) -> None:
    """main_for skips the interpreter's teardown but runs its exit handlers in its order: joblib's pool is
    stopped (a `threading` exit handler) before multiprocessing waits for its children (an `atexit` one).
    In the other order the stage waited for the idle workers to give up, 300 s later (the bound here is a
    hang check, not a timing)."""
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "[0, 1, 2, 3]", done.stderr


def _interrupted_body(swallowed: bool):
    import os
    import signal
    import time

    def body(context) -> None:
        if not swallowed:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the interrupt arrives here
        try:  # where Python drops an exception (a gc callback, as JAX's was when Ctrl-C landed in it)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        print("the body went on to its end")

    return body


def test_ctrl_c_in_a_stage_is_one_line_and_exit_130_even_when_the_interrupt_was_swallowed(capsys) -> None:
    from mnist_lab.stages.common import run_stage, stage_parser

    for swallowed in (False, True):
        code = run_stage("evaluate", stage_parser("a stage"), _interrupted_body(swallowed), argv=[])
        captured = capsys.readouterr()
        assert code == 130, (swallowed, captured)  # DVC stops the pipeline (it exited 0 and DVC went on)
        assert captured.err == "error: evaluate: interrupted\n"  # not a traceback
        assert ("the body went on to its end" in captured.out) == swallowed


INTERRUPTED_STAGE = textwrap.dedent(
    """
    import os, signal, sys, time

    from mnist_lab.stages.common import main_for, stage_parser

    def body(context):
        try:  # swallowed where Python drops exceptions, as in JAX's gc callback
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        print("the body went on to its end", flush=True)

    main_for("evaluate", stage_parser("a stage"), body)
    """
)


def test_a_stage_stopped_by_ctrl_c_ends_by_the_signal_unless_sigint_is_ignored(tmp_path: Path) -> None:
    """Killed by SIGINT (as Python ends after an uncaught KeyboardInterrupt), so that a shell script running
    stages stops there (it went on after an exit 130); a stage started with SIGINT ignored (`cmd &` in a
    script) is not stopped by it."""
    import signal

    script = tmp_path / "stage.py"
    script.write_text(INTERRUPTED_STAGE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGINT and done.stderr == "error: evaluate: interrupted\n", done.stderr

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    ignored = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, preexec_fn=ignore_sigint
    )
    assert ignored.returncode == 0 and ignored.stdout == "the body went on to its end\n", ignored.stderr
