"""nova-api paste filter: lmcaps's fields in ``os-migrateLive``, on stock nova.

nova 34's ``os-migrateLive`` schema refuses unknown fields.
:class:`MigrateLiveFilter` sits in nova-api's ``openstack_compute_api_v21``
pipeline right after ``keystonecontext`` (so ``nova.context`` is in the WSGI
environ) and, for ``POST /v2.1/servers/{server_id}/action`` bodies whose
``os-migrateLive`` object carries any of ``timeout_seconds`` (integer >= 0,
absolute seconds, 0 = never), ``on_timeout`` (``abort`` |
``force_complete``) or ``force_complete_mode`` (``auto`` | ``postcopy`` |
``pause``):

1. validates them with :data:`lmcaps.nova.request.MIGRATE_LIVE_SCHEMA`:
   400, nova's fault body ``{"badRequest": {"code": 400, "message": ...}}``
   naming the field and its allowed values;
2. loads the instance in its cell: ``InstanceMapping`` of the server id, then
   ``nova.context.target_cell`` on that mapping's cell, as nova's
   ``compute.API.get`` does; an unknown or not yet scheduled server is left
   to nova (the fields are removed and nova answers 404 or 409);
3. authorises :data:`RULE` on nova's oslo.policy enforcer with the target
   ``{'project_id': instance.project_id}``: 403, ``{"forbidden": ...}``;
4. stores the values with :func:`lmcaps.nova.request.stash` in the
   instance's system metadata, bound to the request id, and saves the
   instance *in that cell's database* before nova sees the request;
5. removes the fields from the body (``Content-Length`` follows) and passes
   the request on; nova validates and handles what is left as always.

Request id: the compute reads the values back with
:func:`lmcaps.nova.request.from_instance` against its own
``context.request_id``.  nova's compute API casts the live migration with
the API's ``RequestContext``, which oslo.context built in
``keystonecontext`` from the environ key ``openstack.request_id`` — the id
oslo.middleware's RequestId (nova's ``compute_req_id`` filter) generates for
every request and returns as ``X-OpenStack-Request-ID`` /
``X-Compute-Request-ID``; nova's instance action for the live migration is
recorded under the same id.  A caller's own ``X-OpenStack-Request-ID``
header only becomes ``global_request_id``, which a client may reuse across
requests, so the values are bound to ``nova.context.request_id``.

Anything else passes through untouched, byte for byte: other paths and
methods, other actions, bodies with none of the fields, and bodies that are
not JSON objects (nova answers those).  Values left on an instance whose
request nova then refuses are harmless: they are bound to that request id.

api-paste.ini (see README.rst)::

    [filter:lmcaps_migrate_live]
    paste.filter_factory = lmcaps.nova.api:MigrateLiveFilter.factory
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import webob.dec
import webob.exc
from nova.api.openstack import wsgi as nova_wsgi
from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova.policies import base as nova_policy_base
from nova import policy as nova_policy
from oslo_log import log as logging
from oslo_policy import policy as oslo_policy
from oslo_utils import uuidutils

from lmcaps import exception
from lmcaps import request as lmcaps_request
from lmcaps.nova import request as nova_request

LOG = logging.getLogger(__name__)

#: oslo.policy rule that allows the lmcaps fields in os-migrateLive.
RULE = 'lmcaps:migrate_live:timeout'
#: The action body key the filter reads.
ACTION = 'os-migrateLive'

rules = [
    oslo_policy.DocumentedRuleDefault(
        name=RULE,
        # nova 34's admin rule, as for live migration to a given host
        # (os_compute_api:os-migrate-server:migrate_live:host) and the
        # deprecated default of os_compute_api:os-migrate-server:migrate_live
        check_str=nova_policy_base.ADMIN,
        description='Set a per-instance live-migration timeout and timeout '
                    'action (timeout_seconds, on_timeout, '
                    'force_complete_mode in os-migrateLive).  nova\'s own '
                    'live-migration rules are checked as well.',
        operations=[{'method': 'POST',
                     'path': '/servers/{server_id}/action (os-migrateLive)'}],
        scope_types=['project']),
]

#: ``/servers/{id}/action`` in the pipeline's PATH_INFO, with or without
#: a legacy project id in front.
_ACTION_PATH = re.compile(r'^(?:/[^/]+)?/servers/(?P<server_id>[^/]+)'
                          r'/action/?$')
_FIELD_BYTES = tuple(name.encode() for name in
                     nova_request.MIGRATE_LIVE_PROPERTIES)


def list_rules() -> list[oslo_policy.RuleDefault]:
    """The rules, for the ``oslo.policy.policies`` entry point ``lmcaps``."""
    return list(rules)


def _register(enforcer: oslo_policy.Enforcer) -> None:
    for rule in rules:
        if rule.name not in enforcer.registered_rules:
            enforcer.register_default(rule)


def authorize(context: Any, target: Mapping[str, Any]) -> None:
    """Check :data:`RULE` on nova's enforcer (policy.yaml overrides apply).

    :raises: nova.exception.PolicyNotAuthorized.
    """
    nova_policy.init()
    _register(nova_policy._ENFORCER)
    context.can(RULE, target=dict(target))


class MigrateLiveFilter:
    """WSGI middleware for lmcaps's os-migrateLive fields (module docstring).

    :param application: the next WSGI application of the pipeline.
    """

    def __init__(self, application: Callable[..., Iterable[bytes]]) -> None:
        self.application = application

    @classmethod
    def factory(cls, global_config: Mapping[str, str],
                **local_config: str) -> Callable[[Any], MigrateLiveFilter]:
        """paste.deploy ``paste.filter_factory``."""
        return cls

    @webob.dec.wsgify(RequestClass=nova_wsgi.Request)
    def __call__(self, req: nova_wsgi.Request) -> Any:
        if req.method != 'POST':
            return self.application
        match = _ACTION_PATH.match(req.path_info)
        if match is None:
            return self.application
        raw = req.body
        if not any(name in raw for name in _FIELD_BYTES):
            return self.application
        try:
            body = lmcaps_request.parse_json(raw.decode('utf-8'), 'body')
        except (exception.InvalidRequest, UnicodeDecodeError):
            return self.application         # nova answers
        fields = body.get(ACTION) if isinstance(body, dict) else None
        if not isinstance(fields, dict) or not any(
                name in fields for name in nova_request.MIGRATE_LIVE_PROPERTIES):
            return self.application
        try:
            values = nova_request.from_migrate_live(fields)
        except exception.InvalidRequest as exc:
            return self._error(req, webob.exc.HTTPBadRequest(
                explanation=exc.message))
        for name in nova_request.MIGRATE_LIVE_PROPERTIES:
            fields.pop(name, None)
        context = req.environ.get('nova.context')
        if context is None:
            LOG.error('lmcaps_migrate_live has no nova.context: put it after '
                      'keystonecontext in the api-paste.ini pipeline')
            return self._error(req, webob.exc.HTTPInternalServerError(
                explanation='lmcaps_migrate_live is misplaced in the API '
                            'pipeline'))
        try:
            self._stash(context, match.group('server_id'), values)
        except nova_exception.PolicyNotAuthorized as exc:
            return self._error(req, webob.exc.HTTPForbidden(
                explanation=exc.format_message()))
        except exception.InvalidRequest as exc:
            return self._error(req, webob.exc.HTTPBadRequest(
                explanation=exc.message))
        req.body = json.dumps(body).encode('utf-8')
        return self.application

    @staticmethod
    def _stash(context: Any, server_id: str,
               values: Mapping[str, Any]) -> None:
        """Store ``values`` on the instance in its cell, if nova has one.

        :raises: PolicyNotAuthorized, InvalidRequest.
        """
        if not uuidutils.is_uuid_like(server_id):
            return                          # nova answers 404
        try:
            mapping = objects.InstanceMapping.get_by_instance_uuid(
                context, server_id)
        except nova_exception.InstanceMappingNotFound:
            return
        if mapping.cell_mapping is None:    # still a build request
            return
        with nova_context.target_cell(context, mapping.cell_mapping) as cctxt:
            try:
                instance = objects.Instance.get_by_uuid(
                    cctxt, server_id, expected_attrs=['system_metadata'])
            except nova_exception.InstanceNotFound:
                return
            authorize(context, {'project_id': instance.project_id})
            nova_request.stash(instance, context.request_id, values)
            instance.save()
        LOG.info('lmcaps live-migration values %s stored for request %s',
                 dict(values), context.request_id, instance=instance)

    @staticmethod
    def _error(req: nova_wsgi.Request,
               exc: webob.exc.HTTPException) -> nova_wsgi.Fault:
        try:
            req.set_api_version_request()
        except nova_exception.NovaException:
            pass                            # a fault without version headers
        return nova_wsgi.Fault(exc)
