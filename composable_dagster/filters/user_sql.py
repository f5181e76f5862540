"""The one parser of workspace SQL: model `sql_query`, `sql` traits, previews, table models.

Workspace SQL runs with the warehouse's credentials, beside other workspaces' data (the
activation store) and next to the catalog, so it must be exactly one read-only query that
reaches only warehouse tables. What a query may not do, per dialect (`RULES`, data only):

- be anything but one SELECT / UNION / WITH, or hold a statement inside one (a
  data-modifying CTE, ``SELECT ... INTO``, ``FOR UPDATE``, ``DESCRIBE``);
- call a table function (``read_text``, ``glob``, ``query``, ``dblink`` ...) other than the
  few data generators a dialect allows (``range``, ``generate_series``, ``unnest`` ...);
- use a file path or URL as a table (DuckDB reads ``FROM '/etc/passwd'`` as a file);
- name another database (a catalog-qualified name), a reserved schema (our activation
  store, the system catalogs) or a system relation (``pg_class``, ``duckdb_tables``);
- call a scalar function that reaches files, settings, sequences or other databases.

The engine itself is sandboxed too (warehouse/sandbox.py, read-only PostgreSQL sessions);
this parser is what stops reads of files the sandbox must keep open (the database files
themselves) and of tables that share the engine. Every refusal is a `FilterError` naming
the field, answered 400. Only what sqlglot renders from the checked tree ever runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from composable_dagster.filters.errors import FilterError

# Characters of file paths, URLs and globs: no warehouse table name needs them.
_PATH_CHARACTERS = frozenset("/\\:.*?[]{}~")
_SHOWN_CHARACTERS = 80  # of a refused construct, in the message


@dataclass(frozen=True, slots=True)
class Names:
    """A set of names and name prefixes, matched case-insensitively."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lowered = name.lower()
        return lowered in self.exact or lowered.startswith(self.prefixes)

    def __or__(self, other: Names) -> Names:
        return Names(self.exact | other.exact, self.prefixes + other.prefixes)


def names(*items: str) -> Names:
    """`Names` from strings; one ending in `*` is a prefix."""
    return Names(
        frozenset(i for i in items if not i.endswith("*")),
        tuple(i.removesuffix("*") for i in items if i.endswith("*")),
    )


@dataclass(frozen=True, slots=True)
class SqlRules:
    """What workspace SQL of one dialect may reach."""

    table_functions: Names  # allowed as FROM items: data generators without I/O
    denied_functions: Names  # anywhere in the query
    reserved_schemas: Names
    system_relations: Names  # system catalog tables and views, whatever their schema
    catalog_names: bool  # whether catalog.schema.table may name another database


_COMMON = SqlRules(
    table_functions=Names(),
    denied_functions=names("current_setting", "set_config", "nextval", "currval", "setval"),
    # Our activation store holds every workspace's members and delivered values; the
    # system schemas list every table of the engine (other workspaces' audiences included).
    reserved_schemas=names("composable_activation", "information_schema", "pg_catalog"),
    system_relations=Names(),
    catalog_names=True,
)

# DuckDB: environment and settings, and every table function, should one be called as a
# scalar (files, globs, SQL strings, catalog listings, other engines' scanners).
_DUCKDB_DENIED = names(
    "getenv", "getvariable", "which_secret", "glob", "query", "query_table", "sniff_csv",
    "json_execute_serialized_sql", "import_database", "copy_database", "checkpoint",
    "force_checkpoint", "seq_scan", "arrow_scan*", "pandas_scan", "python_*", "read_*",
    "duckdb_*", "pragma_*", "parquet_*", "sqlite_*", "iceberg_*", "delta_*", "postgres_*",
    "mysql_*", "icu_*", "test_*", "enable_*", "disable_*",
)  # fmt: skip
_DUCKDB_SYSTEM = names("duckdb_*", "pg_*", "sqlite_master", "sqlite_schema", "sqlite_temp_*")
_DUCKDB = SqlRules(
    table_functions=names("range", "generate_series", "unnest"),
    denied_functions=_COMMON.denied_functions | _DUCKDB_DENIED,
    # DuckDB resolves `x.t` as catalog x when no schema x exists: database names count.
    reserved_schemas=_COMMON.reserved_schemas | names("activation", "system", "temp", "memory"),
    system_relations=_DUCKDB_SYSTEM,
    catalog_names=False,
)

_POSTGRES_TABLE_FUNCTIONS = names(
    "generate_series", "generate_subscripts", "unnest", "json_each", "json_each_text",
    "jsonb_each", "jsonb_each_text", "json_array_elements", "json_array_elements_text",
    "jsonb_array_elements", "jsonb_array_elements_text", "json_object_keys",
    "jsonb_object_keys", "json_to_record", "json_to_recordset", "jsonb_to_record",
    "jsonb_to_recordset", "jsonb_path_query", "regexp_matches", "regexp_split_to_table",
    "string_to_table",
)  # fmt: skip
# pg_*: server files (pg_read_file, pg_ls_dir, pg_stat_file), other sessions
# (pg_terminate_backend), locks and sleeps (pg_advisory_lock, pg_sleep), the server itself
# (pg_reload_conf). lo_*: server files through large objects. dblink: other databases.
# *_to_xml, ts_stat, ts_rewrite, crosstab, connectby: run a SQL string.
_POSTGRES_DENIED = names(
    "pg_*", "lo_*", "loread", "lowrite", "dblink*", "query_to_xml*", "table_to_xml*",
    "cursor_to_xml*", "schema_to_xml*", "database_to_xml*", "ts_stat", "ts_rewrite",
    "crosstab*", "connectby", "binary_upgrade_*", "txid_current*",
)  # fmt: skip
_POSTGRES = SqlRules(
    table_functions=_POSTGRES_TABLE_FUNCTIONS,
    denied_functions=_COMMON.denied_functions | _POSTGRES_DENIED,
    reserved_schemas=_COMMON.reserved_schemas | names("pg_*"),  # pg_toast, pg_temp_3 ...
    system_relations=names("pg_*"),  # pg_catalog is on every search path
    catalog_names=False,
)

RULES: Mapping[str, SqlRules] = {"duckdb": _DUCKDB, "postgres": _POSTGRES}

# Nodes that are statements or side effects, refused anywhere inside the query.
_STATEMENTS: tuple[type[exp.Expression], ...] = (
    exp.DDL, exp.DML, exp.Drop, exp.Alter, exp.Command, exp.Into, exp.Lock, exp.Describe,
    exp.Summarize, exp.Show, exp.Set, exp.Pragma, exp.Use, exp.Attach, exp.Detach,
    exp.Install, exp.Transaction, exp.Commit, exp.Rollback, exp.Grant, exp.Revoke,
    exp.Analyze, exp.Cache, exp.Uncache, exp.Refresh, exp.LoadData, exp.Export, exp.Kill,
    exp.TruncateTable, exp.Comment, exp.Declare, exp.Execute,
)  # fmt: skip
_PARAMETERS = (exp.Placeholder, exp.Parameter, exp.SessionParameter)


def rules_for(dialect: str) -> SqlRules:
    """The dialect's rules; an unknown dialect gets the common ones (no table functions)."""
    return RULES.get(dialect, _COMMON)


def parse_select(sql: str, *, dialect: str, field: str, what: str | None = None) -> exp.Query:
    """Parse workspace SQL that must be exactly one query reaching only warehouse tables.

    Args:
        sql: The SQL as the workspace sent it.
        dialect: sqlglot dialect of the warehouse.
        field: JSON path of the SQL, named by every error (`sql_query`, `config.sql` ...).
        what: Prefix of the messages (e.g. `model big spenders`), for SQL stored elsewhere.

    Raises:
        FilterError: The SQL does not parse, is not one query, or reaches beyond the
            warehouse's tables (see the module docstring).
    """
    checker = _Checker(rules_for(dialect), dialect=dialect, field=field, what=what)
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as err:  # ParseError and the tokenizer's TokenError alike
        checker.refuse(f"not valid SQL: {_syntax_error(err)}")
    except RecursionError:
        checker.refuse("not valid SQL: nested too deeply")
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        checker.refuse("must be exactly one SELECT statement")
    checker.check(statements[0])
    return statements[0]


def table_reference(
    table: str,
    *,
    schema: str | None,
    dialect: str,
    table_field: str,
    schema_field: str,
    what: str | None = None,
) -> exp.Table:
    """A table model's `schema.table` as a quoted table, under the same rules as SQL.

    Each name is one identifier: a dot is refused, never split into more name parts.
    """
    checker = _Checker(rules_for(dialect), dialect=dialect, field=table_field, what=what)
    if schema is not None:
        replace(checker, field=schema_field).check_name(schema, kind="schema")
    checker.check_name(table, kind="table")
    reference = exp.table_(table, db=schema, quoted=True)
    checker.check_table(reference)
    return reference


@dataclass(frozen=True, slots=True)
class _Checker:
    rules: SqlRules
    dialect: str
    field: str
    what: str | None

    def refuse(self, message: str) -> NoReturn:
        raise FilterError(self.field, f"{self.what}: {message}" if self.what else message)

    def refuse_construct(self, node: exp.Expression, reason: str) -> NoReturn:
        self.refuse(f"{_shown(node, self.dialect)} is not allowed: {reason}")

    def check(self, query: exp.Query) -> None:
        for node in query.walk():
            if isinstance(node, _STATEMENTS):
                self.refuse(
                    f"{node.key.upper()} is not allowed: workspace SQL is one read-only query"
                )
            if isinstance(node, _PARAMETERS):
                self.refuse_construct(node, "workspace SQL may not use parameters")
            if isinstance(node, exp.Table):
                self.check_table(node)
            for function in _from_item_functions(node):
                allowed = self.rules.table_functions
                if not any(n in allowed for n in _function_names(function, self.dialect)):
                    self.refuse_construct(function, "workspace SQL may not call table functions")
            if isinstance(node, exp.Func):
                denied = self.rules.denied_functions
                if any(n in denied for n in _function_names(node, self.dialect, rendered=False)):
                    self.refuse_construct(
                        node,
                        "workspace SQL may not call functions that reach files, settings, "
                        "sequences or other databases",
                    )
            if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
                self.check_qualifier(node)

    def check_table(self, table: exp.Table) -> None:
        catalog, db = table.args.get("catalog"), table.args.get("db")
        if (
            catalog is not None or isinstance(table.this, exp.Dot)
        ) and not self.rules.catalog_names:
            self.refuse_construct(table, "workspace SQL may not name another database")
        if db is not None and db.name in self.rules.reserved_schemas:
            self.refuse_construct(table, f"the schema {db.name!r} is reserved")
        if not isinstance(table.this, (exp.Identifier, exp.Dot)):
            return  # a table function (or ROWS FROM): checked as a FROM item
        for part in (catalog, db, table.this):
            for identifier in part.find_all(exp.Identifier) if part is not None else ():
                if _PATH_CHARACTERS & set(identifier.name):
                    self.refuse_construct(
                        table, "workspace SQL reads warehouse tables, not file paths or URLs"
                    )
        if table.name in self.rules.system_relations:
            self.refuse_construct(table, "workspace SQL may not read system catalogs")

    def check_qualifier(self, dot: exp.Dot) -> None:
        """`schema.function(...)`: the built-in schemas hold the system's functions."""
        for identifier in dot.this.find_all(exp.Identifier):
            if identifier.name in self.rules.reserved_schemas:
                self.refuse_construct(dot, f"the schema {identifier.name!r} is reserved")

    def check_name(self, name: str, *, kind: str) -> None:
        """A schema or table name given on its own (a table model's source)."""
        if not name.strip():
            self.refuse(f"a {kind} name may not be empty")
        if _PATH_CHARACTERS & set(name):
            self.refuse(f"{name!r} is not a {kind} name: a name has no dots, slashes or wildcards")
        if kind == "schema" and name in self.rules.reserved_schemas:
            self.refuse(f"the schema {name!r} is reserved")


def _from_item_functions(node: exp.Expression) -> Iterator[exp.Func]:
    """The functions `node` uses as FROM items (table functions), when it is a FROM position."""
    if isinstance(node, exp.Table):
        candidates = [node.this, *(node.args.get("rows_from") or [])]
    elif isinstance(node, (exp.Lateral, exp.From, exp.Join)):
        candidates = [node.this]
    else:
        return
    yield from (c for c in candidates if isinstance(c, exp.Func))


def _function_names(function: exp.Func, dialect: str, *, rendered: bool = True) -> set[str]:
    """The names a function call goes by: as typed, sqlglot's own, and (`rendered`) as the
    dialect spells it (DuckDB's `range(3)` parses as GenerateSeries)."""
    if isinstance(function, exp.Anonymous):
        return {function.name.lower()}
    found = {n.lower() for n in type(function).sql_names()}
    if rendered:
        head = function.sql(dialect=dialect).split("(", 1)[0]
        found.add(head.strip().strip('"').lower())
    return found


def _syntax_error(err: SqlglotError) -> str:
    """sqlglot's first complaint; the tokenizer's names its cause in the error it chains."""
    details = getattr(err, "errors", None)
    if details and details[0].get("description"):
        return str(details[0]["description"])
    lines = str(err).splitlines() or [type(err).__name__]
    cause = err.__cause__ or err.__context__
    if isinstance(cause, SqlglotError) and str(cause):
        return f"{lines[0]} ({str(cause).splitlines()[0]})"
    return lines[0]


def _shown(node: exp.Expression, dialect: str) -> str:
    """A refused construct as the user wrote it, near enough (function names as typed)."""
    if isinstance(node, exp.Anonymous):
        arguments = ", ".join(a.sql(dialect=dialect) for a in node.expressions)
        text = f"{node.name}({arguments})"
    else:
        text = node.sql(dialect=dialect)
    if len(text) > _SHOWN_CHARACTERS:
        text = text[: _SHOWN_CHARACTERS - 1] + "…"
    return text
