"""A stand-in for the ``time`` module of code that times itself with ``time.perf_counter``:
monkeypatch the module's ``time`` with a ``StepClock`` and every interval it measures is an
exact number of steps."""

from __future__ import annotations


class StepClock:
    """``perf_counter()`` readings ``step`` seconds apart, the first at ``start + step``."""

    def __init__(self, step: float = 1.0, start: float = 0.0) -> None:
        self.step, self.now = step, start

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now
