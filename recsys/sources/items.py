"""Item files -> `list[ItemAttributes]`: what `recsys items load` writes into the catalogue
and what the trainer's content model reads.

    retailrocket:PATH    Retailrocket `item_properties` (timestamp,itemid,property,value);
                         PATH is a file or a directory holding item_properties*.csv[.gz]
                         (part1 and part2); `category_tree.csv[.gz]` (categoryid,parentid)
                         beside it, or given as category_tree=PATH, turns `categoryid` into
                         a root->leaf path
    csv:PATH             any items CSV with a column mapping (`load_items_csv`)
    movielens:PATH       MovieLens `u.item` or `movies.dat` (recsys.sources.movielens)

    items = load_items("retailrocket:data/retailrocket")
    items = load_items("csv:products.csv", mapping="item_id=sku,name=title,category=path")

Every loader validates each item (`ItemAttributes.validate`) and the file as a whole: a row
without an id, a duplicate id with different content, a bad field is an `ItemsFileError`
naming the row (the file's line, header = line 1) and the field; nothing is returned then,
so a caller never writes part of a file. An identical duplicate row counts once.

`ITEM_FORMATS` maps a spec's kind to its loader (a path -> items function taking options).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.item_attributes import InvalidItemAttributes, ItemAttributes
from recsys.sources import SourceError
from recsys.sources.movielens import load_movielens_items

# Retailrocket properties with a meaning; every other property is an attribute, its text
# kept as-is (Retailrocket hashes the values: "n552.000 639502 n720.000").
RR_CATEGORY = "categoryid"
RR_AVAILABLE = "available"
RR_COLUMNS = ["timestamp", "itemid", "property", "value"]

# Generic CSV: the fields a mapping may name.
CSV_FIELDS = ("item_id", "name", "category", "brand", "price", "tags", "description",
              "image_url", "available")
DEFAULT_LEVEL_SEP = "/"
DEFAULT_PATHS_SEP = ";"
DEFAULT_TAGS_SEP = "|"
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class ItemsFileError(SourceError):
    """An items file cannot be loaded; `row` (file line) and `field` say where, when known."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None) -> None:
        where = ", ".join(part for part in (f"row {row}" if row is not None else "",
                                            f"field {field}" if field is not None else "")
                          if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.row = row
        self.field = field


def _checked(items: Iterable[tuple[int, ItemAttributes]]) -> list[ItemAttributes]:
    """Validate every item and the ids across the file; identical duplicates count once."""
    seen: dict[str, tuple[int, ItemAttributes]] = {}
    for row, item in items:
        try:
            item.validate()
        except InvalidItemAttributes as exc:
            raise ItemsFileError(f"item {item.item_id!r}: {exc.reason}", row, exc.field
                                 ) from None
        first = seen.get(item.item_id)
        if first is None:
            seen[item.item_id] = (row, item)
        elif first[1] != item:
            raise ItemsFileError(f"item {item.item_id!r} again, with other content than on "
                                 f"row {first[0]}", row, "item_id")
    return [item for _, item in seen.values()]


def _read_csv(path: Path, sep: str = ",", usecols: Any = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, usecols=usecols)
    except FileNotFoundError:
        raise ItemsFileError(f"file not found: {path}") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ItemsFileError(f"{path}: not a readable CSV ({exc})") from None


# --- Retailrocket ------------------------------------------------------------------------
def category_paths_from_tree(tree: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """categoryid -> its path from the root (categoryid,parentid; an empty parent is a
    root). A cycle or a parent that is not in the tree is an error naming the category."""
    parent = {row.categoryid: (row.parentid or None) for row in tree.itertuples()}
    paths: dict[str, tuple[str, ...]] = {}
    for start in parent:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node not in paths:
            if node in chain:
                raise ItemsFileError(f"category tree: a cycle through category {node!r}")
            if node not in parent:
                raise ItemsFileError(f"category tree: parent {node!r} of {chain[-1]!r} is "
                                     "not a category")
            chain.append(node)
            node = parent[node]
        prefix = paths[node] if node is not None else ()
        for depth, category in enumerate(reversed(chain)):
            paths[category] = prefix + tuple(reversed(chain))[:depth + 1]
    return paths


def _find(path: Path, pattern: str) -> list[Path]:
    return sorted(p for p in path.glob(pattern) if p.is_file())


def load_retailrocket_items(path: str | Path, category_tree: str | Path | None = None
                            ) -> list[ItemAttributes]:
    """Retailrocket item properties: the latest value of each (item, property) wins
    (by timestamp; on a tie, the later row); `categoryid` becomes the item's category path
    (through the tree, when there is one; else a one-level path), `available` its
    availability (1/0); the rest are attributes."""
    path = Path(path).expanduser()
    files = (_find(path, "item_properties*.csv") + _find(path, "item_properties*.csv.gz")
             if path.is_dir() else [path])
    if not files:
        raise ItemsFileError(f"{path}: no item_properties*.csv[.gz] in this directory")
    base = path if path.is_dir() else path.parent
    if category_tree is None:
        found = _find(base, "category_tree.csv") + _find(base, "category_tree.csv.gz")
        category_tree = found[0] if found else None
    tree = (category_paths_from_tree(_read_csv(Path(category_tree)))
            if category_tree is not None else {})
    frames = []
    for file in files:
        frame = _read_csv(file)
        missing = [c for c in RR_COLUMNS if c not in frame.columns]
        if missing:
            raise ItemsFileError(f"{file}: missing columns {missing}; expected header "
                                 "timestamp,itemid,property,value")
        frame = frame[RR_COLUMNS].copy()
        frame["line"] = frame.index + 2  # header is line 1
        frame["file"] = file.name
        frames.append(frame)
    props = pd.concat(frames, ignore_index=True)
    for column in ("itemid", "property"):
        empty = props[column].str.strip() == ""
        if empty.any():
            first = props[empty].iloc[0]
            raise ItemsFileError(f"{first.file}: empty {column}", int(first.line), column)
    stamps = pd.to_numeric(props["timestamp"], errors="coerce")
    if stamps.isna().any():
        first = props[stamps.isna()].iloc[0]
        raise ItemsFileError(f"{first.file}: timestamp {first.timestamp!r} is not a number",
                             int(first.line), "timestamp")
    props["timestamp"] = stamps
    props["order"] = range(len(props))
    latest = (props.sort_values(["timestamp", "order"], kind="stable")
              .drop_duplicates(["itemid", "property"], keep="last"))

    def items() -> Iterable[tuple[int, ItemAttributes]]:
        for item_id, rows in latest.groupby("itemid", sort=True):
            paths: tuple[tuple[str, ...], ...] = ()
            available = True
            attributes: dict[str, str] = {}
            line = int(rows["line"].min())
            for prop, value, row_line in zip(rows["property"], rows["value"], rows["line"],
                                             strict=True):
                if prop == RR_CATEGORY:
                    value = value.strip()
                    paths = ((tree.get(value) or (value,)),) if value else ()
                elif prop == RR_AVAILABLE:
                    flag = value.strip()
                    if flag not in ("0", "1"):
                        raise ItemsFileError(f"item {item_id!r}: available must be 0 or 1; "
                                             f"got {value[:40]!r}", int(row_line), "available")
                    available = flag == "1"
                else:
                    attributes[prop] = value
            yield line, ItemAttributes(str(item_id), category_paths=paths,
                                       attributes=attributes, available=available)

    return _checked(items())


# --- generic CSV -------------------------------------------------------------------------
def parse_items_mapping(text: str | Mapping[str, str]) -> dict[str, str]:
    """`field=column,...` (or a dict) -> {field: column}; fields from CSV_FIELDS, item_id
    required."""
    if isinstance(text, Mapping):
        mapping = dict(text)
    else:
        mapping = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            field, sep, column = (s.strip() for s in part.partition("="))
            if not sep or not field or not column:
                raise ItemsFileError(f"bad mapping entry {part!r}: expected field=column")
            if field in mapping:
                raise ItemsFileError(f"field {field!r} mapped twice")
            mapping[field] = column
    unknown = sorted(set(mapping) - set(CSV_FIELDS))
    if unknown:
        raise ItemsFileError(f"unknown fields {unknown} in the mapping; fields: "
                             f"{', '.join(CSV_FIELDS)}")
    mapping.setdefault("item_id", "item_id")
    return mapping


def load_items_csv(path: str | Path, mapping: str | Mapping[str, str] | None = None, *,
                   sep: str = ",", level_sep: str = DEFAULT_LEVEL_SEP,
                   paths_sep: str = DEFAULT_PATHS_SEP, tags_sep: str = DEFAULT_TAGS_SEP,
                   attributes: Iterable[str] | None = None) -> list[ItemAttributes]:
    """An items CSV whose columns `mapping` names (`item_id=sku,name=title,category=path,
    brand=maker,price=price,tags=labels,description=text,image_url=img,available=stock`).
    The category column holds one or more paths, root first, levels separated by
    `level_sep` and paths by `paths_sep` (`home/kitchen/pans;sale`); tags are separated by
    `tags_sep`. Every column not mapped is an attribute (its text; empty cells skipped),
    or only the `attributes` columns when given."""
    path = Path(path).expanduser()
    fields = parse_items_mapping(mapping or {})
    frame = _read_csv(path, sep=sep)
    missing = [f"{field}={column}" for field, column in fields.items()
               if column not in frame.columns]
    if missing:
        raise ItemsFileError(f"{path}: mapped columns not in the file: {missing}; its "
                             f"columns: {list(frame.columns)}")
    extra = (list(attributes) if attributes is not None
             else [c for c in frame.columns if c not in fields.values()])
    absent = [c for c in extra if c not in frame.columns]
    if absent:
        raise ItemsFileError(f"{path}: attribute columns not in the file: {absent}")

    def cell(record: Mapping[str, str], field: str) -> str | None:
        column = fields.get(field)
        value = record[column].strip() if column is not None else ""
        return value or None

    def items() -> Iterable[tuple[int, ItemAttributes]]:
        for line, record in enumerate(frame.to_dict("records"), start=2):
            item_id = cell(record, "item_id")
            if item_id is None:
                raise ItemsFileError("no item id", line, "item_id")
            price = cell(record, "price")
            if price is not None:
                try:
                    price_value: float | None = float(price)
                except ValueError:
                    raise ItemsFileError(f"price {price[:40]!r} is not a number", line,
                                         "price") from None
            else:
                price_value = None
            flag = cell(record, "available")
            if flag is not None and flag.lower() not in _TRUE | _FALSE:
                raise ItemsFileError(f"available {flag[:40]!r} is not true/false/1/0", line,
                                     "available")
            category = cell(record, "category")
            paths = tuple(tuple(level.strip() for level in text.split(level_sep))
                          for text in category.split(paths_sep)) if category else ()
            tags = cell(record, "tags")
            yield line, ItemAttributes(
                item_id, category_paths=paths, brand=cell(record, "brand"), price=price_value,
                title=cell(record, "name"), description=cell(record, "description"),
                tags=tuple(dict.fromkeys(t.strip() for t in tags.split(tags_sep)
                                         if t.strip())) if tags else (),
                attributes={c: record[c] for c in extra if record[c].strip()},
                available=flag is None or flag.lower() in _TRUE,
                image_url=cell(record, "image_url"))

    return _checked(items())


# --- the registry ------------------------------------------------------------------------
ITEM_FORMATS: dict[str, Callable[..., list[ItemAttributes]]] = {
    "movielens": load_movielens_items,
    "retailrocket": load_retailrocket_items,
    "csv": load_items_csv,
}


def parse_items_spec(spec: str) -> tuple[str, Path]:
    """`kind:PATH`; a bare path named u.item or movies.dat (.gz ok) is MovieLens."""
    kind, sep, rest = spec.strip().partition(":")
    name = Path(spec.strip()).name.lower().removesuffix(".gz")
    if not (sep and kind in ITEM_FORMATS) and name in ("u.item", "movies.dat"):
        return "movielens", Path(spec.strip()).expanduser()
    if not sep or kind not in ITEM_FORMATS:
        raise ItemsFileError(f"unknown items spec {spec!r}; expected one of "
                             f"{', '.join(f'{k}:PATH' for k in ITEM_FORMATS)}")
    if not rest:
        raise ItemsFileError(f"items spec {spec!r}: give a path after '{kind}:'")
    return kind, Path(rest).expanduser()


def load_items(spec: str, **options: Any) -> list[ItemAttributes]:
    """The items of a spec (`kind:PATH`), options passed to the kind's loader; a loader
    that does not take an option given is an error naming it."""
    kind, path = parse_items_spec(spec)
    try:
        return ITEM_FORMATS[kind](path, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ItemsFileError(f"{kind}: {exc}") from None
        raise
