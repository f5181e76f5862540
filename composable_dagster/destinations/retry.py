"""Exponential backoff with jitter, shared by connectors that retry transient failures."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays `base * factor**attempt`, capped at `cap`, with "equal jitter".

    Half of each delay is fixed and half random, so retries of many connectors spread out
    (no thundering herd after an outage) while every wait still grows with the attempt.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * self.factor**attempt)
        jitter = (rng or random).uniform(0.0, ceiling / 2)
        return ceiling / 2 + jitter
