#!/usr/bin/env bash
# bench/cmdpath.sh - the command path: from a collectd notification to the
# setExtDO PUBLISH on the wire and on to the confirmation metric, with
# JournalSync always and none; commands per second under 64 concurrent
# triggers; the time collectd's notification and write callbacks spend in
# the plugin. Each beside a peer measured in the same run.
#
# Usage: bench/cmdpath.sh WORKDIR BUILDDIR [RUNS]
#
# BUILDDIR holds cmdpath_fire.so (bench/cmdpath_fire.c, a collectd plugin
# that fires the notifications and values and times collectd's calls),
# cmdpath_wire (bench/cmdpath_wire.c, a packet capture on lo that stamps
# each command's PUBLISH; needs root or CAP_NET_RAW), cmdpath_peer
# (bench/cmdpath_peer.c, a plain libmosquitto client sending the same
# commands). On 127.0.0.1 and a free port: one mosquitto, the gateway
# simulator (answers at once: --delay 0), one collectd with bimetri.so and
# cmdpath_fire.so, three Gateways: "none" (JournalSync none) and "always"
# (JournalSync always), 64 relays and 64 Triggers each, and "switch"
# (JournalSync always) with 16 relays driven by 16 Switches; neither the
# command budget nor a journal compaction acts during the measurement.
# bench/README says what each figure is. Prints bench/run's CSV rows
# (header first); progress on stderr. Every process it starts is stopped on
# exit, and exits by itself after 10 minutes; each wait is bounded.
#
# Environment (the defaults take about 15 s a run): CMDPATH_LAT, commands
# one at a time per JournalSync mode and run (default 60), CMDPATH_PAUSE,
# ms of quiet after each (default 50: see bench/README), CMDPATH_B2B,
# commands 2 ms after the last confirmation (default 10), CMDPATH_BURSTS,
# bursts of 64 per mode and run (default 8), CMDPATH_SWITCH, rounds of 16
# Switch values per run (default 8).
set -u -o pipefail

work=$1
build=$2
runs=${3:-5}
lat_n=${CMDPATH_LAT:-60}
b2b_n=${CMDPATH_B2B:-10}
pause=${CMDPATH_PAUSE:-50}
bursts=${CMDPATH_BURSTS:-8}
switch_rounds=${CMDPATH_SWITCH:-8}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
so=${CMDPATH_SO:-$repo/build/.libs/bimetri.so} # the plugin under test
gwsim=$repo/build/bimetri-gwsim
relays=64
switch_relays=16
lifetime=600 # s: every helper exits by itself after this
cpid=
BENCH_NAME=cmdpath
BENCH_LIFETIME=$lifetime
. "$repo/bench/lib.sh"

# The pipes to cmdpath_fire close first, so that it ends.
bench_before_cleanup() { { exec 3>&- 4<&-; } 2>/dev/null; }

bench_need "$so" "$gwsim" "$build/cmdpath_fire.so" "$build/cmdpath_wire" "$build/cmdpath_peer"
for v in "$runs" "$lat_n" "$b2b_n" "$bursts" "$switch_rounds" "$pause"; do
  if ! [[ $v =~ ^[0-9]+$ ]] || ((v < 1 || v > 10000)); then
    say "RUNS and the CMDPATH_* numbers must be 1 to 10000"
    exit 2
  fi
done

# Times are exchanged in ns since base: exact in awk's doubles.
base=$(($(date +%s) - 5))

# ---- the broker, on a free port (another try when it was taken meanwhile);
# Nagle off on its sockets (see bench/README)
bench_start_mosquitto "set_tcp_nodelay true" || exit 1

# ---- the capture, before anything publishes
"$build/cmdpath_wire" "$port" "$base" "$work/wire.out" "$lifetime" \
  2>"$work/wire.err" &
wire_pid=$!
pids+=("$wire_pid")
for _ in $(seq 100); do
  [[ -f $work/wire.out.ready ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || break
  sleep 0.05
done
[[ -f $work/wire.out.ready ]] || { say "the capture did not start:"; cat "$work/wire.err" >&2; exit 1; }

# ---- the gateway simulator: checks the JWT, answers at once
bench_token "$gwsim" || exit 1
"$gwsim" -p "$port" \
  --secret-file "$work/secret" --delay 0 --outputs "$relays" \
  --exit-after "$lifetime" >"$work/gwsim.out" 2>&1 &
pids+=($!)
for _ in $(seq 200); do
  grep -qs 'subscribed to' "$work/gwsim.out" && break
  sleep 0.05
done
grep -qs 'subscribed to' "$work/gwsim.out" || { say "the simulator did not subscribe:"; cat "$work/gwsim.out" >&2; exit 1; }

# ---- collectd
mkdir -p "$work/plugins"
cp "$so" "$work/plugins/bimetri.so" && cp "$build/cmdpath_fire.so" "$work/plugins/" || exit 1
rm -f "$work/ctl" "$work/reply"
mkfifo "$work/ctl" "$work/reply" || exit 1

gateway_conf() { # NAME APP SYNC RESOURCE_ID RELAYS
  local r
  cat <<EOF
  <Gateway "$1">
    Host "127.0.0.1"
    Port $port
    AppName "$2"
    InstanceId "1"
    UserId 12345
    OrganizationId 23456
    TokenFile "$work/token"
    JournalSync $3
    JournalSizeLimit 67108864
    MaxCommandsPerMinute 600
EOF
  for ((r = 0; r < $5; r++)); do
    printf '    <Relay "r%d">\n      ResourceId %d\n      Output %d\n    </Relay>\n' \
      "$r" "$4" $((r + 1))
  done
  echo "  </Gateway>"
}

{
  cat <<EOF
Hostname "benchhost"
FQDNLookup false
Interval 60
BaseDir "$work"
PIDFile "$work/collectd.pid"
PluginDir "$work/plugins"
TypesDB "/usr/share/collectd/types.db"
# No log plugin: collectd logs to its standard error, and bimetri's is the
# only notification callback.
LoadPlugin cmdpath_fire
LoadPlugin bimetri
<Plugin bimetri>
EOF
  gateway_conf none benchNone none 1001 "$relays"
  gateway_conf always benchAlways always 2001 "$relays"
  gateway_conf switch benchSwitch always 3001 "$switch_relays"
  for g in none always; do
    for ((r = 0; r < relays; r++)); do
      printf '  <Trigger "%s-r%d">\n    Relay "%s" "r%d"\n    Plugin "cmdpath"\n    PluginInstance "%s"\n    Type "gauge"\n    TypeInstance "r%d"\n    OnFailure 1\n    OnOkay 0\n  </Trigger>\n' \
        "$g" "$r" "$g" "$r" "$g" "$r"
    done
  done
  for ((r = 0; r < switch_relays; r++)); do
    printf '  <Switch "switch-r%d">\n    Relay "switch" "r%d"\n    Plugin "cmdpath"\n    PluginInstance "switch"\n    Type "gauge"\n    TypeInstance "r%d"\n    OnAbove 70\n    OffBelow 60\n  </Switch>\n' \
      "$r" "$r" "$r"
  done
  cat <<EOF
</Plugin>
<Plugin cmdpath_fire>
  Control "$work/ctl"
  Reply "$work/reply"
  Base $base
  Gateway "none" $relays
  Gateway "always" $relays
  Gateway "switch" $switch_relays
</Plugin>
EOF
} >"$work/collectd.conf"

timeout -k 5 "$lifetime" collectd -f -C "$work/collectd.conf" \
  >"$work/collectd.out" 2>&1 &
cpid=$!
pids+=("$cpid")
# cmdpath_fire opens both FIFOs read-write: neither side waits for the other.
exec 3<>"$work/ctl" 4<>"$work/reply" || exit 1
subscribed() {
  local n
  n=$(grep -c 'subscribed to' "$work/collectd.out" 2>/dev/null)
  ((${n:-0} >= 3))
}
for _ in $(seq 200); do
  subscribed && break
  kill -0 "$cpid" 2>/dev/null || break
  sleep 0.05
done
subscribed || {
  say "collectd's Gateways did not subscribe; its output:"
  tail -n 20 "$work/collectd.out" >&2
  exit 1
}

# ---- the phases

# fire COMMAND...: one command to cmdpath_fire; fails on its error or after
# 60 s without an answer.
fire() {
  local reply
  echo "$*" >&3
  if ! read -r -t 60 -u 4 reply; then
    say "no answer from cmdpath_fire to \"$*\"; collectd's output:"
    tail -n 10 "$work/collectd.out" >&2
    return 1
  fi
  [[ $reply == ok ]] || { say "cmdpath_fire: $reply"; return 1; }
}

peer() { # lat|burst COUNT PAUSE_MS OUTFILE [--sync FILE] [--nodelay]
  timeout 150 "$build/cmdpath_peer" "$port" "$work/token" "$base" "$@" \
    3>&- 4<&- ||
    { say "cmdpath_peer $* failed"; return 1; }
}

# Every relay's state known (the first command of a relay of unknown state
# must be an "on"), the connections and the files warm.
say "warm-up"
fire burst none 2 "$pause" "$work/warm" &&
  fire burst always 2 "$pause" "$work/warm" &&
  fire switch switch 2 "$pause" "$work/warm" &&
  peer lat 16 "$pause" "$work/warm" &&
  peer burst 2 "$pause" "$work/warm" --sync "$work/peer.sync" || exit 1

run_phase() { # NAME RUN
  local f=$work/$1.$2
  case $1 in
  lat_none) fire lat none "$lat_n" "$pause" "$f" ;;
  lat_always) fire lat always "$lat_n" "$pause" "$f" ;;
  peer_lat) peer lat "$lat_n" "$pause" "$f" ;;
  peer_lat_sync) peer lat "$lat_n" "$pause" "$f" --sync "$work/peer.sync" ;;
  b2b_none) fire lat none "$b2b_n" 2 "$f" ;;
  peer_b2b) peer lat "$b2b_n" 2 "$f" ;;
  peer_b2b_nodelay) peer lat "$b2b_n" 2 "$f" --nodelay ;;
  burst_none) fire burst none "$bursts" "$pause" "$f" ;;
  burst_always) fire burst always "$bursts" "$pause" "$f" ;;
  peer_burst) peer burst "$bursts" "$pause" "$f" ;;
  peer_burst_sync) peer burst "$bursts" "$pause" "$f" --sync "$work/peer.sync" ;;
  switch) fire switch switch "$switch_rounds" "$pause" "$f" ;;
  esac
}

phases=(lat_none lat_always peer_lat peer_lat_sync b2b_none peer_b2b
  peer_b2b_nodelay switch burst_none burst_always peer_burst peer_burst_sync)

# The figures of run $1, as "name value" lines: latencies in us (p50 and
# p99 by nearest rank), rates in commands/s. Fails when a command has no
# PUBLISH on the wire between its notification and its confirmation.
analyse() {
  local r=$1 p files=()
  for p in "${phases[@]}"; do
    files+=("$work/$p.$r")
  done
  awk -v relays="$relays" '
    function qs(a, lo, hi,   i, last, t) {
      if (lo >= hi) return
      t = a[lo]; a[lo] = a[int((lo + hi) / 2)]; a[int((lo + hi) / 2)] = t
      last = lo
      for (i = lo + 1; i <= hi; i++)
        if (a[i] < a[lo]) { last++; t = a[last]; a[last] = a[i]; a[i] = t }
      t = a[lo]; a[lo] = a[last]; a[last] = t
      qs(a, lo, last - 1); qs(a, last + 1, hi)
    }
    # Nearest-rank percentile q of the n values in a (sorted here).
    function pct(a, n, q,   k) {
      qs(a, 1, n)
      k = int(q * n); if (k < q * n) k++
      if (k < 1) k = 1
      return a[k]
    }
    # The first PUBLISH of (res, out, status) on the wire at or after t,
    # which must be no later than t_end.
    function wire_at(res, out, st, t, t_end,   key, i, best) {
      key = res " " out " " st
      best = -1
      for (i = 1; i <= WN[key]; i++)
        if (WT[key, i] >= t && (best < 0 || WT[key, i] < best))
          best = WT[key, i]
      if (best < 0 || best > t_end) {
        printf "cmdpath: %s: no PUBLISH on the wire for resourceId %s output %s status %s between %.0f and %.0f\n",
          FILENAME, res, out, st, t, t_end > "/dev/stderr"
        bad = 1
      }
      return best
    }
    function emit(name, a, n) {
      if (n < 1) { bad = 1; return }
      printf "%s_p50 %.6g\n%s_p99 %.6g\n", name, pct(a, n, 0.5) / 1000, name, pct(a, n, 0.99) / 1000
    }
    function flush(   k, span_w, span_c) {
      if (mode == "lat") {
        emit(tag "_n2w", N2W, nn2w); emit(tag "_w2c", W2C, nw2c)
      } else if (mode == "peerlat") {
        emit(tag "_c2w", N2W, nn2w); emit(tag "_w2n", W2C, nw2c)
      } else if (mode == "burst" || mode == "peerburst") {
        span_w = span_c = 0
        for (k in FIRST) { span_w += LASTW[k] - FIRST[k]; span_c += LASTC[k] - FIRST[k] }
        if (span_w <= 0 || span_c <= 0) bad = 1
        else printf "%s_rate_wire %.6g\n%s_rate_conf %.6g\n", tag, cmds * 1e9 / span_w, tag, cmds * 1e9 / span_c
        if (mode == "burst") { emit(tag "_cb", CB, ncb); emit(tag "_nm", NM, nnm); emit(tag "_hand", HZ, nhz) }
      } else if (mode == "switch") {
        emit(tag "_wcb", CB, ncb); emit(tag "_wnm", NM, nnm); emit(tag "_whand", HW, nhw)
      }
      split("", FIRST); split("", LASTW); split("", LASTC)
      ncb = nnm = nn2w = nw2c = cmds = nhz = nhw = 0
    }
    FNR == 1 {
      if (NR > 1 && mode != "wire") flush()
      n = split(FILENAME, parts, "/"); tag = parts[n]; sub(/\.[0-9]+$/, "", tag)
      if (tag == "wire.out") mode = "wire"
      else if (tag ~ /^(lat|b2b)_/) mode = "lat"
      else if (tag ~ /^peer_(lat|b2b)/) mode = "peerlat"
      else if (tag ~ /^burst_/) mode = "burst"
      else if (tag ~ /^peer_burst/) mode = "peerburst"
      else mode = "switch"
      res = tag ~ /_none$/ ? 1001 : tag ~ /_always$/ ? 2001 : 9001
      pool = tag ~ /^lat_/
    }
    mode == "wire" && $1 == "W" { k = $3 " " $4 " " $5; WT[k, ++WN[k]] = $2 + 0; next }
    # N relay status t_dispatch dur t_confirmed
    mode == "lat" && $1 == "N" {
      if (pool) PCB[++npcb] = $5
      w = wire_at(res, $2 + 1, $3, $4, $6)
      N2W[++nn2w] = w - $4; W2C[++nw2c] = $6 - w
      next
    }
    mode == "lat" && $1 == "X" { if (pool) PNM[++npnm] = $2; next }
    mode == "lat" && $1 == "H" { if (pool) PH[++nph] = $2; next }
    # P res out status t_call t_notified
    mode == "peerlat" && $1 == "P" {
      w = wire_at($2, $3, $4, $5, $6)
      N2W[++nn2w] = w - $5; W2C[++nw2c] = $6 - w
      next
    }
    # B burst relay status t_dispatch dur t_confirmed
    mode == "burst" && $1 == "B" {
      CB[++ncb] = $6; cmds++
      if (!($2 in FIRST) || $5 < FIRST[$2]) FIRST[$2] = $5
      w = wire_at(res, $3 + 1, $4, $5, $7)
      if (w > LASTW[$2]) LASTW[$2] = w
      if ($7 > LASTC[$2]) LASTC[$2] = $7
      next
    }
    mode == "burst" && $1 == "Y" { NM[++nnm] = $3; next }
    mode == "burst" && $1 == "Z" { HZ[++nhz] = $3; next }
    mode == "peerburst" && $1 == "P" {
      b = int(cmds / relays); cmds++
      if (!(b in FIRST) || $5 < FIRST[b]) FIRST[b] = $5
      w = wire_at($2, $3, $4, FIRST[b], $6)
      if (w > LASTW[b]) LASTW[b] = w
      if ($6 > LASTC[b]) LASTC[b] = $6
      next
    }
    mode == "switch" && $1 == "W" { CB[++ncb] = $2; next }
    mode == "switch" && $1 == "V" { NM[++nnm] = $2; next }
    mode == "switch" && $1 == "H" { HW[++nhw] = $2; next }
    END {
      flush()
      emit("lat_cb", PCB, npcb); emit("lat_nm", PNM, npnm)
      emit("lat_handoff", PH, nph)
      exit bad
    }
  ' "$work/wire.out" "${files[@]}"
}

declare -A fig=()
for ((r = 0; r < runs; r++)); do
  # Ours and the peers take turns at going first.
  order=("${phases[@]}")
  if ((r % 2)); then
    order=(peer_lat_sync peer_lat lat_always lat_none peer_b2b_nodelay
      peer_b2b b2b_none switch peer_burst_sync peer_burst burst_always
      burst_none)
  fi
  t0=$SECONDS
  for p in "${order[@]}"; do
    run_phase "$p" "$r" || exit 1
  done
  out=$(analyse "$r") || { say "run $((r + 1)): the measurements do not add up"; exit 1; }
  while read -r k v; do
    fig[$k]+="$v "
  done <<<"$out"
  say "run $((r + 1)) of $runs ($((SECONDS - t0)) s):" "$(awk '
    $1 == "lat_none_n2w_p99" { a = $2 } $1 == "lat_always_n2w_p99" { b = $2 }
    $1 == "burst_none_rate_wire" { c = $2 } $1 == "lat_cb_p99" { d = $2 }
    END { printf "notification->wire p99 %.0f us (none), %.0f us (always); callback p99 %.0f us; 64 concurrent %.0f/s", a, b, d, c }' <<<"$out")"
done

exec 3>&- 4<&-
# Every command was found on the wire; lost segments, if any, were others.
kill -TERM "$wire_pid" 2>/dev/null
wait "$wire_pid" 2>/dev/null || say "note: $(cat "$work/wire.err")"
keep=()
for p in "${pids[@]}"; do
  [[ $p == "$wire_pid" ]] || keep+=("$p")
done
pids=("${keep[@]}")
if ! kill -0 "$cpid" 2>/dev/null; then
  say "collectd died; its output:"
  tail -n 20 "$work/collectd.out" >&2
  exit 1
fi

# ---- the rows

# row FIGURE UNIT BETTER OURS_KEY PEER PEER_KEY [TARGET "< N"|">= N"]: one
# CSV row; the target is judged on our median.
row() {
  local o p
  [[ -n ${fig[$4]:-} && -n ${fig[$6]:-} ]] || { say "no figure $4 or $6"; return 1; }
  # shellcheck disable=SC2086
  o=$(bench_stats ${fig[$4]}) p=$(bench_stats ${fig[$6]})
  awk -v f="$1" -v u="$2" -v b="$3" -v o="$o" -v peer="$5" -v p="$p" \
    -v runs="$runs" -v t="${7:-}" 'BEGIN {
    split(o, a, ","); split(p, c, ",")
    met = ""; text = t
    if (t != "") {
      split(t, x, " ")
      met = (x[1] == "<" ? a[1] < x[2] + 0 : a[1] >= x[2] + 0) ? "yes" : "no"
      text = t " " u
    }
    printf "%s,%s,%s,%s,%s,%s,%d,%.4g,%s,%s\n", f, u, b, o, peer, p, runs,
      (c[1] > 0 ? a[1] / c[1] : 0), text, met }'
}

nm="same dispatch matching no Trigger"
handoff="eventfd write waking a sleeping thread"
handoff_burst="the same eventfd write in the same bursts"
bare="bare client: mosquitto_publish -> wire"
bsync="bare client: pwrite+fsync+mosquitto_publish -> wire"
echo_peer="bare client: wire -> its notification"
{
  echo "$BENCH_ROW_HEADER"
  row "notification callback p50" us lower lat_cb_p50 "$nm" lat_nm_p50 &&
    row "notification callback p50" us lower lat_cb_p50 "$handoff" lat_handoff_p50 &&
    row "notification callback p99" us lower lat_cb_p99 "$nm" lat_nm_p99 "< 50" &&
    row "notification callback p99" us lower lat_cb_p99 "$handoff" lat_handoff_p99 &&
    row "notification callback p99 64 concurrent (sync none)" us lower burst_none_cb_p99 "$nm (same threads)" burst_none_nm_p99 "< 50" &&
    row "notification callback p99 64 concurrent (sync none)" us lower burst_none_cb_p99 "$handoff_burst" burst_none_hand_p99 &&
    row "notification callback p99 64 concurrent (sync always)" us lower burst_always_cb_p99 "$nm (same threads)" burst_always_nm_p99 "< 50" &&
    row "notification callback p99 64 concurrent (sync always)" us lower burst_always_cb_p99 "$handoff_burst" burst_always_hand_p99 &&
    row "write callback p50 (Switch sends a command)" us lower switch_wcb_p50 "value matching no Switch" switch_wnm_p50 &&
    row "write callback p99 (Switch sends a command)" us lower switch_wcb_p99 "value matching no Switch" switch_wnm_p99 "< 50" &&
    row "write callback p99 (Switch sends a command)" us lower switch_wcb_p99 "$handoff" lat_handoff_p99 &&
    row "write callback p99 (Switch sends a command)" us lower switch_wcb_p99 "$handoff_burst" switch_whand_p99 &&
    row "notification -> PUBLISH on the wire p50 (sync none)" us lower lat_none_n2w_p50 "$bare" peer_lat_c2w_p50 &&
    row "notification -> PUBLISH on the wire p99 (sync none)" us lower lat_none_n2w_p99 "$bare" peer_lat_c2w_p99 "< 1000" &&
    row "notification -> PUBLISH on the wire p50 (sync always)" us lower lat_always_n2w_p50 "$bsync" peer_lat_sync_c2w_p50 &&
    row "notification -> PUBLISH on the wire p99 (sync always)" us lower lat_always_n2w_p99 "$bsync" peer_lat_sync_c2w_p99 &&
    row "notification -> PUBLISH p50 2 ms after a confirmation (sync none)" us lower b2b_none_n2w_p50 "bare client: the same 2 ms after" peer_b2b_c2w_p50 &&
    row "notification -> PUBLISH p50 2 ms after a confirmation (sync none)" us lower b2b_none_n2w_p50 "bare client with TCP_NODELAY: the same" peer_b2b_nodelay_c2w_p50 &&
    row "notification -> PUBLISH p99 2 ms after a confirmation (sync none)" us lower b2b_none_n2w_p99 "bare client: the same 2 ms after" peer_b2b_c2w_p99 "< 1000" &&
    row "notification -> PUBLISH p99 2 ms after a confirmation (sync none)" us lower b2b_none_n2w_p99 "bare client with TCP_NODELAY: the same" peer_b2b_nodelay_c2w_p99 "< 1000" &&
    row "PUBLISH on the wire -> confirmation metric p50 (sync none)" us lower lat_none_w2c_p50 "$echo_peer" peer_lat_w2n_p50 &&
    row "PUBLISH on the wire -> confirmation metric p99 (sync none)" us lower lat_none_w2c_p99 "$echo_peer" peer_lat_w2n_p99 &&
    row "PUBLISH on the wire -> confirmation metric p50 (sync always)" us lower lat_always_w2c_p50 "$echo_peer" peer_lat_w2n_p50 &&
    row "PUBLISH on the wire -> confirmation metric p99 (sync always)" us lower lat_always_w2c_p99 "$echo_peer" peer_lat_w2n_p99 &&
    row "commands/s 64 concurrent to the wire (sync none)" commands/s higher burst_none_rate_wire "bare client: 64 mosquitto_publish" peer_burst_rate_wire &&
    row "commands/s 64 concurrent to the wire (sync always)" commands/s higher burst_always_rate_wire "bare client: 64 pwrite+1 fsync+64 publish" peer_burst_sync_rate_wire &&
    row "commands/s 64 concurrent to the wire (sync always)" commands/s higher burst_always_rate_wire "the same with JournalSync none" burst_none_rate_wire &&
    row "commands/s 64 concurrent confirmed (sync none)" commands/s higher burst_none_rate_conf "bare client: 64 publish to 64 notifications" peer_burst_rate_conf &&
    row "commands/s 64 concurrent confirmed (sync always)" commands/s higher burst_always_rate_conf "bare client: 64 publish to 64 notifications" peer_burst_rate_conf
} || exit 1
