"""A logged-in XenAPI session that logs in again once when xapi dropped it."""

from __future__ import annotations

import logging
import ssl
import threading
import xmlrpc.client
from collections.abc import Callable
from typing import Any, TypeVar

from lmcaps import exception

LOG = logging.getLogger(__name__)
T = TypeVar('T')


class XapiSession:
    """``XenAPI.Session`` on one pool master, serialised by a lock.

    The SDK's session is an ``xmlrpc.client.ServerProxy`` (one HTTP
    connection, not thread-safe), hence the lock.  The SDK itself logs in
    again on ``SESSION_INVALID`` (XenAPI.py ``_parse_result``); when it gives
    up, :meth:`call` logs in once more and repeats the call once.

    :param driver: the driver name, for messages.
    :param group: the option group, for messages.
    :param url: the pool master's URL.
    :param ca_file: PEM bundle for TLS verification (None: system store).
    :param insecure: skip TLS verification.
    """

    def __init__(self, driver: str, group: str, url: str, username: str,
                 password: str, ca_file: str | None = None,
                 insecure: bool = False) -> None:
        self.driver, self.group, self.url = driver, group, url
        self.username = username
        self._password = password
        self.ca_file, self.insecure = ca_file, insecure
        self.lock = threading.RLock()
        self.sdk: Any = None
        self._session: Any = None
        #: logins done by this object (not those the SDK does by itself).
        self.logins = 0
        #: calls sent (each SDK call is one XML-RPC round trip).
        self.round_trips = 0

    @property
    def Failure(self) -> type[Exception]:
        """The SDK's ``XenAPI.Failure`` (details = ErrorDescription)."""
        self._import()
        return self.sdk.Failure

    @property
    def handle(self) -> str | None:
        return None if self._session is None else self._session.handle

    def _import(self) -> None:
        if self.sdk is None:
            import XenAPI  # lazily: declaring must not import the client
            self.sdk = XenAPI

    def connect(self) -> None:
        with self.lock:
            if self._session is None:
                self._login()

    def _error(self, reason: str) -> exception.DriverError:
        return exception.DriverError(driver=self.driver, reason=reason)

    def _login(self) -> None:
        self._import()
        transport = None
        if self.url.startswith('https'):
            if self.insecure:
                context = ssl._create_unverified_context()
            else:
                context = ssl.create_default_context(cafile=self.ca_file)
            transport = xmlrpc.client.SafeTransport(context=context)
        session = self.sdk.Session(self.url, transport=transport)
        try:
            session.login_with_password(self.username, self._password,
                                        '2.0', 'lmcaps')
        except self.sdk.Failure as exc:
            code = exc.details[0] if exc.details else '?'
            if code == 'SESSION_AUTHENTICATION_FAILED':
                raise self._error(
                    f'xapi at {self.url} refused the login of user '
                    f'{self.username!r} (SESSION_AUTHENTICATION_FAILED)'
                ) from None
            raise self._error(f'login to xapi at {self.url} failed: '
                              f'{code}') from None
        except ssl.SSLError as exc:
            raise self._error(
                f'TLS verification of {self.url} failed ({exc.reason}); set '
                f'[{self.group}] ca_file') from None
        except (OSError, xmlrpc.client.Error) as exc:
            raise self._error(f'cannot reach xapi at {self.url}: '
                              f'{type(exc).__name__}: {exc}') from None
        self._session = session
        self.logins += 1

    def close(self) -> None:
        with self.lock:
            session, self._session = self._session, None
        if session is not None:
            try:
                session.xenapi.session.logout()
            except Exception:  # closing: the session may be gone already
                pass

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session.xenapi)``; log in again once if the SDK gave up.

        :raises: the SDK's Failure for xapi errors other than
            SESSION_INVALID; DriverError if xapi cannot be reached.
        """
        with self.lock:
            self.connect()
            for attempt in (1, 2):
                try:
                    self.round_trips += 1
                    return fn(self._session.xenapi)
                except self.sdk.Failure as exc:
                    if exc.details[:1] != ['SESSION_INVALID'] or attempt == 2:
                        raise
                except xmlrpc.client.Fault as exc:
                    # The SDK's own "Tried 3 times to get a valid session".
                    if attempt == 2:
                        raise self._error(f'{what}: {exc.faultString}'
                                          ) from None
                except (OSError, xmlrpc.client.Error) as exc:
                    raise self._error(f'{what}: cannot reach xapi: '
                                      f'{type(exc).__name__}: {exc}') from None
                LOG.info('xapi session invalid during %s; logging in again',
                         what)
                self._session = None
                self._login()
        raise AssertionError('unreachable')
