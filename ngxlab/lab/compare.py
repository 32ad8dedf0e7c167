"""Comparing measurements: every sample kept, medians, and ratios of medians
taken in one run.

:class:`Samples` holds the samples of one variant and those of its
reference, taken interleaved with them (:func:`rotated` gives each round's
order), so that whatever else the machine does falls on both alike; a
ratio is always ``median / reference median`` of one run. :class:`Target`
is a ratio the book tracks, and :func:`row` one line of a results table:
the two medians, their ratio, the target and whether the ratio met it
(None when either side was not measured: a ratio against nothing is never
made up).

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

__all__ = ["Samples", "Target", "percentile", "format_value", "rotated", "row"]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, linear between the closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Samples:
    """The samples of one variant in one measurement, and its reference.

    ``values`` are all the samples, in the order taken (``unit``: ``"ns"``
    per round trip, or ``"fds/s"``). ``reference_values`` are the samples of
    the reference variant (``reference``) taken interleaved with these in
    the same run; ``ratio`` is ``median / reference_median``. ``skipped``
    says why a variant was not measured (then ``values`` is empty).
    ``params`` records how it was measured.
    """

    measure: str
    variant: str
    unit: str
    values: list[float] = field(default_factory=list)
    reference: str | None = None
    reference_values: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return percentile(self.values, 50)

    @property
    def p10(self) -> float | None:
        return percentile(self.values, 10)

    @property
    def p90(self) -> float | None:
        return percentile(self.values, 90)

    @property
    def reference_median(self) -> float | None:
        return percentile(self.reference_values, 50)

    @property
    def ratio(self) -> float | None:
        """``median / reference_median``; None when either is missing."""
        m, r = self.median, self.reference_median
        if m is None or not r:
            return None
        return m / r

    @classmethod
    def from_dict(cls, d: dict) -> "Samples":
        """The inverse of ``to_dict()`` (the derived values are dropped)."""
        return cls(**{f: d[f] for f in cls.__dataclass_fields__ if f in d})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median=self.median, p10=self.p10, p90=self.p90,
                 reference_median=self.reference_median, ratio=self.ratio)
        return d

    def __repr__(self) -> str:
        if self.skipped:
            return f"Samples({self.measure}: {self.variant} skipped: {self.skipped})"
        ratio = "" if self.ratio is None else f", {self.ratio:.3f} x {self.reference}"
        return (f"Samples({self.measure}: {self.variant} median {format_value(self.median, self.unit)}"
                f" [p10 {format_value(self.p10, self.unit)}, p90 {format_value(self.p90, self.unit)}],"
                f" {len(self.values)} samples{ratio})")


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ns":
        return f"{value / 1000:.2f} µs"
    if unit == "fds/s":
        return f"{value / 1e6:.3f} M/s" if value >= 1e6 else f"{value / 1e3:.1f} k/s"
    return f"{value:g} {unit}"




def rotated(names: list, r: int) -> list:
    """Round ``r``'s order of ``names``: A B C, then B C A, then C A B, ..."""
    if not names:
        return names
    r %= len(names)
    return names[r:] + names[:r]


@dataclass(frozen=True)
class Target:
    """A ratio the book tracks: ``subject / reference`` (medians) ``op`` ``bound``."""

    measure: str
    subject: str
    reference: str
    op: str                         # "<=", "<" or ">="
    bound: float

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None:
            return None
        return {"<=": ratio <= self.bound, "<": ratio < self.bound,
                ">=": ratio >= self.bound}[self.op]

    def text(self) -> str:
        return f"{self.op} {self.bound:g}"


def row(measure: str, subject: str, reference: str, subject_median: float | None,
        reference_median: float | None, unit: str, targets: Iterable[Target] = ()) -> dict:
    """One line of a results table: the two medians of one run, their ratio,
    and the target for it (if one of ``targets`` is about this measure,
    subject and reference) with whether the ratio met it."""
    ratio = (subject_median / reference_median
             if subject_median is not None and reference_median else None)
    target = next((t for t in targets if (t.measure, t.subject, t.reference)
                   == (measure, subject, reference)), None)
    return dict(measure=measure, subject=subject, reference=reference, unit=unit,
                subject_median=subject_median, reference_median=reference_median, ratio=ratio,
                target=target.text() if target else None,
                met=target.met(ratio) if target else None)
