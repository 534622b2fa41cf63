"""HistogramBatch: the histogram counts one committed batch of sources added."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from skyretriever.models.base import Base, utcnow

__all__ = ["HistogramBatch"]


class HistogramBatch(Base):
    """Counts added to a project's histograms by one batch, committed with its rows.

    The netCDF histogram files are the sum of these rows; each file records
    which batches it holds, so a batch is never counted twice and a crash
    between the commit and the file write loses nothing.
    """

    __tablename__ = "histogram_batches"
    __table_args__ = (sa.Index(None, "project", "cfg_hash", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this batch.")
    project: Mapped[str] = mapped_column(doc="Project whose histograms the counts belong to.")
    cfg_hash: Mapped[str] = mapped_column(sa.String(64), doc="Config hash of the project.")
    name: Mapped[str] = mapped_column(doc="Name of the histogram (its file is histograms_<name>.nc).")
    num_sources: Mapped[int] = mapped_column(doc="Number of sources whose counts are in the batch.")
    counts: Mapped[dict[str, Any]] = mapped_column(
        doc="Sparse counts: {variable: [[flat index, count], ...]} over the histogram's bins."
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the batch was committed.")
