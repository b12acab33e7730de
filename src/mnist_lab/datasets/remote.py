"""The DVC remote: its URL in the committed `.dvc/config`, its credentials only in `.dvc/config.local`.

Settings come from the environment and the git-ignored `.env` (the environment wins), falling back to what
DVC's config already holds, so a fresh clone needs only credentials in `.env`:

- `DVC_REMOTE_URL`: any DVC URL: a local path, `s3://bucket/prefix`, `http(s)://...`;
- `DVC_REMOTE_USER` / `DVC_REMOTE_PASSWORD`: HTTP basic auth;
- `DVC_REMOTE_ENDPOINT_URL`: an S3-compatible server; S3 keys: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`;
- `DAGSHUB_REPO=<owner>/<repo>` without `DVC_REMOTE_URL`: DagsHub's `https://dagshub.com/<owner>/<repo>.dvc`.
  On dagshub.com the user and password fall back to `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`
  (DagsHub takes the same user and token for both).

No secret is ever printed: messages show URLs without their user:password part and mask secret values.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system import commands
from mnist_lab.system.redact import (
    URL_USERINFO,
    display_uri,
    mask_credentials,
    split_url_credentials,
    unencoded_credentials,
)
from mnist_lab.system.workspace import DAGSHUB_HOST, dagshub_repo, load_env_file

REMOTE_NAME = "origin"
CHECK_TIMEOUT_S = 10  # connect and read, per request: a dead server fails in seconds
DVC_TIMEOUT_S = 120  # a `dvc remote`/`dvc config` command only edits files
LOCAL_CONFIG = ".dvc/config.local"
Kind = Literal["local", "s3", "http"]


class RemoteError(MnistLabError):
    """The DVC remote is misconfigured, unreachable, or refuses the credentials."""


class RemoteConfigError(RemoteError):
    """The remote's settings (environment, `.env`, DVC config) are missing or contradict each other."""


class RemoteAuthError(RemoteError):
    """The remote answered, but refused the credentials."""


class RemoteUnreachableError(RemoteError):
    """The remote did not answer, or does not exist."""


@dataclass(frozen=True)
class RemoteSettings:
    """One DVC remote and its credentials; `*_source` name where each value came from, for messages."""

    url: str  # never holds credentials: it goes into the committed .dvc/config
    url_source: str
    name: str = REMOTE_NAME
    user: str | None = None
    user_source: str = "DVC_REMOTE_USER"
    password: str | None = field(default=None, repr=False)
    password_source: str = "DVC_REMOTE_PASSWORD"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    keys_source: str = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"

    @property
    def kind(self) -> Kind:
        return remote_kind(self.url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values no output may show."""
        return tuple(s for s in (self.password, self.secret_access_key) if s)

    @property
    def display_url(self) -> str:
        return display_uri(self.url)

    def local_path(self, root: Path) -> Path:
        """A local remote's folder; relative URLs are relative to the repository root."""
        return (root / os.path.expanduser(self.url)).resolve()

    @classmethod
    def from_environment(
        cls,
        root: Path,
        environ: Mapping[str, str] | None = None,
        configured: Mapping[str, str] | None = None,
    ) -> RemoteSettings:
        """Settings from `environ` (default: the environment plus `<root>/.env`), falling back to the default
        remote in `configured` (DVC's merged config as `dvc config --list` prints it) for whatever they lack.

        Raises RemoteConfigError naming the variable and the fix when no remote is named or values clash."""
        if environ is None:
            load_env_file(root)
            environ = os.environ
        env = {key: value.strip() for key, value in environ.items() if value and value.strip()}
        configured = configured or {}
        name = configured.get("core.remote", REMOTE_NAME)
        saved = {
            key.removeprefix(f"remote.{name}."): value
            for key, value in configured.items()
            if key.startswith(f"remote.{name}.")
        }

        url, url_source = _remote_url(env, saved, name)
        url, user_in_url, password_in_url = _split_userinfo(url, url_source)
        kind = remote_kind(url)
        same_remote = "url" in saved and _same_url(saved["url"], url, root)
        fallback = saved if same_remote else {}
        values: dict = {"url": url, "url_source": url_source, "name": name if same_remote else REMOTE_NAME}

        if kind == "http":
            values.update(_http_credentials(env, fallback, url, user_in_url, password_in_url))
        elif env.get("DVC_REMOTE_USER") or env.get("DVC_REMOTE_PASSWORD"):
            fix = "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead" if kind == "s3" else "remove them"
            raise RemoteConfigError(
                f"DVC_REMOTE_USER / DVC_REMOTE_PASSWORD are for http(s) remotes, but {display_uri(url)} is a "
                f"{kind} remote: {fix} in .env"
            )
        if kind == "s3":
            values.update(_s3_settings(env, fallback))
        elif env.get("DVC_REMOTE_ENDPOINT_URL"):
            raise RemoteConfigError(
                f"DVC_REMOTE_ENDPOINT_URL is for s3:// remotes, but DVC_REMOTE_URL is {display_uri(url)}: "
                "remove DVC_REMOTE_ENDPOINT_URL from .env, or use an s3://bucket/prefix URL"
            )
        return cls(**values)


def remote_kind(url: str) -> Kind:
    """`local`, `s3` or `http` (http or https); other schemes are refused with the supported ones."""
    if "://" not in url:
        if re.match(r"[\w.-]+:\d+(/|$)", url):
            raise RemoteConfigError(
                f"DVC remote URL {display_uri(url)} looks like a server's address without its scheme, not a "
                "folder: write it as http(s)://... (or ./ before a folder of that name)"
            )
        return "local"
    scheme = url.split("://", 1)[0].lower()
    if scheme == "s3":
        return "s3"
    if scheme in ("http", "https"):
        return "http"
    raise RemoteConfigError(
        f"DVC remote URL {display_uri(url)}: scheme '{scheme}' is not supported here; use a local path, "
        "s3://bucket/prefix (also S3-compatible servers, with DVC_REMOTE_ENDPOINT_URL) or http(s)://..."
    )


def _remote_url(env: Mapping[str, str], saved: Mapping[str, str], name: str) -> tuple[str, str]:
    if url := env.get("DVC_REMOTE_URL"):
        return url, "DVC_REMOTE_URL"
    if value := env.get("DAGSHUB_REPO", "").strip():
        try:
            repo = dagshub_repo(value)
        except ValueError as exc:
            raise RemoteConfigError(str(exc)) from None
        return f"https://{DAGSHUB_HOST}/{repo}.dvc", "DAGSHUB_REPO"
    if url := saved.get("url"):
        return url, f"DVC's config (remote '{name}')"
    raise RemoteConfigError(
        "no DVC remote is named: set DVC_REMOTE_URL (a folder, s3://bucket/prefix or https://...) or "
        "DAGSHUB_REPO=<owner>/<repo> in .env (see .env.example), then run `mnist-lab remote setup`"
    )


def _split_userinfo(url: str, source: str) -> tuple[str, str | None, str | None]:
    """The URL without a user:password part, and that part: credentials never go into .dvc/config. A URL
    urllib cannot read (a password with an unencoded "/", "?" or "#", whose URL would go into .dvc/config
    whole; a port that is no number; an unclosed IPv6 bracket) is refused, naming the fix."""
    try:
        clean, user, password = split_url_credentials(url)
        parts = urllib.parse.urlsplit(clean)
        parts.port  # noqa: B018 - reading it checks it (a number from 0 to 65535)
    except ValueError as exc:
        if unencoded_credentials(url):
            raise RemoteConfigError(
                f"{source}: {exc} (for a remote: DVC_REMOTE_USER and DVC_REMOTE_PASSWORD in .env)"
            ) from None
        raise RemoteConfigError(f"{source}: {display_uri(url)} is not a valid URL ({exc}): fix it") from None
    has_credentials = user is not None or password is not None
    if has_credentials and urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise RemoteConfigError(
            f"{source}: {display_uri(url)} must not hold credentials; for s3 set AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY"
        )
    return clean, user, password


def _same_url(saved: str, url: str, root: Path) -> bool:
    if "://" in saved or "://" in url:
        return saved.rstrip("/") == url.rstrip("/")
    return (root / saved).resolve() == (root / url).resolve()


def _http_credentials(
    env: Mapping[str, str],
    saved: Mapping[str, str],
    url: str,
    user_in_url: str | None,
    password_in_url: str | None,
) -> dict:
    """User and password for basic auth: DVC_REMOTE_*, then the URL's user:password, then (dagshub.com)
    MLFLOW_TRACKING_*, then what DVC's config holds; each with where it came from."""
    dagshub = (urllib.parse.urlsplit(url).hostname or "").lower() == DAGSHUB_HOST
    candidates = {
        "user": [
            ("DVC_REMOTE_USER", env.get("DVC_REMOTE_USER")),
            ("the user in DVC_REMOTE_URL", user_in_url),
            ("MLFLOW_TRACKING_USERNAME", env.get("MLFLOW_TRACKING_USERNAME") if dagshub else None),
            (".dvc/config.local", saved.get("user")),
        ],
        "password": [
            ("DVC_REMOTE_PASSWORD", env.get("DVC_REMOTE_PASSWORD")),
            ("the password in DVC_REMOTE_URL", password_in_url),
            ("MLFLOW_TRACKING_PASSWORD", env.get("MLFLOW_TRACKING_PASSWORD") if dagshub else None),
            (".dvc/config.local", saved.get("password")),
        ],
    }
    found = {}
    for key, options in candidates.items():
        source, value = next(((s, v) for s, v in options if v), (options[0][0], None))
        found[key], found[f"{key}_source"] = value, source
    if bool(found["user"]) != bool(found["password"]):
        missing = "password" if found["user"] else "user"
        raise RemoteConfigError(
            f"HTTP basic auth for {display_uri(url)} needs both a user and a password, but the {missing} is "
            f"not set: set DVC_REMOTE_USER and DVC_REMOTE_PASSWORD in .env"
            + (" (on DagsHub: your user name and an access token)" if dagshub else "")
        )
    return found


def _s3_settings(env: Mapping[str, str], saved: Mapping[str, str]) -> dict:
    endpoint = env.get("DVC_REMOTE_ENDPOINT_URL") or saved.get("endpointurl")
    if endpoint and "://" not in endpoint:
        raise RemoteConfigError(
            f"DVC_REMOTE_ENDPOINT_URL={display_uri(endpoint)} is not a URL: set it like https://s3.example.org"
        )
    if endpoint and URL_USERINFO.search(endpoint):
        raise RemoteConfigError(
            "DVC_REMOTE_ENDPOINT_URL must not hold credentials (it goes into the committed .dvc/config): "
            "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead"
        )
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    source = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    if not key_id and not secret and (saved.get("access_key_id") or saved.get("secret_access_key")):
        key_id, secret = saved.get("access_key_id"), saved.get("secret_access_key")
        source = "the keys in .dvc/config.local"
    if bool(key_id) != bool(secret):
        raise RemoteConfigError(
            f"S3 credentials need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, but only one is set "
            f"({source}): set both in .env, or neither to use your AWS configuration (~/.aws)"
        )
    return {
        "endpoint_url": endpoint,
        "access_key_id": key_id,
        "secret_access_key": secret,
        "keys_source": source,
    }


# --- DVC's config -----------------------------------------------------------------------------------------


def _dvc(root: Path, *args: str, secrets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run this environment's `dvc` in `root`; errors show the command and its output with secrets masked."""
    try:
        return commands.dvc(*args, cwd=root, timeout=DVC_TIMEOUT_S, secrets=secrets)
    except commands.CommandError as exc:
        raise RemoteError(str(exc)) from None


def _dvc_checked(root: Path, *args: str, secrets: tuple[str, ...] = ()) -> None:
    done = _dvc(root, *args, secrets=secrets)
    if done.returncode != 0:
        shown = mask_credentials(" ".join(["dvc", *args]), secrets)
        output = mask_credentials((done.stderr or done.stdout).strip(), secrets)
        raise RemoteError(f"`{shown}` failed in {root}: {output}")


def dvc_config(root: Path) -> dict[str, str]:
    """DVC's merged config for `root` (`dvc config --list`), or {} when DVC cannot read it."""
    done = _dvc(root, "config", "--list")
    if done.returncode != 0:
        return {}
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def load_remote_settings(root: Path) -> RemoteSettings:
    """The remote from the environment and `<root>/.env`, completed by DVC's config of `root`."""
    return RemoteSettings.from_environment(root, configured=dvc_config(root))


def _local_config_is_ignored(root: Path) -> bool:
    """Whether git ignores .dvc/config.local (DVC's .dvc/.gitignore does); True outside git."""
    try:
        done = commands.git("check-ignore", "-q", ".dvc/config.local", cwd=root)
    except commands.CommandError:
        return True
    return done.returncode != 1  # 0: ignored; 128: not a git repository; 1: would be committed


def _write_local_config(
    root: Path, name: str, options: dict[str, str | None], secrets: tuple[str, ...]
) -> None:
    """Write remote `name`'s options (its credentials, this clone's URL) into `.dvc/config.local` through
    DVC's config API, in this process: as arguments of `dvc remote modify` credentials would be on a
    command line, which every user of the machine can read in the process list."""
    from dvc.config import Config, ConfigError

    try:
        config = Config(dvc_dir=str(root / ".dvc"))
        with config.edit("local") as local:
            local.setdefault("remote", {}).setdefault(name, {}).update(
                {key: str(value) for key, value in options.items() if value is not None}
            )
    except (ConfigError, OSError) as exc:
        raise RemoteError(
            f"cannot write the credentials of remote '{name}' to {root}/.dvc/config.local: "
            f"{mask_credentials(str(exc), secrets)}"
        ) from None


def configure_remote(root: Path, settings: RemoteSettings) -> list[str]:
    """Make `settings` DVC's default remote in `root`: the URL (and an S3 endpoint) in `.dvc/config`,
    credentials only in `.dvc/config.local`, replacing whatever that file held for the remote.

    Returns lines saying what was written, without secrets."""
    if not (root / ".dvc").is_dir():
        raise RemoteConfigError(f"{root} is not a DVC repository (no .dvc/): run this in the repository")
    if not _local_config_is_ignored(root):
        raise RemoteConfigError(
            f"{root}/.dvc/config.local is not ignored by git, so credentials written there could be "
            "committed: restore DVC's .dvc/.gitignore (`git checkout -- .dvc/.gitignore`) and run this again"
        )
    name, secrets = settings.name, settings.secrets
    local_url = None  # this clone's own URL for the remote (`dvc remote modify --local <name> url ...`)
    if settings.url_source.startswith("DVC's config") and (root / ".dvc" / "config.local").is_file():
        found = _dvc(root, "config", "--local", f"remote.{name}.url")
        local_url = found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None
    if (root / ".dvc" / "config.local").is_file():
        done = _dvc(root, "remote", "remove", "--local", name)
        if done.returncode != 0 and "doesn't exist" not in done.stderr:
            raise RemoteError(
                f"`dvc remote remove --local {name}` failed: {mask_credentials(done.stderr.strip(), secrets)}"
            )
    lines = [f"DVC remote '{name}' (default) -> {settings.display_url}  [.dvc/config]"]
    if settings.kind == "local":
        folder = settings.local_path(root)
        if not folder.exists():
            try:
                folder.mkdir(parents=True)
            except OSError as exc:
                raise RemoteUnreachableError(
                    f"cannot create the DVC remote folder {folder} ({exc.strerror}): fix DVC_REMOTE_URL"
                ) from None
            lines.append(f"created the remote folder {folder}")
    committed = _dvc(root, "config", "--project", f"remote.{name}.url")
    if (
        settings.url_source.startswith("DVC's config")
        and committed.returncode == 0
        and committed.stdout.strip()
    ):
        # a clone's committed remote: kept as written (DVC's merged config shows a folder made absolute)
        _dvc_checked(root, "remote", "default", name)
        lines[0] += " (the committed URL, kept)"
    else:
        _dvc_checked(root, "remote", "add", "--force", "-d", name, settings.url)
    if local_url is not None:  # removed with the section: written back, or pushes go to the committed URL
        _write_local_config(root, name, {"url": local_url}, secrets)
        shown = display_uri(local_url)
        lines[0] = f"DVC remote '{name}' (default) -> {shown}  [.dvc/config.local: this clone's URL, kept]"
    if settings.kind == "http" and settings.user:
        _write_local_config(
            root, name, {"auth": "basic", "user": settings.user, "password": settings.password}, secrets
        )
        lines.append(
            f"credentials: HTTP basic auth, user '{settings.user}' (from {settings.user_source}), password "
            f"from {settings.password_source}  [.dvc/config.local, git-ignored]"
        )
    elif settings.kind == "http":
        lines.append("credentials: none (set DVC_REMOTE_USER / DVC_REMOTE_PASSWORD if the server needs them)")
    if settings.kind == "s3":
        if settings.endpoint_url:
            _dvc_checked(root, "remote", "modify", name, "endpointurl", settings.endpoint_url)
            lines.append(f"S3 endpoint {display_uri(settings.endpoint_url)}  [.dvc/config]")
        if settings.access_key_id:
            keys = {"access_key_id": settings.access_key_id, "secret_access_key": settings.secret_access_key}
            _write_local_config(root, name, keys, secrets)
            lines.append(f"credentials: S3 keys from {settings.keys_source}  [{LOCAL_CONFIG}, git-ignored]")
        else:
            lines.append("credentials: none written; DVC uses your AWS configuration (~/.aws, AWS_* vars)")
    return lines


REMOTE_SECTION = re.compile(r"""^\s*\[\s*'?\s*remote\s+"([^"]+)"\s*'?\s*\]""")  # its name: group 1


def remote_names(config: str) -> set[str]:
    """The remotes a DVC config file's text defines (`['remote "origin"']` sections)."""
    return {match.group(1) for line in config.splitlines() if (match := REMOTE_SECTION.match(line))}
