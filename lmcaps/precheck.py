"""The one pre-live-migration entry point.

Every caller — ``lmcaps migrate``, ``lmcaps check``, the conformance kit and
nova's ``check_can_live_migrate_source`` — runs the same sequence here::

    validate the per-instance layers      (before any backend call)
    load the enabled checks               (a bad enabled_checks fails first)
    connect → host declaration → data size   (with a driver)
    resolve the effective policy          (mode chosen once)
    run the checks, record one event      (raise if any failed)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import checks
from lmcaps import conf as lmcaps_conf
from lmcaps import events as lmcaps_events
from lmcaps import policy as lmcaps_policy
from lmcaps import request as lmcaps_request
from lmcaps.checks import base as checks_base
from lmcaps.drivers import base

Layers = Sequence[tuple[str, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a passed pre-check run decided."""

    policy: lmcaps_policy.EffectivePolicy
    report: checks.PreCheckReport
    declaration: caps.Declaration
    context: checks_base.CheckContext
    data_gib: float


def validate_layers(layers: Layers) -> list[tuple[str, dict[str, Any]]]:
    """Each layer validated against ``request.REQUEST_SCHEMA``, empty dropped.

    :raises: InvalidRequest naming the layer's field and allowed values.
    """
    result = []
    for name, values in layers:
        checked = lmcaps_request.validate(values)
        if checked:
            result.append((name, checked))
    return result


def merged(layers: Layers) -> dict[str, Any]:
    """The layers' values merged, first layer winning."""
    out: dict[str, Any] = {}
    for _name, values in reversed(list(layers)):
        out.update(values)
    return out


def run(conf: cfg.ConfigOpts, store: lmcaps_events.EventStore,
        request_id: str, instance: str, layers: Layers, *,
        driver: base.LiveMigrationDriver | None = None,
        spec: base.MigrationSpec | None = None,
        declaration: caps.Declaration | None = None,
        data_gib: float | None = None,
        runner: checks.PreCheckRunner | None = None,
        host: str | None = None,
        record_success: bool = True,
        permit_post_copy: bool | None = None,
        options: Mapping[str, str] | None = None) -> Verdict:
    """Validate, resolve and pre-check one live migration.

    Give ``driver`` (and ``spec``, for the data size) or a ready
    ``declaration`` and ``data_gib`` (an embedding host with its own
    hypervisor connection, such as nova).

    :param layers: ``(layer name, values)`` pairs, highest precedence first
        (``request``, ``flavor`` ...); ``[lmcaps]`` config comes last.
    :param runner: the loaded checks; loaded from ``[lmcaps]
        enabled_checks`` when None.
    :param record_success: False records no event when every check passes.
    :param permit_post_copy: the host's permit when it is not ``[lmcaps]
        permit_post_copy``.
    :param options: the host's names of lmcaps options, for the checks'
        messages (``CheckContext.options``).
    :raises: InvalidRequest (nothing touched), CheckNotFound /
        CheckLoadFailed, DriverError from the driver,
        MigrationPreCheckFailed (event recorded, report attached).
    """
    checked = validate_layers(layers)
    runner = runner if runner is not None else checks.PreCheckRunner(conf)
    if declaration is None:
        if driver is None:
            raise TypeError('precheck.run needs a driver or a declaration')
        driver.connect()
        declaration = driver.host_declaration()
    if data_gib is None:
        data_gib = (driver.guest_data_gib(spec) if driver is not None and
                    spec is not None else 2.0)
    ctx = check_context(conf, instance, checked, declaration=declaration,
                        data_gib=data_gib, permit_post_copy=permit_post_copy,
                        options=options)
    pol = ctx.policy
    report = runner.run(ctx, store, request_id,
                        host or conf[lmcaps_conf.GROUP].host,
                        record_success=record_success)
    return Verdict(policy=pol, report=report, declaration=declaration,
                   context=ctx, data_gib=data_gib)


def check_context(conf: cfg.ConfigOpts, instance: str, checked: Layers, *,
                  declaration: caps.Declaration, data_gib: float,
                  permit_post_copy: bool | None = None,
                  options: Mapping[str, str] | None = None
                  ) -> checks_base.CheckContext:
    """The checks' context: the effective policy of validated ``checked``
    layers over ``[lmcaps]`` config on this host (arguments as :func:`run`).

    :raises: InvalidRequest for a timeout out of range.
    """
    pol = lmcaps_policy.resolve(conf, data_gib, checked,
                                declaration=declaration,
                                permit_post_copy=permit_post_copy)
    return checks_base.CheckContext(instance=instance, policy=pol,
                                    declaration=declaration, conf=conf,
                                    request=merged(checked),
                                    options=dict(options or {}))


def request_layers(values: Mapping[str, Any]) -> list[tuple[str, Mapping]]:
    """The single ``request`` layer of a command-line or API request."""
    return [(lmcaps_policy.REQUEST, values)] if values else []
