"""Alembic environment: the URL comes from the Config built in catalog.db."""

from alembic import context

from composable_dagster.catalog.db import catalog_engine
from composable_dagster.catalog.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None

with catalog_engine(url).connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
