#!/usr/bin/env bash
# The journal file itself: where it is created and with which modes; that
# compaction keeps it bounded; how collectd starts on a journal cut in its
# last record, with garbage after its records, with a corrupt record in the
# middle or a bad header (what is kept aside, what is restored); JournalSync
# none; two Gateways on one JournalFile; and no token in any journal.
. "$top_srcdir/tests/integration/plant.sh"

OPTS='AckTimeout 2
    CommandTimeout 3
    Retries 2
    RetryBackoff 0.2
    MaxCommandsPerMinute 600'
J=$T/bimetri-plant1.journal

# jrecords FILE: one line per record of the journal, "OFFSET TYPE LENGTH"
# (TYPE: 1 command, 2 response, 3 confirm, 4 timeout, 5 give_up, 6 state,
# 7 seq), following the length fields from the header on; CRCs are not
# checked.  Stops at a record that does not fit in the file.
jrecords() {
  local f=$1 size off=28 len type
  size=$(stat -c %s "$f")
  while ((off + 17 <= size)); do
    len=$(od -An -tu4 -j "$off" -N4 "$f" | tr -d ' ')
    type=$(od -An -tu1 -j $((off + 4)) -N1 "$f" | tr -d ' ')
    ((off + 17 + len <= size)) || break
    echo "$off $type $len"
    off=$((off + 17 + len))
  done
}
# jtypes FILE: the record types of FILE, space-separated.
jtypes() { jrecords "$1" | awk '{ printf "%s%s", sep, $2; sep = " " } END { print "" }'; }
# jend FILE: the offset just after the last whole record.
jend() { jrecords "$1" | awk '{ e = $1 + 17 + $3 } END { print e + 0 ? e : 28 }'; }
# first_seq FILE: the header's first_seq.
first_seq() { od -An -tu8 -j 16 -N8 "$1" | tr -d ' '; }
# flip FILE OFFSET: inverts every bit of the byte at OFFSET.
flip() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "\\x$(printf '%02x' $((b ^ 0xff)))" |
    dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
# has_val METRIC: true when collectd holds a value for the metric.
has_val() { val "$1" >/dev/null 2>&1; }
# start_paused [GATEWAY_OPTIONS]: starts collectd on the plant while the
# broker is stopped (SIGSTOP), so no message can reach the plugin, reads
# the restored state of the pump into RESTORED once the first read has
# dispatched the relay's values (its pending_operations always; its bool
# when known: 0.5 s more for another write thread), and lets the broker go
# on.
start_paused() {
  local st=0
  kill -STOP "$BROKER_PID"
  bm_try_start_collectd "$(plant_conf "$OPTS
    ${1:-}")" || st=$?
  bm_wait_for 10 has_val pending_operations-pump >/dev/null
  bm_wait_for 0.5 has_val bool-pump >/dev/null
  RESTORED=$(val bool-pump 2>/dev/null || echo unknown)
  kill -CONT "$BROKER_PID"
  ((st == 0)) || bm_bail "collectd did not start (see $T/collectd.log)"
  bm_wait_for 10 val_is current_connections 1 >/dev/null ||
    bm_bail "collectd did not connect"
}
# switch STATUS: asks the Trigger for the pump on (1) or off (0) and waits
# for the confirmation.
switch() {
  local sev=okay
  ((${1} == 1)) && sev=failure
  bm_notify "$sev" sensors temperature "" "switch $1" && wait_val bool-pump "$1" 10
}

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 50
bm_start_collectd "$(plant_conf "$OPTS")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

# ---- the default file -------------------------------------------------
bm_check "the journal is created at <BaseDir>/bimetri-<gateway>.journal" test -f "$J"
bm_is "$(stat -c %a "$J")" 600 "with mode 0600"
bm_is "$(head -c 4 "$J")" BMJ1 "it starts with the magic BMJ1"
bm_is "$(jtypes "$J")" "7 6 6" "a new journal holds a SEQ and one STATE per relay"
switch 1; bm_ok $? "the pump is switched on"
switch 0; bm_ok $? "and off"
bm_like "$(jtypes "$J")" '^7 6 6 1 2 3 1 2 3$' "each command appended COMMAND, RESPONSE and CONFIRM records"
bm_is "$(jend "$J")" "$(stat -c %s "$J")" "the records fill the file exactly"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"

# ---- a torn last record -------------------------------------------------
# The last record is the CONFIRM of "off": cut into, it is dropped, and the
# journal before it says the pump is on with the off command in flight.
read -r last_off _ last_len < <(jrecords "$J" | tail -1)
truncate -s -3 "$J"
mark=$(log_mark)
bm_stop_gwsim
start_paused
bm_check "collectd starts on a journal cut in its last record" kill -0 "$COLLECTD_PID"
bm_like "$(log_from "$mark" | grep 'torn record')" \
  "journal \"$J\" ends in a torn record at offset $last_off \(.*\): dropped $((17 + last_len - 3)) bytes" \
  "the warning says where and how many bytes were dropped"
bm_is "$RESTORED" 1 "the state of the records before the tail is restored: on"
bm_like "$(log_from "$mark" | grep 'records replayed')" '8 records replayed, 1 relay states restored, 1 commands resumed' \
  "the off command, confirmed only in the lost record, is resumed"
bm_start_gwsim --secret-file "$T/secret" --delay 50
bm_check "and confirmed again: the pump is off" wait_val bool-pump 0 15
bm_is "$(find "$T" -name '*.corrupt*' | wc -l)" 0 "a torn tail leaves no .corrupt copy"

# ---- garbage after the records -------------------------------------------
bm_stop_collectd
size=$(stat -c %s "$J")
garbage='this is no journal record, only garbage after the last one'
printf '%s' "$garbage" >>"$J"
# And the .tmp of a compaction that crashed before its rename.
printf 'half a snapshot' >"$J.tmp"
mark=$(log_mark)
start_paused
bm_check "the .tmp left by a crashed compaction is removed" test ! -e "$J.tmp"
bm_like "$(log_from "$mark" | grep 'torn record')" \
  "ends in a torn record at offset $size \(.*\): dropped ${#garbage} bytes" \
  "garbage after valid records is cut off, all of it and nothing else"
bm_is "$RESTORED" 0 "the state is restored whole: off"
bm_like "$(log_from "$mark" | grep 'records replayed')" ', 0 commands resumed' "nothing is resumed"
bm_is "$(find "$T" -name '*.corrupt*' | wc -l)" 0 "no .corrupt copy"

# ---- a corrupt record in the middle ----------------------------------------
switch 1; bm_ok $? "the pump is switched on"
switch 0; bm_ok $? "and off"
bm_stop_collectd
# Records now: SEQ, STATE x2 (compacted at start), then on, off (COMMAND,
# RESPONSE, CONFIRM each).  Flip a byte in the middle of the off COMMAND.
mapfile -t recs < <(jrecords "$J")
read -r bad_off bad_type bad_len <<<"${recs[6]}"
bm_is "$bad_type" 1 "the 7th record is the off COMMAND"
flip "$J" $((bad_off + 13 + bad_len / 2))
cp "$J" "$T/corrupted.copy"
next_off=$((bad_off + 17 + bad_len))
mark=$(log_mark)
start_paused
bm_check "collectd starts on a journal corrupt in the middle" kill -0 "$COLLECTD_PID"
bm_like "$(log_from "$mark" | grep 'is corrupt at offset')" \
  "\[error\] bimetri plugin: journal \"$J\" is corrupt at offset $bad_off \(.*\) and has a valid record after it at offset $next_off: kept a copy in \"$J.corrupt\" and dropped $(($(stat -c %s "$T/corrupted.copy") - bad_off)) bytes" \
  "an error says where, and where the copy is"
bm_check "the copy is the whole corrupt file, byte for byte" cmp "$J.corrupt" "$T/corrupted.copy"
bm_is "$(stat -c %a "$J.corrupt")" 600 "the copy has mode 0600"
bm_like "$(log_from "$mark" | grep 'records replayed')" ": 6 records replayed, 1 relay states restored, 0 commands resumed" \
  "replay stopped at the corrupt record"
bm_is "$RESTORED" 1 "what the records before it said is restored (on), nothing after"
switch 0; bm_ok $? "the plugin works on: the pump is switched off"

# ---- a bad header ----------------------------------------------------------
bm_stop_collectd
flip "$J" 0
mark=$(log_mark)
start_paused
bm_like "$(log_from "$mark" | grep 'bad header')" \
  "journal \"$J\" has a bad header \(.*\): moved it to \"$J.corrupt.1\" and started a new journal" \
  "a bad header moves the file to the next free .corrupt name"
bm_is "$RESTORED" unknown "nothing is restored from it"
bm_is "$(jtypes "$J")" "7 6 6" "a new journal was started"
bm_check "the old .corrupt copy is kept" cmp "$J.corrupt" "$T/corrupted.copy"
switch 1; bm_ok $? "the plugin works on: the pump is switched on"

# No free .corrupt name (.corrupt and .corrupt.1 .. .9 all taken): the
# journal is left as it is, evidence is never destroyed, and the plugin
# does not start.
bm_stop_collectd
for i in 2 3 4 5 6 7 8 9; do cp "$J.corrupt" "$J.corrupt.$i"; done
flip "$J" 0
cp "$J" "$T/bad-header.copy"
mark=$(log_mark)
if bm_try_start_collectd "$(plant_conf "$OPTS")" >/dev/null 2>&1; then
  sleep 1
  bm_stop_collectd >/dev/null 2>&1
fi
bm_like "$(log_from "$mark" | grep 'no .corrupt name is free')" \
  "journal \"$J\" has a bad header \(.*\) and no \.corrupt name is free; remove old copies" \
  "with every .corrupt name taken, an error says so"
bm_check "and the journal is left untouched" cmp "$J" "$T/bad-header.copy"
bm_is "$(log_from "$mark" | grep -c 'connected to')" 0 "the plugin did not start"
rm -f "$J".corrupt.[2-9]
flip "$J" 0

# ---- compaction keeps the file bounded ---------------------------------------
bm_stop_collectd
bm_stop_gwsim
bm_start_gwsim --secret-file "$T/secret" --delay 10
mark=$(log_mark)
seq0=$(first_seq "$J")
start_paused 'JournalSizeLimit 4096'
max=0
for ((i = 0; i < 40; i++)); do
  switch $((i % 2)) || { bm_fail "command $i was not confirmed"; break; }
  s=$(stat -c %s "$J")
  ((s > max)) && max=$s
done
# The compaction at start is logged too; those while running start above
# the limit.
compactions=$(log_from "$mark" | grep -oE "journal \"$J\" compacted from [0-9]+ to" |
  awk '$(NF-1) > 4096 { n++ } END { print n + 0 }')
bm_check "the journal was compacted while running (\"compacted\" logged $compactions times)" \
  test "$compactions" -ge 2
bm_check "the file stayed bounded: at most $max bytes, limit 4096 plus one turn" \
  test "$max" -le $((4096 + 1024))
bm_is "$(stat -c %a "$J")" 600 "a compacted journal keeps mode 0600"
(($(first_seq "$J") > seq0)); bm_ok $? "record numbers go on across compactions (first_seq $seq0, now $(first_seq "$J"))"
bm_is "$(jend "$J")" "$(stat -c %s "$J")" "the compacted journal is whole"
bm_is "$(find "$T" -name '*.journal.tmp' | wc -l)" 0 "no .tmp file is left"
bm_stop_collectd
start_paused 'JournalSizeLimit 4096'
bm_is "$RESTORED" 1 "the state survives the compactions and a restart: on"

# ---- JournalFile in a directory that does not exist, JournalSync none -------
bm_stop_collectd
J2=$T/state/deep/plant1.journal
start_paused "JournalFile \"$J2\"
    JournalSync none"
bm_check "the JournalFile is created" test -f "$J2"
bm_is "$(stat -c %a "$J2") $(stat -c %a "$T/state/deep") $(stat -c %a "$T/state")" "600 700 700" \
  "with mode 0600, its missing directories with 0700"
bm_is "$RESTORED" unknown "a new journal restores nothing"
switch 1; bm_ok $? "JournalSync none: the pump is switched on"
switch 0; bm_ok $? "and off"
{ bm_kill_collectd; } 2>/dev/null # bash reports the kill on stderr
start_paused "JournalFile \"$J2\"
    JournalSync none"
bm_is "$RESTORED" 0 "with JournalSync none a kill -9 loses nothing (the page cache survives)"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"

# ---- two Gateways on one journal ---------------------------------------------
# second_gateway OPTION_LINE: a second Gateway block "plant2".
second_gateway() {
  cat <<EOF
  <Gateway "plant2">
    Host "127.0.0.1"
    Port $BROKER_PORT
    AppName "otherApp"
    InstanceId "2"
    UserId 1
    OrganizationId 2
    TokenFile "$T/token"
    $1
    <Relay "valve">
      ResourceId 301
      Output 1
    </Relay>
  </Gateway>
EOF
}
# refused NAME REGEX CONFIG: collectd must refuse CONFIG with REGEX in its log.
refused() {
  local mark st=0
  mark=$(log_mark)
  if bm_try_start_collectd "$3" >/dev/null 2>&1; then
    st=1
    bm_stop_collectd >/dev/null 2>&1
  fi
  if ((st == 0)) && log_from "$mark" | grep -qE "$2" &&
    ! log_from "$mark" | grep -q 'connected to'; then
    bm_pass "$1"
  else
    bm_fail "$1"
    bm_diag "collectd started: $st; wanted: $2"
    bm_diag "log: $(log_from "$mark" | grep -i bimetri | tail -5)"
  fi
}
refused "two Gateways with the same JournalFile are refused" \
  "<Gateway \"plant2\">: option \"JournalFile\": \"$T/shared.journal\" is the journal of another Gateway already" \
  "$(plant_conf "JournalFile \"$T/shared.journal\"" "$(second_gateway "JournalFile \"$T/shared.journal\"")")"
refused "a JournalFile that is another Gateway's default is refused" \
  "<Gateway \"plant2\">: option \"JournalFile\": \"$J\" is the journal of another Gateway already" \
  "$(plant_conf "" "$(second_gateway "JournalFile \"$J\"")")"
bm_is "$(ls "$T"/shared.journal* 2>/dev/null | wc -l)" 0 "a refused configuration creates no journal"

# The same file under another name: no comparison of the strings catches
# it, the journal's lock does, when the second Gateway opens it.  Then the
# plugin fails to start, and no Gateway of it may run: none connects and
# no Trigger switches anything.
mark=$(log_mark)
gwsim_cmds=$(count "$T/gwsim.log" '^cmd ')
if bm_try_start_collectd "$(plant_conf "" "$(second_gateway "JournalFile \"$T/./bimetri-plant1.journal\"")")" >/dev/null 2>&1; then
  sleep 2
  # One of these differs from the pump's state, whatever it is.
  bm_notify failure sensors temperature "" "too hot, with a broken plugin" >/dev/null
  sleep 0.5
  bm_notify okay sensors temperature "" "cool, with a broken plugin" >/dev/null
  sleep 1.5
  bm_stop_collectd >/dev/null 2>&1
fi
bm_like "$(log_from "$mark" | grep -E 'in use|journal of another Gateway')" \
  "<Gateway \"plant2\">: option \"JournalFile\": \"$T/\./bimetri-plant1.journal\" is the journal of another Gateway already" \
  "an alias of another Gateway's JournalFile is a configuration error naming the file"
bm_is "$(log_from "$mark" | grep -c 'connected to') $(($(count "$T/gwsim.log" '^cmd ') - gwsim_cmds))" "0 0" \
  "then no Gateway runs: none connected, nothing was switched"

bm_try_start_collectd "$(plant_conf "$OPTS" "$(second_gateway "")")"
bm_ok $? "two Gateways with their own default journals start"
bm_check "each has its journal" test -f "$T/bimetri-plant2.journal" -a -f "$J"
bm_stop_collectd

# ---- no token in any journal --------------------------------------------------
token=$(<"$T/token")
mapfile -t journals < <(find "$T" -name '*.journal*' -type f)
bm_check "${#journals[@]} journal files exist" test "${#journals[@]}" -ge 5
bm_check "the token appears in none of them" bash -c '! grep -qF -- "$1" "${@:2}"' _ "$token" "${journals[@]}"
bm_check "nor in any log, output or metric" no_secret_leaked
bm_done
