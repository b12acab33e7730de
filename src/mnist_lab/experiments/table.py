"""The experiments table of `mnist-lab board`: one row per experiment, read from git in a fixed number of
processes however long the history (one `git log`, `git cat-file` for the files, and for the dirty check
of each new commit its dvc.lock against its files), so hundreds of experiment commits load in about a
second.

Rows come from three sources, joined by the links this repository records:
- `commit`: experiment commits (those that changed `dvc.lock` or `metrics.json`), with their trailers' runs;
- `dvc-experiment`: DVC experiments not committed to a branch (`refs/exps/...`: DVC keeps each as a git
  commit whose first parent is its baseline), read the same way, without running DVC;
- `run`: MLflow runs that no commit or DVC experiment names (`unlinked_run_rows`, from the tracking store).

A row is a flat dict: `id`, `source`, `commit`, `date`, `message`, `dirty` and `dirty_because` (a commit's
or DVC experiment's results that its own files did not make, see `stale_results`; a run from a tree with
uncommitted changes), `data`, `model` / `metric` /
`value` (the best model), `accuracy` (the best model's), `labels`, `changed` (params that differ from the
previous experiment: a commit's nearest ancestor that is an experiment commit, a DVC experiment's baseline;
key -> [its value, this one's]), `runs` (model -> run id), then every param as
`params.<key>` and every metric as `metrics.<key>` (`metrics.models.cnn.accuracy`), so the query language
reaches any of them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.core.results import read_history_text
from mnist_lab.core.settings import flatten, load_params_yaml
from mnist_lab.datasets.folder import parse_data_version
from mnist_lab.experiments.labels import read_labels
from mnist_lab.experiments.linking import RunLink, experiment_refs, parse_trailers
from mnist_lab.system import commands
from mnist_lab.system.sources import is_code_listing, parse_code_listing
from mnist_lab.tracking.outbox import sent_runs

EXPERIMENT_FILES = ("metrics.json", "params.yaml", "data.dvc")
CHAMPION_TAG = "mnist-lab/champion"


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    parent: str | None
    date: str
    subject: str
    body: str


def read_blobs(root: Path, specs: Iterable[str]) -> dict[str, bytes | None]:
    """`{"<rev>:<path>": content or None}` for many blobs in one `git cat-file --batch` process."""
    specs = list(dict.fromkeys(specs))
    if not specs:
        return {}
    done = commands.run(
        "git", "cat-file", "--batch", cwd=root, input="\n".join(specs) + "\n", text=False, check=True
    )
    out: dict[str, bytes | None] = {}
    data, position = done.stdout, 0
    for spec in specs:
        end = data.index(b"\n", position)
        header = data[position:end].decode()
        position = end + 1
        parts = header.split()
        if len(parts) == 3 and parts[1] == "blob":
            size = int(parts[2])
            out[spec] = data[position : position + size]
            position += size + 1  # the blob and its trailing newline
        else:  # "<spec> missing", or a tree / an ambiguous name
            out[spec] = None
            if len(parts) == 3:  # a non-blob object: cat-file printed it too
                position += int(parts[2]) + 1
    return out


def _log(
    root: Path, *revisions: str, paths: tuple[str, ...] = ("dvc.lock", "metrics.json")
) -> list[CommitInfo]:
    # every field ended by a NUL, the one character a commit message cannot hold (a message with \x1e or
    # \x1f, the separators before, broke the table and `history` for good)
    fields = "".join(f"{field}%x00" for field in ("%H", "%P", "%aI", "%s", "%b"))
    # limited to `paths`, --parents rewrites each commit's parents to its nearest ancestors that change
    # them: the previous experiment, not a commit of params.yaml alone whose change would then show nowhere
    rewrite = ["--parents"] if paths else []
    done = commands.git("log", f"--format={fields}", *rewrite, *revisions, "--", *paths, cwd=root, check=True)
    values = done.stdout.split("\0")
    commits = []
    for start in range(0, len(values) - 4, 5):  # git puts a newline between commits: before the hash
        commit, parents, date, subject, body = values[start : start + 5]
        commit = commit.lstrip("\n")
        commits.append(
            CommitInfo(commit, parents.split()[0] if parents else None, date, subject, body.strip("\n"))
        )
    return commits


def applied_experiments(root: Path, commit: str) -> list[str]:
    """The DVC experiments whose results `commit` holds (`dvc exp apply` + `mnist-lab commit`: the same
    metrics.json, params.yaml and data.dvc), by name, as the table takes them: then it shows `commit`'s row,
    not theirs. One that only reproduced `commit`, its own baseline or one after it, is not one."""
    refs = experiment_refs(root)
    if not refs:
        return []
    listed = commands.git(
        "rev-list", "--no-walk", "--parents", *{sha for sha, _ in refs}, cwd=root, check=True
    )
    parents = {line.split()[0]: line.split()[1:2] for line in listed.stdout.splitlines() if line.strip()}
    blobs = read_blobs(root, [f"{sha}:{path}" for sha in {commit, *parents} for path in EXPERIMENT_FILES])
    held = _results(blobs, commit)
    return [
        name
        for sha, name in refs
        if _results(blobs, sha) == held
        and commit not in parents.get(sha, [])
        and not any(_is_ancestor(root, commit, parent) for parent in parents.get(sha, []))
    ]


def _results(blobs: Mapping[str, bytes | None], commit: str) -> tuple[bytes | None, ...]:
    """A commit's results as the table compares them: its EXPERIMENT_FILES' contents (`read_blobs`)."""
    return tuple(blobs.get(f"{commit}:{path}") for path in EXPERIMENT_FILES)


def carry_labels(root: Path, commit: str) -> dict[str, list[str]]:
    """The labels of the DVC experiments `commit` now holds (applied_experiments) moved onto `commit`, whose
    row the table shows in their place (a label set on the experiment's row vanished with the row):
    `exp:<name> -> labels moved`."""
    from mnist_lab.experiments.labels import move_labels

    carried = {}
    for name in applied_experiments(root, commit):
        if moved := move_labels(root, f"exp:{name}", commit):
            carried[f"exp:{name}"] = moved
    return carried


def _text(blob: bytes | None) -> str | None:
    return blob.decode("utf-8", errors="replace") if blob is not None else None


@functools.lru_cache(maxsize=4096)
def _params(blob: bytes | None) -> dict[str, Any]:
    """Flattened params of a params.yaml blob (cached by content: a commit's parent is the commit before it,
    and most experiments share their params.yaml with others). Callers must not change the answer."""
    try:
        return flatten(load_params_yaml(blob.decode("utf-8", errors="replace")) or {}) if blob else {}
    except (yaml.YAMLError, ValueError):
        return {}


@functools.lru_cache(maxsize=1024)
def _data_version(blob: bytes | None) -> str | None:
    """data.dvc's version (cached by content: experiments mostly share their data)."""
    return parse_data_version(_text(blob))


def _metrics(blob: bytes | None) -> dict[str, Any]:
    try:
        parsed = json.loads(blob) if blob else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _row(
    info: CommitInfo,
    source: str,
    blobs: dict[str, bytes | None],
    stale: dict[str, list[str]],
    name: str | None = None,
    labels: list[str] | None = None,
    sent: dict[str, str] | None = None,
) -> dict[str, Any]:
    metrics = _metrics(blobs.get(f"{info.commit}:metrics.json"))
    params = _params(blobs.get(f"{info.commit}:params.yaml"))
    parent_blob = blobs.get(f"{info.parent}:params.yaml") if info.parent else None
    parent = _params(parent_blob)
    best = metrics.get("best") or {}
    models = metrics.get("models") or {}
    best_model = best.get("model")
    links: list[RunLink] = parse_trailers(info.body)
    sent = sent or {}  # a run that waited in the outbox, committed as pending and sent since: its id
    runs = {link.model: link.run_id or sent.get(link.record_id) for link in links} or {
        model: _run_id(blobs.get(f"{info.commit}:reports/{model}/mlflow.json"), sent) for model in models
    }  # a commit made otherwise (`dvc exp branch`, a plain commit) names its runs in its reports
    row: dict[str, Any] = {
        "id": info.commit if source == "commit" else f"exp:{name}",
        "source": source,
        "commit": info.commit,
        "baseline": info.parent if source == "dvc-experiment" else None,
        "name": name,
        "date": info.date,
        "message": info.subject if source == "commit" else f"DVC experiment {name}",
        "dirty": bool(stale.get(info.commit)),
        "dirty_because": stale.get(info.commit, []),
        "data": _data_version(blobs.get(f"{info.commit}:data.dvc")),
        "model": best_model,
        "metric": best.get("metric"),
        "value": best.get("value"),
        "accuracy": (models.get(best_model) or {}).get("accuracy") if best_model else None,
        "labels": list(labels or []),
        "changed": {
            key: [parent.get(key), params.get(key)]
            for key in sorted(params.keys() | parent.keys())
            if params.get(key) != parent.get(key)
        }
        if parent_blob is not None
        else {},  # the first experiment changes nothing: there is nothing before it to compare with
        "runs": runs,
        "code_only": False,  # a commit's: experiment_rows sets it (_same_results_as_before)
    }
    row |= {f"params.{key}": value for key, value in params.items()}
    row |= {f"metrics.{key}": value for key, value in flatten(metrics).items()}
    return row


def _run_id(blob: bytes | None, sent: dict[str, str]) -> str | None:
    """The run id a committed `reports/<model>/mlflow.json` names; for a run that waited in the outbox, the
    id it got when sent from this clone (`sent`: record id -> run id), else None."""
    parsed = _metrics(blob)
    if isinstance(parsed.get("run_id"), str):
        return parsed["run_id"]
    record = parsed.get("record_id")
    return sent.get(record) if isinstance(record, str) else None


def experiment_rows(
    root: Path, revision: str = "HEAD", limit: int | None = None, dvc_experiments: bool = True
) -> list[dict[str, Any]]:
    """The committed experiments reachable from `revision` (newest first), each followed (with
    `dvc_experiments`) by the DVC experiments not committed that ran on it, or on a later commit that is no
    experiment (code or params.yaml alone), newest first, as `dvc exp show` lists them under their baseline;
    each a row (see the module's docstring). DVC experiments whose baseline is not listed come last."""
    commits = _log(root, *([f"-n{limit}"] if limit else []), revision)
    refs = experiment_refs(root) if dvc_experiments else []
    experiments = [(info, name) for sha, name in refs for info in _log(root, "-n1", sha, paths=())]
    everything = [*commits, *(info for info, _ in experiments)]
    committed = {info.commit for info in commits}
    specs = [f"{info.commit}:{path}" for info in everything for path in EXPERIMENT_FILES]
    specs += [f"{info.parent}:params.yaml" for info, _ in experiments if info.parent]
    # a commit's previous experiment's files too: a commit that changed none of them is `code_only`
    specs += [f"{info.parent}:{path}" for info in commits if info.parent for path in EXPERIMENT_FILES]
    blobs = read_blobs(root, specs)
    reports = [
        f"{sha}:reports/{model}/mlflow.json"
        for info in everything
        if not parse_trailers(info.body)
        for model in (_metrics(blobs.get(f"{info.commit}:metrics.json")).get("models") or {})
        for sha in ([info.commit, info.parent] if info.parent and info.commit in committed else [info.commit])
    ]
    blobs |= read_blobs(root, reports)
    stale = stale_results(root, [info.commit for info in everything], blobs)
    labels = read_labels(root)
    sent = sent_runs(root)  # this clone's ledger of runs sent from its outbox (offline)
    champion = commands.git_output("rev-parse", "--verify", "--quiet", f"{CHAMPION_TAG}^{{commit}}", cwd=root)
    rows = []
    for info in commits:
        tags = labels.get(info.commit, []) + (["champion"] if info.commit == champion else [])
        row = _row(info, "commit", blobs, stale, labels=tags, sent=sent)
        row["code_only"] = not tags and not row["dirty"] and _same_results_as_before(info, blobs)
        rows.append(row)
    on_baseline: dict[str | None, list[dict[str, Any]]] = {}
    listed_baselines: dict[str | None, str | None] = {}  # a sweep's experiments share a baseline: once

    committed_results: dict[tuple[bytes | None, ...], set[str]] = {}
    for info in commits:
        committed_results.setdefault(_results(blobs, info.commit), set()).add(info.commit)
    for info, name in experiments:
        # an experiment branched and committed is a commit row; applied and committed (`dvc exp apply` +
        # `mnist-lab commit`: a new commit with its metrics, params and data, after its baseline) too, but
        # not one that only reproduced its own baseline or one before it (a baseline that changed code alone
        # holds its previous experiment's results)
        applied = {
            commit
            for commit in committed_results.get(_results(blobs, info.commit), set()) - {info.parent}
            if not _is_ancestor(root, commit, info.parent)
        }
        if info.commit not in committed and not applied:
            row = _row(
                info,
                "dvc-experiment",
                blobs,
                stale,
                name=name,
                labels=labels.get(f"exp:{name}", []),
                sent=sent,
            )
            if info.parent not in listed_baselines:
                listed_baselines[info.parent] = _listed_baseline(root, info.parent, committed)
            on_baseline.setdefault(listed_baselines[info.parent], []).append(row)
    for group in on_baseline.values():  # git's %aI dates: offsets may differ, so compared as instants
        group.sort(key=lambda row: datetime.fromisoformat(row["date"]).timestamp(), reverse=True)
    ordered = []
    for row in rows:
        ordered += [row, *on_baseline.get(row["id"], [])]
    return ordered + on_baseline.get(None, [])


@functools.lru_cache(maxsize=4096)
def _is_ancestor(root: Path, commit: str, of: str | None) -> bool:
    """Whether `commit` is `of` or an ancestor of it (cached: commits never change, and a sweep's DVC
    experiments share a baseline and the commits holding their results: one git process per pair)."""
    if of is None:
        return False
    done = commands.git("merge-base", "--is-ancestor", commit, of, cwd=root)
    return done.returncode == 0


def _same_results_as_before(info: CommitInfo, blobs: Mapping[str, bytes | None]) -> bool:
    """Whether commit `info` records nothing its previous experiment (`info.parent`, the nearest ancestor
    that changed dvc.lock or metrics.json) did not: the same metrics.json, params.yaml and data.dvc, no runs
    of its own (no trailers; each model's reports/<model>/mlflow.json as before). Such a commit changed
    code alone and re-recorded the `code` stage's listings in dvc.lock (or reran a stage whose results came
    out the same without logging a run): a row of the table that shows nothing new."""
    if (
        info.parent is None
        or parse_trailers(info.body)
        or _results(blobs, info.commit) != _results(blobs, info.parent)
    ):
        return False
    models = _metrics(blobs.get(f"{info.commit}:metrics.json")).get("models") or {}
    return all(
        blobs.get(f"{info.commit}:reports/{model}/mlflow.json")
        == blobs.get(f"{info.parent}:reports/{model}/mlflow.json")
        for model in models
    )


def _listed_baseline(root: Path, parent: str | None, listed: set[str]) -> str | None:
    """The listed experiment commit a DVC experiment goes under: its baseline, or the baseline's nearest
    ancestor that is an experiment commit (one that changed only code or params.yaml is no row); None when
    that is not listed (older than the commits asked for)."""
    if parent is None or parent in listed:
        return parent
    nearest = _log(root, "-n1", parent)
    return nearest[0].commit if nearest and nearest[0].commit in listed else None


_STALE: dict[str, list[str]] = {}  # commit -> stale_results' reasons (a commit's content never changes)
_LOCKED_FILE = re.compile(r"- path: (\S+)\n *hash: md5\n *md5: ([0-9a-f]{32}(?:\.dir)?)\n")
_DVC_FILE_MD5 = re.compile(r"^[ -]*md5: ([0-9a-f]{32}(?:\.dir)?)$", re.MULTILINE)


@functools.lru_cache(maxsize=16)
def _indented_block(indent: int) -> re.Pattern[str]:
    """The lines (and blank lines) indented deeper than `indent` spaces."""
    return re.compile(rf"(?:(?: {{{indent + 1},}}.*)?\n)*")


def locked_state(text: str) -> tuple[dict[str, set[str]], dict[str, Any]]:
    """What a dvc.lock (DVC 3) recorded its stages ran on and made: by path, every md5 recorded for it (a
    file one stage makes and another reads is recorded by each: after a partial run they differ), and
    the params.yaml values its stages read (flattened). Read without parsing the whole YAML (17 ms for this
    repository's lock: seconds for hundreds of experiments); each stage's small params block is parsed,
    cached, as most experiments share them."""
    files: dict[str, set[str]] = {}
    for path, md5 in _LOCKED_FILE.findall(text):
        files.setdefault(path, set()).add(md5)
    params: dict[str, Any] = {}
    key = "params.yaml:\n"
    at = text.find(key)
    while at >= 0:
        line_start = text.rfind("\n", 0, at) + 1
        if not text[line_start:at].strip(" "):  # the key itself, not a value that ends with it
            block = _indented_block(at - line_start).match(text, at + len(key))
            if block:
                params |= _params_block(block.group(0))
        at = text.find(key, at + len(key))
    return files, params


_LOCK_STAGE = re.compile(r"^  (\S+?):\s*$")  # a stage's name in dvc.lock (DVC 3: under `stages:`)


def without_dropped_models(lock_text: str, params: Mapping[str, Any]) -> str:
    """`lock_text` without the stages of models that `params` (params.yaml, flattened) no longer has: DVC
    leaves `train@mlp` and `evaluate@mlp` in dvc.lock when `mlp` is dropped from `models`, though no stage
    runs them (`dvc status` is clean), so their params and outputs say nothing about the commit. A stage is
    a model's when its name ends `@<key>` and its own params name `models.<key>`; no models in `params`
    (params.yaml unreadable): the text as it is."""
    models = {key.split(".")[1] for key in params if key.startswith("models.") and key.count(".") >= 2}
    if not models:
        return lock_text
    blocks: list[list[str]] = [[]]  # the lines before the first stage, then one block per stage
    for line in lock_text.splitlines(keepends=True):
        if _LOCK_STAGE.match(line) or (line.strip() and not line.startswith((" ", "\t"))):
            blocks.append([])  # a stage's name, or a top-level key (`schema:`, `stages:`)
        blocks[-1].append(line)
    kept = []
    for block in blocks:
        header = _LOCK_STAGE.match(block[0]) if block else None
        key = header.group(1).rsplit("@", 1)[1] if header and "@" in header.group(1) else None
        if key is not None and key not in models and f" models.{key}:" in "".join(block):
            continue
        kept.extend(block)
    return "".join(kept)


@functools.lru_cache(maxsize=4096)
def _params_block(block: str) -> dict[str, Any]:
    try:
        loaded = load_params_yaml(block)  # as params.yaml is read: 1e-05 is a float, as DVC wrote it
    except yaml.YAMLError:
        return {}
    return flatten(loaded) if isinstance(loaded, dict) else {}


def stale_results(root: Path, commits: list[str], blobs: dict[str, bytes | None]) -> dict[str, list[str]]:
    """Per commit, why its committed results are not what its own code, params and data make (empty: they
    are): each file dvc.lock recorded whose committed content differs (metrics.json changed by hand, a
    source file edited), each file of the code a stage ran (its listing, `stage-code/<stage>.sha256`, which
    dvc.lock records: system/sources.py) whose committed content differs or that the commit lacks, each
    tracked directory whose `.dvc` file names other data, each param whose value in params.yaml is not the
    one the stages ran with: what `dvc status` would report in a checkout of it, so that `dvc repro` would
    change its results. `blobs` holds each commit's params.yaml (as `experiment_rows` reads them). Five git
    processes however many commits; a commit's answer is kept (a commit never changes), so a history read
    again reads only its new commits."""
    todo = [commit for commit in dict.fromkeys(commits) if commit not in _STALE]
    locks: dict[str, tuple[dict[str, set[str]], dict[str, Any]]] = {}
    for spec, lock in read_blobs(root, [f"{commit}:dvc.lock" for commit in todo]).items():
        if lock is not None:
            commit = spec.rsplit(":", 1)[0]
            text = lock.decode("utf-8", errors="replace")
            if (params_blob := blobs.get(f"{commit}:params.yaml")) is not None:
                text = without_dropped_models(text, _params(params_blob))
            locks[commit] = locked_state(text)
    specs = [f"{commit}:{path}" for commit, (files, _) in locks.items() for path in files]
    listed: dict[str, dict[str, str]] = {}  # commit -> {source file: sha256} of its stages' listings
    listing_specs = [spec for spec in specs if is_code_listing(spec.split(":", 1)[1])]
    missing_listings: dict[str, list[str]] = {}  # commit -> listings its dvc.lock records that it lacks
    for spec, listing in read_blobs(root, listing_specs).items():
        commit, path = spec.split(":", 1)
        if listing is None:
            missing_listings.setdefault(commit, []).append(path)
        else:
            code = parse_code_listing(listing.decode("utf-8", errors="replace"))
            listed.setdefault(commit, {}).update(code)
    code_specs = [f"{commit}:{path}" for commit, code in listed.items() for path in code]
    ids = object_ids(root, specs + code_specs)
    missing = [spec for spec in specs if ids.get(spec) is None]
    dvc_files = read_blobs(root, [f"{spec}.dvc" for spec in missing])  # a directory DVC tracks, as `data`
    contents = read_blobs(root, {oid for oid in ids.values() if oid is not None})
    locked_oids = {ids.get(spec) for spec in specs}  # what dvc.lock records by md5 (not the listed code)
    md5_of = {
        oid: hashlib.md5(content, usedforsecurity=False).hexdigest()
        for oid, content in contents.items()
        if content is not None and oid in locked_oids
    }
    sha256_of = {}
    for oid in {ids.get(spec) for spec in code_specs} - {None}:
        if oid is not None and (content := contents.get(oid)) is not None:
            sha256_of[oid] = hashlib.sha256(content).hexdigest()
    found: dict[str, list[str]] = {}
    for commit, (files, locked_params) in locks.items():
        reasons = []
        for path, md5s in files.items():
            oid = ids.get(f"{commit}:{path}")
            if oid is not None:
                if oid in md5_of and md5s != {md5_of[oid]}:
                    reasons.append(path)
            elif (dvc_file := dvc_files.get(f"{commit}:{path}.dvc")) is not None:
                recorded = _DVC_FILE_MD5.findall(dvc_file.decode("utf-8", errors="replace"))
                if recorded and md5s != {recorded[0]}:
                    reasons.append(f"{path}.dvc")
        reasons += [f"{path} (not in the commit)" for path in missing_listings.get(commit, [])]
        for path, digest in listed.get(commit, {}).items():
            oid = ids.get(f"{commit}:{path}")
            if oid is None or (oid in sha256_of and sha256_of[oid] != digest):
                reasons.append(path if oid is not None else f"{path} (not in the commit)")
        params = _params(blobs.get(f"{commit}:params.yaml"))
        reasons = sorted(reasons)
        reasons += sorted(
            f"params.yaml: {key}" for key, value in locked_params.items() if params.get(key) != value
        )
        found[commit] = reasons
    found |= {commit: [] for commit in todo if commit not in found}  # no dvc.lock: nothing to check
    if len(_STALE) > 100_000:
        _STALE.clear()
    _STALE.update(found)
    answers = {commit: found[commit] if commit in found else _STALE.get(commit, []) for commit in commits}
    return {commit: reasons for commit, reasons in answers.items() if reasons}


def object_ids(root: Path, specs: list[str], kind: str = "blob") -> dict[str, str | None]:
    """`{"<rev>:<path>": object id, or None where that is no object of `kind` (a file: "blob", a folder:
    "tree")}` in one `git cat-file --batch-check`."""
    specs = list(dict.fromkeys(specs))
    if not specs:
        return {}
    done = commands.run(
        "git", "cat-file", "--batch-check", cwd=root, input="\n".join(specs) + "\n", check=True
    )
    ids: dict[str, str | None] = {}
    for spec, line in zip(specs, done.stdout.splitlines(), strict=True):
        parts = line.split()
        ids[spec] = parts[0] if len(parts) == 3 and parts[1] == kind else None
    return ids


def experiments_files(
    root: Path, wanted: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, dict[str, str | None]]]:
    """Per commit (-> its models), per model, the committed report files the compare view draws from:
    `history.csv` (per-epoch curves) and `predictions.csv` (the confusion matrix), in one git process."""
    names = ("history.csv", "predictions.csv")
    models = {commit: list(of) for commit, of in wanted.items()}
    specs = [f"{commit}:reports/{m}/{name}" for commit, of in models.items() for m in of for name in names]
    blobs = read_blobs(root, specs)
    return {
        commit: {m: {name: _text(blobs[f"{commit}:reports/{m}/{name}"]) for name in names} for m in of}
        for commit, of in models.items()
    }


def history_rows(text: str | None) -> list[dict[str, float]]:
    """The rows of a committed history.csv (empty for a model trained without epochs)."""
    return read_history_text(text) if text else []


def unlinked_run_rows(root: Path, known: set[str], limit: int = 10_000) -> list[dict[str, Any]]:
    """The tracking store's model runs (not grid-search candidates) that no experiment row names, newest
    first, each a row shaped like an experiment's: `run:<id>`, source `run`, the commit it started from,
    its model's params and metrics under `params.models.<model>.*` / `metrics.models.<model>.*`."""
    from mnist_lab import tracking

    settings = tracking.TrackingSettings.from_environment(root)
    client = tracking.mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return []
    rows: list[dict[str, Any]] = []
    token = None
    while len(rows) < limit:
        page = client.search_runs(
            [experiment.experiment_id],
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time DESC"],
        )
        for run in page:
            tags = run.data.tags
            if run.info.run_id in known or "mlflow.parentRunId" in tags:
                continue
            rows.append(_run_row(run))
        token = page.token
        if not token:
            break
    return rows[:limit]


def _run_row(run: Any) -> dict[str, Any]:
    tags, prefix = run.data.tags, "mnist_lab."
    model = tags.get(f"{prefix}model") or run.info.run_name
    metrics = run.data.metrics
    row: dict[str, Any] = {
        "id": f"run:{run.info.run_id}",
        "source": "run",
        "commit": tags.get(f"{prefix}git_commit"),
        "baseline": None,
        "name": run.info.run_name,
        "date": datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        "message": f"MLflow run {run.info.run_name} ({run.info.status.lower()})",
        "dirty": tags.get(f"{prefix}git_dirty") == "true",
        "dirty_because": ["uncommitted changes (the run's git/uncommitted.diff)"]
        if tags.get(f"{prefix}git_dirty") == "true"
        else [],
        "data": tags.get(f"{prefix}data_version"),
        "model": model,
        "metric": None,
        "value": None,
        "accuracy": metrics.get("accuracy"),
        "labels": [],
        "changed": {},
        "runs": {model: run.info.run_id},
    }
    for key, value in run.data.params.items():
        name = (
            f"params.models.{model}.{key[len('model.') :]}" if key.startswith("model.") else f"params.{key}"
        )
        row[name] = _number_or_text(value)
    row |= {f"metrics.models.{model}.{key}": value for key, value in metrics.items()}
    return row


def _number_or_text(value: str) -> Any:
    """MLflow keeps params as text: numbers become numbers again, so queries compare them as numbers."""
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def run_curves(root: Path, run_id: str) -> list[dict[str, float]]:
    """A run's per-epoch metric histories (MLflow) as history.csv's rows (empty without epochs)."""
    from mnist_lab import tracking
    from mnist_lab.core.results import HISTORY_METRICS

    client = tracking.mlflow_client(tracking.TrackingSettings.from_environment(root))
    by_epoch: dict[int, dict[str, float]] = {}
    for metric in HISTORY_METRICS:
        for point in client.get_metric_history(run_id, metric):
            by_epoch.setdefault(int(point.step), {"epoch": float(point.step)})[metric] = point.value
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
