#!/usr/bin/env bash
# Builds and runs every test through ctest, three times over:
#   build/       the normal build: unit, end-to-end and scenario tests, a short soak
#   build-asan/  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   build-fuzz/  every libFuzzer target for a short bounded time (clang)
# Stops at the first failing phase, and always ends with a summary: a line per
# test group (unit, e2e, scenario, soak, fuzz) and phase, with its count and time.
# MAILNET_FUZZ_SECONDS sets the fuzzing time per target.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=2
started=$SECONDS
reports=()

summary() {
  local status=$?
  echo "== summary"
  if [ ${#reports[@]} -gt 0 ]; then
    python3 - "${reports[@]}" <<'PY' || true
import os, sys, xml.etree.ElementTree as ET
# Each argument: phase=path of a ctest JUnit report.
for arg in sys.argv[1:]:
    phase, path = arg.split("=", 1)
    if not os.path.exists(path):
        print(f"{phase:6} (no report: the phase did not get to run its tests)")
        continue
    groups = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        group = "fuzz" if name.startswith("fuzz_") else name.split("_", 1)[0]
        g = groups.setdefault(group, {"passed": 0, "failed": 0, "skipped": 0, "time": 0.0, "names": []})
        g["time"] += float(case.get("time") or 0)
        if case.find("failure") is not None or case.get("status") == "fail":
            g["failed"] += 1
            g["names"].append(name)
        elif case.find("skipped") is not None or case.get("status") == "notrun":
            g["skipped"] += 1
        else:
            g["passed"] += 1
    for group, g in sorted(groups.items()):
        line = f"{phase:6} {group:9} {g['passed']:3} passed {g['failed']:2} failed"
        if g["skipped"]:
            line += f" {g['skipped']:2} not run"
        line += f"   {g['time']:7.1f} s of test time"
        if g["names"]:
            line += "   failed: " + " ".join(g["names"])
        print(line)
PY
  fi
  local wall=$((SECONDS - started))
  echo "wall time $((wall / 60)) min $((wall % 60)) s; $([ $status -eq 0 ] && echo passed || echo "FAILED (exit $status)")"
}
trap summary EXIT

run_ctest() {  # phase, build folder, ctest arguments...
  local phase=$1 dir=$2
  shift 2
  local report="$PWD/$dir/ctest-junit.xml"
  rm -f "$report"
  reports+=("$phase=$report")
  ctest --test-dir "$dir" --output-on-failure --output-junit "$report" -j"$jobs" "$@"
}

echo "== build and test"
cmake -S . -B build -G Ninja
cmake --build build -j"$jobs"
run_ctest normal build

echo "== the same under ASan and UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMAILNET_SANITIZE=ON -DBUILD_TESTING=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest asan build-asan

echo "== fuzz targets, ${MAILNET_FUZZ_SECONDS:-20} s each"
CXX=clang++ cmake -S fuzz -B build-fuzz -G Ninja -DMAILNET_FUZZ_SECONDS="${MAILNET_FUZZ_SECONDS:-20}"
cmake --build build-fuzz -j"$jobs"
run_ctest fuzz build-fuzz
