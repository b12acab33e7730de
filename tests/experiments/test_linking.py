"""Experiment commits and MLflow runs find each other, in both directions (real git, DVC and store)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from mnist_lab.experiments.linking import RunLink, parse_trailers
from tests.helpers import commit_all, copy_repository, free_port, run

MODELS = ("sgd", "random_forest", "mlp", "cnn")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = copy_repository(tmp_path_factory.mktemp("linking") / "repo")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": "linking",
        "DVC_ROOT": "",
        "DAGSHUB_REPO": "",
    }
    run(["mnist-lab", "data", "restore"], root, env)
    # as if the CNN were a model new to this repository: DVC ignores its files by adding a line here
    ignored = root / "models" / ".gitignore"
    ignored.write_text(ignored.read_text().replace("/cnn\n", ""))
    # and as if an output folder were new: DVC writes its ignore file when the stage first runs
    (root / "outputs" / "timing" / ".gitignore").unlink(missing_ok=True)
    commit_all(root, "Without the CNN's ignore line")
    run(["dvc", "repro"], root, env)
    source = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    done = run(["mnist-lab", "commit", "-m", "First experiment"], root, env)
    leftover = run(["git", "status", "--porcelain"], root).stdout
    commit = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    links = {m: json.loads((root / "reports" / m / "mlflow.json").read_text()) for m in MODELS}
    return {"root": root, "env": env, "source": source, "commit": commit, "links": links, "out": done.stdout,
            "leftover": leftover}  # fmt: skip


def test_the_commit_holds_the_experiment_and_names_its_runs(experiment: dict) -> None:
    root = experiment["root"]
    files = set(run(["git", "show", "--name-only", "--format=", "HEAD"], root).stdout.split())
    assert {"dvc.lock", "metrics.csv", "best_model.json", "reports/sgd/mlflow.json"} <= files
    assert not any(f.startswith("src/") for f in files)
    assert {"models/.gitignore", "outputs/timing/.gitignore"} <= files
    assert experiment["leftover"] == ""  # nothing of the experiment left out
    message = run(["git", "log", "-1", "--format=%B"], root).stdout
    assert message.startswith("First experiment\n")
    links = {link.model: link for link in parse_trailers(message)}
    assert set(links) == set(MODELS)
    for model in MODELS:
        assert links[model] == RunLink(
            model, experiment["links"][model]["run_id"], experiment["links"][model]["record_id"]
        )
    trailers = run(["git", "interpret-trailers", "--parse"], root, check=False)
    assert trailers.returncode == 0


def test_each_run_is_tagged_with_its_results_commit_and_source(experiment: dict) -> None:
    client = mlflow.MlflowClient(experiment["env"]["MLFLOW_TRACKING_URI"])
    for model in MODELS:
        tags = client.get_run(experiment["links"][model]["run_id"]).data.tags
        assert tags["mnist_lab.results_commit"] == experiment["commit"]
        assert tags["mnist_lab.git_commit"] == experiment["source"]  # the commit it ran from


def test_commit_to_runs_and_run_to_commit(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    listed = run(["mnist-lab", "runs", "HEAD"], root, env).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [
        [m, experiment["links"][m]["run_id"]] for m in MODELS
    ]
    for model in MODELS:
        for key in ("run_id", "record_id"):
            found = run(["mnist-lab", "commit-of", experiment["links"][model][key]], root, env).stdout.strip()
            assert found == experiment["commit"]
    # the copy's first commit has no trailers: its runs come from the reports/*/mlflow.json it holds
    listed = run(["mnist-lab", "runs", "HEAD~1"], root, env).stdout.splitlines()
    committed = {
        m: json.loads(run(["git", "show", f"HEAD~1:reports/{m}/mlflow.json"], root).stdout) for m in MODELS
    }
    assert sorted(line.split("\t")[0] for line in listed) == sorted(MODELS)
    assert all(line.split("\t")[2] == committed[line.split("\t")[0]]["record_id"] for line in listed)
    empty_tree = run(["git", "hash-object", "-t", "tree", "/dev/null"], root).stdout.strip()
    bare = run(["git", "commit-tree", empty_tree, "-m", "nothing"], root).stdout.strip()
    missing = run(["mnist-lab", "runs", bare], root, env, check=False)
    assert missing.returncode == 2 and "names no MLflow runs" in missing.stderr


def test_commit_refuses_what_would_mislead(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    again = run(["mnist-lab", "commit", "-m", "again"], root, env, check=False)
    assert again.returncode == 2 and "nothing to commit" in again.stderr
    blank = run(
        ["mnist-lab", "commit", "-m", "  \n "], root, env, check=False
    )  # the trailers would be its subject
    assert (
        blank.returncode == 2
        and "the commit message is empty: say what this experiment changes" in blank.stderr
    )
    control = run(["mnist-lab", "commit", "-m", "tuned\x1enext"], root, env, check=False)
    assert control.returncode == 2 and "holds a control character ('\\x1e')" in control.stderr
    params = root / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("alpha: 0.0001", "alpha: 0.001", 1))
    try:
        stale = run(["mnist-lab", "commit", "-m", "stale"], root, env, check=False)
        assert (
            stale.returncode == 2
            and "not up to date" in stale.stderr
            and "run `dvc repro` first" in stale.stderr
        )
        assert run(["git", "rev-parse", "HEAD"], root).stdout.strip() == experiment["commit"]
    finally:
        params.write_text(original)
        run(["git", "reset", "-q"], root)


def test_a_run_from_a_dirty_tree_carries_the_diff(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    report = root / "src" / "mnist_lab" / "experiments" / "report.py"
    report.write_text(report.read_text() + "\n# an uncommitted change\n")
    try:
        run(["dvc", "repro", "-f", "-s", "evaluate@sgd"], root, env)
        run_id = json.loads((root / "reports" / "sgd" / "mlflow.json").read_text())["run_id"]
        client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
        assert client.get_run(run_id).data.tags["mnist_lab.git_dirty"] == "true"
        diff = Path(
            client.download_artifacts(run_id, "git/uncommitted.diff", str(root.parent / "dl"))
        ).read_text()
        assert "+# an uncommitted change" in diff and "report.py" in diff
    finally:
        run(["git", "checkout", "--", "src", "reports", "dvc.lock", "metrics.csv", "best_model.json"], root)


def test_an_experiment_committed_without_rerunning_is_dirty_where_dvc_status_says(experiment: dict) -> None:
    from mnist_lab.experiments.table import experiment_rows

    root = experiment["root"]
    (row,) = [r for r in experiment_rows(root, dvc_experiments=False) if r["id"] == experiment["commit"]]
    assert (row["dirty"], row["dirty_because"]) == (False, [])  # what `mnist-lab commit` committed
    # committed around `mnist-lab commit` (which refuses it): a param and the metrics edited, nothing rerun
    params, metrics = root / "params.yaml", root / "metrics.json"
    params.write_text(params.read_text().replace("alpha: 0.0001", "alpha: 0.001", 1))  # models.sgd.alpha
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.', '"accuracy": 1.', 1))
    try:
        run(["git", "commit", "-qam", "by hand"], root)
        status = json.loads(run(["dvc", "status", "--json"], root, experiment["env"]).stdout)
        row = experiment_rows(root, dvc_experiments=False)[0]
        assert row["message"] == "by hand" and row["dirty"] is True, (row["dirty_because"], status)
        # what DVC says of the same tree: the file params.yaml (a dep of `validate`), the param (of
        # `train@sgd`, which declares `models.sgd`), the output metrics.json
        assert status["validate"] == [{"changed deps": {"params.yaml": "modified"}}]
        assert status["train@sgd"] == [{"changed deps": {"params.yaml": {"models.sgd": "modified"}}}]
        assert {"changed outs": {"metrics.json": "modified"}} in status["select"]
        assert row["dirty_because"] == ["metrics.json", "params.yaml", "params.yaml: models.sgd.alpha"]
        # and `mnist-lab history` says so
        shown = run(["mnist-lab", "history", "-n", "1"], root, experiment["env"]).stdout
        assert "dirty: its results are not what its own files make; dvc.lock disagrees with metrics.json, " \
               "params.yaml, params.yaml: models.sgd.alpha" in shown, shown  # fmt: skip
        # and `mnist-lab compare` of it
        compared = run(["mnist-lab", "compare", "HEAD~1", "HEAD"], root, experiment["env"]).stdout
        warning = (
            "warning: HEAD is dirty: its results are not what its own files make; dvc.lock disagrees with "
            "metrics.json, params.yaml, params.yaml: models.sgd.alpha"
        )
        assert warning in compared, compared
        assert "warning: HEAD~1" not in compared
    finally:
        run(["git", "reset", "-q", "--hard", experiment["commit"]], root)


def test_committing_on_a_detached_head_says_how_to_keep_the_commit(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    branch = run(["git", "symbolic-ref", "--short", "HEAD"], root).stdout.strip()
    run(["git", "checkout", "-q", "--detach"], root)
    try:
        params = root / "params.yaml"
        params.write_text(params.read_text().replace("alpha: 0.0001", "alpha: 0.01", 1))  # models.sgd.alpha
        run(["dvc", "repro"], root, env)
        done = run(["mnist-lab", "commit", "-m", "On no branch"], root, env)
        detached = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
        assert (
            f"warning: HEAD is detached: no branch holds {detached[:12]}, and the next checkout leaves it "
            "behind (git gc deletes it in time); keep it with `git switch -c <new branch>`"
        ) in done.stderr
    finally:
        run(["git", "checkout", "-q", "-f", branch], root)
        run(["dvc", "checkout", "--force"], root, env)


# runs last: it commits a second experiment
def test_history_lists_experiments_with_what_changed(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("alpha: 0.0001", "alpha: 0.001", 1))  # models.sgd.alpha
    run(["dvc", "repro"], root, env)
    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nstaged by the user, not part of the experiment\n")
    run(["git", "add", "README.md"], root)
    on_a_branch = run(["mnist-lab", "commit", "-m", "SGD: stronger regularisation"], root, env)
    assert "HEAD is detached" not in on_a_branch.stderr
    assert "README.md" not in run(["git", "show", "--name-only", "--format=", "HEAD"], root).stdout
    assert run(["git", "diff", "--cached", "--name-only"], root).stdout.split() == [
        "README.md"
    ]  # still staged
    run(["git", "reset", "-q", "--hard", "HEAD"], root)
    rows = json.loads(run(["mnist-lab", "history", "--json"], root, env).stdout)
    newest, previous = rows[0], rows[1]
    assert newest["message"] == "SGD: stronger regularisation" and previous["commit"] == experiment["commit"]
    assert newest["params_changed"] == {"models.sgd.alpha": [0.0001, 0.001]}
    assert set(newest["runs"]) == set(MODELS) and all(newest["runs"].values())
    assert newest["data_version"] == previous["data_version"]
    assert newest["accuracy"]["random_forest"] == previous["accuracy"]["random_forest"]
    table = run(["mnist-lab", "history", "--md", "-n", "2"], root, env).stdout.splitlines()
    assert table[0].startswith("| commit |") and len(table) == 4
    assert "models.sgd.alpha: 0.0001 → 0.001" in table[2]
    text = run(["mnist-lab", "history"], root, env).stdout
    assert "models.sgd.alpha: 0.0001 -> 0.001" in text
    assert f"    accuracy sgd {newest['accuracy']['sgd']:.4f}, random_forest " in text
    bad = run(["mnist-lab", "history", "no-such-rev"], root, env, check=False)
    assert (
        bad.returncode == 2
        and "'no-such-rev' is neither a commit of this repository nor a DVC experiment" in bad.stderr
    )


def test_compare_two_experiments(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    result = json.loads(run(["mnist-lab", "compare", "HEAD~1", "HEAD", "--json"], root, env).stdout)
    assert result["params"] == {"models.sgd.alpha": {"old": 0.0001, "new": 0.001}}
    sgd = result["metrics"]["models.sgd.accuracy"]
    assert sgd["diff"] == pytest.approx(sgd["new"] - sgd["old"])
    assert result["metrics"]["models.random_forest.accuracy"]["diff"] == 0
    assert result["data"]["old"] == result["data"]["new"] and result["code_changed"] == []
    assert {r["model"] for r in result["runs"]["new"]} == set(MODELS)
    text = run(["mnist-lab", "compare", "HEAD~1"], root, env).stdout  # against the workspace
    assert "HEAD~1 -> workspace" in text and "models.sgd.alpha: 0.0001 -> 0.001" in text
    assert "data: unchanged" in text and "warning" not in text
    assert result["stale"] == {"old": [], "new": []}
    # params changed in the workspace but not rerun: the metrics shown are not those of the params shown
    params = root / "params.yaml"
    committed = params.read_text()
    params.write_text(committed.replace("n_estimators: 100", "n_estimators: 20", 1))
    try:
        stale = run(["mnist-lab", "compare", "HEAD"], root, env).stdout
    finally:
        params.write_text(committed)
    assert stale.splitlines()[2].startswith(
        "warning: the workspace's results are not up to date (changed: validate, "
    ), stale
    assert "run `dvc repro` first" in stale.splitlines()[2]
    # a new source file git does not track yet is changed code of the workspace ("none" was said)
    new_module = root / "src" / "mnist_lab" / "core" / "new module.py"
    new_module.write_text("X = 1\n")
    try:
        with_new = run(["mnist-lab", "compare", "HEAD"], root, env).stdout
    finally:
        new_module.unlink()
    assert "code changed: src/mnist_lab/core/new module.py" in with_new.splitlines(), with_new
    bad = run(["mnist-lab", "compare", "no-such-rev"], root, env, check=False)
    assert (
        bad.returncode == 2 and "'no-such-rev' is neither a commit of this repository nor a DVC" in bad.stderr
    )
    # a DVC experiment by the name `dvc exp show` prints (its ref as DVC keeps it)
    old = run(["git", "rev-parse", "HEAD~1"], root).stdout.strip()
    ref = f"refs/exps/{old[:2]}/{old[2:]}/macho-bree"
    run(["git", "update-ref", ref, old], root)
    try:
        for name in ("macho-bree", "exp:macho-bree"):
            named = json.loads(run(["mnist-lab", "compare", name, "HEAD", "--json"], root, env).stdout)
            assert named["params"] == result["params"] and named["metrics"] == result["metrics"]
    finally:
        run(["git", "update-ref", "-d", ref], root)


def test_an_experiment_committed_without_mnist_lab_commit_is_found_and_linked(experiment: dict) -> None:
    """As `dvc exp branch` leaves it: a commit of the experiment's files with no trailers."""
    root, env = experiment["root"], experiment["env"]
    run(["git", "checkout", "-q", "-b", "plain"], root)
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("n_estimators: 100", "n_estimators: 20", 1))
    run(["dvc", "repro"], root, env)
    commit = commit_all(root, "plain commit")
    forest = json.loads((root / "reports" / "random_forest" / "mlflow.json").read_text())
    listed = dict(line.split("\t")[:2] for line in run(["mnist-lab", "runs"], root, env).stdout.splitlines())
    assert listed["random_forest"] == forest["run_id"]
    assert run(["mnist-lab", "commit-of", forest["run_id"]], root, env).stdout.strip() == commit
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert "mnist_lab.results_commit" not in client.get_run(forest["run_id"]).data.tags
    empty = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'another-store.db'}"}
    elsewhere = run(["mnist-lab", "link", "plain"], root, empty, check=False)  # a store without these runs
    assert elsewhere.returncode == 1  # link tagged nothing: a script must see it (it exited 0)
    assert f"its run {forest['run_id']} is not in the tracking store sqlite:///" in elsewhere.stderr
    assert "did not answer" not in elsewhere.stderr and "NOT tagged" in elsewhere.stdout
    linked = run(["mnist-lab", "link", "plain"], root, env)
    assert f"tagged the new runs of {commit[:12]} with it" in linked.stdout
    assert client.get_run(forest["run_id"]).data.tags["mnist_lab.results_commit"] == commit
    # the runs the plain commit carries over unchanged keep the commit that recorded them first
    sgd = json.loads((root / "reports" / "sgd" / "mlflow.json").read_text())["run_id"]
    first = run(["mnist-lab", "commit-of", sgd], root, env).stdout.strip()
    assert first != commit and client.get_run(sgd).data.tags["mnist_lab.results_commit"] == first
    assert f"sgd: {sgd} (record " in linked.stdout
    assert f" - keeps {first[:12]}, the commit that recorded it first" in linked.stdout
    again = run(["mnist-lab", "link", "plain"], root, env)  # it said "tagged the new runs" once more
    assert f"the runs of {commit[:12]} were tagged already: nothing to do" in again.stdout
    assert (
        f"random_forest: {forest['run_id']} (record " in again.stdout
        and " - tagged with it already" in again.stdout
    )
    nothing = run(["mnist-lab", "link", "no-such-rev"], root, env, check=False)
    assert nothing.returncode == 2 and "'no-such-rev' is not a commit" in nothing.stderr


def test_batch_predictions_as_an_optional_dvc_stage(experiment: dict) -> None:
    root, env = experiment["root"], experiment["env"]
    before = (root / "dvc.yaml").read_text()
    added = run(["mnist-lab", "predict", "data/t10k-images-idx3-ubyte.gz", "-o", "predictions/test.csv",
                 "--as-stage"], root, env)  # fmt: skip
    assert "added stage `predict` to dvc.yaml" in added.stdout
    after = (root / "dvc.yaml").read_text()
    assert after.startswith(before) and after[len(before) :].startswith("  predict:")  # the rest untouched
    again = run(["mnist-lab", "predict", "data/t10k-images-idx3-ubyte.gz", "-o", "predictions/all.csv",
                 "--as-stage"], root, env)  # fmt: skip
    assert "replaced stage `predict` in dvc.yaml (was: python -m mnist_lab.cli predict " in again.stdout
    assert (root / "dvc.yaml").read_text() == after.replace("predictions/test.csv", "predictions/all.csv")
    outside = root.parent / "elsewhere.csv"
    outside.write_text("1,2\n")
    refused = run(["mnist-lab", "predict", str(outside), "-o", "x.csv", "--as-stage"], root, env, check=False)
    assert refused.returncode == 2 and "outside the repository, so a clone could not rerun" in refused.stderr
    run(["mnist-lab", "predict", "data/t10k-images-idx3-ubyte.gz", "-o", "predictions/test.csv",
         "--as-stage"], root, env)  # fmt: skip
    assert (root / "dvc.yaml").read_text() == after
    run(["dvc", "repro", "predict"], root, env)
    best = json.loads((root / "best_model.json").read_text())["model"]
    predicted = [
        line.split(",")[1] for line in (root / "reports" / best / "predictions.csv").read_text().split()[1:]
    ]
    assert [
        line.split(",")[0] for line in (root / "predictions" / "test.csv").read_text().split()[1:]
    ] == predicted
    assert "Data and pipelines are up to date." in run(["dvc", "status"], root, env).stdout
    nothing = run(["mnist-lab", "predict", "nope.csv", "-o", "x.csv", "--as-stage"], root, env, check=False)
    assert nothing.returncode == 2 and "nope.csv: no such file" in nothing.stderr
    # committed as an experiment: with its dvc.yaml and DVC's ignore file for its output (the commit held a
    # dvc.lock whose `predict` stage its dvc.yaml lacked, and left both behind)
    done = run(["mnist-lab", "commit", "-m", "Batch predictions as a stage"], root, env)
    assert "with the changed code its results were made with: dvc.yaml, predictions/.gitignore" in done.stdout
    assert run(["git", "status", "--porcelain"], root).stdout == ""
    assert "  predict:" in run(["git", "show", "HEAD:dvc.yaml"], root).stdout


def test_report_says_when_the_workspaces_results_are_not_up_to_date(experiment: dict) -> None:
    """params.yaml edited, not rerun: `report` printed the old table without a word (`compare` warns)."""
    root, env = experiment["root"], experiment["env"]
    assert "not up to date" not in run(["mnist-lab", "report"], root, env).stderr
    params = root / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("seed: 42", "seed: 7", 1))
    try:
        done = run(["mnist-lab", "report"], root, env)
    finally:
        params.write_text(original)
    assert "f1_macro" in done.stdout  # the table, as before
    assert "warning: the workspace's results are not up to date (changed: " in done.stderr
    assert "run `dvc repro` first" in done.stderr


def test_an_experiment_is_committed_with_the_code_it_ran(experiment: dict) -> None:
    """A stage's code edited, `dvc repro`, `mnist-lab commit`: the commit held the stage's new code listing
    but not the edited source, so `history` called it dirty and `git status` still showed the edit."""
    root, env = experiment["root"], experiment["env"]
    select = root / "src" / "mnist_lab" / "stages" / "select.py"
    select.write_text(select.read_text() + "# a harmless comment\n")
    ignored = root / ".gitignore"
    own = ignored.read_text()
    ignored.write_text(own + "/my-scratch/\n")  # the team's file, edited for oneself: not the experiment's
    run(["dvc", "repro"], root, env)
    done = run(["mnist-lab", "commit", "-m", "select: a comment"], root, env)
    assert "with the changed code its results were made with: src/mnist_lab/stages/select.py\n" in done.stdout
    assert run(["git", "status", "--porcelain"], root).stdout == " M .gitignore\n"
    ignored.write_text(own)
    newest = json.loads(run(["mnist-lab", "history", "-n", "1", "--json", "--all"], root, env).stdout)[0]
    assert newest["message"] == "select: a comment" and newest["dirty_because"] == []


def test_a_failed_commit_leaves_the_index_and_code_no_listing_names_is_committed(experiment: dict) -> None:
    """A commit git refused (a hook, no identity) left the experiment's files staged, for the user's next
    plain `git commit` to take without trailers. And an edit to code no stage's listing names (the CLI)
    reruns the `code` stage, whose dvc.lock hash covers all of src/mnist_lab: the edit was left out of the
    commit, so `dvc status` was not clean at it."""
    root, env = experiment["root"], experiment["env"]
    board = root / "src" / "mnist_lab" / "cli" / "board.py"
    board.write_text(board.read_text() + "# a comment no stage runs\n")
    run(["dvc", "repro"], root, env)
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'refused by the team hook' >&2\nexit 1\n")
    hook.chmod(0o755)
    # the user's own index entries, which a tree of the index (write-tree / read-tree) lost: an
    # intent-to-add (`git add -N`) and an assume-unchanged flag
    (root / "notes.txt").write_text("my notes\n")
    run(["git", "add", "-N", "notes.txt"], root)
    run(["git", "update-index", "--assume-unchanged", "README.md"], root)
    staged = run(["git", "diff", "--cached", "--name-only"], root).stdout
    before = run(["git", "ls-files", "--stage", "-v", "--", "notes.txt", "README.md"], root).stdout
    index_time = (root / ".git" / "index").stat().st_mtime_ns  # (a newer index made git trust stale entries)
    refused = run(["mnist-lab", "commit", "-m", "cli: a comment"], root, env, check=False)
    assert refused.returncode != 0 and "refused by the team hook" in refused.stderr
    assert "nothing was committed, the index is as it was" in refused.stderr
    assert "MLflow-Run" not in refused.stderr  # git's own words, not the whole command line
    assert run(["git", "diff", "--cached", "--name-only"], root).stdout == staged == ""
    assert run(["git", "ls-files", "--stage", "-v", "--", "notes.txt", "README.md"], root).stdout == before
    assert (root / ".git" / "index").stat().st_mtime_ns == index_time
    assert run(["git", "status", "--porcelain", "notes.txt"], root).stdout == " A notes.txt\n"
    run(["git", "update-index", "--no-assume-unchanged", "README.md"], root)
    run(["git", "rm", "--cached", "--quiet", "notes.txt"], root)
    (root / "notes.txt").unlink()
    hook.unlink()
    done = run(["mnist-lab", "commit", "-m", "cli: a comment"], root, env)
    assert "src/mnist_lab/cli/board.py" in done.stdout
    assert run(["git", "status", "--porcelain"], root).stdout == ""
    assert run(["dvc", "status", "--quiet"], root, env, check=False).returncode == 0


def _commit_files(root: Path, files: dict[str, str | None], message: str) -> str:
    """Write (or with None delete) files and commit them with `message`; the commit id."""
    for name, text in files.items():
        path = root / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return commit_all(root, message)


def _run_file(run_id: str, record_id: str) -> str:
    return json.dumps({"record_id": record_id, "run_id": run_id})


def test_the_oldest_experiments_run_files_without_a_record_id_are_read(tmp_path: Path) -> None:
    """This repository's first experiments name their runs in reports/<model>/mlflow.json without a record id
    (the outbox came later): `runs`, `compare` and `commit-of` ended in a KeyError traceback on them."""
    from mnist_lab.experiments.linking import commit_of_run, runs_of_commit

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    old_run = "a1" * 16
    files = {
        "reports/sgd/mlflow.json": json.dumps({"run_id": old_run, "experiment_id": "1"}),
        "reports/mlp/mlflow.json": "{damaged",
        "reports/cnn/mlflow.json": json.dumps(["not", "a", "run"]),
    }
    first = _commit_files(tmp_path, {**files, "dvc.yaml": "stages: {}\n"}, "the first experiment")
    assert runs_of_commit(tmp_path, first) == [RunLink("sgd", old_run, old_run)]
    assert commit_of_run(tmp_path, old_run[:8]) == first
    done = run(["mnist-lab", "runs", first], tmp_path)
    assert old_run in done.stdout and "Traceback" not in done.stderr


def test_commit_of_finds_the_commit_that_first_recorded_the_run(tmp_path: Path, tracking_store: str) -> None:
    """Not the later commit that removed its mlflow.json, nor a later commit naming it again."""
    from mnist_lab.experiments.linking import LinkingError, commit_of_run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    run_a, record_a = "a1" * 16, "a2" * 16
    added = _commit_files(tmp_path, {"reports/sgd/mlflow.json": _run_file(run_a, record_a)}, "plain commit")
    _commit_files(tmp_path, {"reports/sgd/mlflow.json": _run_file("c1" * 16, "c2" * 16)}, "next experiment")
    _commit_files(tmp_path, {"reports/sgd/mlflow.json": None}, "remove the reports")
    for wanted in (run_a, record_a, run_a[:8], record_a[:10].upper()):
        assert commit_of_run(tmp_path, wanted) == added

    run_b, record_b = "b1" * 16, "b2" * 16
    trailer = f"{RunLink('mlp', run_b, record_b).trailer()}"
    first = _commit_files(tmp_path, {"notes.txt": "1"}, f"Experiment B\n\n{trailer}")
    _commit_files(tmp_path, {"notes.txt": "2"}, f"Revert to B\n\n{trailer}")
    assert commit_of_run(tmp_path, run_b) == first
    assert commit_of_run(tmp_path, record_b[:8]) == first

    twin = "a1a1a1a1" + "f" * 24  # shares its first 8 characters with run_a
    _commit_files(tmp_path, {"notes.txt": "3"}, f"Twin\n\n{RunLink('cnn', twin, 'd' * 32).trailer()}")
    with pytest.raises(LinkingError, match="'a1a1a1a1' is ambiguous: it starts the ids of 2 runs"):
        commit_of_run(tmp_path, "a1a1a1a1")
    assert commit_of_run(tmp_path, twin[:9]) != added
    with pytest.raises(LinkingError, match="not a run id or record id: give 8 to 32 hexadecimal"):
        commit_of_run(tmp_path, "sgd")
    with pytest.raises(LinkingError, match="no commit names run 'eeeeeeee': outside the git history, give"):
        commit_of_run(tmp_path, "e" * 8)
    with pytest.raises(LinkingError, match=f"no commit names run '{'e' * 32}' and the tracking store sqlite"):
        commit_of_run(tmp_path, "e" * 32)


def test_commit_of_a_synced_run_an_uncommitted_one_and_an_absent_store(
    tmp_path: Path, tracking_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that waited in the outbox: its commit names the record (run=pending), this clone's ledger
    the run id, so a prefix of the run id finds the commit offline. A run of the workspace not committed
    yet is said to be that. A store that does not answer is not 'does not know it'."""
    from mnist_lab.experiments.linking import LinkingError, commit_of_run, resolve_sent_runs
    from mnist_lab.tracking import outbox

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    synced_run, synced_record = "5e" * 16, "5f" * 16
    trailer = RunLink("cnn", None, synced_record).trailer()
    commit = _commit_files(tmp_path, {"notes.txt": "1"}, f"Experiment while the server was away\n\n{trailer}")
    ledger = {synced_record: {"run_id": synced_run, "experiment_id": "1", "model_uri": None,
                              "tracking_uri": "http://127.0.0.1:1"}}  # fmt: skip
    (tmp_path / outbox.SENT).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / outbox.SENT).write_text(json.dumps(ledger))
    assert commit_of_run(tmp_path, synced_run[:8]) == commit == commit_of_run(tmp_path, synced_run)
    # sent to a server .env no longer names (here the store is a local one): its id, not "pending"
    assert resolve_sent_runs(tmp_path, [RunLink("cnn", None, synced_record)]) == [
        RunLink("cnn", synced_run, synced_record)
    ]
    # a later commit naming the run by its id (trailers written after the sync): still the first commit,
    # whichever id is given
    later = RunLink("cnn", synced_run, synced_record).trailer()
    _commit_files(tmp_path, {"notes.txt": "2"}, f"Register the challenger\n\n{later}")
    for wanted in (synced_run[:8], synced_run, synced_record[:8]):
        assert commit_of_run(tmp_path, wanted) == commit

    workspace_run, workspace_record = "7a" * 16, "7b" * 16
    (tmp_path / "reports" / "mlp").mkdir(parents=True)
    (tmp_path / "reports" / "mlp" / "mlflow.json").write_text(_run_file(workspace_run, workspace_record))
    for wanted in (workspace_run[:8], workspace_record):
        with pytest.raises(LinkingError, match=r"\(record 7b7b.*, mlp\) holds the workspace's results, not"):
            commit_of_run(tmp_path, wanted)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(
        LinkingError, match=r"the tracking store http://127.0.0.1:\d+ that could know it did not"
    ):
        commit_of_run(tmp_path, "e" * 32)
    # a run sent from the outbox that no commit names: why is the store's answer (here: it is away)
    ledger["6e" * 16] = {**ledger[synced_record], "run_id": "6d" * 16}
    (tmp_path / outbox.SENT).write_text(json.dumps(ledger))
    with pytest.raises(
        LinkingError,
        match=r"run '6d6d6d6d' was sent from this clone's outbox \(record (6e){16}\): no commit names run "
        r"'(6e){16}', and the tracking store http://127.0.0.1:\d+ that could know it did not answer",
    ):
        commit_of_run(tmp_path, "6d" * 4)


def test_commit_of_prefers_the_branches_to_dvcs_experiment_refs(tmp_path: Path, tracking_store: str) -> None:
    """`dvc exp run` keeps each experiment as a commit under refs/exps, older than the commit a user makes
    after `dvc exp apply`: that user commit is the answer; the experiment's commit only for a run never
    committed otherwise."""
    from mnist_lab.experiments.linking import commit_of_run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    base = _commit_files(tmp_path, {"params.yaml": "seed: 1\n"}, "base")
    applied, orphan = ("a1" * 16, "a2" * 16), ("b1" * 16, "b2" * 16)
    experiment_commits = []
    for run_id, record_id in (applied, orphan):  # what `dvc exp run` stores: a commit on a ref of its own
        _commit_files(tmp_path, {"reports/sgd/mlflow.json": _run_file(run_id, record_id)}, "exp")
        experiment_commits.append(run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip())
        run(["git", "update-ref", f"refs/exps/{run_id[:4]}", "HEAD"], tmp_path)
        run(["git", "reset", "-q", "--hard", base], tmp_path)
        (tmp_path / "reports").exists() and run(["git", "clean", "-qfd"], tmp_path)
    trailer = RunLink("sgd", *applied).trailer()
    user_commit = _commit_files(
        tmp_path, {"reports/sgd/mlflow.json": _run_file(*applied)}, f"Best SGD\n\n{trailer}"
    )
    assert commit_of_run(tmp_path, applied[0]) == user_commit
    assert commit_of_run(tmp_path, orphan[0]) == experiment_commits[1]


def test_a_run_waiting_in_the_outbox_keeps_the_commit_that_recorded_it_first(
    tmp_path: Path, tracking_store: str
) -> None:
    """As for a sent run: a later commit carrying the same pending run does not take over its tag."""
    from mnist_lab.experiments.linking import RESULTS_COMMIT_TAG, tag_runs_with_commit
    from mnist_lab.tracking import outbox
    from tests.helpers import run_record

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    record = run_record()
    outbox.spool(record, tmp_path, reason="the server was away")
    link = RunLink("m", None, record.record_id)
    first = _commit_files(tmp_path, {"notes.txt": "1"}, f"Experiment\n\n{link.trailer()}")
    assert tag_runs_with_commit(tmp_path, [link], first).untagged == {}
    assert outbox.pending_tags(tmp_path, record.record_id)[RESULTS_COMMIT_TAG] == first
    later = _commit_files(tmp_path, {"notes.txt": "2"}, f"Another model\n\n{link.trailer()}")
    tagging = tag_runs_with_commit(tmp_path, [link], later)
    assert tagging.kept == {"m": first} and tagging.untagged == {}
    assert outbox.pending_tags(tmp_path, record.record_id)[RESULTS_COMMIT_TAG] == first
    run(["git", "checkout", "-q", "--orphan", "redone"], tmp_path)  # both rewritten away: the next
    run(["git", "branch", "-q", "-D", "main"], tmp_path)  # commit, not an ancestor, takes the tag
    again = _commit_files(tmp_path, {"notes.txt": "3"}, f"Redone\n\n{link.trailer()}")
    assert tag_runs_with_commit(tmp_path, [link], again).kept == {}
    assert outbox.pending_tags(tmp_path, record.record_id)[RESULTS_COMMIT_TAG] == again


def test_history_and_compare_name_a_run_sent_since_its_commit_not_pending(tmp_path: Path) -> None:
    """Committed while its run waited in the outbox (run=pending), then `mnist-lab sync`: `runs` gave its id,
    but `history`, `compare` and the board still said pending. This clone's ledger names it (offline)."""
    from mnist_lab.experiments.compare import _runs
    from mnist_lab.experiments.history import experiment_history
    from mnist_lab.experiments.table import experiment_rows
    from mnist_lab.tracking import outbox

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    synced_run, synced_record = "5e" * 16, "5f" * 16
    best = {"model": "cnn", "metric": "accuracy", "value": 0.9}
    metrics = {"best": best, "models": {"cnn": {"accuracy": 0.9}}}
    trailer = RunLink("cnn", None, synced_record).trailer()
    _commit_files(tmp_path, {"metrics.json": json.dumps(metrics)}, f"Experiment, server away\n\n{trailer}")
    assert experiment_rows(tmp_path)[0]["runs"] == {"cnn": None}  # not sent yet: pending
    ledger = {synced_record: {"run_id": synced_run, "experiment_id": "1", "model_uri": None,
                              "tracking_uri": "http://127.0.0.1:1"}}  # fmt: skip
    (tmp_path / outbox.SENT).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / outbox.SENT).write_text(json.dumps(ledger))
    assert experiment_rows(tmp_path)[0]["runs"] == {"cnn": synced_run}
    assert experiment_history(tmp_path)[0].runs == {"cnn": synced_run}
    assert _runs(tmp_path, "HEAD") == [RunLink("cnn", synced_run, synced_record)]


def test_a_sibling_commit_naming_the_same_run_leaves_its_tag_where_commit_of_finds_it(
    tmp_path: Path, tracking_store: str
) -> None:
    """Two experiments from one queue, both sharing an unchanged model's run: one committed by `mnist-lab
    commit` (trailers) on main, the other kept with `dvc exp branch` (its mlflow.json files) and linked.
    Linking the branch took the tag (only an ancestor kept it), so the tag and `commit-of` named different
    commits. Either order: the tag follows `commit-of`."""
    from mnist_lab.experiments.linking import RESULTS_COMMIT_TAG, commit_of_run, tag_runs_with_commit
    from mnist_lab.tracking import outbox
    from tests.helpers import run_record

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    base = _commit_files(tmp_path, {"params.yaml": "seed: 1\n", ".gitignore": ".mnist-lab/\n"}, "base")
    record = run_record()
    outbox.spool(record, tmp_path, reason="the server was away")
    link = RunLink("m", None, record.record_id)
    files = {"reports/m/mlflow.json": json.dumps({"record_id": record.record_id, "run_id": None})}
    on_main = _commit_files(tmp_path, {**files, "notes.txt": "main"}, f"Best of the grid\n\n{link.trailer()}")
    assert tag_runs_with_commit(tmp_path, [link], on_main).kept == {}
    run(["git", "checkout", "-q", "-b", "exp-branch", base], tmp_path)
    branched = _commit_files(tmp_path, {**files, "notes.txt": "branch"}, "dvc exp branch")
    tagging = tag_runs_with_commit(tmp_path, [link], branched)
    assert tagging.kept == {"m": on_main}
    assert outbox.pending_tags(tmp_path, record.record_id)[RESULTS_COMMIT_TAG] == on_main
    assert commit_of_run(tmp_path, record.record_id) == on_main
    # the other order: the branch linked first, then the trailer commit, which commit-of prefers
    outbox.retag_pending(tmp_path, record.record_id, {RESULTS_COMMIT_TAG: branched})
    assert tag_runs_with_commit(tmp_path, [link], on_main).kept == {}
    assert outbox.pending_tags(tmp_path, record.record_id)[RESULTS_COMMIT_TAG] == on_main


@pytest.mark.parametrize("store", ["away", "another"])
def test_a_run_an_earlier_commit_recorded_keeps_it_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """`mnist-lab commit` with the server away warned that the unchanged models' runs could not be tagged
    and said to `link` them later, where `link` would only find that they keep the earlier commit: git
    alone says so. The same after .env switched from the local store to a server: it warned "NOT tagged"
    for every unchanged model (its run is in the local store, not there) and advised `dvc repro -f`."""
    from mnist_lab.experiments.linking import SERVER_AWAY, tag_runs_with_commit
    from tests.helpers import free_port

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    unchanged, new = RunLink("sgd", "a" * 32, "b" * 32), RunLink("mlp", "c" * 32, "d" * 32)
    first = _commit_files(tmp_path, {"notes.txt": "1"}, f"Experiment\n\n{unchanged.trailer()}")
    later = _commit_files(
        tmp_path, {"notes.txt": "2"}, f"Wider MLP\n\n{unchanged.trailer()}\n{new.trailer()}"
    )
    uri = f"http://127.0.0.1:{free_port()}" if store == "away" else f"sqlite:///{tmp_path / 'server.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # nobody answers there / it holds neither run
    tagging = tag_runs_with_commit(tmp_path, [unchanged, new], later)
    assert tagging.kept == {"sgd": first} and list(tagging.untagged) == ["mlp"]
    expected = SERVER_AWAY if store == "away" else "is not in the tracking store"
    assert expected in tagging.untagged["mlp"]


def test_commit_of_on_a_branch_with_no_commit_yet_looks_in_the_others(
    tmp_path: Path, tracking_store: str
) -> None:
    """`git checkout --orphan`: git log failed on HEAD ("unknown revision") and `commit-of` said so."""
    from mnist_lab.experiments.linking import commit_of_run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    link = RunLink("mlp", "ab" * 16, "cd" * 16)
    on_main = _commit_files(tmp_path, {"notes.txt": "1"}, f"Experiment\n\n{link.trailer()}")
    run(["git", "checkout", "-q", "--orphan", "fresh"], tmp_path)
    assert commit_of_run(tmp_path, link.run_id) == on_main


def test_a_dvc_status_that_fails_is_said_not_taken_for_changes(tmp_path: Path) -> None:
    """A broken dvc.yaml made `dvc status --quiet` exit 1, read as "not up to date: run `dvc repro`"."""
    from mnist_lab.experiments.linking import LinkingError, pipeline_status
    from tests.helpers import BIN

    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  a: [not, a, stage]\n")
    with pytest.raises(LinkingError, match="`dvc status` failed: .*dvc.yaml"):
        pipeline_status(tmp_path)


def test_code_changes_reads_a_renamed_file_whole(tmp_path: Path) -> None:
    """`git status --porcelain -z` writes a rename as `R  new\\0old\\0`: the old path lost its first three
    characters (`/mnist_lab/...`), and `git add` of it failed the commit."""
    from mnist_lab.experiments.linking import code_changes

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    old = tmp_path / "src" / "old.py"
    old.parent.mkdir()
    old.write_text("x = 1\n")
    commit_all(tmp_path, "code")
    run(["git", "mv", "src/old.py", "src/new.py"], tmp_path)
    old.write_text("x = 2\n")
    (tmp_path / "stage-code").mkdir()
    (tmp_path / "stage-code" / "train.sha256").write_text(f"{'0' * 64}  src/new.py\n{'1' * 64}  src/old.py\n")
    assert code_changes(tmp_path) == ["src/new.py", "src/old.py"]


def _experiment_repository(root: Path, monkeypatch) -> None:
    """A git repository whose experiment is metrics.csv and dvc.lock, its code the folder dvc.lock hashes
    (src/pkg), for `commit_experiment` with the pipeline and the runs taken as up to date."""
    from mnist_lab.experiments import linking

    run(["git", "init", "-q", "-b", "main", str(root)], root)
    run(["git", "config", "core.trustctime", "false"], root)  # DVC's restore keeps what git compares
    (root / "dvc.lock").write_text("stages:\n  code:\n    deps:\n    - path: src/pkg\n")
    monkeypatch.setattr(linking, "pipeline_status", lambda root: "")
    monkeypatch.setattr(linking, "workspace_links", lambda root: [])
    monkeypatch.setattr(linking, "experiment_paths", lambda root: ["dvc.lock", "metrics.csv"])
    monkeypatch.setattr(linking, "tag_runs_with_commit", lambda root, links, commit: None)
    for variable, value in {"NAME": "t", "EMAIL": "t@example.invalid"}.items():
        monkeypatch.setenv(f"GIT_AUTHOR_{variable}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{variable}", value)


def _same_size_and_time(path: Path, text: str) -> None:
    """`path` rewritten with `text` (as long as before), keeping its time and inode: git takes it for
    unchanged, as after DVC restored it."""
    import os

    stat = path.stat()
    assert len(text.encode()) == stat.st_size
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_file_the_index_records_with_its_old_content_is_committed_as_it_is(
    tmp_path: Path, monkeypatch
) -> None:
    """After a rejected `dvc exp run -S`, DVC leaves git's index recording a restored file's size and time
    with the last commit's content: `git status` calls it unchanged and `git add` skips it, so the commit
    kept the old metrics.csv (dirty, while git said clean), or the old source of a folder dvc.lock hashes
    (`git status` does not list it as changed code either)."""
    import os

    from mnist_lab.experiments import linking

    _experiment_repository(tmp_path, monkeypatch)
    metrics, source = tmp_path / "metrics.csv", tmp_path / "src" / "pkg" / "a.py"
    source.parent.mkdir(parents=True)
    for path, text in ((metrics, "Name,Value\naccuracy,0.91\n"), (source, "X = 1\n")):
        path.write_text(text)
        os.utime(path, (1_600_000_000, 1_600_000_000))  # long before the index is written (not racy)
    commit_all(tmp_path, "first experiment")
    _same_size_and_time(metrics, "Name,Value\naccuracy,0.97\n")
    _same_size_and_time(source, "X = 2\n")
    (tmp_path / "dvc.lock").write_text("stages:\n  code:\n    deps:\n    - path: src/pkg\n# rerun\n")
    assert run(["git", "status", "--porcelain"], tmp_path).stdout == " M dvc.lock\n"  # git is fooled
    assert linking.stale_index_entries(tmp_path, ["metrics.csv", "src/pkg"]) == [
        "metrics.csv",
        "src/pkg/a.py",
    ]
    commit = linking.commit_experiment(tmp_path, "second experiment")[0]
    assert run(["git", "show", "HEAD:metrics.csv"], tmp_path).stdout == "Name,Value\naccuracy,0.97\n"
    assert run(["git", "show", "HEAD:src/pkg/a.py"], tmp_path).stdout == "X = 2\n"
    assert linking.committed_code(tmp_path, commit) == ["src/pkg/a.py"]
    assert linking.stale_index_entries(tmp_path, ["metrics.csv", "src/pkg"]) == []


def test_a_file_staged_then_changed_again_is_committed_as_it_is_now(tmp_path: Path, monkeypatch) -> None:
    """DVC says "git add dvc.lock"; the user does, then reruns: the staged dvc.lock is neither HEAD's nor
    the file's, and `git rm --cached` (without -f) refused it, failing the commit."""
    from mnist_lab.experiments import linking

    _experiment_repository(tmp_path, monkeypatch)
    (tmp_path / "metrics.csv").write_text("accuracy,0.9\n")
    commit_all(tmp_path, "first experiment")
    lock = tmp_path / "dvc.lock"
    lock.write_text(lock.read_text() + "# first rerun\n")
    run(["git", "add", "dvc.lock"], tmp_path)
    lock.write_text(lock.read_text() + "# second rerun\n")
    linking.commit_experiment(tmp_path, "second experiment")
    assert run(["git", "show", "HEAD:dvc.lock"], tmp_path).stdout == lock.read_text()
    assert run(["git", "status", "--porcelain"], tmp_path).stdout == ""


def test_a_commit_that_fails_outright_puts_the_index_back(tmp_path: Path, monkeypatch) -> None:
    """Only a refusal by git put the index back: a commit past its time limit (a slow hook) or stopped left
    the experiment's files staged."""
    from mnist_lab.experiments import linking
    from mnist_lab.system import commands

    _experiment_repository(tmp_path, monkeypatch)
    (tmp_path / "metrics.csv").write_text("accuracy,0.9\n")
    commit_all(tmp_path, "first experiment")
    (tmp_path / "metrics.csv").write_text("accuracy,0.95\n")
    git = commands.git

    def stopped_commit(*args, **options):
        if args[0] == "commit":
            raise commands.CommandError("`git commit` did not finish within 60 s")
        return git(*args, **options)

    monkeypatch.setattr(commands, "git", stopped_commit)
    with pytest.raises(commands.CommandError):
        linking.commit_experiment(tmp_path, "second experiment")
    assert run(["git", "diff", "--cached", "--name-only"], tmp_path).stdout == ""
