"""Storage: SQLAlchemy 2 metadata, engine set-up, the unit of work and Alembic migrations."""
