"""lmcaps: per-instance live-migration timeout actions, capabilities, pre-checks.

The few calls an embedding host (nova-compute, an orchestrator) needs, in
the spirit of os-vif's ``initialize()`` / ``plug()``::

    import lmcaps

    lmcaps.initialize(CONF)                  # register [lmcaps] options
    driver = lmcaps.load_driver(CONF)        # [lmcaps] driver, options checked
    verdict = lmcaps.check_live_migration(CONF, driver, spec, request,
                                          store, request_id)
    summary = lmcaps.live_migrate(CONF, driver, spec, request, store)
    lmcaps.host_info()                       # every driver's declaration

Everything else is reachable from the modules named in each docstring.
Importing ``lmcaps`` imports no hypervisor client library, no nova, no
SQLAlchemy and no test library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

__version__ = '0.1.0'

if TYPE_CHECKING:
    from oslo_config import cfg

    from lmcaps import events
    from lmcaps import precheck as precheck_mod
    from lmcaps.drivers import base
    from lmcaps.migrate import Summary

__all__ = ['check_live_migration', 'host_info', 'initialize',
           'live_migrate', 'load_driver']


def initialize(conf: cfg.ConfigOpts) -> None:
    """Register the ``[lmcaps]`` options on ``conf`` (idempotent).

    Driver options are registered in ``[lmcaps_<driver>]`` when the driver
    is loaded (:func:`load_driver`).
    """
    from lmcaps import conf as lmcaps_conf
    lmcaps_conf.register_opts(conf)


def load_driver(conf: cfg.ConfigOpts,
                name: str | None = None) -> base.LiveMigrationDriver:
    """The driver ``name`` (default ``[lmcaps] driver``), not yet connected.

    :raises: DriverNotFound, DriverLoadFailed, DuplicateDriver.
    """
    from lmcaps import conf as lmcaps_conf
    from lmcaps import drivers
    initialize(conf)
    return drivers.load(name or conf[lmcaps_conf.GROUP].driver, conf)


def check_live_migration(conf: cfg.ConfigOpts,
                         driver: base.LiveMigrationDriver,
                         spec: base.MigrationSpec, request: Mapping[str, Any],
                         store: events.EventStore, request_id: str
                         ) -> precheck_mod.Verdict:
    """Validate ``request``, resolve the policy, run the enabled pre-checks.

    One event is recorded.  See :func:`lmcaps.precheck.run` for hosts that
    bring their own declaration or more layers (flavor, metadata).

    :raises: InvalidRequest (nothing touched), MigrationPreCheckFailed
        (event recorded), DriverError.
    """
    from lmcaps import precheck as precheck_mod
    return precheck_mod.run(conf, store, request_id, spec.instance,
                            precheck_mod.request_layers(request),
                            driver=driver, spec=spec)


def live_migrate(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
                 spec: base.MigrationSpec, request: Mapping[str, Any],
                 store: events.EventStore, **kwargs: Any) -> Summary:
    """Pre-check, start, enforce the timeout and record one live migration.

    :param kwargs: ``request_id``, ``on_progress``, ``progress_interval``
        (:func:`lmcaps.migrate.run`).
    :returns: the summary, with the guest's observed location.
    :raises: InvalidRequest, MigrationPreCheckFailed before anything starts.
    """
    from lmcaps import migrate as migrate_mod
    return migrate_mod.run(conf, driver, spec, request, store, **kwargs)


def host_info() -> dict[str, Any]:
    """Every installed driver's static declaration, and the load errors.

    :returns: ``{'version': ..., 'drivers': [Declaration.as_dict()...],
        'load_errors': {name: reason}}``.
    """
    from lmcaps import report
    decls, failures = report.survey()
    return {**report.as_dict(decls), 'load_errors': failures}
