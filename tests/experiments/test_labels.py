"""labels.yaml: written atomically and sorted, read back, refused when malformed; `mnist-lab label`."""

import subprocess
from pathlib import Path

import pytest

from mnist_lab.cli import main
from mnist_lab.experiments.labels import LabelError, experiment_id, read_labels, set_label
from mnist_lab.experiments.linking import experiment_refs
from tests.board.experiment_history import GIT, write_history


def test_set_label_adds_and_removes_and_keeps_the_file_tidy(tmp_path: Path) -> None:
    assert set_label(tmp_path, "b" * 40, "hidden") == ["hidden"]
    assert set_label(tmp_path, "a" * 40, "baseline") == ["baseline"]
    assert set_label(tmp_path, "a" * 40, "champion") == ["baseline", "champion"]
    assert read_labels(tmp_path) == {"a" * 40: ["baseline", "champion"], "b" * 40: ["hidden"]}
    assert set_label(tmp_path, "b" * 40, "hidden", present=False) == []
    assert read_labels(tmp_path) == {"a" * 40: ["baseline", "champion"]}
    text = (tmp_path / "labels.yaml").read_text()
    assert text.startswith("# Labels of experiments") and f"{'a' * 40}: [baseline, champion]" in text


def test_labels_set_at_once_are_all_kept(tmp_path: Path) -> None:
    """The page answers requests in threads and the CLI may write too: each write reads, changes and
    writes the file, one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: set_label(tmp_path, "a" * 40, f"l{n}"), range(24)))
    assert read_labels(tmp_path) == {"a" * 40: sorted(f"l{n}" for n in range(24))}


@pytest.mark.parametrize("label", ["", "Hidden", "a b", "-x", "x" * 33])
def test_a_bad_label_is_refused_and_nothing_is_written(tmp_path: Path, label: str) -> None:
    with pytest.raises(LabelError, match="use 1-32 lower-case letters"):
        set_label(tmp_path, "a" * 40, label)
    assert not (tmp_path / "labels.yaml").exists()


def test_a_malformed_labels_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "labels.yaml").write_text("- just\n- a list\n")
    with pytest.raises(LabelError, match="must map experiment ids to lists of labels"):
        read_labels(tmp_path)


def test_mnist_lab_label_resolves_revisions_and_dvc_experiments(tmp_path: Path, monkeypatch, capsys) -> None:
    commits = write_history(tmp_path, 3, experiments=1)
    monkeypatch.chdir(tmp_path)
    assert main(["label", "HEAD~1", "baseline"]) == 0
    assert read_labels(tmp_path) == {commits[1]: ["baseline"]}
    assert main(["label", "exp:exp-0", "hidden"]) == 0
    assert read_labels(tmp_path)["exp:exp-0"] == ["hidden"]
    assert experiment_id(tmp_path, "main") == commits[0]
    exp_commit = next(sha for sha, name in experiment_refs(tmp_path) if name == "exp-0")
    assert experiment_id(tmp_path, exp_commit) == "exp:exp-0"  # by its hash: the id the page shows
    assert main(["label", "exp:nope", "hidden"]) == 2
    assert "no DVC experiment 'nope': `dvc exp list --all-commits` names them" in capsys.readouterr().err
    # as the page shows them: a run no commit names; not a commit that is no experiment (shown nowhere)
    assert main(["label", "run:" + "ab" * 16, "baseline"]) == 0
    assert read_labels(tmp_path)["run:" + "ab" * 16] == ["baseline"]
    (tmp_path / "README.md").write_text("notes\n")
    subprocess.run([*GIT, "add", "README.md"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "notes"], cwd=tmp_path, check=True)
    assert main(["label", "HEAD", "hidden"]) == 2
    error = capsys.readouterr().err
    assert (
        f"is not an experiment commit: it changes neither dvc.lock nor metrics.json; the experiment it "
        f"follows is {commits[0][:12]}" in error
    )
    assert main(["label", "run:nope", "hidden"]) == 2
