"""Warm stage processes (system/warm.py) with real servers: a probe module run through the client, cold the
first time, then in a forked child of the server, must behave as `python -m probe` would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lab.system.warm import DIR_ENV, IDLE_ENV, WARM_ENV, WarmImports, server_key, stop_servers

PROBE = """
import json, os, sys
if "--sleep" in sys.argv:
    open(sys.argv[-1], "w").write(str(os.getpid()))
    try:
        import time; time.sleep(60)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(42)
stdin = sys.stdin.read()
print("to stderr", file=sys.stderr)
print(json.dumps({
    "argv": sys.argv[1:], "cwd": os.getcwd(), "variable": os.environ.get("PROBE_VARIABLE"),
    "umask": os.umask(0),
    "stdin": stdin, "pid": os.getpid(), "ppid": os.getppid(), "version": VERSION,
    "package_modules": sorted(m for m in sys.modules if m.split(".")[0] == "mnist_lab"),
    "path0": sys.path[0], "main": __name__,
}))
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""

CLIENT = (
    "import sys; from mnist_lab.system.warm import WarmImports, run_module; "
    "sys.exit(run_module('warmprobe', sys.argv[1:], WarmImports(modules=('json',))))"
)


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[dict]:
    """A private socket directory (short: socket paths are limited), a probe module, and the environment
    that runs it; every server started there is stopped afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="mlw-", dir="/tmp"))
    os.chmod(directory, 0o700)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "warmprobe.py").write_text("VERSION = 1\n" + PROBE, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, DIR_ENV: str(directory), "PYTHONPATH": str(modules), IDLE_ENV: "60"}
    env.pop(WARM_ENV, None)
    try:
        yield {"directory": directory, "modules": modules, "work": work, "env": env}
    finally:
        stop_servers(directory)
        shutil.rmtree(directory, ignore_errors=True)


def client(warm: dict, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLIENT, *args], cwd=warm["work"], env={**warm["env"], **env}, input=stdin,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def wait_for_server(directory: Path, count: int = 1, timeout_s: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sockets = sorted(directory.glob("*.sock"))
        if len(sockets) >= count:
            return sockets
        errors = list(directory.glob("*.error"))
        assert not errors, errors[0].read_text()
        time.sleep(0.05)
    raise AssertionError(f"no server in {directory} after {timeout_s} s: {os.listdir(directory)}")


def server_pid(socket_path: Path) -> int:
    return int(socket_path.with_suffix(".lock").read_text())


def probe_answer(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_run_is_cold_and_later_ones_are_children_of_the_server_in_the_callers_context(warm) -> None:
    cold = client(warm, "a", "b c", stdin="input", PROBE_VARIABLE="x", PROBE_EXIT="3")
    assert cold.returncode == 3, cold.stderr
    (socket_path,) = wait_for_server(warm["directory"])
    warm_run = client(warm, "a", "b c", stdin="input", PROBE_VARIABLE="x", PROBE_EXIT="3")
    assert warm_run.returncode == 3, warm_run.stderr
    first, second = probe_answer(cold), probe_answer(warm_run)
    assert second["ppid"] == server_pid(socket_path) != first["ppid"]
    assert warm_run.stderr == cold.stderr == "to stderr\n"
    for answer in (first, second):
        assert answer["argv"] == ["a", "b c"]
        assert answer["cwd"] == str(warm["work"])
        assert answer["variable"] == "x"
        assert answer["stdin"] == "input"
        assert answer["umask"] == first["umask"]
        assert answer["main"] == "__main__"
        assert answer["package_modules"] == []  # the server's own modules are not left in the stage
        assert answer["path0"] == str(warm["work"])  # as `python -m` sets it
    assert stat_mode(socket_path) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_python_found_through_a_relative_path_entry_starts_a_server(warm) -> None:
    """`PATH=.venv/bin:$PATH dvc repro` makes sys.executable relative; the server starts elsewhere."""
    (warm["work"] / "venv").symlink_to(Path(sys.executable).parent.parent)  # only from the caller's cwd
    env = {**warm["env"], "PATH": f"venv/bin{os.pathsep}{warm['env']['PATH']}"}
    run = lambda: subprocess.run(["python", "-c", CLIENT, "x"], cwd=warm["work"], env=env,  # noqa: E731
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
    first = run()
    assert first.returncode == 0, first.stderr
    (socket_path,) = wait_for_server(warm["directory"])
    assert probe_answer(run())["ppid"] == server_pid(socket_path)


def test_the_umask_and_environment_are_the_callers_of_each_run(warm) -> None:
    client(warm)
    wait_for_server(warm["directory"])
    answers = []
    for mask in (0o022, 0o077):
        done = subprocess.run(
            [sys.executable, "-c", f"import os; os.umask({mask}); exec({CLIENT!r})"], cwd=warm["work"],
            env={**warm["env"], "PROBE_VARIABLE": str(mask)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        answers.append(probe_answer(done))
    assert [(a["umask"], a["variable"]) for a in answers] == [(0o022, "18"), (0o077, "63")]


def test_an_edited_module_runs_as_edited_without_a_new_server(warm) -> None:
    client(warm)
    (socket_path,) = wait_for_server(warm["directory"])
    assert probe_answer(client(warm))["version"] == 1
    (warm["modules"] / "warmprobe.py").write_text("VERSION = 22\n" + PROBE, encoding="utf-8")
    answer = probe_answer(client(warm))
    assert answer["version"] == 22
    assert answer["ppid"] == server_pid(socket_path)


def sleeping_stage(warm: dict, **popen: object) -> tuple[subprocess.Popen, int, Path]:
    """A caller whose stage (the probe's `--sleep`) runs warm and waits; (caller, the stage's pid, socket)."""
    client(warm)
    (socket_path,) = wait_for_server(warm["directory"])
    pid_file = warm["work"] / "pid"
    caller = subprocess.Popen([sys.executable, "-c", CLIENT, "--sleep", str(pid_file)], cwd=warm["work"],
                              env=warm["env"], **popen)  # fmt: skip
    return caller, wait_for_pid(pid_file), socket_path


def test_an_interrupt_reaches_the_stage_and_its_exit_status_comes_back(warm) -> None:
    caller, stage, socket_path = sleeping_stage(warm, stdout=subprocess.PIPE, text=True)
    assert parent_of(stage) == server_pid(socket_path)
    caller.send_signal(signal.SIGINT)
    assert caller.wait(timeout=30) == 42
    assert caller.stdout.read() == "interrupted\n"


def test_a_stage_ended_by_a_signal_ends_its_caller_by_the_same_signal(warm) -> None:
    caller, stage, _ = sleeping_stage(warm)
    os.kill(stage, signal.SIGTERM)
    assert caller.wait(timeout=30) == -signal.SIGTERM


def test_a_caller_killed_outright_takes_its_stage_with_it(warm) -> None:
    caller, stage, _ = sleeping_stage(warm)
    caller.kill()
    caller.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process_exists(stage):
        time.sleep(0.05)
    assert not process_exists(stage)


def test_callers_run_at_the_same_time(warm) -> None:
    client(warm)
    (socket_path,) = wait_for_server(warm["directory"])
    callers = []
    for i in range(4):
        callers.append(subprocess.Popen([sys.executable, "-c", CLIENT, str(i)], cwd=warm["work"],
                                        env=warm["env"], stdout=subprocess.PIPE, text=True))  # fmt: skip
    answers = [json.loads(caller.communicate(timeout=60)[0]) for caller in callers]
    assert [a["argv"] for a in answers] == [["0"], ["1"], ["2"], ["3"]]
    assert {a["ppid"] for a in answers} == {server_pid(socket_path)}


def test_an_import_time_variable_gets_its_own_server_and_others_share_one(warm) -> None:
    imports = WarmImports(modules=("json",))
    client(warm)
    wait_for_server(warm["directory"])
    client(warm, UNRELATED_VARIABLE="1")  # read when called, not when imported: the same server
    time.sleep(0.5)
    assert len(list(warm["directory"].glob("*.sock"))) == 1
    client(warm, OMP_NUM_THREADS="1")
    wait_for_server(warm["directory"], count=2)
    assert server_key(imports) != key_with({"OMP_NUM_THREADS": "1"}, imports)


def key_with(env: dict, imports: WarmImports) -> str:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return server_key(imports)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_config_file_in_the_callers_directory_makes_it_run_cold(warm) -> None:
    code = CLIENT.replace("modules=", "config_files=('probe.rc',), modules=")
    run = lambda: subprocess.run([sys.executable, "-c", code], cwd=warm["work"], env=warm["env"],  # noqa: E731
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
    run()
    (socket_path,) = wait_for_server(warm["directory"])
    assert probe_answer(run())["ppid"] == server_pid(socket_path)
    (warm["work"] / "probe.rc").write_text("x")
    assert probe_answer(run())["ppid"] == os.getpid()


def test_turned_off_no_server_starts(warm) -> None:
    done = client(warm, **{WARM_ENV: "0"})
    assert done.returncode == 0 and probe_answer(done)["argv"] == []
    time.sleep(1)
    assert not list(warm["directory"].glob("*.sock")) and not list(warm["directory"].glob("*.lock"))


def test_a_directory_others_can_write_is_refused_with_a_warning_and_the_stage_runs_cold(warm) -> None:
    os.chmod(warm["directory"], 0o777)
    done = client(warm)
    assert done.returncode == 0 and probe_answer(done)["argv"] == []
    assert f"{warm['directory']} is not private to you" in done.stderr and DIR_ENV in done.stderr
    time.sleep(1)
    assert not list(warm["directory"].glob("*.lock"))


def test_a_server_that_cannot_import_says_why_once_and_stages_run_cold(warm) -> None:
    code = CLIENT.replace("('json',)", "('json', 'no_such_module_here')")
    run = lambda: subprocess.run([sys.executable, "-c", code], cwd=warm["work"], env=warm["env"],  # noqa: E731
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run().returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(warm["directory"].glob("*.error")):
        time.sleep(0.05)
    (error,) = warm["directory"].glob("*.error")
    assert "no_such_module_here" in error.read_text()
    done = run()
    assert done.returncode == 0 and probe_answer(done)["argv"] == []
    assert not list(warm["directory"].glob("*.sock"))


def test_an_idle_server_exits_and_removes_its_socket(warm) -> None:
    client(warm, **{IDLE_ENV: "1"})
    (socket_path,) = wait_for_server(warm["directory"])
    pid = server_pid(socket_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process_exists(pid):
        time.sleep(0.1)
    assert not process_exists(pid) and not socket_path.exists()
    assert client(warm).returncode == 0  # and the next caller runs (cold) and starts another
    wait_for_server(warm["directory"])


def test_a_server_gone_before_the_request_leaves_the_stage_to_run_cold(warm) -> None:
    client(warm)
    (socket_path,) = wait_for_server(warm["directory"])
    killed = server_pid(socket_path)
    os.kill(killed, signal.SIGKILL)  # its socket file stays behind
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process_exists(killed):
        time.sleep(0.05)
    assert socket_path.exists()
    done = client(warm)
    assert done.returncode == 0, done.stderr
    assert probe_answer(done)["ppid"] == os.getpid()  # cold: the caller's process became the stage
    wait_for_new_server(socket_path, killed)


def wait_for_new_server(socket_path: Path, old: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if server_pid(socket_path) != old and socket_path.exists():
                return
        except ValueError:
            pass
        time.sleep(0.05)
    raise AssertionError("no new server")


def wait_for_pid(path: Path, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"no pid in {path}")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def process_exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_probe_runs_the_same_without_the_warm_machinery(warm) -> None:
    """The baseline the tests above compare with: plain `python -m warmprobe`."""
    done = subprocess.run([sys.executable, "-m", "warmprobe", "a"], cwd=warm["work"], env=warm["env"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert probe_answer(done)["argv"] == ["a"] and done.stderr == "to stderr\n"


def test_an_interrupt_as_the_stage_starts_is_not_lost(warm) -> None:
    """The server read a forwarded Ctrl-C before its new child had made itself a process group (the signal
    went nowhere) or set its handlers (the server's took it): the stage ran to its end, exit 0, and DVC went
    on. Here the server is held (stopped) while the caller sends its request and is interrupted."""
    client(warm)
    (socket_path,) = wait_for_server(warm["directory"])
    server = server_pid(socket_path)
    pid_file = warm["work"] / "pid"
    os.kill(server, signal.SIGSTOP)
    try:
        caller = subprocess.Popen([sys.executable, "-c", CLIENT, "--sleep", str(pid_file)], cwd=warm["work"],
                                  env=warm["env"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(1.5)  # the request sent, the caller waiting for the answer with its handlers set
        caller.send_signal(signal.SIGINT)
        time.sleep(0.2)
    finally:
        os.kill(server, signal.SIGCONT)
    status = caller.wait(timeout=30)
    assert status in (42, -signal.SIGINT), (status, caller.stdout.read())  # interrupted, early or late


def test_a_signal_the_caller_ignores_is_ignored_by_its_stage(warm) -> None:
    """`nohup dvc repro &`: the caller ignores SIGHUP, so must its stage (a cold stage inherits SIG_IGN);
    warm, the hang-up was passed on and killed the stage mid-run at logout."""
    pid_file = warm["work"] / "pid"
    client(warm)
    wait_for_server(warm["directory"])
    ignoring = f"import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN); exec({CLIENT!r})"
    caller = subprocess.Popen([sys.executable, "-c", ignoring, "--sleep", str(pid_file)], cwd=warm["work"],
                              env=warm["env"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    stage = wait_for_pid(pid_file)
    caller.send_signal(signal.SIGHUP)
    os.killpg(stage, signal.SIGHUP)  # a logout hangs up the whole session: the stage's group too
    time.sleep(0.5)
    assert process_exists(stage) and caller.poll() is None
    caller.send_signal(signal.SIGINT)  # a signal it does not ignore still reaches the stage
    assert caller.wait(timeout=30) == 42


def test_a_connection_closed_before_its_request_leaves_the_server_serving(warm) -> None:
    """A caller killed between connecting and sending its request: the server died of it (struct.error),
    and every stage it ran was killed, another experiment's too."""
    import socket as sockets

    caller, stage, socket_path = sleeping_stage(warm, stdout=subprocess.PIPE, text=True)
    for _ in range(3):
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as bare:
            bare.connect(str(socket_path))
    time.sleep(0.5)
    assert process_exists(stage) and process_exists(server_pid(socket_path))
    caller.send_signal(signal.SIGINT)
    assert caller.wait(timeout=30) == 42
    assert probe_answer(client(warm))["ppid"] == server_pid(socket_path)  # the same server, still serving


def test_a_server_killed_outright_takes_its_stage_with_it(warm) -> None:
    """The server gone (OOM killer, kill -9) while a stage runs: the caller fails, and the stage no longer
    runs on, orphaned, beside the rerun the caller's message asks for."""
    caller, stage, socket_path = sleeping_stage(warm, stderr=subprocess.PIPE, text=True)
    os.kill(server_pid(socket_path), signal.SIGKILL)
    assert caller.wait(timeout=30) == 1
    assert "ended before the stage did, which was stopped" in caller.stderr.read()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process_exists(stage):
        time.sleep(0.05)
    assert not process_exists(stage)


def test_a_relative_pythonpath_is_the_callers(warm) -> None:
    """`PYTHONPATH=src dvc repro`: the server, started in its socket directory, read `src` from there, and
    warm stages imported the module from elsewhere (or not at all) while cold ones used the caller's."""
    relative = {**warm["env"], "PYTHONPATH": os.path.relpath(warm["modules"], warm["work"])}
    run = lambda: subprocess.run([sys.executable, "-c", CLIENT, "x"], cwd=warm["work"], env=relative,  # noqa: E731
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run().returncode == 0
    (socket_path,) = wait_for_server(warm["directory"])
    done = run()
    assert done.returncode == 0, done.stderr
    assert probe_answer(done)["ppid"] == server_pid(socket_path)
