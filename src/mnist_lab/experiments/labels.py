"""Labels on experiments (`hidden`, `champion`, `baseline`, anything short), kept in the committed
`labels.yaml` so they are versioned with the experiments: `experiment id -> [labels]`, where an id is a full
commit hash or `exp:<DVC experiment name>`. `mnist-lab label` and the experiments page both write it here."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.files import exclusive_lock, write_text_atomic

LABELS_FILE = "labels.yaml"
LABELS_LOCK = Path(".mnist-lab") / "labels.lock"  # git-ignored
HEADER = "# Labels of experiments (mnist-lab label / the experiments page): commit or exp:<name> -> labels\n"
LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


class LabelError(MnistLabError):
    """A label or a labels file that cannot be used."""


def read_labels(root: Path) -> dict[str, list[str]]:
    """`labels.yaml` as `id -> labels` (no file: no labels)."""
    path = root / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LabelError(f"{path} is not YAML ({exc}); fix it or remove it") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list | type(None)) for v in raw.values()):
        raise LabelError(f"{path} must map experiment ids to lists of labels (`<commit>: [hidden]`)")
    return {str(key): [str(label) for label in value or []] for key, value in raw.items()}


def set_label(root: Path, experiment: str, label: str, present: bool = True) -> list[str]:
    """Add (or with `present=False` remove) `label` on `experiment` (a full commit hash or `exp:<name>`) in
    labels.yaml, written atomically; returns the experiment's labels."""
    if not LABEL.fullmatch(label):
        raise LabelError(
            f"label {label!r}: use 1-32 lower-case letters, digits, '-', '_' or '.', starting with a letter "
            "or digit (say `hidden`, `champion`, `baseline`)"
        )
    with exclusive_lock(root / LABELS_LOCK):  # the page and the CLI may write at once: no label lost
        labels = read_labels(root)
        current = labels.get(experiment, [])
        updated = sorted({*current, label}) if present else [x for x in current if x != label]
        if updated:
            labels[experiment] = updated
        else:
            labels.pop(experiment, None)
        _write_labels(root, labels)
    return updated


def _write_labels(root: Path, labels: dict[str, list[str]]) -> None:
    """labels.yaml, atomically, its ids in order (the caller holds LABELS_LOCK)."""
    listed = dict(sorted(labels.items()))
    text = HEADER + (yaml.safe_dump(listed, sort_keys=False, default_flow_style=None) if labels else "")
    write_text_atomic(root / LABELS_FILE, text)


def move_labels(root: Path, source: str, target: str) -> list[str]:
    """The labels of experiment `source` moved onto experiment `target` (joined with its own), written
    atomically; returns those moved (none: labels.yaml untouched)."""
    with exclusive_lock(root / LABELS_LOCK):
        labels = read_labels(root)
        moved = labels.pop(source, [])
        if not moved:
            return []
        labels[target] = sorted({*labels.get(target, []), *moved})
        _write_labels(root, labels)
    return moved


def experiment_id(root: Path, revision: str) -> str:
    """The id labels.yaml keys `revision` by, as the experiments page shows it: `exp:<name>` for a DVC
    experiment (that exists), `run:<run id>` for a run no commit names, else the full hash of the commit
    `revision` names, which must be an experiment commit (one that changes dvc.lock or metrics.json: a label
    on another commit would show nowhere)."""
    from mnist_lab.experiments.linking import experiment_refs, resolve_commit
    from mnist_lab.system import commands

    if revision.startswith("exp:"):
        if revision[4:] not in {name for _, name in experiment_refs(root)}:
            raise LabelError(f"no DVC experiment {revision[4:]!r}: `dvc exp list --all-commits` names them")
        return revision
    if revision.startswith("run:"):
        if not re.fullmatch(r"run:[0-9a-f]{32}", revision):
            raise LabelError(f"{revision!r}: a run's id is run:<its 32-character MLflow run id>")
        return revision
    commit = resolve_commit(root, revision)
    named = [name for sha, name in experiment_refs(root) if sha == commit]
    if named and commands.git("merge-base", "--is-ancestor", commit, "HEAD", cwd=root).returncode != 0:
        return f"exp:{named[0]}"  # a DVC experiment's commit: the page shows it as exp:<name>
    last = commands.git_output("log", "-1", "--format=%H", commit, "--", "dvc.lock", "metrics.json", cwd=root)
    if (last or "").strip() != commit:
        follows = f"; the experiment it follows is {last.strip()[:12]}" if last and last.strip() else ""
        raise LabelError(
            f"{revision} ({commit[:12]}) is not an experiment commit: it changes neither dvc.lock nor "
            f"metrics.json{follows} (`mnist-lab history` lists them)"
        )
    return commit
