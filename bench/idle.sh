#!/usr/bin/env bash
# bench/idle.sh - collectd with bimetri at scale (10 Gateways of 10,000
# Relays): start-up time with an empty and with a full journal, CPU at idle
# and resident memory, beside the same collectd without bimetri.
#
# Usage: bench/idle.sh WORKDIR BUILDDIR [RUNS [WINDOW_SECONDS]]
#
# On 127.0.0.1 and a free port: one mosquitto. Five collectds, identical
# (Interval 10; logfile at LogLevel info, as shipped; the stock cpu, memory
# and load plugins; bench/bm_count.c as the write plugin, standing for
# write_prometheus & co., counting bimetri's values) but for bimetri:
#   peer   without bimetri;
#   values without bimetri, bm_count dispatching every interval the values
#          "empty" dispatches (pending_operations per relay: 100,000),
#          spread over the interval the way bimetri.c spreads them (a read
#          per 1,000 relays, 10 at most, each with a part of every
#          Gateway's relays), so that the difference is the plugin's work;
#   values_known  the same with the values of "full" (bool too: 200,000);
#   empty  bimetri.so with 10 Gateways "gw01".."gw10" of 10,000 Relays each
#          (ResourceId 1000 + i / 16, Output 1 + i % 16), every Gateway
#          connected to the broker; its journals deleted before each start;
#   full   the same configuration, its journals replaced before each start
#          by BUILDDIR/idle_journal's (bench/idle_journal.c: a snapshot with
#          a STATE for every relay, then COMMAND/RESPONSE/CONFIRM history up
#          to 4 times the snapshot's size, where the plugin would compact;
#          every command confirmed), so every relay's state is restored.
# The plugin needs only the broker: it connects and subscribes, and at idle
# nothing is published (no Trigger or Switch, no command pending), so no
# gateway simulator runs.
# Each run starts the five, one at a time (the first of the run rotating),
# each timed from its launch until its log says it is up: the peer's
# "Initialization complete", ours when all 10 Gateways have logged
# "subscribed to" (the log polled every 5 ms or so). Then, all five up,
# 5 s to settle, and the idle window of WINDOW_SECONDS (default 30; a
# multiple of the interval is fair: each interval's read callback falls in
# it the same number of times): the CPU time each process used over the
# window, as a percentage of one core. CPU time is the sum over the
# process's threads of their run times in /proc/PID/task/TID/schedstat
# (ns). utime+stime of /proc/PID/stat counts 10 ms ticks, too coarse for
# the peer's few ms: it is shown on stderr as a cross-check, and used where
# the kernel keeps no schedstat. At the end of the window: VmRSS of each.
# Then the five are stopped. Prints bench/run's CSV rows (header first);
# progress on stderr. IDLE_GATEWAYS and IDLE_RELAYS (default 10 and 10000)
# change the scale; IDLE_PLUGIN_INTERVAL=N loads bimetri (and bm_count,
# whose values the "values" peers dispatch) with its own Interval N
# (<LoadPlugin> blocks; give a window that is a multiple of N);
# IDLE_STATE_INTERVAL=N gives every Gateway StateInterval N instead, and
# the "values" peers spread their values over N the same way (the same
# reads, each with the same share of the relays: a window that is a
# multiple of the interval is fair; N need not divide it).
# Everything started is stopped on exit.
set -u -o pipefail

work=$1
build=$2
runs=${3:-5}
window=${4:-30}
settle=5
# With a StateInterval the plugin sends every relay in its first interval,
# then slower: the window starts once that first round is over.
[[ -n ${IDLE_STATE_INTERVAL:-} ]] && settle=15
gateways=${IDLE_GATEWAYS:-10}
relays=${IDLE_RELAYS:-10000}
# The "values" peers' reads, as bimetri.c's register_read and
# set_state_interval make them: reads per interval, and the slices the
# relays are cut into (reads times StateInterval in intervals).
interval=${IDLE_PLUGIN_INTERVAL:-10}
reads=$((gateways * relays / 1000))
((reads < 1)) && reads=1
((reads > 10)) && reads=10
slices=$(awk -v s="${IDLE_STATE_INTERVAL:-0}" -v i="$interval" -v r="$reads" \
  'BEGIN { k = s > 0 ? int(s / i + 0.5) : 1; if (k < 1) k = 1; print r * k }')
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
so=$repo/build/.libs/bimetri.so
gwsim=$repo/build/bimetri-gwsim
configs=(peer empty full values values_known)
stock=(logfile cpu memory load)
declare -A cpid=()
BENCH_NAME=idle
. "$repo/bench/lib.sh"

load_line() { # PLUGIN [INTERVAL]: its LoadPlugin, with its own INTERVAL
  if [[ -n ${2:-} ]]; then
    printf '<LoadPlugin %s>\n  Interval %s\n</LoadPlugin>\n' "$1" "$2"
  else
    echo "LoadPlugin $1"
  fi
}

bench_need "$so" "$gwsim" "$build/bm_count.so" "$build/idle_journal" "$build/idle_table"
for p in "${stock[@]}"; do
  [[ -f /usr/lib/collectd/$p.so ]] || { say "missing /usr/lib/collectd/$p.so (collectd-core)"; exit 1; }
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { say "RUNS must be a positive number"; exit 2; }
[[ $window =~ ^[1-9][0-9]*$ ]] || { say "WINDOW_SECONDS must be a positive number"; exit 2; }

now() { echo "$EPOCHREALTIME"; }
# sleep that a signal interrupts (bash runs traps only between commands).
nap() {
  sleep "$1" &
  wait $!
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6g\n", b - a }'; }

# ---- the broker
bench_start_mosquitto || exit 1
bench_token "$gwsim" || exit 1

# ---- the configurations
ours() { [[ $1 == empty || $1 == full ]]; } # NAME: loads bimetri

write_conf() { # NAME
  local name=$1 dir=$work/$1 p
  mkdir -p "$dir/plugins"
  for p in "${stock[@]}"; do
    cp "/usr/lib/collectd/$p.so" "$dir/plugins/" || return 1
  done
  cp "$build/bm_count.so" "$dir/plugins/" || return 1
  if ours "$name"; then
    cp "$so" "$dir/plugins/bimetri.so" || return 1
  fi
  {
    cat <<EOF2
Hostname "benchhost"
FQDNLookup false
Interval 10
BaseDir "$dir"
PIDFile "$dir/collectd.pid"
PluginDir "$dir/plugins"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "$dir/collectd.log"
  Timestamp true
  PrintSeverity true
</Plugin>
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
$(load_line bm_count "${IDLE_PLUGIN_INTERVAL:-}")
<Plugin bm_count>
  Count "bimetri" "bool" "$dir/bool.count"
  Count "bimetri" "pending_operations" "$dir/pending.count"
$(case $name in
      values) echo "  Values $gateways $relays 0 $slices $reads" ;;
      values_known) echo "  Values $gateways $relays 1 $slices $reads" ;;
    esac)
</Plugin>
EOF2
    ours "$name" || return 0
    load_line bimetri "${IDLE_PLUGIN_INTERVAL:-}"
    awk -v g_n="$gateways" -v r_n="$relays" -v port="$port" -v dir="$dir" \
      -v name="$name" -v token="$work/token" \
      -v state="${IDLE_STATE_INTERVAL:-}" 'BEGIN {
      print "<Plugin bimetri>"
      for (g = 1; g <= g_n; g++) {
        printf "  <Gateway \"gw%02d\">\n", g
        printf "    Host \"127.0.0.1\"\n    Port %d\n", port
        printf "    ClientId \"bench-idle-%s-gw%02d\"\n", name, g
        printf "    AppName \"flexyWattApp\"\n    InstanceId \"%d\"\n", g
        printf "    UserId 12345\n    OrganizationId 23456\n"
        printf "    TokenFile \"%s\"\n", token
        printf "    JournalFile \"%s/gw%02d.journal\"\n", dir, g
        if (state != "")
          printf "    StateInterval %s\n", state
        for (i = 0; i < r_n; i++)
          printf "    <Relay \"relay-%05d\">\n      ResourceId %d\n      Output %d\n    </Relay>\n",
            i, 1000 + int(i / 16), 1 + i % 16
        print "  </Gateway>"
      }
      print "</Plugin>"
    }'
  } >"$dir/collectd.conf"
}

for c in "${configs[@]}"; do
  write_conf "$c" || { say "cannot write the $c configuration"; exit 1; }
done
mkdir -p "$work/journals"
t0=$(now)
"$build/idle_journal" "$work/journals" "$gateways" "$relays" 2>"$work/idle_journal.log" ||
  { cat "$work/idle_journal.log" >&2; exit 1; }
say "full journals written in $(elapsed "$t0" "$(now)") s:" \
  "$(du -sh "$work/journals" | cut -f1) for $gateways Gateways" \
  "($(awk '{ r += $3 } END { print r }' "$work/idle_journal.log") records)"

# ---- the daemons

# The number of lines of FILE matching REGEX, 0 when FILE does not exist.
lines_matching() { # FILE REGEX
  local n
  n=$(grep -cs -- "$2" "$1")
  echo "${n:-0}"
}

# Starts collectd NAME and waits until it is up; sets up_s to the seconds
# from launch to up (peer: "Initialization complete"; ours: every Gateway
# "subscribed to") and init_s to the seconds to "Initialization complete".
# Not in $(...): it records the daemon in cpid and pids.
start_collectd() { # NAME
  local name=$1 dir=$work/$1 t0 t t_init= up=0 want pattern until n
  rm -f "$dir/collectd.log"
  case $name in
  empty) rm -f "$dir"/gw*.journal* ;;
  full)
    rm -f "$dir"/gw*.journal*
    cp "$work/journals"/gw*.journal "$dir/" || return 1
    ;;
  esac
  if ! ours "$name"; then
    pattern='Initialization complete' want=1
  else
    pattern='subscribed to' want=$gateways
  fi
  t0=$(now)
  collectd -f -C "$dir/collectd.conf" >"$dir/collectd.out" 2>&1 &
  cpid[$name]=$!
  pids+=($!)
  until=$((SECONDS + 120))
  while ((SECONDS < until)); do
    n=$(lines_matching "$dir/collectd.log" "$pattern")
    t=$(now)
    if [[ -z $t_init ]] && ours "$name" &&
      grep -qs 'Initialization complete' "$dir/collectd.log"; then
      t_init=$t
    fi
    if ((n >= want)); then
      up=1
      break
    fi
    kill -0 "${cpid[$name]}" 2>/dev/null || break
    sleep 0.005
  done
  if ((!up)); then
    say "$name: collectd did not come up; its log:"
    grep -v 'Available write targets' "$dir/collectd.log" | tail -n 20 >&2
    tail -n 5 "$dir/collectd.out" >&2
    return 1
  fi
  up_s=$(elapsed "$t0" "$t")
  init_s=$(elapsed "$t0" "${t_init:-$t}")
}

stop_collectd() { # NAME
  local pid=${cpid[$1]} keep=() p
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$1: collectd did not stop within 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  for p in "${pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# CPU time of PID: its threads' run times in ns (the sum of
# /proc/PID/task/TID/schedstat's first fields; 0 when the kernel keeps no
# schedstat), then utime+stime of /proc/PID/stat in clock ticks.
# CPU ns of PID, and the same from utime+stime (a cross-check).
cpu_of() { # PID
  local ns ticks
  ns=$(bench_cpu_ns "$1") && ticks=$(bench_ticks_ns "$1") || return 1
  echo "$ns $ticks"
}

rss_of() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }

say "$gateways Gateways x $relays Relays, $runs runs, idle window ${window} s;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A startup=() cpu=() rss=()
for ((r = 0; r < runs; r++)); do
  line="run $((r + 1)):"
  for ((k = 0; k < ${#configs[@]}; k++)); do
    c=${configs[(k + r) % ${#configs[@]}]}
    start_collectd "$c" || exit 1
    startup[$c]+="$up_s "
    line+=" $c up $up_s s (init $init_s s)"
  done
  say "$line"
  nap "$settle"
  declare -A c0=() c1=() v0=()
  for c in "${configs[@]}"; do
    c0[$c]=$(cpu_of "${cpid[$c]}") || { say "$c: collectd is gone"; exit 1; }
    v0[$c]=$(($(bench_count_of "$work/$c/bool.count") + $(bench_count_of "$work/$c/pending.count")))
  done
  w0=$(now)
  nap "$window"
  w1=$(now)
  line="run $((r + 1)) idle:"
  for c in "${configs[@]}"; do
    c1[$c]=$(cpu_of "${cpid[$c]}") || { say "$c: collectd is gone"; exit 1; }
    m=$(rss_of "${cpid[$c]}")
    rss[$c]+="$m "
    read -r a ta <<<"${c0[$c]}"
    read -r b tb <<<"${c1[$c]}"
    p=$(awk -v a="$a" -v b="$b" -v w0="$w0" -v w1="$w1" 'BEGIN {
        printf "%.6g\n", (b - a) / 1e9 / (w1 - w0) * 100 }')
    cpu[$c]+="$p "
    v=$(($(bench_count_of "$work/$c/bool.count") + $(bench_count_of "$work/$c/pending.count") - v0[$c]))
    line+=" $c $p% ($(((tb - ta) / 1000000)) ms in ticks; $v bimetri values) RSS $((m / 1048576)) MiB;"
  done
  say "$line"
  for c in "${configs[@]}"; do
    stop_collectd "$c"
    if grep -s '\[error\]' "$work/$c/collectd.log" | grep -v 'Available write' | head -3 | grep . >&2; then
      say "$c: errors in the log (above)"
    fi
  done
  unset c0 c1 v0
done
table=$("$build/idle_table" "$gateways" "$relays") || exit 1

scale="${gateways}x$((relays / 1000))k relays"
[[ -n ${IDLE_STATE_INTERVAL:-} ]] && scale+=" StateInterval $IDLE_STATE_INTERVAL"
[[ -n ${IDLE_PLUGIN_INTERVAL:-} ]] && scale+=", plugin Interval $IDLE_PLUGIN_INTERVAL"
echo "$BENCH_ROW_HEADER"
peer="collectd without bimetri"
sp=$(bench_stats ${startup[peer]})
for c in empty full; do
  bench_row "start-up $scale $c journal" s lower "$(bench_stats ${startup[$c]})" \
    "$peer" "$sp" "$runs"
done
# The values peer of each: collectd dispatching the same values alone.
declare -A same=([empty]=values [full]=values_known)
declare -A same_label=(
  [empty]="collectd dispatching the same $((gateways * relays)) values"
  [full]="collectd dispatching the same $((2 * gateways * relays)) values")
sp=$(bench_stats ${cpu[peer]})
for c in empty full; do
  o=$(bench_stats ${cpu[$c]})
  bench_row "idle CPU $scale $c journal" "% of one core" lower "$o" "$peer" "$sp" \
    "$runs" "< 1% of a core" "$(bench_below "${o%%,*}" 1)"
  bench_row "idle CPU $scale $c journal" "% of one core" lower "$o" \
    "${same_label[$c]}" "$(bench_stats ${cpu[${same[$c]}]})" "$runs"
done
sp=$(bench_stats ${rss[peer]})
for c in empty full; do
  o=$(bench_stats ${rss[$c]})
  bench_row "collectd RSS $scale $c journal" bytes lower "$o" "$peer" "$sp" "$runs"
  bench_row "collectd RSS $scale $c journal" bytes lower "$o" \
    "${same_label[$c]}" "$(bench_stats ${rss[${same[$c]}]})" "$runs"
done
# Per relay: what bimetri adds to collectd's RSS, run by run (the peer's
# median subtracted), over the relays.
per=()
read -r pm _ <<<"${sp//,/ }"
for m in ${rss[empty]}; do
  per+=("$(awk -v m="$m" -v p="$pm" -v n="$((gateways * relays))" 'BEGIN { printf "%.6g\n", (m - p) / n }')")
done
o=$(bench_stats "${per[@]}")
bench_row "RSS added per relay $scale empty journal" bytes lower "$o" \
  "bm_relay_table alone" "$table,$table,$table" "$runs" "< 300 B" \
  "$(bench_below "${o%%,*}" 300)"
# The same beyond what collectd itself keeps for the values (the values
# peer's median subtracted instead): the plugin's own share.
per=()
sv=$(bench_stats ${rss[values]})
read -r vm _ <<<"${sv//,/ }"
for m in ${rss[empty]}; do
  per+=("$(awk -v m="$m" -v p="$vm" -v n="$((gateways * relays))" 'BEGIN { printf "%.6g\n", (m - p) / n }')")
done
bench_row "RSS added per relay beyond collectd's for its values $scale empty journal" \
  bytes lower "$(bench_stats "${per[@]}")" "bm_relay_table alone" \
  "$table,$table,$table" "$runs"
