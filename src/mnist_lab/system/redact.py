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
# scheme://userinfo@ — greedy up to the last "@" before the path, so a password holding "@" is removed whole;
# or user:password@ whose password holds an unencoded "/", "?" or "#" (which end a URL's host part: urllib
# reads `https://jane:pa/ss@host` as host `jane`, port `pa`): removed too, up to the "@" (a URL with a port
# and an "@" in its path, `https://host:8080/a@b`, is shown without its host: never a password shown)
URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/?#\s@]*:\S*@|[^/\s]*@)")


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


def first_line(text: str, limit: int = 300) -> str:
    """The first line of a message for one line of output: at most `limit` characters, cut at a word (a
    cut mid-word read "Read tim)")."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


def display_uri(uri: str) -> str:
    """The URI without any user:password part, safe to print."""
    return mask_credentials(uri)


def unencoded_credentials(url: str) -> bool:
    """Whether `url` may be `scheme://user:password@host/...` with a "/", "?" or "#" in the password (not
    percent-encoded; an "@" before it or not): urllib ends the host part there and reads no credentials, or
    some, so the URL, password (or its rest) and all, would be used (and stored) as an address. A port
    followed by an "@" in the path (`https://host:8080/a@b`) reads the same: refused too, as the cost of
    never storing a password (the path's "@" is written %40)."""
    scheme, separator, rest = url.partition("://")
    words = rest.split()
    if not separator or not scheme or "@" not in (words or [""])[0]:
        return False
    userinfo = words[0].rpartition("@")[0]  # up to the last "@", as urllib reads a user:password
    cut = re.search(r"[/?#]", userinfo)  # where urllib's host part ends instead
    return cut is not None and ":" in userinfo[: cut.start()]


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without its user:password part, the user, the password), both percent-decoded; the URL as
    it is and (None, None) when it holds none. ValueError, saying what to do, for a password with an
    unencoded "/", "?" or "#" (`unencoded_credentials`) or a port that is no number."""
    import urllib.parse

    if "://" not in url:
        return url, None, None
    if unencoded_credentials(url):
        raise ValueError(
            f"{display_uri(url)}: the password before '@' holds '/', '?' or '#', which end the address's "
            "host part: percent-encode them (%2F, %3F, %23), or give the user and password in their own "
            "variables; an '@' that belongs to the path is written %40"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return clean, user, password


def basic_auth(user: str | None, password: str | None, encoding: str = "utf-8") -> str:
    """The value of an `Authorization` header for HTTP basic auth, `user:password` in `encoding` (MLflow's
    client sends UTF-8; DVC's HTTP remotes, through aiohttp, latin-1)."""
    import base64

    return "Basic " + base64.b64encode(f"{user or ''}:{password or ''}".encode(encoding)).decode()


def open_url_with_credentials(url: str, timeout: float) -> Any:
    """`open_url` of `url`, its user:password part (if any) sent as HTTP basic auth (urllib took it for
    part of the host name)."""
    import urllib.request

    clean, user, password = split_url_credentials(url)
    request = urllib.request.Request(clean)
    if user is not None or password is not None:
        request.add_header("Authorization", basic_auth(user, password))
    return open_url(request, timeout)


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
