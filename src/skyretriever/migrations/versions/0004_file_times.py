"""raw_photometry, lightcurves: modification time of each product file

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Adds ``file_mtime_ns`` to both tables. Rows written before it have none: the
next run checks their files by SHA-256 once and records the time, after which a
resumed run trusts a file whose size and time are unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("raw_photometry", "lightcurves")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("file_mtime_ns", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("file_mtime_ns")
