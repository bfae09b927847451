#!/usr/bin/env bash
# The figures only a GPU can give, in one go (a few minutes on one H200): the GPU paths run
# end to end (bf16-mixed, channels_last, data resident on the device), step time against a plain
# loop, bf16 against fp32, model FLOP utilisation, several tuning workers sharing one GPU, and a
# tuned cell with pruning. Each part has its own time limit and log, so one failure costs one part.
#
#   benchmarks/gpu.sh [out_dir]                 # default out_dir: outputs/gpu-figures
#   ACCEL=cpu QUICK=1 benchmarks/gpu.sh /tmp/g  # a dry run of the script itself on a CPU machine
#   SKIP="workers_per_gpu tune_cell" benchmarks/gpu.sh   # leave parts out by name
set -u
out=$(realpath -m "${1:-outputs/gpu-figures}")
mkdir -p "$out"
accel=${ACCEL:-gpu}
quick=${QUICK:-0}
steps=300; repeats=3; worker_trials=10; worker_counts="1 4 8"; big=(--image-size 64 --n-train 400 --batch-size 256)
if [ "$quick" = 1 ]; then steps=20; repeats=1; worker_trials=2; worker_counts="1 2"; big=(--image-size 16 --batch-size 32); fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HARNESS_CACHE="$out/pretrained"
py=${PYTHON:-python3}

part() {  # part NAME SECONDS COMMAND...: run one part under its limit, log to $out/NAME.log
  local name=$1 limit=$2; shift 2
  case " ${SKIP:-} " in *" $name "*) echo "=== $name: skipped"; return;; esac
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  grep -v -E "^\s*$|Warning|warn\(|rank_zero|LOCAL_RANK|TPU available|HPU available|GPU available|Using bf16|^\s+(return|warnings)" "$out/$name.log" | tail -n "${TAIL:-25}"
  grep -h -m1 -E "Using bf16|Using 16bit" "$out/$name.log"
  echo "=== $name: exit $rc in $((SECONDS - start))s"
}

# The bf16 matrix-product rate this device reaches: the ceiling for model FLOP utilisation.
cat >"$out/peak_tflops.py" <<'EOF'
import time, torch
if not torch.cuda.is_available():
    print("peak_tflops 0 (no GPU)"); raise SystemExit
print(torch.cuda.get_device_name(), "torch", torch.__version__, "cuda", torch.version.cuda)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize()
print(f"peak_tflops {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f}")
EOF
part device 60 "$py" "$out/peak_tflops.py"
peak=$(grep -o "peak_tflops [0-9]*" "$out/device.log" | awk '{print $2}')
[ -n "$peak" ] && [ "$peak" != 0 ] || peak=790

[ "$accel" = gpu ] && part gpu_tests 180 "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py

train=(-m harness.cli.train "trainer.accelerator=$accel" logger=csv)
part train_scratch_resnet18 120 "$py" "${train[@]}" model.name=resnet18 data.image_size=32 "train.steps=$steps" \
  "hydra.run.dir=$out/train-scratch"
part train_finetune_lpft 180 "$py" "${train[@]}" strategy=finetune strategy.mode=lp_ft "train.steps=$steps" \
  "pretrain.train.steps=$((2 * steps))" "hydra.run.dir=$out/train-finetune"
# Data too large to keep on the device goes through a DataLoader (workers, pinned memory): forced here
# with on_device_max_mb=0 on a generated image folder.
"$py" - "$out/images" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for c, colour in enumerate([(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30)]):
    folder = Path(sys.argv[1]) / f"class{c}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(60):
        pixels = np.clip(np.array(colour) + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
EOF
part train_dataloader_path 120 "$py" "${train[@]}" data=imagefolder "data.root=$out/images" data.on_device_max_mb=0 \
  data.n_train=120 data.n_val=40 data.n_test=40 "train.steps=$steps" "hydra.run.dir=$out/train-dataloader"

"$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).glob("train-*/result.json")):
    r = json.loads(run.read_text()); c = r["compute"]
    print(f"{run.parent.name}: val_acc {r['val_acc']:.3f} test_acc {r['test_acc']}, {c['steps']} steps, "
          f"{c['wall_s']:.1f} s, peak memory {c.get('peak_mem_bytes', 0) / 2**20:.0f} MiB, "
          f"FLOPs {c['train_flops'] + c['eval_flops']:.3e}")
EOF

bench=("$py" benchmarks/bench_train_step.py --device "$accel" --steps "$steps" --repeats "$repeats" --peak-tflops "$peak")
part step_tiny_cnn_bf16 150 "${bench[@]}"
part step_resnet18_bf16 150 "${bench[@]}" --model resnet18 "${big[@]}"
part step_resnet18_fp32 150 "${bench[@]}" --model resnet18 "${big[@]}" --precision 32-true

# shellcheck disable=SC2086
part workers_per_gpu 240 "$py" benchmarks/bench_workers.py --accelerator "$accel" --workers $worker_counts \
  --n "$worker_trials" --steps 100 --dir "$out/workers"

part tune_cell 240 "$py" -m harness.cli.tune "trainer.accelerator=$accel" logger=none tune.progress=false \
  "tune.n_trials=$((quick ? 3 : 10))" study.seeds=2 "storage.url=sqlite:///$out/tune.db" "hydra.run.dir=$out/tune"
"$py" - "$out" <<'EOF'
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = f"sqlite:///{sys.argv[1]}/tune.db"
for s in optuna.get_all_study_summaries(storage):
    study = optuna.load_study(study_name=s.study_name, storage=storage)
    states = [t.state.name for t in study.trials]
    print(s.study_name, {k: states.count(k) for k in set(states)}, "best", study.best_value,
          "final", [round(f["test_acc"], 3) for f in study.user_attrs.get("final", [])])
EOF
echo "all parts done in ${SECONDS}s; logs in $out"
