"""properties, detections: ml_score, the transit classifier's score

Revision ID: 0007_classifier
Revises: 0006_images
Create Date: 2026-12-06

Adds ``ml_score`` (the probability, from the trained classifier, that the
transit candidate is a transit) to ``properties`` (the source's best
candidate, with an index for ``--where 'ml_score > 0.9'``) and to
``detections`` (each transit detection). Rows made before have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_classifier"
down_revision = "0006_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("properties", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ml_score", sa.Double(), nullable=True))
        batch_op.create_index(batch_op.f("ix_properties_project_cfg_hash_ml_score"),
                              ["project", "cfg_hash", "ml_score"], unique=False)
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ml_score", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.drop_column("ml_score")
    with op.batch_alter_table("properties", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_properties_project_cfg_hash_ml_score"))
        batch_op.drop_column("ml_score")
