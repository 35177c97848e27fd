"""The model card: a markdown page for the registry description and for README.md inside the logged model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from newscat.evaluation.checks import AG_NEWS_TOPICS
from newscat.redaction import redact_url

SERVE_AND_QUERY = """\
```bash
mlflow models serve -m "models:/{name}@champion" --env-manager local --port 5000
curl -s localhost:5000/invocations -H 'Content-Type: application/json' \\
  -d '{{"inputs": ["Stocks rally as oil prices fall"]}}'
```
Each row of the answer holds `label`, `score` (its probability), `probabilities` (every class) and `truncated`
(true when the text had more than {max_length} tokens and only the first {max_length} were read)."""


@dataclass(frozen=True)
class CardFacts:
    """What the card tells; gathered by the pipeline when a model is registered."""

    registered_model: str
    base_model: str
    data_source: str
    label_names: tuple[str, ...]
    split_rows: Mapping[str, int]  # trials' train, refit train, validation, test
    digests: Mapping[str, str]
    params: Mapping[str, Any]
    study: str
    trial: int
    metrics: Mapping[str, float]  # test metrics
    per_class: pd.DataFrame
    max_length: int
    serving: str = ""  # the accuracy gate's table of serving paths (markdown)
    lexical: str = ""  # the lexical companion's comparison with the encoder (markdown; empty: not tried)
    # What the test scores are of: the served model (the encoder on its default path, mixed with the companion)
    served: str = ""


def model_card(facts: CardFacts) -> str:
    """Markdown: what the model is, what it was trained and scored on, how well, its limits, how to use it.

    It travels with the model and into the registry, so no password of a URL (a data source, a base model) is in it.
    """
    return redact_url(_card(facts))


def _card(facts: CardFacts) -> str:
    rows = ", ".join(f"{split} {count:,}" for split, count in facts.split_rows.items())
    digests = ", ".join(f"{split} `{digest}`" for split, digest in facts.digests.items())
    params = "\n".join(f"| `{k}` | {_fmt(v)} |" for k, v in facts.params.items())
    headline = {k: facts.metrics[k] for k in ("accuracy", "macro_f1", "ece") if k in facts.metrics}
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in headline.items())
    per_class = "\n".join(
        f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |"
        for r in facts.per_class.to_dict("records")
    )
    words = _words(facts)
    return f"""# {facts.registered_model}: {words.title}

Fine-tuned **{facts.base_model}** (BERT family) to sort {words.texts} into {len(facts.label_names)} {words.classes}:
{", ".join(facts.label_names)}. Trained with the hyper-parameters of trial {facts.trial} of Optuna study
`{facts.study}`.

## Data
- Source: `{facts.data_source}`
- Rows: {rows}
- Digests (MLflow dataset digests): {digests}
- Texts are cut to {facts.max_length} tokens.

## Hyper-parameters
| parameter | value |
| --- | --- |
{params}

## Test results
Scores of the served model{_served(facts.served)} on the test split, which chose nothing.

| metric | value |
| --- | --- |
{metrics}

| class | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
{per_class}

The study's run (the version's `parent_run_id` tag) holds the confusion matrix, the reliability diagram and the
most confident mistakes under `evaluation/`.
{_lexical_section(facts.lexical)}
## Serving paths
Each fast path was scored beside torch fp32 on the validation rows and on training texts (never on the test split);
it may be the default only if its labels agree with torch fp32's on at least 99.5% of those texts and it loses at
most 0.3 points of validation accuracy. The fastest path that passed is the default, and the model serves it wherever
this hardware can; `NEWSCAT_BACKEND` (auto, torch, onnx), `NEWSCAT_PRECISION` (auto, fp32, bf16, int8) and
`NEWSCAT_DEVICE` (auto, cpu, cuda) override it (the server's log says so). The test scores above are the served
model's: {facts.served or "the default path"}.

{facts.serving or "Served by torch (fp32; bf16 where the hardware runs it natively)."}

## Intended use
{words.use}

## Known limits
- Only these {len(facts.label_names)} {words.classes}: any text gets one of them, also text that fits none (the score
  says how sure the model is, not whether the list fits).
- {words.domain}
- Texts longer than {facts.max_length} tokens are truncated; only their beginning counts.
- {words.overlap}

## Serve and query
{SERVE_AND_QUERY.format(name=facts.registered_model, max_length=facts.max_length)}
"""


@dataclass(frozen=True)
class _Words:
    """The card's wording for the model's label set."""

    title: str
    texts: str
    classes: str
    use: str
    domain: str
    overlap: str


def _words(facts: CardFacts) -> _Words:
    """AG News' four topics get the news wording; any other label set (2 sentiment classes, 20 newsgroups) gets
    wording that claims nothing about news."""
    if set(facts.label_names) == set(AG_NEWS_TOPICS):
        return _Words(
            title="news topic classifier",
            texts="news",
            classes="topics",
            use="Routing and tagging English news headlines and short articles into the topics above, where an "
            "occasional wrong\ntopic is acceptable and a person can correct it.",
            domain="Trained on news wire text (AG News style, mostly 2004-2005): newer events, other genres (social "
            "media, opinion)\n  and other languages score worse.",
            overlap="Topics overlap (Business vs Sci/Tech, World vs Business): most confusions lie there.",
        )
    return _Words(
        title=f"text classifier ({len(facts.label_names)} classes)",
        texts="texts",
        classes="classes",
        use="Sorting texts like its training data into the classes above, where an occasional wrong class is "
        "acceptable and a\nperson can correct it.",
        domain=f"Trained on `{facts.data_source}` only: texts unlike it (other sources, genres, periods, languages) "
        "score worse.",
        overlap="Classes that overlap take most confusions: the confusion matrix under `evaluation/` shows which.",
    )


def _served(served: str) -> str:
    return f" ({served})" if served else ""


def _lexical_section(table: str) -> str:
    if not table:
        return ""
    return f"""
## Lexical companion
{table}
"""


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
