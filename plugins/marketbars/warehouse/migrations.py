"""Versioned migrations (``include/migrations/NNNN_*.sql``): the schema's one way forward."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from marketbars.warehouse.connection import Connection

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "include" / "migrations"
_MIGRATION_LOCK = 0x6D6B7462  # pg_advisory_xact_lock key: one migrator at a time


class MigrationError(RuntimeError):
    """The database's schema history disagrees with the migration files."""


def migrate(conn: Connection, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in one transaction; return the names applied (empty when current).

    A migration that changed after it was applied fails the whole run: history is append-only.
    """
    files = sorted(migrations_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise MigrationError(f"no migrations found in {migrations_dir}")
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS market")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS market.schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text        NOT NULL,
                   checksum   text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied: dict[int, str] = dict(conn.execute("SELECT version, checksum FROM market.schema_migrations"))
        for path in files:
            version, text = int(path.name[:4]), path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in applied:
                if applied[version] != checksum:
                    raise MigrationError(
                        f"migration {path.name} changed after it was applied; add a new migration instead"
                    )
                continue
            conn.execute(text.encode())  # a trusted file from the repository
            conn.execute(
                "INSERT INTO market.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (version, path.name, checksum),
            )
            applied_now.append(path.name)
    if applied_now:
        log.info("Applied migrations: %s", ", ".join(applied_now))
    return applied_now
