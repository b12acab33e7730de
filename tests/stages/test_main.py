"""`python -m mnist_lab.stages <stage>`: the commands dvc.yaml runs (warm when it can, system/warm.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from mnist_lab.stages.__main__ import PRELOAD, STAGES, main
from tests.helpers import REPO_ROOT


def test_an_unknown_stage_is_refused_with_the_list_of_stages(capsys) -> None:
    assert main(["trian", "sgd"]) == 2
    assert (
        "usage: python -m mnist_lab.stages {code,validate,prepare,featurize,train,evaluate,select,register}"
        in (capsys.readouterr().err)
    )


def test_every_dvc_stage_runs_through_it() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        command = stage["do"]["cmd"] if "foreach" in stage else stage["cmd"]
        assert command.startswith("python -m mnist_lab.stages "), name
        assert command.split()[3] in STAGES, name


def test_the_preloaded_modules_cover_what_the_stage_modules_import() -> None:
    """Importing any stage module after PRELOAD loads no other third-party package (else that stage pays
    for the import itself, every run)."""
    code = f"""
import importlib, json, sys
for name in {list(PRELOAD)!r}:
    importlib.import_module(name)
before = set(sys.modules)
for stage in {list(STAGES)!r}:
    importlib.import_module("mnist_lab.stages." + stage)
new = {{name.split(".")[0] for name in set(sys.modules) - before}}
print(json.dumps(sorted(new - set(sys.stdlib_module_names) - {{"mnist_lab"}})))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(done.stdout) == []
