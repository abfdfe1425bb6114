"""``python -m benchmarks [NAME ...]``: run ``benchmarks/bench_*.py`` in turn.

Every benchmark, or those named (``drain`` or ``bench_drain``).  Each
module's ``main([])`` prints its figures; the exit status is 1 when any
benchmark missed a target, 2 for an unknown name.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                   if m.name.startswith('bench_'))
    wanted = [a if a.startswith('bench_') else f'bench_{a}'
              for a in sys.argv[1:]]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)}; allowed: "
              f"{', '.join(n[len('bench_'):] for n in names)}",
              file=sys.stderr)
        return 2
    if wanted:
        names = wanted
    failed = []
    for name in names:
        module = importlib.import_module(f'benchmarks.{name}')
        if module.main([]) != 0:
            failed.append(name)
        print()
    if failed:
        print(f"missed a target: {', '.join(failed)}")
    print(f'benchmarks: {len(names) - len(failed)} passed, '
          f'{len(failed)} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
