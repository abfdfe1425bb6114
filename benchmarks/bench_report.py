"""``lmcaps report`` wall time, and what it imports.

Runs the installed ``lmcaps`` command (``python -m lmcaps`` when the script
is not beside the interpreter) in fresh processes and prints the median wall
time, then checks with ``python -X importtime`` that no hypervisor client
library and no nova is imported.  Fails (exit status 1) when a target is
missed.  Run: ``python -m benchmarks.bench_report [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_MEDIAN_S = 0.5
#: Top-level modules that ``lmcaps report`` must never import.
FORBIDDEN = ('libvirt', 'libvirtmod', 'oslo_vmware', 'XenAPI', 'winrm',
             'pypowervm', 'nova')


def command(config: str) -> list[str]:
    """The ``lmcaps report`` command line to time."""
    script = os.path.join(os.path.dirname(sys.executable), 'lmcaps')
    base = [script] if os.access(script, os.X_OK) else [
        sys.executable, '-m', 'lmcaps']
    return base + ['--config-file', config, 'report']


def imported_modules(config: str) -> tuple[list[str], float]:
    """Modules ``report`` imports, and their total import time in ms."""
    proc = subprocess.run(
        [sys.executable, '-X', 'importtime', '-m', 'lmcaps.cmd.main',
         '--config-file', config, 'report'],
        capture_output=True, text=True, check=True)
    modules, total_us = [], 0
    for line in proc.stderr.splitlines():
        if not line.startswith('import time:') or 'self [us]' in line:
            continue
        fields = line.split('|')
        modules.append(fields[-1].strip())
        total_us += int(fields[0].split(':')[1])
    return modules, total_us / 1000


def forbidden(modules: list[str]) -> list[str]:
    return sorted(m for m in modules
                  if any(m == f or m.startswith(f + '.') for f in FORBIDDEN))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; 0 when the targets are met."""
    parser = argparse.ArgumentParser(prog='python -m benchmarks.bench_report',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='lmcaps-bench-') as directory:
        config = os.path.join(directory, 'lmcaps.conf')
        with open(config, 'w') as f:
            f.write(f'[lmcaps]\nstate_path = {directory}\n')
        cmd = command(config)
        subprocess.run(cmd, check=True, capture_output=True)  # warm caches
        times = []
        for _ in range(max(args.runs, 1)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        modules, import_ms = imported_modules(config)
    bad = forbidden(modules)
    median = statistics.median(times)
    ok = median <= TARGET_MEDIAN_S and not bad
    print('== lmcaps report ==')
    print(f"command      {' '.join(cmd[:1] + cmd[-1:])}")
    print(f'runs         {len(times)}')
    print(f'median       {median:.3f} s   (target <= {TARGET_MEDIAN_S} s)')
    print(f'min / max    {min(times):.3f} / {max(times):.3f} s')
    print(f'imports      {len(modules)} modules, {import_ms:.0f} ms')
    print(f"forbidden    {', '.join(bad) or 'none'} "
          f"(hypervisor clients, nova)")
    print('result       ' + ('PASS' if ok else 'FAIL'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
