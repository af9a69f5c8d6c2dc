"""What every bench shares: interleaved rounds, medians, per-round ratios, targets, machine facts.

A bench names its *cases* (the measured code and its baselines), runs them with
:func:`interleave`, and turns the per-round samples into figures with a :class:`Report`:

- every case runs once per round, for at least :data:`MIN_ROUNDS` rounds, and the order of
  the cases is reversed every other round, so a drift of the machine (another job starting,
  the page cache filling) falls on the measured code and its baseline alike;
- a figure is the median of its per-round samples, reported with its best and worst round
  beside it: ``figures[name]``, ``figures[name + ".best"]``, ``figures[name + ".worst"]``;
- a ratio is computed in each round from two cases measured in that same round, and the
  figure is the median of those per-round ratios (never a ratio of two medians);
- a target compares the median of a figure with the value the bench promises.

Sizes, counts and one-off setup times that describe a run, rather than being measured in
rounds, go to ``params`` and carry no targets.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

__all__ = [
    "MIN_ROUNDS",
    "Better",
    "Case",
    "Report",
    "Samples",
    "Target",
    "interleave",
    "load_average",
    "machine",
    "per_second",
]

#: Fewest rounds any figure is the median of.
MIN_ROUNDS = 7

#: Which way a figure improves: ``lower`` (times, ratios of times) or ``higher`` (rates).
Better = Literal["lower", "higher"]

#: What a case's ``run`` may return: nothing (the harness's wall time is the sample) or named
#: metrics; a ``seconds`` metric replaces the wall time (a child process timing itself).
Metrics = Mapping[str, float] | None


class Target(NamedTuple):
    """A promise about a figure: ``figure op value``, with ``op`` one of ``<=`` and ``>=``."""

    figure: str
    op: Literal["<=", ">="]
    value: float


@dataclass(frozen=True)
class Case:
    """One piece of measured code: ``run(round)`` is timed, ``before`` and ``after`` are not."""

    run: Callable[[int], Metrics]
    before: Callable[[int], object] | None = None
    after: Callable[[int], object] | None = None


@dataclass
class Samples:
    """Per-round samples of every case, in round order.

    ``samples["put"]`` is the seconds of case ``put`` in each round; ``samples["put",
    "rss_mib"]`` a metric the case reported. ``orders`` lists the order the cases ran in,
    round by round.
    """

    data: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)

    def __getitem__(self, key: str | tuple[str, str]) -> list[float]:
        case, metric = (key, "seconds") if isinstance(key, str) else key
        try:
            return self.data[case, metric]
        except KeyError:
            raise KeyError(f"no samples of {metric!r} for case {case!r}") from None

    def add(self, case: str, metric: str, value: float) -> None:
        """Record one round's ``value`` of ``metric`` for ``case``."""
        self.data.setdefault((case, metric), []).append(float(value))


def interleave(
    cases: Mapping[str, Case | Callable[[int], Metrics]],
    *,
    rounds: int = MIN_ROUNDS,
    warmup: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> Samples:
    """Run every case once per round, alternating their order between rounds.

    Args:
        cases: case name -> :class:`Case` or a plain ``run(round)`` callable. In even rounds
            the cases run in the mapping's order, in odd rounds in reverse.
        rounds: recorded rounds (at least :data:`MIN_ROUNDS`).
        warmup: rounds run first and not recorded (their round numbers are negative).
        clock: the clock that times ``run`` (``time.perf_counter``).

    Returns:
        The samples: each case's seconds per round, plus the metrics its ``run`` returned.

    Raises:
        ValueError: fewer than :data:`MIN_ROUNDS` rounds, or no cases.
    """
    if rounds < MIN_ROUNDS:
        raise ValueError(f"a figure is the median of at least {MIN_ROUNDS} rounds; got rounds={rounds}")
    if not cases:
        raise ValueError("interleave needs at least one case")
    names = list(cases)
    normal = {name: c if isinstance(c, Case) else Case(c) for name, c in cases.items()}
    samples = Samples()
    for index in range(-warmup, rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            case = normal[name]
            if case.before is not None:
                case.before(index)
            gc.collect()
            start = clock()
            metrics = case.run(index)
            elapsed = clock() - start
            if case.after is not None:
                case.after(index)
            if index < 0:
                continue
            metrics = dict(metrics or {})
            samples.add(name, "seconds", metrics.pop("seconds", elapsed))
            for metric, value in metrics.items():
                samples.add(name, metric, value)
        if index >= 0:
            samples.orders.append(list(order))
    return samples


def per_second(count: float, seconds: Iterable[float]) -> list[float]:
    """Turn per-round seconds into per-round rates: ``count / seconds`` for each round."""
    return [count / s for s in seconds]


def _rounded(value: float) -> float:
    """Round for the report: whole numbers from 1000 up, four significant digits below."""
    if not math.isfinite(value) or value == 0:
        return value
    if abs(value) >= 1000:
        return float(round(value))
    return round(value, 3 - math.floor(math.log10(abs(value))))


class Report:
    """Figures (median, best, worst), params and targets of one bench."""

    def __init__(self) -> None:
        self.figures: dict[str, float] = {}
        self.params: dict[str, float] = {}
        self.targets: list[dict[str, Any]] = []

    def figure(self, name: str, values: Sequence[float], better: Better) -> float:
        """Record figure ``name`` from its per-round ``values``; return the median.

        Args:
            name: the figure's name (no ``.``; ``.best`` and ``.worst`` are added).
            values: one value per round, at least :data:`MIN_ROUNDS` of them.
            better: ``lower`` or ``higher``: which end of the values is the best round.

        Raises:
            ValueError: too few values, a ``.`` in the name, or a name already recorded.
        """
        if "." in name:
            raise ValueError(f"figure name {name!r} must not contain '.'")
        if name in self.figures:
            raise ValueError(f"figure {name!r} is recorded twice")
        if len(values) < MIN_ROUNDS:
            raise ValueError(f"figure {name!r} has {len(values)} rounds; at least {MIN_ROUNDS} are needed")
        if better not in ("lower", "higher"):
            raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
        median = statistics.median(values)
        best, worst = (min(values), max(values)) if better == "lower" else (max(values), min(values))
        self.figures[name] = _rounded(median)
        self.figures[f"{name}.best"] = _rounded(best)
        self.figures[f"{name}.worst"] = _rounded(worst)
        return median

    def ratio(self, name: str, numerator: Sequence[float], denominator: Sequence[float], better: Better) -> float:
        """Record the median of per-round ratios ``numerator[i] / denominator[i]``; return it.

        Both sequences must come from the same rounds (one value each per round).
        """
        if len(numerator) != len(denominator):
            raise ValueError(f"ratio {name!r}: {len(numerator)} rounds against {len(denominator)}")
        return self.figure(name, [a / b for a, b in zip(numerator, denominator, strict=True)], better)

    def difference(self, name: str, minuend: Sequence[float], subtrahend: Sequence[float], better: Better) -> float:
        """Record the median of per-round differences ``minuend[i] - subtrahend[i]``; return it."""
        if len(minuend) != len(subtrahend):
            raise ValueError(f"difference {name!r}: {len(minuend)} rounds against {len(subtrahend)}")
        return self.figure(name, [a - b for a, b in zip(minuend, subtrahend, strict=True)], better)

    def param(self, name: str, value: float) -> None:
        """Record a size, count or one-off time that describes the run (not a figure)."""
        self.params[name] = _rounded(float(value)) if isinstance(value, float) else value

    def check(self, targets: Iterable[Target]) -> list[dict[str, Any]]:
        """Evaluate ``targets`` against the recorded medians; keep and return the entries.

        Raises:
            KeyError: a target names a figure the bench did not record.
        """
        for t in targets:
            if t.figure not in self.figures:
                raise KeyError(f"target on {t.figure!r}, a figure this bench did not record")
            got = self.figures[t.figure]
            met = got <= t.value if t.op == "<=" else got >= t.value
            self.targets.append({"figure": t.figure, "op": t.op, "value": t.value, "met": bool(met)})
        return self.targets


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """Describe the machine the figures were measured on (load averages included)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_avg": load_average(),
    }
