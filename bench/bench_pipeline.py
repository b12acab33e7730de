"""Where the default pipeline's time goes: each stage's own compute versus its whole process, and DVC's cost,
with stages started cold (each its own Python process) and warm (forked from a server that has imported the
libraries, src/mnist_lab/system/warm.py), alternated in the same run.

Runs in a throw-away copy of the repository (tracked files, a fresh git repository, the default digits
regenerated and checked against data.dvc) with MLflow pointed at a sqlite store inside the copy. One
warm-up `dvc repro -f` creates and migrates that store first, so no timing pays MLflow's migrations, and
the warm server is started and waited for before any warm timing.

Per repetition (median of --repeats), in each mode (cold: MNIST_LAB_WARM_STAGES=0):
  * every stage command (from `dvc repro -f --dry`, in order) run on its own and timed: wall time, and the
    stage's own compute time and body time from MNIST_LAB_TIMINGS (src/mnist_lab/stages/common.py);
  * `dvc repro -f` of the whole pipeline;
  * a one-model change, `dvc exp run -S models.sgd.alpha=<new value>`, against the compute of the stages
    it reruns.
Once per repetition, the cold overhead broken out: Python start-up (`python -c pass`), the stage module's
imports and the lazy imports in its body, each timed in a fresh process. Then `dvc --version`,
`dvc status` and a no-op `dvc repro`, median of --noop-repeats.

    python bench/bench_pipeline.py [--repeats 3] [--noop-repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    BIN_DIR,
    TIMINGS_ENV,
    Workspace,
    environment,
    environment_line,
    fmt,
    import_seconds,
    importtime_by_package,
    log,
    make_workspace,
    markdown_table,
    median,
    ratio,
    read_jsonl,
    stage_commands,
    write_json,
)
from mnist_lab.system.warm import DIR_ENV as WARM_DIR_ENV
from mnist_lab.system.warm import WARM_ENV, stop_servers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import start_warm_server

# Imports a stage makes inside its body, after its module's own: (prelude already imported, the import).
LAZY_IMPORTS = {
    "evaluate": (
        "import mnist_lab.stages.evaluate, mnist_lab.tracking, pandas, sklearn.pipeline",
        "import mlflow, mlflow.sklearn, mlflow.entities, mlflow.models",
    ),
    "select": ("import mnist_lab.stages.select", "from dagshub.logger import DAGsHubLogger"),
}


def stage_module(stage: str) -> str:
    """`train@sgd` -> `train`."""
    return stage.split("@")[0]


MODES = {"cold": {WARM_ENV: "0"}, "warm": {WARM_ENV: "1"}}


def one_repetition(
    workspace: Workspace, commands: list[tuple[str, str]], index: int, server: int
) -> dict[str, Any]:
    """Both modes (in alternating order), then the cold import costs."""
    order = list(MODES) if index % 2 == 0 else list(reversed(MODES))
    result: dict[str, Any] = {"modes": {}}
    for position, mode in enumerate(order):
        result["modes"][mode] = one_mode(
            workspace, commands, f"{mode}-{index}", 2 * index + position + 1, server
        )
    python = str(BIN_DIR / "python")
    result["python_startup_s"] = workspace.run([python, "-c", "pass"]).wall_s
    modules = sorted({stage_module(stage) for stage, _ in commands})
    result["module_import_s"] = {
        module: import_seconds(f"import mnist_lab.stages.{module}", workspace.root, workspace.env)
        for module in modules
    }
    result["lazy_import_s"] = {
        module: import_seconds(statement, workspace.root, workspace.env, prelude=prelude)
        for module, (prelude, statement) in LAZY_IMPORTS.items()
        if module in modules
    }
    return result


def one_mode(
    workspace: Workspace, commands: list[tuple[str, str]], label: str, change: int, server: int
) -> dict[str, Any]:
    """Every stage on its own, `dvc repro -f`, and a one-model `dvc exp run -S`, in one mode."""
    mode = MODES[label.split("-")[0]]
    timings = workspace.scratch / f"standalone-{label}.jsonl"
    walls = {}
    for stage, command in commands:
        done = workspace.run(command, DVC_ROOT=str(workspace.root), **mode, **{TIMINGS_ENV: str(timings)})
        walls[stage] = done.wall_s
    inside = {record["stage"]: record for record in read_jsonl(timings)}
    standalone = {
        stage: {
            "wall_s": walls[stage],
            "compute_s": inside[stage]["compute_s"],
            "body_s": inside[stage]["body_s"],
            "forked_by_server": inside[stage]["ppid"] == server,
        }
        for stage, _ in commands
    }
    repro_timings = workspace.scratch / f"repro-{label}.jsonl"
    repro = workspace.run(["dvc", "repro", "-f"], **mode, **{TIMINGS_ENV: str(repro_timings)})
    exp_timings = workspace.scratch / f"exp-{label}.jsonl"
    alpha = f"{0.0001 * (1 + change / 100):.8f}"  # a new value each time, so the stages rerun
    exp = workspace.run(
        ["dvc", "exp", "run", "-S", f"models.sgd.alpha={alpha}"], **mode, **{TIMINGS_ENV: str(exp_timings)}
    )
    exp_records = read_jsonl(exp_timings)
    return {
        "standalone": standalone,
        "repro": {
            "wall_s": repro.wall_s,
            "compute_s": sum(r["compute_s"] for r in read_jsonl(repro_timings)),
        },
        "exp_run": {
            "wall_s": exp.wall_s,
            "stages": [r["stage"] for r in exp_records],
            "compute_s": sum(r["compute_s"] for r in exp_records),
        },
    }


def dvc_timings(workspace: Workspace, repeats: int) -> dict[str, list[float]]:
    """`dvc --version` (the baseline), `dvc status` and a no-op `dvc repro`, `repeats` times each."""
    results: dict[str, list[float]] = {"dvc --version": [], "dvc status": [], "dvc repro (no-op)": []}
    for _ in range(repeats):
        results["dvc --version"].append(workspace.run(["dvc", "--version"]).wall_s)
        status = workspace.run(["dvc", "status"])
        if "up to date" not in status.output:
            raise RuntimeError(f"the pipeline is not up to date:\n{status.output}")
        results["dvc status"].append(status.wall_s)
        noop = workspace.run(["dvc", "repro"])
        if "Running stage" in noop.output:
            raise RuntimeError(f"`dvc repro` was not a no-op:\n{noop.output}")
        results["dvc repro (no-op)"].append(noop.wall_s)
    return results


def stage_breakdown(rep: dict[str, Any], stage: str) -> dict[str, float]:
    """One repetition's numbers for one stage: both modes, and the cold overhead split into its parts."""
    cold, warm = rep["modes"]["cold"]["standalone"][stage], rep["modes"]["warm"]["standalone"][stage]
    module = stage_module(stage)
    startup, imports = rep["python_startup_s"], rep["module_import_s"][module]
    lazy = rep["lazy_import_s"].get(module, 0.0)
    return {
        "compute_s": median([cold["compute_s"], warm["compute_s"]]),
        "cold_wall_s": cold["wall_s"],
        "cold_overhead_s": cold["wall_s"] - cold["compute_s"],
        "warm_wall_s": warm["wall_s"],
        "warm_overhead_s": warm["wall_s"] - warm["compute_s"],
        "startup_s": startup,
        "imports_s": imports,
        "lazy_imports_s": lazy,
        "warm_forked": float(warm["forked_by_server"] and not cold["forked_by_server"]),
    }


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repetitions, per stage and for the whole pipeline."""
    reps = raw["repetitions"]
    stages = {}
    for stage in raw["stages"]:
        breakdowns = [stage_breakdown(rep, stage) for rep in reps]
        stages[stage] = {key: median(b[key] for b in breakdowns) for key in breakdowns[0]}
        stages[stage]["warm_forked"] = min(b["warm_forked"] for b in breakdowns)
    pipeline: dict[str, Any] = {}
    for mode in MODES:
        runs = [rep["modes"][mode] for rep in reps]
        pipeline[mode] = {
            "compute_s": median(sum(s["compute_s"] for s in run["standalone"].values()) for run in runs),
            "standalone_wall_s": median(sum(s["wall_s"] for s in run["standalone"].values()) for run in runs),
            "repro_wall_s": median(run["repro"]["wall_s"] for run in runs),
            "repro_compute_s": median(run["repro"]["compute_s"] for run in runs),
            "exp_wall_s": median(run["exp_run"]["wall_s"] for run in runs),
            "exp_compute_s": median(run["exp_run"]["compute_s"] for run in runs),
            "exp_stages": runs[0]["exp_run"]["stages"],
        }
    dvc = {name: median(values) for name, values in raw["dvc"].items()}
    imports = {
        f"import mnist_lab.stages.{m}": median(r["module_import_s"][m] for r in reps) for m in raw["modules"]
    }
    for module, (_, statement) in LAZY_IMPORTS.items():
        if module in raw["modules"]:
            imports[f"{statement} (after {module}'s own)"] = median(r["lazy_import_s"][module] for r in reps)
    startup = median(rep["python_startup_s"] for rep in reps)
    return {
        "python_startup_s": startup,
        "stages": stages,
        "pipeline": pipeline,
        "dvc": dvc,
        "imports": imports,
    }


def tables(raw: dict[str, Any], summary: dict[str, Any]) -> str:
    """The Markdown for the README."""
    n = len(raw["repetitions"])
    load = f"{raw['load_average_start'][0]:.1f} → {raw['load_average_end'][0]:.1f}"
    stage_rows = []
    for stage, s in summary["stages"].items():
        stage_rows.append(
            (
                f"`{stage}`" + ("" if s["warm_forked"] else " (not forked!)"),
                fmt(s["compute_s"]),
                fmt(s["cold_wall_s"]),
                fmt(s["cold_overhead_s"]),
                fmt(s["imports_s"] + s["lazy_imports_s"]),
                fmt(s["warm_wall_s"]),
                f"**{fmt(s['warm_overhead_s'])}**",
                ratio(s["warm_wall_s"], s["cold_wall_s"]),
            )
        )
    stage_table = markdown_table(
        (
            "stage",
            "own compute s",
            "cold: wall s",
            "cold: overhead s",
            "of which imports s",
            "warm: wall s",
            "warm: overhead s",
            "warm wall × cold",
        ),
        stage_rows,
    )
    cold, warm = summary["pipeline"]["cold"], summary["pipeline"]["warm"]
    compute = median([cold["compute_s"], warm["compute_s"]])
    pipeline_rows = [
        ("Σ stage compute", fmt(compute), "1.0×", "", ""),
        (
            "Σ stage wall, stages run on their own",
            fmt(cold["standalone_wall_s"]),
            ratio(cold["standalone_wall_s"], compute),
            fmt(warm["standalone_wall_s"]),
            ratio(warm["standalone_wall_s"], compute),
        ),
        (
            "**`dvc repro -f`**",
            fmt(cold["repro_wall_s"]),
            ratio(cold["repro_wall_s"], cold["repro_compute_s"]),
            f"**{fmt(warm['repro_wall_s'])}**",
            f"**{ratio(warm['repro_wall_s'], warm['repro_compute_s'])}**",
        ),
        (
            f"**`dvc exp run -S models.sgd.alpha=…`** (reruns {', '.join(warm['exp_stages'])}; their compute "
            f"{fmt(warm['exp_compute_s'])} s)",
            fmt(cold["exp_wall_s"]),
            ratio(cold["exp_wall_s"], cold["exp_compute_s"]),
            f"**{fmt(warm['exp_wall_s'])}**",
            f"**{ratio(warm['exp_wall_s'], warm['exp_compute_s'])}**",
        ),
    ]
    pipeline_table = markdown_table(
        ("whole pipeline", "cold s", "cold × its compute", "warm s", "warm × its compute"), pipeline_rows
    )
    baseline = summary["dvc"]["dvc --version"]
    dvc_table = markdown_table(
        ("DVC command", "s", "× `dvc --version`"),
        [(f"`{name}`", fmt(seconds), ratio(seconds, baseline)) for name, seconds in summary["dvc"].items()],
    )
    startup = summary["python_startup_s"]
    import_table = markdown_table(
        ("in a fresh interpreter (what a cold stage pays)", "s", "× Python start-up"),
        [("`python -c pass` (start-up, wall)", fmt(startup, 3), "1.0×")]
        + [
            (f"`{name}`", fmt(seconds), ratio(seconds, startup))
            for name, seconds in summary["imports"].items()
        ],
    )
    profile = ", ".join(f"{entry['package']} {entry['self_s']:.2f}" for entry in raw["importtime_evaluate"])
    return "\n\n".join(
        [
            f"**Default pipeline** (bundled digits; median of {n} runs, cold and warm alternated; MLflow "
            "store created and migrated before timing by a warm-up `dvc repro -f` of "
            f"{raw['warmup_repro_s']:.1f} s; warm server started and waited for: "
            f"{raw['warm_server_start_s']:.1f} s). "
            f"{environment_line(raw['environment'])}; load average {load}. Overhead = wall − own compute.",
            stage_table,
            pipeline_table,
            f"DVC commands (median of {len(next(iter(raw['dvc'].values())))}):",
            dvc_table,
            import_table,
            "`python -X importtime -c 'import mnist_lab.stages.evaluate'`, self time by package (s): "
            f"{profile}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="pipeline repetitions (default 3)")
    parser.add_argument(
        "--noop-repeats", type=int, default=5, help="repetitions of each DVC command (default 5)"
    )
    parser.add_argument("--json", help="where to write the raw numbers (default: a new temporary file)")
    parser.add_argument("--render", metavar="JSON", help="only print the tables of an earlier run's --json")
    args = parser.parse_args(argv)
    if args.render:
        raw = json.loads(Path(args.render).read_text(encoding="utf-8"))
        print(tables(raw, summarise(raw)))
        return 0
    started = time.perf_counter()
    raw: dict[str, Any] = {"environment": environment(), "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-pipeline-") as temporary:
        log(f"copying the repository into {temporary}")
        workspace = make_workspace(Path(temporary))
        warm_directory = Path(tempfile.mkdtemp(prefix="mlw-", dir="/tmp"))  # short: socket paths are limited
        workspace.env[WARM_DIR_ENV] = str(warm_directory)
        commands = stage_commands(workspace)
        raw["stages"] = [stage for stage, _ in commands]
        raw["modules"] = sorted({stage_module(stage) for stage in raw["stages"]})
        log("warm-up `dvc repro -f` (creates and migrates the MLflow store)")
        raw["warmup_repro_s"] = workspace.run(["dvc", "repro", "-f"], **MODES["cold"]).wall_s
        log("starting the warm server")
        started_server = time.perf_counter()
        server = start_warm_server(workspace.root, workspace.env, timeout_s=300)
        raw["warm_server_start_s"] = time.perf_counter() - started_server
        raw["repetitions"] = []
        try:
            for index in range(args.repeats):
                log(f"repetition {index + 1} of {args.repeats}")
                raw["repetitions"].append(one_repetition(workspace, commands, index, server))
        finally:
            stop_servers(Path(workspace.env[WARM_DIR_ENV]))
        log("DVC command timings")
        raw["dvc"] = dvc_timings(workspace, args.noop_repeats)
        raw["importtime_evaluate"] = importtime_by_package(
            "mnist_lab.stages.evaluate", workspace.root, workspace.env
        )
    raw["load_average_end"] = os.getloadavg()
    raw["bench_wall_s"] = time.perf_counter() - started
    summary = summarise(raw)
    raw["summary"] = summary
    print(tables(raw, summary))
    path = write_json(args.json, raw, "bench_pipeline-")
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
