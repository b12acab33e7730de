"""A git repository with many experiment commits, written in one `git fast-import` (seconds for hundreds):
each commit holds params.yaml, metrics.json, data.dvc, dvc.lock, per-model reports (history.csv,
predictions.csv) and `MLflow-Run:` trailers, as `mnist-lab commit` writes them; DVC experiment refs too."""

from __future__ import annotations

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


def experiment_files(index: int, seed: int = 0) -> tuple[dict[str, str], dict]:
    """The files of experiment `index` and its metrics."""
    rng = random.Random(seed * 100_003 + index)
    alpha = [0.0001, 0.001, 0.01][index % 3]
    epochs = 3 + index % 4
    metrics = _metrics(rng)
    files = {
        "params.yaml": _params(alpha, epochs, 42 + index // 3),
        "metrics.json": json.dumps(metrics, indent=2) + "\n",
        "data.dvc": f"outs:\n- md5: {index // 50:032x}.dir\n  path: data\n",
        "dvc.lock": f"schema: '2.0'\nstages: {{run: {index}}}\n",
        "dvc.yaml": "stages: {}\n",
        "src/mnist_lab/core/models.py": f"ALPHA_DEFAULT = {alpha}  # experiment {index}\n",
    }
    for model in MODELS:
        files[f"reports/{model}/history.csv"] = _history(epochs, rng) if model == "cnn" else "epoch\n"
        files[f"reports/{model}/predictions.csv"] = _predictions(rng)
    return files, metrics


def write_history(root: Path, commits: int, seed: int = 0, experiments: int = 0) -> list[str]:
    """A new repository at `root` with `commits` experiment commits on main (oldest first) and
    `experiments` DVC experiment refs on the last one; returns the commits' hashes, newest first."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(root)], check=True)
    stream = []
    for index in range(commits):
        files, _ = experiment_files(index, seed)
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
