"""Validation of what callers send, at the edge, before any backend call.

Everything here raises :class:`~lmcaps.exception.InvalidInput` (an
``InvalidRequest``, so the command line exits 2) with one line that echoes
the input through :func:`echo`: at most :data:`ECHO_MAX` characters, with
control and format characters escaped.  What passes fits the event store's
columns, so the store never refuses what validation allowed.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from lmcaps import exception

#: Longest name (instance, domain, host) accepted, in characters; the
#: event store's ``host`` column and nova's instance names have this width.
NAME_MAX = 255
#: Longest request id accepted (nova's ``request_id`` column width).
REQUEST_ID_MAX = 255
#: Characters of an input repeated in an error message.
ECHO_MAX = 64
#: Digits an integer option may have (2**63 has 19).
INT_DIGITS_MAX = 19

#: Largest guest RAM accepted, in MiB (1 PiB).
RAM_MIB_MAX = 1 << 30

#: Namespace of the instance keys derived from names (uuid5).
NAME_NAMESPACE = uuid.UUID('6d1f2f4e-5b1a-4c7e-9a53-0c2b1f7d9e21')

_REQUEST_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._:+\-]*$')
#: Unicode categories never allowed in a name: control, format (bidi
#: overrides), surrogates, private use, unassigned, line/paragraph separators.
_BAD_CATEGORIES = frozenset({'Cc', 'Cf', 'Cs', 'Co', 'Cn', 'Zl', 'Zp'})


def escape(text: str) -> str:
    """``text`` with control and format characters as ``\\xNN``/``\\uNNNN``.

    Tab and newline are kept only when ``keep_newlines`` (see
    :func:`escape_text`); here every such character is escaped.
    """
    if text.isprintable():      # no C* or Z* character but space: as is
        return text
    return ''.join(_escape_char(c) for c in text)


def _escape_char(char: str) -> str:
    if unicodedata.category(char) not in _BAD_CATEGORIES:
        return char
    code = ord(char)
    if code < 0x100:
        return f'\\x{code:02x}'
    if code < 0x10000:
        return f'\\u{code:04x}'
    return f'\\U{code:08x}'


def escape_text(text: str | None) -> str | None:
    """Stored free text (details, tracebacks): escaped, newlines and tabs kept.

    NUL and other control characters become visible escapes, so that every
    database stores the text (PostgreSQL refuses NUL in text).
    """
    if text is None:
        return None
    return '\n'.join('\t'.join(escape(part) for part in line.split('\t'))
                     for line in text.split('\n'))


def echo(value: object, limit: int = ECHO_MAX) -> str:
    """An input as it may appear in an error: quoted, short, escaped."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = f'{escape(text[:limit])}... ({len(text)} characters)'
    else:
        text = escape(text)
    return f"'{text}'"


def _invalid(what: str, value: object, allowed: str) -> exception.InvalidInput:
    return exception.InvalidInput(what=what, value=echo(value),
                                  allowed=allowed)


def name(value: object, what: str = 'name') -> str:
    """A name: 1 to NAME_MAX printable characters, no surrounding spaces.

    :raises: InvalidInput.
    """
    allowed = (f'1 to {NAME_MAX} printable characters, without control '
               'characters or surrounding spaces')
    if not isinstance(value, str) or not value or len(value) > NAME_MAX \
            or value != value.strip() \
            or any(unicodedata.category(c) in _BAD_CATEGORIES
                   for c in value):
        raise _invalid(what, value, allowed)
    return value


def request_id(value: object) -> str:
    """A request id such as ``req-<uuid>``: letters, digits and ``._:+-``.

    :raises: InvalidInput.
    """
    if not isinstance(value, str) or len(value) > REQUEST_ID_MAX or \
            not _REQUEST_ID_RE.match(value):
        raise _invalid('request id', value,
                       f'1 to {REQUEST_ID_MAX} ASCII letters, digits and '
                       '._:+- starting with a letter or digit')
    return value


def instance_key(value: object, what: str = 'instance') -> str:
    """The UUID an instance's events are recorded under.

    A UUID is returned in canonical form; any other valid :func:`name` (a
    libvirt domain name, say) maps to a stable ``uuid5`` of it, so that the
    same name always finds the same events.

    :raises: InvalidInput.
    """
    text = name(value, what)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return str(uuid.uuid5(NAME_NAMESPACE, text))


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def bounded_int(text: str, what: str, minimum: int, maximum: int) -> int:
    """An integer from text, within ``[minimum, maximum]``.

    :raises: InvalidInput (never OverflowError or a huge echo).
    """
    stripped = text.strip() if isinstance(text, str) else ''
    digits = stripped.lstrip('+-')
    if not digits.isdigit() or not digits.isascii() or \
            len(digits) > INT_DIGITS_MAX:
        raise _invalid(what, text, f'an integer from {minimum} to {maximum}')
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise _invalid(what, text, f'an integer from {minimum} to {maximum}')
    return value
