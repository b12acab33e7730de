"""The experiments table and comparisons, read from a generated git history (no server)."""

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from mnist_lab.board.views import CompareError, ExperimentsBoard, UnknownExperiment
from mnist_lab.core.query import QueryError
from mnist_lab.experiments.table import experiment_rows, read_blobs
from tests.board.experiment_history import experiment_files, listing, write_history


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("history")
    return root, write_history(root, 12, experiments=2)


def test_one_row_per_experiment_commit_and_each_dvc_experiment_under_its_baseline(history) -> None:
    """DVC experiments were listed after every commit: under their baseline now, as `dvc exp show` does."""
    from datetime import datetime

    root, commits = history
    rows = experiment_rows(root)
    assert [row["id"] for row in rows if row["source"] == "commit"] == commits
    assert [row["source"] for row in rows] == ["commit"] + ["dvc-experiment"] * 2 + ["commit"] * 11
    assert [row["id"] for row in rows[1:3]] == ["exp:exp-1", "exp:exp-0"]  # newest first (1 s apart)
    assert all(row["baseline"] == commits[0] for row in rows[1:3])  # HEAD's: right under it
    newer, older = (datetime.fromisoformat(row["date"]) for row in rows[1:3])
    assert newer > older
    # one whose baseline is not listed (older than the commits asked for) comes last
    assert [row["id"] for row in experiment_rows(root, commits[1])][-2:] in (
        ["exp:exp-0", "exp:exp-1"],
        ["exp:exp-1", "exp:exp-0"],
    )


def test_an_experiment_on_a_commit_of_code_alone_goes_under_the_experiment_commit_before(tmp_path) -> None:
    """Its baseline is no row (it changed neither dvc.lock nor metrics.json), so the experiment went to the
    end of the table, after every commit."""
    from tests.board.experiment_history import GIT

    root = tmp_path / "repo"
    commits = write_history(root, 3)
    (root / "notes.txt").write_text("a change of code alone\n")
    subprocess.run([*GIT, "add", "notes.txt"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "Code alone"], cwd=root, check=True)
    subprocess.run([*GIT, "checkout", "-q", "--detach"], cwd=root, check=True)
    (root / "metrics.json").write_text((root / "metrics.json").read_text().replace("0.", "0.0", 1))
    subprocess.run([*GIT, "commit", "-qam", "dvc: commit experiment"], cwd=root, check=True)
    subprocess.run([*GIT, "update-ref", "refs/exps/ab/cdef0123/exp-late", "HEAD"], cwd=root, check=True)
    subprocess.run([*GIT, "checkout", "-q", "main"], cwd=root, check=True)
    rows = experiment_rows(root)
    assert [row["id"] for row in rows] == [commits[0], "exp:exp-late", *commits[1:]]


def test_a_row_holds_what_the_commit_recorded(history) -> None:
    root, commits = history
    [row] = [r for r in experiment_rows(root) if r["id"] == commits[-1]]  # the oldest commit: experiment 0
    _, metrics = experiment_files(0)
    assert row["commit"] == commits[-1] and row["message"] == "Experiment 0: mlp alpha and cnn epochs"
    assert row["model"] == metrics["best"]["model"] and row["value"] == metrics["best"]["value"]
    assert row["accuracy"] == metrics["models"][row["model"]]["accuracy"]
    assert row["metrics.models.cnn.f1_macro"] == metrics["models"]["cnn"]["f1_macro"]
    assert row["params.models.mlp.alpha"] == 0.0001 and row["params.seed"] == 42
    assert row["data"] == "0" * 32 + ".dir"
    assert row["runs"] == {m: f"{0:016x}{i + 1:016x}" for i, m in enumerate(("sgd", "mlp", "cnn"))}


def test_changed_names_the_params_that_differ_from_the_parent(history) -> None:
    root, _ = history
    rows = experiment_rows(root)
    by_message = {row["message"]: row for row in rows}
    # experiment 1 changed the mlp's alpha and the cnn's epochs against experiment 0; seed stayed
    assert by_message["Experiment 1: mlp alpha and cnn epochs"]["changed"] == {
        "models.cnn.max_epochs": [3, 4],
        "models.mlp.alpha": [0.0001, 0.001],
    }
    assert by_message["Experiment 3: mlp alpha and cnn epochs"]["changed"]["seed"] == [42, 43]
    # the first experiment has nothing before it to differ from (it listed every param as changed)
    assert by_message["Experiment 0: mlp alpha and cnn epochs"]["changed"] == {}


def test_no_experiment_is_dirty_whose_results_its_code_params_and_data_made(history) -> None:
    root, _ = history
    assert [(row["dirty"], row["dirty_because"]) for row in experiment_rows(root)] == [(False, [])] * 14


def test_an_experiment_whose_results_its_own_files_did_not_make_is_dirty(tmp_path: Path) -> None:
    import subprocess

    from tests.board.experiment_history import GIT

    root = tmp_path / "repo"
    write_history(root, 2)

    def commit(index: int, change: str, old: str, new: str, listings: bool = True, remove: str = "") -> dict:
        # a consistent experiment (its dvc.lock made its metrics.json), then one file changed
        files, _ = experiment_files(index, listings=listings)
        assert old in files[change]
        files[change] = files[change].replace(old, new)
        subprocess.run([*GIT, "rm", "-rq", "--ignore-unmatch", "stage-code"], cwd=root, check=True)
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        if remove:
            (root / remove).unlink()
        subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
        subprocess.run([*GIT, "commit", "-qm", f"experiment {index}"], cwd=root, check=True)
        return newest()

    def newest() -> dict:  # commits made within one second: found by id, not by date
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        return next(row for row in experiment_rows(root, dvc_experiments=False) if row["id"] == head.strip())

    def because(row: dict) -> list[str]:
        assert row["dirty"] is bool(row["dirty_because"])
        return row["dirty_because"]

    models = "src/mnist_lab/core/models.py"
    # a file of the code the stages ran, edited after the run: found through the stages' listings
    # (stage-code/<stage>.sha256, which dvc.lock records), and in a lock from before them (the files there)
    assert because(commit(5, models, "# experiment", "# edited after the run, experiment")) == [models]
    assert because(commit(4, models, "# experiment", "# edited, experiment", listings=False)) == [models]
    assert because(commit(3, models, "", "")) == []
    assert because(commit(1, models, "", "", remove=models)) == [f"{models} (not in the commit)"]
    # a source edited, then only `code` rerun (`dvc repro featurize`, or a repro that failed in train):
    # the listings are new, the lock records them as `code` made them and as the stages ran on them (old)
    files, _ = experiment_files(0)
    old = files["stage-code/train.sha256"]
    files[models] = files[models].replace("# experiment", "# edited, only `code` rerun: experiment")
    new = listing(files)
    head, _, code_stage = files["dvc.lock"].partition("\n  code:\n")
    old_md5, new_md5 = (hashlib.md5(text.encode()).hexdigest() for text in (old, new))
    files["dvc.lock"] = f"{head}\n  code:\n{code_stage.replace(old_md5, new_md5)}"
    for path in [p for p in files if p.startswith("stage-code/")]:
        files[path] = new
    for path, text in files.items():
        (root / path).write_text(text)
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run(
        [*GIT, "commit", "-qm", "partial run", "-m", "MLflow-Run: sgd run=1 record=2"], cwd=root, check=True
    )
    assert because(newest()) == sorted(p for p in files if p.startswith("stage-code/"))  # as `dvc status`
    # a listing that dvc.lock records, missing from the commit
    gone = "stage-code/select.sha256"
    assert because(commit(7, models, "", "", remove=gone)) == [f"{gone} (not in the commit)"]
    # a listing edited by hand: dvc.lock disagrees with it (as with any file it records)
    edited_listing = "stage-code/train.sha256"
    assert because(
        commit(2, edited_listing, "  src/mnist_lab/module_0.py\n", "  src/mnist_lab/module_0.py\n\n")
    ) == [edited_listing]
    assert because(commit(8, "params.yaml", "alpha: 0.01", "alpha: 0.5")) == ["params.yaml: models.mlp.alpha"]
    assert because(commit(7, "data.dvc", "0" * 32, "1" * 32)) == ["data.dvc"]
    assert because(commit(6, "metrics.json", '"accuracy": 0.', '"accuracy": 1.')) == ["metrics.json"]
    assert because(commit(9, "metrics.json", "", "")) == []  # consistent again


def test_read_blobs_tells_a_missing_file_from_an_empty_one(history) -> None:
    root, commits = history
    blobs = read_blobs(root, [f"{commits[0]}:nope.txt", f"{commits[0]}:params.yaml", f"{commits[0]}:reports"])
    assert blobs[f"{commits[0]}:nope.txt"] is None and blobs[f"{commits[0]}:reports"] is None
    assert blobs[f"{commits[0]}:params.yaml"].startswith(b"seed:")


def test_the_table_filters_sorts_and_hides(history) -> None:
    root, _ = history
    board = ExperimentsBoard(root)
    everything = board.table()
    assert everything["total"] == 14 and len(everything["rows"]) == 14
    cnn = board.table("model = cnn")["rows"]
    assert cnn and all(row["model"] == "cnn" for row in cnn)
    ranked = board.table(sort="accuracy", descending=True)["rows"]
    assert [r["accuracy"] for r in ranked] == sorted((r["accuracy"] for r in ranked), reverse=True)
    with pytest.raises(QueryError, match="expected a value"):
        board.table("accuracy >")
    with pytest.raises(
        QueryError, match=r"sort=acuracy: no such column; sort by one of the table's columns \(id,"
    ):
        board.table(sort="acuracy")
    with pytest.raises(QueryError) as unknown:  # the page's columns, in its order: not the rows' inner fields
        board.table("nope = 1")
    assert "(columns: id, source, dirty, date, message, labels, data, model," in str(unknown.value)
    assert "changed" not in str(unknown.value) and "runs" not in str(unknown.value)
    (root / "labels.yaml").write_text(f"{ranked[0]['id']}: [hidden]\n")
    assert len(board.table()["rows"]) == 13 and len(board.table(hidden=True)["rows"]) == 14
    (root / "labels.yaml").unlink()


def test_compare_puts_deltas_against_the_baseline_by_direction(history) -> None:
    root, commits = history
    board = ExperimentsBoard(root)
    old, new = commits[-1], commits[-2]
    data = board.compare([old[:10], new[:10]])
    assert data["experiments"] == [old, new] and data["baseline"] == old
    accuracy = data["metrics"]["models.cnn.accuracy"]
    delta = accuracy["values"][1] - accuracy["values"][0]
    assert accuracy["deltas"] == [0, pytest.approx(delta)]
    assert accuracy["verdicts"][1] == ("better" if delta > 0 else "worse")
    assert data["params"]["models.mlp.alpha"] == {
        "values": [0.0001, 0.001],
        "absent": [False, False],
        "changed": True,
    }
    assert data["params"]["task.kind"]["changed"] is False
    assert [row["epoch"] for row in data["curves"][new]["cnn"]] == [1, 2, 3, 4]
    assert data["curves"][new]["sgd"] == []
    confusion = data["confusion"][old]["cnn"]
    assert confusion["labels"][:2] == ["0", "1"] and sum(map(sum, confusion["matrix"])) == 60
    assert "-ALPHA_DEFAULT = 0.0001" in data["diffs"][new]["text"]


def test_compare_tells_a_param_set_to_null_from_one_params_yaml_does_not_have() -> None:
    """An older experiment without a setting is not one that set it to null: both were shown blank, and
    going from one to the other was not a change."""
    from mnist_lab.board.views import _param_view

    rows = [{"params.max_depth": None}, {}, {"params.max_depth": 8}]
    assert _param_view(rows, "max_depth", [None, None, 8]) == {
        "values": [None, None, 8],
        "absent": [False, True, False],
        "changed": True,
    }
    assert _param_view(rows[:2], "max_depth", [None, None])["changed"] is True
    assert _param_view([{}, {}], "max_depth", [None, None])["changed"] is False
    assert _param_view([{"params.d": None}] * 2, "d", [None, None])["changed"] is False


def test_unknown_or_ambiguous_experiments_are_named(history) -> None:
    root, _ = history
    board = ExperimentsBoard(root)
    with pytest.raises(UnknownExperiment, match="no experiment 'deadbeef00'"):
        board.row("deadbeef00")
    with pytest.raises(CompareError, match="two experiments or more"):
        board.compare(["exp:exp-0"])
    for unknown in ("HEAD~99", "--all", "main:params.yaml", "HEAD^{tree}"):
        with pytest.raises(UnknownExperiment, match=re.escape(f"no experiment {unknown!r}")):
            board.row(unknown)


def test_experiments_are_named_by_any_git_revision(history) -> None:
    root, commits = history
    board = ExperimentsBoard(root)
    assert board.row("HEAD")["id"] == commits[0]
    assert board.row("HEAD~2")["id"] == commits[2]
    subprocess.run(["git", "tag", "baseline", commits[5]], cwd=root, check=True)
    assert board.row("baseline")["id"] == commits[5]
    assert board.compare(["HEAD~1", "HEAD"])["experiments"] == [commits[1], commits[0]]


def test_an_export_compares_the_two_newest_by_default_the_older_as_baseline(history, tmp_path) -> None:
    """The code diff of the export's comparison reads forward in time (it read HEAD -> HEAD~1)."""
    from mnist_lab.board.export import export_board

    root, commits = history
    assert export_board(root, tmp_path / "export") == [commits[1], commits[0]]


def test_the_champion_is_the_run_of_the_registry_version_its_alias_names(tmp_path, tracking_store) -> None:
    """What the page labels `champion` with the default registry (promoting moves an alias, no git tag)."""
    import mlflow

    from mnist_lab.core.settings import load_settings

    root = tmp_path / "repo"
    write_history(root, 2, experiments=0)
    board = ExperimentsBoard(root)
    name = load_settings(root / "params.yaml").registry.model_name
    client = mlflow.MlflowClient(tracking_store, registry_uri=tracking_store)  # not the global registry's
    assert board.champion() == {"run_id": None, "version": None, "commit": None}  # nothing promoted yet
    client.create_registered_model(name)
    from mnist_lab import tracking

    experiment = tracking.TrackingSettings.from_environment(root).experiment_name  # the board's runs
    found = client.get_experiment_by_name(experiment)
    run = client.create_run(
        found.experiment_id if found else client.create_experiment(experiment)
    ).info.run_id
    client.create_model_version(name, source=f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias(name, "champion", "1")
    assert board.champion() == {"run_id": run, "version": "1", "commit": None}
    # the API's query sees it as the page does (which labels the rows after asking /api/champion)
    found = board.table("labels = champion", runs=True)["rows"]
    assert [row["id"] for row in found] == [f"run:{run}"] and found[0]["labels"] == ["champion"]
    assert board.table("", runs=True)["rows"][0]["labels"] == []  # no label query: the store not asked


def test_an_experiment_that_applying_would_undo_newer_commits_says_why_in_its_row(tmp_path) -> None:
    """Apply & commit was offered for an experiment run on an older commit whose inputs HEAD has changed
    since: the server refused it only after the page asked for a commit message."""
    root = tmp_path / "repo"
    write_history(root, 3, experiments=1)  # exp-0 runs on HEAD: applicable
    board = ExperimentsBoard(root)
    [row] = [r for r in board.rows() if r["id"] == "exp:exp-0"]
    assert row["apply_refused"] is None
    baseline = row["baseline"]
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "# edited\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qam", "newer"],
                   cwd=root, check=True)  # fmt: skip
    [row] = [r for r in board.rows() if r["id"] == "exp:exp-0"]
    assert row["apply_refused"] == (
        f"exp-0 was run on {baseline[:12]}, and HEAD has changed its inputs since (params.yaml): applying it "
        f"would undo that. Run it again on HEAD (`dvc exp run` with its -S values), or check out "
        f"{baseline[:12]} first"
    )
    assert "apply_refused" not in board.table()["columns"]  # not a column of the page


def test_a_revision_of_a_commit_without_results_is_named_as_such(tmp_path) -> None:
    """`/api/experiments/HEAD~1` for a commit that records no experiment said "give ... a git revision such
    as HEAD~1": it is a commit, only not an experiment's."""
    root = tmp_path / "repo"
    commits = write_history(root, 2, experiments=0)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q",
                    "--allow-empty", "-m", "notes only"], cwd=root, check=True)  # fmt: skip
    board = ExperimentsBoard(root)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    for revision in ("HEAD", head[:9]):
        with pytest.raises(UnknownExperiment) as refused:
            board.row(revision)
        assert str(refused.value) == (
            f"no experiment {revision!r}: it is commit {head[:12]}, which records no experiment's results "
            "(not in `mnist-lab history`); give one of the table's commits"
        )
    assert board.row("HEAD~1")["id"] == commits[0]  # newest first


def test_commits_that_changed_code_alone_are_left_out_unless_asked_for(tmp_path) -> None:
    """A history whose newest commits changed code alone (the results and runs of the experiment before
    them: this repository's own history is mostly such commits): the table, the API, `history` and the
    export's default comparison leave them out unless asked; they stay rows, so compare and `row` find
    them."""
    import json

    from fastapi.testclient import TestClient

    from mnist_lab.board.app import create_app
    from mnist_lab.board.export import export_board
    from tests.board.experiment_history import commit_code_change
    from tests.helpers import run

    root = tmp_path / "repo"
    commits = write_history(root, 3)
    code = [commit_code_change(root, 2, version) for version in (1, 2)][::-1]
    board = ExperimentsBoard(root)
    assert [row["id"] for row in board.table()["rows"]] == commits
    assert [row["id"] for row in board.table(code_only=True)["rows"]] == code + commits
    assert board.row(code[0][:10])["code_only"] is True
    assert board.compare([commits[0], code[0]])["experiments"] == [commits[0], code[0]]
    api = TestClient(create_app(root))
    assert [row["id"] for row in api.get("/api/experiments").json()["rows"]] == commits
    listed = api.get("/api/experiments?code_only=1&q=code_only = true").json()["rows"]
    assert [row["id"] for row in listed] == code
    # the export holds them all (the page's tick shows them) and compares the two newest experiments
    assert export_board(root, tmp_path / "export") == [commits[1], commits[0]]
    snapshot = (tmp_path / "export" / "snapshot.js").read_text()
    table = json.loads(snapshot.split(" = ", 1)[1].rstrip(";\n"))["/api/experiments?hidden=1&code_only=1"]
    assert [row["id"] for row in table["rows"]] == code + commits
    # `mnist-lab history`: the same, with a word on what it left out
    shown = run(["mnist-lab", "history", "--json"], root)
    assert [row["commit"] for row in json.loads(shown.stdout)] == commits
    assert "2 more commits that changed code alone" in shown.stderr and "--all shows them" in shown.stderr
    every = run(["mnist-lab", "history", "--json", "--all"], root)
    assert [row["commit"] for row in json.loads(every.stdout)] == code + commits and not every.stderr


def test_history_and_runs_take_a_dvc_experiments_name_as_compare_does(history) -> None:
    """`mnist-lab history exp-0` and `runs exp:exp-0` answered "not a commit of this repository", while
    `compare exp-0` took the name."""
    import json

    from tests.helpers import run

    root, commits = history
    listed = json.loads(run(["mnist-lab", "history", "exp-0", "--json", "--all"], root).stdout)
    experiment = run(["git", "rev-parse", "refs/exps/ab/cdef0123/exp-0"], root).stdout.strip()
    assert listed[0]["commit"] == experiment
    assert [row["commit"] for row in listed[1:]] == commits
    named = run(["mnist-lab", "runs", "exp:exp-0"], root, check=False)
    assert "names no MLflow runs" in named.stderr and "not a commit" not in named.stderr
    unknown = run(["mnist-lab", "history", "no-such-thing"], root, check=False)
    assert "neither a commit of this repository nor a DVC experiment's name" in unknown.stderr


def test_a_source_file_that_is_not_utf8_is_diffed_not_a_500(tmp_path: Path) -> None:
    """A Latin-1 byte in a committed source file made every comparison across it a 500 (and the export,
    which compares the two newest commits, a traceback): git's diff is read as UTF-8 with replacements."""
    from mnist_lab.board.export import export_board
    from tests.board.experiment_history import GIT

    root = tmp_path / "repo"
    write_history(root, 2)
    (root / "src" / "legacy.py").write_bytes(b'NAME = "caf\xe9"\n')
    (root / "metrics.json").write_text('{"models": {"mlp": {"accuracy": 0.5}}}')
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "a Latin-1 source file"], cwd=root, check=True)
    board = ExperimentsBoard(root)
    ids = [row["id"] for row in board.table()["rows"]][:2]
    diff = board.compare(ids[::-1])["diffs"][ids[0]]
    assert '+NAME = "caf\ufffd"' in diff["text"]
    assert export_board(root, tmp_path / "export") == ids[::-1]


def test_the_export_goes_into_the_current_folder_or_through_a_link(tmp_path: Path, monkeypatch) -> None:
    """`--export .` in an empty folder was a ValueError (no name to stage beside); a link to an earlier
    export an OSError that left a `.partial` folder behind. Both are written, nothing left beside them."""
    from mnist_lab.board.export import EXPORT_MARKER, export_board

    root = tmp_path / "repo"
    commits = write_history(root, 2)
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    assert export_board(root, Path(".")) == commits[::-1]
    assert Path.cwd().samefile(here)  # the same folder, not one put in its place (the shell's is still there)
    assert export_board(root, Path(".")) == commits[::-1]  # again, over the earlier export
    assert Path.cwd().samefile(here) and (here / "snapshot.js").is_file()
    assert (here / EXPORT_MARKER).is_file() and (here / "snapshot.js").is_file()
    site = tmp_path / "site"
    site.mkdir()
    (site / "board").symlink_to(here, target_is_directory=True)
    assert export_board(root, site / "board") == commits[::-1]
    assert (site / "board").is_symlink() and (here / "snapshot.js").is_file()
    assert sorted(path.name for path in site.iterdir()) == ["board"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "repo", "site"]


def test_a_store_failing_while_run_curves_are_read_leaves_the_runs_out(tmp_path: Path, monkeypatch) -> None:
    """The run rows' curves are read from the store after its runs: a failure there failed the export."""
    import json

    from mnist_lab.board import export

    root = tmp_path / "repo"
    commits = write_history(root, 2)
    run_row = {"id": "run:" + "a" * 32, "source": "run", "commit": commits[0], "model": "mlp"}
    monkeypatch.setattr(ExperimentsBoard, "runs", lambda self: [run_row])
    drawn_from = ExperimentsBoard.drawn_from

    def failing(self, rows):
        if any(row["source"] == "run" for row in rows):
            raise OSError("the store went away")
        return drawn_from(self, rows)

    monkeypatch.setattr(ExperimentsBoard, "drawn_from", failing)
    assert export.export_board(root, tmp_path / "out") == commits[::-1]
    text = (tmp_path / "out" / "snapshot.js").read_text()
    snapshot = json.loads(text.removeprefix("window.BOARD_SNAPSHOT = ").rstrip().removesuffix(";"))
    assert "/api/runs" not in snapshot and set(snapshot["/export/drawn-from"]) == set(commits)


CHAMPION_CASES = [  # rows newest first, as the table lists them; the run "r" is the champion's
    ([{"id": "c3", "source": "commit", "runs": {"cnn": "r"}}, {"id": "exp:e", "source": "dvc-experiment",
      "runs": {"cnn": "r"}}, {"id": "c2", "source": "commit", "runs": {"cnn": "r"}},
      {"id": "c1", "source": "commit", "runs": {"cnn": "q"}}], ["c2"]),  # the first commit recording it
    ([{"id": "c1", "source": "commit", "runs": {"cnn": "q"}}, {"id": "exp:a", "source": "dvc-experiment",
      "runs": {"cnn": "r"}}, {"id": "exp:b", "source": "dvc-experiment", "runs": {"cnn": "r"}}],
     ["exp:a", "exp:b"]),  # not committed: the experiments holding it
    ([{"id": "c1", "source": "commit", "runs": {"cnn": "q"}}, {"id": "run:r", "source": "run", "runs": {}}],
     ["run:r"]),
    ([{"id": "c1", "source": "commit", "runs": {"cnn": "q"}}], []),
]  # fmt: skip


@pytest.mark.parametrize(("rows", "expected"), CHAMPION_CASES)
def test_the_champion_is_the_row_that_first_recorded_its_run(rows, expected) -> None:
    """An unchanged model's run is held by every later commit and experiment: all five of them were
    labelled `champion`, and a user could not tell which one was promoted."""
    from mnist_lab.board.views import champion_rows

    assert [row["id"] for row in champion_rows(rows, "r")] == expected


def test_the_registry_champion_is_not_a_label_to_remove(tmp_path: Path) -> None:
    """Unlabel said it removed 'champion' while the chip stayed: it comes from the registry."""
    from mnist_lab.experiments.labels import LabelError

    root = tmp_path / "repo"
    commits = write_history(root, 1)
    with pytest.raises(LabelError, match="registry's champion version, which moves with Promote"):
        ExperimentsBoard(root).set_label(commits[0], "champion", present=False)
