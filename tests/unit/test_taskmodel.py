"""The shared migration-task engine of the protocol simulators."""

from __future__ import annotations

import math

import testtools

from lmcaps.conformance import taskmodel as tm

S = tm.TaskState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TaskModelTest(testtools.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.fired: list[tuple[str, str]] = []

    def task(self, **kwargs) -> tm.MigrationTask:
        kwargs.setdefault('duration', 10.0)
        return tm.MigrationTask(
            'task-1', clock=self.clock,
            on_success=lambda t: self.fired.append(('success', t.task_id)),
            on_cancelled=lambda t: self.fired.append(('cancelled', t.task_id)),
            on_error=lambda t: self.fired.append(('error', t.task_id)),
            **kwargs)

    def at(self, seconds: float) -> None:
        self.clock.now = 100.0 + seconds

    def test_queued_running_success_with_progress(self) -> None:
        task = self.task(queued=2.0)
        self.assertIs(S.QUEUED, task.state)
        self.at(2.0 + 2.5)
        self.assertIs(S.RUNNING, task.state)
        self.assertAlmostEqual(0.25, task.progress)
        self.assertEqual(25, task.percent)
        self.at(12.0)
        self.assertIs(S.SUCCESS, task.state)
        self.assertEqual(1.0, task.progress)
        self.assertEqual(112.0, task.finished_at)
        task.advance()
        self.assertEqual([('success', 'task-1')], self.fired)  # once

    def test_cancel_takes_effect_after_the_delay(self) -> None:
        task = self.task(cancel_delay=1.0)
        self.at(3.0)
        task.cancel()
        self.assertIs(S.CANCELLING, task.state)
        task.cancel()                      # one request, as vSphere says
        self.at(3.9)
        self.assertIs(S.CANCELLING, task.state)
        self.at(4.0)
        self.assertIs(S.CANCELLED, task.state)
        self.assertTrue(task.cancel_requested)
        self.assertEqual([('cancelled', 'task-1')], self.fired)
        err = self.assertRaises(tm.TaskFinished, task.cancel)
        self.assertIs(S.CANCELLED, err.state)

    def test_completes_while_the_cancel_is_in_flight(self) -> None:
        task = self.task(cancel_delay=5.0)
        self.at(8.0)
        task.cancel()
        self.at(10.0)
        self.assertIs(S.SUCCESS, task.state)
        self.assertEqual([('success', 'task-1')], self.fired)

    def test_not_cancellable_past_the_threshold(self) -> None:
        task = self.task(cancellable_until=0.5)
        self.at(4.0)
        self.assertTrue(task.cancellable)
        self.at(6.0)
        self.assertFalse(task.cancellable)
        self.assertRaises(tm.TaskNotCancellable, task.cancel)
        self.assertIs(S.RUNNING, task.state)

    def test_queued_cancel_is_immediate(self) -> None:
        task = self.task(queued=5.0, cancel_delay=3.0)
        task.cancel()
        self.assertIs(S.CANCELLED, task.state)

    def test_fail_now_and_fail_at(self) -> None:
        task = self.task()
        self.at(1.0)
        task.fail('link down')
        self.assertEqual((S.ERROR, 'link down'), (task.state, task.error))
        self.assertRaises(tm.TaskFinished, task.fail)
        later = self.task(fail_at=0.3)
        self.at(1.0 + 2.9)
        self.assertIs(S.RUNNING, later.state)
        self.at(1.0 + 3.1)
        self.assertIs(S.ERROR, later.state)

    def test_never_converging_task_stays_below_its_ceiling(self) -> None:
        task = self.task(duration=math.inf, stuck_at=0.9)
        self.at(30.0)
        self.assertIs(S.RUNNING, task.state)
        self.assertLess(task.progress, 0.9)
        self.assertGreater(task.progress, 0.8)

    def test_set_duration_lets_a_stuck_task_converge(self) -> None:
        task = self.task(duration=math.inf)
        self.at(10.0)
        task.set_duration(1.0)
        self.at(11.1)
        self.assertIs(S.SUCCESS, task.state)

    def test_bad_timings_refused(self) -> None:
        self.assertRaises(ValueError, tm.MigrationTask, 't', duration=0)
        self.assertRaises(ValueError, tm.MigrationTask, 't', duration=1,
                          queued=-1)
