"""responders.position_3857: the position in Web Mercator, for the nearest-responder KNN

Web Mercator is conformal: near a point it scales every direction alike (to within 0.7 %), so the planar-nearest
in it are nearly the geodesically nearest, and a few candidates prove the answer (geo.dispatch.radius_3857).
In degrees of longitude and latitude, east-west distances shrink by cos(latitude) and the KNN needed twice the
candidates. A stored generated column keeps the index's recheck free of ST_Transform.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE responders ADD COLUMN position_3857 geometry(Point, 3857) "
        "GENERATED ALWAYS AS (ST_Transform(position, 3857)) STORED"
    )
    op.execute("CREATE INDEX responders_position_3857_gist ON responders USING gist (position_3857)")
    op.execute("ANALYZE responders")


def downgrade() -> None:
    op.execute("ALTER TABLE responders DROP COLUMN position_3857")
