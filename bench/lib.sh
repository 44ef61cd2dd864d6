# bench/lib.sh - what the benchmark scripts share; sourced by bench/*.sh
# after they set BENCH_NAME (the prefix of their progress lines) and $work
# (their temp dir, which bench/run makes and removes).
#
#   pids+=($!)               every process started, stopped on exit
#   say TEXT                 a progress line on stderr
#   bench_need FILE...       exits 1 naming the first missing one
#   bench_free_port          prints a free TCP port on 127.0.0.1
#   bench_start_mosquitto [CONFIG_LINE...]
#                            mosquitto on 127.0.0.1:$port (a free one, tried
#                            again when taken meanwhile), no persistence,
#                            anonymous, errors and warnings logged to
#                            $work/mosquitto.log, then the given lines; sets
#                            $port, returns once the port accepts
#   bench_token GWSIM        $work/secret and a token signed with it (1 day)
#                            in $work/token, as the simulator checks them
#   bench_stats VALUE...     "median,min,max" of the values
#   bench_row FIGURE UNIT BETTER OURS PEER_LABEL PEER RUNS [TARGET MET]
#                            one CSV row: OURS and PEER as bench_stats
#                            prints them, the ratio of their medians
#   bench_below VALUE LIMIT  "yes" when VALUE < LIMIT, else "no"
#   bench_count_of FILE      the count of a bench/bm_count.c counter file
#   bench_cpu_ns PID         CPU ns a process used: the sum of its threads'
#                            run times (schedstat), or utime+stime where the
#                            kernel keeps no schedstat
#   bench_ticks_ns PID       utime+stime in ns (10 ms ticks: coarse)
#   BENCH_ROW_HEADER         the CSV header bench/run expects
#
# Every process gets SIGTERM on exit, then SIGKILL after BENCH_GRACE
# seconds (default 20: a collectd of 100k relays takes its time); a
# function bench_before_cleanup, when defined, runs first.

pids=()
BENCH_ROW_HEADER="figure,unit,better,ours_median,ours_min,ours_max,peer,peer_median,peer_min,peer_max,runs,ratio,target,target_met"
BENCH_LIFETIME=${BENCH_LIFETIME:-900} # s: the broker exits by itself then

say() { echo "${BENCH_NAME:-bench}: $*" >&2; }

bench_cleanup() {
  local p
  declare -F bench_before_cleanup >/dev/null && bench_before_cleanup
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in "${pids[@]}"; do
    for _ in $(seq $((${BENCH_GRACE:-20} * 10))); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pids=()
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_need() {
  local f
  for f in "$@"; do
    [[ -f $f ]] || { say "missing $f (make -C build; bench/run builds the rest)"; exit 1; }
  done
}

bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_start_mosquitto() {
  local try line
  for try in 1 2 3; do
    port=$(bench_free_port) || { say "no free port"; return 1; }
    {
      echo "user $(id -un)"
      echo "listener $port 127.0.0.1"
      echo "allow_anonymous true"
      echo "persistence false"
      echo "log_dest file $work/mosquitto.log"
      echo "log_type error"
      echo "log_type warning"
      for line in "$@"; do echo "$line"; done
    } >"$work/mosquitto.conf"
    timeout -k 5 "$BENCH_LIFETIME" mosquitto -c "$work/mosquitto.conf" \
      >"$work/mosquitto.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
      kill -0 "${pids[-1]}" 2>/dev/null || break
      timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && return 0
      sleep 0.1
    done
    say "mosquitto did not start on port $port (try $try):"
    cat "$work/mosquitto.out" "$work/mosquitto.log" >&2 2>/dev/null
  done
  return 1
}

bench_token() {
  printf "bench-secret-%s-%s" "$RANDOM$RANDOM$RANDOM$RANDOM" "$(date +%s%N)" >"$work/secret"
  "$1" --secret-file "$work/secret" --print-token 86400 >"$work/token" || return 1
  chmod 600 "$work/token" "$work/secret"
}

bench_stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.6g,%.6g,%.6g", m, v[1], v[NR] }'
}

bench_row() {
  awk -v f="$1" -v u="$2" -v b="$3" -v o="$4" -v l="$5" -v p="$6" -v r="$7" \
    -v t="${8:-}" -v m="${9:-}" 'BEGIN {
    split(o, x, ","); split(p, y, ",")
    printf "%s,%s,%s,%s,%s,%s,%d,%.4g,%s,%s\n", f, u, b, o, l, p, r,
      (y[1] != 0 ? x[1] / y[1] : 0), t, m }'
}

bench_below() { awk -v v="$1" -v l="$2" 'BEGIN { print (v < l ? "yes" : "no") }'; }

bench_count_of() { od -An -t d8 -N 8 "$1" 2>/dev/null | tr -d ' '; }

bench_ticks_ns() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f\n", ($14 + $15) * 1e9 / hz }' \
    "/proc/$1/stat"
}

bench_cpu_ns() {
  local f sum=0 t
  [[ -d /proc/$1 ]] || return 1
  for f in /proc/"$1"/task/*/schedstat; do
    read -r t _ <"$f" 2>/dev/null && sum=$((sum + t))
  done
  if ((sum == 0)); then
    bench_ticks_ns "$1"
  else
    echo "$sum"
  fi
}
