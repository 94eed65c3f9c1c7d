"""Database tables: the schema of record (Alembic migrations are generated from it)."""

from datetime import date, datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

LEVELS = ("district", "street", "community", "grid")
CODE_LENGTH = {"district": 6, "street": 9, "community": 12, "grid": 15}
GRID_KINDS = ("residential", "commercial")
VERSION_STATUSES = ("draft", "active", "retired")
ROLES = ("admin", "supervisor", "planner", "dispatcher", "grid_worker", "reporter")
RESPONDER_ROLES = ("grid_worker", "patrol", "department_crew")
RESPONDER_STATUSES = ("available", "busy", "off_duty")
CLOCKS = ("urgent", "working_hours", "working_days", "calendar_days")
INCIDENT_STATUSES = (
    "unassigned", "reported", "filed", "dispatched", "in_progress", "handled", "verified",
    "closed", "returned", "suspended", "rejected", "void",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _now():
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Base(DeclarativeBase):
    """The declarative base of the schema."""
    pass


class GridVersion(Base):
    """A generation of grids (MapIt-style): drafted, activated in one step, then retired."""

    __tablename__ = "grid_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), server_default="draft")
    revision: Mapped[int] = mapped_column(Integer, server_default="0")  # optimistic locking of plan edits
    based_on_id: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(Text)
    area_code: Mapped[str | None] = mapped_column(Text)  # a draft's area (its creator's); NULL: everyone's
    created_at: Mapped[datetime] = _now()
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        CheckConstraint(_in("status", VERSION_STATUSES), name="grid_versions_status"),
        # Exactly one active version at any time (at most one here; publishing swaps in one transaction).
        Index("grid_versions_one_active", text("(true)"), unique=True, postgresql_where=text("status = 'active'")),
    )


class Area(Base):
    """One node of district → street → community → grid; only grids belong to a version."""

    __tablename__ = "areas"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(15))
    level: Mapped[str] = mapped_column(String(9))
    name: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id", ondelete="CASCADE"))
    kind: Mapped[str | None] = mapped_column(String(11))
    households: Mapped[int] = mapped_column(Integer, server_default="0")
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("responders.id", use_alter=True, ondelete="SET NULL"),
                                                 index=True)  # deleting a responder checks this key
    is_synthetic: Mapped[bool] = mapped_column(Boolean, server_default="false")
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    __table_args__ = (
        CheckConstraint(_in("level", LEVELS), name="areas_level"),
        CheckConstraint(
            " OR ".join(f"(level = '{lvl}' AND code ~ '^[0-9]{{{n}}}$')" for lvl, n in CODE_LENGTH.items()),
            name="areas_code_digits",
        ),
        CheckConstraint("(level = 'grid') = (version_id IS NOT NULL)", name="areas_only_grids_versioned"),
        CheckConstraint(f"kind IS NULL OR (level = 'grid' AND {_in('kind', GRID_KINDS)})", name="areas_kind"),
        CheckConstraint("households >= 0", name="areas_households"),
        # Drafts may hold invalid grids for validation to report; publishing refuses them.
        CheckConstraint("NOT ST_IsEmpty(geom) AND (version_id IS NOT NULL OR ST_IsValid(geom))",
                        name="areas_geom_valid"),
        Index("areas_code_stable", "code", unique=True, postgresql_where=text("version_id IS NULL")),
        Index("areas_code_per_version", "version_id", "code", unique=True,
              postgresql_where=text("version_id IS NOT NULL")),
        Index("areas_geom_gist", "geom", postgresql_using="gist"),
        # the point → grid lookup of one version (migration 0006; btree_gist)
        Index("areas_grid_version_geom", "version_id", "geom", postgresql_using="gist",
              postgresql_where=text("level = 'grid'")),
        # KNN in Web Mercator for a point outside every grid (geo.areas.hierarchy.nearest_proven)
        Index("areas_grid_version_mercator", "version_id", func.ST_Transform(text("geom"), 3857),
              postgresql_using="gist", postgresql_where=text("level = 'grid'")),
    )


class Building(Base):
    """A building as a point or footprint, with its households (shop fronts count as households)."""

    __tablename__ = "buildings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    households: Mapped[int] = mapped_column(Integer)
    use: Mapped[str] = mapped_column(String(11), server_default="residential")
    address: Mapped[str | None] = mapped_column(Text)
    is_synthetic: Mapped[bool] = mapped_column(Boolean, server_default="false")
    source: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=False)
    __table_args__ = (
        CheckConstraint("households >= 0", name="buildings_households"),
        CheckConstraint(_in("use", GRID_KINDS), name="buildings_use"),
        CheckConstraint("GeometryType(geom) IN ('POINT', 'POLYGON', 'MULTIPOLYGON')", name="buildings_geom_type"),
        Index("buildings_geom_gist", "geom", postgresql_using="gist"),
    )


class Department(Base):
    """A city department that handles incidents of some categories."""
    __tablename__ = "departments"
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)


class IncidentCategory(Base):
    """What can be reported, who handles it and how long they have (amount, unit, clock)."""

    __tablename__ = "incident_categories"
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    department_code: Mapped[str] = mapped_column(ForeignKey("departments.code"))
    time_limit: Mapped[int] = mapped_column(Integer)
    time_limit_unit: Mapped[str] = mapped_column(String(5))
    clock: Mapped[str] = mapped_column(String(13))
    dispatch_limit_min: Mapped[int] = mapped_column(Integer, server_default="30")
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    __table_args__ = (
        CheckConstraint(_in("clock", CLOCKS), name="incident_categories_clock"),
        CheckConstraint(_in("time_limit_unit", ("hours", "days")), name="incident_categories_unit"),
        CheckConstraint("time_limit >= 0", name="incident_categories_limit"),
    )


class User(Base):
    """An account; `area_code` confines it to that subtree (NULL: the whole system, admins only)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(String(11))
    area_code: Mapped[str | None] = mapped_column(String(15))
    created_at: Mapped[datetime] = _now()
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2 (pwdlib); None: tokens only
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="users_role"),)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(7), server_default="api")  # 'session': a sign-in's cookie
    __table_args__ = (CheckConstraint(_in("kind", ("api", "session")), name="api_tokens_kind"),)


class TokenUse(Base):
    """How many requests a token made on a day (local time), added up by every worker."""

    __tablename__ = "token_use"
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger)


class Responder(Base):
    """A grid worker, patrol or department crew, with shift status and last known position."""

    __tablename__ = "responders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(15))
    department_code: Mapped[str | None] = mapped_column(ForeignKey("departments.code"))
    home_grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    status: Mapped[str] = mapped_column(String(9), server_default="available")
    position = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    # Web Mercator copy for the nearest-responder KNN (migration 0007, geo.dispatch)
    position_3857 = mapped_column(Geometry("POINT", srid=3857, spatial_index=False),
                                  Computed("ST_Transform(position, 3857)", persisted=True))
    position_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), unique=True)
    is_synthetic: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[datetime] = _now()
    __table_args__ = (
        CheckConstraint(_in("role", RESPONDER_ROLES), name="responders_role"),
        CheckConstraint(_in("status", RESPONDER_STATUSES), name="responders_status"),
        Index("responders_position_gist", "position", postgresql_using="gist"),
        Index("responders_position_3857_gist", "position_3857", postgresql_using="gist"),
    )


class ResponderPosition(Base):
    """Append-only track of position pings; BRIN on time keeps it cheap as it grows."""

    __tablename__ = "responder_positions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    responder_id: Mapped[int] = mapped_column(ForeignKey("responders.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)
    __table_args__ = (
        Index("responder_positions_track", "responder_id", text("at DESC")),
        Index("responder_positions_at_brin", "at", postgresql_using="brin"),
    )


class Incident(Base):
    """A reported problem, assigned to the grid (and version) that covers it."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category_code: Mapped[str] = mapped_column(ForeignKey("incident_categories.code"))
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reporter_contact = mapped_column(JSONB)  # Open311 name/email/phone; never exposed publicly
    input_crs: Mapped[str] = mapped_column(String(9), server_default="EPSG:4326")
    status: Mapped[str] = mapped_column(String(11))
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)  # deleting draft grids checks it
    grid_code: Mapped[str | None] = mapped_column(String(15))
    grid_version_id: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("responders.id", ondelete="SET NULL"))
    department_code: Mapped[str | None] = mapped_column(ForeignKey("departments.code"))
    # Outside every grid: kept, with the nearest grid as a suggestion.
    suggested_grid_code: Mapped[str | None] = mapped_column(String(15))
    suggested_distance_m: Mapped[float | None] = mapped_column(Float)
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    escalation_level: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    rework_count: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    is_synthetic: Mapped[bool] = mapped_column(Boolean, server_default="false")
    updated_at: Mapped[datetime] = _now()
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)
    __table_args__ = (
        CheckConstraint(_in("status", INCIDENT_STATUSES), name="incidents_status"),
        CheckConstraint("escalation_level BETWEEN 0 AND 3", name="incidents_escalation_level"),
        Index("incidents_geom_gist", "geom", postgresql_using="gist"),
        Index("incidents_reported_at", "reported_at", "id"),
        Index("incidents_grid", "grid_code", "status"),
        Index("incidents_status_due", "status", "due_at"),
        Index("incidents_assignee", "assignee_id", "status"),
        Index("incidents_idempotency", "reporter_id", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL")),
    )


class IncidentEvent(Base):
    """Append-only log of everything that happens to an incident (a trigger forbids edits)."""

    __tablename__ = "incident_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = _now()
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(11))
    to_status: Mapped[str | None] = mapped_column(String(11))
    note: Mapped[str | None] = mapped_column(Text)
    data = mapped_column(JSONB)
    __table_args__ = (Index("incident_events_incident", "incident_id", "at"), Index("incident_events_at", "at", "id"))


class AuditLog(Base):
    """Who changed what, when, with the values before and after (append-only: a trigger refuses edits)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = _now()
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(Text)
    detail = mapped_column(JSONB)
    before = mapped_column(JSONB)
    after = mapped_column(JSONB)
    __table_args__ = (Index("audit_log_at", "at", "id"),)


class Job(Base):
    """A background job (automatic drafts, big imports) with progress and a result."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(9), server_default="queued")
    progress: Mapped[float] = mapped_column(Float, server_default="0")
    params = mapped_column(JSONB)
    result = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)  # what the job is doing now
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        CheckConstraint(_in("status", ("queued", "running", "done", "failed", "cancelled")), name="jobs_status"),
    )


class RoadNetwork(Base):
    """An imported road graph (one OSM extract and profile); its vertices and edges feed pgRouting."""

    __tablename__ = "road_networks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    network_type: Mapped[str] = mapped_column(String(7), server_default="driving")
    source: Mapped[str | None] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[datetime] = _now()
    __table_args__ = (CheckConstraint(_in("network_type", ("driving", "walking")), name="road_networks_type"),)


class RoadVertex(Base):
    """A graph node; `id` is the OSM node id, unique within its network."""

    __tablename__ = "road_vertices"
    network_id: Mapped[int] = mapped_column(ForeignKey("road_networks.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)
    __table_args__ = (
        Index("road_vertices_geom_gist", "geom", postgresql_using="gist"),
        # KNN in metres (snapping): planar <-> on lon/lat degrees picks the wrong vertex away from the equator
        Index("road_vertices_geog_gist", text("(geography(geom))"), postgresql_using="gist"),
    )


class RoadEdge(Base):
    """A directed-capable edge source → target (geometry drawn that way); costs in seconds,
    reverse_cost_s = -1 where travel against the geometry is forbidden (one-way)."""

    __tablename__ = "road_edges"
    network_id: Mapped[int] = mapped_column(ForeignKey("road_networks.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    source: Mapped[int] = mapped_column(BigInteger)
    target: Mapped[int] = mapped_column(BigInteger)
    length_m: Mapped[float] = mapped_column(Float)
    cost_s: Mapped[float] = mapped_column(Float)
    reverse_cost_s: Mapped[float] = mapped_column(Float)
    highway: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    osm_way_id: Mapped[int | None] = mapped_column(BigInteger)
    geom = mapped_column(Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False)
    __table_args__ = (
        CheckConstraint("length_m >= 0 AND cost_s >= 0 AND (reverse_cost_s >= 0 OR reverse_cost_s = -1)",
                        name="road_edges_costs"),
        Index("road_edges_geom_gist", "geom", postgresql_using="gist"),
    )


class DemoLoad(Base):
    """The time anchor of a loaded synthetic demo: its year ends at `as_of` (see fixtures/synth.py)."""

    __tablename__ = "demo_loads"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seed: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = _now()
