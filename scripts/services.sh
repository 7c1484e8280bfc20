#!/usr/bin/env bash
# The services of augur's distributed mode, on loopback, for tests and for
# trying it locally:
#   kafka     Apache Kafka in KRaft mode, jars from Maven Central (services/kafka/pom.xml)
#   registry  Apicurio Registry (Confluent-compatible API at /apis/ccompat/v7), from Maven Central
#   tsdb      VictoriaMetrics from Debian's package (InfluxDB line protocol writes)
#
#   scripts/services.sh up [--record FILE] [NAME...]   install what is missing, start what is not running
#   scripts/services.sh down [--only FILE] [NAME...]   stop what this script started
#   scripts/services.sh status [NAME...]               exit 0 if all named are up
#   scripts/services.sh env                            the addresses, as shell variables
#
# Downloads are cached under $AUGUR_CACHE (default ~/.cache/augur; Maven's own
# cache is ~/.m2), so a second start takes seconds. Runtime state (data, logs,
# pids) lives under $AUGUR_SERVICES_DIR (default .services/ in the repository).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${AUGUR_CACHE:-$HOME/.cache/augur}"
STATE="${AUGUR_SERVICES_DIR:-$ROOT/.services}"
KAFKA_VERSION="4.1.1"
APICURIO_VERSION="3.0.9"
KAFKA_PORT="${AUGUR_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${AUGUR_KAFKA_CONTROLLER_PORT:-9093}"
REGISTRY_PORT="${AUGUR_REGISTRY_PORT:-8081}"
TSDB_PORT="${AUGUR_TSDB_PORT:-8428}"
ALL=(kafka registry tsdb)

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, seconds, command...
  local name="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name did not become ready in ${seconds}s; last log lines:"
      tail -n 30 "$STATE/$name.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

need_java() { command -v java >/dev/null || die "java is required (OpenJDK 17 or newer)"; }
need_mvn() { command -v mvn >/dev/null || die "mvn is required to fetch jars from Maven Central"; }

apt_install() { # package, binary
  command -v "$2" >/dev/null && return 0
  command -v apt-get >/dev/null || die "$2 is missing and apt-get is not available; install Debian's $1"
  log "installing Debian package $1"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null; } \
    || die "could not install $1"
}

# ---- installs (cached) ------------------------------------------------------

kafka_libs() { echo "$CACHE/kafka-$KAFKA_VERSION/libs"; }

install_kafka() {
  local libs; libs="$(kafka_libs)"
  [ -f "$libs/.complete" ] && return 0
  need_java; need_mvn
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$ROOT/services/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$libs" >&2 || die "mvn could not fetch the Kafka jars"
  touch "$libs/.complete"
}

registry_home() { echo "$CACHE/apicurio-registry-$APICURIO_VERSION"; }

install_registry() {
  local home; home="$(registry_home)"
  [ -f "$home/.complete" ] && return 0
  need_java; need_mvn
  log "fetching Apicurio Registry $APICURIO_VERSION (io.apicurio:apicurio-registry-app, classifier all) from Maven Central"
  local artifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all"
  mvn -q -B -Dstyle.color=never dependency:get -Dtransitive=false -Dartifact="$artifact" >&2 || die "mvn could not fetch $artifact"
  rm -rf "$home"; mkdir -p "$home"
  tar -xzf "$HOME/.m2/repository/io/apicurio/apicurio-registry-app/$APICURIO_VERSION/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$home"
  [ -f "$home/apicurio-registry-app-$APICURIO_VERSION-runner.jar" ] || die "the Apicurio archive has no runner jar"
  touch "$home/.complete"
}

install_tsdb() { apt_install victoria-metrics victoria-metrics; }

# ---- start / ready / stop ---------------------------------------------------

ready_kafka() { port_open "$KAFKA_PORT"; }
ready_registry() { curl -fsS "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects" >/dev/null 2>&1; }
ready_tsdb() { curl -fsS "http://127.0.0.1:$TSDB_PORT/health" >/dev/null 2>&1; }

start_kafka() {
  install_kafka
  local libs data conf
  libs="$(kafka_libs)"; data="$STATE/kafka/data"; conf="$STATE/kafka/server.properties"
  mkdir -p "$STATE/kafka"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA@|$data|g" \
    "$ROOT/services/kafka/server.properties.in" > "$conf"
  if [ ! -f "$data/meta.properties" ]; then
    local cluster
    cluster="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -cp "$libs/*" -Dlog4j2.configurationFile="$ROOT/services/kafka/log4j2.yaml" \
      kafka.tools.StorageTool format --standalone -t "$cluster" -c "$conf" >>"$STATE/kafka.log" 2>&1 \
      || die "could not format the Kafka log directory (see $STATE/kafka.log)"
  fi
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/services/kafka/log4j2.yaml" \
    -cp "$libs/*" kafka.Kafka "$conf" >>"$STATE/kafka.log" 2>&1 &
  echo $! > "$STATE/kafka.pid"
  wait_for kafka 90 ready_kafka
}

start_registry() {
  install_registry
  local home; home="$(registry_home)"
  # In-memory storage (H2): schemas live as long as the process, which is what tests want.
  nohup java -Xms128m -Xmx512m -Djava.awt.headless=true \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -jar "$home/apicurio-registry-app-$APICURIO_VERSION-runner.jar" >>"$STATE/registry.log" 2>&1 &
  echo $! > "$STATE/registry.pid"
  wait_for registry 180 ready_registry
}

start_tsdb() {
  install_tsdb
  mkdir -p "$STATE/tsdb"
  nohup victoria-metrics -httpListenAddr="127.0.0.1:$TSDB_PORT" -storageDataPath="$STATE/tsdb" \
    -retentionPeriod=100y -search.disableCache -loggerLevel=WARN >>"$STATE/tsdb.log" 2>&1 &
  echo $! > "$STATE/tsdb.pid"
  wait_for tsdb 60 ready_tsdb
}

stop_one() {
  local name="$1" pidfile="$STATE/$1.pid"
  [ -f "$pidfile" ] || { log "$name: not started by this script"; return 0; }
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$pidfile"
}

names_or_all() { if [ "$#" -gt 0 ]; then echo "$@"; else echo "${ALL[@]}"; fi; }

check_name() { case "$1" in kafka|registry|tsdb) ;; *) die "unknown service '$1' (kafka, registry, tsdb)" ;; esac; }

cmd="${1:-status}"; shift || true
record=""; only=""
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --record) record="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) check_name "$1"; args+=("$1"); shift ;;
  esac
done
mkdir -p "$STATE"

case "$cmd" in
  up)
    # shellcheck disable=SC2046
    for name in $(names_or_all "${args[@]+"${args[@]}"}"); do
      if "ready_$name"; then log "$name already running"; continue; fi
      log "starting $name"
      "start_$name"
      log "$name ready"
      if [ -n "$record" ]; then echo "$name" >> "$record"; fi
    done
    ;;
  down)
    names=$(names_or_all "${args[@]+"${args[@]}"}")
    [ -n "$only" ] && names="$( [ -f "$only" ] && cat "$only" || true)"
    for name in $names; do stop_one "$name"; done
    ;;
  status)
    rc=0
    for name in $(names_or_all "${args[@]+"${args[@]}"}"); do
      if "ready_$name"; then echo "$name: up"; else echo "$name: down"; rc=1; fi
    done
    exit "$rc"
    ;;
  env)
    echo "AUGUR_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    echo "AUGUR_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
    echo "AUGUR_TSDB_URL=http://127.0.0.1:$TSDB_PORT"
    echo "AUGUR_KAFKA_LIBS=$(kafka_libs)"
    ;;
  *) die "usage: $0 up|down|status|env [--record FILE] [--only FILE] [kafka|registry|tsdb ...]" ;;
esac
