"""MovieLens ratings: ML-100K `u.data` (tab-separated) and ML-1M/10M `ratings.dat` (`::`).

Each rating becomes a `rating` event with value 1-5; timestamps are unix seconds in the files
and milliseconds in frames. Gzip-compressed files are read transparently.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys.sources import SourceError, make_frame


def load_movielens(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    name = path.name.removesuffix(".gz")
    try:
        if name.endswith(".dat"):
            raw = pd.read_csv(path, sep="::", engine="python", header=None,
                              names=["user", "item", "rating", "ts"], encoding="latin-1")
        else:
            raw = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "ts"])
        return make_frame(
            user_id=raw["user"], item_id=raw["item"], event_type="rating",
            timestamp=raw["ts"].astype("int64") * 1000, value=raw["rating"],
            event_id=("ml-" + raw["user"].astype(str) + "-" + raw["item"].astype(str)),
        )
    except FileNotFoundError:
        raise SourceError(f"MovieLens file not found: {path}") from None
    except (ValueError, TypeError, pd.errors.ParserError) as exc:
        # A missing column or a non-numeric timestamp lands here.
        raise SourceError(f"{path}: not a MovieLens ratings file "
                          f"(user item rating timestamp): {exc}") from None
