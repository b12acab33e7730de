"""Running git and this environment's DVC as subprocesses: the one place that does it.

Every call has a time limit (`GIT_TIMEOUT_S`, `DVC_TIMEOUT_S`; `timeout=None` only for commands that run a
pipeline, which take as long as the pipeline does), and every failure becomes a `CommandError` whose message
names the command and its output with secrets masked: the tracking and DVC credentials of the environment
(`redact`) and any `secrets` the caller passes (a password given on the command line of a test or a URL)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.redact import mask_credentials, redact

GIT_TIMEOUT_S = 60.0  # a local git command: seconds even on a large history
DVC_TIMEOUT_S = 600.0  # a DVC command that is not a pipeline run (checkout, status, exp show, config)


class CommandError(MnistLabError):
    """A git or DVC command could not start, ran past its time limit, or (with `check=True`) failed."""


def executable(program: str) -> str:
    """`program` from this Python's environment (where `make venv` installs `dvc`), else from PATH; a path
    is used as it is."""
    if "/" in program:
        return program
    local = Path(sys.executable).with_name(program)
    return str(local) if local.exists() else program


def run(
    program: str,
    *args: str,
    cwd: Path | str | None = None,
    timeout: float | None = GIT_TIMEOUT_S,
    check: bool = False,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    input: str | bytes | None = None,
    text: bool = True,
    leaves_processes: bool = False,
) -> subprocess.CompletedProcess:
    """Run `program args` in `cwd` (text output unless `text=False`, captured unless `capture=False`, when it
    streams to this process's terminal; `input` goes to its stdin). A non-zero exit is returned as is unless
    `check`. `leaves_processes`: the command starts processes that outlive it (`dvc queue start`'s worker),
    which would hold a pipe open until they end; its output (stdout and stderr together) is read from a
    temporary file instead, so the call returns when the command itself does."""
    shown = _shown(" ".join([program, *args]), secrets)
    try:
        if leaves_processes:
            done = _run_leaving_processes([executable(program), *args], cwd, env, timeout)
        else:
            done = subprocess.run(
                [executable(program), *args],
                cwd=cwd,
                env=dict(env) if env is not None else None,
                capture_output=capture,
                text=text,
                input=input.encode() if isinstance(input, str) and not text else input,
                timeout=timeout,
                check=False,
            )
    except OSError as exc:
        raise CommandError(
            f"cannot run `{shown}` ({_shown(str(exc), secrets)}); install the environment with `make venv`"
        ) from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"`{shown}` did not finish within {timeout:.0f} s (in {cwd or '.'})") from None
    if check and done.returncode != 0:
        stderr, stdout = (
            (out.decode(errors="replace") if isinstance(out, bytes) else out or "")
            for out in (done.stderr, done.stdout)
        )
        output = (stderr.strip() or stdout.strip()) if capture else ""
        raise CommandError(
            f"`{shown}` failed (exit {done.returncode}): {_shown(output, secrets)}".rstrip(": ")
        )
    return done


def _run_leaving_processes(
    command: list[str], cwd: Path | str | None, env: Mapping[str, str] | None, timeout: float | None
) -> subprocess.CompletedProcess:
    import tempfile

    with tempfile.TemporaryFile() as output:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        output.seek(0)
        said = output.read().decode(errors="replace")
    return subprocess.CompletedProcess(command, done.returncode, stdout=said, stderr="")


def git(*args: str, cwd: Path | str | None, **options) -> subprocess.CompletedProcess:
    """`git args` in `cwd` (see `run`)."""
    return run("git", *args, cwd=cwd, **options)


def dvc(*args: str, cwd: Path | str | None = None, **options) -> subprocess.CompletedProcess:
    """This environment's `dvc args` in `cwd` (see `run`); the limit is DVC_TIMEOUT_S unless given."""
    options.setdefault("timeout", DVC_TIMEOUT_S)
    return run("dvc", *args, cwd=cwd, **options)


def git_output(*args: str, cwd: Path | str | None, **options) -> str | None:
    """The output of `git args`, or None when it fails (not a repository, no such revision or path)."""
    done = git(*args, cwd=cwd, **options)
    return done.stdout if done.returncode == 0 else None


def _shown(text: str, secrets: tuple[str, ...]) -> str:
    return redact(mask_credentials(text, secrets))
