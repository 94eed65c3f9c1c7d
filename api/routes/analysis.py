"""Analysis: evaluation rates per area, child area, department and worker."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Conn, CurrentCaller
from api.params import AREA_CODE
from api.schemas_analysis import Performance
from geo.incidents import metrics

router = APIRouter(tags=["analysis"])


@router.get("/analysis/performance", responses={200: {"model": Performance}})
async def performance(
    conn: Conn, caller: CurrentCaller,
    area: Annotated[str | None, Query(pattern=AREA_CODE,
                                      description="Area code; default: the caller's own area")] = None,
    start: Annotated[str | None, Query(alias="from",
                                       description="ISO date or date-time (default: to - 30 days)")] = None,
    end: Annotated[str | None, Query(alias="to",
                                     description="ISO date or date-time, exclusive (default: now)")] = None,
) -> dict:
    """Handling, on-time handling, closure and rework rates, overdue count and time to close, for the
    area, each child area, each department and each worker; the `definitions` say what counts."""
    return await metrics.performance(conn, caller, area, start, end)
