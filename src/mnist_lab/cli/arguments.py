"""Argument types shared by the commands: a wrong value is refused by argparse, naming it and a valid one."""

from __future__ import annotations

import argparse

from mnist_lab.core.errors import MnistLabError


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (say 0.002)") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more (say 0.002)")
    return value


def model_uri(text: str) -> str:
    """An MLflow model URI or a model's folder: not empty (`Path("")` is the current folder, which was then
    searched for an MLmodel file)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty: give a model URI (models:/mnist-lab@champion, runs:/<run id>/<model name>) or a folder"
        )
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (say 10)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more (say 10)")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return value


def check_port_free(host: str, port: int) -> None:
    """A MnistLabError when `host:port` cannot be listened on (another server has it): before a server
    spends seconds loading, announces itself, then dies on it while a client reaches the other one."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            import errno

            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                # it said "choose another --port" where the host was the problem
                raise MnistLabError(
                    f"--host {host}: cannot listen there ({exc.strerror or exc}): not a name or address of "
                    "this machine; give one of its addresses (127.0.0.1, or 0.0.0.0 for all of them)"
                ) from None
            raise MnistLabError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}): another server has "
                "it, or it is not yours to take; choose another --port"
            ) from None
