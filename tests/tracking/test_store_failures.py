"""What the CLI and the stages print when a tracking server is away or refuses: one line naming the fix
(`describe_store_failure`), never a traceback quoting the URL's credentials. Real MLflow clients against
real sockets on 127.0.0.1: nothing listening, and a small HTTP server answering 401, 400 or an HTML page."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lab import tracking
from mnist_lab.tracking.server import describe_store_failure
from tests.helpers import free_port


@pytest.fixture
def answering() -> Iterator[dict]:
    """An HTTP server on 127.0.0.1 answering every request with `reply["status"]`, `reply["body"]`."""
    reply = {"status": 200, "body": b"{}", "type": "application/json", "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            reply["requests"] += 1
            self.send_response(reply["status"])
            self.send_header("Content-Type", reply["type"])
            self.send_header("Content-Length", str(len(reply["body"])))
            self.end_headers()
            self.wfile.write(reply["body"])

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reply["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    reply["server"] = server
    yield reply
    server.shutdown()


def failure_of(uri: str, monkeypatch: pytest.MonkeyPatch) -> BaseException:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    with pytest.raises(Exception) as raised:
        mlflow.MlflowClient(uri, registry_uri=uri).search_registered_models()
    return raised.value


def test_a_server_away_or_refusing_reads_as_one_line(
    answering: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    away = describe_store_failure(failure_of(f"http://127.0.0.1:{free_port()}", monkeypatch))
    assert away is not None and "did not answer (Connection refused): try again when it does" in away

    answering.update(status=401, body=b"You are not authenticated")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "jane")
    refused = describe_store_failure(failure_of(answering["url"], monkeypatch))
    assert refused == (
        "the tracking store rejected the credentials (401): set MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD in .env to a user and password (on DagsHub: your user name and an access "
        "token): MLFLOW_TRACKING_PASSWORD is not set, and MLflow sends a user and password only together, "
        "that may use it"
    )

    error = {"error_code": "INVALID_PARAMETER_VALUE", "message": "injected"}
    answering.update(status=400, body=json.dumps(error).encode())
    bad = describe_store_failure(failure_of(answering["url"], monkeypatch))
    assert bad == "the tracking store refused the request (HTTP 400): INVALID_PARAMETER_VALUE: injected"

    assert describe_store_failure(ValueError("a bug")) is None  # its traceback is worth seeing
    from mlflow.exceptions import MlflowException

    try:  # a bug of ours while handling the server's error: not the server's fault
        try:
            raise failure_of(answering["url"], monkeypatch)
        except MlflowException:
            raise KeyError("experiment_id") from None
    except KeyError as ours:
        assert describe_store_failure(ours) is None
    # MLflow's client refusing what it was given (no server involved): a bug, its traceback shown
    assert (
        describe_store_failure(
            MlflowException("Changing param values is not allowed. See https://mlflow.org")
        )
        is None
    )


def test_the_cli_prints_it_with_credentials_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mnist_lab.cli as cli

    failure = failure_of(f"http://admin:s3cretpw@127.0.0.1:{free_port()}", monkeypatch)

    def failing(args: object) -> None:
        raise failure

    class Parser:  # `mnist-lab <a command whose store is away>`
        def parse_args(self, argv: list[str]) -> argparse.Namespace:
            return argparse.Namespace(handler=failing)

    monkeypatch.setattr(cli, "build_parser", Parser)
    assert cli.main(["report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the tracking server http://127.0.0.1:") and "did not answer" in err
    assert "s3cretpw" not in err and "Traceback" not in err


def test_a_page_that_is_not_the_api_is_a_configuration_error(answering: dict) -> None:
    answering.update(body=b"<!doctype html><title>MLflow</title>", type="text/html")
    settings = tracking.TrackingSettings(answering["url"], "mnist-lab", None)
    with pytest.raises(
        tracking.TrackingConfigError, match=r"answered with a page, not MLflow's API \(JSON\)"
    ):
        tracking.check_server(settings, environ={})
    answering.update(body=b'{"experiment": {"experiment_id": "7", "lifecycle_stage": "active"}}')
    assert tracking.check_server(settings, environ={}) == "7"


def test_a_deleted_experiment_is_a_configuration_error_before_any_training(answering: dict) -> None:
    """It passed the check (as 'not there yet'), then every run was refused in evaluate, after training."""
    answering.update(body=b'{"experiment": {"experiment_id": "7", "lifecycle_stage": "deleted"}}')
    settings = tracking.TrackingSettings(answering["url"], "mnist-lab", None)
    with pytest.raises(
        tracking.TrackingConfigError,
        match=r"the experiment 'mnist-lab' is deleted on http://127\.0\.0\.1:\d+ \(id 7\): restore it "
        r"\(`mlflow experiments restore --experiment-id 7`",
    ):
        tracking.check_server(settings, environ={})
    # tagging runs and promoting need the server, not that experiment
    assert tracking.check_server(settings, environ={}, experiment_needed=False) is None


def test_tagging_a_commits_runs_on_a_server_refusing_the_login_says_so_once_asked(
    answering: dict, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """`mnist-lab commit` / `link`: every run's tag would be refused the same way; the reason names the
    variables to fix, and the server is asked once."""
    from mnist_lab.experiments.linking import RunLink, tag_runs_with_commit

    answering.update(status=401, body=b"You are not authenticated")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", answering["url"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    links = [RunLink("sgd", "a" * 32, "b" * 32), RunLink("mlp", "c" * 32, "d" * 32)]
    tagging = tag_runs_with_commit(tmp_path, links, "e" * 40)
    assert set(tagging.untagged) == {"sgd", "mlp"} and len(set(tagging.untagged.values())) == 1
    assert (
        "rejected the credentials (401): set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        in (tagging.untagged["mlp"])
    )
    assert answering["requests"] == 1


def test_tagging_on_a_server_that_hangs_gives_up_after_one_check_not_mlflows_retries(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A server that takes connections and never answers held `mnist-lab link` / `commit` 2 minutes, silent
    (MLflow's 30 s timeout, 3 retries, backoff): now the check (3 tries of 5 s), then every run untagged."""
    import socket

    from mnist_lab.experiments.linking import SERVER_AWAY, RunLink, tag_runs_with_commit

    hanging = socket.create_server(("127.0.0.1", 0))  # the kernel completes connections; nobody answers
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{hanging.getsockname()[1]}")
        (tmp_path / "dvc.yaml").write_text("stages: {}\n")
        # a run known by its record only (sent from another clone: the server is asked for it) first
        links = [
            RunLink("cnn", None, "f" * 32),
            RunLink("sgd", "a" * 32, "b" * 32),
            RunLink("mlp", "c" * 32, "d" * 32),
        ]
        tagging = tag_runs_with_commit(tmp_path, links, "e" * 40)
        assert tagging.untagged == {"cnn": SERVER_AWAY, "sgd": SERVER_AWAY, "mlp": SERVER_AWAY}
        hanging.setblocking(False)
        connections = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                hanging.accept()[0].close()
                connections += 1
        assert connections == 3  # the check's three tries; MLflow's client never tried
    finally:
        hanging.close()


def test_tls_problems_are_configuration_errors_and_mlflows_tls_variables_are_honoured(
    answering: dict, tmp_path
) -> None:
    """A TLS failure is not a server away (its runs would wait in the outbox for good): https:// to a plain
    server, or a certificate not trusted; the check trusts what MLflow's client trusts."""
    import shutil
    import socket
    import ssl
    import subprocess

    # a plain HTTP server answers the TLS greeting with a 400 in plain text, as MLflow's own servers do
    listening = socket.create_server(("127.0.0.1", 0))

    def answer_in_plain_http() -> None:
        while True:
            connection, _ = listening.accept()
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            connection.close()

    threading.Thread(target=answer_in_plain_http, daemon=True).start()
    plain = tracking.TrackingSettings(f"https://127.0.0.1:{listening.getsockname()[1]}", "mnist-lab", None)
    not_tls = r"does not speak TLS as https:// asks .*is it http://"
    with pytest.raises(tracking.TrackingConfigError, match=not_tls):
        tracking.check_server(plain, environ={})
    answering.update(body=b'{"experiment": {"experiment_id": "7", "lifecycle_stage": "active"}}')
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to serve")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), answering["server"].RequestHandlerClass)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threading.Thread(target=secure.serve_forever, daemon=True).start()
    try:
        settings = tracking.TrackingSettings(
            f"https://127.0.0.1:{secure.server_address[1]}", "mnist-lab", None
        )
        with pytest.raises(tracking.TrackingConfigError, match=r"its TLS certificate is not trusted here"):
            tracking.check_server(settings, environ={})
        assert tracking.check_server(settings, environ={"MLFLOW_TRACKING_SERVER_CERT_PATH": str(cert)}) == "7"
        assert tracking.check_server(settings, environ={"MLFLOW_TRACKING_INSECURE_TLS": "true"}) == "7"
        assert tracking.check_server(settings, environ={"MLFLOW_TRACKING_INSECURE_TLS": "1"}) == "7"
        missing = {"REQUESTS_CA_BUNDLE": str(tmp_path / "nowhere.pem")}
        with pytest.raises(
            tracking.TrackingConfigError, match=r"REQUESTS_CA_BUNDLE=.*nowhere.pem: not a CA bundle"
        ):
            tracking.check_server(settings, environ=missing)
        plain_http = tracking.TrackingSettings(answering["url"], "mnist-lab", None)
        assert tracking.check_server(plain_http, environ=missing) == "7"  # a plain server: no TLS to set up
    finally:
        secure.shutdown()


@pytest.mark.parametrize(
    "environ",
    [
        {
            "MLFLOW_TRACKING_USERNAME": "user",
            "MLFLOW_TRACKING_PASSWORD": "good",
            "MLFLOW_TRACKING_TOKEN": "old",
        },
        {"MLFLOW_TRACKING_TOKEN": "tok"},
        {"MLFLOW_TRACKING_USERNAME": "user", "MLFLOW_TRACKING_TOKEN": "tok"},
        {"MLFLOW_TRACKING_USERNAME": "user"},
        {},
    ],
)
def test_the_check_sends_the_credentials_mlflow_sends(environ: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client sends basic auth when a user and a password are both set, else the token, else
    nothing; the check sent the token first, and a user alone as `user:`: a stale token stopped a pipeline
    whose runs would have been accepted, and a wrong password passed with a valid token."""
    from tests.servers import recording_server

    def experiment(handler) -> None:
        body = b'{"experiment": {"experiment_id": "7", "lifecycle_stage": "active"}}'
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with recording_server(experiment) as (port, requests):
        url = f"http://127.0.0.1:{port}"
        settings = tracking.TrackingSettings(url, "mnist-lab", None)
        assert tracking.check_server(settings, environ=environ) == "7"
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        import mlflow

        mlflow.MlflowClient(url).get_experiment_by_name("mnist-lab")
    seen = [request.get("authorization") for request in requests]
    check, client = seen
    assert check == client


def test_refused_credentials_name_the_ones_sent(answering: dict) -> None:
    answering.update(status=401, body=b"You are not authenticated")
    settings = tracking.TrackingSettings(answering["url"], "mnist-lab", None)
    refusals = {
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env to a user and password": {
            "MLFLOW_TRACKING_USERNAME": "user",
            "MLFLOW_TRACKING_PASSWORD": "bad",
            "MLFLOW_TRACKING_TOKEN": "t",
        },
        "MLFLOW_TRACKING_TOKEN in .env to a token, that may write to it": {"MLFLOW_TRACKING_TOKEN": "t"},
        "MLFLOW_TRACKING_PASSWORD is not set, and MLflow sends a user and password only together": {
            "MLFLOW_TRACKING_USERNAME": "user"
        },
        "(none is set)": {},
    }  # fmt: skip
    for said, environ in refusals.items():
        with pytest.raises(tracking.TrackingConfigError) as refused:
            tracking.check_server(settings, environ=environ)
        assert said in str(refused.value) and "rejected the credentials (401)" in str(refused.value)


@contextlib.contextmanager
def _not_http() -> Iterator[str]:
    """A server on 127.0.0.1 that answers in another protocol (an SSH port, as one mistyped in .env)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                connection.recv(1024)

    threading.Thread(target=answer, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_server_answering_in_another_protocol_is_said_once_not_a_traceback() -> None:
    """http.client's BadStatusLine is no OSError: it escaped the checks as a traceback."""
    from mnist_lab.datasets.remote import RemoteConfigError, RemoteSettings
    from mnist_lab.datasets.remote_check import check_remote

    with _not_http() as url:
        settings = tracking.TrackingSettings(url, "mnist-lab", None)
        with pytest.raises(tracking.TrackingConfigError, match=r"answered, but not in HTTP \(BadStatusLine"):
            tracking.check_server(settings, environ={"DAGSHUB_REPO": "jane/mnist"}, attempts=1)
        remote = RemoteSettings.from_environment(Path("."), {"DVC_REMOTE_URL": f"{url}/store"})
        with pytest.raises(RemoteConfigError, match=r"answered, but not in HTTP .*is DVC_REMOTE_URL the"):
            check_remote(remote, Path("."))


def test_a_dagshub_address_that_is_wrong_names_dagshub_repo(answering: dict) -> None:
    """With only DAGSHUB_REPO set, a 404 told the user to fix MLFLOW_TRACKING_URI, which they never set."""
    answering.update(status=404, body=b"not found")
    settings = tracking.TrackingSettings(answering["url"], "mnist-lab", None)
    with pytest.raises(tracking.TrackingConfigError, match=r"is DAGSHUB_REPO \(the server's address is made"):
        tracking.check_server(settings, environ={"DAGSHUB_REPO": "jane/mnsit"})
