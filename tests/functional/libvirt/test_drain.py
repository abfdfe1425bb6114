"""``lmcaps drain`` on real libvirtd + QEMU, as an operator runs it.

Four guests labelled through their domain metadata (two in the domain XML,
two set on the running domain with ``virDomainSetMetadata``), selected by a
name glob and a label so that guests of other tests on the shared pair are
not touched, and a policy file that gives each its own policy: two converge
(small dirty set, no bandwidth cap), two never converge at 1 MiB/s and get
different actions at different deadlines (abort at 3 s, force-complete by
post-copy at 5 s).  Where each guest ends is asked of both daemons.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os

import fixtures
import libvirt
import yaml

from lmcaps import drain
from lmcaps import drivers
from lmcaps import events
from lmcaps.drivers import base
from lmcaps.drivers import libvirt as lmcaps_libvirt
from tests.functional.libvirt import pair as pair_mod
from tests.functional.libvirt import test_interrupts

RUNNING = libvirt.VIR_DOMAIN_RUNNING
_COUNTER = itertools.count(1)
#: Seconds the monitor may take past a deadline before its action is made.
LATE = 1.5
#: role -> (dirty MiB, label set in the domain XML (else set live))
GUESTS = {'abort': (4, True), 'postcopy': (4, False),
          'conv1': (1, True), 'conv2': (1, False)}
#: role -> (policy rule index, timeout s, action in the summary and event)
EXPECTED = {'abort': (1, 3, 'abort'), 'postcopy': (2, 5, 'postcopy'),
            'conv1': (0, 60, None), 'conv2': (0, 60, None)}
POLICY = {'rules': [
    {'name': 'converging', 'match': {'labels': {'kind': 'converging'}},
     'policy': {'completion_timeout': 60, 'timeout_action': 'abort'}},
    {'name': 'stuck-abort', 'match': {'labels': {'kind': 'stuck-abort'}},
     'policy': {'completion_timeout': 3, 'timeout_action': 'abort',
                'bandwidth_mib': pair_mod.STUCK_BANDWIDTH, 'priority': 10}},
    {'name': 'stuck-postcopy', 'match': {'labels': {'kind': 'stuck-postcopy'}},
     'policy': {'completion_timeout': 5, 'timeout_action': 'force_complete',
                'force_complete_mode': 'postcopy',
                'bandwidth_mib': pair_mod.STUCK_BANDWIDTH, 'priority': 10}},
]}
KIND = {'abort': 'stuck-abort', 'postcopy': 'stuck-postcopy',
        'conv1': 'converging', 'conv2': 'converging'}


def _labels_xml(labels: dict[str, str], prefix: str = '') -> str:
    """The ``labels`` element the driver reads (``prefix``: 'lmcaps:')."""
    items = ''.join(f'<{prefix}label key="{k}">{v}</{prefix}label>'
                    for k, v in labels.items())
    ns = f' xmlns:lmcaps="{lmcaps_libvirt.LABELS_NS}"' if prefix else ''
    return f'<{prefix}labels{ns}>{items}</{prefix}labels>'


class DrainTest(test_interrupts._CommandBase):

    def boot(self, name: str, dirty_mib: int, labels: dict[str, str],
             in_xml: bool) -> str:
        """Boot a guest on the source, labelled in its XML or live."""
        self.pair.define_guest(
            name, dirty_mib=dirty_mib,
            metadata=_labels_xml(labels, 'lmcaps:') if in_xml else '')
        self.addCleanup(self._destroy, self.pair, name)
        if not in_xml:
            dom = self.pair.conn('src').lookupByName(name)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                            _labels_xml(labels), 'lmcaps',
                            lmcaps_libvirt.LABELS_NS,
                            libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return name

    def drain(self, conf_file: str, *extra: str) -> tuple[int, dict, str]:
        proc = self.spawn(
            conf_file, 'drain', '--dest', self.pair.dst_uri,
            '--migrate-uri', self.pair.dst_migrate_uri,
            '--name', f'{self.prefix}-*', '--label', f'drain={self.token}',
            '--policy-file', self.policy_file, '--max-parallel', '2',
            '-f', 'json', *extra)
        out, err = proc.communicate(timeout=150)
        try:
            data = json.loads(out)
        except ValueError:
            self.fail(f'no JSON (exit {proc.returncode}): {out!r} {err}')
        return proc.returncode, data, err

    def test_each_guest_its_own_policy_on_real_daemons(self):
        self.token = f'{os.getpid()}-{next(_COUNTER)}'
        self.prefix = f'drain-{self.token}'
        names = {role: self.boot(f'{self.prefix}-{role}', dirty,
                                 {'drain': self.token, 'kind': KIND[role]},
                                 in_xml)
                 for role, (dirty, in_xml) in GUESTS.items()}
        # matches the name glob, not the label: never touched
        decoy = self.boot(f'{self.prefix}-decoy', 1,
                          {'drain': 'other', 'kind': 'converging'}, True)
        conf_file = self.conf_file(permit_post_copy='True')
        self.policy_file = os.path.join(self.state, 'policy.yaml')
        with open(self.policy_file, 'w') as f:
            yaml.safe_dump(POLICY, f)
        store = self.store()

        # -- the plan: every guest, its policy and sources; nothing starts
        code, plan, err = self.drain(conf_file, '--dry-run')
        self.assertEqual(0, code, err)
        self.assertTrue(plan['dry_run'])
        order = [names[r] for r in ('abort', 'postcopy', 'conv1', 'conv2')]
        self.assertEqual(order, [g['guest'] for g in plan['guests']])
        for role, name in names.items():
            [g] = [g for g in plan['guests'] if g['guest'] == name]
            rule, timeout, _ = EXPECTED[role]
            source = f"policy rule {rule} ({POLICY['rules'][rule]['name']})"
            self.assertEqual(('planned', order.index(name), 128),
                             (g['outcome'], g['order'], g['ram_mib']))
            self.assertEqual(self.uuid(name), g['uuid'])
            self.assertEqual({'value': timeout, 'source': source},
                             g['policy']['completion_timeout'])
            action = POLICY['rules'][rule]['policy']['timeout_action']
            self.assertEqual({'value': action, 'source': source},
                             g['policy']['timeout_action'])
            self.assertEqual('source (running)', g['guest_on'])
        for name in [*names.values(), decoy]:
            dom = self.pair.conn('src').lookupByName(name)
            self.assertEqual(libvirt.VIR_DOMAIN_JOB_NONE,
                             dom.jobStats()['type'], name)
            self.assertEqual('src', self.pair.where(name))
            self.assertEqual([], self.named(store, name,
                                            events.TIMEOUT_ACTION))
        dry = {e.request_id for n in names.values()
               for e in self.named(store, n, events.PRECHECK)}
        self.assertEqual({f"{plan['drain_id']}.{n}" for n in range(4)}, dry)

        # -- the drain
        code, result, err = self.drain(conf_file)
        # README: 1 when refused, failed, aborted or not started guests
        # remain; the aborted one stays on the source
        self.assertEqual(1, code, err)
        self.assertEqual(1, result['exit_code'])
        self.assertEqual({'completed': 3, 'aborted': 1}, result['counts'])
        self.assertIsNone(result['interrupted'])
        self.assertEqual(order, [g['guest'] for g in result['guests']])
        by_name = {g['guest']: g for g in result['guests']}
        for role, name in names.items():
            g = by_name[name]
            _, timeout, action = EXPECTED[role]
            fired = self.named(store, name, events.TIMEOUT_ACTION)
            outcome = [e for e in self.named(store, name, events.OUTCOME)
                       if e.request_id == g['request_id']]
            self.assertEqual(1, len(outcome), outcome)
            self.assertEqual(self.pair.dst_uri, g['destination'])
            self.assertEqual(1, g['attempts'])
            self.assertEqual(action, g['action'], g)
            self.assertIsNone(g['action_error'], g)
            if role == 'abort':
                self.assertEqual('aborted', g['outcome'], g)
                self.assertEqual('source (running)', g['guest_on'])
                self.assertEqual('src', self.pair.where(name))
                self.assertEqual(RUNNING, self.pair.states(name)['src'][0])
                self.assertIsNone(self.pair.states(name)['dst'])
            else:
                self.assertEqual('completed', g['outcome'], g)
                self.assertEqual('destination (running)', g['guest_on'])
                self.assertEqual('dst', self.pair.where(name))
                self.assertEqual(RUNNING, self.pair.states(name)['dst'][0])
                self.assertIsNone(self.pair.states(name)['src'])
                self.assertEqual(events.SUCCESS, outcome[0].result)
            if action is None:
                # converged: untouched
                self.assertEqual([], fired, name)
                self.assertEqual([], g['timeout_attempts'])
                self.assertLess(g['elapsed'], timeout)
                continue
            # its own action at its own deadline, once, effective
            self.assertEqual(1, len(fired), fired)
            self.assertEqual(1, len(g['timeout_attempts']), g)
            self.assertEqual(events.SUCCESS, fired[0].result)
            self.assertEqual(g['request_id'], fired[0].request_id)
            detail = dict(part.split(': ', 1) for part in
                          (fired[0].details or '').split('; ')
                          if ': ' in part)
            self.assertEqual((action, 'effective', f'{timeout} s'),
                             (detail['action'], detail['result'],
                              detail['completion_timeout']), detail)
            elapsed = float(detail['elapsed'].split()[0])
            self.assertGreaterEqual(elapsed, timeout, detail)
            self.assertLess(elapsed, timeout + LATE, detail)
            self.assertIn('completion_timeout=policy rule', detail['from'])
        # at most --max-parallel at once; the two stuck ones together
        spans = []
        for g in result['guests']:
            begin = datetime.datetime.fromisoformat(
                g['started_at']).timestamp()
            spans.append((begin, begin + g['elapsed'], g['guest']))
        running_at = [sum(1 for b, e, _ in spans if b <= t < e - 0.05)
                      for t, _, _ in spans]
        self.assertEqual(2, max(running_at), spans)
        first, second = sorted(spans)[:2]
        self.assertEqual({names['abort'], names['postcopy']},
                         {first[2], second[2]})
        # the drain's own events match the summary
        own = store.list_events(drain.drain_key(result['drain_id']))
        started = [json.loads(e.details) for e in own
                   if e.event == drain.START]
        self.assertEqual(sorted(names.values()),
                         sorted(s['guest'] for s in started))
        ended = {d['guest']: d for d in (json.loads(e.details) for e in own
                                         if e.event == drain.GUEST)}
        self.assertEqual({n: by_name[n]['outcome'] for n in names.values()},
                         {n: d['outcome'] for n, d in ended.items()})
        self.assertEqual({n: by_name[n]['action'] for n in names.values()},
                         {n: d['action'] for n, d in ended.items()})
        self.assertEqual(1, sum(e.event == drain.END for e in own))
        # the decoy was never selected
        self.assertNotIn(decoy, by_name)
        self.assertEqual('src', self.pair.where(decoy))
        self.assertEqual([], self.named(store, decoy, events.PRECHECK))

    def test_guests_already_migrating_are_refused_on_both_hosts(self):
        """A domain migrating out of the source and the same domain
        arriving on the destination: each host's drain plan refuses it,
        saying why, and starts nothing."""
        conf = pair_mod.make_conf(self.pair,
                                  self.useFixture(fixtures.TempDir()).path)
        self.driver = drivers.load('libvirt', conf)
        self.addCleanup(self.driver.close)
        token = f'{os.getpid()}-{next(_COUNTER)}'
        name = self.boot(f'drain-{token}-busy', 4, {'drain': token}, True)
        migration = self.driver.start_migration(
            pair_mod.spec(self.pair, name))
        self.addCleanup(self._abort, migration)
        self.when_sending(migration)
        plans = {}
        for side, dest in (('src', self.pair.dst_uri),
                           ('dst', self.pair.src_uri)):
            conf_file = self.conf_file()
            with open(conf_file, 'w') as f:
                f.write(f'[lmcaps]\nstate_path = {self.state}\n'
                        f'driver = libvirt\n[lmcaps_libvirt]\n'
                        f'connection_uri = {self.pair.uri(side)}\n')
            proc = self.spawn(conf_file, 'drain', '--dest', dest,
                              '--name', name, '--dry-run', '-f', 'json')
            out, err = proc.communicate(timeout=60)
            self.assertEqual(0, proc.returncode, err)
            [plans[side]] = json.loads(out)['guests']
            [pre] = self.named(self.store(), name, events.PRECHECK)
            self.assertEqual(events.ERROR, pre.result)
        self.assertEqual('refused', plans['src']['outcome'])
        self.assertIn('a job is already running', plans['src']['refused'])
        self.assertEqual('refused', plans['dst']['outcome'])
        self.assertIn('in progress (incoming)', plans['dst']['refused'])
        # the one migration still runs, untouched
        self.assertEqual(base.Phase.PRECOPY,
                         self.driver.get_progress(migration).phase)

    def _abort(self, migration: base.Migration) -> None:
        if not self.driver.get_progress(migration).phase.terminal:
            self.driver.abort(migration)
        self.assertTrue(self.driver.wait(migration, 60).phase.terminal)
