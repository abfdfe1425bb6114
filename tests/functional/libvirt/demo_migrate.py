"""Prove the LibvirtPair harness: abort, post-copy and pause a live migration.

Run as ``python -m tests.functional.libvirt.demo_migrate`` from the repository
root or as ``python tests/functional/libvirt/demo_migrate.py``.  Exits non-zero
if any scenario does not end where expected or anything is left behind.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, Optional

import libvirt

if __package__:
    from . import env
else:  # plain script: this directory is sys.path[0]
    import env

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
         | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
         | libvirt.VIR_MIGRATE_POSTCOPY)
EXPECT = {"abort": "src", "postcopy": "dst", "suspend": "dst"}


class Migration(threading.Thread):
    """migrateToURI3 in a worker thread, on a connection of its own.

    Sharing one connection between the blocked migrate call and the thread
    that calls abortJob() hung or stalled 5 s in a third of runs (libvirt 9.0
    client), so the migration gets its own connection.
    """

    def __init__(self, pair: env.LibvirtPair, name: str, bandwidth: int) -> None:
        super().__init__(daemon=True)
        self.pair, self.name = pair, name
        self.params = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: bandwidth,
                       libvirt.VIR_MIGRATE_PARAM_URI: pair.dst_migrate_uri}
        self.error: Optional[libvirt.libvirtError] = None
        self.ended: Optional[float] = None

    def run(self) -> None:
        conn = self.pair.open("src")
        try:
            conn.lookupByName(self.name).migrateToURI3(
                self.pair.dst_uri, self.params, FLAGS)
        except libvirt.libvirtError as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            conn.close()


def wait_sending(dom: Any, timeout: float = 60.0) -> dict:
    """Wait until QEMU sends data (data_total > 0); return the job stats.

    Before that (P2P prepare phase) abortJob() returns 0 but acts only later.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = dom.jobStats()
        if stats.get("data_total", 0) > 0:
            return stats
        time.sleep(0.05)
    raise RuntimeError("migration did not start sending in %ss" % timeout)


def check(ok: bool, what: str) -> None:
    """Raise if a scenario's expectation does not hold (asserts vanish with -O)."""
    if not ok:
        raise RuntimeError(what)


def scenario(pair: env.LibvirtPair, action: str, dirty_mib: int,
             bandwidth: int, hold: float) -> dict[str, Any]:
    """Run one migration, act on it mid-flight and check where the guest ends."""
    t0 = time.monotonic()
    name = pair.define_guest("demo-" + action, dirty_mib=dirty_mib)
    t_boot = time.monotonic()
    dom = pair.conn("src").lookupByName(name)
    mig = Migration(pair, name, bandwidth)
    mig.start()
    stats = wait_sending(dom)
    t_send = time.monotonic()
    if hold:
        time.sleep(hold)
        stats = dom.jobStats()
        check(mig.is_alive(), "migration converged on its own")
    t_act = time.monotonic()
    if action == "abort":
        dom.abortJob()
    elif action == "postcopy":
        dom.migrateStartPostCopy(0)
    else:
        dom.suspend()
    mig.join(120)
    check(mig.ended is not None, "migration did not end within 120 s")
    code = mig.error.get_error_code() if mig.error else None
    expected = libvirt.VIR_ERR_OPERATION_ABORTED if action == "abort" else None
    check(code == expected, "%s: migrateToURI3 gave %s" % (action, mig.error))
    where, states = pair.where(name), pair.states(name)
    other = "dst" if where == "src" else "src"
    check(where == EXPECT[action] and states[other] is None
          and states[where] is not None
          and states[where][0] == libvirt.VIR_DOMAIN_RUNNING,  # type: ignore
          "%s: guest on %s, states %s" % (action, where, states))
    t_check = time.monotonic()
    pair.destroy_guest(name)
    return {"action": action, "boot": t_boot - t0, "to_data": t_send - t_boot,
            "act_to_end": mig.ended - t_act,  # type: ignore
            "destroy": time.monotonic() - t_check, "total": time.monotonic() - t0,
            "iteration": stats.get("memory_iteration"), "where": where}


def main(argv: Optional[list[str]] = None) -> int:
    """Start the pair, run the three scenarios, stop and check for leftovers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dirty-mib", type=int, default=8)
    ap.add_argument("--bandwidth", type=int, default=1, help="MiB/s")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="seconds to let pre-copy run before acting")
    ap.add_argument("--tcg", action="store_true", help="force TCG")
    args = ap.parse_args(argv)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # we report ourselves
    ok, reason = env.available()
    if not ok:
        print("cannot run here: " + reason, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    pair = env.LibvirtPair(kvm=False if args.tcg else None)
    try:
        pair.start()
        t_up = time.monotonic() - t0
        print("pair up+warm: %.2fs (domain type %s)" % (t_up, pair.domain_type))
        for action in ("abort", "postcopy", "suspend"):
            r = scenario(pair, action, args.dirty_mib, args.bandwidth, args.hold)
            print("%(action)-8s boot %(boot).2fs, to data_total>0 %(to_data).2fs, "
                  "act->end %(act_to_end).2fs, destroy %(destroy).2fs, "
                  "total %(total).2fs (iteration %(iteration)s, on %(where)s)" % r)
    finally:
        t1 = time.monotonic()
        pair.stop()
        print("stop: %.2fs" % (time.monotonic() - t1))
    left = pair.leftovers()
    print("total: %.2fs; leftovers: %s" % (time.monotonic() - t0, left or "none"))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
