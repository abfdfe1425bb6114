"""One LibvirtPair per test process, and the lmcaps config that points at it."""

from __future__ import annotations

import threading

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.libvirt import env

_LOCK = threading.Lock()
_PAIR: env.LibvirtPair | None = None

#: Bandwidth that keeps a guest dirtying 8 MiB from converging (MiB/s).
STUCK_BANDWIDTH = 1
#: Post-copy bandwidth that makes the post-copy phase observable (MiB/s).
POSTCOPY_BANDWIDTH = 4


def shared_pair(test) -> env.LibvirtPair:
    """The started pair; skip loudly (or fail with CI=true) if impossible."""
    global _PAIR
    ok, reason = env.available()
    test_backend.require(test, ok, f'libvirtd + QEMU pair: {reason}')
    with _LOCK:
        if _PAIR is None:
            _PAIR = env.LibvirtPair().start()   # stopped at exit (atexit)
        return _PAIR


def restart_pair() -> None:
    """Stop the shared pair (after a test killed one of its daemons)."""
    global _PAIR
    with _LOCK:
        if _PAIR is not None:
            _PAIR.stop()
            _PAIR = None


def make_conf(pair: env.LibvirtPair, state_path: str,
              **lmcaps_opts) -> cfg.ConfigOpts:
    """A private conf for the libvirt driver on the pair's source daemon.

    :param state_path: a directory the caller removes (events database).
    """
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], project='lmcaps-functional', default_config_files=[])
    conf.set_override('state_path', state_path, group='lmcaps')
    conf.set_override('driver', 'libvirt', group='lmcaps')
    conf.set_override('monitor_poll_interval', 0.2, group='lmcaps')
    for key, value in lmcaps_opts.items():
        conf.set_override(key, value, group='lmcaps')
    drivers.driver_class('libvirt')(conf)          # registers its options
    conf.set_override('connection_uri', pair.src_uri, group='lmcaps_libvirt')
    conf.set_override('live_migration_postcopy_bandwidth', POSTCOPY_BANDWIDTH,
                      group='lmcaps_libvirt')
    return conf


def spec(pair: env.LibvirtPair, name: str,
         bandwidth: int | None = STUCK_BANDWIDTH) -> base.MigrationSpec:
    return base.MigrationSpec(
        instance=name, destination=base.Destination('dst', pair.dst_uri),
        bandwidth_mib=bandwidth,
        options={'migrate_uri': pair.dst_migrate_uri})
