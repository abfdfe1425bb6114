"""pypowervm glue: a TLS-verifying Session and a JobID-capturing Adapter.

Imported only by :meth:`PowerVMDriver.connect` (it imports pypowervm).

* pypowervm's ``Session`` verifies the server certificate only on the
  Logon request, and only when its own ``certpath`` check fails; every
  later request is sent with ``verify=False`` (pypowervm 1.1.27,
  adapter.py ``Session.request``).  :func:`session` passes one
  ``verify`` value (True, a CA bundle path, or False when explicitly
  insecure) to every request instead, and disables the ``certpath`` check
  (``util.validate_certificate`` uses ``ssl.wrap_socket``, removed in
  Python 3.12).
* ``pypowervm.tasks.migration`` runs a job and blocks until it ends without
  telling its JobID.  :class:`JobWatch` is an Adapter helper (the
  documented ``helpers=`` hook of ``Adapter``) that reads the JobID and
  Status from the response to the JobRequest PUT to
  ``LogicalPartition/{uuid}/do/{operation}``.
"""

from __future__ import annotations

import threading
from typing import Any

from lxml import etree
from pypowervm import adapter as pvm_adapter
from pypowervm import const as pvm_const

WEB = pvm_const.WEB_NS
FINAL = ('COMPLETED_OK', 'COMPLETED_WITH_WARNINGS', 'COMPLETED_WITH_ERROR',
         'FAILED_BEFORE_COMPLETION')


class VerifyingSession(pvm_adapter.Session):
    """A pypowervm Session that verifies TLS on every request."""

    def __init__(self, *args: Any, verify: bool | str = True,
                 **kwargs: Any) -> None:
        self._lmcaps_verify = verify
        super().__init__(*args, **kwargs)

    def request(self, method: str, path: str, *args: Any,
                **kwargs: Any) -> Any:
        kwargs['verify'] = self._lmcaps_verify
        return super().request(method, path, *args, **kwargs)


def session(host: str, port: int | None, protocol: str, username: str,
            password: str, verify: bool | str, timeout: float) -> Any:
    """A logged-on Session (raises pypowervm's exceptions)."""
    return VerifyingSession(host, username, password, protocol=protocol,
                            port=port, timeout=timeout, certpath='',
                            verify=verify)


class JobWatch:
    """Adapter helper that reports the job a ``do/<operation>`` PUT created.

    :param operation: the JobRequest's OperationName (``Migrate``).
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.job_id: str | None = None
        self.status: str | None = None
        self.created = threading.Event()

    def __call__(self, func: Any) -> Any:
        def wrapper(method: str, path: str, **kwds: Any) -> Any:
            resp = func(method, path, **kwds)
            if (method == 'PUT' and self.job_id is None and
                    path.split('?', 1)[0].endswith('/do/' + self.operation)):
                self._read(getattr(resp, 'body', '') or '')
            return resp
        return wrapper

    def _read(self, body: str) -> None:
        try:
            root = etree.fromstring(body.encode('utf-8'))
        except etree.XMLSyntaxError:
            return
        job_id = root.findtext(f'.//{{{WEB}}}JobID')
        if job_id:
            self.status = root.findtext(f'.//{{{WEB}}}Status')
            self.job_id = job_id.strip()
            self.created.set()


def adapter_for(sess: Any, watch: JobWatch | None = None) -> Any:
    """An Adapter on ``sess``, with ``watch`` as its helper if given."""
    return pvm_adapter.Adapter(sess, helpers=[watch] if watch else None)
