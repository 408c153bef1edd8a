"""Parse downloaded flat files and make the warehouse hold exactly their rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from marketbars.market.provenance import FileVersion
from marketbars.massive.flatfiles import DEFAULT_BUCKET
from marketbars.settings import DEFAULT_DOWNLOAD_DIR

if TYPE_CHECKING:
    from marketbars.warehouse.connection import Connection
    from marketbars.warehouse.file_loads import LoadCounts


class FlatFileLoadError(RuntimeError):
    """Some files of a batch failed to load (the others are loaded); the task retries."""


class LoadResult(TypedDict):
    """What happened to one session's file (XCom)."""

    session: str
    dataset: str
    timeframe: str
    action: Literal["loaded", "current", "skipped"]
    key: NotRequired[str]
    etag: NotRequired[str]
    rows_read: NotRequired[int]
    rows_loaded: NotRequired[int]
    rows_quarantined: NotRequired[int]


class FlatFileLoadOperator(BaseOperator):
    """Load the files described by FlatFileDownloadOperator's output into ``market.historical_bars``.

    Guarantees, per file:

    * one transaction: the selection's bars in the session window (older file version, REST
      rows) are replaced by the file's valid rows (``source = 'flatfile'``), its rejected rows
      go to ``market.quarantine`` with a reason, and the ``market.ingest_ledger`` row is written;
      a crash leaves the previous state; a re-run yields the same rows, never duplicates;
    * then, for minute files, the selection's derived bars of the session (5m, 15m, 1h, 4h,
      ``source = 'rollup'``) are rebuilt from its 1m bars in a second transaction; the ledger
      records it, so a rebuild cut short is redone by the next attempt;
    * a file version already loaded for the same selection, whose rows are all still present,
      is not loaded again (``action = current``);
    * a header that drifted from the vendor's format fails the task at once (no retries); a
      truncated or corrupt download is deleted so the retry fetches it again;
    * more than ``max_quarantine_fraction`` of a file's selected rows rejected: the load is kept
      but the task fails after the batch, so somebody looks at the file;
    * one file failing does not stop the batch's others; the task then fails naming each failed
      session (without retries when every failure is a data problem);
    * a loaded file's local copy is deleted (unless ``keep_local_copy``), so a long backfill does
      not fill the disk; a retry or another worker fetches it again.

    Returns (XCom) per session: session, dataset, timeframe, action, rows_read, rows_loaded,
    rows_quarantined, key, etag.

    :param dataset: ``stocks``, ``indices`` or ``options``.
    :param timeframe: ``1m`` or ``1d``.
    :param files: the download task's output (keys, ETags, local paths).
    :param symbols: tickers to keep; ``["*"]`` keeps every ticker.
    :param bucket: bucket to re-fetch from when the local copy is not on this worker.
    :param download_dir: local cache folder.
    :param postgres_conn_id: the warehouse connection (``market_db``).
    :param aws_conn_id: the S3 connection (``massive_s3``).
    :param max_quarantine_fraction: the share of rejected rows above which the task fails.
    :param keep_local_copy: keep downloaded files after they are loaded.
    """

    template_fields: Sequence[str] = ("dataset", "timeframe", "files", "symbols", "bucket", "download_dir")
    ui_color = "#e8f5e9"

    def __init__(
        self,
        *,
        dataset: str,
        timeframe: str,
        files: Sequence[Mapping[str, Any]],
        symbols: Sequence[str],
        bucket: str = DEFAULT_BUCKET,
        download_dir: str = DEFAULT_DOWNLOAD_DIR,
        postgres_conn_id: str = "market_db",
        aws_conn_id: str = "massive_s3",
        max_quarantine_fraction: float = 0.1,
        keep_local_copy: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.timeframe = timeframe
        self.files = files
        self.symbols = symbols
        self.bucket = bucket
        self.download_dir = download_dir
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id
        self.max_quarantine_fraction = max_quarantine_fraction
        self.keep_local_copy = keep_local_copy

    def execute(self, context: Context) -> list[LoadResult]:
        from marketbars.warehouse.hook import WarehouseHook

        if not self.symbols:
            raise AirflowFailException('no symbols selected: pass tickers, or ["*"] for every ticker')
        run_id = context.get("run_id")
        results: list[LoadResult] = []
        failures: list[tuple[Mapping[str, Any], Exception]] = []
        with WarehouseHook(self.postgres_conn_id).connect() as conn:
            for entry in self.files:
                if entry["status"] == "non_session":
                    results.append(
                        {
                            "session": entry["session"],
                            "dataset": self.dataset,
                            "timeframe": self.timeframe,
                            "action": "skipped",
                        }
                    )
                    continue
                try:  # one file's failure must not keep the batch's other files from loading
                    result = self._load_one(conn, FileVersion.from_xcom(entry), Path(entry["path"]), run_id)
                except Exception as exc:
                    self.log.exception("%s %s: load failed", entry["session"], self._url(entry["key"]))
                    failures.append((entry, exc))
                    continue
                results.append(result)
                if not self.keep_local_copy:
                    Path(entry["path"]).unlink(missing_ok=True)  # loaded: bound the disk a long backfill uses
                if self._too_many_rejected(result):
                    failures.append((entry, AirflowFailException(self._rejected_message(result))))
        self._raise_for(failures)
        return results

    def _raise_for(self, failures: Sequence[tuple[Mapping[str, Any], Exception]]) -> None:
        """Fail naming each failed session; without retries when every failure is a data problem."""
        if len(failures) == 1:
            raise failures[0][1]
        if failures:
            detail = "; ".join(f"{e['session']} {self._url(e['key'])}: {exc}" for e, exc in failures)
            message = f"{len(failures)} of {len(self.files)} files did not load cleanly: {detail}"
            if all(isinstance(exc, AirflowFailException) for _, exc in failures):
                raise AirflowFailException(message)  # retrying cannot fix data problems
            raise FlatFileLoadError(message)  # a retry loads what failed; what loaded is skipped

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _too_many_rejected(self, result: LoadResult) -> bool:
        rejected = result.get("rows_quarantined", 0)
        return rejected > self.max_quarantine_fraction * (result.get("rows_loaded", 0) + rejected)

    def _rejected_message(self, result: LoadResult) -> str:
        return (
            f"too many rejected rows (more than {self.max_quarantine_fraction:.0%} of the selection): "
            f"{result['session']} {result['key']}: {result['rows_quarantined']:,} quarantined. "
            "The valid rows are loaded; see market.quarantine for the reasons."
        )

    def _load_one(self, conn: Connection, version: FileVersion, path: Path, run_id: str | None) -> LoadResult:
        from marketbars.massive.csv_reader import CorruptFlatFileError
        from marketbars.warehouse import file_loads, partitions

        current = file_loads.current_load(conn, version, self.symbols)
        if current is not None:
            self.log.info(
                "%s %s: this version is already loaded (%d rows): nothing to do",
                version.session,
                version.key,
                current.rows_loaded,
            )
            if self.timeframe == "1m" and not current.rollups_current:  # an earlier rebuild was cut short
                self._roll_up(conn, version.session)
            return self._result(version, "current", current)
        partitions.ensure_partitions(conn, version.session, version.session)
        try:
            counts = self._replace(conn, version, self._local_copy(version, path), run_id)
        except CorruptFlatFileError as exc:  # this copy may have been damaged after its download
            self.log.warning("%s; downloading it again once", exc)
            try:
                counts = self._replace(conn, version, self._local_copy(version, path), run_id)
            except CorruptFlatFileError as again:
                raise AirflowFailException(
                    f"{again}. The vendor's object is corrupt: a fresh download of the same version fails "
                    "the same way, so no retry can help. gap_detection_and_retry loads the session again "
                    "once the vendor replaces the object (a new ETag)."
                ) from again
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(counts.reasons.items()))
        self.log.info(
            "%s %s: loaded %s rows, quarantined %s%s, of %s lines in the file, in %.2f s",
            version.session,
            version.key,
            f"{counts.rows_loaded:,}",
            f"{counts.rows_quarantined:,}",
            f" ({reasons})" if reasons else "",
            f"{counts.rows_read:,}",
            counts.seconds,
        )
        if self.timeframe == "1m":
            self._roll_up(conn, version.session)
        return self._result(version, "loaded", counts)

    def _result(
        self, version: FileVersion, action: Literal["loaded", "current"], counts: LoadCounts
    ) -> LoadResult:
        return {
            "session": version.session.isoformat(),
            "dataset": self.dataset,
            "timeframe": self.timeframe,
            "action": action,
            "rows_read": counts.rows_read,
            "rows_loaded": counts.rows_loaded,
            "rows_quarantined": counts.rows_quarantined,
            "key": version.key,
            "etag": version.etag,
        }

    def _replace(self, conn: Connection, version: FileVersion, path: Path, run_id: str | None) -> LoadCounts:
        """Load one local copy; a copy found corrupt is deleted (the next read fetches it again)."""
        from marketbars.massive.csv_reader import CorruptFlatFileError, FlatFileReader, HeaderDriftError
        from marketbars.warehouse import file_loads

        reader = FlatFileReader(
            path,
            dataset=self.dataset,
            timeframe=self.timeframe,
            session=version.session,
            symbols=self.symbols,
            source=f"{self._url(version.key)} (ETag {version.etag})",
        )
        try:
            return file_loads.replace_session(conn, version, self.symbols, reader, run_id)
        except HeaderDriftError as exc:
            raise AirflowFailException(str(exc)) from exc
        except CorruptFlatFileError:
            path.unlink(missing_ok=True)
            raise

    def _roll_up(self, conn: Connection, session: dt.date) -> None:
        from marketbars.warehouse import rollup_rebuilds

        counts = rollup_rebuilds.rebuild_rollups(conn, self.dataset, session, self.symbols)
        self.log.info(
            "%s: derived bars rebuilt from %s regular-session 1m bars: %s, in %.2f s",
            session,
            f"{counts.minute_bars:,}",
            ", ".join(f"{tf} {n:,}" for tf, n in counts.derived_bars.items()),
            counts.seconds,
        )

    def _local_copy(self, version: FileVersion, path: Path) -> Path:
        """The downloaded file, fetched again when this worker does not have it."""
        from marketbars.massive.s3_hook import FlatFileAccessError, MassiveFlatFilesHook

        if path.is_file() and path.stat().st_size == version.size:
            return path
        self.log.info("%s is not on this worker: fetching it again", path)
        hook = MassiveFlatFilesHook(aws_conn_id=self.aws_conn_id, bucket=self.bucket)
        try:
            return hook.fetch(version, Path(self.download_dir))[0]
        except FlatFileAccessError as exc:  # credentials or configuration: no retry can change it
            raise AirflowFailException(str(exc)) from exc
