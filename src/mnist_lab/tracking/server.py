"""Remote servers: the credentials check before any training work (`preflight`), and the marker that
keeps later stages from retrying a server found unreachable."""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.files import write_text_atomic
from mnist_lab.system.redact import basic_auth, display_uri, open_url
from mnist_lab.tracking.config import TrackingConfigError, TrackingSettings

# --- remote servers: the credentials check and the outbox -------------------------------------------------

OUTBOX = Path(".mnist-lab") / "outbox"  # under the repository root, git-ignored
CHECK_ATTEMPTS = 3
CHECK_TIMEOUT_S = 5.0


class TrackingServerUnreachable(MnistLabError):
    """The tracking server did not answer: runs are kept in the outbox until it does."""


def _authorization(environ: Mapping[str, str]) -> str | None:
    """The Authorization header MLflow's client sends (mlflow.utils.rest_utils): basic auth when both a user
    and a password are set, else the bearer token, else none. The check must send what the runs will."""
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return basic_auth(user, password)
    if token := environ.get("MLFLOW_TRACKING_TOKEN"):
        return f"Bearer {token}"
    return None


def _credentials_hint(environ: Mapping[str, str]) -> str:
    """Which variables to fix, and to what, for the credentials `_authorization` sent."""
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    pair = (
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env to a user and password (on DagsHub: "
        "your user name and an access token)"
    )
    if user and password:
        return pair
    if environ.get("MLFLOW_TRACKING_TOKEN"):
        return "MLFLOW_TRACKING_TOKEN in .env to a token"
    if user or password:  # MLflow sends neither alone
        missing = "MLFLOW_TRACKING_PASSWORD" if user else "MLFLOW_TRACKING_USERNAME"
        return f"{pair}: {missing} is not set, and MLflow sends a user and password only together"
    return f"{pair} (none is set)"


def check_server(
    settings: TrackingSettings,
    environ: Mapping[str, str] | None = None,
    attempts: int = CHECK_ATTEMPTS,
    timeout: float = CHECK_TIMEOUT_S,
    experiment_needed: bool = True,
) -> str | None:
    """Prove a remote server answers and accepts the credentials, in seconds, before any training work, and
    return the id of its experiment `settings.experiment_name` (None: not there yet, or a local store). A
    deleted experiment is a TrackingConfigError unless `experiment_needed` is False (tagging runs, promoting:
    they need the server, not that experiment).

    401/403 raise TrackingConfigError naming the variables to fix; no answer after `attempts` tries raises
    TrackingServerUnreachable. Uses urllib, so the stages that only train never import MLflow."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    if not settings.is_remote:
        return None
    environ = os.environ if environ is None else environ
    named_by = (
        "MLFLOW_TRACKING_URI"
        if environ.get("MLFLOW_TRACKING_URI", "").strip() or not environ.get("DAGSHUB_REPO", "").strip()
        else "DAGSHUB_REPO (the server's address is made of it)"
    )
    query = urllib.parse.urlencode({"experiment_name": settings.experiment_name})
    request = urllib.request.Request(
        f"{settings.tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?{query}"
    )
    if (authorization := _authorization(environ)) is not None:
        request.add_header("Authorization", authorization)
    where = display_uri(settings.tracking_uri)
    tls = _tls_context(environ) if settings.tracking_uri.startswith("https://") else None
    last_problem = ""
    for attempt in range(1, attempts + 1):
        try:
            with open_url(request, timeout=timeout, tls=tls) as response:
                body = response.read()
            if not _is_json_object(body):  # a page of the UI, a proxy's login page: not MLflow's API
                raise TrackingConfigError(
                    f"{where} answered with a page, not MLflow's API (JSON): {named_by} must give the "
                    "server's base URL, http(s)://<host>:<port>, not the address of a page in a browser"
                )
            deleted = _deleted_experiment_id(body) if experiment_needed else None
            if deleted is not None:  # MLflow would refuse every run into it, after the training
                name = settings.experiment_name
                raise TrackingConfigError(
                    f"the experiment '{name}' is deleted on {where} (id {deleted}): restore it (`mlflow "
                    f"experiments restore --experiment-id {deleted}` with MLFLOW_TRACKING_URI set to the "
                    "server, or in its UI) or name another with MLFLOW_EXPERIMENT_NAME in .env"
                )
            return _active_experiment_id(body)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and b"RESOURCE_DOES_NOT_EXIST" in exc.read():
                return (
                    None  # an MLflow server without this experiment yet: it answered and took the credentials
                )
            if exc.code in (401, 403):
                what = "rejected the credentials (401)" if exc.code == 401 else "refused access (403)"
                raise TrackingConfigError(
                    f"MLflow server {where} {what}: set {_credentials_hint(environ)}, that may write to it "
                    "(a value exported in the shell wins over .env)"
                ) from None
            last_problem = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500:
                raise TrackingConfigError(
                    f"MLflow server {where} answered {last_problem}: is {named_by} an MLflow server?"
                ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):  # it answered, but not as the address says: no retry helps
                raise TrackingConfigError(_tls_problem(where, reason)) from None
            last_problem = str(reason)
        except http.client.HTTPException as exc:  # it answered, not in HTTP (an SSH or database port)
            problem = f"{type(exc).__name__}: {str(exc).strip()[:80]}"
            raise TrackingConfigError(
                f"{where} answered, but not in HTTP ({problem}): is {named_by} the MLflow server's address "
                "and port?"
            ) from None
        if attempt < attempts:
            time.sleep(attempt)
    raise TrackingServerUnreachable(
        f"MLflow server {where} did not answer after {attempts} attempts ({last_problem}); check "
        f"{named_by} (in .env or the environment)"
    )


def _tls_context(environ: Mapping[str, str]) -> ssl.SSLContext | None:
    """What MLflow's client trusts, from the same variables: no verification with
    MLFLOW_TRACKING_INSECURE_TLS=true, the CA bundle in MLFLOW_TRACKING_SERVER_CERT_PATH or
    REQUESTS_CA_BUNDLE, else the system's (None)."""
    if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() in ("true", "1"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "REQUESTS_CA_BUNDLE"):
        bundle = environ.get(name, "").strip()
        if not bundle:
            continue
        try:  # a folder of certificates, as requests takes it, or a file
            if Path(bundle).is_dir():
                return ssl.create_default_context(capath=bundle)
            return ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            raise TrackingConfigError(
                f"{name}={bundle}: not a CA bundle this can read ({exc}): name a PEM file or folder of "
                "certificates, or remove it"
            ) from None
    return None


def _tls_problem(where: str, reason: ssl.SSLError) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"MLflow server {where}: its TLS certificate is not trusted here ({reason.verify_message}): give "
            "your CA bundle in REQUESTS_CA_BUNDLE (or MLFLOW_TRACKING_SERVER_CERT_PATH), or, for a test "
            "server only, MLFLOW_TRACKING_INSECURE_TLS=true"
        )
    return (
        f"MLflow server {where} does not speak TLS as https:// asks ({reason.reason or reason}): is it "
        "http://? Fix MLFLOW_TRACKING_URI in .env"
    )


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def describe_store_failure(exc: BaseException) -> str | None:
    """One line for an error a tracking store's client raised (MLflow, requests) about the server, naming the
    fix: it did not answer, refused the credentials, or answered the request with an error. None for
    anything else, a client-side MlflowException included (a bug: its traceback is worth seeing). Callers
    redact it (a server's message may quote a URL)."""
    import re

    from mnist_lab.tracking.outbox import http_status, is_transport_failure

    if type(exc).__module__.partition(".")[0] not in ("mlflow", "requests", "urllib3"):
        return None
    text = str(exc)
    status = http_status(exc)
    if not is_transport_failure(exc) and status is None:
        return None
    api = re.search(r"API request to (https?://[^\s/'\"]+)", text)  # MLflow names the server it asked
    pool = re.search(r"host='([^']+)', port=(\d+)", text)  # or requests' connection pool does
    where = "the tracking store"
    if api:
        where = f"the tracking server {display_uri(api.group(1))}"
    elif pool:
        where = f"the tracking server {pool.group(1)}:{pool.group(2)}"
    if is_transport_failure(exc):
        reason = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        why = reason.group(1).strip() if reason else (f"HTTP {status}" if status else type(exc).__name__)
        return (
            f"{where} did not answer ({why}): try again when it does; MLFLOW_TRACKING_URI (in .env or the "
            "environment) names it"
        )
    if status in (401, 403):
        what = "rejected the credentials (401)" if status == 401 else "refused access (403)"
        return f"{where} {what}: set {_credentials_hint(os.environ)}, that may use it"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"{where} refused the request (HTTP {status}): {first[:500]}"


def _active_experiment_id(body: bytes) -> str | None:
    """The experiment id in a `get-by-name` answer, unless the experiment is deleted (or the answer odd)."""
    try:
        experiment = json.loads(body)["experiment"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(experiment, dict) or experiment.get("lifecycle_stage", "active") != "active":
        return None
    identifier = experiment.get("experiment_id")
    return identifier if isinstance(identifier, str) and identifier else None


def _deleted_experiment_id(body: bytes) -> str | None:
    """The experiment id in a `get-by-name` answer when the experiment is deleted (in MLflow's trash)."""
    try:
        experiment = json.loads(body)["experiment"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(experiment, dict) or experiment.get("lifecycle_stage") != "deleted":
        return None
    return str(experiment.get("experiment_id", "?"))


SERVER_AWAY = Path(".mnist-lab") / "server-away.json"  # under the repository root, git-ignored
SERVER_AWAY_FOR_S = 120


def preflight(root: Path) -> TrackingSettings:
    """The tracking settings, checked (with the experiment's id when the server has it, so logging needs no
    lookup): a configuration error stops the stage (exit 2); an unreachable server only warns, since its runs
    wait in the outbox (`mnist-lab sync` sends them).

    The warning is printed once: the stages that follow within SERVER_AWAY_FOR_S seconds (every stage is its
    own process) neither try the server again nor warn again; they keep their runs in the outbox at once
    (`settings.server_away`), instead of each waiting through the retries."""
    settings = TrackingSettings.from_environment(root)
    if not settings.is_remote:
        return settings
    marker = root / SERVER_AWAY
    if server_recently_away(root, settings):
        return dataclasses.replace(settings, server_away=True)
    try:
        settings = dataclasses.replace(settings, experiment_id=check_server(settings))
    except TrackingServerUnreachable as exc:
        marker.parent.mkdir(parents=True, exist_ok=True)
        uri = display_uri(settings.tracking_uri)
        write_text_atomic(marker, json.dumps({"tracking_uri": uri, "until": time.time() + SERVER_AWAY_FOR_S}))
        print(
            f"warning: {exc}. Runs are kept in {OUTBOX}/ and sent by the next run or `mnist-lab sync` "
            f"(the next {SERVER_AWAY_FOR_S} s of stages do not try it again).",
            file=sys.stderr,
        )
        return dataclasses.replace(settings, server_away=True)
    marker.unlink(missing_ok=True)
    return settings


def server_recently_away(root: Path, settings: TrackingSettings) -> bool:
    """Whether a stage found the server in `settings` unreachable less than SERVER_AWAY_FOR_S ago."""
    try:
        away = json.loads((root / SERVER_AWAY).read_text(encoding="utf-8"))
        return away["tracking_uri"] == display_uri(settings.tracking_uri) and time.time() < float(
            away["until"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
