#!/usr/bin/env bash
# Requests in a burst wake the Gateway thread once: the first caller writes
# its eventfd, the later ones see a wake-up still to be served and only
# change the relay table, which the thread's next tick reads. None of them
# may be left for the thread's once-a-second tick: 8 Switches, each with
# its own relay, get their values in one unixsock connection, so collectd's
# write threads call the plugin at once, 8 rounds flipping every relay; each
# round's 8 commands must reach the broker well within that second (with a
# flag the thread never clears, every round after the first waited for
# that tick: 0.8-0.9 s). Then asks in a burst for one relay are decided in
# the order they came (decided in reverse, a batch's first ask would win:
# that failed 2 of 3 runs, the batches being what the timing makes them).
. "$top_srcdir/tests/integration/plant.sh"

N=8
ROUNDS=8
LIMIT=0.4 # s from the values to the last command on the wire

plant_token
bm_start_broker
bm_sub_start resource/commands 2 '%U %p'
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 0

relays="" switches=""
for ((i = 1; i <= N; i++)); do
  relays+="<Relay \"r$i\">
      ResourceId $((200 + i))
      Output 1
    </Relay>
"
  switches+="<Switch \"s$i\">
    Relay \"plant1\" \"r$i\"
    Plugin \"burst\"
    Type \"gauge\"
    TypeInstance \"r$i\"
    OnAbove 70
    OffBelow 60
  </Switch>
"
done
# The relays flip dozens of times a minute here: beyond the default
# command budget of 10 a minute per relay, which would refuse the rest.
bm_start_collectd "$(plant_conf "MaxCommandsPerMinute 600
    $relays" "$switches")"
bm_check "connected" bm_wait_for 10 val_is current_connections 1

all_are() { # STATE: every relay r1..rN confirmed in STATE
  local i
  for ((i = 1; i <= N; i++)); do
    val_is "bool-r$i" "$1" || return 1
  done
}

# The commands of status $2 for resourceIds 201..200+N that arrived after
# time $1: their number and the arrival of the last one.
arrivals() { # SINCE STATUS
  awk -v since="$1" -v st="$2" -v n="$N" '
    $1 >= since && match($0, /"resourceId":[0-9]+/) {
      id = substr($0, RSTART + 13, RLENGTH - 13) + 0
      if (id > 200 && id <= 200 + n && $0 ~ ("\"status\":" st "[,}]")) {
        got++; if ($1 > last) last = $1
      }
    }
    END { printf "%d %s\n", got, last ? last : 0 }' "$CMD_LOG"
}

slow=0 worst=0
for ((r = 1; r <= ROUNDS; r++)); do
  want=$((r % 2)) value=$((r % 2 ? 90 : 50))
  lines=""
  for ((i = 1; i <= N; i++)); do
    lines+="PUTVAL \"testhost/burst/gauge-r$i\" interval=10 N:$value"$'\n'
  done
  t0=$(date +%s.%N)
  printf '%s' "$lines" | timeout 20 socat -t 15 - "UNIX-CONNECT:$T/collectd.sock" >/dev/null
  if ! bm_wait_for 10 all_are "$want"; then
    bm_fail "round $r: every relay confirmed $want"
    break
  fi
  read -r got last < <(arrivals "$t0" "$want")
  took=$(awk -v a="$t0" -v b="$last" 'BEGIN { printf "%.3f", b - a }')
  bm_diag "round $r: $got commands, the last on the wire after $took s"
  ((got == N)) || { bm_fail "round $r: $N commands on the wire (got $got)"; break; }
  awk -v t="$took" -v l="$LIMIT" 'BEGIN { exit !(t > l) }' && slow=$((slow + 1))
  worst=$(awk -v a="$worst" -v b="$took" 'BEGIN { print (b > a ? b : a) }')
done
bm_is "$slow" 0 "every round's commands on the wire within $LIMIT s (slowest $worst s)"

# Asks are decided in the order they came, however many one turn takes:
# 200 notifications for the pump's Trigger in one unixsock connection,
# FAILURE and OKAY in turn, the last one deciding.
burst_notify() { # LAST_SEVERITY
  local i sev lines="" last_fails=0
  [[ $1 == failure ]] && last_fails=1
  for ((i = 199; i >= 0; i--)); do
    if (((i % 2 == 0) == last_fails)); then sev=failure; else sev=okay; fi
    lines+="PUTNOTIF severity=$sev time=$EPOCHSECONDS host=testhost plugin=sensors type=temperature message=\"burst $i\""$'\n'
  done
  printf '%s' "$lines" | timeout 20 socat -t 15 - "UNIX-CONNECT:$T/collectd.sock" |
    grep -vc '^0 ' || true
}
for last in failure okay failure okay; do
  want=$([[ $last == failure ]] && echo 1 || echo 0)
  bm_is "$(burst_notify "$last")" 0 "200 notifications accepted (the last: $last)"
  bm_check "the last one wins: bool-pump $want" wait_val bool-pump "$want" 10
  bm_check "and nothing is pending" wait_val pending_operations-pump 0 10
  sleep 0.5
  bm_is "$(val bool-pump)" "$want" "the pump stays at $want"
done
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
