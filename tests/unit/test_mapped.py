from marketbars.mapped import outputs

LOAD = [{"session": "2024-03-05", "action": "loaded"}]


def test_many_instances_come_as_a_sequence() -> None:
    assert outputs([LOAD, LOAD], each=list) == [LOAD, LOAD]
    assert outputs(iter([{"symbol": "A"}, {"symbol": "B"}]), each=dict) == [{"symbol": "A"}, {"symbol": "B"}]


def test_a_single_instance_comes_bare() -> None:
    assert outputs(LOAD, each=list) == [LOAD]
    assert outputs({"symbol": "A"}, each=dict) == [{"symbol": "A"}]


def test_no_instance_comes_as_nothing() -> None:
    assert outputs(None, each=list) == [] and outputs([], each=list) == [] and outputs(None, each=dict) == []
