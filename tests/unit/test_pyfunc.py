from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from newscat.pyfunc import SIGNATURE, _texts_from, pip_requirements


def test_accepts_frames_series_and_lists() -> None:
    assert _texts_from(pd.DataFrame({"text": ["a", "b"]})) == ["a", "b"]
    assert _texts_from(pd.Series(["a"])) == ["a"]
    assert _texts_from(["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("model_input", "message"),
    [
        (pd.DataFrame({"txt": ["a"]}), "input needs a column named 'text'; got txt"),
        (pd.DataFrame({"text": ["a", None]}), "row 1 is null"),
        ({"text": "a"}, "unsupported input type dict"),
    ],
)
def test_bad_input_is_an_invalid_parameter(model_input: object, message: str) -> None:
    with pytest.raises(MlflowException, match=message) as info:
        _texts_from(model_input)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_signature_names_text_in_and_label_score_probabilities_out() -> None:
    assert SIGNATURE.inputs.input_names() == ["text"]
    assert SIGNATURE.outputs.input_names() == ["label", "score", "probabilities"]


def test_requirements_are_installable_pins() -> None:
    requirements = pip_requirements()
    assert any(r.startswith("torch==") for r in requirements)
    assert all("+" not in r for r in requirements)  # no local version labels such as +cpu


def test_batcher_merges_concurrent_requests_and_keeps_their_order() -> None:
    import threading
    import time

    import numpy as np

    from newscat.pyfunc import _Batcher

    calls: list[int] = []

    def slow_identity(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        time.sleep(0.05)  # a busy model: requests pile up meanwhile
        return np.array([[float(t)] for t in texts])

    batcher = _Batcher(slow_identity)
    results: dict[int, np.ndarray] = {}

    def client(i: int) -> None:
        results[i] = batcher.submit([str(i), str(i + 0.5)])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert {i: r.ravel().tolist() for i, r in results.items()} == {i: [i, i + 0.5] for i in range(8)}
    assert sum(calls) == 16 and len(calls) < 8  # fewer forward passes than requests


def test_batcher_hands_errors_to_the_caller_and_keeps_serving() -> None:
    import numpy as np

    from newscat.pyfunc import _Batcher

    def picky(texts: list[str]) -> np.ndarray:
        if "bad" in texts:
            raise ValueError("boom")
        return np.zeros((len(texts), 1))

    batcher = _Batcher(picky)
    with pytest.raises(ValueError, match="boom"):
        batcher.submit(["bad"])
    assert batcher.submit(["good"]).shape == (1, 1)


@pytest.mark.parametrize("value", ["fp32", "bf16", "int8"])
def test_serving_precision_switch(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from newscat.pyfunc import serving_precision

    monkeypatch.setenv("NEWSCAT_PRECISION", value.upper())
    assert serving_precision() == value


def test_serving_precision_auto_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from newscat.modeling import native_bf16
    from newscat.pyfunc import serving_precision

    monkeypatch.delenv("NEWSCAT_PRECISION", raising=False)
    assert serving_precision() == ("bf16" if native_bf16() else "fp32")
    monkeypatch.setenv("NEWSCAT_PRECISION", "fp8")
    with pytest.raises(MlflowException, match="NEWSCAT_PRECISION='fp8': use auto, fp32, bf16 or int8"):
        serving_precision()
