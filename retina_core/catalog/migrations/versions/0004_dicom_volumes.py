"""images: OCT volume identity, frame index and acquisition date (DICOM ingestion)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 20:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("volume_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("frame_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("acquired_on", sa.String(length=10), nullable=True))
        batch_op.create_index(batch_op.f("ix_images_volume_id"), ["volume_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_volume_id"))
        batch_op.drop_column("acquired_on")
        batch_op.drop_column("frame_index")
        batch_op.drop_column("volume_id")
