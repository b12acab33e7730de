"""register: add the experiment's best model to the Model Registry as alias `challenger`.

It never fails the pipeline for what only delays registering (the best model's run waiting in the outbox,
a tracking server without a registry): `registry.json` then says why it is not registered."""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_lab import tracking
from mnist_lab.serving.registry import Registration, register_challenger
from mnist_lab.stages.common import StageContext, main_for, stage_parser
from mnist_lab.system import workspace
from mnist_lab.system.files import write_json


def register(context: StageContext) -> None:
    settings, args = context.settings, context.args
    root = workspace.repository_root()
    if tracking.preflight(root).server_away:
        registration = Registration(
            settings.registry.model_name,
            None,
            None,
            "not registered: the tracking server did not answer; once it does (and `mnist-lab sync` has sent "
            "the runs waiting in the outbox), `dvc repro -f -s register` registers it",
        )
    else:
        registration = register_challenger(root, settings.registry.model_name, args.best, args.reports)
    print(registration.note, file=sys.stderr)
    write_json(args.out, registration.as_json())


def parser():
    p = stage_parser(__doc__)
    p.add_argument("--best", required=True, type=Path, help="best_model.json, written by select")
    p.add_argument("--reports", required=True, type=Path, help="the per-model reports (their mlflow.json)")
    p.add_argument("--out", required=True, type=Path, help="JSON: the registered version, or why none")
    return p


if __name__ == "__main__":
    main_for("register", parser(), register)
