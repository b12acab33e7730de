"""`mnist-lab data` and `mnist-lab remote`: get data into data/, and the DVC remote."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from mnist_lab.core.errors import MnistLabError

OUT_HELP = "the data folder (default: data/ at the repository's root, from any of its folders)"
FORCE_HELP = "replace data in the folder that no .dvc file records (lost for good); by default it is refused"


def _in_repository(given: Path | None, default: str) -> Path:
    """A path the user gave (relative to the current folder, as typed), else `default` at the root of the
    repository around the current folder (so the data commands work from any of its folders), shown
    relative to the current folder; outside any repository, `default` in the current folder."""
    if given is not None:
        return given
    from mnist_lab.system.workspace import workspace_root

    try:
        return Path(os.path.relpath(workspace_root() / default))
    except MnistLabError:
        return Path(default)


def _cmd_data_digits(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.ingest import write_digits

    out = _in_repository(args.out, "data")
    dvc_file = None if args.no_check else _in_repository(args.dvc_file, "data.dvc")
    if dvc_file is not None and not dvc_file.is_file():
        if args.dvc_file is not None:
            raise MnistLabError(f"--dvc-file {dvc_file}: no such file (or write unchecked: --no-check)")
        print(f"note: no {dvc_file} to check the digits against: written unchecked", file=sys.stderr)
        dvc_file = None
    md5 = write_digits(out, dvc_file, force=args.force)
    checked = f", checked against {dvc_file}" if dvc_file else ""
    print(f"wrote scikit-learn's bundled digits to {out}/ as MNIST-format IDX (data version {md5}{checked})")


def _cmd_data_ingest(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.ingest import MNIST_MIRRORS, dvc, ingest
    from mnist_lab.system.redact import display_uri

    if args.mirror and args.source != "mnist":
        raise MnistLabError("--mirror is only for `data ingest mnist`; give any other base URL as the source")
    for mirror in args.mirror:
        if "://" not in mirror:  # each file said "cannot download (unknown url type: 127.0.0.1)"
            raise MnistLabError(f"--mirror {mirror}: not a URL; give the folder's URL, as http://host/path/")
    if args.source == "mnist" and Path("mnist").is_dir():
        print("note: `mnist` downloads MNIST; to ingest the folder ./mnist, write ./mnist", file=sys.stderr)
    out = _in_repository(args.out, "data")
    if not args.no_track:
        _check_dvc_can_track(out)
    md5 = ingest(args.source, out, mirrors=(*args.mirror, *MNIST_MIRRORS), force=args.force)
    print(f"wrote {out}/ from {display_uri(args.source)} (data version {md5})")
    if args.no_track:
        print(f"next: `dvc add {out}` and commit {out}.dvc, then `dvc repro`")
        return
    # data/ is replaced already: if DVC does not record it, say so (the next `dvc repro` would take it as
    # the data version without a word) and how to keep it or go back
    not_recorded = (
        f"{out}/ holds the new data (version {md5}), but {out}.dvc may still record the one before: "
        f"`dvc add {out}` records the new data; `mnist-lab data restore --force` brings back what "
        f"{out}.dvc records"
    )
    try:
        added = dvc("add", str(out))
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # (a closed terminal)
            print(f"interrupted while DVC recorded it: {not_recorded}", file=sys.stderr)
        raise
    except MnistLabError as exc:  # DVC timed out, or could not start
        raise MnistLabError(f"{exc}\n{not_recorded}") from None
    if added.returncode != 0:
        raise MnistLabError(f"`dvc add {out}` failed: {added.stderr.strip()}\n{not_recorded}")
    print(f"tracked it with `dvc add {out}`: commit {out}.dvc, then run `dvc repro`")


def _check_dvc_can_track(out: Path) -> None:
    """Before anything is written: `dvc add <out>` will work (a DVC repository around the current folder,
    and `out` inside it), else a MnistLabError naming --no-track. The files were written, then the command
    failed with DVC's "you are not inside of a DVC repository"."""
    from mnist_lab.system.workspace import workspace_root

    try:
        root = workspace_root(Path.cwd())
    except MnistLabError:
        root = None
    if root is None or not (root / ".dvc").is_dir():
        raise MnistLabError(
            f"{Path.cwd()} is in no DVC repository, so `dvc add {out}` could not record the data; nothing "
            "was written: run it inside the repository (or `dvc init` one), or give --no-track to write the "
            "files alone"
        )
    if not (out.parent.resolve() / out.name).is_relative_to(root):  # data/ may be a link to elsewhere
        raise MnistLabError(
            f"--out {out} is outside the repository ({root}), so DVC could not record it; nothing was "
            "written: give a folder inside the repository, or --no-track to write the files alone"
        )


def _cmd_data_restore(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.ingest import restore_data

    if args.dvc_file is None:  # restoring is to what a repository's data.dvc records: outside one, said
        from mnist_lab.system.workspace import workspace_root

        workspace_root()  # (it advised `git checkout -- data.dvc` where there is no repository)
    out, dvc_file = _in_repository(args.out, "data"), _in_repository(args.dvc_file, "data.dvc")
    print(restore_data(out, dvc_file, force=args.force))


def _cmd_remote_setup(args: argparse.Namespace) -> None:
    from mnist_lab.datasets.remote import load_remote_settings
    from mnist_lab.datasets.remote_check import setup_remote
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    settings = load_remote_settings(root)
    written, checked = setup_remote(root, settings, check=not args.no_check)
    for line in written:
        print(line)
    print(f"checked: {checked}" if checked else "not checked (--no-check): `mnist-lab remote check` tests it")
    if any(line.endswith("(the committed URL, kept)") for line in written):
        print("next: `dvc pull`; credentials stay in the git-ignored .dvc/config.local")
        return
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
    digits.add_argument("--out", type=Path, help=OUT_HELP)
    digits.add_argument(
        "--dvc-file",
        type=Path,
        help="check the bytes against the version this file records (default: the repository's data.dvc)",
    )
    digits.add_argument("--no-check", action="store_true", help="write without checking against --dvc-file")
    digits.add_argument("--force", action="store_true", help=FORCE_HELP)
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
    ingest.add_argument("--out", type=Path, help=OUT_HELP)
    ingest.add_argument("--no-track", action="store_true", help="do not run `dvc add` on the result")
    ingest.add_argument("--force", action="store_true", help=FORCE_HELP)
    ingest.set_defaults(handler=_cmd_data_ingest)

    restore = data.add_parser(
        "restore", help="make data/ match data.dvc: cache, remote, or regenerate the default"
    )
    restore.add_argument("--out", type=Path, help=OUT_HELP)
    restore.add_argument("--dvc-file", type=Path, help="default: the repository's data.dvc")
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace data that differs from the recorded version (by default it is refused, unchanged)",
    )
    restore.set_defaults(handler=_cmd_data_restore)

    remote = commands.add_parser(
        "remote", help="the DVC remote: URL in .dvc/config, credentials from .env in .dvc/config.local"
    ).add_subparsers(dest="remote_command", required=True)
    setup = remote.add_parser(
        "setup",
        help="make the remote that .env names (DVC_REMOTE_URL or DAGSHUB_REPO) DVC's default, then check it",
    )
    setup.add_argument(
        "--no-check",
        action="store_true",
        help="write the settings without checking the remote (by default a failed check writes nothing)",
    )
    setup.set_defaults(handler=_cmd_remote_setup)
    check = remote.add_parser("check", help="check that the remote answers and takes the credentials")
    check.set_defaults(handler=_cmd_remote_check)
