"""Storage of the cloud: SQLAlchemy models, Alembic migrations and the repository."""
