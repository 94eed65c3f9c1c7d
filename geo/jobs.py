"""Background jobs: long work (automatic drafts) in a worker thread, with progress, cancellation and restart recovery.

A job is a `jobs` row (queued → running → done | failed | cancelled). The process that queues a job holds a
session advisory lock on it (one long-lived connection per process holds them all) until the job ends, so on
startup any queued/running job whose lock nobody holds belongs to a service that is gone: it is marked failed.
That stays right with several uvicorn workers, where a restarting worker must not fail its siblings' jobs.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

import orjson
from sqlalchemy import Connection, Engine, text

from geo.auth import Caller
from geo.errors import Conflict, DomainError, Forbidden, NotFound

log = logging.getLogger(__name__)

LOCK_CLASS = 0x57476A62  # first key of the two-key advisory locks that mark a job as owned by a live process
READ_ROLES = ("planner", "supervisor")  # besides its creator; admins see everything
CANCEL_ROLES = ("planner",)
CHECK_EVERY_S = 0.25  # cancellation is read from the row at most this often
RESTARTED = ("The service restarted while this job was {status}, so it was stopped; nothing was written. "
             "Submit it again.")

_FIELDS = "id, kind, status, progress, message, params, result, error, created_by, created_at, started_at, finished_at"


class Cancelled(Exception):
    """The job was cancelled (or the service is stopping): stop at the next safe point."""


class Context:
    """What a job function gets: its id, caller and engine, progress reports, cancellation checks and the
    final transaction in which it may mark itself done together with its writes."""

    def __init__(self, runner: "Runner", job_id: int, caller: Caller):
        """A running job's handle for its function."""
        self.runner, self.job_id, self.caller = runner, job_id, caller
        self.engine: Engine = runner.engine
        self._checked = 0.0

    def report(self, progress: float, message: str) -> None:
        """Record progress (0..1) and what the job is doing, in its own short autocommit transaction."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text(
                "UPDATE jobs SET progress = :p, message = :m WHERE id = :id AND status = 'running'"),
                {"p": min(1.0, max(0.0, float(progress))), "m": message, "id": self.job_id})

    def check(self) -> None:
        """Raise Cancelled if the job was cancelled or the service is stopping (reads the row at most every
        CHECK_EVERY_S, so it is cheap to call in loops)."""
        if self.runner.stopping.is_set():
            raise Cancelled("the service is stopping")
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_S:
            return
        self._checked = now
        with self.engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": self.job_id}).scalar()
        if status != "running":
            raise Cancelled(f"job {self.job_id} is {status}")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction holding the job row: a cancel arriving now waits for it, and if the job was cancelled
        already nothing is written (Cancelled)."""
        with self.engine.begin() as conn:
            status = conn.execute(text("SELECT status FROM jobs WHERE id = :id FOR UPDATE"),
                                  {"id": self.job_id}).scalar()
            if status != "running":
                raise Cancelled(f"job {self.job_id} is {status}")
            yield conn

    def finish(self, conn: Connection, result: dict) -> None:
        """Mark the job done with `result` inside the caller's transaction (see transaction())."""
        conn.execute(text("UPDATE jobs SET status = 'done', progress = 1, result = CAST(:r AS jsonb), "
                          "message = 'done', finished_at = now() WHERE id = :id"),
                     {"r": _json(result), "id": self.job_id})


JobFn = Callable[[Context, dict], dict]


class Runner:
    """One worker thread per process running queued jobs in order, on the engine its owner (the app) made."""

    def __init__(self, engine: Engine, workers: int = 1):
        """A runner on `engine` with `workers` threads."""
        self.engine, self.workers = engine, workers
        self.stopping = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._owner: Connection | None = None  # holds the advisory locks of this process's jobs
        self._mutex = threading.Lock()
        self._pending: set[int] = set()

    def recover(self) -> int:
        """Fail the queued/running jobs no live process owns (left by a stopped or crashed service)."""
        with self.engine.begin() as conn:
            return conn.execute(text("""
                UPDATE jobs j SET status = 'failed', finished_at = now(), message = 'service restarted',
                       error = replace(:msg, '{status}', j.status)
                WHERE j.status IN ('queued', 'running') AND NOT EXISTS (
                    SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :k AND l.objid = j.id
                      AND l.objsubid = 2
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""),
                {"msg": RESTARTED, "k": LOCK_CLASS}).rowcount

    def submit(self, caller: Caller, kind: str, params: dict, fn: JobFn) -> dict:
        """Queue fn(ctx, params) as a new job and return the job (status queued)."""
        if self.stopping.is_set():
            raise Conflict("The service is stopping and takes no new jobs; try again in a moment.")
        engine = self.engine
        with self._mutex:
            if self._owner is None:
                self._owner = engine.connect()
            with self._owner.begin():  # lock before the row is visible, so recover() never sees it unowned
                job_id = self._owner.execute(text(
                    "INSERT INTO jobs (kind, status, params, created_by, message) "
                    "VALUES (:kind, 'queued', CAST(:params AS jsonb), :user, 'queued') RETURNING id"),
                    {"kind": kind, "params": _json(params), "user": caller.id}).scalar_one()
                self._owner.execute(text("SELECT pg_advisory_lock(:k, :id)"), {"k": LOCK_CLASS, "id": job_id})
            self._pending.add(job_id)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="wangge-job")
            self._executor.submit(self._run, job_id, caller, fn, params)
        with engine.connect() as conn:
            return _row(conn, job_id)

    def _run(self, job_id: int, caller: Caller, fn: JobFn, params: dict) -> None:
        try:
            with self.engine.begin() as conn:
                started = conn.execute(text(
                    "UPDATE jobs SET status = 'running', started_at = now(), message = 'started' "
                    "WHERE id = :id AND status = 'queued' RETURNING id"), {"id": job_id}).first()
            if started is None:
                return  # cancelled while queued
            if self.stopping.is_set():
                raise Cancelled("the service is stopping")
            result = fn(Context(self, job_id, caller), params)
            self._end(job_id, "done", result=result)
        except Cancelled:
            if self.stopping.is_set():
                self._end(job_id, "failed", error="The service stopped while this job was running; nothing was "
                                                  "written. Submit it again.")
            with self.engine.begin() as conn:  # cancelled by discarding its plan: that sets the status only
                conn.execute(text("UPDATE jobs SET finished_at = now() WHERE id = :id AND finished_at IS NULL"),
                             {"id": job_id})
        except DomainError as exc:
            self._end(job_id, "failed", error=exc.message)
        except Exception as exc:  # a bug: record it on the job rather than lose it in a thread
            log.exception("job %s failed", job_id)
            self._end(job_id, "failed", error=f"Internal error ({type(exc).__name__}: {str(exc)[:500]}); nothing "
                                              "was written. Please report it.")
        finally:
            self._release(job_id)

    def _end(self, job_id: int, status: str, result: dict | None = None, error: str | None = None) -> None:
        """Final status, unless the job already ended (cancelled, or done inside its own transaction)."""
        with self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE jobs SET status = CAST(:s AS text), result = coalesce(CAST(:r AS jsonb), result), "
                "error = :e, progress = CASE WHEN CAST(:s AS text) = 'done' THEN 1 ELSE progress END, "
                "message = CAST(:s AS text), finished_at = now() WHERE id = :id AND status = 'running'"),
                {"s": status, "r": None if result is None else _json(result), "e": error, "id": job_id})

    def _release(self, job_id: int) -> None:
        with self._mutex:
            self._pending.discard(job_id)
            if self._owner is not None:
                with self._owner.begin():  # session-level locks outlive transactions; this just ends the statement's
                    self._owner.execute(text("SELECT pg_advisory_unlock(:k, :id)"), {"k": LOCK_CLASS, "id": job_id})

    def shutdown(self) -> None:
        """Stop: the running job stops at its next check and is failed; queued ones are failed too."""
        self.stopping.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        with self._mutex:
            if self._pending:
                with self.engine.begin() as conn:
                    conn.execute(text("UPDATE jobs SET status = 'failed', finished_at = now(), message = 'service "
                                      "stopped', error = :e WHERE id = ANY(:ids) AND status IN ('queued', 'running')"),
                                 {"e": "The service stopped before this job ran. Submit it again.",
                                  "ids": sorted(self._pending)})
            if self._owner is not None:
                self._owner.close()  # releases every lock this process held
                self._owner = None


async def start(engine: Engine) -> Runner:
    """The app's runner; jobs a previous run of the service left queued/running are failed now."""
    import asyncio

    runner = Runner(engine)
    try:
        failed = await asyncio.to_thread(runner.recover)
        if failed:
            log.warning("%d job(s) left by a stopped service were marked failed", failed)
    except Exception as exc:  # the database may be down at startup; /health reports that, jobs just wait
        log.warning("could not check for jobs left by a stopped service: %s", exc)
    return runner


async def stop(runner: Runner) -> None:
    """Stop the runner: the running job is failed at its next check, queued ones at once."""
    import asyncio

    await asyncio.to_thread(runner.shutdown)


# ---------------------------------------------------------------------------------------------- reading

def _row(conn: Connection, job_id: int, caller: Caller | None = None):
    """The job as a dict (None if missing); with a caller, only if they may see it (scoped in SQL): its creator,
    or an admin/planner/supervisor whose area holds the job's area (a job without one: unbound admins only)."""
    scoped = "" if caller is None else (
        " AND (created_by = :user OR (:reader AND starts_with(coalesce(params->>'area', ''), :scope)))")
    row = conn.execute(text(f"SELECT {_FIELDS} FROM jobs WHERE id = :id" + scoped),
                       {"id": job_id, "user": caller and caller.id, "scope": caller and caller.scope,
                        "reader": caller is not None and caller.role in ("admin", *READ_ROLES)}).first()
    return None if row is None else _out(row)


def _out(row) -> dict:
    out = dict(row._mapping)
    for key in ("created_at", "started_at", "finished_at"):
        out[key] = out[key].isoformat() if isinstance(out[key], datetime) else out[key]
    return out


def get(conn: Connection, caller: Caller, job_id: int) -> dict:
    """One job with its status, progress, message, params, result or error."""
    job = _row(conn, job_id, caller)
    if job is None:
        raise NotFound(f"No job {job_id} that you can see; jobs are visible to their creator and to planners "
                       "and supervisors of their area.", field="job_id")
    return job


def cancel(conn: Connection, caller: Caller, job_id: int) -> dict:
    """Cancel a queued or running job (a running one stops at its next check and writes nothing)."""
    job = get(conn, caller, job_id)
    if job["created_by"] != caller.id and caller.role not in ("admin", *CANCEL_ROLES):
        raise Forbidden(f"Only the job's creator or a planner may cancel job {job_id}.")
    done = conn.execute(text(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), "
        "message = 'cancelled by ' || :who || ' at ' || round(progress * 100) || '%' "
        "WHERE id = :id AND status IN ('queued', 'running') RETURNING id"),
        {"id": job_id, "who": caller.name}).first()
    if done is None:
        status = conn.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
        raise Conflict(f"Job {job_id} is already {status}; only queued or running jobs can be cancelled.",
                       field="job_id")
    return _row(conn, job_id)


def _json(value) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
