"""One way to hide secrets: in URLs, and in any text printed or logged.

:func:`mask_url` is the only function that renders a URL for people: a
database URL (``[lmcaps] event_connection``), a libvirt connection URI or a
migration destination.  It keeps the scheme, user, host and path, and
replaces with ``***``:

- the password of the userinfo, whatever characters it holds (an unescaped
  ``@``, ``/`` or ``:`` included: the userinfo ends at the *last* ``@``);
- the value of each query parameter whose name says secret (``password``,
  ``sslpassword``, ``passwd``, ``pwd``, ``secret``, ``token``...);
- the whole text when it is not ``scheme://...`` at all (a typo in a URL
  may put the password anywhere).

SQLAlchemy's own parser (:func:`sqlalchemy.engine.make_url`) renders the
URL when it parses it unambiguously; the generic rules above cover the rest.

:func:`remember` records the secret parts of a URL (or any secret option
value) so that :func:`scrub` can remove them from text that did not pass
through :func:`mask_url`: tracebacks, third-party messages, log records.
:class:`ScrubFilter` applies :func:`scrub` to log records.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse

MASK = '***'

_SCHEME_RE = re.compile(r'^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$',
                        re.S)
_SECRET_KEY_RE = re.compile(
    r'pass|pwd|secret|token|credential', re.I)
#: Secrets shorter than this are not scrubbed from free text (they would
#: blank ordinary words); they are still masked inside URLs.
MIN_SCRUB = 3

_lock = threading.Lock()
_secrets: set[str] = set()


def _split(text: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, rest-of-authority-and-path, query) or None."""
    match = _SCHEME_RE.match(text)
    if not match:
        return None
    scheme, rest = match['scheme'], match['rest']
    userinfo = ''
    if '@' in rest:
        userinfo, _at, rest = rest.rpartition('@')
    before, sep, query = rest.partition('?')
    return scheme, userinfo, before, query if sep else ''


def _mask_userinfo(userinfo: str) -> str:
    if not userinfo:
        return ''
    if '@' in userinfo or '?' in userinfo or '/' in userinfo:
        return f'{MASK}@'   # ambiguous: it all may be the password
    user, colon, _password = userinfo.partition(':')
    return f'{user}:{MASK}@' if colon else f'{user}@'


def _mask_query(query: str) -> str:
    parts = []
    for pair in re.split(r'([&;])', query):
        if pair in ('&', ';'):
            parts.append(pair)
            continue
        key, eq, _value = pair.partition('=')
        if eq and _SECRET_KEY_RE.search(urllib.parse.unquote_plus(key)):
            parts.append(f'{key}={MASK}')
        else:
            parts.append(pair)
    return ''.join(parts)


def _sqlalchemy_render(text: str) -> str | None:
    """SQLAlchemy's rendering without the password, if it parses cleanly."""
    if text.count('@') > 1:
        return None   # make_url would split a password at its first '@'
    try:
        from sqlalchemy.engine import make_url
        url = make_url(text)
    except Exception:  # noqa: BLE001 - any failure: use the generic rules
        return None
    return url.render_as_string(hide_password=True)


def mask_url(url: object) -> str:
    """``url`` (a string or an SQLAlchemy URL) with its secrets as ``***``.

    :returns: text safe to print; ``***`` as a whole for what is not a URL.
    """
    if url is None:
        return ''
    if hasattr(url, 'render_as_string'):
        text = url.render_as_string(hide_password=True)
    else:
        text = _sqlalchemy_render(str(url)) or str(url)
    parts = _split(text)
    if parts is None:
        return MASK
    scheme, userinfo, before, query = parts
    if userinfo == MASK or userinfo.endswith(':' + MASK):
        masked_user = userinfo + '@'
    else:
        masked_user = _mask_userinfo(userinfo)
    out = f'{scheme}://{masked_user}{before}'
    if query:
        out += '?' + _mask_query(query)
    return out


def secrets_of(url: object) -> set[str]:
    """The secret parts of ``url``: password, secret query values, or all.

    Also their percent-decoded forms, as libraries may print either.
    """
    text = str(url or '')
    found: set[str] = set()
    parts = _split(text)
    if parts is None:
        if text:
            found.add(text)
        return _with_decoded(found)
    _scheme, userinfo, _before, query = parts
    if userinfo:
        if '@' in userinfo or '?' in userinfo or '/' in userinfo:
            found.add(userinfo)
            found.update(userinfo.split('@'))
        _user, colon, password = userinfo.partition(':')
        if colon and password:
            found.add(password)
            found.update(p for p in password.split('@') if p)
    for pair in re.split(r'[&;]', query):
        key, eq, value = pair.partition('=')
        if eq and value and _SECRET_KEY_RE.search(
                urllib.parse.unquote_plus(key)):
            found.add(value)
    return _with_decoded(found)


def _with_decoded(found: set[str]) -> set[str]:
    out = set(found)
    for value in found:
        out.add(urllib.parse.unquote(value))
        out.add(urllib.parse.unquote_plus(value))
    return {v for v in out if v}


def remember(*values: object, url: bool = True) -> None:
    """Record secrets so that :func:`scrub` removes them from any text.

    :param values: URLs (their secret parts are recorded) or, with
        ``url=False``, secret values recorded whole.
    """
    new: set[str] = set()
    for value in values:
        if value is None or value == '':
            continue
        new.update(secrets_of(value) if url else {str(value)})
    with _lock:
        _secrets.update(v for v in new if len(v) >= MIN_SCRUB)


def forget() -> None:
    """Drop every remembered secret (tests, or a new configuration)."""
    with _lock:
        _secrets.clear()


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs remembered secrets from each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format: leave it to logging
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(
                record.exc_info)
        record.msg = scrub(message)
        record.args = None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
