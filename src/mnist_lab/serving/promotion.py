"""Promotion: move the registry's `champion` alias to the `challenger` only when it beats the champion on the
workspace's test data (same task, same data version), or move it back. Without a registry, the champion is
the experiment commit a git tag points at, its model from DVC.

Registering, loading and the registry's aliases live in `serving.registry`."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab import tracking
from mnist_lab.core.experiment_files import RegistryFile
from mnist_lab.serving.registry import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_TAG,
    PREVIOUS_CHAMPION_GIT_TAG,
    PREVIOUS_CHAMPION_TAG,
    PROMOTION_TAG,
    RegistryError,
    committed_model,
    git_stdout,
    load_sklearn_model,
    registry_available,
    registry_client,
    tagged_commit,
    version_by_alias,
    version_by_number,
)
from mnist_lab.system.files import read_experiment_file


@dataclass(frozen=True)
class PromotionDecision:
    """What `promote` compared and did; challenger and champion are labels: `v3` (a registry version) or a
    commit (without a registry)."""

    metric: str
    challenger: str
    challenger_value: float | None  # None: not scored on this test set (--force across tasks or sizes)
    champion: str | None
    champion_value: float | None
    promoted: bool
    reason: str
    decided_by: str = ""  # which test images the two models disagree on

    def table(self) -> str:
        def value(score: float | None) -> str:
            return f"{score:.6f}" if score is not None else "not scored on it"

        champion = f"{self.champion}: {value(self.champion_value)}" if self.champion else "none yet"
        decided = f"\n{self.decided_by}" if self.decided_by else ""
        return (
            f"{self.metric} on the workspace's test set: challenger {self.challenger}: "
            f"{value(self.challenger_value)}, champion {champion}{decided}\n{self.reason}"
        )


_DRY = "dry run, nothing changed: "


def _as_dry_run(reason: str, promoted: bool) -> str:
    """A decision's reason as a dry run says it: "dry run, nothing changed: would promote v2 to ..." (it
    said "it would be promoted: promoted v2 to ...")."""
    return _DRY + (reason.replace("promoted ", "would promote ", 1) if promoted else reason)


class OtherImageSize(RegistryError):
    """A model for another image size than the workspace's test set: args (what differs, why it matters)."""

    def __str__(self) -> str:
        return ": ".join(self.args)


def task_description(kind: str | None, positive_class: object) -> str:
    """`'multiclass'`, or `'binary' (positive class 5)`: a task as the messages name it."""
    return f"'{kind}'" + (f" (positive class {positive_class})" if kind == "binary" else "")


@dataclass(frozen=True)
class Score:
    """A model's test metrics and its predicted labels (which say on which images two models differ)."""

    metrics: dict[str, float]
    predicted: np.ndarray


def score_version(
    root: Path, model_name: str, version: str, test_pixels: np.ndarray, y_true: np.ndarray, binary: bool
) -> Score:
    """The test metrics of a registered version on (test_pixels, y_true)."""
    model = load_sklearn_model(root, f"models:/{model_name}/{version}")
    return _score(model, test_pixels, y_true, binary, f"v{version}")


def _decide(
    new: str,
    new_value: float | None,
    old: str | None,
    old_value: float | None,
    force: bool,
    min_delta: float = 0.0,
) -> tuple[bool, str]:
    """Whether challenger `new` replaces champion `old` (a score higher by more than `min_delta`, or
    `force`), and why. A value is None only with `force`: a model that cannot be scored on this test set."""
    if old is None:
        return True, f"promoted {new} to {CHAMPION}: there was no champion"
    if new_value is None or old_value is None:
        assert force, "only --force promotes a model that was not scored"
        return True, f"promoted {new} to {CHAMPION} (--force), not compared with {old}"
    margin = f" by more than {min_delta:g}" if min_delta else ""
    if new_value - old_value > min_delta:
        return True, f"promoted {new} to {CHAMPION}: it beats {old}{margin} (+{new_value - old_value:.6f})"
    if force:
        return True, f"promoted {new} to {CHAMPION} (--force), though it does not beat {old}{margin}"
    return (
        False,
        f"not promoted: {new} does not beat {old}{margin}, which stays {CHAMPION} (--force to promote "
        "anyway)",
    )


def decided_by(new: Score, old: Score, y_true: np.ndarray) -> str:
    """How many test images decided it: those only the challenger gets right, and only the champion."""
    new_right, old_right = new.predicted == y_true, old.predicted == y_true
    only_new, only_old = int(np.sum(new_right & ~old_right)), int(np.sum(old_right & ~new_right))
    return (
        f"decided by {only_new + only_old} of {len(y_true)} test images: {only_new} only the challenger "
        f"gets right, {only_old} only the champion"
    )


def _other_task(version, task: str, positive_class: int) -> str | None:
    """Why `version` cannot be scored on a test set of `task` (another task, or another positive class),
    or None."""
    tags = version.tags
    version_task = tags.get(f"{tracking.TAG_PREFIX}task")
    version_class = tags.get(f"{tracking.TAG_PREFIX}positive_class", "?")
    if version_task != task or (task == "binary" and version_class != str(positive_class)):
        return (
            f"v{version.version} was trained for task {task_description(version_task, version_class)}, not "
            f"this workspace's '{task}'"
        )
    return None


def _check_comparable(version, task: str, positive_class: int, data_version: str | None) -> None:
    tags = version.tags
    other_task = _other_task(version, task, positive_class)
    if other_task:
        raise RegistryError(
            f"{other_task}: the two cannot be compared on this test set (--force to promote anyway)"
        )
    version_data = tags.get(f"{tracking.TAG_PREFIX}data_version", "unknown")
    if data_version and version_data not in ("unknown", data_version):
        raise RegistryError(
            f"v{version.version} was trained on data version {version_data[:12]}, not the workspace's "
            f"{data_version[:12]} (data.dvc): scores on different data do not compare. Check out the "
            "data it was trained on, or --force to promote anyway"
        )


def workspace_version(root: Path, client: Any, model_name: str, store: str) -> str:
    """The version the experiment in the workspace registered (`registry.json`, written by `register`),
    checked to be that run's version in this tracking store (`store`: its URI, for the message)."""
    path = root / "registry.json"
    if not path.is_file():
        raise RegistryError(f"{path} is missing: `dvc repro` registers the workspace's best model")
    registration = read_experiment_file(path, RegistryFile)
    if not registration.registered or not registration.version:
        raise RegistryError(f"the workspace's best model is not registered ({registration.note or path})")
    version = version_by_number(client, model_name, registration.version)
    if version is None or (registration.run_id and version.run_id != registration.run_id):
        from mnist_lab.system.redact import display_uri

        raise RegistryError(
            f"registry.json names v{registration.version} of '{model_name}' (run {registration.run_id}), "
            f"which this tracking store ({display_uri(store)}) does not hold: the experiment was "
            "registered in another store (a fresh clone starts with an empty one). Log its models and "
            "register the best here with `dvc repro -f`"
        )
    return registration.version


def promote(
    root: Path,
    model_name: str,
    metric: str,
    test_pixels: np.ndarray,
    y_true: np.ndarray,
    task: str,
    positive_class: int,
    force: bool = False,
    min_delta: float = 0.0,
    dry_run: bool = False,
) -> PromotionDecision:
    """Move `champion` to the challenger if it scores higher by more than `min_delta` on `metric` than the
    champion on the same test data (or `force`); the new champion's version remembers the one it replaced.
    With `dry_run`, the same comparison and decision, and nothing moved or tagged.
    The challenger is the model of the experiment in the workspace (`registry.json`; the alias is moved
    back to it when a `dvc exp run` moved it), both versions trained for this task on this data version."""
    client, store = registry_client(root)
    # with --force too: it overrides the comparison, never which model is promoted (it promoted whatever
    # the alias named: another experiment's model, of another task, over the workspace's)
    ours = workspace_version(root, client, model_name, store)
    challenger = version_by_alias(client, model_name, CHALLENGER)
    new, moved = (str(challenger.version) if challenger is not None else None), ""
    if ours != new:
        # every `dvc exp run` (each queued experiment) registers its best model as the challenger: the
        # experiment in the workspace (the one applied, or run last here) is the one to promote; an alias
        # deleted by hand is put back on it (it said to run `dvc repro`, which then had nothing to do)
        was = (
            f"it was on v{new}, put there by another experiment's register or a promote in another "
            "checkout: to promote that one, `dvc exp apply` its experiment first"
            if new is not None
            else "it was on no version"
        )
        moved = (
            f"the {CHALLENGER} alias {'would go' if dry_run else 'is'} back on v{ours}, the workspace's "
            f"experiment (registry.json; {was}). "
        )
        challenger, new = version_by_number(client, model_name, ours), ours
    champion = version_by_alias(client, model_name, CHAMPION)
    if not force:
        data_version = tracking.data_version(root)
        for version in filter(None, (challenger, champion)):
            _check_comparable(version, task, positive_class, data_version)
    if moved and not dry_run:  # once the versions are known comparable: a refused promotion changes nothing
        client.set_registered_model_alias(model_name, CHALLENGER, new)
    binary = task == "binary"
    unscored: list[str] = []  # with --force: versions this test set cannot score, and why

    def scored(version: Any, challenging: bool = False) -> Score | None:
        if not force:
            return score_version(root, model_name, str(version.version), test_pixels, y_true, binary)
        why = _other_task(version, task, positive_class)
        if challenging or why is None:  # a champion promoted uncompared must still load (or stop here)
            model = load_sklearn_model(root, f"models:/{model_name}/{version.version}")
        if why is None:
            try:
                return _score(model, test_pixels, y_true, binary, f"v{version.version}")
            except OtherImageSize as exc:
                why = exc.args[0]
        unscored.append(why)
        return None

    new_score = scored(challenger, challenging=True)
    new_value = new_score.metrics[metric] if new_score else None
    old = str(champion.version) if champion is not None else None
    if old == new:
        return PromotionDecision(
            metric,
            f"v{new}",
            new_value,
            f"v{old}",
            new_value,
            False,
            f"{_DRY if dry_run else ''}{moved}v{new} is already the {CHAMPION}",
        )
    old_score = scored(champion) if champion is not None else None
    old_value = old_score.metrics[metric] if old_score else None
    promoted, reason = _decide(f"v{new}", new_value, f"v{old}" if old else None, old_value, force, min_delta)
    if unscored:
        reason += f" ({'; '.join(unscored)}: not scored on this test set)"
    if dry_run:
        reason = _as_dry_run(reason, promoted)
    elif promoted:
        if old is not None:
            client.set_model_version_tag(model_name, new, PREVIOUS_CHAMPION_TAG, old)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        client.set_model_version_tag(model_name, new, PROMOTION_TAG, f"{stamp} {reason}")
        client.set_registered_model_alias(model_name, CHAMPION, new)
    return PromotionDecision(
        metric, f"v{new}", new_value, f"v{old}" if old else None, old_value, promoted, moved + reason,
        decided_by(new_score, old_score, y_true) if old_score and new_score else "",
    )  # fmt: skip


def roll_back(root: Path, model_name: str) -> tuple[str, str]:
    """Move `champion` back to the version it replaced; returns (from version, to version)."""
    client, _ = registry_client(root)
    champion = version_by_alias(client, model_name, CHAMPION)
    if champion is None:
        raise RegistryError(f"'{model_name}' has no {CHAMPION} to roll back")
    previous = champion.tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RegistryError(
            f"{CHAMPION} v{champion.version} replaced no earlier champion: nothing to go back to"
        )
    if version_by_number(client, model_name, previous) is None:
        raise RegistryError(
            f"v{previous}, the {CHAMPION} before v{champion.version}, no longer exists in '{model_name}' "
            f"(deleted): {CHAMPION} stays v{champion.version}; to move it, `mnist-lab promote --force` "
            "promotes this workspace's version (registry.json), or set the alias in the MLflow UI"
        )
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # the audit trail: each version's last promotion tag says how it became (or stopped being) champion
    client.set_model_version_tag(
        model_name, previous, PROMOTION_TAG, f"{stamp} {CHAMPION} again: --rollback from v{champion.version}"
    )
    client.set_model_version_tag(
        model_name,
        str(champion.version),
        PROMOTION_TAG,
        f"{stamp} rolled back: v{previous} is {CHAMPION} again",
    )
    return f"v{champion.version}", f"v{previous}"


def _score(model: Any, test_pixels: np.ndarray, y_true: np.ndarray, binary: bool, label: str) -> Score:
    from mnist_lab.core.features import pixel_frame
    from mnist_lab.core.metrics import evaluate_predictions
    from mnist_lab.core.models import class_scores

    frame = pixel_frame(test_pixels.reshape(len(test_pixels), -1))
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and expected != frame.shape[1]:
        raise OtherImageSize(
            f"{label} takes images of {expected} pixels, the workspace's test set has {frame.shape[1]}",
            "models for another image size cannot be compared on it",
        )
    predicted = model.predict(frame)
    metrics = evaluate_predictions(
        y_true, predicted, class_scores(model, frame), list(model.classes_), binary
    )
    return Score(metrics.metrics, np.asarray(predicted))


def promote_commit(
    root: Path,
    metric: str,
    test_pixels: np.ndarray,
    y_true: np.ndarray,
    binary: bool,
    force: bool = False,
    min_delta: float = 0.0,
    dry_run: bool = False,
) -> PromotionDecision:
    """Without a registry: the challenger is the experiment committed at HEAD (its DVC-tracked best model),
    the champion the commit git tag `mnist-lab/champion` points at; the tag moves only if the challenger
    scores higher by more than `min_delta` on the same test data (or `force`), and
    `mnist-lab/champion-previous` keeps the last one."""
    from mnist_lab.experiments.linking import pipeline_status

    head = git_stdout(root, "rev-parse", "HEAD")
    changed = git_stdout(root, "status", "--porcelain", "--", "best_model.json", "dvc.lock", "params.yaml")
    if changed or pipeline_status(root):
        raise RegistryError(
            "without a registry the champion is an experiment commit: commit this experiment first "
            "(`dvc repro`, then `mnist-lab commit -m ...`)"
        )
    champion = tagged_commit(root, CHAMPION_TAG)
    _, challenger_model = committed_model(root, head)
    new, old = head[:12], champion[:12] if champion else None
    new_score = _score(challenger_model, test_pixels, y_true, binary, f"commit {new}")
    new_value = new_score.metrics[metric]
    if champion == head:
        return PromotionDecision(
            metric, new, new_value, old, new_value, False,
            f"{_DRY if dry_run else ''}{new} is already the {CHAMPION}",
        )  # fmt: skip
    old_score, unscored = None, ""
    if champion is not None:
        our_task, their_task = _committed_task(root, head), _committed_task(root, champion)
        other_task = (
            f"{CHAMPION} {old} was trained for task {their_task}, not this experiment's {our_task}"
            if their_task != our_task and "'?'" not in (their_task, our_task)
            else ""
        )
        if other_task and not force:
            raise RegistryError(
                f"{other_task}: the two cannot be compared on this test set (--force to promote anyway)"
            )
        if not force:
            ours, theirs = _committed_data_version(root, head), _committed_data_version(root, champion)
            if ours and theirs and ours != theirs:
                raise RegistryError(
                    f"{CHAMPION} {old} was trained on data version {theirs[:12]}, not this experiment's "
                    f"{ours[:12]} (data.dvc): scores on different data do not compare (--force to promote "
                    "anyway)"
                )
        if other_task:  # --force: promoted without a comparison
            unscored = f" ({other_task}: not scored on this test set)"
        else:
            try:
                old_score = _score(
                    committed_model(root, champion)[1], test_pixels, y_true, binary, f"commit {old}"
                )
            except OtherImageSize as exc:
                if not force:
                    raise
                unscored = f" ({exc.args[0]}: not scored on it)"
    old_value = old_score.metrics[metric] if old_score else None
    promoted, reason = _decide(new, new_value, old, old_value, force, min_delta)
    reason += unscored
    if dry_run:
        reason = _as_dry_run(reason, promoted)
    elif promoted:
        if champion is not None:
            git_stdout(root, "tag", "-f", PREVIOUS_CHAMPION_GIT_TAG, champion)
        git_stdout(root, "tag", "-f", "-a", CHAMPION_TAG, "-m", reason, head)
    return PromotionDecision(
        metric, new, new_value, old, old_value, promoted, reason,
        decided_by(new_score, old_score, y_true) if old_score else "",
    )  # fmt: skip


def _committed_task(root: Path, commit: str) -> str:
    """An experiment commit's task as its params.yaml sets it: `'multiclass'`, `'binary' (positive class
    5)`; `'?'` when the commit's params.yaml cannot be read."""
    import yaml

    from mnist_lab.core.errors import MnistLabError
    from mnist_lab.core.settings import load_params_yaml, parse_settings
    from mnist_lab.experiments.linking import run_git

    done = run_git(root, "show", f"{commit}:params.yaml", check=False)
    try:
        task = parse_settings(load_params_yaml(done.stdout), source=f"{commit[:12]}:params.yaml").task
    except (MnistLabError, yaml.YAMLError):  # params an older version wrote: not checked (scored as is)
        return "'?'"
    return task_description(task.kind, task.positive_class)


def _committed_data_version(root: Path, commit: str) -> str | None:
    """The data version (`data.dvc`'s hash) an experiment commit was run on."""
    from mnist_lab.experiments.linking import run_git

    done = run_git(root, "show", f"{commit}:data.dvc", check=False)
    from mnist_lab.datasets.folder import parse_data_version

    return parse_data_version(done.stdout) if done.returncode == 0 else None


def roll_back_commit(root: Path) -> tuple[str, str]:
    """Without a registry: move git tag `mnist-lab/champion` back to `mnist-lab/champion-previous`."""
    champion = tagged_commit(root, CHAMPION_TAG)
    previous = tagged_commit(root, PREVIOUS_CHAMPION_GIT_TAG)
    if champion is None:
        raise RegistryError(f"no {CHAMPION} to roll back (git tag {CHAMPION_TAG})")
    if previous is None:
        raise RegistryError(f"{CHAMPION} {champion[:12]} replaced no earlier champion: nothing to go back to")
    git_stdout(root, "tag", "-f", "-a", CHAMPION_TAG, "-m", f"rolled back from {champion[:12]}", previous)
    git_stdout(root, "tag", "-d", PREVIOUS_CHAMPION_GIT_TAG)
    return champion[:12], previous[:12]


def promote_champion(
    root: Path, force: bool = False, min_delta: float = 0.0, dry_run: bool = False
) -> tuple[str, PromotionDecision]:
    """`mnist-lab promote`: the challenger against the champion on the workspace's test set (params.yaml's
    task and selection metric), in the registry or, where the server has none, by git tags. Returns the
    registered model's name and what was decided (with `dry_run`: would be; nothing changed)."""
    from mnist_lab.core.data import task_labels
    from mnist_lab.core.settings import load_settings
    from mnist_lab.system.files import load_arrays

    settings = load_settings(root / "params.yaml")
    name = settings.registry.model_name
    with_registry = _announce_registry(root)
    prepared = load_arrays(root / "outputs" / "prepared.npz", ("test_pixels", "test_labels"))
    y_true = task_labels(prepared["test_labels"], settings.task.kind, settings.task.positive_class)
    if not with_registry:
        decision = promote_commit(
            root, settings.select.metric, prepared["test_pixels"], y_true, settings.task.kind == "binary",
            force=force, min_delta=min_delta, dry_run=dry_run,
        )  # fmt: skip
        return name, decision
    decision = promote(
        root,
        name,
        settings.select.metric,
        prepared["test_pixels"],
        y_true,
        settings.task.kind,
        settings.task.positive_class,
        force=force,
        min_delta=min_delta,
        dry_run=dry_run,
    )
    return name, decision


def roll_back_champion(root: Path) -> tuple[str, str, str]:
    """`mnist-lab promote --rollback`: (the registered model's name, the champion before, after)."""
    from mnist_lab.core.settings import load_settings

    name = load_settings(root / "params.yaml").registry.model_name
    before, after = roll_back(root, name) if _announce_registry(root) else roll_back_commit(root)
    return name, before, after


def _announce_registry(root: Path) -> bool:
    """Whether the tracking server has a Model Registry; says on stderr how promotion works without one. A
    remote server is checked first (seconds: one that hangs would hold MLflow's client ~2 minutes)."""
    from mnist_lab import tracking

    settings = tracking.TrackingSettings.from_environment(root)
    if settings.is_remote:
        tracking.check_server(settings, experiment_needed=False)
    if registry_available(root):
        return True
    print(
        f"note: this tracking server has no Model Registry: the {CHAMPION} is the experiment commit "
        f"git tag {CHAMPION_TAG} points at, its model from DVC",
        file=sys.stderr,
    )
    return False
