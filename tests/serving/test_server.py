"""Where `mnist-lab serve` keeps the model it downloads (it replaces itself with the server, so it cannot
clean up after it: every start left a copy of the model in the temporary folder)."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mnist_lab.serving.server import (
    KEEP_DAYS,
    KEEP_NEWEST,
    STAGING_DAYS,
    local_model_dir,
    prune_serve_cache,
    pyfunc_dir,
    serve_cache,
)


def _repository(folder: Path) -> Path:
    """`folder` made a repository as mnist_lab.system.workspace finds one (a dvc.yaml)."""
    folder.mkdir()
    (folder / "dvc.yaml").touch()
    return folder


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return _repository(tmp_path / "repo")


@pytest.fixture
def model_uri(tmp_path: Path) -> str:
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 4)).astype(np.float64)
    model = LogisticRegression().fit(pixels, np.arange(20) % 2)
    store = _repository(tmp_path / "store")
    return (pyfunc_dir(store, "m", model)).as_uri()  # file://... : downloaded like a store's model


def test_a_downloaded_model_is_kept_once_in_the_repository_and_nothing_in_tmp(
    model_uri: str, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    first = Path(local_model_dir(repo, model_uri))
    second = Path(local_model_dir(repo, model_uri))
    assert first == second
    assert first.parent == repo / ".mnist-lab" / "serve"
    assert (first / "MLmodel").is_file()
    assert list(scratch.iterdir()) == []
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging folder left behind
    # chosen again a month later: marked as used at once (another start pruning meanwhile keeps it)
    os.utime(first, (time.time() - 30 * 86400,) * 2)
    assert Path(local_model_dir(repo, model_uri)) == first and time.time() - first.stat().st_mtime < 60


def test_outside_a_repository_models_go_to_the_users_cache(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert serve_cache(tmp_path / "batch") == tmp_path / "cache" / "mnist-lab" / "serve"
    assert serve_cache(repo) == repo / ".mnist-lab" / "serve"


def test_two_starts_at_once_keep_the_first_copy_and_a_broken_one_is_replaced(
    model_uri: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    target = Path(local_model_dir(repo, model_uri))
    shutil.rmtree(target)
    target.mkdir()
    (target / "half").write_text("a copy cut short by hand")  # no MLmodel: replaced
    assert Path(local_model_dir(repo, model_uri)) == target and (target / "MLmodel").is_file()
    assert not (target / "half").exists()

    shutil.rmtree(target)
    renamed = Path.rename
    served: list[int] = []

    def another_start_first(self: Path, destination: Path) -> Path:
        if Path(destination) == target and not target.exists():  # the other start renames its copy first
            shutil.copytree(self, target)
            served.append(target.stat().st_ino)
        return renamed(self, destination)

    monkeypatch.setattr(Path, "rename", another_start_first)
    assert Path(local_model_dir(repo, model_uri)) == target
    assert served == [target.stat().st_ino]  # the folder the other start serves was left in place
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_serve_model_is_downloaded_once_checked_and_a_missing_one_named(
    model_uri: str, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --model URI` loaded the model from the store to check it (a download to a temporary folder)
    and then downloaded it again to serve it: now once, checked from the copy it serves."""
    import mlflow.artifacts
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    from mnist_lab.serving.registry import RegistryError
    from mnist_lab.serving.server import serve_command

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    downloads: list[str] = []
    download = mlflow.artifacts._download_artifact_from_uri  # what every load and download runs

    def counted(*args, **kwargs):
        downloads.append(str(kwargs.get("artifact_uri") or args[0]))
        return download(*args, **kwargs)

    for module in (mlflow.artifacts, mlflow.pyfunc):
        monkeypatch.setattr(module, "_download_artifact_from_uri", counted)
    stale = [serve_cache(repo) / f"download-{n}" for n in range(KEEP_NEWEST)]  # served a month ago
    for folder in stale:
        folder.mkdir(parents=True)
        os.utime(folder, (time.time() - 30 * 86400,) * 2)
    _, env, described = serve_command(repo, model_uri, False, "127.0.0.1", 5000, 1)
    assert downloads.count(model_uri) == 1 and described == model_uri
    served = Path(env[scoring_server._SERVER_MODEL_PATH])
    assert served.parent == repo / ".mnist-lab" / "serve"
    assert sorted(serve_cache(repo).iterdir()) == sorted([served, *stale[1:]])  # the cache was pruned
    missing = (tmp_path / "no-such-model").as_uri()
    with pytest.raises(RegistryError, match=f"cannot load model '{missing}'"):
        serve_command(repo, missing, False, "127.0.0.1", 5000, 1)


def test_the_cache_keeps_the_models_served_last_or_lately_and_prunes_the_rest(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every new champion or `--model` left a folder in `.mnist-lab/serve/` for good."""
    now = 1_000_000_000.0
    cache = serve_cache(repo)

    def folder(name: str, days_ago: float) -> Path:
        (cache / name).mkdir(parents=True)
        os.utime(cache / name, (now - days_ago * 86400,) * 2)
        return cache / name

    old = [folder(f"download-{n}", KEEP_DAYS + 20 - n) for n in range(8)]  # download-7 the newest of them
    lately = folder("forest-abc", KEEP_DAYS - 1)
    killed_start = folder(".download-x", STAGING_DAYS + 1)
    starting_now = folder(".download-y", STAGING_DAYS / 10)
    removed = prune_serve_cache(repo, str(old[0]), now=now)  # the oldest served again: now the newest
    assert sorted(removed) == sorted([*old[1:5], killed_start])
    assert sorted(cache.iterdir()) == sorted([old[0], *old[5:], lately, starting_now])
    assert old[0].stat().st_mtime == now
    # a folder of the user's own served: none of the cache's is marked, the newest KEEP_NEWEST kept
    for name in ("a", "b"):
        folder(name, KEEP_DAYS + 30)
    own = tmp_path / "own-model"
    own.mkdir()
    assert sorted(prune_serve_cache(repo, str(own), now=now)) == [cache / "a", cache / "b"]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == KEEP_NEWEST
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache-yet"))  # not the user's own cache
    assert prune_serve_cache(tmp_path / "batch", str(own)) == []


def test_a_running_server_keeps_its_folder_marked_and_pruning_skips_what_vanishes(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started weeks ago lost its folder to pruning (a worker uvicorn restarts loads the model
    from it); another start's staging folder removed while pruning looked made `serve` fail."""
    from mnist_lab.serving import server

    cache = serve_cache(repo)
    served = cache / "download-0"
    served.mkdir(parents=True)
    os.utime(served, (time.time() - 30 * 86400,) * 2)
    monkeypatch.setattr(server, "MARK_EVERY_S", 0.05)
    server.keep_marked(served)
    deadline = time.monotonic() + 10
    while time.time() - served.stat().st_mtime > 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() - served.stat().st_mtime < 60
    vanishing = cache / ".download-x"
    vanishing.mkdir()
    stat, asked = Path.stat, []

    def gone_meanwhile(self: Path, **kwargs):
        if self == vanishing:
            asked.append(self)
            if len(asked) > 2:  # listed as a folder, then gone before its age is read
                raise FileNotFoundError(errno.ENOENT, "removed by the other start", str(self))
        return stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", gone_meanwhile)
    assert prune_serve_cache(repo, str(tmp_own := cache.parent / "own")) == []  # no error, nothing removed
    assert not tmp_own.exists()


def test_the_rest_app_keeps_marking_the_cache_folder_it_serves(
    model_uri: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `mnist-lab serve` runs marks its model's folder while it runs (pruning keeps it), and never a
    folder of the user's own outside the cache."""
    import shutil
    import threading

    from mlflow.pyfunc import scoring_server

    from mnist_lab.serving import rest, server

    served = Path(local_model_dir(repo, model_uri))
    os.utime(served, (time.time() - 30 * 86400,) * 2)
    monkeypatch.setattr(server, "MARK_EVERY_S", 0.05)
    monkeypatch.setenv(scoring_server._SERVER_MODEL_PATH, str(served))
    rest.create_app()
    deadline = time.monotonic() + 10
    while time.time() - served.stat().st_mtime > 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() - served.stat().st_mtime < 60
    markers = [t for t in threading.enumerate() if t.name == "mnist-lab-serve-mark"]
    own = shutil.copytree(served, repo.parent / "own-model")  # the user's own folder: served, not marked
    os.utime(own, (time.time() - 30 * 86400,) * 2)
    monkeypatch.setenv(scoring_server._SERVER_MODEL_PATH, str(own))
    rest.create_app()
    assert [t for t in threading.enumerate() if t.name == "mnist-lab-serve-mark"] == markers
    assert time.time() - own.stat().st_mtime > 29 * 86400
