"""`mnist-lab board --export DIR`: the table and compare views as files that open from `file://` without a
server (for a CI artifact or a pull request). The page is the live one; `snapshot.js` holds the answers of the
API calls it makes, so it renders, filters, sorts and compares exactly as the live page does.

Any selection of the table's experiments compares: the snapshot holds what a comparison draws from each
(`ExperimentsBoard.drawn_from`: curves, confusion counts) and each metric's direction, and the page puts
them together as the API would. The comparison the export was made for (`--compare`, or the two newest)
holds git's code diffs; for any other, the snapshot holds each experiment's code files (`code_snapshot`:
each distinct file once) and the page diffs them itself (`static/diff.js`, the unified format git writes)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from mnist_lab.board.views import CODE_PATHS, ExperimentsBoard
from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.results import metric_direction
from mnist_lab.experiments.table import object_ids, read_blobs
from mnist_lab.system import commands
from mnist_lab.system.files import write_text_atomic

STATIC = Path(__file__).with_name("static")
EXPORT_MARKER = ".mnist-lab-board-export"


def export_board(root: Path, destination: Path, compare: list[str] | None = None) -> list[str]:
    """Write the export into `destination` (new, empty, or an earlier export); returns the compared ids. The
    compare view holds `compare`'s experiments (default: the two newest commits, the older first: the
    baseline)."""
    # `.` has no name to stage beside; a link to an earlier export is written where it points
    destination = Path(destination).resolve()
    if destination.exists() and any(destination.iterdir()) and not (destination / EXPORT_MARKER).is_file():
        raise MnistLabError(
            f"{destination} is not empty and not an earlier export: give a new or empty folder"
        )
    board = ExperimentsBoard(root)
    table = board.table(hidden=True, code_only=True)
    # default: the two newest commits (DVC experiments are listed under theirs) that are not code alone, the
    # older as the baseline (the code diff reads forward, older -> newer)
    commits = [row["id"] for row in table["rows"] if row["source"] == "commit" and not row["code_only"]]
    ids = compare or (commits if len(commits) >= 2 else [row["id"] for row in table["rows"]])[:2][::-1]
    snapshot: dict[str, Any] = {"/api/experiments?hidden=1&code_only=1": table}
    runs: list[dict[str, Any]] = []
    try:  # the store's unlinked runs, when it answers (the export works without them)
        runs = board.runs()
        snapshot["/api/runs"] = {"rows": runs}
    except Exception as exc:
        print(
            f"note: the export holds no runs: the tracking store did not answer ({exc})"[:300],
            file=sys.stderr,
        )
    with contextlib.suppress(Exception):  # the registry's champion, when it answers (its row labelled)
        snapshot["/api/champion"] = board.champion()
    rows = table["rows"] + runs  # a run row compares as on the live page (its curves from the store)
    try:
        snapshot["/export/drawn-from"] = board.drawn_from(rows)
    except Exception as exc:  # the store failed while its runs' curves were read: the export without them
        print(f"note: the export holds no runs: reading their curves failed ({exc})"[:300], file=sys.stderr)
        snapshot.pop("/api/runs", None)
        rows, runs = table["rows"], []
        snapshot["/export/drawn-from"] = board.drawn_from(rows)
    snapshot["/export/directions"] = {
        key[len("metrics.") :]: metric_direction(key)
        for key in {key for row in rows for key in row if key.startswith("metrics.")}
    }
    run_commits = [row["commit"] for row in runs if row.get("commit")]
    present = object_ids(root, [f"{commit}^{{commit}}" for commit in run_commits], kind="commit")
    commits = [row["commit"] for row in table["rows"] if row.get("commit")]
    # a run's commit may be a teammate's, not in this clone: the page says so, as the live board does
    code = code_snapshot(root, commits + [c for c in run_commits if present[f"{c}^{{commit}}"]])
    if code is not None:
        snapshot["/export/code"] = code
    if len(ids) >= 2:
        data = board.compare(ids)
        snapshot[f"/api/compare?ids={','.join(ids)}"] = data
        ids = data["experiments"]
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(STATIC, staging / "static")
        shutil.copy2(STATIC / "index.html", staging / "index.html")
        payload = json.dumps(snapshot, separators=(",", ":")).replace("</", "<\\/")
        write_text_atomic(staging / "snapshot.js", f"window.BOARD_SNAPSHOT = {payload};\n")
        (staging / EXPORT_MARKER).write_text("written by `mnist-lab board --export`\n")
        (staging / "static" / "index.html").unlink()
        if destination.is_dir() and (not any(destination.iterdir()) or _holds_cwd(destination)):
            # filled in place: a shell inside it keeps its folder (an earlier export's files go first)
            for entry in destination.iterdir():
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            for entry in staging.iterdir():
                entry.rename(destination / entry.name)
        else:
            if destination.exists():
                shutil.rmtree(destination)
            staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ids


def _holds_cwd(folder: Path) -> bool:
    try:
        return Path.cwd().resolve().is_relative_to(folder)
    except OSError:  # the current folder was deleted
        return False


MAX_CODE_BYTES = 32_000_000  # the distinct code files of every experiment; beyond it, no page-made diffs
SHORT_ID = 12  # characters of an object id the snapshot keeps (all of them if two would collide)


def code_snapshot(root: Path, commits: list[str]) -> dict[str, Any] | None:
    """What the page needs to diff any two of `commits` as `git diff A B -- src params.yaml dvc.yaml` does
    (static/diff.js): per commit the object ids of its `src` folder, `params.yaml` and `dvc.yaml`; each
    distinct folder (git's tree objects: name -> [mode, id], a sub-folder's mode 40000) and each distinct
    file's text (None for a binary file, as git decides: a NUL byte in its first 8,000) once, so that
    commits sharing most of their code share most of the snapshot. None when the files exceed
    MAX_CODE_BYTES (the page then says the diff needs the live board). A few git processes however many
    commits: one per level of folders."""
    commits = list(dict.fromkeys(commits))
    files = [path for path in CODE_PATHS if path != "src"]
    sources = object_ids(root, [f"{commit}:src" for commit in commits], kind="tree")
    tops = object_ids(root, [f"{commit}:{path}" for commit in commits for path in files])
    states = {
        commit: {"src": sources[f"{commit}:src"]} | {path: tops[f"{commit}:{path}"] for path in files}
        for commit in commits
    }
    trees: dict[str, dict[str, tuple[str, str]]] = {}
    level = {tree for state in states.values() if (tree := state["src"]) is not None}
    while level:
        read = read_trees(root, sorted(level))
        trees |= read
        level = {oid for entries in read.values() for mode, oid in entries.values() if mode == "40000"}
        level -= set(trees)
    wanted = {oid for entries in trees.values() for mode, oid in entries.values() if mode != "40000"}
    wanted |= {oid for state in states.values() for path in files if (oid := state[path]) is not None}
    contents = read_blobs(root, sorted(wanted))
    if sum(len(content or b"") for content in contents.values()) > MAX_CODE_BYTES:
        print(
            f"note: the experiments' code files exceed {MAX_CODE_BYTES:,} bytes: the export holds the code "
            "diff of its own comparison only",
            file=sys.stderr,
        )
        return None
    everything = set(trees) | set(contents)
    unique = len({oid[:SHORT_ID] for oid in everything}) == len(everything)
    width = SHORT_ID if unique else max(map(len, everything), default=SHORT_ID)

    def short(oid: str | None) -> str | None:
        return oid[:width] if oid else None

    return {
        "commits": {
            commit: {key: short(oid) for key, oid in state.items()} for commit, state in states.items()
        },
        "trees": {
            short(tree): {name: [mode, short(oid)] for name, (mode, oid) in entries.items()}
            for tree, entries in trees.items()
        },
        "blobs": {
            short(oid): None
            if content is None or b"\0" in content[:8000]
            else content.decode("utf-8", errors="replace")
            for oid, content in contents.items()
        },
    }


def read_trees(root: Path, oids: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Git tree objects (one folder each, not recursive): `{tree id: {name: (mode, object id)}}`, in one
    `git cat-file --batch`; submodules (mode 160000) left out."""
    if not oids:
        return {}
    data = commands.run(
        "git", "cat-file", "--batch", cwd=root, input="\n".join(oids) + "\n", text=False, check=True
    ).stdout
    trees: dict[str, dict[str, tuple[str, str]]] = {}
    position = 0
    for oid in oids:
        width = len(oid) // 2  # bytes of an object id: 20 (SHA-1) or 32 (SHA-256)
        end = data.index(b"\n", position)
        _, kind, size = data[position:end].decode().split()
        position, stop = end + 1, end + 1 + int(size)
        entries: dict[str, tuple[str, str]] = {}
        while kind == "tree" and position < stop:
            space = data.index(b" ", position)
            nul = data.index(b"\0", space)
            mode = data[position:space].decode()
            name = data[space + 1 : nul].decode("utf-8", errors="replace")
            if mode != "160000":
                entries[name] = (mode, data[nul + 1 : nul + 1 + width].hex())
            position = nul + 1 + width
        trees[oid] = entries
        position = stop + 1
    return trees
