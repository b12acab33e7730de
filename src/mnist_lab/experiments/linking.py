"""Every commit is an experiment: commit an experiment's files with its MLflow runs as trailers, tag each run
with the commit that holds its results, and find one from the other in both directions."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mnist_lab import tracking
from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.experiment_files import RunFile
from mnist_lab.core.settings import load_settings
from mnist_lab.system import commands
from mnist_lab.system.files import read_experiment_file, replaced_via_temp

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
    "stage-code",
)
# DVC writes a `.gitignore` beside each output it caches, and adds a line to it for each new model's or
# output's files (`/cnn`): left out, a new model or output folder would leave the tree dirty after its
# experiment was committed
IGNORE_FILE_FOLDERS = ("models", "outputs")


def experiment_paths(root: Path) -> list[str]:
    """The files and folders of the experiment in `root` that exist: `EXPERIMENT_PATHS` and DVC's ignore
    files under `IGNORE_FILE_FOLDERS`."""
    paths = [p for p in EXPERIMENT_PATHS if (root / p).exists()]
    for folder in IGNORE_FILE_FOLDERS:
        paths += sorted(p.relative_to(root).as_posix() for p in (root / folder).rglob(".gitignore"))
    return paths


_LOCKED_PATH = re.compile(r"^ *- path: (\S+)$", re.MULTILINE)  # a dep's or out's path in dvc.lock


def code_changes(root: Path) -> list[str]:
    """The files besides the experiment's own that its results were made with, changed since HEAD or new,
    among `code_paths`. `mnist-lab commit` commits them with the results: left out, the commit's listings
    named code it did not hold (dirty, by `history`'s own check), its dvc.lock a folder's hash its files did
    not give (`dvc status` not clean at that commit), or a stage its dvc.yaml lacked."""
    present = code_paths(root)
    if not present:
        return []
    # --no-renames: one `XY path` entry each (a rename's second, its old path, has no status letters)
    done = run_git(
        root, "status", "--porcelain", "-z", "--no-renames", "--untracked-files=all", "--", *present
    )
    return _not_the_experiments(root, {entry[3:] for entry in done.stdout.split("\0") if len(entry) > 3})


def committed_code(root: Path, commit: str) -> list[str]:
    """The files `commit` changed besides the experiment's own (`experiment_paths`): the code it holds."""
    changed = run_git(root, "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", "--root", commit)
    return _not_the_experiments(root, set(filter(None, changed.stdout.split("\0"))))


def _not_the_experiments(root: Path, paths: set[str]) -> list[str]:
    """`paths` but the experiment's own files and those in its folders (`experiment_paths`), sorted."""
    own = experiment_paths(root)
    return sorted(path for path in paths if not any(path == p or path.startswith(f"{p}/") for p in own))


def code_paths(root: Path) -> list[str]:
    """Where the code an experiment's results were made with is: the source files the stages' code
    listings (`stage-code/`) name, the folders `dvc.lock` records the hash of (the `code` stage's
    `src/mnist_lab`: any edit there changes dvc.lock; git lists only what it keeps there, not DVC's data),
    `dvc.yaml`, and for each path `dvc.lock` records, its `.dvc` file and DVC's `.gitignore` beside it (a
    stage added by `predict --as-stage` on a `dvc add`-ed file); those that exist."""
    from mnist_lab.system.sources import parse_code_listing

    candidates = {"dvc.yaml"}
    for listing in sorted((root / "stage-code").glob("*.sha256")):
        candidates |= set(parse_code_listing(listing.read_text(encoding="utf-8", errors="replace")))
    folders = set()
    if (root / "dvc.lock").is_file():
        for path in _LOCKED_PATH.findall((root / "dvc.lock").read_text(encoding="utf-8", errors="replace")):
            candidates.add(f"{path}.dvc")
            if Path(path).parent != Path("."):  # the root's .gitignore is the team's, not DVC's alone
                candidates.add((Path(path).parent / ".gitignore").as_posix())
            if (root / path).is_dir():
                folders.add(path)
    return sorted(path for path in candidates if (root / path).is_file()) + sorted(folders)


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
    done = commands.git(*args, cwd=root)
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
        record = read_experiment_file(path, RunFile)
        links.append(RunLink(model, record.run_id, record.record_id))
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


def commit_experiment(root: Path, message: str) -> tuple[str, list[RunLink], Tagging]:
    """Commit the experiment's files, and the changed code its results were made with (`code_changes`),
    with its runs as trailers; returns (commit, links, models whose runs could not be tagged with the
    commit, and why: Tagging). Refuses when the pipeline is not up to date, since the committed results
    would not be those of the committed params."""
    if not message.strip():
        raise LinkingError('the commit message is empty: say what this experiment changes (-m "...")')
    control = next((c for c in message if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127), None)
    if control is not None:
        raise LinkingError(
            f"the commit message holds a control character ({control!r}): write it as text, lines and tabs"
        )
    status = pipeline_status(root)
    if status:
        raise LinkingError(f"the pipeline is not up to date ({status}): run `dvc repro` first")
    links = resolve_sent_runs(root, workspace_links(root))
    # the index as the user left it, put back if the commit fails (no identity, a hook refusing): the
    # experiment's files left staged would go into the user's next plain `git commit`, without trailers
    index, saved = saved_index(root)
    try:
        stale = stale_index_entries(root, experiment_paths(root) + code_paths(root))
        if stale:  # forgotten by the index (-f: staged content of its own too), so git sees them anew
            run_git(root, "rm", "--cached", "--quiet", "-f", "--", *stale)
        paths = experiment_paths(root) + code_changes(root)
        run_git(root, "add", "--", *paths)
        if not run_git(root, "diff", "--cached", "--name-only", "--", *paths).stdout.strip():
            raise LinkingError("nothing to commit: the experiment's files are as the last commit has them")
        body = "\n".join(link.trailer() for link in links)
        # `-- paths`: only the experiment's files, whatever else the user has staged; no time limit (its
        # hooks, a signing key's passphrase, take what they take)
        done = commands.git(
            "commit", "--quiet", "-m", message, "-m", body, "--", *paths, cwd=root, timeout=None
        )
        if done.returncode != 0:
            output = (done.stderr.strip() or done.stdout.strip())[-1500:]
            raise LinkingError(
                f"`git commit` failed; nothing was committed, the index is as it was:\n{output}"
            )
    except (MnistLabError, KeyboardInterrupt):
        restore_index(index, saved)
        raise
    commit = run_git(root, "rev-parse", "HEAD").stdout.strip()
    return commit, links, tag_runs_with_commit(root, links, commit)


def saved_index(root: Path) -> tuple[Path, tuple[bytes, int] | None]:
    """Git's index file (`$GIT_INDEX_FILE` if set), its bytes and time; None where there is none yet. Kept
    whole: a tree of it (`git write-tree` / `read-tree`) lost the user's `git add -N` entries, the index's
    flags (assume-unchanged, skip-worktree) and, with a conflict, could not be written at all."""
    index = Path(run_git(root, "rev-parse", "--git-path", "index").stdout.strip())
    index = index if index.is_absolute() else root / index
    try:
        return index, (index.read_bytes(), index.stat().st_mtime_ns)
    except FileNotFoundError:
        return index, None


def restore_index(index: Path, saved: tuple[bytes, int] | None) -> None:
    """Put back the index `saved_index` read (atomically: git never reads half of it), with its time: git
    trusts an entry's recorded size and time when the entry is older than the index file, so a newer
    index hid an edit made in the same second as the entry was staged (`AM` shown as `A`)."""
    if saved is None:
        index.unlink(missing_ok=True)
        return
    content, modified_ns = saved
    with replaced_via_temp(index) as temporary:
        temporary.write_bytes(content)
        os.utime(temporary, ns=(modified_ns, modified_ns))


def stale_index_entries(root: Path, paths: list[str]) -> list[str]:
    """The files among `paths` (or in their folders) whose content is not what git's index records for
    them although their size and time are: `git status` and `git add` trust that record and skip them.
    DVC leaves such records after `dvc exp run` restores a workspace (a rejected `-S` value): committed so,
    the experiment's metrics.csv or best_model.json kept the last commit's content, a dirty commit that
    `git status` called clean."""
    listed = run_git(root, "ls-files", "--stage", "-z", "--", *paths).stdout.split("\0")
    recorded = {}
    for entry in filter(None, listed):
        info, _, path = entry.partition("\t")
        mode, blob, _stage = info.split()
        if mode in ("100644", "100755") and "\n" not in path and (root / path).is_file():
            recorded[path] = blob
    if not recorded:
        return []
    names = list(recorded)
    hashed = commands.git(
        "hash-object", "--stdin-paths", cwd=root, input="\n".join(names) + "\n", check=True
    ).stdout.split()
    return [path for path, blob in zip(names, hashed, strict=True) if blob != recorded[path]]


def resolve_sent_runs(root: Path, links: list[RunLink]) -> list[RunLink]:
    """Fill in the run id of runs that waited in the outbox and have been sent since (found by record id:
    a commit's trailer naming it with its id, as `mnist-lab commit` writes it once sent, also in another
    clone; else this clone's record of what it sent, else the server), to whichever server: one sent before
    `.env` named another has its id all the same (it is not pending). Offline and never sent, they stay
    pending."""
    links = [
        link if link.run_id else RunLink(link.model, run_id_in_trailers(root, link.record_id), link.record_id)
        for link in links
    ]
    if all(link.run_id for link in links):
        return links
    from mnist_lab.tracking.outbox import find_sent_run, sent_runs

    settings = tracking.TrackingSettings.from_environment(root)
    ledger = sent_runs(root)
    resolved = []
    for link in links:
        sent = None if link.run_id else find_sent_run(root, link.record_id, settings)
        run_id = link.run_id or (sent.run_id if sent else ledger.get(link.record_id))
        resolved.append(RunLink(link.model, run_id, link.record_id))
    return resolved


def run_id_in_trailers(root: Path, record_id: str) -> str | None:
    """The run id a commit of HEAD's history gives run record `record_id` in its trailers (None: none)."""
    if not re.fullmatch(r"[0-9a-f]+", record_id or ""):
        return None
    if run_git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode != 0:
        return None  # no commit yet
    for _, link in _commits_naming(root, record_id, ("HEAD",), trailers=True):
        if link.record_id == record_id and link.run_id:
            return link.run_id
    return None


def pipeline_status(root: Path) -> str:
    """`dvc status`'s complaint, or "" when every stage is up to date."""
    from mnist_lab.system.commands import dvc

    done = dvc("status", "--quiet", cwd=root)
    if done.returncode == 0:
        return ""
    full = dvc("status", cwd=root)
    if full.returncode != 0 and full.stderr.strip():  # DVC could not tell (a broken dvc.yaml, a lock held)
        raise LinkingError(f"`dvc status` failed: {full.stderr.strip()[-600:]}")
    changed = full.stdout
    stages = [
        line.strip().rstrip(":") for line in changed.splitlines() if line and not line.startswith((" ", "\t"))
    ]
    return "changed: " + ", ".join(stages[:6]) if stages else "dvc status reports changes"


SERVER_AWAY = "the tracking server did not answer"


@dataclass
class Tagging:
    """What tagging a commit's runs did: per model not tagged, why (SERVER_AWAY when the server did not
    answer); per model whose run keeps the earlier commit that recorded it first, that commit; the models
    whose run was tagged with this commit already (nothing done)."""

    untagged: dict[str, str]
    kept: dict[str, str]
    already: set[str] = field(default_factory=set)


def tag_runs_with_commit(root: Path, links: list[RunLink], commit: str) -> Tagging:
    """Tag each run with the commit holding its results (runs waiting in the outbox get the tag there),
    unless its tag already names the commit that first recorded it, by `commit-of`'s rule (the first one
    stays, and `commit-of` answers it too). The commit names every run either way."""
    from mnist_lab.system.redact import display_uri, first_line, redact
    from mnist_lab.tracking.outbox import find_sent_run, is_transport_failure, pending_tags, retag_pending
    from mnist_lab.tracking.server import describe_store_failure

    settings = tracking.TrackingSettings.from_environment(root)
    client = None
    done = Tagging({}, {})
    refused: str | None = None  # why every tag fails: the server is away, or refuses the credentials
    checked = False  # a remote server asked once whether it answers

    def keeps(earlier: str | None, link: RunLink) -> bool:
        if earlier and earlier != commit and _first_records(root, earlier, link):
            done.kept[link.model] = earlier
            return True
        return False

    for link in links:
        waiting = None if link.run_id else pending_tags(root, link.record_id)
        if waiting is not None and (
            keeps(waiting.get(RESULTS_COMMIT_TAG), link)
            or retag_pending(root, link.record_id, {RESULTS_COMMIT_TAG: commit})
        ):
            continue
        if refused is None and not checked and settings.is_remote:
            # before any MLflow request (finding a sent run asks too): a server that hangs costs seconds
            # here, not MLflow's ~2 minutes per request
            checked = True
            try:
                tracking.check_server(settings, experiment_needed=False)  # 3 tries: a busy server answers
            except tracking.TrackingConfigError as exc:  # credentials, address
                refused = redact(str(exc))
            except tracking.TrackingServerUnreachable:
                refused = SERVER_AWAY
        if refused is not None:  # the other runs' tags would fail the same way (away, or credentials)
            # but a run an earlier commit recorded first keeps that commit's tag: nothing to do (from git)
            first = _first_recorder(root, link)
            if first and first != commit:
                done.kept[link.model] = first
            else:
                done.untagged[link.model] = refused
            continue
        sent = link.run_id or getattr(find_sent_run(root, link.record_id, settings), "run_id", None)
        if not sent:
            done.untagged[link.model] = (
                f"its record {link.record_id} was never sent to {display_uri(settings.tracking_uri)} from "
                "this clone (`mnist-lab sync` sends what waits in the outbox)"
            )
            continue
        try:
            if client is None:
                client = tracking.mlflow_client(settings)  # bounded retries
            tagged = client.get_run(sent).data.tags.get(RESULTS_COMMIT_TAG)
            if tagged == commit:
                done.already.add(link.model)
            elif not keeps(tagged, link):
                client.set_tag(sent, RESULTS_COMMIT_TAG, commit)
        except Exception as exc:  # the commit is made (or was already): say what is missing rather than fail
            if is_transport_failure(exc):
                done.untagged[link.model] = refused = SERVER_AWAY
            elif "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                # logged to another store (the local one, before .env named this server): a run an
                # earlier commit recorded first keeps that commit, as git alone says
                first = _first_recorder(root, link)
                if first and first != commit:
                    done.kept[link.model] = first
                    continue
                done.untagged[link.model] = (
                    f"its run {sent} is not in the tracking store {display_uri(settings.tracking_uri)} "
                    "(logged to another store, such as the local one before .env named a server, or this "
                    "store was emptied since: `dvc repro -f` logs the experiment again)"
                )
            else:  # a rejected login names the variables to fix, once for every run
                described = describe_store_failure(exc)
                reason = first_line(redact(described or f"{type(exc).__name__}: {exc}"))
                done.untagged[link.model] = reason
                if described and ("(401)" in described or "(403)" in described):
                    refused = reason
    return done


def _first_records(root: Path, earlier: str, link: RunLink) -> bool:
    """Whether `earlier` (the commit a run is tagged with) is the commit that first recorded the run, as
    `commit-of` answers from git: then it keeps the tag, and the tag and `commit-of` agree. (Keeping it
    only for an ancestor of the commit linked let a sibling, say a `dvc exp branch` beside the `mnist-lab
    commit` of an experiment sharing its unchanged models' runs, take the tag from the commit `commit-of`
    names.)"""
    return _first_recorder(root, link) == earlier


def _first_recorder(root: Path, link: RunLink) -> str | None:
    """The commit that first recorded `link`'s run, as `commit-of` answers from git (None: none, or it
    cannot tell)."""
    try:
        return _first_commit_in_git(root, link.record_id)
    except LinkingError:
        return None


def _first_commit_in_git(root: Path, wanted: str) -> str | None:
    """commit_of_run's answer from git alone (None: no commit names the run): in the branches and tags
    first, then in every ref; the oldest commit whose trailers name it, else the oldest that added it to a
    `reports/*/mlflow.json`."""
    born = run_git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip()
    # HEAD only where it has a commit (`git checkout --orphan`: git log fails on it)
    for scope in (("--branches", "--tags", *(["HEAD"] if born else [])), ("--all",)):
        by_trailer = _commits_naming(root, wanted, scope, trailers=True)
        by_file = _commits_naming(root, wanted, scope, trailers=False)
        _refuse_ambiguous(wanted, by_trailer + by_file)
        records = {link.record_id for _, link in by_trailer + by_file}  # one at most, once unambiguous
        if records and not (record := records.pop()).startswith(wanted):
            # a run id: the commits made before the run was sent name only its record (run=pending)
            by_trailer += _commits_naming(root, record, scope, trailers=True)
            by_file += _commits_naming(root, record, scope, trailers=False)
        for found in (by_trailer, by_file):
            if found:  # the oldest of the commits naming it: parents before children (dates can tie)
                candidates = {commit for commit, _ in found}
                history = run_git(root, "rev-list", "--topo-order", "--reverse", *candidates).stdout.split()
                return next(commit for commit in history if commit in candidates)
    return None


def experiment_refs(root: Path) -> list[tuple[str, str]]:
    """(commit, name) of each DVC experiment ref (`refs/exps/<xx>/<baseline rest>/<name>`); queued ones
    (`refs/exps/celery/...`, stashes) are not experiments yet."""
    done = commands.git(
        "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps", cwd=root, check=True
    )
    refs = []
    for line in done.stdout.splitlines():
        sha, _, ref = line.partition(" ")
        parts = ref.split("/")
        if len(parts) == 5 and parts[2] not in ("celery", "temp", "runs", "exec", "stash"):
            refs.append((sha, parts[4]))
    return refs


def runs_of_commit(root: Path, revision: str) -> list[RunLink]:
    """The runs a commit names (from git alone: works offline and without the MLflow store): its trailers,
    or for a commit made otherwise (`dvc exp branch`, a plain `git commit`) its `reports/*/mlflow.json`."""
    done = run_git(root, "log", "-1", "--format=%B", revision, check=False)
    if done.returncode != 0:
        raise LinkingError(f"'{revision}' is not a commit of this repository")
    return parse_trailers(done.stdout) or committed_run_files(root, revision)


def committed_run_files(root: Path, revision: str) -> list[RunLink]:
    """The runs recorded in a commit's `reports/<model>/mlflow.json` files. The oldest experiments' files
    name their run without a record id (the outbox came later): the run id stands for it. A file that names
    no run (damaged, edited) is left out, as the experiments table leaves it."""
    import json

    names = run_git(root, "ls-tree", "-r", "--name-only", revision, "--", "reports").stdout.split()
    links = []
    for name in sorted(n for n in names if re.fullmatch(r"reports/[a-z][a-z0-9_]*/mlflow\.json", n)):
        try:
            record = json.loads(run_git(root, "show", f"{revision}:{name}").stdout)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        run_id = record.get("run_id") if isinstance(record.get("run_id"), str) else None
        record_id = record.get("record_id") if isinstance(record.get("record_id"), str) else run_id
        if record_id:
            links.append(RunLink(name.split("/")[1], run_id, record_id))
    return links


def link_commit(root: Path, revision: str) -> tuple[str, list[RunLink], Tagging]:
    """Tag the runs of an experiment committed without `mnist-lab commit` (say by `dvc exp branch`) with
    the commit holding their results, as `mnist-lab commit` does: (commit, links, Tagging)."""
    commit = resolve_commit(root, revision)
    links = resolve_sent_runs(root, runs_of_commit(root, commit))
    if not links:
        raise LinkingError(
            f"commit {commit[:12]} holds no experiment: no MLflow-Run trailers, no reports/*/mlflow.json"
        )
    return commit, links, tag_runs_with_commit(root, links, commit)


_RUN_ID = re.compile(r"[0-9a-f]{8,32}")


def commit_of_run(root: Path, run_or_record_id: str) -> str:
    """The commit that first recorded a run's results, for its run id or record id or a unique prefix of
    either (8 characters or more, as `history` prints them): the oldest commit whose `MLflow-Run:` trailers
    name it, else the oldest commit that added it to a `reports/*/mlflow.json`; looked for in the branches
    and tags first, then in DVC's experiment refs (an experiment not committed yet); else the run's
    `mnist_lab.results_commit` tag in the tracking store."""
    wanted = run_or_record_id.strip().lower()
    if not _RUN_ID.fullmatch(wanted):
        raise LinkingError(
            f"'{run_or_record_id}' is not a run id or record id: give 8 to 32 hexadecimal characters of one "
            "(as `mnist-lab runs` or `mnist-lab history` print them)"
        )
    first = _first_commit_in_git(root, wanted)
    if first is not None:
        return first
    from mnist_lab.tracking.outbox import sent_runs

    # a run that waited in the outbox: the commits name its record id; this clone's ledger knows its run id
    records = {record for record, run_id in sent_runs(root).items() if run_id.startswith(wanted)}
    if len(records) == 1:
        record = records.pop()
        try:
            return commit_of_run(root, record)
        except LinkingError as exc:  # why the record has no commit: the store's answer, or that it is away
            raise LinkingError(
                f"run '{wanted}' was sent from this clone's outbox (record {record}): {exc}"
            ) from None
    _refuse_uncommitted(root, wanted)
    return _commit_from_store(root, wanted)


def _refuse_uncommitted(root: Path, wanted: str) -> None:
    """A run of the workspace's own results (reports/*/mlflow.json), not committed yet: say so."""
    import json

    for path in sorted((root / "reports").glob("*/mlflow.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            run_id, record_id = record.get("run_id") or "", record["record_id"]
        except (OSError, ValueError, KeyError, AttributeError):
            continue  # not this package's file: nothing to say about it
        if record_id.startswith(wanted) or run_id.startswith(wanted):
            raise LinkingError(
                f"run {run_id or 'pending'} (record {record_id}, {path.parent.name}) holds the workspace's "
                "results, not committed yet: `mnist-lab commit -m ...` commits them"
            )


def _refuse_ambiguous(wanted: str, found: list[tuple[str, RunLink]]) -> None:
    records = sorted({link.record_id for _, link in found})
    if len(records) > 1:
        named = ", ".join(
            next(
                f"{link.model} {link.run_id or 'pending'} (record {r})"
                for _, link in found
                if link.record_id == r
            )
            for r in records
        )
        raise LinkingError(
            f"'{wanted}' is ambiguous: it starts the ids of {len(records)} runs: {named}; give more "
            "characters"
        )


def _commits_naming(
    root: Path, wanted: str, scope: tuple[str, ...], trailers: bool
) -> list[tuple[str, RunLink]]:
    """(commit, the run it names) for every commit of `scope` (git log's revisions) naming a run whose id or
    record id starts with `wanted`, from its trailers or (trailers=False) from the `mlflow.json` files it
    adds."""
    order = ("log", *scope, "--format=%H")
    if trailers:
        commits = run_git(root, *order, "-E", f"--grep=^{TRAILER}: .*(run|record)={wanted}").stdout.split()
    else:  # -S lists the commits that add *or remove* the id: keep those whose files hold it
        commits = run_git(root, *order, f"-S{wanted}", "--", "reports/*/mlflow.json").stdout.split()
    found = []
    for commit in commits:
        if trailers:
            links = parse_trailers(run_git(root, "log", "-1", "--format=%B", commit).stdout)
        else:
            links = committed_run_files(root, commit)
        found += [
            (commit, link)
            for link in links
            if link.record_id.startswith(wanted) or (link.run_id or "").startswith(wanted)
        ]
    return found


def _commit_from_store(root: Path, wanted: str) -> str:
    """The commit a run not named in the git history was tagged with (`mnist-lab commit` / `link`)."""
    from mlflow.exceptions import MlflowException

    from mnist_lab.system.redact import display_uri
    from mnist_lab.tracking.outbox import find_sent_run, is_transport_failure

    settings = tracking.TrackingSettings.from_environment(root)
    if len(wanted) < 32:
        raise LinkingError(
            f"no commit names run '{wanted}': outside the git history, give the full 32-character run id "
            "(the tracking store looks runs up by their whole id)"
        )
    client = tracking.mlflow_client(settings)
    run = None
    try:
        try:
            run = client.get_run(wanted)
        except MlflowException as exc:
            if is_transport_failure(exc):
                raise
            sent = find_sent_run(root, wanted, settings)  # a record id
            run = client.get_run(sent.run_id) if sent else None
    except Exception as exc:
        if not is_transport_failure(exc):
            raise
        raise LinkingError(
            f"no commit names run '{wanted}', and the tracking store {display_uri(settings.tracking_uri)} "
            "that could know it did not answer: try again when it does"
        ) from None
    if run is None:
        raise LinkingError(
            f"no commit names run '{wanted}' and the tracking store {display_uri(settings.tracking_uri)} "
            "does not know it"
        )
    commit = run.data.tags.get(RESULTS_COMMIT_TAG)
    if not commit:
        raise LinkingError(f"run {run.info.run_id} has not been committed (`mnist-lab commit -m ...`)")
    return commit
