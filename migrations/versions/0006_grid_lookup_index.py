"""index grids by (version, geometry) for the point → grid lookup

Every lookup asks for the grid of one version that covers a point. With only a GiST index on geometry over all
areas, PostgreSQL intersected it with the b-tree on (version_id, code): each plan copy (a draft holds every grid
again) made the lookup slower. A GiST index on (version_id, geom) (btree_gist) answers it in one scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute("CREATE INDEX areas_grid_version_geom ON areas USING gist (version_id, geom) WHERE level = 'grid'")


def downgrade() -> None:
    op.execute("DROP INDEX areas_grid_version_geom")
