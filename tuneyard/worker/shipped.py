"""The process that runs one job of a shipped entrypoint: ``python -m tuneyard.worker.shipped
package.module:function``, started by the worker in the study's code directory.

It puts that directory first on ``sys.path``, imports the entrypoint, calls it with the trial
of ``tuneyard.trial_from_env()`` (reports, pauses and checkpoints as in the worker process)
and leaves for the worker, in ``$TUNEYARD_RESULT_FILE``, the value the function returned or
the error it raised (exit code 1). Everything after the call (completing, pausing, failing
the trial) is the worker's, as for any objective.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _leave(result: dict[str, Any]) -> None:
    path = os.environ.get("TUNEYARD_RESULT_FILE")
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tuneyard.worker.shipped package.module:function", file=sys.stderr)
        return 2
    code_dir = os.environ.get("TUNEYARD_CODE_DIR") or os.getcwd()
    sys.path[:] = [code_dir, *(p for p in sys.path if p not in ("", code_dir))]

    from tuneyard.worker.objective import error_text, final_value, load_objective
    from tuneyard.worker.trial import TrialStopped, trial_from_env

    trial = trial_from_env()
    try:
        result = load_objective(args[0])(trial)
    except TrialStopped:
        result = None
    except Exception as exc:
        text = error_text(exc)
        print(text, file=sys.stderr, end="" if text.endswith("\n") else "\n")
        _leave({"error": text})
        return 1
    value = final_value(result)
    _leave({} if value is None else {"value": value})
    return 0


if __name__ == "__main__":
    sys.exit(main())
