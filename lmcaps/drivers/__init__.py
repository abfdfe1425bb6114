"""Loading driver plugins from the ``lmcaps.drivers`` namespace."""

from __future__ import annotations

from importlib import metadata

from oslo_config import cfg
from stevedore import driver as sv_driver
from stevedore import extension

from lmcaps import exception
from lmcaps.drivers import base

NAMESPACE = 'lmcaps.drivers'


def _raise(manager: object, entrypoint: object, exc: BaseException) -> None:
    raise exception.DriverLoadFailed(name=getattr(entrypoint, 'name', '?'),
                                     reason=f'{type(exc).__name__}: {exc}')


def available() -> list[str]:
    """Names of the installed drivers (entry points), sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=NAMESPACE)})


def driver_classes() -> dict[str, type[base.LiveMigrationDriver]]:
    """Every installed driver class by name, without instantiating any.

    :raises: DriverLoadFailed naming the first driver that fails to import or
        is not a LiveMigrationDriver.
    """
    mgr = extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False,
        on_load_failure_callback=_raise)
    result = {}
    for ext in mgr:
        _check_class(ext.name, ext.plugin)
        result[ext.name] = ext.plugin
    return result


def driver_class(name: str) -> type[base.LiveMigrationDriver]:
    """The class of driver ``name``.

    :raises: DriverNotFound, DriverLoadFailed.
    """
    names = available()
    if name not in names:
        raise exception.DriverNotFound(name=name,
                                       available=', '.join(names) or 'none')
    try:
        mgr = sv_driver.DriverManager(NAMESPACE, name, invoke_on_load=False,
                                      on_load_failure_callback=_raise)
    except exception.LmcapsException:
        raise
    except Exception as exc:  # stevedore wraps some failures itself
        raise exception.DriverLoadFailed(name=name, reason=str(exc)) from exc
    _check_class(name, mgr.driver)
    return mgr.driver


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
