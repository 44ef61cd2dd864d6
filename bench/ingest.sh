#!/usr/bin/env bash
# bench/ingest.sh - gateway notifications per second into collectd with the
# plugin, beside mosquitto_sub receiving the same messages, at QoS 0, 1, 2.
#
# Usage: bench/ingest.sh WORKDIR BUILDDIR [RUNS [MESSAGES]]
#
# On 127.0.0.1 and a free port: one mosquitto (no persistence, unlimited
# queues), one collectd (logfile at LogLevel info, as shipped; unixsock)
# with bimetri.so and one Gateway of 100 relays. Each run publishes
# MESSAGES extDOStateChanged notifications (the protocol example's shape,
# round-robin over the 100 relays, each flipping its relay, so every one is
# applied) at the QoS under test with bench/ingest_pub.c (libmosquitto, all
# messages queued at once, 20 in flight, the broker's default limit;
# `mosquitto_pub -l` is slower than either consumer), and times from the
# publisher's start until collectd's log holds a "relay_on"/"relay_off"
# notification for every one of them (polled every 20 ms). The peer:
# `mosquitto_sub -C MESSAGES -q QOS >/dev/null` on a topic of its own (so
# collectd does not get the peer's messages), timed from the same
# publisher's start until it exits. The plugin subscribes at the QoS under
# test (its QoS option), as mosquitto_sub does. Ours and the peer
# alternate, taking turns at going first. Prints bench/run's CSV rows
# (header first); progress on stderr. INGEST_QOS (default "0 1 2") picks
# the QoS levels; INGEST_BROKER_LOG=all logs every packet in mosquitto.log.
set -u -o pipefail

work=$1
build=$2
runs=${3:-5}
n=${4:-20000}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
so=$repo/build/.libs/bimetri.so
gwsim=$repo/build/bimetri-gwsim
topic=application/third-party/flexyWattApp/1
peer_topic=application/third-party/benchPeerApp/1 # collectd does not see it
nrelays=100
pids=()

cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pids=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "ingest: $*" >&2; }
now() { date +%s.%N; }

for f in "$so" "$gwsim"; do
  [[ -x $f || -f $f ]] || { say "missing $f (make -C build)"; exit 1; }
done
((n % (2 * nrelays) == 0)) || { say "MESSAGES must be a multiple of $((2 * nrelays))"; exit 2; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# ---- the broker
cat >"$work/mosquitto.conf" <<EOF2
user $(id -un)
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 20
log_dest file $work/mosquitto.log
log_type ${INGEST_BROKER_LOG:-error}
log_type warning
EOF2
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  mosquitto_pub -h 127.0.0.1 -p "$port" -t probe -m x 2>/dev/null && break
  sleep 0.1
done

# ---- the messages: MESSAGES lines, relays round-robin, status flipping;
# every relay gets an even number, so a run ends where it began and the
# next run's messages flip again.
awk -v n="$n" -v nr="$nrelays" 'BEGIN {
  for (i = 0; i < n; i++) {
    r = i % nr; s = int(i / nr) % 2 ? 0 : 1
    printf "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\",\"command\":\"setExtDO\",\"notificationType\":\"extDOStateChanged\",\"userName\":\"Flexywatt User\",\"userId\":12345,\"parameters\":{\"resourceId\":%d,\"brand\":\"Bimetri\",\"model\":\"BMM620\",\"networkId\":\"26:AA:E0:23:23:5E\",\"organizationId\":23456,\"output\":%d,\"status\":%d}}\n", 1001 + int(r / 10), 1 + r % 10, s
  }
}' >"$work/messages"

printf "bench-secret-%s-%s" "$RANDOM$RANDOM$RANDOM$RANDOM" "$(date +%s%N)" >"$work/secret"
"$gwsim" --secret-file "$work/secret" --print-token 86400 >"$work/token" || exit 1
chmod 600 "$work/token"
mkdir -p "$work/plugins"
cp "$so" "$work/plugins/bimetri.so"
for p in logfile unixsock; do
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
  rm -f "$work/collectd.log" "$work/collectd.sock"
  cat >"$work/collectd.conf" <<EOF2
Hostname "benchhost"
FQDNLookup false
Interval 10
BaseDir "$work"
PIDFile "$work/collectd.pid"
PluginDir "$work/plugins"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "$work/collectd.log"
  Timestamp true
  PrintSeverity true
</Plugin>
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "$work/collectd.sock"
  DeleteSocket true
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
$relays  </Gateway>
</Plugin>
EOF2
  collectd -f -C "$work/collectd.conf" >"$work/collectd.out" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  for _ in $(seq 200); do
    grep -qs 'subscribed' "$work/collectd.log" && return 0
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

applied() { grep -c 'type = relay_o[nf]' "$work/collectd.log"; }

# One run of ours: prints messages/s, or fails after 120 s.
run_ours() { # QOS
  local base t0 t1 until lines target
  local cur last=-1 stall rbase
  base=$(applied)
  rbase=$(grep -c 'received notification' "$work/collectd.log")
  lines=$(wc -l <"$work/collectd.log")
  target=$((lines + 2 * n)) # each message: an INFO line and a notification
  t0=$(now)
  "$build/ingest_pub" "$port" "$topic" "$1" "$work/messages" &
  local pub=$!
  until=$((SECONDS + 120))
  while :; do
    if (($(wc -l <"$work/collectd.log") >= target)) &&
      (($(applied) - base >= n)); then
      t1=$(now)
      break
    fi
    # Gives up when nothing more is applied for 10 s (or after 120 s).
    cur=$(applied)
    if ((cur != last)); then
      last=$cur stall=$((SECONDS + 10))
    fi
    if ((SECONDS >= until || SECONDS >= stall)); then
      say "QoS $1: collectd applied $((cur - base)) of $n;" \
        "received $(($(grep -c 'received notification' "$work/collectd.log") - rbase))"
      grep -v 'received notification\|Notification:\|Available write targets' \
        "$work/collectd.log" | tail -n 5 >&2
      kill "$pub" 2>/dev/null
      wait "$pub"
      return 1
    fi
    sleep 0.02
  done
  wait "$pub" || { say "mosquitto_pub failed"; return 1; }
  awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.6g\n", n / (b - a) }'
}

run_peer() { # QOS
  local t0 t1 sub
  mosquitto_sub -h 127.0.0.1 -p "$port" -q "$1" -t "$peer_topic" -C "$n" >/dev/null &
  sub=$!
  sleep 0.3 # subscribed (mosquitto_sub has no ready signal)
  t0=$(now)
  "$build/ingest_pub" "$port" "$peer_topic" "$1" "$work/messages" ||
    { say "mosquitto_pub failed"; kill "$sub"; return 1; }
  local until=$((SECONDS + 120))
  while kill -0 "$sub" 2>/dev/null; do
    ((SECONDS < until)) || { say "mosquitto_sub did not get all"; kill "$sub"; wait "$sub"; return 1; }
    sleep 0.005
  done
  t1=$(now)
  wait "$sub" || { say "mosquitto_sub failed"; return 1; }
  awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.6g\n", n / (b - a) }'
}

stats() { # values...: median min max
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.6g,%.6g,%.6g", m, v[1], v[NR] }'
}

echo "figure,unit,better,ours_median,ours_min,ours_max,peer,peer_median,peer_min,peer_max,runs,ratio,target,target_met"
for qos in ${INGEST_QOS:-0 1 2}; do
  start_collectd "$qos" || exit 1
  ours=() peer=() lost=0
  for ((r = 0; r < runs; r++)); do
    if ((r % 2)); then
      p=$(run_peer "$qos") || exit 1
      o=$(run_ours "$qos") || lost=1
    else
      o=$(run_ours "$qos") || lost=1
      p=$(run_peer "$qos") || exit 1
    fi
    if ((lost)); then
      # A figure of a run that did not apply every message is no figure.
      say "QoS $qos: NO FIGURE: run $((r + 1)) did not apply every message"
      break
    fi
    ours+=("$o") peer+=("$p")
    say "QoS $qos run $((r + 1)): collectd+plugin $o/s, mosquitto_sub $p/s"
  done
  stop_collectd
  if grep -q 'malformed\|dropped a message' "$work/collectd.log"; then
    say "collectd dropped messages:"; grep 'malformed\|dropped' "$work/collectd.log" | head -3 >&2
    exit 1
  fi
  ((lost)) && continue
  so=$(stats "${ours[@]}") sp=$(stats "${peer[@]}")
  awk -F, -v q="$qos" -v n="$n" -v runs="$runs" -v o="$so" -v p="$sp" 'BEGIN {
    split(o, a, ","); split(p, b, ",")
    r = a[1] / b[1]
    printf "ingest %dk notifications QoS %d,messages/s,higher,%s,mosquitto_sub >/dev/null,%s,%d,%.4g,>= 90%% of peer,%s\n",
      n / 1000, q, o, p, runs, r, (r >= 0.9 ? "yes" : "no") }'
done
