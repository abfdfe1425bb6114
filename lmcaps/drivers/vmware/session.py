"""The vCenter connection of the vmware driver, through oslo.vmware.

Everything goes through ``oslo_vmware.api.VMwareAPISession.invoke_api``:
``vim_util`` helpers for the property collector and ``session.vim`` for
the methods (RelocateVM_Task, CancelTask).  This module only shapes
errors: one line, the vSphere fault names, never the password.

oslo.vmware retries a failed login forever (``_create_session`` is wrapped
in an unbounded RetryDecorator) and sleeps 10 s more before each retry of
a call; :class:`BoundedSession` bounds the login retries to
``api_retry_count`` with short sleeps, so a vCenter that went away is
reported instead of hanging the caller.
"""

from __future__ import annotations

import re
import time
from typing import Any

from oslo_config import cfg

from lmcaps import exception

#: vSphere fault names (oslo.vmware's VimFaultException.fault_list).
INVALID_LOGIN = 'InvalidLogin'
INVALID_STATE = 'InvalidState'
NOT_SUPPORTED = 'NotSupported'
NOT_FOUND = 'ManagedObjectNotFound'
REQUEST_CANCELED = 'RequestCanceled'

OPTS = [
    cfg.HostAddressOpt('host_ip',
                       help='vCenter host name or IP address.'),
    cfg.PortOpt('host_port', default=443,
                help='vCenter port (the SDK is at /sdk).'),
    cfg.StrOpt('host_scheme', default='https', choices=['https', 'http'],
               help='https (default), or http for simulators that serve '
                    'plain http; http sends the password in clear text.'),
    cfg.StrOpt('host_username', default='',
               help='vCenter user name.'),
    cfg.StrOpt('host_password', default='', secret=True,
               help='vCenter password.'),
    cfg.StrOpt('ca_file',
               help='CA bundle (PEM) used to verify vCenter\'s TLS '
                    'certificate; unset = the system trust store.'),
    cfg.BoolOpt('insecure', default=False,
                help='Do not verify vCenter\'s TLS certificate.  Only '
                     'when set explicitly; ignored when ca_file is set.'),
    cfg.FloatOpt('task_poll_interval', default=0.5, min=0.05,
                 help='Seconds between two reads of a task\'s info.'),
    cfg.IntOpt('api_retry_count', default=2, min=0,
               help='Times a call (and a login) is retried after a '
                    'connection error; oslo.vmware waits 10 s more before '
                    'each retry of a call.'),
    cfg.StrOpt('wsdl_location',
               help='URL of the vim WSDL (file:///... or http(s)://...); '
                    'unset = <scheme>://host:port/sdk/vimService.wsdl, '
                    'which vCenter serves.'),
]


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, '***') if secret else text


def fault_names(exc: BaseException) -> list[str]:
    """The vSphere fault names carried by an oslo.vmware exception.

    oslo.vmware raises a registered fault as its own class
    (ManagedObjectNotFoundException) and any other as VimFaultException
    with ``fault_list``.
    """
    names = [str(f) for f in (getattr(exc, 'fault_list', None) or [])]
    cls = type(exc).__name__
    if (cls.endswith('Exception') and type(exc).__module__.startswith(
            'oslo_vmware') and not cls.startswith('Vim')):
        names.append(cls[:-len('Exception')])
    return names


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, 'msg', '') or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bounded_session_class(login_retries: int) -> Any:
    from oslo_vmware import api
    from oslo_vmware import exceptions as vexc

    retries = login_retries

    class BoundedSession(api.VMwareAPISession):
        login_retries = retries

        def _create_session(self) -> None:
            inner = api.VMwareAPISession._create_session.__wrapped__
            for attempt in range(self.login_retries + 1):
                try:
                    return inner(self)
                except vexc.VimConnectionException:
                    if attempt >= self.login_retries:
                        raise
                    time.sleep(min(0.5 * (attempt + 1), 3.0))

    return BoundedSession


class Connection:
    """A logged-in oslo.vmware session and the calls the driver makes.

    :param driver: the driver's name, for errors.
    :param options: the ``[lmcaps_vmware]`` group.
    :raises: DriverLoadFailed without oslo.vmware; DriverError when vCenter
        cannot be reached, its certificate is not trusted, or the login is
        refused.
    """

    def __init__(self, driver: str, options: Any) -> None:
        try:
            from oslo_vmware import exceptions as vexc
            from oslo_vmware import vim_util
        except ImportError as exc:
            raise exception.DriverLoadFailed(
                name=driver, reason='oslo.vmware is not installed '
                                    '(pip install lmcaps[vmware])') from exc
        self.driver = driver
        self.vexc = vexc
        self.vim_util = vim_util
        self._password = options.host_password or ''
        host, port = options.host_ip, options.host_port
        if not host:
            raise exception.DriverError(
                driver=driver, reason='[lmcaps_vmware] host_ip is not set')
        self.where = f'{options.host_scheme}://{host}:{port}'
        self._owned = True
        tls = dict(cacert=options.ca_file or None,
                   insecure=bool(options.insecure))
        wsdl = options.wsdl_location or None
        try:
            cls = _bounded_session_class(options.api_retry_count)
            self.session = cls(
                host, options.host_username, self._password,
                options.api_retry_count, options.task_poll_interval,
                scheme=options.host_scheme, port=port, wsdl_loc=wsdl, **tls)
        except vexc.VimFaultException as exc:
            if INVALID_LOGIN in fault_names(exc):
                raise exception.DriverError(
                    driver=driver, reason=f'authentication failed for user '
                    f'{options.host_username!r} at {self.where} '
                    f'(InvalidLogin)') from None
            raise self.error('login', exc) from None
        except Exception as exc:  # suds, requests, oslo.vmware
            raise self.error('connect', exc) from None

    @classmethod
    def borrow(cls, driver: str, session: Any, where: str) -> Connection:
        """A Connection over a session someone else logged in and owns.

        An embedding host (nova's VMwareVCDriver) already holds an
        oslo.vmware ``VMwareAPISession``; the driver's calls then go through
        it, and :meth:`close` leaves it logged in.

        :param session: an ``oslo_vmware.api.VMwareAPISession``.
        :param where: the vCenter address, for error messages.
        :raises: DriverLoadFailed without oslo.vmware.
        """
        try:
            from oslo_vmware import exceptions as vexc
            from oslo_vmware import vim_util
        except ImportError as exc:
            raise exception.DriverLoadFailed(
                name=driver, reason='oslo.vmware is not installed '
                                    '(pip install lmcaps[vmware])') from exc
        conn = cls.__new__(cls)
        conn.driver = driver
        conn.vexc = vexc
        conn.vim_util = vim_util
        conn._password = ''
        conn.where = where
        conn.session = session
        conn._owned = False
        return conn

    def error(self, what: str, exc: BaseException) -> exception.DriverError:
        """One DriverError line for a failed call, password scrubbed."""
        text = f'{type(exc).__name__}: {first_line(exc)}'
        cause = getattr(exc, 'cause', None) or exc.__cause__
        detail = f'{text} {cause}' if cause is not None else text
        if re.search(r'CERTIFICATE_VERIFY_FAILED|certificate verify failed',
                     detail):
            text = ('TLS certificate verification failed (set [lmcaps_vmware]'
                    ' ca_file to the CA that signed vCenter\'s certificate)')
        elif isinstance(exc, self.vexc.VimConnectionException) or \
                re.search(r'Connection refused|Max retries|timed out',
                          detail):
            text = f'vCenter unreachable: {first_line(exc)}'
        faults = fault_names(exc)
        if faults and faults != ['Text']:
            text += f' [{", ".join(faults)}]'
        return exception.DriverError(
            driver=self.driver,
            reason=_scrub(f'{what} at {self.where}: {text}', self._password))

    # -- calls --------------------------------------------------------------

    def invoke(self, module: Any, method: str, *args: Any, **kw: Any) -> Any:
        """``session.invoke_api``; a call lost to a re-login is retried once.

        oslo.vmware re-creates an expired session and then raises
        VimConnectionException for the call that found it expired.
        """
        before = getattr(self.session, '_session_id', None)
        try:
            return self.session.invoke_api(module, method, *args, **kw)
        except self.vexc.VimConnectionException:
            if getattr(self.session, '_session_id', None) == before:
                raise
        return self.session.invoke_api(module, method, *args, **kw)

    def moref(self, value: str, kind: str) -> Any:
        return self.vim_util.get_moref(value, kind)

    def props(self, ref: Any, names: list[str]) -> dict[str, Any]:
        """Properties of one managed object, by name (absent = missing)."""
        return self.invoke(self.vim_util, 'get_object_properties_dict',
                           self.session.vim, ref, names)

    def prop(self, ref: Any, name: str) -> Any:
        return self.invoke(self.vim_util, 'get_object_property',
                           self.session.vim, ref, name)

    def find(self, kind: str, names: list[str]) -> list[tuple[Any, dict]]:
        """Every object of ``kind`` (property collector traversal from the
        root folder) with the given properties."""
        found = []
        result = self.invoke(self.vim_util, 'get_objects', self.session.vim,
                             kind, 100, names)
        with self.vim_util.WithRetrieval(self.session.vim, result) as objs:
            for obj in objs:
                values = {p.name: p.val for p in
                          getattr(obj, 'propSet', []) or []}
                found.append((obj.obj, values))
        return found

    def call(self, method: str, ref: Any, **kw: Any) -> Any:
        """A vSphere method on a managed object (``session.vim.<method>``)."""
        return self.invoke(self.session.vim, method, ref, **kw)

    def factory(self) -> Any:
        return self.session.vim.client.factory

    def close(self) -> None:
        """Log out, unless the session was borrowed (:meth:`borrow`)."""
        if not self._owned:
            return
        try:
            self.session.logout()
        except Exception:
            pass
