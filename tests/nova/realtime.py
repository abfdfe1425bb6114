"""nova's ``_live_migration_monitor`` on the real clock, over nova's fake libvirt.

Unlike :class:`tests.nova.base.MonitorRun` (a scripted, mocked clock), the
loop here runs as in nova-compute: ``time.time`` and its 0.5 s
``time.sleep`` are nova's own, so lmcaps's timer and nova's passes race as
they do in production.  The job never converges: it runs until an action
takes effect on the fake domain, then ends (``end_after`` seconds later):
abort → cancelled, post-copy → completed, pause → completed.

Shared by the tests (``tests/nova/test_timer.py``) and the benchmark
(``benchmarks/bench_nova_monitor.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any
from unittest import mock

import futurist
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest

from lmcaps.nova import monitor

#: The fake domain's calls recorded, by the name used in :class:`Job`.
ACTIONS = {'abort': 'abortJob', 'postcopy': 'migrateStartPostCopy',
           'pause': 'suspend'}
_ENDS = {'abort': fakelibvirt.VIR_DOMAIN_JOB_CANCELLED,
         'postcopy': fakelibvirt.VIR_DOMAIN_JOB_COMPLETED,
         'pause': fakelibvirt.VIR_DOMAIN_JOB_COMPLETED}
_wall = time.time


@dataclasses.dataclass
class Job:
    """One non-converging migration job on one fake domain.

    Times are wall-clock seconds (``time.time``).
    """

    instance: Any
    first_delay: float = 0.0        # the first job read waits this long
    end_after: float = 0.2          # an action's effect ends the job then
    refuse: dict[str, int] = dataclasses.field(default_factory=dict)
    start: float | None = None      # nova's ``start`` (first time.time())
    calls: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    reads: int = 0
    ends_at: float | None = None
    end_type: int | None = None
    state: monitor.MigrationState | None = None
    error: BaseException | None = None
    #: nova's migrate thread; done once the job ended
    future: futurist.Future = dataclasses.field(
        default_factory=futurist.Future)

    def job_info(self) -> libvirt_guest.JobInfo:
        self.reads += 1
        if self.reads == 1:
            if self.first_delay:
                time.sleep(self.first_delay)
            return libvirt_guest.JobInfo(type=fakelibvirt.VIR_DOMAIN_JOB_NONE)
        if self.ends_at is not None and _wall() >= self.ends_at:
            if not self.future.done():
                self.future.set_result(None)
            return libvirt_guest.JobInfo(type=self.end_type)
        return libvirt_guest.JobInfo(
            type=fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED)

    def called(self, name: str) -> None:
        now = _wall()
        self.calls.append((name, now))
        if self.refuse.get(name, 0) > 0:
            self.refuse[name] -= 1
            raise fakelibvirt.make_libvirtError(
                fakelibvirt.libvirtError, f'{name} refused',
                error_code=fakelibvirt.VIR_ERR_OPERATION_INVALID)
        if self.ends_at is None:
            self.ends_at = now + self.end_after
            self.end_type = _ENDS[name]

    def times(self, name: str) -> list[float]:
        return [t for n, t in self.calls if n == name]


class _Clock:
    """``time`` for nova's libvirt driver module: records, per thread, the
    first ``time.time()`` of a monitor call (nova's ``start``)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def expect_start(self, job: Job | None) -> None:
        self._local.job = job

    def time(self) -> float:
        now = _wall()
        job = getattr(self._local, 'job', None)
        if job is not None and job.start is None:
            job.start = now
        return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Runner:
    """Runs :class:`Job` migrations through one LibvirtDriver's monitor.

    :param drvr: nova's LibvirtDriver (fake libvirt), migration flags parsed.
    :param context: a nova RequestContext.
    """

    def __init__(self, drvr: libvirt_driver.LibvirtDriver,
                 context: Any) -> None:
        self.drvr = drvr
        self.context = context
        self.jobs: dict[int, Job] = {}
        #: (id, status) of every Migration.save() while running, any thread
        self.saved: list[tuple[int, str]] = []
        self._clock = _Clock()
        self._patches = [
            mock.patch.object(libvirt_driver, 'time', self._clock),
            mock.patch.object(fakelibvirt.Connection, '_mark_running'),
            mock.patch.object(libvirt_guest.Guest, 'get_job_info',
                              self._job_info()),
            mock.patch.object(objects.Migration, 'save', self._saved()),
            mock.patch.object(objects.Instance, 'save'),
        ]
        for action, method in ACTIONS.items():
            self._patches.append(mock.patch.object(
                fakelibvirt.virDomain, method, self._recorder(action),
                create=True))
        begin = monitor.begin

        def capture(driver: Any, conf: Any, context: Any, instance: Any,
                    guest: Any, *args: Any, **kwargs: Any) -> Any:
            state = begin(driver, conf, context, instance, guest, *args,
                          **kwargs)
            self.jobs[id(guest._domain)].state = state
            return state
        self._patches.append(mock.patch.object(monitor, 'begin', capture))

    def __enter__(self) -> Runner:
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for patch in reversed(self._patches):
            patch.stop()

    def _job_info(self) -> Any:
        jobs = self.jobs

        def get_job_info(guest: libvirt_guest.Guest) -> libvirt_guest.JobInfo:
            return jobs[id(guest._domain)].job_info()
        return get_job_info

    def _saved(self) -> Any:
        saved = self.saved

        def save(migration: objects.Migration) -> None:
            saved.append((migration.id, migration.status))
        return save

    def _recorder(self, action: str) -> Any:
        jobs = self.jobs

        def call(dom: Any, *args: Any, **kwargs: Any) -> None:
            jobs[id(dom)].called(action)
            if action == 'pause':
                dom._state = fakelibvirt.VIR_DOMAIN_PAUSED
        return call

    def run(self, job: Job, status: str = 'running') -> None:
        """Run one migration's monitor to its end on this thread."""
        drvr = self.drvr
        dom = fakelibvirt.Domain(drvr._get_connection(), '<domain/>', True)
        self.jobs[id(dom)] = job
        guest = libvirt_guest.Guest(dom)
        drvr.active_migrations[job.instance.uuid] = collections.deque()
        migration = objects.Migration(context=self.context, id=1,
                                      status=status)
        migrate_data = objects.LibvirtLiveMigrateData(
            migration=migration, block_migration=False)
        self._clock.expect_start(job)
        try:
            drvr._live_migration_monitor(
                self.context, job.instance, guest, 'dest-host',
                mock.Mock(name='post_method'),
                mock.Mock(name='recover_method'), False, migrate_data,
                job.future, [])
        except BaseException as exc:
            job.error = exc
        finally:
            self._clock.expect_start(None)
