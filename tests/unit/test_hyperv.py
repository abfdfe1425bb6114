"""The hyperv driver's own logic: WMI vocabulary, escaping, options."""

from __future__ import annotations

from unittest import mock
import xml.etree.ElementTree as ET

import ddt

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers import hyperv
from lmcaps.drivers.hyperv import jobs
from tests.unit import base as test_base

P = base.Phase
GROUP = 'lmcaps_hyperv'


@ddt.ddt
class JobProgressTest(test_base.ConfTestCase):

    @ddt.data(
        ({'JobState': '2', 'PercentComplete': '0'}, P.PREPARING, 0.0),
        ({'JobState': '3', 'PercentComplete': '0'}, P.PREPARING, 0.0),
        ({'JobState': '4', 'PercentComplete': '42'}, P.PRECOPY, 0.42),
        ({'JobState': '6', 'PercentComplete': '50'}, P.CANCELLING, 0.5),
        ({'JobState': '7', 'PercentComplete': '100', 'ErrorCode': '0'},
         P.COMPLETED, 1.0),
        ({'JobState': '32768', 'PercentComplete': '100'}, P.COMPLETED, 1.0),
        ({'JobState': '7', 'PercentComplete': '100', 'ErrorCode': '32768'},
         P.FAILED, 1.0),
        ({'JobState': '8', 'PercentComplete': '12'}, P.CANCELLED, 0.12),
        ({'JobState': '9', 'PercentComplete': '12'}, P.CANCELLED, 0.12),
        ({'JobState': '10', 'PercentComplete': '30', 'ErrorCode': '32768',
          'ErrorDescription': 'lost the link'}, P.FAILED, 0.3),
        ({'JobState': '12', 'PercentComplete': None}, P.PRECOPY, None),
        ({'JobState': 'bogus'}, P.PREPARING, None),
    )
    @ddt.unpack
    def test_job_state_to_phase(self, props, phase, fraction):
        progress = jobs.progress(props)
        self.assertEqual((phase, fraction), (progress.phase,
                                             progress.fraction))
        self.assertEqual([], progress.problems())
        if props.get('ErrorDescription'):
            self.assertIn('lost the link', progress.message)


@ddt.ddt
class LocationTest(test_base.ConfTestCase):
    H, R = base.GuestHost, base.RunState

    @ddt.data(
        ([{'EnabledState': '2'}], [], H.SOURCE, R.RUNNING),
        ([{'EnabledState': '9'}], [], H.SOURCE, R.PAUSED),
        ([], [{'EnabledState': '2'}], H.DESTINATION, R.RUNNING),
        ([], [{'EnabledState': '3'}], H.DESTINATION, R.SHUT_OFF),
        ([{'EnabledState': '6'}], [], H.SOURCE, R.SHUT_OFF),
        ([{'EnabledState': '3'}], [{'EnabledState': '2'}], H.DESTINATION,
         R.RUNNING),
        ([{'EnabledState': '2'}], [{'EnabledState': '2'}], H.SOURCE,
         R.RUNNING),
        ([{'EnabledState': '32768'}], [], H.SOURCE, R.UNKNOWN),
        ([], [], H.NOWHERE, R.UNKNOWN),
    )
    @ddt.unpack
    def test_location_asked_of_both_hosts(self, src, dst, host, state):
        self.assertEqual((host, state), jobs.location(src, dst).pair)


class WireTest(test_base.ConfTestCase):
    """Values reach the wire as data (needs pywinrm for the header)."""

    def setUp(self):
        super().setUp()
        self.ws = __import__('lmcaps.drivers.hyperv.wsman',
                             fromlist=['wsman'])

    def test_wql_string_escapes_quote_and_backslash(self):
        self.assertEqual("'a\\'; Remove-VM -Name * #'",
                         self.ws.wql_string("a'; Remove-VM -Name * #"))
        self.assertEqual("'C:\\\\VMs\\\\x'", self.ws.wql_string('C:\\VMs\\x'))
        self.assertEqual("'$(Stop-Computer)'",
                         self.ws.wql_string('$(Stop-Computer)'))
        self.assertRaises(ValueError, self.ws.wql_string, 'tab\there')

    def test_names_are_element_text_in_the_envelope(self):
        from winrm import protocol
        proto = protocol.Protocol('https://hv.example:5986/wsman',
                                  transport='basic', username='u',
                                  password='p')
        sent = []
        reply = ('<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-'
                 'envelope"><s:Body><x/></s:Body></s:Envelope>')
        proto.send_message = lambda msg: sent.append(msg) or reply.encode()
        client = self.ws.Client(lambda: proto, 'hv.example:5986')
        evil = '</w:Filter><w:Selector Name="x">&amp;'
        client.invoke('Msvm_MigrationJob', {'InstanceID': evil},
                      'RequestStateChange', [('RequestedState', evil)])
        root = ET.fromstring(sent[0])
        ns = {'w': self.ws.NS['w'], 's': self.ws.NS['s']}
        [sel] = root.findall('s:Header/w:SelectorSet/w:Selector', ns)
        self.assertEqual(('InstanceID', evil), (sel.get('Name'), sel.text))
        [inp] = root.find('s:Body', ns)
        self.assertEqual([evil], [el.text for el in inp])
        self.assertEqual(1, client.round_trips)


class SessionLostTest(test_base.ConfTestCase):
    """A dropped connection: a new session, and one retry if idempotent."""

    def setUp(self):
        super().setUp()
        import requests
        from winrm import protocol
        self.ws = __import__('lmcaps.drivers.hyperv.wsman',
                             fromlist=['wsman'])
        self.made = []
        self.failures = [requests.exceptions.ConnectionError('reset')]

        def factory():
            proto = protocol.Protocol('https://hv:5986/wsman',
                                      transport='basic', username='u',
                                      password='p')

            def send(_message):
                if self.failures:
                    raise self.failures.pop()
                return (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/'
                        b'soap-envelope"><s:Body><i><ReturnValue>0'
                        b'</ReturnValue></i></s:Body></s:Envelope>')
            proto.send_message = send
            self.made.append(proto)
            return proto
        self.client = self.ws.Client(factory, 'hv:5986')

    def test_get_and_stop_request_are_retried_on_a_new_session(self):
        self.assertEqual({'ReturnValue': '0'}, self.client.get(
            'Msvm_MigrationJob', {'InstanceID': 'x'}))
        self.assertEqual(2, len(self.made))
        self.assertIs(self.made[1], self.client.protocol)
        import requests
        self.failures.append(requests.exceptions.ConnectionError('reset'))
        self.client.invoke('Msvm_MigrationJob', {'InstanceID': 'x'},
                           'RequestStateChange', [('RequestedState', 5)])
        self.assertEqual(3, len(self.made))

    def test_a_migration_is_never_started_twice(self):
        self.assertRaises(self.ws.SessionLost, self.client.invoke,
                          'Msvm_VirtualSystemMigrationService', {},
                          'MigrateVirtualSystemToHost', [])
        self.assertEqual(2, len(self.made))    # renewed, not resent
        self.assertEqual(1, self.client.round_trips)


class DriverTest(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.driver = hyperv.HyperVDriver(self.conf)

    def test_declaration(self):
        decl = hyperv.HyperVDriver.declare()
        self.assertEqual(caps.Support.PARTIAL,
                         decl.support(caps.Operation.ABORT))
        self.assertIn('Cancellable', decl[caps.Operation.ABORT].condition)
        for op in (caps.Operation.FORCE_COMPLETE_POSTCOPY,
                   caps.Operation.FORCE_COMPLETE_PAUSE):
            self.assertEqual(caps.Support.MISSING, decl.support(op))
            self.assertTrue(decl[op].notes)
        self.assertEqual(caps.Support.COMPLETE,
                         decl.support(caps.Operation.PER_INSTANCE_TIMEOUT))

    def test_secure_defaults(self):
        opts = {opt.dest: opt for opt in hyperv.HyperVDriver.list_opts()}
        self.assertTrue(opts['password'].secret)
        self.assertTrue(self.conf[GROUP].server_cert_validation)
        self.assertFalse(self.conf[GROUP].allow_unencrypted_basic)
        self.assertTrue(self.conf[GROUP].endpoint.startswith('https://'))

    def _set(self, **values):
        for key, value in values.items():
            self.cfg.config(group=GROUP, **{key: value})

    def test_basic_over_http_refused_unless_allowed(self):
        self._set(endpoint='http://hv1:5985/wsman', transport='basic',
                  username='u', password='s3cret')
        exc = self.assertRaises(exception.DriverError, self.driver.connect)
        self.assertIn('refusing Basic authentication over plain http',
                      str(exc))
        self.assertNotIn('s3cret', str(exc))
        self._set(allow_unencrypted_basic=True)
        self.driver.connect()     # builds the client; no request is sent

    def test_basic_over_https_and_tls_options_reach_pywinrm(self):
        self._set(endpoint='https://hv1:5986/wsman', transport='basic',
                  username='u', password='p', ca_trust_path='/etc/ca.pem')
        self.driver.connect()
        transport = self.driver._source.protocol.transport
        self.assertEqual(('validate', '/etc/ca.pem', 'basic'), (
            transport.server_cert_validation, transport.ca_trust_path,
            transport.auth_method))
        self.driver.close()
        self._set(server_cert_validation=False)
        self.driver.connect()
        self.assertEqual('ignore', self.driver._source.protocol.transport
                         .server_cert_validation)

    def test_ntlm_over_http_is_allowed_with_message_encryption(self):
        self._set(endpoint='http://hv1:5985/wsman', transport='ntlm',
                  username='DOM\\u', password='p')
        self.driver.connect()
        self.assertEqual('auto', self.driver._source.protocol.transport
                         .message_encryption)

    def test_reattach_needs_a_job_path(self):
        ref = base.MigrationRef('hyperv', 'not-a-path', base.MigrationSpec(
            'vm', base.Destination('hv2')), 0.0)
        with mock.patch.object(self.driver, 'connect'):
            self.assertRaises(exception.DriverError, self.driver.reattach,
                              ref)

    def test_job_path_round_trip(self):
        path = jobs.job_path('hv1', 'ABC-1')
        self.assertEqual('\\\\hv1\\root\\virtualization\\v2:'
                         'Msvm_MigrationJob.InstanceID="ABC-1"', path)
        self.assertEqual('ABC-1', hyperv._JOB_PATH.search(path).group(1))

    def test_setting_data_is_an_embedded_instance(self):
        inst = ET.fromstring(hyperv._setting_data())
        self.assertEqual('Msvm_VirtualSystemMigrationSettingData',
                         inst.get('CLASSNAME'))
        self.assertEqual('32768', inst.findtext(
            "PROPERTY[@NAME='MigrationType']/VALUE"))
