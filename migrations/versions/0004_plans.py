"""plans: draft grids may hold invalid geometry (validation reports it); jobs carry a progress message

A planner's draft is work in progress: a self-intersecting grid imported from elsewhere must be storable so
that validation can show where it is. Publishing refuses plans with validation errors, so the active version
stays valid; the stable levels (district, street, community) keep the hard check.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("areas_geom_valid", "areas", type_="check")
    op.create_check_constraint(
        "areas_geom_valid", "areas", "NOT ST_IsEmpty(geom) AND (version_id IS NOT NULL OR ST_IsValid(geom))"
    )
    op.add_column("jobs", sa.Column("message", sa.Text()))
    op.add_column("jobs", sa.Column("started_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("jobs", "started_at")
    op.drop_column("jobs", "message")
    op.drop_constraint("areas_geom_valid", "areas", type_="check")
    op.create_check_constraint("areas_geom_valid", "areas", "ST_IsValid(geom) AND NOT ST_IsEmpty(geom)")
