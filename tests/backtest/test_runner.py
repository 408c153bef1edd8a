"""One detector over a run's symbols: the all-symbol row, and how far back the warm-up reads."""

from __future__ import annotations

import datetime as dt

from marketbars.backtest import detectors, runner
from marketbars.backtest.engine import Settings
from marketbars.backtest.runner import warmup_start
from marketbars.market.calendar import sessions_between
from marketbars.market.symbols import ALL_SYMBOLS
from tests.backtest.sample_bars import intraday, random_walk


def test_every_detector_gets_an_all_symbols_row_and_a_ticker_named_all_is_just_a_ticker() -> None:
    rows = random_walk(78 * 5, seed=3)
    per_session = [rows[i : i + 78] for i in range(0, len(rows), 78)]
    batch = {"ALL": intraday(per_session, symbol="ALL"), "AAPL": intraday(per_session, symbol="AAPL")}
    classes = {"ALL": "stocks", "AAPL": "stocks"}
    start = dt.date.fromordinal(int(batch["AAPL"].session[0]))
    mean_reversion = detectors.REGISTRY["mean_reversion_long"]
    result = runner.run_detector(
        mean_reversion, mean_reversion.parameters(), Settings(), [batch], classes, "5m", start
    )
    assert set(result.metrics) == {"ALL", "AAPL", ALL_SYMBOLS}
    assert (
        result.metrics[ALL_SYMBOLS]["trades"]
        == len(result.trades)
        == sum(result.metrics[s]["trades"] for s in ("ALL", "AAPL"))
    )
    drive = detectors.REGISTRY["opening_drive_bullish"]  # intraday: nothing to do on daily bars
    nothing = runner.run_detector(drive, drive.parameters(), Settings(), [], classes, "1d", start)
    assert nothing.metrics[ALL_SYMBOLS]["trades"] == 0 and set(nothing.notes) == {"ALL", "AAPL"}


def test_a_long_warm_up_finds_enough_sessions_across_holidays() -> None:
    start = dt.date(2025, 6, 2)
    for bars_needed in (301, 501):
        first = warmup_start(start, "1d", bars_needed)
        assert len(sessions_between(first, start - dt.timedelta(days=1))) == bars_needed + 1


def test_warm_up_reads_enough_sessions_before_the_start() -> None:
    start = dt.date(2024, 3, 4)
    assert warmup_start(start, "1d", 60) < start - dt.timedelta(days=60)
    first = warmup_start(start, "5m", 100)  # 100 five-minute bars: two sessions, plus one spare
    assert first == dt.date(2024, 2, 28)


def test_a_batch_read_once_gives_each_detector_the_results_of_its_own_read() -> None:
    """The batch is read from the earliest warm-up; each detector sees its own warm-up only."""
    rows = random_walk(78 * 12, seed=11)
    per_session = [rows[i : i + 78] for i in range(0, len(rows), 78)]
    bars = {"AAA": intraday(per_session, symbol="AAA"), "BBB": intraday(per_session[2:], symbol="BBB")}
    sessions = sorted({int(d) for d in bars["AAA"].session})
    start = dt.date.fromordinal(sessions[6])
    classes = {"AAA": "stocks", "BBB": "stocks", "CCC": "stocks"}
    settings = Settings()
    jobs = [
        runner.Job(d, d.parameters(), dt.date.fromordinal(sessions[k]))
        for d, k in (
            (detectors.REGISTRY["mean_reversion_long"], 3),
            (detectors.REGISTRY["trend_continuation_long"], 0),
        )
    ]
    batch = runner.run_batch(jobs, settings, bars, ["AAA", "BBB", "CCC"], classes, "5m", start)
    for job, result in zip(jobs, batch, strict=True):
        own_read = {s: b.since(job.read_start) for s, b in bars.items()}
        alone = runner.run_detector(job.detector, job.params, settings, [own_read], classes, "5m", start)
        assert result.trades == alone.trades
        assert result.metrics == {s: m for s, m in alone.metrics.items() if s != ALL_SYMBOLS}
        assert result.notes == alone.notes == {"CCC": "no bars in the range"}
    assert bars["AAA"].since(dt.date.fromordinal(sessions[3])).ts[0] == bars["AAA"].ts[78 * 3]
    assert bars["AAA"].since(dt.date.fromordinal(sessions[0])) is bars["AAA"]
