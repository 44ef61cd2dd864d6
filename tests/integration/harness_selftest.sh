#!/usr/bin/env bash
# harness_selftest.sh - tests tests/lib.sh itself, with mosquitto and a
# collectd that loads only stock plugins (BM_NO_PLUGIN=1): ports, the
# broker and its restarts, MQTT round trips, collectd's unix socket, and,
# through small child test scripts, the TAP output, the deadline and the
# cleanup on every way a test can end (pass, fail, bail out, SIGTERM,
# deadline, SIGKILL).

# Under another shell (SH_LOG_COMPILER may be /bin/sh), start again in bash.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

export BM_NO_PLUGIN=1
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

# is_port_open PORT: true when 127.0.0.1:PORT accepts connections.
is_port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# all_gone PID...: true when none of the PIDs is running any more.
all_gone() {
  local p
  for p in "$@"; do
    _bm_alive "$p" && return 1
  done
  return 0
}

# reap_leftovers PID...: a failed cleanup test must not leak: SIGKILL the
# child test's processes that are still there (their PIDs are known).
reap_leftovers() {
  local p
  for p in "$@"; do
    _bm_alive "$p" && kill -KILL "$p" 2>/dev/null
  done
  return 0
}

# run_child NAME [ENV=VALUE...]: runs $T/NAME.sh as a separate test script
# (its own lib.sh, its temporary directory under $T), at most 60 s. Sets
# CHILD_OUT (its stdout) and CHILD_RC.
run_child() {
  local name=$1
  shift
  CHILD_RC=0
  CHILD_OUT=$(env TMPDIR="$T" BM_TEST_TIMEOUT=60 "$@" \
    timeout -k 5 60 bash "$T/$name.sh" 2>"$T/$name.err") || CHILD_RC=$?
  printf '%s\n' "$CHILD_OUT" >"$T/$name.stdout"
}

# child_pids: the PIDs a child listed on its "# pids:" line.
child_pids() {
  sed -n 's/^# pids: //p' <<<"$CHILD_OUT" | head -n 1
}

# ----------------------------------------------------------------------------
# Ports
# ----------------------------------------------------------------------------

port=$(bm_free_port)
bm_like "$port" '^[0-9]+$' "bm_free_port prints a port number"
bm_ok "$( ((port >= 1024 && port <= 65535)); echo $?)" "the port is unprivileged ($port)"
ports=$(bm_free_port 3)
bm_is "$(sort -u <<<"$ports" | wc -l)" 3 "bm_free_port 3 prints three distinct ports"
bm_check "freeport refuses a bad count" bash -c "! '$top_builddir/tests/freeport' 0"

# ----------------------------------------------------------------------------
# Broker, publish and subscribe
# ----------------------------------------------------------------------------

bm_start_broker
bm_like "${BROKER_PORT:-}" '^[0-9]+$' "bm_start_broker sets BROKER_PORT"
bm_check "the broker process runs" _bm_alive "$BROKER_PID"
bm_check "the broker accepts connections on 127.0.0.1:$BROKER_PORT" is_port_open "$BROKER_PORT"
bm_check "mosquitto.conf listens on loopback only" \
  grep -qx "listener $BROKER_PORT 127.0.0.1" "$T/mosquitto.conf"
bm_check "mosquitto.conf has persistence false" grep -qx "persistence false" "$T/mosquitto.conf"

bm_sub_start 'bm/#'
bm_is "$SUB_LOG" "$T/sub.log" "the first subscriber writes to \$T/sub.log"
bm_pub bm/test "hello world"
bm_ok $? "bm_pub publishes at QoS 2"
bm_wait_log "$SUB_LOG" '^2 bm/test hello world$' 5
bm_ok $? "the subscriber received it as 'QOS TOPIC PAYLOAD'"
bm_pub bm/q1 '{"a": 1}' 1
bm_wait_log "$SUB_LOG" '^1 bm/q1 \{"a": 1\}$' 5
bm_ok $? "a QoS 1 message arrives with QoS 1 and its JSON payload intact"
bm_is "$(bm_count_log "$SUB_LOG" '^[12] bm/')" 2 "bm_count_log counts matching lines"
bm_is "$(bm_count_log "$T/nonexistent.log" x)" 0 "bm_count_log of a missing file is 0"

# ----------------------------------------------------------------------------
# collectd and its unix socket
# ----------------------------------------------------------------------------

bm_start_collectd ""
bm_check "collectd runs" _bm_alive "$COLLECTD_PID"
bm_check "its unix socket exists" test -S "$T/collectd.sock"
bm_check "collectd.conf names the test host" grep -qx 'Hostname "testhost"' "$T/collectd.conf"
bm_check "the plugin directory holds regular files, not symlinks" \
  bash -c "test -f '$T/plugins/unixsock.so' && ! test -L '$T/plugins/unixsock.so'"

reply=$(bm_unixsock 'PUTVAL "testhost/selftest-a/gauge-b" N:42.5')
bm_like "$reply" '^0 Success' "PUTVAL through bm_unixsock succeeds"
bm_is "$(bm_getval testhost/selftest-a/gauge-b)" 42.5 "bm_getval reads the value back"
bm_like "$(bm_unixsock LISTVAL)" 'testhost/selftest-a/gauge-b' "LISTVAL lists it"
bm_unixsock 'PUTVAL "testhost/selftest-a/load-c" N:1:2.5:3' >/dev/null
bm_is "$(bm_getval testhost/selftest-a/load-c | paste -sd ' ')" "1 2.5 3" \
  "bm_getval prints one line per data source"
bm_getval testhost/selftest-a/gauge-unknown >/dev/null
bm_isnt $? 0 "bm_getval fails for an unknown identifier"
bm_unixsock 'GETVAL "testhost/selftest-a/gauge-unknown"' >/dev/null
bm_isnt $? 0 "bm_unixsock fails on an error reply"
bm_check "the csv plugin writes under \$T/csv" bm_wait_for 5 \
  bash -c "ls '$T'/csv/testhost/selftest-a/gauge-b-* >/dev/null 2>&1"

# A DERIVE metric: GETVAL answers its rate, bm_csv_last the value itself.
now=$EPOCHSECONDS
bm_unixsock "PUTVAL \"testhost/selftest-a/operations-x\" $((now - 2)):5" >/dev/null
bm_unixsock "PUTVAL \"testhost/selftest-a/operations-x\" $now:9" >/dev/null
bm_is "$(bm_getval testhost/selftest-a/operations-x)" 2 "bm_getval of a DERIVE is its rate per second"
csv_is() { [[ $(bm_csv_last "$1") == "$2" ]]; }
bm_check "bm_csv_last reads the stored value of the DERIVE" \
  bm_wait_for 5 csv_is testhost/selftest-a/operations-x 9
bm_is "$(bm_csv_last testhost/selftest-a/operations-x)" 9 "bm_csv_last prints the last value dispatched"
bm_csv_last testhost/selftest-a/operations-none >/dev/null
bm_isnt $? 0 "bm_csv_last fails when nothing was written"

bm_notify warning 'selftest-inst' mytype myinst 'pump "P1" went \ off'
bm_ok $? "bm_notify is accepted"
bm_wait_log "$T/collectd.log" \
  'Notification: severity = WARNING, host = testhost, plugin = selftest, plugin_instance = inst, type = mytype, type_instance = myinst, message = pump "P1" went \\ off' 5
bm_ok $? "collectd logged the notification with its fields and quoted message"
bm_putnotif "severity=okay message=\"no time\"" >/dev/null
bm_isnt $? 0 "bm_putnotif fails when collectd refuses the notification"

# ----------------------------------------------------------------------------
# Waiting helpers
# ----------------------------------------------------------------------------

t0=$(_bm_now_us)
bm_wait_for 0.5 false >/dev/null
st=$?
elapsed_ms=$((($(_bm_now_us) - t0) / 1000))
bm_isnt "$st" 0 "bm_wait_for fails when the command never succeeds"
bm_ok "$( ((elapsed_ms >= 450 && elapsed_ms < 3000)); echo $?)" \
  "bm_wait_for 0.5 gives up after about 0.5 s (${elapsed_ms} ms)"
bm_is "$(bm_wait_for 2 echo ready)" ready "bm_wait_for prints the successful output"
bm_wait_log "$T/collectd.log" 'no such line ever' 0.3
bm_isnt $? 0 "bm_wait_log times out on a missing line"

# ----------------------------------------------------------------------------
# Broker stop, restart and crash on the same port
# ----------------------------------------------------------------------------

port=$BROKER_PORT
old_pid=$BROKER_PID
bm_stop_broker
bm_ok $? "bm_stop_broker: mosquitto exits cleanly"
bm_check "the broker process is gone" all_gone "$old_pid"
bm_check "the port is closed" bash -c "! timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$port' 2>/dev/null"
bm_start_broker
bm_is "$BROKER_PORT" "$port" "the broker starts again on the same port"
bm_wait_log "$T/mosquitto.log" 'Sending SUBACK to bm-sub-1$' 10 2
bm_ok $? "the subscriber reconnected and subscribed again"
bm_pub bm/after "after restart"
bm_wait_log "$SUB_LOG" '^2 bm/after after restart$' 5
bm_ok $? "messages flow after the restart"

old_pid=$BROKER_PID
bm_kill_broker
bm_check "bm_kill_broker: the broker is gone" all_gone "$old_pid"
bm_restart_broker
bm_is "$BROKER_PORT" "$port" "bm_restart_broker after a crash keeps the port"
bm_check "the restarted broker accepts connections" is_port_open "$BROKER_PORT"
bm_restart_broker
bm_is "$BROKER_PORT" "$port" "bm_restart_broker of a running broker keeps the port"

# ----------------------------------------------------------------------------
# bm_start_gwsim, with a stand-in simulator: mosquitto_sub on the command
# topic, recording the arguments it was given
# ----------------------------------------------------------------------------

mkdir -p "$T/fakebuild/tests"
cp "$top_builddir/tests/freeport" "$T/fakebuild/tests/"
cat >"$T/fakebuild/bimetri-gwsim" <<'EOF'
#!/usr/bin/env bash
printf '%s\n' "$@" >"$(dirname "$0")/gwsim.args"
port= exit_after=
while (($# > 0)); do
  case $1 in
  -p) port=$2; shift ;;
  --exit-after) exit_after=$2; shift ;;
  --fail-now) exit 3 ;;
  esac
  shift
done
sleep 0.3 # subscribe a little late: bm_start_gwsim must wait for it
exec mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -t resource/commands -W "$exit_after"
EOF
chmod +x "$T/fakebuild/bimetri-gwsim"
top_builddir=$T/fakebuild bm_start_gwsim -v --delay 5
bm_check "bm_start_gwsim returns once the simulator has subscribed" \
  grep -qE ' 1 resource/commands$' "$T/mosquitto.log"
bm_check "the simulator runs" _bm_alive "$GWSIM_PID"
args=$(paste -sd ' ' "$T/fakebuild/gwsim.args")
bm_like "$args" "^-p $BROKER_PORT --log $T/gwsim.log --exit-after [0-9]+ -v --delay 5\$" \
  "it gets the broker port, its log, a lifetime and the test's arguments"
exit_after=$(sed -n '/^--exit-after$/{n;p}' "$T/fakebuild/gwsim.args")
bm_ok "$( ((exit_after > 0 && exit_after <= BM_TEST_TIMEOUT + 10)); echo $?)" \
  "its lifetime ends with the test's deadline (--exit-after $exit_after)"
old_pid=$GWSIM_PID
bm_stop_gwsim
bm_check "bm_stop_gwsim stops it" all_gone "$old_pid"
top_builddir=$T/fakebuild bm_start_gwsim
old_pid=$GWSIM_PID
bm_kill_gwsim
bm_check "bm_kill_gwsim kills it" all_gone "$old_pid"

# ----------------------------------------------------------------------------
# collectd restart, crash and a refused configuration
# ----------------------------------------------------------------------------

old_pid=$COLLECTD_PID
bm_restart_collectd
bm_isnt "$COLLECTD_PID" "$old_pid" "bm_restart_collectd starts a new collectd"
bm_check "the restarted collectd answers" bm_unixsock LISTVAL
bm_getval testhost/selftest-a/gauge-b >/dev/null
bm_isnt $? 0 "the new collectd starts with no values"

old_pid=$COLLECTD_PID
bm_stop_collectd
bm_is $? 0 "bm_stop_collectd: collectd exits with status 0"
bm_check "collectd is gone" all_gone "$old_pid"

bm_try_start_collectd '<Plugin csv'
bm_isnt $? 0 "bm_try_start_collectd fails on a broken configuration"
bm_is "${COLLECTD_PID:-}" "" "no collectd is left running"

bm_start_collectd ""
old_pid=$COLLECTD_PID
bm_kill_collectd
bm_check "bm_kill_collectd: collectd is gone" all_gone "$old_pid"
bm_restart_collectd
bm_check "collectd restarts after a crash (stale socket replaced)" bm_unixsock LISTVAL

# ----------------------------------------------------------------------------
# Child test scripts: TAP output, deadline and cleanup on every exit path
# ----------------------------------------------------------------------------

# The preamble every child shares: start the three kinds of processes and
# list their PIDs.
cat >"$T/child-start.inc" <<'EOF'
export BM_NO_PLUGIN=1
. "$top_srcdir/tests/lib.sh"
bm_start_broker
bm_sub_start 'x/#'
bm_start_collectd ""
bm_diag "pids: $BROKER_PID $SUB_PID $COLLECTD_PID"
bm_diag "tmp: $T"
EOF

# A passing test.
cat >"$T/child-pass.sh" <<'EOF'
. "$T_PARENT/child-start.inc"
bm_pass "first"
bm_is a a "second"
bm_done
EOF
run_child child-pass T_PARENT="$T"
pids=$(child_pids)
tmp=$(sed -n 's/^# tmp: //p' <<<"$CHILD_OUT")
bm_is "$CHILD_RC" 0 "a passing child test exits 0"
bm_like "$CHILD_OUT" $'ok 1 - first\nok 2 - second\n1..2' "it numbers its test points and prints the plan"
# shellcheck disable=SC2086
bm_check "its broker, subscriber and collectd are gone" all_gone $pids
bm_check "its temporary directory is removed" test ! -e "$tmp"
# shellcheck disable=SC2086
reap_leftovers $pids

# A failing test.
cat >"$T/child-fail.sh" <<'EOF'
. "$T_PARENT/child-start.inc"
bm_is got want "compare # strings"
bm_like abc '^b' "match"
bm_pass "third"
bm_done
EOF
run_child child-fail T_PARENT="$T"
pids=$(child_pids)
tmp=$(sed -n 's/^# tmp: //p' <<<"$CHILD_OUT")
bm_is "$CHILD_RC" 1 "a failing child test exits 1"
bm_like "$CHILD_OUT" $'not ok 1 - compare \\\\# strings\n#      got: \'got\'\n# expected: \'want\'\nnot ok 2 - match\n' \
  "failed test points are 'not ok' with got/expected comments, '#' escaped"
bm_like "$CHILD_OUT" $'ok 3 - third\n1..3' "numbering goes on after failures"
bm_like "$CHILD_OUT" "# test directory kept: $tmp" "the kept temporary directory is named"
bm_check "and kept" test -d "$tmp"
bm_like "$CHILD_OUT" "# ---- last 40 lines of $tmp/collectd.log ----"$'\n''# .*Initialization complete' \
  "the tail of each log is shown as comments"
# shellcheck disable=SC2086
bm_check "its processes are gone" all_gone $pids
# shellcheck disable=SC2086
reap_leftovers $pids

# A test under set -euo pipefail.
cat >"$T/child-strict.sh" <<'EOF'
set -euo pipefail
. "$T_PARENT/child-start.inc"
bm_pub x/y strict
bm_wait_log "$SUB_LOG" '^2 x/y strict$' 5
bm_pass "round trip under set -euo pipefail"
bm_is "$(bm_getval testhost/none/gauge-x || echo none)" none "getval of unknown"
bm_restart_broker
bm_stop_collectd
bm_done
EOF
run_child child-strict T_PARENT="$T"
pids=$(child_pids)
bm_is "$CHILD_RC" 0 "the harness works in a script with set -euo pipefail"
# shellcheck disable=SC2086
reap_leftovers $pids

# A test that runs no test point.
cat >"$T/child-empty.sh" <<'EOF'
. "$top_srcdir/tests/lib.sh"
bm_done
EOF
run_child child-empty
bm_isnt "$CHILD_RC" 0 "a test with no test point fails"
bm_like "$CHILD_OUT" '^Bail out! .*ran no test' "and says so with Bail out!"

# Interrupted by SIGTERM while waiting.
cat >"$T/child-term.sh" <<'EOF'
. "$T_PARENT/child-start.inc"
bm_wait_for 50 false
bm_done
EOF
(
  # a background child test, signalled once it has listed its PIDs
  env TMPDIR="$T" BM_TEST_TIMEOUT=60 T_PARENT="$T" timeout -k 5 60 \
    bash "$T/child-term.sh" >"$T/child-term.stdout" 2>"$T/child-term.err" &
  cpid=$!
  bm_wait_log "$T/child-term.stdout" '^# pids:' 20 >/dev/null || true
  kill -TERM "$cpid" 2>/dev/null
  # timeout forwards SIGTERM to bash; wait for the test's status
  wait "$cpid"
  echo "$?" >"$T/child-term.rc"
)
CHILD_OUT=$(<"$T/child-term.stdout")
pids=$(child_pids)
bm_is "$(<"$T/child-term.rc")" 143 "a test ended by SIGTERM exits 128+15"
bm_like "$CHILD_OUT" $'\nBail out! .*SIGTERM' "it prints Bail out! naming the signal"
# shellcheck disable=SC2086
bm_check "its processes are gone" all_gone $pids
# shellcheck disable=SC2086
reap_leftovers $pids

# Past the deadline in a polling loop (the trap runs at once).
cat >"$T/child-deadline.sh" <<'EOF'
. "$top_srcdir/tests/lib.sh"
bm_start_broker
bm_diag "pids: $BROKER_PID"
bm_wait_for 50 false
bm_pass "unreachable"
bm_done
EOF
t0=$EPOCHSECONDS
run_child child-deadline BM_TEST_TIMEOUT=2
elapsed=$((EPOCHSECONDS - t0))
pids=$(child_pids)
bm_isnt "$CHILD_RC" 0 "a test past its deadline fails"
bm_like "$CHILD_OUT" $'\nBail out! .*deadline of 2s' "it bails out naming the deadline"
bm_ok "$( ((elapsed < 10)); echo $?)" "it ends soon after the deadline (${elapsed}s for 2s)"
# shellcheck disable=SC2086
bm_check "its broker is gone" all_gone $pids
# shellcheck disable=SC2086
reap_leftovers $pids

# Past the deadline inside a long foreground command (traps wait for it).
cat >"$T/child-stuck.sh" <<'EOF'
. "$top_srcdir/tests/lib.sh"
bm_start_broker
bm_diag "pids: $BROKER_PID"
sleep 50
bm_pass "unreachable"
bm_done
EOF
t0=$EPOCHSECONDS
run_child child-stuck BM_TEST_TIMEOUT=2
elapsed=$((EPOCHSECONDS - t0))
pids=$(child_pids)
bm_like "$CHILD_OUT" $'\nBail out! .*deadline' "a test stuck in a command bails out at the deadline"
bm_ok "$( ((elapsed < 15)); echo $?)" "the watchdog ends the stuck command (${elapsed}s for 2s)"
# shellcheck disable=SC2086
bm_check "its broker is gone" all_gone $pids
# shellcheck disable=SC2086
reap_leftovers $pids

# Killed with SIGKILL: no trap runs; the watchdog kills the daemons.
cat >"$T/child-kill9.sh" <<'EOF'
. "$T_PARENT/child-start.inc"
bm_wait_for 50 false
bm_done
EOF
env TMPDIR="$T" BM_TEST_TIMEOUT=60 T_PARENT="$T" \
  bash "$T/child-kill9.sh" >"$T/child-kill9.stdout" 2>"$T/child-kill9.err" &
cpid=$!
bm_wait_log "$T/child-kill9.stdout" '^# pids:' 20
CHILD_OUT=$(<"$T/child-kill9.stdout")
pids=$(child_pids)
kill -KILL "$cpid"
{ wait "$cpid"; } 2>/dev/null
# shellcheck disable=SC2086
bm_check "after kill -9 of a test, its watchdog kills its daemons" bm_wait_for 5 all_gone $pids
# shellcheck disable=SC2086
reap_leftovers $pids

# A simulator that exits instead of subscribing stops the test at once.
cat >"$T/child-gwsim-dies.sh" <<'EOF'
. "$top_srcdir/tests/lib.sh"
bm_start_broker
bm_start_gwsim --fail-now
bm_pass "unreachable"
bm_done
EOF
t0=$EPOCHSECONDS
run_child child-gwsim-dies top_builddir="$T/fakebuild"
bm_like "$CHILD_OUT" 'Bail out! bimetri-gwsim exited with status 3 before subscribing' \
  "a simulator that dies at start-up bails out with its status"
bm_ok "$( ((EPOCHSECONDS - t0 < 8)); echo $?)" "without waiting for the subscription timeout"

# Without BM_NO_PLUGIN, a missing bimetri.so is an error, not a skip.
cat >"$T/child-noplugin.sh" <<'EOF'
. "$top_srcdir/tests/lib.sh"
bm_start_collectd ""
bm_pass "unreachable"
bm_done
EOF
run_child child-noplugin BM_NO_PLUGIN= top_builddir="$T/fakebuild"
bm_isnt "$CHILD_RC" 0 "a missing bimetri.so fails the test"
bm_like "$CHILD_OUT" "Bail out! the plugin $T/fakebuild/.libs/bimetri.so is not built" \
  "and names the missing file"

# ----------------------------------------------------------------------------
# Our own cleanup
# ----------------------------------------------------------------------------

bm_sub_stop "$SUB_PID"
bm_stop_collectd
bm_stop_broker
bm_is "${#_BM_PIDS[@]}" 0 "after the stop functions no process is tracked"
# other_children: our child processes but the watchdog and this very
# command substitution ($BASHPID).
other_children() {
  local c
  for c in $(_bm_children $$); do
    [[ $c == "$_BM_WATCHDOG_PID" || $c == "$BASHPID" ]] || echo "$c"
  done
}
left=$(other_children)
bm_is "${left//$'\n'/ }" "" "and the test has no child process left but its watchdog"

bm_done
