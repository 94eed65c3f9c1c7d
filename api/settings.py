"""Typed settings, read from WANGGE_* environment variables."""

import os
from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_SUPERUSER = "wangge"  # the project-local cluster's database superuser


class ClusterError(RuntimeError):
    """The project-local cluster cannot be used as asked (not initialised, not startable, ...)."""


class Settings(BaseSettings):
    """Typed settings, each from its WANGGE_* environment variable."""
    model_config = SettingsConfigDict(env_prefix="WANGGE_", extra="ignore")

    # When set, an existing PostGIS is used and the project-local cluster is left alone.
    database_url: str | None = None
    # Project-local cluster: data directory under the project, its own port.
    local_dir: Path = PROJECT_ROOT / ".wangge"
    local_port: int = 55432
    local_db: str = "wangge"
    host: str = "127.0.0.1"
    port: int = 8000
    pool_size: int = Field(default=10, ge=1)
    # `wangge serve`: worker processes (0: one per core); how long requests in flight may finish on shutdown;
    # the most header bytes a request may send (uvicorn refuses more).
    workers: int = Field(default=0, ge=0)
    shutdown_grace_s: int = Field(default=20, ge=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    # Database timeouts (s): connecting, waiting for a pooled connection, and one API statement (bulk work and
    # analyses in threads are not limited by the last). A frozen database gives 503s after these, not hangs.
    db_connect_timeout_s: float = Field(default=5, gt=0)
    db_acquire_timeout_s: float = Field(default=10, gt=0)
    db_statement_timeout_s: float = Field(default=30, gt=0)
    # Resolved tokens are cached this long per worker (revocations empty every cache at once); new tokens from
    # the command line live this many days unless told otherwise (0: until revoked).
    token_cache_s: float = 30.0
    token_lifetime_days: float = Field(default=90, ge=0)
    # Intake (POST /incidents, Open311 POST) per worker: per bearer token, and per client address.
    intake_rate_per_token: str = "120/minute"
    intake_rate_per_address: str = "600/minute"
    # Sign-in for pages: how long a session lasts (h); failed attempts allowed per client address and per user
    # name, per worker (a `limits` string); how often each worker adds its token use counts to token_use (s).
    session_lifetime_h: float = Field(default=12, gt=0)
    sign_in_failures: str = "10 per 15 minutes"
    token_use_flush_s: float = Field(default=30, gt=0)

    def worker_count(self) -> int:
        """Workers to serve with: `workers`, or one per core the process may use."""
        return self.workers or len(os.sched_getaffinity(0))

    def session_lifetime(self) -> timedelta:
        """How long a sign-in's session lasts."""
        return timedelta(hours=self.session_lifetime_h)

    def token_lifetime(self, days: float | None = None) -> timedelta | None:
        """A new token's lifetime: `days`, else the default; None when 0 (until revoked)."""
        days = self.token_lifetime_days if days is None else days
        return timedelta(days=days) if days > 0 else None
    max_features: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # JSON requests; bulk uploads have their own limit
    bulk_max_bytes: int = Field(default=200_000_000, ge=1024)  # POST /incidents/bulk uploads
    # Bulk CSV intake (POST /incidents/bulk, `wangge incidents import`): a header with more columns is refused
    # before any row is parsed.
    bulk_max_columns: int = Field(default=200, ge=3)
    # `wangge incidents import`: one statement may run this long before the server cancels it (0: no limit).
    bulk_statement_timeout_s: float = Field(default=900, ge=0)
    # Zip archives (zipped Shapefile plan files), checked while they are unpacked: the bytes they may expand
    # to, how many members they may hold, and the most one member may expand relative to its compressed size.
    unzip_max_bytes: int = Field(default=200_000_000, ge=1024)
    unzip_max_members: int = Field(default=100, ge=1)
    unzip_max_ratio: float = Field(default=200, ge=1)
    # Overdue escalation inside the service: every N seconds (0: off); hours overdue → community, street, district.
    escalation_interval_s: float = Field(default=300, ge=0)
    escalation_steps_h: tuple[int, int, int] = (0, 24, 72)
    timezone: str = "Asia/Shanghai"
    # Dispatch: a position older than this is stale (never treated as current); straight-line ETA speed
    # (4.2 m/s ≈ 15 km/h, e-bike); how many straight-line candidates mode=network re-ranks by road.
    position_max_age_s: float = Field(default=1800, gt=0)
    straight_speed_mps: float = Field(default=4.2, gt=0)
    network_candidates: int = Field(default=10, ge=1, le=100)
    # Open311 GeoReport v2: reads of services and requests need an api_key unless this is True; anonymous
    # reads then see the public view of each request (geo.open311.public_view).
    open311_public_reads: bool = False

    def unzip_limits(self):
        """The caps on unpacking a zip (geo.unzip.ZipLimits)."""
        from geo.unzip import ZipLimits

        return ZipLimits(max_bytes=self.unzip_max_bytes, max_members=self.unzip_max_members,
                         max_ratio=self.unzip_max_ratio)

    def sync_connect_args(self, application_name: str, statement_timeout_s: float = 0) -> dict:
        """libpq settings for sync (psycopg) connections: the connect timeout, TCP keepalives and a user timeout
        (a peer that vanished is noticed in seconds, not minutes), a name in pg_stat_activity, and optionally a
        statement timeout. The server also checks every second that the client is still there, so a statement
        whose client died (SIGKILL, a lost laptop) stops instead of running on."""
        options = "-c client_connection_check_interval=1000"
        if statement_timeout_s:
            options += f" -c statement_timeout={int(statement_timeout_s * 1000)}"
        return {"connect_timeout": max(2, round(self.db_connect_timeout_s)), "application_name": application_name,
                "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                "tcp_user_timeout": 15_000, "options": options}

    def sync_url(self) -> str:
        """SQLAlchemy URL for the psycopg (sync) driver."""
        return _with_driver(self.resolved_url(), "psycopg")

    def libpq_url(self) -> str:
        """Plain postgresql:// URL (asyncpg, psql)."""
        scheme, rest = self.resolved_url().split("://", 1)
        return f"postgresql://{rest}"

    def resolved_url(self) -> str:
        """WANGGE_DATABASE_URL when set, else the project-local cluster's URL."""
        return self.database_url or self.local_url()

    def local_url(self, dbname: str | None = None) -> str:
        """URL of the project-local cluster, whose password `wangge db start` writes under local_dir."""
        password_file = Path(self.local_dir) / "db-password"
        if not password_file.exists():
            raise ClusterError("The local cluster is not initialised yet: run `wangge db start`.")
        password = password_file.read_text().strip()
        return f"postgresql://{LOCAL_SUPERUSER}:{password}@127.0.0.1:{self.local_port}/{dbname or self.local_db}"


def _with_driver(url: str, driver: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"postgresql+{driver}://{rest}" if scheme.split("+")[0] in ("postgresql", "postgres") else url
