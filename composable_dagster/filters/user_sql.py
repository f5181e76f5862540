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
- call a scalar function that reaches files, settings, secrets, sequences, the catalog or
  other databases, runs SQL text or plans, or sleeps; on DuckDB, call any function that is
  not on the reviewed list of its built-in ones (`SqlRules.allowed_functions`);
- nest deeper than `MAX_NESTING` levels of brackets, CASE and unary operators (counted over
  sqlglot's tokens, before its recursive parser runs) or `MAX_DEPTH` levels of expressions,
  so whether a query is accepted never depends on how deep the caller's stack is;
- be something sqlglot parses but cannot render for the dialect.

The engine itself is sandboxed too (warehouse/sandbox.py, read-only PostgreSQL sessions);
this parser is what stops reads of files the sandbox must keep open (the database files
themselves) and of tables that share the engine. Every refusal is a `FilterError` naming
the field, answered 400. Only what sqlglot renders from the checked tree ever runs, and
`parse_select` renders it once itself, so that rendering cannot fail later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, SqlglotError
from sqlglot.tokens import Token, TokenType

from composable_dagster.filters.errors import FilterError

# Characters of file paths, URLs and globs: no warehouse table name needs them.
_PATH_CHARACTERS = frozenset("/\\:.*?[]{}~")
_SHOWN_CHARACTERS = 80  # of a refused construct, in the message
# sqlglot's parser and generator recurse once (or a few frames) per level: at these bounds a
# query needs a few hundred frames at most, so the answer is the same at any call depth.
MAX_NESTING = 64  # brackets, CASE ... END and unary operators (NOT NOT ..., - - ...)
MAX_DEPTH = 128  # levels of expressions, as the generator recurses over them
_OPENING = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSING = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
_UNARY = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})


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
    denied_functions: Names  # anywhere in the query, by any name the call goes by
    reserved_schemas: Names
    system_relations: Names  # system catalog tables and views, whatever their schema
    catalog_names: bool  # whether catalog.schema.table may name another database
    # Functions sqlglot does not know (it parses them as anonymous calls) that may be called;
    # None: any that is not denied.
    allowed_functions: Names | None = None


_COMMON = SqlRules(
    table_functions=Names(),
    denied_functions=names("current_setting", "set_config", "nextval", "currval", "setval"),
    # Our activation store holds every workspace's members and delivered values; the
    # system schemas list every table of the engine (other workspaces' audiences included).
    reserved_schemas=names("composable_activation", "information_schema", "pg_catalog"),
    system_relations=Names(),
    catalog_names=True,
)

# DuckDB, reviewed against `SELECT function_name FROM duckdb_functions()` of DuckDB 2.0.1.
# Denied, by what they reach (refused whatever name sqlglot gives them):
_DUCKDB_DENIED = names(
    # SQL text or plans, run or bound by the engine (the binder reads any table for them)
    "query", "query_table", "json_serialize_*", "json_deserialize_*", "json_execute_*",
    "current_query", "current_query_id",
    # settings, variables, secrets, the session and the catalog
    "getenv", "getvariable", "which_secret", "setseed", "version", "current_database",
    "current_catalog", "current_schema", "current_schemas", "current_user", "current_role",
    "session_user", "user", "in_search_path", "get_block_size", "current_connection_id",
    "current_transaction_id", "txid_current", "index_key", "stats", "col_description",
    "obj_description", "shobj_description", "format_pg_type", "format_type",
    "map_to_pg_oid", "map_type_id_to_pg_oid", "has_*", "inet_*", "pg_*",
    # files, logs, other engines' scanners and table functions called as scalars
    "glob", "sniff_csv", "read_*", "parquet_*", "sqlite_*", "iceberg_*", "delta_*",
    "postgres_*", "mysql_*", "arrow_scan*", "pandas_scan", "python_*", "seq_scan",
    "import_database", "copy_database", "checkpoint", "force_checkpoint", "write_log",
    "parse_duckdb_log_message", "truncate_duckdb_logs", "duckdb_*", "pragma_*", "test_*",
    "enable_*", "disable_*", "icu_calendar_names", "summary", "repeat_row",
    "create_external_resource", "register_external_resource*", "deregister_external_resource",
    "destroy_external_resource", "add_grammar_extension", "remove_grammar_extension",
    # time: a query that sleeps holds the run's writer lock (and a connection) for nothing
    "sleep_ms",
    # aggregate states and engine-internal bytes, decoded from values the query makes up
    "finalize", "combine", "combine_aggr", "to_aggregate_state", "variant_bytes_to_variant",
    "variant_to_parquet_variant", "variant_comparator", "__*",
)  # fmt: skip
# Allowed: the rest of its built-in scalar, aggregate and window functions, by family. A
# function a later DuckDB adds stays refused until it is reviewed and listed here.
_DUCKDB_FUNCTIONS = names(
    # families: lists and arrays, maps, structs, unions, enums, JSON, geometry, variants
    "list_*", "array_*", "map_*", "struct_*", "union_*", "enum_*", "json_*", "st_*",
    "variant_*", "regexp_*", "str_*", "string_*", "jaro_*", "collate_*", "icu_collate_*",
    "date*", "epoch*", "make_*", "to_*", "timezone*", "uuid*", "md5*", "sha*", "bit*",
    "format*", "parse_*", "regr_*", "arg_*", "approx_*", "quantile*", "stddev*", "var_*",
    "covar_*", "kurtosis*",
    # numbers
    "abs", "acos", "acosh", "add", "asin", "asinh", "atan", "atan2", "atanh", "bin", "binom",
    "cbrt", "ceil", "ceiling", "cos", "cosh", "cot", "decimal_division", "degrees", "divide",
    "equi_width_bins", "even", "exp", "factorial", "fdiv", "floor", "fmod", "gamma", "gcd",
    "greatest", "greatest_common_divisor", "hex", "isfinite", "isinf", "isnan", "lcm",
    "least", "least_common_multiple", "lgamma", "ln", "log", "log10", "log2", "mod",
    "multiply", "nextafter", "pi", "pow", "power", "radians", "random", "round", "round_even",
    "roundbankers", "sign", "signbit", "sin", "sinh", "sqrt", "subtract", "tan", "tanh",
    "trunc", "unbin", "unhex", "xor", "get_bit", "set_bit", "hash",
    # text
    "ascii", "bar", "base64", "char_length", "character_length", "chr", "concat",
    "concat_ws", "contains", "damerau_levenshtein", "decode", "editdist3", "encode",
    "ends_with", "from_base64", "from_binary", "from_hex", "hamming", "ilike_escape", "instr",
    "jaccard", "lcase", "left", "left_grapheme", "len", "length", "length_grapheme",
    "levenshtein", "like_escape", "lower", "lpad", "ltrim", "mismatches", "nfc_normalize",
    "not_ilike_escape", "not_like_escape", "octet_length", "ord", "overlay", "position",
    "prefix", "printf", "repeat", "replace", "reverse", "right", "right_grapheme", "rpad",
    "rtrim", "split", "split_part", "starts_with", "strftime", "strip_accents", "strlen",
    "strpos", "strptime", "substr", "substring", "substring_grapheme", "suffix", "translate",
    "trim", "try_strptime", "ucase", "unicode", "upper", "url_decode", "url_encode",
    "hive_partition_component", "path_join", "icu_sort_key", "create_sort_key",
    # dates and times (the clock of the query's transaction)
    "age", "ago", "century", "current_date", "current_localtime", "current_localtimestamp",
    "day", "dayname", "dayofmonth", "dayofweek", "dayofyear", "days_in_month", "decade",
    "era", "get_current_time", "get_current_timestamp", "hour", "isodow", "isoyear",
    "julian", "last_day", "microsecond", "millennium", "millisecond", "minute", "month",
    "monthname", "nanosecond", "normalized_interval", "now", "quarter", "second",
    "time_bucket", "today", "transaction_timestamp", "week", "weekday", "weekofyear",
    "year", "yearweek",
    # lists, structs, maps, JSON and types outside the families
    "aggregate", "apply", "cardinality", "element_at", "filter", "flatten", "from_json",
    "from_json_strict", "generate_subscripts", "grade_up", "json", "map", "range", "reduce",
    "remap_struct", "row", "row_to_json", "unpack", "alias", "can_cast_implicitly",
    "cast_to_type", "get_type", "make_type", "replace_type", "typeof", "vertex_extract",
    # conditions, errors, random values
    "assert_true", "error", "if", "invoke", "nullif", "switch", "gen_random_uuid",
    # aggregates
    "any_value", "arbitrary", "argmax", "argmin", "avg", "bool_and", "bool_or", "corr",
    "count", "count_if", "count_star", "countif", "decimal_average", "entropy", "favg",
    "first", "fsum", "geomean", "geometric_mean", "group_concat", "histogram",
    "histogram_exact", "is_histogram_other_bin", "kahan_sum", "last", "list", "listagg",
    "lttb", "mad", "max", "max_by", "mean", "median", "min", "min_by", "mode", "product",
    "reservoir_quantile", "sem", "skewness", "sum", "sum_no_overflow", "sumkahan",
    "variance", "wavg", "weighted_avg",
    # window functions
    "cume_dist", "dense_rank", "fill", "first_value", "lag", "last_value", "lead",
    "nth_value", "ntile", "percent_rank", "rank", "rank_dense", "row_number",
)  # fmt: skip
_DUCKDB_SYSTEM = names("duckdb_*", "pg_*", "pragma_*", "sqlite_master", "sqlite_schema",
                       "sqlite_temp_*")  # fmt: skip
_DUCKDB = SqlRules(
    table_functions=names("range", "generate_series", "unnest"),
    denied_functions=_COMMON.denied_functions | _DUCKDB_DENIED,
    # DuckDB resolves `x.t` as catalog x when no schema x exists: database names count.
    reserved_schemas=_COMMON.reserved_schemas | names("activation", "system", "temp", "memory"),
    system_relations=_DUCKDB_SYSTEM,
    catalog_names=False,
    allowed_functions=_DUCKDB_FUNCTIONS,
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
# (pg_terminate_backend), locks and sleeps (pg_advisory_lock, pg_sleep*), the server itself
# (pg_reload_conf). lo_*: server files through large objects. dblink: other databases.
# *_to_xml, ts_stat, ts_rewrite, crosstab, connectby: run a SQL string. xml*, xpath*:
# libxml2 on input the query makes up (an XPath it rejects is an internal error, 502).
_POSTGRES_DENIED = names(
    "pg_*", "lo_*", "loread", "lowrite", "dblink*", "query_to_xml*", "table_to_xml*",
    "cursor_to_xml*", "schema_to_xml*", "database_to_xml*", "ts_stat", "ts_rewrite",
    "crosstab*", "connectby", "binary_upgrade_*", "txid_current*", "xml*", "xpath*",
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
# sqlglot's generic aggregate forms render a function named by an argument, not as typed:
# `ANONYMOUS_AGG_FUNC(f, x)` names whatever `f` says.
_NAMED_BY_ARGUMENT = (
    exp.AnonymousAggFunc, exp.CombinedAggFunc, exp.ParameterizedAgg, exp.CombinedParameterizedAgg
)  # fmt: skip


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
        FilterError: The SQL does not parse, nests too deeply, is not one query, reaches
            beyond the warehouse's tables, or cannot be rendered for the dialect (see the
            module docstring).
    """
    checker = _Checker(rules_for(dialect), dialect=dialect, field=field, what=what)
    engine = Dialect.get_or_raise(dialect)
    try:
        tokens = engine.tokenize(sql)
        # The parser recurses once per level of nesting: bound it before it runs.
        if _nesting(tokens) > MAX_NESTING:
            checker.refuse(
                f"nested too deeply: more than {MAX_NESTING} levels of parentheses, brackets, "
                "CASE or unary operators"
            )
        statements = [s for s in engine.parser().parse(tokens, sql) if s is not None]
    except SqlglotError as err:  # ParseError and the tokenizer's TokenError alike
        checker.refuse(f"not valid SQL: {_syntax_error(err)}")
    except RecursionError:  # a construct the bounds above do not count
        checker.refuse("not valid SQL: nested too deeply")
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        checker.refuse("must be exactly one SELECT statement")
    query = statements[0]
    if _depth(query) > MAX_DEPTH:
        checker.refuse(f"nested too deeply: expressions more than {MAX_DEPTH} levels deep")
    try:
        # What runs is sqlglot's rendering: one that fails (or knows it is wrong) fails here,
        # not later in a compiler or a run.
        query.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
    except RecursionError:
        checker.refuse("not valid SQL: nested too deeply")
    except Exception as err:  # sqlglot's generators raise whatever their code hits
        checker.refuse(f"cannot be run on {dialect}: {_first_line(err)}")
    checker.check(query)
    return query


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
                self.check_function(node)
            if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
                self.check_qualifier(node)

    def check_function(self, function: exp.Func) -> None:
        if isinstance(function, _NAMED_BY_ARGUMENT):
            self.refuse_construct(
                function, "workspace SQL may not call sqlglot's internal function forms"
            )
        if any(n in self.rules.denied_functions for n in _function_names(function, self.dialect)):
            self.refuse_construct(
                function,
                "workspace SQL may not call functions that reach files, settings, sequences, "
                "the catalog or other databases, run SQL text, parse XML or sleep",
            )
        allowed = self.rules.allowed_functions
        anonymous = isinstance(function, exp.Anonymous)
        if allowed is not None and anonymous and function.name not in allowed:
            self.refuse_construct(
                function,
                f"{function.name} is not one of the {self.dialect} built-in functions "
                "workspace SQL may call",
            )

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


def _function_names(function: exp.Func, dialect: str) -> set[str]:
    """The names a function call goes by: as typed, sqlglot's own, and as the dialect spells
    it (DuckDB's `range(3)` parses as GenerateSeries)."""
    if isinstance(function, exp.Anonymous):
        return {function.name.lower()}
    found = {n.lower() for n in type(function).sql_names()}
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


def _nesting(tokens: Sequence[Token]) -> int:
    """The deepest nesting of brackets, CASE ... END and runs of unary operators."""
    deepest = depth = run = 0
    for token in tokens:
        kind = token.token_type
        if kind in _OPENING:
            depth += 1
        elif kind in _CLOSING:
            depth = max(0, depth - 1)
        run = run + 1 if kind in _UNARY else 0
        deepest = max(deepest, depth + run)
    return deepest


def _depth(query: exp.Expression) -> int:
    """How deep sqlglot recurses to render `query`: a level per node, except along a chain
    of one binary operator or set operation (`a OR b OR c`), which it renders in a loop."""
    deepest, stack = 0, [(query, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        chain = isinstance(node, (exp.Binary, exp.SetOperation))
        for child in node.iter_expressions():
            stack.append((child, depth if chain and type(child) is type(node) else depth + 1))
    return deepest


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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
