"""Storage servers for DVC remote tests, on 127.0.0.1 only, inside the test process, stopping by themselves.

- `basic_auth_http_server`: what DVC's http remote needs (as DagsHub's `<repo>.dvc` endpoint serves it):
  GET and HEAD of files, upload by POST (DVC's default `method`) or PUT, with a chunked or sized body,
  every request behind HTTP basic auth.
- `moto_s3_server`: moto's S3-compatible server with one bucket and IAM checks on, so only the access key it
  hands out works.
- `recording_server`: any answer, every request's headers kept (what a client sent: credentials, redirects).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hmac
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Servers stop by themselves after this long, even if a test hangs and never reaches its teardown.
DEFAULT_LIFETIME_S = 900


@dataclass
class HttpRemote:
    """A running basic-auth storage server: its URL, where it stores files, and the requests it saw."""

    url: str
    root: Path
    user: str
    password: str
    requests: collections.Counter = field(default_factory=collections.Counter)  # (method, status) -> count


def _read_chunked(stream) -> Iterator[bytes]:
    """The chunks of a `Transfer-Encoding: chunked` body (aiohttp streams DVC's uploads this way)."""
    while True:
        size = int(stream.readline().split(b";", 1)[0].strip(), 16)
        if size == 0:
            while stream.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        yield stream.read(size)
        stream.readline()  # the CRLF after each chunk


def _handler(remote: HttpRemote) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{remote.user}:{remote.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp expects; every response has a length

        def log_message(self, format: str, *args) -> None:  # quiet: tests look at `remote.requests`
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict | None = None, send_body=True) -> None:
            remote.requests[(self.command, status)] += 1
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if status >= 400:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _authorized(self) -> bool:
            if hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                return True
            self._drain()
            self._reply(401, b"unauthorized", {"WWW-Authenticate": 'Basic realm="dvc"'})
            return False

        def _target(self) -> Path | None:
            relative = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            target = (remote.root / relative).resolve()
            return target if target.is_relative_to(remote.root) else None

        def _body(self) -> Iterator[bytes]:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                yield from _read_chunked(self.rfile)
                return
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

        def _drain(self) -> None:
            for _ in self._body():
                pass

        def _get(self, send_body: bool) -> None:
            if not self._authorized():
                return
            target = self._target()
            if target is None:
                self._reply(403, b"outside the storage root", send_body=send_body)
            elif target.is_file():
                self._reply(200, target.read_bytes(), {"Content-Type": "application/octet-stream"}, send_body)
            elif target.is_dir():
                self._reply(200, b"", send_body=send_body)
            else:
                self._reply(404, b"not found", send_body=send_body)

        def do_GET(self) -> None:
            self._get(send_body=True)

        def do_HEAD(self) -> None:
            self._get(send_body=False)

        def _upload(self) -> None:
            if not self._authorized():
                return
            target = self._target()
            if target is None:
                self._drain()
                self._reply(403, b"outside the storage root")
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
            with os.fdopen(handle, "wb") as out:
                for chunk in self._body():
                    out.write(chunk)
            os.replace(partial, target)
            self._reply(200, b"stored")

        def do_POST(self) -> None:
            self._upload()

        def do_PUT(self) -> None:
            self._upload()

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """Threads die with the test process; a client closing its connection early is not worth a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@contextlib.contextmanager
def _stopping(shutdown, lifetime_s: float) -> Iterator[None]:
    """Call `shutdown` on exit, or after `lifetime_s` if the test never gets there."""
    timer = threading.Timer(lifetime_s, shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        shutdown()


@contextlib.contextmanager
def basic_auth_http_server(
    root: Path, user: str, password: str, lifetime_s: float = DEFAULT_LIFETIME_S
) -> Iterator[HttpRemote]:
    """A storage server on 127.0.0.1 (a free port) keeping files under `root`, behind basic auth."""
    root.mkdir(parents=True, exist_ok=True)
    remote = HttpRemote(url="", root=root.resolve(), user=user, password=password)
    server = _QuietServer(("127.0.0.1", 0), _handler(remote))
    remote.url = f"http://127.0.0.1:{server.server_address[1]}/dvc"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with _stopping(server.shutdown, lifetime_s):
            yield remote
    finally:
        thread.join(timeout=30)
        server.server_close()


@dataclass(frozen=True)
class S3Remote:
    """A running moto S3 server: endpoint, bucket, and the one access key it accepts."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str


def _moto_api(endpoint_url: str, action: str, body: str = "") -> None:
    """POST to moto's own API: `reset` (forget every bucket and user), `reset-auth` (see `moto_s3_server`)."""
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/{action}",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextlib.contextmanager
def moto_s3_server(bucket: str = "dvc-test", lifetime_s: float = DEFAULT_LIFETIME_S) -> Iterator[S3Remote]:
    """moto's ThreadedMotoServer on 127.0.0.1 (port 0) holding `bucket`, with IAM checks on: only the access
    key of its one user (allowed everything) works; any other key gets 403."""
    import botocore.session
    from moto import settings
    from moto.server import ThreadedMotoServer

    checks_before = settings.INITIAL_NO_AUTH_ACTION_COUNT  # moto's state is process-wide: restored below
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.stop()

    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        with _stopping(stop, lifetime_s):
            _moto_api(endpoint_url, "reset")
            setup = {
                "endpoint_url": endpoint_url,
                "region_name": "us-east-1",
                "aws_access_key_id": "setup",
                "aws_secret_access_key": "setup",
            }
            session = botocore.session.get_session()
            iam = session.create_client("iam", **setup)
            iam.create_user(UserName="dvc")
            allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
            policy = {"Version": "2012-10-17", "Statement": [allow_all]}
            iam.put_user_policy(UserName="dvc", PolicyName="everything", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="dvc")["AccessKey"]
            session.create_client("s3", **setup).create_bucket(Bucket=bucket)
            _moto_api(endpoint_url, "reset-auth", "0")  # from the next request on, check every signature
            try:
                yield S3Remote(endpoint_url, bucket, key["AccessKeyId"], key["SecretAccessKey"])
            finally:
                with contextlib.suppress(OSError):
                    _moto_api(endpoint_url, "reset")
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = checks_before


@contextlib.contextmanager
def mlflow_without_registry(upstream: str, lifetime_s: float = DEFAULT_LIFETIME_S) -> Iterator[str]:
    """A proxy on 127.0.0.1 in front of a real MLflow server that answers 404 to every Model Registry
    endpoint, as a server without a registry does (DagsHub's hosted MLflow has been reported so, and
    dagshub.com cannot be reached from here). Everything else goes through unchanged. Yields its URL."""
    hidden = ("/registered-models", "/model-versions")

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if any(part in self.path for part in hidden):
                body = b"<!doctype html><title>404 Not Found</title><h1>Not Found</h1>"
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data: bytes | None = b"".join(_read_chunked(self.rfile))
            else:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
            skip = {"host", "content-length", "connection", "transfer-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            request = urllib.request.Request(
                upstream + self.path, data=data, method=self.command, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    status, answer_headers, body = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as error:
                status, answer_headers, body = error.code, error.headers, error.read()
            self.send_response(status)
            for key, value in answer_headers.items():
                if key.lower() not in skip:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args) -> None:
            pass

    server = _QuietServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with _stopping(server.shutdown, lifetime_s):
            yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        thread.join(timeout=30)
        server.server_close()


@contextlib.contextmanager
def recording_server(answer) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A real HTTP server on 127.0.0.1: `answer(handler)` replies to each GET and HEAD; every request's
    headers (lower-cased names) and path are kept. Yields (its port, the requests seen)."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({key.lower(): value for key, value in self.headers.items()} | {"path": self.path})
            answer(self)

        do_HEAD = do_GET

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield str(httpd.server_address[1]), seen
    finally:
        httpd.shutdown()
        httpd.server_close()
