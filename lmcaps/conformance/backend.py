"""The backend fixture interface: how the kit gets live migrations to test.

A driver maintainer subclasses :class:`Backend` once per backend (a real
pair of hypervisors, a simulator, the fake driver's clock) and names it on
the test class (``backend = MyBackend``) or on the command line
(``lmcaps conformance mydriver --backend mypkg.tests:MyBackend``).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

import fixtures
from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.drivers import base

GuestHost = base.GuestHost
RunState = base.RunState
GuestLocation = base.GuestLocation
SOURCE = base.GuestHost.SOURCE
DESTINATION = base.GuestHost.DESTINATION
RUNNING = base.RunState.RUNNING
PAUSED = base.RunState.PAUSED

#: Who must refuse an operation whose PARTIAL condition is not met.
PRECHECK = 'precheck'
DRIVER = 'driver'

#: Top-level modules of hypervisor clients that declaring must not import.
KNOWN_CLIENT_MODULES = (
    'libvirt', 'libvirtmod', 'oslo_vmware', 'pyVmomi', 'suds', 'XenAPI',
    'winrm', 'pypowervm', 'os_win', 'zeep', 'paramiko',
)


class Scenario(enum.Enum):
    """The kind of migration a test needs from the backend."""

    #: Does not converge on its own before the test's deadline (a guest that
    #: dirties memory faster than the link copies it).
    STUCK = 'stuck'
    #: Converges on its own within a few seconds (an idle guest).
    CONVERGING = 'converging'


Location = base.GuestLocation


class Fault(enum.Enum):
    """A fault a backend can inject, and what the kit then expects.

    Armed at :meth:`Backend.start` (``fault=``) and, for those that happen
    at a moment the kit chooses, brought about by :meth:`Backend.trigger`.
    """

    #: trigger(): the migration fails now, in pre-copy. Expected: FAILED,
    #: the guest observed running on the source.
    MIGRATION_FAILS = 'migration_fails'
    #: trigger() after the kit switched to post-copy: the destination dies.
    #: Expected: FAILED, the guest observed where it is (not "running").
    DESTINATION_DIES_IN_POSTCOPY = 'destination_dies_in_postcopy'
    #: trigger(): the guest's owner pauses it. Expected: the timeout action
    #: still ends the migration, and the guest is reported paused, as the
    #: backend shows it (lmcaps never resumes what it did not pause).
    OWNER_PAUSES = 'owner_pauses'
    #: armed: a cancel is accepted at once but takes effect only after
    #: ``Backend.slow_cancel`` seconds. Expected: abort() returns promptly,
    #: CANCELLING or the running phase meanwhile, then CANCELLED.
    SLOW_CANCEL = 'slow_cancel'
    #: armed: once a cancel is accepted, the migration completes before the
    #: cancel takes effect. Expected: COMPLETED, the guest on the destination.
    COMPLETES_DURING_CANCEL = 'completes_during_cancel'
    #: trigger(): the driver's session or connection is lost (expired,
    #: server restarted). Expected: the driver carries on (logs in again):
    #: progress stays readable and an abort still takes effect.
    SESSION_LOST = 'session_lost'


@dataclasses.dataclass(frozen=True)
class UnmetCondition:
    """One way a PARTIAL operation's condition is not met, and who refuses.

    :param description: what is not met, as shown in a failure.
    :param refused_by: :data:`PRECHECK` (the pre-checks must refuse the
        request) or :data:`DRIVER` (the call must raise OperationRefused or
        UnsupportedOperation and leave the migration as it was).
    :param config: option overrides, ``{group: {option: value}}``.
    :param prepare_for: start the migration prepared for these.
    :param prepare: brings the started migration into the state where the
        condition is unmet (e.g. switches it to post-copy); gets the driver,
        the migration and the kit's ``wait_for_phase(migration, phase)``.
    """

    description: str
    refused_by: str
    config: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict)
    prepare_for: frozenset[caps.Operation] = frozenset()
    prepare: Callable[..., None] | None = None

    def __post_init__(self) -> None:
        if self.refused_by not in (PRECHECK, DRIVER):
            raise ValueError(f'refused_by must be {PRECHECK!r} or '
                             f'{DRIVER!r}, not {self.refused_by!r}')


def _switch_to_postcopy(driver: base.LiveMigrationDriver,
                        migration: base.Migration,
                        wait_for_phase: Callable[..., Any]) -> None:
    driver.force_complete(migration, caps.ForceCompleteMode.POSTCOPY)
    wait_for_phase(migration, base.Phase.POSTCOPY)


class Backend(fixtures.Fixture, abc.ABC):
    """Provides live migrations for the driver under test; a fixture.

    Lifecycle, per test: ``setUp()`` (start services, create guests), then
    :meth:`configure` once the driver has registered its options, then
    :meth:`start` as often as the test needs, then ``cleanUp()`` which must
    stop every migration still running (whatever its driver declares).
    """

    #: Seconds a test waits for a migration to reach a phase it expects.
    settle_timeout: float = 60.0
    #: Seconds between two observations of a migration.
    poll_interval: float = 0.05
    #: Whole seconds: the per-instance completion_timeout of the timeout
    #: test. A CONVERGING migration must finish well before it; a STUCK one
    #: must still run well after it.
    completion_timeout: int = 3
    #: Seconds a STUCK migration is watched to prove it is still running.
    stuck_check: float = 0.3
    #: Extra top-level module names the driver must not import to declare.
    client_modules: tuple[str, ...] = ()
    #: The faults this backend can inject (the kit tests each of them).
    faults: frozenset[Fault] = frozenset()
    #: Seconds a SLOW_CANCEL cancel takes to take effect.
    slow_cancel: float = 1.5

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        """Set options for the driver under test (``conf.set_override``).

        Called after the driver registered its options in ``group``
        (``lmcaps_<name>``) and before ``connect()`` and
        ``host_declaration()``.
        """

    @abc.abstractmethod
    def start(self, driver: base.LiveMigrationDriver, scenario: Scenario,
              *, prepare_for: frozenset[caps.Operation] = frozenset(),
              fault: Fault | None = None) -> base.Migration:
        """Start a migration of a fresh guest fit for ``scenario``.

        Through the driver (``driver.start_migration(spec)``), with a spec
        whose ``prepare_for`` is the one given.

        :param fault: a fault to arm for this migration (one of
            :attr:`faults`), or None.
        """

    @abc.abstractmethod
    def locate(self, migration: base.Migration) -> base.GuestLocation:
        """Where the guest is, seen by the backend itself, not by the driver.

        Must not call the driver under test: read the simulator's model, or
        ask the hypervisors with a client of the backend's own.  Compared
        with the driver's ``guest_location()``: a driver that misreports
        fails the kit.  The ``detail`` field is not compared.
        """

    def trigger(self, migration: base.Migration, fault: Fault) -> None:
        """Bring ``fault`` about now on a running migration.

        Only called for faults in :attr:`faults` that happen at a moment of
        the kit's choosing (MIGRATION_FAILS, DESTINATION_DIES_IN_POSTCOPY,
        OWNER_PAUSES, SESSION_LOST).
        """
        raise NotImplementedError(f'{type(self).__name__} lists {fault} in '
                                  f'faults but does not trigger it')

    def unmet_conditions(self, operation: caps.Operation,
                         declaration: caps.Declaration
                         ) -> list[UnmetCondition]:
        """Cases where ``operation``'s PARTIAL condition is not met.

        The defaults cover the usual conditions: post-copy needs the
        operator's permit and a migration started post-copy capable; abort
        and pause are refused once in post-copy.  Override to add yours;
        a PARTIAL operation with no case here fails the kit.
        """
        postcopy_usable = declaration.support(
            caps.Operation.FORCE_COMPLETE_POSTCOPY).usable
        if operation is caps.Operation.FORCE_COMPLETE_POSTCOPY:
            return [
                UnmetCondition('[lmcaps] permit_post_copy is False', PRECHECK,
                               config={'lmcaps': {'permit_post_copy': False}}),
                UnmetCondition('the migration was started without postcopy',
                               DRIVER),
            ]
        if operation in (caps.Operation.ABORT,
                         caps.Operation.FORCE_COMPLETE_PAUSE) and \
                postcopy_usable:
            return [UnmetCondition('the migration is in post-copy', DRIVER,
                                   prepare_for=base.PREPARE_POSTCOPY,
                                   prepare=_switch_to_postcopy)]
        return []
