"""The experiment commands: results (`report`), runs waiting for the server (`sync`), commits and their runs
(`commit`, `link`, `runs`, `commit-of`), `history`, `compare`, `reproduce`, and the MLflow UI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnist_lab.cli.arguments import check_port_free, port_number, positive_int
from mnist_lab.core.errors import MnistLabError


def _cmd_report(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.report import results_table
    from mnist_lab.system.workspace import workspace_root

    root = workspace_root()
    print(results_table(root))
    try:
        from mnist_lab.experiments.linking import LinkingError, pipeline_status

        stale = pipeline_status(root)
    except (LinkingError, MnistLabError, OSError):  # DVC could not tell: the table stands as it is
        stale = ""
    if stale:
        print(
            f"warning: the workspace's results are not up to date ({stale}): the metrics above are not those "
            "of its params, data and code; run `dvc repro` first",
            file=sys.stderr,
        )
    if args.where:
        from mnist_lab.experiments.report import run_stores

        print("\n" + "\n".join(run_stores(workspace_root())))


def _cmd_sync(args: argparse.Namespace) -> None:
    from mnist_lab import tracking
    from mnist_lab.system.redact import display_uri
    from mnist_lab.system.workspace import repository_root
    from mnist_lab.tracking import outbox

    root = repository_root()
    if args.retry_rejected:
        moved = outbox.retry_rejected(root)
        print(f"moved {len(moved)} run(s) from {outbox.REJECTED}/ back to {tracking.OUTBOX}/")
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
    sent, problems = outbox.send_pending(root, settings, to_any_server=args.to_this_server)
    if sent or not args.quiet:
        print(f"sent {len(sent)} run(s) to {display_uri(settings.tracking_uri)}")
    if problems and args.quiet:  # after a pipeline run (make run): the runs are kept, the run succeeded
        for problem in problems:
            print(f"warning: not sent: {problem}", file=sys.stderr)
    elif problems:
        raise MnistLabError("not sent: " + "; ".join(problems))


def _print_tagged_runs(heading: str, commit: str, links, tagging) -> None:
    """What `commit` / `link` did: the heading, each run (tagged, keeping the commit that recorded it
    first, or not tagged), and a warning naming the runs that could not be tagged and why (never announced
    as tagged). `links`: list[linking.RunLink]; `tagging`: linking.Tagging."""
    from mnist_lab.experiments.linking import SERVER_AWAY

    print(heading)
    for link in links:
        state = ""
        if link.model in tagging.untagged:
            state = " - NOT tagged"
        elif link.model in tagging.kept:
            state = f" - keeps {tagging.kept[link.model][:12]}, the commit that recorded it first"
        elif link.model in tagging.already:
            state = " - tagged with it already"
        print(f"  {link.model}: {link.run_id or 'waiting in the outbox'} (record {link.record_id}){state}")
    away = [model for model, why in tagging.untagged.items() if why == SERVER_AWAY]
    if away:
        print(
            f"warning: could not tag the runs of {', '.join(away)} with {commit[:12]} (tag "
            f"mnist_lab.results_commit): {SERVER_AWAY}. The commit's trailers name them; "
            f"`mnist-lab link {commit[:12]}` tags them once it answers",
            file=sys.stderr,
        )
    for model, why in tagging.untagged.items():
        if why != SERVER_AWAY:
            print(
                f"warning: could not tag the run of {model} with {commit[:12]}: {why}. The commit's "
                "trailers name it all the same",
                file=sys.stderr,
            )


def _cmd_commit(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.linking import commit_experiment, committed_code
    from mnist_lab.experiments.table import carry_labels
    from mnist_lab.system import commands
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    commit, links, tagging = commit_experiment(root, args.message)
    code = committed_code(root, commit)
    carried = carry_labels(root, commit)
    tagged = "its runs are tagged with it" if not tagging.untagged else "its runs (not all tagged: see below)"
    if tagging.kept and not tagging.untagged:
        new = [link for link in links if link.model not in {*tagging.kept, *tagging.already}]
        tagged = "its new runs are tagged with it" if new else "its runs keep the commits that recorded them"
    _print_tagged_runs(f"committed the experiment as {commit[:12]}; {tagged}:", commit, links, tagging)
    if code:
        print(f"with the changed code its results were made with: {', '.join(code)}")
    for experiment, labels in carried.items():  # its row is this commit's now
        print(f"labels of {experiment} ({', '.join(labels)}) moved to {commit[:12]} in labels.yaml")
    if commands.git_output("symbolic-ref", "-q", "HEAD", cwd=root) is None:  # a detached HEAD
        print(
            f"warning: HEAD is detached: no branch holds {commit[:12]}, and the next checkout leaves it "
            f"behind (git gc deletes it in time); keep it with `git switch -c <new branch>`",
            file=sys.stderr,
        )


def _cmd_link(args: argparse.Namespace) -> int:
    """Exit 1 when a run could not be tagged (the server away or refusing): `link` exists to tag them, and
    a script running it must see that it did not."""
    from mnist_lab.experiments.linking import link_commit
    from mnist_lab.system.workspace import repository_root

    commit, links, tagging = link_commit(repository_root(), args.revision)
    if tagging.untagged:
        heading = f"{commit[:12]}: not every run tagged"
    elif not [link for link in links if link.model not in {*tagging.kept, *tagging.already}]:
        heading = f"the runs of {commit[:12]} were tagged already: nothing to do"  # a second `link`
    elif tagging.kept:
        heading = f"tagged the new runs of {commit[:12]} with it"
    else:
        heading = f"tagged the runs of {commit[:12]} with it"
    _print_tagged_runs(f"{heading} (nothing committed):", commit, links, tagging)
    return 1 if tagging.untagged else 0


def _cmd_runs(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.compare import experiment_commit
    from mnist_lab.experiments.linking import LinkingError, resolve_sent_runs, runs_of_commit
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    commit = experiment_commit(root, args.revision)  # a DVC experiment's name too, as compare takes it
    links = resolve_sent_runs(root, runs_of_commit(root, commit))
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
    from mnist_lab.experiments.compare import experiment_commit
    from mnist_lab.experiments.history import as_json, as_markdown, as_text, experiment_history
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    revision = args.revision if args.revision == "HEAD" else experiment_commit(root, args.revision)
    rows = experiment_history(root, revision, args.limit)
    shown = rows if args.all else [row for row in rows if not row.code_only]
    print(as_json(shown) if args.json else as_markdown(shown) if args.md else as_text(shown))
    if left_out := len(rows) - len(shown):
        print(
            f"({left_out} more {'commit' if left_out == 1 else 'commits'} that changed code alone, with the "
            "results and runs of the experiment before: --all shows them)",
            file=sys.stderr,
        )


def _cmd_compare(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.compare import as_json, as_text, compare
    from mnist_lab.system.workspace import repository_root

    comparison = compare(repository_root(), args.old, args.new)
    print(as_json(comparison) if args.json else as_text(comparison, everything=args.all))


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
    check_port_free(args.host, args.port)  # MLflow's UI announced, failed on it, and exited 0
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


def _cmd_label(args: argparse.Namespace) -> None:
    from mnist_lab.experiments.labels import LABELS_FILE, experiment_id, set_label
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    experiment = experiment_id(root, args.experiment)
    labels = set_label(root, experiment, args.label, present=not args.remove)
    shown = experiment if experiment.startswith("exp:") else experiment[:12]
    print(f"{shown}: {', '.join(labels) or 'no labels'} (in {LABELS_FILE}: commit it to share)")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The experiment commands."""
    report = commands.add_parser("report", help="table of the models' metrics and their MLflow runs")
    report.add_argument("--where", action="store_true", help="then where the runs are (the store in .env)")
    report.set_defaults(handler=_cmd_report)

    sync = commands.add_parser("sync", help="send runs kept while the tracking server was unreachable")
    sync.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing when there is nothing to send; only warn if the server is unreachable",
    )
    sync.add_argument(
        "--retry-rejected",
        action="store_true",
        help="first put the runs the server refused (.mnist-lab/outbox-rejected/) back in the outbox",
    )
    sync.add_argument(
        "--to-this-server",
        action="store_true",
        help="send runs logged for another server (the tracking URI changed since) to the one .env names now",
    )
    sync.set_defaults(handler=_cmd_sync)

    commit = commands.add_parser(
        "commit", help="commit the experiment's files with its MLflow runs, and tag the runs with the commit"
    )
    commit.add_argument("-m", "--message", required=True)
    commit.set_defaults(handler=_cmd_commit)

    link = commands.add_parser(
        "link", help="tag the runs of a commit not made by `mnist-lab commit` (e.g. `dvc exp branch`) with it"
    )
    link.add_argument("revision", nargs="?", default="HEAD", help="a commit, branch or tag (default: HEAD)")
    link.set_defaults(handler=_cmd_link)

    runs = commands.add_parser("runs", help="the MLflow runs of an experiment commit (from git alone)")
    runs.add_argument(
        "revision", nargs="?", default="HEAD", help="a commit, branch or tag, or a DVC experiment's name"
    )
    runs.set_defaults(handler=_cmd_runs)

    commit_of = commands.add_parser("commit-of", help="the commit holding a run's results")
    commit_of.add_argument("run_id", help="an MLflow run id (or a mnist_lab.record_id)")
    commit_of.set_defaults(handler=_cmd_commit_of)

    history = commands.add_parser("history", help="one row per experiment commit, from git alone")
    history.add_argument(
        "revision",
        nargs="?",
        default="HEAD",
        help="the newest commit to list from (a DVC experiment's name too; default: HEAD)",
    )
    history.add_argument(
        "-n", "--limit", type=positive_int, help="the newest N commits (code-only ones count, shown or not)"
    )
    history.add_argument(
        "--all",
        action="store_true",
        help="also the commits that changed code alone (the results and runs of the experiment before them)",
    )
    output = history.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--md", action="store_true", help="a Markdown table")
    history.set_defaults(handler=_cmd_history)

    compare = commands.add_parser("compare", help="two experiments: params, metrics, data, code, runs")
    compare.add_argument("old", help="a revision (commit, branch, tag) or a DVC experiment's name")
    compare.add_argument("new", nargs="?", help="a revision or DVC experiment (default: the workspace)")
    compare.add_argument("--json", action="store_true", help="everything, as JSON")
    compare.add_argument("--all", action="store_true", help="list the unchanged metrics too")
    compare.set_defaults(handler=_cmd_compare)

    reproduce = commands.add_parser(
        "reproduce",
        help="rerun a past experiment in a temporary clone; exit 0 only if its metrics match exactly",
    )
    reproduce.add_argument("revision", help="a commit, branch or tag, or a DVC experiment's name")
    reproduce.add_argument("--all", action="store_true", help="show every metric, per class too")
    reproduce.add_argument("--keep", type=Path, help="copy the clone and its scratch store here")
    reproduce.add_argument(
        "--locked-env",
        action="store_true",
        help="run it in a new environment built from the revision's requirements.lock (needs the package "
        "index or pip's cache) rather than this one",
    )
    reproduce.set_defaults(handler=_cmd_reproduce)

    label = commands.add_parser(
        "label", help="add (or --remove) a label on an experiment, e.g. hidden or baseline (labels.yaml)"
    )
    label.add_argument("experiment", help="a revision (commit, branch, tag) or exp:<DVC experiment name>")
    label.add_argument("label", help="1-32 characters: a-z 0-9 - _ .")
    label.add_argument("--remove", action="store_true")
    label.set_defaults(handler=_cmd_label)

    ui = commands.add_parser("ui", help="open the MLflow UI on this repository's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=port_number, default=5000)
    ui.set_defaults(handler=_cmd_ui)
