"""demo_loads: the time anchor of each loaded synthetic demo

The demo's year ends at the moment it is loaded (or at `wangge fixtures load --as-of`); the anchor is kept so
that /health can report it and a load can be reproduced exactly.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE demo_loads (name text PRIMARY KEY, as_of timestamptz NOT NULL, seed integer NOT NULL, "
        "loaded_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE demo_loads")
