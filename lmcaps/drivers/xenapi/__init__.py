"""The XenAPI (XenServer / XCP-ng xapi) driver, over the PyPI ``XenAPI`` SDK.

A live migration is an xapi task (XenAPI reference, datamodel.ml "task"):
``Async.VM.pool_migrate(vm, host, {'live': 'true'})`` within a pool, or
``Host.migrate_receive`` on the destination pool (done by
:meth:`XenAPIDriver.prepare_destination`) followed by
``Async.VM.migrate_send`` across pools.  The migration's reference is the
task's OpaqueRef.  Progress is the task's ``status`` and ``progress``
(0..1); abort is ``task.cancel`` while the task lists ``cancel`` in its
``allowed_operations`` (xenopsd drops it just before it suspends the domain
for the final copy, and xapi then ignores a cancel), so whether a cancel
took effect is judged from what is observed afterwards: status
``cancelled`` with error_info ``TASK_CANCELLED`` and ``VM.resident_on`` the
source.  Where the guest is comes from ``VM.resident_on`` and
``VM.power_state``.

Observation is batched: one ``event.from(['task'], token, 0)`` call per
``task_poll_interval`` refreshes the records of every task this driver
watches; where ``event.from`` is refused the driver reads
``task.get_record`` per task instead.

Sessions: the SDK logs in again by itself on ``SESSION_INVALID``; should it
give up, the driver logs in once more and repeats the call once.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.xenapi import session as session_mod
from lmcaps.drivers.xenapi import taskfeed

LOG = logging.getLogger(__name__)
NULL = 'OpaqueRef:NULL'

OPTS = [
    cfg.StrOpt('url', default='https://localhost/',
               help='URL of the pool master xapi (https://HOST/).'),
    cfg.StrOpt('username', default='root', help='xapi user name.'),
    cfg.StrOpt('password', default='', secret=True,
               help='Password of the xapi user.'),
    cfg.StrOpt('ca_file',
               help='CA bundle to verify the xapi certificate with (PEM); '
                    'unset: the system CA store. Related: insecure.'),
    cfg.BoolOpt('insecure', default=False,
                help='Do not verify the xapi TLS certificate (testing '
                     'only).'),
    cfg.FloatOpt('task_poll_interval', default=0.5, min=0.01,
                 help='Seconds between two reads of the migration tasks '
                      '(one event.from call covers all of them).'),
]

_POWER = {'Running': base.RunState.RUNNING, 'Paused': base.RunState.PAUSED,
          'Suspended': base.RunState.PAUSED,
          'Halted': base.RunState.SHUT_OFF}


@dataclasses.dataclass
class _State:
    """Driver data of one migration (``Migration.backend``)."""

    vm: str
    source_host: str
    dest_host: str
    cross_pool: bool = False
    dest_url: str = ''


class XenAPIDriver(base.LiveMigrationDriver):
    """Live migration through xapi tasks (see the module docstring)."""

    name = 'xenapi'

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._xapi: session_mod.XapiSession | None = None
        self._feed: taskfeed.TaskFeed | None = None
        self._remotes: dict[str, session_mod.XapiSession] = {}

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(OPTS)

    @classmethod
    def declare(cls) -> caps.Declaration:
        return caps.Declaration(
            driver=cls.name, title='XenAPI (XenServer / XCP-ng)',
            capabilities={
                caps.Operation.ABORT: caps.partial(
                    "only while the migration task lists 'cancel' in its "
                    "allowed_operations: xapi stops accepting a cancel just "
                    "before the domain is suspended for the final copy and "
                    "then ignores it",
                    notes='task.cancel on the Async.VM.pool_migrate / '
                          'migrate_send task; the effect is judged from the '
                          'task status and VM.resident_on afterwards.'),
                caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.missing(
                    'xapi live migration has no post-copy mode.'),
                caps.Operation.FORCE_COMPLETE_PAUSE: caps.missing(
                    'xapi has no call to pause a guest so that a running '
                    'migration task finishes; the VM is busy with the '
                    'migration (OTHER_OPERATION_IN_PROGRESS).'),
                caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete(
                    'Carried out by the lmcaps monitor with task.cancel.'),
            })

    def _refine(self, declaration: caps.Declaration) -> caps.Declaration:
        """Facts from the pool master: its name and XenAPI version."""
        def facts(x: Any) -> dict[str, str]:
            pool = x.pool.get_all()[0]
            master = x.pool.get_master(pool)
            return {'pool_master': x.host.get_name_label(master),
                    'xenapi_version': '%s.%s' % (
                        x.host.get_API_version_major(master),
                        x.host.get_API_version_minor(master))}
        try:
            found = self._call('pool master', facts)
        except (exception.DriverError, self._fail) as exc:
            found = {'xenapi_version': f'unknown ({exc})'}
        return declaration.refine(self.options.url, found)

    # -- session ------------------------------------------------------------

    def _session_for(self, url: str) -> session_mod.XapiSession:
        opts = self.options
        return session_mod.XapiSession(
            self.name, self.group, url, opts.username, opts.password,
            ca_file=opts.ca_file, insecure=opts.insecure)

    @property
    def session(self) -> session_mod.XapiSession:
        """The pool master's session (built from the options on first use)."""
        if self._xapi is None:
            self._xapi = self._session_for(self.options.url)
        return self._xapi

    @property
    def feed(self) -> taskfeed.TaskFeed:
        """The batched task records (one event.from per poll interval)."""
        if self._feed is None:
            self._feed = taskfeed.TaskFeed(
                self.session, lambda: self.options.task_poll_interval)
        return self._feed

    def connect(self) -> None:
        self.session.connect()

    def close(self) -> None:
        if self._xapi is not None:
            self._xapi.close()
        for remote in self._remotes.values():
            remote.close()

    @property
    def _fail(self) -> type[Exception]:
        return self.session.Failure

    def _call(self, what: str, fn: Any) -> Any:
        return self.session.call(what, fn)

    def _code(self, exc: BaseException) -> str:
        details = getattr(exc, 'details', None) or ['']
        return str(details[0])

    def _error(self, what: str, exc: BaseException) -> exception.DriverError:
        details = getattr(exc, 'details', None) or [str(exc)]
        return exception.DriverError(driver=self.name, reason=f'{what}: '
                                     f'{" ".join(map(str, details))}')

    # -- lookups ------------------------------------------------------------

    def _vm(self, instance: str) -> str:
        def find(x: Any) -> str:
            if instance.startswith('OpaqueRef:'):
                x.VM.get_uuid(instance)
                return instance
            try:
                return x.VM.get_by_uuid(instance)
            except self._fail:
                refs = x.VM.get_by_name_label(instance)
                if len(refs) != 1:
                    raise exception.DriverError(
                        driver=self.name, reason=f'{len(refs)} VMs are named '
                        f'{instance!r}') from None
                return refs[0]
        try:
            return self._call('find VM', find)
        except self._fail as exc:
            raise self._error(f'VM {instance}', exc) from None

    def _host(self, x: Any, dest: base.Destination) -> str:
        if dest.address.startswith('OpaqueRef:'):
            return dest.address
        refs = x.host.get_by_name_label(dest.host)
        if len(refs) != 1:
            raise exception.DriverError(
                driver=self.name, reason=f'{len(refs)} hosts are named '
                f'{dest.host!r}')
        return refs[0]

    def guest_data_gib(self, spec: base.MigrationSpec) -> float:
        vm = self._vm(spec.instance)
        ram = self._call('memory', lambda x: x.VM.get_memory_static_max(vm))
        return base.data_gib(int(ram))

    # -- starting -----------------------------------------------------------

    @staticmethod
    def _cross_pool(dest: base.Destination) -> bool:
        return dest.address.startswith(('http://', 'https://'))

    def prepare_destination(self, spec: base.MigrationSpec
                            ) -> base.Destination:
        """Within a pool: the host's ref; across pools: migrate_receive's token.

        A destination whose ``address`` is a URL is a host of another pool
        (that pool's master); the same account logs in there.

        :raises: DriverError if the destination refuses.
        """
        dest = spec.destination
        if 'host_ref' in dest.data or 'migrate_receive' in dest.data:
            return dest
        if not self._cross_pool(dest):
            host = self._call('find host', lambda x: self._host(x, dest))
            return dataclasses.replace(dest, data=dict(dest.data,
                                                       host_ref=host))
        remote = self._remote(dest.address)
        try:
            def receive(x: Any) -> dict[str, Any]:
                host = self._host(x, dest)
                network = dest.data.get('network') or x.network.get_all()[0]
                token = x.host.migrate_receive(host, network, {})
                return {'host_ref': host, 'migrate_receive': token}
            data = remote.call('Host.migrate_receive', receive)
        except self._fail as exc:
            raise self._error('Host.migrate_receive', exc) from None
        return dataclasses.replace(dest, data=dict(dest.data, **data))

    def _remote(self, url: str) -> session_mod.XapiSession:
        """A session on another pool's master (same account)."""
        if url.rstrip('/') == self.options.url.rstrip('/'):
            return self.session
        if url not in self._remotes:
            self._remotes[url] = self._session_for(url)
        return self._remotes[url]

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        vm = self._vm(spec.instance)
        gib = self.guest_data_gib(spec)
        dest = self.prepare_destination(spec)
        cross = 'migrate_receive' in dest.data
        try:
            source = self._call('VM.get_resident_on',
                                lambda x: x.VM.get_resident_on(vm))
            if cross:
                task = self._call('Async.VM.migrate_send', lambda x:
                                  x.Async.VM.migrate_send(
                                      vm, dest.data['migrate_receive'], True,
                                      {}, {}, {}))
            else:
                task = self._call('Async.VM.pool_migrate', lambda x:
                                  x.Async.VM.pool_migrate(
                                      vm, dest.data['host_ref'],
                                      {'live': 'true'}))
        except self._fail as exc:
            raise self._error('start', exc) from None
        state = _State(vm, source, dest.data['host_ref'], cross,
                       dest.address if cross else '')
        return base.Migration(spec=spec, data_gib=gib, reference=task,
                              backend=state,
                              extra=dataclasses.asdict(state))

    def _reattach(self, ref: base.MigrationRef) -> base.Migration:
        try:
            self._call('task.get_record',
                       lambda x: x.task.get_record(ref.reference))
        except self._fail as exc:
            if self._code(exc) == 'HANDLE_INVALID':
                raise exception.MigrationGone(self.name, ref.reference,
                                              'HANDLE_INVALID') from None
            raise self._error('task.get_record', exc) from None
        try:
            state = _State(**dict(ref.extra))
        except TypeError:
            raise exception.DriverError(
                driver=self.name, reason='the reference lacks the VM and '
                'hosts (extra)') from None
        return base.Migration(spec=ref.spec, data_gib=ref.data_gib,
                              reference=ref.reference, backend=state,
                              extra=dict(ref.extra))

    # -- observing ----------------------------------------------------------

    def _progress(self, migration: base.Migration) -> base.Progress:
        rec = self.feed.record(migration.reference)
        if rec is None:
            return self._vanished(migration)
        status = rec['status']
        fraction = max(0.0, min(1.0, float(rec.get('progress') or 0.0)))
        error = ' '.join(rec.get('error_info') or [])
        if status == 'success':
            return base.Progress(base.Phase.COMPLETED, 1.0, status)
        if status == 'cancelled':
            return base.Progress(base.Phase.CANCELLED, fraction, status,
                                 message=error)
        if status == 'failure':
            return base.Progress(base.Phase.FAILED, fraction, status,
                                 message=error)
        cancelling = (status == 'cancelling' or 'cancel' in (
            rec.get('current_operations') or {}).values())
        if cancelling:
            return base.Progress(base.Phase.CANCELLING, fraction, status)
        phase = base.Phase.PRECOPY if fraction > 0 else base.Phase.PREPARING
        return base.Progress(phase, fraction, status)

    def _vanished(self, migration: base.Migration) -> base.Progress:
        """HANDLE_INVALID for the task: where the guest is decides."""
        where = self.guest_location(migration)
        if where.host is base.GuestHost.DESTINATION:
            return base.Progress(base.Phase.COMPLETED, 1.0, 'task gone')
        if where.host is base.GuestHost.SOURCE:
            phase = (base.Phase.CANCELLED if migration.abort_accepted_at
                     else base.Phase.FAILED)
            return base.Progress(phase, None, 'task gone',
                                 message='the task vanished (HANDLE_INVALID)')
        raise exception.MigrationGone(self.name, migration.reference,
                                      f'task gone, guest {where}')

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        st: _State = migration.backend
        try:
            resident, power = self._call('VM.get_resident_on', lambda x: (
                x.VM.get_resident_on(st.vm), x.VM.get_power_state(st.vm)))
        except self._fail as exc:
            if self._code(exc) != 'HANDLE_INVALID':
                raise self._error('locate', exc) from None
            return self._locate_cross_pool(migration)
        return self._where(resident, power, st)

    def _where(self, resident: str, power: str,
               st: _State) -> base.GuestLocation:
        run = _POWER.get(power, base.RunState.UNKNOWN)
        if resident == st.source_host:
            return base.GuestLocation(base.GuestHost.SOURCE, run, power)
        if resident == st.dest_host:
            return base.GuestLocation(base.GuestHost.DESTINATION, run, power)
        if resident == NULL:
            return base.GuestLocation(base.GuestHost.NOWHERE, run, power)
        return base.GuestLocation(base.GuestHost.UNKNOWN, run,
                                  f'{power} on {resident}')

    def _locate_cross_pool(self, migration: base.Migration
                           ) -> base.GuestLocation:
        st: _State = migration.backend
        rec = self.feed.record(migration.reference) or {}
        new_vm = str(rec.get('result') or '').replace('<value>', '').replace(
            '</value>', '').strip()
        if not (st.cross_pool and new_vm.startswith('OpaqueRef:')):
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN,
                                      'the VM no longer exists')
        remote = self._remote(st.dest_url)
        try:
            resident, power = remote.call('VM.get_resident_on', lambda x: (
                x.VM.get_resident_on(new_vm), x.VM.get_power_state(new_vm)))
        except self._fail as exc:
            raise self._error('locate in the destination pool', exc) from None
        return self._where(resident, power, st)

    # -- acting -------------------------------------------------------------

    def _abort(self, migration: base.Migration) -> None:
        ref = migration.reference

        def refused(reason: str) -> exception.OperationRefused:
            return exception.OperationRefused(
                driver=self.name, operation='abort', migration=ref,
                reason=reason)
        try:
            allowed, status = self._call(
                'task.get_allowed_operations',
                lambda x: (x.task.get_allowed_operations(ref),
                           x.task.get_status(ref)))
            if 'cancel' not in allowed:
                if status == 'success':
                    raise refused('already completed')
                if status != 'pending':
                    raise refused(f'the migration already ended ({status})')
                raise refused("xapi no longer lists 'cancel' for the task "
                              '(the final copy has begun)')
            self._call('task.cancel', lambda x: x.task.cancel(ref))
        except self._fail as exc:
            code = self._code(exc)
            if code == 'OPERATION_NOT_ALLOWED':
                raise refused('already completed') from None
            if code == 'HANDLE_INVALID':
                raise refused('the task no longer exists') from None
            raise self._error('task.cancel', exc) from None
        finally:
            self.feed.invalidate()
