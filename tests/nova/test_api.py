"""The nova-api filter's own logic, on nova's DB fixtures (two cells).

The next application is a recorder: what it receives is what nova's
controller would validate.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from typing import Any

import fixtures
import webob
from nova import context as nova_context
from nova import objects
from nova import policy as nova_policy
from nova import test
from oslo_config import cfg
from oslo_policy import generator
from oslo_utils.fixture import uuidsentinel as uuids
from paste import deploy

from lmcaps.nova import api as nova_api
from lmcaps.nova import request as nova_request
from tests.nova import fixtures as lmcaps_fixtures


class Recorder:
    """The next WSGI app: keeps the environ and body it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, bytes]] = []

    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        length = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(length)
        self.calls.append((dict(environ), body))
        start_response('202 Accepted', [('Content-Type', 'text/plain')])
        return [b'nova']


class FilterTestCase(test.TestCase):
    NUMBER_OF_CELLS = 2

    def setUp(self) -> None:
        super().setUp()
        self.app = Recorder()
        self.filter = nova_api.MigrateLiveFilter(self.app)
        self.admin = nova_context.RequestContext(
            'admin', 'fake', is_admin=True, roles=['admin', 'member'],
            request_id='req-11111111-2222-3333-4444-555555555555')
        # the instance lives in the second cell
        self.cell = self.cell_mappings['cell2']
        with nova_context.target_cell(self.admin, self.cell) as cctxt:
            inst = objects.Instance(context=cctxt, uuid=uuids.instance,
                                    project_id='fake', user_id='fake',
                                    system_metadata={'image_foo': 'bar'})
            inst.create()
        objects.InstanceMapping(
            context=self.admin, instance_uuid=uuids.instance,
            cell_mapping=self.cell, project_id='fake').create()

    def post(self, body: Any, path: str | None = None,
             context: Any = None, raw: bytes | None = None,
             method: str = 'POST') -> webob.Response:
        req = webob.Request.blank(
            path or f'/servers/{uuids.instance}/action', method=method)
        req.content_type = 'application/json'
        req.body = raw if raw is not None else json.dumps(body).encode()
        req.environ['nova.context'] = context or self.admin
        return req.get_response(self.filter)

    def sysmeta(self) -> dict[str, str]:
        with nova_context.target_cell(self.admin, self.cell) as cctxt:
            return dict(objects.Instance.get_by_uuid(
                cctxt, uuids.instance,
                expected_attrs=['system_metadata']).system_metadata)

    @staticmethod
    def migrate(**fields: Any) -> dict:
        return {'os-migrateLive': {'host': None, 'block_migration': 'auto',
                                   **fields}}


class PassThroughTest(FilterTestCase):

    def assertUntouched(self, raw: bytes, **kwargs: Any) -> None:
        resp = self.post(None, raw=raw, **kwargs)
        self.assertEqual(202, resp.status_int)
        environ, body = self.app.calls[-1]
        self.assertEqual(raw, body)
        self.assertEqual(str(len(raw)), environ['CONTENT_LENGTH'])
        self.assertNotIn(nova_request.SYSMETA_KEY, self.sysmeta())

    def test_no_lmcaps_field(self) -> None:
        # odd spacing and key order survive: the bytes are not re-encoded
        self.assertUntouched(
            b'{"os-migrateLive":  {"block_migration": "auto", "host": null}}')

    def test_other_actions_methods_and_paths(self) -> None:
        raw = json.dumps({'os-stop': {'timeout_seconds': 5}}).encode()
        self.assertUntouched(raw)
        raw = json.dumps(self.migrate(timeout_seconds=5)).encode()
        self.assertUntouched(raw, path=f'/servers/{uuids.instance}')
        self.assertUntouched(raw, path='/os-migrations')
        self.assertUntouched(raw, method='PUT')

    def test_unparseable_or_odd_bodies_are_left_to_nova(self) -> None:
        for raw in (b'{"os-migrateLive": {"timeout_seconds": 5',
                    b'\xff timeout_seconds',
                    b'["timeout_seconds"]',
                    b'{"os-migrateLive": ["timeout_seconds"]}',
                    b'{"timeout_seconds": 5}'):
            self.assertUntouched(raw)

    def test_unknown_server_strips_and_lets_nova_answer(self) -> None:
        for server in (uuids.missing, 'not-a-uuid'):
            self.post(self.migrate(timeout_seconds=5),
                      path=f'/servers/{server}/action')
            self.assertEqual(self.migrate(),
                             json.loads(self.app.calls[-1][1]))


class RewriteTest(FilterTestCase):

    def test_fields_are_stashed_in_the_cell_and_removed(self) -> None:
        resp = self.post(self.migrate(timeout_seconds=600.0,
                                      on_timeout='force_complete',
                                      force_complete_mode='pause'),
                         path=f'/fake/servers/{uuids.instance}/action')
        self.assertEqual(202, resp.status_int)
        environ, body = self.app.calls[-1]
        self.assertEqual(self.migrate(), json.loads(body))
        self.assertEqual(str(len(body)), environ['CONTENT_LENGTH'])
        meta = self.sysmeta()
        self.assertEqual('bar', meta['image_foo'])
        self.assertEqual(
            {'request_id': self.admin.request_id,
             'values': {'completion_timeout': 600,
                        'timeout_action': 'force_complete',
                        'force_complete_mode': 'pause'}},
            json.loads(meta[nova_request.SYSMETA_KEY]))
        # the compute reads them back under the same request id
        with nova_context.target_cell(self.admin, self.cell) as cctxt:
            inst = objects.Instance.get_by_uuid(
                cctxt, uuids.instance, expected_attrs=['system_metadata'])
            self.assertEqual(600, nova_request.from_instance(
                inst, cctxt)['completion_timeout'])
            other = nova_context.RequestContext('admin', 'fake',
                                                request_id='req-other')
            self.assertEqual({}, nova_request.from_instance(inst, other))

    def test_without_nova_context_500(self) -> None:
        req = webob.Request.blank(f'/servers/{uuids.instance}/action',
                                  method='POST')
        req.body = json.dumps(self.migrate(on_timeout='abort')).encode()
        resp = req.get_response(self.filter)
        self.assertEqual(500, resp.status_int)
        self.assertIn('misplaced', resp.json['computeFault']['message'])
        self.assertEqual([], self.app.calls)


class BadRequestTest(FilterTestCase):

    def assertBadRequest(self, fields: dict, *wanted: str) -> None:
        resp = self.post(self.migrate(**fields))
        self.assertEqual(400, resp.status_int)
        self.assertEqual('application/json', resp.content_type)
        fault = resp.json['badRequest']
        self.assertEqual(400, fault['code'])
        for text in wanted:
            self.assertIn(text, fault['message'])
        self.assertEqual([], self.app.calls)
        self.assertNotIn(nova_request.SYSMETA_KEY, self.sysmeta())

    def test_wording_names_field_and_allowed_values(self) -> None:
        self.assertBadRequest(
            {'timeout_seconds': -1},
            'timeout_seconds: -1 is out of range; allowed: integer from 0 '
            'to 2147483647')
        self.assertBadRequest({'timeout_seconds': '600'},
                              'timeout_seconds: must be of type integer')
        self.assertBadRequest(
            {'on_timeout': 'pause'},
            "on_timeout: 'pause' is not allowed; allowed values: abort, "
            'force_complete')
        self.assertBadRequest(
            {'force_complete_mode': 'fast', 'on_timeout': 'force_complete'},
            "force_complete_mode: 'fast' is not allowed; allowed values: "
            'auto, postcopy, pause')

    def test_microversion_headers_on_faults(self) -> None:
        req = webob.Request.blank(f'/servers/{uuids.instance}/action',
                                  method='POST')
        req.headers['OpenStack-API-Version'] = 'compute 2.80'
        req.body = json.dumps(self.migrate(on_timeout='x')).encode()
        req.environ['nova.context'] = self.admin
        resp = req.get_response(self.filter)
        self.assertEqual(400, resp.status_int)
        self.assertEqual('compute 2.80', resp.headers['OpenStack-API-Version'])


class PolicyTest(FilterTestCase):

    def member(self) -> nova_context.RequestContext:
        return nova_context.RequestContext('fake', 'fake',
                                           roles=['reader', 'member'])

    def test_member_is_forbidden(self) -> None:
        resp = self.post(self.migrate(timeout_seconds=5),
                         context=self.member())
        self.assertEqual(403, resp.status_int)
        self.assertEqual(
            {'forbidden': {'code': 403, 'message':
                           "Policy doesn't allow lmcaps:migrate_live:timeout "
                           "to be performed."}}, resp.json)
        self.assertEqual([], self.app.calls)
        self.assertNotIn(nova_request.SYSMETA_KEY, self.sysmeta())

    def test_policy_yaml_override(self) -> None:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'policy.yaml')
        with open(path, 'w') as f:
            f.write(f'"{nova_api.RULE}": "role:member"\n')
        self.flags(policy_file=path, group='oslo_policy')
        nova_policy.reset()
        resp = self.post(self.migrate(timeout_seconds=5),
                         context=self.member())
        self.assertEqual(202, resp.status_int)
        self.assertIn(nova_request.SYSMETA_KEY, self.sysmeta())

    def test_default_is_nova_admin_rule(self) -> None:
        from nova.policies import migrate_server
        (rule,) = nova_api.list_rules()
        self.assertEqual(nova_api.RULE, rule.name)
        nova_rules = {r.name: r.check_str
                      for r in migrate_server.list_rules()}
        self.assertEqual(
            nova_rules['os_compute_api:os-migrate-server:migrate_live:host'],
            rule.check_str)


class PackagingTest(test.NoDBTestCase):

    def test_policy_entry_point_and_sample_generator(self) -> None:
        (ep,) = [e for e in metadata.entry_points(
            group='oslo.policy.policies') if e.name == 'lmcaps']
        self.assertEqual(nova_api.list_rules(), ep.load()())
        # what oslopolicy-sample-generator --namespace lmcaps runs
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'policy.yaml.sample')
        generator.generate_sample(
            args=['--namespace', 'lmcaps', '--output-file', path],
            conf=cfg.ConfigOpts())
        with open(path) as f:
            self.assertIn(f'#"{nova_api.RULE}": "rule:context_is_admin"',
                          f.read())

    def test_paste_factory_and_readme_lines(self) -> None:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'api-paste.ini')
        with open(path, 'w') as f:
            f.write('[pipeline:main]\npipeline = lmcaps_migrate_live app\n'
                    '[app:app]\npaste.app_factory = '
                    'tests.nova.test_api:recorder_factory\n'
                    + lmcaps_fixtures.FILTER_SECTION)
        app = deploy.loadapp(f'config:{path}')
        self.assertIsInstance(app, nova_api.MigrateLiveFilter)
        readme = os.path.join(os.path.dirname(__file__), '..', '..',
                              'README.rst')
        with open(readme) as f:
            text = f.read()
        for line in lmcaps_fixtures.FILTER_SECTION.strip().splitlines():
            self.assertIn(line, text)


def recorder_factory(global_config: dict, **local_config: str) -> Recorder:
    return Recorder()
