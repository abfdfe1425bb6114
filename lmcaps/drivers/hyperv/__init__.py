"""The Hyper-V driver: live-migration abort over WinRM, through pywinrm.

A Hyper-V live migration is a server-side WMI job:
``Msvm_VirtualSystemMigrationService.MigrateVirtualSystemToHost`` returns
4096 (job started) and a reference to an ``Msvm_MigrationJob``, whose
``JobState`` / ``PercentComplete`` / ``Cancellable`` the driver polls and
whose ``RequestStateChange`` stops it (Hyper-V WMI v2 reference,
https://learn.microsoft.com/en-us/windows/win32/hyperv_v2/).  The job's
WMI path is the migration's reference, so any process can find it again.

**How the driver speaks to WMI: WS-Management CIM operations**, not
PowerShell.  The choice, from Microsoft's documentation:

* ``run_ps`` (WinRS) creates a shell per call and deletes it (the
  [MS-WSMV] remote shell Create / Command / Delete exchange): a
  ``Move-VM -AsJob`` started by one call is a PowerShell job of a shell
  that is gone by the next call, and
  ``Move-VM`` has no cancel parameter; the WMI job is what must be reached.
  CIM operations address it directly: Get / Enumerate / Invoke on the
  class resource URIs ``…/wsman/1/wmi/root/virtualization/v2/<class>``
  ([MS-WSMV] 3.1.4.1.1), one HTTP round trip each (a poll is one Get).
* Injection: a script is code; a VM name spliced into it is code too.
  Here every user value is the text of an XML element built by
  ElementTree, or a WQL string literal escaped by
  :func:`~lmcaps.drivers.hyperv.wsman.wql_string`: a VM named
  ``a'; Remove-VM -Name * #`` or ``$(...)`` is a name, nothing else.
* pywinrm still does what it is good at: transports (NTLM, Kerberos,
  CredSSP, Basic over TLS), message encryption over http for NTLM /
  Kerberos / CredSSP, TLS verification; the envelope header comes from its
  public ``Protocol.build_wsman_header`` (pywinrm >= 0.5).

What is not documented, and how it is handled: whether a stopped
``Msvm_MigrationJob`` rolls the VM back is not stated (the RequestStateChange
page lists only return codes), so after an abort the driver reports where
the VM is by asking *both* hosts for ``Msvm_ComputerSystem`` (by its Name,
the VM GUID), never by assuming.  ``RequestStateChange`` answers 0 on the
``Msvm_MigrationJob`` page and 4096 on the ``Msvm_ConcreteJob`` page: both
mean accepted.  A job whose ``TimeBeforeRemoval`` (5 min) has passed is
gone (``MigrationGone``).
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.hyperv import jobs

LOG = logging.getLogger(__name__)
TRANSPORTS = ('ntlm', 'kerberos', 'credssp', 'basic')
STOP_STATES = {'kill': jobs.KILL, 'terminate': jobs.TERMINATE}

OPTS = [
    cfg.URIOpt('endpoint', default='https://localhost:5986/wsman',
               schemes=['http', 'https'],
               help='WinRM listener of the source Hyper-V host (this host), '
                    'e.g. https://hv1.example.org:5986/wsman. Related: '
                    'transport, allow_unencrypted_basic.'),
    cfg.StrOpt('destination_endpoint', default='https://{host}:5986/wsman',
               help='WinRM listener of the destination host, used to ask it '
                    'whether it has the VM; {host} is replaced by the '
                    'destination host name. A Destination.address that is '
                    'an http(s) URL is used instead.'),
    cfg.StrOpt('transport', default='ntlm', choices=TRANSPORTS,
               help='pywinrm authentication: ntlm, kerberos and credssp '
                    'encrypt messages over http; basic needs https unless '
                    'allow_unencrypted_basic is True.'),
    cfg.StrOpt('username', default='',
               help='User on the Hyper-V hosts (DOMAIN\\user for ntlm).'),
    cfg.StrOpt('password', default='', secret=True,
               help='Password of username; never logged.'),
    cfg.BoolOpt('server_cert_validation', default=True,
                help='Verify the listeners\' TLS certificates. Disable only '
                     'for test hosts. Related: ca_trust_path.'),
    cfg.StrOpt('ca_trust_path',
               help='CA bundle (PEM file or directory) to verify the '
                    'listeners with; unset: the bundle of requests '
                    '(certifi).'),
    cfg.BoolOpt('allow_unencrypted_basic', default=False,
                help='Allow transport=basic over plain http, which sends '
                     'the password unencrypted: for test listeners only.'),
    cfg.StrOpt('job_stop_state', default='kill', choices=sorted(STOP_STATES),
               help='RequestedState sent to Msvm_MigrationJob.'
                    'RequestStateChange to abort: kill (5, as OpenStack '
                    'os-win stops jobs) or terminate (4).'),
    cfg.IntOpt('operation_timeout', default=20, min=1,
               help='WS-Management OperationTimeout of each request, in '
                    'seconds; the HTTP read timeout is 10 s more.'),
]

_JOB_PATH = re.compile(r'Msvm_MigrationJob\.InstanceID="([^"]+)"$')


class _State:
    """Driver-private state of one migration (``Migration.backend``)."""

    def __init__(self, job_id: str, vm: str, destination: Any) -> None:
        self.job_id = job_id
        self.vm = vm                      # Msvm_ComputerSystem.Name (GUID)
        self.destination = destination    # wsman.Client of the destination


class HyperVDriver(base.LiveMigrationDriver):
    """Abort of Hyper-V live migrations through their Msvm_MigrationJob."""

    name = 'hyperv'

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._ws: Any = None              # lmcaps.drivers.hyperv.wsman
        self._source: Any = None
        self._clients: dict[str, Any] = {}
        self._service: dict[str, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(OPTS)

    @classmethod
    def declare(cls) -> caps.Declaration:
        return caps.Declaration('hyperv', 'Hyper-V (WMI v2 over WinRM)', {
            caps.Operation.ABORT: caps.partial(
                condition='only while the Msvm_MigrationJob reports '
                          'Cancellable = True (before the switch-over)',
                notes='Msvm_MigrationJob.RequestStateChange (Kill 5 or '
                      'Terminate 4) over WS-Management; where the VM ends '
                      'is asked of both hosts, not assumed'),
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.missing(
                'Hyper-V live migration has no post-copy mode'),
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.missing(
                'Hyper-V has no way to make a running live migration '
                'converge by pausing the VM (no force-complete at all)'),
            caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete(
                'enforced by the lmcaps monitor; the usable timeout action '
                'is abort'),
        })

    # -- connection -------------------------------------------------------

    def connect(self) -> None:
        with self._lock:
            if self._source is not None:
                return
            try:
                importlib.import_module('winrm')
            except ImportError as exc:
                raise exception.DriverLoadFailed(
                    name=self.name, reason='pywinrm is not installed (pip '
                    'install lmcaps[hyperv])') from exc
            self._ws = importlib.import_module('lmcaps.drivers.hyperv.wsman')
            self._source = self._open(self.options.endpoint)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            self._source = None
            self._service = None

    def _open(self, endpoint: str) -> Any:
        """A wsman.Client for one listener (cached); call under the lock."""
        if endpoint in self._clients:
            return self._clients[endpoint]
        opts = self.options
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ('http', 'https') or not url.hostname:
            raise exception.DriverError(
                driver=self.name, reason=f'not a WinRM endpoint URL: '
                                         f'{endpoint!r}')
        if (opts.transport == 'basic' and url.scheme == 'http' and
                not opts.allow_unencrypted_basic):
            raise exception.DriverError(
                driver=self.name, reason=f'refusing Basic authentication '
                f'over plain http to {url.netloc}: the password would travel '
                f'unencrypted; use https, or set [lmcaps_hyperv] '
                f'allow_unencrypted_basic = True for a test listener')
        from winrm import protocol as winrm_protocol

        def factory() -> Any:
            return winrm_protocol.Protocol(
                endpoint, transport=opts.transport, username=opts.username,
                password=opts.password,
                server_cert_validation=(
                    'validate' if opts.server_cert_validation else 'ignore'),
                ca_trust_path=opts.ca_trust_path,
                operation_timeout_sec=opts.operation_timeout,
                read_timeout_sec=opts.operation_timeout + 10,
                message_encryption='auto')
        try:
            client = self._ws.Client(factory, url.netloc)
        except Exception as exc:   # pywinrm's argument checks
            raise exception.DriverError(
                driver=self.name, reason=f'WinRM {url.netloc}: '
                f'{type(exc).__name__}: {exc}') from exc
        self._clients[endpoint] = client
        return client

    def _client_for(self, destination: base.Destination) -> Any:
        address = destination.address
        if not address.startswith(('http://', 'https://')):
            address = self.options.destination_endpoint.replace(
                '{host}', destination.host)
        self.connect()
        with self._lock:
            return self._open(address)

    def _call(self, what: str, call: Any) -> Any:
        """Run a WS-Man exchange; its errors become one-line DriverErrors."""
        self.connect()
        try:
            return call()
        except self._ws.Error as exc:
            raise exception.DriverError(
                driver=self.name, reason=f'{what}: {exc}') from exc

    # -- starting ---------------------------------------------------------

    def _find_vm(self, instance: str) -> str:
        """The Name (GUID) of the one source VM whose ElementName it is."""
        ws, source = self._ws, self._source
        try:
            wql = ('SELECT * FROM Msvm_ComputerSystem WHERE ElementName = ' +
                   ws.wql_string(instance))
        except ValueError as exc:
            raise exception.DriverError(
                driver=self.name, reason=f'VM name {instance!r}: '
                                         f'{exc}') from exc
        found = self._call('find the VM', lambda: source.query(wql))
        if len(found) != 1:
            raise exception.DriverError(
                driver=self.name, reason=f'{len(found)} VMs named '
                f'{instance!r} on {source.machine} (need exactly one)')
        return str(found[0]['Name'])

    def guest_data_gib(self, spec: base.MigrationSpec) -> float:
        """The VM's memory in GiB (at least 2), as nova counts it.

        From the realized ``Msvm_VirtualSystemSettingData`` of the VM and its
        ``Msvm_MemorySettingData.VirtualQuantity`` (MiB), by association.
        The 2 GiB floor when the source cannot tell (logged).

        :raises: DriverError when the VM is not on the source.
        """
        self.connect()
        vm = self._find_vm(spec.instance)
        ws, source = self._ws, self._source
        try:
            system = ws.Ref('Msvm_ComputerSystem', {
                'CreationClassName': 'Msvm_ComputerSystem', 'Name': vm})
            realized = [s for s in source.associated(
                system, 'Msvm_VirtualSystemSettingData')
                if str(s.get('VirtualSystemType', '')).endswith(':Realized')]
            memory = source.associated(
                ws.Ref('Msvm_VirtualSystemSettingData',
                       {'InstanceID': realized[0]['InstanceID']}),
                'Msvm_MemorySettingData')
            mib = int(memory[0]['VirtualQuantity'])
        except (ws.Error, IndexError, KeyError, TypeError, ValueError) as exc:
            LOG.warning('hyperv: memory of VM %s unknown (%s); counting the '
                        '2 GiB floor', spec.instance, exc)
            return 2.0
        return base.data_gib(mib * 1024 ** 2)

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        destination = self._client_for(spec.destination)
        ws, source = self._ws, self._source
        vm = self._find_vm(spec.instance)
        data = self.guest_data_gib(spec)
        service = self._migration_service()
        system = ws.Ref('Msvm_ComputerSystem', {
            'CreationClassName': 'Msvm_ComputerSystem', 'Name': vm})
        out = self._call('MigrateVirtualSystemToHost', lambda: source.invoke(
            'Msvm_VirtualSystemMigrationService', service,
            'MigrateVirtualSystemToHost',
            [('ComputerSystem', system),
             ('DestinationHost', spec.destination.host),
             ('MigrationSettingData', _setting_data())]))
        code = jobs.as_int(out.get('ReturnValue'))
        job = out.get('Job')
        if code not in (jobs.OK, jobs.JOB_STARTED) or not isinstance(
                job, ws.Ref) or 'InstanceID' not in job.selectors:
            raise exception.DriverError(
                driver=self.name, reason=f'MigrateVirtualSystemToHost of '
                f'{spec.instance!r} to {spec.destination.host!r} returned '
                f'{jobs.return_text(code)}')
        job_id = job.selectors['InstanceID']
        host = urllib.parse.urlsplit(self.options.endpoint).hostname
        return base.Migration(
            spec=spec, data_gib=data,
            reference=jobs.job_path(host or '.', job_id),
            backend=_State(job_id, vm, destination),
            extra={'vm': vm})

    def _migration_service(self) -> dict[str, str]:
        if self._service is None:
            rows = self._call('find the migration service', lambda:
                              self._source.query(
                                  'SELECT * FROM '
                                  'Msvm_VirtualSystemMigrationService'))
            if not rows:
                raise exception.DriverError(
                    driver=self.name, reason=f'{self._source.machine} has no '
                    f'Msvm_VirtualSystemMigrationService')
            self._service = {key: rows[0].get(key) or '' for key in (
                'CreationClassName', 'Name', 'SystemCreationClassName',
                'SystemName')}
        return self._service

    def _reattach(self, ref: base.MigrationRef) -> base.Migration:
        match = _JOB_PATH.search(ref.reference)
        if match is None:
            raise exception.DriverError(
                driver=self.name, reason=f'not a Msvm_MigrationJob path: '
                                         f'{ref.reference!r}')
        job_id = match.group(1)
        props = self._job(job_id, ref.reference)
        vm = str(ref.extra.get('vm') or props.get('VirtualSystemName') or '')
        return base.Migration(
            spec=ref.spec, data_gib=ref.data_gib, reference=ref.reference,
            backend=_State(job_id, vm, self._client_for(ref.spec.destination)),
            extra={'vm': vm})

    # -- observing --------------------------------------------------------

    def _job(self, job_id: str, reference: str) -> dict[str, Any]:
        self.connect()
        try:
            return self._source.get('Msvm_MigrationJob',
                                    {'InstanceID': job_id})
        except self._ws.Fault as exc:
            if exc.subcode in ('DestinationUnreachable', 'InvalidSelectors'):
                raise exception.MigrationGone(self.name, reference,
                                              str(exc)) from exc
            raise exception.DriverError(driver=self.name,
                                        reason=str(exc)) from exc
        except self._ws.Error as exc:
            raise exception.DriverError(driver=self.name,
                                        reason=str(exc)) from exc

    def _progress(self, migration: base.Migration) -> base.Progress:
        state: _State = migration.backend
        return jobs.progress(self._job(state.job_id, migration.reference))

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        state: _State = migration.backend
        wql = ('SELECT * FROM Msvm_ComputerSystem WHERE Name = ' +
               self._ws.wql_string(state.vm))
        on_source = self._call('locate the VM on the source',
                               lambda: self._source.query(wql))
        on_destination = self._call('locate the VM on the destination',
                                    lambda: state.destination.query(wql))
        return jobs.location(on_source, on_destination)

    # -- acting -----------------------------------------------------------

    def _abort(self, migration: base.Migration) -> None:
        state: _State = migration.backend
        requested = STOP_STATES[self.options.job_stop_state]
        out = self._call('RequestStateChange', lambda: self._source.invoke(
            'Msvm_MigrationJob', {'InstanceID': state.job_id},
            'RequestStateChange', [('RequestedState', requested)]))
        code = jobs.as_int(out.get('ReturnValue'))
        if code in (jobs.OK, jobs.JOB_STARTED):
            return
        if code in (jobs.INVALID_STATE, jobs.INVALID_STATE_TRANSITION):
            props = self._job(state.job_id, migration.reference)
            raise exception.OperationRefused(
                driver=self.name, operation='abort',
                migration=migration.reference,
                reason=jobs.why_not_cancellable(props))
        raise exception.DriverError(
            driver=self.name, reason=f'RequestStateChange({requested}) of '
            f'{migration.reference} returned {jobs.return_text(code)}')


def _setting_data() -> str:
    """An embedded Msvm_VirtualSystemMigrationSettingData (CIM-XML, DSP0201).

    MigrationType 32768 = VirtualSystem (live migration of the running VM,
    storage stays where it is).
    """
    inst = ET.Element('INSTANCE',
                      CLASSNAME='Msvm_VirtualSystemMigrationSettingData')
    prop = ET.SubElement(inst, 'PROPERTY', NAME='MigrationType',
                         TYPE='uint16')
    ET.SubElement(prop, 'VALUE').text = str(jobs.MIGRATION_TYPE_VIRTUAL_SYSTEM)
    return ET.tostring(inst, encoding='unicode')
