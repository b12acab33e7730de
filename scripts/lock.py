"""Write requirements.lock (runtime) and requirements-dev.lock (tests and linters), pinned and hashed.

`make lock` runs it. It resolves the package's dependencies in a scratch virtual environment: the runtime
ones (`pip install .`), then the `dev` extra constrained to the runtime versions, so that the two files
install together without conflict. Every pin carries the sha256 of every file PyPI holds for that version
(wheels for every platform and the sdist), so `pip install -r requirements.lock` checks hashes on any
machine, not only the one that locked.

A dev package that wants extras of a runtime one (selenium: `urllib3[socks]`) gets that runtime package
pinned again in the dev lock, same version, with the extras, so the runtime lock installs on its own.

Existing pins are kept (like pip-compile): only packages that are new, or whose pin no longer satisfies
pyproject.toml, are resolved afresh. `--upgrade` resolves everything to the newest allowed versions.

Usage: python scripts/lock.py [--upgrade] [--python PYTHON]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
INDEX = "https://pypi.org/simple"
HEADER = """\
# {what}.
# Exact versions with the sha256 of every file PyPI holds for each (pip checks them on any platform).
# Resolved with CPython 3.11 on Linux x86_64. Regenerate both lock files with `make lock` (keeps existing
# pins; `make lock UPGRADE=1` resolves everything afresh) after changing pyproject.toml's dependencies.
{install}
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """`name -> version` of the `name==version` lines of a freeze output or lock file (hash lines ignored)."""
    found = {}
    for line in text.splitlines():
        name, separator, version = line.split("#", 1)[0].strip().partition("==")
        if separator:
            found[canonical(name.split("[", 1)[0])] = version.split()[0].rstrip("\\").strip()
    return found


def _pip(python: Path, *args: str) -> str:
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"pip {' '.join(args[:3])} ... failed:\n{done.stderr.strip()[-3000:]}")
    return done.stdout


def _freeze(python: Path) -> dict[str, str]:
    return {k: v for k, v in pins(_pip(python, "freeze", "--all")).items() if k not in ("mnist-lab", "pip")}


EXTRAS_SNIPPET = """
import json
from importlib import metadata
from packaging.requirements import Requirement
extras = {}
for dist in metadata.distributions():
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.extras and (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
            extras.setdefault(requirement.name, set()).update(requirement.extras)
print(json.dumps({name: sorted(found) for name, found in extras.items()}))
"""


def _extras(python: Path) -> dict[str, list[str]]:
    """The extras other packages require of each installed package (`gql[requests]`): pip's hash-checking mode
    wants such a requirement pinned with its extras."""
    done = subprocess.run([str(python), "-c", EXTRAS_SNIPPET], capture_output=True, text=True, check=True)
    return {canonical(name): found for name, found in json.loads(done.stdout).items()}


def file_hashes(name: str, version: str) -> list[str]:
    """The sha256 of every file of `name==version` on the index (PEP 691 JSON simple API)."""
    request = urllib.request.Request(
        f"{INDEX}/{canonical(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    # a wheel's version is the second dash-separated field of its name, an sdist's the last one
    hashes = []
    for entry in files:
        filename = entry["filename"]
        stem = re.sub(r"\.(whl|tar\.gz|zip|tar\.bz2)$", "", filename)
        field = stem.split("-")[1] if filename.endswith(".whl") else stem.rsplit("-", 1)[-1]
        matches = field == version
        if matches and "sha256" in entry.get("hashes", {}):
            hashes.append(entry["hashes"]["sha256"])
    if not hashes:
        sys.exit(f"no file of {name}=={version} on {INDEX}: cannot hash it (is the version yanked?)")
    return sorted(set(hashes))


def render(what: str, install: str, packages: dict[str, str], extras: dict[str, list[str]]) -> str:
    with ThreadPoolExecutor(max_workers=16) as pool:
        hashed = dict(zip(packages, pool.map(lambda n: file_hashes(n, packages[n]), packages), strict=True))
    lines = [HEADER.format(what=what, install=install)]
    for name in sorted(packages):
        wanted = f"[{','.join(extras[name])}]" if name in extras else ""
        lines.append(f"{name}{wanted}=={packages[name]} \\")
        lines.extend(f"    --hash=sha256:{digest} \\" for digest in hashed[name][:-1])
        lines.append(f"    --hash=sha256:{hashed[name][-1]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrade", action="store_true", help="resolve every package afresh")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to resolve with")
    args = parser.parse_args()
    kept = {}
    if not args.upgrade:
        for lock in (RUNTIME_LOCK, DEV_LOCK):
            if lock.is_file():
                kept.update(pins(lock.read_text()))
    with tempfile.TemporaryDirectory(prefix="mnist-lab-lock-") as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        constraints = Path(scratch) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in kept.items()))
        print(f"resolving the runtime dependencies ({len(kept)} pins kept) ...", file=sys.stderr)
        _pip(python, "install", "--quiet", "-c", str(constraints), str(ROOT))
        runtime = _freeze(python)
        runtime_extras = _extras(python)
        constraints.write_text(
            "".join(f"{name}=={version}\n" for name, version in {**kept, **runtime}.items())
        )
        print("resolving the dev extra against them ...", file=sys.stderr)
        _pip(python, "install", "--quiet", "-c", str(constraints), f"{ROOT}[dev]")
        everything = _freeze(python)
        extras = _extras(python)
    changed = {n: (v, everything[n]) for n, v in runtime.items() if everything.get(n) != v}
    if changed:
        sys.exit(f"the dev extra moved runtime pins (it must not): {changed}")
    dev = {name: version for name, version in everything.items() if name not in runtime}
    # a dev package may want more of a runtime one (selenium: urllib3[socks]): the dev lock pins that runtime
    # package again, same version, with those extras, so that the runtime lock alone needs no dev package
    more = {
        name: version
        for name, version in runtime.items()
        if set(extras.get(name, [])) - set(runtime_extras.get(name, []))
    }
    print(f"hashing {len(everything)} pins from {INDEX} ...", file=sys.stderr)
    RUNTIME_LOCK.write_text(
        render(
            "Runtime requirements of mnist-lab (what a reproduced experiment rebuilds)",
            "# Install: pip install -r requirements.lock && pip install --no-deps -e .",
            runtime,
            runtime_extras,
        )
    )
    DEV_LOCK.write_text(
        render(
            "Development requirements of mnist-lab (tests, linters, test servers) on top of the runtime ones",
            "# Install: pip install -r requirements.lock -r requirements-dev.lock\n"
            "#          pip install --no-deps -e .",
            {**dev, **more},
            extras,
        )
    )
    print(f"wrote {RUNTIME_LOCK.name} ({len(runtime)} pins) and {DEV_LOCK.name} ({len(dev)} pins)")


if __name__ == "__main__":
    main()
