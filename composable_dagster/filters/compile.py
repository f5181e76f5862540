"""Filter tree -> SQL, built as sqlglot expressions and rendered per dialect.

Shape of the output (see docs/filters.md): one scan of the parent model whose WHERE is the
tree as a boolean predicate. Property conditions are plain predicates; relation, event,
trait and audience conditions are set-based semi-joins (``key IN (SELECT fk ... GROUP BY fk
HAVING ...)``), never correlated subqueries. Every condition is two-valued: where a NULL
could leak through a negation, the predicate is guarded with ``IS NOT NULL``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from composable_dagster.filters.errors import FilterCycleError, FilterError, join_path
from composable_dagster.filters.operators import (
    RESULT_COLUMN_TYPES,
    operator_spec,
    operator_values,
    timestamp_literal,
)
from composable_dagster.filters.schema import (
    Cardinality,
    CatalogSchema,
    Column,
    ColumnType,
    ModelDef,
    RelationshipDef,
    TraitDef,
)
from composable_dagster.filters.sql_types import ExactRange, exact_range
from composable_dagster.filters.timewindow import to_utc_naive, window_bounds
from composable_dagster.filters.tree import (
    MAX_TREE_DEPTH,
    MAX_TREE_NODES,
    MAX_TREE_SUBQUERIES,
    AndNode,
    AudienceCondition,
    EventCondition,
    FilterLimitError,
    FilterNode,
    NotNode,
    OrNode,
    PropertyCondition,
    RelationCondition,
    TraitCondition,
    parse_filter_tree,
)
from composable_dagster.filters.user_sql import parse_select, table_reference

DIALECTS = ("duckdb", "postgres", "snowflake", "bigquery", "databricks")
KEY = "fk"  # output name of every key-set subquery
# The parent model's alias in `compile_members` output: callers may add projections over it.
PARENT_ALIAS = "p"
MAX_PREVIEW_ROWS = 100
_INLINED = "once referenced audiences and trait filters are inlined"
_MAX_COUNT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A rendered statement and the sqlglot tree it came from."""

    sql: str
    expression: exp.Expression
    dialect: str = "duckdb"


@dataclass(frozen=True, slots=True)
class Scope:
    """The model a (sub)tree filters and the SQL alias of its rows."""

    model: ModelDef
    alias: str
    non_null: frozenset[str] = frozenset()  # columns known to be non-NULL under `alias`


@dataclass(frozen=True, slots=True)
class RelatedRows:
    """FROM clause of the rows reached through a relationship, keyed by the near side."""

    relationship: RelationshipDef
    target: ModelDef
    scope: Scope  # the target's rows
    key: exp.Column  # value matching the near model's `from_column`
    source: exp.Select  # SELECT-less: FROM + JOIN only, WHERE added by the caller


def ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def col(alias: str, name: str) -> exp.Column:
    return exp.Column(this=ident(name), table=exp.Identifier(this=alias, quoted=False))


def is_not_null(expr: exp.Expression) -> exp.Expression:
    return exp.not_(exp.Is(this=expr.copy(), expression=exp.Null()))


def key_in(key: exp.Expression, query: exp.Query) -> exp.In:
    """``key IN (query)``."""
    return exp.In(this=key, query=exp.Subquery(this=query))


def negate(pred: exp.Expression) -> exp.Expression:
    """NOT pred, with double negations removed (valid in SQL's three-valued logic too)."""
    inner = pred
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.Not):
        return exp.paren(inner.this, copy=False)
    return exp.not_(pred)


def count_star() -> exp.Expression:
    return exp.Count(this=exp.Star())


@dataclass
class Compiler:
    """One compilation: schema, clock and dialect fixed, alias counter and caches inside."""

    schema: CatalogSchema
    dialect: str
    now: datetime | None
    _aliases: itertools.count = field(default_factory=lambda: itertools.count(1))
    _parsed: dict[str, exp.Table | exp.Subquery] = field(default_factory=dict)
    # Nodes compiled so far and the current nesting: inlined audiences and trait filters
    # count too, so a chain or a doubling of audience references stays within the limits.
    _nodes: int = 0
    _depth: int = 0
    _subqueries: int = 0

    # -- catalog lookups ---------------------------------------------------------------

    def model(self, model_id: str, *, path: str, what: str = "model") -> ModelDef:
        model = self.schema.models.get(model_id)
        if model is None:
            raise FilterError(path, f"unknown {what} {model_id!r}")
        return model

    def column(self, scope: Scope, name: str, *, path: str) -> tuple[exp.Column, Column]:
        """A validated column reference ``alias."name"``."""
        column = scope.model.columns.get(name) if isinstance(name, str) else None
        if column is None:
            raise FilterError(path, f"unknown column {name!r} on model {scope.model.name}")
        return col(scope.alias, name), column

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._aliases)}"

    def source(self, model: ModelDef, alias: str, *, path: str) -> exp.Expression:
        """The model's rows as a FROM item: a quoted table or the parsed user SELECT."""
        rows = self._parsed.get(model.id)
        if rows is None:
            rows = self._parsed[model.id] = model_rows(model, dialect=self.dialect, path=path)
        return exp.alias_(rows.copy(), exp.Identifier(this=alias, quoted=False), table=True)

    def relationship(self, rel_id: str, scope: Scope, *, path: str) -> RelatedRows:
        """Resolve a relationship leaving `scope.model` and the FROM clause of its rows."""
        rel = self.schema.relationships.get(rel_id)
        if rel is None:
            raise FilterError(path, f"unknown relationship {rel_id!r}")
        if rel.from_model_id != scope.model.id:
            raise FilterError(
                path,
                f"relationship {rel.name} starts at model "
                f"{self._model_name(rel.from_model_id)}, not at {scope.model.name}",
            )
        target = self.model(rel.to_model_id, path=path, what="target model")
        self.column(scope, rel.from_column, path=path)
        target_scope = Scope(target, self.fresh("r"))
        to_col, _ = self.column(target_scope, rel.to_column, path=path)
        source = exp.select().from_(self.source(target, target_scope.alias, path=path))
        if rel.cardinality is Cardinality.MANY_TO_MANY:
            if not (rel.through_model_id and rel.through_from_column and rel.through_to_column):
                raise FilterError(path, f"many-to-many relationship {rel.name} has no junction")
            junction = self.model(rel.through_model_id, path=path, what="junction model")
            j_scope = Scope(junction, self.fresh("j"))
            key, _ = self.column(j_scope, rel.through_from_column, path=path)
            far, _ = self.column(j_scope, rel.through_to_column, path=path)
            source = exp.select().from_(self.source(junction, j_scope.alias, path=path))
            source = source.join(
                self.source(target, target_scope.alias, path=path),
                on=exp.EQ(this=far, expression=to_col),
                join_type="inner",
            )
        else:
            key = to_col
        return RelatedRows(rel, target, target_scope, key, source)

    def _model_name(self, model_id: str) -> str:
        model = self.schema.models.get(model_id)
        return model.name if model else repr(model_id)

    # -- predicates --------------------------------------------------------------------

    def predicate(
        self,
        node: FilterNode,
        scope: Scope,
        *,
        path: str,
        negated: bool = False,
        audiences: tuple[str, ...] = (),
    ) -> exp.Expression:
        """The node as a boolean over the rows of `scope`.

        Args:
            node: The (sub)tree.
            scope: Model and alias the predicate refers to.
            path: JSON path of `node`, for errors.
            negated: Whether an odd or even number of `not`s sits above: under any `not`,
                a NULL must be turned into FALSE before it is negated.
            audiences: Audience ids being inlined above this node (cycle detection).

        Raises:
            FilterLimitError: The tree, with referenced audiences and trait filters
                inlined, has more than MAX_TREE_DEPTH levels, MAX_TREE_NODES nodes or
                MAX_TREE_SUBQUERIES relation, event and trait conditions.
        """
        self._count(node, path=path)
        self._depth += 1
        try:
            return self._node(node, scope, path=path, negated=negated, audiences=audiences)
        finally:
            self._depth -= 1

    def _count(self, node: FilterNode, *, path: str) -> None:
        """Count one more node at the current depth against the tree limits."""
        self._nodes += 1
        if self._nodes > MAX_TREE_NODES:
            raise FilterLimitError(path, f"tree has more than {MAX_TREE_NODES} nodes {_INLINED}")
        if self._depth >= MAX_TREE_DEPTH:
            raise FilterLimitError(path, f"tree deeper than {MAX_TREE_DEPTH} levels {_INLINED}")
        if isinstance(node, RelationCondition | EventCondition | TraitCondition):
            self._subqueries += 1
            if self._subqueries > MAX_TREE_SUBQUERIES:
                raise FilterLimitError(
                    path,
                    f"tree has more than {MAX_TREE_SUBQUERIES} relation, event and trait "
                    "conditions (referenced audiences included)",
                )

    def _node(
        self,
        node: FilterNode,
        scope: Scope,
        *,
        path: str,
        negated: bool,
        audiences: tuple[str, ...],
    ) -> exp.Expression:
        if isinstance(node, AndNode | OrNode):
            parts = [
                self.predicate(
                    child,
                    scope,
                    path=join_path(path, "children", i),
                    negated=negated,
                    audiences=audiences,
                )
                for i, child in enumerate(node.children)
            ]
            if not parts:
                return exp.true() if isinstance(node, AndNode) else exp.false()
            return exp.and_(*parts) if isinstance(node, AndNode) else exp.or_(*parts)
        if isinstance(node, NotNode):
            inner = self.predicate(
                node.child,
                scope,
                path=join_path(path, "children", 0),
                negated=True,
                audiences=audiences,
            )
            return negate(inner)
        handler = self._handlers()[type(node)]
        return handler(node, scope, path=path, negated=negated, audiences=audiences)

    def _handlers(self) -> Mapping[type, Callable[..., exp.Expression]]:
        return {
            PropertyCondition: self._property,
            TraitCondition: self._trait,
            RelationCondition: self._relation,
            EventCondition: self._event,
            AudienceCondition: self._audience,
        }

    def _guard(
        self, pred: exp.Expression, value: exp.Expression, scope: Scope | None, *, negated: bool
    ) -> exp.Expression:
        """Make `pred` FALSE instead of NULL when `value` is NULL, if a `not` could see it."""
        if not negated:
            return pred  # WHERE already treats NULL as "not matched"
        if (
            scope is not None
            and isinstance(value, exp.Column)
            and value.table == scope.alias
            and value.name in scope.non_null
        ):
            return pred
        return exp.and_(is_not_null(value), pred)

    def _compare(
        self,
        value: exp.Expression,
        column_type: ColumnType,
        node: PropertyCondition | TraitCondition,
        *,
        path: str,
        what: str,
        exact: ExactRange | None = None,
    ) -> exp.Expression:
        spec = operator_spec(node.operator, column_type, path=path, what=what)
        literals = operator_values(
            spec, column_type, node.value, node.value2, path=path, exact=exact
        )
        return spec.build(value, literals, self.dialect)

    def _property(
        self, node: PropertyCondition, scope: Scope, *, path: str, negated: bool, **_: Any
    ) -> exp.Expression:
        ref, column = self.column(scope, node.column, path=join_path(path, "column"))
        # Numbers past an integer or DECIMAL column's range are compared by what they mean.
        exact = exact_range(column.warehouse_type, dialect=self.dialect)
        what = f"column '{node.column}'"
        pred = self._compare(ref, column.type, node, path=path, what=what, exact=exact)
        if node.operator in ("is_null", "is_not_null"):
            return pred  # never NULL itself
        return self._guard(pred, ref, scope, negated=negated)

    def _trait(
        self, node: TraitCondition, scope: Scope, *, path: str, negated: bool, **_: Any
    ) -> exp.Expression:
        from composable_dagster.filters.traits import trait_values

        trait_path = join_path(path, "trait_id")
        trait = self.schema.traits.get(node.trait_id)
        if trait is None:
            raise FilterError(trait_path, f"unknown trait {node.trait_id!r}")
        if trait.parent_model_id != scope.model.id:
            raise FilterError(
                trait_path,
                f"trait {trait.slug} belongs to model {self._model_name(trait.parent_model_id)}, "
                f"not to {scope.model.name}",
            )
        values = trait_values(self, trait, path=trait_path, outer_path=trait_path)
        t = self.fresh("t")
        value = col(t, "value")
        pred = self._compare(
            value,
            RESULT_COLUMN_TYPES[trait.result_type],
            node,
            path=path,
            what=f"trait '{trait.slug}'",
        )
        subquery = (
            exp.select(exp.alias_(col(t, "entity_key"), KEY, quoted=True))
            .from_(exp.Subquery(this=values, alias=exp.TableAlias(this=exp.to_identifier(t))))
            .where(is_not_null(col(t, "entity_key")))
            .where(pred)
        )
        key, _ = self.column(scope, scope.model.primary_key, path=trait_path)
        return self._guard(key_in(key, subquery), key, scope, negated=negated)

    def _audience(
        self,
        node: AudienceCondition,
        scope: Scope,
        *,
        path: str,
        negated: bool,
        audiences: tuple[str, ...],
    ) -> exp.Expression:
        id_path = join_path(path, "audience_id")
        audience = self.schema.audiences.get(node.audience_id)
        if audience is None:
            raise FilterError(id_path, f"unknown audience {node.audience_id!r}")
        if audience.parent_model_id != scope.model.id:
            raise FilterError(
                id_path,
                f"audience {audience.name} is built on model "
                f"{self._model_name(audience.parent_model_id)}, not on {scope.model.name}",
            )
        if audience.id in audiences:
            names = [self._audience_name(a) for a in audiences[audiences.index(audience.id) :]]
            cycle = " -> ".join([*names, audience.name])
            raise FilterCycleError(id_path, f"audience reference cycle: {cycle}")
        invalid = f"audience {audience.name} is invalid"
        try:
            tree = parse_filter_tree(audience.filter_tree, path="filter_tree")
        except FilterError as exc:  # its own tree, e.g. stored before a limit existed
            raise FilterError(id_path, f"{invalid}: {exc}") from None
        try:
            inner = self.predicate(
                tree,
                scope,
                path="filter_tree",
                negated=negated or node.operator == "is_not_member",
                audiences=(*audiences, audience.id),
            )
        except (FilterCycleError, FilterLimitError) as exc:
            # Each level re-raises at its own reference: the user sees the outermost one.
            raise type(exc)(id_path, exc.message) from None
        except FilterError as exc:
            raise FilterError(id_path, f"{invalid}: {exc}") from None
        return negate(inner) if node.operator == "is_not_member" else exp.paren(inner)

    def _audience_name(self, audience_id: str) -> str:
        audience = self.schema.audiences.get(audience_id)
        return audience.name if audience else audience_id

    # -- relation and event conditions ---------------------------------------------------

    def _relation(
        self, node: RelationCondition, scope: Scope, *, path: str, negated: bool, **_: Any
    ) -> exp.Expression:
        rows = self.relationship(
            node.relationship_id, scope, path=join_path(path, "relationship_id")
        )
        inner = self._nested(node.filters, rows, path=path)
        if node.quantifier == "all":
            where = [is_not_null(rows.key)]
            having = None
            if inner is not None:
                # A NULL nested predicate falls to ELSE: an unknown row is not a match.
                misses = exp.Sum(
                    this=exp.Case(ifs=[exp.If(this=inner, true=exp.Literal.number(0))]).else_(
                        exp.Literal.number(1)
                    )
                )
                having = exp.EQ(this=misses, expression=exp.Literal.number(0))
            return self._key_in(rows, scope, where=where, having=having, negated=negated)
        if node.quantifier == "none":
            return self._counted(rows, scope, inner, ("at_most", 0, None), negated, path=path)
        counts = self._count_args(node, path=path)
        return self._counted(rows, scope, inner, counts, negated, path=path)

    def _event(
        self, node: EventCondition, scope: Scope, *, path: str, negated: bool, **_: Any
    ) -> exp.Expression:
        rows = self.relationship(
            node.relationship_id, scope, path=join_path(path, "relationship_id")
        )
        target = rows.target
        if not target.timestamp_column:
            raise FilterError(
                join_path(path, "relationship_id"),
                f"relationship {rows.relationship.name} leads to model {target.name}, "
                "which has no timestamp_column: use a relation condition",
            )
        inner = self._nested(node.filters, rows, path=path)
        if node.time_window is not None:
            window_path = join_path(path, "time_window")
            if self.now is None:
                raise FilterError(window_path, "a time window needs `now`")
            bounds = window_bounds(node.time_window, now=self.now, path=window_path)
            ts, _ = self.column(rows.scope, target.timestamp_column, path=window_path)
            parts = [inner] if inner is not None else []
            if bounds.low is not None:
                kind = exp.GTE if bounds.low_inclusive else exp.GT
                parts.append(kind(this=ts.copy(), expression=timestamp_literal(bounds.low)))
            if bounds.high is not None:
                kind = exp.LTE if bounds.high_inclusive else exp.LT
                parts.append(kind(this=ts.copy(), expression=timestamp_literal(bounds.high)))
            inner = exp.and_(*parts) if parts else None
        counts = self._count_args(node, path=path)
        return self._counted(rows, scope, inner, counts, negated, path=path)

    def _nested(
        self, filters: FilterNode | None, rows: RelatedRows, *, path: str
    ) -> exp.Expression | None:
        if filters is None:
            return None
        return self.predicate(filters, rows.scope, path=join_path(path, "filters"))

    @staticmethod
    def _count_args(
        node: RelationCondition | EventCondition, *, path: str
    ) -> tuple[str, int, int | None]:
        if node.count_value < 0:
            raise FilterError(join_path(path, "count_value"), "count_value must be >= 0")
        # Row counts are BIGINTs; a larger literal does not even bind on DuckDB.
        for name in ("count_value", "count_value2"):
            value = getattr(node, name)
            if value is not None and value > _MAX_COUNT:
                raise FilterError(join_path(path, name), f"{name} must be <= {_MAX_COUNT}")
        if node.count_operator == "between":
            if node.count_value2 is None:
                raise FilterError(join_path(path, "count_value2"), "'between' needs count_value2")
            if node.count_value2 < node.count_value:
                raise FilterError(
                    join_path(path, "count_value2"), "count_value2 must be >= count_value"
                )
        return node.count_operator, node.count_value, node.count_value2

    def _counted(
        self,
        rows: RelatedRows,
        scope: Scope,
        inner: exp.Expression | None,
        counts: tuple[str, int, int | None],
        negated: bool,
        *,
        path: str,
    ) -> exp.Expression:
        """Parents whose number of matching related rows satisfies the count operator.

        Operators whose range includes 0 are compiled as the complement of a positive key
        set (``at_most 2`` = not ``at_least 3``), so parents without any related row count.
        """
        op, low, high = counts
        if op == "at_most":
            low, high = 0, low
        elif op == "exactly":
            high = low
        elif op == "at_least":
            high = None
        lit = exp.Literal.number
        if low <= 0:
            if high is None:
                return exp.true()  # at least 0
            complement, high = exp.GT(this=count_star(), expression=lit(high)), None
        else:
            complement = None
        where = [is_not_null(rows.key)] + ([inner] if inner is not None else [])
        if complement is not None:
            having = None if complement.expression.this == "0" else complement
            return negate(self._key_in(rows, scope, where=where, having=having, negated=True))
        if high is None:
            having = None if low == 1 else exp.GTE(this=count_star(), expression=lit(low))
        elif high == low:
            having = exp.EQ(this=count_star(), expression=lit(low))
        else:
            having = exp.Between(this=count_star(), low=lit(low), high=lit(high))
        return self._key_in(rows, scope, where=where, having=having, negated=negated)

    def _key_in(
        self,
        rows: RelatedRows,
        scope: Scope,
        *,
        where: Sequence[exp.Expression],
        having: exp.Expression | None,
        negated: bool,
    ) -> exp.Expression:
        near, _ = self.column(scope, rows.relationship.from_column, path="")
        query = rows.source.copy().select(exp.alias_(rows.key.copy(), KEY, quoted=True))
        query = query.where(self.conjunction(where))
        if having is not None:
            query = query.group_by(rows.key.copy()).having(having)
        return self._guard(key_in(near, query), near, scope, negated=negated)

    def conjunction(self, parts: Sequence[exp.Expression]) -> exp.Expression:
        """AND of predicates for a WHERE clause, with negated key sets as anti-joins where
        the dialect plans NOT EXISTS better than NOT IN (PostgreSQL)."""
        flat: list[exp.Expression] = []
        for part in parts:
            flat.extend(_conjuncts(part))
        if self.dialect == "postgres":
            flat = [_not_exists(p) or p for p in flat]
        flat = [p for p in flat if not (isinstance(p, exp.Boolean) and p.this)]
        return exp.and_(*flat) if flat else exp.true()


def _conjuncts(pred: exp.Expression) -> list[exp.Expression]:
    # Iterative: `exp.and_` nests one level per child, and a group may have ~1000 children.
    out: list[exp.Expression] = []
    stack = [pred]
    while stack:
        part = stack.pop()
        while isinstance(part, exp.Paren):
            part = part.this
        if isinstance(part, exp.And):
            stack += [part.expression, part.this]
        else:
            out.append(part)
    return out


def _not_exists(pred: exp.Expression) -> exp.Expression | None:
    """``NOT (k IN (SELECT fk ...))`` -> ``NOT EXISTS (SELECT 1 FROM (...) s WHERE s.fk = k)``.

    Only the top-level conjuncts of a WHERE are rewritten: that is where PostgreSQL turns
    NOT EXISTS into a hash anti-join; elsewhere a hashed NOT IN subplan is as good.
    """
    if not isinstance(pred, exp.Not):
        return None
    inner = pred.this
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.And):  # the NULL guard: NOT (k IS NOT NULL AND k IN (...))
        parts = _conjuncts(inner)
        if len(parts) != 2 or not isinstance(parts[1], exp.In):
            return None
        if not _is_not_null_of(parts[0], parts[1].this):
            return None  # a real AND (`not(and(x, relation))`): rewriting would drop x
        inner = parts[1]
    if not isinstance(inner, exp.In) or inner.args.get("query") is None:
        return None
    query = inner.args["query"]
    query = query.this if isinstance(query, exp.Subquery) else query
    probe = (
        exp.select(exp.Literal.number(1))
        .from_(exp.Subquery(this=query.copy(), alias=exp.TableAlias(this=exp.to_identifier("s"))))
        .where(exp.EQ(this=col("s", KEY), expression=inner.this.copy()))
    )
    return exp.not_(exp.Exists(this=probe))


def _is_not_null_of(pred: exp.Expression, key: exp.Expression) -> bool:
    """Whether `pred` is exactly ``key IS NOT NULL``: the one conjunct NOT EXISTS can absorb,
    since ``NOT EXISTS (... s.fk = NULL)`` is TRUE, as ``NOT (NULL IS NOT NULL AND ...)`` is."""
    while isinstance(pred, exp.Paren):
        pred = pred.this
    if not isinstance(pred, exp.Not):
        return False
    inner = pred.this
    while isinstance(inner, exp.Paren):
        inner = inner.this
    return (
        isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null) and inner.this == key
    )


def model_rows(model: ModelDef, *, dialect: str, path: str) -> exp.Table | exp.Subquery:
    """A model's rows as a FROM item without alias: its table, or its SQL as a subquery.

    Stored SQL and table names are checked again here (filters/user_sql.py), every time they
    are compiled: a row saved before a rule existed meets it. Everything that reads a
    model (audience queries, the sync plan) goes through this one function.
    """
    what = f"model {model.name}"
    if model.sql is not None and model.table is None:
        return exp.Subquery(this=parse_select(model.sql, dialect=dialect, field=path, what=what))
    if not model.table:
        raise FilterError(path, f"{what} has neither a table nor SQL")
    # `schema.table` (the catalog refuses dots inside either name): a dotted table name
    # leaves its dots in the schema part, which is refused, never extra name parts.
    schema, _, table = model.table.rpartition(".")
    return table_reference(
        table,
        schema=schema or None,
        dialect=dialect,
        table_field=path,
        schema_field=path,
        what=what,
    )


def check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise FilterError("dialect", f"unsupported dialect {dialect!r}; expected one of {DIALECTS}")


def _root(
    tree: FilterNode | Mapping[str, Any],
    *,
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime | None,
    dialect: str,
    audience_id: str | None,
    path: str = "filter_tree",
) -> tuple[Compiler, Scope, exp.Expression]:
    check_dialect(dialect)
    node = parse_filter_tree(tree, path=path)
    compiler = Compiler(schema=schema, dialect=dialect, now=to_utc_naive(now) if now else None)
    parent = compiler.model(parent_model_id, path="parent_model_id")
    scope = Scope(parent, PARENT_ALIAS, frozenset({parent.primary_key}))
    compiler.column(scope, parent.primary_key, path="parent_model_id")
    audiences: tuple[str, ...] = ()
    if audience_id is not None:
        audience = schema.audiences.get(audience_id)
        if audience is not None and audience.parent_model_id != parent_model_id:
            raise FilterError(
                "parent_model_id", f"audience {audience.name} is built on another model"
            )
        audiences = (audience_id,)
    pred = compiler.predicate(node, scope, path=path, audiences=audiences)
    return compiler, scope, pred


def _members_select(
    compiler: Compiler,
    scope: Scope,
    pred: exp.Expression,
    *projections: exp.Expression,
    null_keys: bool = False,
) -> exp.Select:
    key = col(scope.alias, scope.model.primary_key)
    parts = [pred]
    # Rows without a key are never members (with `null_keys` the caller drops and counts
    # them). The explicit check is skipped when the catalog says the key is NOT NULL or a
    # top-level `key IN (...)` already drops NULL keys: on DuckDB it otherwise stops the IN
    # from being planned as a plain semi-join (~2x slower).
    keyed = any(isinstance(c, exp.In) and c.this == key for c in _conjuncts(pred))
    if scope.model.columns[scope.model.primary_key].nullable and not keyed and not null_keys:
        parts.insert(0, is_not_null(key))
    return (
        exp.select(*projections)
        .from_(compiler.source(scope.model, scope.alias, path="parent_model_id"))
        .where(compiler.conjunction(parts))
    )


def _render(query: exp.Expression, dialect: str) -> CompiledQuery:
    return CompiledQuery(sql=query.sql(dialect=dialect), expression=query, dialect=dialect)


def validate_filter_tree(
    tree: FilterNode | Mapping[str, Any],
    *,
    parent_model_id: str,
    schema: CatalogSchema,
    path: str = "filter_tree",
    audience_id: str | None = None,
) -> None:
    """Check that a tree means something against the catalog.

    Validation is the compiler's resolution pass with the SQL thrown away, so what
    validates always compiles. Relative time windows are resolved against a fixed instant.

    Args:
        tree: Parsed tree or its JSON.
        parent_model_id: The model whose entities the tree selects.
        schema: The workspace catalog.
        path: JSON path of the tree, prefix of error paths.
        audience_id: The audience this tree belongs to, if any, so that references back to
            it are reported as cycles.

    Raises:
        FilterError: The first problem found, with its JSON path.
    """
    _root(
        tree,
        parent_model_id=parent_model_id,
        schema=schema,
        now=datetime(2000, 1, 1),
        dialect="duckdb",
        audience_id=audience_id,
        path=path,
    )


def compile_members(
    tree: FilterNode | Mapping[str, Any],
    *,
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    dialect: str = "duckdb",
    audience_id: str | None = None,
    null_keys: bool = False,
) -> CompiledQuery:
    """SQL selecting the audience members: one column ``entity_key``, one row per matching
    parent row (a key the parent model holds twice appears twice), from the parent model
    aliased ``PARENT_ALIAS``.

    Rows whose key is NULL are never members. With `null_keys` they are kept (with a NULL
    ``entity_key``) so the caller can count them; otherwise they are filtered out.

    Args:
        tree: Parsed tree or its JSON.
        parent_model_id: The parent model; its primary key becomes ``entity_key``.
        schema: The workspace catalog.
        now: The instant relative time windows count back from.
        dialect: One of duckdb, postgres, snowflake, bigquery, databricks.
        audience_id: The audience the tree belongs to (for cycle detection), if any.

    Raises:
        FilterError: The tree is invalid for this catalog.
    """
    compiler, scope, pred = _root(
        tree,
        parent_model_id=parent_model_id,
        schema=schema,
        now=now,
        dialect=dialect,
        audience_id=audience_id,
    )
    key = col(scope.alias, scope.model.primary_key)
    select = _members_select(
        compiler, scope, pred, exp.alias_(key, "entity_key", quoted=True), null_keys=null_keys
    )
    return _render(select, dialect)


def compile_count(
    tree: FilterNode | Mapping[str, Any],
    *,
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    dialect: str = "duckdb",
    audience_id: str | None = None,
) -> CompiledQuery:
    """SQL selecting one row, one column ``estimated_size``: the number of members.

    Arguments as for `compile_members`.
    """
    compiler, scope, pred = _root(
        tree,
        parent_model_id=parent_model_id,
        schema=schema,
        now=now,
        dialect=dialect,
        audience_id=audience_id,
    )
    size = exp.alias_(count_star(), "estimated_size", quoted=True)
    return _render(_members_select(compiler, scope, pred, size), dialect)


def compile_preview(
    tree: FilterNode | Mapping[str, Any],
    *,
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    dialect: str = "duckdb",
    limit: int = MAX_PREVIEW_ROWS,
    columns: Sequence[str] | None = None,
    audience_id: str | None = None,
) -> CompiledQuery:
    """SQL selecting a sample of members with a few attributes, ordered by primary key.

    Args:
        tree: Parsed tree or its JSON.
        parent_model_id: The parent model.
        schema: The workspace catalog.
        now: The instant relative time windows count back from.
        dialect: Target SQL dialect.
        limit: Rows wanted; capped at 100.
        columns: Parent columns to show besides the primary key. Default: the columns the
            tree's property conditions use, then other columns in model order, five at most.
        audience_id: The audience the tree belongs to (for cycle detection), if any.

    Returns:
        A query with the primary key (under its own name), the columns, and one column per
        trait the tree uses, named by the trait's slug.
    """
    from composable_dagster.filters.refs import property_columns, trait_ids_in_order
    from composable_dagster.filters.traits import trait_values

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise FilterError("limit", f"limit must be a non-negative integer, got {limit!r}")
    node = parse_filter_tree(tree)
    compiler, scope, pred = _root(
        node,
        parent_model_id=parent_model_id,
        schema=schema,
        now=now,
        dialect=dialect,
        audience_id=audience_id,
    )
    model = scope.model
    pk = model.primary_key
    if columns is None:
        wanted = [c for c in property_columns(node) if c in model.columns]
        wanted += list(model.columns)
        chosen: list[str] = []
        for name in wanted:
            if name != pk and name not in chosen and len(chosen) < 5:
                chosen.append(name)
    else:
        chosen = []
        for i, name in enumerate(columns):
            compiler.column(scope, name, path=join_path("columns", i))
            if name != pk and name not in chosen:
                chosen.append(name)
    projections: list[exp.Expression] = [col(scope.alias, pk)]
    projections += [col(scope.alias, name) for name in chosen]
    query = _members_select(compiler, scope, pred)
    taken = {pk, *chosen}
    for trait_id in trait_ids_in_order(node):
        trait = schema.traits[trait_id]
        if trait.parent_model_id != model.id:
            continue
        t = compiler.fresh("tv")
        values = trait_values(compiler, trait, path="filter_tree", outer_path="filter_tree")
        query = query.join(
            exp.Subquery(this=values, alias=exp.TableAlias(this=exp.to_identifier(t))),
            on=exp.EQ(this=col(t, "entity_key"), expression=col(scope.alias, pk)),
            join_type="left",
        )
        name = trait.slug if trait.slug not in taken else f"trait_{trait.slug}"
        taken.add(name)
        projections.append(exp.alias_(col(t, "value"), name, quoted=True))
    query = (
        query.select(*projections)
        .order_by(col(scope.alias, pk))
        .limit(min(limit, MAX_PREVIEW_ROWS))
    )
    return _render(query, dialect)


def compile_trait_values(
    trait: TraitDef,
    *,
    schema: CatalogSchema,
    dialect: str = "duckdb",
    now: datetime | None = None,
) -> CompiledQuery:
    """SQL selecting ``(entity_key, value)`` for every entity of the trait's parent model.

    Args:
        trait: The computed attribute.
        schema: The workspace catalog (relationships, models, other traits).
        dialect: Target SQL dialect.
        now: Needed only when the trait's filter uses a relative time window.

    Raises:
        FilterError: The trait's config is invalid (paths start at ``config``).
    """
    from composable_dagster.filters.traits import trait_values

    check_dialect(dialect)
    compiler = Compiler(schema=schema, dialect=dialect, now=to_utc_naive(now) if now else None)
    return _render(trait_values(compiler, trait, path="config", outer_path=None), dialect)


def validate_trait(trait: TraitDef, *, schema: CatalogSchema, path: str = "config") -> None:
    """Check a trait's config against the catalog (the compiler's pass, SQL discarded).

    Raises:
        FilterError: The first problem, with a path under `path`.
    """
    from composable_dagster.filters.traits import check_config_keys, trait_values

    check_config_keys(trait, path=path)
    compiler = Compiler(schema=schema, dialect="duckdb", now=datetime(2000, 1, 1))
    trait_values(compiler, trait, path=path, outer_path=None)
