"""Drain policies by selector: ordered rules in a YAML file.

A policy file (``lmcaps drain --policy-file``) is read with PyYAML's
``safe_load`` and validated by :data:`POLICY_FILE_SCHEMA`::

    rules:
      - name: databases                 # optional, shown in sources
        match:                          # every criterion given must hold
          name: "db-*"                  # fnmatch glob on the guest name
          labels: {tier: db}            # each key equal to its value
          ram_mib: {min: 4096, max: 65536}   # inclusive, MiB
        policy:
          completion_timeout: 600       # absolute seconds (0 = never), or
          completion_timeout_per_gib: 100    # seconds per GiB of data
          timeout_action: abort         # abort | force_complete
          force_complete_mode: pause    # auto | postcopy | pause
          bandwidth_mib: 200            # MiB/s
          priority: 10                  # higher first

Of the rules that match a guest the most specific wins: the one with the
most ``match.labels``; on a tie, the one with more other criteria
(``name``, ``ram_mib``); on a tie, the one first in the file.  Only the
winning rule's values are used; what it leaves unset comes from lower
layers (``[lmcaps]`` configuration).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from lmcaps import exception
from lmcaps import request as lmcaps_request
from lmcaps.drivers import base

#: Largest policy file read, in bytes.
MAX_FILE = 1024 * 1024

_REQUEST = lmcaps_request.REQUEST_SCHEMA['properties']
_RULE_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'name': {'type': 'string', 'minLength': 1, 'maxLength': 64},
        'match': {
            'type': 'object',
            'properties': {
                'name': {'type': 'string', 'minLength': 1,
                         'maxLength': 255},
                'labels': {
                    'type': 'object',
                    'additionalProperties': {'type': 'string'},
                },
                'ram_mib': {
                    'type': 'object',
                    'properties': {
                        'min': {'type': 'integer', 'minimum': 0},
                        'max': {'type': 'integer', 'minimum': 0},
                    },
                    'additionalProperties': False,
                },
            },
            'additionalProperties': False,
        },
        'policy': {
            'type': 'object',
            'properties': {
                'completion_timeout': _REQUEST['completion_timeout'],
                'completion_timeout_per_gib': {
                    'type': 'number', 'exclusiveMinimum': 0,
                    'maximum': 86400,
                },
                'timeout_action': _REQUEST['timeout_action'],
                'force_complete_mode': _REQUEST['force_complete_mode'],
                'bandwidth_mib': {'type': 'integer', 'minimum': 1,
                                  'maximum': 2 ** 31 - 1},
                'priority': {'type': 'integer', 'minimum': -1000,
                             'maximum': 1000},
            },
            'additionalProperties': False,
            'not': {'required': ['completion_timeout',
                                 'completion_timeout_per_gib']},
        },
    },
    'required': ['policy'],
    'additionalProperties': False,
}

POLICY_FILE_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {'rules': {'type': 'array', 'items': _RULE_SCHEMA}},
    'required': ['rules'],
    'additionalProperties': False,
}

_VALIDATOR = jsonschema.Draft202012Validator(POLICY_FILE_SCHEMA)

#: The fields of the request a rule can give (the rest are drain fields).
REQUEST_FIELDS = ('completion_timeout', 'timeout_action',
                  'force_complete_mode')


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule of a policy file.

    :param index: its position in ``rules`` (0 first).
    :param labels: labels the guest must have, ``{key: value}``.
    :param ram_min, ram_max: inclusive RAM bounds in MiB (None: open).
    :param policy: the values it gives (see the module docstring).
    """

    index: int
    name: str | None
    glob: str | None
    labels: Mapping[str, str]
    ram_min: int | None
    ram_max: int | None
    policy: Mapping[str, Any]

    @property
    def source(self) -> str:
        """How values from this rule are attributed (``policy rule 2 (db)``)."""
        text = f'policy rule {self.index}'
        return f'{text} ({self.name})' if self.name else text

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Larger wins: labels, other criteria, then earlier in the file."""
        others = (self.glob is not None) + (
            self.ram_min is not None or self.ram_max is not None)
        return (len(self.labels), others, -self.index)

    def matches(self, guest: base.GuestInfo) -> bool:
        if self.glob is not None and not fnmatch.fnmatchcase(guest.name,
                                                             self.glob):
            return False
        if any(guest.labels.get(k) != v for k, v in self.labels.items()):
            return False
        if self.ram_min is not None and guest.ram_mib < self.ram_min:
            return False
        if self.ram_max is not None and guest.ram_mib > self.ram_max:
            return False
        return True


def _path(error: jsonschema.ValidationError) -> str:
    parts = list(error.absolute_path)
    text = ''
    for part in parts:
        text += f'[{part}]' if isinstance(part, int) else (
            f'.{part}' if text else str(part))
    return text or 'the file'


def _describe(error: jsonschema.ValidationError) -> str:
    """One sentence naming the rule index, the field and what is allowed."""
    path = _path(error)
    if error.validator == 'not':
        return (f'{path}: give completion_timeout or '
                f'completion_timeout_per_gib, not both')
    if error.validator == 'required':
        return f'{path}: {error.message}'
    text = lmcaps_request._describe(error, error.schema)
    dotted = '.'.join(str(p) for p in error.absolute_path)
    prefix = dotted or 'request'
    if text.startswith(prefix):
        text = path + text[len(prefix):]
    elif error.validator == 'additionalProperties':
        text = f'{path}: {text}'
    return text


def parse(document: Any, path: str = '-') -> list[Rule]:
    """The rules of a decoded policy document, validated.

    :raises: InvalidPolicyFile naming the rule index, the field and the
        allowed values (the first ten errors, in order).
    """
    errors = sorted(_VALIDATOR.iter_errors(document),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise exception.InvalidPolicyFile(
            path=path, reason='; '.join(_describe(e) for e in errors[:10]))
    fields = _RULE_SCHEMA['properties']['policy']['properties']
    for index, raw in enumerate(document['rules']):
        for key, value in raw['policy'].items():
            # NaN passes every JSON-schema bound (comparisons are false)
            if isinstance(value, float) and math.isnan(value):
                sub = fields[key]
                raise exception.InvalidPolicyFile(path=path, reason=(
                    f'rules[{index}].policy.{key}: nan is out of range; '
                    f"allowed: {sub.get('type', 'number')} "
                    f'{lmcaps_request._bounds(sub)}'))
    rules = []
    for index, raw in enumerate(document['rules']):
        match = raw.get('match') or {}
        ram = match.get('ram_mib') or {}
        if ram.get('min') is not None and ram.get('max') is not None and \
                ram['min'] > ram['max']:
            raise exception.InvalidPolicyFile(
                path=path, reason=(
                    f'rules[{index}].match.ram_mib: min {ram["min"]} is '
                    f'above max {ram["max"]}; allowed: min <= max'))
        rules.append(Rule(index=index, name=raw.get('name'),
                          glob=match.get('name'),
                          labels=dict(match.get('labels') or {}),
                          ram_min=ram.get('min'), ram_max=ram.get('max'),
                          policy=dict(raw['policy'])))
    return rules


def load(path: str) -> list[Rule]:
    """Read and validate a policy file.

    :raises: InvalidPolicyFile for a file that is missing, not a small
        regular UTF-8 file, not YAML, or not valid (naming the rule and
        field).
    """
    import yaml
    from lmcaps import validation
    shown = validation.echo(path)

    def bad(reason: str) -> exception.InvalidPolicyFile:
        return exception.InvalidPolicyFile(path=shown, reason=reason)

    if not os.path.isfile(path):
        raise bad('no such regular file; allowed: an existing YAML file')
    if os.path.getsize(path) > MAX_FILE:
        raise bad(f'larger than {MAX_FILE} bytes; allowed: at most that')
    try:
        with open(path, encoding='utf-8') as f:
            document = yaml.load(f, Loader=_unique_keys_loader())
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f'not a readable UTF-8 file: '
                  f'{validation.escape(str(exc))[:200]}') from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = '' if mark is None else \
            f' at line {mark.line + 1}, column {mark.column + 1}'
        problem = getattr(exc, 'problem', None) or exc
        raise bad(f'not YAML{where}: '
                  f'{validation.escape(str(problem))[:200]}') from exc
    return parse(document, shown)


def _unique_keys_loader() -> type:
    """PyYAML's SafeLoader, refusing a key given twice in one mapping.

    YAML 1.2 requires keys to be unique; PyYAML keeps the last one
    silently, so ``{priority: 1, priority: 2}`` would lose a value.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    twice = key in seen
                except TypeError:       # unhashable: the base class says so
                    break
                if twice:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'key {key!r} given twice in one mapping',
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)
    return Loader


def winner(rules: Sequence[Rule], guest: base.GuestInfo) -> Rule | None:
    """The most specific rule matching ``guest`` (None when none does)."""
    found = [r for r in rules if r.matches(guest)]
    return max(found, key=lambda r: r.specificity) if found else None


@dataclasses.dataclass(frozen=True)
class GuestPolicy:
    """A guest's per-instance layers and drain values, each with its source.

    :param layers: ``(source, request values)`` pairs, first wins, for
        :func:`lmcaps.precheck.run` (``[lmcaps]`` config comes after).
    :param priority, bandwidth_mib: ``(value, source)``; bandwidth None
        means the driver's default.
    :param rule: the winning rule, if any.
    """

    layers: tuple[tuple[str, Mapping[str, Any]], ...]
    priority: tuple[int, str]
    bandwidth_mib: tuple[int | None, str]
    rule: Rule | None


COMMAND_LINE = 'command line'


def for_guest(rules: Sequence[Rule], guest: base.GuestInfo, data_gib: float,
              command_line: Mapping[str, Any]) -> GuestPolicy:
    """Resolve a guest's layers: command line, then the winning rule.

    :param data_gib: the data the migration moves (per-GiB timeouts).
    :param command_line: validated request values and ``bandwidth_mib``,
        ``priority`` given on the command line (they apply to every guest).
    """
    rule = winner(rules, guest)
    cli = {k: v for k, v in command_line.items()
           if k in REQUEST_FIELDS and v is not None}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if cli:
        layers.append((COMMAND_LINE, cli))
    if rule is not None:
        values = {k: v for k, v in rule.policy.items()
                  if k in REQUEST_FIELDS}
        per_gib = rule.policy.get('completion_timeout_per_gib')
        if per_gib is not None:
            values['completion_timeout'] = int(math.ceil(
                per_gib * max(data_gib, 2.0)))
        if values:
            layers.append((rule.source, values))

    def pick(field: str, default: Any) -> tuple[Any, str]:
        if command_line.get(field) is not None:
            return command_line[field], COMMAND_LINE
        if rule is not None and rule.policy.get(field) is not None:
            return rule.policy[field], rule.source
        return default, 'default' if field == 'priority' else 'config'

    return GuestPolicy(layers=tuple(layers), priority=pick('priority', 0),
                       bandwidth_mib=pick('bandwidth_mib', None), rule=rule)


def unmatched(rules: Sequence[Rule],
              guests: Sequence[base.GuestInfo]) -> list[Rule]:
    """The rules that match none of ``guests`` (a warning, not an error)."""
    return [r for r in rules if not any(r.matches(g) for g in guests)]
