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
