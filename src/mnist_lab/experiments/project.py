"""The MLflow Projects entry points (`MLproject`): `main` runs the pipeline, `train` one model with params
overrides. Both run DVC, so every default is params.yaml's and only what changed reruns; `train` runs as a
temporary DVC experiment (`dvc exp run --temp`), leaving the workspace as it was.

    python -m mnist_lab.experiments.project main
    python -m mnist_lab.experiments.project train --model mlp \
        --set "models.mlp.alpha=0.001 models.mlp.max_epochs=20"
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

import yaml

from mnist_lab.core.errors import MnistLabError, SettingsError
from mnist_lab.core.settings import load_params_yaml, parse_settings
from mnist_lab.system import commands
from mnist_lab.system.workspace import repository_root


def parse_overrides(text: str) -> list[tuple[str, str]]:
    """`key=value key=value` (spaces or commas between) -> [(key, value)], or a SettingsError. A comma or
    a space inside brackets, braces or quotes belongs to the value: `models.cnn.filters=[16, 32]` is a
    list, as YAML writes it."""
    try:
        items = shlex.split(_top_level_commas_as_spaces(text))
    except ValueError as exc:  # shlex: an unclosed quote
        raise SettingsError(f"--set {text!r}: {exc} (close the quote)") from None
    pairs = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals and key.startswith("~") and len(key) > 1:  # remove a key: `~models.sgd.search`
            pairs.append((key, ""))
            continue
        if not equals or not key:
            raise SettingsError(f"--set: '{item}' is not key=value (for example models.mlp.alpha=0.001)")
        pairs.append((key, value))
    return pairs


def _top_level_commas_as_spaces(text: str) -> str:
    """`text` with each comma outside brackets, braces and quotes replaced by a space, and each space
    inside brackets or braces escaped (shlex keeps it in the value)."""
    out, depth, quote = [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            char = " "
        elif char in " \t\n" and depth > 0:
            char = "\\" + char
        out.append(char)
    return "".join(out)


def override_arguments(overrides: list[tuple[str, str]]) -> list[str]:
    """The overrides as `dvc exp run -S` takes them (Hydra's grammar): `key=value`, `+key=value` (a key
    params.yaml does not have), `++key=value`, `~key` (remove it; an empty value) or `~key=value`."""
    return [key if key.startswith("~") and value == "" else f"{key}={value}" for key, value in overrides]


def check_overrides(raw: dict, model: str | None, overrides: list[tuple[str, str]]) -> None:
    """Apply the overrides to a copy of params.yaml as DVC does (its own Hydra code: `+`, `++`, `~`, and a
    dict merged into the one it overrides) and validate the result (and that `model` is one of its models),
    so a typo fails before any work."""
    import copy

    candidate = copy.deepcopy(raw)
    for key, value in overrides:
        if key.startswith(("+", "~")):
            continue  # DVC's code below says what is wrong with these
        node = candidate
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SettingsError(f"--set {key}: params.yaml has no section '{part}' there")
            node = node[part]
        try:
            node[leaf] = load_params_yaml(value)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).strip()
            raise SettingsError(
                f"--set {key}={value}: not a YAML value ({problem}); write a list as [1, 2], a string "
                "with ': ' or brackets in quotes"
            ) from None
    # the settings first, on the overrides set plainly: a typo says "unknown key", not DVC's "use +"
    parse_settings(candidate, source="params.yaml with --set")
    settings = parse_settings(_as_dvc_applies(raw, overrides), source="params.yaml with --set")
    if model is not None:
        settings.model(model)


def _as_dvc_applies(raw: dict, overrides: list[tuple[str, str]]) -> Any:
    """params.yaml (`raw`) with the overrides applied by DVC's `-S` code, on a copy in a temporary folder."""
    import tempfile
    from pathlib import Path

    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "params.yaml"
        copy.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        for argument in override_arguments(overrides):  # one by one: the error names the one at fault
            try:
                apply_overrides(copy, [argument])
            except Exception as exc:
                cause = str(exc.__cause__ or exc).split(" See https://")[0].strip()
                if argument.startswith("~") and _is_null(raw, argument[1:].split("=")[0]):
                    cause = (
                        "DVC's override code (Hydra's) cannot remove a key whose value is null; it is null "
                        "already, which the settings read as not set: leave it out, or give it a value"
                    )
                raise SettingsError(f"--set {argument}: {cause}") from None
        return load_params_yaml(copy.read_text(encoding="utf-8"))


def _is_null(raw: Any, dotted: str) -> bool:
    """Whether params.yaml (`raw`) holds `dotted` (a.b.c) with the value null."""
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return isinstance(node, dict) and leaf in node and node[leaf] is None


def _run(command: list[str], cwd) -> int:
    print("+ " + " ".join(shlex.quote(part) for part in command), file=sys.stderr, flush=True)
    program, *args = command
    return commands.run(program, *args, cwd=cwd, timeout=None, capture=False).returncode  # a pipeline run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="entry_point", required=True)
    commands.add_parser("main", help="dvc repro, then send any runs waiting in the outbox")
    train = commands.add_parser("train", help="train and evaluate one model as a temporary DVC experiment")
    train.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    train.add_argument("--set", default="", help="params.yaml overrides: key=value ...")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # MLflow hands a parameter MLproject does not declare on as `--name value`
        named = " ".join(unknown)
        takes = "model and set" if args.entry_point == "train" else "no parameters"
        print(
            f"error: unknown parameter ({named}): the {args.entry_point} entry point takes {takes} "
            '(`-P model=mlp -P set="models.mlp.alpha=0.001"`); settings go in set',
            file=sys.stderr,
        )
        return 2
    try:
        root = repository_root()
        if args.entry_point == "main":
            code = _run(["dvc", "repro"], root)
            return code or _run([sys.executable, "-m", "mnist_lab.cli", "sync", "--quiet"], root)
        raw = load_params_yaml((root / "params.yaml").read_text(encoding="utf-8"))
        overrides = parse_overrides(args.set)
        check_overrides(raw, args.model, overrides)
        command = ["dvc", "exp", "run", "--temp"]
        for argument in override_arguments(overrides):
            command += ["-S", argument]
        return _run([*command, f"evaluate@{args.model}"], root)
    except MnistLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
