"""The validate stage on its own: corrupt data that DVC re-hashed into data.dvc is taken back out of it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mnist_lab.core.data import Dataset
from mnist_lab.core.errors import DataError
from mnist_lab.datasets.folder import (
    dvc_directory_md5,
    encode_dataset,
    read_directory_files,
    replace_directory,
)
from mnist_lab.stages.validate import check_data
from tests.helpers import commit_all, run


def _dvc_file(data: Path) -> str:
    """What `dvc add` / `dvc repro` write for data/ as it is now."""
    return f"outs:\n- md5: {dvc_directory_md5(read_directory_files(data))}\n  path: data\n"


def _corrupt(data: Path) -> None:
    labels = data / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:50]))


@pytest.fixture
def repo(tmp_path: Path, small_digits: Dataset) -> Path:
    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    replace_directory(encode_dataset(small_digits), tmp_path / "data")
    (tmp_path / "data.dvc").write_text(_dvc_file(tmp_path / "data"))
    commit_all(tmp_path, "data")
    return tmp_path


def test_valid_data_passes_and_is_remembered(repo: Path) -> None:
    copy = repo / ".mnist-lab" / "validated-data.dvc"
    check_data(repo / "data", repo / "data.dvc", copy)
    assert copy.read_text() == (repo / "data.dvc").read_text()


@pytest.mark.parametrize("remembered", [True, False], ids=["last-validated", "committed"])
def test_corrupt_data_rehashed_by_dvc_is_put_back(repo: Path, remembered: bool) -> None:
    copy = repo / ".mnist-lab" / "validated-data.dvc"
    good = (repo / "data.dvc").read_text()
    if remembered:
        check_data(repo / "data", repo / "data.dvc", copy)
    _corrupt(repo / "data")
    (repo / "data.dvc").write_text(_dvc_file(repo / "data"))  # what `dvc repro` does before any stage
    with pytest.raises(DataError) as refused:
        check_data(repo / "data", repo / "data.dvc", copy)
    message = str(refused.value)
    assert message.startswith(f"{repo / 'data'}/t10k-labels-idx1-ubyte.gz: truncated")  # the loader's
    which = "the last one validated on this branch" if remembered else "the committed one"
    assert f"data.dvc records data version {good.split()[3]} again, {which}" in message
    assert "it was put back" in message
    assert (repo / "data.dvc").read_text() == good


def test_missing_or_corrupt_data_under_an_unchanged_dvc_file_is_not_said_to_be_put_back(repo: Path) -> None:
    """Nothing had re-hashed data.dvc, yet the message said DVC had and that it was put back; with data/
    gone it listed four remedies (one refusing here) where `mnist-lab data restore` is the one."""
    import shutil

    copy = repo / ".mnist-lab" / "validated-data.dvc"
    good = (repo / "data.dvc").read_text()
    _corrupt(repo / "data")
    with pytest.raises(DataError) as refused:
        check_data(repo / "data", repo / "data.dvc", copy)
    message = str(refused.value)
    assert f"data.dvc records data version {good.split()[3]}, the committed one. Bring back" in message
    assert "put back" not in message and "re-hashed" not in message
    shutil.rmtree(repo / "data")
    with pytest.raises(DataError) as missing:
        check_data(repo / "data", repo / "data.dvc", copy)
    assert str(missing.value) == (
        f"data directory '{repo / 'data'}' is missing: `mnist-lab data restore` (`make data`) brings back "
        f"the version {repo / 'data.dvc'} records ({good.split()[3]}), from the DVC cache, the DVC remote "
        "or, for the bundled digits, by regenerating it"
    )
    assert (repo / "data.dvc").read_text() == good


def test_a_version_validated_on_another_branch_is_never_put_back_here(
    repo: Path, small_digits: Dataset
) -> None:
    """Validated on a branch with other data, then `git checkout main && dvc checkout`: main's corrupt data
    is put back to main's version, never to the other branch's (restoring it would bring that data here)."""
    copy = repo / ".mnist-lab" / "validated-data.dvc"
    main_version = (repo / "data.dvc").read_text()
    run(["git", "checkout", "-q", "-b", "other"], repo)
    fewer = Dataset(small_digits.train_images[:-10], small_digits.train_labels[:-10],
                    small_digits.test_images, small_digits.test_labels)  # fmt: skip
    replace_directory(encode_dataset(fewer), repo / "data")
    (repo / "data.dvc").write_text(_dvc_file(repo / "data"))
    check_data(repo / "data", repo / "data.dvc", copy)  # the other branch's data passed
    commit_all(repo, "other data")
    assert copy.read_text() != main_version
    run(["git", "checkout", "-q", "main"], repo)
    replace_directory(encode_dataset(small_digits), repo / "data")  # what `dvc checkout` does
    _corrupt(repo / "data")
    (repo / "data.dvc").write_text(_dvc_file(repo / "data"))
    with pytest.raises(DataError, match="again, the committed one"):
        check_data(repo / "data", repo / "data.dvc", copy)
    assert (repo / "data.dvc").read_text() == main_version


def test_with_nothing_to_put_back_it_says_so(tmp_path: Path, small_digits: Dataset) -> None:
    replace_directory(encode_dataset(small_digits), tmp_path / "data")
    _corrupt(tmp_path / "data")
    (tmp_path / "data.dvc").write_text(_dvc_file(tmp_path / "data"))
    with pytest.raises(DataError, match="records these files .no earlier valid version to put back."):
        check_data(tmp_path / "data", tmp_path / "data.dvc", tmp_path / "none.dvc")


def test_a_deleted_dvc_file_is_put_back_too(repo: Path) -> None:
    good = (repo / "data.dvc").read_text()
    _corrupt(repo / "data")
    (repo / "data.dvc").unlink()
    with pytest.raises(DataError, match="it was put back"):
        check_data(repo / "data", repo / "data.dvc", repo / ".mnist-lab" / "validated-data.dvc")
    assert (repo / "data.dvc").read_text() == good


def test_a_version_validated_before_a_commit_of_other_files_is_still_this_branchs(
    repo: Path, small_digits: Dataset
) -> None:
    """New data validated (not committed yet), then params.yaml committed alone: corrupt data afterwards is
    put back to the validated new version, not the older committed one (its advice would bring that back)."""
    copy = repo / ".mnist-lab" / "validated-data.dvc"
    fewer = Dataset(small_digits.train_images[:-10], small_digits.train_labels[:-10],
                    small_digits.test_images, small_digits.test_labels)  # fmt: skip
    replace_directory(encode_dataset(fewer), repo / "data")
    (repo / "data.dvc").write_text(_dvc_file(repo / "data"))
    check_data(repo / "data", repo / "data.dvc", copy)
    validated = (repo / "data.dvc").read_text()
    (repo / "params.yaml").write_text("seed: 7\n")
    run(["git", "add", "params.yaml"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "params"], repo)
    _corrupt(repo / "data")
    (repo / "data.dvc").write_text(_dvc_file(repo / "data"))
    with pytest.raises(DataError, match="again, the last one validated on this branch"):
        check_data(repo / "data", repo / "data.dvc", copy)
    assert (repo / "data.dvc").read_text() == validated


def test_a_misspelt_setting_in_dot_env_is_named_with_the_one_meant(tmp_path: Path, capsys) -> None:
    """MLFLOW_TRACKING_URL in .env: nothing read it and the pipeline logged to the local store, silently."""
    from mnist_lab.stages.validate import warn_misspelt_env_keys
    from mnist_lab.tracking.config import misspelt_env_keys

    (tmp_path / ".env").write_text(
        "MLFLOW_TRACKING_URL=http://127.0.0.1:5000\nmlflow_tracking_username=jane\n"
        "MLFLOW_TRACKING_PASSWORD=s3cret\nMLFLOW_EXPERIMENT_ID=3\nMLFLOW_TRACKING_AUTH=x\nOTHER=1\n"
    )
    warn_misspelt_env_keys(tmp_path)
    assert capsys.readouterr().err.splitlines() == [
        "warning: .env sets MLFLOW_TRACKING_URL, which nothing reads: did you mean MLFLOW_TRACKING_URI?",
        "warning: .env sets mlflow_tracking_username, which nothing reads: did you mean "
        "MLFLOW_TRACKING_USERNAME?",
    ]  # MLflow's own MLFLOW_EXPERIMENT_ID and MLFLOW_TRACKING_AUTH are not taken for typos
    assert misspelt_env_keys(["DVC_REMOTE_UR", "DAGSHUB_REPO"]) == {"DVC_REMOTE_UR": "DVC_REMOTE_URL"}


def test_every_setting_dot_env_example_names_is_one_a_typo_is_checked_against() -> None:
    """ENV_SETTINGS repeats .env.example's keys: a setting added to one and not the other would make its
    own correct spelling a "typo" of another, or leave its typos unnamed."""
    import re

    from mnist_lab.tracking.config import ENV_SETTINGS
    from tests.helpers import REPO_ROOT

    example = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    named = set(re.findall(r"^[# ]*([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert named and named <= set(ENV_SETTINGS), sorted(named - set(ENV_SETTINGS))


def test_test_files_removed_since_the_commit_are_warned_about(repo: Path, capsys) -> None:
    """`rm data/t10k-*; dvc repro`: DVC re-hashed data.dvc and `prepare` split a test set off the training
    images without a word, so the metrics changed meaning. A warning names it and the way back; data
    committed without a test set gets none."""
    copy = repo / ".mnist-lab" / "validated-data.dvc"
    (repo / "data.dvc").write_text(_dvc_file(repo / "data") + "  nfiles: 4\n")
    commit_all(repo, "data as dvc add writes it")
    for test_file in (repo / "data").glob("t10k-*"):
        test_file.unlink()
    (repo / "data.dvc").write_text(_dvc_file(repo / "data") + "  nfiles: 2\n")  # as `dvc repro` re-hashes
    check_data(repo / "data", repo / "data.dvc", copy)  # still valid data: a warning, not an error
    assert (
        f"warning: {repo / 'data'}/ holds no test set (t10k-* files) but the committed {repo / 'data.dvc'} "
        "records 4 files: `prepare` now splits data.test_size of the training images off as the test set, "
        "so the metrics are not comparable with the commit's. If the test files were removed by mistake, "
        f"`git checkout -- {repo / 'data.dvc'} && mnist-lab data restore --force` brings back the committed "
        "data\n"
    ) == capsys.readouterr().err
    commit_all(repo, "no test set")
    copy.unlink()
    check_data(repo / "data", repo / "data.dvc", copy)
    assert capsys.readouterr().err == ""
