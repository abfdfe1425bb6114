"""The os-migrateLive fragment and the request carrier."""

from __future__ import annotations

import copy

import jsonschema
import testtools
from nova.api.openstack.compute.schemas import migrate_server
from nova import objects

from lmcaps import exception
from lmcaps.nova import request as nova_request


class MigrateLiveSchemaTest(testtools.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.schema = nova_request.extend_migrate_live(
            migrate_server.migrate_live_v2_68)

    def body(self, **fields: object) -> dict:
        return {'os-migrateLive': {'host': None, 'block_migration': 'auto',
                                   **fields}}

    def test_merged_schema_accepts_the_spec_fields(self) -> None:
        jsonschema.validate(self.body(timeout_seconds=600,
                                      on_timeout='force_complete'),
                            self.schema)
        jsonschema.validate(self.body(), self.schema)

    def test_merged_schema_rejects_bad_values(self) -> None:
        for bad in ({'timeout_seconds': -1}, {'timeout_seconds': '600'},
                    {'on_timeout': 'pause'}, {'timeout': 600}):
            self.assertRaises(jsonschema.ValidationError, jsonschema.validate,
                              self.body(**bad), self.schema)

    def test_nova_schema_is_not_changed(self) -> None:
        before = copy.deepcopy(migrate_server.migrate_live_v2_68)
        nova_request.extend_migrate_live(migrate_server.migrate_live_v2_68)
        self.assertEqual(before, migrate_server.migrate_live_v2_68)
        self.assertRaises(ValueError, nova_request.extend_migrate_live,
                          self.schema)

    def test_mapping_to_lmcaps_names(self) -> None:
        body = self.body(timeout_seconds=600.0, on_timeout='abort')
        self.assertEqual(
            {'completion_timeout': 600, 'timeout_action': 'abort'},
            nova_request.from_migrate_live(body['os-migrateLive']))
        self.assertEqual({}, nova_request.from_migrate_live({'host': 'x'}))

    def test_errors_name_the_api_fields(self) -> None:
        exc = self.assertRaises(
            exception.InvalidRequest, nova_request.from_migrate_live,
            {'timeout_seconds': -5, 'on_timeout': 'later'})
        self.assertIn('timeout_seconds: -5 is out of range', str(exc))
        self.assertIn('on_timeout: ', str(exc))
        self.assertIn('allowed values: abort, force_complete', str(exc))


class _Context:
    def __init__(self, request_id: str, global_request_id: str | None = None):
        self.request_id = request_id
        self.global_request_id = global_request_id


class CarrierTest(testtools.TestCase):
    def instance(self) -> objects.Instance:
        objects.register_all()
        return objects.Instance(system_metadata={})

    def test_round_trip_for_the_same_request_only(self) -> None:
        inst = self.instance()
        nova_request.stash(inst, 'req-1', {'completion_timeout': 60})
        self.assertLessEqual(
            len(inst.system_metadata[nova_request.SYSMETA_KEY]), 255)
        self.assertEqual({'completion_timeout': 60},
                         nova_request.from_instance(inst, _Context('req-1')))
        self.assertEqual({}, nova_request.from_instance(inst,
                                                        _Context('req-2')))
        self.assertEqual({'completion_timeout': 60},
                         nova_request.from_instance(
                             inst, _Context('req-2', 'req-1')))

    def test_stash_validates(self) -> None:
        self.assertRaises(exception.InvalidRequest, nova_request.stash,
                          self.instance(), 'req-1', {'timeout_action': 'x'})
        self.assertRaises(exception.InvalidRequest, nova_request.stash,
                          self.instance(), 'r' * 300, {})

    def test_unreadable_carrier_is_an_error(self) -> None:
        inst = self.instance()
        inst.system_metadata[nova_request.SYSMETA_KEY] = '{not json'
        self.assertRaises(exception.InvalidRequest, nova_request.from_instance,
                          inst, _Context('req-1'))

    def test_malformed_carriers_are_invalid_requests(self) -> None:
        for text in ('{"request_id": ["x"], "values": {}}',
                     '{"request_id": ["x"]}', '["req-1"]', '"req-1"', '7',
                     '{"request_id": "req-1", "values": ["x"]}',
                     '{"request_id": "req-1", "values": null}'):
            inst = self.instance()
            inst.system_metadata[nova_request.SYSMETA_KEY] = text
            self.assertRaises(exception.InvalidRequest,
                              nova_request.from_instance, inst,
                              _Context('req-1'))
