"""The capability model: what a driver says it can do during a live migration."""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Mapping

from lmcaps import exception

#: Version of the declaration format; bump the minor on additive changes.
DECLARATION_VERSION = '1.0'


class Operation(enum.Enum):
    """An operation a driver may support on a running live migration."""

    ABORT = 'abort'
    FORCE_COMPLETE_POSTCOPY = 'force_complete_postcopy'
    FORCE_COMPLETE_PAUSE = 'force_complete_pause'
    PER_INSTANCE_TIMEOUT = 'per_instance_timeout'

    @property
    def title(self) -> str:
        return _TITLES[self]


_TITLES = {
    Operation.ABORT: 'Abort a running live migration',
    Operation.FORCE_COMPLETE_POSTCOPY:
        'Force-complete a live migration by switching to post-copy',
    Operation.FORCE_COMPLETE_PAUSE:
        'Force-complete a live migration by pausing the guest',
    Operation.PER_INSTANCE_TIMEOUT:
        'Per-instance completion timeout and timeout action',
}


class Support(enum.Enum):
    """Support level, in nova's support-matrix vocabulary."""

    COMPLETE = 'complete'
    PARTIAL = 'partial'
    MISSING = 'missing'
    UNKNOWN = 'unknown'

    @property
    def usable(self) -> bool:
        """Whether an operation at this level may be attempted at all."""
        return self in (Support.COMPLETE, Support.PARTIAL)


class ForceCompleteMode(enum.Enum):
    """How a force-complete is carried out."""

    POSTCOPY = 'postcopy'
    PAUSE = 'pause'

    @property
    def operation(self) -> Operation:
        if self is ForceCompleteMode.POSTCOPY:
            return Operation.FORCE_COMPLETE_POSTCOPY
        return Operation.FORCE_COMPLETE_PAUSE


@dataclasses.dataclass(frozen=True)
class Capability:
    """One operation's support level with its explanation.

    :param support: the level.
    :param notes: free text shown in the matrix (why partial/missing).
    :param requires: versions or settings needed, e.g. ``libvirt>=1.3.3``.
    :param condition: for ``partial``: what decides at run time.
    """

    support: Support
    notes: str = ''
    requires: str = ''
    condition: str = ''

    def __post_init__(self) -> None:
        if not isinstance(self.support, Support):
            raise TypeError(f'support must be a Support, not {self.support!r}')


@dataclasses.dataclass(frozen=True)
class Declaration:
    """Everything a driver says it supports; one entry per :class:`Operation`.

    :param driver: the entry-point name (``libvirt``).
    :param title: a human title (``libvirt (KVM/QEMU)``).
    :param capabilities: a mapping covering every :class:`Operation`.
    :param host: set when the declaration was refined for one host.
    :param facts: what the refinement was based on (versions, permits).
    """

    driver: str
    title: str
    capabilities: Mapping[Operation, Capability]
    host: str | None = None
    facts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    version: str = DECLARATION_VERSION

    def __post_init__(self) -> None:
        caps = dict(self.capabilities)
        bad = [k for k in caps if not isinstance(k, Operation)]
        if bad:
            raise exception.InvalidDeclaration(
                driver=self.driver,
                reason=f'keys must be Operation members, got {bad!r}')
        missing = [op.value for op in Operation if op not in caps]
        if missing:
            raise exception.InvalidDeclaration(
                driver=self.driver,
                reason='no entry for ' + ', '.join(missing) +
                       ' (declare MISSING explicitly)')
        for op, cap in caps.items():
            if not isinstance(cap, Capability):
                raise exception.InvalidDeclaration(
                    driver=self.driver,
                    reason=f'{op.value} must map to a Capability')
        object.__setattr__(self, 'capabilities', types.MappingProxyType(
            {op: caps[op] for op in Operation}))
        object.__setattr__(self, 'facts',
                           types.MappingProxyType(dict(self.facts)))

    def support(self, operation: Operation) -> Support:
        return self.capabilities[operation].support

    def __getitem__(self, operation: Operation) -> Capability:
        return self.capabilities[operation]

    def refine(self, host: str, facts: Mapping[str, str] | None = None,
               **changes: Capability) -> Declaration:
        """Return a copy for one host with some operations' entries replaced.

        :param changes: keyword per :class:`Operation` value, e.g.
            ``force_complete_postcopy=Capability(Support.MISSING, ...)``.
        """
        caps = dict(self.capabilities)
        for key, cap in changes.items():
            caps[Operation(key)] = cap
        return dataclasses.replace(self, capabilities=caps, host=host,
                                   facts=dict(facts or {}))

    def as_dict(self) -> dict:
        """Plain, JSON-serialisable form (stable keys, versioned)."""
        return {
            'driver': self.driver,
            'title': self.title,
            'version': self.version,
            'host': self.host,
            'facts': dict(self.facts),
            'operations': {
                op.value: {
                    'support': cap.support.value,
                    'notes': cap.notes,
                    'requires': cap.requires,
                    'condition': cap.condition,
                } for op, cap in self.capabilities.items()
            },
        }


def complete(notes: str = '', requires: str = '') -> Capability:
    return Capability(Support.COMPLETE, notes=notes, requires=requires)


def partial(condition: str, notes: str = '', requires: str = '') -> Capability:
    return Capability(Support.PARTIAL, notes=notes, requires=requires,
                      condition=condition)


def missing(notes: str) -> Capability:
    return Capability(Support.MISSING, notes=notes)
