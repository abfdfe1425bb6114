"""Configuration options: ``register_opts(conf)`` and ``list_opts()``.

Options are registered on the ``ConfigOpts`` the caller gives (nova-compute's
``CONF``, or a private one for the command line), never at import time.
Each driver's options live in a group of its own, ``[lmcaps_<driver>]``.
"""

from __future__ import annotations

import math
import os
import socket
import stat
from collections.abc import Sequence

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
                    'are stored; point every host at one PostgreSQL '
                    'database (postgresql+psycopg2://..., pip extra '
                    'lmcaps[postgresql]) to share them across a fleet. '
                    'The schema is upgraded on first use (or run "lmcaps '
                    'db upgrade").'),
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
    cfg.IntOpt('timeout_action_attempts',
               default=3, min=1, max=100,
               help='Attempts of one timeout action (refused, failed, timed '
                    'out or without effect) before escalating to the next '
                    'in the chain post-copy -> pause -> abort. Related: '
                    'timeout_action_escalation.'),
    cfg.FloatOpt('timeout_action_backoff',
                 default=0.5, min=0.0, max=3600.0,
                 help='Seconds before retrying a timeout action that did not '
                      'take effect; doubled per attempt up to '
                      'timeout_action_backoff_max.'),
    cfg.FloatOpt('timeout_action_backoff_max',
                 default=8.0, min=0.0, max=86400.0,
                 help='Longest wait between two attempts of a timeout '
                      'action, in seconds.'),
    cfg.FloatOpt('timeout_action_effect_timeout',
                 default=5.0, min=0.0, max=3600.0,
                 help='Seconds an accepted timeout action has to show its '
                      'effect (cancelling/cancelled, post-copy, paused) '
                      'before it counts as ineffective and is retried.'),
    cfg.BoolOpt('timeout_action_escalation',
                default=True,
                help='When force_complete does not take effect, escalate '
                     'from post-copy to pause to abort (each only where the '
                     'host supports it); abort is never escalated and never '
                     'used in post-copy.'),
    cfg.IntOpt('monitor_workers',
               default=8, min=1,
               help='Threads that read the migrations the monitor watches '
                    '(get_progress), shared by all of them; one whose '
                    'reading hangs past driver_call_timeout is replaced. '
                    'Timeout actions have threads of their own.'),
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


# -- checking a configuration as a whole ---------------------------------

#: Largest configuration file read, in bytes.
MAX_CONFIG_BYTES = 1 << 20


def check_config_file(path: str) -> None:
    """Refuse a configuration file that is not a small regular text file.

    Checked before oslo.config reads it: a directory, a device such as
    ``/dev/zero``, a FIFO, a binary file or one over MAX_CONFIG_BYTES, a
    UTF-8 byte order mark, an option before the first ``[section]`` line
    (oslo.config's own messages for those two name neither).

    :raises: InvalidConfig naming the file (escaped and truncated).
    """
    from lmcaps import exception
    from lmcaps import validation

    shown = validation.echo(path, 200)

    def bad(why: str) -> exception.InvalidConfig:
        return exception.InvalidConfig(
            reason=f'configuration file {shown} {why}')

    try:
        st = os.stat(path)
    except OSError as exc:
        raise bad(f'cannot be read: {exc.strerror}') from exc
    if not stat.S_ISREG(st.st_mode):
        kind = 'a directory' if stat.S_ISDIR(st.st_mode) else \
            'not a regular file'
        raise bad(f'is {kind}')
    if st.st_size > MAX_CONFIG_BYTES:
        raise bad(f'is larger than {MAX_CONFIG_BYTES} bytes')
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise bad(f'cannot be read: {exc.strerror}') from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise bad(f'is larger than {MAX_CONFIG_BYTES} bytes')
    if b'\0' in data:
        raise bad('is not a text file (it holds NUL bytes)')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise bad(f'is not UTF-8 text (byte {exc.start})') from exc
    if text.startswith('\ufeff'):
        # oslo.config reads the mark as part of the first line
        raise bad('starts with a byte order mark (BOM): save it as UTF-8 '
                  'without one')
    for number, line in enumerate(text.splitlines(), 1):
        first = line.strip()
        if not first or first[0] in '#;':
            continue
        if not first.startswith('['):
            raise bad(f'(line {number}) sets an option before any section; '
                      'allowed: a [section] line first, e.g. [lmcaps]')
        break


def known_groups(conf: cfg.ConfigOpts) -> dict[str, list[cfg.Opt]]:
    """The options of ``[lmcaps]`` and of each installed driver's group.

    Registers every installed driver's options on ``conf`` (as loading the
    driver would), so that their values can be checked too.
    """
    groups: list[tuple[str, list[cfg.Opt]]] = [(GROUP, list(lmcaps_opts))]
    try:
        groups = list_opts()
    except Exception:  # noqa: BLE001 - a broken driver is reported on use
        pass
    for group, opts in groups:
        conf.register_opts(opts, group=group)
    return dict(groups)


def _names(opts: Sequence[cfg.Opt]) -> set[str]:
    names = set()
    for opt in opts:
        names.update({opt.dest, opt.name})
        names.update(d.name for d in opt.deprecated_opts if d.name)
    return names


def unknown_options(files: Sequence[str],
                    groups: dict[str, list[cfg.Opt]]) -> list[str]:
    """One line per unknown option or section of lmcaps in ``files``."""
    import difflib

    problems = []
    known = {group: _names(opts) for group, opts in groups.items()}
    for path in files:
        sections: dict[str, dict] = {}
        cfg.ConfigParser(path, sections).parse()
        for section, keys in sections.items():
            if section != GROUP and not section.startswith(GROUP + '_'):
                continue
            if section not in known:
                near = difflib.get_close_matches(section, known, 1)
                hint = f' (did you mean [{near[0]}]?)' if near else ''
                problems.append(f'unknown section [{section}] in {path}'
                                f'{hint}')
                continue
            for key in keys:
                if key.replace('-', '_') in known[section]:
                    continue
                near = difflib.get_close_matches(key, known[section], 1)
                hint = f' (did you mean {near[0]}?)' if near else ''
                problems.append(f'unknown option [{section}] {key} in '
                                f'{path}{hint}')
    return problems


def check_consistency(conf: cfg.ConfigOpts,
                      groups: dict[str, list[cfg.Opt]]) -> list[str]:
    """One line per value that is out of range together with another."""
    problems = []
    for group, opts in groups.items():
        for name in sorted(opt.dest for opt in opts):
            value = conf[group][name]
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f'[{group}] {name} must be a finite number, '
                                f'not {value}')
    opts = conf[GROUP]
    from lmcaps import exception
    from lmcaps import validation
    try:
        validation.name(opts.host, f'[{GROUP}] host')
    except exception.InvalidInput as exc:
        problems.append(exc.message[len('Invalid '):])
    low, high = opts.min_completion_timeout, opts.max_completion_timeout
    if high and low > high:
        problems.append(f'[{GROUP}] min_completion_timeout ({low}) is larger '
                        f'than max_completion_timeout ({high}): every '
                        'per-instance completion_timeout would be refused')
    if not opts.enabled_checks:
        problems.append(f'[{GROUP}] enabled_checks is empty: no pre-check '
                        'would run; list at least one, e.g. '
                        f"{','.join(DEFAULT_CHECKS)}")
    if not opts.allowed_timeout_actions:
        problems.append(f'[{GROUP}] allowed_timeout_actions is empty; allowed:'
                        f" {', '.join(TIMEOUT_ACTIONS)}")
    return problems


def validate(conf: cfg.ConfigOpts, files: Sequence[str] = (),
             groups: dict[str, list[cfg.Opt]] | None = None) -> None:
    """Check the whole configuration at start, before any backend call.

    Every problem is reported at once: unknown options or sections of
    lmcaps in ``files`` (a misspelt bound would be silently ignored),
    non-finite numbers, min > max and empty lists that would refuse or
    disable everything.  Values out of an option's own range are reported
    by oslo.config when read.

    :param groups: from :func:`known_groups` (called when not given).
    :raises: InvalidConfig (one line, problems joined by ``; ``).
    """
    from lmcaps import exception

    groups = known_groups(conf) if groups is None else groups
    problems = unknown_options(files, groups)
    problems += check_consistency(conf, groups)
    if problems:
        raise exception.InvalidConfig(reason='; '.join(problems))
