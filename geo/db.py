"""Engines and schema migration; nothing connects at import time.

The database discipline, in one place:
- Who owns what. The app's lifespan owns every pool and engine (the asyncpg pool, the lean path's
  connections, one sync engine); background jobs and escalation get that engine instead of making their own.
  The CLI makes one engine per command. Nothing else creates engines.
- Who opens transactions. Services take a connection and never commit; the caller (a route, a CLI command,
  a job) owns the unit of work and opens the transaction around it.
- Two access styles, each for its own work:
  - hot async paths (lookups, lists, intake, dispatch) use asyncpg with SQLAlchemy Core statements compiled
    once by `geo.sql.Query`: statements are prepared once per connection, and reads run without an ORM or a
    BEGIN/ROLLBACK around each request, which is where a request's time goes on these short queries;
  - sync bulk work (imports, planning, analyses, migrations) uses SQLAlchemy Core on psycopg in worker
    threads: COPY, GeoPandas and Alembic need a sync DB-API connection, and these calls are long, not many.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def sync_engine(url: str, **kwargs) -> Engine:
    """A sync SQLAlchemy engine that checks connections before use."""
    return create_engine(url, pool_pre_ping=True, **kwargs)


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at `url`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`."""
    command.upgrade(alembic_config(url), revision)
