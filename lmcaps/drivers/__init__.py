"""Loading driver plugins from the ``lmcaps.drivers`` namespace."""

from __future__ import annotations

import dataclasses
from importlib import metadata
from typing import Any

from oslo_config import cfg
from stevedore import driver as sv_driver
from stevedore import extension

from lmcaps import exception
from lmcaps.drivers import base

NAMESPACE = 'lmcaps.drivers'


def _raise(manager: object, entrypoint: object, exc: BaseException) -> None:
    raise exception.DriverLoadFailed(name=getattr(entrypoint, 'name', '?'),
                                     reason=f'{type(exc).__name__}: {exc}')


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, 'dist', None)
    return getattr(dist, 'name', None) or '<unknown distribution>'


def _check_duplicates() -> None:
    """Two distributions registering one driver name is an error.

    :raises: DuplicateDriver naming the name and both distributions.
    """
    seen: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group=NAMESPACE):
        dist = _distribution(ep)
        first = seen.setdefault(ep.name, (dist, ep.value))
        if first != (dist, ep.value):
            raise exception.DuplicateDriver(
                name=ep.name, first=f'{first[0]} ({first[1]})',
                second=f'{dist} ({ep.value})')


def available() -> list[str]:
    """Names of the installed drivers (entry points), sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=NAMESPACE)})


@dataclasses.dataclass(frozen=True)
class Scan:
    """The installed drivers: the classes that load, and why others don't.

    :param classes: name -> driver class.
    :param failures: name -> one-line load error.
    """

    classes: dict[str, type[base.LiveMigrationDriver]]
    failures: dict[str, str]


def scan() -> Scan:
    """Load every installed driver class; a broken one is reported, not fatal.

    :raises: DuplicateDriver when two distributions use one driver name.
    """
    _check_duplicates()
    failures: dict[str, str] = {}

    def failed(_mgr: object, ep: object, exc: BaseException) -> None:
        failures[getattr(ep, 'name', '?')] = f'{type(exc).__name__}: {exc}'

    mgr: Any = extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False, on_load_failure_callback=failed)
    classes = {}
    for ext in mgr:
        try:
            _check_class(ext.name, ext.plugin)
        except exception.DriverLoadFailed as exc:
            failures[ext.name] = str(exc.kwargs.get('reason', exc))
            continue
        classes[ext.name] = ext.plugin
    return Scan(classes, failures)


def driver_classes() -> dict[str, type[base.LiveMigrationDriver]]:
    """Every installed driver class by name, without instantiating any.

    :raises: DriverLoadFailed naming the first driver that fails to import or
        is not a LiveMigrationDriver; DuplicateDriver.
    """
    found = scan()
    for name, reason in sorted(found.failures.items()):
        raise exception.DriverLoadFailed(name=name, reason=reason)
    return found.classes


def driver_class(name: str) -> type[base.LiveMigrationDriver]:
    """The class of driver ``name``.

    :raises: DriverNotFound, DriverLoadFailed.
    """
    names = available()
    if name not in names:
        raise exception.DriverNotFound(name=name,
                                       available=', '.join(names) or 'none')
    _check_duplicates()
    try:
        mgr: Any = sv_driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False,
            on_load_failure_callback=_raise)
    except exception.LmcapsException:
        raise
    except Exception as exc:  # stevedore wraps some failures itself
        raise exception.DriverLoadFailed(name=name, reason=str(exc)) from exc
    _check_class(name, mgr.driver)
    driver: type[base.LiveMigrationDriver] = mgr.driver
    return driver


def load(name: str, conf: cfg.ConfigOpts) -> base.LiveMigrationDriver:
    """Instantiate driver ``name`` on ``conf`` (its options get registered)."""
    return driver_class(name)(conf)


def _check_class(name: str, plugin: object) -> None:
    if not (isinstance(plugin, type) and
            issubclass(plugin, base.LiveMigrationDriver)):
        raise exception.DriverLoadFailed(
            name=name, reason=f'{plugin!r} is not a LiveMigrationDriver')
    if plugin.name != name:
        raise exception.DriverLoadFailed(
            name=name, reason=f'class {plugin.__name__} says its name is '
                              f'{plugin.name!r}, the entry point {name!r}')
