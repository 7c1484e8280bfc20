#!/usr/bin/env bash
# The GPU connector's real check, for a machine with an NVIDIA GPU. It
# records what nvidia-smi prints there (new fixtures for the parsers) and, if
# Node.js is there, runs test/integration/gpu.test.ts against the real GPU.
# Needs `npm run build` beforehand (dist/ and node_modules/zod travel with it).
# Writes everything under $OUT (default ./gpu-check-out); only queries, never
# changes a device setting.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
smi="${AUGUR_NVIDIA_SMI:-$(command -v nvidia-smi || echo /usr/bin/nvidia-smi)}"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -a)"
  echo "node: $(command -v node && node --version)"
} > "$out/env.txt" 2>&1
"$smi" -L > "$out/nvidia-smi-L.txt" 2>&1
"$smi" --query-gpu=index,uuid,name,utilization.gpu,utilization.memory,memory.used,memory.total --format=csv,nounits > "$out/query-gpu.csv" 2>&1
"$smi" --query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total --format=csv > "$out/query-gpu-units.csv" 2>&1
"$smi" --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,nounits > "$out/compute-apps.csv" 2>&1
"$smi" pmon -c 1 -s u > "$out/pmon.txt" 2>&1
"$smi" --query-gpu=index,compute_mode,persistence_mode,mig.mode.current,power.limit --format=csv > "$out/device-settings-before.csv" 2>&1
status=0
if command -v node >/dev/null && [ -f dist/test/integration/gpu.test.js ]; then
  AUGUR_NVIDIA_SMI="$smi" node --test --test-reporter=tap dist/test/integration/gpu.test.js > "$out/gpu-test.tap" 2>&1
  status=$?
else
  echo "node or dist/ missing: recorded outputs only" > "$out/gpu-test.tap"
fi
"$smi" --query-gpu=index,compute_mode,persistence_mode,mig.mode.current,power.limit --format=csv > "$out/device-settings-after.csv" 2>&1
cmp -s "$out/device-settings-before.csv" "$out/device-settings-after.csv" || { echo "device settings changed" >&2; status=1; }
echo "{\"status\": $status, \"out\": \"$out\"}"
exit $status
