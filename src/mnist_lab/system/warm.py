"""Stages that start warm: one long-lived process imports the heavy libraries (scikit-learn, pandas, MLflow)
once, and forks a fresh child for each stage command. The child imports this package fresh from disk and runs
the stage as `python -m <module>` would: the caller's stdin/stdout/stderr (passed over a Unix socket),
working directory, environment, umask and arguments; its exit status (or the signal that ended it) becomes
the caller's. A stage that imports scikit-learn then starts in tens of milliseconds instead of ~1.5 s.

Why it cannot change a result: a fork copies a process that has only *imported* third-party modules (never
this package's: each child imports them anew, so an edit takes effect at the next run, as `dvc.yaml`'s deps
expect), the stages seed every random generator they use, and every import-time input is part of the server's
key: the interpreter, its flags, each `sys.path` entry and its modification time (installing or upgrading a
package changes it), this file, the preloaded modules' names and the environment variables libraries read when
imported (IMPORT_TIME_ENV). A caller whose key differs gets (or starts) its own server. The test suite runs
the pipeline warm and cold and compares every output.

The first stage of a session runs cold and starts the server in the background for the next ones; a server
exits after IDLE_ENV seconds without work (default 15 minutes). `MNIST_LAB_WARM_STAGES=0` turns it all off.
Without fork, Unix sockets or pidfds (not Linux), every stage runs cold, as before."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WARM_ENV = "MNIST_LAB_WARM_STAGES"  # "0": every stage starts cold
DIR_ENV = "MNIST_LAB_WARM_DIR"  # where servers keep their sockets (default: private_directory())
IDLE_ENV = "MNIST_LAB_WARM_IDLE_S"
# the longest directory for servers' sockets: a Unix socket's path is at most 107 bytes, with the name
MAX_DIRECTORY_BYTES = 80
DEFAULT_IDLE_S = 900.0
MODULE = __spec__.name if __spec__ else __name__  # also when run as `python -m` (the server), not "__main__"
PACKAGE = MODULE.partition(".")[0]
# Environment variables that libraries read when they are imported rather than when called: BLAS and OpenMP
# thread pools, Python's own, locale and time zone, matplotlib's, the deep-learning backends', the dagshub
# package's configuration. A server serves only callers whose values are the same as its own. (MLflow reads
# its variables when called, except a testing flag; checked in mlflow 3's source.)
IMPORT_TIME_ENV = (
    "PYTHON", "OMP_", "OPENBLAS_", "MKL_", "BLIS_", "GOTO", "NUMEXPR_", "VECLIB_", "NUMPY_", "SCIPY_",
    "SKLEARN_", "PANDAS_", "MLFLOW_TESTING", "SQLALCHEMY", "MPL", "LD_", "LC_", "LANG", "TZ", "KERAS_",
    "JAX_", "XLA_", "CUDA_", "TF_", "DAGSHUB_", "JOBLIB_", "LOKY_", "MATPLOTLIB", "XDG_CONFIG", "HOME",
)  # fmt: skip
_HEADER = struct.Struct("!I")
_STD_FDS = (0, 1, 2)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # passed on to the stage


class WarmError(Exception):
    """The warm server cannot serve this request (the caller runs the stage cold instead)."""


# ---------------------------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class WarmImports:
    """What a warm server imports, and what those imports read besides the environment."""

    modules: tuple[str, ...]
    # set for the server's imports where the caller leaves them unset (the stage then sets the same itself)
    environment: Mapping[str, str] = field(default_factory=dict)
    # files the modules read when imported ('~' expanded): part of the server's key; a relative one is looked
    # for in the caller's directory, and a caller that has it runs cold
    config_files: tuple[str, ...] = ()


def run_module(module: str, argv: Sequence[str], imports: WarmImports) -> int:
    """Run `python -m module *argv`: in a warm server's fresh child when one is up, else in this process
    (which then becomes the stage, by exec) after starting a server in the background for the next run.

    Returns the stage's exit status; a stage ended by a signal ends this process by the same signal."""
    directory = None if os.environ.get(WARM_ENV, "1") == "0" else usable_directory()
    local_config = [name for name in imports.config_files if not Path(name).expanduser().is_absolute()]
    if directory is not None and supported() and not any(Path(name).exists() for name in local_config):
        key = server_key(imports)
        try:
            status = request_run(directory / f"{key}.sock", module, argv)
        except WarmError:
            try:
                start_server(directory, key, imports)
            except OSError as exc:  # never a reason for the stage itself to fail
                _warn(f"could not start a warm server ({exc})")
        else:
            if status < 0:  # ended by a signal: end the same way, as the stage's own process would have
                signal.signal(-status, signal.SIG_DFL)
                os.kill(os.getpid(), -status)
            return status
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *_interpreter_options(), "-m", module, *argv])
    raise AssertionError("unreachable")  # pragma: no cover


def supported() -> bool:
    return all(hasattr(os, name) for name in ("fork", "pidfd_open", "waitstatus_to_exitcode")) and hasattr(
        socket, "send_fds"
    )


def private_directory() -> Path:
    """Where this user's servers keep their sockets: $XDG_RUNTIME_DIR (private by design) or the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / PACKAGE
    return Path(tempfile.gettempdir()) / f"{PACKAGE}-{os.getuid()}"


def usable_directory() -> Path | None:
    """The socket directory, created private (0700); None, with a warning, when it is someone else's or
    others can write it (a socket there could run code as you) or its paths are too long for a socket."""
    directory = Path(os.environ.get(DIR_ENV) or private_directory())
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        _warn(f"cannot use {directory} ({exc.strerror})")
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        _warn(f"{directory} is not private to you (owner uid {info.st_uid}, mode {info.st_mode & 0o777:o}); "
              f"remove it, or point {DIR_ENV} at a directory only you can use")  # fmt: skip
        return None
    if len(os.fsencode(directory)) > MAX_DIRECTORY_BYTES:
        _warn(f"{directory} is too long a path for a socket; point {DIR_ENV} at a shorter one")
        return None
    return directory


def _warn(message: str) -> None:
    print(f"warning: stages start cold: {message} (or set {WARM_ENV}=0 to silence this)", file=sys.stderr)


def server_key(imports: WarmImports) -> str:
    """What a server's imports depend on, hashed: callers with the same key may share a server."""
    parts: list[Any] = [os.path.abspath(sys.executable), sys.version, tuple(sys.flags)]
    parts.append(sorted(sys._xoptions.items()))
    parts += [imports.modules, sorted(imports.environment.items())]
    parts.append(hashlib.sha256(Path(__file__).read_bytes()).hexdigest())
    for entry in [*sys.path[1:], *(os.path.expanduser(name) for name in imports.config_files)]:
        with contextlib.suppress(OSError):  # sys.path[0] is the caller's directory, set per run
            info = os.stat(entry)
            parts.append((entry, info.st_mtime_ns, info.st_size))
    parts.extend(sorted((k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV)))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def _interpreter_options() -> list[str]:
    options = [name if value is True else f"{name}={value}" for name, value in sys._xoptions.items()]
    return [arg for option in options for arg in ("-X", option)]


def request_run(path: Path, module: str, argv: Sequence[str]) -> int:
    """Have the server at `path` run the module on this process's stdin/stdout/stderr; its exit status.
    WarmError when no server answers there (nothing ran). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this
    process while the stage runs are passed on to it, but for those this process ignores (`nohup`, `cmd &`
    in a script), which the stage ignores too, as a stage in its own process would. Should the server die
    while the stage runs, the stage is killed (it would run on, unseen, beside a rerun)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(os.fspath(path))
    except OSError as exc:
        connection.close()
        raise WarmError(f"no server at {path}: {exc}") from exc
    with connection:
        std = [fd for fd in _STD_FDS if _is_open(fd)]
        handlers = {sig: signal.getsignal(sig) for sig in _FORWARDED}
        ignored = [int(sig) for sig, handler in handlers.items() if handler == signal.SIG_IGN]
        request = {
            "module": module,
            "argv": list(argv),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _current_umask(),
            "std": std,
            "ignored": ignored,
        }
        payload = json.dumps(request).encode()
        try:
            socket.send_fds(connection, [_HEADER.pack(len(payload)) + payload], std)
        except OSError as exc:
            raise WarmError(f"the server at {path} did not take the request: {exc}") from exc
        forwarded = {sig: handler for sig, handler in handlers.items() if handler != signal.SIG_IGN}

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(OSError):
                connection.sendall(json.dumps({"signal": signum}).encode() + b"\n")

        for sig in forwarded:
            signal.signal(sig, forward)
        try:
            started = _read_line(connection)
            if started is None:  # the server went away before it forked: nothing ran
                raise WarmError(f"the server at {path} closed the connection")
            reply = _read_line(connection)
        finally:
            for sig, handler in forwarded.items():
                signal.signal(sig, handler)
    if reply is None:
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):  # its own process group
            os.killpg(int(json.loads(started)["started"]), signal.SIGKILL)
        print(
            f"error: the warm stage server ({path.name}) ended before the stage did, which was stopped; run "
            f"it again, or set {WARM_ENV}=0 to run stages in their own processes",
            file=sys.stderr,
        )
        return 1
    return int(json.loads(reply)["exit"])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_line(connection: socket.socket) -> bytes | None:
    """One newline-ended message, read a byte at a time (the next one is left on the socket); None at EOF."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = connection.recv(1)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def start_server(directory: Path, key: str, imports: WarmImports) -> None:
    """Start a server for `key` in the background, unless one is running or starting, or one failed to
    preload (its `.error` file says why; a new key, e.g. after fixing the environment, tries again)."""
    if (directory / f"{key}.error").exists() or _locked(directory / f"{key}.lock"):
        return
    # absolute: `python` found through a relative PATH entry (PATH=.venv/bin:...) has a relative
    # sys.executable, and the server starts in the socket directory
    executable = os.path.abspath(sys.executable)
    command = [executable, "-P", *_interpreter_options(), "-m", MODULE, "serve", str(directory), key]
    environment = {**imports.environment, **os.environ}  # the caller's values win
    if environment.get("PYTHONPATH"):  # relative entries are the caller's: the server starts elsewhere
        entries = environment["PYTHONPATH"].split(os.pathsep)
        environment["PYTHONPATH"] = os.pathsep.join(os.path.abspath(entry) for entry in entries if entry)
    with open(directory / f"{key}.log", "ab") as log:
        subprocess.Popen(
            [*command, *imports.modules], cwd=directory, env=environment, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip


def _locked(path: Path) -> bool:
    try:
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def stop_servers(directory: Path, timeout_s: float = 10.0) -> list[int]:
    """SIGTERM every server with a socket in `directory` and wait for each to exit; their pids."""
    pids = []
    for lock in directory.glob("*.lock"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(lock.read_text().strip() or 0)
            if pid and _locked(lock):
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped by its parent) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state != "Z"
    return True


# ---------------------------------------------------------------------------------------------- the server


def serve(directory: Path, key: str, preload: Sequence[str], idle_s: float) -> int:
    """The server: take the key's lock (or leave: another has it), import `preload`, then fork a child per
    request until `idle_s` pass without one. A child ended by a caller that went away is killed."""
    lock = open(directory / f"{key}.lock", "a+")  # noqa: SIM115 (held for the server's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    try:
        import importlib

        for name in preload:
            importlib.import_module(name)
    except BaseException as exc:  # any failure: recorded, callers go on cold
        (directory / f"{key}.error").write_text(f"importing {name}: {exc!r}\n", encoding="utf-8")
        return 1
    path = directory / f"{key}.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a server that died: the lock says none runs
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(path))
    os.chmod(path, 0o600)
    inode = path.stat().st_ino  # to remove only our own socket file (a later server may have made another)
    listener.listen(64)
    print(
        f"{time.strftime('%F %T')} serving {key} (pid {os.getpid()}), preloaded {len(preload)} modules",
        flush=True,
    )
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, ("listener", None))
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the caller's connection)
    last_work = time.monotonic()
    try:
        while not stopping:
            if not children and time.monotonic() - last_work > idle_s and not selector.select(timeout=0):
                break
            for selected, _ in selector.select(timeout=1.0):
                if selector.get_map().get(selected.fd) is not selected:  # unregistered by an earlier event
                    continue  # of this batch (its stage ended, its caller went)
                kind, value = selected.data
                if kind == "listener":
                    _accept(listener, selector, children, lock)
                elif kind == "child":
                    pid, connection = children.pop(selected.fd)
                    selector.unregister(selected.fileobj)
                    _, status = os.waitpid(pid, 0)
                    os.close(selected.fd)
                    with contextlib.suppress(OSError):
                        connection.sendall(
                            json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n"
                        )
                    with contextlib.suppress(KeyError):
                        selector.unregister(connection)
                    connection.close()
                    last_work = time.monotonic()
                else:
                    _caller_message(selected.fileobj, value, selector)  # type: ignore[arg-type]
    finally:
        for pid, _ in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == inode:
                path.unlink()
        listener.close()
        print(f"{time.strftime('%F %T')} stopped {key}", flush=True)
    return 0


def _accept(listener: socket.socket, selector: selectors.BaseSelector, children: dict, lock: Any) -> None:
    connection, _ = listener.accept()
    try:
        request, fds = _receive_request(connection)
    except Exception as exc:  # a caller gone mid-request, a stranger: this server goes on for the others
        print(f"{time.strftime('%F %T')} refused a request: {type(exc).__name__}: {exc}", flush=True)
        connection.close()
        return
    sys.stdout.flush()
    # The child is its own process group, which a signal the caller forwards is sent to, from the moment
    # the server reads the caller's messages: set here as well as in the child (whichever runs first). The
    # signals stay blocked in the child until its handlers are set, so an interrupt that comes at once
    # is delivered then, not lost or taken by the server's own handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        raise
    if pid == 0:  # the child: never returns
        keep = set(fds)
        for fileobj in [listener, lock, *(key.fileobj for key in selector.get_map().values())]:
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        os.close(connection.fileno())
        _run_child(request, fds)
    with contextlib.suppress(OSError):  # the child has made itself a group already
        os.setpgid(pid, pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # the caller may have gone: the child is then killed below
        connection.sendall(json.dumps({"started": pid}).encode() + b"\n")
    pidfd = os.pidfd_open(pid)
    children[pidfd] = (pid, connection)
    selector.register(pidfd, selectors.EVENT_READ, ("child", pid))
    selector.register(connection, selectors.EVENT_READ, ("caller", pid))


def _receive_request(connection: socket.socket) -> tuple[dict, list[int]]:
    connection.settimeout(10)
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, len(_STD_FDS))
    try:
        if uid != os.getuid():
            raise ValueError(f"caller uid {uid} is not this server's")
        if len(data) < _HEADER.size:
            raise ValueError("connection closed before its request")
        (length,) = _HEADER.unpack(data[: _HEADER.size])
        body = data[_HEADER.size :]
        while len(body) < length:
            chunk = connection.recv(length - len(body))
            if not chunk:
                raise ValueError("request cut short")
            body += chunk
        request = json.loads(body)
        if len(fds) != len(request["std"]):
            raise ValueError("request without its file descriptors")
    except BaseException:
        for fd in fds:  # the caller's stdout and stderr: held, its pipes would never end
            os.close(fd)
        raise
    connection.settimeout(None)
    return request, fds


def _caller_message(connection: socket.socket, pid: int, selector: selectors.BaseSelector) -> None:
    """A signal the caller passes on, or the caller gone (killed): then its stage is killed too."""
    try:
        data = connection.recv(4096)
    except OSError:
        data = b""
    if not data:
        selector.unregister(connection)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return
    for line in data.splitlines():
        with contextlib.suppress(ValueError, KeyError, ProcessLookupError):
            os.killpg(pid, int(json.loads(line)["signal"]))


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the caller's stage process, run the module, exit with its status."""
    import atexit
    import runpy
    import traceback

    code = 1
    try:
        with contextlib.suppress(OSError):  # the server may have made it so already
            os.setpgid(0, 0)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):  # not the server's (its first caller's)
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in request.get("ignored", []):  # as the caller: a stage started by `nohup` ignores SIGHUP
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)  # a signal forwarded meanwhile: now
        for target, fd in zip(request["std"], fds, strict=True):
            os.dup2(fd, target)
            if fd != target:
                os.close(fd)
        for target in set(_STD_FDS) - set(request["std"]):
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, target)
            os.close(null)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        sys.path.insert(0, request["cwd"])  # what `python -m` puts first
        _fresh_standard_streams()
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]  # this package is imported anew from disk
        import importlib

        importlib.invalidate_caches()
        sys.argv = [request["module"], *request["argv"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as Python does: end by the signal that interrupted
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # as Python: print it, exit 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _fresh_standard_streams() -> None:
    """sys.stdin/stdout/stderr over the caller's descriptors, buffered as Python buffers them at start-up
    (line-buffered on a terminal and always for stderr)."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    stdin = open(0, encoding=encoding, closefd=False)  # noqa: SIM115 (the process's own, never closed)
    stdout = open(1, "w", encoding=encoding, closefd=False)  # noqa: SIM115
    stderr = open(2, "w", encoding=encoding, errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
    if os.environ.get("PYTHONUNBUFFERED"):
        stdout.reconfigure(write_through=True)
        stderr.reconfigure(write_through=True)
    for name, stream in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)  # what faulthandler and friends write to


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def main(argv: Sequence[str]) -> int:
    """`python -m mnist_lab.system.warm serve DIRECTORY KEY MODULE...` (started by start_server)."""
    if len(argv) < 3 or argv[0] != "serve":
        print("usage: python -m mnist_lab.system.warm serve DIRECTORY KEY [MODULE...]", file=sys.stderr)
        return 2
    idle_s = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_S)
    return serve(Path(argv[1]), argv[2], argv[3:], idle_s)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
