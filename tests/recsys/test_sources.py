"""Loaders (Retailrocket, MovieLens, generic CSV) and the source registry."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.sources import FRAME_COLUMNS, SourceError, iter_events
from recsys.sources.generic_csv import load_csv, parse_mapping, to_epoch_ms
from recsys.sources.movielens import load_movielens
from recsys.sources.registry import load_source, parse_spec
from recsys.sources.retailrocket import load_retailrocket

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHOP_MAP = "user_id=customer,item_id=sku,event_type=action,timestamp=ts,value=qty"


def _check_frame(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == FRAME_COLUMNS
    assert frame.timestamp.is_monotonic_increasing
    assert frame.timestamp.dtype == np.int64
    # Every row is a valid wire event.
    assert sum(1 for _ in iter_events(frame)) == len(frame)


# --- Retailrocket --------------------------------------------------------------------------

def test_retailrocket_fixture() -> None:
    frame = load_retailrocket(FIXTURES / "retailrocket_events.csv")
    _check_frame(frame)
    assert len(frame) == 19
    assert frame.event_type.value_counts().to_dict() == {
        "view": 15, "addtocart": 2, "transaction": 2}
    first = frame.iloc[0]
    assert (first.user_id, first.item_id, first.timestamp) == ("824915", "428805", 1433220899221)
    buy = frame[frame.event_type == "transaction"].iloc[0]
    assert (buy.user_id, buy.item_id) == ("599528", "356475")
    assert np.isnan(buy.value)
    # Ids come from content: the one exact duplicate row shares its id, nothing else does.
    assert frame.event_id.nunique() == 18
    assert buy.event_id == "rr-599528-1433222276276-356475-transaction"


def test_retailrocket_gzip_and_bad_files(tmp_path: Path) -> None:
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "retailrocket_events.csv").read_bytes()))
    assert len(load_source(str(gz))) == 19  # bare path: kind guessed from the name
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("ts,user,item\n1,2,3\n")
    with pytest.raises(SourceError, match="missing columns"):
        load_retailrocket(wrong)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,like,2,\n")
    with pytest.raises(SourceError, match="unknown event types.*like"):
        load_retailrocket(unknown)
    with pytest.raises(SourceError, match="not found"):
        load_retailrocket(tmp_path / "nope.csv")


# --- MovieLens -----------------------------------------------------------------------------

def test_movielens_udata_and_ratings_dat_fixtures() -> None:
    udata = load_movielens(FIXTURES / "movielens_u.data")
    _check_frame(udata)
    assert len(udata) == 10 and set(udata.event_type) == {"rating"}
    row = udata[(udata.user_id == "196") & (udata.item_id == "242")].iloc[0]
    assert row.value == 3.0 and row.timestamp == 881250949000
    dat = load_source(f"movielens:{FIXTURES / 'movielens_ratings.dat'}")
    _check_frame(dat)
    assert len(dat) == 6 and dat.user_id.nunique() == 3
    assert dat[dat.item_id == "1193"].value.item() == 5.0


def test_movielens_100k(ml100k_path: Path) -> None:
    frame = load_source(f"movielens:{ml100k_path}")
    assert len(frame) == 100_000
    assert frame.user_id.nunique() == 943
    assert frame.item_id.nunique() == 1_682
    assert frame.event_id.is_unique
    assert frame.value.between(1, 5).all()
    assert frame.timestamp.min() == 874_724_710_000
    assert frame.timestamp.max() == 893_286_638_000
    assert frame.timestamp.is_monotonic_increasing
    first_1000 = load_source(f"movielens:{ml100k_path}", events=1_000)
    pd.testing.assert_frame_equal(first_1000, frame.iloc[:1_000])


# --- generic CSV ---------------------------------------------------------------------------

def test_generic_csv_with_mapping_aliases_and_iso_times() -> None:
    frame = load_source(f"csv:{FIXTURES / 'shop_orders.csv'}", csv_map=SHOP_MAP)
    _check_frame(frame)
    assert len(frame) == 6
    assert frame.iloc[0].user_id == "bob"       # 09:00 is the earliest
    alice = frame[frame.user_id == "alice"]
    assert alice.event_type.tolist() == ["view", "addtocart", "transaction"]
    assert alice.value.iloc[2] == 2.0 and np.isnan(alice.value.iloc[0])
    assert alice.timestamp.iloc[0] == 1_709_287_200_000   # 2024-03-01T10:00:00Z
    assert frame[frame.user_id == "bob"].timestamp.iloc[1] == 1_709_366_400_250
    assert frame.event_id.tolist()[0] == "shop_orders-3"  # stem-row, stable across reloads
    with_ids = load_csv(FIXTURES / "shop_orders.csv",
                        {**parse_mapping(SHOP_MAP), "event_id": "order_line"})
    assert sorted(with_ids.event_id) == [str(i) for i in range(1, 7)]


def test_generic_csv_constant_event_type_units_and_separator(tmp_path: Path) -> None:
    path = tmp_path / "clicks.tsv"
    path.write_text("who\twhat\twhen\nu1\ti1\t1700000000\nu2\ti2\t1700000060\n")
    frame = load_source(f"csv:{path}", csv_map="user_id=who,item_id=what,timestamp=when",
                        event_type="click", sep="\t")
    assert frame.event_type.tolist() == ["click", "click"]
    assert frame.timestamp.tolist() == [1_700_000_000_000, 1_700_000_060_000]  # auto: seconds
    as_ms = load_csv(path, {"user_id": "who", "item_id": "what", "timestamp": "when"},
                     event_type="view", sep="\t", timestamp_unit="ms")
    assert as_ms.timestamp.tolist() == [1_700_000_000, 1_700_000_060]
    assert to_epoch_ms(pd.Series(["1700000000000"])).tolist() == [1_700_000_000_000]
    assert to_epoch_ms(pd.Series(["1700000000000000"]), "us").tolist() == [1_700_000_000_000]


@pytest.mark.parametrize(("csv_map", "event_type", "message"), [
    ("user_id=customer,item_id=sku", "view", "lacks \\['timestamp'\\]"),
    ("user_id=customer,item_id=sku,timestamp=ts", None, "either as a mapped column"),
    (SHOP_MAP, "view", "not both"),
    ("user_id=customer,item_id=nope,event_type=action,timestamp=ts", None, "no column"),
    ("user=customer", None, "unknown field 'user'"),
    ("user_id", None, "expected field=column"),
    ("user_id=ts,item_id=sku,event_type=action,timestamp=customer", None, "not ISO-8601"),
])
def test_generic_csv_rejects_bad_mappings(csv_map: str, event_type: str | None,
                                          message: str) -> None:
    with pytest.raises(SourceError, match=message):
        load_source(f"csv:{FIXTURES / 'shop_orders.csv'}", csv_map=csv_map,
                    event_type=event_type)


def test_generic_csv_rejects_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("u,i,t,q\na,x,1700000000,1\n,y,1700000001,2\n")
    with pytest.raises(SourceError, match="empty user_id.*1 rows, first at data row 2"):
        load_csv(path, {"user_id": "u", "item_id": "i", "timestamp": "t"}, event_type="view")
    path.write_text("u,i,t,q\na,x,1700000000,lots\n")
    with pytest.raises(SourceError, match="value is not a number"):
        load_csv(path, {"user_id": "u", "item_id": "i", "timestamp": "t", "value": "q"},
                 event_type="view")
    path.write_text("u,i,t\na,x,1700000000\n")
    with pytest.raises(SourceError, match="unknown event types.*like"):
        load_csv(path, {"user_id": "u", "item_id": "i", "timestamp": "t"}, event_type="like")


# --- registry ------------------------------------------------------------------------------

def test_parse_spec_kinds_and_errors(tmp_path: Path) -> None:
    assert parse_spec("synthetic") == ("synthetic", None)
    assert parse_spec("movielens:/d/u.data") == ("movielens", Path("/d/u.data"))
    assert parse_spec("/d/ml-1m/ratings.dat.gz")[0] == "movielens"
    assert parse_spec("/d/events.csv")[0] == "retailrocket"
    assert parse_spec("csv:/d/x.csv") == ("csv", Path("/d/x.csv"))
    for bad, message in [("kafka:topic", "unknown source"), ("movielens:", "give a path"),
                         ("/d/orders.csv", "unknown source"), ("synthetic:5", "no path")]:
        with pytest.raises(SourceError, match=message):
            parse_spec(bad)
    with pytest.raises(SourceError, match="file not found"):
        load_source(f"retailrocket:{tmp_path / 'missing.csv'}")
    with pytest.raises(SourceError, match="applies to csv"):
        load_source("synthetic", csv_map="user_id=a")


def test_registry_synthetic_size_seed_and_options() -> None:
    a = load_source("synthetic", events=1_500, seed=3,
                    synthetic_options={"start_ms": 1_700_000_000_000, "n_items": 200})
    b = load_source("synthetic", events=1_500, seed=3,
                    synthetic_options={"start_ms": 1_700_000_000_000, "n_items": 200})
    _check_frame(a)
    assert len(a) == 1_500 and a.item_id.nunique() <= 200
    pd.testing.assert_frame_equal(a, b)


# --- timestamp formats and the shared command-line options ---------------------------------

DAY_FIRST = "member,product,date\nm1,milk,13-01-2024\nm2,bread,02-03-2024\nm1,eggs,31-12-2023\n"


def test_csv_day_first_dates_with_a_timestamp_format(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text(DAY_FIRST)
    frame = load_source(f"csv:{path}", csv_map="user_id=member,item_id=product,timestamp=date",
                        event_type="transaction", timestamp_format="%d-%m-%Y")
    expected = [pd.Timestamp(d, tz="UTC").value // 1_000_000
                for d in ("2023-12-31", "2024-01-13", "2024-03-02")]
    assert frame["timestamp"].tolist() == expected  # sorted by time, day first
    assert frame["item_id"].tolist() == ["eggs", "milk", "bread"]
    # the index keeps each event's row in the file (the stratified draw follows it)
    assert frame.index.tolist() == [2, 0, 1]


def test_csv_dates_not_matching_the_format_name_the_row_and_value(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    # row 3 is month-first: 13 is no month
    path.write_text(DAY_FIRST + "m3,tea,01-13-2024\nm3,jam,05-05-2024\n")
    with pytest.raises(SourceError, match=r"does not match the format '%d-%m-%Y': 1 rows, "
                       r"first at data row 4 \(line 5\): '01-13-2024'"):
        load_source(f"csv:{path}", csv_map="user_id=member,item_id=product,timestamp=date",
                    event_type="transaction", timestamp_format="%d-%m-%Y")
    for unit, fmt, message in [("s", "%d-%m-%Y", "not both"),
                               ("auto", "day-month", "no % directive")]:
        with pytest.raises(SourceError, match=message):
            to_epoch_ms(pd.Series(["13-01-2024"]), unit, fmt)
    with pytest.raises(SourceError, match="applies to csv"):
        load_source("synthetic", timestamp_format="%d-%m-%Y")


SOURCE_FLAGS = ["--map", "user_id=member,item_id=product,timestamp=date",
                "--event-type", "transaction", "--timestamp-format", "%d-%m-%Y", "--sep", ";"]


@pytest.mark.parametrize("command", [
    ["train", "--from-file", "csv:x.csv"],
    ["produce", "--source", "csv:x.csv"],
    ["evaluate", "--source", "csv:x.csv", "--out", "o"],
    ["tune", "--source", "csv:x.csv", "--out", "o"],
    ["insights", "--source", "csv:x.csv", "--out", "o"],
])
def test_every_command_that_reads_a_source_takes_the_same_mapping(command: list[str]) -> None:
    from recsys.sources.options import source_options
    from shell.cli import build_parser

    args = build_parser().parse_args([*command, *SOURCE_FLAGS])
    assert source_options(args) == {
        "csv_map": "user_id=member,item_id=product,timestamp=date", "event_type": "transaction",
        "timestamp_unit": "auto", "timestamp_format": "%d-%m-%Y", "sep": ";"}
