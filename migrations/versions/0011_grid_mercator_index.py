"""grids indexed in Web Mercator too, for the nearest grid to a point outside every grid

Web Mercator is conformal: around a point its distances are the geodesic ones times one scale, the same in every
direction, so a KNN scan in it meets grids nearly in geodesic order, and a few candidates prove the nearest
(geo.areas.hierarchy.nearest_proven, with geo.crs.radius_3857). In planar degrees a degree of longitude is a
quarter shorter than one of latitude here, and the proof needed far more candidates.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX areas_grid_version_mercator ON areas USING gist (version_id, ST_Transform(geom, 3857)) "
               "WHERE level = 'grid'")


def downgrade() -> None:
    op.execute("DROP INDEX areas_grid_version_mercator")
