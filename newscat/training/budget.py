"""A wall-clock budget for the whole job: trials stop in time to leave room for the refit and the test scoring."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Scoring a text costs a fraction of training on it: a forward pass only, in length-sorted batches. Measured on the
# 2-core AMD EPYC (2026-11-27): the gate's torch fp32 pass scored 118 test texts/s while the refit trained 50 samples/s
# in bf16, 2.4x; ONNX fp32 and int8 scored 144 and 220 texts/s, so three passes priced at 2.5x cover all three. Used
# only until `scoring_speed` has measured the torch fp32 pass itself: in fp32 training the ratio is nearer 5x.
INFERENCE_SPEEDUP = 2.5
SPEED_SAMPLE = 256  # validation texts `scoring_speed` times (a few seconds), after one warm-up batch
# Passes over the test split at release: the accuracy gate scores torch fp32, ONNX int8 and ONNX fp32, the lexical
# companion scores it once (the ONNX and companion passes are faster than fp32: 3 fp32 passes cover them).
TEST_PASSES = 3
# Logging the models, exporting and quantizing the ONNX graphs, fitting the lexical companion (44 s on 9,928 rows,
# AMD EPYC, measured while another job shared the cores), registering: seconds, whatever the data size.
FIXED_OVERHEAD_S = 120.0


@dataclass
class Budget:
    """Seconds for the whole job (None: no limit), and the training throughput measured so far."""

    seconds: float | None
    started: float = field(default_factory=time.monotonic)
    samples_per_second: float | None = None
    # Texts/s of the release's slowest scoring pass (torch fp32), as measured on this machine (None: not yet).
    scoring_per_second: float | None = None
    _measured_on: int = 0  # samples behind the current estimate

    def observe(self, samples_per_second: float | None, samples: int) -> None:
        """Record a trial's throughput; the trial that trained the most samples gives the estimate.

        Short (pruned) trials understate it: model copy and Trainer set-up weigh more in them.
        """
        if samples_per_second and samples_per_second > 0 and samples >= self._measured_on:
            self.samples_per_second, self._measured_on = samples_per_second, samples

    @property
    def deadline(self) -> float | None:
        """The `time.monotonic()` value at which the job must be done."""
        return None if self.seconds is None else self.started + self.seconds

    def left(self) -> float | None:
        """Seconds left (None: no limit)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def tuning_deadline(self, refit_samples: float, test_rows: int) -> float | None:
        """When trials must stop so that a refit on `refit_samples` and scoring `test_rows` still fit.

        Before any throughput is known, trials may use half of the budget.
        """
        if self.deadline is None:
            return None
        if self.samples_per_second is None:
            return self.started + self.seconds / 2
        return self.deadline - self._seconds_for(refit_samples, test_rows)

    def tuning_over(self, refit_samples: float, test_rows: int) -> bool:
        """Whether no further trial should start."""
        deadline = self.tuning_deadline(refit_samples, test_rows)
        return deadline is not None and time.monotonic() >= deadline

    def affordable_samples(self, test_rows: int) -> float | None:
        """Training samples that still fit before the deadline with the test scoring after them (None: any)."""
        left = self.left()
        if left is None or self.samples_per_second is None:
            return None
        return max(0.0, (left - self._seconds_for(0, test_rows)) * self.samples_per_second)

    def training_deadline(self, test_rows: int) -> float | None:
        """When the last training (the refit) must stop so that scoring `test_rows` still fits."""
        if self.deadline is None:
            return None
        return self.deadline - self._seconds_for(0, test_rows)

    def _seconds_for(self, train_samples: float, test_rows: int) -> float:
        speed = self.samples_per_second or 1.0
        scoring = self.scoring_per_second or speed * INFERENCE_SPEEDUP
        return train_samples / speed + TEST_PASSES * test_rows / scoring + FIXED_OVERHEAD_S


def scoring_speed(model: PreTrainedModel, token_ids: Sequence[Sequence[int]], pad_id: int) -> float | None:
    """Texts/s of `model` scoring up to SPEED_SAMPLE of `token_ids` as the release's torch fp32 pass does (eval mode,
    no gradients, length-sorted batches of 64): the slowest of its passes over the test split. None: no texts."""
    import torch

    ids = sorted(token_ids[:SPEED_SAMPLE], key=len)
    batches = [ids[start : start + 64] for start in range(0, len(ids), 64)]
    if not batches:
        return None

    def forward(batch: list[Sequence[int]]) -> None:
        width = max(len(row) for row in batch)
        padded = torch.tensor([list(row) + [pad_id] * (width - len(row)) for row in batch])
        model(input_ids=padded, attention_mask=(padded != pad_id).long())

    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            forward(batches[0])  # warm-up: the first pass allocates
            started = time.perf_counter()
            for batch in batches:
                forward(batch)
            seconds = time.perf_counter() - started
    finally:
        model.train(training)
    return len(ids) / seconds if seconds > 0 else None
