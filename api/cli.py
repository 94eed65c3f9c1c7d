"""The `wangge` command: database, fixtures, users and the server."""

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from api.settings import Settings

app = typer.Typer(help="Wangge grid management.", no_args_is_help=True)
db_app = typer.Typer(help="The PostGIS database (project-local cluster unless WANGGE_DATABASE_URL is set).",
                     no_args_is_help=True)
fixtures_app = typer.Typer(help="Demo and test data.", no_args_is_help=True)
users_app = typer.Typer(help="Users and API tokens.", no_args_is_help=True)
incidents_app = typer.Typer(help="Incidents: escalation and bulk work.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(fixtures_app, name="fixtures")
app.add_typer(users_app, name="users")
app.add_typer(incidents_app, name="incidents")
console = Console()

DEMO_USER = "demo-admin"


def _cluster(settings: Settings):
    from api.localdb import LocalCluster

    return LocalCluster(settings)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _engine():
    from geo.db import sync_engine

    return sync_engine(Settings().sync_url())


@db_app.command("start")
def db_start() -> None:
    """Initialise (first time) and start the local cluster; reuse it if running."""
    from api.localdb import ClusterError

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


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply Alembic migrations up to head."""
    from geo.db import migrate

    migrate(Settings().sync_url())
    console.print("database schema is at head")


@fixtures_app.command("load")
def fixtures_load(
    small: Annotated[bool, typer.Option(help="Only the first two streets (the fast test fixture).")] = False,
    replace: Annotated[bool, typer.Option(help="Drop the loaded demo data and load again.")] = False,
) -> None:
    """Load the demo district (real 西城区 boundary, synthetic grids, buildings, workers and incidents)."""
    from fixtures import synth
    from fixtures.load import load

    steps = ["building the synthetic district", "catalog", "areas", "buildings and households", "grid workers",
             "incidents", "analyse"]
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("checking", total=len(steps))

        def step(name: str) -> None:
            progress.update(task, description=name, completed=steps.index(name))

        report = load(_engine(), lambda: synth.build(streets=2 if small else None), replace=replace, step=step)
        progress.update(task, completed=len(steps), description="done")
    verb = "already loaded" if report.skipped else f"loaded in {time.perf_counter() - started:.1f} s"
    console.print(f"demo district {verb} (grid version {report.version_id}): "
                  + ", ".join(f"{k} {v:,}" for k, v in report.counts.items()))


@users_app.command("create")
def users_create(
    role: Annotated[str, typer.Option(help="admin, supervisor, planner, dispatcher, grid_worker or reporter")],
    area: Annotated[str | None, typer.Option(help="Area code the user is confined to (omit only for admin).")] = None,
    name: Annotated[str | None, typer.Option(help="Unique user name (default: ROLE-AREA).")] = None,
) -> None:
    """Create a user and print a bearer token for it (shown once)."""
    from geo.auth import create_user, issue_token
    from geo.errors import DomainError

    try:
        with _engine().begin() as conn:
            user_id = create_user(conn, name or f"{role}-{area or 'all'}", role, area)
            token = issue_token(conn, user_id)
    except DomainError as exc:
        _fail(exc.message)
    print(token)


@users_app.command("demo-token")
def users_demo_token() -> None:
    """Create the demo admin if needed, issue it a fresh token, save it to .wangge/demo-token and print it."""
    from geo.auth import create_user, get_user_id, issue_token

    settings = Settings()
    with _engine().begin() as conn:
        user_id = get_user_id(conn, DEMO_USER) or create_user(conn, DEMO_USER, "admin", None)
        token = issue_token(conn, user_id)
    path = settings.local_dir / "demo-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    print(token)


@incidents_app.command("escalate")
def incidents_escalate() -> None:
    """Escalate overdue incidents level by level (community, street, district); safe to run any time."""
    from geo.escalation import LEVEL_NAMES, run

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the API and maps."""
    import uvicorn

    settings = Settings()
    console.print(f"serving on http://{host or settings.host}:{port or settings.port}  (docs at /docs)")
    uvicorn.run("api.app:create_app", factory=True, host=host or settings.host, port=port or settings.port,
                workers=workers, log_level="warning", access_log=False)
