import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_lab.cli import main
from mnist_lab.core.idx import encode_idx
from mnist_lab.datasets.folder import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_dataset
from tests.helpers import copy_repository, free_port, random_images, run


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = copy_repository(tmp_path / "repo")
    monkeypatch.chdir(root)
    return root


def test_report_prints_every_model_and_the_best(repo_root: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo_root)
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "accuracy", "f1_macro"]
    assert {line.split()[0] for line in lines[1:5]} == {"sgd", "random_forest", "mlp", "cnn"}
    assert sum("*" in line for line in lines[1:5]) == 1 and "best by f1_macro" in lines[-1]
    # `make run` ends with where the runs are: the local store's UI (the committed experiment's runs)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["report", "--where"]) == 0
    assert capsys.readouterr().out.endswith(
        "\n\ncnn, mlp, random_forest, sgd: MLflow runs in the local store: `make ui` opens them at "
        "http://127.0.0.1:5000\n"
    )


def test_report_where_names_the_store_each_run_was_logged_to(repo: Path, monkeypatch, capsys) -> None:
    """Runs spread over stores (.env switched to a server, one run waiting for it): each is named where it
    is; it said every run was on the server .env names now."""
    server = f"http://127.0.0.1:{free_port()}"  # nothing there: the pending run is not found sent
    for model, store, state in (("mlp", server, None), ("cnn", server, "pending")):
        run_file = repo / "reports" / model / "mlflow.json"
        record = json.loads(run_file.read_text())
        record |= {"store": store} | ({"run_id": None, "state": state} if state else {})
        run_file.write_text(json.dumps(record))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the table asks it for the pending run once
    assert main(["report", "--where"]) == 0
    assert capsys.readouterr().out.split("\n\n")[-1].splitlines() == [
        f"mlp: MLflow runs on {server} (open it in a browser)",
        f"cnn: waiting in the outbox for {server}: `mnist-lab sync` sends them",
        "random_forest, sgd: MLflow runs in the local store (not the store .env names now): `make ui` opens "
        "them at http://127.0.0.1:5000",
    ]
    # sent since from this clone (its ledger; a damaged entry beside it is left out): a run on the server
    from mnist_lab.tracking import outbox

    record = json.loads((repo / "reports" / "cnn" / "mlflow.json").read_text())["record_id"]
    (repo / outbox.SENT).parent.mkdir(parents=True, exist_ok=True)
    (repo / outbox.SENT).write_text(json.dumps({record: {"run_id": "9" * 32}, "damaged": "not an entry"}))
    assert main(["report", "--where"]) == 0
    assert capsys.readouterr().out.split("\n\n")[-1].splitlines()[0] == (
        f"cnn, mlp: MLflow runs on {server} (open it in a browser)"
    )


def test_a_run_sent_from_another_clone_and_committed_is_not_said_to_wait(
    repo: Path, monkeypatch, capsys
) -> None:
    """A collaborator's clone: the run waited in the author's outbox, was sent, then committed (its trailer
    names its id; reports/cnn/mlflow.json still says pending). `report` said it waited in an outbox this
    clone does not have, for `mnist-lab sync` to send ("nothing to send")."""
    from tests.helpers import commit_all

    server = f"http://127.0.0.1:{free_port()}"  # not the store .env names here; nothing there either
    run_file = repo / "reports" / "cnn" / "mlflow.json"
    record = json.loads(run_file.read_text())
    run_file.write_text(json.dumps(record | {"store": server, "run_id": None, "state": "pending"}))
    sent = "7" * 32
    commit_all(repo, f"Experiment: sent later\n\nMLflow-Run: cnn run={sent} record={record['record_id']}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["report", "--where"]) == 0
    report, where = capsys.readouterr().out.split("\n\n")
    assert "pending" not in report and "outbox" not in report + where
    assert any(line.startswith("cnn *") and line.endswith(sent) for line in report.splitlines()), report
    assert f"cnn: MLflow runs on {server} (not the store .env names now) (open it in a browser)" in where


def test_a_run_waiting_for_a_server_env_no_longer_names_is_not_sent_by_a_plain_sync(
    repo: Path, monkeypatch, capsys
) -> None:
    """`mnist-lab sync` leaves an entry logged for another server: the report said a plain sync sends it."""
    server, now = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    run_file = repo / "reports" / "cnn" / "mlflow.json"
    record = json.loads(run_file.read_text())
    run_file.write_text(json.dumps(record | {"store": server, "run_id": None, "state": "pending"}))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    elsewhere = (
        "not the store .env names now: `mnist-lab sync` sends them once MLFLOW_TRACKING_URI names it "
        "again, or `mnist-lab sync --to-this-server` sends them to {}"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", now)
    assert main(["report", "--where"]) == 0
    report, where = capsys.readouterr().out.split("\n\n")
    assert (
        f"pending: the run waits in the outbox for {server}, {elsewhere.format(now)}" in report.splitlines()
    )
    assert f"cnn: waiting in the outbox for {server}, {elsewhere.format(now)}" in where.splitlines()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # named again: a plain sync sends it
    assert main(["report", "--where"]) == 0
    report, where = capsys.readouterr().out.split("\n\n")
    assert "pending: the run waits in the outbox (.mnist-lab/outbox/); `mnist-lab sync` sends it" in report
    assert f"cnn: waiting in the outbox for {server}: `mnist-lab sync` sends them" in where.splitlines()


def test_report_without_results_says_how_to_get_them(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    assert (
        "metrics.json is missing: run the pipeline first (`make run` or `dvc repro`)"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [('{"best": 1}', "best: Input should be"), ("[]", "the document"), ("{}", "best: Field")],
)
def test_report_on_a_damaged_metrics_json_names_it_and_the_fix(
    tmp_path, monkeypatch, capsys, text, field
) -> None:
    """A metrics.json of another shape was a KeyError/TypeError traceback."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "metrics.json").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert f"metrics.json: {field}" in err and "restore it with `git checkout -- " in err
    assert "Traceback" not in err


def test_restore_regenerates_then_finds_data_in_place(repo: Path, capsys) -> None:
    recorded = (repo / "data.dvc").read_text()
    assert main(["data", "restore"]) == 0
    assert (repo / "data.dvc").read_text() == recorded
    assert "regenerated from scikit-learn's bundled digits and checked" in capsys.readouterr().out
    md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()  # so dvc push sends it
    assert main(["data", "restore"]) == 0
    assert "already matches data.dvc" in capsys.readouterr().out


def test_restore_of_data_nobody_has_fails_clearly(repo: Path, capsys) -> None:
    record = yaml.safe_load((repo / "data.dvc").read_text())
    record["outs"][0]["md5"] = "ffffffffffffffffffffffffffffffff.dir"
    (repo / "data.dvc").write_text(yaml.safe_dump(record))
    assert main(["data", "restore"]) == 2
    error = capsys.readouterr().err
    assert "cannot restore data/: no DVC cache has it and no DVC remote is set" in error
    assert "`mnist-lab remote setup`, then `dvc pull`" in error and "data restore" not in error
    assert not (repo / "data").exists()


def test_ingest_mnist_shaped_files_and_track_them(repo: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "mnist"
    source.mkdir()
    train, train_labels = random_images(100, 28, 28, seed=3)
    test, test_labels = random_images(20, 28, 28, seed=4)
    for name, array in (
        (TRAIN_IMAGES, train),
        (TRAIN_LABELS, train_labels),
        (TEST_IMAGES, test),
        (TEST_LABELS, test_labels),
    ):
        (source / name.removesuffix(".gz")).write_bytes(encode_idx(array))
    before = (repo / "data.dvc").read_text()
    assert main(["data", "ingest", str(source)]) == 0
    assert "tracked it with `dvc add data`" in capsys.readouterr().out
    assert (repo / "data.dvc").read_text() != before
    assert np.array_equal(read_dataset(repo / "data").test_images, test)


def test_ingest_of_bad_files_exits_2_and_keeps_data(repo: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "restore"]) == 0
    source = tmp_path / "bad"
    source.mkdir()
    (source / TRAIN_IMAGES).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x01")
    (source / TRAIN_LABELS).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x00")
    assert main(["data", "ingest", str(source)]) == 2
    assert "train-images-idx3-ubyte.gz: truncated header" in capsys.readouterr().err
    assert main(["data", "restore"]) == 0
    assert "already matches" in capsys.readouterr().out


def _commands(parser) -> dict[str, object]:
    """Every command and sub-command of the parser, by its words (`data ingest`)."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {words}": nested for words, nested in _commands(sub).items()})
    return found


def test_help_lists_every_command_and_each_has_its_own_help(capsys) -> None:
    from mnist_lab.cli import build_parser

    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    commands = _commands(build_parser())
    assert len(commands) >= 15
    for words, sub in commands.items():
        if " " not in words:
            assert f"    {words}" in top, words  # listed, with its one-line help
        with pytest.raises(SystemExit) as done:
            main([*words.split(), "--help"])
        assert done.value.code == 0, words
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: mnist-lab {words}") and sub.format_help() == shown, words


def test_restore_never_overwrites_changed_data(repo: Path, capsys) -> None:
    import gzip

    assert main(["data", "restore"]) == 0
    labels = read_dataset(repo / "data").test_labels.copy()
    labels[0] = (labels[0] + 1) % 10  # other data that reads: recording it is one way, restoring the other
    edited = gzip.compress(encode_idx(labels))
    (repo / "data" / TEST_LABELS).write_bytes(edited)
    assert main(["data", "restore"]) == 2
    error = capsys.readouterr().err
    assert (
        "nothing was changed" in error
        and "dvc add data" in error
        and "`mnist-lab data restore --force` (or `dvc checkout --force data.dvc`)" in error
    )
    assert (repo / "data" / TEST_LABELS).read_bytes() == edited
    (repo / "data" / TEST_LABELS).write_bytes(b"my own edits")  # data that does not read: never recorded
    assert main(["data", "restore"]) == 2
    error = capsys.readouterr().err
    assert "is not whole (" in error and "dvc add" not in error and "restore --force" in error
    assert (repo / "data" / TEST_LABELS).read_bytes() == b"my own edits"
    assert main(["data", "restore", "--force"]) == 0
    assert "data/ restored from the DVC cache" in capsys.readouterr().out
    assert main(["data", "restore"]) == 0
    assert "already matches data.dvc" in capsys.readouterr().out
    shutil.rmtree(repo / ".dvc" / "cache")  # not in the cache either: regenerated over the edits
    (repo / "data" / TEST_LABELS).write_bytes(b"my own edits")
    assert main(["data", "restore", "--force"]) == 0
    assert "data/ regenerated from scikit-learn's bundled digits" in capsys.readouterr().out
    assert main(["data", "restore"]) == 0


def test_cli_report_from_a_subfolder(tmp_path: Path, monkeypatch, capsys) -> None:
    repo = copy_repository(tmp_path / "repo")
    monkeypatch.chdir(repo / "src")
    assert main(["report"]) == 0
    assert "best by f1_macro" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    assert "no repository found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["history", "-n", "0"], "'0' must be 1 or more"),
        (["history", "-n", "-1"], "'-1' must be 1 or more"),
        (["history", "-n", "ten"], "'ten' is not a whole number"),
        (["serve", "--workers", "0"], "'0' must be 1 or more"),
        (["serve", "--port", "70000"], "'70000' is not a port number (1 to 65535)"),
        (["board", "--port", "0"], "'0' is not a port number"),
        (["ui", "--port", "http"], "'http' is not a port number"),
        (["promote", "--min-delta", "-0.1"], "'-0.1' must be 0 or more"),
    ],
)
def test_bad_numbers_on_the_command_line_are_refused_by_name(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2 and expected in capsys.readouterr().err


def test_predict_never_writes_over_its_input(repo: Path, capsys) -> None:
    images = repo / "images.csv"
    images.write_text("1,2,3\n")
    dvc_yaml = (repo / "dvc.yaml").read_text()
    for extra in ([], ["--as-stage"]):
        assert main(["predict", "images.csv", "-o", "./images.csv", *extra]) == 2
        assert "--output images.csv is the input file images.csv" in capsys.readouterr().err
    assert images.read_text() == "1,2,3\n" and (repo / "dvc.yaml").read_text() == dvc_yaml


def test_board_export_options_that_cannot_work_are_named(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "taken").write_text("a file")
    monkeypatch.chdir(tmp_path)
    for argv, problem in (
        (
            ["--compare", "HEAD,HEAD~1"],
            "--compare names what a static export compares: give --export DIR too",
        ),
        (["--export", "out", "--compare", "HEAD"], "--compare HEAD: name two experiments or more"),
        (["--export", "out", "--compare", "HEAD,HEAD"], "--compare HEAD,HEAD: name two experiments or more"),
        (["--export", "taken"], "--export taken: a file is there; name a folder"),
    ):
        assert main(["board", *argv]) == 2
        assert problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("signame", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_terminated_command_cleans_up_as_on_any_error(tmp_path: Path, signame: str, code: int) -> None:
    """`kill` (SIGTERM) during `data ingest`, or its terminal closed (SIGHUP): the temporary folder of the
    download is removed and data/ is as it was (the default action ended the process on the spot, leaving
    both: a predict left its partial output beside the real one), exit 143 / 129."""
    import http.server
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    started = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\0" * 1000)  # then nothing: a download in progress
            self.wfile.flush()
            started.set()
            time.sleep(30)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}
    command = [sys.executable, "-m", "mnist_lab.cli", "data", "ingest", f"http://127.0.0.1:{server.server_address[1]}/",
               "--out", str(tmp_path / "data"), "--no-track"]  # fmt: skip
    # as from a terminal: SIGHUP's default action (under `nohup`, as a CI runner may start the tests, the
    # child inherits SIGHUP ignored, and mnist-lab rightly leaves an ignored SIGHUP ignored)
    default_hangup = lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)  # noqa: E731
    ingest = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=default_hangup)
    try:
        assert started.wait(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(temporary.glob("mnist-lab-ingest-*/*")):
            time.sleep(0.05)
        assert list(temporary.glob("mnist-lab-ingest-*/*")), "the download did not start"
        ingest.send_signal(getattr(signal, signame))
        _, err = ingest.communicate(timeout=30)
    finally:
        ingest.kill()
        server.shutdown()
    assert ingest.returncode == code and err.strip().endswith("terminated"), err
    assert list(temporary.iterdir()) == [] and not (tmp_path / "data").exists()


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly_and_cleans_up(tmp_path: Path) -> None:
    """`mnist-lab data ingest mnist 2>&1 | head -1`: the first mirror's failure line meets a closed pipe
    while the download folder exists. SIGPIPE's default action ended the process there and left the folder;
    now it unwinds (the folder removed) and ends with a shell's 141, without a traceback."""
    import os
    import subprocess
    import sys

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    ingest = f"{sys.executable} -m mnist_lab.cli data ingest mnist --mirror http://127.0.0.1:{free_port()}/ "
    done = subprocess.run(  # `true` reads nothing and has long exited when the command (imports) writes
        ["bash", "-c", f"set -o pipefail; {ingest} --out {tmp_path / 'data'} --no-track 2>&1 | true"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(temporary)},
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (141, "", "")
    assert list(temporary.iterdir()) == [] and not (tmp_path / "data").exists()


def test_commit_says_so_when_every_run_keeps_an_earlier_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The heading said "its new runs are tagged with it" when no run was new."""
    import argparse

    from mnist_lab.cli import experiments as cli_experiments
    from mnist_lab.experiments import linking
    from mnist_lab.experiments.linking import RunLink, Tagging

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    run(["git", "init", "-q", str(tmp_path)], tmp_path)  # no DVC experiment: no labels to carry
    monkeypatch.chdir(tmp_path)
    links = [RunLink("sgd", "a" * 32, "b" * 32), RunLink("mlp", "c" * 32, "d" * 32)]
    for kept, heading in (
        ({"sgd": "1" * 40, "mlp": "1" * 40}, "its runs keep the commits that recorded them:"),
        ({"sgd": "1" * 40}, "its new runs are tagged with it:"),
    ):
        tagging = Tagging({}, kept)
        answer = ("e" * 40, links, tagging)
        monkeypatch.setattr(linking, "commit_experiment", lambda root, message, answer=answer: answer)
        monkeypatch.setattr(linking, "committed_code", lambda root, commit: [])
        cli_experiments._cmd_commit(argparse.Namespace(message="m"))
        assert capsys.readouterr().out.splitlines()[0] == f"committed the experiment as {'e' * 12}; {heading}"


def test_mlflows_download_bars_are_off_where_stderr_is_no_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    """`promote`, `serve --model`, `predict --model` printed MLflow's "Downloading artifacts" bars into
    logs and CI output."""
    import os
    import sys

    from mnist_lab.cli import PROGRESS_BAR_ENV, quiet_progress_bars

    monkeypatch.delenv(PROGRESS_BAR_ENV, raising=False)
    quiet_progress_bars()  # stderr captured: no terminal
    assert os.environ[PROGRESS_BAR_ENV] == "false"
    monkeypatch.setenv(PROGRESS_BAR_ENV, "true")  # asked for: kept
    quiet_progress_bars()
    assert os.environ[PROGRESS_BAR_ENV] == "true"
    monkeypatch.delenv(PROGRESS_BAR_ENV)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    quiet_progress_bars()
    assert PROGRESS_BAR_ENV not in os.environ
    # and every command asks it first (any command: this one fails outside a repository, after asking)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.chdir(tmp_path)
    main(["commit-of", "0123456789abcdef"])
    assert os.environ[PROGRESS_BAR_ENV] == "false"


def test_an_empty_model_uri_is_refused(capsys) -> None:
    """`serve --model ''` looked for an MLmodel file in the current folder (`Path("")` is `.`)."""
    for command in (["serve", "--model", " "], ["predict", "x.csv", "-o", "y.csv", "--model", ""]):
        with pytest.raises(SystemExit) as done:
            main(command)
        assert done.value.code == 2
        assert "--model: empty: give a model URI (models:/mnist-lab@champion" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["ui"], ["board"], ["serve", "--workspace"]])
def test_a_server_on_a_busy_port_is_refused_before_it_starts(command: list[str], tmp_path: Path) -> None:
    """`mnist-lab ui` on a port another server has printed its address, failed, and exited 0 (MLflow's),
    and the address it printed reached the other server."""
    import socket

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = run(["mnist-lab", *command, "--port", str(port)], tmp_path, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "choose another --port" in done.stderr and str(port) not in done.stdout


@pytest.mark.parametrize("host", ["bogus.invalid", "192.0.2.1"])
def test_a_host_that_is_not_this_machines_is_named_not_the_port(host: str) -> None:
    """`serve --host bogus.invalid`: the error ended "choose another --port", though the host was the problem
    (a name that does not resolve; an address of another machine, from TEST-NET-1)."""
    from mnist_lab.cli.arguments import check_port_free
    from mnist_lab.core.errors import MnistLabError

    with pytest.raises(MnistLabError) as refused:
        check_port_free(host, 20503)
    assert str(refused.value).startswith(f"--host {host}: cannot listen there (")
    said = str(refused.value)
    assert "not a name or address of this machine" in said and "--port" not in said
