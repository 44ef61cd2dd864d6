#!/usr/bin/env bash
# A journal that cannot be written (its file system full): a command whose
# record cannot be made durable is never published; it fails loudly (an
# ERROR log line and a FAILURE notification), and once there is room again
# commands flow, with nothing on disk corrupted.
. "$top_srcdir/tests/integration/plant.sh"

[[ $(id -u) == 0 ]] || bm_skip_all "mounting a small file system needs root"
plant_token
mkdir -p "$T/small"
mount -t tmpfs -o size=64k tmpfs "$T/small" || bm_bail "cannot mount a tmpfs on $T/small"
bm_at_exit 'umount -l "$T/small" 2>/dev/null'

bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100
bm_start_collectd "$(plant_conf "JournalFile \"$T/small/plant1.journal\"
    MaxCommandsPerMinute 600")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_notify failure sensors temperature "" "too hot"
bm_check "with room, a command goes through" wait_val bool-pump 1 10

# Fill the file system: the journal's last page may still hold a few
# records, so switch until a write fails.
dd if=/dev/zero of="$T/small/filler" bs=1k count=256 2>/dev/null
full_since=$SECONDS
for i in $(seq 1 60); do
  if ((i % 2)); then bm_notify okay sensors temperature "" "cool $i" >/dev/null
  else bm_notify failure sensors temperature "" "hot $i" >/dev/null; fi
  sleep 0.3
  grep -q 'cannot .* the journal' "$T/collectd.log" && break
done
# The failed write may have been an answer's record: ask for commands now.
bm_notify okay sensors temperature "" "cool, journal full" >/dev/null
sleep 0.5
bm_notify failure sensors temperature "" "hot, journal full" >/dev/null
bm_check "a journal write that fails is an ERROR naming the file" \
  bm_wait_log "$T/collectd.log" "cannot (write|fsync) the journal \"$T/small/plant1.journal\"" 10
bm_check "the command fails with a FAILURE notification, unsent" \
  bm_wait_log "$T/collectd.log" 'Notification: severity = FAILURE, .*type_instance = pump, message = .*not sent: journal (write|fsync) failed' 10
failed_corr=$(unsent_corr)
bm_like "$failed_corr" '^[0-9a-f]{16}-[0-9]+$' "the failure names the command's correlationId ($failed_corr)"
sleep 1
bm_is "$(count "$CMD_LOG" "\"correlationId\":\"$failed_corr\"")" 0 "that command was never published"
size_full=$(stat -c %s "$T/small/plant1.journal")
# The journal is behind the table now: the plugin tries to rewrite it, once
# a second at most while the file system is full.
rewrites=$(count "$T/collectd.log" 'compaction of the journal .* failed')
bm_ok "$((rewrites >= 1 && rewrites <= SECONDS - full_since + 2 ? 0 : 1))" \
  "a rewrite was tried, at most once a second ($rewrites in $((SECONDS - full_since)) s)"
compacted=$(count "$T/collectd.log" 'journal .* compacted from')

# Room again: the next request goes through.
rm -f "$T/small/filler"
bm_notify failure sensors temperature "" "hot"
sleep 0.5
bm_notify okay sensors temperature "" "cool again"
bm_check "with room again, commands flow" wait_val bool-pump 0 15
bm_check "and the journal is rewritten from what the plugin knows" \
  bm_wait_for 5 eval '(($(count "$T/collectd.log" "journal .* compacted from") > compacted))' 
bm_stop_collectd
bm_check "the journal replays after all this (read-only, by bimetri-ctl)" \
  "$top_builddir/bimetri-ctl" -n --app-name flexyWattApp --instance-id 1 status --journal "$T/small/plant1.journal"
bm_done
