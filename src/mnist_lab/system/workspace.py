"""Where things are: the workspace the pipeline runs in, the repository that owns it, and its `.env`."""

from __future__ import annotations

import os
from pathlib import Path

from mnist_lab.core.errors import MnistLabError


def workspace_root(start: Path | str | None = None) -> Path:
    """Where the pipeline runs: the nearest folder at or above `start` (default `DVC_ROOT`, else the cwd)
    holding `dvc.yaml` or `.dvc`. For `dvc exp run --temp/--queue` that is DVC's temporary copy."""
    here = Path(start or os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file() or (candidate / ".dvc").is_dir():
            return candidate
    raise MnistLabError(f"no repository found at or above {here}: run inside the mnist-lab repository")


def repository_root(start: Path | str | None = None) -> Path:
    """The repository that owns the workspace: the workspace itself, or for DVC experiments run in a
    temporary copy (`<repo>/.dvc/tmp/exps/...`) the repository around it, so runs land in its store."""
    workspace = workspace_root(start)
    parts = workspace.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return workspace


def load_env_file(root: Path) -> None:
    """Load `<root>/.env` into the environment without overriding variables that are already set."""
    from dotenv import load_dotenv

    load_dotenv(root / ".env", override=False)
