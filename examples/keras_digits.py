"""A small Keras 3 network on scikit-learn's bundled digits, one report per epoch.

Hyperparameters: ``lr``, ``units``, ``dropout`` and ``batch_size``; reports ``val_loss``
(the validation split's cross-entropy) after every epoch, with ``loss``, ``accuracy`` and
``val_accuracy`` beside it. A paused trial's model (weights and optimizer state) is saved in
Keras' own ``.keras`` format and a promotion goes on from it, on this worker or another
(see :mod:`tuneyard.integrations.keras`).

    pip install 'tuneyard[keras]' torch
    KERAS_BACKEND=torch tuneyard worker ...    # the worker's environment picks the backend
    tuneyard study create -f examples/keras_study.yaml

Any Keras backend works; the model is plain Dense layers. On a 2-core machine with the torch
backend an epoch takes about 0.1 s.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

METRIC = "val_loss"


@lru_cache(maxsize=1)
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], split 75/25 (stratified, random_state=0): x_train, x_val,
    y_train, y_val."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, x_val, y_train, y_val


def build(params: dict[str, Any], seed: int) -> Any:
    """A compiled two-layer network, its initial weights seeded from ``seed``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(int(params.get("units", 32)), activation="relu"),
            keras.layers.Dropout(float(params.get("dropout", 0.0))),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(float(params.get("lr", 1e-3))),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def objective(trial: Any) -> float | None:
    """Fit the job's epochs, resuming from the paused model when there is one."""
    from tuneyard.integrations.keras import fit, restore

    x_train, x_val, y_train, y_val = dataset()
    model = restore(trial)
    if model is None:
        model = build(trial.params, seed=trial.number)
    return fit(
        trial,
        model,
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        batch_size=int(trial.params.get("batch_size", 64)),
        monitor=METRIC,
        verbose=0,
    )
