"""`mnist-lab data` and `mnist-lab remote`: get data into data/, and the DVC remote."""

from __future__ import annotations

import argparse
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
    from mnist_lab.datasets.remote import configure_remote, load_remote_settings
    from mnist_lab.datasets.remote_check import check_remote
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
    from mnist_lab.datasets.remote import load_remote_settings
    from mnist_lab.datasets.remote_check import check_remote
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    settings = load_remote_settings(root)
    print(f"DVC remote '{settings.name}' ({settings.display_url}): {check_remote(settings, root)}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The data and remote commands."""
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
