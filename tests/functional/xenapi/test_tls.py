"""TLS to xapi: verified by default, with [lmcaps_xenapi] ca_file."""

from __future__ import annotations

import shutil

import testtools
from oslo_config import cfg

from lmcaps import exception
from lmcaps.drivers import xenapi as xenapi_driver
from tests import backend as test_backend
from tests.functional.xenapi import conformance_backend
from tests.functional.xenapi.sim import fixture as sim_fixture


class TLSTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        conformance_backend.require()
        test_backend.require(self, shutil.which('openssl') is not None,
                             'the openssl command (certificate for the '
                             'HTTPS simulator)')
        self.sim = self.useFixture(sim_fixture.XapiSim(tls=True))

    def driver(self, **options):
        conf = cfg.ConfigOpts()
        driver = xenapi_driver.XenAPIDriver(conf)
        conf([], project='lmcaps', default_config_files=[])
        for name, value in dict(url=self.sim.url, username=self.sim.username,
                                password=self.sim.password,
                                **options).items():
            conf.set_override(name, value, group=driver.group)
        self.addCleanup(driver.close)
        return driver

    def test_unknown_certificate_refused_by_default(self):
        exc = self.assertRaises(exception.DriverError, self.driver().connect)
        self.assertIn('TLS verification', str(exc))
        self.assertIn('ca_file', str(exc))
        self.assertNotIn('\n', str(exc))
        self.assertNotIn(self.sim.password, str(exc))

    def test_ca_file_verifies(self):
        driver = self.driver(ca_file=self.sim.ca_file)
        driver.connect()
        self.assertEqual(3, len(driver.session.call(
            'host.get_all', lambda x: x.host.get_all())))

    def test_insecure_only_when_set(self):
        driver = self.driver(insecure=True)
        driver.connect()
        self.assertEqual(1, driver.session.logins)
