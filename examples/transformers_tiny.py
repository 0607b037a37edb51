"""A tiny BERT, randomly initialised from a config, fine-tuned by the Hugging Face ``Trainer``
under a trial: nothing is downloaded, so it runs offline in seconds on a CPU.

The task is scikit-learn's bundled digits read as text: each 8x8 image is pooled to 4x4 and
read row by row as 16 tokens, one per ink level (0-16), after a ``[CLS]`` token whose final
state the classifier reads. :class:`tuneyard.integrations.transformers.TuneyardCallback`
reports ``eval_loss`` (and ``eval_accuracy``) after each epoch's evaluation, stops training
when the service pauses or stops the trial, and keeps the Trainer's own checkpoint on a pause,
which a promoted trial resumes from on whichever worker runs it. Hyperparameters: ``lr``,
``hidden`` (the model width), ``layers``, ``schedule`` (the learning rate's decay: linear or
cosine), ``weight_decay``, ``batch_size``.

    pip install 'tuneyard[transformers]'
    tuneyard study create -f examples/transformers_study.yaml
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from tuneyard.integrations.transformers import TuneyardCallback

# The study's max_resource: every job's Trainer plans its schedule over the same epochs.
MAX_EPOCHS = 9
LEVELS = 17  # ink levels 0..16 are tokens 0..16
CLS = LEVELS  # the token whose final state the classifier reads
PAD = LEVELS + 1  # BertConfig's pad_token_id; no sequence needs padding


@lru_cache(maxsize=1)
def _arrays() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    pooled = x.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).round().astype(np.int64)
    tokens = np.concatenate([np.full((len(x), 1), CLS), pooled.reshape(-1, 16)], axis=1)
    return tuple(train_test_split(tokens, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


class DigitTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, train: bool) -> None:
        x_train, x_val, y_train, y_val = _arrays()
        self.x = torch.tensor(x_train if train else x_val)
        self.y = torch.tensor(y_train if train else y_val)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def build(params: dict[str, Any], seed: int) -> BertForSequenceClassification:
    hidden = int(params.get("hidden", 32))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=LEVELS + 2,
        pad_token_id=PAD,
        hidden_size=hidden,
        num_hidden_layers=int(params.get("layers", 2)),
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=10,
    )
    return BertForSequenceClassification(config)


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def fit(trial: Any, callbacks: tuple[Any, ...] = ()) -> float | None:
    """Train over the trial's epochs; returns the last ``eval_loss`` reported. ``callbacks``
    run before tuneyard's, and may add to the metrics it reports."""
    p = trial.params
    args = TrainingArguments(
        # The Trainer writes its checkpoint here before the callback moves it into the
        # trial's checkpoint; inside the job's directory, it goes when the job does.
        output_dir=os.fspath(trial.checkpoint_dir / "trainer"),
        num_train_epochs=MAX_EPOCHS,
        eval_strategy="epoch",
        save_strategy="no",  # the callback asks for the checkpoints a trial needs
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        learning_rate=float(p.get("lr", 5e-3)),
        lr_scheduler_type=str(p.get("schedule", "linear")),
        weight_decay=float(p.get("weight_decay", 0.0)),
        per_device_train_batch_size=int(p.get("batch_size", 64)),
        per_device_eval_batch_size=512,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=trial.number,
    )
    callback = TuneyardCallback(trial, monitor="eval_loss")
    trainer = Trainer(
        model=build(p, trial.number),
        args=args,
        train_dataset=DigitTokens(train=True),
        eval_dataset=DigitTokens(train=False),
        compute_metrics=accuracy,
        callbacks=[*callbacks, callback],
    )
    return callback.train(trainer)


def train(trial: Any) -> float | None:
    return fit(trial)
