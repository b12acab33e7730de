"""The outbox: only transport failures wait there, entries are data, a resend never duplicates or deletes a
finished run, and a run sent later is found by its record id (real sqlite stores, real HTTP servers)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests

from mnist_lab import tracking
from mnist_lab.core.errors import MnistLabError
from mnist_lab.tracking import outbox
from tests.helpers import free_port, pixel_model_record, run_children, run_record


@contextlib.contextmanager
def answering(status: int, body: bytes, content_type: str = "application/json") -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every request with `status` and `body`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _mlflow_failure(uri: str) -> Exception:
    """What MLflow's client raises talking to `uri`."""
    with pytest.raises(Exception) as caught:
        mlflow.MlflowClient(uri).get_experiment_by_name("x")
    return caught.value


def test_transport_failures_are_told_from_everything_else(no_retries: None) -> None:
    assert outbox.is_transport_failure(_mlflow_failure(f"http://127.0.0.1:{free_port()}"))  # refused
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get(f"http://127.0.0.1:{free_port()}", timeout=5)
    assert outbox.is_transport_failure(refused.value)
    with answering(503, b"<html>busy</html>", "text/html") as url:
        assert outbox.is_transport_failure(_mlflow_failure(url))
    with answering(500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "db gone"}).encode()) as url:
        assert outbox.is_transport_failure(_mlflow_failure(url))
    with answering(429, b"slow down", "text/plain") as url:
        assert outbox.is_transport_failure(_mlflow_failure(url))
    refused_params = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}).encode()
    with answering(400, refused_params) as url:
        assert not outbox.is_transport_failure(_mlflow_failure(url))
    with answering(403, b"forbidden", "text/plain") as url:
        assert not outbox.is_transport_failure(_mlflow_failure(url))
    assert not outbox.is_transport_failure(TypeError("cannot pickle '_thread.lock' object"))
    assert not outbox.is_transport_failure(ValueError("bad metric"))


def test_log_or_spool_keeps_the_run_when_the_server_is_away(tmp_path: Path, no_retries: None, capsys) -> None:
    settings = tracking.TrackingSettings(f"http://127.0.0.1:{free_port()}", "x", None)
    outcome = outbox.log_or_spool(run_record(), settings, tmp_path)
    assert isinstance(outcome, outbox.SpooledRun)
    assert outbox.pending_records(tmp_path) == [outcome.path]
    assert "kept in .mnist-lab/outbox/" in capsys.readouterr().err


def test_a_programming_error_fails_instead_of_waiting_in_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(*args, **kwargs) -> None:
        raise TypeError("cannot pickle '_thread.lock' object")

    monkeypatch.setattr(outbox, "log_model_run", broken_save)
    settings = tracking.TrackingSettings(f"http://127.0.0.1:{free_port()}", "x", None)
    with pytest.raises(TypeError, match="cannot pickle"):
        outbox.log_or_spool(run_record(), settings, tmp_path)
    assert outbox.pending_records(tmp_path) == []


def test_an_entry_is_data_a_manifest_and_files(tmp_path: Path) -> None:
    record = pixel_model_record()
    record.history = [{"epoch": 1.0, "val_loss": 0.9}]
    record.children = run_children(2)
    record.artifacts = {"figures/a.png": b"\x89PNG", "git/uncommitted.diff": b"+x\n"}
    spooled = outbox.spool(record, tmp_path, reason="ConnectionError: server down")
    manifest = json.loads((spooled.path / "manifest.json").read_text())
    assert (manifest["format"], manifest["version"]) == ("mnist-lab-outbox", 1)
    assert manifest["record_id"] == record.record_id and manifest["created_ms"] == record.created_ms
    assert (spooled.path / "artifacts" / "figures" / "a.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in spooled.path.glob("*.pkl")) == ["model.pkl"]
    back = outbox.read_entry(spooled.path)
    assert (back.run_name, back.params, back.metrics, back.history, back.tags, back.children) == (
        record.run_name, record.params, record.metrics, record.history, record.tags, record.children
    )  # fmt: skip
    assert back.artifacts == record.artifacts
    pd.testing.assert_frame_equal(back.input_example, record.input_example)
    example = record.input_example
    assert back.model.predict(None, example).equals(record.model.predict(None, example))


def test_a_bad_entry_is_moved_aside_and_the_others_are_still_sent(
    tracking_store: str, tmp_path: Path
) -> None:
    first, second = run_record("first"), run_record("second")
    broken = outbox.spool(first, tmp_path, reason="down")
    (broken.path / "manifest.json").write_text("{not json")
    outbox.spool(second, tmp_path, reason="down")
    newer = outbox.spool(run_record("third"), tmp_path, reason="down")
    manifest = json.loads((newer.path / "manifest.json").read_text())
    manifest["version"] = 99
    (newer.path / "manifest.json").write_text(json.dumps(manifest))
    sent, problems = outbox.send_pending(tmp_path, tracking.TrackingSettings.from_environment(tmp_path))
    assert [mlflow.MlflowClient(tracking_store).get_run(s.run_id).info.run_name for s in sent] == ["second"]
    assert outbox.pending_records(tmp_path) == []
    assert len(problems) == 2
    assert "cannot be read" in problems[0] and "moved to .mnist-lab/outbox-rejected/" in problems[0]
    assert "has version 99" in problems[1]
    rejected = tmp_path / ".mnist-lab" / "outbox-rejected"
    assert sorted(p.name for p in rejected.iterdir()) == sorted([first.record_id, newer.record_id])


def test_spooled_runs_are_sent_identically_and_leave_the_outbox(tracking_store: str, tmp_path: Path) -> None:
    record = run_record()
    spooled = outbox.spool(record, tmp_path, reason="ConnectionError: server down")
    assert outbox.pending_records(tmp_path) == [spooled.path]
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    sent, problems = outbox.send_pending(tmp_path, settings)
    assert problems == [] and len(sent) == 1 and outbox.pending_records(tmp_path) == []
    client = mlflow.MlflowClient(tracking_store)
    run = client.get_run(sent[0].run_id)
    assert run.data.tags["mnist_lab.record_id"] == record.record_id
    assert run.info.start_time == record.created_ms
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (1, 0.9, record.created_ms),
        (2, 0.4, record.created_ms),
    ]


def test_a_resend_replaces_what_a_failed_attempt_left(tracking_store: str, tmp_path: Path) -> None:
    record = run_record()
    record.children = run_children(2)
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    client = mlflow.MlflowClient(tracking_store)
    experiment_id = client.create_experiment("tests")
    partial = client.create_run(experiment_id, tags={"mnist_lab.record_id": record.record_id})
    client.log_metric(partial.info.run_id, "accuracy", 0.5)
    partial_child = client.create_run(  # one nested run had landed; then the server went away
        experiment_id,
        tags={"mnist_lab.parent_record_id": record.record_id, "mlflow.parentRunId": partial.info.run_id},
    )
    outbox.spool(record, tmp_path, reason="died half-way")
    sent, _ = outbox.send_pending(tmp_path, settings)
    active = client.search_runs(
        [experiment_id], filter_string=f"tags.`mnist_lab.record_id` = '{record.record_id}'"
    )
    assert [r.info.run_id for r in active] == [sent[0].run_id]
    assert client.get_run(partial.info.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(partial_child.info.run_id).info.lifecycle_stage == "deleted"
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`mnist_lab.parent_record_id` = '{record.record_id}'"
    )
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in children) == [sent[0].run_id] * 2


def test_a_finished_run_is_never_deleted_by_a_later_resend(tracking_store: str, tmp_path: Path) -> None:
    """The send completed, then the entry was not removed (a crash, a second sender): the run stays."""
    record = run_record()
    record.children = run_children(2)
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    logged = tracking.log_model_run(record, settings)
    outbox.spool(record, tmp_path, reason="sent, but the entry stayed")
    # `mnist-lab commit` re-tagged the entry after that send: the kept run gets the new tag
    assert outbox.retag_pending(tmp_path, record.record_id, {"mnist_lab.results_commit": "abc"})
    sent, problems = outbox.send_pending(tmp_path, settings)
    assert problems == [] and [s.run_id for s in sent] == [logged.run_id]
    client = mlflow.MlflowClient(tracking_store)
    assert client.get_run(logged.run_id).info.lifecycle_stage == "active"
    assert client.get_run(logged.run_id).data.tags["mnist_lab.results_commit"] == "abc"
    children = client.search_runs(
        [logged.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{logged.run_id}'"
    )
    assert len(children) == 2 and outbox.pending_records(tmp_path) == []


def test_failure_reasons_are_redacted_before_they_are_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-secret")
    spooled = outbox.spool(
        run_record(), tmp_path, reason="API request to https://me:hunter2-secret@h/x failed"
    )
    for kept in ((spooled.path / "reason.txt").read_text(), (spooled.path / "manifest.json").read_text()):
        assert "hunter2-secret" not in kept and "https://h/x" in kept


def test_a_run_waits_for_the_server_it_was_logged_for(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The tracking URI changed while a run waited (another server, a local store): `sync` does not send it
    to the new one unasked; it says where it was meant to go and how to send it either way."""
    from mnist_lab.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-of-the-old-server")
    away = "https://me:pw-of-the-old-server@old.example/mlflow"
    record = run_record()
    spooled = outbox.spool(record, tmp_path, reason="down", tracking_uri=away)
    manifest = (spooled.path / "manifest.json").read_text()
    assert json.loads(manifest)["server"] == "https://old.example/mlflow" and "pw-of" not in manifest
    (tmp_path / ".dvc").mkdir()  # the repository's root
    monkeypatch.chdir(tmp_path)

    settings = tracking.TrackingSettings.from_environment(tmp_path)
    sent, (problem,) = outbox.send_pending(tmp_path, settings)
    assert sent == [] and outbox.pending_records(tmp_path) == [spooled.path]
    assert f"logged for https://old.example/mlflow, not {settings.tracking_uri}: it waits" in problem
    assert "`mnist-lab sync --to-this-server`" in problem
    capsys.readouterr()
    assert main(["sync"]) == 2  # asked for: an error
    assert "error: not sent: " in capsys.readouterr().err
    assert main(["sync", "--quiet"]) == 0  # after `make run`'s pipeline: a warning, the run kept
    assert "warning: not sent: " in capsys.readouterr().err
    assert outbox.pending_records(tmp_path) == [spooled.path]

    # one logged for the server .env names (however its address is written) is sent by a plain sync
    scheme, rest = settings.tracking_uri.split(":", 1)
    same_record = run_record("same")
    same = outbox.spool(same_record, tmp_path, "down", tracking_uri=f"{scheme.upper()}:{rest}/")
    assert json.loads((same.path / "manifest.json").read_text())["server"] != settings.tracking_uri
    (landed,), _ = outbox.send_pending(tmp_path, settings)
    assert outbox.pending_records(tmp_path) == [spooled.path]  # the other server's run still waits
    assert outbox.find_sent_run(tmp_path, same_record.record_id, settings) == landed

    assert main(["sync", "--to-this-server"]) == 0
    assert outbox.pending_records(tmp_path) == []
    run = mlflow.MlflowClient(tracking_store).search_runs(
        [mlflow.MlflowClient(tracking_store).get_experiment_by_name("tests").experiment_id]
    )
    assert {r.data.tags["mnist_lab.record_id"] for r in run} == {record.record_id, same_record.record_id}


def test_runs_the_server_refused_are_sent_again_when_asked(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from mnist_lab.cli import main

    record = run_record()
    spooled = outbox.spool(record, tmp_path, reason="down")
    manifest = json.loads((spooled.path / "manifest.json").read_text())
    (spooled.path / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    _, (problem,) = outbox.send_pending(tmp_path, settings)
    assert "once the cause is fixed, `mnist-lab sync --retry-rejected` sends it again" in problem
    rejected = tmp_path / ".mnist-lab" / "outbox-rejected" / record.record_id
    assert (rejected / "rejected.txt").is_file()
    (rejected / "manifest.json").write_text(json.dumps(manifest))  # the cause, fixed

    (tmp_path / ".dvc").mkdir()  # the repository's root
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["sync", "--retry-rejected"]) == 0
    out = capsys.readouterr().out
    assert "moved 1 run(s) from .mnist-lab/outbox-rejected/ back to .mnist-lab/outbox/" in out
    assert "sent 1 run(s)" in out
    assert not rejected.exists() and outbox.pending_records(tmp_path) == []
    assert outbox.find_sent_run(tmp_path, record.record_id, settings) is not None


def test_a_run_sent_later_is_found_by_its_record_id(tracking_store: str, tmp_path: Path) -> None:
    record = run_record()
    outbox.spool(record, tmp_path, reason="down")
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    assert outbox.find_sent_run(tmp_path, record.record_id, settings) is None  # still waiting
    (sent,), _ = outbox.send_pending(tmp_path, settings)
    assert outbox.find_sent_run(tmp_path, record.record_id, settings) == sent  # this clone's ledger
    (tmp_path / ".mnist-lab" / "sent.json").unlink()  # another clone sent it: found on the server
    found = outbox.find_sent_run(tmp_path, record.record_id, settings)
    assert found is not None and found.run_id == sent.run_id and found.model_uri == sent.model_uri
    assert outbox.find_sent_run(tmp_path, "0" * 32, settings) is None


_HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from mnist_lab.tracking import outbox
with outbox.locked(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[1], "released").write_text("yes")
"""


def test_retagging_waits_for_a_sender_in_another_process(tmp_path: Path) -> None:
    """`mnist-lab commit` re-tags a waiting run while another process sends the outbox: the re-tag waits
    for the lock, so the sender never sends the entry without the new tag and then deletes it."""
    record = run_record()
    outbox.spool(record, tmp_path, reason="down")
    sender = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_LOCK, str(tmp_path), "1.5"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert sender.stdout.readline().strip() == "holding"
        assert outbox.retag_pending(tmp_path, record.record_id, {"mnist_lab.results_commit": "abc"})
        assert (tmp_path / "released").is_file()  # it returned only after the other process let go
    finally:
        sender.wait(timeout=30)
    assert (
        outbox.read_entry(tmp_path / ".mnist-lab" / "outbox" / record.record_id).tags[
            "mnist_lab.results_commit"
        ]
        == "abc"
    )


_SEND = """
import json, sys
from pathlib import Path
from mnist_lab.tracking import outbox
from mnist_lab import tracking
root = Path(sys.argv[1])
sent, problems = outbox.send_pending(root, tracking.TrackingSettings.from_environment(root))
print(json.dumps({"sent": [run.run_id for run in sent], "problems": problems}))
"""


def test_two_senders_at_once_send_each_run_exactly_once(tracking_store: str, tmp_path: Path) -> None:
    """Two processes send the same outbox at the same time (a stage and `mnist-lab sync`): every run lands
    once, nothing is moved aside, nothing is deleted."""
    records = [run_record() for _ in range(3)]
    for record in records:
        record.children = run_children(2)
        outbox.spool(record, tmp_path, reason="down")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    senders = [
        subprocess.Popen(
            [sys.executable, "-c", _SEND, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    answers = [json.loads(sender.communicate(timeout=120)[0]) for sender in senders]
    assert [a["problems"] for a in answers] == [[], []]
    sent = [run_id for answer in answers for run_id in answer["sent"]]
    client = mlflow.MlflowClient(tracking_store)
    experiment_id = client.get_experiment_by_name(
        tracking.TrackingSettings.from_environment(tmp_path).experiment_name
    ).experiment_id
    for record in records:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mnist_lab.record_id` = '{record.record_id}'",
            run_view_type=3,
        )
        assert [(r.info.status, r.info.lifecycle_stage) for r in runs] == [("FINISHED", "active")]
        assert runs[0].info.run_id in sent
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{runs[0].info.run_id}'",
            run_view_type=3,
        )
        assert len(children) == 2
    assert len(sent) == 3 and outbox.pending_records(tmp_path) == []
    assert not (tmp_path / ".mnist-lab" / "outbox-rejected").exists()


def test_an_entry_of_an_older_mnist_lab_is_still_sent(tracking_store: str, tmp_path: Path) -> None:
    import cloudpickle

    record = run_record()
    entry = tmp_path / ".mnist-lab" / "outbox" / record.record_id
    entry.mkdir(parents=True)
    (entry / "record.pkl").write_bytes(cloudpickle.dumps(record))
    assert outbox.retag_pending(tmp_path, record.record_id, {"mnist_lab.results_commit": "abc"})
    (sent,), problems = outbox.send_pending(tmp_path, tracking.TrackingSettings.from_environment(tmp_path))
    tags = mlflow.MlflowClient(tracking_store).get_run(sent.run_id).data.tags
    assert problems == [] and tags["mnist_lab.results_commit"] == "abc"


def test_an_unreachable_server_is_reported_once_and_not_retried_by_later_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    first = tracking.preflight(tmp_path)
    assert first.server_away and capsys.readouterr().err.count("warning: MLflow server") == 1

    def no_network(*args, **kwargs):
        raise AssertionError("a later stage tried the server again")

    monkeypatch.setattr(tracking.server, "check_server", no_network)
    monkeypatch.setattr(outbox, "log_model_run", no_network)
    later = tracking.preflight(tmp_path)  # the next stage's process
    assert later.server_away and capsys.readouterr().err == ""
    spooled = outbox.log_or_spool(run_record(), later, tmp_path)
    said = capsys.readouterr().err  # this process printed no warning above: the reason stands alone
    assert isinstance(spooled, outbox.SpooledRun) and "kept in .mnist-lab/outbox/" in said
    assert "did not answer a stage's check less than 120 s ago: not tried again" in said
    other = f"http://127.0.0.1:{free_port()}"  # another server is tried, whatever the first one did
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    with pytest.raises(AssertionError, match="tried the server again"):
        tracking.preflight(tmp_path)


def test_finding_a_sent_run_does_not_retry_a_server_found_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mnist-lab report` / `runs` after a pipeline that found the server unreachable: the record ids of runs
    sent from another clone are not looked up through minutes of MLflow's retries."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    settings = tracking.preflight(tmp_path)  # finds it away, and says so once
    assert settings.server_away

    asked = []
    monkeypatch.setattr(mlflow, "MlflowClient", lambda *args, **kwargs: asked.append(args))
    assert outbox.find_sent_run(tmp_path, "a" * 32, settings) is None
    assert asked == []  # (an exception would be taken for the server being away: count the calls)


def test_entries_are_sent_in_the_order_their_runs_were_logged_even_after_a_retag(tmp_path: Path) -> None:
    """`mnist-lab commit` re-tags a waiting run: its folder's time moves, and the run went after later ones
    (the order is the runs', as logged)."""
    first, second = run_record("first"), run_record("second")
    second.created_ms = first.created_ms + 1
    outbox.spool(first, tmp_path, reason="down")
    outbox.spool(second, tmp_path, reason="down")
    os.utime(tmp_path / tracking.OUTBOX / first.record_id, (1, 1))  # any folder times: not what orders
    assert [p.name for p in outbox.pending_records(tmp_path)] == [first.record_id, second.record_id]
    assert outbox.retag_pending(tmp_path, first.record_id, {"mnist_lab.results_commit": "abc"})
    assert [p.name for p in outbox.pending_records(tmp_path)] == [first.record_id, second.record_id]


def test_an_entry_sent_by_another_process_while_listing_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage lists the outbox without its lock after logging its run; another process sending the outbox
    removed an entry between the listing and the look at it: the stage failed (FileNotFoundError) after
    its run was logged."""
    import shutil

    kept, sent = run_record("kept"), run_record("sent")
    outbox.spool(kept, tmp_path, reason="down")
    outbox.spool(sent, tmp_path, reason="down")
    is_dir = Path.is_dir

    def sent_meanwhile(path: Path) -> bool:
        answer = is_dir(path)
        if path.name == sent.record_id and answer:
            shutil.rmtree(path)  # the other process, just after this one saw the folder
        return answer

    monkeypatch.setattr(Path, "is_dir", sent_meanwhile)
    assert [p.name for p in outbox.pending_records(tmp_path)] == [kept.record_id]


def test_a_waiting_runs_tags_are_read_without_its_model(tmp_path: Path) -> None:
    """`mnist-lab commit` reads a waiting run's tags: it unpickled the model for them, and one that no
    longer unpickles (another scikit-learn) stopped the commit with a traceback."""
    record = pixel_model_record()
    spooled = outbox.spool(record, tmp_path, reason="down")
    (spooled.path / "model.pkl").write_bytes(b"not a pickle")
    assert outbox.pending_tags(tmp_path, record.record_id) == record.tags
    assert outbox.pending_tags(tmp_path, "0" * 32) is None
    (spooled.path / "manifest.json").write_text("{")
    with pytest.raises(outbox.UnreadableEntry, match="manifest.json cannot be read .*mnist-lab sync"):
        outbox.pending_tags(tmp_path, record.record_id)
    assert issubclass(outbox.UnreadableEntry, MnistLabError)  # said as a clear message, not a traceback


@pytest.mark.parametrize("damaged", [{"REC": "run-1"}, {"REC": {"run_id": "r1", "tracking_uri": "SAME"}}])
def test_a_damaged_ledger_entry_is_asked_of_the_server(tracking_store: str, tmp_path: Path, damaged) -> None:
    """`.mnist-lab/sent.json` edited or damaged: `sent_runs` skipped the entry but `find_sent_run` raised
    (AttributeError, KeyError) from `commit` and `register`."""
    from mnist_lab.system.redact import display_uri

    record = run_record()
    outbox.spool(record, tmp_path, reason="down")
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    (sent,), _ = outbox.send_pending(tmp_path, settings)
    text = json.dumps(damaged).replace("REC", record.record_id).replace("SAME", display_uri(tracking_store))
    (tmp_path / ".mnist-lab" / "sent.json").write_text(text)
    found = outbox.find_sent_run(tmp_path, record.record_id, settings)
    assert found is not None and found.run_id == sent.run_id
