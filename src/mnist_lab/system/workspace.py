"""Where things are: the workspace the pipeline runs in, the repository that owns it, and its `.env`."""

from __future__ import annotations

import os
import re
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


DAGSHUB_HOST = "dagshub.com"
_DAGSHUB_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def dagshub_repo(value: str) -> str:
    """`DAGSHUB_REPO` as `<owner>/<repo>` (what both the MLflow and the DVC address are made of): a trailing
    `/` or `.git` and the web address around it (`https://dagshub.com/<owner>/<repo>`) are dropped. A
    ValueError naming the fix when it is not one."""
    repo = value.strip()
    for prefix in (f"https://{DAGSHUB_HOST}/", f"http://{DAGSHUB_HOST}/"):
        repo = repo.removeprefix(prefix)
    repo = repo.strip("/").removesuffix(".git").removesuffix(".mlflow").removesuffix(".dvc")
    if not _DAGSHUB_REPO.fullmatch(repo):
        raise ValueError(
            f"DAGSHUB_REPO={value!r} is not <owner>/<repo>: fix it in .env "
            "(for example DAGSHUB_REPO=jane/mnist)"
        )
    return repo
