"""The operator's bounds on per-instance values, in one place.

``[lmcaps] min_completion_timeout`` / ``max_completion_timeout`` (seconds;
``max = 0`` means unbounded and is the only case in which a per-instance
``completion_timeout`` of 0, "never", is allowed) and
``allowed_timeout_actions``.  Two uses:

* :func:`problems` — values an operator set (a request, flavor extra specs):
  out of bounds is a refusal, one reason per field;
* :func:`clamp` — values an instance owner set (nova instance metadata):
  never a refusal; a timeout is clamped into the bounds, a disallowed
  action is dropped, and each change is returned as a note.

The ``timeout_bounds`` pre-check and lmcaps's nova resolution both use these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf


@dataclasses.dataclass(frozen=True)
class Bounds:
    """``[lmcaps]`` bounds as read once.

    :param low: smallest completion_timeout in seconds (0 = no lower bound).
    :param high: largest completion_timeout in seconds (0 = unbounded, and
        then 0 "never" is allowed).
    :param actions: the timeout actions a per-instance value may choose.
    """

    low: int
    high: int
    actions: tuple[str, ...]

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Bounds:
        group = conf[lmcaps_conf.GROUP]
        return cls(low=int(group.min_completion_timeout),
                   high=int(group.max_completion_timeout),
                   actions=tuple(group.allowed_timeout_actions))

    def timeout_problem(self, seconds: float) -> str | None:
        """Why ``seconds`` (0 = never) is out of bounds, or None."""
        if not seconds:
            if self.high:
                return (f'completion_timeout 0 (never) is not allowed; '
                        f'allowed: {max(self.low, 1)} to {self.high} seconds')
            return None
        if seconds < self.low or (self.high and seconds > self.high):
            return (f'completion_timeout {seconds:g} is out of bounds; '
                    f"allowed: {self.low} to {self.high or 'unbounded'} "
                    f'seconds')
        return None

    def action_problem(self, action: str) -> str | None:
        """Why ``action`` is not allowed, or None."""
        if action in self.actions:
            return None
        return (f'timeout_action {action} is not allowed; allowed: '
                f"{', '.join(self.actions) or 'none'}")

    def clamp_timeout(self, seconds: int) -> int:
        """``seconds`` (0 = never) moved into the bounds."""
        if not seconds:
            return self.high          # never -> the longest allowed
        if self.high and seconds > self.high:
            return self.high
        return max(seconds, self.low)


def problems(conf: cfg.ConfigOpts, values: Mapping[str, Any]) -> list[str]:
    """Why operator-set ``values`` are out of bounds (empty when they are
    not); only ``completion_timeout`` and ``timeout_action`` are bounded."""
    bounds = Bounds.from_conf(conf)
    found = []
    if values.get('completion_timeout') is not None:
        found.append(bounds.timeout_problem(values['completion_timeout']))
    if values.get('timeout_action') is not None:
        found.append(bounds.action_problem(values['timeout_action']))
    return [text for text in found if text]


def clamp(conf: cfg.ConfigOpts, values: Mapping[str, Any], *,
          label: Mapping[str, str] | None = None
          ) -> tuple[dict[str, Any], list[str]]:
    """Owner-set ``values`` moved into the bounds.

    :param label: field -> how to name it in a note (e.g. the metadata key);
        default the field name.
    :returns: the values to use (a disallowed timeout_action removed) and
        one note per change, e.g. ``lmcaps:completion_timeout 1 clamped to
        60 ([lmcaps] min_completion_timeout)``.
    """
    bounds = Bounds.from_conf(conf)
    label = label or {}
    out = dict(values)
    notes = []
    seconds = values.get('completion_timeout')
    if seconds is not None and bounds.timeout_problem(seconds):
        out['completion_timeout'] = clamped = bounds.clamp_timeout(seconds)
        which = ('min_completion_timeout' if seconds and seconds < bounds.low
                 else 'max_completion_timeout')
        name = label.get('completion_timeout', 'completion_timeout')
        shown = f'{seconds} (never)' if not seconds else f'{seconds}'
        notes.append(f'{name} {shown} clamped to {clamped} '
                     f'([{lmcaps_conf.GROUP}] {which})')
    action = values.get('timeout_action')
    if action is not None and bounds.action_problem(action):
        del out['timeout_action']
        name = label.get('timeout_action', 'timeout_action')
        notes.append(f'{name} {action} ignored: not in '
                     f'[{lmcaps_conf.GROUP}] allowed_timeout_actions')
    return out, notes
