#!/usr/bin/env bash
# bench/writepath.sh - values per second through collectd's write path with
# bimetri loaded and 0, 10 or 100 Switch rules that match none of them,
# beside the same collectd without bimetri.
#
# Usage: bench/writepath.sh WORKDIR BUILDDIR [RUNS [VALUES]]
#
# On 127.0.0.1 and a free port: one mosquitto and the gateway simulator
# (bimetri-gwsim, idle: no rule ever asks for a command). Four collectds run
# side by side for the whole benchmark, identical but for bimetri:
#   peer   logfile (LogLevel info, as shipped), bench/bm_count.c (a write
#          plugin counting values per plugin/type into mmapped files) and
#          bench/writepath_load.c (a plugin dispatching the load);
#   r0     the same plus bimetri.so with one Gateway (connected to the
#          broker, one Relay) and no Switch: bimetri registers no write
#          callback then, so this is the cost of the plugin merely loaded;
#   r10    the same with 10 Switch rules,
#   r100   with 100: Plugin "sensors", Type "temperature", TypeInstance
#          "zone-<i>" (a plant's temperatures), which match none of the
#          load's values (its sensors values are temp1..temp8), OnAbove 70,
#          OffBelow 60, all driving the one Relay.
# The load: 4096 identifiers (64 hosts "node-NNN" of 64 metrics each: cpu,
# df, interface if_octets and if_packets, disk, sensors temperature,
# memory, processes ps_rss), round robin, from 2 threads made with
# plugin_thread_create, with at most 5000 values in flight (dispatched, not
# yet counted at the write path), so that collectd's write threads (5, the
# default) never run dry.
# A run is VALUES values per collectd (default 2097152; a multiple of
# 4096 x the slices), in WRITEPATH_SLICES slices (default 8) measured in
# turn, the four collectds interleaved slice by slice (the first rotating),
# so that whatever else loads the machine for a few seconds falls on all
# four alike. A slice: touch GoDir/go-<n>, the load notes the realtime t0
# and starts; bm_wait waits until each of bm_count's 8 counters has its
# share; its time is last value counted - t0. A run's figure: values/s =
# VALUES / the sum of its slices' times; CPU ns per value = the collectd
# process's CPU time over its slices / VALUES (the sum of its threads' run
# times in /proc/PID/task/TID/schedstat, in ns; utime+stime where the
# kernel keeps no schedstat). Each collectd first does one untimed warm-up slice. Prints
# bench/run's CSV rows (header first); progress on stderr.
# WRITEPATH_WRITE_THREADS sets collectd's WriteThreads in all four (default:
# collectd's, 5). Everything started is stopped on exit.
set -u -o pipefail

work=$1
build=$2
runs=${3:-5}
n=${4:-2097152}
slices=${WRITEPATH_SLICES:-8}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
so=$repo/build/.libs/bimetri.so
gwsim=$repo/build/bimetri-gwsim
configs=(peer r0 r10 r100)
declare -A rules=([r0]=0 [r10]=10 [r100]=100)
# The load's (plugin, type) groups: bench/writepath_load.c's, in its order.
groups=(cpu:cpu df:df_complex interface:if_octets interface:if_packets
  disk:disk_octets sensors:temperature memory:memory processes:ps_rss)
ids=4096 # identifiers of the load (writepath_load.c's LOAD_IDS)
declare -A cpid=()
BENCH_NAME=writepath
. "$repo/bench/lib.sh"

bench_need "$so" "$gwsim" "$build/writepath_load.so" "$build/bm_count.so" "$build/bm_wait"
[[ $runs =~ ^[1-9][0-9]*$ ]] || { say "RUNS must be a positive number"; exit 2; }
[[ $slices =~ ^[1-9][0-9]*$ ]] || { say "WRITEPATH_SLICES must be a positive number"; exit 2; }
[[ $n =~ ^[1-9][0-9]*$ ]] && ((n % (ids * slices) == 0)) ||
  { say "VALUES must be a positive multiple of $((ids * slices)) ($ids identifiers x $slices slices)"; exit 2; }
per_slice=$((n / slices))
per_group=$((per_slice / ${#groups[@]}))

# Seconds since the epoch, with decimals.
now() { echo "$EPOCHREALTIME"; }

# Waits until FILE has COUNT lines matching REGEX; false after SECONDS or
# as soon as PID has exited.
wait_log() { # FILE REGEX COUNT SECONDS PID
  local until n
  until=$(awk -v t="$(now)" -v s="$4" 'BEGIN { printf "%.3f", t + s }')
  while :; do
    n=$(grep -cs -- "$2" "$1")
    ((${n:-0} >= $3)) && return 0
    kill -0 "$5" 2>/dev/null || return 1
    awk -v t="$(now)" -v u="$until" 'BEGIN { exit !(t >= u) }' && return 1
    sleep 0.02
  done
}

# ---- the broker and the simulator
bench_start_mosquitto || exit 1
bench_token "$gwsim" || exit 1
"$gwsim" --secret-file "$work/secret" -p "$port" --log "$work/gwsim.log" \
  >"$work/gwsim.out" 2>&1 &
pids+=($!)

# ---- the collectds
start_collectd() { # NAME
  local name=$1 dir=$work/$1 g counts="" files="" bimetri="" i
  mkdir -p "$dir/plugins"
  for f in /usr/lib/collectd/logfile.so "$build/bm_count.so" \
    "$build/writepath_load.so"; do
    cp "$f" "$dir/plugins/" || return 1
  done
  for g in "${groups[@]}"; do
    counts+="  Count \"${g%%:*}\" \"${g#*:}\" \"$dir/${g/:/-}.count\"
"
    files+="  CountFile \"$dir/${g/:/-}.count\"
"
  done
  if [[ $name != peer ]]; then
    cp "$so" "$dir/plugins/bimetri.so" || return 1
    bimetri="LoadPlugin bimetri
<Plugin bimetri>
  <Gateway \"plant1\">
    Host \"127.0.0.1\"
    Port $port
    ClientId \"bench-writepath-$name\"
    AppName \"flexyWattApp\"
    InstanceId \"1\"
    UserId 12345
    OrganizationId 23456
    TokenFile \"$work/token\"
    <Relay \"fan\">
      ResourceId 101
      Output 1
    </Relay>
  </Gateway>
"
    for ((i = 1; i <= rules[$name]; i++)); do
      bimetri+="  <Switch \"zone-$i-cooling\">
    Relay \"plant1\" \"fan\"
    Plugin \"sensors\"
    Type \"temperature\"
    TypeInstance \"zone-$i\"
    OnAbove 70
    OffBelow 60
  </Switch>
"
    done
    bimetri+="</Plugin>"
  fi
  cat >"$dir/collectd.conf" <<EOF2
Hostname "benchhost"
FQDNLookup false
Interval 10
BaseDir "$dir"
PIDFile "$dir/collectd.pid"
PluginDir "$dir/plugins"
TypesDB "/usr/share/collectd/types.db"
${WRITEPATH_WRITE_THREADS:+WriteThreads $WRITEPATH_WRITE_THREADS}
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "$dir/collectd.log"
  Timestamp true
  PrintSeverity true
</Plugin>
LoadPlugin bm_count
<Plugin bm_count>
$counts</Plugin>
LoadPlugin writepath_load
<Plugin writepath_load>
  Values $per_slice
  Threads 2
  Window 5000
  GoDir "$dir"
$files</Plugin>
$bimetri
EOF2
  collectd -f -C "$dir/collectd.conf" >"$dir/collectd.out" 2>&1 &
  cpid[$name]=$!
  pids+=($!)
  if ! wait_log "$dir/collectd.log" 'Initialization complete' 1 30 "${cpid[$name]}" ||
    { [[ $name != peer ]] &&
      ! wait_log "$dir/collectd.log" 'subscribed to' 1 30 "${cpid[$name]}"; }; then
    say "$name: collectd did not start (or bimetri did not subscribe); its log:"
    tail -n 20 "$dir/collectd.log" "$dir/collectd.out" >&2 2>/dev/null
    return 1
  fi
}


# Slice SLICE of collectd NAME (0, 1, ... in order): prints the ns from the
# load's start to the last value counted, and the CPU ns collectd used.
measure() { # NAME SLICE
  local name=$1 slice=$2 dir=$work/$1 pid=${cpid[$1]} c0 c1 t0 last=0 t g
  c0=$(bench_cpu_ns "$pid") || { say "$name: collectd is gone"; return 1; }
  touch "$dir/go-$slice"
  for g in "${groups[@]}"; do
    t=$("$build/bm_wait" "$dir/${g/:/-}.count" $(((slice + 1) * per_group)) 10) || {
      say "$name slice $slice: not every value reached the write path; its log:"
      grep -v 'too old' "$dir/collectd.log" | tail -n 5 >&2
      return 1
    }
    ((t > last)) && last=$t
  done
  c1=$(bench_cpu_ns "$pid") || { say "$name: collectd is gone"; return 1; }
  for _ in $(seq 250); do # written right after the last dispatch
    [[ -s $dir/start-$slice ]] && break
    sleep 0.02
  done
  read -r t0 _ <"$dir/start-$slice" || { say "$name slice $slice: no start time"; return 1; }
  echo "$((last - t0)) $((c1 - c0))"
}


for c in "${configs[@]}"; do
  start_collectd "$c" || exit 1
done
say "$n values per run in $slices slices, 4 collectds up;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A rate=() cpu=() next=()
for c in "${configs[@]}"; do # warm-up: one slice each, untimed
  m=$(measure "$c" 0) || exit 1
  next[$c]=1
done
for ((r = 1; r <= runs; r++)); do
  declare -A ns=() cpu_used=()
  for ((s = 0; s < slices; s++)); do
    for ((k = 0; k < ${#configs[@]}; k++)); do
      c=${configs[(k + s + r) % ${#configs[@]}]}
      m=$(measure "$c" "${next[$c]}") || exit 1
      next[$c]=$((next[$c] + 1))
      ns[$c]=$((${ns[$c]:-0} + ${m% *}))
      cpu_used[$c]=$((${cpu_used[$c]:-0} + ${m#* }))
    done
  done
  line="run $r:"
  for c in "${configs[@]}"; do
    m=$(awk -v n="$n" -v ns="${ns[$c]}" -v c="${cpu_used[$c]}" 'BEGIN {
      printf "%.6g %.6g\n", n / (ns / 1e9), c / n }')
    rate[$c]+="${m% *} " cpu[$c]+="${m#* } "
    line+=" $c ${m% *}/s ${m#* } ns"
    # This run's ratio: its slices were interleaved with the peer's.
    [[ $c != peer ]] && line+=" ($(awk -v a="${ns[peer]}" -v b="${ns[$c]}" \
      'BEGIN { printf "%.3g", a / b }')x peer)"
    line+=";"
  done
  say "$line"
  unset ns cpu_used
done

# What the logs say: no rule may have matched; errors are shown.
for c in "${configs[@]}"; do
  log=$work/$c/collectd.log
  if grep -q 'setExtDO\|Switch "' "$log"; then
    say "$c: a Switch rule matched a value of the load:"
    grep 'setExtDO\|Switch "' "$log" | head -3 >&2
    exit 1
  fi
  grep -s '\[error\]' "$log" | head -3 >&2
  say "$c: $(grep -c 'Value too old' "$log") \"Value too old\" notices" \
    "(write threads reordering one identifier's values)"
done

echo "$BENCH_ROW_HEADER"
peer="collectd without bimetri"
sp=$(bench_stats ${rate[peer]})
for c in r0 r10 r100; do
  o=$(bench_stats ${rate[$c]}) target= met=
  if ((rules[$c] == 100)); then # under 5% slower: a ratio of 0.95 at least
    target="under 5% slower"
    met=$(awk -v o="${o%%,*}" -v p="${sp%%,*}" 'BEGIN { print (o / p >= 0.95 ? "yes" : "no") }')
  fi
  bench_row "write path ${rules[$c]} non-matching Switch rules" values/s higher "$o" \
    "$peer" "$sp" "$runs" "$target" "$met"
done
sp=$(bench_stats ${cpu[peer]})
for c in r0 r10 r100; do
  bench_row "CPU per value ${rules[$c]} non-matching Switch rules" ns/value lower \
    "$(bench_stats ${cpu[$c]})" "$peer" "$sp" "$runs"
done
