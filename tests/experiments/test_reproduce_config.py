"""The DVC config a reproduction's clone gets: the repository's remote credentials, less those of remotes
the reproduced commit does not define."""

from __future__ import annotations


def test_credentials_of_a_remote_an_old_commit_lacks_stay_out_of_its_clone() -> None:
    """`remote setup` wrote credentials for 'origin' to config.local; a commit from before the remote was set
    up has no 'origin' in its .dvc/config, and DVC refuses a remote with credentials and no URL."""
    from mnist_lab.experiments.reproduce import _for_remotes, _remote_names

    local = (
        "[core]\n    no_scm = False\n"
        "['remote \"origin\"']\n    auth = basic\n    user = jane\n    password = s3cret\n"
        "['remote \"backup\"']\n    url = /srv/backup\n    user = jane\n"
    )
    old_commit = "[core]\n    autostage = true\n"
    new_commit = (
        "[core]\n    remote = origin\n['remote \"origin\"']\n    url = https://dvc.example.org/store\n"
    )
    assert _remote_names(new_commit) == {"origin"} and _remote_names(old_commit) == set()
    assert _for_remotes(local, _remote_names(new_commit)) == local
    assert _for_remotes(local, _remote_names(old_commit)) == (
        "[core]\n    no_scm = False\n['remote \"backup\"']\n    url = /srv/backup\n    user = jane\n"
    )
