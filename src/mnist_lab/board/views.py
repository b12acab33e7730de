"""What the experiments page shows, as JSON-ready dicts: the table (filtered and sorted) and the comparison of
experiments. Read from git alone (offline; no MLflow store needed), cached per repository state."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.query import QueryError, filter_rows, sort_key
from mnist_lab.core.results import confusion_counts, metric_direction
from mnist_lab.experiments.labels import LabelError, read_labels, set_label
from mnist_lab.experiments.table import experiment_rows, experiments_files, history_rows, run_curves
from mnist_lab.system import commands

CODE_PATHS = ("src", "params.yaml", "dvc.yaml")
MAX_DIFF_CHARS = 200_000
HEADLINE = (
    "id",
    "source",
    "dirty",
    "date",
    "message",
    "labels",
    "data",
    "model",
    "metric",
    "value",
    "accuracy",
)


class UnknownExperiment(MnistLabError):
    """An experiment id the table does not hold."""


class StoreUnavailable(MnistLabError):
    """The tracking store could not be read (away, or refusing): the answers that need its runs say so."""


class CompareError(MnistLabError):
    """A comparison that cannot be made as asked."""


class ExperimentsBoard:
    """The table and comparisons of one repository; rows are read again only when the repository's
    experiments change (HEAD, the DVC experiment refs, labels.yaml or the champion tag)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._rows: list[dict[str, Any]] = []
        self._run_rows: list[dict[str, Any]] = []
        self._runs_at: float | None = None

    def _state(self) -> tuple:
        refs = commands.git(
            "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags", "refs/exps",
            cwd=self.root, check=True,
        ).stdout  # fmt: skip
        head = commands.git_output("rev-parse", "HEAD", cwd=self.root)
        labels = self.root / "labels.yaml"
        return head, refs, labels.stat().st_mtime_ns if labels.is_file() else None

    def runs(self, max_age_s: float = 10.0) -> list[dict[str, Any]]:
        """The tracking store's runs that no experiment names (`unlinked_run_rows`), asked again after
        `max_age_s`: runs arrive without any change to git."""
        import time

        from mnist_lab.experiments.table import unlinked_run_rows

        with self._lock:
            fresh = self._runs_at is not None and time.monotonic() - self._runs_at < max_age_s
        if not fresh:
            known = {run for row in self.rows() for run in row["runs"].values() if run}
            try:
                rows = unlinked_run_rows(self.root, known)
            except Exception as exc:  # the store is unreachable, or refuses: the table works without it
                from mnist_lab.system.redact import redact

                raise StoreUnavailable(
                    f"cannot read the tracking store's runs: {redact(str(exc))[:500]}"
                ) from exc
            labels = read_labels(self.root)
            for row in rows:
                row["labels"] = labels.get(row["id"], [])
            with self._lock:
                self._run_rows, self._runs_at = rows, time.monotonic()
        return self._run_rows

    def champion(self) -> dict[str, Any]:
        """Which experiment's model is the champion: with a Model Registry, the run of the version its alias
        `champion` points at (`run_id`, `version`; rows holding that run are labelled `champion` by the
        page); without one, the commit git tag `mnist-lab/champion` points at (`commit`; the table labels it
        already). None where there is no champion yet; StoreUnavailable when the store cannot be asked."""
        from mnist_lab.core.settings import load_settings
        from mnist_lab.serving import registry

        try:
            if not registry.registry_available(self.root):
                commit = registry.tagged_commit(self.root, registry.CHAMPION_TAG)
                return {"run_id": None, "version": None, "commit": commit}
            client, _ = registry.registry_client(self.root)
            name = load_settings(self.root / "params.yaml").registry.model_name
            version = registry.version_by_alias(client, name, registry.CHAMPION)
        except Exception as exc:  # the store is away, or refuses: the table works without it
            from mnist_lab.system.redact import redact

            problem = redact(str(exc))[:500]
            raise StoreUnavailable(f"cannot ask the registry for its champion: {problem}") from exc
        if version is None:
            return {"run_id": None, "version": None, "commit": None}
        return {"run_id": version.run_id, "version": str(version.version), "commit": None}

    def rows(self) -> list[dict[str, Any]]:
        state = self._state()
        with self._lock:
            if state != self._key:
                self._rows = _with_apply_refusals(self.root, experiment_rows(self.root), state[0])
                self._key = state
            return self._rows

    def table(
        self,
        query: str = "",
        sort: str | None = None,
        descending: bool = False,
        hidden: bool = False,
        runs: bool = False,
        code_only: bool = False,
    ) -> dict[str, Any]:
        """`{"columns", "rows", "total"}`: the rows `query` keeps (a QueryError otherwise), without those
        labelled `hidden` unless `hidden`, nor the commits that changed code alone (`code_only`: the
        params, data, results and runs of the experiment before them) unless `code_only`, sorted by column
        `sort` (missing values last); with `runs`, the store's runs that no experiment names are rows too.
        A query on `labels` sees the registry's champion as the page does (which asks /api/champion after
        drawing the table): `labels = champion` answers the same in both."""
        rows = self.rows() + (self.runs() if runs else [])
        if re.search(r"\blabels\b", query, re.IGNORECASE):
            rows = self._with_registry_champion(rows)
        columns = list(HEADLINE) + sorted(
            {c for row in rows for c in row} - set(HEADLINE) - {"runs", "changed", "apply_refused"}
        )
        if sort and sort not in columns:
            raise QueryError(
                f"sort={sort}: no such column; sort by one of the table's columns "
                f"({', '.join(columns[:6])}, ..., as the `columns` of /api/experiments lists them)"
            )
        kept = filter_rows(rows, query, columns)  # as the page: not the rows' inner fields
        if not hidden:
            kept = [row for row in kept if "hidden" not in row["labels"]]
        if not code_only:
            kept = [row for row in kept if not row.get("code_only")]
        if sort:
            present = [row for row in kept if row.get(sort) is not None]
            absent = [row for row in kept if row.get(sort) is None]
            present.sort(key=lambda row: sort_key(row[sort]), reverse=descending)
            kept = present + absent
        return {"columns": columns, "rows": kept, "total": len(rows)}

    def _with_registry_champion(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` with `champion` added to the labels of the row of the registry champion's run (copies: the
        cached rows stay as they are): `champion_row`'s. As they are when the store cannot be asked, as on
        the page."""
        try:
            run = self.champion()["run_id"]
        except StoreUnavailable:
            return rows
        chosen = {row["id"] for row in champion_rows(rows, run)} if run else set()
        return [
            {**row, "labels": [*row["labels"], "champion"]}
            if row["id"] in chosen and "champion" not in row["labels"]
            else row
            for row in rows
        ]

    def row(self, experiment: str) -> dict[str, Any]:
        """The row of `experiment`: its id, a unique prefix of 7+ characters of a commit, or any git revision
        naming an experiment commit (`HEAD`, `HEAD~2`, a tag, a branch)."""
        if not experiment.isprintable():  # a NUL byte or a newline: no id has one (and git would refuse it)
            raise UnknownExperiment(f"no experiment {experiment!r}: an id has no control characters")
        rows = self.rows() + (self.runs() if experiment.startswith("run:") else [])
        exact = [row for row in rows if row["id"] == experiment]
        if exact:
            return exact[0]
        if experiment and not experiment.startswith(("-", "run:")):
            revision = f"{experiment}^{{commit}}"
            commit = commands.git_output("rev-parse", "--verify", "--quiet", revision, cwd=self.root)
            named = [row for row in rows if row["source"] == "commit" and row["id"] == (commit or "").strip()]
            if named:
                return named[0]
            if commit and commit.strip():
                raise UnknownExperiment(
                    f"no experiment {experiment!r}: it is commit {commit.strip()[:12]}, which records no "
                    "experiment's results (not in `mnist-lab history`); give one of the table's commits"
                )
        if len(experiment) >= 7:
            matches = [row for row in rows if row["source"] == "commit" and row["id"].startswith(experiment)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UnknownExperiment(f"experiment {experiment!r} is ambiguous: give more characters")
        raise UnknownExperiment(
            f"no experiment {experiment!r}: give a commit of `mnist-lab history` (7+ characters, or a git "
            "revision such as HEAD~1) or an id from /api/experiments"
        )

    def compare(self, experiments: list[str], baseline: str | None = None) -> dict[str, Any]:
        """Params side by side (and which differ), metrics with deltas against `baseline` (default: the
        first) and whether each delta is better, per-epoch curves, confusion matrices, and the code diff of
        each experiment against the baseline."""
        if len(experiments) < 2:
            raise CompareError("compare needs two experiments or more (ids=a,b)")
        rows: list[dict[str, Any]] = []
        for experiment in experiments:  # `a,a`, or a commit and its short id: refused, each once
            row = self.row(experiment)
            if row["id"] in [kept["id"] for kept in rows]:
                raise CompareError(f"ids: '{experiment}' names {row['id']} a second time: name each once")
            rows.append(row)
        base = self.row(baseline) if baseline else rows[0]
        if base["id"] not in [row["id"] for row in rows]:
            rows.insert(0, base)
        ids = [row["id"] for row in rows]
        params = _side_by_side(rows, "params.")
        metrics = _side_by_side(rows, "metrics.")
        base_index = ids.index(base["id"])
        metric_view = {}
        for key, values in metrics.items():
            direction = metric_direction(key)
            reference = values[base_index]
            deltas, verdicts = [], []
            for value in values:
                numeric = isinstance(value, int | float) and isinstance(reference, int | float)
                delta = value - reference if numeric else None
                deltas.append(delta)
                if delta is None or delta == 0:
                    verdicts.append("same" if delta == 0 else None)
                else:
                    verdicts.append("better" if (delta > 0) == (direction == "higher") else "worse")
            metric_view[key] = {
                "values": values,
                "deltas": deltas,
                "verdicts": verdicts,
                "direction": direction,
            }
        parts = self.drawn_from(rows)
        curves = {row_id: part["curves"] for row_id, part in parts.items()}
        confusion = {row_id: part["confusion"] for row_id, part in parts.items()}
        return {
            "experiments": ids,
            "baseline": base["id"],
            "rows": [{key: row.get(key) for key in HEADLINE} | {"commit": row["commit"]} for row in rows],
            "params": {key: _param_view(rows, key, values) for key, values in params.items()},
            "metrics": metric_view,
            "curves": curves,
            "confusion": confusion,
            "diffs": {r["id"]: self._diff(base["commit"], r["commit"]) for r in rows if r is not base},
        }  # fmt: skip

    def drawn_from(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per experiment row, what a comparison draws: per model its per-epoch `curves` and its
        `confusion` counts (a run's curves come from the store; it has no committed predictions). The
        commits' files are read in one git process however many rows."""
        wanted = {
            row["commit"]: sorted({key.split(".")[2] for key in row if key.startswith("metrics.models.")})
            for row in rows
            if row["source"] != "run"
        }
        files = experiments_files(self.root, wanted)
        parts: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["source"] == "run":
                curves = {row["model"]: run_curves(self.root, row["runs"][row["model"]])}
                parts[row["id"]] = {"curves": curves, "confusion": {}}
                continue
            of = files[row["commit"]]
            parts[row["id"]] = {
                "curves": {m: history_rows(f["history.csv"]) for m, f in of.items()},
                "confusion": {
                    m: confusion_counts(f["predictions.csv"]) for m, f in of.items() if f["predictions.csv"]
                },
            }
        return parts

    def _diff(self, old: str | None, new: str | None) -> dict[str, Any]:
        if not old or not new:
            return {"text": "", "truncated": False, "note": "a run without a recorded commit: no diff"}
        for commit in (old, new):  # a run's commit may be a teammate's, never fetched into this clone
            if commands.git("cat-file", "-e", f"{commit}^{{commit}}", cwd=self.root).returncode != 0:
                note = f"commit {commit[:12]} is not in this clone (`git fetch` it): no diff"
                return {"text": "", "truncated": False, "note": note}
        done = commands.git(
            "diff", "--no-color", old, new, "--", *CODE_PATHS, cwd=self.root, check=True, text=False
        )
        text = done.stdout.decode("utf-8", errors="replace")  # a source file need not be UTF-8 (git's view)
        return {"text": text[:MAX_DIFF_CHARS], "truncated": len(text) > MAX_DIFF_CHARS}

    def labels(self) -> dict[str, list[str]]:
        return read_labels(self.root)

    def set_label(self, experiment: str, label: str, present: bool) -> dict[str, Any]:
        """Add or remove a label of `experiment` (as `mnist-lab label` does); its row afterwards. The
        registry's `champion` is not a label to remove: it moves with a promotion."""
        row = self.row(experiment)
        if (
            label == "champion"
            and not present
            and "champion" not in read_labels(self.root).get(row["id"], [])
        ):
            raise LabelError(
                f"{row['id'][:12]} holds no 'champion' label in labels.yaml: the one the table shows is the "
                "registry's champion version, which moves with Promote (`mnist-lab promote`), not by a label"
            )
        labels = set_label(self.root, row["id"], label, present)
        if row["id"].startswith("run:"):  # the store's rows are read again only every few seconds
            row["labels"] = labels
        return self.row(row["id"])


def champion_rows(rows: list[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    """The rows that are the champion's experiment (static/board.js's championRows does the same): of the
    rows holding its run (an unchanged model's run is held by every later commit and experiment too), the
    commit that first recorded it (the oldest: rows come newest first), as `commit-of` answers; without one,
    the DVC experiments or the run row holding it."""
    holding = [row for row in rows if row["id"] == f"run:{run}" or run in (row.get("runs") or {}).values()]
    commits = [row for row in holding if row.get("source") == "commit"]
    return commits[-1:] if commits else holding


def _with_apply_refusals(root: Path, rows: list[dict[str, Any]], head: str | None) -> list[dict[str, Any]]:
    """Each DVC experiment's row with `apply_refused`: why Apply & commit would refuse it (None: it would
    not), so the page disables the button and says why before asking for a message. One git diff per
    baseline, however many experiments share it."""
    from mnist_lab.experiments.queue import inputs_changed_since, undoing_message

    changed: dict[str, list[str]] = {}
    for row in rows:
        if row.get("source") == "dvc-experiment" and (baseline := row.get("baseline")):
            if baseline not in changed:
                changed[baseline] = inputs_changed_since(root, baseline, (head or "").strip() or None)
            name = row["id"].removeprefix("exp:")
            row["apply_refused"] = (
                undoing_message(name, baseline, changed[baseline]) if changed[baseline] else None
            )
    return rows


def _param_view(rows: list[dict[str, Any]], key: str, values: list[Any]) -> dict[str, Any]:
    """A param across the compared rows: `absent` tells a key its params.yaml does not have (an older
    experiment, before the setting existed) from one set to null; going from one to the other is a change."""
    absent = [f"params.{key}" not in row for row in rows]
    seen = {"(absent)" if gone else repr(value) for value, gone in zip(values, absent, strict=True)}
    return {"values": values, "absent": absent, "changed": len(seen) > 1}


def _side_by_side(rows: list[dict[str, Any]], prefix: str) -> dict[str, list[Any]]:
    keys = sorted({key for row in rows for key in row if key.startswith(prefix)})
    return {key[len(prefix) :]: [row.get(key) for row in rows] for key in keys}
