"""The catalog's tables (SQLAlchemy 2 declarative). Migrations in `migrations/` mirror these.

Run history is deliberately absent: runs live in Dagster's run/event storage only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Stores UTC; always hands back an aware datetime (SQLite drops the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: sa.JSON, list[Any]: sa.JSON}


class _Timestamps:
    created_by: Mapped[str | None] = mapped_column(sa.String(36))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class _Status:
    status: Mapped[str] = mapped_column(sa.String(16))
    status_error: Mapped[str] = mapped_column(sa.Text, default="")


def _workspace_fk() -> Mapped[str]:
    return mapped_column(sa.ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)


class Workspace(_Timestamps, Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(64), unique=True)


class ApiKey(_Timestamps, Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    name: Mapped[str] = mapped_column(sa.String(200))
    key_prefix: Mapped[str] = mapped_column(sa.String(32))
    # SHA-256 of the whole key: keys carry 256 random bits, so a slow KDF adds nothing.
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")


class Model(_Status, _Timestamps, Base):
    __tablename__ = "models"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "name"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    source_id: Mapped[str | None] = mapped_column(sa.String(36))
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    model_type: Mapped[str] = mapped_column(sa.String(16))
    sql_query: Mapped[str | None] = mapped_column(sa.Text)
    source_schema: Mapped[str | None] = mapped_column(sa.String(200))
    source_table: Mapped[str | None] = mapped_column(sa.String(200))
    selected_columns: Mapped[list[Any] | None]
    columns: Mapped[list[Any]] = mapped_column(default=list)
    column_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    entity_type: Mapped[str] = mapped_column(sa.String(16))
    primary_key_column: Mapped[str] = mapped_column(sa.String(200))
    timestamp_column: Mapped[str | None] = mapped_column(sa.String(200))


class Relationship(_Timestamps, Base):
    __tablename__ = "relationships"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "name"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    from_model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id"), index=True)
    to_model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id"), index=True)
    from_column: Mapped[str] = mapped_column(sa.String(200))
    to_column: Mapped[str] = mapped_column(sa.String(200))
    cardinality: Mapped[str] = mapped_column(sa.String(16))
    through_model_id: Mapped[str | None] = mapped_column(sa.ForeignKey("models.id"))
    through_from_column: Mapped[str | None] = mapped_column(sa.String(200))
    through_to_column: Mapped[str | None] = mapped_column(sa.String(200))


class Trait(_Status, _Timestamps, Base):
    __tablename__ = "traits"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "slug"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    parent_model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(64))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    trait_type: Mapped[str] = mapped_column(sa.String(16))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result_type: Mapped[str] = mapped_column(sa.String(16))
    last_computed_at: Mapped[datetime | None]


class Destination(_Status, _Timestamps, Base):
    __tablename__ = "destinations"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "name"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    connection_id: Mapped[str | None] = mapped_column(sa.String(36))
    name: Mapped[str] = mapped_column(sa.String(200))
    destination_type: Mapped[str] = mapped_column(sa.String(32))
    # The config with every secret masked (what the API shows, what Dagster may see) ...
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # ... and its secrets, encrypted (catalog/secret_box.py); NULL when it has none.
    secrets: Mapped[str | None] = mapped_column(sa.Text)


class Audience(_Status, _Timestamps, Base):
    __tablename__ = "audiences"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "slug"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    parent_model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # Fixed at creation so Dagster asset keys survive renames.
    slug: Mapped[str] = mapped_column(sa.String(64))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    filter_tree: Mapped[dict[str, Any]] = mapped_column(default=dict)
    estimated_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    estimated_at: Mapped[datetime | None]
    identity_graph_id: Mapped[str | None] = mapped_column(sa.String(36))


class AudienceSplit(_Timestamps, Base):
    """An A/B split of one audience into non-overlapping groups that cover every member."""

    __tablename__ = "audience_splits"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    audience_id: Mapped[str] = mapped_column(
        sa.ForeignKey("audiences.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))


class SplitGroup(_Timestamps, Base):
    __tablename__ = "split_groups"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    split_id: Mapped[str] = mapped_column(
        sa.ForeignKey("audience_splits.id", ondelete="CASCADE"), index=True
    )
    audience_id: Mapped[str] = mapped_column(sa.ForeignKey("audiences.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    percentage: Mapped[float] = mapped_column(sa.Float)
    # Groups take consecutive hash buckets in this order.
    position: Mapped[int] = mapped_column(sa.Integer)


class Sync(_Status, _Timestamps, Base):
    __tablename__ = "syncs"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "slug"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = _workspace_fk()
    audience_id: Mapped[str] = mapped_column(sa.ForeignKey("audiences.id"), index=True)
    destination_id: Mapped[str] = mapped_column(sa.ForeignKey("destinations.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(64))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    field_mapping: Mapped[list[Any]] = mapped_column(default=list)
    sync_mode: Mapped[str] = mapped_column(sa.String(16))
    schedule: Mapped[str | None] = mapped_column(sa.String(120))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    split_group_id: Mapped[str | None] = mapped_column(sa.ForeignKey("split_groups.id"))
