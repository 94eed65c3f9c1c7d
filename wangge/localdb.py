"""The project-local PostGIS cluster: data under .wangge/, its own port, never run as root."""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
from glob import glob
from pathlib import Path

import psycopg
from psycopg import sql

from api.settings import LOCAL_SUPERUSER, ClusterError, Settings

PG_OS_USER = "wangge-pg"
MIN_PG_MAJOR = 15


def find_bindir() -> Path:
    """Newest PostgreSQL (>= 15) server binaries installed from Debian packages, or on PATH."""
    candidates = sorted(
        (Path(p).parent for p in glob("/usr/lib/postgresql/*/bin/pg_ctl")),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    candidates = [p for p in candidates if int(p.parent.name) >= MIN_PG_MAJOR]
    on_path = shutil.which("initdb")
    if not candidates and on_path:
        candidates = [Path(on_path).parent]
    if not candidates:
        raise ClusterError(
            "PostgreSQL server binaries not found. On Debian/Ubuntu run `make deps` "
            "(apt-get install postgresql-15 postgresql-15-postgis-3 postgresql-15-pgrouting); "
            "elsewhere install PostgreSQL >= 15 with PostGIS 3 and pgRouting, "
            "or set WANGGE_DATABASE_URL to an existing PostGIS."
        )
    return candidates[0]


class LocalCluster:
    """The project-local PostgreSQL cluster: created, started and stopped as an unprivileged user."""
    def __init__(self, settings: Settings):
        """The cluster the settings describe (data under local_dir, its own port)."""
        self.settings = settings
        self.root = Path(settings.local_dir).resolve()
        self.port = settings.local_port
        self.dbname = settings.local_db
        self.pgroot = self.root / "pg"
        self.datadir = self.pgroot / "data"
        self.rundir = self.pgroot / "run"
        self.logfile = self.pgroot / "postgres.log"
        self.pwfile = self.root / "db-password"

    # -- connection -------------------------------------------------------
    def url(self, dbname: str | None = None) -> str:
        """The URL of a database in the cluster."""
        return self.settings.local_url(dbname)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit connection to a database in the cluster."""
        return psycopg.connect(self.url(dbname), autocommit=True)

    # -- lifecycle --------------------------------------------------------
    def _as_pg_user(self, args: list[str]) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            args = ["runuser", "-u", PG_OS_USER, "--", *args]
        return subprocess.run(args, capture_output=True, text=True)

    def _ensure_os_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                check=True,
            )
        # The unprivileged user must be able to reach the data directory through every parent.
        for parent in reversed(self.pgroot.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)

    def initialised(self) -> bool:
        """Whether the data directory holds a cluster."""
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (initdb as the unprivileged OS user) with a random superuser password."""
        bindir = find_bindir()
        self.rundir.mkdir(parents=True, exist_ok=True)
        self._ensure_os_user()
        if not self.pwfile.exists():
            self.pwfile.write_text(secrets.token_urlsafe(18))
            self.pwfile.chmod(0o600)
        tmp_pw = self.pgroot / "initdb-password"
        tmp_pw.write_text(self.pwfile.read_text().strip())
        if os.geteuid() == 0:
            uid = pwd.getpwnam(PG_OS_USER).pw_uid
            for path in (self.pgroot, self.rundir, tmp_pw):
                os.chown(path, uid, -1)
        try:
            result = self._as_pg_user([
                str(bindir / "initdb"), "-D", str(self.datadir), "-U", LOCAL_SUPERUSER,
                "--auth=scram-sha-256", f"--pwfile={tmp_pw}", "-E", "UTF8", "--no-locale",
            ])
        finally:
            tmp_pw.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterError(f"initdb failed:\n{result.stderr}")
        with open(self.datadir / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.rundir}'\n"
                "max_connections = 200\n"
                "shared_buffers = '512MB'\n"
                "work_mem = '32MB'\n"
                "maintenance_work_mem = '256MB'\n"
                "max_wal_size = '2GB'\n"
                "jit = off\n"
            )

    def running(self) -> bool:
        """Whether the cluster's server is running."""
        if not self.initialised():
            return False
        result = self._as_pg_user([str(find_bindir() / "pg_ctl"), "-D", str(self.datadir), "status"])
        return result.returncode == 0

    def start(self) -> str:
        """Start (initialising first if needed) and create the database; idempotent."""
        if not self.initialised():
            self.init()
        if not self.running():
            if _port_in_use(self.port):
                raise ClusterError(
                    f"Port {self.port} is taken by another program. "
                    "Set WANGGE_LOCAL_PORT to a free port, or stop that program."
                )
            result = self._as_pg_user([
                str(find_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "60", "start",
            ])
            if result.returncode != 0:
                raise ClusterError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\nSee {self.logfile}")
        self.create_database(self.dbname)
        return self.url()

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self.running():
            result = self._as_pg_user([str(find_bindir() / "pg_ctl"), "-D", str(self.datadir),
                                       "-m", "fast", "-w", "stop"])
            if result.returncode != 0:
                raise ClusterError(f"pg_ctl stop failed:\n{result.stderr}")

    def status(self) -> str:
        """Running, stopped or not initialised, and where."""
        if not self.initialised():
            return f"not initialised (data directory {self.datadir})"
        return f"{'running' if self.running() else 'stopped'} on 127.0.0.1:{self.port}, data in {self.datadir}"

    # -- databases ----------------------------------------------------------
    def create_database(self, name: str) -> None:
        """Create a database unless it exists."""
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop a database, closing its connections."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
