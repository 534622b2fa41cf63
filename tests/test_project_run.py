"""Project.run end to end on the demo observatory, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties, RawPhotometry, Source


def test_run_makes_every_row_and_file(project_factory):
    proj = project_factory()
    summary = proj.run()
    assert summary.counts["sources"] == 20
    assert summary.counts["failed"] == 0
    assert summary.counts["done"] == 20
    with Session() as session:
        sources = session.scalars(sa.select(Source)).all()
        assert {s.status for s in sources} == {"done"}
        raws = session.scalars(sa.select(RawPhotometry)).all()
        assert len(raws) == 20
        empty = [r for r in raws if r.is_empty]
        assert summary.counts["empty"] == len(empty)
        assert all(r.filename is None for r in empty)
        for raw in raws:
            if not raw.is_empty:
                assert raw.is_intact()
                assert len(raw.data) == raw.num_points == 400
        lightcurves = session.scalars(sa.select(Lightcurve)).all()
        assert len(lightcurves) == 4 * (20 - len(empty))
        assert session.scalar(sa.select(sa.func.count(Properties.id))) == 20
        first = session.scalars(sa.select(Source).where(Source.lightcurves.any())).first()
        numbers = [lc.series_number for lc in first.lightcurves]
        starts = [lc.time_start for lc in sorted(first.lightcurves, key=lambda lc: lc.series_number)]
        assert sorted(numbers) == [1, 2, 3, 4] and starts == sorted(starts)
        detections = session.scalars(sa.select(Detection)).all()
        assert all(d.lightcurve.source_id == d.source_id for d in detections)
