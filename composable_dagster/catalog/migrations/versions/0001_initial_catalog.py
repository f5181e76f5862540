"""initial catalog

Revision ID: 0001
Revises:
Create Date: 2026-11-23 08:33:59.128539
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_keys_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "destinations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("destination_type", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name"),
    )
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_destinations_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "models",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("source_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("model_type", sa.String(length=16), nullable=False),
        sa.Column("sql_query", sa.Text(), nullable=True),
        sa.Column("source_schema", sa.String(length=200), nullable=True),
        sa.Column("source_table", sa.String(length=200), nullable=True),
        sa.Column("selected_columns", sa.JSON(), nullable=True),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("column_config", sa.JSON(), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("primary_key_column", sa.String(length=200), nullable=False),
        sa.Column("timestamp_column", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "audiences",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("parent_model_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("filter_tree", sa.JSON(), nullable=False),
        sa.Column("estimated_size", sa.BigInteger(), nullable=True),
        sa.Column("estimated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("identity_graph_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_model_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "slug"),
    )
    with op.batch_alter_table("audiences", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audiences_parent_model_id"), ["parent_model_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audiences_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "relationships",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("from_model_id", sa.String(length=36), nullable=False),
        sa.Column("to_model_id", sa.String(length=36), nullable=False),
        sa.Column("from_column", sa.String(length=200), nullable=False),
        sa.Column("to_column", sa.String(length=200), nullable=False),
        sa.Column("cardinality", sa.String(length=16), nullable=False),
        sa.Column("through_model_id", sa.String(length=36), nullable=True),
        sa.Column("through_from_column", sa.String(length=200), nullable=True),
        sa.Column("through_to_column", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_model_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["through_model_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["to_model_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name"),
    )
    with op.batch_alter_table("relationships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_relationships_from_model_id"), ["from_model_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_relationships_to_model_id"), ["to_model_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_relationships_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "traits",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("parent_model_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("trait_type", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("result_type", sa.String(length=16), nullable=False),
        sa.Column("last_computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_model_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "slug"),
    )
    with op.batch_alter_table("traits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_traits_parent_model_id"), ["parent_model_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_traits_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "audience_splits",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["audience_id"], ["audiences.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audience_splits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audience_splits_audience_id"), ["audience_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audience_splits_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "split_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("split_id", sa.String(length=36), nullable=False),
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
        ),
        sa.ForeignKeyConstraint(["split_id"], ["audience_splits.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("split_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_split_groups_audience_id"), ["audience_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_split_groups_split_id"), ["split_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_split_groups_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "syncs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("destination_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("field_mapping", sa.JSON(), nullable=False),
        sa.Column("sync_mode", sa.String(length=16), nullable=False),
        sa.Column("schedule", sa.String(length=120), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("split_group_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
        ),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["destinations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["split_group_id"],
            ["split_groups.id"],
        ),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "slug"),
    )
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_syncs_audience_id"), ["audience_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_syncs_destination_id"), ["destination_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_syncs_workspace_id"), ["workspace_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_syncs_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_syncs_destination_id"))
        batch_op.drop_index(batch_op.f("ix_syncs_audience_id"))

    op.drop_table("syncs")
    with op.batch_alter_table("split_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_split_groups_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_split_groups_split_id"))
        batch_op.drop_index(batch_op.f("ix_split_groups_audience_id"))

    op.drop_table("split_groups")
    with op.batch_alter_table("audience_splits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audience_splits_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_audience_splits_audience_id"))

    op.drop_table("audience_splits")
    with op.batch_alter_table("traits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_traits_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_traits_parent_model_id"))

    op.drop_table("traits")
    with op.batch_alter_table("relationships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relationships_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_relationships_to_model_id"))
        batch_op.drop_index(batch_op.f("ix_relationships_from_model_id"))

    op.drop_table("relationships")
    with op.batch_alter_table("audiences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audiences_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_audiences_parent_model_id"))

    op.drop_table("audiences")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_workspace_id"))

    op.drop_table("models")
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_destinations_workspace_id"))

    op.drop_table("destinations")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_workspace_id"))

    op.drop_table("api_keys")
    op.drop_table("workspaces")
