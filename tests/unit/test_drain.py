"""Tests of ``lmcaps drain`` (lmcaps.drain, drainer, drainpolicy) on the
fake driver."""

from __future__ import annotations

import json
import os
from unittest import mock

import ddt
import testtools
import yaml

from lmcaps import drain
from lmcaps import drainer
from lmcaps import drainpolicy
from lmcaps import events
from lmcaps import exception
from lmcaps import migrate
from lmcaps.drivers import base
from lmcaps.drivers import fake
from tests.unit import base as test_base
from tests.unit import test_cli


def guest(name, ram=1024, **labels):
    return base.GuestInfo(name, f'00000000-0000-0000-0000-{len(name):012d}',
                          ram, labels)


def rules(*raw):
    return drainpolicy.parse({'rules': list(raw)})


@ddt.ddt
class SelectionTest(test_base.ConfTestCase):
    GUESTS = [guest('web-1', tier='web'), guest('web-2', tier='web'),
              guest('db-1', tier='db'), base.GuestInfo(
                  'x', '11111111-2222-3333-4444-555555555555', 10)]

    @ddt.unpack
    @ddt.data(
        ({}, ['web-1', 'web-2', 'db-1', 'x']),
        ({'names': ('web-*',)}, ['web-1', 'web-2']),
        ({'names': ('db-1', 'x')}, ['db-1', 'x']),
        ({'uuids': ('11111111-2222-3333-4444-555555555555',)}, ['x']),
        ({'labels': {'tier': 'web'}}, ['web-1', 'web-2']),
        ({'names': ('*-1',), 'labels': {'tier': 'db'}}, ['db-1']),
    )
    def test_select(self, kwargs, expected):
        picked = drain.select(self.GUESTS, drain.Selection(**kwargs))
        self.assertEqual(expected, [g.name for g in picked])

    @ddt.data({'names': ('nope',)},
              {'uuids': ('99999999-2222-3333-4444-555555555555',)},
              {'labels': {'tier': ''}}, {'labels': {'tier': 'cache'}},
              {'labels': {'tier': 'web', 'zone': 'a'}})
    def test_unknown_guest_is_bad_input(self, kwargs):
        exc = self.assertRaises(exception.InvalidInput, drain.select,
                                self.GUESTS, drain.Selection(**kwargs))
        self.assertIn('guest of this host', exc.message)

    def test_labels_each_found_but_not_together_select_none(self):
        # each label is some guest's, so no error: the selection is empty
        self.assertEqual([], drain.select(self.GUESTS, drain.Selection(
            names=('web-*',), labels={'tier': 'db'})))

    def test_fake_lists_only_guests_on_the_source(self):
        driver = fake.FakeDriver(self.conf)
        self.cfg.config(guests=['a:512', 'b'], group='lmcaps_fake')
        driver.world.add_guest('c', 4096, {'tier': 'db'})
        listed = driver.list_guests()
        self.assertEqual([('a', 512), ('b', 2048), ('c', 4096)],
                         [(g.name, g.ram_mib) for g in listed])
        self.assertEqual({'tier': 'db'}, dict(listed[2].labels))
        self.cfg.config(time_scale=1000.0, group='lmcaps_fake')
        m = driver.start_migration(base.MigrationSpec('a', 'dst'))
        driver.wait(m, timeout=5, interval=0.01)
        self.assertEqual(['b', 'c'], [g.name for g in driver.list_guests()])
        self.cfg.config(time_scale=1.0, group='lmcaps_fake')
        driver.world.add_guest('d', 512, {}, 5000.0)
        driver.start_migration(base.MigrationSpec('d', 'dst'))
        [busy] = [g for g in driver.list_guests() if g.name == 'd']
        self.assertIn('already running', busy.busy)

    def test_driver_without_listing_says_so(self):
        from lmcaps import drivers
        driver = drivers.driver_class('vmware')(self.conf)
        exc = self.assertRaises(exception.UnsupportedOperation,
                                driver.list_guests)
        self.assertIn('list_guests', exc.message)
        self.assertIn('cannot list', exc.message)


@ddt.ddt
class PolicyRuleTest(test_base.ConfTestCase):

    def test_more_labels_wins_then_criteria_then_order(self):
        found = rules(
            {'name': 'all', 'policy': {'priority': 1}},
            {'name': 'web', 'match': {'name': 'web-*'},
             'policy': {'priority': 2}},
            {'name': 'tier', 'match': {'labels': {'tier': 'web'}},
             'policy': {'priority': 3}},
            {'name': 'tier2', 'match': {'labels': {'tier': 'web'}},
             'policy': {'priority': 4}},
            {'name': 'both', 'match': {'labels': {'tier': 'web', 'z': 'a'}},
             'policy': {'priority': 5}})
        self.assertEqual('tier', drainpolicy.winner(
            found, guest('web-1', tier='web')).name)
        self.assertEqual('both', drainpolicy.winner(
            found, guest('web-1', tier='web', z='a')).name)
        self.assertEqual('web', drainpolicy.winner(found, guest('web-1')).name)
        self.assertEqual('all', drainpolicy.winner(found, guest('db')).name)
        self.assertIsNone(drainpolicy.winner(found[1:], guest('db')))

    def test_ram_range_and_per_gib(self):
        found = rules({'match': {'ram_mib': {'min': 4096}},
                       'policy': {'completion_timeout_per_gib': 10}})
        self.assertIsNone(drainpolicy.winner(found, guest('a', 2048)))
        gp = drainpolicy.for_guest(found, guest('a', 8192), 8.0, {})
        self.assertEqual((('policy rule 0', {'completion_timeout': 80}),),
                         gp.layers)

    def test_command_line_over_rule_over_config(self):
        found = rules({'name': 'r', 'policy': {
            'completion_timeout': 100, 'timeout_action': 'abort',
            'bandwidth_mib': 50, 'priority': 7}})
        gp = drainpolicy.for_guest(found, guest('a'), 2.0, {
            'timeout_action': 'force_complete', 'bandwidth_mib': 10})
        self.assertEqual(
            (('command line', {'timeout_action': 'force_complete'}),
             ('policy rule 0 (r)', {'completion_timeout': 100,
                                    'timeout_action': 'abort'})), gp.layers)
        self.assertEqual((10, 'command line'), gp.bandwidth_mib)
        self.assertEqual((7, 'policy rule 0 (r)'), gp.priority)
        self.assertEqual((0, 'default'), drainpolicy.for_guest(
            [], guest('a'), 2.0, {}).priority)

    @ddt.unpack
    @ddt.data(
        ({'rules': [{'policy': {'timeout_action': 'explode'}}]},
         "rules[0].policy.timeout_action: 'explode' is not allowed; allowed "
         'values: abort, force_complete'),
        ({'rules': [{'policy': {}}, {'policy': {'prio': 1}}]},
         "rules[1].policy: unknown field(s) 'prio'"),
        ({'rules': [{'policy': {'completion_timeout': -1}}]},
         'rules[0].policy.completion_timeout: -1 is out of range'),
        ({'rules': [{'match': {'ram_mib': {'min': 'x'}}, 'policy': {}}]},
         'rules[0].match.ram_mib.min: must be of type integer'),
        ({'rules': [{'policy': {'completion_timeout': 1,
                                'completion_timeout_per_gib': 2}}]},
         'rules[0].policy: give completion_timeout or '
         'completion_timeout_per_gib, not both'),
        ({'rules': [{'match': {'name': 'a'}}]},
         "rules[0]: 'policy' is a required property"),
        ({'rules': [{'match': {'ram_mib': {'min': 9, 'max': 1}},
                     'policy': {}}]},
         'rules[0].match.ram_mib: min 9 is above max 1'),
        (['not', 'a', 'mapping'], 'the file: must be of type object'),
        # NaN passes every bound; nan, inf and a negative say the same range
        ({'rules': [{'policy': {}}, {'policy': {
            'completion_timeout_per_gib': float('nan')}}]},
         'rules[1].policy.completion_timeout_per_gib: nan is out of range; '
         'allowed: number above 0 up to 86400'),
        ({'rules': [{'policy': {'completion_timeout_per_gib': float('inf')}}]},
         'rules[0].policy.completion_timeout_per_gib: inf is out of range; '
         'allowed: number above 0 up to 86400'),
        ({'rules': [{'policy': {'completion_timeout_per_gib': -5}}]},
         'rules[0].policy.completion_timeout_per_gib: -5 is out of range; '
         'allowed: number above 0 up to 86400'),
    )
    def test_schema_errors_name_rule_and_field(self, document, fragment):
        exc = self.assertRaises(exception.InvalidPolicyFile,
                                drainpolicy.parse, document)
        self.assertIn(fragment, exc.message)

    def refused_file(self, text):
        """Write ``text`` as a policy file; its path and load's error."""
        path = self.useFixture(test_cli.fixtures.TempDir()).path + '/p.yaml'
        with open(path, 'w') as f:
            f.write(text)
        return path, self.assertRaises(exception.InvalidPolicyFile,
                                       drainpolicy.load, path)

    def test_file_not_yaml(self):
        path, exc = self.refused_file('rules: [\n  - {a: 1\n')
        self.assertIn('not YAML at line', exc.message)
        self.assertRaises(exception.InvalidPolicyFile, drainpolicy.load,
                          path + '.missing')

    def test_key_given_twice_is_refused(self):
        path, exc = self.refused_file(
            'rules:\n  - policy: {priority: 1, priority: 2}\n')
        self.assertIn("line 2, column 27: key 'priority' given twice",
                      exc.message)
        with open(path, 'w') as f:     # the same key in two rules is fine
            f.write('rules:\n  - policy: {priority: 1}\n'
                    '  - policy: {priority: 2}\n')
        self.assertEqual([1, 2], [r.policy['priority']
                                  for r in drainpolicy.load(path)])

    def test_unmatched_rules(self):
        found = rules({'match': {'name': 'db-*'}, 'policy': {}},
                      {'policy': {}})
        self.assertEqual([0], [r.index for r in drainpolicy.unmatched(
            found, [guest('web')])])


@ddt.ddt
class MigrateUriTest(testtools.TestCase):

    @ddt.data(
        ((), (), {}),
        (('d1',), ('tcp://a',), {'d1': 'tcp://a'}),
        (('d1', 'd2'), ('tcp://a', 'tcp://b'),
         {'d1': 'tcp://a', 'd2': 'tcp://b'}),
        (('d1', 'd1'), ('tcp://a', 'tcp://a'), {'d1': 'tcp://a'}),
    )
    @ddt.unpack
    def test_paired_by_position(self, dests, uris, expected):
        self.assertEqual(expected, drain.pair_migrate_uris(dests, uris))

    @ddt.data(
        (('d1', 'd2'), ('tcp://a',), 'one per --dest in the same order'),
        (('d1',), ('tcp://a', 'tcp://b'), 'one per --dest'),
        (('d1',), ('',), 'a non-empty URI'),
        (('d1', 'd1'), ('tcp://a', 'tcp://b'), 'the same for a --dest'),
    )
    @ddt.unpack
    def test_bad_pairing_names_the_option(self, dests, uris, fragment):
        err = self.assertRaises(exception.InvalidInput,
                                drain.pair_migrate_uris, dests, uris)
        self.assertIn('--migrate-uri', str(err))
        self.assertIn(fragment, str(err))

    def test_kept_in_the_stored_plan(self):
        options = drain.Options(dests=('d1', 'd2'),
                                migrate_uris={'d2': 'tcp://b'})
        doc = json.loads(json.dumps({'options': options.as_dict()}))
        again = drain.Stored(plan=doc, ended={}, started={}).options
        self.assertEqual(options, again)
        self.assertEqual({}, again.spec_options('d1'))
        self.assertEqual({'migrate_uri': 'tcp://b'},
                         again.spec_options('d2'))


class DrainTestCase(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.cfg.config(monitor_poll_interval=0.01, host='src',
                        group='lmcaps')
        self.driver = fake.FakeDriver(self.conf)
        self.cfg.config(time_scale=50.0, bandwidth_mib=1000.0,
                        group='lmcaps_fake')
        self.store = events.MemoryEventStore()
        self.drain_id = drain.new_drain_id()

    def add(self, name, ram=1024, dirty=None, **labels):
        self.driver.world.add_guest(name, ram, labels, dirty)

    def plan(self, policy=(), command_line=None, selection=None):
        guests = drain.select(self.driver.list_guests(),
                              selection or drain.Selection())
        return drain.plan(self.conf, self.driver, self.store, guests,
                          rules(*policy), command_line or {}, self.drain_id)

    def run_drain(self, items, **options):
        options.setdefault('dests', ('dst',))
        lines = []
        d = drainer.Drainer(self.conf, self.driver, self.store, items,
                            drain.Options(**options), self.drain_id,
                            on_change=getattr(self, 'on_change', None),
                            on_line=lines.append)
        self.lines = lines
        return d.run()


class PlanTest(DrainTestCase):

    def test_order_priority_then_smallest_ram(self):
        self.add('big', 8192)
        self.add('small', 512)
        self.add('mid', 2048)
        self.add('vip', 16384, tier='db')
        items = self.plan([{'match': {'labels': {'tier': 'db'}},
                            'policy': {'priority': 10}}])
        self.assertEqual([('vip', 0), ('small', 1), ('mid', 2), ('big', 3)],
                         [(i.name, i.order) for i in items])

    def test_refused_guest_is_reported_with_its_event(self):
        self.cfg.config(max_completion_timeout=100, group='lmcaps')
        self.add('ok')
        self.add('long')
        items = self.plan([{'match': {'name': 'long'},
                            'policy': {'completion_timeout': 500}}],
                          {'timeout_action': 'abort'})
        self.assertEqual([('ok', None, 0), ('long', 'refused', None)],
                         [(i.name, i.status == 'refused' and 'refused'
                           or None, i.order) for i in items])
        self.assertIn('completion_timeout 500 is out of bounds',
                      items[1].refused)
        recorded = self.store.list_events(items[1].instance_uuid)
        self.assertEqual([(events.PRECHECK, events.ERROR)],
                         [(e.event, e.result) for e in recorded])
        pol = items[0].policy_with_sources()
        self.assertEqual({'value': 'abort', 'source': 'command line'},
                         pol['timeout_action'])
        self.assertEqual('config', pol['completion_timeout']['source'])
        # the plan shows what the refused guest's policy would have been
        refused = items[1].policy_with_sources()
        self.assertIsNone(items[1].policy)
        self.assertEqual({'value': 500, 'source': 'policy rule 0'},
                         refused['completion_timeout'])
        self.assertEqual({'value': 'abort', 'source': 'command line'},
                         refused['timeout_action'])

    def test_busy_guest_refused_with_its_event(self):
        import dataclasses
        self.add('idle')
        self.add('migrating')
        guests = [g if g.name == 'idle' else dataclasses.replace(
            g, busy='a migration to this host is in progress (incoming)')
            for g in self.driver.list_guests()]
        items = drain.plan(self.conf, self.driver, self.store, guests, [],
                           {}, self.drain_id)
        self.assertEqual([('idle', None), ('migrating', 'refused')],
                         [(i.name, i.refused and 'refused') for i in items])
        self.assertIn('(incoming)', items[1].refused)
        recorded = self.store.list_events(items[1].instance_uuid)
        self.assertEqual([(events.PRECHECK, events.ERROR)],
                         [(e.event, e.result) for e in recorded])
        self.assertIn('incoming', recorded[0].details)
        again = drain.stored_item(items[1].plan_dict())
        self.assertEqual(items[1].guest, again.guest)

    def test_plan_of_1000_guests(self):
        for n in range(1000):
            self.add(f'g-{n:04d}', 512 + n)
        items = self.plan([{'match': {'name': 'g-00*'},
                            'policy': {'priority': 1}}])
        self.assertEqual(1000, len(items))
        self.assertEqual(['g-0000', 'g-0001'], [i.name for i in items[:2]])
        self.assertEqual('g-0100', items[100].name)
        self.assertEqual(1000, sum(len(self.store.list_events(
            i.instance_uuid)) for i in items))


class RunTest(DrainTestCase):

    def test_parallel_limit_and_every_guest_migrated(self):
        for n in range(12):
            self.add(f'g{n}', 1024 + 256 * n)
        peak = []
        self.on_change = lambda d: peak.append(
            (len(d.running), max(d.load.values())))
        result = self.run_drain(self.plan(), dests=('d1', 'd2'),
                                max_parallel=4, per_dest=2)
        self.assertEqual(0, result.exit_code)
        self.assertEqual({'completed': 12}, result.counts())
        self.assertLessEqual(max(p[0] for p in peak), 4)
        self.assertEqual(4, max(p[0] for p in peak))
        self.assertLessEqual(max(p[1] for p in peak), 2)
        for item in result.items:
            self.assertEqual('destination (running)', item.location)
        self.assertEqual([], self.driver.list_guests())
        self.assertEqual({'d1', 'd2'}, {i.destination for i in result.items})
        # each start line says how many slots are taken, never above 4
        started = [line for line in self.lines if ': started to ' in line]
        self.assertEqual(12, len(started))
        counts = [int(line.rsplit('; ', 1)[1].split()[0]) for line in started]
        self.assertEqual(list(range(1, 5)), counts[:4])
        self.assertLessEqual(max(counts), 4)
        self.assertTrue(all(line.endswith(' of at most 4 running)')
                            for line in started), started)

    def test_each_migration_gets_its_destinations_migrate_uri(self):
        for n in range(4):
            self.add(f'g{n}', 512)
        specs = []
        real = self.driver.start_migration

        def start(spec):
            specs.append(spec)
            return real(spec)
        with mock.patch.object(self.driver, 'start_migration', start):
            result = self.run_drain(
                self.plan(), dests=('d1', 'd2'), max_parallel=2,
                migrate_uris={'d1': 'tcp://10.0.0.1'})
        self.assertEqual({'completed': 4}, result.counts())
        self.assertEqual(4, len(specs))
        for spec in specs:
            expected = ({'migrate_uri': 'tcp://10.0.0.1'}
                        if spec.destination.host == 'd1' else {})
            self.assertEqual(expected, dict(spec.options), spec)
        self.assertEqual({'d1', 'd2'},
                         {s.destination.host for s in specs})

    def test_each_guest_gets_its_own_action(self):
        self.add('stuck-abort', 1024, dirty=5000.0)
        self.add('stuck-pause', 1024, dirty=5000.0)
        self.add('fine', 512)
        items = self.plan([
            {'match': {'name': 'stuck-abort'}, 'policy': {
                'completion_timeout': 1, 'timeout_action': 'abort'}},
            {'match': {'name': 'stuck-pause'}, 'policy': {
                'completion_timeout': 2, 'timeout_action': 'force_complete',
                'force_complete_mode': 'pause'}}])
        result = self.run_drain(items, max_parallel=3)
        by_name = {i.name: i for i in result.items}
        self.assertEqual(('aborted', 'abort', 'source (running)'),
                         (by_name['stuck-abort'].status,
                          by_name['stuck-abort'].summary.action,
                          by_name['stuck-abort'].location))
        self.assertEqual(('completed', 'pause'),
                         (by_name['stuck-pause'].status,
                          by_name['stuck-pause'].summary.action))
        self.assertEqual(('completed', None),
                         (by_name['fine'].status,
                          by_name['fine'].summary.action))
        self.assertEqual(1, result.exit_code)
        self.assertGreater(by_name['stuck-pause'].summary.elapsed, 2.0)
        self.assertLess(by_name['stuck-abort'].summary.elapsed, 2.0)

    def fail_first_attempt(self, name, postcopy=False):
        done = set()

        def on_change(d):
            for run in list(d.running.values()):
                if run.item.name != name or done:
                    continue
                if postcopy and not run.watch.seen_postcopy:
                    continue
                done.add(run.migration.id)
                if postcopy:
                    self.driver.destination_dies(run.migration)
                else:
                    self.driver.fail_migration(run.migration)
        self.on_change = on_change

    def test_failed_migration_retried(self):
        self.cfg.config(time_scale=5.0, group='lmcaps_fake')
        self.add('a')
        self.fail_first_attempt('a')
        result = self.run_drain(self.plan(), retries=1)
        self.assertEqual((0, 'completed', 2),
                         (result.exit_code, result.items[0].status,
                          result.items[0].attempts))
        self.assertIn('a: failed; trying again (attempt 2 of 2)', self.lines)

    def test_failure_without_retries(self):
        self.cfg.config(time_scale=5.0, group='lmcaps_fake')
        self.add('a')
        self.fail_first_attempt('a')
        result = self.run_drain(self.plan())
        self.assertEqual((1, 'failed', 1),
                         (result.exit_code, result.items[0].status,
                          result.items[0].attempts))

    def test_post_copy_failure_never_retried(self):
        self.cfg.config(permit_post_copy=True, group='lmcaps')
        self.cfg.config(postcopy_bandwidth_mib=1.0, group='lmcaps_fake')
        self.add('a', 1024, dirty=5000.0)
        self.fail_first_attempt('a', postcopy=True)
        result = self.run_drain(self.plan(command_line={
            'completion_timeout': 1, 'timeout_action': 'force_complete',
            'force_complete_mode': 'postcopy'}), retries=3)
        self.assertEqual(('failed', 1), (result.items[0].status,
                                         result.items[0].attempts))

    def test_drain_events_recorded(self):
        self.add('a')
        items = self.plan()
        drain.record_plan(self.store, self.conf, self.driver, self.drain_id,
                          drain.Options(dests=('dst',)), items)
        self.run_drain(items)
        stored = drain.load(self.store, self.drain_id)
        self.assertEqual(['a'], list(stored.ended))
        self.assertEqual('completed', stored.ended['a']['outcome'])
        self.assertEqual('dst', stored.started['a']['destination'])
        names = [e.event for e in self.store.list_events(drain.drain_key(
            self.drain_id))]
        self.assertEqual([drain.PLAN, drain.START, drain.GUEST, drain.END],
                         names)
        self.assertEqual([events.PRECHECK, 'lmcaps_live_migration_watch',
                          events.OUTCOME],
                         [e.event for e in self.store.list_events(
                             items[0].instance_uuid)])

    def interrupt_when_running(self, count, signal_name='SIGTERM'):
        state = {'sent': False}

        def on_change(d):
            if not state['sent'] and len(d.running) >= count and all(
                    r.watch.progress is not None for r in d.running.values()):
                state['sent'] = True
                raise migrate.Interrupted(signal_name)
        self.on_change = on_change

    def test_interruption_aborts_running_and_starts_nothing(self):
        for n in range(5):
            self.add(f'g{n}', 1024, dirty=5000.0)
        self.interrupt_when_running(2)
        result = self.run_drain(self.plan(), max_parallel=2)
        self.assertEqual('SIGTERM', result.interrupted)
        self.assertEqual({'aborted': 2, 'not started': 3}, result.counts())
        for item in result.items[:2]:
            self.assertEqual('source (running)', item.location)
            self.assertEqual('SIGTERM', item.summary.interrupted)
        self.assertEqual(1, result.exit_code)

    def test_finish_running_lets_them_end(self):
        self.cfg.config(time_scale=1.0, group='lmcaps_fake')
        for n in range(4):
            self.add(f'g{n}', 1024)
        self.interrupt_when_running(2, 'SIGINT')
        result = self.run_drain(self.plan(), max_parallel=2,
                                finish_running=True)
        self.assertEqual({'completed': 2, 'not started': 2}, result.counts())

    def test_1000_guests_at_parallel_20(self):
        self.cfg.config(time_scale=2000.0, group='lmcaps_fake')
        for n in range(1000):
            self.add(f'g{n:04d}', 256 + n % 7 * 128)
        peak = [0]

        def on_change(d):
            peak[0] = max(peak[0], len(d.running))
        self.on_change = on_change
        result = self.run_drain(self.plan(), max_parallel=20)
        self.assertEqual({'completed': 1000}, result.counts())
        self.assertEqual(20, peak[0])
        self.assertEqual([], self.driver.list_guests())


@ddt.ddt
class DrainCLITest(test_cli.CLITestCase):

    def setUp(self):
        super().setUp()
        self.world = f'cli-{id(self)}'
        self.addCleanup(fake._worlds.pop, self.world, None)
        self.write_config(lmcaps={'monitor_poll_interval': '0.02'},
                          lmcaps_fake={
                              'world': self.world, 'time_scale': '50',
                              'guests': 'web-1:512,web-2:1024,db-1:2048'})

    def policy(self, document):
        path = os.path.join(self.dir, 'policy.yaml')
        with open(path, 'w') as f:
            f.write(document if isinstance(document, str)
                    else yaml.safe_dump(document))
        return path

    def test_drain_all_json(self):
        code, out, err = self.lmcaps('drain', '--dest', 'dst', '-f', 'json')
        self.assertEqual(0, code, err)
        data = json.loads(out)
        self.assertEqual({'completed': 3}, data['counts'])
        self.assertEqual(['web-1', 'web-2', 'db-1'],
                         [g['guest'] for g in data['guests']])
        self.assertEqual('destination (running)',
                         data['guests'][0]['guest_on'])
        self.assertEqual({'value': 0, 'source': 'default'},
                         data['guests'][0]['policy']['priority'])

    def test_dry_run_prints_plan_starts_nothing(self):
        path = self.policy({'rules': [{'name': 'db', 'match': {
            'name': 'db-*'}, 'policy': {'priority': 3,
                                        'timeout_action': 'abort'}}]})
        code, out, err = self.lmcaps('drain', '--dest', 'dst', '--dry-run',
                                     '--policy-file', path)
        self.assertEqual(0, code, err)
        self.assertIn('   0  db-1  2048 MiB  accepted', out)
        self.assertIn('timeout_action = abort (policy rule 0 (db))', out)
        self.assertEqual(3, len(fake.world(self.world).inventory))
        self.assertEqual({}, fake.world(self.world).sims)

    def test_refused_guest_exit_1_and_strict_starts_nothing(self):
        self.write_config(
            lmcaps={'monitor_poll_interval': '0.02',
                    'max_completion_timeout': '100'},
            lmcaps_fake={'world': self.world, 'time_scale': '50',
                         'guests': 'web-1:512,db-1:2048'})
        path = self.policy({'rules': [{'match': {'name': 'db-*'},
                                       'policy': {'completion_timeout':
                                                  900}}]})
        code, out, err = self.lmcaps('drain', '--dest', 'dst', '--strict',
                                     '--policy-file', path)
        self.assertEqual(1, code, err)
        self.assertIn('nothing started', err)
        self.assertEqual({}, fake.world(self.world).sims)
        code, out, err = self.lmcaps('drain', '--dest', 'dst',
                                     '--policy-file', path)
        self.assertEqual(1, code, err)
        self.assertIn('db-1: refused', out)
        self.assertIn('1 completed, 1 refused', out)

    def test_warning_for_a_rule_that_never_matches(self):
        path = self.policy({'rules': [{'match': {'name': 'nope-*'},
                                       'policy': {}}]})
        code, _out, err = self.lmcaps('drain', '--dest', 'dst',
                                      '--policy-file', path)
        self.assertEqual(0, code, err)
        self.assertIn('warning: policy rule 0 matches none', err)

    def test_warning_for_a_selection_that_picks_none(self):
        fake.world(self.world).add_guest('cache-1', 512, {'tier': 'cache'})
        code, out, err = self.lmcaps('drain', '--dest', 'dst', '--dry-run',
                                     '--name', 'web-*', '--label',
                                     'tier=cache')
        self.assertEqual(0, code, err)
        self.assertIn('lmcaps: warning: --name/--uuid/--label together '
                      'select none of the 4 guests of this host', err)
        self.assertIn('(0 guests)', out)
        self.assertEqual({}, fake.world(self.world).sims)

    @ddt.data(
        (['--dest', 'cli-host'], "Invalid --dest 'cli-host'"),
        (['--dest', 'x', '--label', 'tier='],
         "Invalid --label 'tier='; allowed: KEY=VALUE, a label of a guest"),
        (['--dest', 'x', '--max-parallel', '0'],
         "Invalid --max-parallel '0'; allowed: an integer from 1"),
        (['--dest', 'x', '--name', 'nope'], "Invalid --name 'nope'"),
        ([], 'Invalid --dest'),
        (['--dest', 'x', '--timeout-action', 'boom'],
         'timeout_action'),
        (['--dest', 'x', '--label', 'novalue'], 'Invalid --label'),
        (['--dest', 'x', '--migrate-uri', 'tcp://a', '--migrate-uri',
          'tcp://b'], "Invalid --migrate-uri 'tcp://a, tcp://b'"),
        (['--resume', 'drain-unknown'], 'Invalid --resume'),
        (['--resume', 'drain-unknown', '--dest', 'x'],
         'none of the planning options with --resume'),
        (['--resume', 'drain-unknown', '--migrate-uri', 'tcp://a'],
         '--migrate-uri; allowed: none of the planning options'),
    )
    def test_bad_input_exit_2_nothing_started(self, args):
        argv, fragment = args
        code, _out, err = self.lmcaps('drain', *argv)
        self.assertEqual(2, code, err)
        self.assertIn(fragment, err)
        self.assertEqual(1, len(err.strip().splitlines()), err)
        self.assertEqual({}, fake.world(self.world).sims)

    def test_invalid_policy_file_exit_2(self):
        path = self.policy({'rules': [{'policy': {'priority': 'high'}}]})
        code, _out, err = self.lmcaps('drain', '--dest', 'x',
                                      '--policy-file', path)
        self.assertEqual(2, code, err)
        self.assertIn('rules[0].policy.priority: must be of type integer',
                      err)

    def _recorded_drain(self, time_scale):
        """A drain of three fake guests, planned and recorded, not run:
        (drainer, drain id) for the CLI's ``--resume``."""
        from lmcaps import events_sql
        from lmcaps.cmd import main as cli_main
        self.write_config(lmcaps={'monitor_poll_interval': '0.02'},
                          lmcaps_fake={
                              'world': self.world, 'time_scale': time_scale,
                              'guests': 'web-1:512,web-2:1024,db-1:2048'})
        conf = cli_main.load_conf([self.config])
        driver = cli_main.load_driver(conf, None)
        store = events_sql.SQLEventStore.from_conf(conf)
        self.addCleanup(store.close)
        drain_id = drain.new_drain_id()
        items = drain.plan(conf, driver, store, driver.list_guests(), [], {},
                           drain_id)
        options = drain.Options(dests=('dst',), max_parallel=1)
        drain.record_plan(store, conf, driver, drain_id, options, items)
        return (lambda on_change: drainer.Drainer(
            conf, driver, store, items, options, drain_id,
            on_change=on_change)), drain_id

    def test_resume_after_interruption_migrates_what_it_left(self):
        make, drain_id = self._recorded_drain('0.5')

        def stop(d):
            if d.running and not d.stopping:
                d.interrupt('SIGTERM')
        result = make(stop).run()
        self.assertEqual({'aborted': 1, 'not started': 2}, result.counts())
        self.assertEqual({'SIGTERM'}, {i.interrupted for i in result.items})
        code, _out, err = self.lmcaps('drain', '--resume', drain_id,
                                      '--max-parallel', '0')
        self.assertEqual(2, code, err)
        self.assertIn('--max-parallel', err)
        code, out, err = self.lmcaps('drain', '--resume', drain_id,
                                     '--max-parallel', '3', '-f', 'json')
        self.assertEqual(0, code, err)
        self.assertIn('web-1: aborted when SIGTERM stopped the drain; '
                      'planned again', err)
        self.assertIn('at most 3 at once', err)
        data = json.loads(out)
        self.assertEqual({'completed': 3}, data['counts'])
        for name in ('web-1', 'web-2', 'db-1'):
            self.assertEqual(fake.DESTINATION,
                             fake.world(self.world).where(name)[0][0])

    def test_resume_reattaches_and_continues(self):
        make, drain_id = self._recorded_drain('5')

        def die(d):
            if d.running:
                raise RuntimeError('the process died')
        self.assertRaises(RuntimeError, make(die).run)
        self.assertEqual(1, len(fake.world(self.world).sims))
        code, out, err = self.lmcaps('drain', '--resume', drain_id,
                                     '-f', 'json')
        self.assertEqual(0, code, err)
        self.assertIn('re-attached to fake-migration-1', err)
        data = json.loads(out)
        self.assertEqual({'completed': 3}, data['counts'])
        self.assertEqual(3, len(fake.world(self.world).sims))


class LiveViewTest(testtools.TestCase):
    """The live view's rate column and ETA (lmcaps.cmd.drain)."""

    @staticmethod
    def _drainer(fraction):
        from types import SimpleNamespace as NS
        guest = (lambda name, ram: base.GuestInfo(name=name, uuid=name,
                                                  ram_mib=ram))
        items = [NS(guest=guest('done', 1000), name='done',
                    status='completed'),
                 NS(guest=guest('moving', 2000), name='moving',
                    status='running'),
                 NS(guest=guest('next', 1000), name='next', status='waiting')]
        progress = base.Progress(base.Phase.PRECOPY, fraction=fraction,
                                 data_total=2000 * 2**20,
                                 data_remaining=int(
                                     2000 * 2**20 * (1 - fraction)),
                                 transfer_rate=500 * 2**20)
        run = NS(item=items[1], dest='dst', watch=NS(
            progress=progress, deadline=None, attempts=[]))
        return NS(drain_id='drain-x', items=items, running={'m': run},
                  started=0.0)

    def test_eta_from_the_ram_moved(self):
        from lmcaps.cmd import drain as drain_cmd
        # 1000 + 500 MiB moved in 30 s; 1500 + 1000 MiB left
        self.assertAlmostEqual(
            50.0, drain_cmd.drain_eta(self._drainer(0.25), 30.0))

    def test_no_eta_before_anything_moved(self):
        from lmcaps.cmd import drain as drain_cmd
        d = self._drainer(0.0)
        d.items[0].status = 'waiting'
        self.assertIsNone(drain_cmd.drain_eta(d, 5.0))

    def test_table_shows_rate_and_eta(self):
        import io
        from rich import console as rich_console
        from lmcaps.cmd import drain as drain_cmd
        view = drain_cmd.Display(io.StringIO())
        with mock.patch('time.monotonic', return_value=30.0):
            table = view._table(self._drainer(0.25))
        out = io.StringIO()
        rich_console.Console(file=out, width=120).print(table)
        text = out.getvalue()
        self.assertIn('500 MiB/s', text)
        self.assertTrue(table.caption.endswith('elapsed 30 s  ETA 50 s'),
                        table.caption)
