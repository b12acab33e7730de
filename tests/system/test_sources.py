"""The files each stage runs, found from the imports (system/sources.py), and the `code` stage's listings."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.sources import code_listing, imported_files, is_code_listing, parse_code_listing
from tests.helpers import REPO_ROOT, run_dvc_stage

PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/stages/__init__.py": "",
    "pkg/stages/first.py": (
        "from __future__ import annotations\n"
        "import json\n"  # another package: not listed
        "from pkg.core import helper, models\n"  # a name of core/__init__.py, and a module
        "from .common import shared\n"  # relative, one level
        "from ..system import files as f\n"  # relative, two levels
        "def run():\n"
        "    import pkg.lazy.deep\n"  # inside a function: may run, so listed
        "    return pkg.lazy.deep\n"
    ),
    "pkg/stages/common.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.typing_only import T\n"
    ),
    "pkg/stages/second.py": "",
    "pkg/core/__init__.py": "def helper():\n    pass\n",
    "pkg/core/models.py": "",
    "pkg/core/unused.py": "",
    "pkg/system/__init__.py": "",
    "pkg/system/files.py": "from pkg.core import *\n",
    "pkg/lazy/__init__.py": "",
    "pkg/lazy/deep.py": "",
    "pkg/typing_only.py": "",
    "pkg/board.py": "import pkg.stages.first\n",  # imports a stage: not run by it
}


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    for name, text in PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_stage_runs_every_module_its_modules_import_anywhere(package: Path) -> None:
    found = [p.relative_to(package).as_posix() for p in imported_files(package, "pkg.stages.first")]
    assert found == [
        "pkg/__init__.py",
        "pkg/core/__init__.py",
        "pkg/core/models.py",
        "pkg/lazy/__init__.py",
        "pkg/lazy/deep.py",
        "pkg/stages/__init__.py",
        "pkg/stages/common.py",
        "pkg/stages/first.py",
        "pkg/system/__init__.py",
        "pkg/system/files.py",
        "pkg/typing_only.py",
    ]
    assert [p.name for p in imported_files(package, "pkg.stages.second")] == ["__init__.py"] * 2 + [
        "second.py"
    ]


def test_code_that_cannot_be_read_or_found_is_named(package: Path) -> None:
    (package / "pkg/core/models.py").write_text("def broken(:\n")
    with pytest.raises(MnistLabError, match=r"pkg/core/models\.py:1: .*fix it, then `dvc repro`"):
        imported_files(package, "pkg.stages.first")
    (package / "pkg/core/models.py").write_bytes(b"x = 1\0\n")  # Python 3.11 says ValueError, not SyntaxError
    with pytest.raises(MnistLabError, match=r"pkg/core/models\.py: .*fix it, then `dvc repro`"):
        imported_files(package, "pkg.stages.first")
    with pytest.raises(MnistLabError, match="no module pkg.stages.third under"):
        imported_files(package, "pkg.stages.third")


def test_listings_are_the_files_of_their_folder() -> None:
    assert is_code_listing("stage-code/train.sha256")
    assert not is_code_listing("data/images.sha256") and not is_code_listing("stage-code/train.txt")


def test_a_listing_is_what_sha256sum_checks(package: Path) -> None:
    listing = code_listing(package, imported_files(package, "pkg.stages.first"))
    (package / "first.sha256").write_text(listing)
    digest = hashlib.sha256((package / "pkg/stages/first.py").read_bytes()).hexdigest()
    assert f"{digest}  pkg/stages/first.py\n" in listing
    assert (
        parse_code_listing(listing)["pkg/stages/first.py"] == digest
        and len(parse_code_listing(listing)) == 11
    )
    check = ["sha256sum", "--check", "--quiet", "first.sha256"]
    assert subprocess.run(check, cwd=package, capture_output=True).returncode == 0
    (package / "pkg/lazy/deep.py").write_text("x = 1\n")
    failed = subprocess.run(check, cwd=package, capture_output=True, text=True)
    assert failed.returncode != 0 and "pkg/lazy/deep.py: FAILED" in failed.stdout


def test_the_code_stage_rewrites_only_the_listings_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as dvc.yaml runs it, on a copy of this package: one listing per stage, each the stage's files,
    none of them the board's, the CLI's or the warm server's; an edit rewrites only the listings of the
    stages that run the edited file."""
    import shutil

    shutil.copytree(REPO_ROOT / "src" / "mnist_lab", tmp_path / "src" / "mnist_lab",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    assert run_dvc_stage("code") == 0
    stages = ["validate", "prepare", "featurize", "train", "evaluate", "select", "register"]
    listings = {stage: (tmp_path / "stage-code" / f"{stage}.sha256").read_text() for stage in stages}
    for stage, text in listings.items():
        files = parse_code_listing(text)
        assert f"src/mnist_lab/stages/{stage}.py" in files and "src/mnist_lab/__init__.py" in files
        assert not [f for f in files if f.startswith(("src/mnist_lab/board/", "src/mnist_lab/cli/"))], stage
        assert "src/mnist_lab/system/warm.py" not in files
    assert "src/mnist_lab/core/cnn.py" in parse_code_listing(listings["train"])
    for stage in stages:  # a listing written again gets the time of now
        os.utime(tmp_path / "stage-code" / f"{stage}.sha256", ns=(1, 1))
    edited = tmp_path / "src" / "mnist_lab" / "core" / "cnn.py"
    edited.write_text(edited.read_text() + "# an edit\n")
    assert run_dvc_stage("code") == 0
    changed = {s for s in stages if (tmp_path / "stage-code" / f"{s}.sha256").stat().st_mtime_ns != 1}
    assert changed == {s for s in stages if "src/mnist_lab/core/cnn.py" in parse_code_listing(listings[s])}
    assert "train" in changed and "prepare" not in changed
    # a listing with other line ends (a checkout with autocrlf) is written again: DVC hashes the bytes
    prepare = tmp_path / "stage-code" / "prepare.sha256"
    prepare.write_bytes(prepare.read_bytes().replace(b"\n", b"\r\n"))
    assert run_dvc_stage("code") == 0
    assert prepare.read_bytes() == listings["prepare"].encode()
