# doubt.sh - what doubt_restart.sh and doubt_supersede.sh share, sourced
# instead of plant.sh: the plant with the pump and the fan interlocked and
# no gateway (nobody answers the pump's commands), and the checks that the
# fan stays refused while an "on" command of the pump may still reach it.

. "$top_srcdir/tests/integration/plant.sh"

INTERLOCK='Interlock "plant1" "pump" "fan"'
CTL=$top_builddir/bimetri-ctl
DOUBT='interlocked with relay "pump", whose unconfirmed "on" command may still reach it for [0-9]+ s'

# doubt_start TIMES: the broker, a subscriber to the commands ($CMD_LOG)
# and collectd with the Gateway options TIMES and the Interlock; both
# relays known off.
doubt_start() {
  plant_token
  bm_start_broker
  bm_sub_start resource/commands 2
  CMD_LOG=$SUB_LOG
  bm_start_collectd "$(plant_conf "$1" "$INTERLOCK")"
  bm_check "connected" bm_wait_for 10 val_is current_connections 1
  bm_pub "$APP_TOPIC" "$(notif_json "" 101 4 0)" 1
  bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 0)" 1
  bm_check "the pump is known off" wait_val bool-pump 0 10
  bm_check "the fan is known off" wait_val bool-fan 0 10
}

fan_commands() { count "$CMD_LOG" '"resourceId":102,"output":1,"status":1'; }

# fan_refused MARK: waits for the manual "on" of the fan to be refused,
# since log line MARK, because of the pump's doubt.
fan_refused() {
  local mark=$1 i
  for ((i = 0; i < 50; i++)); do
    log_from "$mark" | grep -qE "manual command \"on\" for relay \"fan\" refused: $DOUBT" && return 0
    sleep 0.1
  done
  return 1
}

# ctl_refuses WHEN: bimetri-ctl, reading the journal collectd left, refuses
# the fan's "on" and says why, and its status says the pump is perhaps on
# (its output in $T/status.out).
ctl_refuses() {
  local rc=0
  timeout 60 "$CTL" -C "$T/collectd.conf" set fan on >"$T/set.out" 2>"$T/set.err" || rc=$?
  bm_is "$rc" 9 "$1: bimetri-ctl set fan on is refused by the Interlock: exit 9 ($(head -c 300 "$T/set.err"))"
  bm_like "$(<"$T/set.err")" 'relay "fan" may not be on together with relay "pump", which is perhaps on \(an unconfirmed "on" command may still reach it\)' \
    "$1: bimetri-ctl says why"
  rc=0
  timeout 60 "$CTL" -C "$T/collectd.conf" status >"$T/status.out" 2>"$T/status.err" || rc=$?
  bm_is "$rc" 0 "$1: bimetri-ctl status reads the journal ($(head -c 200 "$T/status.err"))"
  bm_like "$(grep -A3 '^relay "pump"' "$T/status.out")" \
    'perhaps on until [0-9T:+-]+: an "on" command ended unconfirmed and may still reach it \(its Interlock partners stay off\)' \
    "$1: bimetri-ctl status says the pump is perhaps on, and until when"
}
