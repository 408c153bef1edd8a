"""A deterministic sample market in Massive's exact flat-file formats, with seeded pathologies.

Same inputs, same bytes (and so the same ETags): the generator seeds every random draw from the
ticker and the date. Each file comes with the list of lines that must be quarantined and why, so
tests compare the warehouse with the source independently of the loader.

Realism kept on purpose: real XNYS sessions (holidays, early closes, DST), extended hours for
stocks (04:00-20:00 ET; 17:00 on early-close days), liquid and thin tickers (thin ones miss
minutes and whole days), fractional volume in files from 2026, index files that also exist on
weekday holidays, sorted by ticker then time, and a price spike from a late-reported trade.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from marketbars.market import calendar
from marketbars.market.calendar import NEW_YORK
from marketbars.massive.flatfiles import HEADERS, object_key
from sandbox import reference

UNIVERSE_CSV = Path(__file__).resolve().parents[1] / "include" / "sample_market" / "universe.csv"
FRACTIONAL_VOLUME_FROM = dt.date(2026, 1, 1)  # the vendor's files carry fractional volume from 2026
# Non-US indices keep printing on NYSE holidays: the vendor's index files exist on those days too.
HOLIDAY_INDICES = ("I:NIKKEI225", "I:UKX")
NS = 1_000_000_000

# What a seeded pathology does, and the quarantine reason it must get.
PATHOLOGIES: dict[str, str] = {
    "duplicate_row": "duplicate_row",
    "conflicting_duplicate": "conflicting_duplicate",
    "empty_field": "empty_field",
    "non_numeric": "non_numeric",
    "malformed_row": "malformed_row",
    "next_day_timestamp": "timestamp_outside_session",
    "zero_timestamp": "timestamp_outside_session",
    "misaligned_timestamp": "misaligned_timestamp",
    "non_positive_price": "non_positive_price",
    "high_below_low": "high_below_low",
    "price_outside_range": "price_outside_range",
    "negative_volume": "negative_volume",
}
VOLUME_PATHOLOGIES = {"negative_volume"}  # need a volume column (not indices)
# The 2019-08-12 case: every window_start of a day file belongs to the next day.
WHOLE_FILE_NEXT_DAY = "whole_file_next_day"


@dataclass(frozen=True)
class Instrument:
    ticker: str
    dataset: str
    price: float
    liquidity: float  # share of regular-session minutes with a bar


@cache
def universe() -> tuple[Instrument, ...]:
    with UNIVERSE_CSV.open() as handle:
        return tuple(
            Instrument(r["ticker"], r["dataset"], float(r["price"]), float(r["liquidity"]))
            for r in csv.DictReader(handle)
        )


def instruments(dataset: str) -> list[Instrument]:
    return sorted((i for i in universe() if i.dataset == dataset), key=lambda i: i.ticker)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class _Row:
    fields: list[str]
    expect: str | None = None  # the quarantine reason this line must get; None: it must load
    paired: bool = False  # the original of a seeded duplicate: another pathology would change its meaning


@dataclass(frozen=True)
class SampleFile:
    dataset: str
    timeframe: str
    session: dt.date
    key: str
    body: bytes  # the .csv.gz object
    lines: tuple[str, ...]  # data lines, without the header
    quarantine: dict[int, str] = field(default_factory=dict)  # physical line number -> reason

    @property
    def header(self) -> tuple[str, ...]:
        return HEADERS[self.dataset]

    def expected_rows(self, symbols: Iterable[str] | None = None) -> list[list[str]]:
        """The data lines that must be loaded (all but the quarantined), split into fields."""
        keep = None if symbols is None else set(symbols)
        rows = []
        for number, line in enumerate(self.lines, start=2):
            fields = line.split(",")
            if number not in self.quarantine and (keep is None or fields[0] in keep):
                rows.append(fields)
        return rows

    def expected_quarantine(self, symbols: Iterable[str] | None = None) -> dict[int, str]:
        keep = None if symbols is None else set(symbols)
        return {
            n: reason
            for n, reason in self.quarantine.items()
            if keep is None or self.lines[n - 2].split(",")[0] in keep
        }


def _price_level(instrument: Instrument, day: dt.date) -> float:
    """A smooth, deterministic price level for the day (no dependency on earlier days)."""
    phase = _rng(instrument.ticker, "phase").uniform(0, 2 * np.pi)
    drift = 0.12 * np.sin(2 * np.pi * day.toordinal() / 230 + phase)
    noise = _rng(instrument.ticker, day, "level").normal(0, 0.01)
    return instrument.price * float(np.exp(drift + noise))


def _fmt_price(value: float) -> str:
    value = float(value)  # numpy scalars repr as np.float64(...)
    return repr(round(value, 4 if value < 1 else 2))


def _minute_grid(instrument: Instrument, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Bar start times (ns) and whether each is in the regular session, before sampling."""
    if calendar.is_session(day):
        hours = calendar.session_hours(day)
        open_ns, close_ns = (int(t.timestamp()) * NS for t in (hours.open, hours.close))
        early = hours.early_close
    else:  # a weekday holiday: only the holiday indices print, on normal hours
        open_ns = int(dt.datetime.combine(day, dt.time(9, 30), NEW_YORK).timestamp()) * NS
        close_ns = int(dt.datetime.combine(day, dt.time(16, 0), NEW_YORK).timestamp()) * NS
        early = False
    if instrument.dataset == "indices":
        first, last = open_ns, close_ns
    else:
        first = int(dt.datetime.combine(day, dt.time(4, 0), NEW_YORK).timestamp()) * NS
        last = int(dt.datetime.combine(day, dt.time(17 if early else 20, 0), NEW_YORK).timestamp()) * NS
    grid = np.arange(first, last, 60 * NS, dtype=np.int64)
    return grid, (grid >= open_ns) & (grid < close_ns)


def _minute_rows(instrument: Instrument, day: dt.date) -> list[_Row]:
    rng = _rng(instrument.ticker, day, "minutes")
    grid, regular = _minute_grid(instrument, day)
    if instrument.dataset == "indices":
        present = np.ones(len(grid), dtype=bool)
    else:
        if instrument.liquidity < 0.05 and rng.random() < 0.3:
            return []  # an illiquid ticker with no trades at all that day
        chance = np.where(regular, instrument.liquidity, instrument.liquidity * 0.3)
        present = rng.random(len(grid)) < chance
    times = grid[present]
    n = len(times)
    if n == 0:
        return []
    split_basis = reference.raw_factor(instrument.ticker, day)  # raw prices before a split
    level = _price_level(instrument, day) * split_basis
    sigma = 0.0006 if instrument.dataset == "indices" else 0.0012
    close = level * np.exp(np.cumsum(rng.normal(0, sigma, n)))
    open_ = np.concatenate([[level], close[:-1]]) * (1 + rng.normal(0, sigma / 4, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, sigma / 2, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, sigma / 2, n)))
    if instrument.dataset != "indices" and instrument.liquidity < 0.5 and n > 3:
        spike = int(rng.integers(1, n - 1))  # a late-reported trade: a valid bar with a far high
        high[spike] = max(open_[spike], close[spike]) * 1.08
    decimals = 4 if level < 1 else 2
    open_, close, high, low = (np.round(a, decimals) for a in (open_, close, high, low))
    high = np.maximum.reduce([high, open_, close])
    low = np.minimum.reduce([low, open_, close])
    rows = []
    ticker = reference.listed_ticker(instrument.ticker, day)
    if instrument.dataset == "indices":
        for i in range(n):
            fields = [ticker, _fmt_price(open_[i]), _fmt_price(close[i])]
            rows.append(_Row([*fields, _fmt_price(high[i]), _fmt_price(low[i]), str(times[i])]))
        return rows
    scale = 2_000 * instrument.liquidity + 20
    volume = rng.lognormal(np.log(scale), 1.0, n) / split_basis
    fractional = day >= FRACTIONAL_VOLUME_FROM
    volume = np.round(volume, 6) if fractional else np.maximum(1, np.round(volume))
    trades = np.maximum(1, (volume / rng.uniform(40, 160, n)).astype(np.int64))
    for i in range(n):
        vol = repr(float(volume[i])) if fractional else str(int(volume[i]))
        prices = [_fmt_price(open_[i]), _fmt_price(close[i]), _fmt_price(high[i]), _fmt_price(low[i])]
        rows.append(_Row([ticker, vol, *prices, str(times[i]), str(trades[i])]))
    return rows


def _daily_row(dataset: str, minute_rows: Sequence[_Row], day: dt.date) -> _Row:
    """The day bar of one ticker, aggregated from its minute bars, stamped 00:00 New York."""
    h = HEADERS[dataset]
    col = {name: [r.fields[h.index(name)] for r in minute_rows] for name in h}
    stamp = str(int(calendar.day_window(day)[0].timestamp()) * NS)
    ohlc = {
        "open": col["open"][0],
        "close": col["close"][-1],
        "high": _fmt_price(max(map(float, col["high"]))),
        "low": _fmt_price(min(map(float, col["low"]))),
    }
    values = {"ticker": minute_rows[0].fields[0], **ohlc, "window_start": stamp}
    if "volume" in h:
        total = sum(map(float, col["volume"]))
        values["volume"] = repr(round(total, 6)) if day >= FRACTIONAL_VOLUME_FROM else str(int(total))
        values["transactions"] = str(sum(map(int, col["transactions"])))
    return _Row([values[name] for name in h])


def _default_pathologies(dataset: str, timeframe: str, day: dt.date) -> list[str]:
    kinds = sorted(k for k in PATHOLOGIES if dataset != "indices" or k not in VOLUME_PATHOLOGIES)
    count = 3 if timeframe == "1m" else 1
    return list(_rng(dataset, timeframe, day, "pathologies").choice(kinds, size=count, replace=False))


def _swap_high_low(f: list[str], h: tuple[str, ...]) -> None:
    hi, lo = h.index("high"), h.index("low")
    f[hi], f[lo] = f[lo], f[hi]


def _shift_start(seconds: int) -> Callable[[list[str], tuple[str, ...]], None]:
    def shift(f: list[str], h: tuple[str, ...]) -> None:
        ws = h.index("window_start")
        f[ws] = str(int(f[ws]) + seconds * NS)

    return shift


def _set(column: str, value: str) -> Callable[[list[str], tuple[str, ...]], None]:
    def assign(f: list[str], h: tuple[str, ...]) -> None:
        f[h.index(column if column in h else "open")] = value

    return assign


# How each single-row pathology edits a clean row's fields (duplicates add a row instead).
_EDITS: dict[str, Callable[[list[str], tuple[str, ...]], None]] = {
    "empty_field": _set("volume", ""),
    "non_numeric": _set("volume", "n/a"),
    "malformed_row": lambda f, h: f.__delitem__(-1),
    "next_day_timestamp": _shift_start(86_400),
    "zero_timestamp": lambda f, h: f.__setitem__(h.index("window_start"), "0"),
    "misaligned_timestamp": _shift_start(30),
    "non_positive_price": _set("low", "0"),
    "high_below_low": _swap_high_low,
    "price_outside_range": lambda f, h: f.__setitem__(
        h.index("close"), _fmt_price(float(f[h.index("high")]) * 1.01 + 0.01)
    ),
    "negative_volume": lambda f, h: f.__setitem__(h.index("volume"), "-" + f[h.index("volume")]),
}


def _pick(rows: list[_Row], dataset: str, rng: np.random.Generator) -> int:
    """A clean row to spoil: half the time one of a liquid ticker."""
    h = HEADERS[dataset]
    liquid = {t for i in instruments(dataset) if i.liquidity >= 0.9 for t in reference.tickers_of(i.ticker)}
    high, low = h.index("high"), h.index("low")
    clean = [
        i
        for i, r in enumerate(rows)
        if r.expect is None and not r.paired and float(r.fields[high]) > float(r.fields[low])
    ]
    preferred = [i for i in clean if rows[i].fields[0] in liquid]
    pool = preferred if preferred and rng.random() < 0.5 else clean
    return int(pool[int(rng.integers(len(pool)))])


def _inject(rows: list[_Row], kind: str, dataset: str, rng: np.random.Generator) -> None:
    """Apply one pathology to a clean row (half the time one of a liquid ticker) in place."""
    if kind not in _EDITS and kind not in ("duplicate_row", "conflicting_duplicate"):
        raise ValueError(f"unknown pathology {kind!r}")
    h = HEADERS[dataset]
    i = _pick(rows, dataset, rng)
    row, reason = rows[i], PATHOLOGIES[kind]
    f = row.fields
    if kind == "duplicate_row":
        row.paired = True
        rows.insert(i + 1, _Row(list(f), reason))
        return
    if kind == "conflicting_duplicate":
        other = list(f)
        other[h.index("close")] = f[h.index("low" if f[h.index("close")] != f[h.index("low")] else "high")]
        row.expect = reason
        rows.insert(i + 1, _Row(other, reason))
        return
    _EDITS[kind](f, h)
    row.expect = reason


def build_file(
    dataset: str, timeframe: str, day: dt.date, pathologies: Sequence[str] | None = None
) -> SampleFile | None:
    """One day's flat file, or None when the vendor would publish none (stocks on a holiday, weekends).

    pathologies: the kinds to seed (see PATHOLOGIES, or WHOLE_FILE_NEXT_DAY); None picks a
    deterministic default set for the file.
    """
    if day.weekday() >= 5:
        return None
    if calendar.is_session(day):
        members = instruments(dataset)
    elif dataset == "indices":
        members = [Instrument(t, "indices", 30_000.0, 1.0) for t in HOLIDAY_INDICES]
    else:
        return None
    rows: list[_Row] = []
    for instrument in sorted(members, key=lambda m: reference.listed_ticker(m.ticker, day)):
        minute = _minute_rows(instrument, day)
        if minute:
            rows.extend(minute if timeframe == "1m" else [_daily_row(dataset, minute, day)])
    kinds = _default_pathologies(dataset, timeframe, day) if pathologies is None else list(pathologies)
    rng = _rng(dataset, timeframe, day, "inject")
    for kind in kinds:
        if kind == WHOLE_FILE_NEXT_DAY:
            ws = HEADERS[dataset].index("window_start")
            for row in rows:
                row.fields[ws] = str(int(row.fields[ws]) + 86_400 * NS)
                row.expect = "timestamp_outside_session"
        else:
            _inject(rows, kind, dataset, rng)
    lines = tuple(",".join(r.fields) for r in rows)
    text = ",".join(HEADERS[dataset]) + "\n" + "".join(line + "\n" for line in lines)
    return SampleFile(
        dataset=dataset,
        timeframe=timeframe,
        session=day,
        key=object_key(dataset, timeframe, day),
        body=gzip.compress(text.encode(), compresslevel=6, mtime=0),
        lines=lines,
        quarantine={n: r.expect for n, r in enumerate(rows, start=2) if r.expect},
    )


def build_market(
    start: dt.date,
    end: dt.date,
    datasets: Sequence[str] = ("stocks", "indices"),
    timeframes: Sequence[str] = ("1m", "1d"),
) -> list[SampleFile]:
    """Every file the vendor would publish for the days start..end."""
    files = []
    day = start
    while day <= end:
        for dataset in datasets:
            for timeframe in timeframes:
                sample = build_file(dataset, timeframe, day)
                if sample is not None:
                    files.append(sample)
        day += dt.timedelta(days=1)
    return files


def upload(client: object, bucket: str, files: Iterable[SampleFile]) -> int:
    """Put the files into the bucket; return how many."""
    count = 0
    for sample in files:
        client.put_object(Bucket=bucket, Key=sample.key, Body=sample.body)  # type: ignore[attr-defined]
        count += 1
    return count


def _synthetic_tickers(count: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    names: set[str] = set()
    while len(names) < count:
        length = int(rng.choice([1, 2, 3, 4, 4, 4, 5]))
        names.add("".join(rng.choice(letters, length)))
    return sorted(names)


def full_universe_minute_file(
    day: dt.date, *, tickers: int = 8_000, target_rows: int = 1_800_000, seed: int = 20240305
) -> tuple[bytes, int]:
    """A full-universe stock minute file (~1.8M rows, ~8,000 tickers) for benchmarks: (gzip bytes, rows).

    Vectorised; the same format as build_file, without pathologies.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    names = _synthetic_tickers(tickers, rng)
    first = int(dt.datetime.combine(day, dt.time(4, 0), NEW_YORK).timestamp()) * NS
    minutes = 960
    weight = rng.pareto(1.16, tickers) + 0.02
    chance = weight / weight.sum() * target_rows / minutes
    for _ in range(20):  # liquid tickers saturate at every minute: spread the rest over the others
        chance = np.clip(chance * target_rows / (np.clip(chance, 0, 1).sum() * minutes), 0.001, 1.0)
    present = rng.random((tickers, minutes)) < chance[:, None]
    ticker_idx, minute_idx = np.nonzero(present)
    n = len(ticker_idx)
    base = rng.lognormal(3.2, 1.3, tickers)[ticker_idx]  # mostly $5-$200, some pennies, some $1,000s
    walk = np.cumsum(rng.normal(0, 0.001, n))
    starts = np.searchsorted(ticker_idx, np.arange(tickers))
    walk -= walk[np.minimum(starts, n - 1)][ticker_idx]
    close = base * np.exp(walk)
    open_ = close * (1 + rng.normal(0, 0.0005, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0005, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0005, n)))
    decimals = np.where(base < 1, 4, 2)  # cents above $1, like trade prices
    open_, close, high, low = (
        np.round(a * 10.0**decimals) / 10.0**decimals for a in (open_, close, high, low)
    )
    high, low = np.maximum.reduce([high, open_, close]), np.minimum.reduce([low, open_, close])
    volume = np.maximum(1, np.round(rng.lognormal(6, 1.2, n)))
    table = pa.table(
        {
            "ticker": pa.array(names).take(pa.array(ticker_idx)),
            "volume": volume.astype(np.int64),
            "open": open_,
            "close": close,
            "high": high,
            "low": low,
            "window_start": first + minute_idx.astype(np.int64) * 60 * NS,
            "transactions": np.maximum(1, volume // 60).astype(np.int64),
        }
    )
    assert tuple(table.column_names) == HEADERS["stocks"]
    raw = io.BytesIO()
    raw.write((",".join(HEADERS["stocks"]) + "\n").encode())  # pyarrow would quote the header
    pcsv.write_csv(table, raw, pcsv.WriteOptions(include_header=False, quoting_style="none"))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0), n


def instrument(ticker: str) -> Instrument:
    """The sample market's instrument (under any ticker its company had), or a deterministic synthetic
    one for any other ticker."""
    ticker = reference.current_ticker(ticker)
    for known in universe():
        if known.ticker == ticker:
            return known
    dataset = "indices" if ticker.startswith("I:") else "options" if ticker.startswith("O:") else "stocks"
    rng = _rng(ticker, "synthetic")
    return Instrument(ticker, dataset, float(rng.uniform(5, 500)), float(rng.uniform(0.6, 1.0)))


def rest_results(ticker: str, timeframe: str, day: dt.date) -> tuple[list[dict], int]:
    """A session's bars as the REST API returns them, and the base (minute) aggregates they cover.

    The same numbers as the flat files (o, h, l, c, v, n, t), plus the vwap ``vw`` that only REST
    carries; index bars carry only o, h, l, c, t.
    """
    if not calendar.is_session(day):
        return [], 0
    member = instrument(ticker)
    if reference.listed_ticker(member.ticker, day) != ticker:
        return [], 0  # the company traded under another ticker that day
    minute = _minute_rows(member, day)
    if not minute:
        return [], 0
    rows = minute if timeframe == "1m" else [_daily_row(member.dataset, minute, day)]
    header = HEADERS[member.dataset]
    results = []
    for row in rows:
        f = dict(zip(header, row.fields, strict=True))
        bar = {"o": float(f["open"]), "h": float(f["high"]), "l": float(f["low"]), "c": float(f["close"])}
        bar["t"] = int(f["window_start"]) // 1_000_000
        if member.dataset != "indices":
            bar |= {"v": float(f["volume"]), "n": int(f["transactions"])}
            bar["vw"] = round((bar["h"] + bar["l"] + bar["c"]) / 3, 4)  # a typical price, inside [low, high]
        results.append(bar)
    return results, len(minute)
