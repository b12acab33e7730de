"""Atomic writes: the file appears whole or not at all, with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lab.system import files
from mnist_lab.system.files import replaced_via_temp, save_object, write_json, write_text_atomic


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umasks_permissions(tmp_path: Path, umask_022: None) -> None:
    write_json(tmp_path / "metrics.json", {"accuracy": 1.0})
    save_object(tmp_path / "model.joblib", {"a": 1})
    write_text_atomic(tmp_path / "deep" / "er" / "out.csv", "label\n1\n")
    assert mode(tmp_path / "metrics.json") == 0o644
    assert mode(tmp_path / "model.joblib") == 0o644
    assert mode(tmp_path / "deep" / "er" / "out.csv") == 0o644
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert mode(tmp_path / "metrics.json") == mode(plain)


def test_another_umask_is_respected(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "private.txt", "secret")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "private.txt") == 0o600


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path, umask_022: None) -> None:
    shared = tmp_path / "shared.csv"
    shared.write_text("old")
    shared.chmod(0o664)
    executable = tmp_path / "tool.sh"
    executable.write_text("old")
    executable.chmod(0o755)
    write_text_atomic(shared, "new")
    write_text_atomic(executable, "new")
    assert (shared.read_text(), mode(shared)) == ("new", 0o664)
    assert (executable.read_text(), mode(executable)) == ("new", 0o755)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), replaced_via_temp(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_temporary_name_already_taken_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.txt"
    taken = tmp_path / ".a.txt.0000"
    taken.write_text("someone else's")
    names = iter(["0000", "0000", "0001"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda _: next(names))
    write_text_atomic(target, "mine")
    assert target.read_text() == "mine" and taken.read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.txt.0000", "a.txt"]
