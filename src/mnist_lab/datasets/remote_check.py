"""Is the DVC remote there, and do its credentials work? Checked without transferring data, each request
bounded by CHECK_TIMEOUT_S, for `mnist-lab remote check` / `setup` and after a failed `dvc pull`
(`diagnose_remote`). Messages name the fix and never show a secret."""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mnist_lab.core.errors import MnistLabError
from mnist_lab.datasets.remote import (
    CHECK_TIMEOUT_S,
    LOCAL_CONFIG,
    RemoteAuthError,
    RemoteConfigError,
    RemoteError,
    RemoteSettings,
    RemoteUnreachableError,
    configure_remote,
    load_remote_settings,
)
from mnist_lab.system.redact import basic_auth, display_uri, mask_credentials, open_url


def setup_remote(root: Path, settings: RemoteSettings, check: bool = True) -> tuple[list[str], str | None]:
    """`configure_remote`, then (unless `check` is False) `check_remote`: the lines saying what was written
    and the check's sentence. When either fails, `.dvc/config` and `.dvc/config.local` are put back byte for
    byte, so a wrong password or a typo in the URL never replaces a remote that worked."""
    saved = {path: path.read_bytes() if path.is_file() else None for path in _config_files(root)}
    checking = False
    try:
        written = configure_remote(root, settings)
        checking = check
        return written, check_remote(settings, root) if check else None
    except BaseException as exc:
        for path, content in saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)
        if checking and isinstance(exc, MnistLabError):  # the settings were fine for DVC; the remote said no
            exc.args = (
                f"{exc.args[0] if exc.args else exc}\n(.dvc/config and {LOCAL_CONFIG} are as they were: "
                "nothing was written; `mnist-lab remote setup --no-check` writes without checking)",
            )
        raise


def _config_files(root: Path) -> tuple[Path, Path]:
    return root / ".dvc" / "config", root / LOCAL_CONFIG


def check_remote(settings: RemoteSettings, root: Path) -> str:
    """Prove the remote answers and accepts the credentials, without transferring data; bounded by
    CHECK_TIMEOUT_S per request. Returns a sentence saying what was checked; raises RemoteError subclasses."""
    if settings.kind == "local":
        return _check_local(settings, root)
    if settings.kind == "s3":
        return _check_s3(settings)
    return _check_http(settings)


def _check_local(settings: RemoteSettings, root: Path) -> str:
    folder = settings.local_path(root)
    if not folder.is_dir():
        if settings.url_source.startswith("DVC's config"):
            # committed by whoever set the remote up (DVC's merged config shows a committed relative URL
            # resolved from this clone): a store with data, somewhere else here, not a new empty one to make
            what = (
                f"the committed relative URL {settings.url}, resolved from this clone"
                if not Path(settings.url).expanduser().is_absolute()
                else f"from {settings.url_source}"
            )
            raise RemoteUnreachableError(
                f"DVC remote folder {folder} ({what}) does not exist: if the store is elsewhere on this "
                f"machine, point this clone at it (`dvc remote modify --local {settings.name} url "
                "/path/to/store`; only this clone's .dvc/config.local changes)"
            )
        raise RemoteUnreachableError(
            f"DVC remote folder {folder} (from {settings.url_source}) does not exist: for a new remote "
            f"create it (`mkdir -p {folder}`), else fix {settings.url_source}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RemoteUnreachableError(
            f"DVC remote folder {folder} is not writable: fix its permissions or set another DVC_REMOTE_URL"
        )
    return f"remote folder {folder} exists and is writable"


def _http_auth_fix(settings: RemoteSettings) -> str:
    if not settings.user:
        return (
            "the server wants credentials and none are set: set DVC_REMOTE_USER and DVC_REMOTE_PASSWORD in "
            ".env" + (" (your DagsHub user name and an access token)" if "dagshub" in settings.url else "")
        )
    sources = f"{settings.user_source} / {settings.password_source}"
    fix = f"check {sources}"
    if settings.user_source.startswith("MLFLOW_"):
        fix += " (used because DVC_REMOTE_USER / DVC_REMOTE_PASSWORD are not set)"
    return fix + " in .env, then run `mnist-lab remote setup` again"


def _check_http(settings: RemoteSettings) -> str:
    request = urllib.request.Request(settings.url, method="HEAD")
    if settings.user:
        try:  # as DVC sends them (aiohttp's BasicAuth): checked in UTF-8, others than DVC's passed
            authorization = basic_auth(settings.user, settings.password, encoding="latin-1")
        except UnicodeEncodeError:
            raise RemoteConfigError(
                f"{settings.user_source} / {settings.password_source}: DVC sends HTTP credentials in "
                "latin-1, which cannot hold a character of the user or password: use one without it (an "
                "access token)"
            ) from None
        request.add_header("Authorization", authorization)
    where = f"DVC remote '{settings.name}' at {settings.display_url}"
    try:
        with open_url(request, timeout=CHECK_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        if status in (401, 403):
            raise RemoteAuthError(
                f"{where} refused the credentials (HTTP {status} {exc.reason}): {_http_auth_fix(settings)}"
            ) from None
        if status >= 500:
            raise RemoteUnreachableError(
                f"{where} answered HTTP {status} {exc.reason}: the server is failing; try again later, or "
                f"check {settings.url_source}"
            ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = mask_credentials(str(getattr(exc, "reason", exc)), settings.secrets)
        raise RemoteUnreachableError(
            f"cannot reach {where} ({reason}): check {settings.url_source} and the network"
        ) from None
    except http.client.HTTPException as exc:  # it answered, not in HTTP (an SSH or database port)
        problem = mask_credentials(f"{type(exc).__name__}: {str(exc).strip()[:80]}", settings.secrets)
        raise RemoteConfigError(
            f"{where} answered, but not in HTTP ({problem}): is {settings.url_source} the server's address "
            "and port?"
        ) from None
    credentials = f"user '{settings.user}' accepted" if settings.user else "no credentials needed"
    return f"{settings.display_url} answers (HTTP {status} to HEAD); {credentials}"


def _check_s3(settings: RemoteSettings) -> str:
    import botocore.config
    import botocore.exceptions
    import botocore.session

    parts = urllib.parse.urlsplit(settings.url)
    bucket = parts.netloc
    where = f"DVC remote '{settings.name}' bucket '{bucket}'" + (
        f" at {display_uri(settings.endpoint_url)}" if settings.endpoint_url else ""
    )
    keys = settings.keys_source if settings.access_key_id else "your AWS configuration (AWS_*, ~/.aws)"
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        config=botocore.config.Config(
            connect_timeout=CHECK_TIMEOUT_S, read_timeout=CHECK_TIMEOUT_S, retries={"max_attempts": 2}
        ),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.NoCredentialsError:
        raise RemoteAuthError(
            f"{where}: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in .env, "
            "then run `mnist-lab remote setup`"
        ) from None
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or status == 404:
            raise RemoteUnreachableError(
                f"{where} does not exist: create the bucket, or fix {settings.url_source}"
            ) from None
        if code in ("400", "401", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied") or (
            status in (400, 401, 403)
        ):
            raise RemoteAuthError(
                f"{where} refused the credentials (HTTP {status} {code}): check {keys} in .env, then run "
                "`mnist-lab remote setup` again"
            ) from None
        raise RemoteError(f"{where}: {mask_credentials(str(exc), settings.secrets)}") from None
    except botocore.exceptions.BotoCoreError as exc:
        reason = mask_credentials(str(exc), settings.secrets)
        raise RemoteUnreachableError(
            f"cannot reach {where} ({reason}): check DVC_REMOTE_ENDPOINT_URL, {settings.url_source} and the "
            "network"
        ) from None
    return f"bucket '{bucket}' answers and accepts the keys from {keys}"


def diagnose_remote(start: Path) -> str | None:
    """Why the DVC remote of the repository at or above `start` cannot be used, as one message naming the
    fix; None when it answers and takes the credentials. For after a failed `dvc pull`: DVC reports an http
    remote that refuses the credentials only as missing files (its existence checks get 401)."""
    from mnist_lab.system.workspace import repository_root

    try:
        root = repository_root(start)
        check_remote(load_remote_settings(root), root)
    except MnistLabError as exc:
        return str(exc)
    return None
