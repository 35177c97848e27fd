"""Weight averaging for the refit: the best evaluation's checkpoint, the tail average newscat uses, and exponential
moving averages (EMA) of the weights, all taken from one training run. Prints JSON.

One run of the refit's training: newscat's first-trial params (lr 1e-4, batch 32, warm-up 0.1, weight decay 0.01)
for `--epochs` epochs on every training row but the validation ones, every other default (frozen layers read from
the cache, dropout off, mean pooling), `--precision`, evaluated `--evals-per-epoch` times per epoch. Candidates:
- `best_checkpoint`: the best evaluation's weights (what the Trainer keeps),
- `tail_average`: the mean of the weights at the evaluations of the second half (`train.average_weights`),
- `ema_D`: an EMA of the trainable weights after every optimizer step, decay D, bias-corrected.
Each is scored on the validation rows (which pick, as the job would) and on the test split (which only measures), by
the same evaluator as benchmarks/train_throughput.py: fp32, length-sorted batches of 64.

    python benchmarks/weight_averaging.py --data ../shared/data/ag_news --precision fp32 --decays 0.99,0.995,0.998
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from provenance import provenance
from train_throughput import accuracy
from transformers import TrainerCallback

from newscat.config import build_config
from newscat.data.tokenize import tokenize_rows
from newscat.training.inputs import prepare
from newscat.training.trainer import TailAverage, TrialParams, train_classifier


class MovingAverage(TrainerCallback):
    """An EMA of the trainable weights, updated after every optimizer step and bias-corrected (as Adam's moments):
    the sum starts at zero and is divided by 1 - decay^steps, so every step's weights count by decay^age alone. (The
    usual warm-up, min(decay, (1+t)/(10+t)), would cap a 600-step refit's decay at 0.986 whatever decay is asked.)"""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.total: dict[str, torch.Tensor] | None = None
        self.steps = 0

    @torch.no_grad()
    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if self.total is None:
            self.total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in trainable.items()}
        for name, parameter in trainable.items():
            self.total[name].lerp_(parameter.detach().float(), 1 - self.decay)
        self.steps += 1

    @property
    def shadow(self) -> dict[str, torch.Tensor] | None:
        """The averaged weights (None: no step yet)."""
        if self.total is None:
            return None
        correction = 1 - self.decay**self.steps
        return {name: total / correction for name, total in self.total.items()}


@torch.no_grad()
def load_weights(model: Any, weights: dict[str, torch.Tensor]) -> None:
    for name, parameter in model.named_parameters():
        if name in weights:
            parameter.copy_(weights[name].to(parameter.dtype))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ag_news")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--decays", default="0.99,0.995,0.998")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = build_config(
        overrides={
            "data.source": args.data,
            "data.max_train_samples": 0,  # every row, as the refit
            "train.precision": args.precision,
            "train.evals_per_epoch": args.evals_per_epoch,
        }
    )
    inputs = prepare(cfg)
    cfg = inputs.cfg  # frozen layers and pooling resolved
    params = TrialParams(learning_rate=1e-4, batch_size=32, epochs=args.epochs, warmup_ratio=0.1, weight_decay=0.01)
    model = inputs.base.fresh(cfg.seed)
    tail = TailAverage()
    emas = {f"ema_{d}": MovingAverage(float(d)) for d in args.decays.split(",")}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="newscat-averaging-") as tmp:
        result = train_classifier(
            model,
            inputs.tokenizer,
            inputs.tokenized,
            params,
            cfg.train,
            output_dir=Path(tmp),
            seed=cfg.seed,
            callbacks=[tail, *emas.values()],
            prefix_cache=inputs.base.prefix_cache(cfg.train.frozen_layers),
        )
    train_seconds = time.perf_counter() - began
    best = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    candidates = {"best_checkpoint": best, "tail_average": tail.averaged(), **{k: e.shadow for k, e in emas.items()}}
    test = tokenize_rows(inputs.tokenizer, inputs.data.test, cfg.model.max_length)
    scores = {}
    for name, weights in candidates.items():
        if weights is None:
            continue
        load_weights(model, weights)
        scores[name] = {
            "val_accuracy": round(accuracy(model, inputs.tokenizer, inputs.tokenized["validation"]), 4),
            "test_accuracy": round(accuracy(model, inputs.tokenizer, test), 4),
        }
        print(json.dumps({name: scores[name]}), flush=True)
    picked = max(scores, key=lambda k: scores[k]["val_accuracy"])  # ties: the first, the plainer candidate
    report = {
        "benchmark": "weight_averaging",
        **provenance(),
        "settings": {**vars(args), "params": dataclasses.asdict(params), "frozen_layers": cfg.train.frozen_layers},
        "rows": {"train": len(inputs.tokenized["train"]), "validation": len(inputs.data.validation), "test": len(test)},
        "train_seconds": round(train_seconds, 1),
        "best_epoch": result.best_epoch,
        "candidates": scores,
        "picked_on_validation": picked,
        "test_delta_points_vs_best_checkpoint": {
            k: round(100 * (v["test_accuracy"] - scores["best_checkpoint"]["test_accuracy"]), 2)
            for k, v in scores.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
