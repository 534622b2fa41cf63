"""sources: HEALPix index for cone searches

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Adds ``sources.healpix`` (nested HEALPix pixel, order 16) with an index, and
fills it for the sources already there, in batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from skyretriever.healpix import healpix_index

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 50_000


def upgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("healpix", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_sources_healpix"), ["healpix"], unique=False)
    connection = op.get_bind()
    sources = sa.table("sources", sa.column("id", sa.Integer), sa.column("ra", sa.Double),
                       sa.column("dec", sa.Double), sa.column("healpix", sa.BigInteger))
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(sources.c.id, sources.c.ra, sources.c.dec)
            .where(sources.c.id > last_id).order_by(sources.c.id).limit(BATCH)
        ).all()
        if not rows:
            break
        pixels = healpix_index([row.ra for row in rows], [row.dec for row in rows])
        connection.execute(
            sources.update().where(sources.c.id == sa.bindparam("source_id"))
            .values(healpix=sa.bindparam("pixel")),
            [{"source_id": row.id, "pixel": int(pixel)} for row, pixel in zip(rows, pixels)],
        )
        last_id = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sources_healpix"))
        batch_op.drop_column("healpix")
