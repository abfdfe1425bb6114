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
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any, TypeVar

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base

LOG = logging.getLogger(__name__)
T = TypeVar('T')
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
        self._session: Any = None
        self._xenapi: Any = None
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any] | None] = {}
        self._token = ''
        self._events_at = -1e9
        self._events_ok = True
        self.logins = 0
        self.round_trips = 0

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

    # -- session ------------------------------------------------------------

    def connect(self) -> None:
        with self._lock:
            if self._session is None:
                self._login()

    def _login(self) -> None:
        import XenAPI  # lazily: declaring must not import the client
        self._xenapi = XenAPI
        opts = self.options
        transport = None
        if opts.url.startswith('https'):
            if opts.insecure:
                context = ssl._create_unverified_context()
            else:
                context = ssl.create_default_context(cafile=opts.ca_file)
            transport = xmlrpc.client.SafeTransport(context=context)
        session = XenAPI.Session(opts.url, transport=transport)
        try:
            session.login_with_password(opts.username, opts.password, '2.0',
                                        'lmcaps')
        except XenAPI.Failure as exc:
            code = exc.details[0] if exc.details else '?'
            if code == 'SESSION_AUTHENTICATION_FAILED':
                raise exception.DriverError(
                    driver=self.name, reason=f'xapi at {opts.url} refused the '
                    f'login of user {opts.username!r} '
                    f'(SESSION_AUTHENTICATION_FAILED)') from None
            raise exception.DriverError(
                driver=self.name, reason=f'login to xapi at {opts.url} '
                f'failed: {code}') from None
        except ssl.SSLError as exc:
            raise exception.DriverError(
                driver=self.name, reason=f'TLS verification of {opts.url} '
                f'failed ({exc.reason}); set [{self.group}] ca_file') from None
        except (OSError, xmlrpc.client.Error) as exc:
            raise exception.DriverError(
                driver=self.name, reason=f'cannot reach xapi at {opts.url}: '
                f'{type(exc).__name__}: {exc}') from None
        self._session = session
        self.logins += 1

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            try:
                session.xenapi.session.logout()
            except Exception:  # closing: the session may be gone already
                pass

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session.xenapi)``; log in again once if the SDK gave up.

        :raises: the SDK's ``XenAPI.Failure`` for xapi errors other than
            SESSION_INVALID; DriverError if xapi cannot be reached.
        """
        with self._lock:
            self.connect()
            for attempt in (1, 2):
                try:
                    self.round_trips += 1
                    return fn(self._session.xenapi)
                except self._xenapi.Failure as exc:
                    if exc.details[:1] != ['SESSION_INVALID'] or attempt == 2:
                        raise
                except xmlrpc.client.Fault as exc:
                    # The SDK's own "Tried 3 times to get a valid session".
                    if attempt == 2:
                        raise exception.DriverError(
                            driver=self.name, reason=f'{what}: {exc.faultString}'
                        ) from None
                except (OSError, xmlrpc.client.Error) as exc:
                    raise exception.DriverError(
                        driver=self.name, reason=f'{what}: cannot reach xapi: '
                        f'{type(exc).__name__}: {exc}') from None
                LOG.info('xapi session invalid during %s; logging in again',
                         what)
                self._session = None
                self._login()
        raise AssertionError('unreachable')

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
            except self._xenapi.Failure:
                refs = x.VM.get_by_name_label(instance)
                if len(refs) != 1:
                    raise exception.DriverError(
                        driver=self.name, reason=f'{len(refs)} VMs are named '
                        f'{instance!r}') from None
                return refs[0]
        try:
            return self._call('find VM', find)
        except self._xenapi.Failure as exc:
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
            data = remote._call('Host.migrate_receive', receive)
        except self._xenapi.Failure as exc:
            raise self._error('Host.migrate_receive', exc) from None
        return dataclasses.replace(dest, data=dict(dest.data, **data))

    def _remote(self, url: str) -> XenAPIDriver:
        """A driver logged in to another pool's master (same account)."""
        if url.rstrip('/') == self.options.url.rstrip('/'):
            return self
        conf = cfg.ConfigOpts()
        other = XenAPIDriver(conf)
        conf([], project='lmcaps', default_config_files=[])
        for opt in OPTS:
            conf.set_override(opt.name, getattr(self.options, opt.name),
                              group=other.group)
        conf.set_override('url', url, group=other.group)
        other.connect()
        return other

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
        except self._xenapi.Failure as exc:
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
        except self._xenapi.Failure as exc:
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

    def _refresh(self) -> None:
        """One event.from for every task (under the lock)."""
        try:
            batch = self._call('event.from', lambda x: getattr(
                x.event, 'from')(['task'], self._token, 0.0))
        except self._xenapi.Failure as exc:
            LOG.info('event.from refused (%s); reading tasks one by one',
                     self._code(exc))
            self._events_ok = False
            return
        self._token = batch['token']
        for event in batch['events']:
            if event['operation'] == 'del':
                self._records[event['ref']] = None
            else:
                self._records[event['ref']] = event['snapshot']
        self._events_at = time.monotonic()

    def task_record(self, ref: str) -> dict[str, Any] | None:
        """The task's record, from the batched event feed; None if gone."""
        with self._lock:
            if self._events_ok and (
                    ref not in self._records or time.monotonic() -
                    self._events_at >= self.options.task_poll_interval):
                self._refresh()
            if self._events_ok and ref in self._records:
                return self._records[ref]
            try:
                rec = self._call('task.get_record',
                                 lambda x: x.task.get_record(ref))
            except self._xenapi.Failure as exc:
                if self._code(exc) != 'HANDLE_INVALID':
                    raise self._error('task.get_record', exc) from None
                rec = None
            self._records[ref] = rec
            return rec

    def _progress(self, migration: base.Migration) -> base.Progress:
        rec = self.task_record(migration.reference)
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
        except self._xenapi.Failure as exc:
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
        rec = self.task_record(migration.reference) or {}
        new_vm = str(rec.get('result') or '').replace('<value>', '').replace(
            '</value>', '').strip()
        if not (st.cross_pool and new_vm.startswith('OpaqueRef:')):
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN,
                                      'the VM no longer exists')
        remote = self._remote(st.dest_url)
        try:
            resident, power = remote._call('VM.get_resident_on', lambda x: (
                x.VM.get_resident_on(new_vm), x.VM.get_power_state(new_vm)))
        except self._xenapi.Failure as exc:
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
        except self._xenapi.Failure as exc:
            code = self._code(exc)
            if code == 'OPERATION_NOT_ALLOWED':
                raise refused('already completed') from None
            if code == 'HANDLE_INVALID':
                raise refused('the task no longer exists') from None
            raise self._error('task.cancel', exc) from None
        finally:
            with self._lock:
                self._events_at = -1e9
