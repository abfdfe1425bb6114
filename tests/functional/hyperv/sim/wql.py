"""A WQL parser for the simulator's filtered enumerations.

WQL is WMI's subset of SQL ("WQL (SQL for WMI)",
https://learn.microsoft.com/en-us/windows/win32/wmisdk/wql-sql-for-wmi).
The parts modelled here are those a data query uses:
``SELECT * | prop[, prop] FROM Class [WHERE condition]`` with ``AND``,
``OR``, ``NOT``, parentheses, the comparison operators ``= <> != < > <= >=``
and ``IS [NOT] NULL``.  String literals are quoted with ``'`` or ``"``; the
backslash escapes the next character, so ``\\'`` is a quote and ``\\\\`` a
backslash ("WQL Operators" / "WHERE Clause": a backslash in a literal must
be escaped).  String comparisons are case-insensitive, as WMI makes them.

Anything else is a syntax error (:class:`WQLError`), which the WS-Management
layer turns into the ``wsen:CannotProcessFilter`` fault: a string that a
client failed to escape can only ever fail to parse or compare as data;
nothing in it is executed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<op><>|!=|<=|>=|=|<|>)
  | (?P<punct>[(),*])
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quote>['"])
""", re.VERBOSE)

_KEYWORDS = {'SELECT', 'FROM', 'WHERE', 'AND', 'OR', 'NOT', 'IS', 'NULL',
             'TRUE', 'FALSE'}


class WQLError(ValueError):
    """The text is not a WQL data query this parser understands."""


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed ``SELECT``: the class, the properties, the condition."""

    class_name: str
    properties: tuple[str, ...]      # () = '*'
    where: Predicate

    def matches(self, row: Row) -> bool:
        return self.where(row)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise WQLError(f'unexpected character {text[pos]!r} at {pos}')
        kind = match.lastgroup
        if kind == 'quote':
            value, pos = _string(text, match.end(), match.group())
            tokens.append(('str', value))
            continue
        pos = match.end()
        if kind == 'ws':
            continue
        word = match.group()
        if kind == 'ident' and word.upper() in _KEYWORDS:
            tokens.append(('kw', word.upper()))
        elif kind == 'num':
            tokens.append(('num', float(word) if '.' in word else int(word)))
        else:
            tokens.append((kind or '', word))
    return tokens


def _string(text: str, pos: int, quote: str) -> tuple[str, int]:
    out = []
    while pos < len(text):
        char = text[pos]
        if char == '\\':
            if pos + 1 >= len(text):
                break
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == quote:
            return ''.join(out), pos + 1
        out.append(char)
        pos += 1
    raise WQLError('unterminated string literal')


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return False
    if isinstance(left, bool) or isinstance(right, bool):
        left, right = bool(left), bool(right)
    elif isinstance(left, (int, float)) and isinstance(right, str):
        try:
            right = type(left)(right)
        except ValueError:
            return False
    left, right = _fold(left), _fold(right)
    try:
        return {'=': left == right, '<>': left != right, '!=': left != right,
                '<': left < right, '>': left > right, '<=': left <= right,
                '>=': left >= right}[op]
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (
            'end', None)

    def take(self, kind: str, value: Any = None) -> Any:
        tok_kind, tok_value = self.peek()
        if tok_kind != kind or (value is not None and tok_value != value):
            raise WQLError(f'expected {value or kind}, found '
                           f'{tok_value or tok_kind!r}')
        self.pos += 1
        return tok_value

    def accept(self, kind: str, value: Any = None) -> bool:
        tok_kind, tok_value = self.peek()
        if tok_kind == kind and (value is None or tok_value == value):
            self.pos += 1
            return True
        return False

    def query(self) -> Query:
        self.take('kw', 'SELECT')
        props: list[str] = []
        if not self.accept('punct', '*'):
            props.append(self.take('ident'))
            while self.accept('punct', ','):
                props.append(self.take('ident'))
        self.take('kw', 'FROM')
        class_name = self.take('ident')
        where: Predicate = lambda _row: True   # noqa: E731
        if self.accept('kw', 'WHERE'):
            where = self.disjunction()
        if self.peek()[0] != 'end':
            raise WQLError(f'unexpected {self.peek()[1]!r} after the query')
        return Query(class_name, tuple(props), where)

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.accept('kw', 'OR'):
            parts.append(self.conjunction())
        return lambda row: any(p(row) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.accept('kw', 'AND'):
            parts.append(self.negation())
        return lambda row: all(p(row) for p in parts)

    def negation(self) -> Predicate:
        if self.accept('kw', 'NOT'):
            inner = self.negation()
            return lambda row: not inner(row)
        if self.accept('punct', '('):
            inner = self.disjunction()
            self.take('punct', ')')
            return inner
        return self.comparison()

    def operand(self) -> tuple[str, Any]:
        kind, value = self.peek()
        if kind in ('ident', 'str', 'num'):
            self.pos += 1
            return kind, value
        if kind == 'kw' and value in ('TRUE', 'FALSE', 'NULL'):
            self.pos += 1
            return 'lit', {'TRUE': True, 'FALSE': False, 'NULL': None}[value]
        raise WQLError(f'expected a property or a literal, found '
                       f'{value or kind!r}')

    def comparison(self) -> Predicate:
        left = self.operand()
        if self.accept('kw', 'IS'):
            negate = self.accept('kw', 'NOT')
            self.take('kw', 'NULL')
            if left[0] != 'ident':
                raise WQLError('IS NULL needs a property')
            name = left[1]
            return lambda row: (_get(row, name) is None) != negate
        op = self.take('op')
        right = self.operand()
        if left[0] != 'ident' and right[0] != 'ident':
            raise WQLError('a comparison needs a property on one side')

        def value(side: tuple[str, Any], row: Row) -> Any:
            return _get(row, side[1]) if side[0] == 'ident' else side[1]
        return lambda row: _compare(op, value(left, row), value(right, row))


def _get(row: Row, name: str) -> Any:
    folded = name.casefold()
    for key, value in row.items():
        if key.casefold() == folded:
            return value
    raise WQLError(f'no property {name!r}')


def parse(text: str) -> Query:
    """Parse a WQL data query.

    :raises: WQLError for anything that is not one.
    """
    return _Parser(_tokenize(text)).query()
