"""Grid searches on a Dask cluster: when `.env` (or the environment) names a scheduler in CLUSTER_ENV, the
train stage's `GridSearchCV` sends its candidates' fits to the cluster's workers through joblib's `dask`
backend; without it they run on this machine, as before.

Dask rather than Ray: joblib's backend runs scikit-learn's own `GridSearchCV` unchanged (the same folds,
the same fits, so the same scores and best candidate), and `distributed` is a small pure-Python install
(Ray is a large binary one). The workers run the repository's environment (`requirements.lock` and this
package) and should be started with one BLAS thread (README, "Grid searches on a Dask cluster"); each fit
limits BLAS to one thread itself, so scores do not depend on the workers' core counts.

A worker lost mid-search has its fits rerun by the scheduler on the others; a search that cannot finish
(no worker left, a fit that killed its workers three times) fails with a ClusterError naming the
scheduler, before anything is written or logged. Workers whose code or fitting libraries differ from this
machine's (a stale checkout, another environment) are refused before the search: their scores would differ."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from mnist_lab.core.errors import MnistLabError

CLUSTER_ENV = "MNIST_LAB_DASK_SCHEDULER"
CONNECT_SECONDS = 10.0  # to reach the scheduler
WORKERS_SECONDS = 30.0  # for at least one worker to be there
NO_WORKERS_SECONDS = 30.0  # with every worker lost, then the search fails
_ADDRESS = re.compile(r"(tcp|tls|ws|wss)://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):\d{1,5}|inproc://[^\s/]+")
# what a worker must have as this machine does for its fits to be this machine's: the package's code, and the
# libraries the fits run
FIT_LIBRARIES = ("numpy", "scipy", "scikit-learn", "joblib", "keras", "jax", "jaxlib")


class ClusterError(MnistLabError):
    """The cluster named in CLUSTER_ENV cannot run the search; the message says what to do."""


def cluster_address(environ: Mapping[str, str]) -> str | None:
    """The scheduler address the environment names (None: search on this machine), checked for form."""
    address = environ.get(CLUSTER_ENV, "").strip()
    if not address:
        return None
    if not _ADDRESS.fullmatch(address):
        raise ClusterError(
            f"{CLUSTER_ENV}={address!r} is not a Dask scheduler address: write it as tcp://<host>:<port> "
            "(`dask scheduler` prints it; 8786 is its default port), or remove the line to search here"
        )
    return address


def code_fingerprint() -> dict[str, str]:
    """What the fits run where this runs (sent to each worker, to compare with this machine): a hash of this
    package's source files (an editable install's version never changes when its code does), the versions
    of FIT_LIBRARIES and the BLAS kernels (which round differently per CPU family)."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    found = {"mnist_lab source": digest.hexdigest()[:12]}
    import numpy  # noqa: F401 - its BLAS, loaded, is what threadpoolctl reports
    from threadpoolctl import threadpool_info

    kernels = {
        f"{lib['internal_api']} {lib['architecture']}" for lib in threadpool_info() if lib.get("architecture")
    }
    found["BLAS kernels"] = (
        ", ".join(sorted(kernels)) or "unknown"
    )  # OPENBLAS_CORETYPE: see mnist_lab/__init__
    for library in FIT_LIBRARIES:
        try:
            found[library] = version(library)
        except PackageNotFoundError:
            found[library] = "not installed"
    return found


@contextmanager
def dask_search(address: str) -> Iterator[Any]:
    """Inside: joblib runs on the Dask cluster at `address` (all its workers), and any way the cluster fails
    the search becomes a ClusterError. Checks first that the scheduler answers, that it has workers and that
    every worker has this package at this version."""
    import joblib

    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ClusterError(f"{CLUSTER_ENV} is set but `distributed` is not installed: `make venv`") from None
    try:
        client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"{CLUSTER_ENV}={address}: no Dask scheduler answers there ({_reason(exc)}): start one "
            f"(`dask scheduler`) and its workers (`dask worker {address}`), or remove {CLUSTER_ENV} from "
            ".env to search on this machine"
        ) from None
    # Dask's client (and tornado under it) log a lost scheduler as errors with tracebacks (~30 lines), also
    # while the client closes after: the ClusterError below says it in one line
    noisy = [logging.getLogger(name) for name in ("distributed.client", "tornado.application")]
    levels = [log.level for log in noisy]
    workerless = threading.Event()
    try:
        _check_workers(client, address)
        for log in noisy:
            log.setLevel(logging.CRITICAL)
        with (
            _replicas_kept(client),
            _watched_for_workers(client, workerless),
            joblib.parallel_config(backend="dask", n_jobs=-1, client=_ReplicatingClient(client)),
        ):
            yield client
    except ClusterError:
        raise
    except Exception as exc:
        if not _from_the_cluster(exc, client):
            raise
        if "scheduler-connection-lost" in str(exc) or client.status in ("closed", "closing"):
            what = f"lost its connection to the scheduler ({_reason(exc)}). Check the scheduler at {address}"
        elif workerless.is_set() or _no_workers(client):
            # the data the fits share was on the workers alone: Dask says "already forgotten"
            what = f"lost every worker ({_reason(exc)}). Check the workers (`dask worker` logs)"
        else:
            what = f"failed: {_reason(exc)}. Check the workers (`dask worker` logs)"
        raise ClusterError(
            f"the grid search on the Dask cluster at {address} {what}; nothing was written or logged. Run "
            "the stage again once the cluster is back"
        ) from exc
    finally:
        with suppress(Exception):  # a scheduler gone: nothing to close but this side
            client.close()
        for log, level in zip(noisy, levels, strict=True):
            log.setLevel(level)


@contextmanager
def _watched_for_workers(client: Any, workerless: threading.Event) -> Iterator[None]:
    """Inside: a thread asks the scheduler every second how many workers it has; after NO_WORKERS_SECONDS
    with none, it sets `workerless` and cancels this client's tasks, so that the search fails (a scheduler
    waits for new workers forever unless its own `no-workers-timeout` is set, and the search with it,
    silently)."""
    done = threading.Event()

    def watch() -> None:
        since = None
        while not done.wait(1.0):
            try:
                count = len(client.nthreads())
            except Exception:  # the scheduler lost (the search fails on its own, saying so), or a hiccup
                continue
            if count:
                since = None
                continue
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= NO_WORKERS_SECONDS:
                workerless.set()
                from distributed import Future

                try:
                    client.cancel([Future(key, client) for key in client.futures.copy()], force=True)
                except Exception:  # tried again in a second: giving up here would leave the search waiting
                    continue
                return

    watcher = threading.Thread(target=watch, name="mnist-lab-dask-workers", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=5)


@contextmanager
def _replicas_kept(client: Any) -> Iterator[None]:
    """Dask's Active Memory Manager (on by default, every 2 s) drops the copies of data it finds surplus:
    the fits' scattered arrays, sent to every worker (`_ReplicatingClient`), were back on one worker
    within seconds, and a worker lost then took the only copy with it ("already forgotten": the search
    failed instead of rerunning its fits on the workers left). It is paused for the search, if it runs,
    and started again after. It is the scheduler's: other work on the cluster keeps its surplus copies
    meanwhile."""
    try:
        running = bool(client.amm.running())
    except Exception:  # a scheduler without it (an older distributed, or turned off in its config)
        running = False
    if running:
        client.amm.stop()
    try:
        yield
    finally:
        if running:
            with suppress(Exception):  # the scheduler may be gone: nothing to restart
                client.amm.start()


class _ReplicatingClient:
    """The Dask client as joblib's backend sees it, but scattering every large argument of the fits (the
    images, the folds' indices) to all the workers rather than one. joblib scatters each to a single worker:
    a worker killed holding the only copy made the scheduler forget the data, and every fit that needed it
    was cancelled ("already forgotten") instead of rerun on the workers left.

    Not with `broadcast=True`: the scheduler's replicate step retries a worker lost mid-copy forever
    (dask/distributed#5704), and joblib awaits the scatter in a callback whose exception is only logged, so
    its batch never returned: the search hung, silently, whenever a worker died while the data was being
    sent. `_scatter_everywhere` sends one copy per worker instead and never raises."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def scatter(self, data: Any, **options: Any) -> Any:
        if isinstance(data, list | tuple | dict):  # a batch (joblib's `scatter=`, unused here): as it was
            return self._client.scatter(data, **{**options, "broadcast": True})
        asynchronous = options.get("asynchronous")  # joblib: True, from the client's event loop
        return self._client.sync(_scatter_everywhere, self._client, data, asynchronous=asynchronous)

    def ncores(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        """The workers' threads, as joblib counts them for its n_jobs; for a cluster of one thread in all,
        two: joblib takes n_jobs 1 for "run here, in order", and a search on a one-worker cluster ran on
        this machine instead, silently. The second batch waits on the scheduler for the first."""
        cores = dict(self._client.ncores(*args, **kwargs))
        if sum(cores.values()) == 1:
            cores = {worker: 2 for worker in cores}
        return cores

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def _scatter_everywhere(client: Any, data: Any) -> Any:
    """`data` sent to every running worker, one scatter each under one key (the scheduler counts each
    arrival as another copy): a worker lost meanwhile costs its own copy, never the others' nor the search.
    If no copy arrived, a future of a task that fails with an OSError (the search's ClusterError then names
    the scheduler), never an exception joblib would drop."""
    import asyncio
    import uuid

    key = f"{type(data).__name__}-{uuid.uuid4().hex}"
    try:
        workers = sorted(await client.scheduler.ncores_running())
        sent: list[Any] = list(
            await asyncio.gather(
                *(client.scatter({key: data}, workers=[worker], asynchronous=True) for worker in workers),
                return_exceptions=True,
            )
        )
    except Exception as exc:  # the scheduler lost: the fits fail the same way, with its reason
        sent = [exc]
    copies = [one[key] for one in sent if not isinstance(one, BaseException)]
    if copies:
        return copies[0]
    reason = "; ".join(_reason(exc) for exc in sent if isinstance(exc, BaseException)) or "no running worker"
    return client.submit(_not_sent, f"the fits' data could not be sent to any worker ({reason})", pure=False)


class DataNotSent(OSError):
    """The fits' data reached no worker (raised on a worker, by the task `_scatter_everywhere` leaves)."""


def _not_sent(message: str) -> None:
    raise DataNotSent(message)


def _check_workers(client: Any, address: str) -> None:
    try:
        client.wait_for_workers(1, timeout=WORKERS_SECONDS)
    except TimeoutError:
        raise ClusterError(
            f"the Dask scheduler at {address} has no workers after {WORKERS_SECONDS:.0f} s: start some "
            f"(`dask worker {address} --nthreads 1`)"
        ) from None
    mine = code_fingerprint()
    # a worker without the package cannot even unpickle the function: its exception comes back, by worker
    theirs = client.run(code_fingerprint, on_error="return")
    broken = {worker: exc for worker, exc in theirs.items() if isinstance(exc, BaseException)}
    if broken:
        named = "; ".join(f"{worker}: {_reason(exc)}" for worker, exc in sorted(broken.items())[:4])
        # what failed before the function ran comes back wrapped: "Exception: ImportError(...)"
        imports = all("Import" in _reason(exc) or "ModuleNotFound" in _reason(exc) for exc in broken.values())
        failed = "cannot import mnist_lab" if imports else "could not run this package's check"
        raise ClusterError(
            f"{len(broken)} of the {len(theirs)} workers of the Dask cluster at {address} {failed} "
            f"({named}): run the workers in this repository's environment (`pip install -r "
            "requirements.lock`, `pip install .`)"
        )
    differences = [
        f"{worker} has {what} {found.get(what)} (here: {mine[what]})"
        for worker, found in sorted(theirs.items())
        for what in mine
        if found.get(what) != mine[what]
    ]
    if differences:
        blas = any(" has BLAS kernels " in difference for difference in differences)
        raise ClusterError(
            f"the Dask workers at {address} must run this machine's code and libraries, or their fits are "
            f"not this machine's: {'; '.join(differences[:6])}. Restart them from this checkout, in its "
            "environment (`make venv`)"
            + (
                ", with OPENBLAS_CORETYPE=Haswell (a worker loads numpy before this package pins it)"
                if blas
                else ""
            )
        )


def _no_workers(client: Any) -> bool:
    try:
        return not client.nthreads()
    except Exception:  # the scheduler lost too: said as that
        return False


def _from_the_cluster(exc: BaseException, client: Any) -> bool:
    """Whether `exc` is the cluster's failure (a lost worker or scheduler, a cancelled fit, data sent to no
    worker) rather than an error of the fit itself or of this machine's code (raised as it is, as on this
    machine). Dask raises plain OSError and TimeoutError for lost connections, and so do fits (a missing
    file): those are the cluster's only while the scheduler is gone or has no workers."""
    from concurrent.futures import CancelledError

    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker | CommClosedError | CancelledError | FutureCancelledError | DataNotSent):
        return True
    if isinstance(exc, OSError | TimeoutError):
        try:  # the scheduler gone, or without workers: the cluster's
            return client.status != "running" or not client.nthreads()
        except Exception:
            return True
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
