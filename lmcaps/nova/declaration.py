"""The libvirt driver's declaration, refined from nova's own host facts.

The base is lmcaps's static libvirt declaration
(``lmcaps.drivers.driver_class('libvirt').declare()``).  Inside nova-compute
the operations are carried out by nova's libvirt driver and monitor, so the
refinement reads what nova knows: the libvirt and QEMU versions through
nova's ``Host``, and the migration flags nova computed from ``[libvirt]``
(VIR_MIGRATE_POSTCOPY is set only with live_migration_permit_post_copy).
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

from nova.virt.libvirt import driver as nova_driver
from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import drivers as lmcaps_drivers
from lmcaps.nova import traits

LIBVIRT = 'libvirt'
MIN_LIBVIRT_POSTCOPY = (1, 3, 3)
MIN_QEMU_POSTCOPY = (2, 5, 0)

#: Fact keys (values are strings).
FACT_LIBVIRT = 'libvirt'
FACT_QEMU = 'qemu'
FACT_PERMIT_POST_COPY = 'permit_post_copy'
FACT_POST_COPY_FLAG = 'post_copy_flag'
FACT_AUTO_CONVERGE = traits.AUTO_CONVERGE_FACT

_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1)
def static_declaration() -> caps.Declaration:
    """lmcaps's libvirt declaration (loads the entry point once)."""
    return lmcaps_drivers.driver_class(LIBVIRT).declare()


def _fmt(number: int) -> str:
    return f'{number // 1000000}.{number // 1000 % 1000}.{number % 1000}'


def _flags(driver: Any) -> tuple[int, int]:
    return (getattr(driver, '_live_migration_flags', 0) or 0,
            getattr(driver, '_block_migration_flags', 0) or 0)


def host_declaration(driver: Any, conf: cfg.ConfigOpts) -> caps.Declaration:
    """The declaration for the host of ``driver`` (a nova LibvirtDriver).

    Cached per driver and migration flags (nova sets them in init_host).
    """
    key = (_flags(driver), conf.libvirt.live_migration_permit_post_copy)
    with _lock:
        hit = _cache.get(driver)
    if hit is not None and hit[0] == key:
        return hit[1]
    declaration = _refine(driver, conf, static_declaration())
    with _lock:
        _cache[driver] = (key, declaration)
    return declaration


def _refine(driver: Any, conf: cfg.ConfigOpts,
            declaration: caps.Declaration) -> caps.Declaration:
    libvirt = nova_driver.libvirt
    conn = driver._host.get_connection()
    live_flags, block_flags = _flags(driver)
    postcopy_flag = bool(live_flags & block_flags &
                         libvirt.VIR_MIGRATE_POSTCOPY)
    permit = conf.libvirt.live_migration_permit_post_copy
    facts = {
        FACT_LIBVIRT: _fmt(conn.getLibVersion()),
        FACT_QEMU: _fmt(conn.getVersion()),
        FACT_PERMIT_POST_COPY: str(permit),
        FACT_POST_COPY_FLAG: str(postcopy_flag),
        FACT_AUTO_CONVERGE: str(bool(
            live_flags & block_flags & libvirt.VIR_MIGRATE_AUTO_CONVERGE)),
    }
    requires = declaration[caps.Operation.FORCE_COMPLETE_POSTCOPY].requires
    if not driver._host.has_min_version(lv_ver=MIN_LIBVIRT_POSTCOPY,
                                        hv_ver=MIN_QEMU_POSTCOPY):
        postcopy = caps.missing(
            f'needs {requires}; this host has libvirt {facts[FACT_LIBVIRT]}'
            f', QEMU {facts[FACT_QEMU]}')
    elif postcopy_flag:
        postcopy = caps.complete(
            "nova's monitor calls virDomainMigrateStartPostCopy; nova starts "
            'migrations with VIR_MIGRATE_POSTCOPY (not for paused guests or '
            'guests with vPMEM, which are paused instead)', requires=requires)
    else:
        postcopy = caps.partial(
            condition='[libvirt] live_migration_permit_post_copy is False '
                      'on this host',
            notes='nova starts migrations without VIR_MIGRATE_POSTCOPY here',
            requires=requires)
    return declaration.refine(
        conf.host, facts,
        abort=caps.complete("nova's monitor calls virDomainAbortJob; "
                            'refused once in post-copy'),
        force_complete_postcopy=postcopy,
        force_complete_pause=caps.complete(
            "nova's monitor pauses the guest (virDomainSuspend) and resumes "
            'it if the migration then fails'),
        per_instance_timeout=caps.complete(
            "lmcaps.nova hooks: nova's monitor uses the per-instance "
            'deadline and action, once per migration'))
