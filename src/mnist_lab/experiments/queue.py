"""DVC's experiment queue, for the experiments page: queue an experiment with params.yaml overrides (checked
by the typed settings first, with the same message as `mlflow run . -e train -P set=...`), start the queue,
read its status and follow a running experiment's output: the same `dvc exp run --queue -S`, `dvc queue
start`, `dvc queue status` and `dvc queue logs` a user runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.settings import load_params_yaml
from mnist_lab.experiments.labels import LABELS_FILE, LABELS_LOCK
from mnist_lab.experiments.linking import experiment_refs
from mnist_lab.experiments.project import check_overrides, override_arguments
from mnist_lab.system import commands
from mnist_lab.system.files import exclusive_lock, write_bytes_atomic

_QUEUED = re.compile(r"Queued experiment '([^']+)'")
_STATUS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(.+?)\s+(Queued|Running|Success|Failed|Revoked)\s*$")
_STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
_EPOCH_LINE = re.compile(r"^(\S+) epoch +(\d+)/(\d+): ")
LOG_LINES = 40  # of an experiment's output, shown on the page


class QueueError(MnistLabError):
    """DVC refused to queue or start an experiment."""


class NotQueued(QueueError):
    """No experiment of that name in DVC's queue."""


class NoSuchExperiment(QueueError):
    """No DVC experiment of that name (`dvc exp show` lists them)."""


def queue_experiment(root: Path, overrides: list[tuple[str, str]], name: str | None = None) -> str:
    """Check the overrides against the settings, then `dvc exp run --queue -S key=value ...`; returns the
    queued experiment's name. Nothing is queued when a value is wrong."""
    raw = load_params_yaml((root / "params.yaml").read_text(encoding="utf-8"))
    check_overrides(raw, None, overrides)
    if name and commands.git_output("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", cwd=root):
        # DVC reads a name as a git revision first: applying it would bring back that commit, not this
        raise QueueError(
            f"{name!r} is also a git revision of this repository (a branch, a tag, HEAD or a commit's "
            "hash): DVC would take it for that; choose another name"
        )
    if name:  # DVC would queue a second one and keep one of the two results
        tasks = {task["name"]: task["status"] for task in queue_status(root)}
        if tasks.get(name) in ("Failed", "Revoked"):
            raise QueueError(
                f"a {tasks[name].lower()} experiment in DVC's queue is named {name!r}: remove it (`dvc queue "
                f"remove {name}`; `dvc queue logs {name}` shows why it failed) or choose another name"
            )
        if name in tasks or name in {ref for _, ref in experiment_refs(root)}:
            raise QueueError(
                f"an experiment named {name!r} exists already (queued, or run: `dvc exp list --all-commits` "
                "lists them): choose another name, or leave it out for DVC to make one"
            )
    command = ["exp", "run", "--queue", *(["-n", name] if name else [])]
    for argument in override_arguments(overrides):
        command += ["-S", argument]
    done = commands.dvc(*command, cwd=root)
    queued = _QUEUED.search(done.stdout + done.stderr)
    if done.returncode != 0 or not queued:
        raise QueueError(f"`dvc {' '.join(command)}` failed: {(done.stderr or done.stdout).strip()[-600:]}")
    return queued.group(1)


def start_queue(root: Path, jobs: int = 1) -> str:
    """`dvc queue start -j jobs`: DVC's workers run the queued experiments in the background (this returns at
    once: the worker does not hold this call's output open until the queue is done). DVC starts
    each worker as `dvc` from PATH: this environment's bin goes first, or a board started as
    `.venv/bin/mnist-lab board` (PATH without the environment) would start workers that die at once."""
    dvc = Path(commands.executable("dvc"))
    env = dict(os.environ)
    if dvc.is_absolute():
        env["PATH"] = f"{dvc.parent}{os.pathsep}{env.get('PATH', '')}"
    done = commands.dvc("queue", "start", "-j", str(jobs), cwd=root, env=env, leaves_processes=True)
    if done.returncode != 0:
        raise QueueError(f"`dvc queue start` failed: {(done.stderr or done.stdout).strip()[-600:]}")
    return (done.stdout or done.stderr).strip()


def queue_status(root: Path) -> list[dict[str, str]]:
    """`dvc queue status` as rows: task, name, created, status (Queued, Running, Success, Failed)."""
    done = commands.dvc("queue", "status", cwd=root)
    if done.returncode != 0:
        raise QueueError(f"`dvc queue status` failed: {(done.stderr or done.stdout).strip()[-600:]}")
    rows = []
    for line in done.stdout.splitlines():
        match = _STATUS_LINE.match(line.strip())
        if match and match.group(1) != "Task":
            task, name, created, status = match.groups()
            rows.append({"task": task, "name": name, "created": created, "status": status})
    return rows


def apply_experiment(root: Path, name: str) -> None:
    """`dvc exp apply <name>`: the experiment's params, code and results into the workspace, refused while
    the workspace has uncommitted changes to tracked files (they would be overwritten), and NoSuchExperiment
    for a name DVC has no experiment of (an experiment applied before is not one any more). labels.yaml is not
    the experiment's: it stays as it is (an experiment queued before it existed would delete it, one queued
    before a label was set would take the label back), uncommitted changes to it included."""
    found = [sha for sha, ref in experiment_refs(root) if ref == name]
    if not found:
        raise NoSuchExperiment(f"no experiment 'exp:{name}': `dvc exp show` lists them")
    if len(found) > 1:
        raise QueueError(
            f"{len(found)} experiments are named {name!r} (run on different commits: "
            f"{', '.join(sha[:12] for sha in found)}): apply one by its commit (`dvc exp apply <commit>`)"
        )
    experiment = found[0]
    changed = commands.git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){LABELS_FILE}",
        cwd=root, check=True,
    ).stdout  # fmt: skip
    if changed.strip():
        files = ", ".join(line[3:] for line in changed.splitlines()[:5])
        raise QueueError(
            f"the workspace has uncommitted changes ({files}): commit or stash them before applying {name}"
        )
    _refuse_undoing_newer_commits(root, name, experiment)
    labels = root / LABELS_FILE
    with exclusive_lock(root / LABELS_LOCK):  # a label set meanwhile (`mnist-lab label`) is not lost
        kept = labels.read_bytes() if labels.is_file() else None
        try:  # by its commit: DVC reads a name as a git revision first (a branch, a tag, a hash prefix)
            done = commands.dvc("exp", "apply", experiment, cwd=root)
        finally:  # also when DVC fails to finish, or Ctrl-C
            if kept is None:
                labels.unlink(missing_ok=True)  # none before: none brought back with the experiment either
            elif not labels.is_file() or labels.read_bytes() != kept:
                write_bytes_atomic(labels, kept)
    if done.returncode != 0:
        raise QueueError(f"`dvc exp apply {name}` failed: {(done.stderr or done.stdout).strip()[-600:]}")


def _refuse_undoing_newer_commits(root: Path, name: str, experiment: str) -> None:
    """An experiment (commit `experiment`) run on an older commit brings that commit's inputs back with its
    own: applied on a HEAD that changed them since, it would silently undo those commits."""
    baseline = commands.git_output("rev-parse", f"{experiment}^", cwd=root)
    if baseline and (changed := inputs_changed_since(root, baseline.strip())):
        raise QueueError(undoing_message(name, baseline.strip(), changed))


APPLY_INPUTS = ("params.yaml", "dvc.yaml", "data.dvc", "src")


def inputs_changed_since(root: Path, baseline: str, head: str | None = None) -> list[str]:
    """The experiment inputs (APPLY_INPUTS) that HEAD (or `head`) changed since commit `baseline`."""
    head = head or (commands.git_output("rev-parse", "HEAD", cwd=root) or "").strip()
    if not head or baseline == head:
        return []
    changed = commands.git_output("diff", "-z", "--name-only", baseline, head, "--", *APPLY_INPUTS, cwd=root)
    return [path for path in (changed or "").split("\0") if path]  # paths with spaces, as they are


def undoing_message(name: str, baseline: str, changed: list[str]) -> str:
    """Why experiment `name`, run on `baseline`, is not applied: HEAD changed `changed` since."""
    return (
        f"{name} was run on {baseline[:12]}, and HEAD has changed its inputs since "
        f"({', '.join(changed[:5])}): applying it would undo that. Run it again on HEAD (`dvc exp run` with "
        f"its -S values), or check out {baseline[:12]} first"
    )


def experiment_output(root: Path, name: str) -> dict[str, object]:
    """What a queued experiment has printed so far (`dvc queue logs <name>`), for following it while it
    runs: `started` (False while it waits in the queue), `stage` (the stage running, or the last one run),
    `epoch` (the last per-epoch line of a network's training: model, epoch, epochs, the line) and the last
    LOG_LINES lines. Refused for a name the queue does not have."""
    if name not in {task["name"] for task in queue_status(root)}:
        raise NotQueued(f"no experiment named {name!r} in DVC's queue (`dvc queue status` lists them)")
    done = commands.dvc("queue", "logs", "--", name, cwd=root)
    said = (done.stderr or "") + (done.stdout or "")
    if done.returncode != 0:
        if "has not been started" in said:
            return {"started": False, "stage": None, "epoch": None, "lines": []}
        if "No output logs found" in said and "likely failed" not in said:  # started, nothing written yet
            return {"started": True, "stage": None, "epoch": None, "lines": []}
        raise QueueError(f"`dvc queue logs {name}` failed: {said.strip()[-600:]}")
    return {"started": True, **output_progress(done.stdout)}


def output_progress(text: str) -> dict[str, object]:
    """The stage, the last epoch line and the last LOG_LINES lines of a pipeline's output. A progress bar
    redraws its line with carriage returns: only what it drew last counts."""
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    stage = epoch = None
    for line in lines:
        if found := _STAGE_LINE.match(line):
            stage, epoch = found.group(1), None  # an epoch line belongs to the stage that printed it
        elif found := _EPOCH_LINE.match(line):
            model, number, epochs = found.groups()
            epoch = {"model": model, "epoch": int(number), "epochs": int(epochs), "line": line}
    return {"stage": stage, "epoch": epoch, "lines": lines[-LOG_LINES:]}
