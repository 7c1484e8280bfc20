#!/usr/bin/env bash
# Runs a command with Kafka, the Schema Registry and VictoriaMetrics up
# (started if they were not running, stopped afterwards if started here),
# and their addresses in AUGUR_KAFKA_BROKERS, AUGUR_REGISTRY_URL, AUGUR_TSDB_URL, AUGUR_KAFKA_LIBS.
set -euo pipefail
cd "$(dirname "$0")/.."
started="$(mktemp)"
trap 'bash scripts/services.sh down --only "$started"; rm -f "$started"' EXIT
bash scripts/services.sh up --record "$started"
eval "$(bash scripts/services.sh env | sed 's/^/export /')"
"$@"
