"""The model card: a markdown page for the registry description and for README.md inside the logged model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

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


def model_card(facts: CardFacts) -> str:
    """Markdown: what the model is, what it was trained and scored on, how well, its limits, how to use it."""
    rows = ", ".join(f"{split} {count:,}" for split, count in facts.split_rows.items())
    digests = ", ".join(f"{split} `{digest}`" for split, digest in facts.digests.items())
    params = "\n".join(f"| `{k}` | {_fmt(v)} |" for k, v in facts.params.items())
    headline = {k: facts.metrics[k] for k in ("accuracy", "macro_f1", "ece") if k in facts.metrics}
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in headline.items())
    per_class = "\n".join(
        f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |"
        for r in facts.per_class.to_dict("records")
    )
    return f"""# {facts.registered_model}: news topic classifier

Fine-tuned **{facts.base_model}** (BERT family) to sort news into {len(facts.label_names)} topics:
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
Each fast path was scored on the test split beside torch fp32; it may be the default only if it agrees on at least
99.5% of the labels and loses at most 0.3 points of accuracy. `NEWSCAT_BACKEND` (auto, torch, onnx),
`NEWSCAT_PRECISION` (auto, fp32, bf16, int8) and `NEWSCAT_DEVICE` (auto, cpu, cuda) override the default.

{facts.serving or "Served by torch (fp32; bf16 where the hardware runs it natively)."}

## Intended use
Routing and tagging English news headlines and short articles into the topics above, where an occasional wrong
topic is acceptable and a person can correct it.

## Known limits
- Only these {len(facts.label_names)} topics: any text gets one of them, also text that fits none (the score says
  how sure the model is, not whether the topic list fits).
- Trained on news wire text (AG News style, mostly 2004-2005): newer events, other genres (social media, opinion)
  and other languages score worse.
- Texts longer than {facts.max_length} tokens are truncated; only their beginning counts.
- Topics overlap (Business vs Sci/Tech, World vs Business): most confusions lie there.

## Serve and query
{SERVE_AND_QUERY.format(name=facts.registered_model, max_length=facts.max_length)}
"""


def _lexical_section(table: str) -> str:
    if not table:
        return ""
    return f"""
## Lexical companion
{table}
"""


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
