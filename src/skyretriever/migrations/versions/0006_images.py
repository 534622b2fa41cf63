"""raw_images and ffi_files: the image data type; raw ids of links and light curves span the raw tables

Revision ID: 0006_images
Revises: 0005
Create Date: 2026-12-06

``ffi_files`` records the full-frame images downloaded in bulk (``skyretriever
ffi``). ``raw_images`` holds one row per (source name, observatory, download
parameters, target) with its HDF5 file of cutouts, like ``raw_photometry``.
A source's link (``source_raw_data.raw_id``) and a light curve's ``raw_id`` now
point at the raw table of the observatory's data type (light curves made from
image cutouts point at ``raw_images``), so their foreign keys to
``raw_photometry`` are dropped; links and light curves are matched to raw rows
by id and observatory, and deleting a raw row deletes them
(``queries.delete_raw_row``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006_images"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "raw_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("num_points", sa.Integer(), nullable=False),
        sa.Column("time_start", sa.Double(), nullable=True),
        sa.Column("time_end", sa.Double(), nullable=True),
        sa.Column("sectors", JSON_TYPE, nullable=True),
        sa.Column("cutout_size", sa.Integer(), nullable=True),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("observatory", sa.String(length=20), nullable=False),
        sa.Column("ra", sa.Double(), nullable=False),
        sa.Column("dec", sa.Double(), nullable=False),
        sa.Column("download_hash", sa.String(length=32), nullable=True),
        sa.Column("target_key", sa.String(length=32), server_default=sa.text("''"),
                  nullable=False),
        sa.Column("cross_ids", JSON_TYPE, nullable=True),
        sa.Column("is_empty", sa.Boolean(), nullable=False),
        sa.Column("altdata", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("file_mtime_ns", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_images")),
        sa.UniqueConstraint("source_name", "observatory", "download_hash", "target_key",
                            name="uq_raw_images_identity"),
    )
    with op.batch_alter_table("raw_images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_images_source_name"), ["source_name"],
                              unique=False)
    op.create_table(
        "ffi_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sector", sa.Integer(), nullable=False),
        sa.Column("camera", sa.Integer(), nullable=False),
        sa.Column("ccd", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("route", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ffi_files")),
        sa.UniqueConstraint("key", name=op.f("uq_ffi_files_key")),
    )
    with op.batch_alter_table("ffi_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ffi_files_sector"), ["sector"], unique=False)
    with op.batch_alter_table("source_raw_data", schema=None) as batch_op:
        batch_op.drop_constraint("fk_source_raw_data_raw_id_raw_photometry", type_="foreignkey")
    with op.batch_alter_table("lightcurves", schema=None) as batch_op:
        batch_op.drop_constraint("fk_lightcurves_raw_id_raw_photometry", type_="foreignkey")


def downgrade() -> None:
    op.execute("DELETE FROM lightcurves WHERE raw_id IS NOT NULL AND raw_id NOT IN "
               "(SELECT id FROM raw_photometry)")
    op.execute("DELETE FROM source_raw_data WHERE raw_id NOT IN (SELECT id FROM raw_photometry)")
    with op.batch_alter_table("lightcurves", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_lightcurves_raw_id_raw_photometry", "raw_photometry",
                                    ["raw_id"], ["id"], ondelete="CASCADE")
    with op.batch_alter_table("source_raw_data", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_source_raw_data_raw_id_raw_photometry", "raw_photometry",
                                    ["raw_id"], ["id"], ondelete="CASCADE")
    with op.batch_alter_table("ffi_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ffi_files_sector"))
    op.drop_table("ffi_files")
    with op.batch_alter_table("raw_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_images_source_name"))
    op.drop_table("raw_images")
