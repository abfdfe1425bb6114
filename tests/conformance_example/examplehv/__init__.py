"""A stand-in for a hypervisor and its client library, simulated in-process.

A :class:`Cloud` holds hosts and guests; a migration job copies a guest's
RAM at a bandwidth while the guest dirties memory at its own rate, so it
never converges when the dirty rate reaches the bandwidth.  Drivers reach a
cloud with :func:`connect` and a ``sim://NAME`` URI, the way a real driver
opens a connection; nothing runs in the background.
"""

from __future__ import annotations

import dataclasses
import threading
import time

_CLOUDS: dict[str, Cloud] = {}
_LOCK = threading.Lock()


class Error(Exception):
    """What the simulated client raises, like a hypervisor fault."""


@dataclasses.dataclass
class Guest:
    name: str
    host: str
    ram_mib: float
    dirty_mib: float
    state: str = 'running'


@dataclasses.dataclass
class Job:
    id: int
    guest: Guest
    source: str
    destination: str
    bandwidth_mib: float
    started: float
    state: str = 'running'    # running | completed | cancelled | failed

    def refresh(self, now: float) -> None:
        """Complete the job once the copy caught up with the dirty pages."""
        rate = self.bandwidth_mib - self.guest.dirty_mib
        if self.state == 'running' and rate > 0 and \
                (now - self.started) * rate >= self.guest.ram_mib:
            self.state = 'completed'
            self.guest.host = self.destination

    def copied_mib(self, now: float) -> float:
        return (now - self.started) * self.bandwidth_mib


class Cloud:
    """Two or more hosts and their guests; registered under a name."""

    def __init__(self, name: str, bandwidth_mib: float = 1000.0) -> None:
        self.name = name
        self.bandwidth_mib = bandwidth_mib
        self.guests: dict[str, Guest] = {}
        self.jobs: dict[int, Job] = {}
        self.lock = threading.Lock()

    def create_guest(self, name: str, host: str, ram_mib: float,
                     dirty_mib: float) -> Guest:
        with self.lock:
            guest = self.guests[name] = Guest(name, host, ram_mib, dirty_mib)
            return guest

    def register(self) -> str:
        """Make the cloud reachable; returns its URI."""
        with _LOCK:
            _CLOUDS[self.name] = self
        return f'sim://{self.name}'

    def unregister(self) -> None:
        with _LOCK:
            _CLOUDS.pop(self.name, None)

    def fail_job(self, job_id: int) -> None:
        """The migration job fails (the guest stays where it is)."""
        with self.lock:
            self.jobs[job_id].state = 'failed'

    def pause_guest(self, name: str) -> None:
        """The guest's owner pauses it (it stops dirtying memory)."""
        with self.lock:
            guest = self.guests[name]
            guest.state, guest.dirty_mib = 'paused', 0.0


class Client:
    """A connection to one cloud: what a driver calls."""

    def __init__(self, cloud: Cloud) -> None:
        self._cloud = cloud

    def migrate(self, guest: str, destination: str,
                bandwidth_mib: float | None = None) -> int:
        cloud = self._cloud
        with cloud.lock:
            if guest not in cloud.guests:
                raise Error(f'no guest {guest}')
            vm = cloud.guests[guest]
            job = Job(len(cloud.jobs) + 1, vm, vm.host, destination,
                      bandwidth_mib or cloud.bandwidth_mib, time.monotonic())
            cloud.jobs[job.id] = job
            return job.id

    def job_info(self, job_id: int) -> dict:
        cloud = self._cloud
        with cloud.lock:
            job = cloud.jobs[job_id]
            now = time.monotonic()
            job.refresh(now)
            return {'state': job.state, 'total_mib': job.guest.ram_mib,
                    'copied_mib': job.copied_mib(now),
                    'dirty_mib': job.guest.dirty_mib}

    def guest_info(self, guest: str) -> dict:
        """Where a guest is (its host) and its state (running | paused)."""
        cloud = self._cloud
        with cloud.lock:
            for job in cloud.jobs.values():
                job.refresh(time.monotonic())
            if guest not in cloud.guests:
                raise Error(f'no guest {guest}')
            vm = cloud.guests[guest]
            return {'host': vm.host, 'state': vm.state}

    def cancel(self, job_id: int) -> None:
        cloud = self._cloud
        with cloud.lock:
            job = cloud.jobs[job_id]
            job.refresh(time.monotonic())
            if job.state != 'running':
                raise Error(f'job {job_id} is {job.state}')
            job.state = 'cancelled'


def connect(uri: str) -> Client:
    """Open a connection to ``sim://NAME``."""
    name = uri.removeprefix('sim://')
    with _LOCK:
        cloud = _CLOUDS.get(name)
    if cloud is None:
        raise Error(f'cannot connect to {uri}')
    return Client(cloud)
