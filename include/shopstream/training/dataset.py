"""The training data: feature contract of ``ml.cart_features``, window, time split, data check, files.

Feature contract: every column of ``ml.cart_features`` except the identifiers (:data:`ID_COLUMNS`) and the
label is a feature; text columns (``category_l1``, ``category_l2``, ``brand``) are categorical, every other
column numeric (booleans as 0/1). The label is ``label`` (purchased in the same session after the cart-add).

Split: rows of the window ordered by event time; the most recent ``test_share`` of rows is the test set, the
``valid_share`` before it the validation set, the rest the training set, with boundaries at timestamps (rows
with the same timestamp stay together). A session that crosses a boundary would leak: its earlier rows'
labels are decided by what happens after the boundary. So rows of such sessions are purged from the earlier
split (they stay in the later one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import psycopg

from shopstream.features import ID_COLUMNS, LABEL

TABLE = "ml.cart_features"
TIME = "event_time"
SESSION = "user_session"
SPLITS = ("train", "valid", "test")


class DataCheckError(ValueError):
    """The training data cannot make a trustworthy model; the message lists every problem and what to do."""


class NoTrainingData(DataCheckError):
    """``ml.cart_features`` holds no rows yet (a fresh stack): nothing to train on, nothing is wrong."""


@dataclass(frozen=True)
class FeatureSpec:
    """Feature columns in model order, and which of them are categorical."""

    features: list[str]
    categorical: list[str]

    def to_dict(self) -> dict:
        return {"features": list(self.features), "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(list(d["features"]), list(d["categorical"]))


def feature_spec_from_columns(columns: list[tuple[str, str]]) -> FeatureSpec:
    """Spec from (column name, PostgreSQL data type) pairs in table order."""
    excluded = {*ID_COLUMNS, LABEL}
    features = [c for c, _ in columns if c not in excluded]
    categorical = [c for c, t in columns if c not in excluded and t in ("text", "character varying", "character")]
    return FeatureSpec(features, categorical)


def feature_spec(conn: psycopg.Connection) -> FeatureSpec:
    """The feature contract read from the table's columns (so a new gold column becomes a feature)."""
    schema, table = TABLE.split(".")
    cols = conn.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = %s and table_name = %s order by ordinal_position",
        (schema, table),
    ).fetchall()
    if not cols:
        raise DataCheckError(f"{TABLE} does not exist: run the data DAG (shopstream_data) first")
    names = {c for c, _ in cols}
    missing = [c for c in (*ID_COLUMNS, LABEL) if c not in names]
    if missing:
        raise DataCheckError(f"{TABLE} lacks the columns {missing} the training contract needs")
    return feature_spec_from_columns(cols)


def load_window(
    conn: psycopg.Connection, window_days: float, end: datetime | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """Rows of the ``window_days`` up to ``end`` (default: the newest row), ordered by event time."""
    cols = columns or _table_columns(conn)
    select = ", ".join(cols)
    if end is None:
        sql = (f"select {select} from {TABLE} where event_time > "
               f"(select max(event_time) from {TABLE}) - make_interval(secs => %s) order by event_time, event_key")
        params: tuple = (window_days * 86400.0,)
    else:
        sql = (f"select {select} from {TABLE} where event_time > %s - make_interval(secs => %s) "
               f"and event_time <= %s order by event_time, event_key")
        params = (end, window_days * 86400.0, end)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        df[TIME] = pd.to_datetime(df[TIME], utc=True)
        df[LABEL] = df[LABEL].astype(bool)
    return df


def _table_columns(conn: psycopg.Connection) -> list[str]:
    schema, table = TABLE.split(".")
    return [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
        "order by ordinal_position", (schema, table),
    )]


@dataclass
class Split:
    """Train, validation and test rows, the boundaries between them and how many rows were purged."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_start: pd.Timestamp | None = None
    test_start: pd.Timestamp | None = None
    purged: dict[str, int] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def summary(self) -> dict:
        """Counts, positive rates and time ranges per split (JSON-ready)."""
        out: dict = {
            "valid_start": self.valid_start.isoformat() if self.valid_start is not None else None,
            "test_start": self.test_start.isoformat() if self.test_start is not None else None,
            "purged": dict(self.purged),
        }
        for name, df in self.frames().items():
            out[name] = {
                "rows": int(len(df)),
                "positives": int(df[LABEL].sum()) if len(df) else 0,
                "positive_rate": float(df[LABEL].mean()) if len(df) else None,
                "first": df[TIME].min().isoformat() if len(df) else None,
                "last": df[TIME].max().isoformat() if len(df) else None,
            }
        return out


def time_split(df: pd.DataFrame, valid_share: float, test_share: float) -> Split:
    """Split by time (test = most recent); purge earlier rows of sessions that cross a boundary."""
    if not (0 < valid_share < 1 and 0 < test_share < 1 and valid_share + test_share < 1):
        raise ValueError(f"valid_share={valid_share} and test_share={test_share} must be in (0, 1) and sum below 1")
    df = df.sort_values([TIME, "event_key"], kind="stable").reset_index(drop=True)
    n = len(df)
    if n == 0:
        empty = df.iloc[0:0]
        return Split(empty, empty.copy(), empty.copy(), purged={"train": 0, "valid": 0})
    times = df[TIME]
    test_start = times.iloc[min(n - 1, math.floor(n * (1 - test_share)))]
    valid_start = times.iloc[min(n - 1, math.floor(n * (1 - test_share - valid_share)))]
    test = df[times >= test_start]
    valid = df[(times >= valid_start) & (times < test_start)]
    train = df[times < valid_start]

    later_sessions = set(valid[SESSION]) | set(test[SESSION])
    train_keep = ~train[SESSION].isin(later_sessions)
    valid_keep = ~valid[SESSION].isin(set(test[SESSION]))
    purged = {"train": int((~train_keep).sum()), "valid": int((~valid_keep).sum())}
    return Split(
        train[train_keep].reset_index(drop=True),
        valid[valid_keep].reset_index(drop=True),
        test.reset_index(drop=True),
        valid_start=valid_start,
        test_start=test_start,
        purged=purged,
    )


def leakage_problems(split: Split) -> list[str]:
    """Ways the split leaks across its boundaries (empty when it does not)."""
    problems = []
    order = list(split.frames().items())
    for i, (a, da) in enumerate(order):
        for b, db in order[i + 1:]:
            if len(da) and len(db) and da[TIME].max() >= db[TIME].min():
                problems.append(f"{a} ends at {da[TIME].max()} but {b} starts at {db[TIME].min()}")
            shared_keys = set(da["event_key"]) & set(db["event_key"])
            if shared_keys:
                problems.append(f"{len(shared_keys)} rows are in both {a} and {b}")
            shared_sessions = set(da[SESSION]) & set(db[SESSION])
            if shared_sessions:
                problems.append(f"{len(shared_sessions)} sessions are in both {a} and {b}, e.g. {min(shared_sessions)}")
    return problems


def check_split(split: Split, min_rows: int, min_class_rows: int, window_rows: int | None = None) -> None:
    """Raise :class:`DataCheckError` listing every problem: too few rows, a missing class, leakage."""
    problems: list[str] = []
    total = window_rows if window_rows is not None else sum(len(d) for d in split.frames().values())
    if total < min_rows:
        problems.append(
            f"the window holds {total} rows, fewer than SHOPSTREAM_TRAINING__MIN_ROWS={min_rows}: "
            f"widen the window (the form's window_days) or wait for more data"
        )
    for name, df in split.frames().items():
        pos = int(df[LABEL].sum()) if len(df) else 0
        neg = len(df) - pos
        if len(df) == 0:
            problems.append(f"{name} is empty")
            continue
        if pos == 0 or neg == 0:
            only = "positive" if neg == 0 else "negative"
            problems.append(f"{name} has a single class: all {len(df)} rows are {only}")
        elif min(pos, neg) < min_class_rows:
            problems.append(
                f"{name} has {pos} positives and {neg} negatives; each needs at least "
                f"SHOPSTREAM_TRAINING__MIN_CLASS_ROWS={min_class_rows}"
            )
    problems.extend(leakage_problems(split))
    if problems:
        raise DataCheckError(
            f"data check failed on {TABLE}:\n  - " + "\n  - ".join(problems)
        )


# ----------------------------------------------------------------------------------- files
def save_split(split: Split, spec: FeatureSpec, directory: Path) -> dict[str, Path]:
    """Write ``train/valid/test.parquet`` and ``split.json`` (summary + feature spec) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in split.frames().items():
        paths[name] = directory / f"{name}.parquet"
        df.to_parquet(paths[name], index=False)
    paths["split"] = directory / "split.json"
    paths["split"].write_text(json.dumps({"summary": split.summary(), "spec": spec.to_dict()}, indent=2))
    return paths


def load_split(directory: Path) -> tuple[Split, FeatureSpec]:
    """Read what :func:`save_split` wrote."""
    meta = json.loads((directory / "split.json").read_text())
    frames = {name: pd.read_parquet(directory / f"{name}.parquet") for name in SPLITS}
    summary = meta["summary"]
    split = Split(
        frames["train"], frames["valid"], frames["test"],
        valid_start=pd.Timestamp(summary["valid_start"]) if summary.get("valid_start") else None,
        test_start=pd.Timestamp(summary["test_start"]) if summary.get("test_start") else None,
        purged=summary.get("purged", {}),
    )
    return split, FeatureSpec.from_dict(meta["spec"])


def categories_of(train: pd.DataFrame, spec: FeatureSpec) -> dict[str, list[str]]:
    """The known values of each categorical column (from the training rows, sorted): the model's category codes."""
    return {c: sorted(str(v) for v in train[c].dropna().unique()) for c in spec.categorical}


def xy(df: pd.DataFrame, spec: FeatureSpec, categories: dict[str, list[str]]) -> tuple[pd.DataFrame, pd.Series]:
    """Model matrix and label of a frame (the same preprocessing as the logged model)."""
    from shopstream.training.pyfunc_model import prepare_features

    return prepare_features(df, spec.features, categories), df[LABEL].astype(int)
