"""What the package declares: every third-party package it imports is a dependency in pyproject.toml (not
only a dependency of a dependency, which a release of that one could drop)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.helpers import REPO_ROOT


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normalized(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in project["dependencies"]
    }
    imported = set()
    for path in (REPO_ROOT / "src" / "mnist_lab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"mnist_lab"}
    distributions = packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in third_party
        if not {_normalized(d) for d in distributions.get(module, [module])} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_import_of_the_package_resolves() -> None:
    """Every `import mnist_lab...` / `from mnist_lab... import name` in the package, including those inside
    functions (imported lazily, so an import of the module alone does not run them), names something that
    exists: a module moved or renamed fails here, not in a user's `mnist-lab serve`."""
    import importlib

    unresolved = []
    for path in sorted((REPO_ROOT / "src" / "mnist_lab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("mnist_lab")
            ):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            unresolved.append(f"{path.name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("mnist_lab"):
                        importlib.import_module(alias.name)
    assert not unresolved, unresolved


def _pins(lock: str) -> dict[str, list[str]]:
    """`name -> [sha256, ...]` of a hashed lock file (a pin line, then its `--hash` lines)."""
    pins: dict[str, list[str]] = {}
    current = None
    for line in (REPO_ROOT / lock).read_text().splitlines():
        text = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if "==" in text:
            current = _normalized(text.split("==", 1)[0])
            pins[current] = []
        elif text.startswith("--hash=sha256:") and current:
            pins[current].append(text.removeprefix("--hash=sha256:"))
    return pins


def test_the_runtime_lock_satisfies_pyproject_and_holds_no_development_package() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    versions = {
        _normalized(line.split("==")[0]): line.split("==")[1].split()[0]
        for lock in ("requirements.lock", "requirements-dev.lock")
        for line in (REPO_ROOT / lock).read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for spec in project["dependencies"]:
        requirement = Requirement(spec.split("#")[0])
        name = _normalized(requirement.name)
        assert name in runtime, f"{name} (a runtime dependency) is not pinned in requirements.lock"
        assert requirement.specifier.contains(versions[name]), f"{name}=={versions[name]} is not {spec}"
    for spec in project["optional-dependencies"]["dev"]:
        requirement = Requirement(spec.split("#")[0])
        name = _normalized(requirement.name)
        assert name in runtime or name in dev, f"{name} (a dev dependency) is pinned in no lock file"
    # a package in both only where the dev lock adds extras a dev package wants, at the same version
    dev_text = (REPO_ROOT / "requirements-dev.lock").read_text()
    for name in set(runtime) & set(dev):
        line = next(line for line in dev_text.splitlines() if _normalized(line.split("[")[0]) == name)
        assert "[" in line.split("==")[0], f"{name} is pinned in both lock files without extras"
        runtime_line = next(
            line
            for line in (REPO_ROOT / "requirements.lock").read_text().splitlines()
            if _normalized(line.split("[")[0].split("==")[0]) == name
        )
        assert line.split("==")[1].split()[0] == runtime_line.split("==")[1].split()[0], f"{name}: 2 versions"
    tools = {"pytest", "pytest-xdist", "ruff", "mypy", "import-linter", "moto"}
    assert not tools & set(runtime), f"test tools in the runtime lock: {tools & set(runtime)}"


def test_every_pin_carries_hashes() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        pins = _pins(lock)
        assert len(pins) > 10
        unhashed = [name for name, hashes in pins.items() if not hashes]
        assert not unhashed, f"{lock}: pins without a --hash: {unhashed}"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for hashes in pins.values() for h in hashes)


def test_python_env_never_mixes_the_hashed_lock_with_an_unhashed_requirement() -> None:
    """MLflow installs each of python_env.yaml's lists with one `pip install -r`; pip refuses an unhashed
    requirement (the package itself) in the same call as hashed ones, and the project is installed from a
    temporary copy, so it must not be editable."""
    from mlflow.utils.environment import _PythonEnv

    env = _PythonEnv.from_yaml(str(REPO_ROOT / "python_env.yaml"))
    lists = [env.build_dependencies, env.dependencies]
    assert ["-r requirements.lock"] in lists
    for entries in lists:
        if "-r requirements.lock" in entries:
            assert entries == ["-r requirements.lock"], entries
    everything = [entry for entries in lists for entry in entries]
    assert "." in everything and not any(entry.startswith("-e") for entry in everything)


def test_dvc_parses_yaml_with_the_c_parser() -> None:
    """DVC reads dvc.yaml and dvc.lock with ruamel's safe loader ~30 times per `dvc exp run`; without
    ruamel.yaml.clib (ruamel.yaml 0.19 no longer installs it) every parse runs in pure Python, ~6x slower."""
    from dvc.utils.serialize import parse_yaml
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser", "ruamel.yaml.clib is not installed"
    assert parse_yaml("stages:\n  a: {cmd: echo}\n", "dvc.yaml") == {"stages": {"a": {"cmd": "echo"}}}
