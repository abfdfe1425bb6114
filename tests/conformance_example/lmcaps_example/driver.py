"""Two lmcaps drivers over the ``examplehv`` client: one honest, one not."""

from __future__ import annotations

from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base

MIB = 1024 ** 2

_PHASES = {'running': base.Phase.PRECOPY, 'completed': base.Phase.COMPLETED,
           'cancelled': base.Phase.CANCELLED, 'failed': base.Phase.FAILED}
_STATES = {'running': base.RunState.RUNNING, 'paused': base.RunState.PAUSED}

_OPTS = [
    cfg.StrOpt('uri', default='sim://default',
               help='URI of the simulated cloud, sim://NAME.'),
]


class _SimBase(base.LiveMigrationDriver):
    """Starts and observes migrations; abort is left to subclasses."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._client: Any = None

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(_OPTS)

    def connect(self) -> None:
        if self._client is None:
            import examplehv  # the client library: imported lazily
            self._client = examplehv.connect(self.options.uri)

    def close(self) -> None:
        self._client = None

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        import examplehv
        self.connect()
        try:
            job = self._client.migrate(spec.instance, spec.destination.host,
                                       spec.bandwidth_mib)
            info = self._client.job_info(job)
        except examplehv.Error as exc:
            raise exception.DriverError(driver=self.name, reason=str(exc))
        return base.Migration(spec=spec,
                              data_gib=base.data_gib(int(info['total_mib']
                                                         * MIB)),
                              reference=str(job), backend=job)

    def _progress(self, migration: base.Migration) -> base.Progress:
        info = self._client.job_info(migration.backend)
        total = int(info['total_mib'] * MIB)
        copied = min(total, int(info['copied_mib'] * MIB))
        return base.Progress(phase=_PHASES[info['state']], data_total=total,
                             raw_state=info['state'], data_processed=copied,
                             data_remaining=total - copied,
                             memory_dirty_rate=int(info['dirty_mib'] * MIB))

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        """Ask the cloud which host has the guest and in which state."""
        info = self._client.guest_info(migration.spec.instance)
        host = (base.GuestHost.SOURCE if info['host'] == 'src' else
                base.GuestHost.DESTINATION if info['host'] ==
                migration.spec.destination.host else base.GuestHost.UNKNOWN)
        return base.GuestLocation(host, _STATES.get(info['state'],
                                                    base.RunState.UNKNOWN))


class SimDriver(_SimBase):
    """Honest: it can cancel a job, and has no way to force one to finish."""

    name = 'example_sim'

    @classmethod
    def declare(cls) -> caps.Declaration:
        no_force = ('The simulated hypervisor has neither post-copy nor a '
                    'pause during migration.')
        return caps.Declaration(
            driver=cls.name, title='Example (simulated hypervisor)',
            capabilities={
                caps.Operation.ABORT: caps.complete(
                    notes='Cancels the migration job.'),
                caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.missing(no_force),
                caps.Operation.FORCE_COMPLETE_PAUSE: caps.missing(no_force),
                caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete(
                    notes='Carried out by the lmcaps monitor (abort).'),
            })

    def _abort(self, migration: base.Migration) -> None:
        import examplehv
        try:
            self._client.cancel(migration.backend)
        except examplehv.Error as exc:
            raise exception.OperationRefused(
                driver=self.name, operation='abort', migration=migration.id,
                reason=str(exc))


class LiarDriver(_SimBase):
    """Declares abort complete, then raises NotImplementedError (as nova's)."""

    name = 'example_liar'

    @classmethod
    def declare(cls) -> caps.Declaration:
        decl = SimDriver.declare()
        return caps.Declaration(driver=cls.name, title='Example (liar)',
                                capabilities=decl.capabilities)

    def abort(self, migration: base.Migration) -> None:
        raise NotImplementedError()


class MisreportDriver(SimDriver):
    """Honest about what it can do, but infers where the guest is.

    It derives the location from the phase (completed: destination,
    running; anything else: source, running) instead of asking the cloud:
    the kit catches it when the guest's owner paused it.
    """

    name = 'example_misreport'

    @classmethod
    def declare(cls) -> caps.Declaration:
        decl = SimDriver.declare()
        return caps.Declaration(driver=cls.name, title='Example (misreport)',
                                capabilities=decl.capabilities)

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        phase = self._progress(migration).phase
        host = (base.GuestHost.DESTINATION if phase is base.Phase.COMPLETED
                else base.GuestHost.SOURCE)
        return base.GuestLocation(host, base.RunState.RUNNING)
