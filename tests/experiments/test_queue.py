"""Following a queued experiment's output (`dvc queue logs`): which stage runs, the network's last epoch, the
last lines. The queue itself runs in the slow tests (tests/board/test_queue.py)."""

from __future__ import annotations

import pytest

from mnist_lab.experiments.queue import LOG_LINES, output_progress

LOG = """\
Running stage 'prepare':
> python -m mnist_lab.stages prepare
prepared 1437 training and 360 test images
Running stage 'train@cnn':
> python -m mnist_lab.stages train cnn
cnn epoch  1/12: loss 1.9000 acc 0.4000 | val_loss 1.2000 val_acc 0.7000 | lr 0.001 | 0.8 s
cnn epoch  2/12: loss 0.9000 acc 0.7000 | val_loss 0.6000 val_acc 0.8500 | lr 0.001 | 0.5 s
"""


def test_the_stage_running_and_its_last_epoch() -> None:
    progress = output_progress(LOG)
    assert progress["stage"] == "train@cnn"
    assert progress["epoch"] == {
        "model": "cnn",
        "epoch": 2,
        "epochs": 12,
        "line": "cnn epoch  2/12: loss 0.9000 acc 0.7000 | val_loss 0.6000 val_acc 0.8500 | lr 0.001 | 0.5 s",
    }
    assert progress["lines"] == LOG.splitlines()


def test_an_epoch_belongs_to_the_stage_that_printed_it() -> None:
    progress = output_progress(LOG + "Running stage 'evaluate@cnn':\n")
    assert progress["stage"] == "evaluate@cnn" and progress["epoch"] is None


def test_a_redrawn_progress_bar_counts_as_what_it_drew_last() -> None:
    bar = "grid search:   0%|   | 0/16\rgrid search:  50%|#  | 8/16\rgrid search: 100%|## | 16/16\r\n"
    progress = output_progress("Running stage 'train@mlp':\r\n" + bar + "\n\n")
    assert progress["stage"] == "train@mlp"
    assert progress["lines"] == ["Running stage 'train@mlp':", "grid search: 100%|## | 16/16"]


def test_only_the_last_lines_are_kept_and_nothing_printed_is_nothing() -> None:
    printed = "".join(f"line {number}\n" for number in range(3 * LOG_LINES))
    assert output_progress(printed)["lines"] == [f"line {n}" for n in range(2 * LOG_LINES, 3 * LOG_LINES)]
    assert output_progress("") == {"stage": None, "epoch": None, "lines": []}


def test_an_experiment_started_before_it_printed_anything_has_no_output_yet(monkeypatch, tmp_path) -> None:
    # the moment between DVC's worker taking the task and the task's log file existing cannot be caught
    # with the real queue: DVC's own answers for it (dvc/repo/experiments/queue/celery.py) stand in
    import subprocess

    from mnist_lab.experiments import queue

    monkeypatch.setattr(queue, "queue_status", lambda root: [{"name": "exp-1", "status": "Running"}])

    def dvc_says(message: str):
        return lambda *args, **kwargs: subprocess.CompletedProcess(
            ["dvc", *args], 255, "", f"ERROR: {message}\n"
        )

    monkeypatch.setattr(queue.commands, "dvc", dvc_says("No output logs found for experiment 'exp-1'"))
    assert queue.experiment_output(tmp_path, "exp-1") == {
        "started": True,
        "stage": None,
        "epoch": None,
        "lines": [],
    }
    monkeypatch.setattr(
        queue.commands, "dvc", dvc_says("Experiment 'exp-1' is in queue but has not been started")
    )
    assert queue.experiment_output(tmp_path, "exp-1")["started"] is False
    failed = "No output logs found for experiment 'exp-1'\nExperiment likely failed during setup."
    monkeypatch.setattr(queue.commands, "dvc", dvc_says(failed))
    with pytest.raises(queue.QueueError, match="likely failed during setup"):
        queue.experiment_output(tmp_path, "exp-1")
    with pytest.raises(queue.NotQueued, match="no experiment named 'exp-2'"):
        queue.experiment_output(tmp_path, "exp-2")


def test_a_name_already_queued_or_run_is_refused(monkeypatch, tmp_path) -> None:
    """DVC queues a second experiment of the same name and keeps one result: refused before DVC runs."""
    import shutil

    from mnist_lab.experiments import queue
    from tests.helpers import REPO_ROOT, commit_all, run

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    baseline = commit_all(tmp_path, "baseline")
    run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/sgd-small", baseline], tmp_path)
    monkeypatch.setattr(queue, "queue_status", lambda root: [{"name": "in-the-queue", "status": "Queued"}])
    for taken in ("sgd-small", "in-the-queue"):
        with pytest.raises(queue.QueueError, match=f"an experiment named '{taken}' exists already"):
            queue.queue_experiment(tmp_path, [("models.sgd.alpha", "0.001")], taken)


def test_applying_an_experiment_run_on_an_older_commit_would_undo_newer_ones(tmp_path) -> None:
    """Its baseline's params come back with it: refused when HEAD changed the inputs since its baseline."""
    from mnist_lab.experiments import queue
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    baseline = commit_all(tmp_path, "baseline")
    (tmp_path / "params.yaml").write_text("seed: 2\n")  # the experiment: a commit on the baseline, as DVC's
    experiment = commit_all(tmp_path, "exp")
    run(["git", "reset", "-q", "--hard", baseline], tmp_path)
    run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/seed-2", experiment], tmp_path)
    (tmp_path / "notes.txt").write_text("not an input\n")
    commit_all(tmp_path, "notes")
    with pytest.raises(queue.QueueError, match="`dvc exp apply seed-2` failed"):  # past the check: DVC's turn
        queue.apply_experiment(tmp_path, "seed-2")
    (tmp_path / "params.yaml").write_text("seed: 3\n")
    commit_all(tmp_path, "newer params")
    undoing = rf"seed-2 was run on {baseline[:12]}, and HEAD has changed its inputs since \(params.yaml\)"
    with pytest.raises(queue.QueueError, match=undoing):
        queue.apply_experiment(tmp_path, "seed-2")


def test_applying_an_experiment_dvc_does_not_have_is_refused_before_dvc_runs(tmp_path, monkeypatch) -> None:
    """An unknown name (or one applied and gone since) is NoSuchExperiment, not DVC's own failure, and the
    workspace is not touched, uncommitted changes included."""
    from mnist_lab.experiments import queue
    from mnist_lab.system import commands
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    commit_all(tmp_path, "baseline")
    (tmp_path / "params.yaml").write_text("seed: 5\n")  # would make it "uncommitted changes" if checked first
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(commands, "dvc", lambda *args, **kwargs: ran.append(args))
    with pytest.raises(queue.NoSuchExperiment, match=r"no experiment 'exp:nope': `dvc exp show` lists them"):
        queue.apply_experiment(tmp_path, "nope")
    assert ran == []
    assert (tmp_path / "params.yaml").read_text() == "seed: 5\n"


def test_a_name_that_is_a_git_revision_is_refused_and_apply_goes_by_the_commit(monkeypatch, tmp_path) -> None:
    """DVC reads a name as a git revision first: an experiment named `v1` (a tag) or like a commit's hash
    was applied as that commit, undoing the commits after it. Queueing such a name is refused; applying
    passes DVC the experiment's commit."""
    import shutil
    import subprocess

    from mnist_lab.experiments import queue
    from mnist_lab.system import commands
    from tests.helpers import REPO_ROOT, commit_all, run

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    first = commit_all(tmp_path, "one")
    run(["git", "tag", "v1"], tmp_path)
    monkeypatch.setattr(queue, "queue_status", lambda root: [])
    for name in ("v1", "main", "HEAD", first[:8]):
        with pytest.raises(queue.QueueError, match=f"'{name}' is also a git revision of this repository"):
            queue.queue_experiment(tmp_path, [("models.sgd.alpha", "0.001")], name)
    # an experiment named v1 all the same (queued by `dvc exp run -n v1` itself): applied by its commit
    (tmp_path / "notes.txt").write_text("the experiment\n")
    experiment = commit_all(tmp_path, "exp")
    run(["git", "reset", "-q", "--hard", first], tmp_path)
    run(["git", "update-ref", f"refs/exps/{first[:2]}/{first[2:]}/v1", experiment], tmp_path)
    ran: list[tuple[str, ...]] = []

    def dvc(*args, **kwargs):
        ran.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(commands, "dvc", dvc)
    queue.apply_experiment(tmp_path, "v1")
    assert ran == [("exp", "apply", experiment)]
    # one name on two baselines: which one is meant cannot be told
    run(["git", "update-ref", f"refs/exps/{experiment[:2]}/{experiment[2:]}/v1", experiment], tmp_path)
    with pytest.raises(queue.QueueError, match="2 experiments are named 'v1'"):
        queue.apply_experiment(tmp_path, "v1")


def test_labels_are_restored_when_dvc_fails_to_finish_applying(monkeypatch, tmp_path) -> None:
    from mnist_lab.experiments import queue
    from mnist_lab.experiments.labels import LABELS_FILE
    from mnist_lab.system import commands
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / LABELS_FILE).write_text("abc: [old]\n")
    baseline = commit_all(tmp_path, "baseline")
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    experiment = commit_all(tmp_path, "exp")
    run(["git", "reset", "-q", "--hard", baseline], tmp_path)
    run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/seed-2", experiment], tmp_path)
    (tmp_path / LABELS_FILE).write_text("abc: [hidden, new]\n")  # uncommitted

    def applies_then_times_out(*args, **kwargs):
        (tmp_path / LABELS_FILE).write_text("abc: [old]\n")  # what the experiment brings back
        raise commands.CommandError("`dvc exp apply` did not finish within 600 s")

    monkeypatch.setattr(commands, "dvc", applies_then_times_out)
    with pytest.raises(commands.CommandError):
        queue.apply_experiment(tmp_path, "seed-2")
    assert (tmp_path / LABELS_FILE).read_text() == "abc: [hidden, new]\n"


def test_the_inputs_changed_since_a_baseline_keep_their_names_whole(tmp_path) -> None:
    """`git diff --name-only` split on whitespace: `src/my module.py` became two paths in the message."""
    from mnist_lab.experiments.queue import inputs_changed_since
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "my module.py").write_text("x = 1\n")
    baseline = commit_all(tmp_path, "baseline")
    (tmp_path / "src" / "my module.py").write_text("x = 2\n")
    (tmp_path / "notes.txt").write_text("not an input\n")
    commit_all(tmp_path, "changed")
    assert inputs_changed_since(tmp_path, baseline) == ["src/my module.py"]
