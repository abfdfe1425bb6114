"""NovaEventStore: lmcaps events as nova's InstanceActionEvent rows."""

from __future__ import annotations

from nova import context as nova_context
from nova import objects

from lmcaps import events as lmcaps_events
from lmcaps.nova import events as nova_events
from tests.nova import base


class NovaEventStoreTest(base.NovaLmcapsTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.inst = self.make_instance()
        self.store = nova_events.NovaEventStore(self.context)
        self.rid = self.context.request_id

    def test_error_keeps_details_and_marks_the_action(self) -> None:
        self.store.record(self.rid, self.inst.uuid, 'lmcaps_x',
                          lmcaps_events.ERROR, host='h1', details='why not')
        [ev] = self.store.list_events(self.inst.uuid)
        self.assertEqual(
            (lmcaps_events.LIVE_MIGRATION, 'lmcaps_x', 'Error', 'h1',
             'why not'),
            (ev.action, ev.event, ev.result, ev.host, ev.details))
        self.assertIsNotNone(ev.start_time.tzinfo)
        self.assertLessEqual(ev.start_time, ev.finish_time)
        action = objects.InstanceAction.get_by_request_id(
            self.context, self.inst.uuid, self.rid)
        self.assertEqual('Error', action.message)

    def test_success_has_no_details_in_nova(self) -> None:
        self.store.record(self.rid, self.inst.uuid, 'lmcaps_x',
                          lmcaps_events.SUCCESS, details='dropped by nova')
        [ev] = self.store.list_events(self.inst.uuid)
        self.assertEqual(('Success', None), (ev.result, ev.details))

    def test_missing_action_is_created(self) -> None:
        # With a project in the context (an API request), nova does not fall
        # back to the instance's latest action: the store creates one.
        ctx = nova_context.RequestContext('user', 'project', is_admin=True)
        store = nova_events.NovaEventStore(ctx)
        store.record('req-other', self.inst.uuid, 'lmcaps_x',
                     lmcaps_events.ERROR, details='d')
        events = store.list_events(self.inst.uuid)
        self.assertEqual(['req-other'], [e.request_id for e in events])
        self.assertEqual([lmcaps_events.LIVE_MIGRATION],
                         [e.action for e in events])

    def test_reporter_records_a_crash(self) -> None:
        def crash() -> None:
            with lmcaps_events.reporter(self.store, self.rid, self.inst.uuid,
                                        'lmcaps_y'):
                raise ValueError('boom')
        self.assertRaises(ValueError, crash)
        [ev] = self.store.list_events(self.inst.uuid)
        self.assertEqual(('Error', 'boom'), (ev.result, ev.details))
        self.assertIn('ValueError: boom', ev.traceback)
