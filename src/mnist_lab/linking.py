"""Every commit is an experiment: commit an experiment's files with its MLflow runs as trailers, tag each run
with the commit that holds its results, and find one from the other in both directions."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_lab import tracking
from mnist_lab.errors import MnistLabError
from mnist_lab.files import read_json
from mnist_lab.settings import load_settings

# What an experiment commit holds: its definition and results (pipeline outputs with `cache: false`)
EXPERIMENT_PATHS = (
    "params.yaml",
    "dvc.lock",
    "data.dvc",
    "metrics.json",
    "metrics.csv",
    "params.yml",
    "best_model.json",
    "registry.json",
    "reports",
    # DVC adds a line to these for each new model's or output's files (`/cnn`): left out, a new model would
    # leave the tree dirty after its experiment was committed
    "models/.gitignore",
    "outputs/.gitignore",
)
TRAILER = "MLflow-Run"
RESULTS_COMMIT_TAG = f"{tracking.TAG_PREFIX}results_commit"
_TRAILER_LINE = re.compile(
    rf"^{TRAILER}: (?P<model>[a-z][a-z0-9_]*) run=(?P<run>\S+) record=(?P<record>[0-9a-f]+)$"
)


class LinkingError(MnistLabError):
    """An experiment cannot be committed or looked up as asked."""


@dataclass(frozen=True)
class RunLink:
    """One model's MLflow run in an experiment; `run_id` is None while it waits in the outbox."""

    model: str
    run_id: str | None
    record_id: str

    def trailer(self) -> str:
        return f"{TRAILER}: {self.model} run={self.run_id or 'pending'} record={self.record_id}"


def run_git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LinkingError(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def resolve_commit(root: Path, revision: str) -> str:
    """The full commit id of `revision`, or a LinkingError naming it."""
    done = run_git(root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", check=False)
    if done.returncode != 0:
        raise LinkingError(f"'{revision}' is not a commit of this repository (try `mnist-lab history`)")
    return done.stdout.strip()


def workspace_links(root: Path) -> list[RunLink]:
    """The runs of the experiment in the workspace, from `reports/<model>/mlflow.json`."""
    links = []
    for model in load_settings(root / "params.yaml").models:
        path = root / "reports" / model / "mlflow.json"
        if not path.is_file():
            raise LinkingError(f"{path} is missing: model '{model}' has no run yet; run `dvc repro` first")
        record = read_json(path)
        links.append(RunLink(model, record.get("run_id"), record["record_id"]))
    return links


def parse_trailers(message: str) -> list[RunLink]:
    """The runs named by a commit message's `MLflow-Run:` trailers."""
    links = []
    for line in message.splitlines():
        match = _TRAILER_LINE.match(line.strip())
        if match:
            run_id = None if match["run"] == "pending" else match["run"]
            links.append(RunLink(match["model"], run_id, match["record"]))
    return links


def commit_experiment(root: Path, message: str) -> tuple[str, list[RunLink]]:
    """Commit the experiment's files with its runs as trailers; returns (commit, links). Refuses when the
    pipeline is not up to date, since the committed results would not be those of the committed params."""
    status = pipeline_status(root)
    if status:
        raise LinkingError(f"the pipeline is not up to date ({status}): run `dvc repro` first")
    links = resolve_sent_runs(root, workspace_links(root))
    paths = [p for p in EXPERIMENT_PATHS if (root / p).exists()]
    run_git(root, "add", "--", *paths)
    if not run_git(root, "diff", "--cached", "--name-only", "--", *paths).stdout.strip():
        raise LinkingError("nothing to commit: the experiment's files are as the last commit has them")
    body = "\n".join(link.trailer() for link in links)
    # `-- paths`: only the experiment's files, whatever else the user has staged
    run_git(root, "commit", "--quiet", "-m", message, "-m", body, "--", *paths)
    commit = run_git(root, "rev-parse", "HEAD").stdout.strip()
    tag_runs_with_commit(root, links, commit)
    return commit, links


def resolve_sent_runs(root: Path, links: list[RunLink]) -> list[RunLink]:
    """Fill in the run id of runs that waited in the outbox and have been sent since (found by record id)."""
    waiting = [
        link for link in links if not link.run_id and not (root / tracking.OUTBOX / link.record_id).exists()
    ]
    if not waiting:
        return links
    import mlflow

    settings = tracking.TrackingSettings.from_environment(root)
    try:
        client = mlflow.MlflowClient(settings.tracking_uri)
        experiment = client.get_experiment_by_name(settings.experiment_name)
    except Exception:  # the server is unreachable: keep the record ids, which find the runs later
        return links
    resolved = []
    for link in links:
        if link in waiting and experiment is not None:
            found = client.search_runs(
                [experiment.experiment_id], f"tags.`{tracking.TAG_PREFIX}record_id` = '{link.record_id}'"
            )
            link = RunLink(link.model, found[0].info.run_id, link.record_id) if found else link
        resolved.append(link)
    return resolved


def pipeline_status(root: Path) -> str:
    """`dvc status`'s complaint, or "" when every stage is up to date."""
    from mnist_lab.ingest import dvc

    done = dvc("status", "--quiet", cwd=root)
    if done.returncode == 0:
        return ""
    changed = dvc("status", cwd=root).stdout
    stages = [
        line.strip().rstrip(":") for line in changed.splitlines() if line and not line.startswith((" ", "\t"))
    ]
    return "changed: " + ", ".join(stages[:6]) if stages else "dvc status reports changes"


def tag_runs_with_commit(root: Path, links: list[RunLink], commit: str) -> None:
    """Tag each run with the commit holding its results; runs waiting in the outbox get the tag there."""
    settings = tracking.TrackingSettings.from_environment(root)
    untagged = []
    sent = [link for link in links if link.run_id]
    if sent:
        import mlflow

        client = mlflow.MlflowClient(settings.tracking_uri)
        for link in sent:
            try:
                client.set_tag(link.run_id, RESULTS_COMMIT_TAG, commit)
            except Exception:  # the commit is made: say what is missing rather than fail
                untagged.append(link.model)
    for link in links:
        if not link.run_id and not tracking.retag_pending(root, link.record_id, {RESULTS_COMMIT_TAG: commit}):
            untagged.append(link.model)
    if untagged:
        print(
            f"warning: committed {commit[:12]}, but could not tag the runs of {', '.join(untagged)} with it "
            f"(tag {RESULTS_COMMIT_TAG}); the commit's trailers still name them",
            file=sys.stderr,
        )


def runs_of_commit(root: Path, revision: str) -> list[RunLink]:
    """The runs a commit names (from git alone: works offline and without the MLflow store): its trailers,
    or for a commit made otherwise (`dvc exp branch`, a plain `git commit`) its `reports/*/mlflow.json`."""
    done = run_git(root, "log", "-1", "--format=%B", revision, check=False)
    if done.returncode != 0:
        raise LinkingError(f"'{revision}' is not a commit of this repository")
    return parse_trailers(done.stdout) or committed_run_files(root, revision)


def committed_run_files(root: Path, revision: str) -> list[RunLink]:
    """The runs recorded in a commit's `reports/<model>/mlflow.json` files."""
    import json

    names = run_git(root, "ls-tree", "-r", "--name-only", revision, "--", "reports").stdout.split()
    links = []
    for name in sorted(n for n in names if re.fullmatch(r"reports/[a-z][a-z0-9_]*/mlflow\.json", n)):
        record = json.loads(run_git(root, "show", f"{revision}:{name}").stdout)
        links.append(RunLink(name.split("/")[1], record.get("run_id"), record["record_id"]))
    return links


def link_commit(root: Path, revision: str) -> tuple[str, list[RunLink]]:
    """Tag the runs of an experiment committed without `mnist-lab commit` (say by `dvc exp branch`) with
    the commit holding their results, as `mnist-lab commit` does."""
    commit = resolve_commit(root, revision)
    links = resolve_sent_runs(root, runs_of_commit(root, commit))
    if not links:
        raise LinkingError(
            f"commit {commit[:12]} holds no experiment: no MLflow-Run trailers, no reports/*/mlflow.json"
        )
    tag_runs_with_commit(root, links, commit)
    return commit, links


def commit_of_run(root: Path, run_or_record_id: str) -> str:
    """The commit holding a run's results: from the git history (trailers, then the commit that added the
    run's `mlflow.json`, DVC's experiment refs included), else from the run's tag."""
    pattern = f"^{TRAILER}: .*(run|record)={re.escape(run_or_record_id)}"
    found = run_git(root, "log", "--all", "--format=%H", "-E", f"--grep={pattern}").stdout.split()
    if not found and re.fullmatch(r"[0-9a-f]{16,}", run_or_record_id):
        found = run_git(
            root, "log", "--all", "--format=%H", f"-S{run_or_record_id}", "--", "reports/*/mlflow.json"
        ).stdout.split()
    if found:
        return found[0]
    settings = tracking.TrackingSettings.from_environment(root)
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient(settings.tracking_uri).get_run(run_or_record_id)
    except MlflowException:
        raise LinkingError(
            f"no commit names run '{run_or_record_id}' and the tracking store does not know it"
        ) from None
    commit = run.data.tags.get(RESULTS_COMMIT_TAG)
    if not commit:
        raise LinkingError(f"run {run_or_record_id} has not been committed (`mnist-lab commit -m ...`)")
    return commit
