"""Which of this package's files a pipeline stage runs, and their digests.

dvc.yaml's `code` stage writes one listing per stage, `stage-code/<stage>.sha256` (`sha256sum`'s format:
`sha256sum -c stage-code/train.sha256` checks a checkout against it), and each stage depends on its own
listing instead of on the ~30 source files it loads. DVC reruns a stage exactly when one of its files
changed (its listing changed), as before; but dvc.lock records one entry per stage instead of ~30, and DVC
parses and rewrites the whole lock after every stage (README, Performance).

The files a stage runs are found without running it: the stage's module, every module of this package that
any of them imports anywhere (at the top, inside a function, under TYPE_CHECKING), and the `__init__.py` of
each package on the way. That is a superset of what one run loads (tests/test_pipeline.py checks it
against what each stage really loaded), so a change to code that may decide a result reruns the stage."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

from mnist_lab.core.errors import MnistLabError

LISTINGS = "stage-code"  # the folder of the listings (dvc.yaml's `code` stage writes them there)


def module_file(source_root: Path, module: str) -> Path | None:
    """The file of `module` (dotted) under `source_root` (the folder that holds the package), or None."""
    base = source_root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> Iterable[str]:
    """Every module name `path` (the file of `module`) imports, anywhere in it; for `from a import b`, both
    `a` and `a.b` (`b` may be a module)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte, on some Python versions
        line = exc.lineno if isinstance(exc, SyntaxError) else None
        where = f"{path}:{line}" if line else str(path)
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise MnistLabError(
            f"{where}: {reason}: the stages cannot run this code; fix it, then `dvc repro`"
        ) from None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x`, `from ..core import y`
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                imported = ".".join([*base, node.module] if node.module else base)
            else:
                imported = node.module or ""
            yield imported
            yield from (f"{imported}.{alias.name}" for alias in node.names if alias.name != "*")


def imported_files(source_root: Path, module: str) -> list[Path]:
    """The files of `module`'s package (under `source_root`) that running `module` can load, sorted."""
    package = module.partition(".")[0]
    found: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name.partition(".")[0] != package:
            continue  # another package: not this repository's code
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py, a/b/__init__.py, ...
            prefix = ".".join(parts[:end])
            path = module_file(source_root, prefix)
            if path is not None and path not in found:
                found.add(path)
                todo.extend(_imported_modules(path, prefix))
    if module_file(source_root, module) is None:
        raise MnistLabError(f"no module {module} under {source_root}: check the stage names in dvc.yaml")
    return sorted(found)


def code_listing(root: Path, files: Iterable[Path]) -> str:
    """`sha256  path` per file (paths relative to `root`, as `sha256sum` writes them), one per line."""
    lines = []
    for path in sorted(files):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    return "".join(lines)


def is_code_listing(path: str) -> bool:
    """Whether `path` (relative to the repository, as dvc.lock names it) is a stage's listing."""
    folder, _, name = path.rpartition("/")
    return folder == LISTINGS and name.endswith(".sha256")


def parse_code_listing(text: str) -> dict[str, str]:
    """`{path: sha256}` of a listing `code_listing` wrote (lines that are not `<64 hex>  <path>` skipped)."""
    listed = {}
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if len(digest) == 64 and path:
            listed[path] = digest
    return listed
