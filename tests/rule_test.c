/*
 * rule_test.c - switching rules (rule.h) and the limits the relay table
 * enforces for them (relay.h's bm_relay_table_request_limited), with an
 * injected clock: hysteresis, staleness and FailSafe, MinOnTime,
 * MinOffTime, the switch budget over an hour, and property-style runs over
 * random value sequences (never two changes inside MinOnTime/MinOffTime,
 * never more than the budget in any hour, never both interlocked relays
 * on).
 */
#include "rule.h"

#include "alloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static void test_hysteresis(void)
{
  struct bm_rule r;
  int d;

  bm_rule_init(&r, "cool");
  r.on_at = 70;
  r.off_at = 60;
  is_int(bm_rule_feed(&r, 65, 1, &d), -1, "in between with no decision yet: none");
  is_int(d, -1, "the decision is still none");
  is_int(bm_rule_feed(&r, 71, 2, &d), 1, "above OnAbove: on (new)");
  is_int(bm_rule_feed(&r, 75, 3, NULL), -1, "above again: no news");
  is_int(bm_rule_feed(&r, 65, 4, &d), -1, "in between: keeps on");
  is_int(d, 1, "decision on");
  is_int(bm_rule_feed(&r, 60, 5, NULL), -1, "exactly OffBelow is not below");
  is_int(bm_rule_feed(&r, 59.9, 6, NULL), 0, "below OffBelow: off (new)");
  is_int(bm_rule_feed(&r, 70, 7, NULL), -1, "exactly OnAbove is not above");
  is_int(bm_rule_feed(&r, NAN, 8, &d), -1, "NaN changes nothing");
  is_int(d, 0, "still off");
  bm_rule_release(&r);

  bm_rule_init(&r, "heat");
  r.heater = true;
  r.on_at = 18;
  r.off_at = 21;
  is_int(bm_rule_feed(&r, 17, 1, NULL), 1, "heater: below OnBelow is on");
  is_int(bm_rule_feed(&r, 20, 2, NULL), -1, "between: keeps on");
  is_int(bm_rule_feed(&r, 21.5, 3, NULL), 0, "above OffAbove: off");
  bm_rule_release(&r);
}

/* A refused request (a manual override) is asked again by the next value,
 * once; bm_rule_refused says whether the one before was refused too. */
static void test_refused(void)
{
  struct bm_rule r;

  bm_rule_init(&r, "o");
  r.on_at = 70;
  r.off_at = 60;
  is_int(bm_rule_feed(&r, 80, 1, NULL), 1, "refused: on (new)");
  ok(!bm_rule_refused(&r), "refused: the first refusal");
  is_int(bm_rule_feed(&r, 80, 2, NULL), 1, "refused: the next value asks again");
  is_int(bm_rule_feed(&r, 80, 3, NULL), -1, "refused: ... once");
  ok(bm_rule_refused(&r), "refused: a second refusal in a row is said so");
  is_int(bm_rule_feed(&r, 65, 4, NULL), 1,
         "refused: a value in between asks again too (the kept decision)");
  bm_rule_answered(&r);
  ok(!bm_rule_refused(&r), "refused: after an answer, a refusal is a first");
  is_int(bm_rule_feed(&r, NAN, 5, NULL), -1, "refused: NaN decides nothing");
  is_int(bm_rule_feed(&r, 50, 6, NULL), 0, "refused: below: off (new)");
  is_int(bm_rule_feed(&r, 50, 7, NULL), -1, "refused: ... once");
  bm_rule_release(&r);
}

static void test_check(void)
{
  struct bm_rule r;
  char err[128];

  bm_rule_init(&r, "c");
  is_int(bm_rule_check(&r, err, sizeof(err)), -1, "no thresholds refused");
  r.on_at = 60;
  r.off_at = 70;
  is_int(bm_rule_check(&r, err, sizeof(err)), -1,
         "a cooler with OnAbove below OffBelow refused");
  ok(strstr(err, "OnAbove (60) must be above OffBelow (70)") != NULL, "%s", err);
  r.heater = true;
  is_int(bm_rule_check(&r, err, sizeof(err)), 0, "the same as a heater is fine");
  r.fail_safe = 0;
  is_int(bm_rule_check(&r, err, sizeof(err)), -1, "FailSafe without StaleAfter refused");
  r.stale_after = 10;
  is_int(bm_rule_check(&r, err, sizeof(err)), 0, "with StaleAfter it is fine");
  bm_rule_release(&r);
}

static void test_stale(void)
{
  struct bm_rule r;

  bm_rule_init(&r, "s");
  r.on_at = 70;
  r.off_at = 60;
  r.stale_after = 300;
  r.fail_safe = 0;
  is_int(bm_rule_tick(&r, 1000), -1, "never stale before a first value");
  is_int(bm_rule_feed(&r, 80, 1000, NULL), 1, "on");
  is_int(bm_rule_tick(&r, 1299), -1, "not stale before StaleAfter");
  is_int(bm_rule_tick(&r, 1300), 0, "stale: FailSafe off");
  is_int(bm_rule_tick(&r, 1400), -1, "reported once");
  is_int(bm_rule_feed(&r, 80, 1500, NULL), 1,
         "a value after staleness gives its decision again, even the same");
  is_int(bm_rule_tick(&r, 1700), -1, "fresh again");
  r.fail_safe = -1;
  is_int(bm_rule_tick(&r, 1800), -1, "without FailSafe staleness asks nothing");
  bm_rule_release(&r);
}

static void test_matches(void)
{
  struct bm_rule r;
  char err[128];
  const char *f[BM_FIELD_COUNT] = {"h", "sensors", "", "temperature", "cpu"};

  bm_rule_init(&r, "m");
  ok(bm_rule_matches(&r, f), "no pattern matches anything");
  bm_pattern_set(&r.pattern[BM_FIELD_TYPE], BM_FIELD_TYPE, "temperature", err,
                 sizeof(err));
  bm_pattern_set(&r.pattern[BM_FIELD_TYPE_INSTANCE], BM_FIELD_TYPE_INSTANCE,
                 "/^cp/", err, sizeof(err));
  ok(bm_rule_matches(&r, f), "exact and regex match");
  f[4] = "gpu";
  ok(!bm_rule_matches(&r, f), "the regex rejects another instance");
  bm_rule_release(&r);
}

/* ---- the index -------------------------------------------------------- */

/* A rule on plugin/type/type_instance, each exact unless it starts with
 * '/' (a regex), NULL for none. */
static struct bm_rule *index_rule(const char *plugin, const char *type,
                                  const char *type_instance)
{
  struct bm_rule *r = calloc(1, sizeof(*r));
  char err[128];

  bm_rule_init(r, "i");
  if (plugin)
    bm_pattern_set(&r->pattern[BM_FIELD_PLUGIN], BM_FIELD_PLUGIN, plugin, err,
                   sizeof(err));
  if (type)
    bm_pattern_set(&r->pattern[BM_FIELD_TYPE], BM_FIELD_TYPE, type, err,
                   sizeof(err));
  if (type_instance)
    bm_pattern_set(&r->pattern[BM_FIELD_TYPE_INSTANCE], BM_FIELD_TYPE_INSTANCE,
                   type_instance, err, sizeof(err));
  return r;
}

static void free_rules(struct bm_rule **r, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    bm_rule_release(r[i]);
    free(r[i]);
  }
}

static void test_index(void)
{
  struct bm_rule *r[8];
  struct bm_rule_index x;

  r[0] = index_rule("sensors", "temperature", "room");
  r[1] = index_rule("sensors", "humidity", "cellar");
  ok(bm_rule_index_build(&x, r, 2) == 0 && x.fields == 3 && x.plugins_n == 1,
     "exact identities: an index of all three fields, one plugin name");
  ok(bm_rule_index_may_match(&x, "sensors", "temperature", "room") &&
         bm_rule_index_may_match(&x, "sensors", "humidity", "cellar"),
     "the identities the rules name pass");
  ok(!bm_rule_index_may_match(&x, "sensors", "temperature", "hall") &&
         !bm_rule_index_may_match(&x, "sensors", "humidity", "room"),
     "another type instance of the plugin is rejected (the hash)");
  ok(!bm_rule_index_may_match(&x, "ipmi", "temperature", "room"),
     "the same type of another plugin is rejected (the name check)");
  bm_rule_index_release(&x);

  r[2] = index_rule("hygro", "humidity", NULL);
  ok(bm_rule_index_build(&x, r, 3) == 0 && x.fields == 2 && x.plugins_n == 2,
     "a rule without TypeInstance: an index of plugin and type");
  ok(bm_rule_index_may_match(&x, "hygro", "humidity", "anything") &&
         bm_rule_index_may_match(&x, "sensors", "temperature", "hall"),
     "any type instance of a named plugin and type passes");
  ok(!bm_rule_index_may_match(&x, "hygro", "temperature", "room") &&
         !bm_rule_index_may_match(&x, "ipmi", "humidity", "cellar"),
     "another type, or another plugin, is rejected");
  bm_rule_index_release(&x);

  r[3] = index_rule("a", "gauge", "x");
  r[4] = index_rule("b", "gauge", "x");
  r[5] = index_rule("c", "gauge", "x");
  {
    struct bm_rule *five[] = {r[0], r[1], r[3], r[4], r[5], NULL};
    five[5] = index_rule("d", "gauge", "x");
    ok(bm_rule_index_build(&x, five, 6) == 0 && x.fields == 3 &&
           x.plugins_n == -1,
       "five plugin names, more than the check keeps: the hash alone");
    ok(bm_rule_index_may_match(&x, "d", "gauge", "x") &&
           bm_rule_index_may_match(&x, "sensors", "humidity", "cellar"),
       "every rule's identity passes");
    ok(!bm_rule_index_may_match(&x, "e", "gauge", "x") &&
           !bm_rule_index_may_match(&x, "c", "gauge", "y"),
       "others are rejected by the hash");
    bm_rule_index_release(&x);
    free_rules(five + 5, 1);
  }

  r[6] = index_rule("sensors", "/^temp/", "room");
  ok(bm_rule_index_build(&x, r, 7) == 0 && x.fields == 0 &&
         bm_rule_index_may_match(&x, "ipmi", "anything", "at all"),
     "a rule with a regex Type: no index, every value goes through");
  bm_rule_index_release(&x);
  r[7] = index_rule(NULL, "temperature", NULL);
  ok(bm_rule_index_build(&x, r + 7, 1) == 0 && x.fields == 0 &&
         bm_rule_index_may_match(&x, "ipmi", "gauge", ""),
     "a rule without Plugin: no index");
  bm_rule_index_release(&x);

  bm_alloc_fail_at(1);
  ok(bm_rule_index_build(&x, r, 2) == -1 && bm_alloc_failed() &&
         bm_rule_index_may_match(&x, "ipmi", "gauge", ""),
     "out of memory: reported, and the empty index lets every value through");
  bm_alloc_fail_at(0);
  bm_rule_index_release(&x);
  free_rules(r, 8);
}

/* ---- limits, through the relay table ------------------------------------ */

static const struct bm_relay_policy POLICY = {5, 10, 2, 1, 0};

static struct bm_notification confirm(const char *corr, int status)
{
  struct bm_notification n;
  memset(&n, 0, sizeof(n));
  n.has_correlation_id = corr != NULL;
  snprintf(n.correlation_id, sizeof(n.correlation_id), "%s", corr ? corr : "");
  snprintf(n.app_id, sizeof(n.app_id), "a.1");
  n.has_state = true;
  n.state.resource_id = 101;
  n.state.output = 4;
  n.state.status = status;
  return n;
}

/* Ticks at now; confirms a command published by it at once.  Returns the
 * number of commands published. */
static int tick_and_confirm(bm_relay_table_t *t, double now, int *status)
{
  struct bm_events ev = {0};
  int published = 0;

  bm_relay_table_tick(t, now, &ev);
  for (size_t i = 0; i < ev.n; i++) {
    if (ev.ev[i].kind != BM_EV_PUBLISH)
      continue;
    struct bm_notification n = confirm(ev.ev[i].corr, ev.ev[i].status);
    struct bm_events more = {0};
    bm_relay_table_on_notification(t, &n, now, &more);
    bm_events_release(&more);
    *status = ev.ev[i].status;
    published++;
  }
  bm_events_release(&ev);
  return published;
}

static void test_min_times(void)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_relay_limits lim = {120, 60, 0};
  struct bm_events ev = {0};
  char why[160];
  int status = -1;

  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  struct bm_notification n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 0, &ev); /* off since 0 */
  is_int(bm_relay_table_request_limited(t, 0, 1, "rule", &lim, 30, why,
                                        sizeof(why)),
         BM_REQ_HELD, "on within MinOffTime (60 s) is held");
  ok(strstr(why, "MinOffTime: off for 30 s of 60") != NULL, "why: %s", why);
  is_int(tick_and_confirm(t, 30, &status), 0, "nothing sent at 30");
  ok(bm_relay_table_next_deadline(t) <= 60, "a timer is due by 60");
  is_int(tick_and_confirm(t, 60, &status), 1,
         "at 60 the held command goes out by itself");
  is_int(status, 1, "on");
  is_int(bm_relay_table_request_limited(t, 0, 0, "rule", &lim, 100, why,
                                        sizeof(why)),
         BM_REQ_HELD, "off within MinOnTime (120 s) is held");
  ok(strstr(why, "MinOnTime: on for 40 s of 120") != NULL, "why: %s", why);
  is_int(tick_and_confirm(t, 179, &status), 0, "still held at 179");
  is_int(bm_relay_table_request_limited(t, 0, 1, "rule", &lim, 150, why,
                                        sizeof(why)),
         BM_REQ_SAME, "wanting on again cancels the held off: nothing to do");
  is_int(tick_and_confirm(t, 180, &status), 0, "and nothing is sent at 180");
  is_int(bm_relay_table_request(t, 0, 0, "trigger", false, 185, why,
                                sizeof(why)),
         BM_REQ_OK, "a plain request is not held by a rule's limits");
  is_int(tick_and_confirm(t, 185, &status), 1, "it goes out at once");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A hold ends when its time comes even when the rule asks again in that
 * turn before the tick (its timer is gone by then); another input's request
 * for the held state lifts it at once. */
static void test_hold_ends(void)
{
  struct bm_relay_limits lim = {120, 0, 0};
  char why[160];
  int status = -1;

  for (int plain = 0; plain < 2; plain++) {
    bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
    struct bm_events ev = {0};
    struct bm_notification n = confirm(NULL, 1);

    bm_relay_table_add(t, "fan", 101, 4);
    bm_relay_table_set_connected(t, true, true, 0, &ev);
    bm_relay_table_on_notification(t, &n, 0, &ev); /* on since 0 */
    is_int(bm_relay_table_request_limited(t, 0, 0, "rule", &lim, 10, why,
                                          sizeof(why)),
           BM_REQ_HELD, "hold ends (%s): off within MinOnTime is held",
           plain ? "plain request" : "re-ask");
    is_int(tick_and_confirm(t, 10, &status), 0, "hold ends: nothing sent at 10");
    if (plain) {
      is_int(bm_relay_table_request(t, 0, 0, "trigger", false, 11, why,
                                    sizeof(why)),
             BM_REQ_OK, "hold ends: a Trigger asking for the held state "
                        "lifts the hold");
      is_int(tick_and_confirm(t, 11, &status), 1, "hold ends: ... sent at once");
    } else {
      is_int(bm_relay_table_request_limited(t, 0, 0, "rule", &lim, 120.5, why,
                                            sizeof(why)),
             BM_REQ_OK, "hold ends: the rule asks again after the hold, "
                        "before the turn's tick");
      is_int(tick_and_confirm(t, 120.5, &status), 1,
             "hold ends: ... and the tick sends the command");
    }
    is_int(status, 0, "hold ends: off");
    bm_events_release(&ev);
    bm_relay_table_free(t);
  }
}

/* The limits are checked again when a hold ends: a change confirmed
 * meanwhile, that nobody here asked for (switched by hand), restarts the
 * minimum time, and the held command waits for it. */
static void test_hold_rechecked(void)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_relay_limits lim = {0, 60, 0};
  struct bm_events ev = {0};
  struct bm_notification n = confirm(NULL, 0);
  char why[160];
  int status = -1;

  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  bm_relay_table_on_notification(t, &n, 0, &ev); /* off since 0 */
  is_int(bm_relay_table_request_limited(t, 0, 1, "rule", &lim, 10, why,
                                        sizeof(why)),
         BM_REQ_HELD, "rechecked: on within MinOffTime is held until 60");
  n = confirm(NULL, 1);
  bm_relay_table_on_notification(t, &n, 40, &ev); /* on by hand at 40 */
  n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 50, &ev); /* off by hand at 50 */
  is_int(tick_and_confirm(t, 60, &status), 0,
         "rechecked: at 60 the relay has been off for 10 s only: still held");
  ok(bm_relay_table_next_deadline(t) <= 110,
     "rechecked: a timer is due by 110 (%g)", bm_relay_table_next_deadline(t));
  is_int(tick_and_confirm(t, 109, &status), 0, "rechecked: nothing at 109");
  is_int(tick_and_confirm(t, 110, &status), 1,
         "rechecked: sent at 110, 60 s after the change by hand");
  is_int(status, 1, "rechecked: on");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_budget(void)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_relay_limits lim = {0, 0, 3};
  struct bm_events ev = {0};
  char why[160];
  int status = -1, sent = 0;

  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  struct bm_notification n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 0, &ev); /* change 1 at 0 */
  for (int i = 1; i <= 4; i++) {
    int want = i == 4 ? 1 : i % 2; /* on, off, on, on again */
    enum bm_request rc = bm_relay_table_request_limited(
        t, 0, want, "rule", &lim, 100.0 * i, why, sizeof(why));
    sent += tick_and_confirm(t, 100.0 * i, &status);
    if (i <= 2)
      is_int(rc, BM_REQ_OK, "change %d within the budget", i + 1);
    else
      is_int(rc, BM_REQ_HELD, "change 4 over the budget is held, asked %s (%s)",
             i == 3 ? "once" : "again", why);
  }
  is_int(sent, 2, "two commands in the first hour after the first change");
  is_int(tick_and_confirm(t, 3599, &status), 0, "still held just before the hour");
  is_int(tick_and_confirm(t, 3600, &status), 1,
         "sent when the oldest change is an hour old");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Random values: the relay never changes inside the minimum times, never
 * more than the budget in an hour, and follows the hysteresis when free. */
static void test_property(unsigned seed)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_relay_limits lim = {120, 60, 6};
  struct bm_rule r;
  struct bm_events ev = {0};
  double changes[4096];
  int n_changes = 0, status = 0, violations = 0, last_status = 0;
  double now = 0;

  srand(seed);
  bm_rule_init(&r, "p");
  r.on_at = 70;
  r.off_at = 60;
  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  struct bm_notification n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 0, &ev);
  changes[n_changes++] = 0;
  for (int step = 0; step < 20000 && n_changes < 4000; step++) {
    int want;
    now += 1 + rand() % 20;
    want = bm_rule_feed(&r, 50 + rand() % 40, now, NULL);
    if (want >= 0)
      bm_relay_table_request_limited(t, 0, want, "p", &lim, now, NULL, 0);
    if (tick_and_confirm(t, now, &status) && status != last_status) {
      double since = changes[n_changes - 1];
      if (status == 0 && now - since < lim.min_on)
        violations++;
      if (status == 1 && now - since < lim.min_off)
        violations++;
      if (n_changes >= lim.max_per_hour &&
          now - changes[n_changes - lim.max_per_hour] < 3600)
        violations++;
      changes[n_changes++] = now;
      last_status = status;
    }
  }
  is_int(violations, 0, "seed %u: %d changes over %.0f s, none against the limits",
         seed, n_changes, now);
  ok(n_changes > 20, "seed %u: the relay did follow the values", seed);
  bm_events_release(&ev);
  bm_rule_release(&r);
  bm_relay_table_free(t);
}

/* An "on" command superseded before its answer may still reach the device:
 * its interlock partner stays refused until the relay's later command is
 * answered. */
static void test_interlock_superseded(void)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_events ev = {0};
  int ids[2] = {0, 1};
  char fan_off[BM_MSG_ID_SIZE] = "";
  size_t published = 0, refused = 0;

  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_add(t, "heater", 102, 1);
  bm_relay_table_interlock(t, ids, 2);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  struct bm_notification n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 1, &ev); /* fan off */
  n.state.resource_id = 102;
  n.state.output = 1;
  bm_relay_table_on_notification(t, &n, 1, &ev); /* heater off */
  bm_relay_table_request(t, 0, 1, "fan on", false, 2, NULL, 0);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 2, &ev);
  is_int(ev.n == 1 && ev.ev[0].kind == BM_EV_PUBLISH && ev.ev[0].relay == 0,
         1, "superseded on: the fan's on command is published");
  /* One turn: the heater asked on, then the fan off (superseding its on). */
  bm_relay_table_request(t, 1, 1, "heater on", false, 3, NULL, 0);
  bm_relay_table_request(t, 0, 0, "fan off", false, 3, NULL, 0);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 3, &ev);
  for (size_t i = 0; i < ev.n; i++) {
    if (ev.ev[i].kind == BM_EV_PUBLISH && ev.ev[i].relay == 1)
      published++;
    if (ev.ev[i].kind == BM_EV_END && ev.ev[i].relay == 1 &&
        ev.ev[i].outcome == BM_OP_REFUSED)
      refused++;
    if (ev.ev[i].kind == BM_EV_PUBLISH && ev.ev[i].relay == 0)
      snprintf(fan_off, sizeof(fan_off), "%s", ev.ev[i].corr);
  }
  is_int(published, 0, "superseded on: the heater's on is not published");
  is_int(refused, 1, "superseded on: ... it is refused (the fan may still "
                     "go on)");
  ok(fan_off[0] != '\0', "superseded on: the fan's off is published");
  n = confirm(fan_off, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 4, &ev);
  is_int(bm_relay_table_request(t, 1, 1, "heater on", false, 5, NULL, 0),
         BM_REQ_OK, "superseded on: once the fan's off is answered, the "
                    "heater may be asked on");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 5, &ev);
  is_int(ev.n == 1 && ev.ev[0].kind == BM_EV_PUBLISH && ev.ev[0].relay == 1,
         1, "superseded on: ... and its command goes out");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Two interlocked relays, fan (0) and heater (1), both confirmed off, in a
 * connected table of the given policy. */
static bm_relay_table_t *fan_and_heater(const struct bm_relay_policy *pol,
                                        struct bm_events *ev)
{
  bm_relay_table_t *t = bm_relay_table_new(pol, "0123456789abcdef");
  int ids[2] = {0, 1};

  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_add(t, "heater", 102, 1);
  bm_relay_table_interlock(t, ids, 2);
  bm_relay_table_set_connected(t, true, true, 0, ev);
  struct bm_notification n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 1, ev); /* fan off */
  n.state.resource_id = 102;
  n.state.output = 1;
  bm_relay_table_on_notification(t, &n, 1, ev); /* heater off */
  bm_events_clear(ev);
  return t;
}

/* The heater asked on at `now`: 1 when its command went out, 0 when it was
 * refused (the relay stopped, its refusal counted: reported at most once a
 * minute), -1 for anything else. */
static int heater_on(bm_relay_table_t *t, double now, struct bm_events *ev)
{
  struct bm_relay_view v;
  struct bm_relay_stats before, after;

  bm_relay_table_stats(t, &before, false);
  bm_relay_table_request(t, 1, 1, "heater on", false, now, NULL, 0);
  bm_events_clear(ev);
  bm_relay_table_tick(t, now, ev);
  for (size_t i = 0; i < ev->n; i++)
    if (ev->ev[i].relay == 1 && ev->ev[i].kind == BM_EV_PUBLISH)
      return 1;
  bm_relay_table_view(t, 1, &v);
  bm_relay_table_stats(t, &after, false);
  return v.stopped && after.ops[BM_OP_REFUSED] == before.ops[BM_OP_REFUSED] + 1
             ? 0
             : -1;
}

/* An "on" that timed out may still reach the device: the doubt it leaves
 * (its command, when it began) is what the journal keeps, and a restarted
 * table given it back refuses the interlock partner just as long. */
static void test_doubt_kept(void)
{
  struct bm_relay_policy pol = POLICY; /* AckTimeout 5, CommandTimeout 10 */
  struct bm_events ev = {0};
  struct bm_command_saved c, c2;
  double ended = 0, ended2 = 0;
  bm_relay_table_t *t, *t2;

  pol.retries = 0;
  t = fan_and_heater(&pol, &ev);
  ok(!bm_relay_table_doubt_of(t, 0, 1, &c, &ended), "doubt: none at first");
  bm_relay_table_request(t, 0, 1, "fan on", false, 2, NULL, 0);
  bm_relay_table_tick(t, 2, &ev);
  is_int(ev.n == 1 && ev.ev[0].kind == BM_EV_PUBLISH, 1,
         "doubt: the fan's on is published");
  char corr[BM_MSG_ID_SIZE];
  snprintf(corr, sizeof(corr), "%s", ev.ev[0].corr);
  ok(!bm_relay_table_doubt_of(t, 0, 3, &c, &ended),
     "doubt: none while the command is pending");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 7, &ev); /* no commandResponse in 5 s */
  ok(bm_relay_table_doubt_of(t, 0, 7, &c, &ended),
     "doubt: the timed-out on leaves a doubt");
  ok(strcmp(c.corr, corr) == 0 && c.status == 1 && c.attempt == 1 &&
         c.published_at == 2 && ended == 7 && strcmp(c.origin, "fan on") == 0,
     "doubt: it holds the command (%s, status %d, attempt %d, published "
     "%g, origin \"%s\"), ended at %g",
     c.corr, c.status, c.attempt, c.published_at, c.origin, ended);
  is_int(heater_on(t, 8, &ev), 0, "doubt: the heater is refused at 8");
  ok(!bm_relay_table_doubt_of(t, 0, 17, &c2, &ended2),
     "doubt: over at 7 + CommandTimeout 10");

  /* A restarted table, given the doubt back at 9 (the journal's times on
   * its clock): refuses the heater until 17, then lets it on. */
  struct bm_events ev2 = {0};
  t2 = fan_and_heater(&pol, &ev2);
  is_int(bm_relay_table_doubt(t2, 0, &c, ended, 9), 1,
         "doubt: restored after a restart");
  ok(bm_relay_table_doubt_of(t2, 0, 9, &c2, &ended2) &&
         strcmp(c2.corr, corr) == 0 && ended2 == 7 &&
         strcmp(c2.origin, "fan on") == 0,
     "doubt: the restored table holds the same command and end");
  is_int(heater_on(t2, 10, &ev2), 0, "doubt: restored, the heater is refused");
  is_int(heater_on(t2, 16.9, &ev2), 0, "doubt: ... still at 16.9");
  is_int(heater_on(t2, 17.1, &ev2), 1, "doubt: ... and goes on at 17.1");
  bm_relay_table_free(t2);

  /* Nothing to restore: a doubt over by now, or about an off. */
  t2 = fan_and_heater(&pol, &ev2);
  is_int(bm_relay_table_doubt(t2, 0, &c, ended, 17.5), 0,
         "doubt: one over by now is accepted");
  ok(!bm_relay_table_doubt_of(t2, 0, 17.5, &c2, &ended2), "doubt: ... and ignored");
  c.status = 0;
  is_int(bm_relay_table_doubt(t2, 0, &c, ended, 9), 0,
         "doubt: an off is ignored");
  ok(!bm_relay_table_doubt_of(t2, 0, 9, &c2, &ended2),
     "doubt: an off leaves none");
  is_int(heater_on(t2, 9, &ev2), 1, "doubt: ... the heater goes on");
  bm_relay_table_free(t2);
  bm_events_release(&ev2);
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Superseded: the doubt keeps the old command's origin, and ends when the
   * later command is confirmed. */
  t = fan_and_heater(&pol, &ev);
  bm_relay_table_request(t, 0, 1, "fan on", false, 2, NULL, 0);
  bm_relay_table_tick(t, 2, &ev);
  bm_relay_table_request(t, 0, 0, "fan off", false, 3, NULL, 0);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 3, &ev);
  ok(bm_relay_table_doubt_of(t, 0, 3, &c, &ended) && ended == 3 &&
         strcmp(c.origin, "fan on") == 0 && c.status == 1,
     "doubt: a superseded on leaves one, with its own origin (\"%s\")",
     c.origin);
  struct bm_notification n = confirm(ev.n ? ev.ev[0].corr : "", 0);
  bm_relay_table_on_notification(t, &n, 4, &ev);
  ok(!bm_relay_table_doubt_of(t, 0, 4, &c, &ended),
     "doubt: the later command's confirmation ends it");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Refusals are reported once a minute per kind: a budget refusal right
 * after an interlock one is reported too. */
static void test_refusal_kinds(void)
{
  struct bm_relay_policy pol = POLICY;
  bm_relay_table_t *t;
  struct bm_events ev = {0}, more = {0};
  int ids[2] = {0, 1};
  size_t ends = 0;
  struct bm_notification n = confirm(NULL, 1);

  pol.max_per_minute = 1;
  t = bm_relay_table_new(&pol, "0123456789abcdef");
  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_add(t, "heater", 102, 1);
  bm_relay_table_interlock(t, ids, 2);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  bm_relay_table_on_notification(t, &n, 0, &ev); /* fan on */
  n = confirm(NULL, 0);
  n.state.resource_id = 102;
  n.state.output = 1;
  bm_relay_table_on_notification(t, &n, 0, &ev); /* heater off */
  bm_events_clear(&ev);
  bm_relay_table_request(t, 1, 1, "heater on", false, 1, NULL, 0);
  bm_relay_table_tick(t, 1, &ev); /* refused: interlocked with the fan */
  n = confirm(NULL, 0);
  bm_relay_table_on_notification(t, &n, 2, &more); /* the fan goes off */
  bm_relay_table_request(t, 1, 1, "heater on", false, 3, NULL, 0);
  bm_relay_table_tick(t, 3, &ev); /* published: the budget's one command */
  for (size_t i = 0; i < ev.n; i++)
    if (ev.ev[i].kind == BM_EV_PUBLISH) {
      struct bm_notification c = confirm(ev.ev[i].corr, 1);
      c.state.resource_id = 102;
      c.state.output = 1;
      bm_relay_table_on_notification(t, &c, 3, &more);
    }
  bm_relay_table_request(t, 1, 0, "heater off", false, 4, NULL, 0);
  bm_relay_table_tick(t, 4, &ev); /* refused: the budget is spent */
  for (size_t i = 0; i < ev.n; i++)
    ends += ev.ev[i].kind == BM_EV_END && ev.ev[i].relay == 1 &&
            ev.ev[i].outcome == BM_OP_REFUSED;
  is_int((int)ends, 2, "refusal kinds: the interlock's and, 3 s later, the "
                       "budget's refusal are both reported");
  bm_events_release(&ev);
  bm_events_release(&more);
  bm_relay_table_free(t);
}

/* Random requests to two interlocked relays: never both on. */
static void test_interlock_property(unsigned seed)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_events ev = {0};
  int both = 0, ids[2] = {0, 1};

  srand(seed);
  bm_relay_table_add(t, "fan", 101, 4);
  bm_relay_table_add(t, "heater", 102, 1);
  bm_relay_table_interlock(t, ids, 2);
  bm_relay_table_set_connected(t, true, true, 0, &ev);
  for (int step = 1; step < 5000; step++) {
    int relay = rand() % 2;
    struct bm_relay_view a, b;
    bm_relay_table_request(t, relay, rand() % 2, "p", false, step, NULL, 0);
    bm_events_clear(&ev);
    bm_relay_table_tick(t, step, &ev);
    for (size_t i = 0; i < ev.n; i++) {
      if (ev.ev[i].kind != BM_EV_PUBLISH || rand() % 4 == 0)
        continue; /* some commands are never confirmed */
      struct bm_notification n = confirm(ev.ev[i].corr, ev.ev[i].status);
      n.state.resource_id = ev.ev[i].relay == 0 ? 101 : 102;
      n.state.output = ev.ev[i].relay == 0 ? 4 : 1;
      struct bm_events more = {0};
      bm_relay_table_on_notification(t, &n, step, &more);
      bm_events_release(&more);
    }
    bm_relay_table_view(t, 0, &a);
    bm_relay_table_view(t, 1, &b);
    both += a.confirmed == 1 && b.confirmed == 1;
  }
  is_int(both, 0, "seed %u: interlocked relays never both on", seed);
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Flips relay 0 (101/4) to alternate states at the given times. */
static void flips(bm_relay_table_t *t, const double *at, int n, int *status)
{
  struct bm_events ev = {0};
  for (int i = 0; i < n; i++) {
    *status = !*status;
    struct bm_notification m = confirm(NULL, *status);
    bm_relay_table_on_notification(t, &m, at[i], &ev);
  }
  bm_events_release(&ev);
}

static bool saved_is(const struct bm_relay_saved *s, const double *want,
                     int n)
{
  if (s->n_switches != n)
    return false;
  for (int i = 0; i < n; i++)
    if (s->switches[i] != want[i])
      return false;
  return true;
}

/* Change times are kept as far as a MaxSwitchesPerHour needs them: the
 * last one for every relay, a ring for those a budget drives. */
static void test_switch_history(void)
{
  bm_relay_table_t *t = bm_relay_table_new(&POLICY, "0123456789abcdef");
  bm_relay_table_t *u = bm_relay_table_new(&POLICY, "0123456789abcdef");
  struct bm_relay_limits lim = {0, 0, 3};
  struct bm_relay_saved s;
  struct bm_events ev = {0};
  double at[100];
  int status = 0;
  char why[160];

  for (int i = 0; i < 100; i++)
    at[i] = 10.0 * (i + 1);
  bm_relay_table_add(t, "fan", 101, 4);
  flips(t, at, 100, &status);
  bm_relay_table_save(t, 0, &s);
  ok(saved_is(&s, (double[]){1000}, 1),
     "a relay no budget drives keeps its last change only (%d kept)",
     s.n_switches);

  is_int(bm_relay_table_keep_switches(t, 0, 3), 0, "keep 3");
  bm_relay_table_save(t, 0, &s);
  ok(saved_is(&s, (double[]){1000}, 1), "growing keeps what was known");
  flips(t, at, 2, &status); /* 10, 20: times may go back in a test */
  bm_relay_table_save(t, 0, &s);
  ok(saved_is(&s, (double[]){1000, 10, 20}, 3), "then fills the ring");
  flips(t, at + 2, 3, &status); /* 30, 40, 50 */
  bm_relay_table_save(t, 0, &s);
  ok(saved_is(&s, (double[]){30, 40, 50}, 3), "the 3 newest, oldest first");
  is_int(bm_relay_table_keep_switches(t, 0, 2), 0, "keeping fewer is a no-op");
  is_int(bm_relay_table_keep_switches(t, 0, 5), 0, "keep 5");
  flips(t, at + 5, 1, &status); /* 60 */
  bm_relay_table_save(t, 0, &s);
  ok(saved_is(&s, (double[]){30, 40, 50, 60}, 4), "grown in order");
  is_int(bm_relay_table_keep_switches(t, 0, 1000), 0, "keep more than the most");
  flips(t, at + 6, 94, &status); /* 70 .. 1000 */
  bm_relay_table_save(t, 0, &s);
  is_int(s.n_switches, BM_RELAY_SWITCHES, "at most BM_RELAY_SWITCHES kept");
  ok(s.switches[0] == at[100 - BM_RELAY_SWITCHES] && s.switches[63] == 1000,
     "the newest of them");

  /* A restart: the journal's 64 times into a relay that keeps 3. */
  bm_relay_table_add(u, "fan", 101, 4);
  bm_relay_table_keep_switches(u, 0, 3);
  bm_relay_table_load(u, 0, &s);
  bm_relay_table_save(u, 0, &s);
  ok(saved_is(&s, (double[]){980, 990, 1000}, 3), "loaded: the 3 newest");
  bm_relay_table_set_connected(u, true, true, 1000, &ev);
  is_int(bm_relay_table_request_limited(u, 0, !s.confirmed, "rule", &lim,
                                        1100, why, sizeof(why)),
         BM_REQ_HELD, "and the budget holds after the restart (%s)", why);
  bm_events_release(&ev);
  bm_relay_table_free(t);
  bm_relay_table_free(u);
}

int main(void)
{
  test_hysteresis();
  test_check();
  test_stale();
  test_refused();
  test_matches();
  test_index();
  test_min_times();
  test_hold_ends();
  test_hold_rechecked();
  test_interlock_superseded();
  test_doubt_kept();
  test_refusal_kinds();
  test_budget();
  test_switch_history();
  for (unsigned seed = 1; seed <= 5; seed++)
    test_property(seed);
  for (unsigned seed = 1; seed <= 5; seed++)
    test_interlock_property(seed);
  return done_testing();
}
