"""grid_versions.area_code: the area a draft plan belongs to

A draft is seen and changed only by planners and supervisors whose area holds it or lies in it (the creator's
area; NULL: the whole system, as for published versions and plans made by admins or the command line).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE grid_versions ADD COLUMN area_code text")
    # Existing drafts take their creator's area, so that no draft becomes visible to more people than before.
    op.execute("UPDATE grid_versions v SET area_code = u.area_code FROM users u "
               "WHERE v.created_by = u.id AND v.status = 'draft'")


def downgrade() -> None:
    op.execute("ALTER TABLE grid_versions DROP COLUMN area_code")
