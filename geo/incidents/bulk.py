"""Bulk incident intake: read CSV/GeoJSON/GeoPackage in chunks (bulk_readers), validate vectorised, COPY
(bulk_copy), assign set-based (bulk_assign), all in one transaction with a report of every reject.
"""

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from geo import audit
from geo import crs as crs_
from geo.incidents.bulk_assign import IMPORT_COLUMNS, active_version, assign, create_stage
from geo.incidents.bulk_copy import copy_rows
from geo.incidents.bulk_readers import MAX_COLUMNS, CsvReader, FeatureReader, Source, validate
from geo.incidents.timelimits import TZ

CHUNK_ROWS = 100_000
Progress = Callable[[str, int, int | None], None]  # (phase, rows done, rows expected or None)
# The phases reported to `progress`, in order, each named as the stage it is (what a failure happened during).
PHASES = {"connecting": "connecting", "preparing": "preparing the import", "reading": "the COPY of the rows",
          "assigning": "the assignment to grids", "committing": "the commit", "done": "done"}



# ------------------------------------------------------------------------------------------------ the import

@dataclass
class ImportReport:
    """What an import did: counts, the rejects with their lines and reasons, and timings."""
    batch_id: str
    total_rows: int
    imported: int
    rejects: pd.DataFrame  # line (CSV: physical line; features: 1-based index), reason, fid, ...
    seconds: float
    duplicates: int = 0
    file_name: str | None = None
    format: str | None = None
    crs: str | None = None
    grid_version: int | None = None
    blank_lines: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    phases: dict = field(default_factory=dict)

    @property
    def rejected_count(self) -> int:
        """How many rows were rejected."""
        return len(self.rejects)

    @property
    def rejected(self) -> list[dict]:
        """Every rejected row as {line, reason, ...} (fid for GeoJSON/GeoPackage, nearest_grid and distance_m
        for points outside every grid), in line order."""
        return _records(self.rejects)

    def summary(self, limit: int | None = None) -> dict:
        """JSON-ready counts and the rejected rows (the first `limit` of them)."""
        shown = self.rejects if limit is None else self.rejects.head(limit)
        return {
            "batch_id": self.batch_id, "file_name": self.file_name, "format": self.format, "crs": self.crs,
            "grid_version": self.grid_version, "total_rows": self.total_rows, "imported": self.imported,
            "duplicates": self.duplicates, "rejected_count": self.rejected_count, "rejected": _records(shown),
            "report_truncated": len(shown) < self.rejected_count,
            "blank_lines": self.blank_lines, "ignored_columns": self.ignored_columns,
            "seconds": round(self.seconds, 3),
        }

    def write_rejects(self, path) -> None:
        """The reject report as CSV: line, (fid,) reason."""
        columns = ["line", "fid", "reason"] if "fid" in self.rejects and self.rejects["fid"].notna().any() \
            else ["line", "reason"]
        self.rejects.reindex(columns=columns).to_csv(path, index=False)


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for record in frame.to_dict("records"):
        item = {}
        for key, value in record.items():
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            item[key] = value.item() if isinstance(value, np.generic) else value
        if "distance_m" in item:
            item["distance_m"] = round(item["distance_m"], 1)
        out.append(item)
    return out


def import_incidents(engine: Engine | Connection, path_or_bytes: str | Path | bytes, format: str | None = None,
                     crs: str = "EPSG:4326", actor_id: int | None = None, progress: Progress | None = None, *,
                     file_name: str | None = None, scope: str = "", keep_outside: bool = False,
                     find_duplicates: bool = True, chunk_rows: int = CHUNK_ROWS,
                     max_columns: int = MAX_COLUMNS) -> ImportReport:
    """Import a file of incident points in one transaction: all valid rows filed, every other row reported.

    `engine`: an Engine (the import commits at the end) or a Connection inside a transaction the caller owns.
    `format`: csv, geojson or gpkg (default: from the file name, else sniffed). `crs`: the coordinates' system
    when the file does not say (CSV, or a layer without a CRS), or GCJ-02/BD-09, which no file can declare.
    `scope`: code prefix of the caller's area; rows in other grids are rejected. Rows outside every grid are
    rejected with the nearest grid, or kept as 'unassigned' with `keep_outside`. A CSV of more than `max_columns`
    columns (a layer of more properties) is refused before any row is read.
    Raises InvalidInput (unreadable file, missing columns, CRS not accepted), UnknownCRS, Conflict."""
    started = time.perf_counter()
    progress = progress or (lambda phase, done, total: None)
    declared = crs_.normalize_crs(crs)
    source = Source.open(path_or_bytes, format, file_name)
    # Opening the reader checks the file (encoding, columns, layer, CRS) before the database is touched.
    reader = (CsvReader(source, chunk_rows, max_columns) if source.format == "csv"
              else FeatureReader(source, declared, chunk_rows, max_columns))
    options = dict(actor_id=actor_id, progress=progress, scope=scope, keep_outside=keep_outside,
                   find_duplicates=find_duplicates, started=started)
    if isinstance(engine, Connection):
        report = _import(engine, source, reader, reader.crs or declared, **options)
    else:
        progress("connecting", 0, reader.expected)
        with engine.begin() as conn:
            report = _import(conn, source, reader, reader.crs or declared, **options)
            progress("committing", report.total_rows, report.total_rows)
        report.seconds = time.perf_counter() - started  # with the commit
    progress("done", report.total_rows, report.total_rows)
    return report


def _import(conn, source, reader, input_crs, *, actor_id, progress, scope, keep_outside, find_duplicates,
            started) -> ImportReport:
    batch_id = uuid.uuid4().hex
    now = pd.Timestamp(datetime.now(TZ))
    progress("preparing", 0, reader.expected)
    # Before reading the active version: a publish (which locks incidents first) either finishes before this
    # import reads it, or waits for the import to commit (geo/publish.py).
    conn.execute(text("LOCK TABLE incidents IN ROW EXCLUSIVE MODE"))
    version = active_version(conn)
    categories = _categories(conn)
    create_stage(conn)
    rejects, staged, total, phases = [], [], 0, {}
    progress("reading", 0, reader.expected)
    with copy_rows(conn, "stage_incidents", IMPORT_COLUMNS) as write:
        for chunk, early_rejects in reader.chunks():
            rejects.append(early_rejects)
            total += len(chunk) + len(early_rejects)
            good, bad = validate(chunk, categories, now, input_crs)
            rejects.append(bad)
            if len(good):
                write(good)
                staged.append(good[["line", "lon", "lat"]])
            progress("reading", total, reader.expected)
    phases["read, validate and COPY"] = time.perf_counter() - started
    imported = duplicates = 0
    if staged:
        progress("assigning", total, reader.expected)
        points = pd.concat(staged, ignore_index=True)
        assigned = assign(conn, version, scope=scope, keep_outside=keep_outside, find_duplicates=find_duplicates,
                          actor_id=actor_id, batch_id=batch_id,
                          points=(points["line"].to_numpy(), points["lon"].to_numpy(), points["lat"].to_numpy()))
        del points
        phases.update(assigned.phases)
        imported, duplicates = assigned.imported, assigned.duplicates
        outside = assigned.rejects.drop(columns=["grid_code"])
        if "fid" in reader.extra_columns:
            outside = outside.merge(reader.fids(), on="line", how="left")
        rejects.append(outside)
    rejects = [r for r in rejects if len(r)]
    columns = ("line", "fid", "reason", "nearest_grid", "distance_m")
    frame = (pd.concat(rejects, ignore_index=True).sort_values("line", kind="stable").reset_index(drop=True)
             if rejects else pd.DataFrame({"line": pd.Series([], dtype=np.int64), "reason": []}))
    report = ImportReport(
        batch_id=batch_id, total_rows=total, imported=imported,
        rejects=frame.reindex(columns=[c for c in columns if c in frame]),
        seconds=0.0, duplicates=duplicates, file_name=source.name, format=source.format, crs=input_crs,
        grid_version=version, blank_lines=reader.blank_lines, ignored_columns=reader.ignored, phases=phases)
    if report.total_rows != report.imported + report.rejected_count:  # no row may go missing
        raise RuntimeError(f"Import accounting is off: {report.total_rows} rows read, {report.imported} imported, "
                           f"{report.rejected_count} rejected.")
    report.seconds = time.perf_counter() - started
    _record(conn, report, actor_id, scope)
    return report


def _record(conn: Connection, report: ImportReport, actor_id: int | None, scope: str) -> None:
    """The batch in the audit log, in the same transaction as its rows."""
    detail = {"file": report.file_name, "format": report.format, "crs": report.crs,
              "grid_version": report.grid_version, "total_rows": report.total_rows, "imported": report.imported,
              "rejected": report.rejected_count, "duplicates": report.duplicates, "scope": scope or None,
              "seconds": round(report.seconds, 3)}
    audit.record(conn, "incidents.import", f"batch:{report.batch_id}", actor_id, detail=detail)


def _categories(conn: Connection) -> list[dict]:
    rows = conn.execute(text("SELECT code, name, time_limit, time_limit_unit, clock FROM incident_categories "
                             "WHERE active ORDER BY code"))
    return [dict(r._mapping) for r in rows]
