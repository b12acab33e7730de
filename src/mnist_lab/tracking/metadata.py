"""What a run is tagged with: git state, the data version, the DVC experiment, the run's name, and the
pinned requirements of the logged model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.system import commands
from mnist_lab.tracking.config import MODEL_REQUIREMENTS, PARENT_RUN_TAG, TAG_PREFIX


def _git(root: Path, *args: str) -> str | None:
    """git's output, or None when git fails, is missing or hangs: a run is still logged, with fewer tags."""
    try:
        return commands.git_output(*args, cwd=root, timeout=30)
    except commands.CommandError:
        return None


def pipeline_output_globs(root: Path) -> list[str]:
    """Git pathspec globs of everything `dvc.yaml` writes (plus `dvc.lock`): changes there do not make a
    tree dirty, since a run in progress rewrites them."""
    try:
        pipeline = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ["dvc.lock"]
    globs = {"dvc.lock"}
    for stage in (pipeline.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        for section in ("outs", "metrics", "plots"):
            for entry in body.get(section) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if isinstance(path, str):
                    globs.add(_template_to_glob(path))
    return sorted(globs)


def _template_to_glob(path: str) -> str:
    out, rest = [], path
    while "${" in rest:
        before, _, after = rest.partition("${")
        out.append(before + "*")
        rest = after.partition("}")[2]
    out.append(rest)
    return "".join(out)


@dataclass(frozen=True)
class GitState:
    commit: str | None
    branch: str | None
    dirty: bool
    changed_paths: tuple[str, ...] = ()


# New files that can change what the pipeline makes (a module the code imports, a first params.yaml): an
# untracked file elsewhere (`dvc plots show`'s HTML, a batch prediction's CSV, notes) leaves a run clean
UNTRACKED_THAT_COUNT = ("src/", "params.yaml", "dvc.yaml")


def git_state(root: Path) -> GitState:
    """HEAD, branch and whether files other than pipeline outputs (and labels.yaml) differ from HEAD:
    tracked files changed, or new files where they can change a result (UNTRACKED_THAT_COUNT)."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    excludes = [f":(exclude,glob){glob}" for glob in pipeline_output_globs(root)]
    excludes.append(":(exclude)labels.yaml")  # labels are about experiments, not inputs to one
    # -z: names as they are (without it, git quotes one with a space or an accent: `"src/a b.py"`)
    status = _git(root, "status", "--porcelain", "-z", "--no-renames", "--untracked-files=normal", "--", ".",
                  *excludes)  # fmt: skip
    changed = tuple(
        entry[3:]  # "XY path"
        for entry in (status or "").split("\0")
        if len(entry) > 3 and (not entry.startswith("??") or entry[3:].startswith(UNTRACKED_THAT_COUNT))
    )
    return GitState(
        commit=commit, branch=None if branch == "HEAD" else branch, dirty=bool(changed), changed_paths=changed
    )


def uncommitted_diff(root: Path) -> str:
    """What differs from HEAD outside the pipeline's outputs: `git diff HEAD` plus the untracked files'
    names, attached to runs from a dirty tree so they can be understood and reproduced later."""
    excludes = [f":(exclude,glob){glob}" for glob in pipeline_output_globs(root)]
    diff = _git(root, "diff", "HEAD", "--", ".", *excludes) or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", ".", *excludes) or ""
    if untracked.strip():
        diff += "\n# untracked files (not included above):\n" + "".join(
            f"#   {p}\n" for p in untracked.split()
        )
    return diff


def data_version(root: Path, dvc_file: str = "data.dvc") -> str | None:
    """The md5 that `data.dvc` records for the data directory (None: no such file, or not a .dvc file)."""
    from mnist_lab.datasets.folder import parse_data_version

    path = root / dvc_file
    return parse_data_version(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_tags(root: Path, model_name: str, model_type: str, task: str) -> dict[str, str]:
    """Tags linking a run to its code, data and experiment."""
    state = git_state(root)
    tags = {
        f"{TAG_PREFIX}model": model_name,
        f"{TAG_PREFIX}model_type": model_type,
        f"{TAG_PREFIX}task": task,
        f"{TAG_PREFIX}git_dirty": str(state.dirty).lower(),
        f"{TAG_PREFIX}data_version": data_version(root) or "unknown",
    }
    if state.commit:
        tags[f"{TAG_PREFIX}git_commit"] = state.commit
        tags["mlflow.source.git.commit"] = state.commit
    if state.branch:
        tags[f"{TAG_PREFIX}git_branch"] = state.branch
        tags["mlflow.source.git.branch"] = state.branch
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        tags[f"{TAG_PREFIX}dvc_exp_name"] = experiment
    project_run = os.environ.get("MLFLOW_RUN_ID")  # inside `mlflow run .`: nest under the project's run
    if project_run:
        tags[PARENT_RUN_TAG] = project_run
    return tags


def run_name(model_name: str, tags: Mapping[str, str]) -> str:
    """`<model>@<DVC experiment>` inside `dvc exp run`, else `<model>@<source commit, 8 characters>` (with
    `+dirty` for a tree with uncommitted changes): runs of one model are told apart in MLflow's lists."""
    experiment = tags.get(f"{TAG_PREFIX}dvc_exp_name")
    if experiment:
        return f"{model_name}@{experiment}"
    commit = tags.get(f"{TAG_PREFIX}git_commit")
    if not commit:
        return model_name
    dirty = "+dirty" if tags.get(f"{TAG_PREFIX}git_dirty") == "true" else ""
    return f"{model_name}@{commit[:8]}{dirty}"


def model_requirements(model: Any) -> tuple[str, ...]:
    """The packages a logged model needs: scikit-learn's stack, and what the model adds (Keras for a CNN)."""
    return (*MODEL_REQUIREMENTS, *getattr(model, "runtime_packages", ()))


def pinned_requirements(packages: Sequence[str] = MODEL_REQUIREMENTS) -> list[str]:
    """`name==version` for the installed packages, for the model's explicit pip requirements."""
    return [f"{name}=={metadata.version(name)}" for name in packages]
