"""Persistence: SQLAlchemy models, repositories, Alembic migrations and the engine factory.

Importing :mod:`storage.models` registers every table on :data:`storage.base.Base.metadata`.
"""
