"""Errors of the filter language: every failure names the JSON path it is about."""

from __future__ import annotations


class FilterError(Exception):
    """A filter tree, trait or audience that cannot be parsed, validated or compiled.

    Attributes:
        path: JSON path of the offending value, e.g. ``filter_tree.children[1].column``.
        message: What is wrong there, for a human.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class FilterCycleError(FilterError):
    """Audiences or formula traits that reference themselves, directly or not."""


def join_path(base: str, *parts: str | int) -> str:
    """Extend a JSON path with field names and list indexes."""
    out = base
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out
