"""The simulator, through pywinrm, against the documented protocol.

Envelopes here are written from [MS-WSMV] and the Hyper-V WMI v2 pages
(not from the driver's code): WS-Transfer Get, WS-Enumeration Enumerate /
Pull with a WQL filter, method invocation with ``<Method_INPUT>``, and the
SOAP faults Windows sends (``s:Fault`` + ``wsmanfault:WSManFault``).
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import requests
import testtools

from tests.functional.hyperv.sim import fixture

try:
    from winrm import exceptions as winrm_exc
    from winrm import protocol as winrm_protocol
except ImportError:     # reported by fixture.require_client()
    winrm_exc = winrm_protocol = None

S = 'http://www.w3.org/2003/05/soap-envelope'
A = 'http://schemas.xmlsoap.org/ws/2004/08/addressing'
W = 'http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd'
N = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration'
V2 = 'http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2'
WQL = 'http://schemas.microsoft.com/wbem/wsman/1/WQL'
TRANSFER_GET = 'http://schemas.xmlsoap.org/ws/2004/09/transfer/Get'
ENUMERATE = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate'
PULL = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull'
INJECTION = "a'; Remove-VM -Name * #"
SUBSHELL = 'web-$(Stop-Computer -Force)'


def wql_literal(value: str) -> str:
    """WQL string literal: backslash escapes (WQL, WHERE clause)."""
    return "'" + value.replace('\\', '\\\\').replace("'", "\\'") + "'"


class SimulatorTest(testtools.TestCase):
    """Each test talks WS-Man to the shared simulator's source listener."""

    def setUp(self) -> None:
        super().setUp()
        fixture.require_client(self)
        self.sim = fixture.shared()
        self.proto = self._protocol('hv-src', self.sim.password)

    def _protocol(self, host: str, password: str) -> Any:
        return winrm_protocol.Protocol(
            self.sim.endpoint(host), transport='basic',
            username=self.sim.username, password=password)

    # -- envelopes ----------------------------------------------------------

    def send(self, action: str, uri: str, body: ET.Element | None = None,
             selectors: dict[str, str] | None = None,
             proto: Any = None) -> ET.Element:
        proto = proto or self.proto
        message_id = f'uuid:{uuid.uuid4()}'
        env = ET.Element(f'{{{S}}}Envelope')
        head = ET.SubElement(env, f'{{{S}}}Header')
        ET.SubElement(head, f'{{{A}}}To').text = self.sim.endpoint('hv-src')
        ET.SubElement(head, f'{{{W}}}ResourceURI').text = uri
        ET.SubElement(head, f'{{{A}}}Action').text = action
        ET.SubElement(head, f'{{{A}}}MessageID').text = message_id
        if selectors:
            sels = ET.SubElement(head, f'{{{W}}}SelectorSet')
            for name, value in selectors.items():
                ET.SubElement(sels, f'{{{W}}}Selector', Name=name).text = value
        body_el = ET.SubElement(env, f'{{{S}}}Body')
        if body is not None:
            body_el.append(body)
        reply = ET.fromstring((proto).send_message(
            ET.tostring(env, encoding='unicode')))
        self.assertEqual(message_id, reply.findtext(f'{{{S}}}Header/'
                                                    f'{{{A}}}RelatesTo'))
        return reply.find(f'{{{S}}}Body')

    def enumerate(self, wql: str, optimize: bool = True) -> ET.Element:
        enum = ET.Element(f'{{{N}}}Enumerate')
        if optimize:
            ET.SubElement(enum, f'{{{W}}}OptimizeEnumeration')
            ET.SubElement(enum, f'{{{W}}}MaxElements').text = '100'
        ET.SubElement(enum, f'{{{W}}}Filter', Dialect=WQL).text = wql
        return self.send(ENUMERATE, V2 + '/*', enum)[0]

    def vms_named(self, name: str) -> list[dict[str, str]]:
        reply = self.enumerate('SELECT * FROM Msvm_ComputerSystem WHERE '
                               'ElementName = ' + wql_literal(name))
        self.assertIsNotNone(reply.find(f'{{{W}}}EndOfSequence'))
        return [{child.tag.rsplit('}', 1)[1]: child.text or ''
                 for child in item} for item in reply.find(f'{{{W}}}Items')]

    def migrate(self, vm: str, destination: str = 'hv-dst'
                ) -> tuple[int, str | None]:
        uri = V2 + '/Msvm_VirtualSystemMigrationService'
        inp = ET.Element(f'{{{uri}}}MigrateVirtualSystemToHost_INPUT')
        system = ET.SubElement(inp, f'{{{uri}}}ComputerSystem')
        ET.SubElement(system, f'{{{A}}}Address').text = (
            'http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous')
        ref = ET.SubElement(system, f'{{{A}}}ReferenceParameters')
        ET.SubElement(ref, f'{{{W}}}ResourceURI').text = (
            V2 + '/Msvm_ComputerSystem')
        sels = ET.SubElement(ref, f'{{{W}}}SelectorSet')
        ET.SubElement(sels, f'{{{W}}}Selector',
                      Name='CreationClassName').text = 'Msvm_ComputerSystem'
        ET.SubElement(sels, f'{{{W}}}Selector', Name='Name').text = vm
        ET.SubElement(inp, f'{{{uri}}}DestinationHost').text = destination
        out = self.send(uri + '/MigrateVirtualSystemToHost', uri, inp, {
            'CreationClassName': 'Msvm_VirtualSystemMigrationService',
            'Name': 'vsms', 'SystemCreationClassName': 'Msvm_ComputerSystem',
            'SystemName': 'HV-SRC'})[0]
        self.assertEqual(f'{{{uri}}}MigrateVirtualSystemToHost_OUTPUT',
                         out.tag)
        job = out.find(f'{{{uri}}}Job/{{{A}}}ReferenceParameters/'
                       f'{{{W}}}SelectorSet/{{{W}}}Selector')
        return int(out.findtext(f'{{{uri}}}ReturnValue')), (
            None if job is None else job.text)

    def job(self, instance_id: str) -> dict[str, str]:
        uri = V2 + '/Msvm_MigrationJob'
        inst = self.send(TRANSFER_GET, uri, selectors={
            'InstanceID': instance_id})[0]
        self.assertEqual(f'{{{uri}}}Msvm_MigrationJob', inst.tag)
        return {child.tag.rsplit('}', 1)[1]: child.text or ''
                for child in inst}

    def request_state(self, instance_id: str, state: int) -> int:
        uri = V2 + '/Msvm_MigrationJob'
        inp = ET.Element(f'{{{uri}}}RequestStateChange_INPUT')
        ET.SubElement(inp, f'{{{uri}}}RequestedState').text = str(state)
        out = self.send(uri + '/RequestStateChange', uri, inp,
                        {'InstanceID': instance_id})[0]
        return int(out.findtext(f'{{{uri}}}ReturnValue'))

    def wait_job(self, instance_id: str, states: set[int],
                 timeout: float = 10.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(instance_id)
            if int(job['JobState']) in states:
                return job
            if time.monotonic() > deadline:
                self.fail(f'job stayed in {job["JobState"]}')
            time.sleep(0.05)

    # -- authentication -----------------------------------------------------

    def test_wrong_password_gets_401_with_basic_challenge(self) -> None:
        reply = requests.post(self.sim.endpoint('hv-src'), data=b'<x/>',
                              auth=('lmcaps-admin', 'wrong'), timeout=10)
        self.assertEqual(401, reply.status_code)
        self.assertIn('Basic realm="WSMAN"',
                      reply.headers.get('WWW-Authenticate', ''))
        bad = self._protocol('hv-src', 'wrong')
        self.assertRaises(winrm_exc.InvalidCredentialsError, self.send,
                          TRANSFER_GET, V2 + '/Msvm_ComputerSystem',
                          proto=bad)

    # -- Get, Enumerate, Pull, faults ----------------------------------------

    def test_enumerate_with_wql_and_get_by_keys(self) -> None:
        name = self.sim.add_vm('sim-get-' + uuid.uuid4().hex[:6])
        [vm] = self.vms_named(self.sim.vm(name)['element_name'])
        self.assertEqual(name, vm['Name'])
        self.assertEqual('2', vm['EnabledState'])
        inst = self.send(TRANSFER_GET, V2 + '/Msvm_ComputerSystem',
                         selectors={'CreationClassName':
                                    'Msvm_ComputerSystem', 'Name': name})[0]
        self.assertEqual(name, inst.findtext(f'{{{V2}/Msvm_ComputerSystem}}'
                                             f'Name'))
        # WQL compares strings case-insensitively
        self.assertEqual(1, len(self.vms_named(vm['ElementName'].upper())))

    def test_pull_after_enumerate(self) -> None:
        prefix = 'sim-pull-' + uuid.uuid4().hex[:6]
        for i in range(3):
            self.sim.add_vm(f'{prefix}-{i}')
        reply = self.enumerate('SELECT * FROM Msvm_ComputerSystem WHERE '
                               'Caption = "Virtual Machine"', optimize=False)
        context = reply.findtext(f'{{{N}}}EnumerationContext')
        self.assertTrue(context)
        names: list[str] = []
        while context:
            pull = ET.Element(f'{{{N}}}Pull')
            ET.SubElement(pull, f'{{{N}}}EnumerationContext').text = context
            ET.SubElement(pull, f'{{{N}}}MaxElements').text = '2'
            reply = self.send(PULL, V2 + '/*', pull)[0]
            for item in reply.find(f'{{{N}}}Items'):
                names += [c.text for c in item
                          if c.tag.endswith('}ElementName')]
            context = reply.findtext(f'{{{N}}}EnumerationContext')
            if reply.find(f'{{{N}}}EndOfSequence') is not None:
                self.assertIsNone(context)
        self.assertEqual(3, len([n for n in names if n.startswith(prefix)]))

    def test_faults_as_windows_sends_them(self) -> None:
        uri = V2 + '/Msvm_MigrationJob'
        cases = [
            (lambda: self.send(TRANSFER_GET, uri, selectors={
                'InstanceID': str(uuid.uuid4())}),
             'DestinationUnreachable', 2150858770),
            (lambda: self.send(TRANSFER_GET, uri),
             'InvalidSelectors', 2150858842),
            (lambda: self.enumerate('SELECT * FROM Msvm_ComputerSystem '
                                    'WHERE ElementName = \'unterminated'),
             'CannotProcessFilter', 2150859042),
        ]
        for call, subcode, code in cases:
            exc = self.assertRaises(winrm_exc.WSManFaultError, call)
            self.assertEqual(500, exc.code)
            self.assertEqual('s:Sender', exc.fault_code)
            self.assertEqual(subcode, exc.fault_subcode.split(':')[1])
            self.assertEqual(code, exc.wsman_fault_code)
            self.assertTrue(exc.reason.strip())

    def test_association_filter_reaches_the_memory_settings(self) -> None:
        name = self.sim.add_vm('sim-assoc', memory_mib=4096)
        b = 'http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd'

        def associated(cls: str, selectors: dict[str, str],
                       result: str) -> list[dict[str, str]]:
            enum = ET.Element(f'{{{N}}}Enumerate')
            ET.SubElement(enum, f'{{{W}}}OptimizeEnumeration')
            ET.SubElement(enum, f'{{{W}}}MaxElements').text = '10'
            filt = ET.SubElement(enum, f'{{{W}}}Filter', Dialect=(
                'http://schemas.dmtf.org/wbem/wsman/1/cimbinding/'
                'associationFilter'))
            spec = ET.SubElement(filt, f'{{{b}}}AssociatedInstances')
            obj = ET.SubElement(spec, f'{{{b}}}Object')
            ET.SubElement(obj, f'{{{A}}}Address').text = (
                'http://schemas.xmlsoap.org/ws/2004/08/addressing/role/'
                'anonymous')
            ref = ET.SubElement(obj, f'{{{A}}}ReferenceParameters')
            ET.SubElement(ref, f'{{{W}}}ResourceURI').text = f'{V2}/{cls}'
            sels = ET.SubElement(ref, f'{{{W}}}SelectorSet')
            for key, value in selectors.items():
                ET.SubElement(sels, f'{{{W}}}Selector', Name=key).text = value
            ET.SubElement(spec, f'{{{b}}}ResultClassName').text = result
            reply = self.send(ENUMERATE, V2 + '/*', enum)[0]
            return [{c.tag.rsplit('}', 1)[1]: c.text or '' for c in item}
                    for item in reply.find(f'{{{W}}}Items')]

        [vssd] = associated('Msvm_ComputerSystem', {
            'CreationClassName': 'Msvm_ComputerSystem', 'Name': name},
            'Msvm_VirtualSystemSettingData')
        self.assertEqual('Microsoft:Hyper-V:System:Realized',
                         vssd['VirtualSystemType'])
        [memory] = associated('Msvm_VirtualSystemSettingData', {
            'InstanceID': vssd['InstanceID']}, 'Msvm_MemorySettingData')
        self.assertEqual(('4096', 'byte * 2^20'), (
            memory['VirtualQuantity'], memory['AllocationUnits']))

    # -- names are data -----------------------------------------------------

    def test_injection_names_are_data(self) -> None:
        decoy = self.sim.add_vm('a')
        victim = self.sim.add_vm(INJECTION)
        shell = self.sim.add_vm(SUBSHELL)
        found = self.vms_named(INJECTION)
        self.assertIn(victim, [vm['Name'] for vm in found])
        self.assertNotIn(decoy, [vm['Name'] for vm in found])
        self.assertIn(shell, [vm['Name'] for vm in self.vms_named(SUBSHELL)])
        # spliced in unescaped, the name breaks the query; nothing runs
        exc = self.assertRaises(
            winrm_exc.WSManFaultError, self.enumerate,
            f"SELECT * FROM Msvm_ComputerSystem WHERE ElementName = "
            f"'{INJECTION}'")
        self.assertEqual(2150859042, exc.wsman_fault_code)
        for name in (decoy, victim, shell):
            self.assertEqual('hv-src', self.sim.vm(name)['host'])
        rc, job_id = self.migrate(victim)
        self.assertEqual(4096, rc)
        self.wait_job(job_id, {7})
        self.assertEqual('hv-dst', self.sim.vm(victim)['host'])
        self.assertEqual('hv-src', self.sim.vm(decoy)['host'])

    # -- MigrateVirtualSystemToHost and the job ------------------------------

    def test_migration_job_runs_to_completion(self) -> None:
        name = self.sim.add_vm('sim-mig', migration_seconds=1.0)
        rc, job_id = self.migrate(name)
        self.assertEqual(4096, rc)            # Job Started
        seen = []
        while True:
            job = self.job(job_id)
            seen.append((int(job['JobState']), int(job['PercentComplete'])))
            if seen[-1][0] == 7:
                break
            self.assertIn(seen[-1][0], (2, 3, 4))
            if seen[-1][1] < 90:
                self.assertEqual('true', job['Cancellable'])
            self.assertEqual('hv-src', self.sim.vm(name)['host'])
            time.sleep(0.05)
        percents = [p for _s, p in seen]
        self.assertEqual(sorted(percents), percents)
        self.assertEqual(100, percents[-1])
        self.assertEqual(name, job['VirtualSystemName'])
        self.assertEqual('0', job['ErrorCode'])
        self.assertEqual({'host': 'hv-dst', 'enabled_state': 2},
                         {k: self.sim.vm(name)[k]
                          for k in ('host', 'enabled_state')})
        # a finished job can no longer change state: 32775
        self.assertEqual(32775, self.request_state(job_id, 5))

    def test_kill_and_terminate_leave_the_vm_on_the_source(self) -> None:
        for requested, final in ((5, 9), (4, 8)):
            name = self.sim.add_vm('sim-stop', migration_seconds=float('inf'),
                                   cancel_delay=0.3)
            _rc, job_id = self.migrate(name)
            self.wait_job(job_id, {4})
            self.assertEqual(0, self.request_state(job_id, requested))
            self.assertEqual(6, int(self.job(job_id)['JobState']))
            job = self.wait_job(job_id, {final})
            self.assertEqual('false', job['Cancellable'])
            vm = self.sim.vm(name)
            self.assertEqual(('hv-src', 2, False), (
                vm['host'], vm['enabled_state'], vm['migrating']))

    def test_not_cancellable_after_the_switch_over(self) -> None:
        name = self.sim.add_vm('sim-late', migration_seconds=float('inf'),
                               cancellable_until=0.0)
        _rc, job_id = self.migrate(name)
        job = self.wait_job(job_id, {4})
        self.assertEqual('false', job['Cancellable'])
        self.assertEqual(32775, self.request_state(job_id, 5))
        self.assertEqual(4, int(self.job(job_id)['JobState']))

    def test_method_errors(self) -> None:
        name = self.sim.add_vm('sim-err', migration_seconds=float('inf'))
        self.assertEqual((32777, None), self.migrate(name, 'hv-nowhere'))
        rc, job_id = self.migrate(name)
        self.assertEqual(4096, rc)
        self.assertEqual((32775, None), self.migrate(name))  # in migration
        self.assertEqual((32773, None), self.migrate(str(uuid.uuid4())))
        self.assertEqual(32773, self.request_state(job_id, 2))

    def test_failed_job_reports_exception(self) -> None:
        name = self.sim.add_vm('sim-fail', migration_seconds=float('inf'))
        _rc, job_id = self.migrate(name)
        self.wait_job(job_id, {4})
        self.sim.control('fail_job', instance_id=job_id)
        job = self.job(job_id)
        self.assertEqual(('10', '32768'), (job['JobState'], job['ErrorCode']))
        self.assertTrue(job['ErrorDescription'])
        self.assertEqual('hv-src', self.sim.vm(name)['host'])

    def test_finished_job_removed_after_time_before_removal(self) -> None:
        name = self.sim.add_vm('sim-gone', migration_seconds=0.2)
        _rc, job_id = self.migrate(name)
        self.wait_job(job_id, {7})
        self.sim.control('set_time_before_removal', seconds=0.0)
        self.addCleanup(self.sim.control, 'set_time_before_removal',
                        seconds=300.0)
        time.sleep(0.05)
        exc = self.assertRaises(winrm_exc.WSManFaultError, self.job, job_id)
        self.assertEqual(2150858770, exc.wsman_fault_code)


class WQLTest(testtools.TestCase):
    """The simulator's WQL parser (WQL, WHERE clause and operators)."""

    def test_escapes_and_operators(self) -> None:
        from tests.functional.hyperv.sim import wql
        row = {'ElementName': INJECTION, 'EnabledState': 2, 'Note': None}
        for text, expected in (
                ("SELECT * FROM C WHERE ElementName = " +
                 wql_literal(INJECTION), True),
                ("SELECT * FROM C WHERE elementname = 'A\\'; REMOVE-VM "
                 "-NAME * #'", True),     # case-insensitive
                ("SELECT * FROM C WHERE ElementName = \"a'; Remove-VM -Name"
                 " * #\"", True),
                ('SELECT * FROM C WHERE EnabledState = 2 AND NOT '
                 '(EnabledState <> 2 OR Note IS NOT NULL)', True),
                ('SELECT * FROM C WHERE EnabledState >= 3', False)):
            self.assertEqual(expected, wql.parse(text).matches(row), text)

    def test_syntax_errors(self) -> None:
        from tests.functional.hyperv.sim import wql
        for text in ("SELECT * FROM C WHERE ElementName = 'a'; Remove-VM'",
                     "SELECT * FROM C WHERE ElementName = 'open",
                     'SELECT * FROM C WHERE 1 = 1',
                     'DELETE FROM C', 'SELECT * FROM C extra'):
            self.assertRaises(wql.WQLError, wql.parse, text)


class NegotiateTest(SimulatorTest):
    """NTLM over http: the messages are sealed ([MS-WSMV] 2.2.9.1.1)."""

    def _protocol(self, host: str, password: str) -> Any:
        return winrm_protocol.Protocol(
            self.sim.endpoint(host), transport='ntlm',
            username=f'{fixture.DOMAIN}\\{self.sim.username}',
            password=password)

    def test_messages_are_encrypted_on_the_wire(self) -> None:
        name = self.sim.add_vm('sealed-' + uuid.uuid4().hex[:6])
        element = self.sim.vm(name)['element_name']
        self.proto.transport.build_session()
        session = self.proto.transport.session
        seen: list[tuple[str, bytes]] = []
        real_send = session.send

        def send(request: Any, **kwargs: Any) -> Any:
            seen.append((request.headers.get('Content-Type', ''),
                         request.body or b''))
            reply = real_send(request, **kwargs)
            seen.append((reply.headers.get('Content-Type', ''),
                         reply.content))
            return reply
        session.send = send
        [vm] = self.vms_named(element)
        self.assertEqual(name, vm['Name'])
        self.assertEqual(2, len(seen))
        for content_type, body in seen:
            self.assertIn('protocol="application/HTTP-SPNEGO-session-'
                          'encrypted"', content_type)
            self.assertNotIn(element.encode(), body)
            self.assertNotIn(b'Msvm_ComputerSystem', body)

    def test_wrong_password_gets_401_with_basic_challenge(self) -> None:
        reply = requests.post(self.sim.endpoint('hv-src'), data=b'',
                              timeout=10)
        self.assertEqual(401, reply.status_code)
        self.assertIn('Negotiate', reply.headers.get('WWW-Authenticate', ''))
        bad = self._protocol('hv-src', 'wrong')
        self.assertRaises(winrm_exc.InvalidCredentialsError, self.send,
                          TRANSFER_GET, V2 + '/Msvm_ComputerSystem',
                          proto=bad)
