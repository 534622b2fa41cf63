"""solar events: a target's frame and time window; AIA cutouts and their jobs

Revision ID: 0008_solar
Revises: 0007_classifier
Create Date: 2026-12-06

Sources get ``frame`` ('icrs' for stars, 'helioprojective' for solar events),
the event's helioprojective position (``hpc_x``, ``hpc_y``) and its time window
(``start_time``, ``end_time``); a link of a source points into the raw table of its
observatory's data type (its foreign key went in ``0006_images``).
The data type ``cutouts`` (SDO/AIA image
cutouts around an event) gets its raw table, and every cutout job sent to JSOC
or the SSW cutout service is a row of ``cutout_jobs``, so a run that dies while
jobs are pending polls them on the next run instead of sending them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_solar"
down_revision = "0007_classifier"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frame", sa.String(length=20), nullable=False,
                                      server_default=sa.text("'icrs'")))
        batch_op.add_column(sa.Column("hpc_x", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("hpc_y", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("start_time", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("end_time", sa.DateTime(), nullable=True))
    # (source_raw_data.raw_id lost its foreign key to raw_photometry in 0006_images.)
    op.create_table(
        "raw_cutouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("num_frames", sa.Integer(), nullable=False),
        sa.Column("time_start", sa.Double(), nullable=True),
        sa.Column("time_end", sa.Double(), nullable=True),
        sa.Column("wavelengths", JSON_TYPE, nullable=True),
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_cutouts")),
        sa.UniqueConstraint("source_name", "observatory", "download_hash", "target_key",
                            name="uq_raw_cutouts_identity"),
    )
    with op.batch_alter_table("raw_cutouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_cutouts_source_name"), ["source_name"],
                              unique=False)
    op.create_table(
        "cutout_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("observatory", sa.String(length=20), nullable=False),
        sa.Column("route", sa.String(length=10), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("request_key", sa.String(length=32), nullable=False),
        sa.Column("parameters", JSON_TYPE, nullable=False),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("files", JSON_TYPE, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("state IN ('submitted', 'polling', 'done', 'failed')",
                           name=op.f("ck_cutout_jobs_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cutout_jobs")),
        sa.UniqueConstraint("route", "request_key", name=op.f("uq_cutout_jobs_route_request_key")),
    )
    with op.batch_alter_table("cutout_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cutout_jobs_source_name"), ["source_name"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("cutout_jobs")
    op.drop_table("raw_cutouts")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        for column in ("end_time", "start_time", "hpc_y", "hpc_x", "frame"):
            batch_op.drop_column(column)
