#!/usr/bin/env bash
# bench/ingest.sh - gateway notifications per second into collectd with the
# plugin, beside three peers, at QoS 0, 1, 2.
#
# Usage: bench/ingest.sh WORKDIR BUILDDIR [RUNS [MESSAGES]]
#
# On 127.0.0.1 and a free port: one mosquitto (no persistence, unlimited
# queues) and one collectd: the bench's plugin bm_count (standing for
# write_prometheus & co.: it counts the values reaching collectd's write
# path; and for the syslog plugin of Debian's collectd.conf, at LogLevel
# info: lines logged, notifications not), bimetri.so with one
# Gateway of 100 relays, and collectd's stock mqtt plugin subscribed to
# collectd/#. Each run publishes MESSAGES messages at the QoS under test
# with BUILDDIR/ingest_pub (libmosquitto, all queued at once, 20 in flight;
# bounded to 60 s, as a broker stall can stop the publisher too), timed
# from its first publish (it prints the time) until the last value or
# message arrived:
#   ours           extDOStateChanged notifications (the protocol example's
#                  shape, round-robin over the 100 relays, each flipping its
#                  relay) until bm_count saw MESSAGES bimetri "bool" values,
#                  the relay states dispatched as metrics;
#   mosquitto_sub  the same messages on a topic of its own, -C MESSAGES
#                  >/dev/null, until it exits: the broker's limit;
#   collectd mqtt  the same number of values in the stock plugin's format
#                  (topic collectd/benchhost/mqttpeer/gauge-rN, "N:0|1")
#                  until bm_count saw them all;
#   paho script    bench/paho_consumer.py (paho-mqtt + json, a dict of
#                  relay states) on its own topic, until its last message;
#   collectd floor bench/bm_floor.c, in the same collectd: the same messages
#                  on a topic of its own, a value dispatched for each
#                  without reading it (libmosquitto and collectd's dispatch
#                  alone) until bm_count saw them all: no peer to beat but
#                  the floor under any collectd plugin, ours included; its
#                  ratio to mosquitto_sub is the most a collectd plugin
#                  reaches on the machine.
# The plugin subscribes at the QoS under test (its SubscribeQoS), as the
# peers do. The four take turns at going first. Prints bench/run's CSV
# rows (header first); progress on stderr. INGEST_QOS (default "0 1 2")
# picks the QoS levels; INGEST_PEERS (default "sub mqtt paho floor") the
# peers;
# INGEST_LOG=logfile logs with collectd's logfile plugin instead (LogLevel
# info), which also writes every notification, opening the file for each.
# INGEST_JOURNAL_SYNC sets the plugin's JournalSync (default always, the
# plugin's default).
# INGEST_PUB_INFLIGHT sets the publisher's messages in flight (default 20;
# 0: no limit). INGEST_CPU=1 adds the rows "consumer CPU per message": the
# CPU time of each consumer's process over its runs, per message (ours and
# the mqtt plugin: collectd's, from its threads' schedstat; mosquitto_sub
# and the paho script: from `times`, in 10 ms ticks, so only for long runs).
set -u -o pipefail

work=$1
build=$2
runs=${3:-5}
n=${4:-20000}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
so=${INGEST_SO:-$repo/build/.libs/bimetri.so} # the plugin under test
gwsim=$repo/build/bimetri-gwsim
py=/usr/bin/python3
topic=application/third-party/flexyWattApp/1
peer_topic=application/third-party/benchPeerApp/1 # collectd does not see it
floor_topic=application/third-party/benchFloorApp/1 # bm_floor's alone
nrelays=100
peers=(${INGEST_PEERS:-sub mqtt paho floor})
BENCH_NAME=ingest
. "$repo/bench/lib.sh"

now_ns() { date +%s%N; }
# ingest_pub, bounded (see above): prints the time of its first publish.
publish() { timeout 60 "$build/ingest_pub" "$@"; }

bench_need "$so" "$gwsim" "$build/ingest_pub" "$build/bm_count.so" "$build/bm_wait" \
  "$build/bm_floor.so"
((n % (2 * nrelays) == 0)) || { say "MESSAGES must be a multiple of $((2 * nrelays))"; exit 2; }

# ---- the broker: unlimited queues, no limit on the messages in flight to
# each subscriber: with its default quota of 20, Debian 12's mosquitto
# 2.0.11 stops delivering QoS 2 messages to a subscriber once the quota is
# full, plain mosquitto_sub included (inflight-quota fixes in 2.0.13).
# The publisher keeps 20 in flight, which bounds what the broker has to send.
bench_start_mosquitto "max_queued_messages 1000000" "max_inflight_messages 0" || exit 1

# ---- the messages: MESSAGES lines, relays round-robin, status flipping;
# every relay gets an even number, so a run ends where it began and the
# next run's messages flip again. The mqtt peer's: the same relays and
# values in collectd's own topic and payload format.
awk -v n="$n" -v nr="$nrelays" -v dir="$work" 'BEGIN {
  for (i = 0; i < n; i++) {
    r = i % nr; s = int(i / nr) % 2 ? 0 : 1
    printf "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\",\"command\":\"setExtDO\",\"notificationType\":\"extDOStateChanged\",\"userName\":\"Flexywatt User\",\"userId\":12345,\"parameters\":{\"resourceId\":%d,\"brand\":\"Bimetri\",\"model\":\"BMM620\",\"networkId\":\"26:AA:E0:23:23:5E\",\"organizationId\":23456,\"output\":%d,\"status\":%d}}\n", 1001 + int(r / 10), 1 + r % 10, s > (dir "/messages")
    printf "collectd/benchhost/mqttpeer/gauge-r%d N:%d\n", r, s > (dir "/mqtt_messages")
  }
}'

bench_token "$gwsim" || exit 1
mkdir -p "$work/plugins"
cp "$so" "$work/plugins/bimetri.so"
cp "$build/bm_count.so" "$work/plugins/bm_count.so"
cp "$build/bm_floor.so" "$work/plugins/bm_floor.so"
log=${INGEST_LOG:-syslog}
case $log in
syslog | logfile) ;;
*) say "INGEST_LOG: syslog (the default) or logfile"; exit 2 ;;
esac
for p in logfile mqtt; do
  cp "/usr/lib/collectd/$p.so" "$work/plugins/$p.so"
done

start_collectd() { # QOS
  local relays="" r
  for ((r = 0; r < nrelays; r++)); do
    relays+="    <Relay \"r$r\">
      ResourceId $((1001 + r / 10))
      Output $((1 + r % 10))
    </Relay>
"
  done
  # A journal left by an earlier invocation in the same WORKDIR restores
  # states: a first message repeating one changes nothing, dispatches no
  # value, and the run ends only with the next interval's values.
  rm -f "$work/collectd.log" "$work"/*.count "$work"/bimetri-*.journal*
  local log_line="Log \"$work/collectd.log\"" logfile=""
  if [[ $log == logfile ]]; then
    log_line=""
    logfile="LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File \"$work/collectd.log\"
  Timestamp true
  PrintSeverity true
</Plugin>"
  fi
  cat >"$work/collectd.conf" <<EOF2
Hostname "benchhost"
FQDNLookup false
Interval 10
BaseDir "$work"
PIDFile "$work/collectd.pid"
PluginDir "$work/plugins"
TypesDB "/usr/share/collectd/types.db"
$logfile
LoadPlugin bm_count
<Plugin bm_count>
  $log_line
  Count "bimetri" "bool" "$work/ours.count"
  Count "mqttpeer" "gauge" "$work/mqtt.count"
  Count "bmfloor" "bool" "$work/floor.count"
</Plugin>
LoadPlugin bm_floor
<Plugin bm_floor>
  Host "127.0.0.1"
  Port $port
  Topic "$floor_topic"
  QoS $1
  Relays $nrelays
</Plugin>
LoadPlugin mqtt
<Plugin mqtt>
  <Subscribe "bench">
    Host "127.0.0.1"
    Port $port
    ClientId "bench-mqtt-peer"
    Topic "collectd/#"
    QoS $1
    CleanSession true
  </Subscribe>
</Plugin>
LoadPlugin bimetri
<Plugin bimetri>
  <Gateway "plant1">
    Host "127.0.0.1"
    Port $port
    AppName "flexyWattApp"
    InstanceId "1"
    UserId 12345
    OrganizationId 23456
    TokenFile "$work/token"
    QoS $1
    SubscribeQoS $1
    JournalSync ${INGEST_JOURNAL_SYNC:-always}
$relays  </Gateway>
</Plugin>
EOF2
  collectd -f -C "$work/collectd.conf" >"$work/collectd.out" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  for _ in $(seq 200); do
    # bimetri's "subscribed to" and bm_floor's (no file yet: no count)
    subscribed=$(grep -cs 'subscribed to' "$work/collectd.log")
    ((${subscribed:-0} >= 2)) && {
      sleep 0.5 # the mqtt plugin has no log line of its own for that
      return 0
    }
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.05
  done
  say "collectd did not subscribe; its log:"
  tail -n 20 "$work/collectd.log" "$work/collectd.out" >&2 2>/dev/null
  return 1
}

stop_collectd() {
  kill -TERM "$cpid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$cpid" 2>/dev/null
  wait "$cpid" 2>/dev/null
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$cpid" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

rate() { # T0_NS T1_NS
  awk -v a="$1" -v b="$2" -v n="$n" 'BEGIN { printf "%.6g\n", n / ((b - a) / 1e9) }'
}

# timed_child TIMES_FILE CMD...: runs CMD and waits for it, then writes the
# `times` of the shell running it to TIMES_FILE; returns CMD's status. Run
# in the background, as a subshell of its own: a TERM to it ends CMD too.
timed_child() {
  local times=$1 child rc
  shift
  "$@" &
  child=$!
  trap 'kill "$child" 2>/dev/null' TERM
  wait "$child"
  rc=$?
  times >"$times"
  return "$rc"
}

# CPU ns of the processes a subshell waited for, from what its `times` wrote
# (its second line: the children's user and system time, in 10 ms ticks:
# enough over the long run's seconds, too coarse for 20,000 messages).
children_cpu_ns() { # TIMES_FILE
  awk 'NR == 2 { t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%.0f\n", t * 1e9 }' "$1"
}

# One run through collectd: messages FILE on TOPIC, counted in COUNTFILE.
run_collectd() { # QOS TOPIC FILE COUNTFILE NAME
  local base t0 t1 c0 c1
  base=$(bench_count_of "$4")
  c0=$(bench_cpu_ns "$cpid")
  t0=$(publish "$port" "$2" "$1" "$3") ||
    { say "$5: ingest_pub failed"; return 1; }
  t1=$("$build/bm_wait" "$4" $((base + n)) 10) || {
    say "QoS $1: $5: collectd dispatched $(($(bench_count_of "$4") - base)) of $n values"
    grep -v 'Notification:' "$work/collectd.log" | tail -n 5 >&2
    return 1
  }
  c1=$(bench_cpu_ns "$cpid")
  echo "$(rate "$t0" "$t1") $((c1 - c0))"
}

run_ours() { run_collectd "$1" "$topic" "$work/messages" "$work/ours.count" "plugin"; }
run_mqtt() { run_collectd "$1" - "$work/mqtt_messages" "$work/mqtt.count" "mqtt plugin"; }
run_floor() { run_collectd "$1" "$floor_topic" "$work/messages" "$work/floor.count" "floor plugin"; }

run_sub() { # QOS
  local t0 t1 sub
  timed_child "$work/sub.times" timeout 30 mosquitto_sub -h 127.0.0.1 \
    -p "$port" -q "$1" -t "$peer_topic" -C "$n" >/dev/null &
  sub=$!
  sleep 0.3 # subscribed (mosquitto_sub has no ready signal)
  t0=$(publish "$port" "$peer_topic" "$1" "$work/messages") ||
    { say "mosquitto_sub peer: ingest_pub failed"; kill "$sub"; return 1; }
  wait "$sub" || { say "mosquitto_sub did not get all"; return 1; }
  t1=$(now_ns)
  echo "$(rate "$t0" "$t1") $(children_cpu_ns "$work/sub.times")"
}

run_paho() { # QOS
  local t0 t1 out=$work/paho.out
  timed_child "$work/paho.times" timeout 60 "$py" \
    "$repo/bench/paho_consumer.py" "$port" "$peer_topic" "$1" "$n" >"$out" &
  local c=$!
  for _ in $(seq 100); do
    grep -qs ready "$out" && break
    sleep 0.05
  done
  t0=$(publish "$port" "$peer_topic" "$1" "$work/messages") ||
    { say "paho peer: ingest_pub failed"; kill "$c"; return 1; }
  wait "$c" || { say "paho script did not get all"; return 1; }
  t1=$(sed -n 2p "$out")
  echo "$(rate "$t0" "$t1") $(children_cpu_ns "$work/paho.times")"
}


peer_label() {
  case $1 in
  sub) echo "mosquitto_sub >/dev/null" ;;
  mqtt) echo "collectd mqtt plugin" ;;
  paho) echo "paho-mqtt+json script" ;;
  floor) echo "collectd floor (a value per message; no decode)" ;;
  esac
}

echo "$BENCH_ROW_HEADER"
for qos in ${INGEST_QOS:-0 1 2}; do
  start_collectd "$qos" || exit 1
  declare -A got=() cpu=() failed=()
  who=(ours "${peers[@]}")
  lost=0
  for ((r = 0; r < runs && !lost; r++)); do
    line="QoS $qos run $((r + 1)):"
    for ((k = 0; k < ${#who[@]}; k++)); do
      w=${who[(k + r) % ${#who[@]}]}
      v=$(run_"$w" "$qos") || {
        if [[ $w != ours ]]; then
          # A consumer of the broker's stalled: the run is no figure of it
          # (see bench/README, QoS 2 on mosquitto 2.0.11).
          failed[$w]=$((${failed[$w]:-0} + 1))
          line+=" $w (stalled)"
          continue
        fi
        say "QoS $qos: NO FIGURE: run $((r + 1)) did not dispatch every value"
        lost=1
        break
      }
      got[$w]+="${v% *} "
      cpu[$w]+="$(awk -v c="${v#* }" -v n="$n" 'BEGIN { printf "%.6g", c / n / 1000 }') "
      line+=" $w ${v% *}/s"
    done
    ((lost)) || say "$line"
  done
  stop_collectd
  if grep -q 'malformed\|dropped a message' "$work/collectd.log"; then
    say "collectd dropped messages:"; grep 'malformed\|dropped' "$work/collectd.log" | head -3 >&2
    exit 1
  fi
  ((lost)) && continue
  so=$(bench_stats ${got[ours]})
  for w in "${peers[@]}"; do
    if [[ -n ${failed[$w]:-} ]]; then
      say "QoS $qos: $(peer_label "$w"): ${failed[$w]} of $runs runs stalled (no figure)"
    fi
    [[ -n ${got[$w]:-} ]] || continue
    sp=$(bench_stats ${got[$w]})
    awk -v q="$qos" -v n="$n" -v runs="$runs" -v o="$so" -v p="$sp" \
      -v label="$(peer_label "$w")" -v w="$w" -v pruns="$(wc -w <<<"${got[$w]}")" 'BEGIN {
      split(o, a, ","); split(p, b, ",")
      r = a[1] / b[1]
      if (w == "sub") { t = ">= 90% of peer"; ok = r >= 0.9 }
      else if (w == "floor") { t = "" }
      else { t = "ahead of peer"; ok = r > 1 }
      printf "ingest %dk notifications QoS %d,messages/s,higher,%s,%s,%s,%d,%.4g,%s,%s\n",
        n / 1000, q, o, label, p, pruns, r, t, (t == "" ? "" : ok ? "yes" : "no") }'
  done
  if [[ ${INGEST_CPU:-} == 1 ]]; then
    say "QoS $qos: CPU us per message: $(for w in "${who[@]}"; do echo -n "$w ${cpu[$w]:-}; "; done)"
    so=$(bench_stats ${cpu[ours]})
    for w in "${peers[@]}"; do
      [[ -n ${cpu[$w]:-} ]] || continue
      sp=$(bench_stats ${cpu[$w]})
      awk -v q="$qos" -v n="$n" -v o="$so" -v p="$sp" \
        -v label="$(peer_label "$w")" -v pruns="$(wc -w <<<"${cpu[$w]}")" 'BEGIN {
        split(o, a, ","); split(p, b, ",")
        printf "consumer CPU per message ingest %dk QoS %d,us,lower,%s,%s,%s,%d,%.4g,,\n",
          n / 1000, q, o, label, p, pruns, a[1] / b[1] }'
    done
  fi
  unset got cpu failed
done
