"""Reading delimited text files with errors that point at the offending line.

pandas parses fast but cannot tell a missing field from an empty one, and its
errors name neither the file nor the field. So each file is first checked
line by line for the right number of fields (vectorised with numpy), then
parsed by pandas' C engine (numeric fields straight to float64 when they all
parse), and every typed column is validated here, mapping the first bad row
back to its line number and quoting the value as the file spells it.
"""
from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, NoReturn

import numpy as np
import pandas as pd

from starec_env.data.errors import DataFormatError

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


@dataclass(frozen=True)
class Table:
    """A parsed text table plus where each row came from.

    ``frame`` holds float64 columns for the fields declared numeric (when they
    all parsed) and str columns otherwise; ``lines`` the 1-based line number
    of every row. The raw bytes are kept so an error can quote a value exactly
    as the file spells it.
    """

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    raw: bytes = b""
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    sep: str = "\t"

    def __len__(self) -> int:
        return len(self.frame)

    def fail(self, row: int, field: str, expected: str) -> NoReturn:
        raise DataFormatError(self.path, int(self.lines[row]), field, expected, self._raw_value(row, field))

    def _raw_value(self, row: int, field: str) -> object:
        value = self.frame[field].iat[row]
        if self.starts is None or self.ends is None or isinstance(value, str):
            return value
        line = self.raw[self.starts[row] : self.ends[row]].decode("utf-8")
        return line.split(self.sep)[list(self.frame.columns).index(field)]

    def strings(self, field: str, expected: str = "a non-empty value") -> pd.Series:
        """The column as str, refusing empty values (ids, titles)."""
        col = self.frame[field]
        empty = (col == "").to_numpy(dtype=bool)
        if empty.any():
            self.fail(int(np.argmax(empty)), field, expected)
        return col

    def numbers(
        self,
        field: str,
        expected: str,
        lo: float | None = None,
        hi: float | None = None,
        integer: bool = False,
    ) -> np.ndarray:
        """The column as float64; any non-number, fraction (if ``integer``) or out-of-range value fails."""
        col = self.frame[field]
        if col.dtype == np.float64:
            values = col.to_numpy()
        else:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(values)
        if integer:
            ok &= np.floor(values) == values
        if lo is not None:
            ok &= values >= lo
        if hi is not None:
            ok &= values <= hi
        if not ok.all():
            self.fail(int(np.argmin(ok)), field, expected)
        return values

    def integers(self, field: str, expected: str, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        return self.numbers(field, expected, lo, hi, integer=True).astype(np.int64)

    def choice(self, field: str, allowed: Collection[str], expected: str) -> pd.Series:
        """The column, restricted to a fixed vocabulary (gender codes, 0/1 flags)."""
        col = self.frame[field].astype(str)
        ok = col.isin(list(allowed)).to_numpy()
        if not ok.all():
            self.fail(int(np.argmin(ok)), field, expected)
        return col

    def unique(self, field: str) -> None:
        """Refuse a repeated id: a catalogue listing one id twice is ambiguous."""
        col = self.frame[field].astype(str)
        dup = col.duplicated().to_numpy()
        if dup.any():
            row = int(np.argmax(dup))
            first = int(np.argmax((col == col.iat[row]).to_numpy()))
            self.fail(row, field, f"a unique id (already on line {int(self.lines[first])})")


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text (``.gz`` transparently), with decode errors located."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(path, None, None, f"a readable {'gzip ' if opener is gzip.open else ''}file", str(exc)) from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, line, None, f"text in encoding {encoding}", raw[exc.start : exc.start + 8]) from None


def split_lines(text: str) -> list[str]:
    """Lines without terminators (Unix or Windows endings, final newline optional)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_delimited(
    path: Path,
    sep: str,
    fields: Iterable[str],
    encoding: str = "utf-8",
    skip_lines: int = 0,
    text: str | None = None,
    numeric: Collection[str] = (),
) -> Table:
    """Parse a delimited file whose every non-empty line has exactly ``fields``.

    ``skip_lines`` leading lines (a header) are not data; line numbers stay
    those of the file. Empty lines are tolerated and skipped. Values are never
    unquoted: official MovieLens titles contain bare quote characters.
    ``numeric`` fields are parsed as float64 by pandas' C engine when they
    all can be; otherwise every field stays text and validation locates the
    culprit.
    """
    fields = list(fields)
    if text is None:
        text = read_text(path, encoding)
    text = text.replace("\r\n", "\n")
    shown_sep = sep
    if len(sep) > 1:  # pandas' C engine wants one character; any unused one will do
        single = next(c for c in ("\t", "\x1f", "\x1e", "\x1d") if c not in text)
        text, sep = text.replace(sep, single), single
    raw = text.encode("utf-8")
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(raw) and raw[-1:] != b"\n":
        ends = np.append(ends, len(raw))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else ends
    line_of_sep = np.searchsorted(ends, np.flatnonzero(buf == ord(sep)))
    counts = np.bincount(line_of_sep, minlength=len(ends))[skip_lines:]
    starts, ends = starts[skip_lines:], ends[skip_lines:]
    numbers = np.arange(len(starts), dtype=np.int64) + 1 + skip_lines
    nonblank = ends > starts
    bad = nonblank & (counts != len(fields) - 1)
    if bad.any():
        row = int(np.argmax(bad))
        line = raw[starts[row] : ends[row]].decode("utf-8").replace(sep, shown_sep)
        raise DataFormatError(
            path,
            int(numbers[row]),
            None,
            f"{len(fields)} fields separated by {shown_sep!r} ({', '.join(fields)})",
            f"{counts[row] + 1} fields: {line}",
        )
    starts, ends, numbers = starts[nonblank], ends[nonblank], numbers[nonblank]
    body = raw[starts[0] :] if len(starts) else b""
    try:
        frame = _parse(body, sep, fields, numeric)
    except ValueError:  # a numeric field holds text: keep strings, let validation point at it
        frame = _parse(body, sep, fields, ())
    if len(frame) != len(starts):  # never silently misalign rows and line numbers
        raise DataFormatError(path, None, None, f"one row per non-empty line ({len(starts)}), pandas read {len(frame)}")
    return Table(path, frame, numbers, raw, starts, ends, sep)


def _parse(body: bytes, sep: str, fields: list[str], numeric: Collection[str]) -> pd.DataFrame:
    if not body:
        return pd.DataFrame({f: pd.Series([], dtype=np.float64 if f in numeric else object) for f in fields})
    return pd.read_csv(
        io.BytesIO(body),
        sep=sep,
        header=None,
        names=fields,
        dtype={f: (np.float64 if f in numeric else object) for f in fields},
        keep_default_na=False,
        na_values={f: [""] for f in numeric},
        quoting=csv.QUOTE_NONE,
        index_col=False,
        engine="c",
        encoding="utf-8",
    )


def find_file(folders: Iterable[Path], names: Iterable[str]) -> Path | None:
    """The first existing ``folder/name``, trying every name in every folder in order."""
    names = list(names)
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def year_from_text(value: object) -> int:
    """A 4-digit year found in free text ("1995", "June 5, 2007"), else 0 (unknown)."""
    match = _YEAR.search(str(value))
    return int(match.group(1)) if match else 0


def drop_repeated_pairs(inter: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each (user, item) pair's latest interaction.

    Some dumps (Amazon) list a pair twice; the simulator assumes an item is
    consumed once, so repeats would leak targets into histories.
    """
    users = pd.factorize(inter["user_id"])[0].astype(np.int64)
    items, item_vocab = pd.factorize(inter["item_id"])
    keys = users * max(1, len(item_vocab)) + items
    order = np.lexsort((inter["timestamp"].to_numpy(), keys))  # by pair, then time; ties keep file order
    last_of_pair = np.append(keys[order][1:] != keys[order][:-1], True)
    if last_of_pair.all():
        return inter, 0
    keep = np.zeros(len(inter), dtype=bool)
    keep[order[last_of_pair]] = True
    return inter[keep], int(len(inter) - keep.sum())
