#!/usr/bin/env bash
# StateInterval 3.4 under the plugin's Interval 1: an unchanged relay's
# values go out every 3 s (rounded to a multiple of the interval, and said
# so), carrying that interval, so collectd's cache keeps them between two
# dispatches and nothing is reported missing; the gateway's own values
# still go out every second; the first round, at start, sends every relay
# at once (the states known from the journal are not held back); a
# confirmed change goes out at once.
. "$top_srcdir/tests/integration/plant.sh"

plant_start_interval 1 "StateInterval 3.4"
bm_check "connected" bm_wait_for 10 val_is current_connections 1
bm_check "StateInterval is rounded to 3 s, and the log says so" \
  bm_wait_for 5 grep -q 'gateway "plant1": StateInterval 3.4 s rounded to 3 s' "$T/collectd.log"

# The first round sends both relays with the first read.
first_pump=$(csv_first pending_operations-pump)
first_fan=$(csv_first pending_operations-fan)
bm_ok "$(awk -v a="$first_pump" -v b="$first_fan" 'BEGIN { d = b - a; exit !(a > 0 && b > 0 && d > -0.5 && d < 0.5) }' && echo 0 || echo 1)" \
  "the first read sends every relay (pump at $first_pump, fan at $first_fan)"

# The cache keeps the relay values between their 3-s dispatches: GETVAL
# answers every 0.25 s for 9 s (with the interval of 1 s stamped on them
# they would be gone 2 s after each dispatch).
gone=$(absent_from_cache 36 pending_operations-pump pending_operations-fan)
bm_is "$gone" 0 "the relay values stay in collectd's cache between dispatches (72 GETVALs)"
bm_is "$(count "$T/collectd.log" 'bimetri.*([Mm]issing|has not been updated)')" 0 \
  "no value of the plugin is reported missing"

# After the first round, one row every 3 s per relay; the gateway's
# connection state every second (from its third row: the connection's own
# dispatch comes right after the first read's).
for m in pending_operations-pump pending_operations-fan; do
  gaps=$(csv_gaps "$m" 3)
  bm_ok "$(gaps_within "$gaps" 2.5 3.5 && echo 0 || echo 1)" \
    "$m is sent every 3 s after the first round ($(tr '\n' ' ' <<<"$gaps"))"
done
gaps=$(csv_gaps current_connections 3)
bm_ok "$(gaps_within "$gaps" 0.5 1.5 && echo 0 || echo 1)" \
  "current_connections is still sent every second ($(tr '\n' ' ' <<<"$gaps" | cut -c1-60))"

# A change goes out when it is confirmed, not with the next dispatch, and
# the relay's value then stays in the cache (it carries 3 s as well).
t0=$(date +%s%N)
bm_notify failure sensors temperature
bm_check "the Trigger switches the pump on" wait_val bool-pump 1 10
took=$((($(date +%s%N) - t0) / 1000000))
bm_ok "$((took < 1500 ? 0 : 1))" "the change is a value within 1.5 s ($took ms)"
gone=$(absent_from_cache 28 bool-pump)
bm_is "$gone" 0 "bool-pump stays in collectd's cache (28 GETVALs over 7 s)"
gaps=$(csv_gaps bool-pump 3)
bm_ok "$(gaps_within "$gaps" 0 3.5 && echo 0 || echo 1)" \
  "bool-pump then goes out at most 3 s apart ($(tr '\n' ' ' <<<"$gaps"))"
bm_is "$(count "$T/collectd.log" 'bimetri.*([Mm]issing|has not been updated)')" 0 \
  "still no value of the plugin reported missing"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
