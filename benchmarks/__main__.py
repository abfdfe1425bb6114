"""``python -m benchmarks``: run every ``benchmarks/bench_*.py`` in turn.

Each module's ``main([])`` prints its figures; the exit status is 1 when any
benchmark missed a target.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                   if m.name.startswith('bench_'))
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
