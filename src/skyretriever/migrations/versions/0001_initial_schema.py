"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "histogram_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("cfg_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("num_sources", sa.Integer(), nullable=False),
        sa.Column("counts", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_histogram_batches")),
    )
    with op.batch_alter_table("histogram_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_histogram_batches_project_cfg_hash_name"),
            ["project", "cfg_hash", "name"],
            unique=False,
        )

    op.create_table(
        "raw_photometry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("observatory", sa.String(length=20), nullable=False),
        sa.Column("ra", sa.Double(), nullable=False),
        sa.Column("dec", sa.Double(), nullable=False),
        sa.Column("is_empty", sa.Boolean(), nullable=False),
        sa.Column("num_points", sa.Integer(), nullable=False),
        sa.Column("time_start", sa.Double(), nullable=True),
        sa.Column("time_end", sa.Double(), nullable=True),
        sa.Column("filters", JSON_TYPE, nullable=True),
        sa.Column("altdata", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_photometry")),
        sa.UniqueConstraint(
            "source_name", "observatory", name=op.f("uq_raw_photometry_source_name_observatory")
        ),
    )
    with op.batch_alter_table("raw_photometry", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_raw_photometry_source_name"), ["source_name"], unique=False
        )

    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("cfg_hash", sa.String(length=64), nullable=False),
        sa.Column("cat_index", sa.Integer(), nullable=True),
        sa.Column("ra", sa.Double(), nullable=False),
        sa.Column("dec", sa.Double(), nullable=False),
        sa.Column("mag", sa.Double(), nullable=True),
        sa.Column("mag_err", sa.Double(), nullable=True),
        sa.Column("mag_filter", sa.Text(), nullable=True),
        sa.Column("pmra", sa.Double(), nullable=True),
        sa.Column("pmdec", sa.Double(), nullable=True),
        sa.Column("tic_id", sa.BigInteger(), nullable=True),
        sa.Column("epic_id", sa.BigInteger(), nullable=True),
        sa.Column("kic_id", sa.BigInteger(), nullable=True),
        sa.Column("gaia_id", sa.BigInteger(), nullable=True),
        sa.Column("ztf_oid", sa.BigInteger(), nullable=True),
        sa.Column("cat_extra", JSON_TYPE, nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('new', 'done', 'failed')", name=op.f("ck_sources_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint(
            "name", "project", "cfg_hash", name=op.f("uq_sources_name_project_cfg_hash")
        ),
    )
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sources_project_cfg_hash_status"),
            ["project", "cfg_hash", "status"],
            unique=False,
        )

    op.create_table(
        "lightcurves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("raw_id", sa.Integer(), nullable=True),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("cfg_hash", sa.String(length=64), nullable=False),
        sa.Column("observatory", sa.String(length=20), nullable=False),
        sa.Column("filter", sa.Text(), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=False),
        sa.Column("series_total", sa.Integer(), nullable=False),
        sa.Column("was_processed", sa.Boolean(), nullable=False),
        sa.Column("is_simulated", sa.Boolean(), nullable=False),
        sa.Column("num_points", sa.Integer(), nullable=False),
        sa.Column("num_good_points", sa.Integer(), nullable=False),
        sa.Column("time_start", sa.Double(), nullable=True),
        sa.Column("time_end", sa.Double(), nullable=True),
        sa.Column("exptime", sa.Double(), nullable=True),
        sa.Column("mag_mean", sa.Double(), nullable=True),
        sa.Column("mag_rms", sa.Double(), nullable=True),
        sa.Column("flux_mean", sa.Double(), nullable=True),
        sa.Column("flux_rms", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["raw_id"],
            ["raw_photometry.id"],
            name=op.f("fk_lightcurves_raw_id_raw_photometry"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_lightcurves_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lightcurves")),
        sa.UniqueConstraint(
            "source_id",
            "observatory",
            "series_number",
            "was_processed",
            "is_simulated",
            "cfg_hash",
            name="uq_lightcurves_identity",
        ),
    )
    with op.batch_alter_table("lightcurves", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lightcurves_raw_id"), ["raw_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lightcurves_source_id"), ["source_id"], unique=False)

    op.create_table(
        "properties",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("cfg_hash", sa.String(length=64), nullable=False),
        sa.Column("has_data", sa.Boolean(), nullable=False),
        sa.Column("num_lightcurves", sa.Integer(), nullable=False),
        sa.Column("num_points", sa.Integer(), nullable=False),
        sa.Column("num_good_points", sa.Integer(), nullable=False),
        sa.Column("time_span", sa.Double(), nullable=True),
        sa.Column("mag_mean", sa.Double(), nullable=True),
        sa.Column("mag_median", sa.Double(), nullable=True),
        sa.Column("mag_rms", sa.Double(), nullable=True),
        sa.Column("flux_rms_ppm", sa.Double(), nullable=True),
        sa.Column("best_snr", sa.Double(), nullable=True),
        sa.Column("num_detections", sa.Integer(), nullable=False),
        sa.Column("quality_counts", JSON_TYPE, nullable=True),
        sa.Column("extra", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_properties_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_properties")),
        sa.UniqueConstraint("source_id", name=op.f("uq_properties_source_id")),
    )
    with op.batch_alter_table("properties", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_properties_project_cfg_hash_best_snr"),
            ["project", "cfg_hash", "best_snr"],
            unique=False,
        )

    op.create_table(
        "detections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("lightcurve_id", sa.Integer(), nullable=True),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("cfg_hash", sa.String(length=64), nullable=False),
        sa.Column("finder", sa.Text(), nullable=False),
        sa.Column("observatory", sa.String(length=20), nullable=True),
        sa.Column("filter", sa.Text(), nullable=True),
        sa.Column("is_simulated", sa.Boolean(), nullable=False),
        sa.Column("snr", sa.Double(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("time_start", sa.Double(), nullable=True),
        sa.Column("time_end", sa.Double(), nullable=True),
        sa.Column("time_peak", sa.Double(), nullable=True),
        sa.Column("peak_mag", sa.Double(), nullable=True),
        sa.Column("peak_flux", sa.Double(), nullable=True),
        sa.Column("num_points", sa.Integer(), nullable=False),
        sa.Column("sign", sa.Integer(), nullable=False),
        sa.Column("injected", JSON_TYPE, nullable=True),
        sa.Column("extra", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lightcurve_id"],
            ["lightcurves.id"],
            name=op.f("fk_detections_lightcurve_id_lightcurves"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_detections_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detections")),
    )
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_detections_lightcurve_id"), ["lightcurve_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_detections_project_cfg_hash_is_simulated_snr"),
            ["project", "cfg_hash", "is_simulated", "snr"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_detections_source_id"), ["source_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_detections_source_id"))
        batch_op.drop_index(batch_op.f("ix_detections_project_cfg_hash_is_simulated_snr"))
        batch_op.drop_index(batch_op.f("ix_detections_lightcurve_id"))

    op.drop_table("detections")
    with op.batch_alter_table("properties", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_properties_project_cfg_hash_best_snr"))

    op.drop_table("properties")
    with op.batch_alter_table("lightcurves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lightcurves_source_id"))
        batch_op.drop_index(batch_op.f("ix_lightcurves_raw_id"))

    op.drop_table("lightcurves")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sources_project_cfg_hash_status"))

    op.drop_table("sources")
    with op.batch_alter_table("raw_photometry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_photometry_source_name"))

    op.drop_table("raw_photometry")
    with op.batch_alter_table("histogram_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_histogram_batches_project_cfg_hash_name"))

    op.drop_table("histogram_batches")
