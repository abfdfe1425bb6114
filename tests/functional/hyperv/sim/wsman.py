"""The WS-Management layer of the simulator: envelopes in, envelopes out.

Written from the WS-Management protocol as Windows implements it
([MS-WSMV], https://learn.microsoft.com/en-us/openspecs/windows_protocols/
ms-wsmv/) over DMTF WS-Management (DSP0226) and WS-Transfer /
WS-Enumeration (2004/09):

* SOAP 1.2 envelopes; the request names its ``wsa:Action``,
  ``wsman:ResourceURI``, ``wsa:MessageID`` and, for one instance, a
  ``wsman:SelectorSet`` of the class's key properties; replies carry
  ``wsa:RelatesTo`` = the request's MessageID.
* WMI classes are addressed as ``http://schemas.microsoft.com/wbem/wsman/
  1/wmi/<namespace with / for \\>/<class>`` ([MS-WSMV] 3.1.4.1.1, resource
  URIs); ``<prefix>/*`` with a WQL filter enumerates any class.
* Get (WS-Transfer ``…/transfer/Get``) returns the instance as an element
  named after the class in the resource URI's namespace.
* Enumerate / Pull / Release (WS-Enumeration); ``wsman:Filter`` with the
  WQL dialect ``http://schemas.microsoft.com/wbem/wsman/1/WQL``
  ([MS-WSMV] 3.1.4.1.13); ``wsman:OptimizeEnumeration`` and
  ``wsman:MaxElements`` return items in the Enumerate reply, with
  ``wsman:EndOfSequence`` when none is left; the association filter
  dialect ``…/cimbinding/associationFilter`` (DSP0227, WS-Management CIM
  binding: ``b:AssociatedInstances`` with ``b:Object``,
  ``b:AssociationClassName``, ``b:ResultClassName``) enumerates the
  instances associated with one, as ``Get-WSManInstance -Dialect
  Association`` does.
* Custom actions invoke a WMI method: ``wsa:Action`` = the class resource
  URI + ``/`` + method, body ``<Method_INPUT>`` in the class namespace,
  reply ``<Method_OUTPUT>`` with ``ReturnValue`` and the out parameters;
  references (``REF``) are endpoint references (``wsa:Address`` +
  ``wsa:ReferenceParameters`` with ResourceURI and SelectorSet) ([MS-WSMV]
  4.1.4, the method invocation example).
* Faults are ``s:Fault`` with ``s:Code``/``s:Subcode``, ``s:Reason`` and a
  ``wsmanfault:WSManFault`` detail whose ``Code`` is the Windows error
  (wsmerror.h: ERROR_WSMAN_DESTINATION_UNREACHABLE 2150858770,
  …_INSUFFCIENT_SELECTORS 2150858842, …_CANNOT_PROCESS_FILTER 2150859042),
  sent with HTTP status 500 (DSP0226, Faults; [MS-WSMV] WSManFault).
"""

from __future__ import annotations

import datetime
import itertools
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from tests.functional.hyperv.sim import hyperv
from tests.functional.hyperv.sim import wql

NS = {
    's': 'http://www.w3.org/2003/05/soap-envelope',
    'a': 'http://schemas.xmlsoap.org/ws/2004/08/addressing',
    'w': 'http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd',
    'n': 'http://schemas.xmlsoap.org/ws/2004/09/enumeration',
    'x': 'http://schemas.xmlsoap.org/ws/2004/09/transfer',
    'p': 'http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd',
    'f': 'http://schemas.microsoft.com/wbem/wsman/1/wsmanfault',
    'xsi': 'http://www.w3.org/2001/XMLSchema-instance',
    'cim': 'http://schemas.dmtf.org/wbem/wscim/1/common',
    'b': 'http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd',
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

WMI = 'http://schemas.microsoft.com/wbem/wsman/1/wmi/'
NAMESPACE = 'root/virtualization/v2'
WQL_DIALECT = 'http://schemas.microsoft.com/wbem/wsman/1/WQL'
ASSOCIATION_DIALECT = ('http://schemas.dmtf.org/wbem/wsman/1/cimbinding/'
                       'associationFilter')
ANONYMOUS = 'http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous'
GET = 'http://schemas.xmlsoap.org/ws/2004/09/transfer/Get'
ENUMERATE = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate'
PULL = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull'
RELEASE = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/Release'
WSMAN_FAULT = 'http://schemas.dmtf.org/wbem/wsman/1/wsman/fault'
WSA_FAULT = 'http://schemas.xmlsoap.org/ws/2004/08/addressing/fault'
ENUM_FAULT = 'http://schemas.xmlsoap.org/ws/2004/09/enumeration/fault'

KEYS = {
    'msvm_computersystem': ('CreationClassName', 'Name'),
    'msvm_virtualsystemmigrationservice': (
        'CreationClassName', 'Name', 'SystemCreationClassName',
        'SystemName'),
    'msvm_migrationjob': ('InstanceID',),
    'msvm_concretejob': ('InstanceID',),
    'msvm_virtualsystemsettingdata': ('InstanceID',),
    'msvm_memorysettingdata': ('InstanceID',),
}

# wsmerror.h
DESTINATION_UNREACHABLE = 2150858770
INSUFFICIENT_SELECTORS = 2150858842
CANNOT_PROCESS_FILTER = 2150859042


def q(prefix: str, tag: str) -> str:
    return f'{{{NS[prefix]}}}{tag}'


class Fault(Exception):
    """A SOAP fault to send back (HTTP 500)."""

    def __init__(self, subcode: str, reason: str, code: int | None = None,
                 sender: bool = True, action: str = WSMAN_FAULT) -> None:
        super().__init__(reason)
        self.subcode = subcode    # a 'prefix:Name' QName text
        self.reason = reason
        self.code = code
        self.sender = sender
        self.action = action


class Request:
    """The parts of a request envelope the operations need."""

    def __init__(self, body: bytes) -> None:
        try:
            self.root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise Fault('w:SchemaValidationError',
                        f'The SOAP XML in the message is not valid: {exc}',
                        code=None) from exc
        if self.root.tag != q('s', 'Envelope'):
            raise Fault('w:SchemaValidationError', 'Not a SOAP 1.2 envelope')
        header = self.root.find('s:Header', NS)
        self.body = self.root.find('s:Body', NS)
        if header is None or self.body is None:
            raise Fault('w:SchemaValidationError', 'Header or Body missing')
        self.action = (header.findtext('a:Action', '', NS) or '').strip()
        self.resource_uri = (header.findtext('w:ResourceURI', '', NS)
                             or '').strip()
        self.message_id = (header.findtext('a:MessageID', '', NS)
                           or '').strip()
        self.selectors = {
            sel.get('Name', ''): (sel.text or '')
            for sel in header.findall('w:SelectorSet/w:Selector', NS)}


def resource_class(uri: str) -> str:
    """The WMI class named by a resource URI ('*' for the namespace).

    :raises: Fault (wsa:DestinationUnreachable) outside root/virtualization/v2.
    """
    prefix = WMI + NAMESPACE + '/'
    if not uri.startswith(prefix) or '/' in uri[len(prefix):]:
        raise Fault('a:DestinationUnreachable',
                    f'The WS-Management service cannot process the request '
                    f'because the resource URI {uri!r} is not a WMI class of '
                    f'{NAMESPACE}', code=DESTINATION_UNREACHABLE)
    return uri[len(prefix):]


def class_uri(class_name: str) -> str:
    return f'{WMI}{NAMESPACE}/{class_name}'


def _value_elements(parent: ET.Element, ns: str, name: str,
                    value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        el = ET.SubElement(parent, f'{{{ns}}}{name}')
        if item is None:
            el.set(q('xsi', 'nil'), 'true')
        elif isinstance(item, bool):
            el.text = 'true' if item else 'false'
        elif isinstance(item, datetime.datetime):
            ET.SubElement(el, q('cim', 'Datetime')).text = item.isoformat()
        elif isinstance(item, datetime.timedelta):
            secs = int(item.total_seconds())
            ET.SubElement(el, q('cim', 'Interval')).text = (
                f'P{secs // 86400}DT{secs % 86400 // 3600}H'
                f'{secs % 3600 // 60}M{secs % 60}S')
        else:
            el.text = str(item)


def instance_element(class_name: str, props: dict[str, Any]) -> ET.Element:
    ns = class_uri(class_name)
    el = ET.Element(f'{{{ns}}}{class_name}')
    for key in sorted(props):
        _value_elements(el, ns, key, props[key])
    return el


def epr(class_name: str, selectors: dict[str, str],
        parent: ET.Element, tag: str) -> ET.Element:
    """An endpoint reference (a WMI REF) as a child ``tag`` of parent."""
    el = ET.SubElement(parent, tag)
    ET.SubElement(el, q('a', 'Address')).text = ANONYMOUS
    ref = ET.SubElement(el, q('a', 'ReferenceParameters'))
    ET.SubElement(ref, q('w', 'ResourceURI')).text = class_uri(class_name)
    sels = ET.SubElement(ref, q('w', 'SelectorSet'))
    for name, value in selectors.items():
        sel = ET.SubElement(sels, q('w', 'Selector'), Name=name)
        sel.text = value
    return el


def envelope(action: str, relates_to: str, body: Iterable[ET.Element]
             ) -> bytes:
    root = ET.Element(q('s', 'Envelope'))
    root.set('{http://www.w3.org/XML/1998/namespace}lang', 'en-US')
    header = ET.SubElement(root, q('s', 'Header'))
    ET.SubElement(header, q('a', 'To')).text = ANONYMOUS
    ET.SubElement(header, q('a', 'Action')).text = action
    ET.SubElement(header, q('a', 'MessageID')).text = f'uuid:{uuid.uuid4()}'
    if relates_to:
        ET.SubElement(header, q('a', 'RelatesTo')).text = relates_to
    body_el = ET.SubElement(root, q('s', 'Body'))
    body_el.extend(body)
    return ET.tostring(root, encoding='utf-8', xml_declaration=False)


def fault_envelope(fault: Fault, relates_to: str, machine: str) -> bytes:
    el = ET.Element(q('s', 'Fault'))
    code = ET.SubElement(el, q('s', 'Code'))
    ET.SubElement(code, q('s', 'Value')).text = (
        's:Sender' if fault.sender else 's:Receiver')
    sub = ET.SubElement(code, q('s', 'Subcode'))
    prefix = fault.subcode.split(':', 1)[0]
    sub_value = ET.SubElement(sub, q('s', 'Value'))
    sub_value.text = fault.subcode
    # a QName in text: its prefix is declared where it is used
    sub_value.set(f'xmlns:{prefix}', NS[prefix])
    reason = ET.SubElement(el, q('s', 'Reason'))
    text = ET.SubElement(reason, q('s', 'Text'))
    text.set('{http://www.w3.org/XML/1998/namespace}lang', 'en-US')
    text.text = fault.reason
    detail = ET.SubElement(el, q('s', 'Detail'))
    wsf = ET.SubElement(detail, q('f', 'WSManFault'), Machine=machine)
    if fault.code is not None:
        wsf.set('Code', str(fault.code))
    ET.SubElement(wsf, q('f', 'Message')).text = fault.reason
    return envelope(fault.action, relates_to, [el])


class Service:
    """Answers WS-Management requests for one host of a HostPair."""

    def __init__(self, model: hyperv.HostPair, host: str) -> None:
        self.model = model
        self.host = host
        self._contexts: dict[str, list[dict[str, Any]]] = {}
        self._context_class: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def handle(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, reply envelope) for one request body."""
        relates = ''
        try:
            req = Request(body)
            relates = req.message_id
            action, reply = self._dispatch(req)
            return 200, envelope(action, relates, reply)
        except Fault as fault:
            return 500, fault_envelope(fault, relates, self.host)

    def _dispatch(self, req: Request) -> tuple[str, list[ET.Element]]:
        cls = resource_class(req.resource_uri)
        if req.action == GET:
            return GET + 'Response', [self._get(cls, req.selectors)]
        if req.action == ENUMERATE:
            return ENUMERATE + 'Response', [self._enumerate(cls, req)]
        if req.action == PULL:
            return PULL + 'Response', [self._pull(req)]
        if req.action == RELEASE:
            context = req.body.findtext('n:Release/n:EnumerationContext',
                                        '', NS)
            with self._lock:
                self._contexts.pop(context, None)
            return RELEASE + 'Response', []
        if req.action.startswith(req.resource_uri + '/') and cls != '*':
            method = req.action[len(req.resource_uri) + 1:]
            return req.action + 'Response', [self._invoke(cls, method, req)]
        raise Fault('a:ActionNotSupported',
                    f'The action {req.action!r} is not supported by the '
                    f'service', action=WSA_FAULT)

    # -- WS-Transfer Get --------------------------------------------------

    def _find(self, cls: str, selectors: dict[str, str]) -> dict[str, Any]:
        keys = KEYS.get(cls.casefold())
        if keys is None:
            raise Fault('a:DestinationUnreachable', f'The WMI class {cls} '
                        f'does not exist in {NAMESPACE}',
                        code=DESTINATION_UNREACHABLE)
        folded = {k.casefold(): v for k, v in selectors.items()}
        if any(k.casefold() not in folded for k in keys):
            raise Fault('w:InvalidSelectors', f'The WS-Management service '
                        f'cannot process the request because the selectors '
                        f'for {cls} must name its keys {", ".join(keys)}',
                        code=INSUFFICIENT_SELECTORS)
        for row in self.model.instances(self.host, cls):
            if all(str(row.get(k, '')).casefold() ==
                   folded[k.casefold()].casefold() for k in keys):
                return row
        raise Fault('a:DestinationUnreachable', 'The WS-Management service '
                    'cannot process the request because the WMI object was '
                    'not found (no instance matches the selectors)',
                    code=DESTINATION_UNREACHABLE)

    def _get(self, cls: str, selectors: dict[str, str]) -> ET.Element:
        if cls == '*':
            raise Fault('a:DestinationUnreachable', 'Get needs a class '
                        'resource URI', code=DESTINATION_UNREACHABLE)
        row = self._find(cls, selectors)
        return instance_element(self._real_class(cls, row), row)

    @staticmethod
    def _real_class(cls: str, row: dict[str, Any]) -> str:
        if 'MigrationType' in row:
            return 'Msvm_MigrationJob'
        return row.get('CreationClassName') or cls

    # -- WS-Enumeration ---------------------------------------------------

    def _enumerate(self, cls: str, req: Request) -> ET.Element:
        enum = req.body.find('n:Enumerate', NS)
        if enum is None:
            raise Fault('w:SchemaValidationError', 'Enumerate body missing')
        filt = enum.find('w:Filter', NS)
        if filt is None and cls == '*':
            raise Fault('n:CannotProcessFilter', 'Enumerating the whole '
                        'namespace needs a WQL filter',
                        code=CANNOT_PROCESS_FILTER, action=ENUM_FAULT)
        rows: list[dict[str, Any]]
        items: list[tuple[str, dict[str, Any]]] | None = None
        if filt is not None and filt.get('Dialect') == ASSOCIATION_DIALECT:
            items = self._associated(filt)
            rows = []
        elif filt is not None:
            if filt.get('Dialect', WQL_DIALECT) != WQL_DIALECT:
                raise Fault('n:FilterDialectRequestedUnavailable',
                            f'Filter dialect {filt.get("Dialect")!r} is not '
                            f'supported', action=ENUM_FAULT)
            cls, rows = self._query(cls, filt.text or '')
        else:
            if not self.model.known_class(cls):
                raise Fault('a:DestinationUnreachable', f'The WMI class '
                            f'{cls} does not exist in {NAMESPACE}',
                            code=DESTINATION_UNREACHABLE)
            rows = self.model.instances(self.host, cls)
        if items is None:
            items = [(self._real_class(cls, row), row) for row in rows]
        context = f'uuid:{uuid.uuid4()}'
        reply = ET.Element(q('n', 'EnumerateResponse'))
        if enum.find('w:OptimizeEnumeration', NS) is not None:
            count = int(enum.findtext('w:MaxElements', '1', NS) or 1)
            sent, items = items[:count], items[count:]
            self._items(reply, q('w', 'Items'), sent)
        with self._lock:
            self._contexts[context] = items   # type: ignore[assignment]
        ET.SubElement(reply, q('n', 'EnumerationContext')).text = context
        if not items and reply.find('w:Items', NS) is not None:
            ET.SubElement(reply, q('w', 'EndOfSequence'))
            with self._lock:
                self._contexts.pop(context, None)
        # WS-Enumeration orders EnumerationContext before Items
        reply[:] = sorted(reply, key=lambda e: e.tag != q(
            'n', 'EnumerationContext'))
        return reply

    def _associated(self, filt: ET.Element
                    ) -> list[tuple[str, dict[str, Any]]]:
        """An association filter (DSP0227 ``b:AssociatedInstances``)."""
        spec = filt.find('b:AssociatedInstances', NS)
        params = None if spec is None else spec.find(
            'b:Object/a:ReferenceParameters', NS)
        if params is None:
            raise Fault('n:CannotProcessFilter', 'The association filter '
                        'needs b:AssociatedInstances with a b:Object',
                        code=CANNOT_PROCESS_FILTER, action=ENUM_FAULT)
        cls = resource_class(params.findtext('w:ResourceURI', '', NS) or '')
        selectors = {sel.get('Name', ''): sel.text or '' for sel in
                     params.findall('w:SelectorSet/w:Selector', NS)}
        row = self._find(cls, selectors)
        return self.model.associated(
            self.host, cls, row,
            spec.findtext('b:AssociationClassName', '', NS) or '',
            spec.findtext('b:ResultClassName', '', NS) or '')

    def _query(self, cls: str, text: str
               ) -> tuple[str, list[dict[str, Any]]]:
        try:
            query = wql.parse(text)
            if cls != '*' and query.class_name.casefold() != cls.casefold():
                raise wql.WQLError(f'the query names {query.class_name}, the '
                                   f'resource URI {cls}')
            if not self.model.known_class(query.class_name):
                raise wql.WQLError(f'Invalid class {query.class_name}')
            rows = [row for row in self.model.instances(
                self.host, query.class_name) if query.matches(row)]
        except wql.WQLError as exc:
            raise Fault('n:CannotProcessFilter', f'The WS-Management '
                        f'service cannot process the request because the '
                        f'filter is invalid: {exc}', code=CANNOT_PROCESS_FILTER,
                        action=ENUM_FAULT) from exc
        if query.properties:
            rows = [{k: v for k, v in row.items()
                     if k.casefold() in {p.casefold()
                                         for p in query.properties}}
                    for row in rows]
        return query.class_name, rows

    @staticmethod
    def _items(parent: ET.Element, tag: str,
               items: list[tuple[str, dict[str, Any]]]) -> None:
        holder = ET.SubElement(parent, tag)
        for cls, row in items:
            holder.append(instance_element(cls, row))

    def _pull(self, req: Request) -> ET.Element:
        pull = req.body.find('n:Pull', NS)
        context = '' if pull is None else pull.findtext(
            'n:EnumerationContext', '', NS)
        with self._lock:
            items = self._contexts.pop(context, None)
        if items is None:
            raise Fault('n:InvalidEnumerationContext', 'The enumeration '
                        'context is not valid', action=ENUM_FAULT)
        count = int(pull.findtext('n:MaxElements', '1', NS) or 1)  # type: ignore
        sent, rest = items[:count], items[count:]
        reply = ET.Element(q('n', 'PullResponse'))
        if rest:
            new = f'uuid:{uuid.uuid4()}'
            with self._lock:
                self._contexts[new] = rest
            ET.SubElement(reply, q('n', 'EnumerationContext')).text = new
        self._items(reply, q('n', 'Items'), sent)   # type: ignore[arg-type]
        if not rest:
            ET.SubElement(reply, q('n', 'EndOfSequence'))
        return reply

    # -- methods ------------------------------------------------------------

    def _invoke(self, cls: str, method: str, req: Request) -> ET.Element:
        ns = class_uri(cls)
        params = req.body.find(f'{{{ns}}}{method}_INPUT')
        if params is None:
            raise Fault('w:SchemaValidationError', f'The body must be '
                        f'{method}_INPUT in the namespace {ns}')
        row = self._find(cls, req.selectors)
        out = ET.Element(f'{{{ns}}}{method}_OUTPUT')
        key = (cls.casefold(), method)
        if key == ('msvm_virtualsystemmigrationservice',
                   'MigrateVirtualSystemToHost'):
            self._migrate(ns, params, out)
        elif key in (('msvm_migrationjob', 'RequestStateChange'),
                     ('msvm_concretejob', 'RequestStateChange')):
            state = params.findtext(f'{{{ns}}}RequestedState', '')
            try:
                requested = int(state)
            except ValueError:
                code = hyperv.INVALID_PARAMETER
            else:
                code = self.model.request_job_state(
                    self.host, row['InstanceID'], requested)
            ET.SubElement(out, f'{{{ns}}}ReturnValue').text = str(code)
        else:
            raise Fault('a:ActionNotSupported', f'The method {method} of '
                        f'{cls} is not supported', action=WSA_FAULT)
        return out

    def _migrate(self, ns: str, params: ET.Element, out: ET.Element) -> None:
        system = params.find(f'{{{ns}}}ComputerSystem')
        vm_name = ''
        if system is not None:
            for sel in system.findall(
                    'a:ReferenceParameters/w:SelectorSet/w:Selector', NS):
                if sel.get('Name', '').casefold() == 'name':
                    vm_name = sel.text or ''
        destination = params.findtext(f'{{{ns}}}DestinationHost', '') or ''
        migration_type = hyperv.MIGRATION_TYPE_VIRTUAL_SYSTEM
        setting = params.findtext(f'{{{ns}}}MigrationSettingData', '')
        code = hyperv.JOB_STARTED
        try:
            if setting:
                migration_type = _embedded_uint(setting, 'MigrationType',
                                                migration_type)
            job = self.model.migrate(self.host, vm_name, destination,
                                     migration_type)
        except hyperv.MethodError as exc:
            code = exc.code
        else:
            epr('Msvm_MigrationJob', {'InstanceID': job.instance_id}, out,
                f'{{{ns}}}Job')
        ET.SubElement(out, f'{{{ns}}}ReturnValue').text = str(code)


def _embedded_uint(text: str, name: str, default: int) -> int:
    """A uint property of an embedded instance in CIM-XML (DSP0201 INSTANCE).

    :raises: MethodError 32773 when the text is not such an instance.
    """
    try:
        inst = ET.fromstring(text)
    except ET.ParseError as exc:
        raise hyperv.MethodError(hyperv.INVALID_PARAMETER,
                                 f'MigrationSettingData: {exc}') from exc
    if inst.tag != 'INSTANCE':
        raise hyperv.MethodError(hyperv.INVALID_PARAMETER,
                                 'MigrationSettingData is not an INSTANCE')
    for prop in inst.findall('PROPERTY'):
        if prop.get('NAME') == name:
            try:
                return int(prop.findtext('VALUE', str(default)))
            except ValueError as exc:
                raise hyperv.MethodError(hyperv.INVALID_PARAMETER,
                                         f'{name}: {exc}') from exc
    return default
