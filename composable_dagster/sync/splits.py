"""Split groups as bucket ranges: groups take consecutive shares of 10,000 buckets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from composable_dagster.sync.plan import BUCKETS, SplitRange


@dataclass(frozen=True, slots=True)
class GroupShare:
    group_id: str
    percentage: float
    position: int


def split_ranges(split_id: str, groups: Sequence[GroupShare]) -> dict[str, SplitRange]:
    """Each group's [low, high) bucket range, in position order; together they cover all
    buckets exactly once, so the groups never overlap and every member has one group."""
    ranges, total = {}, 0.0
    ordered = sorted(groups, key=lambda g: g.position)
    for i, group in enumerate(ordered):
        low = round(total * BUCKETS / 100)
        total += group.percentage
        high = BUCKETS if i == len(ordered) - 1 else round(total * BUCKETS / 100)
        ranges[group.group_id] = SplitRange(split_id=split_id, low=low, high=high)
    return ranges
