"""analysis: transit and periodogram columns, injection counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Detection gains the queryable transit values (period, epoch, duration,
depth) and the signal detection efficiency; Properties gains the
Lomb-Scargle peak, the best transit candidate and the number of injected
and recovered events. Existing rows get NULL (counts: 0).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DETECTION_COLUMNS = ("period", "epoch", "duration", "depth", "sde")
PROPERTIES_COLUMNS = ("ls_period", "ls_power", "ls_false_alarm", "transit_period",
                      "transit_epoch", "transit_duration", "transit_depth", "transit_snr",
                      "transit_sde")
PROPERTIES_COUNTS = ("num_injected", "num_recovered")


def upgrade() -> None:
    with op.batch_alter_table("detections", schema=None) as batch_op:
        for name in DETECTION_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_detections_project_cfg_hash_period"),
            ["project", "cfg_hash", "period"],
            unique=False,
        )

    with op.batch_alter_table("properties", schema=None) as batch_op:
        for name in PROPERTIES_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        for name in PROPERTIES_COUNTS:
            batch_op.add_column(
                sa.Column(name, sa.Integer(), server_default="0", nullable=False)
            )
        batch_op.create_index(
            batch_op.f("ix_properties_project_cfg_hash_transit_snr"),
            ["project", "cfg_hash", "transit_snr"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("properties", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_properties_project_cfg_hash_transit_snr"))
        for name in reversed(PROPERTIES_COLUMNS + PROPERTIES_COUNTS):
            batch_op.drop_column(name)

    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_detections_project_cfg_hash_period"))
        for name in reversed(DETECTION_COLUMNS):
            batch_op.drop_column(name)
