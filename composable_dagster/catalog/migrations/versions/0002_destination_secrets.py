"""destination secrets encrypted at rest

Adds `destinations.secrets` and moves every secret still held in plaintext in
`destinations.config` into it, encrypted with the catalog's secret key (the config keeps a
mask in its place). Needs the key: `upgrade_catalog(url, secret_box=...)` passes it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Everything that can refuse is checked before the DDL: SQLite commits DDL at once, so a
    # failure after it would leave a column that the next attempt cannot add again.
    sealed = _sealed_plaintext_secrets()
    with op.batch_alter_table("destinations") as batch:
        batch.add_column(sa.Column("secrets", sa.Text(), nullable=True))
    destinations = _destinations_table()
    for row_id, public, secrets in sealed:
        op.get_bind().execute(
            destinations.update()
            .where(destinations.c.id == row_id)
            .values(config=public, secrets=secrets)
        )


def downgrade() -> None:
    # Secrets cannot be put back in plaintext without the key; refuse rather than lose them.
    raise NotImplementedError("downgrading would lose encrypted destination secrets")


def _destinations_table() -> sa.TableClause:
    return sa.table(
        "destinations",
        sa.column("id", sa.String),
        sa.column("destination_type", sa.String),
        sa.column("config", sa.JSON),
        sa.column("secrets", sa.Text),
    )


def _sealed_plaintext_secrets() -> list[tuple[str, dict, str]]:
    """(id, public config, sealed secrets) of every destination with plaintext secrets."""
    from composable_dagster.destinations import DESTINATION_TYPES
    from composable_dagster.destinations.secrets import split_secrets

    destinations = _destinations_table()
    rows = (
        op.get_bind()
        .execute(
            sa.select(destinations.c.id, destinations.c.destination_type, destinations.c.config)
        )
        .all()
    )
    box = context.config.attributes.get("secret_box")
    sealed = []
    for row_id, kind_name, config in rows:
        config = json.loads(config) if isinstance(config, str) else config
        kind = DESTINATION_TYPES.get(kind_name)
        if kind is None:
            continue
        public, secrets = split_secrets(kind, config or {})
        if not secrets:
            continue
        if box is None:
            raise RuntimeError(
                "the catalog holds plaintext destination secrets: upgrade it with the secret "
                "key (composable init, composable api or composable serve do)"
            )
        sealed.append((row_id, public, box.seal(secrets)))
    return sealed
