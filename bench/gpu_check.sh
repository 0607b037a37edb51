#!/usr/bin/env bash
# The GPU check: the embedded stack with one RQ worker per GPU runs examples/torch_study.yaml
# (a CNN on digits, ASHA promotion) to the end, then summarises what the trials recorded.
#   bench/gpu_check.sh OUTDIR [RUNDIR] [extra `tuneyard demo` options, e.g. --max-trials 12]
set -euo pipefail
out=${1:-gpu-check}
run=${2:-/tmp/tuneyard-gpu-run}
shift $(( $# > 2 ? 2 : $# ))
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
start=$(date +%s)
python3 -m tuneyard.cli demo --study examples/torch_study.yaml --gpus auto \
  --data-dir "$run" "$@" 2>&1 | tee "$out/demo.txt"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/demo.txt"
python3 - "$run/tuneyard.db" <<'PY' | tee "$out/summary.txt"
import json, sqlite3, statistics, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select metrics from reports").fetchall()
m = [json.loads(r[0]) for r in rows]
secs = [x["epoch_seconds"] for x in m if "epoch_seconds" in x]
peak = [x["gpu_peak_mib"] for x in m if "gpu_peak_mib" in x]
print(f"reports: {len(m)}; epochs on the GPU: {len(peak)} of {len(secs)}")
print(f"epoch seconds: median {statistics.median(secs):.4f}, max {max(secs):.4f}")
print(f"peak GPU memory per trial: max {max(peak, default=0):.1f} MiB")
print("trials by state:", dict(db.execute("select state, count(*) from trials group by state").fetchall()))
print("attempts by worker:", dict(db.execute("select worker, count(*) from attempts group by worker").fetchall()))
resumed = db.execute("select count(*) from (select trial_id from attempts group by trial_id having count(*) > 1)").fetchone()[0]
print("trials resumed from a checkpoint:", resumed)
best = db.execute("select number, value, resource, params from trials where state='completed' order by value limit 3").fetchall()
print("best:", best)
PY
cp "$run/worker.log" "$run/server.log" "$out/" 2>/dev/null || true
