"""solar events: a target's frame and time window; AIA cutouts and their jobs

Revision ID: 0008_solar
Revises: 0005
Create Date: 2026-12-06

Sources get ``frame`` ('icrs' for stars, 'helioprojective' for solar events),
the event's helioprojective position (``hpc_x``, ``hpc_y``) and its time window
(``start_time``, ``end_time``). The data type ``cutouts`` (SDO/AIA image
cutouts around an event) gets its raw table, and every cutout job sent to JSOC
or the SSW cutout service is a row of ``cutout_jobs``, so a run that dies while
jobs are pending polls them on the next run instead of sending them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_solar"
down_revision = "0005"
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


def downgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        for column in ("end_time", "start_time", "hpc_y", "hpc_x", "frame"):
            batch_op.drop_column(column)
