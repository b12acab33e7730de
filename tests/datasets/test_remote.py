"""The DVC remote: settings from `.env`, `mnist-lab remote setup/check`, and real `dvc push/pull --run-cache`
against a local folder, an S3-compatible server (moto) and a basic-auth HTTP server (as DagsHub's `.dvc`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml

from mnist_lab.datasets.remote import (
    RemoteAuthError,
    RemoteConfigError,
    RemoteSettings,
    RemoteUnreachableError,
)
from mnist_lab.datasets.remote_check import check_remote
from mnist_lab.system.redact import mask_credentials
from tests.helpers import copy_repository, free_port, run
from tests.servers import basic_auth_http_server, moto_s3_server

# Variables of the machine running the tests that would change what the commands under test see.
FOREIGN = ("DVC_REMOTE_", "AWS_", "DAGSHUB_", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
# What a clone of the project restores with `dvc pull`: data, pipeline outputs, models, reports.
RESTORED = ("data", "outputs", "models", "reports")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(FOREIGN):
            monkeypatch.delenv(name)


def settings_from(env: dict[str, str], configured: dict[str, str] | None = None) -> RemoteSettings:
    return RemoteSettings.from_environment(Path("/repo"), environ=env, configured=configured)


def canary() -> str:
    """A password no file or output may ever show."""
    return f"canary-{uuid.uuid4().hex}"


# --- settings: pure, fast -----------------------------------------------------------------------------------


def test_a_local_folder_remote() -> None:
    settings = settings_from({"DVC_REMOTE_URL": "../dvc-store"})
    assert (settings.kind, settings.url, settings.name) == ("local", "../dvc-store", "origin")
    assert settings.secrets == ()
    assert settings.local_path(Path("/work/repo")) == Path("/work/dvc-store")


def test_an_s3_compatible_remote_takes_the_endpoint_and_aws_keys() -> None:
    settings = settings_from(
        {
            "DVC_REMOTE_URL": "s3://bucket/mnist",
            "DVC_REMOTE_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_ACCESS_KEY_ID": "key-id",
            "AWS_SECRET_ACCESS_KEY": "the-secret",
        }
    )
    assert (settings.kind, settings.endpoint_url, settings.access_key_id) == (
        "s3",
        "http://127.0.0.1:9000",
        "key-id",
    )
    assert settings.secrets == ("the-secret",)
    assert "the-secret" not in repr(settings)


def test_dagshub_repo_builds_the_dvc_url_and_reuses_the_mlflow_credentials() -> None:
    settings = settings_from(
        {
            "DAGSHUB_REPO": "alice/mnist-lab",
            "MLFLOW_TRACKING_USERNAME": "alice",
            "MLFLOW_TRACKING_PASSWORD": "token-1",
        }
    )
    assert settings.url == "https://dagshub.com/alice/mnist-lab.dvc" and settings.kind == "http"
    assert (settings.user, settings.password) == ("alice", "token-1")
    assert (settings.user_source, settings.password_source) == (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    )
    assert "token-1" not in repr(settings)


def test_dvc_remote_variables_win_and_mlflow_credentials_stay_off_other_hosts() -> None:
    both = {
        "DAGSHUB_REPO": "alice/mnist-lab",
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-token",
        "DVC_REMOTE_USER": "bob",
        "DVC_REMOTE_PASSWORD": "dvc-token",
    }
    assert (settings_from(both).user, settings_from(both).password) == ("bob", "dvc-token")
    elsewhere = settings_from({**both, "DVC_REMOTE_URL": "https://storage.example.org/dvc"})
    assert elsewhere.url == "https://storage.example.org/dvc"
    own_server = settings_from(
        {
            "DVC_REMOTE_URL": "https://storage.example.org/dvc",
            "MLFLOW_TRACKING_USERNAME": "alice",
            "MLFLOW_TRACKING_PASSWORD": "mlflow-token",
        }
    )
    assert own_server.user is None and own_server.password is None


def test_credentials_in_the_url_move_out_of_it() -> None:
    settings = settings_from({"DVC_REMOTE_URL": "https://bob:p%40ss@storage.example.org:8443/dvc"})
    assert settings.url == "https://storage.example.org:8443/dvc"
    assert (settings.user, settings.password) == ("bob", "p@ss")


def test_a_clone_needs_only_credentials_the_url_comes_from_dvc_config() -> None:
    configured = {
        "core.remote": "storage",
        "remote.storage.url": "https://storage.example.org/dvc",
        "remote.storage.user": "saved-user",
        "remote.storage.password": "saved-password",
    }
    settings = settings_from({"DVC_REMOTE_PASSWORD": "new-password", "DVC_REMOTE_USER": "bob"}, configured)
    assert (settings.name, settings.url, settings.user, settings.password) == (
        "storage",
        "https://storage.example.org/dvc",
        "bob",
        "new-password",
    )
    assert settings.url_source == "DVC's config (remote 'storage')"
    saved = settings_from({}, configured)
    assert (saved.user, saved.password_source) == ("saved-user", ".dvc/config.local")
    # another remote named in .env: the saved credentials belong to the old one and are not used
    other = settings_from({"DVC_REMOTE_URL": "https://other.example.org/dvc"}, configured)
    assert (other.name, other.user, other.password) == ("origin", None, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no DVC remote is named: set DVC_REMOTE_URL"),
        ({"DAGSHUB_REPO": "just-a-name"}, "DAGSHUB_REPO='just-a-name' is not <owner>/<repo>"),
        ({"DVC_REMOTE_URL": "gs://bucket/x"}, "scheme 'gs' is not supported here"),
        ({"DVC_REMOTE_URL": "127.0.0.1:8080/store"}, "looks like a server's address without its scheme"),
        ({"DVC_REMOTE_URL": "https://h.example/dvc", "DVC_REMOTE_USER": "bob"}, "the password is not set"),
        ({"DVC_REMOTE_URL": "s3://b/p", "DVC_REMOTE_USER": "bob"}, "set AWS_ACCESS_KEY_ID / AWS_SECRET"),
        ({"DVC_REMOTE_URL": "s3://b/p", "AWS_ACCESS_KEY_ID": "k"}, "need both AWS_ACCESS_KEY_ID and"),
        ({"DVC_REMOTE_URL": "s3://key:secret@b/p"}, "must not hold credentials"),
        ({"DVC_REMOTE_URL": "/srv/dvc", "DVC_REMOTE_ENDPOINT_URL": "http://x"}, "is for s3:// remotes"),
    ],
)
def test_contradictory_settings_name_the_variable_and_the_fix(env: dict, message: str) -> None:
    with pytest.raises(RemoteConfigError, match=message) as raised:
        settings_from(env)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("password", ["pa/ss", "pa#ss", "pa?ss", "p@ss/word"])
def test_a_password_with_an_unencoded_slash_never_reaches_dvc_config(password: str) -> None:
    """urllib ends a URL's host part at "/", "?" or "#": `https://jane:pa/ss@host/...` read as host `jane`,
    no credentials, and the whole URL, password and all, was kept for the committed .dvc/config (and shown
    in messages)."""
    url = f"https://jane:{password}@dagshub.com/jane/mnist.dvc"
    with pytest.raises(RemoteConfigError) as raised:
        settings_from({"DVC_REMOTE_URL": url})
    said = str(raised.value)
    assert "percent-encode them (%2F, %3F, %23)" in said and "DVC_REMOTE_USER and DVC_REMOTE_PASSWORD" in said
    assert password not in said and password[1:] not in said and password[2:] not in said
    encoded = url.replace(password, urllib.parse.quote(password, safe=""))
    settings = settings_from({"DVC_REMOTE_URL": encoded})
    assert (settings.url, settings.user, settings.password) == (
        "https://dagshub.com/jane/mnist.dvc",
        "jane",
        password,
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [("http://127.0.0.1:80a/store", "Port could not be cast"), ("https://[::1/store", "Invalid IPv6 URL")],
)
def test_a_url_urllib_cannot_read_is_a_settings_error(url: str, problem: str) -> None:
    with pytest.raises(RemoteConfigError, match=rf"DVC_REMOTE_URL: .* is not a valid URL \({problem}"):
        settings_from({"DVC_REMOTE_URL": url})


def test_messages_never_show_credentials() -> None:
    assert mask_credentials("GET https://bob:tok@host/x failed; see s3://k:s@b", ("tok",)) == (
        "GET https://host/x failed; see s3://b"
    )
    # a password with an unencoded "/" (urllib reads no credentials in it) is masked all the same
    assert mask_credentials("cannot reach https://jane:pa/ss@dagshub.com/x, nor http://h:1/a") == (
        "cannot reach https://dagshub.com/x, nor http://h:1/a"
    )
    assert mask_credentials("at https://jane:p@ss/word@dagshub.com/x") == "at https://dagshub.com/x"
    assert mask_credentials("password tok-1 and tok-12", ("tok-1", "tok-12")) == "password *** and ***"


def test_a_missing_local_folder_is_reported_with_the_fix(tmp_path: Path) -> None:
    settings = settings_from({"DVC_REMOTE_URL": str(tmp_path / "nowhere")})
    with pytest.raises(RemoteUnreachableError, match="does not exist: for a new remote create it"):
        check_remote(settings, tmp_path)
    # the committed URL, relative to the clone that set it up: in another clone, no `mkdir` (an empty
    # remote) but this clone's own URL for the store
    committed = settings_from({}, {"core.remote": "origin", "remote.origin.url": "../../mnist-dvc-store"})
    with pytest.raises(RemoteUnreachableError) as relative:
        check_remote(committed, tmp_path)
    assert "the committed relative URL ../../mnist-dvc-store, resolved from this clone" in str(relative.value)
    assert "`dvc remote modify --local origin url /path/to/store`" in str(relative.value)
    assert "mkdir" not in str(relative.value)
    (tmp_path / "nowhere").mkdir()
    assert "exists and is writable" in check_remote(settings, tmp_path)


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_credentials_are_never_on_a_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Arguments of a process are visible to every user of the machine (`ps`): the secrets go into
    .dvc/config.local through DVC's config API, in this process."""
    import subprocess

    from mnist_lab.datasets.remote import configure_remote

    run(["git", "init", "-q", str(tmp_path)], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    secret = canary()
    http = {
        "DVC_REMOTE_URL": "https://dvc.example/store",
        "DVC_REMOTE_USER": "u",
        "DVC_REMOTE_PASSWORD": secret,
    }
    s3 = {
        "DVC_REMOTE_URL": "s3://bucket/store",
        "AWS_ACCESS_KEY_ID": "AKIA1",
        "AWS_SECRET_ACCESS_KEY": secret,
    }
    env = http if kind == "http" else s3
    command_lines: list[str] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def recording_run(args, *rest, **kwargs):
        command_lines.append(" ".join(map(str, args)))
        return real_run(args, *rest, **kwargs)

    class RecordingPopen(real_popen):
        def __init__(self, args, *rest, **kwargs):
            command_lines.append(" ".join(map(str, args)) if not isinstance(args, str) else args)
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    configure_remote(tmp_path, RemoteSettings.from_environment(tmp_path, environ=env, configured={}))
    monkeypatch.undo()
    assert any("remote add" in line for line in command_lines)  # the recorder saw DVC's commands
    assert not [line for line in command_lines if secret in line]
    local = (tmp_path / ".dvc" / "config.local").read_text()
    assert local.count(secret) == 1 and secret not in (tmp_path / ".dvc" / "config").read_text()
    assert run(["dvc", "config", "--list"], tmp_path).stdout.count(secret) == 1  # DVC reads it back


def test_a_failed_setup_leaves_the_working_remote_as_it_was(tmp_path: Path) -> None:
    """A wrong URL or password in .env must not replace a remote that worked: `remote setup` checks the
    new settings and, when the check fails, puts .dvc/config and .dvc/config.local back byte for byte."""
    from mnist_lab.datasets.remote_check import setup_remote

    run(["git", "init", "-q", str(tmp_path)], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    config, local = tmp_path / ".dvc" / "config", tmp_path / ".dvc" / "config.local"
    first_time = settings_from({"DVC_REMOTE_URL": f"http://127.0.0.1:{free_port()}/store"})
    before = config.read_bytes()
    with pytest.raises(RemoteUnreachableError, match=r"as they were: nothing was written; .*--no-check"):
        setup_remote(tmp_path, first_time)
    assert config.read_bytes() == before and not local.exists()

    working = {
        "DVC_REMOTE_URL": "https://dvc.example/store",
        "DVC_REMOTE_USER": "u",
        "DVC_REMOTE_PASSWORD": "p1",
    }
    written, checked = setup_remote(tmp_path, settings_from(working), check=False)
    assert checked is None and "https://dvc.example/store" in written[0]
    kept = config.read_bytes(), local.read_bytes()
    assert b"password = p1" in kept[1]
    typo = {**working, "DVC_REMOTE_URL": f"http://127.0.0.1:{free_port()}/store", "DVC_REMOTE_PASSWORD": "p2"}
    with pytest.raises(RemoteUnreachableError):
        setup_remote(tmp_path, settings_from(typo))
    assert (config.read_bytes(), local.read_bytes()) == kept
    # what stops before the check is said as it is: --no-check would not help there
    (tmp_path / ".dvc" / ".gitignore").unlink()
    with pytest.raises(RemoteConfigError) as unsafe:
        setup_remote(tmp_path, settings_from(working), check=False)
    assert "is not ignored by git" in str(unsafe.value) and "--no-check" not in str(unsafe.value)
    assert (config.read_bytes(), local.read_bytes()) == kept


# --- helpers for the real-DVC tests -------------------------------------------------------------------------


class Commands:
    """Runs commands and keeps everything they printed, to look for secrets afterwards."""

    def __init__(self) -> None:
        self.output: list[str] = []

    def __call__(self, command: list[str], cwd: Path, check: bool = True, env: dict | None = None):
        done = run(command, cwd, env=env, check=check)
        self.output.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
        return done

    def text(self) -> str:
        return "\n".join(self.output)


def write_env(root: Path, values: dict[str, str]) -> None:
    (root / ".env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def digests(root: Path) -> dict[str, str]:
    """md5 of every file under the folders a pull restores."""
    return {
        str(path.relative_to(root)): hashlib.md5(path.read_bytes()).hexdigest()
        for folder in RESTORED
        if (root / folder).is_dir()
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def run_cache_entries(root: Path) -> set[str]:
    runs = root / ".dvc" / "cache" / "runs"
    return {str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file()} if runs.is_dir() else set()


def assert_no_secret_leaked(roots: list[Path], commands: Commands, secrets: list[str]) -> None:
    """No secret in any git-tracked file, in the history, or in anything a command printed."""
    for root in roots:
        tracked = run(["git", "ls-files", "-z"], root).stdout.split("\0")
        history = run(["git", "log", "-p", "--all"], root).stdout
        for secret in secrets:
            assert secret not in history, f"{secret[:10]}… is in the git history of {root}"
            for relative in filter(None, tracked):
                path = root / relative
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), f"{secret[:10]}… is in {relative}"
        assert run(["git", "check-ignore", "-q", ".dvc/config.local"], root, check=False).returncode == 0
    for secret in secrets:
        assert secret not in commands.text(), f"{secret[:10]}… was printed"


def commit(root: Path, message: str, *paths: str) -> None:
    run(["git", "add", *paths], root)
    run([*GIT, "commit", "-qm", message], root)


def clone(source: Path, destination: Path) -> Path:
    run(["git", "clone", "-q", str(source), str(destination)], source.parent)
    return destination


# --- a local folder: the default suite ----------------------------------------------------------------------


def test_local_folder_remote_setup_push_and_restore_in_a_fresh_clone(tmp_path: Path) -> None:
    commands = Commands()
    author = copy_repository(tmp_path / "author")
    commands(["mnist-lab", "data", "restore"], author)
    write_env(author, {"DVC_REMOTE_URL": "../dvc-store"})
    setup = commands(["mnist-lab", "remote", "setup"], author)
    assert "DVC remote 'origin' (default) -> ../dvc-store" in setup.stdout
    assert "created the remote folder" in setup.stdout and "commit the remote's URL" in setup.stdout
    config = (author / ".dvc" / "config").read_text()
    # relative to .dvc/, so a clone beside the author finds it too
    assert "remote = origin" in config and "url = ../../dvc-store" in config
    commit(author, "DVC remote", ".dvc/config")
    # regenerated data is not in the DVC cache until something commits it (`dvc repro` does)
    commands(["dvc", "commit", "--force", "data.dvc"], author)
    assert "files pushed" in commands(["dvc", "push", "data.dvc"], author).stdout

    fresh = clone(author, tmp_path / "clone")
    assert "remote folder" in commands(["mnist-lab", "remote", "check"], fresh).stdout
    # set up again in the clone (no DVC_REMOTE_URL: the committed remote): its URL stays as committed,
    # relative, not the absolute folder DVC's merged config shows
    again = commands(["mnist-lab", "remote", "setup"], fresh)
    assert "(the committed URL, kept)" in again.stdout and "commit the remote's URL" not in again.stdout
    assert run(["git", "status", "--porcelain", ".dvc"], fresh).stdout == ""
    restored = commands(["mnist-lab", "data", "restore"], fresh)
    assert "data/ pulled from DVC remote 'origin'" in restored.stdout
    data = {path: md5 for path, md5 in digests(fresh).items() if path.startswith("data/")}
    assert len(data) == 4 and data == {p: m for p, m in digests(author).items() if p.startswith("data/")}
    assert not (fresh / ".dvc" / "config.local").exists()
    # the store moved: `remote check` says to give this clone its own URL; a setup after that keeps it
    # (it removed .dvc/config.local's section, and a push went to a new folder at the committed URL)
    moved = tmp_path / "moved-store"
    (tmp_path / "dvc-store").rename(moved)
    advice = commands(["mnist-lab", "remote", "check"], fresh, check=False).stderr
    assert "`dvc remote modify --local origin url /path/to/store`" in advice and "mkdir" not in advice
    commands(["dvc", "remote", "modify", "--local", "origin", "url", str(moved)], fresh)
    kept = commands(["mnist-lab", "remote", "setup"], fresh)
    assert f"-> {moved}  [.dvc/config.local: this clone's URL, kept]" in kept.stdout
    assert commands(["dvc", "config", "remote.origin.url"], fresh).stdout.strip() == str(moved)
    assert run(["git", "status", "--porcelain", ".dvc"], fresh).stdout == ""
    commands(["dvc", "push", "data.dvc"], fresh)
    assert not (tmp_path / "dvc-store").exists()  # nothing went to the committed URL's folder


# --- the whole project, against each kind of remote (slow: servers, a pipeline run) -------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository with one small model, data restored, `dvc repro` run and committed: what
    an author has before pushing. Tests copy it (cache included) rather than rerun the pipeline."""
    base = tmp_path_factory.mktemp("project")
    root = copy_repository(base / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"] = {"sgd": params["models"]["sgd"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "remote"}
    run(["mnist-lab", "data", "restore"], root, env)
    run(["dvc", "repro"], root, env)
    commit(root, "one model", "-A")
    assert run_cache_entries(root), "dvc repro left no run-cache entry"
    return root


def author_copy(project: Path, destination: Path) -> Path:
    def dvc_tmp(folder: str, names: list[str]) -> list[str]:  # DVC's state and locks stay behind
        return ["tmp"] if Path(folder).name == ".dvc" else []

    shutil.copytree(project, destination, symlinks=True, ignore=dvc_tmp)
    return destination


def round_trip(
    project: Path,
    tmp_path: Path,
    author_env: dict[str, str],
    clone_env: dict[str, str],
    secrets: list[str],
    run_cache_travels: bool,
) -> tuple[Path, Path, Commands]:
    """Author: `remote setup` from .env, commit .dvc/config, `dvc push --run-cache`. Fresh clone: `remote
    setup` from its own .env, `dvc pull --run-cache`: all restored byte for byte, `dvc repro` a no-op."""
    commands = Commands()
    author = author_copy(project, tmp_path / "author")
    write_env(author, author_env)
    commands(["mnist-lab", "remote", "setup"], author)
    commit(author, "DVC remote", ".dvc/config")
    pushed = commands(["dvc", "push", "--run-cache"], author)
    assert "files pushed" in pushed.stdout

    fresh = clone(author, tmp_path / "clone")
    write_env(fresh, clone_env)
    checked = commands(["mnist-lab", "remote", "setup"], fresh)
    assert "checked:" in checked.stdout
    commands(["dvc", "pull", "--run-cache"], fresh)
    assert digests(fresh) == digests(author)
    assert {"data/train-images-idx3-ubyte.gz", "outputs/features.npz"} <= set(digests(fresh))
    assert any(path.startswith("models/sgd/") for path in digests(fresh))
    repro = commands(["dvc", "repro"], fresh)
    assert "Data and pipelines are up to date." in repro.stdout and "Running stage" not in repro.stdout

    if run_cache_travels:
        assert run_cache_entries(fresh) == run_cache_entries(author)
        # Without dvc.lock, DVC can only know `prepare` ran before from the run-cache it pulled.
        (fresh / "dvc.lock").unlink()
        served = commands(["dvc", "repro", "prepare"], fresh)
        assert "Stage 'prepare' is cached - skipping run, checking out outputs" in served.stdout
        run(["git", "checkout", "--", "dvc.lock"], fresh)
    assert "Cache and remote 'origin' are in sync" in commands(["dvc", "status", "--cloud"], fresh).stdout
    assert_no_secret_leaked([author, fresh], commands, secrets)
    return author, fresh, commands


@pytest.mark.slow
def test_local_folder_remote_round_trip_with_run_cache(project: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    round_trip(project, tmp_path, {"DVC_REMOTE_URL": str(store)}, {}, [], run_cache_travels=True)
    assert (store / "runs").is_dir() and (store / "files" / "md5").is_dir()


@pytest.mark.slow
def test_s3_compatible_remote_round_trip_with_run_cache(project: Path, tmp_path: Path) -> None:
    with moto_s3_server() as s3:
        keys = {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}
        author, fresh, _ = round_trip(
            project,
            tmp_path,
            {"DVC_REMOTE_URL": f"s3://{s3.bucket}/mnist", "DVC_REMOTE_ENDPOINT_URL": s3.endpoint_url, **keys},
            keys,  # the clone gets the URL and the endpoint from the committed .dvc/config
            [s3.secret_access_key],
            run_cache_travels=True,
        )
    config = (author / ".dvc" / "config").read_text()
    assert f"url = s3://{s3.bucket}/mnist" in config and f"endpointurl = {s3.endpoint_url}" in config
    assert s3.access_key_id not in config
    assert s3.secret_access_key in (fresh / ".dvc" / "config.local").read_text()


@pytest.mark.slow
def test_http_basic_auth_remote_round_trip(project: Path, tmp_path: Path) -> None:
    password = canary()
    with basic_auth_http_server(tmp_path / "http-store", "alice", password) as server:
        credentials = {"DVC_REMOTE_USER": "alice", "DVC_REMOTE_PASSWORD": password}
        author, fresh, commands = round_trip(
            project,
            tmp_path,
            {"DVC_REMOTE_URL": server.url, **credentials},
            credentials,  # as a DagsHub collaborator: the URL is committed, the token is theirs
            [password],
            # DVC skips the run-cache for http remotes (only a debug log line says so)
            run_cache_travels=False,
        )
    assert server.requests[("POST", 200)] > 0 and not server.requests[("PUT", 200)]  # DVC uploads by POST
    assert not (server.root / "runs").exists() and not run_cache_entries(fresh)
    assert "user 'alice' (from DVC_REMOTE_USER)" in commands.text()
    assert f"url = {server.url}" in (author / ".dvc" / "config").read_text()
    local = (author / ".dvc" / "config.local").read_text()
    assert "auth = basic" in local and f"password = {password}" in local


@pytest.mark.slow
def test_wrong_http_password_fails_clearly_everywhere(project: Path, tmp_path: Path) -> None:
    right, wrong = canary(), canary()
    commands = Commands()
    with basic_auth_http_server(tmp_path / "http-store", "alice", right) as server:
        author = author_copy(project, tmp_path / "author")
        credentials = {"DVC_REMOTE_USER": "alice", "DVC_REMOTE_PASSWORD": wrong}
        write_env(author, {"DVC_REMOTE_URL": server.url, **credentials})
        before = (author / ".dvc" / "config").read_bytes()
        setup = commands(["mnist-lab", "remote", "setup"], author, check=False)
        assert setup.returncode == 2
        assert (
            f"error: DVC remote 'origin' at {server.url} refused the credentials (HTTP 401 Unauthorized): "
            "check DVC_REMOTE_USER / DVC_REMOTE_PASSWORD in .env, then run `mnist-lab remote setup` again"
        ) in setup.stderr
        # a refused check writes nothing; --no-check writes the settings as they are
        assert (author / ".dvc" / "config").read_bytes() == before
        assert not (author / ".dvc" / "config.local").exists()
        unchecked = commands(["mnist-lab", "remote", "setup", "--no-check"], author)
        assert "not checked (--no-check)" in unchecked.stdout
        assert commands(["mnist-lab", "remote", "check"], author, check=False).returncode == 2
        pushed = commands(["dvc", "push"], author, check=False)
        assert pushed.returncode != 0 and "401" in pushed.stderr

        commit(author, "DVC remote", ".dvc/config")
        fresh = clone(author, tmp_path / "clone")
        write_env(fresh, credentials)
        assert commands(["mnist-lab", "remote", "setup"], fresh, check=False).returncode == 2
        restored = commands(["mnist-lab", "data", "restore"], fresh)  # the bundled default regenerates
        # DVC itself says only that files are missing (its existence checks got 401): restore asks the server
        assert (
            f"dvc pull failed, trying to regenerate: DVC remote 'origin' at {server.url} refused the "
            "credentials (HTTP 401 Unauthorized): check DVC_REMOTE_USER / DVC_REMOTE_PASSWORD"
        ) in restored.stderr
        assert "regenerated from scikit-learn's bundled digits" in restored.stdout

        no_password = tmp_path / "anonymous"
        author_copy(project, no_password)
        write_env(no_password, {"DVC_REMOTE_URL": server.url})
        anonymous = commands(["mnist-lab", "remote", "setup"], no_password, check=False)
        assert anonymous.returncode == 2
        assert "the server wants credentials and none are set: set DVC_REMOTE_USER" in anonymous.stderr
    assert_no_secret_leaked([author, fresh], commands, [right, wrong])


@pytest.mark.slow
def test_dagshub_style_fallback_credentials_are_named_when_refused(tmp_path: Path) -> None:
    with basic_auth_http_server(tmp_path / "store", "alice", canary()) as server:
        settings = RemoteSettings(
            url=server.url,
            url_source="DAGSHUB_REPO",
            user="alice",
            user_source="MLFLOW_TRACKING_USERNAME",
            password="stale-token",
            password_source="MLFLOW_TRACKING_PASSWORD",
        )
        with pytest.raises(RemoteAuthError) as raised:
            check_remote(settings, tmp_path)
        assert "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (used because DVC_REMOTE_USER" in (
            str(raised.value)
        )
        assert "stale-token" not in str(raised.value)
        ok = RemoteSettings(server.url, "DVC_REMOTE_URL", user="alice", password=server.password)
        assert "user 'alice' accepted" in check_remote(ok, tmp_path)


@pytest.mark.slow
def test_wrong_s3_keys_fail_clearly(project: Path, tmp_path: Path) -> None:
    commands = Commands()
    wrong = canary()
    with moto_s3_server() as s3:
        author = author_copy(project, tmp_path / "author")
        write_env(
            author,
            {
                "DVC_REMOTE_URL": f"s3://{s3.bucket}/mnist",
                "DVC_REMOTE_ENDPOINT_URL": s3.endpoint_url,
                "AWS_ACCESS_KEY_ID": s3.access_key_id,
                "AWS_SECRET_ACCESS_KEY": wrong,
            },
        )
        setup = commands(["mnist-lab", "remote", "setup"], author, check=False)
        assert setup.returncode == 2
        assert (
            f"error: DVC remote 'origin' bucket '{s3.bucket}' at {s3.endpoint_url} refused the credentials "
            "(HTTP 403"
        ) in setup.stderr
        assert "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in .env" in setup.stderr
        commands(["mnist-lab", "remote", "setup", "--no-check"], author)
        pushed = commands(["dvc", "push"], author, check=False)
        assert pushed.returncode != 0 and "(403)" in pushed.stderr and "Forbidden" in pushed.stderr

        write_env(author, {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN0000000000", "AWS_SECRET_ACCESS_KEY": wrong})
        unknown = commands(["mnist-lab", "remote", "check"], author, check=False)
        assert unknown.returncode == 2 and "refused the credentials" in unknown.stderr

        missing = settings_from(
            {"DVC_REMOTE_URL": "s3://no-such-bucket/x", "DVC_REMOTE_ENDPOINT_URL": s3.endpoint_url}
            | {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}
        )
        with pytest.raises(RemoteUnreachableError, match="bucket 'no-such-bucket' .* does not exist"):
            check_remote(missing, tmp_path)
    assert_no_secret_leaked([author], commands, [wrong, s3.secret_access_key])


def test_the_http_check_sends_the_credentials_as_dvc_does(tmp_path: Path) -> None:
    """DVC's HTTP remotes send basic auth through aiohttp, in latin-1; the check sent UTF-8, so a password
    with an accent passed the check and failed `dvc push`, and one latin-1 cannot hold passed too."""
    import aiohttp

    from tests.servers import recording_server

    def ok(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with recording_server(ok) as (port, seen):
        url = f"http://127.0.0.1:{port}/store"
        accented = settings_from(
            {"DVC_REMOTE_URL": url, "DVC_REMOTE_USER": "jane", "DVC_REMOTE_PASSWORD": "pässwörd"}
        )
        assert "accepted" in check_remote(accented, tmp_path)
        assert [request["authorization"] for request in seen] == [
            aiohttp.BasicAuth("jane", "pässwörd").encode()
        ]
        euro = settings_from(
            {"DVC_REMOTE_URL": url, "DVC_REMOTE_USER": "jane", "DVC_REMOTE_PASSWORD": "pa€ss"}
        )
        with pytest.raises(RemoteConfigError, match="DVC sends HTTP credentials in latin-1") as refused:
            check_remote(euro, tmp_path)
        assert "pa€ss" not in str(refused.value)
