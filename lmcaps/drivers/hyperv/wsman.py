"""WS-Management CIM operations on Hyper-V's WMI v2 classes, over pywinrm.

pywinrm carries the messages (authentication, TLS, NTLM/Kerberos/CredSSP
message encryption): :meth:`winrm.protocol.Protocol.build_wsman_header`
gives the standard header and :meth:`~winrm.protocol.Protocol.send_message`
posts an envelope.  The envelope itself is an ElementTree document: every
value that comes from a user (a VM name, a host name) is an element's text
or an attribute, escaped by the XML library, never spliced into markup.
WQL filter literals are escaped by :func:`wql_string`.

The operations ([MS-WSMV], https://learn.microsoft.com/en-us/openspecs/
windows_protocols/ms-wsmv/):

* class resource URIs ``http://schemas.microsoft.com/wbem/wsman/1/wmi/
  root/virtualization/v2/<class>`` (3.1.4.1.1);
* Get (WS-Transfer) of one instance by its key selectors;
* Enumerate + Pull (WS-Enumeration) with ``wsman:OptimizeEnumeration`` and a
  WQL ``wsman:Filter`` on ``…/v2/*`` (3.1.4.1.13; the class is named by the
  query, "Querying for Specific Instances of a Resource" in the WinRM
  docs), or an association filter (DSP0227 ``b:AssociatedInstances``, the
  ``-Dialect Association`` of ``Get-WSManInstance``);
* method invocation: ``wsa:Action`` = class URI + ``/`` + method, body
  ``<Method_INPUT>``, reply ``<Method_OUTPUT>`` (4.1.4).

Imported by the driver's ``connect()`` only (it needs pywinrm).
"""

from __future__ import annotations

import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests
import xmltodict
from winrm import exceptions as winrm_exc
from winrm import protocol as winrm_protocol

NS = {
    's': 'http://www.w3.org/2003/05/soap-envelope',
    'a': 'http://schemas.xmlsoap.org/ws/2004/08/addressing',
    'w': 'http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd',
    'n': 'http://schemas.xmlsoap.org/ws/2004/09/enumeration',
    'xsi': 'http://www.w3.org/2001/XMLSchema-instance',
    'b': 'http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd',
}
WMI_V2 = 'http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2'
WQL = 'http://schemas.microsoft.com/wbem/wsman/1/WQL'
ASSOCIATION = ('http://schemas.dmtf.org/wbem/wsman/1/cimbinding/'
               'associationFilter')
ANONYMOUS = 'http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous'
GET = 'http://schemas.xmlsoap.org/ws/2004/09/transfer/Get'
ENUMERATE = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate'
PULL = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull'
#: Methods that may be sent again after a lost session (a second stop
#: request of a stopping job changes nothing; a migration must never be
#: started twice).
RETRYABLE_METHODS = ('RequestStateChange',)
MAX_ELEMENTS = 512


def q(prefix: str, tag: str) -> str:
    return f'{{{NS[prefix]}}}{tag}'


def class_uri(class_name: str) -> str:
    return f'{WMI_V2}/{class_name}'


def wql_string(value: str) -> str:
    """A WQL string literal holding ``value`` exactly.

    WQL takes the backslash as its escape character: a backslash is
    written ``\\\\`` and a quote ``\\'`` inside single quotes ("WQL (SQL for
    WMI)", WHERE clause).  Control characters are refused: no VM name has
    them and WQL has no escape for them.

    :raises: ValueError for control characters.
    """
    if any(ord(ch) < 32 for ch in value):
        raise ValueError('control characters in a WQL string')
    return "'" + value.replace('\\', '\\\\').replace("'", "\\'") + "'"


class Error(Exception):
    """A failed WS-Management exchange, in one line without secrets."""


class AuthError(Error):
    """The listener rejected the credentials (HTTP 401)."""


class SessionLost(Error):
    """The listener closed the connection or dropped the session."""


class Fault(Error):
    """A SOAP fault: ``subcode`` is its local name (``InvalidSelectors``)."""

    def __init__(self, message: str, subcode: str, code: int | None) -> None:
        super().__init__(message)
        self.subcode = subcode
        self.code = code


class Ref:
    """A reference to a WMI instance (an endpoint reference)."""

    def __init__(self, class_name: str, selectors: Mapping[str, str]) -> None:
        self.class_name = class_name
        self.selectors = dict(selectors)

    def __repr__(self) -> str:
        return f'Ref({self.class_name!r}, {self.selectors!r})'


class Client:
    """WS-Man CIM operations on one WinRM listener; thread-safe.

    A ``Protocol`` (one HTTP session, one authentication context) serves
    one request at a time; up to ``size`` of them serve requests from
    several threads at once (NTLM/Kerberos message encryption is bound to
    its session, so sessions are never shared by two requests in flight).

    :param factory: makes a ``winrm.protocol.Protocol`` for the listener;
        called once at once (so that bad arguments fail here), then as
        concurrency needs.
    :param machine: the listener's name for messages (host:port).
    :param size: most sessions open at once.
    """

    def __init__(self, factory: Callable[[], winrm_protocol.Protocol],
                 machine: str, size: int = 4) -> None:
        self.machine = machine
        self.round_trips = 0
        self._factory = factory
        self._size = size
        self._lock = threading.Lock()
        self._idle: queue.LifoQueue[winrm_protocol.Protocol] = \
            queue.LifoQueue()
        self.protocol = factory()
        self._all = [self.protocol]
        self._idle.put(self.protocol)
        #: sessions that have authenticated once (ids of their Protocol)
        self._proven: set[int] = set()

    def _acquire(self) -> winrm_protocol.Protocol:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self._size:
                proto = self._factory()
                self._all.append(proto)
                return proto
        return self._idle.get()

    def close(self) -> None:
        """Close every HTTP session (the client stays usable)."""
        with self._lock:
            for proto in self._all:
                proto.transport.close_session()

    # -- operations ---------------------------------------------------------

    def get(self, class_name: str, selectors: Mapping[str, str]
            ) -> dict[str, Any]:
        """One instance's properties.

        :raises: Fault (``DestinationUnreachable`` when there is none), Error.
        """
        body = self._send(GET, class_uri(class_name), selectors, [])
        for child in body:
            return _instance(child)
        raise Error(f'{self.machine}: Get {class_name} returned no instance')

    def query(self, wql: str) -> list[dict[str, Any]]:
        """The instances a WQL data query selects (Enumerate + Pull)."""
        filt = ET.Element(q('w', 'Filter'), Dialect=WQL)
        filt.text = wql
        return self._enumerate(filt)

    def associated(self, ref: Ref, result_class: str,
                   association: str = '') -> list[dict[str, Any]]:
        """The instances of ``result_class`` associated with ``ref``."""
        filt = ET.Element(q('w', 'Filter'), Dialect=ASSOCIATION)
        spec = ET.SubElement(filt, q('b', 'AssociatedInstances'))
        _ref_into(ET.SubElement(spec, q('b', 'Object')), ref)
        if association:
            ET.SubElement(spec, q('b', 'AssociationClassName')).text = \
                association
        ET.SubElement(spec, q('b', 'ResultClassName')).text = result_class
        return self._enumerate(filt)

    def _enumerate(self, filt: ET.Element) -> list[dict[str, Any]]:
        enum = ET.Element(q('n', 'Enumerate'))
        ET.SubElement(enum, q('w', 'OptimizeEnumeration'))
        ET.SubElement(enum, q('w', 'MaxElements')).text = str(MAX_ELEMENTS)
        enum.append(filt)
        uri = f'{WMI_V2}/*'
        reply = self._send(ENUMERATE, uri, {}, [enum])
        found: list[dict[str, Any]] = []
        while True:
            response = reply[0] if len(reply) else ET.Element('none')
            for items in (response.find('w:Items', NS),
                          response.find('n:Items', NS)):
                if items is not None:
                    found += [_instance(el) for el in items]
            context = response.findtext('n:EnumerationContext', '', NS)
            if response.find('w:EndOfSequence', NS) is not None or \
                    response.find('n:EndOfSequence', NS) is not None or \
                    not context:
                return found
            pull = ET.Element(q('n', 'Pull'))
            ET.SubElement(pull, q('n', 'EnumerationContext')).text = context
            ET.SubElement(pull, q('n', 'MaxElements')).text = str(
                MAX_ELEMENTS)
            reply = self._send(PULL, uri, {}, [pull])

    def invoke(self, class_name: str, selectors: Mapping[str, str],
               method: str, params: Iterable[tuple[str, Any]]
               ) -> dict[str, Any]:
        """Invoke a method; returns the ``_OUTPUT`` values (ReturnValue ...).

        :param params: (name, value) in order; a value is a str, an int or
            a :class:`Ref`.
        """
        uri = class_uri(class_name)
        inp = ET.Element(f'{{{uri}}}{method}_INPUT')
        for name, value in params:
            el = ET.SubElement(inp, f'{{{uri}}}{name}')
            if isinstance(value, Ref):
                _ref_into(el, value)
            else:
                el.text = str(value)
        body = self._send(f'{uri}/{method}', uri, selectors, [inp])
        for child in body:
            return _instance(child)
        raise Error(f'{self.machine}: {method} returned no output')

    # -- transport ----------------------------------------------------------

    def _send(self, action: str, resource_uri: str,
              selectors: Mapping[str, str], body: list[ET.Element]
              ) -> ET.Element:
        proto = self._acquire()
        retry = action in (GET, ENUMERATE) or action.endswith(
            tuple('/' + m for m in RETRYABLE_METHODS))
        try:
            try:
                return self._attempt(proto, action, resource_uri, selectors,
                                     body)
            except (AuthError, SessionLost) as exc:
                # A dropped connection, or (NTLM/Kerberos) a 401 on a
                # session that had logged in: the listener restarted and
                # the security context is gone, the credentials are not
                # wrong.  One new login, never a loop (account lockout).
                if isinstance(exc, AuthError) and \
                        id(proto) not in self._proven:
                    raise
                self._proven.discard(id(proto))
                proto = self._renew(proto)
                if not retry:
                    raise SessionLost(f'{self.machine}: the WinRM session '
                                      f'was lost; not sent again') from exc
                return self._attempt(proto, action, resource_uri, selectors,
                                     body)
        finally:
            self._idle.put(proto)

    def _attempt(self, proto: winrm_protocol.Protocol, action: str,
                 resource_uri: str, selectors: Mapping[str, str],
                 body: list[ET.Element]) -> ET.Element:
        try:
            result = self._exchange(proto, action, resource_uri, selectors,
                                    body)
        except Fault:
            self._proven.add(id(proto))    # authenticated, then refused
            raise
        self._proven.add(id(proto))
        return result

    def _renew(self, old: winrm_protocol.Protocol
               ) -> winrm_protocol.Protocol:
        old.transport.close_session()
        new = self._factory()
        with self._lock:
            self._all = [new if p is old else p for p in self._all]
            if old is self.protocol:
                self.protocol = new
        return new

    def _exchange(self, proto: winrm_protocol.Protocol, action: str,
                  resource_uri: str, selectors: Mapping[str, str],
                  body: list[ET.Element]) -> ET.Element:
        header = proto.build_wsman_header(
            action=action, resource_uri=resource_uri)
        root = ET.fromstring(xmltodict.unparse({'env:Envelope': header}))
        head = root.find('s:Header', NS)
        assert head is not None
        message_id = head.findtext('a:MessageID', '', NS)
        if selectors:
            sels = ET.SubElement(head, q('w', 'SelectorSet'))
            for name, value in selectors.items():
                ET.SubElement(sels, q('w', 'Selector'), Name=name).text = value
        ET.SubElement(root, q('s', 'Body')).extend(body)
        message = ET.tostring(root, encoding='unicode')
        what = action.rsplit('/', 1)[-1]
        try:
            with self._lock:
                self.round_trips += 1
            raw = proto.send_message(message)
        except winrm_exc.InvalidCredentialsError as exc:
            raise AuthError(f'{self.machine} rejected the credentials '
                            f'(HTTP 401)') from exc
        except winrm_exc.WSManFaultError as exc:
            subcode = (exc.fault_subcode or '').rsplit(':', 1)[-1]
            code = exc.wsman_fault_code
            raise Fault(f'{self.machine}: {what} fault {subcode or "?"}'
                        f'{f" ({code})" if code else ""}: '
                        f'{" ".join(str(exc.reason).split())}', subcode,
                        code) from exc
        except winrm_exc.WinRMTransportError as exc:
            raise Error(f'{self.machine}: {what}: HTTP {exc.code}') from exc
        except winrm_exc.WinRMError as exc:
            raise Error(f'{self.machine}: {what}: {exc}') from exc
        except requests.exceptions.SSLError as exc:
            raise Error(f'{self.machine}: TLS verification failed '
                        f'({type(exc).__name__}); set [lmcaps_hyperv] '
                        f'ca_trust_path') from exc
        except requests.exceptions.ConnectionError as exc:
            raise SessionLost(f'{self.machine}: {what}: the connection to '
                              f'the WinRM listener failed '
                              f'({type(exc).__name__})') from exc
        except requests.exceptions.RequestException as exc:
            raise Error(f'{self.machine}: {what}: cannot reach the WinRM '
                        f'listener ({type(exc).__name__})') from exc
        try:
            reply = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise Error(f'{self.machine}: {what}: the reply is not XML: '
                        f'{exc}') from exc
        relates = reply.findtext('s:Header/a:RelatesTo', '', NS)
        if relates and message_id and relates.strip() != message_id:
            raise Error(f'{self.machine}: {what}: reply relates to '
                        f'{relates}, not to {message_id}')
        result = reply.find('s:Body', NS)
        if result is None:
            raise Error(f'{self.machine}: {what}: the reply has no Body')
        return result


def _ref_into(el: ET.Element, ref: Ref) -> None:
    ET.SubElement(el, q('a', 'Address')).text = ANONYMOUS
    params = ET.SubElement(el, q('a', 'ReferenceParameters'))
    ET.SubElement(params, q('w', 'ResourceURI')).text = class_uri(
        ref.class_name)
    sels = ET.SubElement(params, q('w', 'SelectorSet'))
    for name, value in ref.selectors.items():
        ET.SubElement(sels, q('w', 'Selector'), Name=name).text = value


def _local(tag: str) -> str:
    return tag.rsplit('}', 1)[-1]


def _value(el: ET.Element) -> Any:
    if el.get(q('xsi', 'nil')) in ('true', '1'):
        return None
    params = el.find('a:ReferenceParameters', NS)
    if params is not None:
        uri = params.findtext('w:ResourceURI', '', NS) or ''
        return Ref(uri.rsplit('/', 1)[-1], {
            sel.get('Name', ''): sel.text or ''
            for sel in params.findall('w:SelectorSet/w:Selector', NS)})
    if len(el):
        return el[0].text or ''     # cim:Datetime, cim:Interval
    return el.text or ''


def _instance(el: ET.Element) -> dict[str, Any]:
    """An instance element as {property: str | None | Ref | list}."""
    props: dict[str, Any] = {}
    for child in el:
        name, value = _local(child.tag), _value(child)
        if name in props:
            old = props[name]
            props[name] = (old if isinstance(old, list) else [old]) + [value]
        else:
            props[name] = value
    return props
