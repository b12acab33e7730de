"""Keeping secrets out of what is printed or stored: URL credentials and known secret values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
SECRET_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "DVC_REMOTE_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
)
# scheme://userinfo@ — greedy up to the last "@" before the path, so a password holding "@" is removed whole
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")


def mask_credentials(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the user:password part of every URL removed and each secret value replaced by ***."""
    text = _URL_USERINFO.sub(r"\1", text)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` safe to print or store: URL credentials and the values of the known secret variables masked."""
    environ = os.environ if environ is None else environ
    return mask_credentials(text, tuple(environ.get(name, "") for name in SECRET_VARIABLES))


def display_uri(uri: str) -> str:
    """The URI without any user:password part, safe to print."""
    return mask_credentials(uri)
