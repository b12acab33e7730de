"""End to end: the repository copied into a fresh git repo, `dvc repro` tracking to a temporary store."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from mnist_lab.core.data import flatten_images
from mnist_lab.datasets.folder import read_dataset
from mnist_lab.stages.common import TIMINGS_ENV
from mnist_lab.system.sources import parse_code_listing
from mnist_lab.system.warm import WARM_ENV
from tests.helpers import REPO_ROOT, copy_repository, run, start_warm_server

MODELS = ("sgd", "random_forest", "mlp", "cnn")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the pipeline once in a copy of the repository and keep what the tests look at."""
    root = copy_repository(tmp_path_factory.mktemp("e2e") / "repo")
    store = root.parent / "store"
    store.mkdir()
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": "e2e",
        TIMINGS_ENV: str(store / "stages.jsonl"),  # each stage's compute time and loaded modules
    }
    restored = run(["mnist-lab", "data", "restore"], root, env)
    # cold (each stage its own process), so that test_rerun_from_scratch compares a warm run with it
    repro = run(["dvc", "repro"], root, {**env, WARM_ENV: "0"})
    return {
        "runs_logged": len(runs(env["MLFLOW_TRACKING_URI"])),
        "root": root,
        "env": env,
        "uri": env["MLFLOW_TRACKING_URI"],
        "restore": restored.stdout,
        "repro": repro.stdout + repro.stderr,
        "metrics": (root / "metrics.json").read_text(),
        "head": run(["git", "rev-parse", "HEAD"], root).stdout.strip(),
        "stages": [json.loads(line) for line in (store / "stages.jsonl").read_text().splitlines()],
    }


def runs(uri: str) -> list:
    return mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("e2e").experiment_id],
        order_by=["attribute.start_time"],
    )


def test_data_is_regenerated_and_checked(pipeline: dict) -> None:
    assert (
        "regenerated from scikit-learn's bundled digits and checked against data.dvc" in pipeline["restore"]
    )


def test_fresh_run_reproduces_the_committed_metrics_exactly(pipeline: dict) -> None:
    for stage in (
        "prepare",
        "featurize",
        *(f"train@{m}" for m in MODELS),
        *(f"evaluate@{m}" for m in MODELS),
        "select",
    ):
        assert f"Running stage '{stage}'" in pipeline["repro"]
    assert pipeline["metrics"] == (REPO_ROOT / "metrics.json").read_text()


def test_each_stage_depends_on_every_module_it_loads(pipeline: dict) -> None:
    """A change to any of this package's code that a stage runs must rerun the stage: each stage depends on
    its listing (stage-code/<stage>.sha256, the `code` stage's), which holds every module the stage's
    process loaded (including through unpickled models), each with its file's digest."""
    root = pipeline["root"]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    ran = {record["stage"] for record in pipeline["stages"]}
    assert {"prepare", "featurize", "train@cnn", "evaluate@cnn", "select", "register"} <= ran
    for record in pipeline["stages"]:
        name = record["stage"].partition("@")[0]
        deps = stages[name].get("do", stages[name])["deps"]
        if name == "code":  # the listings' own stage (run here only where they were not committed)
            assert deps == ["src/mnist_lab"]
            continue
        assert f"stage-code/{name}.sha256" in deps and not [d for d in deps if d.startswith("src/")], deps
        listed = parse_code_listing((root / "stage-code" / f"{name}.sha256").read_text())
        assert f"src/mnist_lab/stages/{name}.py" in record["modules"]  # the record is what it says
        missing = [module for module in record["modules"] if module not in listed]
        assert not missing, f"{record['stage']} loads {missing}, which its listing lacks"
        for path, digest in listed.items():
            assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, path


def test_metrics_are_sane(pipeline: dict) -> None:
    summary = json.loads(pipeline["metrics"])
    assert summary["models"]["random_forest"]["accuracy"] >= 0.90
    assert all(summary["models"][m]["accuracy"] >= 0.85 for m in MODELS)
    assert summary["best"]["model"] in MODELS


def test_each_model_is_one_complete_mlflow_run(pipeline: dict) -> None:
    root, uri = pipeline["root"], pipeline["uri"]
    client = mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(uri)  # models:/ URIs resolve against the current tracking server
    assert pipeline["runs_logged"] == len(MODELS)  # one run per model, no more
    by_name = {
        m: client.get_run(json.loads((root / "reports" / m / "mlflow.json").read_text())["run_id"])
        for m in MODELS
    }
    assert {r.data.tags["mnist_lab.model"] for r in by_name.values()} == set(MODELS)
    # told apart in MLflow's lists: the model and the commit it ran from
    assert {r.info.run_name for r in by_name.values()} == {f"{m}@{pipeline['head'][:8]}" for m in MODELS}
    data_md5 = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    test = read_dataset(root / "data")
    pixels = pd.DataFrame(
        flatten_images(test.test_images).astype(np.float64), columns=[f"pixel_{i}" for i in range(64)]
    )
    for name in MODELS:
        run_ = by_name[name]
        assert run_.info.status == "FINISHED"
        assert json.loads((root / "reports" / name / "mlflow.json").read_text())["run_id"] == run_.info.run_id
        params = run_.data.params
        assert params["model.name"] == name and params["seed"] == "42" and params["data.n_train"] == "1437"
        assert params["features.pca"] == "False" and params["task.kind"] == "multiclass"
        tags = run_.data.tags
        assert tags["mnist_lab.git_commit"] == pipeline["head"] == tags["mlflow.source.git.commit"]
        assert tags["mnist_lab.git_branch"] == "main" and tags["mnist_lab.git_dirty"] == "false"
        assert tags["mnist_lab.data_version"] == data_md5
        assert tags["mnist_lab.model"] == name and tags["mnist_lab.task"] == "multiclass"
        recorded = json.loads((root / "reports" / name / "metrics.json").read_text())
        assert {k: run_.data.metrics[k] for k in recorded} == recorded
        artifacts = {a.path for a in client.list_artifacts(run_.info.run_id, "figures")}
        assert {
            "figures/confusion_matrix.png",
            "figures/roc.png",
            "figures/precision_recall.png",
            "figures/classification_report.txt",
        } <= artifacts
        model_uri = json.loads((root / "reports" / name / "mlflow.json").read_text())["model_uri"]
        assert client.get_logged_model(model_uri.removeprefix("models:/")).name == name
        model = mlflow.pyfunc.load_model(model_uri)
        predictions = model.predict(pixels)  # label and per-class probabilities (or scores, for SGD)
        assert predictions.columns[0] == "label" and len(predictions.columns) == 11
        accuracy = float(np.mean(predictions["label"].to_numpy() == test.test_labels))
        assert accuracy == pytest.approx(
            recorded["accuracy"]
        )  # raw pixels in: the featurizer is in the model
    for name in ("mlp", "cnn"):  # trained epoch by epoch: every epoch's metrics are a history with steps
        history = list(csv.DictReader((root / "reports" / name / "history.csv").open()))
        assert len(history) > 10
        for key in history[0].keys() - {"epoch"}:
            logged = client.get_metric_history(by_name[name].info.run_id, key)
            assert [(m.step, m.value) for m in logged] == [(int(r["epoch"]), float(r[key])) for r in history]
    cnn = by_name["cnn"]
    assert set(history[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
    }
    assert cnn.data.tags["mnist_lab.device"] == "cpu" and cnn.data.tags["mnist_lab.model_type"] == "cnn"
    assert (
        cnn.data.metrics["best_epoch"]
        == json.loads((root / "reports/cnn/training.json").read_text())["best_epoch"]
    )
    assert (
        cnn.data.params["features.input"] == "images 8x8" and cnn.data.params["model.filters"] == "[32, 64]"
    )
    artifacts = {a.path for a in client.list_artifacts(cnn.info.run_id, "figures")}
    assert "figures/training_curves.png" in artifacts
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            json.loads((root / "reports/cnn/mlflow.json").read_text())["model_uri"]
        )
    )
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {"keras", "jax", "jaxlib", "scikit-learn"} <= {line.split("==")[0] for line in requirements}


def test_dagshub_logger_files(pipeline: dict) -> None:
    root = pipeline["root"]
    rows = list(csv.reader((root / "metrics.csv").open()))
    assert rows[0] == ["Name", "Value", "Timestamp", "Step"]
    names = {r[0] for r in rows[1:]}
    assert {"random_forest.accuracy", "mlp.val_loss", "sgd.f1_macro", "best.f1_macro"} <= names
    for _name, value, timestamp, step in rows[1:]:
        float(value)
        assert re.fullmatch(r"\d{13}", timestamp) and int(step) >= 1
    for name in ("mlp.val_loss", "cnn.val_loss", "cnn.learning_rate"):
        steps = [int(r[3]) for r in rows[1:] if r[0] == name]
        assert len(steps) > 10 and steps == list(range(1, len(steps) + 1)), name
    params = yaml.safe_load((root / "params.yml").read_text())
    assert params["models.random_forest.n_estimators"] == 100 and params["data.version"].endswith(".dir")
    assert all(isinstance(v, int | float | bool | str) or v is None for v in params.values())


def test_dvc_reads_the_metrics_and_plots(pipeline: dict) -> None:
    root = pipeline["root"]
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout)
    workspace = metrics[""]["data"]["metrics.json"]["data"]  # "" is the workspace
    assert workspace == json.loads(pipeline["metrics"])
    plots = json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)["data"]
    for name in MODELS:
        for plot in ("predictions.csv", "roc.csv", "precision_recall.csv"):
            assert plots[f"reports/{name}/{plot}"][0]["type"] == "vega", sorted(plots)
    assert len(plots["reports/mlp/history.csv"]) == 1  # models trained without epochs have an empty history
    roc_points = plots["reports/mlp/roc.csv"][0]["content"]["data"]["values"]
    assert roc_points[0]["fpr"] == "0.0" and roc_points[-1]["tpr"] == "1.0"


def test_second_repro_is_a_no_op(pipeline: dict) -> None:
    before = len(runs(pipeline["uri"]))
    again = run(["dvc", "repro"], pipeline["root"], pipeline["env"])
    assert "Data and pipelines are up to date." in again.stdout
    assert len(runs(pipeline["uri"])) == before


def test_files_editors_and_systems_leave_beside_the_code_rerun_nothing(pipeline: dict) -> None:
    """DVC hashes src/mnist_lab for the `code` stage: a file git ignores there (a Finder's .DS_Store, an
    editor's swap or backup file) changed that hash, so the commit's dvc.lock named a hash no clone could
    reproduce, and `dvc status` showed `code` changed. Git and DVC ignore the same such files."""
    root, env = pipeline["root"], pipeline["env"]
    left = [root / "src/mnist_lab/.DS_Store", root / "src/mnist_lab/core/.cnn.py.swp",
            root / "src/mnist_lab/core/cnn.py~"]  # fmt: skip
    for path in left:
        path.write_bytes(b"not code")
    try:
        assert "Data and pipelines are up to date." in run(["dvc", "status"], root, env).stdout
        assert run(["git", "status", "--porcelain", "--", "src"], root, env).stdout == ""  # not dirty either
        # not in data/: mnist-lab's data version counts every file there, so DVC's must too
        assert run(["dvc", "check-ignore", "data/.DS_Store"], root, env, check=False).returncode == 1
    finally:
        for path in left:
            path.unlink()


def test_rerun_from_scratch_gives_identical_metrics(pipeline: dict) -> None:
    """Again with `dvc repro -f`, this time warm (stages forked from a server that preloaded the
    libraries, system/warm.py): every output the same as the cold run's, and the committed metrics."""
    root, env = pipeline["root"], pipeline["env"]
    first = {
        p.relative_to(root): p.read_text()
        for p in [root / "metrics.json", *root.glob("reports/*/metrics.json")]
    }
    cold_outputs = output_hashes(root / "dvc.lock")
    server = start_warm_server(root, env)
    timings = Path(env[TIMINGS_ENV])
    before = len(timings.read_text().splitlines())
    run(["dvc", "repro", "-f"], root, env)
    records = [json.loads(line) for line in timings.read_text().splitlines()[before:]]
    # every stage of the cold run, and `code` (its listings are committed, so the cold run skips it)
    assert sorted(r["stage"] for r in records) == sorted({*(r["stage"] for r in pipeline["stages"]), "code"})
    assert {r["ppid"] for r in records} == {server}
    second = {
        p.relative_to(root): p.read_text()
        for p in [root / "metrics.json", *root.glob("reports/*/metrics.json")]
    }
    assert second == first
    assert first[Path("metrics.json")] == (REPO_ROOT / "metrics.json").read_text()
    # the models themselves, byte for byte (the CNN's .keras file carries no save date)
    assert model_hashes(root / "dvc.lock") == model_hashes(REPO_ROOT / "dvc.lock")
    # and every other output, but for run ids and wall-clock times
    assert output_hashes(root / "dvc.lock") == cold_outputs


# outputs that hold MLflow run ids, record ids or wall-clock times, which differ from run to run
RUN_SPECIFIC = re.compile(
    r"(^reports$|mlflow\.json$|^outputs/timing/|^metrics\.csv$|^best_model\.json$|^registry\.json$)"
)


def output_hashes(lock: Path) -> dict[tuple[str, str], str]:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {
        (name, out["path"]): out["md5"]
        for name, stage in stages.items()
        for out in stage.get("outs", [])
        if not RUN_SPECIFIC.search(out["path"])
    }


def model_hashes(lock: Path) -> dict[str, str]:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {
        out["path"]: out["md5"]
        for name, stage in stages.items()
        if name.startswith("train@")
        for out in stage["outs"]
        if out["path"].startswith("models/")
    }


def workspace_state(root: Path) -> dict[str, str]:
    """Every file git tracks and every file of the pipeline's outputs and data, by content hash."""
    import hashlib

    tracked = run(["git", "ls-files"], root).stdout.split()
    files = {root / name for name in tracked if (root / name).is_file()}
    for folder in ("data", "models", "outputs", "reports"):
        files |= {p for p in (root / folder).rglob("*") if p.is_file()}
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(files)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda text: text + "extra_key: 1\n", "unknown key 'extra_key'"),
        (lambda text: text.replace("alpha: 0.0001", "alpha: big", 1), "models.sgd.alpha: Input should be"),
        (
            lambda text: text.replace("metric: f1_macro", "metric: f1_macroo", 1),
            "select.metric: 'f1_macroo' is not a metric of a multiclass task",
        ),
    ],
    ids=["unknown-key", "wrong-type", "unknown-metric"],
)
def test_bad_params_stop_the_pipeline_before_any_output_is_removed(
    pipeline: dict, change, message: str
) -> None:
    root, env = pipeline["root"], pipeline["env"]
    params = root / "params.yaml"
    original = params.read_text()
    before = workspace_state(root)
    params.write_text(change(original))
    try:
        failed = run(["dvc", "repro"], root, env, check=False)
        assert failed.returncode != 0 and message in failed.stderr + failed.stdout, failed.stderr
        assert "Running stage 'validate'" in failed.stdout and "Running stage 'prepare'" not in failed.stdout
    finally:
        params.write_text(original)
    assert workspace_state(root) == before
    assert "Data and pipelines are up to date." in run(["dvc", "status"], root, env).stdout


def test_a_bad_dvc_exp_run_setting_removes_nothing(pipeline: dict) -> None:
    root, env = pipeline["root"], pipeline["env"]
    before = workspace_state(root)
    original = (root / "params.yaml").read_text()
    failed = run(["dvc", "exp", "run", "-S", "models.sgd.alpha=big"], root, env, check=False)
    assert failed.returncode != 0
    assert "models.sgd.alpha: Input should be a valid number" in failed.stdout + failed.stderr
    # how to undo what -S left: a command that works (DVC leaves git's index taking params.yaml for
    # unchanged, so `git checkout -- params.yaml`, the advice before, did nothing half the time)
    advice = "`git show HEAD:params.yaml > params.yaml`"
    assert advice in failed.stdout + failed.stderr
    run(["sh", "-c", advice.strip("`")], root, env)
    assert (root / "params.yaml").read_text() == original
    assert run(["git", "status", "--porcelain", "params.yaml"], root, env).stdout == ""
    assert workspace_state(root) == before


def test_corrupt_data_never_becomes_the_data_version(pipeline: dict) -> None:
    import gzip

    root, env = pipeline["root"], pipeline["env"]
    before = workspace_state(root)
    labels = root / "data" / "t10k-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    labels.write_bytes(gzip.compress(gzip.decompress(good)[:100]))
    try:
        failed = run(["dvc", "repro"], root, env, check=False)
        error = failed.stdout + failed.stderr
        assert failed.returncode != 0 and "t10k-labels-idx1-ubyte.gz: truncated" in error
        recorded = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]["md5"]
        assert f"data.dvc records data version {recorded} again, the" in error
        assert "`mnist-lab data restore --force` (or `dvc checkout --force data.dvc`)" in error
        assert (root / "data.dvc").read_text() == (REPO_ROOT / "data.dvc").read_text()
        refused = run(["mnist-lab", "data", "restore"], root, env, check=False)  # never without --force
        assert refused.returncode == 2 and labels.read_bytes() != good
        # and never advising to record data that does not read (it offered `dvc add data` first)
        assert "is not whole (data/t10k-labels-idx1-ubyte.gz: truncated" in refused.stderr
        assert "dvc add" not in refused.stderr
        run(["mnist-lab", "data", "restore", "--force"], root, env)  # the advice, followed
        assert labels.read_bytes() == good
    finally:
        labels.write_bytes(good)
    assert workspace_state(root) == before


def test_the_readmes_dvc_exp_show_commands_work_as_written(pipeline: dict) -> None:
    """Each `dvc exp show` of the README runs, and sorts by a metric that exists (DVC silently ignores an
    unknown --sort-by key, which once pointed at a file that is not a DVC metrics file)."""
    import shlex

    root, env = pipeline["root"], pipeline["env"]
    commands = re.findall(r"^(dvc exp show[^#\n]*)", (REPO_ROOT / "README.md").read_text(), re.MULTILINE)
    assert commands
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    workspace = next(entry for entry in shown if entry["rev"] == "workspace")["data"]["metrics"]
    for command in commands:
        assert run([*shlex.split(command), "--no-pager"], root, env).returncode == 0
        sort_key = re.search(r"--sort-by (\S+)", command)
        if sort_key:
            path, _, dotted = sort_key[1].partition(":")
            value = workspace[path]["data"]
            for part in dotted.split("."):
                value = value[part]
            assert isinstance(value, float), (command, value)


def test_one_models_setting_reruns_only_that_model(pipeline: dict) -> None:
    root, env = pipeline["root"], pipeline["env"]
    before = workspace_state(root)
    tracked = {name: (root / name).read_bytes() for name in run(["git", "ls-files"], root).stdout.split()}
    try:
        done = run(["dvc", "exp", "run", "-n", "sgd-alpha", "-S", "models.sgd.alpha=0.001"], root, env)
        output = done.stdout + done.stderr
        ran = set(re.findall(r"Running stage '([^']+)'", output))
        assert ran == {"validate", "train@sgd", "evaluate@sgd", "select"}, output
        sgd_run = json.loads((root / "reports" / "sgd" / "mlflow.json").read_text())["run_id"]
        logged = mlflow.MlflowClient(pipeline["uri"]).get_run(sgd_run)
        assert logged.info.run_name == "sgd@sgd-alpha" and logged.data.params["model.alpha"] == "0.001"
        assert logged.data.tags["mnist_lab.dvc_exp_name"] == "sgd-alpha"
    finally:  # `dvc exp run` applies the experiment to the workspace: put the pipeline's state back
        for name, content in tracked.items():
            (root / name).write_bytes(content)
        run(["dvc", "checkout", "--force"], root, env)
    assert workspace_state(root) == before


def test_an_edit_reruns_only_the_stages_that_run_the_edited_code(pipeline: dict) -> None:
    """The `code` stage reruns after any edit under src/mnist_lab; a stage reruns only when its listing
    changed: an edit to the board's code reruns no stage, one to validate.py reruns validate alone (its
    output does not change, so nothing after it reruns)."""
    root, env = pipeline["root"], pipeline["env"]
    before = workspace_state(root)
    listings = {p.name: p.read_text() for p in (root / "stage-code").iterdir()}

    def ran_after(path: str, edit: bool) -> set[str]:
        source = root / path
        text = source.read_text()
        source.write_text(text + "# an edit\n" if edit else text.removesuffix("# an edit\n"))
        done = run(["dvc", "repro"], root, env)
        return set(re.findall(r"Running stage '([^']+)'", done.stdout + done.stderr))

    assert ran_after("src/mnist_lab/board/views.py", edit=True) == {"code"}
    assert {p.name: p.read_text() for p in (root / "stage-code").iterdir()} == listings
    assert ran_after("src/mnist_lab/board/views.py", edit=False) == {"code"}
    assert ran_after("src/mnist_lab/stages/validate.py", edit=True) == {"code", "validate"}
    assert (root / "stage-code" / "validate.sha256").read_text() != listings["validate.sha256"]
    assert ran_after("src/mnist_lab/stages/validate.py", edit=False) == {"code", "validate"}
    assert {p.name: p.read_text() for p in (root / "stage-code").iterdir()} == listings
    assert workspace_state(root) == before
    assert "Data and pipelines are up to date." in run(["dvc", "status"], root, env).stdout
