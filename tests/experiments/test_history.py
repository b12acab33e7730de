"""`mnist-lab history`'s renderings (pure: rows in, text out)."""

from mnist_lab.experiments.history import ExperimentRow, as_markdown


def test_a_pipe_in_a_message_or_a_value_stays_in_its_markdown_cell() -> None:
    """A commit message "alpha 0.003 | try smaller" made a 9-cell row under the 8-column header."""
    row = ExperimentRow(
        commit="0123456789abcdef",
        date="2026-11-28T10:00:00+00:00",
        message="SGD alpha 0.003 | try smaller",
        data_version="feedbeef",
        params_changed={"models.sgd.loss": ["a|b", "c\\d"]},
        accuracy={"sgd": 0.9},
    )
    header, rule, line = as_markdown([row]).splitlines()
    cells = lambda text: text.replace("\\|", "").count("|") - 1  # noqa: E731 - the unescaped separators
    assert cells(header) == cells(rule) == cells(line) == 8
    assert "SGD alpha 0.003 \\| try smaller" in line and "a\\|b → c\\d" in line
