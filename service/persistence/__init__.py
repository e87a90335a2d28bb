"""Persistence: the database (engine, tables, repository), artifacts and migrations."""
