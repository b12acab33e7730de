"""Atomic file writes (a reader, or a crash, never sees half a file where a good one was), JSON, and
fitted objects pickled with joblib."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_lab.core.errors import DataError
from mnist_lab.core.experiment_files import FileT, parse_experiment_file

if TYPE_CHECKING:
    import numpy as np


@contextmanager
def replaced_via_temp(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """A temporary file beside `path` to write in the block; renamed over `path` when the block ends without
    an error, removed when it does not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_file_beside(path, suffix)
    try:
        yield temporary
        with suppress(FileNotFoundError):  # a file replaced keeps its permissions, as an editor's save does
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _new_file_beside(path: Path, suffix: str) -> Path:
    """An empty new file in `path`'s folder, created with the permissions a plain `open(path, "w")` gives
    (0666 less the umask: `tempfile.mkstemp` would make it 0600, readable by its owner only)."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def check_writable(path: Path | str) -> None:
    """Make `path`'s folder (and its parents) if missing and prove a file can be created in it, as
    `replaced_via_temp` will: an OSError now, before any long work, rather than after it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _new_file_beside(path, "").unlink()


def replace_via_temp(path: Path | str, write: Callable[[Path], object], suffix: str = "") -> None:
    """Call `write` on a temporary file beside `path`, then rename it over `path`."""
    with replaced_via_temp(path, suffix) as temporary:
        write(temporary)


def write_bytes_atomic(path: Path | str, content: bytes) -> None:
    replace_via_temp(path, lambda tmp: tmp.write_bytes(content))


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: Path | str, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_experiment_file(path: Path | str, kind: type[FileT]) -> FileT:
    """`reports/<model>/mlflow.json`, `best_model.json` or `registry.json` as its typed schema; a DataError
    names a file that is missing, not JSON, or missing a field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro` (or `dvc checkout`) to write it")
    try:
        data = read_json(path)
    except ValueError as exc:
        raise DataError(f"{path} is not JSON ({exc}): restore it with `git checkout -- {path}`") from None
    return parse_experiment_file(kind, data, str(path))


def save_object(path: Path | str, obj: Any) -> None:
    """Pickle a fitted scikit-learn object with joblib, atomically."""
    import joblib

    replace_via_temp(Path(path), lambda tmp: joblib.dump(obj, tmp))


def load_object(path: Path | str) -> Any:
    import joblib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run the stage that writes it (`dvc repro`)")
    return joblib.load(path)


def save_arrays(path: Path | str, **arrays: np.ndarray) -> None:
    """Save named arrays as an uncompressed .npz, atomically."""
    import numpy as np

    write = lambda tmp: np.savez(tmp, **arrays)  # type: ignore[arg-type]  # noqa: E731 - numpy's stub
    replace_via_temp(Path(path), write, suffix=".npz")


def load_arrays(path: Path | str, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load an .npz written by `save_arrays`, checking it holds `required`."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run the stage that writes it (`dvc repro`)")
    with np.load(path, allow_pickle=False) as archive:
        missing = [name for name in required if name not in archive.files]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}: it is stale or foreign; rerun `dvc repro`")
        return {name: archive[name] for name in archive.files}


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created, with its folder, if missing), across processes: one
    writer at a time for a read-modify-write of a shared file."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
