"""A test case with a private, isolated lmcaps configuration."""

from oslo_config import cfg
from oslo_config import fixture as cfg_fixture
import testtools

from lmcaps import conf as lmcaps_conf
from lmcaps.drivers import fake


class ConfTestCase(testtools.TestCase):
    """``self.conf`` has ``[lmcaps]`` registered; ``self.cfg.config(...)``
    overrides options for one test only."""

    def setUp(self):
        super().setUp()
        self.conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(self.conf)
        self.conf([], project='lmcaps-test', default_config_files=[])
        self.cfg = self.useFixture(cfg_fixture.Config(self.conf))
        # Each test its own simulated world for the fake driver.
        self.addCleanup(fake._worlds.clear)
        fake._worlds.clear()
