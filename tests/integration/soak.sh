#!/usr/bin/env bash
# Soak: commands and notifications at a steady rate through collectd, with
# duplicates, garbage and unsolicited changes mixed in, for
# BM_SOAK_SECONDS (default 120; an hour on demand).  At the end: no crash,
# resident memory flat after warm-up (the growth is printed), the journal
# bounded, every command accounted for.
BM_SOAK_SECONDS=${BM_SOAK_SECONDS:-120}
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-$((BM_SOAK_SECONDS + 120))}
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 50 --duplicate --garbage \
  --app-id flexyWattApp.1 --unsolicited 2000 --unsolicited-relay 102:1
bm_start_collectd "$(plant_conf 'MaxCommandsPerMinute 600
    JournalSizeLimit 65536
    AckTimeout 3
    CommandTimeout 5')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$COLLECTD_PID/status" 2>/dev/null; }
start=$EPOCHSECONDS
warm=$((start + BM_SOAK_SECONDS / 4))
rss_warm= rss_max=0 journal_max=0 n=0
while ((EPOCHSECONDS - start < BM_SOAK_SECONDS)); do
  if ((n % 2)); then bm_notify okay sensors temperature "" "cool $n" >/dev/null
  else bm_notify failure sensors temperature "" "hot $n" >/dev/null; fi
  n=$((n + 1))
  sleep 0.25
  if ((n % 20 == 0)); then
    r=$(rss); j=$(stat -c %s "$T/bimetri-plant1.journal" 2>/dev/null || echo 0)
    ((r > rss_max)) && rss_max=$r
    ((j > journal_max)) && journal_max=$j
    [[ -z $rss_warm && $EPOCHSECONDS -ge $warm ]] && rss_warm=$r
  fi
done
sleep 6 # let the last commands end (CommandTimeout 5)
rss_end=$(rss)
bm_check "collectd is still running after ${BM_SOAK_SECONDS} s and $n notifications" kill -0 "$COLLECTD_PID"
growth=$((rss_end - ${rss_warm:-$rss_end}))
bm_diag "resident memory: ${rss_warm:-?} KiB after warm-up, $rss_end KiB at the end (growth $growth KiB, max $rss_max KiB)"
if bm_plugin_is_asan; then
  bm_skip "resident memory is flat after warm-up" "ASan's quarantine holds freed memory; the build without sanitizers checks it"
else
  ((growth < 2048)); bm_ok $? "resident memory is flat after warm-up (growth $growth KiB < 2 MiB)"
fi
bm_diag "journal: at most $journal_max bytes (JournalSizeLimit 65536)"
((journal_max < 5 * 65536)); bm_ok $? "the journal stays bounded ($journal_max bytes)"

# Every command accounted for: published = confirmed + ended otherwise
# (+ at most one still pending per relay).
wait_counters() { bm_wait_for 5 val operations-published >/dev/null; }
wait_counters
pub=$(val operations-published) conf=$(val operations-confirmed)
tmo=$(val operations-timeout) fail=$(val operations-failed)
contra=$(val operations-contradicted)
pending=$(( $(val pending_operations-pump) + $(val pending_operations-fan) ))
bm_diag "published $pub, confirmed $conf, timeout $tmo, failed $fail, pending $pending, duplicates $(val operations-duplicate), malformed $(val operations-malformed)"
(( pub > 50 )); bm_ok $? "commands flowed ($pub published)"
(( conf + tmo + fail + pending >= pub && conf + tmo + fail <= pub )); bm_ok $? \
  "every command is confirmed, timed out, failed or still pending"
(( $(val operations-duplicate) > 0 && $(val operations-malformed) > 0 )); bm_ok $? \
  "duplicates and garbage were mixed in and counted"
bm_check "the pump's last state matches the simulator's last notification" bash -c \
  "[[ \$(grep '^notif .* res=101 out=4' '$T/gwsim.log' | tail -1 | sed 's/.*status=//') == \$(printf 'GETVAL \"testhost/bimetri-plant1/bool-pump\"\n' | socat - UNIX-CONNECT:'$T/collectd.sock' | sed -n 's/^value=\(.\).*/\1/p') ]]"
bm_stop_collectd
bm_is $? 0 "collectd stops cleanly"
bm_done
