"""Resolving a request, other per-instance layers and config into a policy."""

from __future__ import annotations

import dataclasses
import enum
import math
import types
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf

CONFIG = 'config'
REQUEST = 'request'


class TimeoutAction(enum.Enum):
    ABORT = 'abort'
    FORCE_COMPLETE = 'force_complete'


class ModeChoice(enum.Enum):
    """The force-complete mode asked for: a mode, or ``auto``."""

    AUTO = 'auto'
    POSTCOPY = 'postcopy'
    PAUSE = 'pause'


@dataclasses.dataclass(frozen=True)
class EffectivePolicy:
    """What the monitor will do, and where each value came from.

    :param completion_timeout: seconds after the start of the migration;
        None means never.
    :param force_complete_mode: the mode asked for (``auto`` included).
    :param sources: field name -> layer name (``request``, ``flavor``,
        ``config`` ...).
    :param mode: the force-complete mode chosen once for this host's
        declaration (:func:`choose_mode`); None when none is possible or
        the policy was resolved without a declaration.
    """

    completion_timeout: float | None
    timeout_action: TimeoutAction
    force_complete_mode: ModeChoice
    permit_post_copy: bool
    sources: Mapping[str, str]
    mode: caps.ForceCompleteMode | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'sources',
                           types.MappingProxyType(dict(self.sources)))

    @property
    def per_instance(self) -> bool:
        """True when any value came from a per-instance layer."""
        return any(src != CONFIG for src in self.sources.values())

    def as_dict(self) -> dict:
        return {
            'completion_timeout': self.completion_timeout,
            'timeout_action': self.timeout_action.value,
            'force_complete_mode': self.force_complete_mode.value,
            'mode': None if self.mode is None else self.mode.value,
            'permit_post_copy': self.permit_post_copy,
            'sources': dict(self.sources),
        }

    def describe(self) -> str:
        """One line: each value with its source, e.g. ``completion_timeout
        60s (flavor); timeout_action abort (config); force_complete_mode
        auto (config)``."""
        src = self.sources
        timeout = self.completion_timeout
        return (f"completion_timeout "
                f"{'never' if timeout is None else f'{timeout:g}s'} "
                f"({src.get('completion_timeout', CONFIG)}); timeout_action "
                f"{self.timeout_action.value} "
                f"({src.get('timeout_action', CONFIG)}); force_complete_mode "
                f"{self.force_complete_mode.value} "
                f"({src.get('force_complete_mode', CONFIG)})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EffectivePolicy:
        """The policy :meth:`as_dict` wrote (a persisted watch).

        :raises: ValueError, KeyError for a document that is not one.
        """
        timeout = data['completion_timeout']
        mode = data.get('mode')
        return cls(
            completion_timeout=None if timeout is None else float(timeout),
            timeout_action=TimeoutAction(data['timeout_action']),
            force_complete_mode=ModeChoice(data['force_complete_mode']),
            permit_post_copy=bool(data['permit_post_copy']),
            sources=dict(data['sources']),
            mode=None if mode is None else caps.ForceCompleteMode(mode))

    @property
    def prepare_for(self) -> frozenset[caps.Operation]:
        """What the migration must be started ready for."""
        if (self.timeout_action is TimeoutAction.FORCE_COMPLETE and
                self.mode is caps.ForceCompleteMode.POSTCOPY):
            return frozenset({caps.Operation.FORCE_COMPLETE_POSTCOPY})
        return frozenset()


def resolve(conf: cfg.ConfigOpts, data_gib: float,
            layers: Sequence[tuple[str, Mapping]] = (), *,
            declaration: caps.Declaration | None = None,
            permit_post_copy: bool | None = None) -> EffectivePolicy:
    """Resolve validated per-instance layers over ``[lmcaps]`` config.

    :param data_gib: data to transfer (see ``drivers.base.data_gib``); the
        configured per-GiB timeout is multiplied by it.
    :param layers: ``(name, values)`` pairs, first wins, e.g.
        ``[('request', body), ('flavor', extra_specs)]``; each already
        validated against ``request.REQUEST_SCHEMA``.
    :param declaration: the host's declaration: the force-complete mode is
        chosen here, once (``EffectivePolicy.mode``).
    :param permit_post_copy: the host's post-copy permit, when it is not
        ``[lmcaps] permit_post_copy`` (nova's ``[libvirt]`` option).
    """
    group = conf[lmcaps_conf.GROUP]
    sources: dict[str, str] = {}

    def pick(field: str, default: object) -> object:
        for name, values in layers:
            if values.get(field) is not None:
                sources[field] = name
                return values[field]
        sources[field] = CONFIG
        return default

    per_gib = group.completion_timeout_per_gib
    configured = per_gib * max(data_gib, 2.0) if per_gib else 0
    timeout = pick('completion_timeout', configured)
    action = TimeoutAction(pick('timeout_action', group.timeout_action))
    from lmcaps import exception
    from lmcaps import request as lmcaps_request
    seconds = float(timeout)  # type: ignore[arg-type]
    if seconds > lmcaps_request.MAX_TIMEOUT:
        raise exception.InvalidRequest(
            reason=f'completion_timeout {seconds:g} s (from '
                   f'{sources["completion_timeout"]}) is out of range; '
                   f'allowed: 0 to {lmcaps_request.MAX_TIMEOUT}')
    asked = ModeChoice(pick('force_complete_mode', group.force_complete_mode))
    policy = EffectivePolicy(
        completion_timeout=(float(timeout)  # type: ignore[arg-type]
                            if timeout else None),
        timeout_action=action,
        force_complete_mode=asked,
        permit_post_copy=(group.permit_post_copy if permit_post_copy is None
                          else permit_post_copy),
        sources=sources)
    if declaration is None:
        return policy
    return dataclasses.replace(policy, mode=choose_mode(policy, declaration))


def choose_mode(policy: EffectivePolicy,
                declaration: caps.Declaration) -> caps.ForceCompleteMode | None:
    """The force-complete mode to use, or None when none is possible.

    ``auto`` takes post-copy when permitted and usable on this host, else
    pause when usable.  An explicit mode is returned as is (the pre-checks
    refuse it if the host cannot do it).
    """
    if policy.force_complete_mode is not ModeChoice.AUTO:
        return caps.ForceCompleteMode(policy.force_complete_mode.value)
    if (policy.permit_post_copy and declaration.support(
            caps.Operation.FORCE_COMPLETE_POSTCOPY).usable):
        return caps.ForceCompleteMode.POSTCOPY
    if declaration.support(caps.Operation.FORCE_COMPLETE_PAUSE).usable:
        return caps.ForceCompleteMode.PAUSE
    return None


def deadline_reached(elapsed: float, timeout: float | None) -> bool:
    """True when ``elapsed`` is strictly past ``timeout`` (never at equality)."""
    return timeout is not None and not math.isnan(elapsed) and elapsed > timeout
