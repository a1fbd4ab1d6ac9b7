"""Secrets out of every text the harness shows or keeps.

A store may be named with a password in any of the forms libpq accepts:

    postgresql://user:PW@host/db                  (userinfo)
    postgresql://user@host/db?password=PW         (query string; also sslpassword=)
    host=h dbname=db user=u password=PW           (a keyword/value DSN)
    password='a secret with spaces'               (quoted value)

:func:`mask` replaces each such password with ``***`` in any text: messages,
reports, stored environment records, exception texts. Besides the patterns,
the literal password of every store named so far in this process (and of
``$HARNESS_STORE``) is masked wherever it appears, also percent-encoded, so a
driver's message that quotes it some other way does not leak it either.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
_ENV_VAR = "HARNESS_STORE"
_KNOWN: set[str] = set()  # passwords of the stores named in this process

# scheme://user:PW@  (the password ends at the last @ before the host)
_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*):(?P<pw>[^@/\s]*)@", re.I)
# password=PW / sslpassword=PW in a query string or a keyword/value DSN; a value
# may be single-quoted with backslash escapes (libpq's rule)
_KEYWORD = re.compile(r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'?|[^\s&'\"]+)", re.I)


def is_kv_dsn(spec) -> bool:
    """A libpq keyword/value connection string (``host=... dbname=...``)."""
    return isinstance(spec, str) and re.match(r"^\s*[a-z_]+\s*=", spec) is not None and "://" not in spec


def passwords(spec) -> list[str]:
    """The passwords a store's name carries, in every form it may be quoted in."""
    if not isinstance(spec, str) or not spec:
        return []
    found = [m.group("pw") for m in _USERINFO.finditer(spec)]
    found += [m.group("pw") for m in _KEYWORD.finditer(spec)]
    if "://" in spec:
        try:
            found += [v for k, v in parse_qsl(urlsplit(spec).query) if k.lower() in ("password", "sslpassword")]
        except ValueError:
            pass
    out: set[str] = set()
    for pw in found:
        if pw.startswith("'"):
            pw = re.sub(r"\\(.)", r"\1", pw.strip("'"))
        for form in (pw, unquote(pw), quote(pw, safe=""), quote(unquote(pw), safe="")):
            if len(form) >= 3:  # shorter values would mask ordinary text; the patterns still catch them
                out.add(form)
    return sorted(out, key=len, reverse=True)


def remember(spec) -> None:
    """Mask this store's password from now on, wherever it appears."""
    _KNOWN.update(passwords(spec))


def mask(text, *specs) -> str:
    """`text` with every store password masked (see the module's docstring)."""
    s = str(text)
    s = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", s)
    s = _KEYWORD.sub(lambda m: f"{m.group('head')}{MASK}", s)
    secrets = set(_KNOWN)
    for spec in (*specs, os.environ.get(_ENV_VAR)):
        secrets.update(passwords(spec))
    for pw in sorted(secrets, key=len, reverse=True):
        s = s.replace(pw, MASK)
    return s


def mask_data(value, *specs):
    """A JSON-like value (dicts, lists, strings) with every string masked."""
    if isinstance(value, str):
        return mask(value, *specs)
    if isinstance(value, dict):
        return {k: mask_data(v, *specs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_data(v, *specs) for v in value]
    return value
