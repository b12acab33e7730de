"""Grid searches on a Dask cluster: the address in the environment, and (slow) a real scheduler and workers on
127.0.0.1 running the train stage's search with the same results as this machine, through a worker killed
mid-search, and failing clearly with nothing written when no worker is left."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mnist_lab.system import cluster
from mnist_lab.system.cluster import CLUSTER_ENV, ClusterError, cluster_address, dask_search
from tests.helpers import SMALL_PARAMS, free_port, run_dvc_stage

BIN = Path(sys.executable).parent


def test_the_address_comes_from_the_environment_and_is_checked() -> None:
    assert cluster_address({}) is None and cluster_address({CLUSTER_ENV: "  "}) is None
    assert cluster_address({CLUSTER_ENV: "tcp://10.0.0.5:8786"}) == "tcp://10.0.0.5:8786"
    assert cluster_address({CLUSTER_ENV: "tls://[::1]:8786"}) == "tls://[::1]:8786"
    for wrong in ("10.0.0.5:8786", "http://x:8786", "tcp://", "tcp://localhost", "tcp://127.0.0.1:port"):
        with pytest.raises(ClusterError, match=f"{CLUSTER_ENV}=.* is not a Dask scheduler address"):
            cluster_address({CLUSTER_ENV: wrong})


def test_a_scheduler_that_does_not_answer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    expected = rf"{CLUSTER_ENV}={address}: no Dask scheduler answers there"
    with pytest.raises(ClusterError, match=expected), dask_search(address):
        pass


def test_a_fits_own_os_error_is_raised_as_it_is_not_blamed_on_the_cluster(tmp_path: Path) -> None:
    """A missing file (a fit's, or this machine's code inside the search) became "the grid search on the
    Dask cluster ... failed. Check the workers": OSError is the cluster's only while it is unwell."""
    import joblib
    from distributed import LocalCluster

    missing = str(tmp_path / "no-such-file")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as local:
        with pytest.raises(FileNotFoundError, match="no-such-file"), dask_search(local.scheduler_address):
            joblib.Parallel()(joblib.delayed(open)(missing) for _ in range(2))  # on the worker
        with pytest.raises(PermissionError, match="here"), dask_search(local.scheduler_address):
            raise PermissionError("here")  # this machine's own code, inside the search
        not_sent = "the fits' data could not be sent to any worker"
        with pytest.raises(ClusterError, match=not_sent), dask_search(local.scheduler_address):
            raise cluster.DataNotSent(f"{not_sent} (no running worker)")


def test_the_workers_watch_goes_on_after_a_failed_poll_or_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """It stopped watching at the first failed poll (a hiccup of the scheduler) and gave up after a failed
    cancel: a search then waited for workers forever, silently. A scheduler that answers with a failure
    once each (what a real one does only by chance) stands in here."""

    class Hiccups:
        def __init__(self) -> None:
            self.futures: dict = {}
            self.polls = self.cancels = 0

        def nthreads(self) -> dict:
            self.polls += 1
            if self.polls == 1:
                raise OSError("the scheduler did not answer this time")
            return {}  # no workers

        def cancel(self, futures: list, force: bool) -> None:
            self.cancels += 1
            if self.cancels == 1:
                raise OSError("the cancel did not reach the scheduler")

    monkeypatch.setattr(cluster, "NO_WORKERS_SECONDS", 0.0)
    client, workerless = Hiccups(), threading.Event()
    with cluster._watched_for_workers(client, workerless):
        assert workerless.wait(timeout=20)
        deadline = time.monotonic() + 20
        while client.cancels < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert client.polls >= 3 and client.cancels == 2  # polled past the failure, cancelled again after one


# --- a real cluster ---------------------------------------------------------------------------------------

GRID = {"hidden_layer_sizes": [[8], [16]], "learning_rate_init": [0.001, 0.003], "alpha": [0.0001, 0.01]}


class Cluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1 (workers without a nanny, so that a
    killed worker stays dead, as a lost machine does)."""

    def __init__(self, folder: Path, scheduler_env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
        port = self.address.rsplit(":", 1)[1]
        arguments = ["scheduler", "--host", "127.0.0.1", "--port", port, "--dashboard-address", ":0"]
        self.scheduler = self._start(arguments, "scheduler", scheduler_env or {})
        self.workers: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str, extra: dict[str, str]) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        return subprocess.Popen([str(BIN / "dask"), *args], env={**self.env, **extra}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def add_workers(self, count: int, env: dict[str, str] | None = None, nanny: bool = False) -> None:
        """`count` workers; with `nanny`, as the README starts them (a nanny process restarting each)."""
        from distributed import Client

        for _ in range(count):
            index = len(self.workers)
            self.workers.append(self._start([
                "worker", self.address, "--nthreads", "1", *([] if nanny else ["--no-nanny"]), "--name",
                f"w{index}", "--host", "127.0.0.1", "--dashboard-address", ":0",
            ], f"worker-{index}", env or {}))  # fmt: skip
        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(len(self.workers), timeout=60)

    def kill_when_busy(self, indexes: list[int] | None = None) -> threading.Thread:
        """Kill the workers `indexes` (SIGKILL) as soon as every worker is running a fit; in a thread. With no
        indexes, the worker that holds the most of the fits' scattered arrays (the images, the folds'
        indices): where joblib put the only copy, losing it lost the data, not only the fits. The indexes
        killed are in `self.killed`."""
        from distributed import Client

        def watch() -> None:
            with Client(self.address, timeout=30, set_as_default=False) as client:
                index_of = {
                    address: int(info["name"][1:])
                    for address, info in client.scheduler_info()["workers"].items()
                }
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    processing = client.processing()
                    if all(processing.get(address) for address in index_of):
                        break
                    time.sleep(0.02)
                time.sleep(1.0)  # the Active Memory Manager (every 0.1 s here) has run, the fits still run
                if indexes is None:
                    held = client.has_what()
                    arrays = {address: sum(str(key).startswith("ndarray-") for key in held.get(address, ()))
                              for address in index_of}  # fmt: skip
                    holder = max(sorted(index_of, key=index_of.__getitem__), key=arrays.__getitem__)
                    self.killed = [index_of[holder]]
                else:
                    self.killed = list(indexes)
            for index in self.killed:
                os.killpg(self.workers[index].pid, signal.SIGKILL)

        self.killed: list[int] = []
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def searched(workspace: Path) -> Path:
    """The workspace with an MLP grid search of 8 candidates x 2 folds, prepared and featurized, and the
    search's result on this machine (`local-training.json`)."""
    params = {
        **SMALL_PARAMS,
        "models": {"mlp": {**SMALL_PARAMS["models"]["mlp"], "search": {"grid": GRID, "cv": 2}}},
    }
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc_stage("prepare") == 0 and run_dvc_stage("featurize") == 0
    assert run_dvc_stage("train", "mlp") == 0
    shutil.move(workspace / "reports" / "mlp" / "training.json", workspace / "local-training.json")
    shutil.rmtree(workspace / "models" / "mlp")
    return workspace


# Dask's Active Memory Manager (on by default, every 2 s) drops the copies of scattered data it finds
# surplus: the fits' fold indices were back on one worker within seconds, and killing it lost them. Here it
# runs every 0.1 s, so that a worker killed as soon as the fits run has already met it.
AMM_SOON = {"DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__INTERVAL": "100ms"}


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path, scheduler_env=AMM_SOON)
    try:
        yield started
    finally:
        started.stop()


def _search_result(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_a_search_on_the_cluster_equals_the_local_one_even_when_a_worker_dies(
    searched: Path, dask_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    dask_cluster.add_workers(2)
    monkeypatch.setenv(CLUSTER_ENV, dask_cluster.address)
    assert run_dvc_stage("train", "mlp") == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"on the Dask cluster at {dask_cluster.address}" in err
    assert re.search(r"^mlp grid search: 16/16 fits done, \d+ s$", err, re.M), err  # heard from the cluster
    local = _search_result(searched / "local-training.json")
    assert _search_result(searched / "reports" / "mlp" / "training.json") == local
    timing = json.loads((searched / "outputs" / "timing" / "mlp.json").read_text())
    assert timing["search_ran_on"] == f"Dask cluster {dask_cluster.address} (2 workers)"
    # a worker lost mid-search, the one holding the scattered images: its fits are rerun on the other, from
    # the other's copy of the data; the same result
    (searched / "reports" / "mlp" / "training.json").unlink()
    killer = dask_cluster.kill_when_busy()
    assert run_dvc_stage("train", "mlp") == 0, capsys.readouterr().err
    killer.join(timeout=60)
    assert len(dask_cluster.killed) == 1
    assert dask_cluster.workers[dask_cluster.killed[0]].poll() is not None  # it really died
    assert _search_result(searched / "reports" / "mlp" / "training.json") == local


def _fits_running(address: str, timeout_s: float = 120) -> bool:
    """Wait until every worker of the cluster at `address` is running a fit; False after `timeout_s`."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        workers = list(client.scheduler_info()["workers"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            processing = client.processing()
            if workers and all(processing.get(worker) for worker in workers):
                return True
            time.sleep(0.02)
    return False


def _assert_same_search(here: Any, there: Any) -> None:
    """Two trained models' grid searches scored every candidate's folds the same."""
    assert here.search is not None and there.search is not None
    assert [c.fold_scores for c in there.search.candidates] == [c.fold_scores for c in here.search.candidates]


def _forty_fits() -> tuple:
    """(MLP settings with a grid search of 8 candidates x 5 folds, the bundled digits' pixels and labels):
    a search of 7-10 s on two workers here."""
    from mnist_lab.core.data import digits_dataset, flatten_images
    from mnist_lab.core.settings import MLPSettings

    digits = digits_dataset()
    grid = {"alpha": [1e-5, 1e-4, 1e-3, 1e-2], "hidden_layer_sizes": [[50], [100]]}
    settings = MLPSettings.model_validate(
        {"type": "mlp", "max_epochs": 30, "search": {"grid": grid, "cv": 5}}
    )
    return settings, flatten_images(digits.train_images).astype(float) / 16, digits.train_labels


@pytest.mark.slow
def test_a_worker_lost_after_the_memory_manager_ran_leaves_the_search_to_the_others(
    dask_cluster: Cluster,
) -> None:
    """Dask's Active Memory Manager dropped the fits' surplus copies of their scattered arrays within
    seconds (every 0.1 s here), so a worker killed a few seconds into a search took the only copy of some
    with it: "already forgotten", the search failed (3 of 3 here before the manager was paused for the
    search). The same 40 fits as on this machine, every fold score equal."""
    from mnist_lab.core.models import train_classifier

    settings, x, y = _forty_fits()
    here = train_classifier(settings, x, y, seed=0, search_jobs=1)
    dask_cluster.add_workers(2)
    searching = threading.Event()

    def kill_while_searching() -> None:
        # once both workers run fits (never during the scatter), and the memory manager had time to run
        if _fits_running(dask_cluster.address) and searching.is_set():
            time.sleep(2)
            if searching.is_set():
                os.killpg(dask_cluster.workers[0].pid, signal.SIGKILL)
                dask_cluster.killed = [0]

    dask_cluster.killed = []
    killer = threading.Thread(target=kill_while_searching)
    with dask_search(dask_cluster.address):
        searching.set()
        killer.start()
        there = train_classifier(settings, x, y, seed=0)
        searching.clear()
    killer.join()
    assert dask_cluster.killed == [0] and dask_cluster.workers[0].poll() is not None  # killed mid-search
    _assert_same_search(here, there)


@pytest.mark.slow
def test_a_scheduler_lost_mid_search_is_one_message_naming_it(
    dask_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """It printed Dask's ~30-line traceback, then a message blaming the workers."""
    import logging

    from mnist_lab.core.models import train_classifier

    settings, x, y = _forty_fits()
    dask_cluster.add_workers(2)

    def kill_the_scheduler() -> None:
        if _fits_running(dask_cluster.address):
            time.sleep(1)
        os.killpg(dask_cluster.scheduler.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_scheduler)
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(ClusterError) as raised,
        dask_search(dask_cluster.address),
    ):
        killer.start()
        train_classifier(settings, x, y, seed=0)
    killer.join()
    assert f"the grid search on the Dask cluster at {dask_cluster.address} lost its connection to the " \
        "scheduler" in str(raised.value)  # fmt: skip
    assert not [r for r in caplog.records if r.name in ("distributed.client", "tornado.application")]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["w0", "w1"])
def test_a_worker_lost_while_the_data_is_sent_leaves_the_search_to_the_others(
    dask_cluster: Cluster, victim: str
) -> None:
    """A worker lost while the fits' arrays were still being sent to every worker hung the search, silently
    (4 of 4 here; once in CI): the scheduler's broadcast retried the dead worker forever, and joblib drops
    an exception raised in its scatter callback. The victim kills itself the moment the first array reaches
    it, whatever the load: inside the sending every time."""
    from distributed.diagnostics.plugin import WorkerPlugin

    from mnist_lab.core.models import train_classifier

    class DieWithTheData(WorkerPlugin):  # a class of this function: sent to the workers by value
        def __init__(self, name: str) -> None:
            self.name = name

        def setup(self, worker) -> None:
            self.worker = worker

        def transition(self, key, start, finish, **kwargs) -> None:
            if self.worker.name == self.name and finish == "memory" and str(key).startswith("ndarray-"):
                os.kill(os.getpid(), signal.SIGKILL)

    settings, x, y = _forty_fits()
    here = train_classifier(settings, x, y, seed=0, search_jobs=1)
    dask_cluster.add_workers(2)
    result: dict = {}

    def search() -> None:
        from distributed import Client

        with Client(dask_cluster.address, timeout=30, set_as_default=False) as client:
            client.register_plugin(DieWithTheData(victim), name="die-with-the-data")
        try:
            with dask_search(dask_cluster.address):
                result["trained"] = train_classifier(settings, x, y, seed=0)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    thread.join(timeout=600)  # a guard against the hang, not a time limit: the search takes ~10 s here
    assert not thread.is_alive(), "the search hung after a worker was lost while its data was sent"
    assert "error" not in result, result.get("error")
    assert dask_cluster.workers[int(victim[1:])].poll() is not None  # it really died, with the data
    there = result["trained"]
    _assert_same_search(here, there)


@pytest.mark.slow
def test_every_worker_gets_a_copy_of_the_data_the_fits_share(dask_cluster: Cluster) -> None:
    # joblib scatters a fit's large arguments as below; to one worker only, a worker lost before the others
    # had fetched them took the only copy, and the fits were cancelled rather than rerun (CI, 2026-11-27)
    import numpy as np
    from joblib.parallel import get_active_backend

    dask_cluster.add_workers(2)
    with dask_search(dask_cluster.address) as client:
        backend, _ = get_active_backend()
        images = backend.client.scatter(np.arange(1000.0), hash=False)
        assert len(client.who_has([images])[images.key]) == 2


@pytest.mark.slow
def test_a_search_with_no_worker_left_fails_clearly_and_writes_nothing(
    searched: Path, dask_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A scheduler as `dask scheduler` starts (no no-workers timeout): the fits' data was on the workers
    alone, so Dask forgets it and cancels the fits; said as every worker lost."""
    dask_cluster.add_workers(2)
    monkeypatch.setenv(CLUSTER_ENV, dask_cluster.address)
    killer = dask_cluster.kill_when_busy([0, 1])
    code = run_dvc_stage("train", "mlp")
    killer.join(timeout=60)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"the grid search on the Dask cluster at {dask_cluster.address} lost every worker" in err, err
    assert "nothing was written or logged" in err
    assert not (searched / "reports" / "mlp" / "training.json").exists()
    assert not (searched / "models" / "mlp").exists()


@pytest.mark.slow
def test_workers_running_other_code_are_refused_before_the_search(tmp_path: Path) -> None:
    """A worker started from a stale checkout (here: this package with one line changed, first on its
    PYTHONPATH) would score the candidates differently; the version string of an editable install does not
    change with its code, so the code itself is compared."""
    other = tmp_path / "other-checkout"
    shutil.copytree(Path(cluster.__file__).resolve().parents[1], other / "mnist_lab")
    models = other / "mnist_lab" / "core" / "models.py"
    models.write_text(models.read_text() + "\nCHANGED = True\n")
    started = Cluster(tmp_path)
    try:
        started.add_workers(1, {"PYTHONPATH": str(other)})
        refused = r"must run this machine's code and libraries, or their fits are not this machine's: tcp://"
        expected = rf"{refused}.* has mnist_lab source [0-9a-f]{{12}} \(here: "
        with pytest.raises(ClusterError, match=expected), dask_search(started.address):
            pass
        # a worker where the package does not even import is named, with what it said
        broken = tmp_path / "broken-checkout" / "mnist_lab"
        broken.mkdir(parents=True)
        (broken / "__init__.py").write_text("raise ImportError('half-installed mnist_lab')\n")
        started.add_workers(1, {"PYTHONPATH": str(broken.parent)})
        address = next(
            worker for worker, info in _scheduler_workers(started.address).items() if info["name"] == "w1"
        )
        cannot = (
            re.escape(
                f"1 of the 2 workers of the Dask cluster at {started.address} cannot import mnist_lab "
                f"({address}: "
            )
            + r".*ImportError.*half-installed mnist_lab"
        )  # Dask wraps what failed before the function ran
        with pytest.raises(ClusterError, match=cannot), dask_search(started.address):
            pass
    finally:
        started.stop()


def _scheduler_workers(address: str) -> dict:
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return client.scheduler_info()["workers"]


@pytest.mark.slow
def test_a_cnn_search_on_fresh_workers_equals_the_local_one(
    workspace: Path, dask_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A fresh worker's event loop draws from Python's `random` while the first fits build their networks:
    Keras seeded unseeded initializers from it, and those fits scored differently (core/cnn.py; with nanny
    workers, as the README starts them, before the fix: 1 run of 2 differed; after it 4 of 4 equal)."""
    cnn = {
        "type": "cnn",
        "filters": [4],
        "max_epochs": 2,
        "search": {"grid": {"dropout": [0.3, 0.5]}, "cv": 2},
    }
    params = {**SMALL_PARAMS, "models": {"cnn": cnn}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc_stage("prepare") == 0 and run_dvc_stage("featurize") == 0
    assert run_dvc_stage("train", "cnn") == 0
    local = _search_result(workspace / "reports" / "cnn" / "training.json")
    shutil.rmtree(workspace / "models" / "cnn")
    dask_cluster.add_workers(2, nanny=True)
    monkeypatch.setenv(CLUSTER_ENV, dask_cluster.address)
    assert run_dvc_stage("train", "cnn") == 0, capsys.readouterr().err
    assert f"on the Dask cluster at {dask_cluster.address}" in capsys.readouterr().err
    assert _search_result(workspace / "reports" / "cnn" / "training.json") == local


@pytest.mark.slow
def test_a_one_worker_cluster_runs_the_fits_there(dask_cluster: Cluster) -> None:
    """joblib takes a cluster of one thread in all for n_jobs 1, "run here, in order": the search ran on
    this machine, not on the worker, silently (the README's worker has one thread)."""
    from distributed import Client, get_task_stream

    from mnist_lab.core.models import train_classifier

    settings, x, y = _forty_fits()
    here = train_classifier(settings, x, y, seed=0, search_jobs=1)
    dask_cluster.add_workers(1)
    with Client(dask_cluster.address, timeout=30, set_as_default=False) as observer:
        with get_task_stream(observer) as stream, dask_search(dask_cluster.address):
            there = train_classifier(settings, x, y, seed=0)
        fits = [task for task in stream.data if "fit_and_score" in str(task["key"])]
    assert fits, "no fit ran on the worker"
    _assert_same_search(here, there)


@pytest.mark.slow
def test_a_task_left_without_any_worker_is_cancelled_not_awaited_forever(
    dask_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker gone before a task could start (here: killed before it is submitted; in a search, while
    the data is sent): the scheduler waits for a worker forever unless its own no-workers timeout is set,
    and the search with it. After NO_WORKERS_SECONDS without a worker the search's tasks are cancelled and
    it fails, naming the cluster."""
    monkeypatch.setattr(cluster, "NO_WORKERS_SECONDS", 2.0)
    dask_cluster.add_workers(1)
    outcome: list[BaseException | None] = []

    def search() -> None:
        try:
            with dask_search(dask_cluster.address) as client:
                os.killpg(dask_cluster.workers[0].pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while client.nthreads() and time.monotonic() < deadline:
                    time.sleep(0.1)
                client.submit(sum, [1, 2], pure=False).result()
            outcome.append(None)
        except BaseException as exc:  # what the search raised, checked below
            outcome.append(exc)

    searching = threading.Thread(target=search, daemon=True)
    searching.start()
    searching.join(timeout=60)
    assert not searching.is_alive(), "the search still waits for a worker"
    assert isinstance(outcome[0], ClusterError), outcome
    assert f"the grid search on the Dask cluster at {dask_cluster.address} lost every worker" in str(
        outcome[0]
    )
