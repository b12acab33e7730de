"""Where the default pipeline's time goes: each stage's own compute versus its whole process, and DVC's cost.

Runs in a throw-away copy of the repository (tracked files, a fresh git repository, the default digits
regenerated and checked against data.dvc) with MLflow pointed at a sqlite store inside the copy. One
warm-up `dvc repro -f` creates and migrates that store first, so no timing pays MLflow's migrations.

Per repetition (median of --repeats):
  * every stage command (from `dvc repro -f --dry`, in order) run on its own and timed: wall time, and the
    stage's own compute time and body time from MNIST_LAB_TIMINGS (src/mnist_lab/stages/common.py);
  * the overhead broken out: Python start-up (`python -c pass`), the stage module's imports and the lazy
    imports in its body (mlflow in evaluate, the DagsHub logger in select), each timed in a fresh process;
  * `dvc repro -f` of the whole pipeline, each stage process timed inside it by a `python` shim.
Then `dvc --version`, `dvc status` and a no-op `dvc repro`, median of --noop-repeats.

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
    timed_repro,
    write_json,
)

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


def one_repetition(workspace: Workspace, commands: list[tuple[str, str]], index: int) -> dict[str, Any]:
    """Stages run on their own (timed), import costs, then a timed `dvc repro -f`."""
    timings = workspace.scratch / f"standalone-{index}.jsonl"
    walls = {}
    for stage, command in commands:
        done = workspace.run(command, DVC_ROOT=str(workspace.root), **{TIMINGS_ENV: str(timings)})
        walls[stage] = (done.wall_s, done.max_rss_mb)
    inside = {record["stage"]: record for record in read_jsonl(timings)}
    standalone = {
        stage: {
            "wall_s": walls[stage][0],
            "max_rss_mb": walls[stage][1],
            "compute_s": inside[stage]["compute_s"],
            "body_s": inside[stage]["body_s"],
        }
        for stage, _ in commands
    }

    python = str(BIN_DIR / "python")
    startup = workspace.run([python, "-c", "pass"]).wall_s
    modules = sorted({stage_module(stage) for stage, _ in commands})
    imports = {
        module: import_seconds(f"import mnist_lab.stages.{module}", workspace.root, workspace.env)
        for module in modules
    }
    lazy = {
        module: import_seconds(statement, workspace.root, workspace.env, prelude=prelude)
        for module, (prelude, statement) in LAZY_IMPORTS.items()
        if module in modules
    }
    repro = timed_repro(workspace, commands, f"repro-{index}", "-f")
    return {
        "standalone": standalone,
        "python_startup_s": startup,
        "module_import_s": imports,
        "lazy_import_s": lazy,
        "repro": {"wall_s": repro.wall_s, "dvc_s": repro.dvc_s, "stages": repro.stages},
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
    """One repetition's numbers for one stage, the overhead split into its parts."""
    own = rep["standalone"][stage]
    module = stage_module(stage)
    startup, imports = rep["python_startup_s"], rep["module_import_s"][module]
    lazy = rep["lazy_import_s"].get(module, 0.0)
    return {
        "wall_s": own["wall_s"],
        "compute_s": own["compute_s"],
        "overhead_s": own["wall_s"] - own["compute_s"],
        "startup_s": startup,
        "imports_s": imports,
        "lazy_imports_s": lazy,
        "body_other_s": own["body_s"] - own["compute_s"] - lazy,
        "outside_other_s": own["wall_s"] - own["body_s"] - startup - imports,
        "max_rss_mb": own["max_rss_mb"],
        "wall_in_repro_s": rep["repro"]["stages"][stage]["wall_s"],
    }


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repetitions, per stage and for the whole pipeline."""
    reps = raw["repetitions"]
    stages = {}
    for stage in raw["stages"]:
        breakdowns = [stage_breakdown(rep, stage) for rep in reps]
        stages[stage] = {key: median(b[key] for b in breakdowns) for key in breakdowns[0]}
    pipeline = {
        "compute_s": median(sum(s["compute_s"] for s in rep["standalone"].values()) for rep in reps),
        "standalone_wall_s": median(sum(s["wall_s"] for s in rep["standalone"].values()) for rep in reps),
        "repro_wall_s": median(rep["repro"]["wall_s"] for rep in reps),
        "repro_stage_wall_s": median(
            sum(s["wall_s"] for s in rep["repro"]["stages"].values()) for rep in reps
        ),
        "repro_dvc_s": median(rep["repro"]["dvc_s"] for rep in reps),
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
                f"`{stage}`",
                fmt(s["wall_s"]),
                fmt(s["compute_s"]),
                fmt(s["overhead_s"]),
                f"{s['overhead_s'] / s['wall_s']:.0%}",
                fmt(s["startup_s"], 3),
                fmt(s["imports_s"]),
                fmt(s["lazy_imports_s"]) if s["lazy_imports_s"] else "–",
                fmt(s["body_other_s"]),
                fmt(s["outside_other_s"]),
                fmt(s["wall_in_repro_s"]),
            )
        )
    stage_table = markdown_table(
        (
            "stage",
            "wall s",
            "compute s",
            "overhead s",
            "overhead share",
            "Python start-up s",
            "module imports s",
            "lazy imports s",
            "I/O, settings, tracking s",
            "shutdown, other s",
            "wall in `dvc repro` s",
        ),
        stage_rows,
    )
    p = summary["pipeline"]
    pipeline_table = markdown_table(
        ("whole pipeline", "s", "× Σ compute"),
        [
            ("Σ stage compute", fmt(p["compute_s"]), "1.0×"),
            (
                "Σ stage wall, stages run on their own",
                fmt(p["standalone_wall_s"]),
                ratio(p["standalone_wall_s"], p["compute_s"]),
            ),
            (
                "Σ stage wall inside `dvc repro -f`",
                fmt(p["repro_stage_wall_s"]),
                ratio(p["repro_stage_wall_s"], p["compute_s"]),
            ),
            (
                "DVC itself in `dvc repro -f` (start-up, hashing, cache, lock)",
                fmt(p["repro_dvc_s"]),
                ratio(p["repro_dvc_s"], p["compute_s"]),
            ),
            (
                "**`dvc repro -f`, ready environment**",
                f"**{fmt(p['repro_wall_s'])}**",
                f"**{ratio(p['repro_wall_s'], p['compute_s'])}**",
            ),
        ],
    )
    baseline = summary["dvc"]["dvc --version"]
    dvc_table = markdown_table(
        ("DVC command", "s", "× `dvc --version`"),
        [(f"`{name}`", fmt(seconds), ratio(seconds, baseline)) for name, seconds in summary["dvc"].items()],
    )
    startup = summary["python_startup_s"]
    import_table = markdown_table(
        ("in a fresh interpreter", "s", "× Python start-up"),
        [("`python -c pass` (start-up, wall)", fmt(startup, 3), "1.0×")]
        + [
            (f"`{name}`", fmt(seconds), ratio(seconds, startup))
            for name, seconds in summary["imports"].items()
        ],
    )
    profile = ", ".join(f"{entry['package']} {entry['self_s']:.2f}" for entry in raw["importtime_evaluate"])
    return "\n\n".join(
        [
            f"**Default pipeline** (bundled digits; median of {n} runs; MLflow store created and migrated "
            f"before timing by a warm-up `dvc repro -f` of {raw['warmup_repro_s']:.1f} s). "
            f"{environment_line(raw['environment'])}; load average {load}. Overhead = wall − compute; "
            "the columns after it split it (medians, so they need not add up exactly).",
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
        commands = stage_commands(workspace)
        raw["stages"] = [stage for stage, _ in commands]
        raw["modules"] = sorted({stage_module(stage) for stage in raw["stages"]})
        log("warm-up `dvc repro -f` (creates and migrates the MLflow store)")
        raw["warmup_repro_s"] = workspace.run(["dvc", "repro", "-f"]).wall_s
        raw["repetitions"] = []
        for index in range(args.repeats):
            log(f"repetition {index + 1} of {args.repeats}")
            raw["repetitions"].append(one_repetition(workspace, commands, index))
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
