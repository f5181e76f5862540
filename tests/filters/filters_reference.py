"""An independent, pure-Python evaluator of filter trees, written from docs/filters.md.

It works on the raw JSON trees and Python rows and shares no code with the compiler, so a
disagreement between the two points at a bug in one of them.
"""

from __future__ import annotations

import ast
import calendar
import operator
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from composable_dagster.filters.schema import CatalogSchema, ModelDef

Row = Mapping[str, Any]


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(tz=None).replace(tzinfo=None)  # pragma: no cover
    return parsed


def _months_back(now: datetime, n: int) -> datetime:
    year, month = now.year, now.month - n
    while month < 1:
        month += 12
        year -= 1
    last = calendar.monthrange(year, month)[1]
    return now.replace(year=year, month=month, day=min(now.day, last))


def _ago(now: datetime, n: int, unit: str) -> datetime:
    if unit == "months":
        return _months_back(now, n)
    hours = {"hours": 1, "days": 24, "weeks": 24 * 7}[unit] * n
    return now - timedelta(hours=hours)


class Reference:
    """Evaluate trees over in-memory tables (model table name -> list of row dicts)."""

    def __init__(
        self,
        schema: CatalogSchema,
        tables: Mapping[str, list[Row]],
        *,
        now: datetime,
        sql_traits: Mapping[str, Callable[[Row], Any]] | None = None,
    ) -> None:
        self.schema = schema
        self.tables = tables
        self.now = now
        self.sql_traits = sql_traits or {}
        self._trait_cache: dict[str, dict[Any, Any]] = {}

    def rows(self, model: ModelDef) -> list[Row]:
        return list(self.tables[model.table.split(".")[-1]])

    def members(self, tree: Mapping[str, Any], parent_model_id: str) -> set[Any]:
        model = self.schema.models[parent_model_id]
        return {
            r[model.primary_key]
            for r in self.rows(model)
            if r[model.primary_key] is not None and self.match(tree, model, r)
        }

    # -- nodes ---------------------------------------------------------------------------

    def match(self, node: Mapping[str, Any], model: ModelDef, row: Row) -> bool:
        kind = node["type"]
        if kind == "and":
            return all(self.match(c, model, row) for c in node.get("children", []))
        if kind == "or":
            return any(self.match(c, model, row) for c in node.get("children", []))
        if kind == "not":
            return not self.match(node["children"][0], model, row)
        ctype = node["condition_type"]
        if ctype == "property":
            return compare(node, row[node["column"]])
        if ctype == "trait":
            trait = self.schema.traits[node["trait_id"]]
            return compare(node, self.trait_value(trait.id, row[model.primary_key]))
        if ctype == "audience":
            audience = self.schema.audiences[node["audience_id"]]
            inside = self.match(audience.filter_tree, model, row)
            return inside if node.get("operator", "is_member") == "is_member" else not inside
        rel = self.schema.relationships[node["relationship_id"]]
        target = self.schema.models[rel.to_model_id]
        related = self.related(rel, row)
        flt = node.get("filters")
        matching = [r for r in related if flt is None or self.match(flt, target, r)]
        if ctype == "relation":
            quantifier = node.get("quantifier", "any")
            if quantifier == "all":
                return bool(related) and len(matching) == len(related)
            if quantifier == "none":
                return not matching
            return count_ok(node, len(matching))
        # event
        window = node.get("time_window")
        if window is not None:
            ts_col = target.timestamp_column
            matching = [
                r for r in matching if r[ts_col] is not None and self.in_window(window, r[ts_col])
            ]
        return count_ok(node, len(matching))

    def in_window(self, window: Mapping[str, Any], ts: datetime) -> bool:
        kind, unit, value = window["type"], window.get("unit", "days"), window["value"]

        def at(v: Any) -> datetime:
            return _ago(self.now, v, unit) if isinstance(v, int) else _ts(v)

        if kind == "within":
            return at(value) <= ts <= self.now
        if kind == "not_within":
            return ts < at(value)
        if kind == "before":
            return ts < at(value)
        if kind == "after":
            return ts > at(value)
        a, b = sorted([at(value), at(window["value2"])])
        return a <= ts <= b

    def related(self, rel: Any, row: Row) -> list[Row]:
        key = row[rel.from_column]
        if key is None:
            return []
        target = self.schema.models[rel.to_model_id]
        if rel.through_model_id:
            junction = self.schema.models[rel.through_model_id]
            out = []
            for j in self.rows(junction):
                if j[rel.through_from_column] == key and j[rel.through_to_column] is not None:
                    out += [
                        r for r in self.rows(target) if r[rel.to_column] == j[rel.through_to_column]
                    ]
            return out
        return [r for r in self.rows(target) if r[rel.to_column] == key]

    # -- traits --------------------------------------------------------------------------

    def trait_value(self, trait_id: str, key: Any) -> Any:
        if trait_id not in self._trait_cache:
            trait = self.schema.traits[trait_id]
            parent = self.schema.models[trait.parent_model_id]
            self._trait_cache[trait_id] = {
                r[parent.primary_key]: self._compute(trait, r) for r in self.rows(parent)
            }
        return self._trait_cache[trait_id].get(key)

    def _compute(self, trait: Any, row: Row) -> Any:
        cfg = trait.config
        kind = str(trait.trait_type)
        if kind == "sql":
            return self.sql_traits[trait.slug](row)
        if kind == "formula":
            slugs = {t.slug: t.id for t in self.schema.traits.values()}
            parent = self.schema.models[trait.parent_model_id]
            return _formula(
                cfg["expression"],
                lambda slug: self.trait_value(slugs[slug], row[parent.primary_key]),
            )
        rel = self.schema.relationships[cfg["relationship_id"]]
        target = self.schema.models[rel.to_model_id]
        rows = self.related(rel, row)
        if cfg.get("filter") is not None:
            rows = [r for r in rows if self.match(cfg["filter"], target, r)]
        if kind == "occurrence":
            order = cfg.get("order_by") or target.timestamp_column
            ranked = sorted(
                (r for r in rows if r[order] is not None),
                key=lambda r: (r[order], r[target.primary_key]),
            )
            if not ranked:
                return None
            return (ranked[0] if cfg["position"] == "first" else ranked[-1])[cfg["column"]]
        fn, column = cfg["function"], cfg.get("column")
        if fn == "count":
            return len(rows) if column is None else sum(r[column] is not None for r in rows)
        values = [r[column] for r in rows if r[column] is not None]
        if fn == "count_distinct":
            return len(set(values))
        if not values:
            return None
        return {"sum": sum, "min": min, "max": max, "avg": lambda v: sum(v) / len(v)}[fn](values)


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_CMPS = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _formula(text: str, lookup: Callable[[str], Any]) -> Any:
    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            return lookup(n.id)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            v = ev(n.operand)
            return None if v is None else -v
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if a is None or b is None:
                return None
            if isinstance(n.op, ast.Div):
                return None if b == 0 else a / b
            return _BINOPS[type(n.op)](a, b)
        if isinstance(n, ast.Compare):
            a, b = ev(n.left), ev(n.comparators[0])
            return None if a is None or b is None else _CMPS[type(n.ops[0])](a, b)
        raise AssertionError(ast.dump(n))

    return ev(ast.parse(text.replace("<>", "!="), mode="eval"))


def count_ok(node: Mapping[str, Any], n: int) -> bool:
    op = node.get("count_operator", "at_least")
    a = node.get("count_value", 1)
    if op == "at_least":
        return n >= a
    if op == "at_most":
        return n <= a
    if op == "exactly":
        return n == a
    return a <= n <= node["count_value2"]


def _coerce(v: Any, like: Any) -> Any:
    if isinstance(like, datetime):
        return _ts(v)
    return v


def compare(node: Mapping[str, Any], v: Any) -> bool:
    """One property/trait comparison, two-valued: NULL matches only is_null."""
    op = node["operator"]
    if op == "is_null":
        return v is None
    if op == "is_not_null":
        return v is not None
    if v is None:
        return False
    x = node.get("value")
    if op == "is_true":
        return v is True
    if op == "is_false":
        return v is False
    if op in ("between", "not_between"):
        lo, hi = x if isinstance(x, list) else (x, node["value2"])
        inside = _coerce(lo, v) <= v <= _coerce(hi, v)
        return inside if op == "between" else not inside
    if op in ("in", "not_in"):
        items = [_coerce(i, v) for i in (x if isinstance(x, list) else [x])]
        return (v in items) if op == "in" else (v not in items)
    x = _coerce(x, v)
    return {
        "equals": lambda: v == x,
        "not_equals": lambda: v != x,
        "greater_than": lambda: v > x,
        "less_than": lambda: v < x,
        "greater_than_or_equal": lambda: v >= x,
        "less_than_or_equal": lambda: v <= x,
        "contains": lambda: x in v,
        "not_contains": lambda: x not in v,
        "starts_with": lambda: v.startswith(x),
        "ends_with": lambda: v.endswith(x),
        "not_starts_with": lambda: not v.startswith(x),
        "not_ends_with": lambda: not v.endswith(x),
    }[op]()
