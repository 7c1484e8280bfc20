#!/usr/bin/env bash
# Runs augur's tests: `unit`, `integration`, or both (default).
# Installs dependencies if missing, builds, then runs node's test runner on
# the compiled tests. Services that later suites need are started by
# scripts/services.sh from here, and stopped if this script started them.
set -euo pipefail
cd "$(dirname "$0")/.."

suite="${1:-all}"
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
fi
npm run --silent build

files=()
case "$suite" in
  unit) mapfile -t files < <(find dist/test/unit -name '*.test.js' | sort) ;;
  integration) mapfile -t files < <(find dist/test/integration -name '*.test.js' | sort) ;;
  all) mapfile -t files < <(find dist/test/unit dist/test/integration -name '*.test.js' | sort) ;;
  *) echo "usage: $0 [unit|integration|all]" >&2; exit 2 ;;
esac
if [ "${#files[@]}" -eq 0 ]; then
  echo "no test files for suite '$suite'" >&2
  exit 1
fi

mkdir -p test-artifacts
if [ "$suite" = unit ]; then
  exec node --test --test-reporter=spec --test-concurrency=1 "${files[@]}"
fi
# Integration tests run against real Kafka, Schema Registry and VictoriaMetrics
# (started if not running, stopped after), and read topics with Debian's kcat.
command -v kcat >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null; }; }
# The dashboard's browser tests drive Debian's headless Chromium with playwright-core.
command -v chromium >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }
exec bash scripts/with-services.sh node --test --test-reporter=spec --test-concurrency=1 "${files[@]}"
