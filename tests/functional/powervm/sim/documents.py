"""REST documents of the simulated NovaLink, built from pypowervm's recordings.

pypowervm ships REST responses recorded from real HMC/NovaLink servers
(``pypowervm/tests/data/*.txt``: ``INFO{...}``, ``HEADERS{...}`` and
``BODY{...}`` sections).  The simulator reads them from the INSTALLED
package at run time and uses them as the templates of what it serves, so
the shapes (Atom feed/entry, ``LogicalPartition``, ``JobRequest``,
``JobResponse``, ``LogonResponse``, ``HttpErrorResponse``) are the vendor's
own and nothing recorded is copied into this repository:

* ``logon.xml``: LogonResponse with ``X-API-Session``.
* ``fake_lpar_feed.txt``: a LogicalPartition feed whose entries carry
  ``MigrationState``, ``PartitionState``, ``ProgressPartitionDataTotal``/
  ``ProgressPartitionDataRemaining`` and the ``AssociatedManagedSystem``
  link.
* ``managedsystem.txt``: ManagedSystem entries (``SystemName``).
* ``job_request_power_off.txt``: the JobRequest template shape; there is no
  recorded ``Migrate`` template, so the ``Migrate``/``MigrateAbort``/
  ``MigrateRecover`` templates are this shape with the operation's name and
  ``GroupName`` LogicalPartition (the job parameters are those that
  ``pypowervm.tasks.migration`` adds).
* ``job_response_completed_ok.txt`` / ``job_response_exception.txt``: the
  JobResponse shape (JobID, TimeStarted, TimeCompleted, Status, Results,
  ResponseException/Message).
* ``fake_httperror.txt``: the HttpErrorResponse of an HTTP error.
"""

from __future__ import annotations

import copy
import functools
import os
import xml.etree.ElementTree as ET

ATOM = 'http://www.w3.org/2005/Atom'
UOM = 'http://www.ibm.com/xmlns/systems/power/firmware/uom/mc/2012_10/'
WEB = 'http://www.ibm.com/xmlns/systems/power/firmware/web/mc/2012_10/'
API = '/rest/api/'

ET.register_namespace('', ATOM)
ET.register_namespace('uom', UOM)
ET.register_namespace('web', WEB)


def data_dir() -> str:
    """The installed pypowervm's recorded responses.

    :raises: ImportError if pypowervm is not installed.
    """
    import pypowervm.tests
    return os.path.join(os.path.dirname(pypowervm.tests.__file__), 'data')


@functools.lru_cache(maxsize=None)
def recorded_body(name: str) -> str:
    """The BODY section of a recorded response file (or a whole .xml)."""
    with open(os.path.join(data_dir(), name), encoding='utf-8') as f:
        text = f.read()
    if name.endswith('.xml'):
        return text
    start = text.index('BODY{') + len('BODY{')
    end = text.index('END OF SECTION}', start)
    return text[start:end].strip()


def _parse(name: str) -> ET.Element:
    return ET.fromstring(recorded_body(name).encode('utf-8'))


def _a(tag: str) -> str:
    return f'{{{ATOM}}}{tag}'


def _set(parent: ET.Element, ns: str, tag: str, text: str) -> None:
    node = parent.find(f'{{{ns}}}{tag}')
    if node is None:
        node = ET.SubElement(parent, f'{{{ns}}}{tag}',
                             {'kb': 'ROR', 'kxe': 'false'})
    node.text = text


def _content_root(entry: ET.Element) -> ET.Element:
    return list(entry.find(_a('content')))[0]


def _set_links(entry: ET.Element, base: str, path: str) -> None:
    for link in entry.findall(_a('link')):
        if link.get('rel') == 'SELF':
            link.set('href', base + API + path)


def tostring(element: ET.Element) -> bytes:
    return ET.tostring(element, encoding='utf-8', xml_declaration=False)


def logon_response(token: str) -> bytes:
    """LogonResponse carrying ``token`` in ``X-API-Session``."""
    root = _parse('logon.xml')
    _set(root, WEB, 'X-API-Session', token)
    return tostring(root)


def http_error(status: int, uri: str, reason: str, message: str) -> bytes:
    """An HttpErrorResponse entry."""
    entry = _parse('fake_httperror.txt')
    root = _content_root(entry)
    _set(root, WEB, 'HTTPStatus', str(status))
    _set(root, WEB, 'RequestURI', uri)
    _set(root, WEB, 'ReasonCode', reason)
    _set(root, WEB, 'Message', message)
    headers = root.find(f'{{{WEB}}}RequestHeaders')
    if headers is not None:
        headers.text = ''
    return tostring(entry)


def _first_entry(name: str) -> tuple[ET.Element, ET.Element]:
    feed = _parse(name)
    entry = feed.find(_a('entry'))
    for other in feed.findall(_a('entry')):
        feed.remove(other)
    return feed, entry


def lpar_entry(base: str, *, uuid: str, name: str, system_uuid: str,
               state: str, migration_state: str, data_total: int,
               data_remaining: int, memory_mb: int) -> ET.Element:
    """A LogicalPartition entry (from the first entry of fake_lpar_feed)."""
    _feed, entry = _first_entry('fake_lpar_feed.txt')
    entry = copy.deepcopy(entry)
    entry.find(_a('id')).text = uuid
    _set_links(entry, base, f'uom/LogicalPartition/{uuid}')
    root = _content_root(entry)
    atom_id = root.find(f'{{{UOM}}}Metadata/{{{UOM}}}Atom/{{{UOM}}}AtomID')
    if atom_id is not None:
        atom_id.text = uuid
    _set(root, UOM, 'PartitionUUID', uuid)
    _set(root, UOM, 'PartitionName', name)
    _set(root, UOM, 'PartitionState', state)
    _set(root, UOM, 'MigrationState', migration_state)
    _set(root, UOM, 'ProgressPartitionDataTotal', str(data_total))
    _set(root, UOM, 'ProgressPartitionDataRemaining', str(data_remaining))
    memory = root.find(f'{{{UOM}}}PartitionMemoryConfiguration')
    for tag in ('DesiredMemory', 'MaximumMemory', 'MinimumMemory',
                'CurrentMemory', 'CurrentMaximumMemory',
                'CurrentMinimumMemory'):
        if memory.find(f'{{{UOM}}}{tag}') is not None:
            _set(memory, UOM, tag, str(memory_mb))
    root.find(f'{{{UOM}}}AssociatedManagedSystem').set(
        'href', f'{base}{API}uom/ManagedSystem/{system_uuid}')
    return entry


def managed_system_entry(base: str, *, uuid: str, name: str) -> ET.Element:
    """A ManagedSystem entry (from the first entry of managedsystem.txt)."""
    _feed, entry = _first_entry('managedsystem.txt')
    entry = copy.deepcopy(entry)
    entry.find(_a('id')).text = uuid
    _set_links(entry, base, f'uom/ManagedSystem/{uuid}')
    _set(_content_root(entry), UOM, 'SystemName', name)
    return entry


def feed(name: str, base: str, path: str,
         entries: list[ET.Element]) -> ET.Element:
    """The recorded feed ``name`` with its entries replaced."""
    shell, _entry = _first_entry(name)
    shell = copy.deepcopy(shell)
    for link in shell.findall(_a('link')):
        if link.get('rel') == 'SELF':
            link.set('href', base + API + path)
    shell.extend(entries)
    return shell


def job_request(operation: str, group: str = 'LogicalPartition'
                ) -> ET.Element:
    """The JobRequest template entry of ``operation`` (no parameters)."""
    entry = _parse('job_request_power_off.txt')
    root = _content_root(entry)
    req = root.find(f'{{{WEB}}}RequestedOperation')
    _set(req, WEB, 'OperationName', operation)
    _set(req, WEB, 'GroupName', group)
    params = root.find(f'{{{WEB}}}JobParameters')
    for child in list(params):
        if child.tag == f'{{{WEB}}}JobParameter':
            params.remove(child)
    return entry


def job_parameters(request: ET.Element) -> dict[str, str]:
    """``{ParameterName: ParameterValue}`` of a PUT JobRequest."""
    out = {}
    for parm in request.iter(f'{{{WEB}}}JobParameter'):
        out[parm.findtext(f'{{{WEB}}}ParameterName', '')] = parm.findtext(
            f'{{{WEB}}}ParameterValue', '')
    return out


def job_response(base: str, *, job_id: str, request_path: str,
                 target_uuid: str, request: ET.Element, status: str,
                 started_ms: int, completed_ms: int, message: str = ''
                 ) -> ET.Element:
    """A JobResponse entry (shape of job_response_completed_ok.txt).

    :param request: the JobRequest element that was PUT (its
        RequestedOperation and JobParameters become JobRequestInstance).
    :param message: for a failed job, ResponseException/Message (shape of
        job_response_exception.txt).
    """
    entry = _parse('job_response_completed_ok.txt')
    entry.find(_a('id')).text = job_id
    _set_links(entry, base, f'uom/jobs/{job_id}')
    root = _content_root(entry)
    root.find(f'{{{WEB}}}RequestURL').set('href', base + request_path)
    _set(root, WEB, 'TargetUuid', target_uuid)
    _set(root, WEB, 'JobID', job_id)
    _set(root, WEB, 'TimeStarted', str(started_ms))
    _set(root, WEB, 'TimeCompleted', str(completed_ms))
    _set(root, WEB, 'Status', status)
    instance = root.find(f'{{{WEB}}}JobRequestInstance')
    for child in list(instance):
        if child.tag in (f'{{{WEB}}}RequestedOperation',
                         f'{{{WEB}}}JobParameters'):
            instance.remove(child)
    for tag in ('RequestedOperation', 'JobParameters'):
        node = request.find(f'{{{WEB}}}{tag}')
        if node is not None:
            instance.append(copy.deepcopy(node))
    results = root.find(f'{{{WEB}}}Results')
    for child in list(results):
        if child.tag == f'{{{WEB}}}JobParameter':
            results.remove(child)
    if message:
        exc = _content_root(_parse('job_response_exception.txt')).find(
            f'{{{WEB}}}ResponseException')
        exc = copy.deepcopy(exc)
        _set(exc, WEB, 'Message', message)
        exc.remove(exc.find(f'{{{WEB}}}StackTrace'))
        root.insert(list(root).index(instance), exc)
    return entry
