"""Following a queued experiment's output (`dvc queue logs`): which stage runs, the network's last epoch, the
last lines. The queue itself runs in the slow tests (tests/board/test_queue.py)."""

from __future__ import annotations

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
