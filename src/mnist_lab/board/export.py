"""`mnist-lab board --export DIR`: the table and compare views as files that open from `file://` without a
server (for a CI artifact or a pull request). The page is the live one; `snapshot.js` holds the answers of the
API calls it makes, so it renders, filters, sorts and compares exactly as the live page does.

Any selection of the table's experiments compares: the snapshot holds what a comparison draws from each
(`ExperimentsBoard.drawn_from`: curves, confusion counts) and each metric's direction, and the page puts
them together as the API would. Code diffs are git's, so only the comparison the export was made for
(`--compare`, or the two newest) holds them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from mnist_lab.board.views import ExperimentsBoard
from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.results import metric_direction
from mnist_lab.system.files import write_text_atomic

STATIC = Path(__file__).with_name("static")
EXPORT_MARKER = ".mnist-lab-board-export"


def export_board(root: Path, destination: Path, compare: list[str] | None = None) -> list[str]:
    """Write the export into `destination` (new, empty, or an earlier export); returns the compared ids. The
    compare view holds `compare`'s experiments (default: the two newest)."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()) and not (destination / EXPORT_MARKER).is_file():
        raise MnistLabError(
            f"{destination} is not empty and not an earlier export: give a new or empty folder"
        )
    board = ExperimentsBoard(root)
    table = board.table(hidden=True)
    ids = compare or [row["id"] for row in table["rows"][:2]]
    snapshot: dict[str, Any] = {"/api/experiments?hidden=1": table}
    try:  # the store's unlinked runs, when it answers (the export works without them)
        snapshot["/api/runs"] = {"rows": board.runs()}
    except Exception as exc:
        print(
            f"note: the export holds no runs: the tracking store did not answer ({exc})"[:300],
            file=sys.stderr,
        )
    snapshot["/export/drawn-from"] = board.drawn_from(table["rows"])
    snapshot["/export/directions"] = {
        key[len("metrics.") :]: metric_direction(key)
        for key in {key for row in table["rows"] for key in row if key.startswith("metrics.")}
    }
    if len(ids) >= 2:
        data = board.compare(ids)
        snapshot[f"/api/compare?ids={','.join(ids)}"] = data
        ids = data["experiments"]
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(STATIC, staging / "static")
    shutil.copy2(STATIC / "index.html", staging / "index.html")
    payload = json.dumps(snapshot, separators=(",", ":")).replace("</", "<\\/")
    write_text_atomic(staging / "snapshot.js", f"window.BOARD_SNAPSHOT = {payload};\n")
    (staging / EXPORT_MARKER).write_text("written by `mnist-lab board --export`\n")
    (staging / "static" / "index.html").unlink()
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
    return ids
