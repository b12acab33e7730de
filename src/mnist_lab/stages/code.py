"""code: list, for each stage named, the files of this package it runs with their sha256
(`<out>/<stage>.sha256`): each stage of dvc.yaml depends on its own listing (see system/sources.py).

DVC reruns this stage after any change under the package (it is cheap); a listing is rewritten only when
one of its files changed, so the other stages rerun exactly when code they run changed. It reads no
settings and no data, and DVC keeps its outputs (`persist`), so a failure leaves the last listings."""

from __future__ import annotations

from pathlib import Path

from mnist_lab.stages.common import StageContext, main_for, stage_parser
from mnist_lab.system.files import write_text_atomic
from mnist_lab.system.sources import code_listing, imported_files


def code(context: StageContext) -> None:
    args = context.args
    package: Path = args.package.resolve()
    root = Path.cwd()
    with context.compute():
        listings = {
            stage: code_listing(root, imported_files(package.parent, f"{package.name}.stages.{stage}"))
            for stage in args.stages
        }
    for stage, listing in listings.items():
        out = args.out / f"{stage}.sha256"
        if not out.is_file() or out.read_bytes() != listing.encode():  # bytes: a CRLF copy is rewritten
            write_text_atomic(out, listing)


def parser():
    p = stage_parser(__doc__)
    p.add_argument("--package", required=True, type=Path, help="the package's folder (src/mnist_lab)")
    p.add_argument("--out", required=True, type=Path, help="folder of the listings")
    p.add_argument("stages", nargs="+", help="the stages to list (modules of the package's `stages`)")
    return p


if __name__ == "__main__":
    main_for("code", parser(), code)
