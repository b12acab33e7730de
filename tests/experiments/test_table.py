"""Reading what a commit's dvc.lock recorded (`locked_state`), which tells a commit's results from what its
params.yaml would make (the dirty flag of `history`, the board and `reproduce`)."""

from __future__ import annotations

from mnist_lab.core.settings import flatten, load_params_yaml
from mnist_lab.experiments.table import locked_state

LOCK = """\
schema: '2.0'
stages:
  train@sgd:
    cmd: python -m mnist_lab.stages train sgd
    params:
      params.yaml:
        models.sgd.alpha: 1e-05
        models.sgd.search:
          grid:
            alpha:
            - 1e-05
            - 0.0001
    outs:
    - path: models/sgd
      hash: md5
      md5: 0123456789abcdef0123456789abcdef
"""


def test_params_as_dvc_writes_them_read_as_params_yaml_does() -> None:
    # DVC writes 0.00001 as 1e-05, which YAML 1.1 (PyYAML) reads as a string: it is the float params.yaml has
    files, params = locked_state(LOCK)
    written = flatten(
        load_params_yaml(
            "models:\n  sgd:\n    alpha: 0.00001\n    search: {grid: {alpha: [0.00001, 0.0001]}}\n"
        )
    )
    assert params == written and params["models.sgd.alpha"] == 1e-05
    assert files == {"models/sgd": {"0123456789abcdef0123456789abcdef"}}


def test_an_experiment_applied_and_committed_is_one_row_not_two(tmp_path) -> None:
    """`dvc exp apply` + `mnist-lab commit` make a new commit with the experiment's results: the DVC
    experiment it came from is that commit's row, not a second one."""
    from mnist_lab.experiments.labels import read_labels, set_label
    from mnist_lab.experiments.linking import experiment_refs
    from mnist_lab.experiments.table import applied_experiments, carry_labels, experiment_rows
    from tests.board.experiment_history import GIT, write_history
    from tests.helpers import run

    write_history(tmp_path, 2, experiments=2)
    assert {row["id"] for row in experiment_rows(tmp_path)} >= {"exp:exp-0", "exp:exp-1"}
    # an experiment whose results equal its own baseline's (a run that changed nothing) is still its row
    baseline = run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    same = run(
        [*GIT, "commit-tree", f"{baseline}^{{tree}}", "-p", baseline, "-m", "no change"], tmp_path
    ).stdout
    run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/no-change", same.strip()], tmp_path)
    assert "exp:no-change" in {row["id"] for row in experiment_rows(tmp_path)}
    applied = dict((name, sha) for sha, name in experiment_refs(tmp_path))["exp-0"]
    set_label(tmp_path, "exp:exp-0", "winner")  # on its row: it must follow the experiment to its commit
    set_label(tmp_path, "exp:exp-1", "other")
    run(["git", "checkout", applied, "--", "metrics.json", "params.yaml", "data.dvc"], tmp_path)
    run([*GIT, "commit", "-qm", "Experiment exp-0, applied"], tmp_path)
    head = run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    assert applied_experiments(tmp_path, head) == ["exp-0"]
    assert applied_experiments(tmp_path, baseline) == []  # no-change only reproduced it: not applied
    assert carry_labels(tmp_path, head) == {"exp:exp-0": ["winner"]}
    rows = {row["id"]: row for row in experiment_rows(tmp_path)}
    assert "exp:exp-0" not in rows and {"exp:exp-1", "exp:no-change"} <= set(rows) and len(rows) == 5
    assert rows[head]["labels"] == ["winner"] and rows["exp:exp-1"]["labels"] == ["other"]
    assert read_labels(tmp_path) == {head: ["winner"], "exp:exp-1": ["other"]}


def test_a_commits_changed_params_are_against_the_previous_experiment(tmp_path) -> None:
    """A commit of params.yaml alone, then the experiment it led to: the experiment's `changed` shows the
    param (against its git parent it showed nothing, and the change appeared nowhere)."""
    from mnist_lab.experiments.table import experiment_rows
    from tests.board.experiment_history import GIT, write_history
    from tests.helpers import run

    write_history(tmp_path, 2)
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("seed: ", "seed: 7 #", 1))
    run([*GIT, "commit", "-qam", "seed 7 (params alone: not an experiment)"], tmp_path)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.', '"accuracy": 0.0', 1))
    run([*GIT, "commit", "-qam", "the experiment it led to"], tmp_path)
    newest, previous = experiment_rows(tmp_path, dvc_experiments=False)[:2]
    assert newest["message"] == "the experiment it led to" and previous["message"].startswith("Experiment 1")
    assert newest["changed"]["seed"][1] == 7


def test_a_model_dropped_from_params_does_not_make_its_commit_dirty(tmp_path) -> None:
    """`dvc exp run -S '~models.mlp'`: DVC leaves train@mlp and evaluate@mlp in dvc.lock (`dvc status` is
    clean: no stage runs them), and their params were read as the commit's own, so history and compare
    called a clean experiment dirty."""
    import hashlib

    import yaml

    from mnist_lab.experiments.table import read_blobs, stale_results, without_dropped_models
    from tests.helpers import REPO_ROOT, commit_all, copy_repository

    root = copy_repository(tmp_path / "repo")
    commits = iter(range(100))

    def reasons() -> list[str]:
        (root / "notes.txt").write_text(f"experiment {next(commits)}\n")  # each a new commit
        head = commit_all(root, "an experiment")
        return stale_results(root, [head], read_blobs(root, [f"{head}:params.yaml"])).get(head, [])

    before = reasons()
    params = yaml.safe_load((root / "params.yaml").read_text())
    del params["models"]["mlp"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # as `dvc exp run` leaves dvc.lock: `validate` and `select` (which read all of params.yaml) reran on
    # the new params.yaml; train@mlp and evaluate@mlp stay as they were
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert "train@mlp" in lock["stages"] and "evaluate@mlp" in lock["stages"]
    del lock["stages"]["select"]["params"]["params.yaml"]["models"]["mlp"]
    old_md5 = hashlib.md5((REPO_ROOT / "params.yaml").read_bytes()).hexdigest()
    new_md5 = hashlib.md5((root / "params.yaml").read_bytes()).hexdigest()
    lock_text = yaml.safe_dump(lock, sort_keys=False).replace(old_md5, new_md5)
    (root / "dvc.lock").write_text(lock_text)
    assert reasons() == before
    kept = without_dropped_models(lock_text, {"models.sgd.type": "sgd", "seed": 1})
    assert "train@sgd:" in kept and "train@mlp:" not in kept and "train@cnn:" not in kept
    assert "  prepare:" in kept and kept.startswith("schema: '2.0'\nstages:\n")
    assert "evaluate@cnn:" not in kept and "evaluate@sgd:" in kept  # each names its models.<key>
    sweep = "  sweep@0:\n    cmd: echo\n    outs:\n    - path: x\n      md5: 0123\n"  # a foreach over a list
    assert sweep in without_dropped_models(lock_text + sweep, {"models.sgd.type": "sgd"})
    assert without_dropped_models(lock_text, {}) == lock_text  # params.yaml unreadable: nothing dropped
    params["models"]["sgd"]["alpha"] = 0.5  # a model still there whose params changed: still dirty
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "params.yaml: models.sgd.alpha" in reasons()
    assert not any("models.mlp" in reason for reason in reasons())


def test_any_commit_message_is_read_whole(tmp_path) -> None:
    """Fields and commits were split on \\x1e and \\x1f: a message holding either (git takes any byte but
    NUL) broke the experiments page and `history` until the history was rewritten."""
    import json

    from mnist_lab.experiments.table import experiment_rows
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    messages = ["tuned\x1enext\x1f", "plain one", "a body follows\n\nline one\x1e\nline two\n\n\n"]
    for number, message in enumerate(messages):
        (tmp_path / "metrics.json").write_text(json.dumps({"models": {"m": {"accuracy": number / 10}}}))
        commit_all(tmp_path, message)
    rows = experiment_rows(tmp_path)
    assert [row["message"] for row in rows] == ["a body follows", "plain one", "tuned\x1enext\x1f"]
    assert [row["metrics.models.m.accuracy"] for row in rows] == [0.2, 0.1, 0.0]


def test_a_commit_that_changed_code_alone_is_marked_code_only(tmp_path) -> None:
    """A commit whose params, data, metrics and runs are its previous experiment's (code changed, every
    stage's results came out the same) is `code_only`; a rerun that logged runs of its own, a dirty commit
    and a labelled one are not."""
    from mnist_lab.experiments.labels import set_label
    from mnist_lab.experiments.table import experiment_rows
    from tests.board.experiment_history import GIT, commit_code_change, write_history
    from tests.helpers import run

    write_history(tmp_path, 3)
    first = commit_code_change(tmp_path, 2, 1)
    second = commit_code_change(tmp_path, 2, 2)
    rows = experiment_rows(tmp_path, dvc_experiments=False)
    assert [row["code_only"] for row in rows] == [True, True, False, False, False]
    assert [row["commit"] for row in rows[:2]] == [second, first] and rows[0]["changed"] == {}
    # the same results with runs of its own (`mnist-lab commit` after a rerun): an experiment
    commit_code_change(tmp_path, 2, 3, message=f"rerun\n\nMLflow-Run: sgd run={'e' * 32} record={'1' * 32}")
    assert experiment_rows(tmp_path, dvc_experiments=False)[0]["code_only"] is False
    # a model's report names a new run (a rerun committed without trailers): an experiment
    commit_code_change(tmp_path, 2, 4)
    assert experiment_rows(tmp_path, dvc_experiments=False)[0]["code_only"] is True
    report = tmp_path / "reports/sgd/mlflow.json"
    report.write_text('{"run_id": "' + "d" * 32 + '"}\n')
    head = commit_code_change(tmp_path, 2, 5)
    run([*GIT, "add", "-A"], tmp_path)
    run([*GIT, "commit", "-q", "--amend", "--no-edit"], tmp_path)
    assert experiment_rows(tmp_path, dvc_experiments=False)[0]["code_only"] is False
    # dirty (the code changed after dvc.lock was written): shown, as what `dvc repro` would change
    head = commit_code_change(tmp_path, 2, 6)
    (tmp_path / "src/mnist_lab/module_0.py").write_text("# edited, not rerun\n")
    run([*GIT, "commit", "-qam", "edited"], tmp_path)
    (tmp_path / "metrics.json").write_text((tmp_path / "metrics.json").read_text() + " ")
    run([*GIT, "commit", "-qam", "touch metrics"], tmp_path)
    top = experiment_rows(tmp_path, dvc_experiments=False)[0]
    assert top["dirty"] and top["code_only"] is False
    # labelled by its user: shown
    commit_code_change(tmp_path, 2, 7)  # metrics.json as before the touch: an experiment again
    head = commit_code_change(tmp_path, 2, 8)
    assert experiment_rows(tmp_path, dvc_experiments=False)[0]["code_only"] is True
    set_label(tmp_path, head, "baseline")
    assert experiment_rows(tmp_path, dvc_experiments=False)[0]["code_only"] is False


def test_an_experiment_that_reproduced_a_code_only_baseline_is_listed(tmp_path) -> None:
    """A DVC experiment whose results equal its baseline's, on a baseline that changed code alone (its
    results those of the experiment before it): that earlier commit holds the same results, but it is
    the baseline's ancestor, so the experiment was not applied and committed there; it stays a row."""
    from mnist_lab.experiments.table import applied_experiments, experiment_rows
    from tests.board.experiment_history import GIT, commit_code_change, write_history
    from tests.helpers import run

    write_history(tmp_path, 2)
    baseline = commit_code_change(tmp_path, 1)
    same = run(
        [*GIT, "commit-tree", f"{baseline}^{{tree}}", "-p", baseline, "-m", "no change"], tmp_path
    ).stdout.strip()
    run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/rerun", same], tmp_path)
    rows = experiment_rows(tmp_path)
    assert [row["id"] for row in rows][:2] == [baseline, "exp:rerun"]
    previous = rows[2]["commit"]
    assert applied_experiments(tmp_path, previous) == [] and applied_experiments(tmp_path, baseline) == []


def test_a_sweep_reproducing_shared_results_asks_git_once_per_pair(tmp_path, monkeypatch) -> None:
    """Commits that changed code alone share their results with the experiment before them: each DVC
    experiment reproducing those results asked git whether each such commit came before its baseline, a
    process per experiment and commit (2,400 for 150 experiments here: 12 s for the table)."""
    from mnist_lab.experiments import table
    from mnist_lab.system import commands
    from tests.board.experiment_history import GIT, commit_code_change, write_history
    from tests.helpers import run

    write_history(tmp_path, 2)
    shared = [commit_code_change(tmp_path, 1, version) for version in (1, 2, 3)]
    baseline = shared[-1]
    for number in range(12):  # a sweep whose every point reproduced the baseline's results
        same = run(
            [*GIT, "commit-tree", f"{baseline}^{{tree}}", "-p", baseline, "-m", f"run {number}"], tmp_path
        ).stdout.strip()
        run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/run-{number}", same], tmp_path)
    asked = []
    git = commands.git

    def counting(*args, **kwargs):
        if args and args[0] == "merge-base":
            asked.append(args)
        return git(*args, **kwargs)

    monkeypatch.setattr(table.commands, "git", counting)
    table._is_ancestor.cache_clear()
    rows = table.experiment_rows(tmp_path)
    assert sum(row["source"] == "dvc-experiment" for row in rows) == 12  # none taken for applied
    assert len(asked) == len(set(asked)) <= 3  # one per commit holding the same results
