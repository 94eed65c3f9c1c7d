"""index incidents.grid_id and grid_version_id

Deleting draft grids (discarding a plan, merging grids) checks the incidents.grid_id foreign key; without an index
each deleted grid scans every incident. Publishing selects the open incidents of a version.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_incidents_grid_id", "incidents", ["grid_id"])
    op.create_index("ix_incidents_grid_version_id", "incidents", ["grid_version_id"])


def downgrade() -> None:
    op.drop_index("ix_incidents_grid_version_id", table_name="incidents")
    op.drop_index("ix_incidents_grid_id", table_name="incidents")
