"""Computed attributes (traits) compiled to ``SELECT entity_key, value`` per parent entity.

Every trait query returns one row per entity of the parent model (a LEFT JOIN from the
parent), so a trait condition can compare entities that have no related rows: ``count`` and
``count_distinct`` are 0 for them, every other value is NULL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from composable_dagster.filters.errors import FilterCycleError, FilterError, join_path
from composable_dagster.filters.schema import ColumnType, ResultType, TraitDef, TraitType
from composable_dagster.filters.tree import parse_filter_tree

if TYPE_CHECKING:
    from composable_dagster.filters.compile import Compiler, Scope

AGGREGATIONS = ("count", "count_distinct", "sum", "avg", "min", "max")
_AGG_COLUMN_TYPES = {
    "sum": {ColumnType.NUMBER},
    "avg": {ColumnType.NUMBER},
    "min": {ColumnType.NUMBER, ColumnType.TIMESTAMP, ColumnType.TEXT},
    "max": {ColumnType.NUMBER, ColumnType.TIMESTAMP, ColumnType.TEXT},
    "count": set(ColumnType),
    "count_distinct": set(ColumnType) - {ColumnType.OTHER},
}
# Node types a formula may contain; everything else (functions, subqueries, strings, CASE)
# is rejected so a formula can only do arithmetic over other traits.
_FORMULA_NODES = (
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Neg,
    exp.Paren,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.EQ,
    exp.NEQ,
)
_COMPARISONS = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)


# The keys each trait type's config holds (docs/api.md). Any other is refused when a trait is
# written, so a misspelling (`filters` for `filter`) is a 400 naming it instead of a trait
# that silently ignores it. Checked on write only: a stored trait keeps compiling.
CONFIG_KEYS: Mapping[TraitType, frozenset[str]] = {
    TraitType.AGGREGATION: frozenset({"relationship_id", "function", "column", "filter"}),
    TraitType.OCCURRENCE: frozenset({"relationship_id", "position", "column", "order_by"}),
    TraitType.SQL: frozenset({"sql"}),
    TraitType.FORMULA: frozenset({"expression"}),
}


def check_config_keys(trait: TraitDef, *, path: str) -> None:
    """Refuse a config key its trait type does not have.

    Raises:
        FilterError: At the first unknown key (in sorted order), naming the known ones.
    """
    trait_type = _trait_type(trait)
    known = CONFIG_KEYS.get(trait_type) if trait_type else None
    if known is None or not isinstance(trait.config, Mapping):
        return  # the compiler's pass reports these
    unknown = sorted(set(trait.config) - known, key=str)
    if unknown:
        raise FilterError(
            join_path(path, unknown[0]),
            f"unknown key for trait type {trait_type}; expected {', '.join(sorted(known))}",
        )


def _trait_type(trait: TraitDef) -> TraitType | None:
    """The trait's type, None for a value that is not one (reported by the caller)."""
    return TraitType(trait.trait_type) if trait.trait_type in set(TraitType) else None


def trait_values(
    compiler: Compiler,
    trait: TraitDef,
    *,
    path: str,
    outer_path: str | None,
    stack: tuple[str, ...] = (),
) -> exp.Select:
    """The trait as ``SELECT entity_key, value`` over every parent entity.

    Args:
        compiler: The running compilation (dialect, aliases, catalog).
        trait: The trait to compile.
        path: JSON path of the trait's config.
        outer_path: When set, the path of the filter condition that uses the trait: errors
            are reported there, with the trait's own path in the message.
        stack: Ids of formula traits being expanded (cycle detection).
    """
    if outer_path is None:
        return _build(compiler, trait, path=path, stack=stack)
    try:
        return _build(compiler, trait, path="config", stack=stack)
    except FilterCycleError as exc:
        raise FilterCycleError(outer_path, f"trait {trait.slug}: {exc}") from None
    except FilterError as exc:
        raise FilterError(outer_path, f"trait {trait.slug} is invalid: {exc}") from None


def _get(
    config: Mapping[str, Any], key: str, *, path: str, kind: type, required: bool = True
) -> Any:
    value = config.get(key)
    if value is None:
        if required:
            raise FilterError(join_path(path, key), "field required")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise FilterError(join_path(path, key), f"expected {kind.__name__}, got {value!r}")
    return value


def _choice(config: Mapping[str, Any], key: str, options: tuple[str, ...], *, path: str) -> str:
    value = _get(config, key, path=path, kind=str)
    if value not in options:
        raise FilterError(join_path(path, key), f"expected one of {options}, got {value!r}")
    return value


def _with_parent(compiler: Compiler, trait: TraitDef, *, path: str) -> tuple[Scope, exp.Column]:
    from composable_dagster.filters.compile import Scope

    parent = compiler.model(trait.parent_model_id, path=join_path(path, "parent_model_id"))
    scope = Scope(parent, compiler.fresh("p"), frozenset({parent.primary_key}))
    pk, _ = compiler.column(scope, parent.primary_key, path=join_path(path, "parent_model_id"))
    return scope, pk


def _build(compiler: Compiler, trait: TraitDef, *, path: str, stack: tuple[str, ...]) -> exp.Select:
    config = trait.config if isinstance(trait.config, Mapping) else None
    if config is None:
        raise FilterError(path, "config must be a JSON object")
    builder = {
        TraitType.AGGREGATION: _aggregation,
        TraitType.OCCURRENCE: _occurrence,
        TraitType.SQL: _sql,
        TraitType.FORMULA: _formula,
    }.get(_trait_type(trait))
    if builder is None:
        raise FilterError("trait_type", f"unsupported trait type {trait.trait_type!r}")
    return builder(compiler, trait, config, path=path, stack=stack)


def _left_join(
    compiler: Compiler,
    scope: Scope,
    pk: exp.Column,
    *,
    sub: exp.Expression,
    sub_alias: str,
    near: exp.Expression,
    far: str,
    value: exp.Expression,
    path: str,
) -> exp.Select:
    """``SELECT p.pk AS entity_key, value FROM parent p LEFT JOIN (sub) a ON a.far = near``."""
    from composable_dagster.filters.compile import col

    return (
        exp.select(
            exp.alias_(pk, "entity_key", quoted=True), exp.alias_(value, "value", quoted=True)
        )
        .from_(compiler.source(scope.model, scope.alias, path=path))
        .join(
            exp.Subquery(this=sub, alias=exp.TableAlias(this=exp.to_identifier(sub_alias))),
            on=exp.EQ(this=col(sub_alias, far), expression=near),
            join_type="left",
        )
    )


def _aggregation(
    compiler: Compiler,
    trait: TraitDef,
    config: Mapping[str, Any],
    *,
    path: str,
    stack: tuple[str, ...],
) -> exp.Select:
    from composable_dagster.filters.compile import KEY, col, count_star, is_not_null

    scope, pk = _with_parent(compiler, trait, path=path)
    rel_id = _get(config, "relationship_id", path=path, kind=str)
    rows = compiler.relationship(rel_id, scope, path=join_path(path, "relationship_id"))
    function = _choice(config, "function", AGGREGATIONS, path=path)
    column_name = _get(config, "column", path=path, kind=str, required=function != "count")
    if function in ("count", "count_distinct", "sum", "avg") and trait.result_type not in (
        ResultType.NUMBER,
    ):
        raise FilterError("result_type", f"'{function}' produces a number, not {trait.result_type}")
    if column_name is None:
        agg: exp.Expression = count_star()
    else:
        ref, column = compiler.column(rows.scope, column_name, path=join_path(path, "column"))
        if column.type not in _AGG_COLUMN_TYPES[function]:
            raise FilterError(
                join_path(path, "column"),
                f"'{function}' does not apply to column '{column_name}' of type {column.type}",
            )
        agg = {
            "count": lambda: exp.Count(this=ref),
            "count_distinct": lambda: exp.Count(this=exp.Distinct(expressions=[ref])),
            "sum": lambda: exp.Sum(this=ref),
            "avg": lambda: exp.Avg(this=ref),
            "min": lambda: exp.Min(this=ref),
            "max": lambda: exp.Max(this=ref),
        }[function]()
    where = [is_not_null(rows.key)]
    if config.get("filter") is not None:
        filter_path = join_path(path, "filter")
        tree = parse_filter_tree(config["filter"], path=filter_path)
        where.append(compiler.predicate(tree, rows.scope, path=filter_path))
    sub = (
        rows.source.copy()
        .select(
            exp.alias_(rows.key.copy(), KEY, quoted=True), exp.alias_(agg, "value", quoted=True)
        )
        .where(compiler.conjunction(where))
        .group_by(rows.key.copy())
    )
    a = compiler.fresh("a")
    value: exp.Expression = col(a, "value")
    if function in ("count", "count_distinct"):
        # No related rows means a count of 0, not "unknown".
        value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
    near, _ = compiler.column(scope, rows.relationship.from_column, path=path)
    return _left_join(
        compiler, scope, pk, sub=sub, sub_alias=a, near=near, far=KEY, value=value, path=path
    )


def _occurrence(
    compiler: Compiler,
    trait: TraitDef,
    config: Mapping[str, Any],
    *,
    path: str,
    stack: tuple[str, ...],
) -> exp.Select:
    from composable_dagster.filters.compile import KEY, col, is_not_null

    scope, pk = _with_parent(compiler, trait, path=path)
    rel_id = _get(config, "relationship_id", path=path, kind=str)
    rows = compiler.relationship(rel_id, scope, path=join_path(path, "relationship_id"))
    position = _choice(config, "position", ("first", "last"), path=path)
    value_ref, _ = compiler.column(
        rows.scope, _get(config, "column", path=path, kind=str), path=join_path(path, "column")
    )
    order_name = _get(config, "order_by", path=path, kind=str, required=False)
    order_name = order_name or rows.target.timestamp_column
    if not order_name:
        raise FilterError(
            join_path(path, "order_by"),
            f"model {rows.target.name} has no timestamp_column: order_by is required",
        )
    order_ref, _ = compiler.column(rows.scope, order_name, path=join_path(path, "order_by"))
    tie_ref, _ = compiler.column(
        rows.scope, rows.target.primary_key, path=join_path(path, "relationship_id")
    )
    desc = position == "last"
    # The primary key breaks ties so "first"/"last" is deterministic on every engine.
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[rows.key.copy()],
        order=exp.Order(
            expressions=[
                exp.Ordered(this=order_ref.copy(), desc=desc, nulls_first=False),
                exp.Ordered(this=tie_ref, desc=desc, nulls_first=False),
            ]
        ),
    )
    ranked = (
        rows.source.copy()
        .select(
            exp.alias_(rows.key.copy(), KEY, quoted=True),
            exp.alias_(value_ref, "value", quoted=True),
            exp.alias_(rank, "rn", quoted=True),
        )
        .where(compiler.conjunction([is_not_null(rows.key), is_not_null(order_ref)]))
    )
    o = compiler.fresh("o")
    sub = (
        exp.select(col(o, KEY), col(o, "value"))
        .from_(exp.Subquery(this=ranked, alias=exp.TableAlias(this=exp.to_identifier(o))))
        .where(exp.EQ(this=col(o, "rn"), expression=exp.Literal.number(1)))
    )
    a = compiler.fresh("a")
    near, _ = compiler.column(scope, rows.relationship.from_column, path=path)
    return _left_join(
        compiler,
        scope,
        pk,
        sub=sub,
        sub_alias=a,
        near=near,
        far=KEY,
        value=col(a, "value"),
        path=path,
    )


def _sql(
    compiler: Compiler,
    trait: TraitDef,
    config: Mapping[str, Any],
    *,
    path: str,
    stack: tuple[str, ...],
) -> exp.Select:
    from composable_dagster.filters.user_sql import parse_select

    scope, pk = _with_parent(compiler, trait, path=path)
    sql_path = join_path(path, "sql")
    query = parse_select(
        _get(config, "sql", path=path, kind=str),
        dialect=compiler.dialect,
        field=sql_path,
        what=f"trait {trait.slug}",
    )
    names = [n.lower() for n in query.named_selects]
    if sorted(names) != ["entity_key", "value"]:
        raise FilterError(
            sql_path,
            f"the query must return exactly two columns named entity_key and value, got {names}",
        )
    s = compiler.fresh("s")
    # The user's names are referenced unquoted, so each engine folds case as it did for them.
    value = exp.Column(this=exp.to_identifier("value"), table=exp.to_identifier(s))
    key = exp.Column(this=exp.to_identifier("entity_key"), table=exp.to_identifier(s))
    return (
        exp.select(
            exp.alias_(pk, "entity_key", quoted=True), exp.alias_(value, "value", quoted=True)
        )
        .from_(compiler.source(scope.model, scope.alias, path=path))
        .join(
            exp.Subquery(this=query, alias=exp.TableAlias(this=exp.to_identifier(s))),
            on=exp.EQ(this=key, expression=pk.copy()),
            join_type="left",
        )
    )


# A formula is arithmetic over a few traits: these bounds are far above any real one, and
# keep its parse (recursive, in sqlglot) and its SQL small.
MAX_FORMULA_LENGTH = 2_000
MAX_FORMULA_NESTING = 32
MAX_FORMULA_TERMS = 64


def _check_formula_size(text: str, *, path: str) -> None:
    if len(text) > MAX_FORMULA_LENGTH:
        raise FilterError(path, f"formula longer than {MAX_FORMULA_LENGTH} characters")
    depth = deepest = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_FORMULA_NESTING:
        raise FilterError(path, f"formula nested deeper than {MAX_FORMULA_NESTING} parentheses")
    terms = sum(text.count(op) for op in "+-*/%<>=") + 1
    if terms > MAX_FORMULA_TERMS:
        raise FilterError(path, f"formula with more than {MAX_FORMULA_TERMS} terms")


def _formula(
    compiler: Compiler,
    trait: TraitDef,
    config: Mapping[str, Any],
    *,
    path: str,
    stack: tuple[str, ...],
) -> exp.Select:
    from composable_dagster.filters.compile import col

    expr_path = join_path(path, "expression")
    text = _get(config, "expression", path=path, kind=str)
    _check_formula_size(text, path=expr_path)
    try:
        parsed = sqlglot.parse_one(text)
    except SqlglotError:
        raise FilterError(expr_path, f"formula does not parse: {text!r}") from None
    slugs: list[str] = []
    _check_formula(parsed, slugs, path=expr_path)
    top = parsed
    while isinstance(top, exp.Paren):
        top = top.this
    wanted = ResultType.BOOLEAN if isinstance(top, _COMPARISONS) else ResultType.NUMBER
    if trait.result_type != wanted:
        raise FilterError(
            "result_type", f"this formula produces a {wanted}, not {trait.result_type}"
        )
    scope, pk = _with_parent(compiler, trait, path=path)
    chain = (*stack, trait.id)
    by_slug = {
        t.slug: t
        for t in compiler.schema.traits.values()
        if t.parent_model_id == trait.parent_model_id
    }
    query = exp.select().from_(compiler.source(scope.model, scope.alias, path=path))
    aliases: dict[str, str] = {}
    for slug in slugs:
        if slug in aliases:
            continue
        ref = by_slug.get(slug)
        if ref is None:
            raise FilterError(expr_path, f"unknown trait slug {slug!r} on this model")
        if ref.id in chain:
            names = [compiler.schema.traits[i].slug for i in chain[chain.index(ref.id) :]]
            raise FilterCycleError(expr_path, f"formula cycle: {' -> '.join([*names, slug])}")
        if ref.result_type != ResultType.NUMBER:
            raise FilterError(expr_path, f"trait {slug!r} is not a number ({ref.result_type})")
        try:
            values = _build(compiler, ref, path="config", stack=chain)
        except FilterCycleError:
            raise
        except FilterError as exc:
            raise FilterError(expr_path, f"trait {slug} is invalid: {exc}") from None
        alias = compiler.fresh("f")
        aliases[slug] = alias
        query = query.join(
            exp.Subquery(this=values, alias=exp.TableAlias(this=exp.to_identifier(alias))),
            on=exp.EQ(this=col(alias, "entity_key"), expression=pk.copy()),
            join_type="left",
        )

    double = exp.DataType.build("double")

    def slug_values(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return col(aliases[node.name], "value")
        return node

    def real_division(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Div):
            # Real division everywhere (PostgreSQL divides integers), NULL on division by 0.
            return exp.Div(
                this=exp.cast(node.this, double),
                expression=exp.Nullif(
                    this=exp.cast(node.expression, double), expression=exp.Literal.number(0)
                ),
            )
        return node

    value = parsed.copy().transform(slug_values).transform(real_division)
    return query.select(
        exp.alias_(pk, "entity_key", quoted=True), exp.alias_(value, "value", quoted=True)
    )


def _check_formula(node: exp.Expression, slugs: list[str], *, path: str) -> None:
    if isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier):
        slugs.append(node.name)
        return
    if isinstance(node, exp.Literal) and node.is_number:
        return
    if not isinstance(node, _FORMULA_NODES):
        raise FilterError(
            path,
            f"{node.sql()!r} is not allowed in a formula: use trait slugs, numbers, "
            "+ - * /, comparisons and parentheses",
        )
    for child in node.iter_expressions():
        _check_formula(child, slugs, path=path)
