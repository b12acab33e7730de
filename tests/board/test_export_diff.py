"""The static export's code diffs: `code_snapshot` (Python) holds each commit's code files, `static/diff.js`
diffs two of them; the patch it writes is checked with git itself: `git apply` to the old commit's files
must give exactly the new commit's (files added, deleted, edited, renamed, made executable, emptied, without
a final newline, binary, large rewrites); renames are found as git finds them."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_lab.board.export import code_snapshot
from tests.helpers import REPO_ROOT, commit_all, run

DIFF_JS = REPO_ROOT / "src" / "mnist_lab" / "board" / "static" / "diff.js"
CODE_PATHS = ["src", "params.yaml", "dvc.yaml"]


def page_diff(snapshot: dict, old: str, new: str) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: diff.js is checked in the browser test instead")
    script = f"""
const d = require({json.dumps(str(DIFF_JS))});
const code = require("fs").readFileSync(0, "utf8");
process.stdout.write(d.codeDiff(JSON.parse(code), {json.dumps(old)}, {json.dumps(new)}));
"""
    done = subprocess.run(
        [node, "-e", script], input=json.dumps(snapshot), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_patch_gives(root: Path, old: str, new: str, patch: str, tmp_path: Path) -> None:
    """`patch` applied by git to a checkout of `old` leaves exactly the code files of `new`."""
    checkout = tmp_path / f"checkout-{old[:7]}-{new[:7]}"
    run(["git", "worktree", "add", "-q", "--detach", str(checkout), old], root)
    (tmp_path / "change.patch").write_text(patch)
    binary = "--exclude=src/pkg/data.bin"  # git cannot apply a binary change without the file's bytes
    if patch:
        run(["git", "apply", "--index", binary, str(tmp_path / "change.patch")], checkout)
    paths = [*CODE_PATHS, ":!src/pkg/data.bin"]
    differs = run(["git", "diff", "--cached", "--stat", new, "--", *paths], checkout).stdout
    assert differs == "", f"{differs}\n{patch}"
    run(["git", "worktree", "remove", "--force", str(checkout)], root)


def random_text(rng: random.Random, lines: int) -> str:
    words = ["alpha", "beta", "", "    return x", "def f():", "}", "# note", "x = 1", "y = 2"]
    return "".join(f"{rng.choice(words)} {rng.randrange(5)}\n" for _ in range(lines))


def edit(rng: random.Random, text: str) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(lines) + 1)
        kind = rng.choice(["insert", "delete", "replace"])
        if kind == "insert":
            lines[at:at] = [f"new line {rng.randrange(1000)}\n" for _ in range(rng.randrange(1, 4))]
        elif lines:
            del lines[at : at + rng.randrange(1, 4)]
            if kind == "replace":
                lines.insert(min(at, len(lines)), f"changed {rng.randrange(1000)}\n")
    return "".join(lines)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src" / "pkg").mkdir(parents=True)
    run(["git", "init", "-q"], root)
    return root


def test_the_pages_diffs_apply_to_give_the_other_commit(repository: Path, tmp_path: Path) -> None:
    root, rng = repository, random.Random(7)
    files = {f"src/pkg/m{i}.py": random_text(rng, rng.randrange(0, 60)) for i in range(8)}
    files |= {"params.yaml": "seed: 1\nmodels: {}\n", "dvc.yaml": "stages: {}\n", "README.md": "outside\n"}
    commits = []
    for step in range(7):
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        commits.append(commit_all(root, f"step {step}"))
        for path in list(files):
            if path.startswith("src/") and rng.random() < 0.5:
                files[path] = edit(rng, files[path])
        files["params.yaml"] = f"seed: {step + 2}\nmodels: {{}}\n"
        files["README.md"] += "more\n"  # outside the code paths: never in the diff
        if step == 1:
            files["src/pkg/no_newline.py"] = "last line without a newline"
            files["src/pkg/empty.py"] = ""
            (root / "src" / "pkg" / "data.bin").write_bytes(b"\0\1\2 binary")
        if step == 2:
            files["src/pkg/no_newline.py"] = "last line without a newline\nand another"
            del files["src/pkg/m0.py"]
            (root / "src" / "pkg" / "m0.py").unlink()
            (root / "src" / "pkg" / "data.bin").write_bytes(b"\0\1\2 other binary")
        if step == 3:
            files["src/pkg/no_newline.py"] = "last line without a newline\nand another\n"
            files["src/pkg/m1.py"] = random_text(rng, 300)  # rewritten whole
            (root / "src" / "pkg" / "m2.py").chmod(0o755)
        if step == 4:
            files["src/pkg/m3.py"] = files["src/pkg/m3.py"].rstrip("\n")
            files["src/pkg/renamed.py"] = files.pop("src/pkg/m4.py")
            (root / "src" / "pkg" / "m4.py").unlink()
    snapshot = json.loads(json.dumps(code_snapshot(root, commits)))  # as the page gets it
    pairs = [(a, b) for a in commits for b in commits if a != b]
    for old, new in pairs:
        assert_patch_gives(root, old, new, page_diff(snapshot, old, new), tmp_path)
    patch = page_diff(snapshot, commits[0], commits[-1])
    assert "README.md" not in patch and "diff --git a/params.yaml b/params.yaml" in patch
    assert "Binary files /dev/null and b/src/pkg/data.bin differ" in patch
    assert "new mode 100755" in page_diff(snapshot, commits[3], commits[4])
    renamed = "rename from src/pkg/m4.py\nrename to src/pkg/renamed.py"
    assert renamed in page_diff(snapshot, commits[4], commits[5])
    assert "\\ No newline at end of file" in page_diff(snapshot, commits[2], commits[3])
    assert page_diff(snapshot, commits[0], commits[0]) == ""


def test_a_small_change_reads_as_git_writes_it(repository: Path) -> None:
    root = repository
    lines = [f"line {i}\n" for i in range(1, 21)]
    (root / "src" / "pkg" / "a.py").write_text("".join(lines))
    old = commit_all(root, "old")
    lines[9] = "line 10 changed\n"
    (root / "src" / "pkg" / "a.py").write_text("".join(lines))
    new = commit_all(root, "new")
    ids = run(["git", "rev-parse", f"{old}:src/pkg/a.py", f"{new}:src/pkg/a.py"], root).stdout.split()
    assert page_diff(code_snapshot(root, [old, new]), old, new) == (
        "diff --git a/src/pkg/a.py b/src/pkg/a.py\n"
        f"index {ids[0][:7]}..{ids[1][:7]} 100644\n"
        "--- a/src/pkg/a.py\n+++ b/src/pkg/a.py\n"
        "@@ -7,7 +7,7 @@\n line 7\n line 8\n line 9\n-line 10\n+line 10 changed\n"
        " line 11\n line 12\n line 13\n"
    )
    # more shapes, against git's own output (less the function name git writes after `@@`)
    (root / "src" / "pkg" / "new.py").write_text("one\ntwo\nthree\n")
    (root / "src" / "pkg" / "a.py").write_text("line 0\n" + "".join(lines[:-2]))
    (root / "params.yaml").write_text("seed: 1\n")
    newer = commit_all(root, "newer")
    (root / "src" / "pkg" / "new.py").unlink()
    (root / "src" / "pkg" / "a.py").write_text("".join(lines[:15]) + "tail without newline")
    newest = commit_all(root, "newest")
    snapshot = code_snapshot(root, [old, new, newer, newest])
    for a, b in [(new, newer), (newer, newest), (old, newest), (newest, old)]:
        git = run(["git", "diff", "--no-color", "--no-renames", a, b, "--", *CODE_PATHS], root).stdout
        assert re.sub(r"^(@@ [^@]+ @@).*$", r"\1", git, flags=re.MULTILINE) == page_diff(snapshot, a, b)


def test_renames_read_as_git_writes_them(repository: Path) -> None:
    root, pkg = repository, repository / "src" / "pkg"
    numbers = "".join(f"value = {i}\n" for i in range(40))
    files = {
        "same.py": numbers,  # moved whole
        "edited.py": "".join(f"edited {i}\n" for i in range(30)),  # moved and edited a little
        "mode.py": "".join(f"mode {i}\n" for i in range(20)),  # moved, edited and made executable
        "rewritten.py": "".join(f"old {i}\n" for i in range(20)),  # moved and rewritten: deleted + added
        "crlf.py": "".join(f"crlf {i}\r\n" for i in range(25)),  # Windows line ends, last line unended
        "long.py": "x" * 150 + "\n" + "".join(f"long {i}\n" for i in range(10)),  # a line over 64 bytes
        "empty.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_bytes(text.encode())
    (pkg / "kept.py").write_text("kept\n")
    old = commit_all(root, "old")
    for name in files:
        (pkg / name).unlink()
    (pkg / "moved").mkdir()
    (pkg / "moved" / "same.py").write_text(numbers)
    (pkg / "a_edited.py").write_text("".join(f"edited {i}\n" for i in range(28)) + "one more\n")
    (pkg / "z_mode.py").write_text("".join(f"mode {i}\n" for i in range(18)))
    (pkg / "z_mode.py").chmod(0o755)
    (pkg / "new_rewritten.py").write_text("".join(f"new {i}\n" for i in range(20)))
    (pkg / "crlf2.py").write_bytes("".join(f"crlf {i}\r\n" for i in range(22)).encode() + b"tail")
    (pkg / "long2.py").write_text("x" * 150 + "\n" + "".join(f"long {i}\n" for i in range(12)))
    (pkg / "empty2.py").write_text("")
    (pkg / "kept.py").write_text("kept\nchanged\n")
    new = commit_all(root, "new")
    snapshot = json.loads(json.dumps(code_snapshot(root, [old, new])))
    for a, b in [(old, new), (new, old)]:
        git_diff = ["git", "-c", "diff.renames=true", "diff", "--no-color", a, b, "--", *CODE_PATHS]
        git = run(git_diff, root).stdout
        page = page_diff(snapshot, a, b)
        assert re.sub(r"^(@@ [^@]+ @@).*$", r"\1", git, flags=re.MULTILINE) == page
    page = page_diff(snapshot, old, new)
    assert "rename from src/pkg/same.py\nrename to src/pkg/moved/same.py" in page
    assert "deleted file mode 100644" in page and "rename from src/pkg/rewritten.py" not in page
