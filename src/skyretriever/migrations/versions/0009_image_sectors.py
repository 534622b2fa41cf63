"""raw_image_sectors: one row per group (sector, or ZTF image) of a raw-images file

Revision ID: 0009_image_sectors
Revises: 0008_solar
Create Date: 2026-12-07

``raw_images`` keeps one row and one HDF5 file per (source name, observatory,
download parameters, target); each group of the file (a TESS sector's cutout, a
ZTF science image) becomes a row of ``raw_image_sectors`` with its sector,
camera, CCD, frames, times and cutout size, deleted with its raw-images row.
The rows of files written before this revision are made from the files by
``skyretriever check --repair`` (the check reports them as "raw images without
sector rows"); until then a sector query does not see those files.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_image_sectors"
down_revision = "0008_solar"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "raw_image_sectors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("raw_images_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Integer(), nullable=False),
        sa.Column("group", sa.Text(), nullable=False),
        sa.Column("sector", sa.Integer(), nullable=False),
        sa.Column("camera", sa.Integer(), nullable=False),
        sa.Column("ccd", sa.Integer(), nullable=False),
        sa.Column("num_frames", sa.Integer(), nullable=False),
        sa.Column("time_start", sa.Double(), nullable=True),
        sa.Column("time_end", sa.Double(), nullable=True),
        sa.Column("cutout_rows", sa.Integer(), nullable=False),
        sa.Column("cutout_columns", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["raw_images_id"], ["raw_images.id"],
                                name=op.f("fk_raw_image_sectors_raw_images_id_raw_images"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_image_sectors")),
        sa.UniqueConstraint("raw_images_id", "key",
                            name=op.f("uq_raw_image_sectors_raw_images_id_key")),
    )
    with op.batch_alter_table("raw_image_sectors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_image_sectors_raw_images_id"),
                              ["raw_images_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_raw_image_sectors_sector"), ["sector"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("raw_image_sectors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_image_sectors_sector"))
        batch_op.drop_index(batch_op.f("ix_raw_image_sectors_raw_images_id"))
    op.drop_table("raw_image_sectors")
