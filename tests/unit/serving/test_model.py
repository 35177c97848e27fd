from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from transformers import PreTrainedTokenizerBase

from newscat.serving.inputs import MAX_BATCH_ENV, max_batch, texts_from


def test_accepts_frames_mappings_series_and_lists() -> None:
    assert texts_from(pd.DataFrame({"text": ["a", "b"]})) == ["a", "b"]
    assert texts_from({"text": np.array(["a", ""])}) == ["a", ""]  # {"inputs": {"text": [...]}} as parsed
    assert texts_from(pd.Series(["a"])) == ["a"]
    assert texts_from(["a", "b"]) == ["a", "b"]
    assert texts_from(np.array("one headline")) == ["one headline"]  # {"inputs": "one headline"}
    assert all(type(t) is str for t in texts_from(np.array(["a", "b"])))


@pytest.mark.parametrize(
    ("model_input", "message"),
    [
        (pd.DataFrame({"txt": ["a"]}), "input needs a column named 'text'; got 'txt'; send JSON such as"),
        (pd.DataFrame({"text": ["a"], "id": [1]}), "unexpected column\\(s\\) 'id': the model reads only 'text'"),
        (pd.DataFrame({"text": ["a", None]}), "row 1 is null"),
        (pd.DataFrame({"text": ["a", float("nan")]}), "row 1 is null"),
        ({"text": np.array([1, 2])}, "row 0 is the int64 1"),
        ({"text": np.array([True])}, "row 0 is the boolean True"),
        ({"body": np.array(["a"])}, "needs a column named 'text'; got 'body'"),
        (np.array([["a"], ["b"]]), "flat list of strings, got a 2-D array"),
        ([{"x": {"y": 1}}], "row 0 is a nested dict"),
        (["a", ["b", "c"]], "row 1 is a nested list"),
        (42, "unsupported input type int"),
    ],
)
def test_bad_input_is_an_invalid_parameter_that_says_what_to_send(model_input: object, message: str) -> None:
    with pytest.raises(MlflowException, match=message) as info:
        texts_from(model_input)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.get_http_status_code() == 400


@pytest.mark.parametrize(
    ("value", "serving", "expected"), [("", "true", 1024), ("7", "true", 7), ("7", "", 7), ("", "", None)]
)
def test_max_batch_applies_behind_the_scoring_server_or_when_set(
    monkeypatch: pytest.MonkeyPatch, value: str, serving: str, expected: int | None
) -> None:
    monkeypatch.setenv(MAX_BATCH_ENV, value)
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", serving)
    assert max_batch(1024) == expected


def test_a_bad_max_batch_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BATCH_ENV, "lots")
    with pytest.raises(MlflowException, match="NEWSCAT_MAX_BATCH='lots': give a whole number"):
        max_batch()


def test_long_texts_are_cut_to_max_length_and_flagged(tokenizer: PreTrainedTokenizerBase) -> None:
    from newscat.data.text import encode_truncating

    exact = "one two three four five six"  # [CLS] + 6 words + [SEP] = 8 tokens
    texts = [exact, exact + " seven", "x " * 10_000, "", "\u200b\u202e\x00 \U0001f680"]
    ids, truncated = encode_truncating(tokenizer, texts, 8, max_chars=100)
    assert truncated == [False, True, True, False, False]
    assert [len(row) for row in ids[:3]] == [8, 8, 8]
    assert ids[1][-1] == tokenizer.sep_token_id and ids[1][:7] == ids[0][:7]


def test_batcher_merges_concurrent_requests_and_keeps_their_order() -> None:
    import threading
    import time

    import numpy as np

    from newscat.serving.batching import Batcher

    calls: list[int] = []

    def slow_identity(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        time.sleep(0.05)  # a busy model: requests pile up meanwhile
        return np.array([[float(t)] for t in texts])

    batcher = Batcher(slow_identity)
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

    from newscat.serving.batching import Batcher

    def picky(texts: list[str]) -> np.ndarray:
        if "bad" in texts:
            raise ValueError("boom")
        return np.zeros((len(texts), 1))

    batcher = Batcher(picky)
    with pytest.raises(ValueError, match="boom"):
        batcher.submit(["bad"])
    assert batcher.submit(["good"]).shape == (1, 1)


def test_one_bad_request_in_a_merged_pass_fails_alone() -> None:
    """Requests merged into one pass: the pass fails, is rerun request by request, and only the bad one errs."""
    import numpy as np

    from newscat.serving.batching import Batcher

    calls: list[int] = []

    def picky(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        time.sleep(0.05)
        if "bad" in texts:
            raise ValueError("boom")
        return np.array([[float(len(t))] for t in texts])

    batcher = Batcher(picky)
    outcomes: dict[int, object] = {}

    def client(i: int) -> None:
        try:
            outcomes[i] = batcher.submit(["bad" if i == 3 else "x" * i]).ravel().tolist()
        except ValueError as exc:
            outcomes[i] = str(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes == {i: ("boom" if i == 3 else [float(i)]) for i in range(1, 7)}
    assert max(calls) > 1  # some requests did share a pass


def test_the_batching_thread_ends_when_idle_and_never_keeps_the_model_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import weakref

    import numpy as np

    from newscat.serving import batching

    monkeypatch.setattr(batching, "IDLE_SECONDS", 0.2)

    class Model:
        def run(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 2))

    model = Model()
    batcher = batching.Batcher(model.run)
    assert batcher.submit(["a"]).shape == (1, 2) and batcher.running
    deadline = time.monotonic() + 5
    while batcher.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not batcher.running  # idle: the thread ended
    assert batcher.submit(["b", "c"]).shape == (2, 2)  # and starts again on demand
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the batcher's thread held no strong reference to the model


def test_weights_that_differ_from_the_logged_digest_are_refused(tmp_path) -> None:
    import json

    from newscat.export.pyfunc import export_classifier
    from newscat.serving.artifacts import SETTINGS_FILE, CorruptModelError, record_files, verify_files

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"\x08" * 4096)
    model_dir = export_classifier(checkpoint, tmp_path / "model", max_length=32, base_model="x")
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "model.onnx").write_bytes(b"\x01" * 4096)
    record_files(model_dir, ["onnx/model.onnx"])

    def settings() -> dict:
        return json.loads((model_dir / SETTINGS_FILE).read_text())

    assert set(settings()["files_sha256"]) == {"model.safetensors", "onnx/model.onnx"}
    verify_files(model_dir, settings())  # intact: no error
    with (model_dir / "onnx" / "model.onnx").open("r+b") as handle:
        handle.truncate(1000)  # a copy cut short by a kill
    with pytest.raises(CorruptModelError, match=r"model.onnx: SHA-256 .* differs from the logged .* incomplete"):
        verify_files(model_dir, settings())
    (model_dir / "onnx" / "model.onnx").unlink()
    with pytest.raises(CorruptModelError, match=r"SHA-256 missing"):
        verify_files(model_dir, settings())


def test_token_batches_keep_padded_size_within_the_budget() -> None:
    from newscat.serving.model import token_batches

    lengths = [5, 5, 6, 8, 8, 20, 40, 100, 130]
    batches = token_batches(lengths, 40, max_rows=4)
    assert [(b.start, b.stop) for b in batches] == [(0, 4), (4, 6), (6, 7), (7, 8), (8, 9)]
    assert all((b.stop - b.start) * lengths[b.stop - 1] <= 40 or b.stop - b.start == 1 for b in batches)
    assert token_batches([], 512) == []
