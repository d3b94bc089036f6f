"""Reading delimited text files with errors that point at the offending line.

pandas parses fast but cannot tell a missing field from an empty one, and its
errors name neither the file nor the field. So each file is first checked
line by line for the right number of fields (vectorised with numpy), then
parsed by pandas' C engine (numeric fields straight to float64 when they all
parse), and every typed column is validated here, mapping the first bad row
back to its line number and quoting the value as the file spells it.
Integer fields (ids, timestamps) are parsed exactly, never through float64
(a float merges ids above 2**53 and turns 1e20 into INT64_MIN): by the C
engine as int64 when the file holds nothing but digits, signs and
separators (MovieLens ratings), else from their text.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, NoReturn

import numpy as np
import pandas as pd

from starec_env.data.errors import DataFormatError

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_INT64 = np.iinfo(np.int64)
#: Largest magnitude below which every integer is exact in float64.
_FLOAT_EXACT = 2.0**53
#: Stand-ins for a multi-character separator (pandas' C engine wants one character).
_SEP_STAND_INS = tuple(chr(c) for c in (9, *range(0x1F, 0, -1), 0x7F) if chr(c) not in "\n\r")
#: Bytes of a file whose integer fields the C engine may parse as int64 directly.
_PLAIN_BYTES = np.zeros(256, dtype=bool)
_PLAIN_BYTES[list(b"0123456789+-\n")] = True
#: What a loader may do with a (user, item) pair listed twice: refuse the file, or keep the latest row.
DUPLICATE_POLICIES = ("error", "latest")
log = logging.getLogger("starec_env.data")


@dataclass(frozen=True)
class Table:
    """A parsed text table plus where each row came from.

    ``frame`` holds float64 columns for the fields declared numeric (when they
    all parsed), int64 columns for the fields declared integer (when the file
    is plain digits) and str columns otherwise; ``lines`` the 1-based line number
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
        """The column as str, refusing empty or blank values (ids, titles)."""
        col = self.frame[field]
        empty = (col.astype(str).str.strip() == "").to_numpy(dtype=bool)
        if empty.any():
            self.fail(int(np.argmax(empty)), field, expected)
        return col

    def numbers(self, field: str, expected: str, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        """The column as float64; any non-number, infinity or out-of-range value fails."""
        col = self.frame[field]
        if col.dtype == np.float64:
            values = col.to_numpy()
        else:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return self._within(field, expected, values, np.isfinite(values), lo, hi)

    def integers(
        self, field: str, expected: str, lo: int | None = None, hi: int | None = None, fractions: bool = False
    ) -> np.ndarray:
        """The column as exact int64 (declare it integer, never numeric, when reading).

        "1e3", "7.0" or a value beyond int64 is not an integer. ``fractions``
        (RecBole's float-typed timestamps) floors decimal numbers whose
        magnitude is at most 2**53, where float64 is still exact.
        """
        col = self.frame[field]
        if col.dtype == np.int64:  # the C engine parsed a file of plain digits: exact already
            return self._within(field, expected, col.to_numpy(), np.ones(len(col), dtype=bool), lo, hi)
        text = col.astype(str)
        values = np.zeros(len(text), dtype=np.int64)
        ok = text.str.fullmatch(r"[+-]?[0-9]{1,18}").to_numpy(dtype=bool, copy=True)  # always within int64
        values[ok] = text[ok].to_numpy().astype(np.int64)
        longer = np.flatnonzero(~ok)[text[~ok].str.fullmatch(r"[+-]?[0-9]+").to_numpy(dtype=bool)] if not ok.all() else []
        for row in longer:  # rare: 19+ digits, in range or not
            value = int(text.iat[row])
            if _INT64.min <= value <= _INT64.max:
                values[row], ok[row] = value, True
        if fractions and not ok.all():
            rest = np.flatnonzero(~ok)
            floats = pd.to_numeric(text.iloc[rest], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            exact = np.isfinite(floats) & (np.abs(floats) <= _FLOAT_EXACT)
            values[rest[exact]] = np.floor(floats[exact]).astype(np.int64)
            ok[rest[exact]] = True
        return self._within(field, expected, values, ok, lo, hi)

    def _within(self, field: str, expected: str, values: np.ndarray, ok: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
        """``values``, after failing at the first row that did not parse (``ok`` False) or lies outside [lo, hi]."""
        if lo is not None:
            ok &= values >= lo
        if hi is not None:
            ok &= values <= hi
        if not ok.all():
            self.fail(int(np.argmin(ok)), field, expected)
        return values

    def require_rows(self, what: str) -> None:
        """Refuse a file without data rows: an empty dataset would fail later, naming no file."""
        if not len(self.frame):
            got = "an empty file" if not self.raw.strip() else "no data lines"
            raise DataFormatError(self.path, None, None, f"at least one {what} line", got)

    def choice(self, field: str, allowed: Collection[str], expected: str) -> pd.Series:
        """The column, restricted to a fixed vocabulary (gender codes, 0/1 flags)."""
        col = self.frame[field].astype(str)
        ok = col.isin(list(allowed)).to_numpy()
        if not ok.all():
            self.fail(int(np.argmin(ok)), field, expected)
        return col

    def unique(self, field: str, values: np.ndarray | None = None) -> None:
        """Refuse a repeated id: a catalogue listing one id twice is ambiguous.

        ``values`` are the parsed ids when they compare as numbers ("7" == "07").
        """
        col = pd.Series(values) if values is not None else self.frame[field].astype(str)
        dup = col.duplicated().to_numpy()
        if dup.any():
            row = int(np.argmax(dup))
            first = int(np.argmax((col == col.iat[row]).to_numpy()))
            self.fail(row, field, f"a unique id (already on line {int(self.lines[first])})")

    def known(self, field: str, values: np.ndarray, catalogue: np.ndarray, where: Path) -> None:
        """Refuse a reference (a rated item) that the file ``where`` does not list."""
        missing = ~np.isin(values, catalogue)
        if missing.any():
            self.fail(int(np.argmax(missing)), field, f"an id listed in {where.name}")


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
    integer: Collection[str] = (),
) -> Table:
    """Parse a delimited file whose every non-empty line has exactly ``fields``.

    ``skip_lines`` leading lines (a header) are not data; line numbers stay
    those of the file. Empty lines are tolerated and skipped. Values are never
    unquoted: official MovieLens titles contain bare quote characters.
    ``numeric`` fields are parsed as float64 by pandas' C engine when they
    all can be, ``integer`` fields as int64 when the file is plain digits;
    otherwise every field stays text and validation locates the culprit.
    """
    fields = list(fields)
    if text is None:
        text = read_text(path, encoding)
    text = text.replace("\r\n", "\n")
    shown_sep = sep
    if len(sep) > 1:  # pandas' C engine wants one character; any unused one will do
        single = next((c for c in _SEP_STAND_INS if c not in text), None)
        if single is None:
            raise DataFormatError(path, None, None, "text without control characters (every one of them appears)")
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
    types: dict[str, type] = {f: np.float64 for f in numeric}
    if integer and _plain_digits(body, sep):
        types |= {f: np.int64 for f in integer}
    try:
        frame = _parse(body, sep, fields, types)
    except (ValueError, OverflowError):  # a typed field holds text or a huge number: keep strings, let validation point at it
        frame = _parse(body, sep, fields, {})
    if len(frame) != len(starts):  # never silently misalign rows and line numbers
        raise DataFormatError(path, None, None, f"one row per non-empty line ({len(starts)}), pandas read {len(frame)}")
    return Table(path, frame, numbers, raw, starts, ends, sep)


def _plain_digits(body: bytes, sep: str) -> bool:
    """Whether ``body`` holds only digits, signs, ``sep`` and line breaks (no "1e3", no "7.0")."""
    allowed = _PLAIN_BYTES.copy()
    allowed[ord(sep)] = True
    return bool(allowed[np.frombuffer(body, dtype=np.uint8)].all())


def _parse(body: bytes, sep: str, fields: list[str], types: dict[str, type]) -> pd.DataFrame:
    if not body:
        return pd.DataFrame({f: pd.Series([], dtype=types.get(f, object)) for f in fields})
    return pd.read_csv(
        io.BytesIO(body),
        sep=sep,
        header=None,
        names=fields,
        dtype={f: types.get(f, object) for f in fields},
        keep_default_na=False,
        na_values={f: [""] for f, kind in types.items() if kind is np.float64},
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


def repeated_pairs(
    inter: pd.DataFrame, table: Table, user: str, item: str, policy: str
) -> tuple[pd.DataFrame, int]:
    """Apply a loader's ``duplicates`` policy to (user, item) pairs listed twice.

    The simulator assumes an item is consumed once, so repeats would leak
    targets into histories. ``"error"`` refuses the file at the repeated
    row (``user`` and ``item`` name the file's fields for the message);
    ``"latest"`` keeps each pair's latest interaction (ties: the
    last in the file) and logs how many rows it dropped. Rows of ``inter``
    are the rows of ``table``, in order.
    """
    users = pd.factorize(inter["user_id"])[0].astype(np.int64)
    items, item_vocab = pd.factorize(inter["item_id"])
    keys = users * max(1, len(item_vocab)) + items
    repeated = pd.Series(keys).duplicated().to_numpy()
    if not repeated.any():
        return inter, 0
    if policy == "error":
        row = int(np.argmax(repeated))
        first = int(np.argmax(keys == keys[row]))
        raise DataFormatError(
            table.path, int(table.lines[row]), item,
            f"each ({user}, {item}) pair once (this pair is already on line {int(table.lines[first])}); "
            "the loader option duplicates='latest' keeps each pair's latest interaction",
            f"{user} {inter['user_id'].iat[row]}, {item} {inter['item_id'].iat[row]}",
        )  # fmt: skip
    order = np.lexsort((inter["timestamp"].to_numpy(), keys))  # by pair, then time; ties keep file order
    last_of_pair = np.append(keys[order][1:] != keys[order][:-1], True)
    keep = np.zeros(len(inter), dtype=bool)
    keep[order[last_of_pair]] = True
    dropped = int(len(inter) - keep.sum())
    log.warning("%s: dropped %d repeated (user, item) rows, keeping each pair's latest (duplicates='latest')", table.path, dropped)
    return inter[keep], dropped
