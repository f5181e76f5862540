"""The one settings object. Everything configurable comes from the environment, read here only.

Defaults give a working local setup with nothing set: state under `.composable/` in the
working directory, a SQLite catalog, a DuckDB warehouse, and Dagster on 127.0.0.1:3000.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPOSABLE_", frozen=True, extra="ignore")

    home: Path = Field(default=Path(".composable"), description="State directory")
    catalog_url: str | None = Field(default=None, description="SQLAlchemy URL of the catalog")
    warehouse_url: str | None = Field(default=None, description="SQLAlchemy URL of the warehouse")
    dagster_url: str = Field(
        default="http://127.0.0.1:3000/graphql", description="GraphQL endpoint of the webserver"
    )
    dagster_location: str = Field(
        default="composable", description="Code location name in workspace.yaml"
    )
    code_locations: int = Field(
        default=1,
        ge=1,
        le=64,
        description="How many code locations `composable serve` splits the catalog's "
        "audiences and syncs into (`<dagster_location>_0` ...): a graph change reloads only "
        "the one it touches. One is right up to a few thousand audiences; each more costs a "
        "code-server process (about 250 MB). See docs/architecture.md",
    )
    code_location_shard: int | None = Field(
        default=None,
        ge=0,
        description="Set by `composable serve` in each code server: which of the "
        "`code_locations` shards it builds (unset: the whole catalog)",
    )
    dagster_pg_url: str | None = Field(
        default=None,
        description="PostgreSQL URL for Dagster's run/event storage (dagster-postgres); "
        "SQLite under DAGSTER_HOME when unset",
    )
    warehouse_hold_seconds: float = Field(
        default=3.0,
        ge=0,
        description="DuckDB only: how long the API keeps the warehouse open after a request "
        "(saves ~25 ms per estimate; dbt can write once it is released)",
    )
    activation_memory_limit: str | None = Field(
        # A 10M-member sync then peaks under 1 GB of RSS (DuckDB's buffers plus ~200 MB of
        # Python), and its diff is no slower than with 1GB (docs/benchmarks.md).
        default="512MB",
        description="DuckDB activation store: memory for diffs before spilling to "
        "$COMPOSABLE_HOME/spill (DuckDB syntax, e.g. 512MB, 4GB; empty = DuckDB's default)",
    )
    export_root: Path | None = Field(
        default=None,
        description="Where local file destinations (and file databases) may write: each "
        "workspace gets <export root>/<workspace slug>/ (default $COMPOSABLE_HOME/exports)",
    )
    file_protocols: str = Field(
        default="",
        description="Comma-separated fsspec protocols a file destination may use besides "
        "local paths (e.g. 's3,gcs'); empty: local paths only",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) that encrypt destination secrets in the catalog, "
        "comma-separated: the first encrypts, all decrypt (rotation); unset: the key file "
        "$COMPOSABLE_HOME/secret.key, created (mode 0600) when missing",
    )
    sql_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest all the queries of workspace SQL of one API request (preview, "
        "estimate, explain, column discovery) may take together; then they are cancelled",
    )
    run_sql_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Longest one statement of a run may take in the activation store (an "
        "audience's materialization, a sync's plan): workspace SQL runs there while the "
        "store's writer lock, shared by every workspace's runs, is held",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body the API accepts (413 beyond)",
    )
    max_member_drop: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Largest share of members an audience may lose in one materialization "
        "before its blocking check stops its syncs",
    )

    @model_validator(mode="after")
    def _shard_in_range(self) -> Settings:
        if self.code_location_shard is not None and self.code_location_shard >= self.code_locations:
            raise ValueError(
                f"COMPOSABLE_CODE_LOCATION_SHARD={self.code_location_shard} is not below "
                f"COMPOSABLE_CODE_LOCATIONS={self.code_locations}"
            )
        return self

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home_dir / 'catalog.sqlite'}"

    @property
    def resolved_warehouse_url(self) -> str:
        return self.warehouse_url or f"duckdb:///{self.home_dir / 'warehouse.duckdb'}"

    def check_catalog_apart(self) -> None:
        """Refuse a catalog in the warehouse's own database: workspace SQL runs there with
        the warehouse's credentials, and could read every workspace's catalog rows."""
        import sqlalchemy as sa  # lazily: `composable --help` should not pay for it

        def where(url: str) -> tuple[object, ...]:
            parsed = sa.make_url(url)
            return (parsed.get_backend_name(), parsed.host, parsed.port, parsed.database)

        if where(self.resolved_catalog_url) == where(self.resolved_warehouse_url):
            raise ValueError(
                "COMPOSABLE_CATALOG_URL and COMPOSABLE_WAREHOUSE_URL name the same database: "
                "workspace SQL runs in the warehouse and could read the catalog; give the "
                "catalog a database of its own"
            )

    @property
    def resolved_export_root(self) -> Path:
        root = self.export_root.expanduser() if self.export_root else self.home_dir / "exports"
        return root.resolve()

    @property
    def allowed_file_protocols(self) -> frozenset[str]:
        return frozenset(p.strip().lower() for p in self.file_protocols.split(",") if p.strip())

    @property
    def secret_key_file(self) -> Path:
        return self.home_dir / "secret.key"

    @property
    def dagster_home(self) -> Path:
        # DAGSTER_HOME is Dagster's own variable (no COMPOSABLE_ prefix); read it with the rest.
        return _DagsterEnv().dagster_home or self.home_dir / "dagster"


class _DagsterEnv(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")
    dagster_home: Path | None = None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests build their own `Settings(...)` instead."""
    return Settings()
