"""The outbox: runs a remote tracking server could not take, kept under `.mnist-lab/outbox/` until it can.

Only transport failures (no connection, a timeout, 5xx, 429) put a run here; any other failure is a bug or
a configuration error and fails the stage. Each entry is data, readable after this package is refactored:

    .mnist-lab/outbox/<record id>/
        manifest.json        format, version, run name, params, metrics, history, tags, nested runs, server
        artifacts/<path>     the run's files
        model.pkl            the model (cloudpickle, this package's code stored by value, as in MLflow)
        input_example.npy    the model's input example (its column names are in the manifest)
        reason.txt           why it waits

One process at a time touches the outbox (`outbox.lock`): a sender, and `mnist-lab commit` re-tagging a run
that waits. A run sent from here is remembered in `.mnist-lab/sent.json` (record id -> run id), so every
command finds it by its record id, offline too.

One module (~450 lines) on purpose: writing an entry, sending it, the lock and the sent-runs record share
one on-disk format and one set of invariants (an entry is complete or absent; a run is sent once); split,
each half would have to know the other's file layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_lab import tracking
from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.files import exclusive_lock, read_json, write_bytes_atomic, write_json
from mnist_lab.system.redact import display_uri, first_line, redact
from mnist_lab.tracking import (
    OUTBOX,
    SERVER_AWAY_FOR_S,
    TAG_PREFIX,
    ChildRunRecord,
    LoggedRun,
    ModelRunRecord,
    TrackingSettings,
    log_model_run,
    logged_model_uri,
    this_package_pickled_by_value,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

FORMAT = "mnist-lab-outbox"
VERSION = 1
REJECTED = OUTBOX.with_name("outbox-rejected")  # entries that cannot be read or sent, kept for a person
SENT = OUTBOX.with_name("sent.json")
RECORD_TAG = f"{TAG_PREFIX}record_id"
PARENT_RECORD_TAG = f"{TAG_PREFIX}parent_record_id"


@dataclass(frozen=True)
class SpooledRun:
    """A run kept in the outbox because the server could not take it."""

    record_id: str
    path: Path
    reason: str


class UnreadableEntry(MnistLabError):
    """An outbox entry this version cannot read: it is moved aside, never sent half-understood."""


# --- what counts as the server being away ------------------------------------------------------------------


def is_transport_failure(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says the server could not be reached or could not answer now:
    a refused or reset connection, a timeout, HTTP 5xx or 429. Anything else (a 4xx, a TypeError while
    saving the model) is not the network's fault and must not be hidden in the outbox."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
            | requests.exceptions.ChunkedEncodingError | ConnectionError | TimeoutError,
        ):  # fmt: skip
            return True
        status = http_status(current)
        if status is not None and (status >= 500 or status == 429):
            return True
        current = current.__cause__ or current.__context__
    return False


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a server answered with, where the exception carries one."""
    import re

    response = getattr(exc, "response", None)
    if response is not None and isinstance(getattr(response, "status_code", None), int):
        return response.status_code
    if type(exc).__name__ == "RestException":  # MLflow: the server's JSON error, mapped to its status
        return int(exc.get_http_status_code())  # type: ignore[attr-defined]
    found = re.search(r"failed with error code (\d{3})\b", str(exc))  # MLflow: a non-JSON error answer
    return int(found.group(1)) if found else None


# --- entries --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """The outbox's lock: one sender or re-tagger at a time, across processes."""
    with exclusive_lock(root / OUTBOX.with_name("outbox.lock")):
        yield


def _manifest(record: ModelRunRecord, reason: str, server: str | None) -> dict[str, Any]:
    example = record.input_example
    return {
        "format": FORMAT,
        "version": VERSION,
        "record_id": record.record_id,
        "created_ms": record.created_ms,
        "run_name": record.run_name,
        "params": record.params,
        "metrics": record.metrics,
        "history": record.history,
        "tags": record.tags,
        "children": [dataclasses.asdict(child) for child in record.children],
        "artifacts": sorted(record.artifacts),
        "model": "model.pkl" if record.model is not None else None,
        "input_example": None
        if example is None
        else {"file": "input_example.npy", "columns": [str(c) for c in getattr(example, "columns", [])]},
        "reason": reason,
        "server": server,  # display_uri of the server it was logged for (no credentials); older: none
    }


def _write_entry(record: ModelRunRecord, folder: Path, reason: str, server: str | None) -> None:
    import cloudpickle
    import numpy as np

    for name, content in record.artifacts.items():
        path = folder / "artifacts" / name
        if not path.resolve().is_relative_to((folder / "artifacts").resolve()):
            raise ValueError(f"artifact path {name!r} leaves the run's folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if record.model is not None:
        with this_package_pickled_by_value():
            (folder / "model.pkl").write_bytes(cloudpickle.dumps(record.model))
    if record.input_example is not None:
        np.save(folder / "input_example.npy", np.asarray(record.input_example), allow_pickle=False)
    (folder / "reason.txt").write_text(reason + "\n", encoding="utf-8")
    # default=str: MLflow logs every param as its str() anyway
    (folder / "manifest.json").write_text(
        json.dumps(_manifest(record, reason, server), indent=1, default=str) + "\n"
    )


def read_entry(entry: Path) -> ModelRunRecord:
    """The run an outbox entry holds; UnreadableEntry naming what is wrong with it."""
    import cloudpickle
    import numpy as np
    import pandas as pd

    if not (entry / "manifest.json").exists() and (entry / "record.pkl").is_file():
        return _read_pickled_entry(entry)
    try:
        manifest = read_json(entry / "manifest.json")
    except (OSError, ValueError) as exc:
        raise UnreadableEntry(f"{entry / 'manifest.json'} cannot be read ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UnreadableEntry(f"{entry / 'manifest.json'} is not an mnist-lab outbox manifest")
    if manifest.get("version") != VERSION:
        raise UnreadableEntry(
            f"{entry / 'manifest.json'} has version {manifest.get('version')!r}; this mnist-lab reads "
            f"version {VERSION}: send it with the mnist-lab that wrote it"
        )
    try:
        model = None
        if manifest["model"]:
            model = cloudpickle.loads((entry / manifest["model"]).read_bytes())
        example = None
        if manifest["input_example"]:
            values = np.load(entry / manifest["input_example"]["file"], allow_pickle=False)
            columns = manifest["input_example"]["columns"]
            example = pd.DataFrame(values, columns=columns) if columns else values
        return ModelRunRecord(
            run_name=manifest["run_name"],
            params=manifest["params"],
            metrics=manifest["metrics"],
            history=manifest["history"],
            tags=manifest["tags"],
            artifacts={name: (entry / "artifacts" / name).read_bytes() for name in manifest["artifacts"]},
            model=model,
            input_example=example,
            children=[ChildRunRecord(**child) for child in manifest["children"]],
            record_id=manifest["record_id"],
            created_ms=manifest["created_ms"],
        )
    except Exception as exc:  # a missing file, a model that no longer unpickles, a field of the wrong type
        raise UnreadableEntry(f"{entry} cannot be read: {type(exc).__name__}: {exc}") from None


def _read_pickled_entry(entry: Path) -> ModelRunRecord:
    """An entry written by mnist-lab before the manifest (a pickled record): sent if it still unpickles."""
    import cloudpickle

    try:
        record = cloudpickle.loads((entry / "record.pkl").read_bytes())
    except Exception as exc:
        raise UnreadableEntry(f"{entry / 'record.pkl'} (an entry of an older mnist-lab) cannot be read: "
                              f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    if not isinstance(record, ModelRunRecord):
        raise UnreadableEntry(f"{entry / 'record.pkl'} does not hold a run")
    return record


def spool(record: ModelRunRecord, root: Path, reason: str, tracking_uri: str | None = None) -> SpooledRun:
    """Keep `record` (everything the run carries, the model included) in the outbox, atomically, with the
    server it was meant for (`tracking_uri`, kept without credentials): `send_pending` sends it there only."""
    outbox = root / OUTBOX
    outbox.mkdir(parents=True, exist_ok=True)
    reason = redact(reason)
    staging = Path(tempfile.mkdtemp(prefix=f".{record.record_id}-", dir=outbox))
    try:
        server = display_uri(tracking_uri) if tracking_uri else None
        _write_entry(record, staging, reason, server)
        with locked(root):
            target = outbox / record.record_id
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SpooledRun(record.record_id, target, reason)


def pending_records(root: Path) -> list[Path]:
    """The outbox entries waiting to be sent, oldest run first. Read without the outbox's lock: an entry
    another process sends (and removes) meanwhile is left out."""
    outbox = root / OUTBOX
    if not outbox.is_dir():
        return []
    ordered = []
    for entry in outbox.iterdir():
        if entry.name.startswith("."):
            continue  # a spool's staging folder
        try:
            if entry.is_dir():
                ordered.append((_logged_ms(entry), entry.name, entry))
        except FileNotFoundError:
            continue
    return [entry for *_, entry in sorted(ordered)]


def _logged_ms(entry: Path) -> float:
    """When an entry's run was logged: its manifest's `created_ms` (not the folder's time, which a re-tag
    by `mnist-lab commit` moves: the run would go after later ones); the folder's time for an entry of an
    older mnist-lab or an unreadable manifest. FileNotFoundError once the entry is gone."""
    try:
        manifest = read_json(entry / "manifest.json")
    except (OSError, ValueError):
        manifest = None
    created = manifest.get("created_ms") if isinstance(manifest, dict) else None
    if isinstance(created, int | float) and not isinstance(created, bool):
        return float(created)
    return entry.stat().st_mtime * 1000


def entry_server(entry: Path) -> str | None:
    """The server (without credentials) an entry was logged for; None when unknown (an entry of an older
    mnist-lab, or one whose manifest cannot be read: reading it for sending says what is wrong)."""
    try:
        manifest = read_json(entry / "manifest.json")
    except (OSError, ValueError):
        return None
    server = manifest.get("server") if isinstance(manifest, dict) else None
    return server if isinstance(server, str) else None


def _server_key(uri: str) -> tuple[str, str, str]:
    """A server's address as it identifies the server: scheme and host in lower case, no trailing `/`,
    no credentials (`HTTPS://Host/mlflow/` and `https://host/mlflow` are one server)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(display_uri(uri))
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def retry_rejected(root: Path) -> list[str]:
    """Put every entry of `.mnist-lab/outbox-rejected/` back in the outbox (its `rejected.txt` removed), for
    after the cause is fixed; the names of the entries moved back. An entry also waiting in the outbox (the
    same record spooled again since) is left where it is."""
    rejected, outbox = root / REJECTED, root / OUTBOX
    if not rejected.is_dir():
        return []
    moved = []
    with locked(root):
        outbox.mkdir(parents=True, exist_ok=True)
        for entry in sorted(rejected.iterdir(), key=lambda p: p.stat().st_mtime):
            if not entry.is_dir() or (outbox / entry.name).exists():
                continue
            (entry / "rejected.txt").unlink(missing_ok=True)
            os.replace(entry, outbox / entry.name)
            moved.append(entry.name)
    return moved


def pending_tags(root: Path, record_id: str) -> dict[str, str] | None:
    """The tags of a run still waiting in the outbox, read from its manifest alone (its model is not
    unpickled: one that no longer unpickles does not stop `mnist-lab commit`); None if it is not there."""
    entry = root / OUTBOX / record_id
    if not (entry / "manifest.json").is_file():
        return dict(read_entry(entry).tags) if (entry / "record.pkl").is_file() else None
    try:
        tags = read_json(entry / "manifest.json").get("tags")
    except (OSError, ValueError, AttributeError) as exc:
        raise UnreadableEntry(
            f"{entry / 'manifest.json'} cannot be read ({exc}): `mnist-lab sync` moves the entry to "
            f"{REJECTED}/ with the reason"
        ) from None
    if not isinstance(tags, dict):
        raise UnreadableEntry(f"{entry / 'manifest.json'} is not an mnist-lab outbox manifest (no tags)")
    return {str(key): str(value) for key, value in tags.items()}


def retag_pending(root: Path, record_id: str, tags: dict[str, str]) -> bool:
    """Add `tags` to a run still waiting in the outbox; False if it is not there (sent meanwhile: then tag
    the sent run). Holds the outbox lock, so a sender never sends the entry without the new tags and then
    deletes it."""
    entry = root / OUTBOX / record_id
    with locked(root):
        if not (entry / "manifest.json").is_file():
            return _retag_pickled_entry(entry, tags)
        manifest = read_json(entry / "manifest.json")
        manifest["tags"].update(tags)
        write_bytes_atomic(entry / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return True


def _retag_pickled_entry(entry: Path, tags: dict[str, str]) -> bool:
    """retag_pending for an entry of an older mnist-lab: rewritten as a manifest with the new tags."""
    if not (entry / "record.pkl").is_file():
        return False
    record = _read_pickled_entry(entry)
    record.tags.update(tags)
    reason = (entry / "reason.txt").read_text() if (entry / "reason.txt").is_file() else "older outbox entry"
    staging = Path(tempfile.mkdtemp(prefix=f".{record.record_id}-", dir=entry.parent))
    _write_entry(record, staging, reason.strip(), server=None)  # its server was not recorded
    shutil.rmtree(entry)
    os.replace(staging, entry)
    return True


def _move_aside(root: Path, entry: Path, why: str) -> str:
    rejected = root / REJECTED
    rejected.mkdir(parents=True, exist_ok=True)
    target = rejected / entry.name
    if target.exists():
        shutil.rmtree(target)
    os.replace(entry, target)
    (target / "rejected.txt").write_text(redact(why) + "\n", encoding="utf-8")
    return (
        f"{entry.name}: {redact(why)}; moved to {REJECTED / entry.name}/ (once the cause is fixed, "
        "`mnist-lab sync --retry-rejected` sends it again)"
    )


# --- sending --------------------------------------------------------------------------------------------


def _runs_of_record(client: MlflowClient, experiment_id: str, record_id: str) -> tuple[list, list]:
    """(runs tagged with the record id, their nested runs) on the server."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RECORD_TAG}` = '{record_id}'")
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_RECORD_TAG}` = '{record_id}'"
    )
    return runs, children


def _already_sent(record: ModelRunRecord, settings: TrackingSettings) -> LoggedRun | None:
    """A FINISHED run of this record on the server (an earlier send completed, then the entry was not
    removed): it is kept, never sent again, and given the entry's tags it lacks (`mnist-lab commit` may have
    re-tagged the entry since). Runs a failed attempt left half-done are deleted, nested runs included, so a
    resend never duplicates."""
    client = tracking.mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return None
    runs, children = _runs_of_record(client, experiment.experiment_id, record.record_id)
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if finished:
        run = finished[0]
        for key, value in record.tags.items():
            if run.data.tags.get(key) != value:
                client.set_tag(run.info.run_id, key, value)
        return LoggedRun(
            run.info.run_id, run.info.experiment_id, logged_model_uri(client, run), settings.tracking_uri
        )
    for run in [*children, *runs]:
        client.delete_run(run.info.run_id)
    return None


def send_pending(
    root: Path, settings: TrackingSettings, to_any_server: bool = False
) -> tuple[list[LoggedRun], list[str]]:
    """Send every outbox entry to the server in `settings`: (runs now logged, problems). An entry leaves
    the outbox only once its run is complete on the server. A transport failure stops the sending (the
    server is away again: the order is kept); an entry that cannot be read or that the server refuses is
    moved to `.mnist-lab/outbox-rejected/` with the reason, and the others are still sent. An entry logged
    for another server (the tracking URI changed since) waits, named in the problems, unless
    `to_any_server`."""
    sent, problems = [], []
    here = display_uri(settings.tracking_uri)
    with locked(root):
        for entry in pending_records(root):
            meant = entry_server(entry)
            if meant is not None and _server_key(meant) != _server_key(here) and not to_any_server:
                problems.append(
                    f"{entry.name}: logged for {meant}, not {here}: it waits; point MLFLOW_TRACKING_URI back "
                    f"at {meant} to send it there, or send it here with `mnist-lab sync --to-this-server`"
                )
                continue
            try:
                record = read_entry(entry)
            except UnreadableEntry as exc:
                problems.append(_move_aside(root, entry, str(exc)))
                continue
            try:
                logged = _already_sent(record, settings) or log_model_run(record, settings)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if is_transport_failure(exc):
                    problems.append(redact(f"{entry.name}: {reason}"))
                    break
                problems.append(_move_aside(root, entry, f"the server refused it ({reason})"))
                continue
            _remember_sent(root, record.record_id, logged)
            sent.append(logged)
            shutil.rmtree(entry, ignore_errors=True)
    return sent, problems


def log_or_spool(record: ModelRunRecord, settings: TrackingSettings, root: Path) -> LoggedRun | SpooledRun:
    """Log `record`; to a remote server, keep it in the outbox if the server is away (a transport failure),
    and after a success send whatever earlier runs are waiting. Any other failure is raised as is."""
    if not settings.is_remote:
        return log_model_run(record, settings)
    try:
        if settings.server_away:
            raise ConnectionError(
                f"it did not answer a stage's check less than {SERVER_AWAY_FOR_S} s ago: not tried again"
            )
        logged = log_model_run(record, settings)
    except Exception as exc:
        if not is_transport_failure(exc):
            raise
        reason = redact(f"{type(exc).__name__}: {exc}")
        spooled = spool(record, root, reason, settings.tracking_uri)
        print(
            f"warning: could not log {record.run_name} to {display_uri(settings.tracking_uri)} "
            f"({first_line(reason)}); kept in {OUTBOX / record.record_id}/, sent by the next run "
            "or `mnist-lab sync`",
            file=sys.stderr,
        )
        return spooled
    if pending_records(root):
        sent, problems = send_pending(root, settings)
        if sent:
            print(f"sent {len(sent)} run(s) waiting in {OUTBOX}/", file=sys.stderr)
        for problem in problems:
            print(f"warning: still waiting in {OUTBOX}/: {problem}", file=sys.stderr)
    return logged


# --- finding a run that was sent later ------------------------------------------------------------------


def _remember_sent(root: Path, record_id: str, logged: LoggedRun) -> None:
    ledger = _sent_ledger(root)
    ledger[record_id] = {
        "run_id": logged.run_id,
        "experiment_id": logged.experiment_id,
        "model_uri": logged.model_uri,
        "tracking_uri": display_uri(logged.tracking_uri),
    }
    write_json(root / SENT, ledger)


def sent_runs(root: Path) -> dict[str, str]:
    """Record id -> run id of every run sent from this clone's outbox (offline: the ledger)."""
    return {
        record: entry["run_id"]
        for record, entry in _sent_ledger(root).items()
        if isinstance(entry, dict) and isinstance(entry.get("run_id"), str)  # a damaged entry is left out
    }


def _sent_ledger(root: Path) -> dict[str, dict[str, Any]]:
    try:
        ledger = read_json(root / SENT)
    except (OSError, ValueError):
        return {}
    return ledger if isinstance(ledger, dict) else {}


def find_sent_run(root: Path, record_id: str, settings: TrackingSettings | None = None) -> LoggedRun | None:
    """The run a record became once sent from the outbox: from this clone's ledger, else by its record id
    tag on the server (a run sent from another clone). None while it waits, or when the server cannot be
    asked."""
    settings = settings or TrackingSettings.from_environment(root)
    known = _sent_ledger(root).get(record_id)
    if (
        isinstance(known, dict)  # a damaged entry of the ledger: the server is asked, as for none
        and known.get("tracking_uri") == display_uri(settings.tracking_uri)
        and isinstance(known.get("run_id"), str)
        and isinstance(known.get("experiment_id"), str)
    ):
        model_uri = known.get("model_uri")
        return LoggedRun(
            known["run_id"],
            known["experiment_id"],
            model_uri if isinstance(model_uri, str) else None,
            settings.tracking_uri,
        )
    if (root / OUTBOX / record_id).is_dir():
        return None  # still waiting here
    if settings.is_remote and tracking.server_recently_away(root, settings):
        return None  # no minutes of retries to learn it again

    try:
        client = tracking.mlflow_client(settings)
        experiment = client.get_experiment_by_name(settings.experiment_name)
        if experiment is None:
            return None
        runs, _ = _runs_of_record(client, experiment.experiment_id, record_id)
        finished = [run for run in runs if run.info.status == "FINISHED"]
        if not finished:
            return None
        run = finished[0]
        model_uri = logged_model_uri(client, run)
    except Exception:  # the server is unreachable: the record id still finds the run later
        return None
    return LoggedRun(run.info.run_id, run.info.experiment_id, model_uri, settings.tracking_uri)
