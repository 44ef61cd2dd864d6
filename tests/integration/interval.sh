#!/usr/bin/env bash
# The plugin's own interval (<LoadPlugin bimetri> Interval 3, collectd's
# being 1): the relay values are dispatched once per 3 s, not every second;
# every value carries that interval, so collectd's cache (which forgets a
# value after Timeout intervals, 2 by default) keeps them between two reads
# and no "missing" notification comes; and a confirmed change still goes
# out at once, not with the next read.
. "$top_srcdir/tests/integration/plant.sh"

plant_start_interval 3
bm_check "connected" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature
bm_check "the Trigger switches the pump on" wait_val bool-pump 1 10

# The cache keeps every value between the 3-s reads: GETVAL answers every
# 0.25 s for 9 s (with collectd's interval of 1 s stamped on them they
# would be gone 2 s after each read).
gone=$(absent_from_cache 36 bool-pump pending_operations-fan)
bm_is "$gone" 0 "the values stay in collectd's cache between reads (72 GETVALs)"
bm_is "$(count "$T/collectd.log" 'bimetri.*([Mm]issing|has not been updated)')" 0 \
  "no value of the plugin is reported missing"

# One row per read in the csv plugin's file: 3 s apart, not 1 s.
gaps=$(csv_gaps pending_operations-fan)
bm_ok "$([[ -n $gaps ]] && echo 0 || echo 1)" "the csv plugin wrote pending_operations-fan"
bm_is "$(awk '$1 < 2.5 || $1 > 3.5' <<<"$gaps" | wc -l)" 0 \
  "pending_operations-fan is dispatched every 3 s ($(tr '\n' ' ' <<<"$gaps"))"

# A change goes out when it is confirmed, not with the next read.
t0=$(date +%s%N)
bm_notify okay sensors temperature
bm_check "the pump is switched off" wait_val bool-pump 0 10
took=$((($(date +%s%N) - t0) / 1000000))
bm_ok "$((took < 1500 ? 0 : 1))" "the change is a value within 1.5 s, before the next read ($took ms)"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
