"""The framework examples as end-to-end objectives, each telling in its reports what its job
restored: ``restored_epoch``, the epoch of the framework checkpoint the fit was loaded from
(0: it started fresh), as the framework's own loading read it.

Each imports its framework when it runs, so a worker running one never imports the other."""

from __future__ import annotations

from typing import Any


def lightning(trial: Any) -> float | None:
    from examples import lightning_digits

    class RestoredMLP(lightning_digits.DigitsMLP):
        """The example's model; Lightning calls ``on_load_checkpoint`` with the checkpoint it
        restores the fit from, and only then."""

        restored = 0

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self.restored = int(checkpoint["epoch"])

        def on_validation_epoch_end(self) -> None:
            self.log("restored_epoch", float(self.restored))

    import torch

    torch.manual_seed(trial.number)
    p = trial.params
    return lightning_digits.fit(trial, RestoredMLP(lr=float(p["lr"]), hidden=int(p["hidden"])))


def transformers(trial: Any) -> float | None:
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from examples import transformers_tiny

    class Restored(TrainerCallback):
        """At the start of training, after the Trainer loaded its checkpoint: the epoch its
        state resumes from, once the model's weights are checked to be the checkpoint's."""

        epoch = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if trial.resource_from > 0:
                folder = trial.checkpoint_dir / "trainer-checkpoint"
                saved = load_file(folder / "model.safetensors")
                weights = kw["model"].state_dict()
                if not all(torch.equal(weights[k], v) for k, v in saved.items()):
                    raise RuntimeError(f"the model's weights are not those saved in {folder}")
                self.epoch = float(state.epoch)

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            kw["metrics"]["restored_epoch"] = self.epoch

    return transformers_tiny.fit(trial, callbacks=(Restored(),))
