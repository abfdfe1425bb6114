"""Configuration options: ``register_opts(conf)`` and ``list_opts()``.

Options are registered on the ``ConfigOpts`` the caller gives (nova-compute's
``CONF``, or a private one for the command line), never at import time.
Each driver's options live in a group of its own, ``[lmcaps_<driver>]``.
"""

from __future__ import annotations

import socket

from oslo_config import cfg

GROUP = 'lmcaps'

TIMEOUT_ACTIONS = ('abort', 'force_complete')
FORCE_COMPLETE_MODES = ('auto', 'postcopy', 'pause')
DEFAULT_CHECKS = ['driver_support', 'post_copy', 'timeout_bounds']

lmcaps_opts = [
    cfg.StrOpt('driver',
               default='libvirt',
               help='The lmcaps driver (entry point in the lmcaps.drivers '
                    'namespace) that carries out live migrations on this '
                    'host, e.g. libvirt or fake. Run "lmcaps report" to '
                    'list the installed ones.'),
    cfg.StrOpt('host',
               default=socket.gethostname(),
               sample_default='<hostname>',
               help='Name of this host as recorded in instance action '
                    'events.'),
    cfg.IntOpt('completion_timeout_per_gib',
               default=800, min=0, mutable=True,
               help='Default completion timeout, in seconds per GiB of data '
                    'to transfer: guest RAM plus, for block migrations, each '
                    'migrated disk, each counted as at least 2 GiB (as nova '
                    'does). 0 disables the timeout. A per-instance '
                    'completion_timeout (absolute seconds) overrides it. '
                    'Related: timeout_action.'),
    cfg.StrOpt('timeout_action',
               default='abort', choices=TIMEOUT_ACTIONS, mutable=True,
               help='What to do when a live migration reaches its completion '
                    'timeout, unless the request says otherwise. '
                    'Related: force_complete_mode, permit_post_copy.'),
    cfg.StrOpt('force_complete_mode',
               default='auto', choices=FORCE_COMPLETE_MODES, mutable=True,
               help='How force_complete is carried out: postcopy (switch the '
                    'migration to post-copy), pause (pause the guest so the '
                    'last pages copy), or auto (post-copy when permitted and '
                    'supported on this host, pause otherwise).'),
    cfg.BoolOpt('permit_post_copy',
                default=False, mutable=True,
                help='Allow live migrations to switch to post-copy. When '
                     'False, a request for post-copy is refused by the '
                     'post_copy pre-check before the migration starts.'),
    cfg.IntOpt('min_completion_timeout',
               default=0, min=0, mutable=True,
               help='Smallest per-instance completion_timeout, in seconds, '
                    'that a request may ask for (0 = no lower bound).'),
    cfg.IntOpt('max_completion_timeout',
               default=0, min=0, mutable=True,
               help='Largest per-instance completion_timeout, in seconds, '
                    'that a request may ask for. 0 = no upper bound, and '
                    'then also allows completion_timeout 0 (never time out).'),
    cfg.ListOpt('allowed_timeout_actions',
                default=list(TIMEOUT_ACTIONS), item_type=cfg.types.String(
                    choices=TIMEOUT_ACTIONS), mutable=True,
                help='Timeout actions a per-instance request may choose.'),
    cfg.ListOpt('enabled_checks',
                default=list(DEFAULT_CHECKS),
                help='Pre-live-migration checks to run on the source, in '
                     'order; names of entry points in the lmcaps.checks '
                     'namespace.'),
    cfg.StrOpt('state_path',
               default='~/.local/state/lmcaps',
               help='Directory for lmcaps state (the default event '
                    'database).'),
    cfg.StrOpt('event_connection',
               default='sqlite:///$state_path/lmcaps-events.sqlite',
               secret=True,
               help='SQLAlchemy database URL where instance action events '
                    'are stored; point every host at one MySQL or '
                    'PostgreSQL database to share them across a fleet.'),
    cfg.FloatOpt('monitor_poll_interval',
                 default=0.5, min=0.01,
                 help='Seconds between two progress polls of one running '
                      'migration (to notice completion or post-copy). The '
                      'timeout itself is timer driven and does not wait for '
                      'a poll.'),
    cfg.FloatOpt('driver_call_timeout',
                 default=20.0, min=0.1, max=3600.0,
                 help='Seconds a driver call to the backend (abort, '
                      'force-complete, locating the guest) may take before '
                      'it is abandoned and reported, so that a hung backend '
                      'never holds the monitor.'),
    cfg.IntOpt('monitor_workers',
               default=8, min=1,
               help='Threads that carry out timeout actions and polls for '
                    'the monitor, shared by all migrations.'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[lmcaps]`` options on ``conf``."""
    conf.register_opts(lmcaps_opts, group=GROUP)


def driver_group(name: str) -> str:
    """Name of the option group of driver ``name``."""
    return f'lmcaps_{name}'


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """All options, for oslo-config-generator: ours and each driver's."""
    import warnings

    from lmcaps import drivers  # imports no hypervisor client library
    result = [(GROUP, list(lmcaps_opts))]
    found = drivers.scan()
    for name, reason in sorted(found.failures.items()):
        warnings.warn(f'lmcaps driver {name!r} does not load, its options are '
                      f'left out: {reason}', RuntimeWarning, stacklevel=2)
    for name, cls in sorted(found.classes.items()):
        opts = list(cls.list_opts())
        if opts:
            result.append((driver_group(name), opts))
    return result
