"""Alembic environment: migrations run on the connection the cloud hands in."""

from __future__ import annotations

from alembic import context

from hedgerow.cloud.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "hedgerow's migrations run through hedgerow.cloud.storage.database.migrate()"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
