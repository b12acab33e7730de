"""Secrets stay where they belong: masked in text, and never sent to a host a server redirects to."""

from __future__ import annotations

import http.server
import json
import urllib.request

from mnist_lab import tracking
from mnist_lab.system.redact import open_url
from tests.servers import recording_server


def _mlflow_has_no_such_experiment(handler: http.server.BaseHTTPRequestHandler) -> None:
    body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"}).encode()
    handler.send_response(404)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _redirect_to(location: str):
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def test_credentials_never_follow_a_redirect_to_another_host() -> None:
    environ = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "s3cret"}
    # `localhost` and 127.0.0.1 are the same machine but another host as far as HTTP is concerned
    with (
        recording_server(_mlflow_has_no_such_experiment) as (other_port, other_seen),
        recording_server(_redirect_to(f"http://localhost:{other_port}")) as (port, seen),
    ):
        settings = tracking.TrackingSettings(f"http://127.0.0.1:{port}", "x", None)
        assert tracking.check_server(settings, environ=environ) is None  # answered, through the redirect
    assert seen[0]["authorization"].startswith("Basic ")  # the server it was meant for got them
    assert len(other_seen) == 1 and "authorization" not in other_seen[0]


def test_credentials_follow_a_redirect_on_the_same_host() -> None:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/moved"):
            _mlflow_has_no_such_experiment(handler)
        else:
            _redirect_to(f"http://127.0.0.1:{handler.server.server_address[1]}/moved")(handler)

    with recording_server(answer) as (port, seen):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/start")
        request.add_header("Authorization", "Bearer token-1")
        try:
            open_url(request, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    assert [s["authorization"] for s in seen] == ["Bearer token-1", "Bearer token-1"]


def test_a_message_is_shortened_to_its_first_line_at_a_word() -> None:
    from mnist_lab.system.redact import first_line

    timeout = "ReadTimeoutError(HTTPConnectionPool(host='127.0.0.1', port=58093): Read timed out.)"
    assert first_line(f"{timeout}\nsecond line") == timeout
    short = first_line("x " * 10 + timeout, limit=70)
    assert short.endswith("…") and len(short) <= 70 and not short.endswith("tim…")  # never mid-word
    assert short[:-1] == ("x " * 10 + timeout)[: len(short) - 1]  # the start, as it was
    assert first_line("a" * 400, limit=300) == "a" * 299 + "…"  # one long word: cut where it must be
    assert first_line("") == ""
