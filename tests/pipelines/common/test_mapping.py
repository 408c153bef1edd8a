import datetime as dt

from marketbars.pipelines.common.mapping import batch_sessions, outputs

LOAD = [{"session": "2024-03-05", "action": "loaded"}]


def test_many_instances_come_as_a_sequence() -> None:
    assert outputs([LOAD, LOAD], each=list) == [LOAD, LOAD]
    assert outputs(iter([{"symbol": "A"}, {"symbol": "B"}]), each=dict) == [{"symbol": "A"}, {"symbol": "B"}]


def test_a_single_instance_comes_bare() -> None:
    assert outputs(LOAD, each=list) == [LOAD]
    assert outputs({"symbol": "A"}, each=dict) == [{"symbol": "A"}]


def test_no_instance_comes_as_nothing() -> None:
    assert outputs(None, each=list) == [] and outputs([], each=list) == [] and outputs(None, each=dict) == []


def test_batch_sessions_is_one_per_instance_when_it_fits() -> None:
    days = [dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(7)]
    assert batch_sessions(days, max_instances=7) == [[d.isoformat()] for d in days]
    assert batch_sessions(days, max_instances=3) == [
        [d.isoformat() for d in days[0:3]], [d.isoformat() for d in days[3:6]], [days[6].isoformat()],
    ]  # fmt: skip
