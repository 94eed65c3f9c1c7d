"""road network

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Road graphs for network travel times (pgRouting): road_networks, road_vertices, road_edges.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "road_networks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("network_type", sa.String(length=7), server_default="driving", nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("licence", sa.Text(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("network_type IN ('driving', 'walking')", name="road_networks_type"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_geospatial_table(
        "road_edges",
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("source", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.BigInteger(), nullable=False),
        sa.Column("length_m", sa.Float(), nullable=False),
        sa.Column("cost_s", sa.Float(), nullable=False),
        sa.Column("reverse_cost_s", sa.Float(), nullable=False),
        sa.Column("highway", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("osm_way_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="LINESTRING",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "length_m >= 0 AND cost_s >= 0 AND (reverse_cost_s >= 0 OR reverse_cost_s = -1)", name="road_edges_costs"
        ),
        sa.ForeignKeyConstraint(["network_id"], ["road_networks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("network_id", "id"),
    )
    op.create_geospatial_index(
        "road_edges_geom_gist", "road_edges", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_geospatial_table(
        "road_vertices",
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["network_id"], ["road_networks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("network_id", "id"),
    )
    op.create_geospatial_index(
        "road_vertices_geom_gist", "road_vertices", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_index(
        "road_vertices_geog_gist",
        "road_vertices",
        [sa.text("(geography(geom))")],
        unique=False,
        postgresql_using="gist",
    )


def downgrade() -> None:
    op.drop_index("road_vertices_geog_gist", table_name="road_vertices", postgresql_using="gist")
    op.drop_geospatial_index(
        "road_vertices_geom_gist", table_name="road_vertices", postgresql_using="gist", column_name="geom"
    )
    op.drop_geospatial_table("road_vertices")
    op.drop_geospatial_index(
        "road_edges_geom_gist", table_name="road_edges", postgresql_using="gist", column_name="geom"
    )
    op.drop_geospatial_table("road_edges")
    op.drop_table("road_networks")
