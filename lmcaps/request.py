"""The per-instance live-migration request and its validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from lmcaps import conf as lmcaps_conf
from lmcaps import exception

#: Largest completion_timeout accepted (a 32-bit signed int, as nova's DB).
MAX_TIMEOUT = 2 ** 31 - 1
#: Longest request body accepted, in characters, and deepest nesting.
MAX_BODY = 64 * 1024
MAX_DEPTH = 8

REQUEST_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'completion_timeout': {
            'type': 'integer', 'minimum': 0, 'maximum': MAX_TIMEOUT,
            'description': 'Absolute seconds before the timeout action '
                           'fires; 0 = never.',
        },
        'timeout_action': {
            'type': 'string', 'enum': list(lmcaps_conf.TIMEOUT_ACTIONS),
        },
        'force_complete_mode': {
            'type': 'string', 'enum': list(lmcaps_conf.FORCE_COMPLETE_MODES),
        },
    },
    'additionalProperties': False,
}

_VALIDATOR = jsonschema.Draft202012Validator(REQUEST_SCHEMA)
FIELDS = tuple(sorted(REQUEST_SCHEMA['properties']))


def _short(value: object) -> str:
    from lmcaps import validation
    text = validation.escape(repr(value))
    return text if len(text) <= 40 else text[:37] + '...'


def parse_json(text: str, what: str = '--request') -> Any:
    """Decode a JSON request body, refusing huge or deeply nested ones.

    :raises: InvalidRequest (never RecursionError or a huge echo).
    """
    from lmcaps import validation
    if len(text) > MAX_BODY:
        raise exception.InvalidRequest(
            reason=f'{what} is longer than {MAX_BODY} characters')
    depth = deepest = 0
    in_string = escaped = False
    for char in text:   # nesting, before the recursive decoder sees it
        if in_string:
            escaped = not escaped and char == '\\'
            if char == '"' and not escaped:
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in '[{':
            depth += 1
            deepest = max(deepest, depth)
        elif char in ']}':
            depth -= 1
    if deepest > MAX_DEPTH:
        raise exception.InvalidRequest(
            reason=f'{what} is nested deeper than {MAX_DEPTH} levels')
    try:
        return json.loads(text, object_pairs_hook=_unique_fields)
    except (ValueError, RecursionError) as exc:
        raise exception.InvalidRequest(
            reason=f'{what} is not valid JSON: '
                   f'{validation.escape(str(exc)[:200])}') from exc


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a field given twice (json keeps the last).

    :raises: ValueError naming the field.
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f'field {key!r} is given twice')
        out[key] = value
    return out


def _describe(error: jsonschema.ValidationError,
              schema: Mapping[str, Any]) -> str:
    """One human sentence naming the field and what is allowed."""
    path = '.'.join(str(p) for p in error.absolute_path) or 'request'
    v = error.validator
    if v == 'additionalProperties':
        known = sorted(schema.get('properties', {}))
        extra = sorted(str(k) for k in error.instance
                       if k not in schema.get('properties', {}))
        return (f"unknown field(s) {', '.join(repr(e) for e in extra)}; "
                f"allowed fields: {', '.join(known)}")
    if v == 'enum':
        return (f'{path}: {_short(error.instance)} is not allowed; allowed '
                f"values: {', '.join(error.validator_value)}")
    if v == 'type':
        sub = error.schema
        bounds = _bounds(sub)
        return (f'{path}: must be of type {error.validator_value}'
                f"{' ' + bounds if bounds else ''}, "
                f'got {type(error.instance).__name__} '
                f'{_short(error.instance)}')
    if v in ('minimum', 'maximum', 'exclusiveMinimum'):
        sub = error.schema
        return (f'{path}: {_short(error.instance)} is out of range; allowed: '
                f"{sub.get('type', 'number')} {_bounds(sub)}")
    return f'{path}: {error.message[:200]}'


def _bounds(sub: Mapping[str, Any]) -> str:
    """'from 0 to 86400', 'above 0 up to 86400', or '' without bounds."""
    if 'exclusiveMinimum' in sub:
        high = f" up to {sub['maximum']}" if 'maximum' in sub else ''
        return f"above {sub['exclusiveMinimum']}{high}"
    if 'minimum' in sub or 'maximum' in sub:
        return (f"from {sub.get('minimum', '-inf')} to "
                f"{sub.get('maximum', 'inf')}")
    return ''


def validate(body: object, schema: Mapping[str, Any] | None = None,
             validator: jsonschema.protocols.Validator | None = None
             ) -> dict[str, Any]:
    """Validate a request body and return a normalised copy.

    :param body: the decoded JSON body (a dict).
    :returns: a new dict with integers for integral numbers.
    :raises: InvalidRequest naming each bad field and the allowed values.
    """
    schema = schema or REQUEST_SCHEMA
    validator = validator or (_VALIDATOR if schema is REQUEST_SCHEMA
                              else jsonschema.Draft202012Validator(schema))
    if not isinstance(body, Mapping):
        raise exception.InvalidRequest(
            reason=f'the request must be a JSON object, got '
                   f'{type(body).__name__}; allowed fields: '
                   f"{', '.join(sorted(schema.get('properties', {})))}")
    bad_keys = [k for k in body if not isinstance(k, str)]
    if bad_keys:
        raise exception.InvalidRequest(
            reason=f'field names must be strings, got {_short(bad_keys[0])}')
    try:
        errors = sorted(validator.iter_errors(dict(body)),
                        key=lambda e: (list(map(str, e.absolute_path)),
                                       e.validator))
    except (RecursionError, ValueError, TypeError) as exc:
        raise exception.InvalidRequest(
            reason=f'the request could not be read: {exc}') from exc
    if errors:
        # one sentence a field: a wrong type (inf, nan) says the range too
        typed = {tuple(e.absolute_path) for e in errors
                 if e.validator == 'type'}
        errors = [e for e in errors if e.validator == 'type' or
                  tuple(e.absolute_path) not in typed]
        raise exception.InvalidRequest(
            reason='; '.join(_describe(e, schema) for e in errors))
    result = dict(body)
    for key, value in result.items():
        if isinstance(value, float) and value.is_integer():
            result[key] = int(value)
    return result
