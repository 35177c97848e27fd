"""The model card travels with the model and into the registry: no password of a URL in it."""

from __future__ import annotations

import pandas as pd

from newscat.evaluation.card import CardFacts, model_card


def test_the_card_names_a_url_source_without_its_password() -> None:
    per_class = pd.DataFrame([{"class": "World", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}])
    card = model_card(
        CardFacts(
            registered_model="newscat",
            base_model="https://hub:tok3n@models.example/bert",
            data_source="https://reader:s3cret@data.example/news.csv?password=s3cret2",
            label_names=("World",),
            split_rows={"test": 2},
            digests={"test": "d1"},
            params={"learning_rate": 1e-4},
            study="s",
            trial=0,
            metrics={"accuracy": 1.0},
            per_class=per_class,
            max_length=64,
        )
    )
    assert "- Source: `https://reader:***@data.example/news.csv?password=***`" in card
    assert "**https://hub:***@models.example/bert**" in card
    assert not any(secret in card for secret in ("s3cret", "tok3n"))
    assert "mlflow models serve" in card and "| `learning_rate` | 0.0001 |" in card  # the rest is untouched
