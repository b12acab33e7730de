"""`mnist-lab`: data commands, the DVC remote, the results table and the MLflow UI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnist_lab.core.errors import MnistLabError


def _cmd_data_digits(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.ingest import write_digits

    md5 = write_digits(args.out, None if args.no_check else args.dvc_file)
    print(f"wrote scikit-learn's bundled digits to {args.out}/ as MNIST-format IDX (data version {md5})")


def _cmd_data_ingest(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.ingest import MNIST_MIRRORS, dvc, ingest
    from mnist_lab.system.redact import display_uri

    if args.mirror and args.source != "mnist":
        raise MnistLabError("--mirror is only for `data ingest mnist`; give any other base URL as the source")
    if args.source == "mnist" and Path("mnist").is_dir():
        print("note: `mnist` downloads MNIST; to ingest the folder ./mnist, write ./mnist", file=sys.stderr)
    md5 = ingest(args.source, args.out, mirrors=(*args.mirror, *MNIST_MIRRORS))
    print(f"wrote {args.out}/ from {display_uri(args.source)} (data version {md5})")
    if args.no_track:
        print(f"next: `dvc add {args.out}` and commit {args.out}.dvc, then `dvc repro`")
        return
    added = dvc("add", str(args.out))
    if added.returncode != 0:
        raise MnistLabError(f"`dvc add {args.out}` failed: {added.stderr.strip()}")
    print(f"tracked it with `dvc add {args.out}`: commit {args.out}.dvc, then run `dvc repro`")


def _cmd_data_restore(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.ingest import restore_data

    print(restore_data(args.out, args.dvc_file))


def _cmd_remote_setup(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.remote import check_remote, configure_remote, load_remote_settings
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    settings = load_remote_settings(root)
    for line in configure_remote(root, settings):
        print(line)
    print(f"checked: {check_remote(settings, root)}")
    print(
        "next: commit the remote's URL (`git add .dvc/config && git commit -m 'DVC remote'`), then "
        "`dvc push --run-cache`; credentials stay in the git-ignored .dvc/config.local"
    )


def _cmd_remote_check(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.remote import check_remote, load_remote_settings
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    settings = load_remote_settings(root)
    print(f"DVC remote '{settings.name}' ({settings.display_url}): {check_remote(settings, root)}")


def _cmd_report(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.report import results_table

    print(results_table(Path.cwd()))


def _cmd_sync(args: argparse.Namespace) -> None:
    from mnist_lab import tracking
    from mnist_lab.system.redact import display_uri
    from mnist_lab.system.workspace import repository_root
    from mnist_lab.tracking import outbox

    root = repository_root()
    if not outbox.pending_records(root):
        if not args.quiet:
            print(f"nothing to send: {tracking.OUTBOX}/ is empty")
        return
    settings = tracking.TrackingSettings.from_environment(root)
    try:
        tracking.check_server(settings)
    except tracking.TrackingServerUnreachable as exc:
        if not args.quiet:
            raise
        print(
            f"warning: {exc}; runs stay in {tracking.OUTBOX}/ until `mnist-lab sync` reaches it",
            file=sys.stderr,
        )
        return
    (root / tracking.SERVER_AWAY).unlink(missing_ok=True)  # it answers: stages may try it again
    sent, problems = outbox.send_pending(root, settings)
    print(f"sent {len(sent)} run(s) to {display_uri(settings.tracking_uri)}")
    if problems:
        raise MnistLabError("not sent: " + "; ".join(problems))


def _print_tagged_runs(heading: str, commit: str, links, untagged: list[str]) -> None:
    """What `commit` / `link` did: the heading, each run, and a warning naming the runs that could not be
    tagged with the commit (never announced as tagged). `links`: list[linking.RunLink]."""
    print(heading)
    for link in links:
        state = " - NOT tagged" if link.model in untagged else ""
        print(f"  {link.model}: {link.run_id or 'waiting in the outbox'} (record {link.record_id}){state}")
    if untagged:
        print(
            f"warning: could not tag the runs of {', '.join(untagged)} with {commit[:12]} (tag "
            "mnist_lab.results_commit): the tracking server did not answer. The commit's trailers name "
            f"them; `mnist-lab link {commit[:12]}` tags them once it answers",
            file=sys.stderr,
        )


def _cmd_commit(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.linking import commit_experiment
    from mnist_lab.system.workspace import repository_root

    commit, links, untagged = commit_experiment(repository_root(), args.message)
    tagged = "its runs are tagged with it" if not untagged else "its runs (not all tagged: see below)"
    _print_tagged_runs(f"committed the experiment as {commit[:12]}; {tagged}:", commit, links, untagged)


def _cmd_promote(args: argparse.Namespace) -> int:
    from mnist_lab.core.data import task_labels
    from mnist_lab.core.settings import load_settings
    from mnist_lab.serving.registry import (
        CHAMPION,
        CHAMPION_TAG,
        promote,
        promote_commit,
        registry_available,
        roll_back,
        roll_back_commit,
    )
    from mnist_lab.stages.common import load_arrays
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    settings = load_settings(root / "params.yaml")
    name = settings.registry.model_name
    with_registry = registry_available(root)
    if not with_registry:
        print(
            f"note: this tracking server has no Model Registry: the {CHAMPION} is the experiment commit "
            f"git tag {CHAMPION_TAG} points at, its model from DVC",
            file=sys.stderr,
        )
    if args.rollback:
        before, after = roll_back(root, name) if with_registry else roll_back_commit(root)
        print(f"{name}: {CHAMPION} moved back from {before} to {after}")
        return 0
    prepared = load_arrays(root / "outputs" / "prepared.npz", ("test_pixels", "test_labels"))
    y_true = task_labels(prepared["test_labels"], settings.task.kind, settings.task.positive_class)
    if not with_registry:
        comparison = promote_commit(
            root, settings.select.metric, prepared["test_pixels"], y_true, settings.task.kind == "binary",
            force=args.force, min_delta=args.min_delta,
        )  # fmt: skip
        print(f"{name}: {comparison.table()}")
        return 0 if comparison.promoted else 1
    comparison = promote(
        root,
        name,
        settings.select.metric,
        prepared["test_pixels"],
        y_true,
        settings.task.kind,
        settings.task.positive_class,
        force=args.force,
        min_delta=args.min_delta,
    )
    print(f"{name}: {comparison.table()}")
    return 0 if comparison.promoted else 1


def _load_model(root: Path, model_uri: str | None):
    """The model `--model` names (any MLflow model URI), else the workspace's best model from its
    DVC-tracked files (featurizer + classifier; offline, no tracking store needed)."""
    if model_uri:
        from mnist_lab.serving.registry import load_sklearn_model

        return load_sklearn_model(root, model_uri), model_uri
    from mnist_lab.serving.inference import workspace_best_model

    name, pipeline, _ = workspace_best_model(root)
    return pipeline, f"the workspace's best model ({name}, from DVC)"


def _add_predict_stage(root: Path, args: argparse.Namespace) -> None:
    """Add (or replace) a `predict` stage in dvc.yaml that reruns this command when the images or the best
    model change."""
    from mnist_lab.datasets.ingest import dvc

    if args.model:
        raise MnistLabError("--as-stage predicts with the workspace's best model: leave out --model")
    images, output = (Path(os.path.relpath(Path(p).resolve(), root)) for p in (args.input, args.output))
    if not (root / images).is_file():
        raise MnistLabError(f"{args.input}: no such file")
    deps = [str(images), "best_model.json", "outputs/featurizer.joblib", "models"]
    command = f"python -m mnist_lab.cli predict {images} -o {output}"
    added = dvc("stage", "add", "--force", "--name", "predict", *(f"--deps={d}" for d in deps),
                f"--outs={output}", command, cwd=root)  # fmt: skip
    if added.returncode != 0:
        raise MnistLabError(f"`dvc stage add` failed: {added.stderr.strip() or added.stdout.strip()}")
    print(f"added stage `predict` to dvc.yaml: {command}\nrun it with `dvc repro predict` (or `dvc repro`)")


def _cmd_predict(args: argparse.Namespace) -> None:
    import time

    from mnist_lab.serving.inference import predict_frame, read_images, write_predictions
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    if args.as_stage:
        _add_predict_stage(root, args)
        return
    model, described = _load_model(root, args.model)
    pixels = read_images(args.input)
    started = time.perf_counter()
    predictions = predict_frame(model, pixels, str(args.input))
    seconds = time.perf_counter() - started
    write_predictions(predictions, args.output)
    rate = len(pixels) / seconds if seconds > 0 else float("inf")
    print(
        f"wrote {len(predictions)} predictions to {args.output} with {described} ({rate:,.0f} images/s)",
        file=sys.stderr,
    )


def _cmd_serve(args: argparse.Namespace) -> None:
    from mnist_lab.serving.pyfunc import serve_command
    from mnist_lab.system.workspace import repository_root

    command, env, described = serve_command(
        repository_root(), args.model, args.workspace, args.host, args.port, args.workers
    )
    print(
        f"serving {described} at http://{args.host}:{args.port}/invocations (Ctrl-C stops it)",
        file=sys.stderr,
    )
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


def _cmd_link(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.linking import link_commit
    from mnist_lab.system.workspace import repository_root

    commit, links, untagged = link_commit(repository_root(), args.revision)
    heading = (
        f"tagged the runs of {commit[:12]} with it"
        if not untagged
        else f"{commit[:12]}: not every run tagged"
    )
    _print_tagged_runs(f"{heading} (nothing committed):", commit, links, untagged)


def _cmd_runs(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.linking import LinkingError, resolve_sent_runs, runs_of_commit
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    links = resolve_sent_runs(root, runs_of_commit(root, args.revision))
    if not links:
        raise LinkingError(
            f"{args.revision} names no MLflow runs: no MLflow-Run trailers and no reports/*/mlflow.json"
        )
    for link in links:
        print(f"{link.model}\t{link.run_id or 'pending'}\t{link.record_id}")


def _cmd_commit_of(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.linking import commit_of_run
    from mnist_lab.system.workspace import repository_root

    print(commit_of_run(repository_root(), args.run_id))


def _cmd_history(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.history import as_json, as_markdown, as_text, experiment_history
    from mnist_lab.system.workspace import repository_root

    rows = experiment_history(repository_root(), args.revision, args.limit)
    print(as_json(rows) if args.json else as_markdown(rows) if args.md else as_text(rows))


def _cmd_compare(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.compare import as_json, as_text, compare
    from mnist_lab.system.workspace import repository_root

    comparison = compare(repository_root(), args.old, args.new)
    print(as_json(comparison) if args.json else as_text(comparison))


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from mnist_lab.experiments.reproduce import as_table, reproduce
    from mnist_lab.system.workspace import repository_root

    result = reproduce(repository_root(), args.revision, keep=args.keep, locked_env=args.locked_env)
    print(as_table(result, everything=args.all))
    return 0 if result.matches else 1


def _cmd_ui(args: argparse.Namespace) -> None:
    from mnist_lab.system.redact import display_uri
    from mnist_lab.system.workspace import repository_root
    from mnist_lab.tracking import LOCAL_ARTIFACTS, TrackingSettings

    root = repository_root()
    settings = TrackingSettings.from_environment(root)
    if not settings.is_local:
        print(f"runs go to a remote server: open {display_uri(settings.tracking_uri)} in a browser")
        return
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow),
        "ui",
        "--backend-store-uri",
        settings.tracking_uri,
        "--artifacts-destination",
        str(root / LOCAL_ARTIFACTS),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execv(command[0], command)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (say 0.002)") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more (say 0.002)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="get data into data/").add_subparsers(
        dest="data_command", required=True
    )
    digits = data.add_parser("digits", help="write scikit-learn's bundled 8x8 digits as IDX (no download)")
    digits.add_argument("--out", type=Path, default=Path("data"))
    digits.add_argument(
        "--dvc-file",
        type=Path,
        default=Path("data.dvc"),
        help="check the bytes against the version this file records (default: data.dvc)",
    )
    digits.add_argument("--no-check", action="store_true", help="write without checking against --dvc-file")
    digits.set_defaults(handler=_cmd_data_digits)

    ingest = data.add_parser(
        "ingest",
        help="validate and copy MNIST-format IDX files from a folder, a URL, MNIST's mirrors or OpenML",
    )
    ingest.add_argument(
        "source",
        help="a folder, a base URL holding the four IDX files, `mnist` (the official files from public "
        "mirrors, md5-checked; ~11 MB) or `openml`",
    )
    ingest.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="with `mnist`: try this base URL before the public mirrors (repeatable); "
        "the official md5 of each file is still checked",
    )
    ingest.add_argument("--out", type=Path, default=Path("data"))
    ingest.add_argument("--no-track", action="store_true", help="do not run `dvc add` on the result")
    ingest.set_defaults(handler=_cmd_data_ingest)

    restore = data.add_parser(
        "restore", help="make data/ match data.dvc: cache, remote, or regenerate the default"
    )
    restore.add_argument("--out", type=Path, default=Path("data"))
    restore.add_argument("--dvc-file", type=Path, default=Path("data.dvc"))
    restore.set_defaults(handler=_cmd_data_restore)

    remote = commands.add_parser(
        "remote", help="the DVC remote: URL in .dvc/config, credentials from .env in .dvc/config.local"
    ).add_subparsers(dest="remote_command", required=True)
    setup = remote.add_parser(
        "setup",
        help="make the remote that .env names (DVC_REMOTE_URL or DAGSHUB_REPO) DVC's default, then check it",
    )
    setup.set_defaults(handler=_cmd_remote_setup)
    check = remote.add_parser("check", help="check that the remote answers and takes the credentials")
    check.set_defaults(handler=_cmd_remote_check)

    report = commands.add_parser("report", help="table of the models' metrics and their MLflow runs")
    report.set_defaults(handler=_cmd_report)

    sync = commands.add_parser("sync", help="send runs kept while the tracking server was unreachable")
    sync.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing when there is nothing to send; only warn if the server is unreachable",
    )
    sync.set_defaults(handler=_cmd_sync)

    commit = commands.add_parser(
        "commit", help="commit the experiment's files with its MLflow runs, and tag the runs with the commit"
    )
    commit.add_argument("-m", "--message", required=True)
    commit.set_defaults(handler=_cmd_commit)

    promote = commands.add_parser(
        "promote",
        help="move alias champion to the registered challenger if it beats the champion on this workspace's "
        "test set (exit 1 when it does not)",
    )
    promote_mode = promote.add_mutually_exclusive_group()
    promote_mode.add_argument("--force", action="store_true", help="promote even if it does not beat it")
    promote_mode.add_argument(
        "--rollback", action="store_true", help="move champion back to the version it replaced"
    )
    promote.add_argument(
        "--min-delta",
        type=_non_negative_float,
        default=0.0,
        metavar="X",
        help="the challenger must beat the champion's score by more than X (default 0)",
    )
    promote.set_defaults(handler=_cmd_promote)

    predict = commands.add_parser(
        "predict", help="batch predictions (label, per-class probabilities) for IDX, CSV or Parquet images"
    )
    predict.add_argument("input", type=Path, help="IDX images file (*-idx3-ubyte[.gz]), .csv or .parquet")
    predict.add_argument("-o", "--output", required=True, type=Path, help="predictions: .csv or .parquet")
    predict.add_argument(
        "--model",
        help="an MLflow model URI, e.g. models:/mnist-lab@champion (default: the workspace's best model)",
    )
    predict.add_argument(
        "--as-stage",
        action="store_true",
        help="add this as a DVC stage `predict` (dvc.yaml) instead, rerun by `dvc repro` when the images or "
        "the best model change",
    )
    predict.set_defaults(handler=_cmd_predict)

    serve = commands.add_parser(
        "serve",
        help="serve the champion (or --model URI, or --workspace) over REST with `mlflow models serve`",
    )
    source = serve.add_mutually_exclusive_group()
    source.add_argument(
        "--model", help="an MLflow model URI (default: models:/<registry.model_name>@champion)"
    )
    source.add_argument(
        "--workspace",
        action="store_true",
        help="serve the workspace's best model from its DVC-tracked files (no registry or store needed)",
    )
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_cmd_serve)

    link = commands.add_parser(
        "link", help="tag the runs of a commit not made by `mnist-lab commit` (e.g. `dvc exp branch`) with it"
    )
    link.add_argument("revision", nargs="?", default="HEAD")
    link.set_defaults(handler=_cmd_link)

    runs = commands.add_parser("runs", help="the MLflow runs of an experiment commit (from git alone)")
    runs.add_argument("revision", nargs="?", default="HEAD")
    runs.set_defaults(handler=_cmd_runs)

    commit_of = commands.add_parser("commit-of", help="the commit holding a run's results")
    commit_of.add_argument("run_id", help="an MLflow run id (or a mnist_lab.record_id)")
    commit_of.set_defaults(handler=_cmd_commit_of)

    history = commands.add_parser("history", help="one row per experiment commit, from git alone")
    history.add_argument("revision", nargs="?", default="HEAD")
    history.add_argument("-n", "--limit", type=int)
    output = history.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--md", action="store_true", help="a Markdown table")
    history.set_defaults(handler=_cmd_history)

    compare = commands.add_parser("compare", help="two experiments: params, metrics, data, code, runs")
    compare.add_argument("old", help="a revision (commit, branch, tag, DVC experiment ref)")
    compare.add_argument("new", nargs="?", help="a revision (default: the workspace)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=_cmd_compare)

    reproduce = commands.add_parser(
        "reproduce",
        help="rerun a past experiment in a temporary clone; exit 0 only if its metrics match exactly",
    )
    reproduce.add_argument("revision")
    reproduce.add_argument("--all", action="store_true", help="show every metric, per class too")
    reproduce.add_argument("--keep", type=Path, help="copy the clone and its scratch store here")
    reproduce.add_argument(
        "--locked-env",
        action="store_true",
        help="run it in a new environment built from the revision's requirements.lock (needs the package "
        "index or pip's cache) rather than this one",
    )
    reproduce.set_defaults(handler=_cmd_reproduce)

    ui = commands.add_parser("ui", help="open the MLflow UI on this repository's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    import signal

    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `mnist-lab history | head` ends quietly
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except MnistLabError as exc:
        from mnist_lab.system.redact import redact

        # messages quote what git, DVC and servers said: URL credentials and secret values masked
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
