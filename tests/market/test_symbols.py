import pytest

from marketbars.market.symbols import symbol_problems


@pytest.mark.parametrize(
    ("dataset", "symbols"),
    [
        ("stocks", ["AAPL", "BRK.B", "NA", "F"]),
        ("indices", ["I:SPX", "I:VIX", "I:NDX"]),
        ("options", ["O:SPY251219C00650000", "O:AAPL240315P00170000"]),
        ("stocks", ["*"]),
        ("stocks", []),
    ],
)
def test_valid_selections(dataset: str, symbols: list[str]) -> None:
    assert symbol_problems(dataset, symbols) == []


def test_symbol_problems_explain_what_is_wrong() -> None:
    problems = symbol_problems("stocks", ["aapl", "I:SPX", "MSFT", "MSFT"])
    assert problems == [
        "'aapl' is not in the vendor's stocks ticker form (AAPL, BRK.B) (did you mean 'AAPL'?)",
        "'I:SPX' is not in the vendor's stocks ticker form (AAPL, BRK.B)",
        "symbols listed more than once: MSFT",
    ]
    assert symbol_problems("indices", ["SPX"]) == [
        "'SPX' is not in the vendor's indices ticker form (I:SPX, I:VIX)"
    ]
    assert symbol_problems("options", ["O:SPY25C650"]) != []
    assert symbol_problems("stocks", ["*", "AAPL"]) == ['"*" selects every ticker and must be alone']
