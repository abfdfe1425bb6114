"""Errors raised by lmcaps.

Every error is an :class:`LmcapsException` subclass with a ``msg_fmt``
template.  Callers embedding lmcaps (nova-compute) translate these into their
own errors at the boundary; lmcaps never imports its host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcaps.checks import PreCheckReport
    from lmcaps.policy import EffectivePolicy


class LmcapsException(Exception):
    """Base class: formats ``msg_fmt`` with the keyword arguments given."""

    msg_fmt = 'An unknown lmcaps error occurred.'

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError) as exc:
                # A wrong template is a programming error; do not hide it
                # behind a vague message, but do not lose the data either.
                message = f'{self.msg_fmt} ({exc!r}: {kwargs!r})'
        self.message = message
        super().__init__(message)


class InvalidRequest(LmcapsException):
    msg_fmt = 'Invalid live-migration request: %(reason)s'


class InvalidInput(LmcapsException):
    """An argument or option value that is not allowed (exit code 2)."""

    msg_fmt = 'Invalid %(what)s %(value)s; allowed: %(allowed)s'


class InvalidPolicyFile(InvalidInput):
    """A drain policy file that cannot be used (bad input: exit 2)."""

    msg_fmt = 'Invalid policy file %(path)s: %(reason)s'


class InvalidConfig(LmcapsException):
    """The configuration as a whole is inconsistent (exit code 2)."""

    msg_fmt = 'Invalid configuration: %(reason)s'


class DriverNotFound(LmcapsException):
    msg_fmt = ("Unknown lmcaps driver '%(name)s'; installed drivers: "
               "%(available)s")


class DriverLoadFailed(LmcapsException):
    msg_fmt = "Could not load lmcaps driver '%(name)s': %(reason)s"


class DuplicateDriver(LmcapsException):
    msg_fmt = ("lmcaps driver name '%(name)s' is registered twice: by "
               "%(first)s and by %(second)s; uninstall one")


class CheckNotFound(LmcapsException):
    msg_fmt = ("Unknown pre-check '%(name)s' in [lmcaps] enabled_checks; "
               "installed checks: %(available)s")


class CheckLoadFailed(LmcapsException):
    msg_fmt = "Could not load pre-check '%(name)s': %(reason)s"


class InvalidDeclaration(LmcapsException):
    msg_fmt = "Driver '%(driver)s' declares its capabilities wrongly: %(reason)s"


class UnsupportedOperation(LmcapsException):
    msg_fmt = ("Driver '%(driver)s' does not support %(operation)s: "
               "%(reason)s")


class OperationRefused(LmcapsException):
    """The backend refused an operation it normally supports, for now."""

    msg_fmt = ("Driver '%(driver)s' refused %(operation)s on migration "
               "%(migration)s: %(reason)s")


class DriverError(LmcapsException):
    msg_fmt = "Driver '%(driver)s' failed: %(reason)s"


class DriverCallTimeout(DriverError):
    msg_fmt = ("Driver '%(driver)s': %(call)s did not return within "
               "%(timeout)s s ([lmcaps] driver_call_timeout); abandoned")


class MigrationNotFound(LmcapsException):
    msg_fmt = 'Migration %(migration)s is not known to driver %(driver)s'


class MigrationGone(DriverError):
    """A reference to a migration the backend no longer has."""

    msg_fmt = ("Driver '%(driver)s': migration %(reference)s no longer "
               "exists on the backend%(detail)s")

    def __init__(self, driver: str, reference: str, detail: str = '') -> None:
        super().__init__(driver=driver, reference=reference,
                         detail=f' ({detail})' if detail else '')


class MigrationPreCheckFailed(LmcapsException):
    """One or more pre-live-migration checks failed; nothing was changed.

    :param report: the verdict of every check, when the checks were run
        (``PreCheckRunner.run`` always gives it): callers show it without
        running the checks again.
    :param policy: the effective policy the checks refused, when it was
        resolved.
    """

    msg_fmt = 'Live migration of %(instance)s refused: %(reasons)s'

    def __init__(self, instance: str, reasons: Sequence[str],
                 report: PreCheckReport | None = None,
                 policy: EffectivePolicy | None = None) -> None:
        self.instance = instance
        self.reasons = tuple(reasons)
        self.report = report
        self.policy = policy
        super().__init__(instance=instance, reasons='; '.join(self.reasons))


class EventStoreError(LmcapsException):
    msg_fmt = 'Event store %(url)s is unusable: %(reason)s'


class EventNotFound(EventStoreError, KeyError):
    """``event_finish`` found no unfinished event of that name."""

    msg_fmt = ('Event store %(url)s has no unfinished event %(event)s for '
               'instance %(instance)s, request %(request_id)s')

    def __str__(self) -> str:
        return self.message  # KeyError's would quote the message


class BackendNotFound(LmcapsException):
    msg_fmt = ('No conformance backend for driver %(driver)s: %(reason)s; '
               'give --backend module:Class')


class KitNotInstalled(LmcapsException):
    msg_fmt = ('The conformance kit needs %(modules)s: pip install '
               '"lmcaps[conformance]"')


class MonitorError(LmcapsException):
    msg_fmt = 'Timeout monitor error: %(reason)s'
