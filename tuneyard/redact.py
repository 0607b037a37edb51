"""Secrets kept out of logs and console messages.

A Redis URL (``redis://:password@host``), a database URL (``postgresql://user:password@host``)
or an API URL behind a proxy's basic auth carries its password in the URL itself, and an
exception's text may quote such a URL or a ``password=…`` connection string. Everything the
code logs or prints that may hold one goes through ``redact_url`` (a URL) or ``redact_text``
(free text, e.g. ``str(exc)``) first. The password is replaced by ``***``; the scheme, user
name, host, port and path stay, so the message still says where the connection went.

This module imports nothing of tuneyard's: the API, the worker, the client and the CLI all
use it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"

# Names of parameters that carry a secret: ``?password=…`` in a URL (libpq and redis-py read
# it), ``password=…`` in libpq's key/value form, ``sslpassword``, ``api_key``, ``token``.
_SECRET_NAME = r"[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key)"
_SECRET_KEY = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)
# ``scheme://user:password@``: the password runs to the last ``@`` before the host (a
# password may hold an unencoded ``@``, as it may for the drivers).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s/]*(?=@)")
# ``password=…`` in free text: a libpq connection string, a URL's query.
_KEY_VALUE = re.compile(rf"(?P<key>\b{_SECRET_NAME}\s*=\s*)(?:'[^']*'|[^\s&'\",;]+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``.

    ``redis://:s3cret@host:6379/0`` becomes ``redis://:***@host:6379/0``;
    ``postgresql+psycopg://app:s3cret@db/tuneyard`` becomes
    ``postgresql+psycopg://app:***@db/tuneyard``. A URL without a password is returned as
    it is; text that can't be parsed as a URL is redacted as free text."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_text(url)
    netloc, query = parts.netloc, parts.query
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_KEY.match(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if _SECRET_KEY.match(k) else v) for k, v in pairs], safe="*"
            )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Put together by hand: urlunsplit drops the empty authority of ``sqlite:////abs/path``.
    out = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    out += f"?{query}" if query else ""
    return out + (f"#{parts.fragment}" if parts.fragment else "")


def redact_text(text: str) -> str:
    """``text`` (an exception's message, a log line) with the password of every URL in it,
    and every ``password=…``-like value, replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KEY_VALUE.sub(lambda m: m.group("key") + MASK, text)
