"""Keeping secrets out of what is printed or stored: URL credentials and known secret values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "DVC_REMOTE_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
)
# scheme://userinfo@ — greedy up to the last "@" before the path, so a password holding "@" is removed whole
URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")


def mask_credentials(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the user:password part of every URL removed and each secret value replaced by ***."""
    text = URL_USERINFO.sub(r"\1", text)
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


def open_url(request: Any, timeout: float, tls: Any = None) -> Any:
    """`urllib.request.urlopen`, except that an Authorization header never follows a redirect to another
    host (urllib copies it to wherever the server points; a compromised or misconfigured server could then
    collect the credentials). `tls`: an `ssl.SSLContext` for https (default: the system's trust)."""
    import urllib.parse
    import urllib.request

    class SameHostCredentials(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None:
                before, after = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
                if (before.scheme, before.netloc) != (after.scheme, after.netloc):
                    new.remove_header("Authorization")
            return new

    handlers: list[Any] = [SameHostCredentials]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)
