#!/usr/bin/env bash
# kafka-broker.sh — a real, single-node Apache Kafka 4.x broker for Sluice's tests.
#
# What: fetches the Kafka broker jars from Maven Central (with Maven and the small
# pom beside this script), then runs one KRaft node (broker + controller in one JVM)
# on 127.0.0.1 with reserved ports, with transactions and consumer groups usable on a
# single node (replication factors 1, min ISR 1, no initial rebalance delay).
#
# Usage:
#   kafka-broker.sh fetch            resolve the jars into the cache (no-op when complete)
#   kafka-broker.sh start WORKDIR    fetch if needed, format WORKDIR/data afresh, start the
#                                    broker, wait until it answers a metadata request, print
#                                    the bootstrap address and write it to WORKDIR/bootstrap
#   kafka-broker.sh stop WORKDIR     SIGTERM, wait (bounded), then SIGKILL; logs are kept
#   kafka-broker.sh status WORKDIR   exit 0 and print the address if the broker answers
#   kafka-broker.sh crash WORKDIR    SIGKILL the broker (an outage); data and ports are kept
#   kafka-broker.sh resume WORKDIR   start the crashed broker again on its data and ports
#
# Files in WORKDIR: server.properties, log4j2.properties, broker.log (JVM stdout/stderr,
# the previous run's log is kept as broker.log.prev), broker.pid, bootstrap (host:port,
# one line), bootstrap_sasl (a second listener, SASL_PLAINTEXT with mechanism PLAIN and
# the user sluice / sluice-secret, for the client-security tests), data/ (the KRaft log
# dir, wiped by every start).
#
# Broker settings worth knowing: auto.create.topics.enable=true (producing to a missing
# topic creates it with num.partitions=1), offsets/transaction-state topics have 4
# partitions (fast to create), group.initial.rebalance.delay.ms=0.
#
# Environment:
#   SLUICE_KAFKA_CACHE        jar cache dir (default <repo>/build-cache/kafka-jars)
#   SLUICE_KAFKA_VERSION      org.apache.kafka:kafka_2.13 version (default: the pom's, 4.1.1)
#   SLUICE_KAFKA_HEAP         JVM max heap (default 512m)
#   SLUICE_KAFKA_JVM_OPTS     replaces the default JVM tuning flags (heap, GC, C1-only JIT
#                             for a fast start; drop the latter for broker-heavy benchmarks)
#   SLUICE_KAFKA_START_TIMEOUT seconds to wait for the broker to answer (default 90)
#   SLUICE_KAFKA_STOP_TIMEOUT  seconds between SIGTERM and SIGKILL (default 30)
#   SLUICE_KAFKA_EXTRA_PROPS  extra server.properties lines, newline separated, appended last
#   SLUICE_MAVEN_REPO         Maven local repository (default: Maven's own, ~/.m2/repository)
#   JAVA                      java binary (default: java on PATH; Kafka 4 needs Java 17+)
#
# Needs: bash, java 17+, mvn (fetch only), kcat (readiness check), python3 (reserved ports,
# tests/pylib/sluice_proc.py),
# flock and setsid (util-linux), timeout (coreutils); scripts/install-deps.sh has them all.
#
# Checked with Kafka 4.1.1 (default) and 4.4.0 against Debian's librdkafka 2.0.2. On the
# 2-core dev machine: cold fetch (empty Maven repo) ~15 s, warm no-op ~0.1 s; start ~5 s
# (format + JVM start + first metadata answer); stop ~2 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SLUICE_KAFKA_CACHE:-$REPO/build-cache/kafka-jars}"
POM="$HERE/pom.xml"
JAVA="${JAVA:-java}"
HEAP="${SLUICE_KAFKA_HEAP:-512m}"
START_TIMEOUT="${SLUICE_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${SLUICE_KAFKA_STOP_TIMEOUT:-30}"

die() { echo "kafka-broker: error: $*" >&2; exit 1; }
say() { echo "kafka-broker: $*" >&2; }

# The version to fetch: the env override or the pom's <kafka.version>.
kafka_version() {
  if [ -n "${SLUICE_KAFKA_VERSION:-}" ]; then
    echo "$SLUICE_KAFKA_VERSION"
  else
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1
  fi
}

# The cache is complete when its manifest names this version and the pom's hash,
# and every jar it lists is present.
cache_complete() {
  local want="$1" m="$CACHE/MANIFEST"
  [ -f "$m" ] || return 1
  [ "$(sed -n 's/^version=//p' "$m")" = "$want" ] || return 1
  [ "$(sed -n 's/^pom=//p' "$m")" = "$(sha256sum "$POM" | cut -d' ' -f1)" ] || return 1
  local j
  while IFS= read -r j; do
    [ -s "$CACHE/$j" ] || return 1
  done < <(sed -n 's/^jar=//p' "$m")
  ls "$CACHE"/kafka_2.13-"$want".jar >/dev/null 2>&1
}

# One fetcher at a time per cache (parallel builds may share it). The lock lives on
# fd 9 of a subshell only, so a broker started afterwards never inherits it.
cmd_fetch() {
  mkdir -p "$(dirname "$CACHE")"
  (
    exec 9>"$CACHE.lock"
    flock -w 900 9 || die "timed out waiting for the lock $CACHE.lock"
    fetch_locked
  )
}

fetch_locked() {
  local ver t0 tmp mvnargs
  ver="$(kafka_version)"
  [ -n "$ver" ] || die "cannot read kafka.version from $POM"
  if cache_complete "$ver"; then
    say "jars for Kafka $ver already in $CACHE"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (scripts/install-deps.sh installs maven)"
  t0=$(date +%s)
  say "fetching Kafka $ver broker jars with Maven into $CACHE"
  tmp="$CACHE.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  mvnargs=(-B -q -f "$POM" -Dkafka.version="$ver"
           -DincludeScope=runtime -DoutputDirectory="$tmp")
  if [ -n "${SLUICE_MAVEN_REPO:-}" ]; then mvnargs+=(-Dmaven.repo.local="$SLUICE_MAVEN_REPO"); fi
  # copy-dependencies writes nothing beside the pom for a pom-packaged project.
  if ! mvn "${mvnargs[@]}" dependency:copy-dependencies >"$tmp.mvn.log" 2>&1; then
    tail -n 40 "$tmp.mvn.log" >&2
    rm -rf "$tmp"
    die "Maven could not resolve the Kafka $ver jars (log above)"
  fi
  [ -s "$tmp/kafka_2.13-$ver.jar" ] || die "Maven ran but kafka_2.13-$ver.jar is missing in $tmp"
  {
    echo "version=$ver"
    echo "pom=$(sha256sum "$POM" | cut -d' ' -f1)"
    (cd "$tmp" && ls -1 -- *.jar) | sed 's/^/jar=/'
  } > "$tmp/MANIFEST"
  rm -f "$tmp.mvn.log"
  rm -rf "$CACHE"
  mv "$tmp" "$CACHE"
  say "fetched $(grep -c '^jar=' "$CACHE/MANIFEST") jars in $(( $(date +%s) - t0 )) s"
}

# Port reservations (tests/pylib/sluice_proc.py): sockets bound with
# SO_REUSEADDR|SO_REUSEPORT that never listen. While one is held no other
# process gets its port (bind(0), connect(), a plain bind), but the JVM's
# listeners (SO_REUSEADDR, Java's default) can bind it.
PORTS_PY="$HERE/../pylib/sluice_proc.py"
python_bin() {
  local py
  py="$(command -v python3 || true)"
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  [ -n "$py" ] || die "python3 not found (needed to reserve ports)"
  echo "$py"
}

# reserve_start_ports WD: three ports for a starting broker in PORTS (space-
# separated), held by a child (pid in HOLDER) until release_start_ports or
# this script's exit: nobody can take them before the JVM binds them.
reserve_start_ports() {
  local wd="$1" i
  rm -f "$wd/ports.start"
  "$(python_bin)" "$PORTS_PY" hold 3 "$wd/ports.start" </dev/null >/dev/null 2>&1 &
  HOLDER=$!
  for i in $(seq 1 200); do [ -s "$wd/ports.start" ] && break; sleep 0.05; done
  [ -s "$wd/ports.start" ] || die "could not reserve ports"
  PORTS="$(tr '\n' ' ' < "$wd/ports.start")"
}
release_start_ports() {
  [ -n "${HOLDER:-}" ] && kill "$HOLDER" 2>/dev/null
  HOLDER=
  rm -f "$1/ports.start"
}

# hold_ports WD: after a crash, holds the broker's three ports (its listeners
# in WD/server.properties) until resume or stop (release_ports): resume needs
# them back, and another process could take one while the broker is down.
# The holder outlives this script (setsid); its pid is in WD/ports.holder.
hold_ports() {
  local wd="$1" ports i
  ports="$(sed -n 's/^listeners=//p' "$wd/server.properties" | grep -o ':[0-9]*' | tr -d ':' | tr '\n' ' ')"
  rm -f "$wd/ports.holder"
  setsid "$(python_bin)" "$PORTS_PY" hold-ports "$wd/ports.holder" $ports </dev/null >/dev/null 2>&1 &
  for i in $(seq 1 200); do [ -s "$wd/ports.holder" ] && return 0; sleep 0.05; done
  say "could not hold the ports $ports while the broker is down (resume may find one taken)"
}
release_ports() {
  local wd="$1" pid
  [ -f "$wd/ports.holder" ] || return 0
  pid="$(cat "$wd/ports.holder")"
  # only our holder (guards against pid reuse)
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "hold-ports $wd/ports.holder"; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
  rm -f "$wd/ports.holder"
}

# Is PID alive and the Kafka JVM of this WORKDIR (guards against PID reuse)?
is_our_broker() {
  local pid="$1" wd="$2"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $wd/server.properties"
}

read_pid() { if [ -f "$1/broker.pid" ]; then cat "$1/broker.pid"; fi; }

# Does the broker at ADDR answer a metadata request (and list itself)? A cheap TCP
# connect first, so a port nobody listens on yet costs no kcat time-out.
answers_metadata() {
  local host="${1%:*}" port="${1##*:}"
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null || return 1
  timeout 10 kcat -L -b "$1" -m 5 2>/dev/null | grep -q '1 brokers:'
}

write_config() {
  local wd="$1" port="$2" cport="$3" sport="$4"
  cat > "$wd/server.properties" <<EOF
# Written by tests/kafka/kafka-broker.sh: one KRaft node, broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_sluice="sluice-secret";
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$wd/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.retention.hours=168
EOF
  if [ -n "${SLUICE_KAFKA_EXTRA_PROPS:-}" ]; then
    printf '%s\n' "$SLUICE_KAFKA_EXTRA_PROPS" >> "$wd/server.properties"
  fi
  cat > "$wd/log4j2.properties" <<'EOF'
# Broker logging for tests: INFO to stdout (kafka-broker.sh sends it to broker.log).
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

# JVM flags: a modest heap (2 cores, other tests run beside it) and fast start-up.
# Fills the array JOPTS; SLUICE_KAFKA_JVM_OPTS (word-split) replaces the tuning flags.
java_opts() {
  local wd="$1"
  if [ -n "${SLUICE_KAFKA_JVM_OPTS:-}" ]; then
    read -r -a JOPTS <<< "$SLUICE_KAFKA_JVM_OPTS"
  else
    JOPTS=(-Xmx"$HEAP" -Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k)
  fi
  JOPTS+=(-Djava.awt.headless=true "-Dlog4j2.configurationFile=$wd/log4j2.properties")
}

cmd_start() {
  local wd="$1" t0 id port cport sport pid addr attempt deadline
  t0=$(date +%s)
  mkdir -p "$wd"
  wd="$(cd "$wd" && pwd)"
  command -v "$JAVA" >/dev/null || die "java not found (scripts/install-deps.sh installs openjdk-17)"
  command -v kcat >/dev/null || die "kcat not found (scripts/install-deps.sh installs it)"
  cmd_fetch
  # A broker left over from an earlier run of this WORKDIR is stopped first.
  if is_our_broker "$(read_pid "$wd")" "$wd"; then
    say "stopping the broker left running in $wd"
    cmd_stop "$wd"
  fi
  rm -f "$wd/bootstrap" "$wd/bootstrap_sasl" "$wd/broker.pid"
  [ -f "$wd/broker.log" ] && mv -f "$wd/broker.log" "$wd/broker.log.prev"

  # Reserved ports (held until the broker answers); two tries all the same.
  for attempt in 1 2; do
    reserve_start_ports "$wd"
    read -r port cport sport <<< "$PORTS"
    addr="127.0.0.1:$port"
    write_config "$wd" "$port" "$cport" "$sport"
    rm -rf "$wd/data"
    # A fresh cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid).
    # One id in 64 starts with '-', which the StorageTool's parser takes for an option
    # ("expected one argument"): such ids are drawn again, and the id is passed as
    # --cluster-id=ID besides.
    id=-
    while [ "${id#-}" != "$id" ]; do
      id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    done
    java_opts "$wd"
    if ! "$JAVA" "${JOPTS[@]}" -cp "$CACHE/*" kafka.tools.StorageTool format \
          --cluster-id="$id" -c "$wd/server.properties" > "$wd/format.log" 2>&1; then
      tail -n 30 "$wd/format.log" >&2
      die "formatting $wd/data failed"
    fi
    # setsid + all fds redirected: ctest must not wait on the broker's pipes.
    setsid "$JAVA" "${JOPTS[@]}" -cp "$CACHE/*" \
      kafka.Kafka "$wd/server.properties" </dev/null >"$wd/broker.log" 2>&1 &
    pid=$!
    echo "$pid" > "$wd/broker.pid"
    deadline=$(( $(date +%s) + START_TIMEOUT ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if answers_metadata "$addr"; then
        release_start_ports "$wd"
        echo "127.0.0.1:$sport" > "$wd/bootstrap_sasl"
        echo "$addr" > "$wd/bootstrap.tmp"
        mv -f "$wd/bootstrap.tmp" "$wd/bootstrap"
        say "broker pid $pid up at $addr in $(( $(date +%s) - t0 )) s (logs: $wd/broker.log)"
        echo "$addr"
        return 0
      fi
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "broker did not answer within ${START_TIMEOUT}s; last log lines:"
      tail -n 40 "$wd/broker.log" >&2
      cmd_stop "$wd"
      die "broker start timed out"
    fi
    release_start_ports "$wd"
    if [ "$attempt" = 1 ] && grep -q 'Address already in use' "$wd/broker.log"; then
      say "port taken before the broker bound it; retrying with new ports"
      mv -f "$wd/broker.log" "$wd/broker.log.prev"
      continue
    fi
    say "broker exited during start; last log lines of $wd/broker.log:"
    tail -n 40 "$wd/broker.log" >&2
    rm -f "$wd/broker.pid"
    die "broker failed to start"
  done
}

cmd_stop() {
  local wd="$1" pid i
  [ -d "$wd" ] || { say "no such workdir $wd; nothing to stop"; return 0; }
  wd="$(cd "$wd" && pwd)"
  release_ports "$wd"
  pid="$(read_pid "$wd")"
  if ! is_our_broker "$pid" "$wd"; then
    say "no broker running for $wd"
    rm -f "$wd/broker.pid" "$wd/bootstrap"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "broker pid $pid still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$wd/broker.pid" "$wd/bootstrap"
  say "broker pid $pid stopped (logs kept in $wd)"
}

cmd_status() {
  local wd="$1" pid addr
  wd="$(cd "$wd" 2>/dev/null && pwd)" || { echo "stopped (no workdir)"; return 1; }
  pid="$(read_pid "$wd")"
  if ! is_our_broker "$pid" "$wd"; then echo "stopped"; return 1; fi
  addr="$(cat "$wd/bootstrap" 2>/dev/null || true)"
  if [ -n "$addr" ] && answers_metadata "$addr"; then
    echo "running pid $pid at $addr"
    return 0
  fi
  echo "running pid $pid but not answering${addr:+ at $addr}"
  return 1
}

cmd_crash() {
  local wd pid
  wd="$(cd "$1" && pwd)"
  pid="$(read_pid "$wd")"
  is_our_broker "$pid" "$wd" || die "no broker running for $wd"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  hold_ports "$wd"
  say "broker pid $pid killed (data and ports kept; 'resume' starts it again)"
}

cmd_resume() {
  local wd pid addr deadline t0
  t0=$(date +%s)
  wd="$(cd "$1" && pwd)"
  [ -f "$wd/server.properties" ] && [ -d "$wd/data" ] || die "nothing to resume in $wd"
  is_our_broker "$(read_pid "$wd")" "$wd" && die "the broker of $wd is running"
  addr="127.0.0.1:$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$wd/server.properties")"
  java_opts "$wd"
  [ -f "$wd/broker.log" ] && mv -f "$wd/broker.log" "$wd/broker.log.prev"
  setsid "$JAVA" "${JOPTS[@]}" -cp "$CACHE/*" \
    kafka.Kafka "$wd/server.properties" </dev/null >"$wd/broker.log" 2>&1 &
  pid=$!
  echo "$pid" > "$wd/broker.pid"
  deadline=$(( $(date +%s) + START_TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || { tail -n 40 "$wd/broker.log" >&2; die "broker exited during resume"; }
    if answers_metadata "$addr"; then
      release_ports "$wd"
      echo "$addr" > "$wd/bootstrap"
      say "broker pid $pid resumed at $addr in $(( $(date +%s) - t0 )) s"
      return 0
    fi
    sleep 0.25
  done
  tail -n 40 "$wd/broker.log" >&2
  die "broker did not answer within ${START_TIMEOUT}s after resume"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  fetch)  cmd_fetch ;;
  start)  [ $# -eq 2 ] || usage; cmd_start "$2" ;;
  stop)   [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  status) [ $# -eq 2 ] || usage; cmd_status "$2" ;;
  crash)  [ $# -eq 2 ] || usage; cmd_crash "$2" ;;
  resume) [ $# -eq 2 ] || usage; cmd_resume "$2" ;;
  *) usage ;;
esac
