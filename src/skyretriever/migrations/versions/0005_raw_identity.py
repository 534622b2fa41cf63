"""raw_photometry: keyed by target and download parameters; raw/ and projects/ on disk

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Raw data was unique per (source name, observatory), so two catalogs naming
different stars alike, or two projects downloading with other parameters, shared
one product. It is now unique per (source name, observatory, download_hash,
target_key), with the cross-ids asked for; ``source_raw_data`` links each source
to the raw product it uses. Rows made before have no ``download_hash`` and are
never reused (the next run downloads again); their sources are linked to them as
before, by name, until then.

Files moved from ``DATA_ROOT/<OBS>`` to ``DATA_ROOT/raw/<OBS>`` and from
``DATA_ROOT/<PROJECT>`` to ``DATA_ROOT/projects/<PROJECT>``
(:func:`skyretriever.storage.migrate_layout`): the file names in the rows are
rewritten here, once per database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("raw_photometry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("download_hash", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("target_key", sa.String(length=32), nullable=False,
                                      server_default=sa.text("''")))
        batch_op.add_column(sa.Column("cross_ids", JSON_TYPE, nullable=True))
        batch_op.drop_constraint("uq_raw_photometry_source_name_observatory", type_="unique")
        batch_op.create_unique_constraint(
            "uq_raw_photometry_identity",
            ["source_name", "observatory", "download_hash", "target_key"],
        )
    op.create_table(
        "source_raw_data",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("observatory", sa.String(length=20), nullable=False),
        sa.Column("raw_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["raw_id"], ["raw_photometry.id"],
                                name=op.f("fk_source_raw_data_raw_id_raw_photometry"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"],
                                name=op.f("fk_source_raw_data_source_id_sources"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("source_id", "observatory", name=op.f("pk_source_raw_data")),
    )
    with op.batch_alter_table("source_raw_data", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_source_raw_data_raw_id"), ["raw_id"], unique=False)
    # Sources keep the raw data they used (found by name, as it was) until they are run again.
    op.execute(
        "INSERT INTO source_raw_data (source_id, observatory, raw_id) "
        "SELECT sources.id, raw_photometry.observatory, raw_photometry.id "
        "FROM sources JOIN raw_photometry ON raw_photometry.source_name = sources.name"
    )
    # The files' new places (storage.migrate_layout moves them); idempotent.
    op.execute("UPDATE raw_photometry SET filename = 'raw/' || filename "
               "WHERE filename IS NOT NULL AND filename NOT LIKE 'raw/%'")
    op.execute("UPDATE lightcurves SET filename = 'projects/' || filename "
               "WHERE filename IS NOT NULL AND filename NOT LIKE 'projects/%'")


def downgrade() -> None:
    op.execute("UPDATE raw_photometry SET filename = substr(filename, 5) "
               "WHERE filename LIKE 'raw/%'")
    op.execute("UPDATE lightcurves SET filename = substr(filename, 10) "
               "WHERE filename LIKE 'projects/%'")
    with op.batch_alter_table("source_raw_data", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_source_raw_data_raw_id"))
    op.drop_table("source_raw_data")
    with op.batch_alter_table("raw_photometry", schema=None) as batch_op:
        batch_op.drop_constraint("uq_raw_photometry_identity", type_="unique")
        batch_op.create_unique_constraint(
            "uq_raw_photometry_source_name_observatory", ["source_name", "observatory"]
        )
        batch_op.drop_column("cross_ids")
        batch_op.drop_column("target_key")
        batch_op.drop_column("download_hash")
