#!/usr/bin/env bash
# kill -9 in the middle of work: collectd is SIGKILLed at a random moment
# during a burst of commands to four relays, round after round, and started
# again on the same journal.  Checked against the plugin's log and the
# simulator's own log (the device's truth):
#   - no confirmed state is lost: right after the restart, before any
#     message can reach the plugin (the broker is paused), every relay's
#     bool is the last state the killed collectd had confirmed;
#   - once caught up, the plugin agrees with the simulator about every
#     relay, and a relay the simulator got no command for since the kill
#     is still in the state it last notified before the kill;
#   - no relay is ever rolled back: after each restart, older confirmations
#     from the simulator's history are delivered again by hand and ignored
#     as duplicates, and the confirmations the plugin applied to a relay,
#     over all runs, come from ever newer commands;
#   - every command the simulator saw is accounted for in collectd.log:
#     published (or republished after a restart), then confirmed or ended.
# CRASH_ROUNDS (default 30) and CRASH_SEED (random) reproduce a run.
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-300}
. "$top_srcdir/tests/integration/plant.sh"

ROUNDS=${CRASH_ROUNDS:-30}
SEED=${CRASH_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
DELAY_MS=150

# The relays: name, resourceId, output, and the Type of the Trigger.
RELAYS=(r1 r2 r3 r4)
declare -A RES=([r1]=201 [r2]=201 [r3]=202 [r4]=202)
declare -A OUT=([r1]=1 [r2]=2 [r3]=1 [r4]=2)
declare -A TYPE=([r1]=temperature [r2]=humidity [r3]=pressure [r4]=voltage)

crash_conf() {
  local r
  echo 'LoadPlugin bimetri'
  echo '<Plugin bimetri>'
  echo '  <Gateway "plant1">'
  echo '    Host "127.0.0.1"'
  echo "    Port $BROKER_PORT"
  echo '    AppName "flexyWattApp"'
  echo '    InstanceId "1"'
  echo '    UserId 12345'
  echo '    OrganizationId 23456'
  echo "    TokenFile \"$T/token\""
  echo '    AckTimeout 2'
  echo '    CommandTimeout 3'
  echo '    Retries 2'
  echo '    RetryBackoff 0.2'
  echo '    MaxCommandsPerMinute 600' # the rounds send far more than 10 a minute
  for r in "${RELAYS[@]}"; do
    echo "    <Relay \"$r\">"
    echo "      ResourceId ${RES[$r]}"
    echo "      Output ${OUT[$r]}"
    echo '    </Relay>'
  done
  echo '  </Gateway>'
  for r in "${RELAYS[@]}"; do
    echo "  <Trigger \"t-$r\">"
    echo "    Relay \"plant1\" \"$r\""
    echo '    Plugin "sensors"'
    echo "    Type \"${TYPE[$r]}\""
    echo '    OnFailure 1'
    echo '    OnOkay 0'
    echo '  </Trigger>'
  done
  echo '</Plugin>'
}

# bool_of RELAY: the plugin's bool for RELAY, "u" when unknown.
bool_of() { val "bool-$1" 2>/dev/null || echo u; }

# sim_states: "r1=S r2=S ..." from the simulator's last notification of
# each relay, S "u" when it never notified that relay.
sim_states() {
  local r out=
  local -A last=()
  while read -r key st; do last[$key]=$st; done < <(
    awk '$1 == "notif" { sub("res=", "", $3); sub("out=", "", $4);
      sub("status=", "", $5); print $3 ":" $4, $5 }' "$T/gwsim.log")
  for r in "${RELAYS[@]}"; do
    out+="$r=${last[${RES[$r]}:${OUT[$r]}]:-u} "
  done
  echo "${out% }"
}

# plugin_states: "r1=S r2=S ..." from the plugin's bool values.
plugin_states() {
  local r out=
  for r in "${RELAYS[@]}"; do out+="$r=$(bool_of "$r") "; done
  echo "${out% }"
}

# logged_states: "r1=S ..." from the last relay_on/relay_off notification
# each relay had in collectd.log (any run): the last state confirmed.  The
# plugin journals a confirmation before it dispatches its notification, so
# a kill in between restores a state that was never notified: S is then
# "N|A|B...", the notified state N, then in order the states of the
# confirmations received after it (logged on receipt, before the journal's
# write, so the journal may hold any prefix of them) and not ignored as
# duplicates.
logged_states() {
  local r map=
  for r in "${RELAYS[@]}"; do map+="$r=${RES[$r]}:${OUT[$r]} "; done
  awk -v map="$map" '
    function corr_of(line) {
      return match(line, /correlationId "[^"]*"/) ? substr(line, RSTART + 15, RLENGTH - 16) : ""
    }
    BEGIN {
      n = split(map, m, " ")
      for (i = 1; i <= n; i++) {
        split(m[i], p, "="); name[i] = p[1]; relay_of[p[2]] = p[1]; notified[p[1]] = "u"
      }
    }
    / type = relay_o(n|ff), type_instance = / {
      match($0, /type_instance = [^,]*/); r = substr($0, RSTART + 16, RLENGTH - 16)
      notified[r] = $0 ~ / type = relay_on,/ ? 1 : 0
      # The confirmations received up to this one are notified now.
      c = corr_of($0); k = split(after[r], list, " "); rest = ""; found = 0
      for (i = 1; i <= k; i++)
        if (found) rest = rest " " list[i]
        else if (c != "" && index(list[i], c ":") == 1) found = 1
      if (found) after[r] = substr(rest, 2)
      next
    }
    /received notification extDOStateChanged correlationId "[^"]+"/ {
      match($0, /resourceId [0-9]+ output [0-9]+ status [0-9]+/)
      split(substr($0, RSTART, RLENGTH), f, " ")
      last_r = relay_of[f[2] ":" f[4]]; last_c = corr_of($0)
      if (last_r != "") after[last_r] = after[last_r] (after[last_r] == "" ? "" : " ") last_c ":" f[6]
      next
    }
    /already applied: duplicate ignored/ {
      if (last_r != "" && corr_of($0) == last_c) sub(" ?[^ ]*$", "", after[last_r])
      last_r = ""
    }
    END {
      for (i = 1; i <= n; i++) {
        r = name[i]; s = notified[r]; k = split(after[r], list, " ")
        for (j = 1; j <= k; j++) { split(list[j], q, ":"); s = s "|" q[2] }
        out = out (i > 1 ? " " : "") r "=" s
      }
      print out
    }' "$T/collectd.log"
}

# restored_as_confirmed RESTORED LOGGED: true when each relay's restored
# state (plugin_states) is one of those logged_states allows for it.
restored_as_confirmed() {
  local -a got=($1) allowed=($2)
  local i
  for i in "${!got[@]}"; do
    [[ "|${allowed[i]#*=}|" == *"|${got[i]#*=}|"* ]] || return 1
  done
  ((${#got[@]} == ${#allowed[@]}))
}

# converged: true when no command is pending and the plugin agrees with the
# simulator about every relay; prints both on failure.
converged() {
  local r p sim plug
  for r in "${RELAYS[@]}"; do
    p=$(val "pending_operations-$r" 2>/dev/null) || p=x
    [[ $p == 0 ]] || { echo "$r: pending_operations $p"; return 1; }
  done
  sim=$(sim_states)
  plug=$(plugin_states)
  [[ $sim == "$plug" ]] && return 0
  echo "simulator: $sim / plugin: $plug"
  return 1
}

# wait_converged: converged, and still so a moment later (a retry due
# after its backoff may still change the device).
wait_converged() {
  bm_wait_for 15 converged >/dev/null && sleep 0.4 && bm_wait_for 5 converged >/dev/null
}

# redeliver: for each relay, publishes again one notification picked at
# random among the simulator's older ones for it (all but the last), as a
# broker or gateway redelivering it late would; REDELIVERED lists them.
REDELIVERED=
redeliver() {
  local r n pick line
  local -a old
  REDELIVERED=
  for r in "${RELAYS[@]}"; do
    mapfile -t old < <(grep -E "^notif corr=[^ -][^ ]* res=${RES[$r]} out=${OUT[$r]} " "$T/gwsim.log" | head -n -1)
    n=${#old[@]}
    ((n > 0)) || continue
    line=${old[RANDOM % n]}
    read -r _ pick _ _ st <<<"$line"
    pick=${pick#corr=}
    bm_pub "$APP_TOPIC" "$(notif_json "$pick" "${RES[$r]}" "${OUT[$r]}" "${st#status=}")" 1 ||
      return 1
    REDELIVERED+="$r:$pick:${st#status=} "
  done
}

# notify_burst [FREEZE_AT]: for each relay, one or two notifications that
# flip its desired state, interleaved; WANT holds each relay's last desired
# state.  With FREEZE_AT (0, 1, ...), the broker is frozen (SIGSTOP) before
# that notification: the commands that follow stay in the plugin's socket
# buffer, are lost with the kill, and only the journal knows them.
declare -A WANT=()
BURST=
notify_burst() {
  local pass r sev i=0
  BURST=
  for pass in 1 2; do
    for r in "${RELAYS[@]}"; do
      ((pass == 1 || RANDOM % 2)) || continue
      if ((i++ == ${1:--1})); then
        kill -STOP "$BROKER_PID"
        BURST+="(broker frozen) "
      fi
      if [[ ${WANT[$r]:-0} == 1 ]]; then WANT[$r]=0; sev=okay; else WANT[$r]=1; sev=failure; fi
      bm_notify "$sev" sensors "${TYPE[$r]}" "" "round $round $r $sev" || return 1
      BURST+="$r:$sev "
    done
  done
}

# first_read_done: every relay's pending_operations is in collectd's cache.
first_read_done() {
  local r
  for r in "${RELAYS[@]}"; do
    val "pending_operations-$r" >/dev/null 2>&1 || return 1
  done
}

# restart_paused: starts collectd again while the broker is stopped
# (SIGSTOP; it may be already), so that nothing can reach the plugin, and
# reads what the journal restored into RESTORED; the broker goes on
# afterwards.
restart_paused() {
  kill -STOP "$BROKER_PID"
  if _bm_launch_collectd; then
    # unixsock answers before the plugin's first read: wait for its values
    # (each relay's bool goes out right before its pending_operations; 0.2 s
    # more for collectd's write threads, which may reorder the two).
    bm_wait_for 10 first_read_done && sleep 0.2
    RESTORED=$(plugin_states)
    kill -CONT "$BROKER_PID"
    return 0
  fi
  kill -CONT "$BROKER_PID"
  return 1
}

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay "$DELAY_MS"
bm_start_collectd "$(crash_conf)"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_diag "seed $SEED, $ROUNDS rounds (CRASH_SEED=$SEED reproduces the choices)"

round_ok=0
for ((round = 1; round <= ROUNDS; round++)); do
  diag=()
  nap=$((RANDOM % 601))
  # Every third round the broker freezes somewhere in the burst.
  freeze=-1
  ((round % 3 == 0)) && freeze=$((RANDOM % 6))
  notify_burst "$freeze" || bm_bail "round $round: collectd refused a notification"
  sleep "$(printf '0.%03d' "$nap")"
  { bm_kill_collectd; } 2>/dev/null # bash reports the kill on stderr
  # Let the simulator publish what was due (answers to commands it got).
  sleep "$(printf "%d.%03d" $(((DELAY_MS + 150) / 1000)) $(((DELAY_MS + 150) % 1000)))"
  sim_before=$(sim_states)
  sim_lines=$(_bm_lines "$T/gwsim.log")
  last_confirmed=$(logged_states)
  log_at=$(($(_bm_lines "$T/collectd.log") + 1))
  restart_paused || bm_bail "round $round: collectd did not restart"
  replay=$(tail -n "+$log_at" "$T/collectd.log" | grep -o '[0-9]* records replayed.*' | head -1)
  diag+=("round $round: burst ${BURST}then ${nap} ms, SIGKILL" \
    "  simulator before the restart: $sim_before" \
    "  last confirmed before the kill: $last_confirmed" \
    "  restored:                      $RESTORED" \
    "  journal: $replay")
  ok=1
  if ! restored_as_confirmed "$RESTORED" "$last_confirmed"; then
    ok=0
    bm_fail "round $round: the restored states are the last confirmed ones"
  elif [[ $RESTORED != "$(sed -E 's/\|[^ ]*//g' <<<"$last_confirmed")" ]]; then
    bm_diag "round $round: restored $RESTORED: a confirmation journaled" \
      "but not notified when killed (logged: $last_confirmed)"
  fi
  if ! wait_converged; then
    ok=0
    bm_fail "round $round: the plugin converges to the simulator's states"
  fi
  final=$(plugin_states)
  diag+=("  after convergence: plugin $final, simulator $(sim_states)")
  # Older confirmations again: duplicates, whatever state they carry.
  dups=$(count "$T/collectd.log" 'already applied: duplicate ignored')
  redeliver || bm_bail "round $round: cannot publish on $APP_TOPIC"
  n_redelivered=$(wc -w <<<"$REDELIVERED")
  diag+=("  redelivered: ${REDELIVERED:-nothing}")
  if ! bm_wait_log "$T/collectd.log" 'already applied: duplicate ignored' 5 $((dups + n_redelivered)) ||
    [[ $(plugin_states) != "$final" ]]; then
    ok=0
    bm_fail "round $round: redelivered older confirmations are ignored as duplicates"
    diag+=("  after the redelivery: plugin $(plugin_states)")
  fi
  # A relay the simulator got no command for since the kill keeps the
  # state it had notified before the kill.
  mapfile -t cmds_after < <(tail -n "+$((sim_lines + 1))" "$T/gwsim.log" |
    awk '$1 == "cmd" { sub("res=", "", $3); sub("out=", "", $4); print $3 ":" $4 }' | sort -u)
  diag+=("  simulator commands since the kill: ${cmds_after[*]:-none}")
  for r in "${RELAYS[@]}"; do
    [[ " ${cmds_after[*]} " == *" ${RES[$r]}:${OUT[$r]} "* ]] && continue
    want=$(grep -oE "$r=[01u]" <<<"$sim_before")
    got=$(grep -oE "$r=[01u]" <<<"$final")
    if [[ $want != "$got" ]]; then
      ok=0
      bm_fail "round $round: $r, not commanded since the kill, is still in its notified state"
      diag+=("  $r: expected $want (simulator before the restart), got $got")
    fi
  done
  if ((ok)); then
    round_ok=$((round_ok + 1))
  else
    bm_diag "$(printf '%s\n' "${diag[@]}")"
  fi
done
bm_is "$round_ok" "$ROUNDS" "every round restored the last confirmed states and converged"

# ---- over the whole run ------------------------------------------------
# No rollback: per relay, the confirmations applied (received and not
# ignored as duplicates) come from commands of increasing sequence.
rollback=$(awk '
  /received notification extDOStateChanged correlationId "[0-9a-f]+-[0-9]+"/ {
    match($0, /correlationId "[^"]*"/); c = substr($0, RSTART + 15, RLENGTH - 16)
    match($0, /resourceId [0-9]+ output [0-9]+/); r = substr($0, RSTART, RLENGTH)
    n++; corr[n] = c; relay[n] = r; line[n] = NR; dup[n] = 0; last[c] = n
    next
  }
  /already applied: duplicate ignored/ {
    match($0, /correlationId "[^"]*"/); c = substr($0, RSTART + 15, RLENGTH - 16)
    if (c in last) dup[last[c]] = 1
  }
  END {
    for (i = 1; i <= n; i++) {
      if (dup[i]) continue
      split(corr[i], p, "-"); s = p[2] + 0
      if (relay[i] in seen && s <= seen[relay[i]])
        printf "line %d: %s applied %s (sequence %d) after sequence %d\n",
          line[i], relay[i], corr[i], s, seen[relay[i]]
      seen[relay[i]] = s
    }
  }' "$T/collectd.log")
bm_is "$rollback" "" "no relay was rolled back: applied confirmations have increasing sequences"

# Every correlationId the simulator saw: published or republished by the
# plugin, and then confirmed (its notification received) or ended.
unaccounted=
mapfile -t sim_ids < <(awk '$1 == "cmd" { sub("corr=", "", $2); print $2 }' "$T/gwsim.log" | sort -u)
for c in "${sim_ids[@]}"; do
  q=${c//./\\.}
  grep -qE "(published|republished) setExtDO .*correlationId \"$q\"" "$T/collectd.log" ||
    grep -qE "received notification extDOStateChanged correlationId \"$q\"" "$T/collectd.log" ||
    { unaccounted+="$c (never published) "; continue; }
  grep -qE "received notification extDOStateChanged correlationId \"$q\"|correlationId \"$q\", attempt [0-9]+\) ended" "$T/collectd.log" ||
    unaccounted+="$c (no outcome) "
done
bm_ok "$([[ -z $unaccounted ]]; echo $?)" \
  "all ${#sim_ids[@]} commands the simulator saw are accounted for in collectd.log"
[[ -n $unaccounted ]] && bm_diag "unaccounted: $unaccounted"
# Every command the plugin published: confirmed or ended, or superseded by
# a later command to the same relay from the same collectd (across a
# kill, a command still pending is resumed from the journal: published
# again or answered after the restart, so it gets an outcome itself).
lost=$(awk '
  /records replayed/ { run++ }
  / (re)?published setExtDO relay "/ {
    match($0, /relay "[^"]*"/); r = substr($0, RSTART + 7, RLENGTH - 8)
    match($0, /correlationId "[^"]*"/); c = substr($0, RSTART + 15, RLENGTH - 16)
    if (!(c in relay)) { n++; order[n] = c; relay[c] = r; run_of[c] = run }
    if (r SUBSEP run in newest) later[newest[r, run]] = later[newest[r, run]] || newest[r, run] != c
    newest[r, run] = c
    next
  }
  /received notification extDOStateChanged correlationId "|correlationId "[^"]*", attempt [0-9]+\) ended/ {
    match($0, /correlationId "[^"]*"/); done[substr($0, RSTART + 15, RLENGTH - 16)] = 1
  }
  END {
    for (i = 1; i <= n; i++) {
      c = order[i]
      if (!(c in done) && !later[c]) printf "%s (%s) ", c, relay[c]
    }
  }' "$T/collectd.log")
bm_is "$lost" "" "every command the plugin published was confirmed, ended or superseded"
# Resumed at a restart: republished when the connection came within their
# AckTimeout, else timed out and retried (a slow start, under load or ASan).
republished=$(grep -c 'republished setExtDO .*origin "resumed after restart' "$T/collectd.log") || true
resumed=$(grep -oE '[0-9]+ commands resumed' "$T/collectd.log" | awk '{ n += $1 } END { print n + 0 }')
bm_diag "$(grep -c '^cmd ' "$T/gwsim.log") commands reached the simulator," \
  "$resumed were resumed after a restart, $republished of them republished"
if ((ROUNDS >= 9)); then
  ((resumed > 0))
  bm_ok $? "the rounds with a frozen broker made the plugin resume commands ($resumed resumed, $republished republished)"
fi
(( ${#sim_ids[@]} >= ROUNDS )); bm_ok $? "the rounds sent work: ${#sim_ids[@]} distinct commands"
bm_check "the token appears in no log, output, metric or journal" no_secret_leaked
bm_done
