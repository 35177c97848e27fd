"""Load news from the Hub, an AG News CSV directory or CSV/JSON/JSONL/Parquet files; validate; split.

Every problem is raised as `DataError` naming the file and what is wrong, before any training starts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from newscat.config import DataConfig
from newscat.data.text import join_fields, normalize_text
from newscat.errors import NewscatError

FILE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
AG_NEWS_FILES = ("train.csv", "test.csv", "classes.txt")


class DataError(NewscatError):
    """The data cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class NewsData:
    """Train / validation / test frames with columns `text` (str) and `label` (int 0..K-1)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label_names: tuple[str, ...]
    source: str
    layout: str
    train_pool: pd.DataFrame | None = None  # every training row, when `train` is a subsample of them
    test_fraction: float | None = None  # the share carved off as the test split; None: the source has a test split

    def refit_rows(self, limit: int | None, *, seed: int) -> pd.DataFrame:
        """Training rows for the final model: up to `limit` of the pool (None: all), never fewer than `train`."""
        pool = self.train if self.train_pool is None else self.train_pool
        if limit is None or limit >= len(pool):
            return pool
        if limit <= len(self.train):
            return self.train
        rows, _ = stratified_split(pool, len(pool) - limit, seed=seed)
        return rows.reset_index(drop=True)


def load_news(cfg: DataConfig, *, seed: int) -> NewsData:
    """Load, validate and split the configured data source."""
    train, test, names, layout, carved = _read_source(cfg)
    _check_splits(train, test, names, cfg.source)
    validation_size = _validation_size(len(train), cfg)
    pool, validation = stratified_split(train, validation_size, seed=seed)
    pool = pool.reset_index(drop=True)
    train = pool
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(pool):
        train, _ = stratified_split(pool, len(pool) - cfg.max_train_samples, seed=seed)
    return NewsData(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
        label_names=names,
        source=cfg.source,
        layout=layout,
        train_pool=pool if len(train) < len(pool) else None,
        test_fraction=cfg.test_fraction if carved else None,
    )


def text_key(text: str) -> str:
    """What makes two texts the same row for leak checks: the text the model reads (`normalize_text`), case-folded.

    A test headline that comes back with other escapes, spacing or case is still that test row.
    """
    return normalize_text(text).casefold()


def stratified_split(frame: pd.DataFrame, second_size: int, *, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about `second_size` rows with the label proportions kept (seeded).

    Each side keeps at least one row per class, so on tiny data the size may move by a few rows.
    """
    from sklearn.model_selection import train_test_split

    n_classes = frame["label"].nunique()
    second_size = min(max(second_size, n_classes), len(frame) - n_classes)
    first, second = train_test_split(frame, test_size=second_size, stratify=frame["label"], random_state=seed)
    return first, second


def _validation_size(n_train: int, cfg: DataConfig) -> int:
    size = max(1, round(n_train * cfg.validation_fraction))
    if cfg.max_eval_samples is not None:
        size = min(size, cfg.max_eval_samples)
    return size


# train, test, class names, and whether the test split was carved from the training rows (by `test_fraction`)
_Read = tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...], bool]


def _read_source(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...], str, bool]:
    path = Path(cfg.source).expanduser()
    if path.is_dir():
        if all((path / name).is_file() for name in AG_NEWS_FILES) and _is_headerless(path / "train.csv"):
            return (*_read_ag_news_dir(path), "ag_news_csv", False)
        train, test, names, carved = _read_file_dir(path, cfg)
        return train, test, names, "files", carved
    if path.is_file():
        return (*_read_single_file(path, cfg), "file", True)
    if _looks_like_path(cfg.source):
        raise DataError(f"{cfg.source}: no such file or directory")
    train, test, names, carved = _read_hub(cfg)
    return train, test, names, "hub", carved


def _looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else that does not exist is a missing path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or source.endswith(FILE_SUFFIXES)


# --- the original AG News layout -------------------------------------------------------------


def _is_headerless(path: Path) -> bool:
    first = _first_row(path)
    return bool(first) and first[0].strip().isdigit()


def _first_row(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc


def _read_ag_news_dir(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    names = read_classes(path / "classes.txt")
    frames = [_read_ag_news_csv(path / name, len(names)) for name in ("train.csv", "test.csv")]
    return frames[0], frames[1], names


def read_classes(path: Path) -> tuple[str, ...]:
    """Class names, one per line, in label order."""
    names = tuple(line.strip() for line in _read_text(path).splitlines() if line.strip())
    if len(names) < 2:
        raise DataError(f"{path}: needs at least two class names, one per line; found {len(names)}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names must be distinct")
    return names


def _read_ag_news_csv(path: Path, n_classes: int) -> pd.DataFrame:
    _read_text(path)  # encoding check with a clear message
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            numbered = list(enumerate(reader, start=1))
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from exc
        for line_no, row in numbered:
            if len(row) != 3:
                raise DataError(
                    f"{path}: line {line_no} has {len(row)} fields; the AG News layout is "
                    "label (1-N), title, description"
                )
            label = row[0].strip()
            if not label.isdigit() or not 1 <= int(label) <= n_classes:
                raise DataError(
                    f"{path}: line {line_no} has label {label!r}; expected an integer 1-{n_classes} "
                    "(one per line of classes.txt)"
                )
            rows.append((join_fields(row[1], row[2]), int(label) - 1))
    return pd.DataFrame(rows, columns=["text", "label"])


# --- CSV / JSON / JSONL / Parquet files ------------------------------------------------------


def _read_file_dir(path: Path, cfg: DataConfig) -> _Read:
    found = {split: _find_split_file(path, split) for split in ("train", "test")}
    if found["train"] is None:
        raise DataError(
            f"{path}: no train file; expected train.csv/.json/.jsonl/.parquet "
            "(or the AG News layout: headerless train.csv, test.csv, classes.txt)"
        )
    classes = path / "classes.txt"
    names = read_classes(classes) if classes.is_file() else None
    train_raw = _read_table(found["train"], cfg)
    if found["test"] is None:
        return (*_label_and_carve_test(train_raw, names, found["train"], cfg), True)
    test_raw = _read_table(found["test"], cfg)
    names, to_id = _label_mapping(train_raw["label"], names, found["train"])
    return _encode(train_raw, to_id, found["train"]), _encode(test_raw, to_id, found["test"]), names, False


def _read_single_file(path: Path, cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    if path.suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use {', '.join(FILE_SUFFIXES)}")
    classes = path.parent / "classes.txt"
    names = read_classes(classes) if classes.is_file() else None
    return _label_and_carve_test(_read_table(path, cfg), names, path, cfg)


def _label_and_carve_test(
    raw: pd.DataFrame, names: tuple[str, ...] | None, path: Path, cfg: DataConfig
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """With no test file, a stratified, seeded test split is carved from the one file."""
    names, to_id = _label_mapping(raw["label"], names, path)
    frame = _encode(raw, to_id, path)
    _check_classes(frame, names, path)
    test_size = max(len(names), round(len(frame) * cfg.test_fraction))
    train, test = stratified_split(frame, test_size, seed=0)  # fixed: the test split never moves
    return train, test, names


def _find_split_file(path: Path, split: str) -> Path | None:
    for suffix in FILE_SUFFIXES:
        candidate = path / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_table(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """Read one file into columns `text` (joined text columns) and `label` (raw values)."""
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, encoding="utf-8", dtype=str, keep_default_na=False, na_values=[""])
        elif path.suffix in (".json", ".jsonl"):
            frame = _read_json(path)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot be parsed as {path.suffix[1:].upper()}: {_first_line(exc)}") from exc
    missing = [c for c in (*cfg.text_columns, cfg.label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(map(str, frame.columns))}. "
            "Set text_columns / label_column to match."
        )
    null_labels = frame[cfg.label_column].isna()
    if null_labels.any():
        row = int(null_labels.to_numpy().nonzero()[0][0])
        raise DataError(f"{path}: {int(null_labels.sum())} row(s) have no {cfg.label_column!r}, first at row {row + 1}")
    text = join_columns(frame, cfg.text_columns)
    return pd.DataFrame({"text": text, "label": frame[cfg.label_column]})


def _read_json(path: Path) -> pd.DataFrame:
    text = _read_text(path)
    lines = path.suffix == ".jsonl" or not text.lstrip().startswith("[")
    return pd.read_json(io.StringIO(text), lines=lines, dtype=False)


def _label_mapping(
    labels: pd.Series, names: tuple[str, ...] | None, path: Path
) -> tuple[tuple[str, ...], dict[object, int]]:
    """Map raw label values to ids: class names from classes.txt, integers, or distinct strings."""
    values = labels.astype(str).str.strip()
    if values.str.fullmatch(r"-?\d+").all():
        ints = sorted({int(v) for v in values})
        if names is not None:
            offset = 1 if min(ints) >= 1 and max(ints) == len(names) else 0
            return names, {str(i + offset): i for i in range(len(names))}
        return tuple(str(i) for i in ints), {str(v): i for i, v in enumerate(ints)}
    if names is not None:
        return names, {name: i for i, name in enumerate(names)}
    distinct = tuple(sorted(set(values)))
    return distinct, {name: i for i, name in enumerate(distinct)}


def _encode(raw: pd.DataFrame, to_id: dict[object, int], path: Path) -> pd.DataFrame:
    values = raw["label"].astype(str).str.strip()
    ids = values.map(to_id)
    unknown = ids.isna()
    if unknown.any():
        bad = sorted(set(values[unknown]))[:5]
        raise DataError(
            f"{path}: label value(s) {', '.join(map(repr, bad))} are not among the known classes "
            f"({', '.join(map(str, to_id))})"
        )
    return pd.DataFrame({"text": raw["text"].astype(str), "label": ids.astype(int)})


# --- the Hugging Face Hub --------------------------------------------------------------------


def _read_hub(cfg: DataConfig) -> _Read:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.source)
    except Exception as exc:  # datasets raises many types; all mean "cannot load this id"
        raise DataError(
            f"{cfg.source}: cannot load it from the Hugging Face Hub ({_first_line(exc)}). "
            "Offline? Point data at a local directory or file instead."
        ) from exc
    if "train" not in loaded:
        raise DataError(f"{cfg.source}: the dataset has no 'train' split (splits: {', '.join(loaded)})")
    feature = loaded["train"].features.get(cfg.label_column)
    names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    train_raw = _hub_frame(loaded["train"].to_pandas(), cfg)
    if "test" not in loaded:
        return (*_label_and_carve_test(train_raw, names, Path(cfg.source), cfg), True)
    test_raw = _hub_frame(loaded["test"].to_pandas(), cfg)
    if names is not None:  # ClassLabel ids are already 0..K-1
        return _ids(train_raw), _ids(test_raw), names, False
    names, to_id = _label_mapping(train_raw["label"], None, Path(cfg.source))
    return _encode(train_raw, to_id, Path(cfg.source)), _encode(test_raw, to_id, Path(cfg.source)), names, False


def _hub_frame(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    missing = [c for c in (*cfg.text_columns, cfg.label_column) if c not in frame.columns]
    if missing:
        raise DataError(f"{cfg.source}: missing column(s) {', '.join(missing)}; columns: {', '.join(frame.columns)}")
    return pd.DataFrame({"text": join_columns(frame, cfg.text_columns), "label": frame[cfg.label_column]})


def _ids(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=frame["label"].astype(int))


# --- checks shared by every layout -----------------------------------------------------------


def _check_splits(train: pd.DataFrame, test: pd.DataFrame, names: tuple[str, ...], source: str) -> None:
    for split, frame in (("train", train), ("test", test)):
        if frame.empty:
            raise DataError(f"{source}: the {split} split is empty")
    _check_several_classes(train, names, Path(source))
    unseen = sorted(set(test["label"]) - set(train["label"]))
    if unseen:
        raise DataError(
            f"{source}: test labels never seen in train: {', '.join(names[i] for i in unseen)}; "
            "a model cannot learn them"
        )
    _check_classes(train, names, Path(source))


def _check_several_classes(frame: pd.DataFrame, names: tuple[str, ...], path: Path) -> None:
    present = frame["label"].unique()
    if len(present) < 2:
        only = names[int(present[0])] if len(present) else "none"
        raise DataError(f"{path}: training data has a single class ({only}); at least two are needed")


def _check_classes(frame: pd.DataFrame, names: tuple[str, ...], path: Path) -> None:
    # Every named class counts, also one without a row: the model would get an output it never learns, and the
    # lexical companion (one row per class seen) would no longer line up with the encoder's classes.
    _check_several_classes(frame, names, path)
    counts = frame["label"].value_counts().reindex(range(len(names)), fill_value=0)
    rare = counts[counts < 2]
    if len(rare):
        raise DataError(
            f"{path}: class(es) {', '.join(names[int(i)] for i in rare.index)} have fewer than 2 training rows "
            f"({', '.join(map(str, rare))}); a stratified validation split needs at least 2 per class, and a class "
            "named in classes.txt but never used would be an output the model never learns"
        )


def join_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """The text of each row: its text columns joined by `join_fields` (missing values read as empty)."""
    values = frame[list(columns)].fillna("").astype(str)
    return pd.Series([join_fields(*row) for row in values.itertuples(index=False)], index=frame.index, dtype=object)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
