# tests/lib.sh - the integration-test harness, sourced by tests/integration/*.sh
#
# Each integration test is a bash script run by automake's TAP driver with
# $top_srcdir and $top_builddir (absolute) in its environment:
#
#   . "$top_srcdir/tests/lib.sh"
#   bm_start_broker
#   bm_sub_start resource/commands
#   bm_start_gwsim -v
#   bm_start_collectd 'LoadPlugin bimetri
#   <Plugin bimetri> ... </Plugin>'
#   bm_notify failure sensors temperature "" "too hot"
#   bm_check "the command was published" bm_wait_log "$SUB_LOG" setExtDO 10
#   bm_is "$(bm_getval testhost/bimetri-plant1/bool-pump)" 1 "pump is on"
#   bm_done
#
# What sourcing this file sets up:
# - $T, a fresh temporary directory for this test. It is removed when the test
#   passes; on failure it is kept, its path is printed as a TAP comment, and
#   so are the last 40 lines of every *.log and *.out file in it.
# - A deadline: $BM_TEST_TIMEOUT seconds (default 120) from now. Past it the
#   test prints "Bail out!" and cleans up. A watchdog process enforces it even
#   when the script is stuck in a command, and kills the test's daemons if the
#   script itself dies without cleaning up (kill -9).
# - Traps on EXIT, INT, TERM and HUP that stop every process the harness
#   started: SIGTERM, a grace period, then SIGKILL, and wait for each.
#
# Peers are real and on loopback only: mosquitto on 127.0.0.1 and a free port,
# collectd with the built plugin, the project's gateway simulator.
#
# Rules for test scripts:
# - Only bm_ok, bm_check, bm_is, bm_isnt, bm_like, bm_unlike, bm_pass and
#   bm_fail emit test points. bm_wait_for and bm_wait_log only return
#   nonzero on timeout: assert on them (`bm_check "desc" bm_wait_for ...`,
#   or `bm_wait_for ...; bm_ok $? "desc"`), never `bm_wait_for ...;
#   bm_pass "desc"`, which cannot fail.
# - Failed assertions return 1 (so `bm_is ... || bm_bail ...` works); under
#   `set -e` the first one ends the test (the harness itself copes with
#   set -euo pipefail).
# - Call the bm_start_* functions directly, never in $(...) or a pipe: they
#   set variables and track processes in the calling shell.
# - End with bm_done.
#
# Environment knobs:
#   BM_TEST_TIMEOUT      the deadline in seconds (default 120)
#   BM_COLLECTD_WRAPPER  prefixed to the collectd command line, e.g.
#                        "valgrind --leak-check=full --error-exitcode=1"
#   BM_NO_PLUGIN=1       start collectd without bimetri.so (harness selftest)
#   BM_KEEP_TMP=1        keep $T even when the test passes

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

# POSIX sh up to here: a test sourced by another shell stops with a reason.
if [ -z "${BASH_VERSION:-}" ]; then
  echo "Bail out! tests/lib.sh needs bash (run the test with bash)"
  exit 1
fi

if [[ -z ${top_srcdir:-} || -z ${top_builddir:-} ]]; then
  echo "Bail out! top_srcdir and top_builddir must be set (run through" \
    "make check, or: top_srcdir=\$PWD top_builddir=\$PWD/build bash $0)"
  exit 1
fi

BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-120}
BM_HOSTNAME=testhost
BM_COLLECTD_PLUGINS_DIR=${BM_COLLECTD_PLUGINS_DIR:-/usr/lib/collectd}
BM_TYPES_DB=${BM_TYPES_DB:-/usr/share/collectd/types.db}
# The collectd plugins the tests may load, linked into $T/plugins.
BM_STOCK_PLUGINS="logfile unixsock csv threshold exec write_log"

_BM_N=0            # TAP test points emitted so far
_BM_FAILED=0       # of which failed
_BM_DONE=0         # bm_done was called
_BM_CLEANING=0     # _bm_cleanup is running
_BM_PIDS=()        # processes to stop at exit
_BM_NAMES=()       # their names, same index
_BM_WATCHDOG_PID=
_BM_SUB_N=0        # mosquitto_sub clients started
_BM_BROKER_EXTRA=()
_BM_START_S=$EPOCHSECONDS
_BM_DEADLINE=$((EPOCHSECONDS + BM_TEST_TIMEOUT))

if [[ ! -x $top_builddir/tests/freeport ]]; then
  echo "Bail out! $top_builddir/tests/freeport is not built (make check builds it)"
  exit 1
fi

_bm_name=${0##*/}
_bm_name=${_bm_name%.sh}
T=$(mktemp -d "${TMPDIR:-/tmp}/bm-${_bm_name}.XXXXXX") || {
  echo "Bail out! cannot create a temporary directory"
  exit 1
}
unset _bm_name
# The collectd socket path must fit in sun_path (108 bytes).
if ((${#T} > 80)); then
  echo "Bail out! temporary directory path \"$T\" is too long for a unix socket"
  rm -rf "$T"
  exit 1
fi
: >"$T/.bm_pids"

# ---------------------------------------------------------------------------
# Process helpers (internal)
# ---------------------------------------------------------------------------

# _bm_alive PID: true when PID exists and is not a zombie. kill -0 is not
# enough: our own exited children stay zombies until bash reaps them.
_bm_alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# _bm_starttime PID: prints the process start time (field 22 of
# /proc/PID/stat), which tells a process from a later one reusing its PID.
_bm_starttime() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  local -a f
  read -ra f <<<"$stat"
  echo "${f[19]}"
}

# _bm_descendants PID: prints the PIDs of PID's children, grandchildren and
# so on (from one scan of /proc).
_bm_descendants() {
  local f line rest pid
  local -A kids=()
  local -a fields queue
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    rest=${line##*) }
    read -ra fields <<<"$rest"
    pid=${f#/proc/}
    pid=${pid%/stat}
    kids[${fields[1]}]+=" $pid"
  done
  read -ra queue <<<"${kids[$1]:-}"
  while ((${#queue[@]} > 0)); do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    echo "$pid"
    read -ra fields <<<"${kids[$pid]:-}"
    queue+=("${fields[@]}")
  done
}

# _bm_children PID: prints the PIDs whose parent is PID.
_bm_children() {
  local f line rest
  local -a fields
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    rest=${line##*) }
    read -ra fields <<<"$rest"
    if [[ ${fields[1]} == "$1" ]]; then
      f=${f#/proc/}
      echo "${f%/stat}"
    fi
  done
}

# _bm_track PID NAME: remembers a background process to stop at exit, and
# lists it for the watchdog.
_bm_track() {
  _BM_PIDS+=("$1")
  _BM_NAMES+=("$2")
  echo "$1 $(_bm_starttime "$1" || echo 0) $2" >>"$T/.bm_pids"
}

# _bm_untrack PID: forgets a process that has been stopped and reaped.
_bm_untrack() {
  local i
  for i in "${!_BM_PIDS[@]}"; do
    if [[ ${_BM_PIDS[$i]} == "$1" ]]; then
      unset '_BM_PIDS[i]' '_BM_NAMES[i]'
    fi
  done
}

# _bm_reap PID: waits for an exited child and returns its exit status
# (128+signal when killed); untracks it.
_bm_reap() {
  local rc=0
  { wait "$1"; } 2>/dev/null || rc=$?
  _bm_untrack "$1"
  return "$rc"
}

# _bm_wait_exit PID SECONDS: polls until PID has exited; false on timeout.
_bm_wait_exit() {
  local until=$(($(_bm_now_us) + $(_bm_us "$2")))
  while _bm_alive "$1"; do
    (($(_bm_now_us) < until)) || return 1
    sleep 0.05
  done
  return 0
}

# _bm_stop_pid PID GRACE_SECONDS [SIGNAL]: sends SIGNAL (default TERM),
# waits up to GRACE_SECONDS, then SIGKILL. Reaps it and returns its exit
# status (137 when it had to be killed).
_bm_stop_pid() {
  local pid=$1 grace=$2 sig=${3:-TERM}
  if _bm_alive "$pid"; then
    kill "-$sig" "$pid" 2>/dev/null
    if ! _bm_wait_exit "$pid" "$grace"; then
      bm_diag "pid $pid did not exit ${grace}s after SIG$sig: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      _bm_wait_exit "$pid" 5
    fi
  fi
  _bm_reap "$pid"
}

# _bm_now_us: microseconds since the epoch.
_bm_now_us() {
  local r=$EPOCHREALTIME
  echo $((10#${r%.*} * 1000000 + 10#${r#*.}))
}

# _bm_us SECONDS: converts "2" or "0.5" seconds to microseconds.
_bm_us() {
  local s=$1 int frac
  int=${s%%.*}
  frac=
  [[ $s == *.* ]] && frac=${s#*.}
  frac=${frac}000000
  frac=${frac:0:6}
  echo $((10#${int:-0} * 1000000 + 10#$frac))
}

# _bm_remaining: seconds left before the test deadline (at least 1).
_bm_remaining() {
  local r=$((_BM_DEADLINE - EPOCHSECONDS))
  ((r > 0)) || r=1
  echo "$r"
}

# _bm_lines FILE: number of lines in FILE, 0 when it does not exist.
_bm_lines() {
  if [[ -f $1 ]]; then
    wc -l <"$1"
  else
    echo 0
  fi
}

# _bm_quote STRING: prints STRING as a double-quoted unixsock/config string,
# with backslashes and double quotes escaped.
_bm_quote() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# ---------------------------------------------------------------------------
# Watchdog, traps and cleanup
# ---------------------------------------------------------------------------

# _bm_kill_listed: SIGKILLs every process in $T/.bm_pids that still runs with
# the start time it had when it was listed.
_bm_kill_listed() {
  local pid start
  while read -r pid start _; do
    if _bm_alive "$pid" && [[ $(_bm_starttime "$pid") == "$start" ]]; then
      kill -KILL "$pid" 2>/dev/null
    fi
  done <"$T/.bm_pids"
}

# _bm_watchdog MAIN_PID: runs in the background for the life of the test.
# At the deadline it sends SIGUSR1 to the test, whose trap bails out; if the
# test is stuck in a foreground command (bash runs traps only between
# commands) it terminates that command. If the test dies without cleaning up,
# it SIGKILLs the daemons the test had started.
_bm_watchdog() {
  local main=$1 self=$BASHPID nap=
  local grace_end=0 c
  local -a tree
  set +eu +o pipefail
  trap '[[ -n $nap ]] && kill "$nap" 2>/dev/null; exit 0' TERM
  trap '' INT HUP USR1
  while :; do
    if ! _bm_alive "$main"; then
      _bm_kill_listed
      exit 0
    fi
    if ((EPOCHSECONDS >= _BM_DEADLINE)); then
      if ((grace_end == 0)); then
        kill -USR1 "$main" 2>/dev/null
        grace_end=$((EPOCHSECONDS + 3))
      elif ((EPOCHSECONDS >= grace_end)); then
        # The trap did not run: end the foreground command the test is
        # blocked in (anything that is neither us nor a tracked daemon).
        for c in $(_bm_children "$main"); do
          [[ $c == "$self" ]] && continue
          grep -q "^$c " "$T/.bm_pids" && continue
          mapfile -t tree < <(_bm_descendants "$c")
          kill -TERM "$c" "${tree[@]}" 2>/dev/null
        done
        if ((EPOCHSECONDS >= grace_end + 20)); then
          # Cleanup itself hangs: last resort.
          _bm_kill_listed
          kill -KILL "$main" 2>/dev/null
          exit 0
        fi
      fi
    fi
    sleep 0.5 &
    nap=$!
    wait "$nap"
    nap=
  done
}

# _bm_print_logs: the last 40 lines of each log in $T, as TAP comments.
_bm_print_logs() {
  local f
  for f in "$T"/*.log "$T"/*.out; do
    [[ -s $f ]] || continue
    echo "# ---- last 40 lines of $f ----"
    tail -n 40 "$f" | sed 's/^/# /'
  done
}

# _bm_cleanup: the EXIT trap. Stops the watchdog and every tracked process,
# then removes $T, or keeps it and shows its logs when the test failed.
_BM_AT_EXIT=()

# bm_at_exit COMMAND: runs COMMAND (with eval) when the test ends, however it
# ends, after its processes are stopped and before $T is removed: for what a
# test set up outside the harness (a mount, an installed package).
bm_at_exit() {
  _BM_AT_EXIT+=("$1")
}

_bm_cleanup() {
  local status=$? i pid
  ((_BM_CLEANING)) && return
  _BM_CLEANING=1
  # The script's own set -e/-u/pipefail must not cut the cleanup short.
  set +eu +o pipefail
  trap '' INT TERM HUP USR1
  if [[ -n $_BM_WATCHDOG_PID ]]; then
    kill -TERM "$_BM_WATCHDOG_PID" 2>/dev/null
    { wait "$_BM_WATCHDOG_PID"; } 2>/dev/null
  fi
  # SIGTERM everything at once, give them 5 s together, then SIGKILL.
  for pid in "${_BM_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${_BM_PIDS[@]}"; do
    if ! _bm_wait_exit "$pid" 5; then
      for i in "${!_BM_PIDS[@]}"; do
        [[ ${_BM_PIDS[$i]} == "$pid" ]] && echo "# ${_BM_NAMES[$i]} (pid $pid) ignored SIGTERM: SIGKILL"
      done
      kill -KILL "$pid" 2>/dev/null
      _bm_wait_exit "$pid" 5
    fi
    { wait "$pid"; } 2>/dev/null
  done
  _BM_PIDS=()
  _BM_NAMES=()
  for i in "${_BM_AT_EXIT[@]}"; do
    eval "$i"
  done

  if ((status == 0 && (_BM_FAILED > 0 || !_BM_DONE))); then
    status=1
  fi
  if ((status != 0)) || [[ -n ${BM_KEEP_TMP:-} ]]; then
    echo "# test directory kept: $T"
    ((status != 0)) && _bm_print_logs
  else
    rm -rf "$T"
  fi
  exit "$status"
}

# _bm_on_signal NAME: trap for INT/TERM/HUP: bail out (the EXIT trap cleans).
_bm_on_signal() {
  echo "Bail out! $_BM_SCRIPT interrupted by SIG$1"
  exit $((128 + $(kill -l "$1")))
}

# _bm_on_deadline: trap for the watchdog's SIGUSR1.
_bm_on_deadline() {
  echo "Bail out! $_BM_SCRIPT exceeded its deadline of ${BM_TEST_TIMEOUT}s" \
    "(BM_TEST_TIMEOUT)"
  exit 1
}

_BM_SCRIPT=${0##*/}
trap _bm_cleanup EXIT
trap '_bm_on_signal INT' INT
trap '_bm_on_signal TERM' TERM
trap '_bm_on_signal HUP' HUP
trap _bm_on_deadline USR1
_bm_watchdog "$$" &
_BM_WATCHDOG_PID=$!

# ---------------------------------------------------------------------------
# TAP
# ---------------------------------------------------------------------------

# _bm_result STATUS DESC...: emits one TAP test point; returns 0 when it
# passed, 1 when it failed. '#' in the description is escaped so it is not
# read as a TAP directive.
_bm_result() {
  local st=$1 desc
  shift
  desc="$*"
  desc=${desc//$'\n'/ }
  desc=${desc//\#/\\#}
  _BM_N=$((_BM_N + 1))
  if [[ $st == 0 ]]; then
    echo "ok $_BM_N - $desc"
    return 0
  fi
  echo "not ok $_BM_N - $desc"
  _BM_FAILED=$((_BM_FAILED + 1))
  return 1
}

# bm_ok STATUS DESC: passes when STATUS (usually $?) is 0.
#   some_command; bm_ok $? "some_command succeeded"
bm_ok() {
  local st=$1
  shift
  _bm_result "$st" "$@"
}

# bm_check DESC CMD [ARGS...]: runs CMD, passes when it exits 0. CMD runs in
# a subshell with its output captured (so it cannot corrupt the TAP stream);
# on failure its exit status and last 20 lines of output are shown.
bm_check() {
  local desc=$1 out st=0
  shift
  out=$("$@" 2>&1) || st=$?
  if _bm_result "$st" "$desc"; then
    return 0
  fi
  bm_diag "command failed with status $st: $*"
  [[ -n $out ]] && bm_diag "$(tail -n 20 <<<"$out")"
  return 1
}

# bm_is GOT WANT DESC: passes when the two strings are equal; shows both
# otherwise.
bm_is() {
  if _bm_result "$([[ $1 == "$2" ]]; echo $?)" "$3"; then
    return 0
  fi
  bm_diag "     got: '$1'"
  bm_diag "expected: '$2'"
  return 1
}

# bm_isnt GOT UNWANTED DESC: passes when the two strings differ.
bm_isnt() {
  if _bm_result "$([[ $1 != "$2" ]]; echo $?)" "$3"; then
    return 0
  fi
  bm_diag "     got: '$1'"
  bm_diag "expected anything else"
  return 1
}

# bm_like STRING REGEX DESC: passes when STRING matches the POSIX extended
# REGEX (bash =~; on a multi-line STRING, ^ and $ anchor the whole string).
bm_like() {
  local st=1
  [[ $1 =~ $2 ]] && st=0
  if _bm_result "$st" "$3"; then
    return 0
  fi
  bm_diag "                  '$1'"
  bm_diag "doesn't match '$2'"
  return 1
}

# bm_unlike STRING REGEX DESC: passes when STRING does not match REGEX.
bm_unlike() {
  local st=0
  [[ $1 =~ $2 ]] && st=1
  if _bm_result "$st" "$3"; then
    return 0
  fi
  bm_diag "                  '$1'"
  bm_diag "matches '$2'"
  return 1
}

# bm_pass DESC / bm_fail DESC: an unconditional test point.
bm_pass() { _bm_result 0 "$@"; }
bm_fail() { _bm_result 1 "$@"; }

# bm_diag MESSAGE...: prints MESSAGE as TAP comments, one "# " per line.
bm_diag() {
  local line
  while IFS= read -r line; do
    echo "# $line"
  done <<<"$*"
}

# bm_bail REASON: aborts the whole test with "Bail out!" (the automake
# driver reports it as an ERROR); cleanup keeps $T and prints the logs.
bm_bail() {
  echo "Bail out! $*"
  exit 1
}

# bm_done: prints the plan and exits: 0 when every test point passed, 1
# otherwise. A test that ran no test point bails out: it cannot fail, so it
# proves nothing.
bm_done() {
  ((_BM_N > 0)) || bm_bail "$_BM_SCRIPT ran no test"
  echo "1..$_BM_N"
  _BM_DONE=1
  bm_diag "$_BM_SCRIPT: $((_BM_N - _BM_FAILED))/$_BM_N passed in $((EPOCHSECONDS - _BM_START_S))s"
  ((_BM_FAILED == 0)) && exit 0
  exit 1
}

# ---------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------

# bm_wait_for TIMEOUT_S CMD [ARGS...]: runs CMD every 0.1 s until it exits 0
# or TIMEOUT_S (may be fractional) has passed. On success prints the stdout
# of the successful run and returns 0; on timeout returns 1 and shows the
# last attempt's output as a TAP comment. CMD runs in a subshell.
bm_wait_for() {
  local until out st
  until=$(($(_bm_now_us) + $(_bm_us "$1")))
  shift
  while :; do
    st=0
    out=$("$@" 2>"$T/.bm_wait_err") || st=$?
    if ((st == 0)); then
      [[ -n $out ]] && printf '%s\n' "$out"
      return 0
    fi
    if (($(_bm_now_us) >= until)); then
      out="$out$(cat "$T/.bm_wait_err")"
      bm_diag "timed out waiting for: $*"
      [[ -n $out ]] && bm_diag "last attempt (status $st): $(tail -n 10 <<<"$out")"
      return 1
    fi
    sleep 0.1
  done
}

# bm_count_log FILE REGEX: prints how many lines of FILE match the extended
# REGEX (0 when FILE does not exist yet).
bm_count_log() {
  local n
  [[ -f $1 ]] || { echo 0; return 0; }
  n=$(grep -cE -- "$2" "$1") || true
  echo "${n:-0}"
}

# _bm_count_at_least FILE REGEX N: true when FILE has at least N matching
# lines.
_bm_count_at_least() {
  (($(bm_count_log "$1" "$2") >= $3))
}

# bm_wait_log FILE REGEX TIMEOUT_S [COUNT]: waits until FILE has COUNT
# (default 1) lines matching the extended REGEX; nonzero on timeout.
bm_wait_log() {
  bm_wait_for "$3" _bm_count_at_least "$1" "$2" "${4:-1}" >/dev/null
}

# ---------------------------------------------------------------------------
# Ports and the MQTT broker
# ---------------------------------------------------------------------------

# bm_free_port [N]: prints N (default 1) distinct free TCP ports on
# 127.0.0.1, one per line.
bm_free_port() {
  "$top_builddir/tests/freeport" "$@"
}

# _bm_port_open PORT: true when 127.0.0.1:PORT accepts a TCP connection.
_bm_port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# _bm_write_broker_conf: writes $T/mosquitto.conf from BROKER_PORT and the
# extra lines given to bm_start_broker. A default whose keyword an extra line
# sets (allow_anonymous, persistence) is left out.
_bm_write_broker_conf() {
  local line key skip=" "
  for line in "${_BM_BROKER_EXTRA[@]}"; do
    key=${line%%[[:space:]]*}
    skip+="$key "
  done
  {
    echo "# written by tests/lib.sh for $_BM_SCRIPT"
    # As root mosquitto would switch to the "mosquitto" user, who cannot
    # write in $T; as anybody else this line has no effect.
    echo "user $(id -un)"
    echo "listener $BROKER_PORT 127.0.0.1"
    [[ $skip == *" allow_anonymous "* ]] || echo "allow_anonymous true"
    [[ $skip == *" persistence "* ]] || echo "persistence false"
    echo "persistence_location $T/"
    echo "log_dest file $T/mosquitto.log"
    echo "log_type all"
    echo "log_timestamp true"
    for line in "${_BM_BROKER_EXTRA[@]}"; do
      echo "$line"
    done
  } >"$T/mosquitto.conf"
}

# _bm_launch_broker: starts mosquitto with $T/mosquitto.conf and waits until
# it logs that it runs and its port accepts connections (10 s at most).
# Returns 1, with mosquitto reaped, when it exited instead.
_bm_launch_broker() {
  local before until
  before=$(_bm_lines "$T/mosquitto.log")
  mosquitto -c "$T/mosquitto.conf" >>"$T/mosquitto.out" 2>&1 &
  BROKER_PID=$!
  _bm_track "$BROKER_PID" mosquitto
  until=$((EPOCHSECONDS + 10))
  while ((EPOCHSECONDS < until)); do
    if ! _bm_alive "$BROKER_PID"; then
      _bm_reap "$BROKER_PID"
      BROKER_PID=
      return 1
    fi
    if awk -v b="$before" 'NR > b && /mosquitto version .* running/ { f = 1 }
        END { exit !f }' "$T/mosquitto.log" 2>/dev/null &&
      _bm_port_open "$BROKER_PORT"; then
      return 0
    fi
    sleep 0.05
  done
  bm_diag "mosquitto did not accept connections on port $BROKER_PORT within 10s"
  _bm_stop_pid "$BROKER_PID" 2
  BROKER_PID=
  return 1
}

# bm_start_broker [CONFIG_LINE...]: writes $T/mosquitto.conf (listener on
# 127.0.0.1:$BROKER_PORT, anonymous access, no persistence, everything logged
# to $T/mosquitto.log, then the given lines) and starts mosquitto. Sets
# BROKER_PORT (kept when already set, so a restarted broker has the same
# port) and BROKER_PID. Bails out when the broker does not come up; a port
# lost to another process in the meantime is replaced up to 3 times.
bm_start_broker() {
  local tries=0 fixed=${BROKER_PORT:-}
  _BM_BROKER_EXTRA=("$@")
  while :; do
    if [[ -z ${BROKER_PORT:-} ]]; then
      BROKER_PORT=$(bm_free_port 1) || bm_bail "no free TCP port on 127.0.0.1"
    fi
    _bm_write_broker_conf
    _bm_launch_broker && return 0
    tries=$((tries + 1))
    if ((tries <= 3)) && grep -qs 'Address already in use' \
      "$T/mosquitto.log" "$T/mosquitto.out"; then
      bm_diag "port $BROKER_PORT is in use, trying again"
      if [[ -z $fixed ]]; then
        BROKER_PORT=
      else
        sleep 1
      fi
      continue
    fi
    bm_bail "mosquitto did not start on 127.0.0.1:$BROKER_PORT (see $T/mosquitto.log)"
  done
}

# bm_stop_broker: SIGTERM to mosquitto, SIGKILL after 5 s; keeps
# BROKER_PORT for bm_start_broker/bm_restart_broker. Returns mosquitto's exit
# status.
bm_stop_broker() {
  local rc=0
  [[ -n ${BROKER_PID:-} ]] || return 0
  _bm_stop_pid "$BROKER_PID" 5 || rc=$?
  BROKER_PID=
  return "$rc"
}

# bm_kill_broker: SIGKILL to mosquitto (a crash: no goodbye to the clients).
bm_kill_broker() {
  [[ -n ${BROKER_PID:-} ]] || return 0
  kill -KILL "$BROKER_PID" 2>/dev/null
  _bm_wait_exit "$BROKER_PID" 5
  _bm_reap "$BROKER_PID"
  BROKER_PID=
  return 0
}

# bm_restart_broker: stops the broker and starts it again on the same port
# with the same configuration lines.
bm_restart_broker() {
  bm_stop_broker
  bm_start_broker "${_BM_BROKER_EXTRA[@]}"
}

# ---------------------------------------------------------------------------
# MQTT clients
# ---------------------------------------------------------------------------

# bm_sub_start TOPIC [QOS [FORMAT]]: starts mosquitto_sub on TOPIC (QOS
# default 2) with client id "bm-sub-N", printing "QOS TOPIC PAYLOAD" per
# message (-F FORMAT, default '%q %t %p'; '%U %p' puts the arrival time
# first) to $T/sub.log for the first one, $T/sub-N.log after that. Sets
# SUB_LOG and SUB_PID, and returns once the broker has acknowledged the
# subscription (it logs "Sending SUBACK to <id>"). Bails out on failure.
# mosquitto_sub reconnects and subscribes again after a broker restart.
bm_sub_start() {
  local topic=$1 qos=${2:-2} format=${3:-'%q %t %p'} id before
  [[ -n ${BROKER_PORT:-} ]] || bm_bail "bm_sub_start: no broker started"
  _BM_SUB_N=$((_BM_SUB_N + 1))
  id=bm-sub-$_BM_SUB_N
  if ((_BM_SUB_N == 1)); then
    SUB_LOG=$T/sub.log
  else
    SUB_LOG=$T/sub-$_BM_SUB_N.log
  fi
  : >"$SUB_LOG"
  before=$(bm_count_log "$T/mosquitto.log" "Sending SUBACK to $id\$")
  mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -i "$id" -q "$qos" \
    -F "$format" -W "$(($(_bm_remaining) + 10))" -t "$topic" \
    >"$SUB_LOG" 2>>"$T/sub.out" &
  SUB_PID=$!
  _bm_track "$SUB_PID" "mosquitto_sub $id"
  if ! bm_wait_log "$T/mosquitto.log" "Sending SUBACK to $id\$" 10 \
    $((before + 1)); then
    bm_bail "mosquitto_sub $id did not subscribe to '$topic'"
  fi
}

# bm_sub_stop [PID]: stops a mosquitto_sub (default: the last one started).
bm_sub_stop() {
  local pid=${1:-${SUB_PID:-}}
  [[ -n $pid ]] || return 0
  _bm_stop_pid "$pid" 5 || true
}

# bm_pub TOPIC PAYLOAD [QOS [MOSQUITTO_PUB_ARGS...]]: publishes one message
# (QOS default 2) and returns mosquitto_pub's status (124 when it hung for
# 10 s). Extra arguments such as -r go to mosquitto_pub.
bm_pub() {
  local topic=$1 payload=$2 qos=${3:-2}
  shift 2
  (($# > 0)) && shift
  timeout 10 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q "$qos" \
    -t "$topic" -m "$payload" "$@"
}

# bm_npm_install SRC DIR PACKAGE [FILE...]: copies SRC's package.json,
# package-lock.json and FILEs into DIR and, unless what was installed there
# last came from the same package.json and package-lock.json (and
# node_modules/PACKAGE is there), runs `npm ci` in DIR (bounded by
# BM_NPM_TIMEOUT, default 150 s; under a lock, so concurrent runs do not
# collide). npm's output goes to $T/npm.out.
bm_npm_install() {
  local src=$1 dir=$2 package=$3 f
  shift 3
  local stamp=$dir/node_modules/.bm-installed
  mkdir -p "$dir" || return 1
  if [[ $(cd "$src" && pwd -P) != $(cd "$dir" && pwd -P) ]]; then
    for f in package.json package-lock.json "$@"; do
      cp -f "$src/$f" "$dir/" || return 1
    done
  fi
  (
    flock -w "${BM_NPM_TIMEOUT:-150}" 9 || { echo "cannot lock $dir/.install.lock"; exit 1; }
    cd "$dir" || exit 1
    if cat package.json package-lock.json | cmp -s - "$stamp" &&
      [[ -f node_modules/$package/package.json ]]; then
      echo "node modules up to date"
      exit 0
    fi
    timeout "${BM_NPM_TIMEOUT:-150}" npm ci --no-audit --no-fund --ignore-scripts \
      --loglevel=warn &&
      cat package.json package-lock.json >"$stamp"
  ) 9>"$dir/.install.lock" >>"$T/npm.out" 2>&1
}

# ---------------------------------------------------------------------------
# The gateway simulator
# ---------------------------------------------------------------------------

# bm_start_gwsim [ARGS...]: starts $top_builddir/bimetri-gwsim against the
# broker (-p $BROKER_PORT --log $T/gwsim.log --exit-after <seconds until the
# test deadline + 10>, then ARGS), its stdout and stderr in $T/gwsim.out (pass
# -v to get its events there). Sets GWSIM_PID and returns once the broker
# logs the simulator's subscription to $BM_GWSIM_TOPIC (default
# resource/commands). Bails out when it exits or does not subscribe in 10 s.
bm_start_gwsim() {
  local topic=${BM_GWSIM_TOPIC:-resource/commands} before until
  local sim=$top_builddir/bimetri-gwsim
  [[ -x $sim ]] || bm_bail "$sim is not built"
  [[ -n ${BROKER_PORT:-} ]] || bm_bail "bm_start_gwsim: no broker started"
  before=$(_bm_count_subscriptions "$topic")
  "$sim" -p "$BROKER_PORT" --log "$T/gwsim.log" \
    --exit-after "$(($(_bm_remaining) + 10))" "$@" >>"$T/gwsim.out" 2>&1 &
  GWSIM_PID=$!
  _bm_track "$GWSIM_PID" bimetri-gwsim
  until=$((EPOCHSECONDS + 10))
  while (($(_bm_count_subscriptions "$topic") <= before)); do
    if ! _bm_alive "$GWSIM_PID"; then
      local rc=0
      _bm_reap "$GWSIM_PID" || rc=$?
      GWSIM_PID=
      bm_bail "bimetri-gwsim exited with status $rc before subscribing to '$topic'"
    fi
    ((EPOCHSECONDS < until)) ||
      bm_bail "bimetri-gwsim did not subscribe to '$topic' within 10s"
    sleep 0.05
  done
}

# _bm_count_subscriptions TOPIC: how many subscriptions to exactly TOPIC the
# broker has logged (its "<client> <qos> <topic>" lines).
_bm_count_subscriptions() {
  [[ -f $T/mosquitto.log ]] || { echo 0; return 0; }
  awk -v t="$1" '$NF == t && $(NF-1) ~ /^[0-2]$/ && NF <= 4 { n++ }
    END { print n + 0 }' "$T/mosquitto.log"
}

# bm_stop_gwsim: SIGTERM to the simulator, SIGKILL after 5 s; returns its
# exit status.
bm_stop_gwsim() {
  local rc=0
  [[ -n ${GWSIM_PID:-} ]] || return 0
  _bm_stop_pid "$GWSIM_PID" 5 || rc=$?
  GWSIM_PID=
  return "$rc"
}

# bm_kill_gwsim: SIGKILL to the simulator.
bm_kill_gwsim() {
  [[ -n ${GWSIM_PID:-} ]] || return 0
  kill -KILL "$GWSIM_PID" 2>/dev/null
  _bm_wait_exit "$GWSIM_PID" 5
  _bm_reap "$GWSIM_PID"
  GWSIM_PID=
  return 0
}

# ---------------------------------------------------------------------------
# collectd
# ---------------------------------------------------------------------------

# _bm_link FILE DIR: hard-links FILE into DIR, copying when a link is not
# possible (another file system). collectd refuses symbolic links.
_bm_link() {
  ln -f "$1" "$2/" 2>/dev/null || cp -f "$1" "$2/"
}

# _bm_make_plugin_dir: fills $T/plugins with the stock plugins and the
# built bimetri.so (left out, with a note, when BM_NO_PLUGIN=1).
_bm_make_plugin_dir() {
  local p so=$top_builddir/.libs/bimetri.so
  mkdir -p "$T/plugins" || bm_bail "cannot create $T/plugins"
  for p in $BM_STOCK_PLUGINS; do
    _bm_link "$BM_COLLECTD_PLUGINS_DIR/$p.so" "$T/plugins" ||
      bm_bail "collectd plugin $BM_COLLECTD_PLUGINS_DIR/$p.so is missing (install collectd-core)"
  done
  if [[ ${BM_NO_PLUGIN:-} == 1 ]]; then
    bm_diag "BM_NO_PLUGIN=1: collectd runs without bimetri.so"
  elif [[ -f $so ]]; then
    _bm_link "$so" "$T/plugins" || bm_bail "cannot copy $so into $T/plugins"
  else
    bm_bail "the plugin $so is not built"
  fi
}

# bm_plugin_is_asan: true when the built bimetri.so is instrumented with
# AddressSanitizer (configure --enable-sanitizers).
bm_plugin_is_asan() {
  [[ $(ldd "$top_builddir/.libs/bimetri.so" 2>/dev/null) == *libasan* ]]
}

# bm_skip DESC REASON: a test point skipped for a stated reason (TAP
# "# SKIP"), for checks that cannot mean anything in this build, never for a
# missing install.
bm_skip() {
  _BM_N=$((_BM_N + 1))
  echo "ok $_BM_N - $1 # SKIP $2"
}

# bm_skip_all REASON: the whole test cannot mean anything in this build
# (TAP "1..0 # SKIP"); cleans up and exits.
bm_skip_all() {
  echo "1..0 # SKIP $1"
  _BM_DONE=1
  exit 0
}

# _bm_sanitizer_env: prints VAR=value words for `env` so that an
# uninstrumented collectd can load a bimetri.so built with
# --enable-sanitizers (the ASan runtime must come first), and preloads the
# shared objects of BM_COLLECTD_PRELOAD (space-separated) after it.
_bm_sanitizer_env() {
  local so=$T/plugins/bimetri.so lib preload=${BM_COLLECTD_PRELOAD:-}
  if [[ -f $so && $(ldd "$so" 2>/dev/null) == *libasan* ]]; then
    lib=$(gcc -print-file-name=libasan.so 2>/dev/null)
    if [[ -f $lib ]]; then
      preload="$lib${preload:+ $preload}" # the sanitizer's runtime first
      # collectd itself is not leak-clean; the unit tests check the plugin's.
      echo "ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}"
    fi
  fi
  [[ -z $preload ]] || echo "LD_PRELOAD=$preload"
}

# _bm_startup_timeout: seconds collectd gets to start or stop: 20, or 90
# under a wrapper such as valgrind.
_bm_startup_timeout() {
  if [[ -n ${BM_COLLECTD_WRAPPER:-} ]]; then echo 90; else echo 20; fi
}

# _bm_launch_collectd: starts collectd on $T/collectd.conf and waits until
# its unix socket answers. Returns 1 (collectd reaped, its log shown as TAP
# comments) when collectd exits or does not answer in time.
_bm_launch_collectd() {
  local -a wrapper=() envs=()
  local until rc out_from log_from
  [[ -n ${BM_COLLECTD_WRAPPER:-} ]] && read -ra wrapper <<<"$BM_COLLECTD_WRAPPER"
  mapfile -t envs < <(_bm_sanitizer_env)
  rm -f "$T/collectd.sock"
  echo "==== $(date '+%F %T') starting collectd" >>"$T/collectd.out"
  # Show only what this start wrote when it fails.
  out_from=$(($(_bm_lines "$T/collectd.out") + 1))
  log_from=$(($(_bm_lines "$T/collectd.log") + 1))
  env "${envs[@]}" "${wrapper[@]}" collectd -f -C "$T/collectd.conf" \
    >>"$T/collectd.out" 2>&1 &
  COLLECTD_PID=$!
  _bm_track "$COLLECTD_PID" collectd
  until=$((EPOCHSECONDS + $(_bm_startup_timeout)))
  while :; do
    if ! _bm_alive "$COLLECTD_PID"; then
      rc=0
      _bm_reap "$COLLECTD_PID" || rc=$?
      COLLECTD_PID=
      bm_diag "collectd exited with status $rc during startup; its output:"
      bm_diag "$(tail -n "+$out_from" "$T/collectd.out" 2>/dev/null | tail -n 40)"
      bm_diag "$(tail -n "+$log_from" "$T/collectd.log" 2>/dev/null | tail -n 40)"
      return 1
    fi
    if [[ -S $T/collectd.sock ]] && bm_unixsock LISTVAL >/dev/null 2>&1; then
      return 0
    fi
    if ((EPOCHSECONDS >= until)); then
      bm_diag "collectd did not answer on $T/collectd.sock within $(_bm_startup_timeout)s"
      bm_diag "$(tail -n "+$log_from" "$T/collectd.log" 2>/dev/null | tail -n 40)"
      _bm_stop_pid "$COLLECTD_PID" 5
      COLLECTD_PID=
      return 1
    fi
    sleep 0.1
  done
}

# bm_write_collectd_conf BODY: writes $T/collectd.conf: the globals
# (Hostname "testhost", Interval 1, BaseDir $T, PluginDir $T/plugins, ...),
# logfile (to $T/collectd.log), unixsock ($T/collectd.sock) and csv
# ($T/csv), then BODY, which loads bimetri and whatever else the test needs.
bm_write_collectd_conf() {
  local body=$1
  {
    echo "# written by tests/lib.sh for $_BM_SCRIPT"
    echo "Hostname \"$BM_HOSTNAME\""
    echo "FQDNLookup false"
    echo "Interval 1"
    echo "BaseDir \"$T\""
    echo "PIDFile \"$T/collectd.pid\""
    echo "PluginDir \"$T/plugins\""
    echo "TypesDB \"$BM_TYPES_DB\""
    echo
    echo "LoadPlugin logfile"
    echo "<Plugin logfile>"
    # Debian's collectd is built without debug logging: "debug" would be
    # refused with a warning and read as "info".
    echo "  LogLevel info"
    echo "  File \"$T/collectd.log\""
    echo "  Timestamp true"
    echo "  PrintSeverity true"
    echo "</Plugin>"
    echo
    echo "LoadPlugin unixsock"
    echo "<Plugin unixsock>"
    echo "  SocketFile \"$T/collectd.sock\""
    echo "  SocketGroup \"$(id -gn)\""
    echo "  SocketPerms \"0600\""
    echo "  DeleteSocket true"
    echo "</Plugin>"
    echo
    echo "LoadPlugin csv"
    echo "<Plugin csv>"
    echo "  DataDir \"$T/csv\""
    echo "  StoreRates false"
    echo "</Plugin>"
    echo
    printf '%s\n' "$body"
  } >"$T/collectd.conf"
}

# bm_try_start_collectd BODY: like bm_start_collectd but returns 1 instead
# of bailing out when collectd does not come up (for tests that expect a
# configuration to be refused). collectd's output is in $T/collectd.out and
# $T/collectd.log.
bm_try_start_collectd() {
  [[ -d $T/plugins ]] || _bm_make_plugin_dir
  bm_write_collectd_conf "$1"
  _bm_launch_collectd
}

# bm_start_collectd BODY: writes $T/collectd.conf (see
# bm_write_collectd_conf), starts `collectd -f` on it (prefixed with
# $BM_COLLECTD_WRAPPER when set), sets COLLECTD_PID and returns once the
# unixsock socket answers. Bails out, showing collectd's log, when collectd
# exits or does not answer within 20 s (90 s under a wrapper).
bm_start_collectd() {
  bm_try_start_collectd "$1" || bm_bail "collectd did not start (see $T/collectd.log)"
}

# bm_stop_collectd: SIGTERM to collectd (a clean shutdown: plugins' shutdown
# callbacks run), SIGKILL if it has not exited after 20 s (90 s under a
# wrapper). Returns collectd's exit status: 0 for a clean exit; a wrapper
# such as valgrind --error-exitcode reports its findings here.
bm_stop_collectd() {
  local rc=0
  [[ -n ${COLLECTD_PID:-} ]] || return 0
  _bm_stop_pid "$COLLECTD_PID" "$(_bm_startup_timeout)" || rc=$?
  COLLECTD_PID=
  return "$rc"
}

# bm_kill_collectd: SIGKILL to collectd (a crash: no shutdown callbacks).
bm_kill_collectd() {
  [[ -n ${COLLECTD_PID:-} ]] || return 0
  kill -KILL "$COLLECTD_PID" 2>/dev/null
  _bm_wait_exit "$COLLECTD_PID" 5
  _bm_reap "$COLLECTD_PID"
  COLLECTD_PID=
  return 0
}

# bm_restart_collectd: stops collectd and starts it again on the same
# $T/collectd.conf. Bails out when it does not come back.
bm_restart_collectd() {
  bm_stop_collectd
  [[ -f $T/collectd.conf ]] || bm_bail "bm_restart_collectd: collectd was never started"
  _bm_launch_collectd || bm_bail "collectd did not restart (see $T/collectd.log)"
}

# ---------------------------------------------------------------------------
# collectd's unix socket
# ---------------------------------------------------------------------------

# bm_unixsock COMMAND: sends one raw unixsock command line (e.g. LISTVAL,
# GETVAL "testhost/bimetri-plant1/bool-pump") and prints collectd's whole
# reply. Returns 0 when the reply's status number is >= 0, 1 otherwise
# (error reply, no answer, no socket).
bm_unixsock() {
  local reply status
  reply=$(printf '%s\n' "$1" |
    timeout 20 socat -t 15 - "UNIX-CONNECT:$T/collectd.sock" 2>&1) || {
    printf '%s\n' "$reply"
    return 1
  }
  printf '%s\n' "$reply"
  status=${reply%%[[:space:]]*}
  [[ $status =~ ^[0-9]+$ ]]
}

# bm_putnotif ARGS: sends "PUTNOTIF ARGS" (ARGS already in unixsock syntax:
# severity=... time=... message="..."). Returns 0 when collectd replied
# "0 ...", 1 otherwise, with the reply shown as a TAP comment.
bm_putnotif() {
  local reply
  reply=$(bm_unixsock "PUTNOTIF $*")
  if [[ $reply == "0 "* ]]; then
    return 0
  fi
  bm_diag "PUTNOTIF $* => $reply"
  return 1
}

# bm_notify SEVERITY PLUGIN TYPE [TYPE_INSTANCE] [MESSAGE]: dispatches a
# notification from host "testhost" at the current time, as a threshold
# would. SEVERITY is failure, warning or okay. PLUGIN may carry an instance
# as in identifiers: "plant1" or "plugin-instance" (split at the first
# '-'). Values are quoted and escaped. Returns as bm_putnotif.
bm_notify() {
  local sev=$1 plugin=$2 type=$3 tinst=${4:-} msg=${5:-bimetri test notification}
  local args pinst=
  if [[ $plugin == *-* ]]; then
    pinst=${plugin#*-}
    plugin=${plugin%%-*}
  fi
  args="severity=$sev time=$EPOCHSECONDS host=$BM_HOSTNAME"
  args+=" plugin=$(_bm_quote "$plugin")"
  [[ -n $pinst ]] && args+=" plugin_instance=$(_bm_quote "$pinst")"
  args+=" type=$(_bm_quote "$type")"
  [[ -n $tinst ]] && args+=" type_instance=$(_bm_quote "$tinst")"
  args+=" message=$(_bm_quote "$msg")"
  bm_putnotif "$args"
}

# bm_getval IDENTIFIER: prints the value(s) collectd holds for IDENTIFIER
# ("host/plugin[-inst]/type[-inst]"), one number per data source in a plain
# form ("value=1.000000e+00" prints "1", NaN prints "nan"). Returns 1 when
# collectd does not know the identifier.
bm_getval() {
  local reply
  reply=$(bm_unixsock "GETVAL $(_bm_quote "$1")") || return 1
  awk 'NR == 1 { if ($1 + 0 < 1) exit 1; next }
    {
      v = substr($0, index($0, "=") + 1)
      if (tolower(v) ~ /nan/) print "nan"
      else if (tolower(v) ~ /inf/) print (v ~ /^-/ ? "-inf" : "inf")
      else printf "%.15g\n", v + 0
    }' <<<"$reply"
}

# bm_csv_last IDENTIFIER: prints the last value(s) the csv plugin wrote for
# IDENTIFIER ("host/plugin[-inst]/type[-inst]"), one number per data source,
# formatted as bm_getval does. The csv plugin stores what was dispatched
# (StoreRates false), so this reads a DERIVE or COUNTER metric (e.g.
# "operations") as its count, where GETVAL answers its rate (nan after the
# first value). csv writes once per interval: wait for a value with
# bm_wait_for. Returns 1 when nothing has been written yet.
bm_csv_last() {
  local -a files
  local line
  files=("$T/csv/$1"-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9])
  [[ -f ${files[-1]} ]] || return 1
  line=$(tail -n 1 "${files[-1]}")
  [[ -n $line && $line != epoch* ]] || return 1
  awk -F, '{
    for (i = 2; i <= NF; i++) {
      v = $i
      if (tolower(v) ~ /nan/) print "nan"
      else if (tolower(v) ~ /inf/) print (v ~ /^-/ ? "-inf" : "inf")
      else printf "%.15g\n", v + 0
    }
  }' <<<"$line"
}
