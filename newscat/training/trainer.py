"""One fine-tuning run with the Hugging Face Trainer. Knows nothing of MLflow or Optuna."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from transformers import TrainerCallback

from newscat.config import ConfigError, TrainConfig
from newscat.evaluation.metrics import accuracy_and_macro_f1
from newscat.serving.precision import use_bf16
from newscat.training.layer_lr import layer_lr_optimizer
from newscat.training.prefix_cache import PrefixCache, encoder_layers

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


log = logging.getLogger("newscat")


@dataclass(frozen=True)
class TrialParams:
    """The hyper-parameters one trial trains with."""

    learning_rate: float
    batch_size: int
    epochs: float  # whole epochs for trials; a refit squeezed into a time budget may run a fraction
    warmup_ratio: float
    weight_decay: float

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.epochs > 0:
            problems.append(f"epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.weight_decay >= 0.0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if problems:
            raise ConfigError("bad trial parameters: " + "; ".join(problems))

    @classmethod
    def from_values(cls, values: dict[str, Any], *, whole_epochs: bool = True) -> TrialParams:
        """From a name -> value mapping (sampled and fixed values of a search space)."""
        return cls(
            learning_rate=float(values["learning_rate"]),
            batch_size=int(values["batch_size"]),
            epochs=int(values["epochs"]) if whole_epochs else float(values["epochs"]),
            warmup_ratio=float(values["warmup_ratio"]),
            weight_decay=float(values["weight_decay"]),
        )


@dataclass
class TrainResult:
    """What a finished (or early-stopped) training run leaves behind."""

    best_metrics: dict[str, float]
    best_epoch: float | None
    best_checkpoint: Path | None
    epochs_run: float
    samples_per_second: float | None  # training throughput, evaluation time included
    samples_trained: int = 0
    stopped_at_deadline: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # Validation metrics of the weights averaged over the last half's evaluations (None: not tried), and whether
    # they beat the best evaluation and became the result.
    averaged_metrics: dict[str, float] | None = None
    averaged_kept: bool = False


def eval_every(n_rows: int, batch_size: int, evals_per_epoch: int) -> int:
    """Optimizer steps between two evaluations."""
    return max(1, math.ceil(math.ceil(n_rows / batch_size) / evals_per_epoch))


class Checkpoints(TrainerCallback):
    """Evaluate and save at the last step too (step-based evaluation misses it), and at a deadline."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # time.monotonic() value
        self.stopped_at_deadline = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline and state.global_step < state.max_steps:
            self.stopped_at_deadline = True
            control.should_training_stop = True
        if (state.global_step >= state.max_steps or self.stopped_at_deadline) and args.eval_strategy != "no":
            control.should_evaluate = True
            control.should_save = True


class TailAverage(TrainerCallback):
    """Sums the trainable weights at each evaluation in the second half of training (SWA over evaluation points:
    the learning rate decays linearly, so these weights lie around one basin and their mean often generalises
    better than any one of them)."""

    def __init__(self) -> None:
        self.total: dict[str, Any] | None = None
        self.count = 0

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None or state.global_step * 2 <= state.max_steps:
            return
        weights = {n: p.detach().float() for n, p in model.named_parameters() if p.requires_grad}
        if self.total is None:
            self.total = {n: w.clone() for n, w in weights.items()}
        else:
            for name, weight in weights.items():
                self.total[name] += weight
        self.count += 1

    def averaged(self) -> dict[str, Any] | None:
        """The mean weights (None: fewer than two evaluations to average)."""
        if self.total is None or self.count < 2:
            return None
        return {name: total / self.count for name, total in self.total.items()}


class TrainingDiverged(FloatingPointError):
    """The training loss stopped being a finite number."""


class DivergenceGuard(TrainerCallback):
    """Fails the run as soon as a logged training loss is NaN or infinite (the Trainer would go on regardless)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} at step {state.global_step} (epoch {state.epoch:.2f}) with "
                f"learning_rate {args.learning_rate:g}: lower the learning rate (search space) or use more warm-up"
            )


def describe_failure(exc: BaseException, params: TrialParams | None, max_length: int) -> str:
    """A one-line reason for a failed trial that says what to change."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _out_of_memory(exc):
        size = f"batch_size {params.batch_size}, " if params else ""
        return f"out of memory ({size}max_length {max_length}): lower batch_size or max_length. {text[:300]}"
    if isinstance(exc, (TrainingDiverged, ConfigError)):
        return text
    return f"{type(exc).__name__}: {text[:500]}"


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro-F1 from the Trainer's logits (computed offline, no metric downloads)."""
    logits, labels = eval_pred
    return accuracy_and_macro_f1(np.asarray(labels), np.asarray(logits).argmax(axis=-1))


def train_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tokenized: datasets.DatasetDict,
    params: TrialParams,
    cfg: TrainConfig,
    *,
    output_dir: Path,
    seed: int,
    callbacks: Sequence[TrainerCallback] = (),
    evaluate: bool = True,
    deadline: float | None = None,
    average: bool = False,
    prefix_cache: PrefixCache | None = None,
) -> TrainResult:
    """Train, evaluating and saving `cfg.evals_per_epoch` times per epoch; the best evaluation's checkpoint is kept.

    With `evaluate=False` it only trains (no evaluation or checkpoints), as the training benchmark does. At
    `deadline` (a `time.monotonic()` value) training stops after a last evaluation. With `average`, the mean of the
    weights at the second half's evaluations is scored on validation too, and replaces the best checkpoint if it
    scores higher. With `prefix_cache` (frozen layers only), the frozen bottom's output is read from it, computed once
    per text for every run that shares it.
    """
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    every = eval_every(len(tokenized["train"]), params.batch_size, cfg.evals_per_epoch)
    strategy = "steps" if evaluate else "no"
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=params.epochs,
        learning_rate=params.learning_rate,
        warmup_steps=params.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=params.weight_decay,
        bf16=use_bf16(cfg.precision),
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU needs it said explicitly
        eval_strategy=strategy,
        eval_steps=every,
        save_strategy=strategy,
        save_steps=every,
        logging_strategy="steps",
        logging_steps=every,
        logging_nan_inf_filter=False,  # a NaN loss must reach DivergenceGuard, not be averaged away
        save_only_model=True,  # trials are the unit of resume: no optimizer state on disk
        save_total_limit=1,
        load_best_model_at_end=evaluate,
        metric_for_best_model=cfg.metric,
        greater_is_better=True,
        report_to="none",  # newscat does its own tracking
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
        # Batches of similar lengths: with dynamic padding this halves the tokens computed on AG News.
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    checkpoints = Checkpoints(deadline)
    tail = TailAverage()
    if cfg.freeze_embeddings:  # the word-embedding matrix is half of a small BERT; its Adam update is costly
        model.get_input_embeddings().weight.requires_grad_(False)
    freeze_lower_layers(model, resolve_frozen_layers(model, cfg.frozen_layers))
    set_dropout(model, cfg.dropout)
    set_pooling(model, cfg.pooling)
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[checkpoints, DivergenceGuard(), *([tail] if average and evaluate else []), *callbacks],
        optimizers=(layer_lr_optimizer(model, args, cfg.layer_lr_decay), None),
    )
    with prefix_cache.attached(model) if prefix_cache is not None else contextlib.nullcontext():
        trainer.train()
        result = _result(trainer, stopped_at_deadline=checkpoints.stopped_at_deadline)
        averaged = tail.averaged()
        if averaged is not None:
            result = _with_average(trainer, result, averaged, output_dir)
    if prefix_cache is not None:
        log.info("%s", prefix_cache.summary())
    return result


def freeze_lower_layers(model: PreTrainedModel, count: int) -> None:
    """Keep the embeddings and the bottom `count` encoder layers at their pretrained weights: nothing below layer
    `count` needs a gradient, so backpropagation stops there (its cost and the optimizer's state for those weights
    are saved)."""
    if count == 0:
        return
    layers = check_frozen_layers(model, count)
    model.base_model.embeddings.requires_grad_(False)
    for layer in layers[:count]:
        layer.requires_grad_(False)


def set_dropout(model: PreTrainedModel, rate: float | str) -> None:
    """Give every dropout layer `rate` ("model": leave the checkpoint's rates). The model's config says so too, so
    that a saved checkpoint records the rates it was trained with."""
    import torch

    if rate == "model":
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = float(rate)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        if hasattr(model.config, name):
            setattr(model.config, name, float(rate))


def check_pooling(model: PreTrainedModel, pooling: str) -> None:
    """Fail (before any training) when `model` cannot pool its token states by `pooling`."""
    from newscat.serving.pooling import pooling_problem

    problem = pooling_problem(model, pooling)
    if problem:
        raise ConfigError(f"train.pooling: {problem}")


def resolve_pooling(model: PreTrainedModel, value: str) -> str:
    """`auto`: mean where the encoder has a pooler to feed (the BERT family), else cls; any other value, checked."""
    from newscat.serving.pooling import has_pooler

    pooling = value if value != "auto" else ("mean" if has_pooler(model) else "cls")
    check_pooling(model, pooling)
    return pooling


def set_pooling(model: PreTrainedModel, pooling: str) -> None:
    """Pool by `pooling` (newscat/serving/pooling.py); the model's config records it for every later loader."""
    from newscat.serving.pooling import apply_pooling

    apply_pooling(model, resolve_pooling(model, pooling))


AUTO_FROZEN_LAYERS = 2  # what `frozen_layers: auto` freezes (benchmarks/budget.py, 2026-12-02: 0.930 vs 0.916)
AUTO_MIN_LAYERS = 4  # ... in encoders of at least this many layers; smaller ones train every layer


def resolve_frozen_layers(model: PreTrainedModel, value: int | str) -> int:
    """The count of layers to freeze: `value`, checked against the model, or what `auto` means for it."""
    if value != "auto":
        if value:
            check_frozen_layers(model, int(value))
        return int(value)
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    return AUTO_FROZEN_LAYERS if layers is not None and len(layers) >= AUTO_MIN_LAYERS else 0


def check_frozen_layers(model: PreTrainedModel, count: int) -> Any:
    """The encoder's layers, where `count` of them can be frozen with one still training; else a ConfigError that
    says what to set (checked when the study loads the model, before any training)."""
    layers = encoder_layers(model)
    if count >= len(layers):
        raise ConfigError(
            f"frozen_layers={count}: the encoder has {len(layers)} layers; keep at least one training "
            f"(train.frozen_layers in the config file, at most {len(layers) - 1})"
        )
    return layers


def _with_average(trainer: Any, result: TrainResult, averaged: dict[str, Any], output_dir: Path) -> TrainResult:
    """Score the averaged weights on validation; keep them (saved as a checkpoint) only if they beat the best
    evaluation on the study's metric."""
    import torch

    model = trainer.model
    best = {n: p.detach().clone() for n, p in model.named_parameters() if n in averaged}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in averaged:
                parameter.copy_(averaged[name].to(parameter.dtype))
    # predict(), not evaluate(): no evaluation callbacks (metric logging, pruning) fire for this extra pass.
    scored = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval").metrics
    metrics = {k: float(v) for k, v in scored.items() if k in ("eval_loss", "eval_accuracy", "eval_macro_f1")}
    metric = trainer.args.metric_for_best_model
    result.averaged_metrics = metrics
    if metrics[metric] > result.best_metrics.get(metric, float("-inf")):
        path = output_dir / "averaged"
        trainer.save_model(str(path))
        result.best_checkpoint, result.best_metrics, result.best_epoch = path, metrics, result.epochs_run
        result.averaged_kept = True
    else:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in best:
                    parameter.copy_(best[name])
    return result


def _result(trainer: Any, *, stopped_at_deadline: bool) -> TrainResult:
    state = trainer.state
    evals = [entry for entry in state.log_history if "eval_loss" in entry]
    metric = trainer.args.metric_for_best_model
    best = max(evals, key=lambda entry: entry[metric]) if evals else {}
    checkpoint = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
    # The Trainer's own samples/s counts the planned samples, which overstates it for a stopped run.
    runtimes = [entry["train_runtime"] for entry in state.log_history if "train_runtime" in entry]
    samples = state.global_step * trainer.args.per_device_train_batch_size
    return TrainResult(
        best_metrics={k: float(v) for k, v in best.items() if k.startswith("eval_")},
        best_epoch=round(best["epoch"], 2) if best else None,
        best_checkpoint=checkpoint,
        epochs_run=round(state.epoch or 0, 2),
        samples_per_second=samples / runtimes[-1] if runtimes and runtimes[-1] > 0 else None,
        samples_trained=samples,
        stopped_at_deadline=stopped_at_deadline,
        history=list(state.log_history),
    )
