"""The DVC config a reproduction's clone gets: the repository's remote credentials, less those of remotes
the reproduced commit does not define."""

from __future__ import annotations


def test_credentials_of_a_remote_an_old_commit_lacks_stay_out_of_its_clone() -> None:
    """`remote setup` wrote credentials for 'origin' to config.local; a commit from before the remote was set
    up has no 'origin' in its .dvc/config, and DVC refuses a remote with credentials and no URL."""
    from mnist_lab.datasets.remote import remote_names
    from mnist_lab.experiments.reproduce import _for_remotes

    local = (
        "[core]\n    no_scm = False\n"
        "['remote \"origin\"']\n    auth = basic\n    user = jane\n    password = s3cret\n"
        "['remote \"backup\"']\n    url = /srv/backup\n    user = jane\n"
    )
    old_commit = "[core]\n    autostage = true\n"
    new_commit = (
        "[core]\n    remote = origin\n['remote \"origin\"']\n    url = https://dvc.example.org/store\n"
    )
    assert remote_names(new_commit) == {"origin"} and remote_names(old_commit) == set()
    assert _for_remotes(local, remote_names(new_commit)) == local
    # the repository's cache settings never: the clone's DVC would write into that cache
    cached = local + "[cache]\n    dir = /srv/shared-dvc-cache\n    type = symlink\n"
    assert _for_remotes(cached, remote_names(new_commit)) == local
    assert _for_remotes(local, remote_names(old_commit)) == (
        "[core]\n    no_scm = False\n['remote \"backup\"']\n    url = /srv/backup\n    user = jane\n"
    )


def test_a_commit_from_before_the_remote_pulls_from_the_repositorys_default_remote(tmp_path) -> None:
    """Its .dvc/config names no remote, so its clone found none: `reproduce` said "no DVC cache or remote
    has it" of data the remote held. The clone gets the repository's default remote, a folder's relative
    URL made absolute (the clone's .dvc/ is elsewhere), with the credentials config.local holds for it."""
    import shutil
    import subprocess

    from mnist_lab.experiments.reproduce import _remote_config
    from tests.helpers import BIN

    dvc_program = str(BIN / "dvc")

    def dvc(*args: str, cwd) -> str:
        done = subprocess.run([dvc_program, *args], cwd=cwd, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    root, clone, store = (
        tmp_path / "work" / "repo",
        tmp_path / "elsewhere" / "deeper" / "clone",
        tmp_path / "the store, #2",  # a comma made the URL a list in the clone's config, a # a comment
    )
    for folder in (root, clone):
        folder.mkdir(parents=True)
        dvc("init", "--no-scm", "-q", cwd=folder)
    (root / "data").mkdir()
    (root / "data" / "digits.txt").write_text("0123456789\n")
    dvc("add", "-q", "data", cwd=root)
    dvc(
        "remote", "add", "-d", "origin", "../../the store, #2", cwd=root
    )  # relative, as `remote setup` has it
    dvc("remote", "modify", "--local", "origin", "jobs", "3", cwd=root)  # a local setting, kept for it
    dvc("push", "-q", cwd=root)
    shutil.copy(root / "data.dvc", clone / "data.dvc")  # the old commit: its data.dvc, no remote
    _remote_config(root, clone)
    assert dvc("remote", "default", cwd=clone) == "origin"
    assert dvc("config", "remote.origin.url", cwd=clone) == str(store)
    assert "jobs = 3" in (clone / ".dvc" / "config.local").read_text()
    dvc("pull", "-q", cwd=clone)
    assert (clone / "data" / "digits.txt").read_text() == "0123456789\n"


def test_a_remote_whose_url_is_in_config_local_is_not_given_twice(tmp_path) -> None:
    """`dvc remote add --local -d origin <url>` (the README's way for old commits) puts the URL in
    config.local: adding another made DVC refuse the clone's config ("Duplicate keyword name")."""
    import subprocess

    from mnist_lab.experiments.reproduce import _remote_config
    from tests.helpers import BIN

    def dvc(*args: str, cwd) -> str:
        done = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    root, clone, store = tmp_path / "repo", tmp_path / "clone", tmp_path / "store"
    for folder in (root, clone):
        folder.mkdir()
        dvc("init", "--no-scm", "-q", cwd=folder)
    dvc("remote", "add", "--local", "-d", "origin", str(store), cwd=root)
    _remote_config(root, clone)
    assert (clone / ".dvc" / "config.local").read_text().count("url =") == 1
    assert dvc("remote", "list", cwd=clone).split()[:2] == ["origin", str(store)]
    (tmp_path / "no-dvc").mkdir()
    _remote_config(root, tmp_path / "no-dvc")  # a commit from before `dvc init`: nothing to configure
    assert not (tmp_path / "no-dvc" / ".dvc").exists()


def test_a_locked_environment_runs_its_own_dvc_and_mnist_lab(tmp_path, monkeypatch) -> None:
    """`--locked-env` put the locked environment first on PATH, but `dvc` and `mnist-lab` were taken from
    this Python's bin (commands.executable): only the stages ran in the locked environment. A stand-in
    environment (its `mnist-lab` says who it is) shows which ran."""
    import os

    import pytest

    from mnist_lab.experiments import reproduce
    from tests.helpers import commit_all, run

    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main", str(repo)], repo)
    (repo / "metrics.json").write_text('{"models": {"m": {"accuracy": 0.5}}}')
    (repo / "requirements.lock").write_text("numpy==0.0.0\n")
    commit_all(repo, "experiment")
    locked = tmp_path / "locked-bin"
    locked.mkdir()
    for name in ("dvc", "mnist-lab"):
        (locked / name).write_text(
            f'#!/bin/sh\necho "error: the locked {name}, PYTHONPATH=$PYTHONPATH" >&2\nexit 1\n'
        )
        (locked / name).chmod(0o755)
    monkeypatch.setattr(reproduce, "_locked_environment", lambda clone, scratch, env: locked)
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    with pytest.raises(reproduce.ReproductionError) as raised:
        reproduce.reproduce(repo, "HEAD", locked_env=True)
    assert "cannot get the data of" in str(raised.value)
    assert "the locked mnist-lab, PYTHONPATH=" in str(raised.value)
    assert "/somewhere/else" not in str(raised.value)
    assert os.environ["PYTHONPATH"] == "/somewhere/else"  # this process's own: untouched


def test_a_failed_keep_copy_leaves_nothing_behind_and_hides_nothing(tmp_path, monkeypatch, capsys) -> None:
    """`--keep DIR` on a full disk: the copy's OSError replaced the reproduction's own error and left the
    scratch folder (a clone, a cache, maybe an environment) in /tmp."""
    import shutil
    import tempfile

    import pytest

    from mnist_lab.experiments import reproduce
    from tests.helpers import commit_all, run

    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main", str(repo)], repo)
    (repo / "metrics.json").write_text('{"models": {"m": {"accuracy": 0.5}}}')
    commit_all(repo, "experiment (no data.dvc: its data cannot be restored)")
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_parent))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", full_disk)
    with pytest.raises(reproduce.ReproductionError, match="cannot get the data of"):
        reproduce.reproduce(repo, "HEAD", keep=tmp_path / "kept")
    assert "warning: could not keep the reproduction in" in capsys.readouterr().err
    assert list(scratch_parent.iterdir()) == []


def test_the_repositorys_cache_is_read_where_its_config_puts_it(tmp_path) -> None:
    """A reproduction reads data and outputs from the repository's DVC cache: it looked in `.dvc/cache`
    only, and so pulled nothing for a repository whose `cache.dir` is elsewhere (a shared cache)."""
    from mnist_lab.experiments.reproduce import _cache_dir
    from tests.helpers import run

    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    assert _cache_dir(root).resolve() == (root / ".dvc" / "cache").resolve()
    shared = tmp_path / "shared-cache"
    run(["dvc", "cache", "dir", "--local", str(shared)], root)
    assert _cache_dir(root).resolve() == shared.resolve()
