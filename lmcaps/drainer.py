"""Running a drain plan: at most N migrations at once, under one monitor.

Each migration is started with :func:`lmcaps.migrate.start` and watched by
one :class:`~lmcaps.monitor.TimeoutMonitor` under its own effective policy
(its own deadline and action); the monitor tells the drainer when one
ended (``on_done``), so the next guest starts at once.  A failed migration
is tried again up to ``retries`` times, never one seen in post-copy.
SIGINT / SIGTERM (:class:`lmcaps.migrate.Interrupted`) stop new starts and
abort the running migrations through the monitor, as recorded actions,
unless in post-copy (left running, ``continues``) or ``finish_running``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg

from lmcaps import drain as lmcaps_drain
from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps import migrate as lmcaps_migrate
from lmcaps import monitor as lmcaps_monitor
from lmcaps.drivers import base

LOG = logging.getLogger(__name__)

#: Seconds between two display updates when nothing ends.
REFRESH = 0.25

Item = lmcaps_drain.Item


@dataclasses.dataclass(eq=False)
class Running:
    """One running migration of the drain."""

    item: Item
    migration: base.Migration
    watch: lmcaps_monitor.Watch
    dest: str
    request_id: str
    done_at: float | None = None    # when the drainer saw it end


@dataclasses.dataclass
class Result:
    """How a drain went.

    :param elapsed: seconds from the first start to the last end.
    :param start_latency: seconds from a migration's end (the monitor's
        outcome) to the start of the next one, for each start that
        waited for a free slot.
    """

    drain_id: str
    items: list[Item]
    elapsed: float
    interrupted: str | None
    start_latency: list[float]

    @property
    def exit_code(self) -> int:
        """0 when every selected guest was migrated, else 1."""
        return 0 if all(i.status == 'completed' for i in self.items) else 1

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(i.status for i in self.items))

    def as_dict(self) -> dict[str, Any]:
        return {'drain_id': self.drain_id, 'elapsed': round(self.elapsed, 3),
                'interrupted': self.interrupted, 'counts': self.counts(),
                'exit_code': self.exit_code,
                'guests': [i.as_dict() for i in self.items]}


class Drainer:
    """Runs the accepted items of a plan (see the module docstring).

    :param items: every item of the plan (refused ones are reported only),
        accepted ones in drain order.
    :param on_change: called on the drainer's thread after every change
        and about every REFRESH seconds (a display).
    :param on_line: one line per start, end and retry (plain log).
    """

    def __init__(self, conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
                 store: lmcaps_events.EventStore, items: Sequence[Item],
                 options: lmcaps_drain.Options, drain_id: str, *,
                 on_change: Callable[[Drainer], None] | None = None,
                 on_line: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conf = conf
        self.driver = driver
        self.store = store
        self.items = list(items)
        self.options = options
        self.drain_id = drain_id
        self.on_change = on_change
        self.on_line = on_line or (lambda text: LOG.info('%s', text))
        self.clock = clock
        self.waiting = collections.deque(
            i for i in self.items if i.status == 'waiting')
        self.running: dict[str, Running] = {}
        self._ending: list[Running] = []     # ended, outcome not read yet
        self._live = False                   # the monitor runs
        self.load = collections.Counter({d: 0 for d in options.dests})
        self.wake = threading.Event()
        self.stopping: str | None = None
        self.settle_until: float | None = None
        self.started = self.clock()
        self.last_end: float | None = None
        self._freed: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.start_latency: list[float] = []
        self.mon = lmcaps_monitor.TimeoutMonitor.from_conf(conf, store)

    # -- the loop ---------------------------------------------------------

    def adopt(self, item: Item, migration: base.Migration, dest: str,
              request_id: str) -> None:
        """Follow a migration started earlier (``--resume``); monitor on."""
        if item in self.waiting:
            self.waiting.remove(item)
        self._watch(item, migration, dest, request_id)

    def run(self, before: Callable[[Drainer], None] | None = None) -> Result:
        """Run until every item ended (or the drain was stopped).

        :param before: called once the monitor runs, before the first
            start (``--resume`` adopts its running migrations there).
        """
        with self.mon:
            self._live = True
            self.started = self.clock()
            if before is not None:
                before(self)
            while True:
                try:
                    if not self._step():
                        break
                except (KeyboardInterrupt, lmcaps_migrate.Interrupted) as exc:
                    self.interrupt(getattr(exc, 'signal_name', 'SIGINT'))
            self._live = False
        for item in self.waiting:
            item.status, item.interrupted = 'not started', self.stopping
            self._record_end(item)
        self.waiting.clear()
        end = self.last_end if self.last_end is not None else self.clock()
        result = Result(self.drain_id, self.items, end - self.started,
                        self.stopping, list(self.start_latency))
        lmcaps_drain.record(self.store, self.conf, self.drain_id,
                            lmcaps_drain.END, {
                                'counts': result.counts(),
                                'interrupted': self.stopping},
                            ok=result.exit_code == 0)
        if self.on_change is not None:
            self.on_change(self)
        return result

    def _step(self) -> bool:
        self._start_ready()
        if self.on_change is not None:
            self.on_change(self)
        if not self.running and not self._ending:
            return False
        if self.settle_until is not None and self.clock() > self.settle_until:
            for run in list(self.running.values()):
                self._left_running(run, 'the abort did not take effect within '
                                   f'{lmcaps_migrate.INTERRUPT_SETTLE:g} s')
            return False
        self.wake.wait(0.005 if self._ending else REFRESH)
        self.wake.clear()
        self._collect()
        return True

    def _start_ready(self) -> None:
        while (self.waiting and not self.stopping and
               len(self.running) < self.options.max_parallel):
            dest = self._pick_dest()
            if dest is None:
                return
            self._start(self.waiting.popleft(), dest)

    def _pick_dest(self) -> str | None:
        """The least loaded destination with room (first on a tie)."""
        limit = self.options.per_dest
        free = [d for d in self.options.dests
                if limit is None or self.load[d] < limit]
        return min(free, key=lambda d: self.load[d]) if free else None

    def _start(self, item: Item, dest: str) -> None:
        assert item.policy is not None
        request_id = (item.request_id if item.attempts == 0 else
                      f'{item.request_id}.r{item.attempts}')
        item.attempts += 1
        item.status, item.destination = 'running', dest
        item.started_at = self.clock()
        spec = base.MigrationSpec(
            instance=item.name, destination=base.Destination(dest, dest),
            bandwidth_mib=item.bandwidth_mib[0],
            options=self.options.spec_options(dest))
        try:
            migration = lmcaps_migrate.start(
                self.conf, self.driver, spec, item.policy, self.store,
                request_id, item.instance_uuid)
        except exception.LmcapsException as exc:
            item.error = f'did not start: {exc.message}'
            item.location = lmcaps_migrate._observed_before_start(
                self.driver, spec)
            item.ended_at = self.clock()
            self._ended(item, 'failed', retry=True)
            return
        self._note_start()
        self._watch(item, migration, dest, request_id)
        # the count is of slots: an ended migration's slot is freed before
        # its outcome line (which waits for its events) is printed
        self.on_line(f'{item.name}: started to {dest} (attempt '
                     f'{item.attempts}, request {request_id}; '
                     f'{len(self.running)} of at most '
                     f'{self.options.max_parallel} running)')

    def _watch(self, item: Item, migration: base.Migration, dest: str,
               request_id: str) -> None:
        assert item.policy is not None
        item.status, item.destination = 'running', dest
        watch = self.mon.watch(self.driver, migration, item.policy,
                               instance_uuid=item.instance_uuid,
                               request_id=request_id, persist=True,
                               on_done=self._done)
        self.running[migration.id] = Running(item, migration, watch, dest,
                                             request_id)
        self.load[dest] += 1
        lmcaps_drain.record(self.store, self.conf, self.drain_id,
                            lmcaps_drain.START, {
                                'guest': item.name, 'request_id': request_id,
                                'destination': dest,
                                'reference': migration.reference},
                            queue=self.mon.queue)

    def _done(self) -> None:
        """A watched migration ended (called on a monitor thread)."""
        with self._lock:
            self._freed.append(self.clock())
        self.wake.set()

    def _note_start(self) -> None:
        with self._lock:
            freed = self._freed.popleft() if self._freed else None
        if freed is not None:
            self.start_latency.append(self.clock() - freed)

    def _collect(self) -> None:
        """Free the slots of ended migrations, start the next guests, then
        read each outcome (once its events are stored)."""
        for key, run in list(self.running.items()):
            if run.watch.done:
                del self.running[key]
                self.load[run.dest] -= 1
                run.done_at = self.clock()
                self._ending.append(run)
        self._start_ready()
        for run in list(self._ending):
            outcome = run.watch.wait(0.0)
            if outcome is None:
                continue            # its events are not stored yet
            self._ending.remove(run)
            item = run.item
            item.ended_at = self.last_end = run.done_at
            assert item.policy is not None
            summary = lmcaps_migrate.summarize(
                item.name, item.instance_uuid, run.request_id, run.migration,
                item.policy, outcome)
            item.summary, item.location = summary, summary.guest_on
            item.error = summary.message or None
            if summary.outcome == 'aborted':
                item.interrupted = run.watch.interrupted
            self.on_line(summary.line())
            if not outcome.ended:
                self._ended(item, 'continues')
            else:
                self._ended(item, summary.outcome,
                            retry=not run.watch.seen_postcopy)

    def _ended(self, item: Item, status: str, retry: bool = False) -> None:
        if (status == 'failed' and retry and not self.stopping and
                item.attempts <= self.options.retries):
            item.status = 'waiting'
            self.waiting.appendleft(item)
            self.on_line(f'{item.name}: failed; trying again (attempt '
                         f'{item.attempts + 1} of '
                         f'{self.options.retries + 1})')
            return
        item.status = status
        self._record_end(item)

    def _record_end(self, item: Item) -> None:
        data = {k: v for k, v in item.as_dict().items()
                if k in ('guest', 'outcome', 'attempts', 'destination',
                         'guest_on', 'action', 'error', 'request_id',
                         'interrupted')}
        lmcaps_drain.record(self.store, self.conf, self.drain_id,
                            lmcaps_drain.GUEST, data,
                            ok=item.status == 'completed',
                            queue=self.mon.queue if self._live else None)

    def _left_running(self, run: Running, why: str) -> None:
        """Stop waiting for ``run``: it goes on without this process."""
        self.running.pop(run.migration.id, None)
        self.load[run.dest] -= 1
        run.item.status = 'continues'
        run.item.error = why
        self.on_line(f'{run.item.name}: {why}; the migration goes on; '
                     '"lmcaps watch" records its end')

    # -- interruption -----------------------------------------------------

    def interrupt(self, why: str) -> None:
        """Stop starting; abort running migrations unless in post-copy."""
        if self.stopping:
            LOG.warning('interrupted again (%s): already stopping', why)
            return
        self.stopping = why
        waiting = len(self.waiting)
        if self.options.finish_running:
            self.on_line(f'interrupted by {why}: {waiting} not started; '
                         f'waiting for {len(self.running)} running')
            return
        self.on_line(f'interrupted by {why}: {waiting} not started; '
                     f'aborting {len(self.running)} running')
        self.settle_until = self.clock() + lmcaps_migrate.INTERRUPT_SETTLE
        for run in list(self.running.values()):
            refused = self.mon.interrupt(run.watch, why)
            if refused is not None:
                self._left_running(run, f'interrupted ({why}) {refused}')
