"""Options of the nova integration: ``[lmcaps_nova]``, plus ``[lmcaps]``.

Inside nova-compute the host-wide defaults are nova's own ``[libvirt]``
options (``live_migration_completion_timeout``,
``live_migration_timeout_action``, ``live_migration_permit_post_copy``),
because nova's monitor and nova's migration flags act on them; ``[lmcaps]``
adds ``force_complete_mode``, the per-instance bounds and the enabled
pre-checks.  ``[lmcaps]`` completion_timeout_per_gib, timeout_action and
permit_post_copy are not used inside nova.  On VMware, where nova has no
live-migration timeout options, ``[lmcaps_nova]
vmware_completion_timeout_per_gib`` is the host-wide default.
"""

from __future__ import annotations

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf

GROUP = 'lmcaps_nova'

nova_opts = [
    cfg.BoolOpt('instance_metadata',
                default=False, mutable=True,
                help='Read per-instance values from instance metadata keys '
                     'lmcaps:completion_timeout (seconds), '
                     'lmcaps:timeout_action and lmcaps:force_complete_mode. '
                     'The instance owner can set these through the API, so '
                     'they rank below flavor extra specs and are held to '
                     '[lmcaps] min_completion_timeout, max_completion_timeout '
                     'and allowed_timeout_actions; set max_completion_timeout '
                     'before enabling this, or owners can ask for no timeout '
                     '(0).  Owner values never refuse a migration: an '
                     'invalid one is ignored, one out of bounds is clamped '
                     'into them (0 becomes max_completion_timeout when that '
                     'is set), and the live-migration action records it.'),
    cfg.BoolOpt('precheck_fail_open',
                default=False, mutable=True,
                help="What the source pre-check does when lmcaps itself "
                     'fails (a check that cannot load, a declaration or '
                     'event that cannot be read or written): False refuses '
                     'the live migration with MigrationPreCheckError (the '
                     'instance stays ACTIVE); True logs the failure, records '
                     'an Error event lmcaps_precheck_live_migration and lets '
                     'the migration go ahead on nova\'s host-wide values. '
                     'A check that refuses, and a bad request or flavor '
                     'value, refuse either way.'),
    cfg.IntOpt('vmware_completion_timeout_per_gib',
               default=0, min=0, mutable=True,
               help="Host-wide live-migration completion timeout of nova's "
                    'VMware driver, in seconds per GiB of the flavor\'s RAM '
                    '(at least 2 GiB), after which the RelocateVM_Task is '
                    'cancelled; 0 = no timeout, as nova itself.  Per-instance '
                    'values (request, flavor extra specs, instance metadata) '
                    'override it.  nova has no such option for VMware; on '
                    'libvirt nova\'s [libvirt] '
                    'live_migration_completion_timeout is used.'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register ``[lmcaps]`` and ``[lmcaps_nova]`` on ``conf`` (idempotent)."""
    lmcaps_conf.register_opts(conf)
    conf.register_opts(nova_opts, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The ``[lmcaps_nova]`` options, for oslo-config-generator."""
    return [(GROUP, list(nova_opts))]
