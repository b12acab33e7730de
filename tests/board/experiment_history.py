"""A git repository with many experiment commits, written in one `git fast-import` (seconds for hundreds):
each commit holds params.yaml, metrics.json, data.dvc, dvc.lock, per-model reports (history.csv,
predictions.csv) and `MLflow-Run:` trailers, as `mnist-lab commit` writes them; DVC experiment refs too."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path

import yaml

MODELS = ("sgd", "mlp", "cnn")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def _params(alpha: float, epochs: int, seed: int) -> str:
    return yaml.safe_dump(
        {
            "seed": seed,
            "task": {"kind": "multiclass", "positive_class": 5},
            "models": {
                "sgd": {"type": "sgd", "alpha": 0.0001},
                "mlp": {"type": "mlp", "alpha": alpha},
                "cnn": {"type": "cnn", "max_epochs": epochs},
            },
        },
        sort_keys=False,
    )


SOURCES = tuple(f"src/mnist_lab/module_{number}.py" for number in range(35))  # the same in every commit
STAGES = (
    "validate",
    "prepare",
    "featurize",
    *(f"{s}@{m}" for s in ("train", "evaluate") for m in MODELS),
    "select",
)


def listing(files: dict[str, str]) -> str:
    """A stage's `stage-code/<stage>.sha256` (system/sources.py) for the source files of `files`."""
    code = ("src/mnist_lab/core/models.py", *SOURCES)
    return "".join(f"{hashlib.sha256(files[path].encode()).hexdigest()}  {path}\n" for path in code)


def _lock(files: dict[str, str], alpha: float, epochs: int, seed: int, listings: bool) -> str:
    """dvc.lock as DVC 3 writes it for a pipeline of this repository's size that ran on these files and
    params and made metrics.json: each stage on the data, its listing of the code it runs (`listings`; the
    repository's pipeline since the `code` stage, ~20 KB) or every source file (before it, ~50 KB), and
    its params."""

    def file(path: str) -> dict:
        data = files[path].encode()
        return {"path": path, "hash": "md5", "md5": hashlib.md5(data).hexdigest(), "size": len(data)}

    data = {"path": "data", "hash": "md5", "md5": yaml.safe_load(files["data.dvc"])["outs"][0]["md5"],
            "size": 1000, "nfiles": 4}  # fmt: skip
    sources = [file(path) for path in ("src/mnist_lab/core/models.py", *SOURCES)]
    params = {
        "models.cnn": {"type": "cnn", "max_epochs": epochs},
        "models.mlp": {"type": "mlp", "alpha": alpha},
        "seed": seed,
    }
    stages = {}
    for stage in STAGES:
        made = hashlib.md5(f"{stage} {alpha} {epochs} {seed}".encode()).hexdigest()
        outs = [file("metrics.json")] if stage == "select" else [
            {"path": f"outputs/{stage}.npz", "hash": "md5", "md5": made, "size": 4096}]  # fmt: skip
        code = [file(f"stage-code/{stage.partition('@')[0]}.sha256")] if listings else sources
        stages[stage] = {"cmd": f"python -m mnist_lab.stages {stage}", "deps": [data, *code],
                         "params": {"params.yaml": params}, "outs": outs}  # fmt: skip
    if listings:  # the `code` stage, last as DVC writes it, makes the listings the stages depend on
        made = [
            file(f"stage-code/{stage}.sha256") for stage in dict.fromkeys(s.partition("@")[0] for s in STAGES)
        ]
        package = {
            "path": "src/mnist_lab",
            "hash": "md5",
            "md5": f"{len(files):032x}.dir",
            "size": 1,
            "nfiles": 1,
        }
        stages["code"] = {"cmd": "python -m mnist_lab.stages code", "deps": [package], "outs": made}
    return yaml.dump({"schema": "2.0", "stages": stages}, Dumper=_NoAliases, sort_keys=False)


class _NoAliases(yaml.SafeDumper):
    """Each stage written out in full, as DVC does (PyYAML would alias the parts stages share)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _metrics(rng: random.Random) -> dict:
    models = {m: {"accuracy": round(rng.uniform(0.90, 0.99), 6), "f1_macro": round(rng.uniform(0.9, 0.99), 6)}
              for m in MODELS}  # fmt: skip
    best = max(models, key=lambda m: models[m]["f1_macro"])
    return {
        "best": {"model": best, "metric": "f1_macro", "value": models[best]["f1_macro"]},
        "models": models,
    }


def _history(epochs: int, rng: random.Random) -> str:
    lines = ["epoch,train_loss,train_accuracy,val_loss,val_accuracy"]
    for epoch in range(1, epochs + 1):
        loss = 2.3 / epoch + rng.uniform(0, 0.05)
        lines.append(f"{epoch},{loss:.5f},{1 - loss / 3:.5f},{loss * 1.1:.5f},{1 - loss / 2.8:.5f}")
    return "\n".join(lines) + "\n"


def _predictions(rng: random.Random, count: int = 60) -> str:
    rows = ["actual,predicted"]
    for _ in range(count):
        actual = rng.randrange(10)
        rows.append(f"{actual},{actual if rng.random() < 0.9 else rng.randrange(10)}")
    return "\n".join(rows) + "\n"


def experiment_files(
    index: int, seed: int = 0, listings: bool = True, code_version: int = 0
) -> tuple[dict[str, str], dict]:
    """The files of experiment `index` and its metrics (`listings`: see _lock); `code_version` edits a source
    file (the same results: dvc.lock's code records change, nothing else)."""
    rng = random.Random(seed * 100_003 + index)
    alpha = [0.0001, 0.001, 0.01][index % 3]
    epochs = 3 + index % 4
    metrics = _metrics(rng)
    files = {
        "params.yaml": _params(alpha, epochs, 42 + index // 3),
        "metrics.json": json.dumps(metrics, indent=2) + "\n",
        "data.dvc": f"outs:\n- md5: {index // 50:032x}.dir\n  path: data\n",
        "dvc.yaml": "stages: {}\n",
        "src/mnist_lab/core/models.py": f"ALPHA_DEFAULT = {alpha}  # experiment {index}\n",
        **{path: f"# {path}\n" for path in SOURCES},
    }
    if code_version:
        files[SOURCES[0]] += f"# code version {code_version}\n"
    if listings:
        for stage in dict.fromkeys(stage.partition("@")[0] for stage in STAGES):
            files[f"stage-code/{stage}.sha256"] = listing(files)
    files["dvc.lock"] = _lock(files, alpha, epochs, 42 + index // 3, listings)
    for model in MODELS:
        files[f"reports/{model}/history.csv"] = _history(epochs, rng) if model == "cnn" else "epoch\n"
        files[f"reports/{model}/predictions.csv"] = _predictions(rng)
    return files, metrics


def write_history(
    root: Path, commits: int, seed: int = 0, experiments: int = 0, dirty: tuple[int, ...] = ()
) -> list[str]:
    """A new repository at `root` with `commits` experiment commits on main (oldest first) and
    `experiments` DVC experiment refs on the last one; returns the commits' hashes, newest first. The
    commits numbered in `dirty` have params.yaml's mlp alpha edited after their dvc.lock was written."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(root)], check=True)
    stream = []
    for index in range(commits):
        files, _ = experiment_files(index, seed)
        if index in dirty:
            files["params.yaml"] = files["params.yaml"].replace(
                "type: mlp\n    alpha:", "type: mlp\n    alpha: 0.5 #"
            )
        run_ids = {model: f"{index:016x}{i + 1:016x}" for i, model in enumerate(MODELS)}
        trailers = "\n".join(
            f"MLflow-Run: {m} run={run_ids[m]} record={index:016x}{i:016x}" for i, m in enumerate(MODELS)
        )
        message = f"Experiment {index}: mlp alpha and cnn epochs\n\n{trailers}\n".encode()
        stream.append(f"commit refs/heads/main\nmark :{index + 1}\n")
        stream.append(f"committer test <test@example.invalid> {1_700_000_000 + index * 3600} +0000\n")
        stream.append(f"data {len(message)}\n")
        stream.append(message.decode())
        if index:
            stream.append(f"from :{index}\n")
        for path, text in files.items():
            data = text.encode()
            stream.append(f"M 100644 inline {path}\ndata {len(data)}\n{text}\n")
    for number in range(experiments):
        files, _ = experiment_files(10_000 + number, seed)
        message = b"dvc: commit experiment\n"
        stream.append(f"commit refs/exps/ab/cdef0123/exp-{number}\n")
        stream.append(f"committer test <test@example.invalid> {1_800_000_000 + number} +0000\n")
        stream.append(f"data {len(message)}\n{message.decode()}from refs/heads/main\n")
        for path, text in files.items():
            stream.append(f"M 100644 inline {path}\ndata {len(text.encode())}\n{text}\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input="".join(stream).encode(), check=True)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=root, check=True)
    log = subprocess.run(["git", "log", "--format=%H", "main"], cwd=root, capture_output=True, text=True)
    return log.stdout.split()


def commit_code_change(root: Path, index: int, code_version: int = 1, message: str = "") -> str:
    """A commit on top of experiment `index` (checked out at `root`) that changed code alone, as `dvc repro`
    records it when every stage's results came out the same: a source file, the stages' code listings and
    dvc.lock's records of them; no runs, no trailers. Returns its hash."""
    files, _ = experiment_files(index, code_version=code_version)
    for path, text in files.items():
        (root / path).write_text(text)
    subprocess.run([*GIT, "commit", "-qam", message or f"code change {code_version}"], cwd=root, check=True)
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.strip()
