"""`register_study`, the public entry point that writes a study's row (`advisor studies` lists it): a write the
database refuses for a reason other than a duplicate key is an error, not lost in silence.

Every IntegrityError was taken for "another worker inserted the row first": three tries, then the function
returned as if it had written. A row missing a required column (NOT NULL) was so never written and nothing said
it. A real duplicate (the row inserted between this writer's read and its insert) still becomes an update."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from advisor.results.registry import list_studies, register_study
from advisor.results.store import StudyRow, create_tables, engine_for

FIELDS = dict(model="m", model_fingerprint="f", task="toy", space="s", space_fingerprint="s", budget_bytes=None,
              device="cpu", hardware={}, objectives={"accuracy": "maximize"}, sampler="tpe")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path}/r.db" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    e = engine_for(url)
    create_tables(e)
    yield e
    e.dispose()


def test_a_study_row_missing_a_required_field_raises_and_names_it(engine):
    fields = {k: v for k, v in FIELDS.items() if k not in ("model", "task")}
    with pytest.raises(ValueError, match=r"^study 'x': its row in advisor_study was not written \(required fields "
                                         r"missing: model, task\)$"):
        register_study(engine, "x", **fields)
    assert list_studies(engine) == []


def test_a_row_another_writer_inserted_first_is_updated_not_refused(engine, monkeypatch):
    """The duplicate key of a row inserted between this writer's read (it found none) and its insert: updated."""
    register_study(engine, "x", **FIELDS)  # the other writer's row
    real_get, missed = Session.get, []

    def get(self, entity, ident, **kw):  # this writer's read: before the other writer's insert
        if entity is StudyRow and not missed:
            missed.append(ident)
            return None
        return real_get(self, entity, ident, **kw)

    monkeypatch.setattr(Session, "get", get)
    register_study(engine, "x", **FIELDS, n_complete=7)
    assert missed == ["x"]
    [row] = list_studies(engine)
    assert (row.name, row.model, row.n_complete) == ("x", "m", 7)
