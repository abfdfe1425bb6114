"""``openstack lmcaps ...`` against nova's real API and placement.

The ``openstack`` shell runs in-process (``openstackclient.shell.main``)
with this plugin loaded from its installed entry points, against nova's
functional services: the compute API through wsgi-intercept with lmcaps's
``lmcaps_migrate_live`` filter in the pipeline, conductor, scheduler, the
placement fixture, and two computes (``src``, ``dest``) on nova's fake
libvirt with lmcaps's hooks enabled, so the traits are those nova reports.

Authentication: nova 34's paste pipeline has only the keystone flavour
(noauth2 is gone), so the API runs with keystonemiddleware's real
``auth_token`` and nova's real ``NovaKeystoneContext``; the token is
validated by keystonemiddleware's own ``AuthTokenFixture``
(``STUB_KEYSTONE = False``).  OSC authenticates with keystoneauth's
``admin_token`` plugin (a fixed token, no catalog) from a clouds.yaml with
``compute_endpoint_override`` / ``placement_endpoint_override``.  The token
is ``admin:admin``: placement's noauth middleware reads it as user and
project ``admin`` with the admin role.  nova's own test client gets a token
per user (it sends none itself).
"""

from __future__ import annotations

import io
import json
import logging
import os
from importlib import metadata
from typing import Any

import fixtures
import yaml
from keystonemiddleware import fixture as ksm_fixture
from nova import context as nova_context
from nova import objects
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional.api import client as api_client
from nova.tests.functional import integrated_helpers
from nova.tests.functional.libvirt import base as libvirt_base
from openstackclient import shell as osc_shell

from lmcaps.nova import request as nova_request
from lmcaps.nova import traits as lmcaps_traits
from tests.nova import fixtures as lmcaps_fixtures

#: The token OSC sends: user and project 'admin' for placement's noauth.
ADMIN_TOKEN = 'admin:admin'
#: Roles of nova's test-client users (OSAPIFixture's).
USER_ROLES = {'admin': ['admin', 'member', 'reader'],
              'fake': ['member', 'reader'], 'reader': ['reader'],
              'other': ['other']}
FILTER = 'lmcaps_migrate_live'


def nova_api_paste() -> str:
    """The api-paste.ini nova's wheel installs (under ``<prefix>/etc``)."""
    dist = metadata.distribution('nova')
    for path in dist.files or ():
        if str(path).endswith('etc/nova/api-paste.ini'):
            return str(dist.locate_file(path))
    raise AssertionError('nova installed no etc/nova/api-paste.ini')


class ApiPasteWithLmcaps(fixtures.Fixture):
    """nova's api-paste.ini with ``lmcaps_migrate_live`` after
    ``keystonecontext`` (as README.rst documents), used by nova-api."""

    def __init__(self, flags: Any) -> None:
        self.flags = flags

    def _setUp(self) -> None:
        with open(nova_api_paste()) as f:
            text = f.read()
        assert text.count(' keystonecontext ') == 2, 'nova changed its paste'
        text = text.replace(' keystonecontext ', f' keystonecontext {FILTER} ')
        text += (f'\n[filter:{FILTER}]\npaste.filter_factory = '
                 'lmcaps.nova.api:MigrateLiveFilter.factory\n')
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'api-paste.ini')
        with open(path, 'w') as f:
            f.write(text)
        self.flags(api_paste_config=path, group='wsgi')


class OpenStackShellTest(libvirt_base.LibvirtMigrationMixin,
                         libvirt_base.ServersTestBase,
                         integrated_helpers.InstanceHelperMixin):
    ADMIN_API = True
    STUB_KEYSTONE = False
    microversion = '2.74'          # _create_server(host=...)

    def setUp(self) -> None:
        self.useFixture(lmcaps_fixtures.NovaHooks())
        self.useFixture(ApiPasteWithLmcaps(self.flags))
        tokens = self.useFixture(ksm_fixture.AuthTokenFixture())
        for user, roles in USER_ROLES.items():
            tokens.add_token_data(
                token_id=f'{user}:{user}', user_id=user, user_name=user,
                project_id=nova_fixtures.PROJECT_ID, role_list=roles)
        tokens.add_token_data(
            token_id=ADMIN_TOKEN, user_id='admin', user_name='admin',
            project_id=nova_fixtures.PROJECT_ID,
            role_list=USER_ROLES['admin'])
        original = api_client.TestOpenStackClient.request

        def request(client: Any, url: str, method: str = 'GET',
                    body: Any = None, headers: Any = None) -> Any:
            headers = dict(headers or {})
            headers.setdefault('X-Auth-Token',
                               f'{client.auth_user}:{client.auth_user}')
            return original(client, url, method=method, body=body,
                            headers=headers)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.functional.api.client.TestOpenStackClient.request',
            request))
        super().setUp()
        self.start_compute(hostname='src')
        self.start_compute(hostname='dest')
        self.src = self.computes['src']
        self.dest = self.computes['dest']
        self.clouds_yaml()

    def clouds_yaml(self) -> None:
        compute = self.api_fixture.base_url           # http://host:80/v2.1
        cloud = {
            'auth_type': 'admin_token',
            'auth': {'endpoint': compute, 'token': ADMIN_TOKEN},
            'compute_endpoint_override': compute,
            'placement_endpoint_override': self.placement_fixture.endpoint,
        }
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'clouds.yaml')
        with open(path, 'w') as f:
            yaml.safe_dump({'clouds': {'nova-functional': cloud}}, f)
        for name in [n for n in os.environ if n.startswith('OS_')]:
            self.useFixture(fixtures.EnvironmentVariable(name))
        self.useFixture(fixtures.EnvironmentVariable(
            'OS_CLIENT_CONFIG_FILE', path))

    def openstack(self, *argv: str) -> tuple[int, str, str]:
        """Run ``openstack --os-cloud nova-functional ARGV`` in-process.

        :returns: (exit code, stdout, stderr).
        """
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            with fixtures.MonkeyPatch('sys.stdout', out), \
                    fixtures.MonkeyPatch('sys.stderr', err):
                rc = osc_shell.main(['--os-cloud', 'nova-functional',
                                     *argv])
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        return rc, out.getvalue(), err.getvalue()

    # -- capabilities ------------------------------------------------------

    def placement_traits(self, host: str) -> set[str]:
        """The provider's traits as placement answers nova's own client."""
        uuid = self.compute_rp_uuids[host]
        return set(self.placement.get(
            f'/resource_providers/{uuid}/traits', version='1.6'
        ).body['traits'])

    def test_capabilities_all_hosts_one_host_unknown_host(self) -> None:
        rc, out, err = self.openstack('lmcaps', 'capabilities', '-f', 'json')
        self.assertEqual(0, rc, err)
        rows = json.loads(out)
        self.assertEqual(['dest', 'src'], [r['Host'] for r in rows])
        for row in rows:
            have = self.placement_traits(row['Host'])
            expected = sorted(have & lmcaps_traits.OWNED)
            self.assertIn('CUSTOM_LMCAPS_ABORT', expected)
            self.assertEqual(expected, row['Traits'])
            self.assertEqual(self.compute_rp_uuids[row['Host']],
                             row['Resource Provider'])
            self.assertIn('abort', row['Operations'])
            self.assertIn('per_instance_timeout', row['Operations'])
        # one host, then a host placement does not know
        rc, out, err = self.openstack('lmcaps', 'capabilities',
                                      '--host', 'src', '-f', 'json')
        self.assertEqual(0, rc, err)
        self.assertEqual(['src'], [r['Host'] for r in json.loads(out)])
        rc, out, err = self.openstack('lmcaps', 'capabilities',
                                      '--host', 'nowhere')
        self.assertEqual(1, rc)
        self.assertEqual('', out)
        self.assertEqual(1, len(err.strip().splitlines()), err)
        self.assertIn("host 'nowhere'", err)

    # -- server migrate ----------------------------------------------------

    def test_migrate_carries_the_per_instance_values(self) -> None:
        self.server = self._create_server(host='src', networks='none')
        rc, out, err = self.openstack(
            'lmcaps', 'server', 'migrate', self.server['id'], '--live',
            '--host', 'dest', '--completion-timeout', '600',
            '--timeout-action', 'force_complete',
            '--force-complete-mode', 'pause', '-f', 'json')
        self.assertEqual(0, rc, err)
        sent = json.loads(out)
        self.assertEqual('2.30', sent['microversion'])
        self.assertEqual(600, sent['timeout_seconds'])
        request_id = sent['request_id']
        self.assertTrue(request_id.startswith('req-'), sent)
        server = self._wait_for_server_parameter(
            self.server, {'OS-EXT-SRV-ATTR:host': 'dest',
                          'status': 'ACTIVE'})
        self.assertTrue(self.migrate_stub_ran)
        # The carrier the filter stored, bound to the migration's request.
        ctxt = nova_context.get_admin_context()
        inst = objects.Instance.get_by_uuid(
            ctxt, server['id'], expected_attrs=['system_metadata'])
        carried = json.loads(inst.system_metadata[nova_request.SYSMETA_KEY])
        self.assertEqual(request_id, carried['request_id'])
        self.assertEqual({'completion_timeout': 600,
                          'timeout_action': 'force_complete',
                          'force_complete_mode': 'pause'},
                         carried['values'])
        # nova's live-migration action under that id has lmcaps's event.
        action = self.api.api_get(
            f'/servers/{server["id"]}/os-instance-actions/{request_id}'
        ).body['instanceAction']
        self.assertEqual('live-migration', action['action'])
        events = {ev['event']: ev for ev in action['events']}
        self.assertEqual('Success',
                         events['lmcaps_precheck_live_migration']['result'])

    def test_bad_option_values_one_line_error(self) -> None:
        self.server = self._create_server(host='src', networks='none')
        cases = [
            (['--completion-timeout', '-5'],
             "--completion-timeout: '-5' is not allowed; allowed: an "
             'integer number of seconds from 0 (never) to 2147483647'),
            (['--completion-timeout', 'soon'],
             "--completion-timeout: 'soon' is not allowed"),
            (['--timeout-action', 'pause'],
             "--timeout-action: 'pause' is not allowed; allowed values: "
             'abort, force_complete'),
            (['--force-complete-mode', 'fast'],
             "--force-complete-mode: 'fast' is not allowed; allowed values: "
             'auto, postcopy, pause'),
        ]
        for options, message in cases:
            rc, out, err = self.openstack(
                'lmcaps', 'server', 'migrate', self.server['id'], '--live',
                *options)
            self.assertEqual(1, rc, options)
            self.assertEqual(1, len(err.strip().splitlines()), err)
            self.assertIn(message, err)
            self.assertNotIn('Traceback', err)
        # Nothing was sent: no live-migration action on the server.
        actions = self.api.api_get(
            f'/servers/{self.server["id"]}/os-instance-actions'
        ).body['instanceActions']
        self.assertEqual(['create'], [a['action'] for a in actions])
