"""What every conformance test stands on: conf, driver, backend, observers."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import testtools
from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import checks
from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps import events
from lmcaps import exception
from lmcaps import monitor as lmcaps_monitor
from lmcaps import policy as lmcaps_policy
from lmcaps import precheck as lmcaps_precheck
from lmcaps.conformance import backend as backend_mod
from lmcaps.drivers import base

Op = caps.Operation
Phase = base.Phase
BackendFactory = Callable[[], backend_mod.Backend]

#: [lmcaps] values the kit needs whatever the config file says: the kit
#: judges the driver, not the operator's bounds.
KIT_OVERRIDES: Mapping[str, Any] = {
    'permit_post_copy': True,
    'min_completion_timeout': 0,
    'max_completion_timeout': 0,
    'allowed_timeout_actions': list(lmcaps_conf.TIMEOUT_ACTIONS),
    'completion_timeout_per_gib': 0,
    'timeout_action': 'abort',
    'force_complete_mode': 'auto',
}

#: The request fields that make the timeout action need each operation.
ACTION_BODY: Mapping[Op, Mapping[str, str]] = {
    Op.ABORT: {'timeout_action': 'abort'},
    Op.FORCE_COMPLETE_POSTCOPY: {'timeout_action': 'force_complete',
                                 'force_complete_mode': 'postcopy'},
    Op.FORCE_COMPLETE_PAUSE: {'timeout_action': 'force_complete',
                              'force_complete_mode': 'pause'},
}

Seen = list[tuple[Phase, backend_mod.Location]]


def terminal(progress: base.Progress, _where: object) -> bool:
    return progress.phase.terminal


class Harness(testtools.TestCase):
    """Builds, per test, a private conf, the backend and the driver."""

    #: Entry-point name of the driver under test.
    driver: str = ''
    #: A Backend subclass (or any callable returning a Backend).
    backend: BackendFactory | None = None
    #: Configuration files read into the kit's private conf.
    config_files: Sequence[str] = ()

    def setUp(self) -> None:
        super().setUp()
        if vars(type(self)).get('abstract_kit'):
            self.skipTest('the kit itself: subclass it and set driver and '
                          'backend')
        factory = self.__dict__.get('backend') or getattr(
            type(self), 'backend', None)
        if not self.driver or factory is None:
            raise self.failureException(
                f'{type(self).__name__} must set driver (the entry point '
                f'name) and backend (a Backend subclass)')
        self.conf = self._make_conf()
        self.store = events.MemoryEventStore()
        self._ids = itertools.count(1)
        self.env = self.useFixture(factory())
        if not isinstance(self.env, backend_mod.Backend):
            self.fail(f'{factory!r} did not make a conformance Backend')
        self.driver_class = drivers.driver_class(self.driver)
        self.subject = self.driver_class(self.conf)
        self.env.configure(self.conf, self.subject.group)
        self.subject.connect()
        self.addCleanup(self.subject.close)
        self.declaration = self.subject.host_declaration()

    def _make_conf(self) -> cfg.ConfigOpts:
        conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(conf)
        conf(args=[], project='lmcaps',
             default_config_files=list(self.config_files),
             default_config_dirs=[])
        for name, value in KIT_OVERRIDES.items():
            conf.set_override(name, value, group=lmcaps_conf.GROUP)
        return conf

    def support(self, op: Op) -> caps.Support:
        return self.declaration.support(op)

    def uid(self, prefix: str) -> str:
        return f'{prefix}-{next(self._ids)}'

    @contextlib.contextmanager
    def overrides(self, config: Mapping[str, Mapping[str, Any]]
                  ) -> Iterator[None]:
        """Override options for a block, restoring the previous values."""
        saved = []
        for group, values in config.items():
            for name, value in values.items():
                saved.append((group, name, self.conf[group][name]))
                self.conf.set_override(name, value, group=group)
        try:
            yield
        finally:
            for group, name, old in reversed(saved):
                self.conf.set_override(name, old, group=group)

    # -- migrations -------------------------------------------------------

    def start(self, scenario: backend_mod.Scenario, *,
              prepare_for: frozenset[Op] = frozenset(),
              fault: backend_mod.Fault | None = None,
              settle: bool = True) -> base.Migration:
        """Start a migration from the backend; STUCK ones must keep running."""
        migration = self.env.start(self.subject, scenario,
                                   prepare_for=frozenset(prepare_for),
                                   fault=fault)
        if not isinstance(migration, base.Migration):
            self.fail(f'backend contract: start() returned {migration!r}')
        self.addCleanup(self._stop, migration)
        if settle:
            self.follow(migration, lambda p, _w: p.phase is not
                        Phase.PREPARING, 'the start of the migration')
        if settle and scenario is backend_mod.Scenario.STUCK:
            time.sleep(self.env.stuck_check)
            phase = self.progress(migration).phase
            if phase.terminal:
                self.fail(f'backend contract: the {scenario.value} migration '
                          f'ended on its own ({phase.value}); it must run '
                          f'until the test acts on it')
        return migration

    def _stop(self, migration: base.Migration) -> None:
        """Best effort: abort what a test left running (the backend too)."""
        try:
            if (not self.subject.get_progress(migration).phase.terminal and
                    self.support(Op.ABORT).usable):
                self.subject.abort(migration)
        except Exception:  # the backend's cleanUp stops it for sure
            pass

    def progress(self, migration: base.Migration) -> base.Progress:
        try:
            return self.subject.get_progress(migration)
        except NotImplementedError:
            raise self.failureException(
                'get_progress raised NotImplementedError') from None

    def located(self, migration: base.Migration,
                expected: tuple[base.GuestHost, base.RunState] | None,
                what: str) -> base.GuestLocation:
        """The backend's truth (equal to ``expected`` if given); the
        driver's observed location must say the same."""
        truth = self.env.locate(migration)
        if not isinstance(truth, base.GuestLocation):
            self.fail(f'backend contract: locate() returned {truth!r}, not '
                      f'a GuestLocation')
        if expected is not None:
            self.assertEqual(expected, truth.pair,
                             f'where the guest is {what} (the backend)')
        reported = self.subject.guest_location(migration)
        self.assertEqual(truth.pair, reported.pair,
                         f'the driver misreports where the guest is {what}: '
                         f'it says {reported}, the backend has {truth}')
        return truth

    def follow(self, migration: base.Migration,
               until: Callable[[base.Progress, backend_mod.Location], bool],
               what: str, timeout: float | None = None
               ) -> tuple[base.Progress, Seen]:
        """Observe until ``until(progress, location)``; returns all seen."""
        timeout = self.env.settle_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        seen: Seen = []
        while True:
            progress = self.progress(migration)
            where = self.env.locate(migration)
            seen.append((progress.phase, where))
            if until(progress, where):
                return progress, seen
            if time.monotonic() >= deadline:
                self.fail(f'{what}: not reached within {timeout:g} s; last '
                          f'phase {progress.phase.value}, guest {where}')
            time.sleep(self.env.poll_interval)

    def wait_for_phase(self, migration: base.Migration,
                       phase: Phase) -> base.Progress:
        """Wait for ``phase`` (given to UnmetCondition.prepare)."""
        progress, _seen = self.follow(
            migration, lambda p, _w: p.phase is phase or p.phase.terminal,
            f'phase {phase.value}')
        if progress.phase is not phase:
            self.fail(f'expected phase {phase.value}, the migration ended '
                      f'{progress.phase.value}')
        return progress

    def invoke(self, op: Op, migration: base.Migration) -> None:
        """Carry out ``op`` on a migration through the public driver API."""
        if op is Op.ABORT:
            self.subject.abort(migration)
        elif op is Op.FORCE_COMPLETE_POSTCOPY:
            self.subject.force_complete(migration,
                                        caps.ForceCompleteMode.POSTCOPY)
        elif op is Op.FORCE_COMPLETE_PAUSE:
            self.subject.force_complete(migration,
                                        caps.ForceCompleteMode.PAUSE)
        else:
            self.subject.require(op)

    def call_declared(self, op: Op, migration: base.Migration) -> None:
        """Invoke an operation declared usable; any refusal is a failure."""
        level = self.support(op).value
        try:
            self.invoke(op, migration)
        except NotImplementedError:
            self.fail(f'{op.value} is declared {level} but raised '
                      f'NotImplementedError')
        except (exception.UnsupportedOperation,
                exception.OperationRefused) as exc:
            self.fail(f'{op.value} is declared {level} but was refused on '
                      f'a running pre-copy migration: {exc}')

    def expect_unsupported(self, op: Op, what: str,
                           call: Callable[[], object]) -> None:
        """``call`` must raise lmcaps UnsupportedOperation, nothing else."""
        try:
            call()
        except exception.UnsupportedOperation:
            return
        except NotImplementedError:
            self.fail(f'{what} raised NotImplementedError; a driver raises '
                      f'lmcaps UnsupportedOperation for what it declares '
                      f'missing ({op.value})')
        except Exception as exc:
            self.fail(f'{what} raised {type(exc).__name__} ({exc}) instead '
                      f'of UnsupportedOperation ({op.value} is declared '
                      f'missing)')
        self.fail(f'{what} did not raise although {op.value} is declared '
                  f'missing')

    # -- pre-checks and the monitor ---------------------------------------

    def timeout_action(self) -> Op | None:
        """The action the timeout test fires: a complete one, else usable."""
        order = (Op.ABORT, Op.FORCE_COMPLETE_PAUSE, Op.FORCE_COMPLETE_POSTCOPY)
        for wanted in (caps.Support.COMPLETE, caps.Support.PARTIAL):
            for op in order:
                if self.support(op) is wanted:
                    return op
        return None

    def request_for(self, op: Op) -> tuple[dict, dict]:
        """A request that needs ``op``, and [lmcaps] overrides to go with it.

        Per-instance values are used when the driver supports them (or when
        they are the point); otherwise the same policy comes from config.
        """
        timeout = self.env.completion_timeout
        if op is Op.PER_INSTANCE_TIMEOUT:
            action = self.timeout_action()
            if action is None:
                return {'completion_timeout': 0}, {}
            return {'completion_timeout': timeout, **ACTION_BODY[action]}, {}
        if self.support(Op.PER_INSTANCE_TIMEOUT).usable:
            return {'completion_timeout': timeout, **ACTION_BODY[op]}, {}
        return {}, {'completion_timeout_per_gib': timeout, **ACTION_BODY[op]}

    def run_prechecks(self, instance: str, body: Mapping,
                      config: Mapping[str, Any] | None = None
                      ) -> tuple[lmcaps_policy.EffectivePolicy,
                                 checks.PreCheckReport]:
        """Run the enabled pre-checks as the source host would.

        :raises: MigrationPreCheckFailed (with an event recorded).
        """
        with self.overrides({lmcaps_conf.GROUP: dict(config or {})}):
            verdict = lmcaps_precheck.run(
                self.conf, self.store, f'req-{instance}', instance,
                lmcaps_precheck.request_layers(body),
                declaration=self.declaration, data_gib=2.0)
        return verdict.policy, verdict.report

    def events_of(self, instance: str, name: str) -> list[events.EventRecord]:
        return [e for e in self.store.list_events(instance) if e.event == name]

    def watched(self, mon: lmcaps_monitor.TimeoutMonitor,
                scenario: backend_mod.Scenario, body: Mapping, *,
                fault: backend_mod.Fault | None = None, prefix: str = 'timeout',
                prepare_for: frozenset[Op] | None = None,
                ) -> tuple[str, base.Migration, lmcaps_monitor.Watch]:
        """Pre-check ``body``, start a migration and watch it."""
        instance = self.uid(prefix)
        try:
            pol, _report = self.run_prechecks(instance, body)
        except exception.MigrationPreCheckFailed as exc:
            self.fail(f'the pre-checks refuse a per-instance timeout: {exc}')
        migration = self.start(
            scenario, fault=fault, settle=False,
            prepare_for=pol.prepare_for if prepare_for is None
            else prepare_for)
        watch = mon.watch(self.subject, migration, pol,
                          instance_uuid=instance,
                          request_id=f'req-{instance}')
        return instance, migration, watch

    def wait_outcome(self, watch: lmcaps_monitor.Watch, instance: str,
                     timeout: float) -> lmcaps_monitor.Outcome:
        """The monitor's outcome; fails at once if the action failed."""
        give_up = time.monotonic() + timeout + self.env.settle_timeout
        while (outcome := watch.wait(self.env.poll_interval)) is None:
            fired = self.events_of(instance, events.TIMEOUT_ACTION)
            if fired and fired[0].result == events.ERROR:
                self.fail(f'the timeout action failed: {fired[0].details}')
            if time.monotonic() > give_up:
                self.fail('the monitor did not see the migration end')
        return outcome

    def monitor(self) -> lmcaps_monitor.TimeoutMonitor:
        """A started TimeoutMonitor, stopped at cleanup."""
        mon = lmcaps_monitor.TimeoutMonitor(
            self.store, host='conformance',
            poll_interval=self.env.poll_interval, workers=2)
        mon.start()
        self.addCleanup(mon.stop)
        return mon

    def spy(self, names: Sequence[str]) -> list[tuple[str, float]]:
        """Record (name, monotonic time) of each call of these methods."""
        calls: list[tuple[str, float]] = []
        for name in names:
            real = getattr(self.subject, name)

            def spied(*args: Any, _real: Callable = real, _name: str = name,
                      **kwargs: Any) -> Any:
                calls.append((_name, time.monotonic()))
                return _real(*args, **kwargs)

            setattr(self.subject, name, spied)
            self.addCleanup(delattr, self.subject, name)
        return calls
