"""Conversion labels from a warehouse table (the demo's, SQLite) and from CSV files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.demo_warehouse import demo_intents, generate_demo_warehouse
from connectors.labels import Label, LabelSettings, read_labels
from pls_sync.demo_companies import demo_companies
from pls_sync.errors import ConfigError, WarehouseError

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("labels") / "demo.duckdb"
    generate_demo_warehouse(path, seed=7, companies=120, users=2500, events=60_000, as_of=AS_OF)
    return f"duckdb:///{path}"


def demo_settings(**overrides: object) -> LabelSettings:
    values: dict[str, object] = {
        "source": "warehouse",
        "table": "conversions",
        "converted_column": None,
    }
    return LabelSettings(**{**values, **overrides})  # type: ignore[arg-type]


def test_labels_from_the_demo_warehouse(demo_url: str) -> None:
    read = read_labels(demo_settings(), engine_or_url=demo_url)
    intents = demo_intents(demo_companies(7, 120), seed=7, as_of=AS_OF)
    expected = {i.domain: i.converted_at for i in intents if i.converted_at}
    assert {label.domain: label.converted_at for label in read.labels} == expected
    assert all(label.converted for label in read.labels)
    assert read.converters == len(expected)
    assert read.skipped["free_mail"] >= 1  # personal plans bought with a gmail.com address
    assert read.rows == len(expected) + read.skipped["free_mail"]


def test_demo_labels_through_an_engine_and_a_schema(demo_url: str) -> None:
    engine = sa.create_engine(demo_url)
    try:
        read = read_labels(demo_settings(table="main.conversions"), engine_or_url=engine)
    finally:
        engine.dispose()
    assert read.converters > 0


def test_warehouse_filters_in_the_query_and_quotes_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "Won Deals" ("Company Domain" TEXT, "Is Won" INTEGER, "Closed" TEXT)'
        )
        conn.exec_driver_sql(
            'INSERT INTO "Won Deals" VALUES'
            " ('acme.com', 1, '2024-05-02 10:00:00'),"
            " ('eng.acme.com', 1, '2024-04-01'),"  # a subsidiary: the same company, earlier
            " ('beta.io', 0, NULL),"  # not converted: filtered out in the query
            " ('gamma.de', 1, NULL),"  # converted, date unknown
            " ('jane@outlook.com', 1, '2024-05-01'),"
            " (NULL, 1, '2024-05-01'),"
            " ('delta.fr', 1, 'last tuesday')"
        )
    engine.dispose()
    settings = LabelSettings(
        source="warehouse",
        table="Won Deals",
        domain_column="Company Domain",
        converted_column="is won",  # matched without case, like the warehouse reader
        converted_at_column="Closed",
    )
    read = read_labels(settings, engine_or_url=url)
    assert read.labels == [
        Label("acme.com", True, datetime(2024, 4, 1, tzinfo=UTC)),
        Label("gamma.de", True, None),
    ]
    assert read.rows == 5  # beta.io and the NULL domain never left the warehouse
    assert read.skipped == {"free_mail": 1, "bad_date": 1}


def test_labels_from_a_csv_with_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "Domain,Converted,Converted_At\n"
        "acme.com,1,2024-05-02T10:00:00Z\n"
        "https://WWW.ACME.COM/pricing,yes,2024-04-01\n"
        "beta.io,0,\n"
        "gamma.de,true,\n"
        "someone@gmail.com,1,2024-05-01\n"
        "temp@mailinator.com,1,2024-05-01\n"
        ",1,2024-05-01\n"
        "localhost,1,2024-05-01\n"
        "delta.fr,maybe,2024-05-01\n"
        "epsilon.co.uk,1,01/05/2024\n"
        "zeta.ai,1,2024-05-03 08:00:00+02:00\n",
        encoding="utf-8",
    )
    read = read_labels(LabelSettings(source="file", path=path))
    assert read.labels == [
        Label("acme.com", True, datetime(2024, 4, 1, tzinfo=UTC)),
        Label("beta.io", False, None),
        Label("gamma.de", True, None),
        Label("zeta.ai", True, datetime(2024, 5, 3, 6, tzinfo=UTC)),
    ]
    assert read.skipped == {
        "free_mail": 1,
        "disposable": 1,
        "no_domain": 2,
        "bad_converted": 1,
        "bad_date": 1,
    }
    assert read.rows == 11 and read.converters == 3


def test_a_csv_with_dates_only(tmp_path: Path) -> None:
    path = tmp_path / "won.csv"
    path.write_text("domain,won_on\nacme.com,2024-05-02\nbeta.io,\n", encoding="utf-8")
    settings = LabelSettings(
        source="file", path=path, converted_column=None, converted_at_column="won_on"
    )
    assert read_labels(settings).labels == [
        Label("acme.com", True, datetime(2024, 5, 2, tzinfo=UTC)),
        Label("beta.io", False, None),
    ]


def test_missing_table_column_and_file_are_one_line_errors(demo_url: str, tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="label table 'deals' not found.*labels.table"):
        read_labels(demo_settings(table="deals"), engine_or_url=demo_url)
    with pytest.raises(WarehouseError, match="no column 'converted'.*labels.converted_column"):
        read_labels(demo_settings(converted_column="converted"), engine_or_url=demo_url)
    with pytest.raises(WarehouseError, match="warehouse file not found"):
        read_labels(demo_settings(), engine_or_url=f"duckdb:///{tmp_path / 'none.duckdb'}")
    with pytest.raises(ConfigError, match="labels.path: label file not found"):
        read_labels(LabelSettings(source="file", path=tmp_path / "none.csv"))
    path = tmp_path / "labels.csv"
    path.write_text("account,converted\nacme.com,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no column 'domain' \\(it has: account, converted"):
        read_labels(LabelSettings(source="file", path=path))


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (LabelSettings(source="warehouse"), "labels.table"),
        (LabelSettings(source="file"), "labels.path"),
        (
            LabelSettings(
                source="file", path=Path("x.csv"), converted_column=None, converted_at_column=None
            ),
            "labels.converted_column",
        ),
        (LabelSettings(source="crm"), "labels.source"),  # type: ignore[arg-type]
    ],
)
def test_settings_that_cannot_work(settings: LabelSettings, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        read_labels(settings, engine_or_url="sqlite://")
    assert [issue.key for issue in raised.value.issues] == [key]
