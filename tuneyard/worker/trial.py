"""The ``trial`` handle a user's objective receives.

def train(trial):
    model = trial.load() or build(trial.params)
    for epoch in trial.epochs():          # follows pauses, stops and promotions
        fit_one_epoch(model)
        trial.report(epoch, val_error=evaluate(model))
    trial.save(model)
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from tuneyard.api.schemas import ReportOut

TERMINAL = frozenset({"pause", "stop", "complete"})


class TrialStopped(RuntimeError):
    """Raised by ``report`` after the service already said pause, stop or complete."""


class Reporter(Protocol):
    def report(
        self, trial_id: int, step: float, value: float | None = None, **metrics: float | None
    ) -> ReportOut: ...


class Trial:
    def __init__(
        self,
        client: Reporter,
        study_id: int,
        trial_id: int,
        number: int,
        params: dict[str, Any],
        resource_from: float,
        resource_to: float,
        checkpoint_dir: Path,
    ) -> None:
        self.client = client
        self.study_id = study_id
        self.trial_id = trial_id
        self.number = number
        self.params = params
        self.resource_from = resource_from
        self.resource_to = resource_to
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.decision: str | None = None
        self.reason: str | None = None
        self.last_step: float | None = None
        self.last_value: float | None = None

    @property
    def should_stop(self) -> bool:
        """True once the service answered pause, stop or complete."""
        return self.decision in TERMINAL

    def report(self, step: float, value: float | None = None, **metrics: float | None) -> str:
        """Send an intermediate result; returns the decision (continue, pause, stop, complete).

        A ``continue`` whose ``resource_to`` is larger is an on-the-spot promotion: the trial
        keeps training up to the new end, which :meth:`epochs` follows."""
        if self.should_stop:
            raise TrialStopped(
                f"trial {self.trial_id} was told to {self.decision} ({self.reason}); "
                "end the objective instead of reporting again"
            )
        ans = self.client.report(self.trial_id, step, value, **metrics)
        self.decision, self.reason = ans.decision, ans.reason
        self.last_step, self.last_value = step, ans.value
        if ans.decision == "continue" and ans.resource_to is not None:
            self.resource_to = max(self.resource_to, ans.resource_to)
        return ans.decision

    def epochs(self) -> Iterator[int]:
        """Whole resource units of this job: resource_from+1, +2, … up to resource_to."""
        epoch = int(self.resource_from)
        while not self.should_stop and epoch + 1 <= self.resource_to + 1e-9:
            epoch += 1
            yield epoch

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, obj: Any, name: str = "state.pkl") -> Path:
        """Save ``obj`` in the checkpoint dir (torch.save for torch objects, else pickle)."""
        path = self.checkpoint_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        if _is_torch(obj):
            import torch

            torch.save(obj, tmp)
        else:
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return path

    def load(self, name: str = "state.pkl", default: Any = None) -> Any:
        """What :meth:`save` stored, restored before a resume; ``default`` when nothing is."""
        path = self.checkpoint_dir / name
        if not path.exists():
            return default
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:2] == b"PK":  # torch's zip format
            import torch

            return torch.load(path, weights_only=False)
        with open(path, "rb") as f:
            return pickle.load(f)


def _is_torch(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    if module.startswith("torch"):
        return True
    if isinstance(obj, dict) and obj:
        return any(type(v).__module__.startswith("torch") for v in obj.values())
    return False


def trial_from_env() -> Trial:
    """The trial of a command-line objective, from the ``TUNEYARD_*`` variables it was given."""
    from tuneyard.client import Client

    env = os.environ
    try:
        return Trial(
            client=Client(env["TUNEYARD_API_URL"], token=env.get("TUNEYARD_TOKEN")),
            study_id=int(env["TUNEYARD_STUDY_ID"]),
            trial_id=int(env["TUNEYARD_TRIAL_ID"]),
            number=int(env.get("TUNEYARD_TRIAL_NUMBER", "0")),
            params=json.loads(env.get("TUNEYARD_PARAMS", "{}")),
            resource_from=float(env.get("TUNEYARD_RESOURCE_FROM", "0")),
            resource_to=float(env["TUNEYARD_RESOURCE_TO"]),
            checkpoint_dir=Path(env.get("TUNEYARD_CHECKPOINT_DIR", ".")),
        )
    except KeyError as exc:
        raise RuntimeError(f"{exc.args[0]} is not set: run this under a tuneyard worker") from exc
