#!/usr/bin/env bash
# The prepared check for a lent GPU machine (see docs/gpu-check.md).
#
#   scripts/gpu-check.sh build   # HERE (has Rust): release test/bench executables + glip
#                                # -> gpu-carry/ (git-ignored; carried by the device call)
#   scripts/gpu-check.sh run     # THERE (GPU, no Rust): one call runs everything, logs
#                                # under $OUT, prints a summary table last.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$ROOT/gpu-carry"
PROFILE=gpucheck
# What the device call may carry in all is 64 MiB; refuse a bundle without this much margin.
# The count is exact (every file the call sends: tracked, untracked but not ignored, carried),
# so 2 MiB is left for the archive's own overhead.
MAX_BUNDLE_MIB=62
# Seconds for the run half: the call should end within 6 minutes including the machine's
# start (a session has 15 minutes of device time in all).
BUDGET="${GLIP_CHECK_BUDGET:-270}"
# The SASS the carried executables hold (GLIP_CUDA_ARCHS of the build; see build()).
CARRY_ARCHS=90

build() {
  set -e
  cd "$ROOT"
  ./scripts/install-cuda-toolchain.sh >/dev/null
  export GLIP_REQUIRE_NVCC=1
  # Kernels for the lent cards only (H100, H200: sm_90; the PTX of compute_90 also runs on
  # newer cards). Every carried executable embeds the kernels, and with the default five archs
  # their SASS alone made the bundle exceed the limit (measured 2026-12-07: tree 54.0 MiB +
  # carry 8.3 MiB > 62 MiB).
  export GLIP_CUDA_ARCHS="${GLIP_CUDA_ARCHS:-$CARRY_ARCHS}"
  rm -rf "$CARRY"; mkdir -p "$CARRY/bin"
  local list="$CARRY/executables.txt"
  : > "$list"
  # Test executables that exercise the GPU (the op table and its kernel rows, the gate), the
  # CLI, and benches.
  cargo build --profile "$PROFILE" --bin glip
  cargo test --profile "$PROFILE" --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except Exception: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print("test", m["target"]["name"], m["executable"])
' >> "$list"
  cargo bench --profile "$PROFILE" --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except Exception: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        print("bench", m["target"]["name"], m["executable"])
' >> "$list"
  # Keep the test executables the run half uses on the GPU (the op table with its kernel rows,
  # the end-to-end and head goldens, the replay, its CUDA graphs, the gate, frames from device
  # memory); strip debug info. Module goldens that golden_e2e's per-tap table covers stay home
  # (bundle size). The kernel benches are extras (below). Staged outside the carry.
  local staged="$ROOT/target/$PROFILE-stage" extra="$ROOT/target/$PROFILE-stage-extra"
  rm -rf "$staged" "$extra"; mkdir -p "$staged" "$extra"
  cp "target/$PROFILE/glip" "$staged/glip"
  while read -r kind name exe; do
    case "$kind:$name" in
      test:op_table|test:golden_e2e|test:golden_head|test:gpu_gating|test:replay|test:graphs|test:device_frames)
        cp "$exe" "$staged/$kind-$name" ;;
      # Kernel benches with a PyTorch baseline to compare against (the others' ops are timed
      # by `glip bench --ops`, the whole model by `glip bench`).
      bench:*)
        [[ -e "scripts/baselines/baseline_$name.py" ]] && cp "$exe" "$extra/$kind-$name" ;;
    esac
  done < "$list"
  strip "$staged"/* "$extra"/* 2>/dev/null || true
  # Tests find their data through the path they were built at; record it.
  echo "$ROOT" > "$CARRY/build_root"
  echo "$GLIP_CUDA_ARCHS" > "$CARRY/archs"
  git rev-parse HEAD > "$CARRY/commit" 2>/dev/null || echo unknown > "$CARRY/commit"
  cp scripts/baselines/*.py "$CARRY/"
  # The original GLIP (PyTorch) on the same card: its Python sources from a GLIP checkout
  # outside the project (GLIP_SRC, default /work/glip-src; the model's code and GLIP-T's
  # yaml, ~0.2 MiB packed) and the one package the GPU image lacks (yacs, pure Python).
  local glip_src="${GLIP_SRC:-/work/glip-src}"
  if [[ -d "$glip_src/maskrcnn_benchmark" ]]; then
    (cd "$glip_src" && find maskrcnn_benchmark -name '*.py' -print0 \
      | tar --null -T - -cf - configs/pretrain/glip_Swin_T_O365_GoldG.yaml) \
      | xz -9 > "$CARRY/glip-src.tar.xz"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/whl" yacs==0.1.8
  else
    echo "gpu-check build: no GLIP checkout at $glip_src (GLIP_SRC): PyTorch GLIP-T will not run there" >&2
  fi
  # Every file the call sends, counted exactly (tracked, untracked but not ignored, carried).
  local tree_b carry_b limit_b=$(( MAX_BUNDLE_MIB * 1048576 ))
  tree_b=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  # One xz block with a dictionary larger than any executable: the executables share most of
  # their code (the library), which a large window finds across files.
  pack() { tar -C "$staged" -cf - . | xz -T1 -9e --memlimit-compress=2GiB > "$CARRY/bundle.tar.xz"; }
  # With the kernel benches if that fits: as the tree grows they are the first to stay home
  # (1.3 MiB of the bundle on 2026-12-07), so that what the issue's check needs still travels.
  cp "$extra"/* "$staged"/ 2>/dev/null || true
  pack
  carry_b=$(du -sb "$CARRY" | cut -f1)
  if compgen -G "$staged/bench-*" > /dev/null && (( tree_b + carry_b > limit_b )); then
    echo "gpu-check build: the kernel benches stay home (with them: $(( (tree_b + carry_b) / 1024 )) KiB > $MAX_BUNDLE_MIB MiB)" >&2
    rm -f "$staged"/bench-*
    pack
    carry_b=$(du -sb "$CARRY" | cut -f1)
  fi
  echo "carried: $(cd "$staged" && ls | tr '\n' ' ')"
  rm -rf "$staged" "$extra"
  echo "tracked tree: $(( tree_b / 1024 )) KiB, carry: $(( carry_b / 1024 )) KiB, together $(( (tree_b + carry_b) / 1024 )) KiB (the call takes 64 MiB; refused above $MAX_BUNDLE_MIB MiB = $(( limit_b / 1024 )) KiB)"
  # Refused here, before any device time is spent, with room to spare below the call's 64 MiB.
  if (( tree_b + carry_b > limit_b )); then
    echo "gpu-check build: tree + carry exceed $MAX_BUNDLE_MIB MiB (the device call takes 64 MiB)" >&2
    exit 1
  fi
}

run() {
  cd "$ROOT"
  local out="${OUT:-$ROOT/gpu-out}"; mkdir -p "$out"
  local bin="$ROOT/target/$PROFILE-carried"; rm -rf "$bin"; mkdir -p "$bin"
  xz -dc "$CARRY/bundle.tar.xz" | tar -C "$bin" -xf -
  # Executables look for tests/testdata and the glip binary under the path they were built at.
  local broot; broot="$(cat "$CARRY/build_root")"
  if [[ "$broot" != "$ROOT" && ! -e "$broot" ]]; then mkdir -p "$(dirname "$broot")"; ln -s "$ROOT" "$broot"; fi
  mkdir -p "$ROOT/target/$PROFILE"; cp "$bin/glip" "$ROOT/target/$PROFILE/glip"
  export GLIP_REQUIRE_GPU=1
  local summary="$out/summary.txt"; : > "$summary"
  row() { printf '%-34s %-6s %s\n' "$1" "$2" "$3" | tee -a "$summary"; }

  # cudarc (cuda-12000 bindings) dlopens libcublas.so or libcublas.so.{12,11,10,9,1}, never
  # .so.13, and panics when none loads; the device image's cuBLAS may be only the CUDA 13 pip
  # wheel (libcublas.so.13, off the loader path). Give it an unversioned name on the path.
  if ! ldconfig -p 2>/dev/null | grep -qE 'libcublas\.so(\.12)? '; then
    local cub
    cub="$(find /opt /usr /usr/local -name 'libcublas.so.[0-9]*' 2>/dev/null \
      | grep -E 'libcublas\.so\.[0-9]+$' | sort -V | tail -1)"
    if [[ -n "$cub" ]]; then
      mkdir -p "$ROOT/target/cublas-link"
      ln -sf "$cub" "$ROOT/target/cublas-link/libcublas.so"
      export LD_LIBRARY_PATH="$ROOT/target/cublas-link:$(dirname "$cub")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      row "cuBLAS" "LINKED" "$cub"
    else
      row "cuBLAS" "MISSING" "no libcublas.so.N under /opt /usr: GPU tests will fail"
    fi
  fi

  { nvidia-smi; nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,memory.total --format=csv; } > "$out/nvidia-smi.txt" 2>&1
  # The kernels were built for the archs in $CARRY/archs (SASS) and PTX of the newest, which
  # the driver compiles for a newer card only: an older card cannot load them.
  local cc built newest
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
  built="$(cat "$CARRY/archs" 2>/dev/null || echo unknown)"
  newest="$(tr ',' '\n' <<< "$built" | sort -n | tail -1)"
  if [[ -z "$cc" ]]; then row "GPU arch" "UNKNOWN" "nvidia-smi gave no compute capability; kernels built for sm_$built"
  elif [[ ",$built," == *",$cc,"* ]]; then row "GPU arch" "OK" "sm_$cc (kernels built for sm_$built)"
  elif [[ "$newest" =~ ^[0-9]+$ ]] && (( cc > newest )); then row "GPU arch" "PTX" "sm_$cc runs the PTX of compute_$newest (SASS built for sm_$built only)"
  else row "GPU arch" "FAIL" "sm_$cc: kernels built for sm_$built only; rebuild with GLIP_CUDA_ARCHS=$cc scripts/gpu-check.sh build"
  fi
  # Every step gets min(its cap, what is left of the budget); a step that would get under
  # 10 s is skipped and says so. Steps run most important first.
  local start=$SECONDS rc cap
  budget() { local left=$(( BUDGET - (SECONDS - start) - 5 )); (( left > $1 )) && left=$1; (( left >= 10 )) && echo "$left" || echo 0; }
  skip() { row "$1" "SKIP" "no time left in the ${BUDGET} s budget"; }

  cap=$(budget 60)
  if (( cap )); then
    # GLIP_REQUIRE_GPU=1: no usable GPU fails here instead of reporting a CPU machine.
    timeout "$cap" "$bin/glip" doctor > "$out/doctor.txt" 2>&1; rc=$?
    row "glip doctor" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -c ' PASS ' "$out/doctor.txt") families passed; $(grep -m1 '^result: ' "$out/doctor.txt")"
  else skip "glip doctor"; fi

  # The executor and the op table first, then GLIP-T on the GPU: latency at 256 and 32
  # tokens (batch 1) and throughput at batch 16, 640x640 (replays after one recording run).
  # (The op table's kernel rows run at GLIP-T's sizes here: their CPU twins take a while.)
  for t in "$bin"/test-op_table "$bin"/test-replay "$bin"/test-graphs; do
    local name; name="$(basename "$t")"; cap=$(budget 150)
    if (( cap )); then
      timeout "$cap" "$t" --test-threads=1 > "$out/$name.log" 2>&1; rc=$?
      row "$name" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -E '^test result' "$out/$name.log" | tail -1)"
    else skip "$name"; fi
  done
  local glipt=(bench --device cuda --coco false --json)
  cap=$(budget 90)
  if (( cap )); then
    timeout "$cap" "$bin/glip" "${glipt[@]}" --size 800x1333 --tokens 256,32 --iters 20 \
      > "$out/bench-glip-t.json" 2> "$out/bench-glip-t.txt"; rc=$?
    row "bench GLIP-T 800x1333 b1" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep 'latency over' "$out/bench-glip-t.txt" | tr -s ' ' | paste -sd';')"
  else skip "bench GLIP-T 800x1333 b1"; fi
  # GLIP-T end to end on the GPU against the CPU at 800x1333 (the same random weights, 32
  # tokens): every tap's relative error and the detections; fails above the bound.
  cap=$(budget 75)
  if (( cap )); then
    timeout "$cap" "$bin/glip" "${glipt[@]}" --size 800x1333 --tokens 32 --iters 2 --check-cpu \
      > "$out/parity-glip-t.json" 2> "$out/parity-glip-t.txt"; rc=$?
    row "GLIP-T 800x1333 GPU vs CPU" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep '  parity: ' "$out/parity-glip-t.txt" | cut -c 12- | cut -d';' -f1)"
  else skip "GLIP-T 800x1333 GPU vs CPU"; fi
  # The same at 32 tokens with replays launch by launch: what the CUDA graphs save.
  cap=$(budget 45)
  if (( cap )); then
    GLIP_CUDA_GRAPHS=0 timeout "$cap" "$bin/glip" "${glipt[@]}" --size 800x1333 --tokens 32 --iters 20 \
      > "$out/bench-glip-t-nographs.json" 2> "$out/bench-glip-t-nographs.txt"; rc=$?
    row "bench GLIP-T b1 32 tok, no graphs" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep 'latency over' "$out/bench-glip-t-nographs.txt" | tr -s ' ')"
  else skip "bench GLIP-T b1 32 tok, no graphs"; fi
  cap=$(budget 60)
  if (( cap )); then
    timeout "$cap" "$bin/glip" "${glipt[@]}" --size 640x640 --resize 640,640 --tokens 32 --batch 16 --iters 10 \
      > "$out/bench-glip-t-b16.json" 2> "$out/bench-glip-t-b16.txt"; rc=$?
    row "bench GLIP-T 640x640 b16" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep 'latency over' "$out/bench-glip-t-b16.txt" | tr -s ' ')"
  else skip "bench GLIP-T 640x640 b16"; fi

  # The original GLIP-T in PyTorch on the same card (fp32, the COCO prompt padded to 256
  # tokens as GLIP runs it): the anchor of the summary's ratio.
  cap=$(budget 100)
  if (( cap )) && [[ -e "$CARRY/glip-src.tar.xz" ]]; then
    local gsrc="$ROOT/target/glip-src"; rm -rf "$gsrc"; mkdir -p "$gsrc"
    xz -dc "$CARRY/glip-src.tar.xz" | tar -C "$gsrc" -xf -
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$ROOT/target/pysite" "$CARRY"/whl/*.whl > "$out/pip.log" 2>&1
    PYTHONPATH="$ROOT/target/pysite" PYTHONUNBUFFERED=1 timeout "$cap" python3 "$CARRY/glip_torch.py" \
      --glip-src "$gsrc" --device cuda --warmup 3 --runs 20 --json "$out/glip_torch_cuda.json" \
      > "$out/glip_torch_cuda.log" 2>&1; rc=$?
    row "PyTorch GLIP-T 800x1333 (fp32)" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep -E '^GPU: ' "$out/glip_torch_cuda.log" || tail -1 "$out/glip_torch_cuda.log")"
  elif (( cap )); then row "PyTorch GLIP-T" "SKIP" "no GLIP sources carried (gpu-check build without GLIP_SRC)"
  else skip "PyTorch GLIP-T"; fi

  local seen=" "
  for t in "$bin"/test-golden_e2e "$bin"/test-*; do
    local name; name="$(basename "$t")"
    # Each once (golden_e2e is named first), also when skipped; none that ran above.
    [[ -e "$out/$name.log" || "$seen" == *" $name "* ]] && continue
    seen+="$name "
    cap=$(budget 120)
    if (( cap )); then
      timeout "$cap" "$t" --test-threads=1 > "$out/$name.log" 2>&1; rc=$?
      row "$name" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -E '^test result' "$out/$name.log" | tail -1)"
    else skip "$name"; fi
  done

  # Every end-to-end golden through `glip detect` on the GPU (a fallback would be listed).
  local gd="$ROOT/tests/testdata/golden"
  for cfg in "$gd"/*_e2e_*_config.yaml; do
    local g caption; g="$(basename "$cfg" _config.yaml)"
    caption="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["caption"])' "$gd/$g.json")"
    cap=$(budget 30)
    if (( cap )); then
      timeout "$cap" "$bin/glip" detect --device cuda -v --format json --config "$cfg" \
        --weights "$gd/${g}_weights.safetensors" --bert-config "$ROOT/tests/testdata/tiny_bert_config.json" \
        --image "$gd/${g}_photo.png" --prompt "$caption" > "$out/detect-$g.json" 2> "$out/detect-$g.log"; rc=$?
      row "detect --device cuda $g" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -o '"score"' "$out/detect-$g.json" 2>/dev/null | wc -l) boxes; $(grep -m1 'ops run on the CPU' "$out/detect-$g.log")"
    else skip "detect --device cuda $g"; fi
  done

  # The op table in perf mode: every op of the interface, GPU vs CPU time per row.
  cap=$(budget 60)
  if (( cap )); then
    timeout "$cap" "$bin/glip" bench --ops --device cuda --runs 5 > "$out/bench-ops.txt" 2>&1; rc=$?
    row "bench --ops (op table)" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep -c ' ms ' "$out/bench-ops.txt") rows"
  else skip "bench --ops"; fi

  if command -v compute-sanitizer >/dev/null; then
    for t in "$bin"/test-op_table; do
      local name; name="$(basename "$t")"; cap=$(budget 90)
      if (( cap )); then
        # Every test of the executable, the kernel rows at their reduced sizes.
        GLIP_TABLE_SCALE=reduced timeout "$cap" compute-sanitizer --tool memcheck --error-exitcode 3 "$t" --test-threads=1 > "$out/memcheck-$name.log" 2>&1; rc=$?
        row "memcheck $name" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$out/memcheck-$name.log" | tail -1)"
      else skip "memcheck $name"; fi
    done
  else
    row "compute-sanitizer" "SKIP" "not installed"
  fi

  # PyTorch baselines, then our cuda_* benches, in the same call on the same card.
  for py in "$CARRY"/baseline_*.py; do
    [[ -e "$py" ]] || continue
    local bname; bname="$(basename "$py" .py)"; cap=$(budget 60)
    if (( cap )); then
      timeout "$cap" python3 "$py" --json "$out/$bname.json" > "$out/$bname.log" 2>&1; rc=$?
      row "$bname" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(tail -1 "$out/$bname.log")"
    else skip "$bname"; fi
  done
  for b in "$bin"/bench-*; do
    local name; name="$(basename "$b")"; cap=$(budget 60)
    if (( cap )); then
      timeout "$cap" "$b" --bench cuda_ --warm-up-time 1 --measurement-time 3 --noplot > "$out/$name.log" 2>&1; rc=$?
      row "$name" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep -c 'time:' "$out/$name.log") results"
    else skip "$name"; fi
  done
  # GLIP-T at 256 tokens against its FLOP floor (~708 GMAC, spec section 7) at the card's
  # dense f16 tensor rate (H100 SXM 989 TFLOP/s, PCIe 756; H200 989), and PyTorch when its
  # GPU run exists (not yet carried: row says so).
  python3 - "$out/bench-glip-t.json" "$out/nvidia-smi.txt" "$out/glip_torch_cuda.json" > "$out/glip-t-floor.txt" 2>&1 <<'PY' || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"no GLIP-T bench result ({e})"); sys.exit(0)
smi = open(sys.argv[2]).read()
peak = 756e12 if "PCIe" in smi else 989e12
try:
    torch_ms = json.load(open(sys.argv[3]))["median_s"] * 1e3
except Exception:
    torch_ms = None
for c in r.get("cases", []):
    gmac = 708 if c["tokens"] == 256 else None
    floor = f", floor {2 * gmac * 1e9 / peak * 1e3:.2f} ms ({2 * gmac * 1e9 / peak * 1e3 / c['p50_ms']:.0%} of it)" if gmac else ""
    # PyTorch GLIP always runs 256 tokens: the ratio is stated against that.
    pt = (f"; PyTorch GLIP-T (256 tokens, fp32) {torch_ms:.2f} ms = {torch_ms / c['p50_ms']:.1f}x this"
          if torch_ms else "; PyTorch GLIP-T on this card: no result")
    print(f"GLIP-T {r['network_input']} {c['tokens']} tokens batch {r['batch']}: p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, {c['frames_per_s']:.1f} frames/s{floor}{pt}")
PY
  cat "$out/glip-t-floor.txt" | tee -a "$summary"
  python3 "$CARRY/summarize.py" "$out" "$ROOT/target/criterion" > "$out/perf-table.md" 2>&1 || true
  echo
  echo "== commit $(cat "$CARRY/commit") =="
  cat "$out/perf-table.md"
  echo "== summary =="
  cat "$summary"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
