#!/usr/bin/env bash
# The write callback's quick rejection of values no Switch can match: the
# few plugin names the rules name, then a hash of the identities they name
# exactly (plugin, type and type instance; or plugin and type once a rule
# leaves its type instance open). Each way, a value the rules name still
# acts, and a value of another plugin or identity does not.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 50

PUMP2='<Relay "pump2">
      ResourceId 103
      Output 1
    </Relay>'
switch() { # NAME RELAY PLUGIN TYPE [TYPE_INSTANCE]
  printf '<Switch "%s">\n  Relay "plant1" "%s"\n  Plugin "%s"\n  Type "%s"\n' \
    "$1" "$2" "$3" "$4"
  [[ -n ${5:-} ]] && printf '  TypeInstance "%s"\n' "$5"
  printf '  OnAbove 70\n  OffBelow 60\n</Switch>\n'
}
putval() { bm_unixsock "PUTVAL \"testhost/$1\" interval=1 N:$2" >/dev/null; }
commands_for() { count "$CMD_LOG" "\"resourceId\":$1"; }

# 1. Two plugins (the name check is on), one rule without TypeInstance:
# the hash is of (plugin, type).
bm_start_collectd "$(plant_conf "$PUMP2" "$(switch fan fan sensors temperature)
$(switch humid pump2 hygro humidity cellar)")"
bm_check "connected (two plugins, one rule without TypeInstance)" \
  bm_wait_for 10 val_is current_connections 1
putval ipmi/temperature-room 90        # another plugin, same type
putval sensors/humidity-room 90        # the rules' plugin, another type
putval hygro/humidity-attic 90         # a type instance no rule names
sleep 1.5
bm_is "$(commands_for 102)$(commands_for 103)" 00 \
  "values of other plugins, types or type instances switch nothing"
putval sensors/temperature-any 72
bm_check "any type instance of the open rule switches the fan" wait_val bool-fan 1 10
putval hygro/humidity-cellar 90
bm_check "the exact rule of the second plugin switches pump2" wait_val bool-pump2 1 10
bm_stop_collectd

# 2. Five plugins: more than the name check keeps; the hash alone.
rules=$(switch fan fan sensors temperature room)
for p in a b c d; do
  rules+=$'\n'"$(switch "spare-$p" pump "plug$p" gauge x)"
done
bm_start_collectd "$(plant_conf "$PUMP2" "$rules")"
bm_check "connected (five plugins)" bm_wait_for 10 val_is current_connections 1
before=$(commands_for 102)
putval sensors/temperature-hall 50     # no rule names type instance hall
putval plugE/gauge-x 90                # no rule names plugE
sleep 1.5
bm_is "$(commands_for 102)$(commands_for 101)" "${before}0" \
  "values no rule names switch nothing"
putval sensors/temperature-room 50
bm_check "the named value switches the fan off" wait_val bool-fan 0 10
putval plugd/gauge-x 90
bm_check "the rule of the fifth plugin named switches pump" wait_val bool-pump 1 10
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
