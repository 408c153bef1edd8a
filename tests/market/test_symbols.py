import pytest

from marketbars.market.symbols import MAX_SYMBOLS, symbol_problems


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


def test_a_ticker_must_match_its_form_whole_and_a_selection_has_a_size() -> None:
    assert symbol_problems("stocks", ["AAPL\n"]) == [
        "'AAPL\\n' is not in the vendor's stocks ticker form (AAPL, BRK.B) (did you mean 'AAPL'?)"
    ]
    assert symbol_problems("indices", ["I:SPX\n"]) != [] and symbol_problems("stocks", ["AAPL "]) != []
    assert symbol_problems("stocks", [f"A{i}" for i in range(MAX_SYMBOLS)]) == []
    assert symbol_problems("stocks", [f"A{i}" for i in range(MAX_SYMBOLS + 1)]) == [
        f'{MAX_SYMBOLS + 1} symbols: one run takes at most {MAX_SYMBOLS}; ["*"] selects every ticker'
    ]
    # Without an asset class, each ticker is judged by its own form's.
    assert symbol_problems(None, ["AAPL", "I:SPX", "O:SPY251219C00650000"]) == []
    assert symbol_problems(None, ["I:SPX\n"]) == [
        "'I:SPX\\n' is not in the vendor's indices ticker form (I:SPX, I:VIX) (did you mean 'I:SPX'?)"
    ]
