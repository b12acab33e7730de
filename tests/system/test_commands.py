"""Running commands (`system/commands.py`): a command that leaves a process running behind it (as `dvc queue
start` leaves DVC's worker) returns when it ends, with its output, not when the process it left does."""

from __future__ import annotations

import os
import signal

import pytest

from mnist_lab.system import commands

LEAVES_A_PROCESS = ("bash", "-c", "sleep 60 & echo started $!; echo said >&2")


def test_a_command_that_leaves_a_process_returns_with_its_output() -> None:
    done = commands.run(*LEAVES_A_PROCESS, timeout=20, leaves_processes=True)
    assert done.returncode == 0 and done.stdout.startswith("started ") and "said" in done.stdout
    os.kill(int(done.stdout.split()[1]), signal.SIGTERM)


def test_captured_through_a_pipe_it_would_wait_for_that_process() -> None:
    # why the option exists: the process left behind holds the pipe open, and the call waits for it
    with pytest.raises(commands.CommandError, match="did not finish within 3 s"):
        commands.run(*LEAVES_A_PROCESS, timeout=3)
