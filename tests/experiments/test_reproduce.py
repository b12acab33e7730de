"""`mnist-lab reproduce`: past experiments rerun in a temporary clone match exactly; tampered ones do not
(slow: each reproduction runs the whole pipeline)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.helpers import commit_all, run

pytestmark = pytest.mark.slow


def _warm_servers() -> set[str]:
    """The running warm servers' command lines: this session's (its folder, tests/conftest.py) and any in
    a reproduction's scratch folder."""
    import os

    from mnist_lab.system.warm import DIR_ENV

    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if (
            "mnist_lab.system.warm" in words
            and "serve" in words
            and any(word == os.environ[DIR_ENV] or "mnist-lab-reproduce-" in word for word in words)
        ):
            found.add(" ".join(words))
    return found


def test_reproduce_two_experiments_and_catch_a_tampered_one(restored_repo: Path) -> None:
    root = restored_repo
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'user-store.db'}"}
    first = run(["git", "rev-parse", "HEAD"], root).stdout.strip()  # the committed experiment itself
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("n_estimators: 100", "n_estimators: 20", 1))
    run(["dvc", "repro"], root, env)
    second = commit_all(root, "smaller forest")
    canary = f"canary-{uuid.uuid4().hex}"  # as a remote's password: the clone gets it, a kept copy must not
    (root / ".dvc" / "config.local").write_text(f"[core]\n    autostage = false\n# {canary}\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}

    kept = root.parent / "kept"
    servers = _warm_servers()  # the pipeline's, just run
    for revision in (first, second):
        keep = ["--keep", str(kept)] if revision == second else []
        done = run(["mnist-lab", "reproduce", revision, *keep], root, env, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "reproduces exactly" in done.stdout and " NO" not in done.stdout
        assert "dirty" not in done.stdout + done.stderr
    kept_files = [p for p in kept.rglob("*") if p.is_file()]
    assert any(p.name == "dvc.lock" for p in kept_files)  # the clone was kept
    # the warm servers the clones' stages started are stopped, not left idling for 15 minutes
    assert _warm_servers() == servers
    assert not [p for p in kept_files if canary.encode() in p.read_bytes()]

    summary = json.loads((root / "metrics.json").read_text())
    summary["models"]["random_forest"]["accuracy"] += 0.01  # a recorded result that was never measured
    (root / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    before[root / "metrics.json"] = (root / "metrics.json").read_bytes()
    tampered = commit_all(root, "tampered")
    done = run(["mnist-lab", "reproduce", tampered], root, env, check=False)
    assert done.returncode == 1
    line = next(
        x for x in done.stdout.splitlines() if x.startswith("metrics.json:models.random_forest.accuracy")
    )
    assert line.endswith("NO")
    assert "does NOT reproduce: 1 of" in done.stdout
    assert f"warning: {tampered[:12]} is dirty: its results are not what its own files make" in done.stderr
    assert (
        "(a dirty commit: its recorded results are not what its files make; dvc.lock disagrees with "
        "metrics.json)" in done.stdout
    )

    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before  # the working tree, cache and store of the repository are untouched

    bad = run(["mnist-lab", "reproduce", "nope"], root, env, check=False)
    assert bad.returncode == 2
    assert "'nope' is neither a commit of this repository nor a DVC experiment's name" in bad.stderr

    # data no cache, remote or regeneration has: one message, the restore's own, said once
    dvc_file = root / "data.dvc"
    recorded = dvc_file.read_text().split("md5: ", 1)[1].split(".dir", 1)[0]
    dvc_file.write_text(dvc_file.read_text().replace(recorded, "0" * 32))
    lost = commit_all(root, "data nobody has")
    missing = run(["mnist-lab", "reproduce", lost], root, env, check=False)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.count("error:") == 1 and f"error: cannot get the data of {lost[:12]}: " in (
        missing.stderr
    )


def test_reproduce_in_the_environment_of_the_revisions_lock_file(restored_repo: Path) -> None:
    root = restored_repo
    done = run(["mnist-lab", "reproduce", "HEAD", "--locked-env"], root, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "reproduces exactly" in done.stdout and "built from its requirements.lock" in done.stdout


def test_reproduce_a_dvc_experiment_by_the_name_dvc_gives_it(restored_repo: Path) -> None:
    """An experiment `dvc exp run` kept on its ref alone (not committed to a branch): `reproduce` took only
    commits ("'<name>' is not a commit"), where `compare` takes the name; its clone had only branches."""
    root = restored_repo
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'user-store.db'}"}
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    run(["git", "checkout", "-q", "--detach"], root)
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("n_estimators: 100", "n_estimators: 20", 1))
    run(["dvc", "repro"], root, env)
    experiment = commit_all(root, "a smaller forest, kept by DVC alone")
    run(["git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/small-forest", experiment], root)
    run(["git", "checkout", "-q", "-f", "main"], root)
    done = run(["mnist-lab", "reproduce", "small-forest"], root, env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert f"{experiment[:12]} reproduces exactly" in done.stdout
