"""The one place secrets are masked before text reaches a message, a log line, metadata or a table.

:func:`redact` masks, wherever they stand in a text:

- the password of a URL's user part (``scheme://user:secret@host``), any scheme (SQLAlchemy,
  MLflow tracking URIs, webhooks);
- secret query parameters and connection-string fields (``?password=``, ``&token=``, ``;PWD=``,
  ``api_key=``, ``secret=``, ...), in URLs and in ODBC / ADO connection strings;
- any value passed in ``secrets`` (a password read from a connection string, a webhook URL).

:func:`redact_webhook` goes further for URLs that are secrets as a whole (a Slack webhook's path
is its token): only the scheme and host are kept.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
# Field names that carry secrets in query strings and connection strings (matched whole,
# case-insensitive, also with a prefix such as ``api_`` or ``client_``).
SECRET_FIELDS = (
    "password",
    "passwd",
    "pwd",
    "pass",
    "token",
    "access_token",
    "auth_token",
    "refresh_token",
    "id_token",
    "key",
    "api_key",
    "apikey",
    "access_key",
    "secret",
    "client_secret",
    "secret_key",
    "sig",
    "signature",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "sas",
)
_FIELD_NAMES = "|".join(sorted((re.escape(f) for f in SECRET_FIELDS), key=len, reverse=True))
# user:password@ in a URL: the user part ends at the first '@' after '://' and before the path.
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^/\s]*)(?P<tail>@)")
# name=value in a query string (after ? or &) or a connection string (after ; or at the start);
# a braced ODBC value ({...}, with }} for a literal brace) is masked whole.
_FIELD = re.compile(
    r"(?P<head>(?:^|[?&;\s,])(?:[A-Za-z_]*[_\-.])?(?:" + _FIELD_NAMES + r")\s*=\s*)"
    r"(?P<secret>\{(?:[^}]|\}\})*\}|[^&;\s,'\"]*)",
    re.IGNORECASE,
)


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every password, token and listed secret replaced by ``***``."""
    result = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        result = result.replace(secret, MASK)
        quoted = urllib.parse.quote(secret, safe="")
        if quoted != secret:
            result = result.replace(quoted, MASK)
    result = _URL_USERINFO.sub(lambda m: m["head"] + MASK + m["tail"] if m["secret"] else m[0], result)
    return _FIELD.sub(lambda m: m["head"] + MASK if m["secret"] else m[0], result)


def redact_webhook(url: str) -> str:
    """A URL that is a secret as a whole (webhooks): scheme, host and port only."""
    parts = urllib.parse.urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/..." if parts.scheme else MASK


def url_secrets(url: str | None, whole: bool = False) -> list[str]:
    """The secret parts of a URL or connection string (its password, secret fields' values; with
    ``whole``, for webhooks, also its path and query), for :func:`redact`'s ``secrets``: a library
    may echo them apart from the URL."""
    if not url:
        return []
    text = str(url)
    found = [m["secret"].strip("{}") for m in _FIELD.finditer(text)]
    try:
        parts = urllib.parse.urlsplit(text)
        password = parts.password
    except ValueError:  # not a URL (an ODBC connection string)
        parts, password = None, None
    if password:
        found += [password, urllib.parse.unquote(password)]
    if whole and parts is not None:
        found += [p for p in (parts.path, parts.query) if p not in ("", "/")]
    return [s for s in found if s]
