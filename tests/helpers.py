"""Helpers shared by tests: run commands, copy the repository, make images."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(
    command: list[str], cwd: Path, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with this environment's executables first on PATH; fail with its output."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def commit_all(root: Path, message: str) -> str:
    """Stage everything and commit it; the new commit's id."""
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", message], root)
    return run(["git", "rev-parse", "HEAD"], root).stdout.strip()


def copy_repository(destination: Path) -> Path:
    """A fresh git repository holding this repository's committed files as they are in the working tree
    (what a clone would have, plus uncommitted edits to tracked files)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    for relative in filter(None, listed.stdout.decode().split("\0")):
        source = REPO_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    run(["git", "init", "-q", "-b", "main"], destination)
    run(["git", "add", "-A"], destination)
    run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "copy"],
        destination,
    )
    return destination


def random_images(count: int, rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images and balanced labels 0-9."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, rows, cols), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return images, labels


def pixel_model_record(kind: str = "sklearn") -> Any:  # a tracking.ModelRunRecord
    """A run whose model is what the evaluate stage logs: the pyfunc around featurizer + classifier, or
    (`kind="cnn"`) around a small Keras CNN on 4x4 images."""
    from sklearn.linear_model import LogisticRegression

    from mnist_lab import tracking
    from mnist_lab.core.features import fit_featurizer, full_model, pixel_frame
    from mnist_lab.core.models import train_classifier
    from mnist_lab.core.settings import CNNSettings, FeatureSettings
    from mnist_lab.serving.pyfunc import DigitClassifier

    pixels = np.random.default_rng(1).integers(0, 256, size=(60, 16)).astype(np.uint8)
    labels = (pixels[:, 0] > 127).astype(int)
    featurizer = fit_featurizer(pixels, FeatureSettings(pca=False), seed=0)
    if kind == "cnn":
        settings = CNNSettings(type="cnn", filters=[4], max_epochs=2)
        classifier = train_classifier(settings, pixels, labels, seed=0, image_shape=(4, 4)).classifier
    else:
        classifier = LogisticRegression().fit(featurizer.transform(pixels), labels)
    pipeline = full_model(featurizer, classifier)
    return tracking.ModelRunRecord(
        run_name="pixels",
        params={},
        metrics={"accuracy": 1.0},
        model=DigitClassifier(pipeline, 16),
        input_example=pixel_frame(pixels[:3]),
    )


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MLFLOW2 = REPO_ROOT / ".venv-mlflow2" / "bin" / "mlflow"  # built by `make .venv-mlflow2`
ADMIN_PASSWORD = "admin-password-0123456789"  # basic-auth servers need 12+ characters


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (one worker), store and artifacts in `folder`. It can be
    stopped and started again on the same port and store, and optionally requires basic auth."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        basic_auth: bool = False,
        mlflow: Path | None = None,
        admin_password: str = ADMIN_PASSWORD,
    ) -> None:
        self.folder = folder
        self.admin_password = admin_password
        self.mlflow = mlflow or BIN / "mlflow"
        self.port = port or free_port()
        self.basic_auth = basic_auth
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> MlflowServer:
        import time
        import urllib.error
        import urllib.request

        command = [
            str(self.mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
        ]
        env = {**os.environ}
        for name in [n for n in env if n.startswith("MLFLOW_")]:
            del env[name]
        # `mlflow server` starts gunicorn/uvicorn found on PATH: use the ones beside this mlflow
        env["PATH"] = f"{self.mlflow.parent}{os.pathsep}{env.get('PATH', '')}"
        if self.basic_auth:
            config = self.folder / "basic_auth.ini"
            config.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.folder / 'auth.db'}\nadmin_username = admin\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                "auth_cache_ttl_seconds = 60\n"
            )
            env |= {
                "MLFLOW_AUTH_CONFIG_PATH": str(config),
                "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
            }
            command += ["--app-name", "basic-auth"]
        self.log = open(self.folder / "server.log", "a")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError:
                return self  # it answers (basic auth may refuse /health)
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"mlflow server did not start:\n{(self.folder / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with `kill`: as if it crashed)."""
        import signal

        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        self.log.close()


@contextlib.contextmanager
def mlflow_server(folder: Path, basic_auth: bool = False) -> Iterator[str]:
    """A running `MlflowServer`; yields its URL."""
    server = MlflowServer(folder, basic_auth=basic_auth).start()
    try:
        yield server.url
    finally:
        server.stop()


def run_record(name: str = "m") -> Any:  # a tracking.ModelRunRecord
    """A small run without a model: params, metrics, a two-epoch history, a tag and one artifact."""
    from mnist_lab import tracking

    return tracking.ModelRunRecord(
        run_name=name,
        params={"seed": 1},
        metrics={"accuracy": 0.5},
        history=[{"epoch": 1.0, "val_loss": 0.9}, {"epoch": 2.0, "val_loss": 0.4}],
        tags={"mnist_lab.model": name},
        artifacts={"figures/x.txt": b"x"},
    )


def run_children(count: int) -> list[Any]:  # list[tracking.ChildRunRecord]
    """Nested runs as a grid search logs them: one per candidate."""
    from mnist_lab import tracking

    return [
        tracking.ChildRunRecord(f"m-candidate-{i}", {"model.alpha": i}, {"mean_test_score": i / 10})
        for i in range(count)
    ]


# --- the pipeline's stages, run in this process ------------------------------------------------------

SMALL_PARAMS = {
    "seed": 1,
    "models": {
        "sgd": {"type": "sgd"},
        "forest": {"type": "random_forest", "n_estimators": 10},
        "mlp": {"type": "mlp", "hidden_layer_sizes": [16], "max_epochs": 40},
    },
}
PIPELINE = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def stage_argv(stage: str, key: str | None = None) -> tuple[str, list[str]]:
    """(module, arguments) of a stage's command in dvc.yaml, with ${key} filled in: `python -m
    mnist_lab.stages <stage> ...` runs the module `mnist_lab.stages.<stage>`."""
    body = PIPELINE[stage].get("do", PIPELINE[stage])
    command = body["cmd"].replace("${key}", key or "")
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "mnist_lab.stages"], command
    return f"mnist_lab.stages.{words[3]}", words[4:]


def run_dvc_stage(stage: str, key: str | None = None) -> int:
    """Run one stage of dvc.yaml in this process (in the cwd), as DVC would run it; its exit code."""
    from mnist_lab.stages.common import run_stage

    module_name, argv = stage_argv(stage, key)
    module = importlib.import_module(module_name)
    return run_stage(stage, module.parser(), getattr(module, stage), argv)


def run_all(models: list[str], select: bool = True) -> None:
    """validate, prepare, featurize, then train and evaluate each of `models`, then select."""
    assert run_dvc_stage("validate") == 0
    assert run_dvc_stage("prepare") == 0
    assert run_dvc_stage("featurize") == 0
    for name in models:
        assert run_dvc_stage("train", name) == 0
        assert run_dvc_stage("evaluate", name) == 0
    if select:
        assert run_dvc_stage("select") == 0


# --- served models (`mnist-lab serve`) -----------------------------------------------------------------


def start(command: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.Popen(command, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def wait_until_ready(server: subprocess.Popen, port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}):\n{server.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no answer on port {port} after {timeout_s} s")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def post(url: str, body: bytes | str, content_type: str = "application/json") -> tuple[int, dict | str]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return error.code, json.loads(text)
        except json.JSONDecodeError:
            return error.code, text


KEY_OF_STAGES = (
    "from mnist_lab.stages.__main__ import warm_imports; from mnist_lab.system.warm import server_key; "
    "print(server_key(warm_imports()))"
)


def start_warm_server(root: Path, env: dict | None = None, timeout_s: float = 120) -> int:
    """Start the stages' warm server for this environment (a cold stage run starts it) and wait until it
    serves; its pid. Its directory is the environment's MNIST_LAB_WARM_DIR (`env`'s, else this process's)."""
    from mnist_lab.system.warm import DIR_ENV

    key = run([str(BIN / "python"), "-c", KEY_OF_STAGES], root, env).stdout.strip()
    run([str(BIN / "python"), "-m", "mnist_lab.stages", "validate", "--help"], root, env)
    lock = Path((env or {}).get(DIR_ENV) or os.environ[DIR_ENV]) / f"{key}.lock"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if lock.with_suffix(".sock").exists():
            return int(lock.read_text())
        time.sleep(0.1)
    raise AssertionError(f"no warm server {key} after {timeout_s:.0f} s (see {lock.with_suffix('.log')})")
