"""Shared tally of the fuzz suite: generated inputs and their outcomes, by category.

``test_fuzz.py`` records one outcome per generated input; ``conftest.py`` prints the totals in the
pytest terminal summary ("fuzz: N generated inputs ...")."""

from __future__ import annotations

from collections import Counter, defaultdict

CASES: Counter = Counter()  # category -> generated inputs
OUTCOMES: defaultdict[str, Counter] = defaultdict(Counter)  # category -> outcome -> count
FAILURES = ("uncaught", "hang", "memory", "non-finite", "multi-line", "exit ")


def record(category: str, outcome: str) -> None:
    CASES[category] += 1
    OUTCOMES[category][outcome] += 1


def is_failure(outcome: str) -> bool:
    return outcome.startswith(FAILURES)


def summary_lines() -> list[str]:
    if not CASES:
        return []
    total = sum(CASES.values())
    bad = sum(n for c in OUTCOMES.values() for o, n in c.items() if is_failure(o))
    lines = [f"fuzz: {total:,} generated inputs, {bad:,} failures (uncaught exception, hang, memory, "
             "non-finite/negative output, multi-line error)"]
    for cat in sorted(CASES):
        parts = ", ".join(f"{o} {n}" for o, n in sorted(OUTCOMES[cat].items(), key=lambda kv: -kv[1]))
        lines.append(f"  {cat}: {CASES[cat]:,} ({parts})")
    return lines
