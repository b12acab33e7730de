"""The model commands: `promote` the registry's challenger, batch `predict`, `serve` over REST."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnist_lab.cli.arguments import (
    check_port_free,
    model_uri,
    non_negative_float,
    port_number,
    positive_int,
)
from mnist_lab.core.errors import MnistLabError
from mnist_lab.serving.rest import MAX_REQUEST_MB, MAX_REQUEST_MB_ENV


def _cmd_promote(args: argparse.Namespace) -> int:
    from mnist_lab.serving.promotion import promote_champion, roll_back_champion
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    if args.rollback and args.dry_run:
        raise MnistLabError("--dry-run is for a promotion (what it would decide); --rollback has none")
    if args.rollback:
        name, before, after = roll_back_champion(root)
        print(f"{name}: champion moved back from {before} to {after}")
        return 0
    name, decision = promote_champion(root, force=args.force, min_delta=args.min_delta, dry_run=args.dry_run)
    print(f"{name}: {decision.table()}")
    # 1 only when the challenger lost: promoting the champion again is done already (`promote && deploy`)
    return 0 if decision.promoted or decision.challenger == decision.champion else 1


def _model_root(model_uri: str | None) -> Path:
    """The repository around the current folder; with `--model` outside any, the current folder, the
    model's store coming from MLFLOW_TRACKING_URI (a batch machine has the package, not a checkout)."""
    from mnist_lab.system.workspace import repository_root

    try:
        return repository_root()
    except MnistLabError:
        if model_uri is None:
            raise
        if model_uri.startswith(("models:/", "runs:/")) and not os.environ.get("MLFLOW_TRACKING_URI"):
            raise MnistLabError(
                f"--model {model_uri}: outside a repository the store holding it must be named: set "
                "MLFLOW_TRACKING_URI (and its credentials), or run this in the repository"
            ) from None
        return Path.cwd()


def _load_model(root: Path, model_uri: str | None):
    """The model `--model` names (any MLflow model URI), else the workspace's best model from its
    DVC-tracked files (featurizer + classifier; offline, no tracking store needed)."""
    if model_uri:
        from mnist_lab.serving.registry import load_sklearn_model

        return load_sklearn_model(root, model_uri), model_uri
    from mnist_lab.serving.inference import workspace_best_model

    name, pipeline, _ = workspace_best_model(root)
    return pipeline, f"the workspace's best model ({name}, from DVC)"


def _cmd_predict(args: argparse.Namespace) -> None:
    import time

    from mnist_lab.serving.batch import check_output_file, image_chunks, kept_column_name, predict_file
    from mnist_lab.serving.inference import add_predict_stage, scale_warning

    root = _model_root(None if args.as_stage else args.model)
    check_output_file(args.input, args.output, writable=not args.as_stage)  # a stage: written by `dvc repro`
    keep = args.keep or []
    left_out = image_chunks(args.input, keep=keep).left_out  # the header, before the model loads
    if args.as_stage:
        if args.model:
            raise MnistLabError("--as-stage predicts with the workspace's best model: leave out --model")
        command, replaced = add_predict_stage(root, args.input, args.output, keep)
        if replaced and replaced != command:
            print(f"replaced stage `predict` in dvc.yaml (was: {replaced}): {command}")
        else:
            print(f"added stage `predict` to dvc.yaml: {command}")
        print("run it with `dvc repro predict` (or `dvc repro`)")
        return
    if left_out:
        print(
            f"note: not in the predictions: column(s) {', '.join(left_out[:5])} of {args.input} "
            f"(--keep {left_out[0]} copies a column beside each prediction)",
            file=sys.stderr,
        )
    renamed = [
        f"{column} as {kept_column_name(column)}" for column in keep if kept_column_name(column) != column
    ]
    if renamed:
        print(
            f"note: kept {', '.join(renamed)} (the predictions have a column of that name)", file=sys.stderr
        )
    model, described = _load_model(root, args.model)
    from tqdm import tqdm

    started = time.perf_counter()
    # a bar on a terminal (images, images/s); none in logs, where the last line says it all
    with tqdm(desc="predict", unit=" images", unit_scale=True, file=sys.stderr, disable=None) as bar:

        def on_chunk(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        count, brightest = predict_file(model, args.input, args.output, on_chunk, keep=keep)
    seconds = time.perf_counter() - started
    rate = count / seconds if seconds > 0 else float("inf")
    print(
        f"wrote {count} predictions to {args.output} with {described} ({rate:,.0f} images/s)",
        file=sys.stderr,
    )
    warning = scale_warning(brightest, str(args.input))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _cmd_serve(args: argparse.Namespace) -> None:
    from mnist_lab.serving.server import serve_command

    check_port_free(args.host, args.port)
    root = _model_root(None if args.workspace else args.model)
    command, env, described = serve_command(
        root, args.model, args.workspace, args.host, args.port, args.workers
    )
    env[MAX_REQUEST_MB_ENV] = str(args.max_request_mb)
    print(
        f"serving {described} at http://{args.host}:{args.port}/invocations (Ctrl-C stops it)",
        file=sys.stderr,
    )
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The model commands."""
    promote = commands.add_parser(
        "promote",
        help="move alias champion to the registered challenger if it beats the champion on this workspace's "
        "test set (exit 1 when it does not)",
    )
    promote_mode = promote.add_mutually_exclusive_group()
    promote_mode.add_argument(
        "--force",
        action="store_true",
        help="promote the workspace's version even if it does not beat the champion or cannot be compared "
        "with it (another task or data version)",
    )
    promote_mode.add_argument(
        "--rollback", action="store_true", help="move champion back to the version it replaced"
    )
    promote.add_argument(
        "--min-delta",
        type=non_negative_float,
        default=0.0,
        metavar="X",
        help="the challenger must beat the champion's score by more than X (default 0)",
    )
    promote.add_argument(
        "--dry-run",
        action="store_true",
        help="compare and say what would happen; move no alias, set no tag (exit status as without it)",
    )
    promote.set_defaults(handler=_cmd_promote)

    predict = commands.add_parser(
        "predict", help="batch predictions (label, per-class probabilities) for IDX, CSV or Parquet images"
    )
    predict.add_argument("input", type=Path, help="IDX images file (*-idx3-ubyte[.gz]), .csv or .parquet")
    predict.add_argument("-o", "--output", required=True, type=Path, help="predictions: .csv or .parquet")
    predict.add_argument(
        "--model",
        type=model_uri,
        help="an MLflow model URI, e.g. models:/mnist-lab@champion (default: the workspace's best model)",
    )
    predict.add_argument(
        "--keep",
        action="append",
        metavar="COLUMN",
        help="copy this column of a CSV/Parquet input (an id, a file name) beside each prediction, as "
        "written; repeat for more (`label` is written as input_label)",
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
        "--model",
        type=model_uri,
        help="an MLflow model URI (default: models:/<registry.model_name>@champion)",
    )
    source.add_argument(
        "--workspace",
        action="store_true",
        help="serve the workspace's best model from its DVC-tracked files (no registry or store needed)",
    )
    serve.add_argument("--port", type=port_number, default=5001)
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    serve.add_argument("--workers", type=positive_int, default=1)
    serve.add_argument(
        "--max-request-mb",
        type=positive_int,
        default=MAX_REQUEST_MB,
        metavar="MB",
        help=f"refuse (413) a request body larger than this (default {MAX_REQUEST_MB}: ~30,000 MNIST images "
        "as JSON)",
    )
    serve.set_defaults(handler=_cmd_serve)
