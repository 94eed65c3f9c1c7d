"""index areas.worker_id

Deleting responders checks areas.worker_id (ON DELETE SET NULL); without an index every deleted responder
scans all areas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_areas_worker_id", "areas", ["worker_id"])


def downgrade() -> None:
    op.drop_index("ix_areas_worker_id", table_name="areas")
