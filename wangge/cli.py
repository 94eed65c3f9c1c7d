"""The `wangge` command: database, fixtures, users and the server."""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from api.settings import Settings
from geo.incidents.timelimits import TZ

app = typer.Typer(help="Wangge grid management.", no_args_is_help=True)
db_app = typer.Typer(help="The PostGIS database (project-local cluster unless WANGGE_DATABASE_URL is set).",
                     no_args_is_help=True)
fixtures_app = typer.Typer(help="Demo and test data.", no_args_is_help=True)
users_app = typer.Typer(help="Users and API tokens.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: list and revoke (effective at once in every worker).", no_args_is_help=True)
incidents_app = typer.Typer(help="Incidents: escalation and bulk work.", no_args_is_help=True)
network_app = typer.Typer(help="Road networks (OSM extracts) for travel times by road.", no_args_is_help=True)
plans_app = typer.Typer(help="Grid plans (draft versions): import and export grid files.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(fixtures_app, name="fixtures")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(incidents_app, name="incidents")
app.add_typer(network_app, name="network")
app.add_typer(plans_app, name="plans")
console = Console()
errors = Console(stderr=True)

DEMO_USER = "demo-admin"


def _cluster(settings: Settings):
    from wangge.localdb import LocalCluster

    return LocalCluster(settings)


def _fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (never wrapped, never read as markup), then exit with `code`."""
    from rich.markup import escape

    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _engine(application_name: str = "wangge", statement_timeout_s: float = 0):
    from geo.db import sync_engine

    settings = Settings()
    return sync_engine(settings.sync_url(),
                       connect_args=settings.sync_connect_args(application_name, statement_timeout_s))


def _database_gone(exc: BaseException) -> str | None:
    """Why the database is gone, in one short line, when `exc` says so (connection refused, reset or
    terminated, a statement cancelled by its timeout); None for any other error."""
    import psycopg
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        if not (exc.connection_invalidated or isinstance(exc, (sqlalchemy.exc.OperationalError,
                                                                sqlalchemy.exc.InterfaceError))):
            return None
        exc = exc.orig
    elif not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return None
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "a statement ran past its timeout (WANGGE_BULK_STATEMENT_TIMEOUT_S)"
    first = exc.__context__  # the error that set it off says more than "the connection is lost"
    while first is not None:
        if isinstance(first, (psycopg.OperationalError, psycopg.InterfaceError)):
            exc = first
        first = first.__context__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: psycopg cancels the statement in flight on either."""


def _interrupt(signum, frame) -> NoReturn:
    raise _Interrupted()


@db_app.command("start")
def db_start() -> None:
    """Initialise (first time) and start the local cluster; reuse it if running."""
    from wangge.localdb import ClusterError

    settings = Settings()
    if settings.database_url:
        console.print("WANGGE_DATABASE_URL is set: using that database, no local cluster started.")
        return
    try:
        _cluster(settings).start()
    except ClusterError as exc:
        _fail(str(exc))
    console.print(f"PostGIS {_cluster(settings).status()}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local cluster."""
    _cluster(Settings()).stop()
    console.print("stopped")


@db_app.command("status")
def db_status() -> None:
    """Say whether the local cluster runs."""
    settings = Settings()
    if settings.database_url:
        console.print("using WANGGE_DATABASE_URL (external database)")
    else:
        console.print(_cluster(settings).status())


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (for psql and friends)."""
    print(Settings().resolved_url())


@db_app.command("dump")
def db_dump(path: Annotated[Path, typer.Argument(help="File to write (pg_dump custom format)")]) -> None:
    """Back up the database to a file."""
    from wangge import backup
    from wangge.localdb import ClusterError

    try:
        size = backup.dump(Settings().libpq_url(), path)
    except ClusterError as exc:
        _fail(str(exc))
    console.print(f"dumped to {path} ({size / 1e6:,.1f} MB)")


@db_app.command("restore")
def db_restore(
    path: Annotated[Path, typer.Argument(help="A file written by `wangge db dump`")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the database is replaced by the dump")] = False,
) -> None:
    """Replace the database with a dump (all or nothing)."""
    from wangge import backup
    from wangge.localdb import ClusterError

    if not yes:
        _fail("restore replaces the whole database; run again with --yes to go ahead.")
    try:
        backup.restore(Settings().libpq_url(), path)
    except ClusterError as exc:
        _fail(str(exc))
    console.print(f"restored {path}")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply Alembic migrations up to head."""
    from geo.db import migrate

    migrate(Settings().sync_url())
    console.print("database schema is at head")


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"--as-of {value!r} is not an ISO 8601 time; use e.g. 2026-11-15T09:00:00+08:00.")
    return moment if moment.tzinfo else moment.replace(tzinfo=TZ)  # a naive time is Beijing time


@fixtures_app.command("load")
def fixtures_load(
    small: Annotated[bool, typer.Option(help="Only the first two streets (the fast test fixture).")] = False,
    replace: Annotated[bool, typer.Option(help="Drop the loaded demo data and load again.")] = False,
    network: Annotated[bool, typer.Option(help="Also the road-network demo: OSM Karhula (Finland) roads and "
                                               "buildings as area 990101 and network 'karhula'.")] = False,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="End the demo year at this ISO 8601 time (default: now); reproduces an earlier load "
                        "exactly.")] = None,
    renew_after_h: Annotated[float | None, typer.Option(
        "--renew-after", help="Load again when the loaded demo's year ended more than this many hours ago.")] = None,
) -> None:
    """Load the demo district (real 西城区 boundary, synthetic grids, buildings, workers and incidents).

    The demo year ends at the moment of loading, so open cases, deadlines and positions are current."""
    from fixtures import synth
    from fixtures.load import anchor, load

    end = _as_of(as_of)
    if renew_after_h is not None and not replace:
        with _engine().connect() as conn:
            loaded = anchor(conn)
        if loaded is None:  # no demo, or one loaded before the anchor was stored: (re)load it
            replace = True
        elif (datetime.now(UTC) - loaded).total_seconds() > renew_after_h * 3600:
            console.print(f"the loaded demo ends {loaded.isoformat()}, over {renew_after_h:g} h ago: loading it again")
            replace = True

    steps = ["building the synthetic district", "catalog", "areas", "buildings and households", "grid workers",
             "incidents", "analyse"]
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("checking", total=len(steps))

        def step(name: str) -> None:
            progress.update(task, description=name, completed=steps.index(name))

        report = load(_engine(), lambda: synth.build(streets=2 if small else None, end=end), replace=replace,
                      step=step)
        progress.update(task, completed=len(steps), description="done")
    verb = "already loaded" if report.skipped else f"loaded in {time.perf_counter() - started:.1f} s"
    console.print(f"demo district {verb} (grid version {report.version_id}): "
                  + ", ".join(f"{k} {v:,}" for k, v in report.counts.items()))
    with _engine().connect() as conn:
        loaded = anchor(conn)
    console.print(f"the demo year ends at {loaded.isoformat() if loaded else 'an unknown time (load it again)'}")
    if report.skipped and end is not None and loaded != end:
        console.print(f"(not at --as-of {end.isoformat()}: add --replace to load the demo again at that time)")
    if report.skipped and as_of is None:
        from fixtures.load import refresh_synthetic_positions

        console.print(f"{refresh_synthetic_positions(_engine()):,} synthetic responder positions stamped as current")
    if network:
        from fixtures import network_demo

        started = time.perf_counter()
        net = network_demo.load(_engine(), replace=replace, step=lambda name: console.print(f"  {name}"))
        verb = "already loaded" if net.skipped else f"loaded in {time.perf_counter() - started:.1f} s"
        console.print(f"network demo (Karhula, OSM/ODbL) {verb}: "
                      + ", ".join(f"{k} {v:,}" for k, v in net.counts.items()))


@network_app.command("import")
def network_import(
    file: Annotated[Path, typer.Argument(help="An OpenStreetMap extract (.osm.pbf).", exists=True, dir_okay=False)],
    name: Annotated[str | None, typer.Option(help="Network name (default: the file name); replaces a network "
                                                  "of that name.")] = None,
    type: Annotated[str, typer.Option("--type", help="driving or walking.")] = "driving",
) -> None:
    """Import the roads of an OSM extract as a routable network (one transaction)."""
    from geo.dispatch.network import import_pbf
    from geo.errors import DomainError

    name = name or file.name.split(".")[0]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("reading", total=3)
        try:
            report = import_pbf(_engine(), file, name, network_type=type,
                                progress=lambda phase, done, total: bar.update(task, description=phase,
                                                                               completed=done, total=total))
        except DomainError as exc:
            _fail(exc.message)
    console.print(f"network {report.name!r} ({report.network_type}): {report.vertices:,} vertices, "
                  f"{report.edges:,} edges ({report.one_way_edges:,} one-way), {report.length_km:,.1f} km, "
                  f"{report.seconds:.1f} s")


@users_app.command("create")
def users_create(
    role: Annotated[str, typer.Option(help="admin, supervisor, planner, dispatcher, grid_worker or reporter")],
    area: Annotated[str | None, typer.Option(help="Area code the user is confined to (omit only for admin).")] = None,
    name: Annotated[str | None, typer.Option(help="Unique user name (default: ROLE-AREA).")] = None,
    expires_days: Annotated[float | None, typer.Option(help="Token lifetime in days (default "
                                                           "WANGGE_TOKEN_LIFETIME_DAYS; 0: until revoked).")] = None,
) -> None:
    """Create a user and print a bearer token for it (shown once)."""
    from geo.auth import create_user, issue_token
    from geo.errors import DomainError

    try:
        with _engine().begin() as conn:
            user_id = create_user(conn, name or f"{role}-{area or 'all'}", role, area)
            token = issue_token(conn, user_id, Settings().token_lifetime(expires_days))
    except DomainError as exc:
        _fail(exc.message)
    print(token)


def _user_id(conn, name: str) -> int:
    from geo.auth import get_user_id

    user_id = get_user_id(conn, name)
    if user_id is None:
        _fail(f"No user named {name!r}; see `wangge users list`.")
    return user_id


def _table(rows: list[dict], columns: tuple[str, ...], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    console.print(table)


@users_app.command("list")
def users_list() -> None:
    """Every user: role, area, disabled or not, live tokens."""
    from geo.auth import list_users

    with _engine().connect() as conn:
        rows = list_users(conn)
    _table(rows, ("id", "name", "role", "area_code", "disabled_at", "live_tokens"), f"{len(rows)} users")


@users_app.command("password")
def users_password(name: Annotated[str, typer.Argument(help="The user's name")]) -> None:
    """Set a user's password for the sign-in page (asked twice, never shown; WANGGE_PASSWORD for scripts)."""
    import os

    from geo.auth import set_password
    from geo.errors import DomainError

    password = os.environ.get("WANGGE_PASSWORD") or typer.prompt("Password", hide_input=True,
                                                                 confirmation_prompt=True)
    try:
        with _engine().begin() as conn:
            set_password(conn, _user_id(conn, name), password)
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"password set for {name}; sign in at /login")


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="The user's name")]) -> None:
    """Revoke every token of a user (they may be issued a new one)."""
    from geo.auth import revoke_tokens

    with _engine().begin() as conn:
        count = revoke_tokens(conn, _user_id(conn, name))
    console.print(f"revoked {count} token(s) of {name}")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The user's name")]) -> None:
    """Disable a user: their tokens stop working at once and no new one resolves."""
    from geo.auth import disable_user
    from geo.errors import DomainError

    try:
        with _engine().begin() as conn:
            disable_user(conn, _user_id(conn, name))
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"disabled {name}")


@tokens_app.command("list")
def tokens_list(user: Annotated[str | None, typer.Option(help="Only this user's tokens")] = None) -> None:
    """Tokens (by prefix; values are never stored): created, expires, revoked, last used."""
    from geo.auth import list_tokens

    with _engine().connect() as conn:
        rows = list_tokens(conn, _user_id(conn, user) if user else None)
    _table(rows, ("id", "user_name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at", "live"),
           f"{len(rows)} tokens")


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="The token's id (wangge tokens list)")]) -> None:
    """Revoke one token, at once in every worker."""
    from geo.auth import revoke_token
    from geo.errors import DomainError

    try:
        with _engine().begin() as conn:
            revoke_token(conn, token_id)
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"revoked token {token_id}")


@users_app.command("demo-token")
def users_demo_token() -> None:
    """Create the demo admin if needed, revoke its earlier tokens, issue a fresh one, save it to
    .wangge/demo-token and print it."""
    from geo.auth import create_user, get_user_id, issue_token, revoke_tokens

    settings = Settings()
    with _engine().begin() as conn:
        user_id = get_user_id(conn, DEMO_USER) or create_user(conn, DEMO_USER, "admin", None)
        revoke_tokens(conn, user_id)
        token = issue_token(conn, user_id, settings.token_lifetime())
    path = settings.local_dir / "demo-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    print(token)


@incidents_app.command("escalate")
def incidents_escalate() -> None:
    """Escalate overdue incidents level by level (community, street, district); safe to run any time."""
    from geo.incidents.escalation import LEVEL_NAMES, run

    settings = Settings()
    with _engine().begin() as conn:
        result = run(conn, steps_h=settings.escalation_steps_h)
    if result.locked_out:
        console.print("another escalation run is in progress; nothing done")
        return
    moved = sum(result.by_level.values())
    levels = ", ".join(f"{n:,} to level {lv} ({LEVEL_NAMES[lv]})" for lv, n in result.by_level.items())
    console.print(f"escalated {moved:,} incidents" + (f": {levels}" if levels else "")
                  + f" ({result.events:,} events)")


@incidents_app.command("import")
def incidents_import(
    file: Annotated[Path, typer.Argument(help="CSV (lon,lat,category[,description,reported_at,source]), GeoJSON or "
                                              "GeoPackage of points.", exists=True, dir_okay=False)],
    format: Annotated[str | None, typer.Option(help="csv, geojson or gpkg (default: from the file name).")] = None,
    crs: Annotated[str, typer.Option(help="EPSG:4326, EPSG:4490, GCJ-02 or BD-09 (a layer's own CRS wins unless "
                                          "GCJ-02/BD-09 is given).")] = "EPSG:4326",
    report: Annotated[Path | None, typer.Option(help="Write every rejected row (line, reason) to this CSV.")] = None,
    keep_outside: Annotated[bool, typer.Option(help="Keep points outside every grid as 'unassigned' with the "
                                                    "nearest grid suggested, instead of rejecting them.")] = False,
) -> None:
    """Import incidents in one transaction: every row is filed or reported with its line and reason."""
    import logging
    import signal

    from rich.progress import MofNCompleteColumn

    from geo.errors import DomainError
    from geo.incidents.bulk import PHASES, import_incidents

    settings = Settings()
    # A failure is reported below in one line; psycopg's own warning about the COPY it could not end is noise.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    stage = "reading the file"
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the statement in flight is cancelled, all rolled back
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("reading", total=None)
        phases = {"connecting": "connecting", "preparing": "preparing", "reading": "reading and checking rows",
                  "assigning": "assigning to grids (one statement)", "committing": "committing", "done": "done"}

        def progress(phase: str, done: int, total: int | None) -> None:
            nonlocal stage
            stage = PHASES.get(phase, phase)
            bar.update(task, description=phases.get(phase, phase), completed=done,
                       total=None if phase == "assigning" else (max(total, done) if total else None))

        engine = _engine("wangge incidents import", settings.bulk_statement_timeout_s)
        try:
            result = import_incidents(engine, file, format=format, crs=crs, progress=progress,
                                      keep_outside=keep_outside, max_columns=settings.bulk_max_columns)
        except DomainError as exc:
            bar.stop()
            _fail(exc.message)
        except KeyboardInterrupt as exc:
            bar.stop()
            how = "stopped (SIGTERM)" if isinstance(exc, _Interrupted) else "interrupted"
            _fail(f"nothing was imported: {how} during {stage}; the statement in flight was cancelled and the "
                  "transaction rolled back.", 143 if isinstance(exc, _Interrupted) else 130)
        except Exception as exc:
            reason = _database_gone(exc)
            if reason is None:
                raise
            bar.stop()
            if stage == PHASES["committing"]:  # the server may have committed before it went away
                _fail(f"the database went away during {stage} ({reason}): the import may or may not have been "
                      "committed; look for it under incidents.import in audit_log before importing again.")
            if stage == PHASES["connecting"]:
                _fail(f"nothing was imported: the database could not be reached ({reason}).")
            _fail(f"nothing was imported: the database went away during {stage} ({reason}).")
        finally:
            engine.dispose()
    console.print(f"{file.name}: {result.total_rows:,} rows, imported {result.imported:,}"
                  f" ({result.duplicates:,} likely duplicates), rejected {result.rejected_count:,}"
                  f" — grid version {result.grid_version}, {result.crs}, batch {result.batch_id},"
                  f" {result.seconds:.1f} s")
    if result.ignored_columns:
        console.print(f"ignored columns: {', '.join(result.ignored_columns)}")
    if report is not None:
        result.write_rejects(report)
        console.print(f"reject report: {report} ({result.rejected_count:,} rows)")
    elif result.rejected_count:
        for row in result.summary(limit=10)["rejected"]:
            console.print(f"  line {row['line']}: {row['reason']}", highlight=False)
        if result.rejected_count > 10:
            console.print(f"  … {result.rejected_count - 10:,} more; write them all with --report FILE")


def _operator():
    """Who the command line acts as: the operator of the database, with an admin's reach."""
    from geo.auth import Caller

    return Caller(None, "cli", "admin", None)


@plans_app.command("import")
def plans_import(
    plan_id: Annotated[int, typer.Argument(help="The draft plan to import into (see GET /plans).")],
    file: Annotated[Path, typer.Argument(help="GeoPackage, zipped Shapefile (.zip), GeoJSON or GeoParquet: one "
                                              "polygon per grid, optional code, name, kind, worker_id.",
                                         exists=True, dir_okay=False)],
    crs: Annotated[str | None, typer.Option(help="EPSG:4326, EPSG:4490, GCJ-02 or BD-09: the CRS of a file that has "
                                                 "none; GCJ-02/BD-09 win over the file's own.")] = None,
    format: Annotated[str | None, typer.Option(help="gpkg, shp, geojson or parquet (default: from the file).")] = None,
    revision: Annotated[int | None, typer.Option(help="Refuse if the plan has moved past this revision "
                                                      "(default: its current one).")] = None,
) -> None:
    """Replace the grids of every community the file touches, all or nothing; every bad feature is listed."""
    from geo.errors import DomainError
    from geo.planning import files as plan_files
    from geo.planning import plans

    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"reading {file.name}")
        try:
            upload = plan_files.read(file, format, file.name, crs, Settings().unzip_limits())
            bar.update(task, description=f"checking and importing {len(upload.frame):,} features")
            with _engine().begin() as conn:
                current = plans.draft(conn, plan_id).revision if revision is None else revision
                report = plan_files.import_grids(conn, _operator(), plan_id, current, upload)
        except plan_files.BadFeatures as exc:
            bar.stop()
            console.print(f"[red]error:[/red] {len(exc.features):,} of {len(upload.frame):,} features cannot be "
                          "imported, so nothing was imported:", highlight=False)
            for feature in exc.features:
                console.print(f"  {feature['id']}: {feature['reason']}", highlight=False)
            raise typer.Exit(1) from None
        except DomainError as exc:
            bar.stop()
            _fail(exc.message)
    console.print(f"plan {plan_id} revision {report['revision']}: imported {report['imported']:,} grids into "
                  f"{len(report['communities']):,} communities (replacing {report['replaced']:,}) from "
                  f"{report['format']} in {report['crs']}, {time.perf_counter() - started:.1f} s", highlight=False)


@plans_app.command("export")
def plans_export(
    plan_id: Annotated[int, typer.Argument(help="Any version: a draft, the active one or a retired one.")],
    file: Annotated[Path, typer.Argument(help="Where to write (.gpkg, .geojson, .zip for a Shapefile, .parquet).",
                                         dir_okay=False)],
    format: Annotated[str | None, typer.Option(help="gpkg, geojson, shp or parquet (default: from FILE).")] = None,
) -> None:
    """Write a version's grids (EPSG:4326) with codes, name, kind, households and worker."""
    from geo.errors import DomainError
    from geo.planning import files as plan_files

    try:
        format = format or plan_files.format_of(file.name)
        if format is None:
            _fail(f"Cannot tell the format from {file.name!r}: end it with .gpkg, .geojson, .zip or .parquet, "
                  "or give --format.")
        with _engine().begin() as conn:  # the export is audited
            out = plan_files.export(conn, _operator(), plan_id, format)
    except DomainError as exc:
        _fail(exc.message)
    file.write_bytes(out.content)
    console.print(f"{file}: {out.grids:,} grids of plan {plan_id} ({out.media_type}, {len(out.content):,} bytes)",
                  highlight=False)


@app.command()
def simulate(
    url: Annotated[str | None, typer.Option(help="The running service (default: from settings).")] = None,
    rate: Annotated[float, typer.Option(help="New incidents per minute.")] = 15.0,
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
    ping_interval: Annotated[float, typer.Option(help="Seconds between each responder's position pings.")] = 60.0,
    worked_share: Annotated[float, typer.Option(help="Share of new incidents dispatched and worked to closure.")] = 0.6,
    step_scale: Annotated[float, typer.Option(help="Multiplies the delays between workflow steps.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for a reproducible feed.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the service to come up first.")] = False,
) -> None:
    """A live city feed through the public API: new incidents, responders walking and pinging, cases worked to
    closure. Its traffic is marked synthetic. Uses the demo admin token (.wangge/demo-token) or WANGGE_TOKEN."""
    import os
    import signal

    from fixtures.simulate import Feed, run, wait_until_up

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    # make runs it in the background, where SIGINT is ignored: stop cleanly on SIGINT and SIGTERM alike
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)

    settings = Settings()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    token_file = settings.local_dir / "demo-token"
    token = os.environ.get("WANGGE_TOKEN") or (token_file.read_text().strip() if token_file.exists() else "")
    if not token:
        _fail("No token: run `wangge users demo-token`, or set WANGGE_TOKEN.")
    if rate <= 0 or ping_interval <= 0 or step_scale <= 0 or not 0 <= worked_share <= 1:
        _fail("--rate, --ping-interval and --step-scale must be positive, and --worked-share between 0 and 1.")
    if wait:
        wait_until_up(base)
    tally = run(base, token, Feed(rate_per_min=rate, duration_s=duration, ping_interval_s=ping_interval,
                                  worked_share=worked_share, step_scale=step_scale, seed=seed), say=console.print)
    for line in tally.lines():
        console.print(f"  {line}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default WANGGE_WORKERS, else one per "
                                                     "core).")] = None,
) -> None:
    """Serve the API and maps; on SIGTERM or Ctrl-C, requests in flight get WANGGE_SHUTDOWN_GRACE_S to finish."""
    import uvicorn

    settings = Settings()
    count = workers or settings.worker_count()
    console.print(f"serving on http://{host or settings.host}:{port or settings.port} with {count} worker(s) "
                  "(docs at /docs)")
    uvicorn.run("api.app:create_app", factory=True, host=host or settings.host, port=port or settings.port,
                workers=count, log_level="warning", access_log=False,
                timeout_graceful_shutdown=settings.shutdown_grace_s,
                h11_max_incomplete_event_size=settings.max_header_bytes)
