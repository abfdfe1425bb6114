"""The embedder's facade in ``lmcaps/__init__.py``."""

from __future__ import annotations

import subprocess
import sys

import lmcaps
from lmcaps import events
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers import fake
from tests.unit import base as test_base


class FacadeTest(test_base.ConfTestCase):

    def setUp(self) -> None:
        super().setUp()
        lmcaps.initialize(self.conf)            # idempotent
        self.driver = lmcaps.load_driver(self.conf, 'fake')
        self.cfg.config(time_scale=50.0, group='lmcaps_fake')
        self.cfg.config(monitor_poll_interval=0.02, group='lmcaps')
        self.store = events.MemoryEventStore()

    def test_precheck_then_migrate(self) -> None:
        self.assertIsInstance(self.driver, fake.FakeDriver)
        spec = base.MigrationSpec('vm-1', base.Destination('dst'))
        verdict = lmcaps.check_live_migration(
            self.conf, self.driver, spec, {'completion_timeout': 60},
            self.store, 'req-1')
        self.assertEqual(60.0, verdict.policy.completion_timeout)
        self.assertTrue(verdict.report.passed)
        summary = lmcaps.live_migrate(
            self.conf, self.driver, spec, {'completion_timeout': 60},
            self.store, request_id='req-2')
        self.assertEqual(('completed', 'destination (running)'),
                         (summary.outcome, summary.guest_on))

    def test_bad_request_touches_nothing(self) -> None:
        spec = base.MigrationSpec('vm-1', 'dst')
        err = self.assertRaises(exception.InvalidRequest,
                                lmcaps.check_live_migration,
                                self.conf, self.driver, spec,
                                {'timeout_action': 'pause'}, self.store, 'r')
        self.assertIn('abort, force_complete', str(err))
        self.assertEqual([], self.store.list_events('vm-1'))

    def test_host_info_lists_every_declaration(self) -> None:
        info = lmcaps.host_info()
        names = {d['driver'] for d in info['drivers']}
        self.assertTrue({'fake', 'libvirt'} <= names)
        self.assertEqual({}, info['load_errors'])

    def test_import_is_light(self) -> None:
        code = ('import sys, lmcaps; heavy = [m for m in ("sqlalchemy", '
                '"libvirt", "nova", "testtools", "ddt", "fixtures", "osc_lib", '
                '"openstack", "openstackclient", "lmcaps.osc") '
                'if m in sys.modules]; print(heavy)')
        out = subprocess.run([sys.executable, '-c', code], check=True,
                             capture_output=True, text=True).stdout
        self.assertEqual('[]', out.strip())
