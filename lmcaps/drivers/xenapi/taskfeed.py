"""Task records of many migrations from one ``event.from`` call per poll."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lmcaps import exception
from lmcaps.drivers.xenapi import session as session_mod

LOG = logging.getLogger(__name__)


class TaskFeed:
    """Cached task records, refreshed by ``event.from(['task'], token, 0)``.

    XenAPI reference, class event: ``event.from(classes, token, timeout)``
    returns the events since ``token`` (each with ``operation`` add | mod |
    del and the object's ``snapshot``) and a new token.  One call per
    ``interval()`` seconds refreshes every task; a task not seen yet is read
    with ``task.get_record``.  Where xapi refuses ``event.from`` the feed
    falls back to one ``task.get_record`` per task per read.

    :param session: the logged-in session.
    :param interval: returns the seconds a cached record stays fresh.
    """

    def __init__(self, session: session_mod.XapiSession,
                 interval: Callable[[], float]) -> None:
        self.session = session
        self.interval = interval
        self.batched = True
        self._records: dict[str, dict[str, Any] | None] = {}
        self._token = ''
        self._at = -1e9

    def invalidate(self) -> None:
        """The next read asks xapi again (after our own change)."""
        self._at = -1e9

    def _refresh(self) -> None:
        try:
            batch = self.session.call('event.from', lambda x: getattr(
                x.event, 'from')(['task'], self._token, 0.0))
        except self.session.Failure as exc:
            LOG.info('event.from refused (%s); reading tasks one by one',
                     getattr(exc, 'details', ['?'])[0])
            self.batched = False
            return
        self._token = batch['token']
        for event in batch['events']:
            ref = event['ref']
            self._records[ref] = (None if event['operation'] == 'del'
                                  else event['snapshot'])
        self._at = time.monotonic()

    def record(self, ref: str) -> dict[str, Any] | None:
        """The task's record; None when xapi no longer has the task.

        :raises: DriverError for xapi trouble.
        """
        with self.session.lock:
            if self.batched and (ref not in self._records or
                                 time.monotonic() - self._at >=
                                 self.interval()):
                self._refresh()
            if self.batched and ref in self._records:
                return self._records[ref]
            try:
                rec = self.session.call('task.get_record',
                                        lambda x: x.task.get_record(ref))
            except self.session.Failure as exc:
                details = list(getattr(exc, 'details', None) or ['?'])
                if details[0] != 'HANDLE_INVALID':
                    raise exception.DriverError(
                        driver=self.session.driver, reason='task.get_record: '
                        + ' '.join(map(str, details))) from None
                rec = None
            self._records[ref] = rec
            return rec
