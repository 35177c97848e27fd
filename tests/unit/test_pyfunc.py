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
