"""Alembic migrations: the only way aelab's schema changes (`aelab db upgrade`)."""
