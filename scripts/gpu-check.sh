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

build() {
  set -e
  cd "$ROOT"
  ./scripts/install-cuda-toolchain.sh >/dev/null
  export GLIP_REQUIRE_NVCC=1
  rm -rf "$CARRY"; mkdir -p "$CARRY/bin"
  local list="$CARRY/executables.txt"
  : > "$list"
  # Test executables that exercise the GPU (parity_* and the gate), the CLI, and benches.
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
  # Keep the GPU-relevant test executables (and every bench); strip debug info.
  local staged="$CARRY/stage"; mkdir -p "$staged"
  cp "target/$PROFILE/glip" "$staged/glip"
  while read -r kind name exe; do
    case "$kind:$name" in
      test:parity_*|test:op_table|test:golden_*|test:gpu_gating|test:kernel_names|test:replay|bench:*)
        cp "$exe" "$staged/$kind-$name" ;;
    esac
  done < "$list"
  strip "$staged"/* 2>/dev/null || true
  # Tests find their data through the path they were built at; record it.
  echo "$ROOT" > "$CARRY/build_root"
  git rev-parse HEAD > "$CARRY/commit" 2>/dev/null || echo unknown > "$CARRY/commit"
  # One xz block with a dictionary larger than any executable: the executables share most of
  # their code (the library), which a large window finds across files.
  tar -C "$staged" -cf - . | xz -T1 -9e --memlimit-compress=2GiB > "$CARRY/bundle.tar.xz"
  rm -rf "$staged"
  cp scripts/baselines/*.py "$CARRY/"
  du -sh "$CARRY"
  local tree_mb carry_mb
  tree_mb=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  carry_mb=$(du -sb "$CARRY" | cut -f1)
  echo "tracked tree: $((tree_mb / 1048576)) MiB, carry: $((carry_mb / 1048576)) MiB (limit 64 MiB together)"
  if (( tree_mb + carry_mb > 64 * 1048576 )); then
    echo "gpu-check build: tree + carry exceed the device call's 64 MiB limit" >&2
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
  timeout 300 "$bin/glip" doctor > "$out/doctor.txt" 2>&1; local rc=$?
  row "glip doctor" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -c PASS "$out/doctor.txt") families passed"

  for t in "$bin"/test-*; do
    local name; name="$(basename "$t")"
    timeout 300 "$t" --test-threads=1 > "$out/$name.log" 2>&1; rc=$?
    row "$name" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -E '^test result' "$out/$name.log" | tail -1)"
  done

  # The whole pipeline on the GPU: every end-to-end golden through `glip detect` (ops without a
  # kernel fall back to the CPU and are listed), then GLIP-T-shaped random weights at 800x1333
  # on the GPU and on this machine's CPU, in the same call.
  local gd="$ROOT/tests/testdata/golden"
  for cfg in "$gd"/*_e2e_*_config.yaml; do
    local g caption; g="$(basename "$cfg" _config.yaml)"
    caption="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["caption"])' "$gd/$g.json")"
    timeout 300 "$bin/glip" detect --device cuda -v --format json --config "$cfg" \
      --weights "$gd/${g}_weights.safetensors" --bert-config "$ROOT/tests/testdata/tiny_bert_config.json" \
      --image "$gd/${g}_photo.png" --prompt "$caption" > "$out/detect-$g.json" 2> "$out/detect-$g.log"; rc=$?
    row "detect --device cuda $g" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -o '"score"' "$out/detect-$g.json" 2>/dev/null | wc -l) boxes; $(grep -m1 'ops run on the CPU' "$out/detect-$g.log")"
  done
  for dev in cuda cpu; do
    timeout 240 "$bin/glip" bench --device "$dev" --size 800x1333 --runs 1 --coco false --tokens 8 \
      > "$out/bench-glip-t-$dev.txt" 2>&1; rc=$?
    row "bench GLIP-T 800x1333 $dev" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep 'total per frame' "$out/bench-glip-t-$dev.txt" | tail -1)"
  done

  # The op table in perf mode: every op of the interface, GPU vs CPU time per row.
  timeout 240 "$bin/glip" bench --ops --device cuda --runs 5 > "$out/bench-ops.txt" 2>&1; rc=$?
  row "bench --ops (op table)" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep -c ' ms ' "$out/bench-ops.txt") rows"

  if command -v compute-sanitizer >/dev/null; then
    for t in "$bin"/test-parity_* "$bin"/test-op_table; do
      local name; name="$(basename "$t")"
      # Every test of the executable: the CPU-only ones are cheap, and GPU test names vary.
      timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 "$t" --test-threads=1 > "$out/memcheck-$name.log" 2>&1; rc=$?
      row "memcheck $name" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$out/memcheck-$name.log" | tail -1)"
    done
  else
    row "compute-sanitizer" "SKIP" "not installed"
  fi

  # PyTorch baselines, then our cuda_* benches, in the same call on the same card.
  for py in "$CARRY"/baseline_*.py; do
    [[ -e "$py" ]] || continue
    local bname; bname="$(basename "$py" .py)"
    timeout 120 python3 "$py" --json "$out/$bname.json" > "$out/$bname.log" 2>&1; rc=$?
    row "$bname" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(tail -1 "$out/$bname.log")"
  done
  for b in "$bin"/bench-*; do
    local name; name="$(basename "$b")"
    timeout 240 "$b" --bench cuda_ --warm-up-time 1 --measurement-time 3 --noplot > "$out/$name.log" 2>&1; rc=$?
    row "$name" "$([[ $rc == 0 ]] && echo DONE || echo FAIL)" "$(grep -c 'time:' "$out/$name.log") results"
  done
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
