"""`mnist-lab reproduce <rev>`: rerun a past experiment in a temporary clone and check it gives exactly the
metrics it recorded. Never touches the working tree, the DVC cache or the MLflow store of the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.settings import flatten
from mnist_lab.datasets.remote import REMOTE_SECTION, remote_names
from mnist_lab.experiments.compare import experiment_commit
from mnist_lab.system import commands
from mnist_lab.system.warm import DIR_ENV, MAX_DIRECTORY_BYTES, stop_servers

SCRATCH_EXPERIMENT = "mnist-lab-reproductions"


class ReproductionError(MnistLabError):
    """The reproduction could not be run (as opposed to: it ran and differed)."""


@dataclass
class Reproduction:
    commit: str
    rows: list[tuple[str, object, object]] = field(default_factory=list)  # (metric, recorded, reproduced)
    log: str = ""
    # packages whose version in the environment that ran it differs from the commit's requirements.lock
    environment_differences: list[str] = field(default_factory=list)
    environment: str = "current"  # or "locked": built from the commit's requirements.lock
    # why the commit's own results are not what its files make (its dvc.lock disagrees): then a difference
    # is expected, not a failure to reproduce (experiments.table.stale_results)
    dirty_because: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> list[tuple[str, object, object]]:
        return [row for row in self.rows if row[1] != row[2]]

    @property
    def matches(self) -> bool:
        return bool(self.rows) and not self.mismatches


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A step of the reproduction; no time limit: it builds an environment or runs the whole pipeline."""
    return commands.run(command[0], *command[1:], cwd=cwd, env=env, timeout=None)


def _recorded_metrics(root: Path, commit: str) -> dict[str, object]:
    """metrics.json and every reports/<model>/metrics.json of `commit`, flattened."""
    listed = commands.git("ls-tree", "-r", "--name-only", commit, cwd=root, check=True).stdout.split()
    paths = [
        p for p in listed if p == "metrics.json" or (p.startswith("reports/") and p.endswith("/metrics.json"))
    ]
    recorded: dict[str, object] = {}
    for path in paths:
        text = commands.git("show", f"{commit}:{path}", cwd=root, check=True).stdout
        recorded.update({f"{path}:{key}": value for key, value in flatten(json.loads(text)).items()})
    if not recorded:
        raise ReproductionError(
            f"{commit[:12]} records no metrics (no metrics.json): not an experiment commit"
        )
    return recorded


def _dirty_because(root: Path, commit: str) -> list[str]:
    from mnist_lab.experiments.table import read_blobs, stale_results

    return stale_results(root, [commit], read_blobs(root, [f"{commit}:params.yaml"])).get(commit, [])


def _canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares them (`Flufl.Lock` and `flufl-lock` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_differences(lock_text: str, installed: dict[str, str] | None = None) -> list[str]:
    """`name: locked -> installed` for each `name==version` pin of a lock file (hashed or not) that the
    environment (`installed`, default: this one) does not match."""
    from importlib import metadata

    if installed is None:
        installed = {
            _canonical(dist.metadata["Name"] or ""): dist.version for dist in metadata.distributions()
        }
    differences = []
    for line in lock_text.splitlines():
        name, separator, version = line.split("#", 1)[0].strip().partition("==")
        if not separator:
            continue
        key = _canonical(name.strip().split("[", 1)[0])
        locked = version.split()[0].rstrip("\\") if version.split() else ""
        have = installed.get(key)
        if have != locked:
            differences.append(f"{key}: {locked} -> {have or 'not installed'}")
    return differences


def _locked_environment(clone: Path, scratch: Path, env: dict[str, str]) -> Path:
    """A virtual environment from the clone's requirements.lock with the clone's package: its bin folder."""
    venv = scratch / "venv"
    print(f"building the environment of requirements.lock in {venv} ...", file=sys.stderr, flush=True)
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(clone / "requirements.lock")],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", str(clone)],
    )  # fmt: skip
    for command in steps:
        done = _run(command, clone, env)
        if done.returncode != 0:
            raise ReproductionError(
                f"cannot build the environment of its requirements.lock: {done.stderr.strip()[-1500:]}"
            )
    return venv / "bin"


def reproduce(root: Path, revision: str, keep: Path | None = None, locked_env: bool = False) -> Reproduction:
    """Clone `revision` into a temporary folder, get its data, rerun its pipeline (tracking to a scratch
    store there), and compare every recorded metric with the reproduced one. It runs in this environment
    (and says which packages differ from the revision's requirements.lock), or with `locked_env` in one built
    from that lock file."""
    commit = experiment_commit(root, revision)  # a DVC experiment's name too
    recorded = _recorded_metrics(root, commit)
    dirty_because = _dirty_because(root, commit)
    if dirty_because:
        print(
            f"warning: {commit[:12]} is dirty: its results are not what its own files make (its dvc.lock "
            f"disagrees with {', '.join(dirty_because[:5])}); the reproduction may well differ",
            file=sys.stderr,
        )
    scratch = Path(tempfile.mkdtemp(prefix="mnist-lab-reproduce-"))
    clone = scratch / "repo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "DAGSHUB_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    env["MLFLOW_EXPERIMENT_NAME"] = SCRATCH_EXPERIMENT
    # the clone's stages start their own warm server (its code is the clone's): kept in the scratch folder
    # and stopped at the end, not left idling for 15 minutes with the libraries loaded (~500 MB)
    warm = scratch / "warm"
    if len(os.fsencode(warm)) <= MAX_DIRECTORY_BYTES:  # else the default folder, as before
        env[DIR_ENV] = str(warm)
    log = []
    differences: list[str] = []
    try:
        for command, cwd in (
            # a local clone has every object, so a DVC experiment's commit (on its ref alone) too
            (["git", "clone", "--quiet", "--no-checkout", str(root), str(clone)], scratch),
            (["git", "checkout", "--quiet", commit], clone),
        ):
            done = _run(command, cwd, env)
            if done.returncode != 0:
                raise ReproductionError(f"{' '.join(command[:2])} failed: {done.stderr.strip()}")
        lock = clone / "requirements.lock"
        tools: dict[str, str] = {}  # the programs run in the clone: this environment's, or the locked one's
        if locked_env:
            if not lock.is_file():
                raise ReproductionError(
                    f"{commit[:12]} has no requirements.lock to build its environment from"
                )
            locked = _locked_environment(clone, scratch, env)
            env["PATH"] = f"{locked}{os.pathsep}{os.environ.get('PATH', '')}"
            env.pop("PYTHONPATH", None)  # its own installed package, not a folder named by the shell
            tools = {name: str(locked / name) for name in ("dvc", "mnist-lab")}
        else:
            # the clone's own code, not this working tree's (the package is installed editable from here)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clone / "src"), env.get("PYTHONPATH", "")]))
            differences = lock_differences(lock.read_text()) if lock.is_file() else ["no requirements.lock"]
            if differences:
                print(
                    f"warning: this environment differs from {commit[:12]}'s requirements.lock in "
                    f"{len(differences)} package(s) ({'; '.join(differences[:3])}); metrics may differ: "
                    "--locked-env builds its own",
                    file=sys.stderr,
                )
        dvc, mnist_lab = tools.get("dvc", "dvc"), tools.get("mnist-lab", "mnist-lab")
        _remote_config(root, clone)
        # read data and outputs from the repository's own cache (wherever it is configured) without writing
        user_cache = _cache_dir(root)
        if user_cache.is_dir():
            remote = ["remote", "add", "--local", "repository-cache", str(user_cache)]
            _run([dvc, *remote], clone, env)
            log.append(
                _run([dvc, "pull", "--quiet", "-r", "repository-cache", "data.dvc"], clone, env).stderr
            )
        restored = _run([mnist_lab, "data", "restore"], clone, env)
        if restored.returncode != 0:
            said = restored.stderr.strip().removeprefix("error: ")  # the command's own message, once prefixed
            raise ReproductionError(f"cannot get the data of {commit[:12]}: {said}")
        print(f"reproducing {commit[:12]} in {clone} ...", file=sys.stderr, flush=True)
        repro = _run([dvc, "repro", "--force"], clone, env)
        log.append(repro.stdout + repro.stderr)
        if repro.returncode != 0:
            raise ReproductionError(
                f"dvc repro failed in the clone of {commit[:12]}:\n{repro.stderr.strip()[-2000:]}"
            )
        reproduced: dict[str, object] = {}
        for path in {key.split(":", 1)[0] for key in recorded}:
            if (clone / path).is_file():
                metrics = flatten(json.loads((clone / path).read_text()))
                reproduced.update({f"{path}:{key}": value for key, value in metrics.items()})
        rows = [(key, value, reproduced.get(key)) for key, value in recorded.items()]
        return Reproduction(
            commit=commit,
            rows=rows,
            log="\n".join(log),
            environment_differences=differences,
            environment="locked" if locked_env else "current",
            dirty_because=dirty_because,
        )
    finally:
        try:
            if warm.is_dir():
                stop_servers(warm)
            if keep is not None:  # never the remote's credentials, nor the warm server's sockets
                shutil.copytree(
                    scratch, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("config.local", "warm")
                )
        except OSError as exc:  # a full disk: said, and the reproduction's own outcome stands
            print(f"warning: could not keep the reproduction in {keep}: {exc}", file=sys.stderr)
        finally:  # nor a clone, a cache and an environment left behind in the temporary folder
            shutil.rmtree(scratch, ignore_errors=True)


def _cache_dir(root: Path) -> Path:
    """The repository's DVC cache: `dvc cache dir` (a `cache.dir` of its config), else `.dvc/cache`."""
    done = commands.dvc("cache", "dir", cwd=root)
    said = done.stdout.strip() if done.returncode == 0 else ""
    return Path(said) if said else root / ".dvc" / "cache"


def as_table(result: Reproduction, everything: bool = False) -> str:
    rows = (
        result.rows
        if everything
        else [r for r in result.rows if ":models." in r[0] or ":best." in r[0] or r in result.mismatches]
    )
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{'metric'.ljust(width)}  {'recorded':>20}  {'reproduced':>20}  match"]
    for key, old, new in rows:
        mark = "yes" if old == new else "NO"
        lines.append(f"{key.ljust(width)}  {old!s:>20}  {new!s:>20}  {mark}")
    verdict = (
        f"{result.commit[:12]} reproduces exactly: {len(result.rows)} metrics identical"
        if result.matches
        else f"{result.commit[:12]} does NOT reproduce: {len(result.mismatches)} of {len(result.rows)} "
        "metrics differ"
    )
    if result.dirty_because:
        verdict += (
            f" (a dirty commit: its recorded results are not what its files make; dvc.lock disagrees with "
            f"{', '.join(result.dirty_because[:5])})"
        )
    if result.environment == "locked":
        verdict += " (in an environment built from its requirements.lock)"
    elif result.environment_differences:
        verdict += (
            f" (in this environment, which differs from its requirements.lock in "
            f"{len(result.environment_differences)} package(s); --locked-env builds its own)"
        )
    return "\n".join([*lines, verdict])


def _remote_config(root: Path, clone: Path) -> None:
    """The clone's `.dvc/config.local`: the repository's remote credentials for the remotes the reproduced
    commit defines (`_for_remotes`), and, for a commit from before the remote was set up (its `.dvc/config`
    names no default), the repository's default remote, with its URL made absolute (a folder is given
    relative to the config's folder, which the clone's is not) and made the clone's default, so the data
    and outputs the remote holds are pulled for it."""
    if not (clone / ".dvc").is_dir():  # a commit from before `dvc init`
        return
    local_file = root / ".dvc" / "config.local"
    local = local_file.read_text(encoding="utf-8") if local_file.is_file() else ""
    committed = clone / ".dvc" / "config"
    committed_text = committed.read_text(encoding="utf-8") if committed.is_file() else ""
    remotes = remote_names(committed_text)
    extra = None if re.search(r"^\s*remote\s*=", committed_text, re.M) else _default_remote(root)
    if extra is not None and extra[0] in remotes:
        extra = None  # defined, just not the default: DVC's own answer stands
    if not local and extra is None:
        return
    text = _for_remotes(local, remotes | ({extra[0]} if extra else set()))
    if extra is not None:
        name, url = extra
        header = f"['remote \"{name}\"']\n"
        kept = text.splitlines(keepends=True)
        sections = [m.group(1) if (m := REMOTE_SECTION.match(line)) else None for line in kept]
        at = sections.index(name) if name in sections else None
        if at is None:
            kept += [
                "" if not kept or kept[-1].endswith("\n") else "\n",
                header,
                f"    url = {_quoted(url)}\n",
            ]
        elif not _section_has_url(kept, at):  # config.local may give the URL itself: kept, not doubled
            kept.insert(at + 1, f"    url = {_quoted(url)}\n")
        text = "".join(kept)
    (clone / ".dvc" / "config.local").write_text(text, encoding="utf-8")
    if extra is not None:
        made = commands.dvc("remote", "default", "--local", extra[0], cwd=clone)
        if made.returncode != 0:
            raise ReproductionError(
                f"cannot give the clone the repository's DVC remote '{extra[0]}': "
                f"{(made.stderr or made.stdout).strip()[-300:]}"
            )


def _quoted(value: str) -> str:
    """`value` as DVC's config reads it back whole: quoted (a comma made it a list, a `#` a comment)."""
    quote = "'" if '"' in value else '"'
    return f"{quote}{value}{quote}"


def _section_has_url(lines: list[str], at: int) -> bool:
    """Whether the config section whose header is `lines[at]` sets `url`."""
    for line in lines[at + 1 :]:
        if line.lstrip().startswith("["):
            return False
        if line.strip().split("=", 1)[0].strip() == "url":
            return True
    return False


def _default_remote(root: Path) -> tuple[str, str] | None:
    """(name, URL) of the repository's default DVC remote, a folder's path made absolute; None if none."""
    name = (commands.dvc("remote", "default", cwd=root).stdout or "").strip()
    if not name:
        return None
    url = (commands.dvc("config", f"remote.{name}.url", cwd=root).stdout or "").strip()
    if not url:
        return None
    if "://" not in url and not Path(url).is_absolute():
        url = str((root / ".dvc" / url).resolve())
    return name, url


_CACHE_SECTION = re.compile(r"^\s*\[\s*cache\s*\]")


def _for_remotes(local_config: str, remotes: set[str]) -> str:
    """`.dvc/config.local` less the sections of remotes that neither `remotes` (an older commit's
    `.dvc/config`, from before the remote was set up) nor the section itself give a URL: DVC refuses a
    config whose remote has credentials and no URL ("expected 'url'"), so such a commit would not check
    out. Less its `[cache]` too: a `cache.dir` there would have the clone write into the repository's
    cache."""
    kept: list[str] = []
    section: list[str] = []
    name: str | None = None

    def close() -> None:
        if section and _CACHE_SECTION.match(section[0]):
            return  # the repository's cache settings: the clone's DVC would write into that cache
        if name is None or name in remotes or any(line.strip().startswith("url") for line in section):
            kept.extend(section)

    for line in local_config.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            close()
            match = REMOTE_SECTION.match(line)
            section, name = [line], match.group(1) if match else None
        else:
            section.append(line)
    close()
    return "".join(kept)
