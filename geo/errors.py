"""Domain errors raised by the geo layer and mapped to HTTP codes in one table."""


class DomainError(Exception):
    """Base domain error: a machine code, a human message and the offending field."""

    code: str = "domain_error"

    def __init__(self, message: str, field: str | None = None, code: str | None = None):
        """A message for a person, the field at fault, and an optional code other than the class's."""
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class UnknownCRS(DomainError):
    """A coordinate-system name we do not accept."""

    code = "unknown_crs"

    def __init__(self, crs: object):
        """Name the unknown CRS and the supported ones."""
        self.crs = crs
        super().__init__(
            f"Unknown coordinate system {crs!r}. Supported: EPSG:4326, EPSG:4490, GCJ-02, BD-09. "
            "Set crs to one of these (aliases 4326, WGS84, CGCS2000, GCJ02, BD09 also work); "
            "Amap/Tencent coordinates are GCJ-02, Baidu coordinates are BD-09.",
            field="crs",
        )


class NotFound(DomainError):
    """Not found, or outside the caller's area (404)."""
    code = "not_found"


class OutsideEveryGrid(DomainError):
    """A point no active grid covers; names the nearest grid so the caller can decide."""

    code = "outside_every_grid"

    def __init__(self, lon: float, lat: float, nearest_code: str | None, distance_m: float | None):
        """Name the point and, when known, the nearest grid and its distance."""
        self.nearest_code = nearest_code
        self.distance_m = distance_m
        where = (
            f" The nearest grid is {nearest_code}, {distance_m:.0f} m away."
            if nearest_code else " No grid is visible to you at all."
        )
        super().__init__(
            f"The point ({lon:.6f}, {lat:.6f}) is outside every active grid.{where} "
            "Check the coordinates and their crs (GCJ-02 and BD-09 points are ~500 m off unless declared).",
            field="lon,lat",
        )


class Unauthorized(DomainError):
    """No valid bearer token (401)."""
    code = "unauthorized"


class Forbidden(DomainError):
    """The caller's role may not do this (403)."""
    code = "forbidden"


class InvalidInput(DomainError):
    """Bad input: the message says what was wrong and how to fix it (400)."""
    code = "invalid_input"


class Conflict(DomainError):
    """The request clashes with the current state (stale revision, duplicate key...)."""

    code = "conflict"


class IllegalTransition(Conflict):
    """A workflow action not allowed from the incident's current status; names the allowed ones."""

    code = "illegal_transition"

    def __init__(self, incident_id: int, status: str, action: str, allowed: list[str]):
        """Name the incident, its status, the action and the allowed ones."""
        self.allowed = allowed
        super().__init__(
            f"Incident {incident_id} is {status!r}: action {action!r} is not allowed. "
            f"Allowed now: {', '.join(allowed) if allowed else 'none (the incident is final)'}.",
            field="action",
        )


class PayloadTooLarge(DomainError):
    """A body or file over its size limit (413)."""
    code = "payload_too_large"
