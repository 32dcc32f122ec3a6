"""Mutation score per module after `mutmut run`, for `make mutation` (docs/testing.md).

    python scripts/mutation_report.py 'service.preprocessing.*' 'service.v2.x__parse__mutmut_*' ...

Reads mutmut's own verdicts (`mutmut results --all true`), keeps the mutants the globs name
(the scope `make mutation` ran) and prints, per module, how many were killed, then every survivor.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from collections import Counter, defaultdict

# mutmut names a mutant <module>.x_<function>__mutmut_<n> (or .xǁ<Class>ǁ<method>__mutmut_<n>).
_MODULE = re.compile(r"^(?P<module>.+?)\.x[_ǁ]")
KILLED = {"killed", "timeout", "caught by type check"}


def verdicts(scope: list[str]) -> dict[str, str]:
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and any(fnmatch.fnmatch(name, pattern) for pattern in scope):
            found[name] = status
    return found


def main(scope: list[str]) -> int:
    found = verdicts(scope)
    if not found:
        print("no mutant results in scope; run `make mutation` first", file=sys.stderr)
        return 1
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in found.items():
        match = _MODULE.match(name)
        by_module[match.group("module") if match else name][status] += 1
    print(f"{'module':<24} {'mutants':>8} {'killed':>8} {'score':>7}  other verdicts")
    for module, counts in sorted(by_module.items()):
        total, killed = sum(counts.values()), sum(counts[s] for s in KILLED)
        other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in KILLED)
        print(f"{module:<24} {total:>8} {killed:>8} {killed / total:>7.1%}  {other}")
    total, killed = len(found), sum(status in KILLED for status in found.values())
    print(f"{'all':<24} {total:>8} {killed:>8} {killed / total:>7.1%}")
    survivors = sorted(name for name, status in found.items() if status not in KILLED)
    if survivors:
        print("\nnot killed (see each with `mutmut show NAME`; docs/testing.md says why each is harmless):")
        for name in survivors:
            print(f"  {found[name]:<12} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
