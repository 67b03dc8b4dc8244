"""The benchmarks' own PostgreSQL database: made afresh and migrated to head."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from product_shop.db.engine import Database
from product_shop.db.migrate import upgrade


def fresh_database(admin_url: str, name: str) -> tuple[str, Database]:
    """Drop and create the database `name` on `admin_url`'s server, migrate it; its URL and a
    `Database` on it (the caller disposes of it)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    upgrade(database.engine)
    return url, database
