"""Which flat files the vendor has published: the one place the flat-file-or-REST question is asked
of the bucket, and the one place a missing ``massive_s3`` connection means "REST only"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping

from marketbars import settings
from marketbars.massive.flatfiles import object_key

ObjectExists = Callable[[str, str, dt.date], bool]  # (dataset, timeframe, session) -> published
REST_ONLY = (
    "no massive_s3 connection is configured: every session goes through the REST API "
    "(configure massive_s3 to load history from the flat files)"
)


def published_files(datasets: Iterable[str], sessions: Iterable[dt.date]) -> dict[str, str] | None:
    """key -> ETag of the flat files of these datasets in the sessions' months (one LIST per dataset,
    timeframe and month); None when no ``massive_s3`` connection is configured (``REST_ONLY``).
    A refusal no retry can change (credentials, endpoint, bucket) fails the task at once."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

    from marketbars.massive.s3_hook import FlatFileAccessError, MassiveFlatFilesHook

    hook = MassiveFlatFilesHook(bucket=settings.BUCKET.get())
    try:
        hook.get_connection(hook.aws_conn_id)
    except AirflowNotFoundException:
        return None
    try:
        return hook.published(datasets, sessions)
    except FlatFileAccessError as exc:
        raise AirflowFailException(str(exc)) from exc


def exists_in(published: Mapping[str, str] | None) -> ObjectExists | None:
    """The rules' view of a listing: whether a session's file is out; None for REST only."""
    if published is None:
        return None
    return lambda dataset, timeframe, session: object_key(dataset, timeframe, session) in published
