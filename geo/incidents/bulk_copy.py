"""COPY of DataFrames into PostgreSQL: CSV text, or binary COPY built with numpy (the bulk import and the
demo loader)."""

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import Connection

# ------------------------------------------------------------------------------------- shared with the loader

def _text_times(values: pd.Series) -> np.ndarray:
    """Timestamps as ISO 8601 UTC text for COPY (None for NaT), vectorised; naive values are taken as UTC."""
    stamps = pd.DatetimeIndex(values)
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    raw = stamps.as_unit("us").to_numpy()
    out = np.datetime_as_string(raw, unit="us", timezone="UTC").astype(object)
    out[np.isnat(raw)] = None
    return out


def _csv_text(frame: pd.DataFrame) -> str:
    """A frame as COPY csv text: geometries as hex EWKB, times as ISO 8601 UTC."""
    import geopandas as gpd
    import shapely

    columns = {}
    for column, values in frame.items():
        if isinstance(values.dtype, gpd.array.GeometryDtype):
            columns[column] = shapely.to_wkb(shapely.set_srid(np.asarray(values), 4326), hex=True, include_srid=True)
        elif pd.api.types.is_datetime64_any_dtype(values.dtype):
            columns[column] = _text_times(values)
        else:
            columns[column] = values.to_numpy()
    buffer = io.StringIO()
    pd.DataFrame(columns).to_csv(buffer, index=False, header=False)
    return buffer.getvalue()


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: flags 0, no extension
_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in Unix microseconds
_FIXED = {"int8": ">i8", "float8": ">f8", "timestamptz": ">i8", "int2": ">i2"}


def _binary_rows(frame: pd.DataFrame, kinds: dict[str, str]) -> bytes:
    """Rows of a frame in PostgreSQL's binary COPY format, built with numpy (no Python loop over fields).

    kinds maps each column to int8, int2, float8, timestamptz (tz-aware or UTC-naive datetimes) or text;
    None/NaN/NaT become NULL."""
    n = len(frame)
    fields = []  # (lengths with -1 for NULL, byte sizes, data as (n, width) array or flat bytes)
    for column, kind in kinds.items():
        values = frame[column]
        if kind == "text":
            null = values.isna().to_numpy()
            encoded = [b"" if missing else str(v).encode() for v, missing in zip(values.to_numpy(), null, strict=False)]
            sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
            fields.append((np.where(null, -1, sizes), sizes, np.frombuffer(b"".join(encoded), dtype=np.uint8)))
            continue
        if kind == "timestamptz":
            stamps = pd.DatetimeIndex(values)
            if stamps.tz is not None:
                stamps = stamps.tz_convert("UTC").tz_localize(None)
            null = np.asarray(stamps.isna())
            numbers = stamps.as_unit("us").asi8 - _PG_EPOCH_US
        else:
            numbers = values.to_numpy(dtype=float if kind == "float8" else np.int64)
            null = np.isnan(numbers) if kind == "float8" else np.zeros(n, dtype=bool)
        width = np.dtype(_FIXED[kind]).itemsize
        sizes = np.where(null, 0, width)
        data = np.ascontiguousarray(numbers.astype(_FIXED[kind])).view(np.uint8).reshape(n, width)
        fields.append((np.where(null, -1, width), sizes, data))
    row_sizes = 2 + sum((4 + sizes for _, sizes, _ in fields), np.zeros(n, dtype=np.int64))
    starts = np.concatenate([[0], np.cumsum(row_sizes)[:-1]]).astype(np.int64)
    out = np.empty(int(row_sizes.sum()), dtype=np.uint8)
    out[starts[:, None] + np.arange(2)] = np.frombuffer(len(fields).to_bytes(2, "big"), dtype=np.uint8)
    position = starts + 2
    for lengths, sizes, data in fields:
        out[position[:, None] + np.arange(4)] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        position = position + 4
        if data.ndim == 2:  # fixed width: rows that are not NULL
            present = sizes > 0
            out[position[present][:, None] + np.arange(data.shape[1])] = data[present]
        elif len(data):  # variable width: scatter each row's bytes after its length word
            source_starts = np.cumsum(sizes) - sizes
            out[np.repeat(position - source_starts, sizes) + np.arange(len(data))] = data
        position = position + sizes
    return out.tobytes()


def _cursor(conn: Connection) -> psycopg.Cursor[Any]:
    """A cursor of the psycopg connection under `conn` (the engine's driver is psycopg 3)."""
    return cast(psycopg.Cursor[Any], conn.connection.cursor())


@contextmanager
def copy_rows(conn: Connection, table: str, kinds: dict[str, str]) -> Iterator[Callable[[pd.DataFrame], None]]:
    """One binary COPY into `table` left open for many frames: `write(frame)` queues a frame's rows (see
    _binary_rows for `kinds`) and returns while a thread sends them, so the next frame is prepared meanwhile."""
    from psycopg.copy import QueuedLibpqWriter

    started = False
    with _cursor(conn) as cursor:
        statement = f"COPY {table} ({', '.join(kinds)}) FROM STDIN WITH (FORMAT binary)"
        with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
            def write(frame: pd.DataFrame) -> None:
                nonlocal started
                if len(frame):
                    copy.write((b"" if started else _SIGNATURE) + _binary_rows(frame, kinds))
                    started = True

            yield write
            if started:
                copy.write(_TRAILER)


def copy_frame(conn: Connection, table: str, frame: pd.DataFrame) -> None:
    """COPY a frame into `table` (columns by name); geometries go as hex EWKB, times as ISO 8601 UTC text."""
    with _cursor(conn) as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(_csv_text(frame))
