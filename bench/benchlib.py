"""Shared helpers for the benchmarks: a throw-away copy of the repository, timed subprocesses, tables.

Nothing here touches the repository itself: every command runs in a copy under a temporary directory,
with MLflow pointed at a sqlite store inside that copy.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent  # the virtual environment's bin (not resolved: that would leave it)
TIMINGS_ENV = "MNIST_LAB_TIMINGS"  # see src/mnist_lab/stages/common.py
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the Markdown tables."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


# --- timed subprocesses ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One finished process: wall seconds, peak resident memory (MB, its own or a waited-for child's)."""

    wall_s: float
    max_rss_mb: float
    returncode: int
    output: str


def run_timed(
    command: str | Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    check: bool = True,
) -> Timed:
    """Run `command` (a string goes through the shell, as DVC runs stage commands), timing its wall clock
    with perf_counter and reading its peak RSS from wait4."""
    shell = isinstance(command, str)
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, shell=shell, cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if check and process.returncode != 0:
        shown = command if shell else shlex.join(command)
        raise RuntimeError(f"`{shown}` failed with exit code {process.returncode}:\n{text[-4000:]}")
    return Timed(wall, usage.ru_maxrss / 1024, process.returncode, text)


def python_seconds(code: str, cwd: Path, env: Mapping[str, str]) -> float:
    """Run `code` with the environment's Python; it must print one number (seconds), which is returned."""
    done = run_timed([str(BIN_DIR / "python"), "-c", code], cwd, env)
    return float(done.output.strip().splitlines()[-1])


def import_seconds(statement: str, cwd: Path, env: Mapping[str, str], prelude: str = "") -> float:
    """In-process time of `statement` (an import) in a fresh interpreter, after `prelude` has run."""
    code = f"import time\n{prelude}\nt = time.perf_counter()\n{statement}\nprint(time.perf_counter() - t)"
    return python_seconds(code, cwd, env)


def importtime_by_package(module: str, cwd: Path, env: Mapping[str, str], top: int = 8) -> list[dict]:
    """`python -X importtime -c "import <module>"`, summed by top-level package (self time, seconds)."""
    done = run_timed([str(BIN_DIR / "python"), "-X", "importtime", "-c", f"import {module}"], cwd, env)
    totals: dict[str, float] = {}
    for line in done.output.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, _, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        package = name.split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(self_us) / 1e6
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return [{"package": name, "self_s": round(seconds, 3)} for name, seconds in ranked[:top]]


# --- the throw-away repository ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A fresh git repository holding the tracked files of this one, and the environment to run it with."""

    root: Path
    scratch: Path  # beside the copy: timing logs, the python shim
    env: dict[str, str]

    def run(self, command: str | Sequence[str], check: bool = True, **extra_env: str) -> Timed:
        return run_timed(command, self.root, {**self.env, **extra_env}, check=check)


def tracked_files(repo: Path = REPO_ROOT) -> list[Path]:
    """Files git tracks in `repo` (as they are in the working tree; deleted ones skipped)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True
    ).stdout.decode("utf-8")
    return [Path(name) for name in listing.split("\0") if name and (repo / name).is_file()]


def make_workspace(parent: Path) -> Workspace:
    """Copy the tracked files into `parent/repo`, make it a git repository with one commit and regenerate
    the default data with `mnist-lab data digits` (checked against data.dvc)."""
    root = parent / "repo"
    scratch = parent / "scratch"
    scratch.mkdir(parents=True)
    for relative in tracked_files():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "DVC_", "DAGSHUB_")) and key not in (TIMINGS_ENV, "PYTHONPATH")
    }
    env.update(GIT_IDENTITY)
    env.update(
        {
            "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(root / "src"),  # the copy's code, not the editable install's
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "DVC_NO_ANALYTICS": "1",
        }
    )
    workspace = Workspace(root, scratch, env)
    workspace.run(["git", "init", "-q"])
    workspace.run(["git", "add", "-A"])
    workspace.run(["git", "commit", "-q", "--no-gpg-sign", "-m", "benchmark copy"])
    workspace.run(["mnist-lab", "data", "digits"])
    return workspace


def init_mlflow_store(workspace: Workspace) -> float:
    """Create and migrate the workspace's sqlite store in one process (the first client pays migrations);
    returns the seconds it took, import of mlflow included."""
    code = (
        "import time\nt = time.perf_counter()\nimport mlflow\n"
        "mlflow.MlflowClient().search_experiments()\nprint(time.perf_counter() - t)"
    )
    return python_seconds(code, workspace.root, workspace.env)


# --- stages: their commands, and timing them inside `dvc repro` ------------------------------------------


def stage_commands(workspace: Workspace) -> list[tuple[str, str]]:
    """(stage, command) in execution order, as `dvc repro -f --dry` prints them (`foreach` expanded)."""
    dry = workspace.run(["dvc", "repro", "-f", "--dry"]).output
    commands: list[tuple[str, str]] = []
    stage = None
    for line in dry.splitlines():
        if line.startswith("Running stage '"):
            stage = line.split("'")[1]
        elif line.startswith("> ") and stage is not None:
            commands.append((stage, line[2:].strip()))
            stage = None
    if not commands:
        raise RuntimeError(f"no stage commands in `dvc repro -f --dry` output:\n{dry}")
    return commands


SHIM = """#!{python} -S
# Benchmark shim: runs the real interpreter and appends its wall time and peak RSS to a JSON-lines log.
import json, os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen([{python!r}, *sys.argv[1:]])
_, status, usage = os.wait4(process.pid, 0)
process.returncode = code = os.waitstatus_to_exitcode(status)
record = {{"argv": sys.argv[1:], "wall_s": time.perf_counter() - started,
          "max_rss_mb": usage.ru_maxrss / 1024, "returncode": code}}
with open({log!r}, "a", encoding="utf-8") as handle:
    handle.write(json.dumps(record) + "\\n")
sys.exit(code)
"""


def python_shim(directory: Path, log_path: Path, path: str) -> dict[str, str]:
    """Write a `python` into `directory` that times each stage process DVC starts (stage commands begin with
    `python`); returns the environment addition that puts it first on `path` (a PATH value)."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "python"
    shim.write_text(SHIM.format(python=str(BIN_DIR / "python"), log=str(log_path)), encoding="utf-8")
    shim.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{path}"}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shim_records_by_stage(path: Path, commands: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """The shim's records keyed by stage name, matched on the command's arguments."""
    by_argv = {tuple(shlex.split(command)[1:]): stage for stage, command in commands}
    records = {}
    for record in read_jsonl(path):
        stage = by_argv.get(tuple(record["argv"]))
        if stage is not None:
            records[stage] = record
    return records


@dataclass(frozen=True)
class Repro:
    """One timed `dvc repro`: its wall time and, per stage, the process (shim) and in-stage timings."""

    wall_s: float
    stages: dict[str, dict[str, Any]]  # stage -> {wall_s, max_rss_mb, compute_s, body_s}

    @property
    def dvc_s(self) -> float:
        """DVC's own share: the repro's wall time less its stage processes'."""
        return self.wall_s - sum(stage["wall_s"] for stage in self.stages.values())


def timed_repro(workspace: Workspace, commands: list[tuple[str, str]], label: str, *args: str) -> Repro:
    """`dvc repro <args>` with every stage process timed (shim) and its compute time recorded; stages cold."""
    shim_log = workspace.scratch / f"shim-{label}.jsonl"
    timings = workspace.scratch / f"timings-{label}.jsonl"
    for path in (shim_log, timings):
        path.unlink(missing_ok=True)
    extra = python_shim(workspace.scratch / "shim", shim_log, workspace.env["PATH"])
    # each stage cold, in its own process, so that the shim's wait4 sees the stage's peak memory (a warm
    # stage, src/mnist_lab/system/warm.py, is a child of the warm server instead)
    cold = {"MNIST_LAB_WARM_STAGES": "0"}
    done = workspace.run(["dvc", "repro", *args], **extra, **cold, **{TIMINGS_ENV: str(timings)})
    processes = shim_records_by_stage(shim_log, commands)
    inside = {record["stage"]: record for record in read_jsonl(timings)}
    stages = {}
    for stage, _ in commands:
        if stage in processes:
            stages[stage] = {
                "wall_s": processes[stage]["wall_s"],
                "max_rss_mb": processes[stage]["max_rss_mb"],
                "compute_s": inside.get(stage, {}).get("compute_s"),
                "body_s": inside.get(stage, {}).get("body_s"),
            }
    return Repro(done.wall_s, stages)


# --- reporting ----------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What the numbers were measured with."""
    versions = {}
    for package in ("dvc", "mlflow", "mlflow-skinny", "scikit-learn", "numpy", "scipy", "keras", "jax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def environment_line(env: Mapping[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items() if version)
    return f"Python {env['python']}, {env['cpus']} CPUs, {packages} ({env['date']})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; numbers in the first column are left-aligned, the rest right."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def fmt(seconds: float | None, digits: int = 2) -> str:
    return "–" if seconds is None else f"{seconds:.{digits}f}"


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "–"
    return f"{value / baseline:.1f}×"


def write_json(path: str | None, payload: Any, prefix: str) -> Path:
    """Write the raw numbers to `path`, or to a new temporary file; returns where they went."""
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".json")
        os.close(handle)
        target = Path(name)
    target.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return target
