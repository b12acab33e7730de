"""`mnist-lab compare A [B]`: two experiments (revisions, or the workspace) side by side: params, metrics
with deltas, whether the data changed, which code changed, and their MLflow runs; and a warning for a side
whose results are not what its params, data and code make (a dirty commit, a workspace not rerun)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_lab.datasets.folder import parse_data_version
from mnist_lab.experiments.linking import (
    LinkingError,
    RunLink,
    experiment_refs,
    pipeline_status,
    resolve_commit,
    runs_of_commit,
    workspace_links,
)
from mnist_lab.experiments.table import read_blobs, stale_results
from mnist_lab.system import commands
from mnist_lab.system.commands import dvc

CODE_PATHS = ("src", "dvc.yaml", "pyproject.toml", "requirements.lock")
WORKSPACE = "workspace"


@dataclass
class Comparison:
    old: str
    new: str
    params: dict[str, dict[str, Any]]  # key -> {"old", "new"}
    metrics: dict[str, dict[str, Any]]  # key -> {"old", "new", "diff"}
    data: dict[str, str | None]  # {"old", "new"} data versions
    code_changed: list[str]
    runs: dict[str, list[dict[str, Any]]]  # "old"/"new" -> links
    # "old"/"new" -> why its results are not what its own files make (empty: they are): a commit's files
    # that dvc.lock disagrees with (as `history` shows), or the workspace's `dvc status` before a rerun
    stale: dict[str, list[str]]


def _data_version(root: Path, revision: str | None) -> str | None:
    if revision is None:
        text = (root / "data.dvc").read_text() if (root / "data.dvc").is_file() else None
    else:
        text = commands.git_output("show", f"{revision}:data.dvc", cwd=root)
    return parse_data_version(text)


def _dvc_json(root: Path, *args: str) -> dict:
    done = dvc(*args, "--json", cwd=root)
    if done.returncode != 0:
        raise LinkingError(f"dvc {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout or "{}")


def _runs(root: Path, revision: str | None) -> list[RunLink]:
    """The runs of `revision` (None: the workspace's); a run that waited in the outbox and was sent from this
    clone since has its id (this clone's ledger: offline), not `pending`."""
    from mnist_lab.tracking.outbox import sent_runs

    if revision is None:
        try:
            links = workspace_links(root)
        except LinkingError:
            return []
    else:
        links = runs_of_commit(root, revision)
    sent = sent_runs(root)
    return [RunLink(link.model, link.run_id or sent.get(link.record_id), link.record_id) for link in links]


def experiment_commit(root: Path, revision: str) -> str:
    """The commit `revision` names: a git revision, or a DVC experiment's name (`exp:` before it or not),
    as `dvc exp show` prints it."""
    try:
        return resolve_commit(root, revision)
    except LinkingError:
        name = revision.removeprefix("exp:")
        found = {sha for sha, ref in experiment_refs(root) if ref == name}
        if len(found) == 1:
            return found.pop()
        if found:
            raise LinkingError(
                f"'{revision}' is ambiguous: {len(found)} DVC experiments are named {name!r} (run on "
                f"different commits): give one's commit ({', '.join(sorted(sha[:12] for sha in found))})"
            ) from None
        raise LinkingError(
            f"'{revision}' is neither a commit of this repository nor a DVC experiment's name (try "
            "`mnist-lab history` or `dvc exp list --all-commits`)"
        ) from None


def compare(root: Path, old: str, new: str | None = None) -> Comparison:
    """Compare revision `old` with revision `new`, or with the workspace when `new` is None."""
    old_commit = experiment_commit(root, old)
    new_commit = experiment_commit(root, new) if new else None
    revisions = [old_commit, *([new_commit] if new_commit else [])]
    params = {
        key: {"old": v["old"], "new": v["new"]}
        for entries in _dvc_json(root, "params", "diff", *revisions).values()
        for key, v in entries.items()
    }
    _mark_absent(root, params, old_commit, new_commit)
    metrics = {
        key: {"old": v.get("old"), "new": v.get("new"), "diff": v.get("diff")}
        for entries in _dvc_json(root, "metrics", "diff", "--all", *revisions).values()
        for key, v in entries.items()
    }
    without_cross_metric_deltas(metrics)
    listed = commands.git("diff", "--name-only", "-z", *revisions, "--", *CODE_PATHS, cwd=root, check=True)
    code = [path for path in listed.stdout.split("\0") if path]
    if new_commit is None:  # the workspace: new files git does not track yet are code changes too
        new_files = commands.git(
            "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS, cwd=root, check=True
        )
        code = sorted({*code, *(path for path in new_files.stdout.split("\0") if path)})
    dirty = stale_results(root, revisions, read_blobs(root, [f"{r}:params.yaml" for r in revisions]))
    workspace = pipeline_status(root) if new_commit is None else ""
    return Comparison(
        old=old,
        new=new or WORKSPACE,
        params=params,
        metrics=metrics,
        data={"old": _data_version(root, old_commit), "new": _data_version(root, new_commit)},
        code_changed=code,
        runs={
            "old": [asdict(link) for link in _runs(root, old_commit)],
            "new": [asdict(link) for link in _runs(root, new_commit)],
        },
        stale={
            "old": dirty.get(old_commit, []),
            "new": dirty.get(new_commit, []) if new_commit else [workspace] if workspace else [],
        },
    )


def without_cross_metric_deltas(metrics: dict[str, dict[str, Any]]) -> None:
    """A `<x>.value` whose `<x>.metric` changed (`best`: f1_macro on one side, roc_auc on the other) has no
    delta: its `diff` becomes None and `note` says why, where DVC subtracted one metric from another."""
    for key, value in metrics.items():
        metric = metrics.get(key.removesuffix(".value") + ".metric") if key.endswith(".value") else None
        if metric is not None and metric["old"] != metric["new"]:
            value["diff"] = None
            value["note"] = f"not comparable: {key.removesuffix('.value')}.metric changed"


def as_json(comparison: Comparison) -> str:
    return json.dumps(asdict(comparison), indent=2)


def as_text(c: Comparison, everything: bool = False) -> str:
    """What changed, for a terminal: params and metrics that differ (`everything`: every metric too, the
    unchanged ones with their +0.0000), data, code, runs."""
    lines = [f"{c.old} -> {c.new}", ""]
    for side in ("old", "new"):
        name, why = getattr(c, side), c.stale[side]
        if why and name == WORKSPACE:
            lines.append(
                f"warning: the workspace's results are not up to date ({'; '.join(why)}): its metrics below "
                "are not those of its params and data; run `dvc repro` first"
            )
        elif why:
            lines.append(
                f"warning: {name} is dirty: its results are not what its own files make; dvc.lock disagrees "
                f"with {', '.join(why[:6])}"
            )
    if c.stale["old"] or c.stale["new"]:
        lines.append("")
    lines.append("params changed:" if c.params else "params: unchanged")
    lines += _params_lines(c.params)
    lines.append("")
    changed = {key: v for key, v in c.metrics.items() if everything or v["old"] != v["new"]}
    unchanged = len(c.metrics) - len(changed)
    if not c.metrics:
        lines.append("metrics: none recorded")
    elif not changed:
        lines.append(f"metrics: unchanged ({unchanged}; --all lists them)")
    else:
        lines.append("metrics:" if everything else "metrics changed:")
    for key, v in sorted(changed.items()):
        if isinstance(v["old"], float) or isinstance(v["new"], float):
            diff = f"{v['diff']:+.4f}" if isinstance(v["diff"], (int, float)) else v.get("note") or "-"
            old = f"{v['old']:.4f}" if isinstance(v["old"], (int, float)) else str(v["old"])
            new = f"{v['new']:.4f}" if isinstance(v["new"], (int, float)) else str(v["new"])
            lines.append(f"  {key}: {old} -> {new} ({diff})")
        else:
            lines.append(f"  {key}: {v['old']} -> {v['new']}")
    if changed and unchanged:
        lines.append(f"  ({unchanged} unchanged; --all lists them)")
    lines.append("")
    same = c.data["old"] == c.data["new"]
    lines.append(f"data: {'unchanged' if same else 'CHANGED'} ({c.data['old']} -> {c.data['new']})")
    lines.append("code changed: " + (", ".join(c.code_changed) if c.code_changed else "none"))
    for side in ("old", "new"):
        runs = ", ".join(f"{r['model']}={r['run_id'] or 'pending'}" for r in c.runs[side]) or "none linked"
        lines.append(f"runs of {getattr(c, side)}: {runs}")
    return "\n".join(lines)


def _mark_absent(root: Path, params: dict[str, dict[str, Any]], old: str, new: str | None) -> None:
    """`absent`: the sides ("old", "new") whose params.yaml lacks a key DVC reports as None there: a key
    removed (`~key`) takes its default, which `key: null` would not (SGD's `tol: null` is no tolerance)."""
    from mnist_lab.core.settings import flatten, load_params_yaml

    blobs = read_blobs(root, [f"{old}:params.yaml", *([f"{new}:params.yaml"] if new else [])])
    texts = {"old": blobs.get(f"{old}:params.yaml"), "new": blobs.get(f"{new}:params.yaml") if new else None}
    if new is None and (root / "params.yaml").is_file():
        texts["new"] = (root / "params.yaml").read_bytes()
    keys: dict[str, set[str] | None] = {}
    for side, text in texts.items():
        try:
            keys[side] = set(flatten(load_params_yaml(text.decode()))) if text is not None else set()
        except Exception:  # a params.yaml that does not parse: DVC's None stands
            keys[side] = None
    for key, change in params.items():
        absent = [
            side
            for side in ("old", "new")
            if change[side] is None and (found := keys[side]) is not None and not _has_key(found, key)
        ]
        if absent:
            change["absent"] = absent


def _has_key(keys: set[str], key: str) -> bool:
    """Whether flattened params hold `key` itself or something under it (`models.mlp` for models.mlp.*)."""
    return key in keys or any(other.startswith(f"{key}.") for other in keys)


def _params_lines(params: dict[str, dict[str, Any]]) -> list[str]:
    """`key: old -> new` per changed param; a model added or dropped (its `type` appears or goes: a model
    always has one) is one line, not one per setting going from or to None."""
    whole = {}
    for key, change in params.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "type":
            if change["new"] is None:
                whole[parts[1]] = f"removed (was {change['old']})"
            elif change["old"] is None:
                whole[parts[1]] = f"added ({change['new']})"
    lines = []
    for key, change in sorted(params.items()):
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] == "models" and parts[1] in whole:
            if parts[2] == "type":
                lines.append(f"  models.{parts[1]}: {whole[parts[1]]}")
            continue
        old, new = (
            "(absent: its default)" if side in change.get("absent", ()) else change[side]
            for side in ("old", "new")
        )
        lines.append(f"  {key}: {old} -> {new}")
    return lines
