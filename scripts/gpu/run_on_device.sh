#!/usr/bin/env bash
# What a device command calls, from the repository root of the lent GPU machine (no network there):
#   bash scripts/gpu/run_on_device.sh TASK...
# with either .whl carried (scripts/gpu/prepare_wheels.sh: SFT only) or the PPO payload's chunks arriving one per
# call (scripts/gpu/prepare_payload.sh), and .gpu/gsm8k carried. Tasks, in the order given:
#   receive              copy the carried payload chunk(s) to /tmp/payload (kept while the machine stays warm)
#   data                 raw_data + parquet stages on real GSM8K, and a random-init model of the exact
#                        Llama-3.2-1B-Instruct shape with a GSM8K-trained tokenizer (scripts/gpu/prepare_run.py)
#   pipeline[=STEPS]     the `sft` stage (python -m llm_bridge.sft, preset h200x1, what rules/sft.smk passes,
#                        STEPS steps), then the `merged_model` stage (verl.model_merger + load and generate)
#   chain-sft[=STEPS]    the stages `sft` -> `sft_model`, as the rules run them with preset h200x1
#   chain-ppo[=STEPS]    then `ppo` -> `merged_model` -> `evaluate` (base / SFT / PPO rows)
#   rollout-probe        which of verl's rollout backends can run here (PPO needs one)
#   bench=ROWS           bench/bench_gpu.py (SFT) with those rows, in the time left
#   bench-ppo=ROWS       bench/bench_ppo_gpu.py (PPO: seed vs tuned) with those rows, in the time left;
#                        KEEP=ROW saves that row's checkpoint for chain-post; SEED_STEPS=N the seed row's steps, PPO_STEPS=N the others'
#                        PROFILE=ROW[,ROW] runs those rows' last step under torch's profiler (3-4 minutes each;
#                        with LLM_BRIDGE_PROFILE_STACKS=0 seconds: the timeline and the GPU's idle gaps, no stacks);
#                        PPO_FIT="OVERRIDE ..." verl overrides for every row but the seed's, or a named set of
#                        them (PPO_FIT=h100: smaller budgets; bench_ppo_gpu.FITS)
#   bench-layers[=MODES] bench/bench_layers.py --fsdp: the actor's micro step alone in MODES (default compile,liger)
#   bench-logprobs       bench/bench_logprobs.py: the log-probs alone in each form, after the payload's install (any
#                        task waits for the whole payload; on the bare machine, beside the first chunk, call the
#                        script itself: `receive && python3 bench/bench_logprobs.py`, docs/gpu.md)
#   chain-post           `merged_model` -> `evaluate` (base / SFT / PPO rows) on the KEEP row's checkpoint
#   check-rollout        scripts/gpu/check_rollout.py: vLLM alone on the PPO rollout (time, log-prob agreement;
#                        PPO_MODEL=DIR the model, as for bench-ppo)
#   bg TASK...           run the tasks after it detached (setsid: they outlive this call, up to BG_LIMIT s), so
#                        work longer than one call's 10 minutes goes on while later calls `wait`
#   wait=SECONDS         wait for the detached tasks (at most SECONDS), then bring back their results so far
# Logs and results go to $OUT (at most 8 files come back: logs are packed into tarballs).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/llm-bridge-out}; LIMIT=${LIMIT:-570}; WORK=$PWD/.gpu/work; LOGS=/tmp/llm-bridge-logs
mkdir -p "$OUT" "$LOGS" "$WORK"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# The lent machines forbid NVLink multicast (KINDS.md); set here too so every child inherits it.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
left() { echo $(( LIMIT - SECONDS )); }

stamp() { echo "[chain] $1: $(( SECONDS - $2 )) s" | tee -a "$OUT/info.txt"; }
# Pack the text files (logs, metrics, settings) of the named folders under /tmp: never a checkpoint (30 GB).
pack() {
  local tarball=$1; shift
  (cd /tmp && find "$@" -type f -size -20M \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.txt' \
    -o -name '*.md' -o -name '*.yaml' \) 2>/dev/null | tar -czf "$tarball" -T -)
}

# Whether Python keeps the payload's compiled modules (the payload installs with --no-compile): if not, every one
# of a PPO run's ~30 processes compiles vLLM, verl and transformers again as it imports them.
pycache() {
  python3 -c 'import os, sys; from pathlib import Path
print("bytecode: dont_write_bytecode", sys.flags.dont_write_bytecode, "PYTHONPYCACHEPREFIX", os.environ.get("PYTHONPYCACHEPREFIX"),
      "compiled modules in /tmp/site:", sum(1 for _ in Path("/tmp/site").rglob("*.pyc")))'
}
BG=/tmp/llm-bridge-bg
if [[ "${1:-}" == bg ]]; then
  shift; rm -rf "$BG"; mkdir -p "$BG"
  OUT=$BG/out LIMIT=${BG_LIMIT:-1500} setsid nohup bash "$0" "$@" > "$BG/bg.log" 2>&1 < /dev/null &
  echo "detached: $* (pid $!)"; exit 0
fi
if [[ "${1:-}" == wait=* ]]; then
  t=$SECONDS; until [[ -f $BG/done ]] || (( SECONDS - t >= ${1#wait=} )); do sleep 5; done
  [[ -f $BG/done ]] && echo "detached tasks finished" || echo "detached tasks still running"
  tail -n 25 "$BG/out/info.txt" 2>/dev/null
  pycache
  cp "$BG"/out/*.json "$BG"/out/*.md "$BG/out/info.txt" "$OUT/" 2>/dev/null
  [[ -f $BG/done ]] || cp /tmp/bench-ppo/results.json "$OUT/bench_results_so_far.json" 2>/dev/null
  pack "$OUT/logs.tgz" llm-bridge-logs llm-bridge-bg $( [[ -d /tmp/bench-ppo ]] && echo bench-ppo )
  exit 0
fi
trap '[[ $OUT == $BG/out ]] && touch $BG/done' EXIT
if [[ "${1:-}" == receive ]]; then
  shift
  mkdir -p /tmp/payload && cp .gpu/payload/payload.sha256 .gpu/payload/payload.tar.xz.part-* /tmp/payload/
  ls -la /tmp/payload | tee -a "$OUT/info.txt"
  [[ $# -gt 0 ]] || exit 0
fi
if [[ ! -f /tmp/site/.done && -d /tmp/payload ]]; then
  # The PPO payload: check the joined chunks, unpack, then every wheel in ONE pip call (a second --target
  # --upgrade call replaces whole top-level folders and broke opentelemetry's namespace package, and Ray with it).
  t=$SECONDS
  (cd /tmp/payload && [[ "$(cat payload.tar.xz.part-* | sha256sum | cut -d' ' -f1)" == "$(cat payload.sha256)" ]]) \
    || { echo "payload incomplete or corrupt: $(ls /tmp/payload)"; exit 1; }
  mkdir -p /tmp/payload/x && cat /tmp/payload/payload.tar.xz.part-* | xz -dc | tar -C /tmp/payload/x -xf - \
    && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/payload/x/wheels/*.whl \
    && cp -r /tmp/payload/x/vllm/. /tmp/site/ && tar -C /tmp/site -xJf /tmp/payload/x/wheels/ray-slim.tar.xz \
    && rm -rf /tmp/payload/x && touch /tmp/site/.done || { echo "payload install failed"; exit 1; }
  # These machines set PYTHONDONTWRITEBYTECODE=1: without this each of a PPO run's ~30 processes compiles what it
  # imports (2.6 s of an 18-s import on the H100 of 2026-12-06; compiling everything once took 2.8 s)
  python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1
  stamp install $t
  # wheels found missing after the payload was built (new top-level packages only: no --upgrade, see above)
  if compgen -G ".gpu/extra/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/extra/*.whl
  fi
  PYTHONPATH=/tmp/site:$PWD/src python3 -c "import verl.workers.rollout.vllm_rollout.vllm_async_server" 2>&1 | grep -E "Error|error" | tail -3
elif [[ ! -f /tmp/site/.done ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && tar -C /tmp/site -xJf .whl/ray-slim.tar.xz && touch /tmp/site/.done || { echo "wheel install failed"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD/src
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, transformers, verl; print("torch", torch.__version__, "cuda", torch.version.cuda,
"transformers", transformers.__version__, "verl", verl.__version__, "gpus", torch.cuda.device_count())'
  python3 -c 'import importlib.util as u; print({m: bool(u.find_spec(m)) for m in ("flash_attn", "vllm", "sglang", "tensorrt_llm", "liger_kernel", "flashinfer")})'
  pycache
} 2>&1 | tee "$OUT/info.txt"

post() {  # merged_model -> evaluate on the ppo stage output in $1, as rules/merge.smk and rules/evaluate.smk run them
  local ppo=$1 t=$SECONDS
  cp "$ppo/result.json" "$OUT/ppo_result.json" 2>/dev/null
  python3 -m llm_bridge.merge --result "$ppo/result.json" --out-dir "$WORK/merged_model" > "$LOGS/merged_model.log" 2>&1
  echo "merged_model exit $?" | tee -a "$OUT/info.txt"; stamp merged_model $t
  rm -rf "$ppo/checkpoints"/global_step_*   # 27 GB: the benchmark rows need the disk
  t=$SECONDS
  python3 -m llm_bridge.evaluate --params '{"n_samples": 200, "max_new_tokens": 256, "batch_size": 100}' \
    --test "$WORK/parquet/test.parquet" --model "base=$WORK/base_model" --model "sft=$WORK/sft/model" \
    --model "ppo=$WORK/merged_model" --out "$WORK/evaluate/eval.json" > "$LOGS/evaluate.log" 2>&1
  echo "evaluate exit $?" | tee -a "$OUT/info.txt"; stamp evaluate $t; cp "$WORK/evaluate/eval.json" "$OUT/" 2>/dev/null
  grep -E "^\[|Error|error:|Traceback" "$LOGS/merged_model.log" "$LOGS/evaluate.log" | grep -v "^\[launch\]" \
    | tail -30 | tee -a "$OUT/info.txt"
}

for task in "$@"; do
  echo "=== $task ($(left) s left)" | tee -a "$OUT/info.txt"
  case $task in
    data)
      python3 scripts/gpu/prepare_run.py data --work "$WORK" 2>&1 | tee "$LOGS/data.log" | grep -v Writing ;;
    pipeline*)
      steps=${task#pipeline}; steps=${steps#=}; steps=${steps:-6}
      params=$(python3 scripts/gpu/prepare_run.py params --preset h200x1 --stage sft --override "trainer.total_training_steps=$steps")
      rm -rf "$WORK/sft" "$WORK/merged_model"
      ( set -o pipefail
        timeout "${SFT_TIMEOUT:-240}" python3 -m llm_bridge.sft --params "$params" --base-model "$WORK/base_model" --data-dir "$WORK/parquet" \
          --out-dir "$WORK/sft" 2>&1 | grep -E "^\[|step:|Error|error|Traceback|out of memory" | tail -40
        timeout "${MERGE_TIMEOUT:-150}" python3 -m llm_bridge.merge --result "$WORK/sft/result.json" --out-dir "$WORK/merged_model" 2>&1 \
          | grep -v Warning | tail -30
        [[ -d "$WORK/merged_model" ]] || python3 - "$WORK/sft/checkpoints" <<'EOF'
import glob, os, sys, torch
step = sorted(glob.glob(sys.argv[1] + "/global_step_*"))[-1]
print("checkpoint files:", sorted(os.listdir(step)))
state = torch.load(glob.glob(step + "/model_world_size_*_rank_0.pt")[0], map_location="cpu", weights_only=False)
print({k: (type(v).__name__, tuple(getattr(v, "shape", ()))) for k, v in list(state.items())[:4]})
EOF
      ) 2>&1 | tee "$LOGS/pipeline.log" | tee -a "$OUT/info.txt"
      cp "$WORK/sft/result.json" "$LOGS/sft_result.json" 2>/dev/null; cp "$WORK/sft/train.log" "$LOGS/sft_train.log" 2>/dev/null
      ls -la "$WORK/merged_model" >> "$LOGS/pipeline.log" 2>&1 ;;
    chain-sft*)
      steps=${task#chain-sft}; steps=${steps#=}; steps=${steps:-4}
      rm -rf "$WORK/sft" "$WORK/ppo" "$WORK/merged_model" "$WORK/evaluate"
      params=$(python3 scripts/gpu/prepare_run.py params --preset h200x1 --stage sft --override "trainer.total_training_steps=$steps")
      t=$SECONDS
      python3 -m llm_bridge.sft --params "$params" --base-model "$WORK/base_model" --data-dir "$WORK/parquet" \
        --out-dir "$WORK/sft" > "$LOGS/sft.log" 2>&1; echo "sft exit $?" | tee -a "$OUT/info.txt"; stamp sft $t
      t=$SECONDS
      python3 -m llm_bridge.merge --result "$WORK/sft/result.json" --out-dir "$WORK/sft/model" > "$LOGS/sft_model.log" 2>&1
      echo "sft_model exit $?" | tee -a "$OUT/info.txt"; stamp sft_model $t
      grep -E "^\[|Error|error:" "$LOGS/sft.log" "$LOGS/sft_model.log" | tail -20 | tee -a "$OUT/info.txt"
      rm -rf "$WORK/sft/checkpoints"/global_step_* ;;   # 15 GB of optimizer state: the disk is needed for PPO's
    chain-ppo*)
      steps=${task#chain-ppo}; steps=${steps#=}; steps=${steps:-2}
      params=$(python3 scripts/gpu/prepare_run.py params --preset h200x1 --stage ppo --override "trainer.total_training_steps=$steps")
      t=$SECONDS
      timeout "${PPO_TIMEOUT:-540}" python3 -m llm_bridge.ppo --params "$params" --sft-model "$WORK/sft/model" \
        --data-dir "$WORK/parquet" --out-dir "$WORK/ppo" > "$LOGS/ppo.log" 2>&1; echo "ppo exit $?" | tee -a "$OUT/info.txt"
      stamp ppo $t; post "$WORK/ppo" ;;
    chain-post)
      post "/tmp/bench-ppo/${KEEP:?KEEP names the benchmark row whose checkpoint to merge}" ;;
    bench-ppo=*)
      python3 bench/bench_ppo_gpu.py --model-dir "${PPO_MODEL:-$WORK/sft/model}" --data-dir "$WORK/parquet" --out /tmp/bench-ppo \
        --rows "${task#bench-ppo=}" --keep "${KEEP:-}" --profile "${PROFILE:-}" --fit "${PPO_FIT:-}" --seed-steps "${SEED_STEPS:-3}" --steps "${PPO_STEPS:-5}" --deadline $(( $(left) - 25 )) 2>&1 \
        | grep -E "^\[bench\]|^\||^torch" | tee -a "$OUT/info.txt"
      cp /tmp/bench-ppo/table.md /tmp/bench-ppo/results.json "$OUT/" 2>/dev/null
      pack "$OUT/bench-ppo-logs.tgz" bench-ppo ;;
    bench-layers*)
      modes=${task#bench-layers}; modes=${modes#=}
      timeout $(( $(left) - 20 )) python3 bench/bench_layers.py --fsdp --modes "${modes:-compile,liger}" \
        --out "$OUT/layers.json" > "$LOGS/layers.log" 2>&1; echo "bench-layers exit $?" | tee -a "$OUT/info.txt"
      grep -E "^\[|^mode|\+fsdp" "$LOGS/layers.log" | tail -30 | tee -a "$OUT/info.txt" ;;
    bench-logprobs)
      timeout $(( $(left) - 20 )) python3 bench/bench_logprobs.py --out "$OUT/logprobs.json" > "$LOGS/logprobs.log" 2>&1
      echo "bench-logprobs exit $?" | tee -a "$OUT/info.txt"
      sed -n '/^kind/,$p' "$LOGS/logprobs.log" | tee -a "$OUT/info.txt" ;;
    check-rollout)
      python3 scripts/gpu/check_rollout.py --model "${PPO_MODEL:-$WORK/sft/model}" --prompts "$WORK/parquet/train.parquet" \
        --out "$OUT/check_rollout.json" > "$LOGS/check_rollout.log" 2>&1; echo "check-rollout exit $?" | tee -a "$OUT/info.txt"
      grep -E "^\[check\]|Error|error:" "$LOGS/check_rollout.log" | tail -8 | tee -a "$OUT/info.txt" ;;
    rollout-probe)
      python3 - <<'EOF' 2>&1 | grep -v Warning | tee -a "$OUT/info.txt"
from verl.workers.rollout.replica import RolloutReplicaRegistry
for name in sorted(RolloutReplicaRegistry._registry):
    try:
        RolloutReplicaRegistry.get(name)
        print(f"rollout {name}: loads")
    except Exception as exc:
        print(f"rollout {name}: cannot load here: {type(exc).__name__}: {str(exc)[:120]}")
EOF
      ;;
    bench=*)
      python3 bench/bench_gpu.py --model-dir "$WORK/base_model" --data-dir "$WORK/parquet" --out /tmp/bench \
        --rows "${task#bench=}" --deadline $(( $(left) - 25 )) --profile-step "${PROFILE_STEP:-0}" 2>&1 \
        | grep -E "^\[bench\]|^\||^torch" | tee -a "$OUT/info.txt"
      cp /tmp/bench/table.md /tmp/bench/results.json /tmp/bench/profile.txt "$OUT/" 2>/dev/null ;;
    *) echo "unknown task $task" ;;
  esac
done
pack "$OUT/logs.tgz" llm-bridge-logs $( [[ -d /tmp/bench ]] && echo bench )
echo "done in $SECONDS s"
