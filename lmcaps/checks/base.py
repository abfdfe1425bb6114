"""The pre-check plugin API: fast, synchronous, a verdict and a reason."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import policy as lmcaps_policy


@dataclasses.dataclass(frozen=True)
class CheckContext:
    """What a pre-check looks at; nothing in it is changed by a check.

    :param request: the validated per-instance values (may be empty).
    :param declaration: the driver's declaration refined for this host.
    :param options: lmcaps option name -> the name of the option that
        holds that value on this host, for messages (an embedding host such
        as nova: ``permit_post_copy`` -> ``[libvirt]
        live_migration_permit_post_copy``); see :meth:`option`.
    """

    instance: str
    policy: lmcaps_policy.EffectivePolicy
    declaration: caps.Declaration
    conf: cfg.ConfigOpts
    request: dict = dataclasses.field(default_factory=dict)
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def option(self, name: str) -> str:
        """How to name lmcaps option ``name`` in a message on this host
        (default ``[lmcaps] name``)."""
        return self.options.get(name) or f'[{lmcaps_conf.GROUP}] {name}'


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's verdict (ironic's ``{result, reason}`` shape)."""

    name: str
    passed: bool
    reason: str = ''

    def as_dict(self) -> dict:
        return {'check': self.name, 'result': self.passed,
                'reason': self.reason}


class PreCheck(abc.ABC):
    """Base class of the plugins in the ``lmcaps.checks`` namespace."""

    #: Entry-point name.
    name: ClassVar[str] = ''
    #: One line for ``lmcaps check`` and the docs.
    description: ClassVar[str] = ''

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @abc.abstractmethod
    def check(self, ctx: CheckContext) -> CheckResult:
        """Return the verdict; must be fast and free of side effects."""

    def ok(self, reason: str = '') -> CheckResult:
        return CheckResult(self.name, True, reason)

    def fail(self, reason: str) -> CheckResult:
        return CheckResult(self.name, False, reason)
