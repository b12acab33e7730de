"""validate: check params.yaml and data/ first, so that bad input stops `dvc repro` before any output is lost.

DVC deletes a stage's outputs just before it runs the stage. Every stage comes after this one (prepare
depends on its marker file), so when a setting is wrong (an unknown key, a wrong type, an unknown
`select.metric`), data/ is corrupt or `.env` cannot work (a tracking URI without its scheme, a malformed
DAGSHUB_REPO or Dask scheduler address), `dvc repro` and `dvc exp run` stop here with every output as it
was.

Before any stage runs, `dvc repro` re-hashes a changed data/ into `data.dvc` (DVC does this for every data
source, frozen or not). When data/ does not read as MNIST-format IDX, this stage puts back the last
`data.dvc` it validated over the same committed `data.dvc` (kept in `.mnist-lab/validated-data.dvc`, with
the commit in `validated-data.head`: HEAD, or an ancestor with the same `data.dvc`; a version validated on
another branch is not this one's), else the committed one, so corrupt data never becomes the recorded data
version.

The marker's content never changes (and DVC keeps it: `persist`), so passing this stage reruns nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mnist_lab.core.cnn import backend_problem
from mnist_lab.core.data import check_detector_labels, check_training_labels, task_labels
from mnist_lab.core.errors import DataError, SettingsError
from mnist_lab.core.settings import CNNSettings, Settings
from mnist_lab.datasets.folder import (
    dvc_directory_md5,
    parse_data_version,
    parse_recorded,
    read_dataset,
    read_directory_files,
    read_training_labels,
)
from mnist_lab.stages.common import StageContext, main_for, stage_parser
from mnist_lab.system import commands
from mnist_lab.system.cluster import cluster_address
from mnist_lab.system.files import write_text_atomic
from mnist_lab.system.workspace import repository_root
from mnist_lab.tracking.config import TrackingSettings

MARKER_TEXT = "params.yaml and data/ passed the validate stage\n"
VALIDATED_COPY = Path(".mnist-lab") / "validated-data.dvc"  # git-ignored


def check_data(data: Path, dvc_file: Path, validated_copy: Path) -> None:
    """data/ reads as MNIST-format IDX (the loader's checks). If not, a DataError with the loader's message,
    and `dvc_file` is put back to the last version that passed (see the module's doc)."""
    text = dvc_file.read_text(encoding="utf-8") if dvc_file.is_file() else None
    last = validated_copy.read_text(encoding="utf-8") if validated_copy.is_file() else None
    found = dvc_directory_md5(read_directory_files(data)) if data.is_dir() else None
    if text is not None and text == last and parse_data_version(text) == found:
        return  # the data version that passed last time, byte for byte
    head_file = validated_copy.with_suffix(".head")
    try:
        dataset = read_dataset(data)
    except DataError as exc:
        recorded = parse_data_version(text)
        if found is None and recorded:  # no data/ at all: the version data.dvc records is the one to get
            raise DataError(
                f"data directory '{data}' is missing: `mnist-lab data restore` (`make data`) brings back the "
                f"version {dvc_file} records ({recorded}), from the DVC cache, the DVC remote or, for the "
                "bundled digits, by regenerating it"
            ) from None
        validated_at = head_file.read_text(encoding="utf-8").strip() if head_file.is_file() else None
        last_here = last if validated_at is not None and _same_base(dvc_file, validated_at) else None
        raise DataError(f"{exc}. {_put_back(dvc_file, found, last_here)}") from None
    if dataset.test_images is None:
        warn_test_set_gone(data, dvc_file)
    if text is not None and parse_data_version(text) == found:
        write_text_atomic(head_file, (_head(dvc_file) or "") + "\n")
        write_text_atomic(validated_copy, text)


def warn_test_set_gone(data: Path, dvc_file: Path) -> None:
    """data/ holds no test files where the committed data version had more files: deleted by mistake,
    they were taken as new data without a word (prepare splits a test set off the training images, so the
    metrics no longer mean what the commit's did)."""
    committed = commands.git_output("show", f"HEAD:./{dvc_file.name}", cwd=dvc_file.resolve().parent)
    try:
        recorded_files = int(parse_recorded(committed, "nfiles"))
    except (TypeError, ValueError):  # none recorded, or no committed data.dvc
        return
    if recorded_files > len(read_directory_files(data)):
        print(
            f"warning: {data}/ holds no test set (t10k-* files) but the committed {dvc_file} records "
            f"{recorded_files} files: `prepare` now splits data.test_size of the training images off as the "
            "test set, so the metrics are not comparable with the commit's. If the test files were removed "
            f"by mistake, `git checkout -- {dvc_file} && mnist-lab data restore --force` brings back the "
            "committed data",
            file=sys.stderr,
        )


def _same_base(dvc_file: Path, validated_at: str) -> bool:
    """Whether a version validated at commit `validated_at` was validated over what HEAD holds: HEAD itself,
    or a descendant of it that commits the same `dvc_file` (a commit of params.yaml alone since); not on
    another branch, whose data is not this one's."""
    here = _head(dvc_file)
    if validated_at == (here or ""):
        return True
    if not validated_at or here is None:
        return False
    folder = dvc_file.resolve().parent
    ancestor = commands.git("merge-base", "--is-ancestor", validated_at, "HEAD", cwd=folder).returncode == 0
    same = (
        commands.git("diff", "--quiet", validated_at, "HEAD", "--", dvc_file.name, cwd=folder).returncode == 0
    )
    return ancestor and same


def _head(dvc_file: Path) -> str | None:
    """The commit checked out where `dvc_file` is; None outside git or before the first commit."""
    head = commands.git_output("rev-parse", "--verify", "-q", "HEAD", cwd=dvc_file.resolve().parent)
    return head.strip() if head else None


def _put_back(dvc_file: Path, corrupt: str | None, last: str | None) -> str:
    """Restore `dvc_file` to `last` (the version last validated at this commit), else the committed version;
    a sentence saying what it did."""
    committed = commands.git_output("show", f"HEAD:./{dvc_file.name}", cwd=dvc_file.resolve().parent)
    for candidate, which in (
        (last, "the last one validated on this branch"),
        (committed, "the committed one"),
    ):
        version = parse_data_version(candidate)
        if candidate and version and version != corrupt:
            bring_back = (
                f"Bring back that data with `mnist-lab data restore --force` (or `dvc checkout --force "
                f"{dvc_file}`), or fix the files and run again"
            )
            if dvc_file.is_file() and dvc_file.read_text(encoding="utf-8") == candidate:
                return f"{dvc_file} records data version {version}, {which}. {bring_back}"
            write_text_atomic(dvc_file, candidate)
            return (
                f"{dvc_file} records data version {version} again, {which} (DVC had re-hashed these "
                f"files into it; it was put back). {bring_back}"
            )
    return (
        f"{dvc_file} records these files (no earlier valid version to put back); fix them, or get valid "
        "data with `mnist-lab data digits` / `mnist-lab data ingest`, then `dvc add data`"
    )


def check_models_against_labels(settings: Settings, data: Path) -> None:
    """What train would refuse for the training labels (a grid search with more folds than the smallest
    class has examples, a validation split that cannot be stratified, a 5-detector without a 5), here,
    before DVC removes any output; when data/ holds a test set, so the training set is known exactly."""
    labels = read_training_labels(data)
    if labels is None:
        return  # prepare splits the test set off: train checks the training set it leaves
    labels = task_labels(labels, settings.task.kind, settings.task.positive_class)
    if settings.task.kind == "binary":
        check_detector_labels(labels, settings.task.positive_class, "training")
    for name, model in settings.models.items():
        check_training_labels(model, labels, f"models.{name}")


def validate(context: StageContext) -> None:
    args = context.args
    with context.compute():
        try:
            context.settings  # noqa: B018 - loading the settings is the check (unknown keys, types, metric)
        except SettingsError as exc:
            raise _after_exp_run(exc) from None
        # the tracking configuration's mistakes that need no network (a URI without its scheme, a bad
        # DAGSHUB_REPO): here, not after DVC has deleted the outputs of the stages that log
        root = repository_root()
        TrackingSettings.from_environment(root)  # loads .env
        warn_misspelt_env_keys(root)
        cluster_address(os.environ)  # a grid search's Dask scheduler, if named: its address's form
        if any(isinstance(model, CNNSettings) for model in context.settings.models.values()):
            problem = backend_problem(os.environ)  # before DVC deletes the CNN's outputs
            if problem:
                raise SettingsError(problem)
        check_data(args.data, args.dvc_file, args.dvc_file.resolve().parent / VALIDATED_COPY)
        try:
            check_models_against_labels(context.settings, args.data)  # `search.cv: 999`, ...
        except SettingsError as exc:
            raise _after_exp_run(exc) from None
    if not args.out.is_file() or args.out.read_text(encoding="utf-8") != MARKER_TEXT:
        write_text_atomic(args.out, MARKER_TEXT)


def _after_exp_run(exc: SettingsError) -> SettingsError:
    """A settings error as is under `dvc repro` (params.yaml as its user left it), and under `dvc exp run
    -S` with how to take the value back: DVC wrote it into params.yaml and leaves it there, and leaves
    git's index taking the file for unchanged (its size and time recorded with the old content): `git
    status` shows nothing and `git checkout -- params.yaml` does nothing, half the time."""
    if not os.environ.get("DVC_EXP_NAME"):
        return exc
    return SettingsError(
        f"{exc}\n  (`dvc exp run -S` left this value in params.yaml: fix it there, or take the committed "
        "settings back with `git show HEAD:params.yaml > params.yaml`; `git checkout` may not see the change)"
    )


def warn_misspelt_env_keys(root: Path) -> None:
    """A warning for each key of .env that looks like a misspelt setting: nothing reads it."""
    from dotenv import dotenv_values

    from mnist_lab.tracking.config import misspelt_env_keys

    env_file = root / ".env"
    if not env_file.is_file():
        return
    for key, meant in misspelt_env_keys(list(dotenv_values(env_file))).items():
        print(f"warning: .env sets {key}, which nothing reads: did you mean {meant}?", file=sys.stderr)


def parser():
    p = stage_parser(__doc__)
    p.add_argument("--data", required=True, type=Path, help="folder with the MNIST-format IDX files")
    p.add_argument("--dvc-file", required=True, type=Path, help="the .dvc file recording data/'s version")
    p.add_argument("--out", required=True, type=Path, help="marker file (constant content)")
    return p


if __name__ == "__main__":
    main_for("validate", parser(), validate)
