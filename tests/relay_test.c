/*
 * relay_test.c - unit tests of the relay table (src/relay.h): desired,
 * confirmed and pending state, correlation of commands with responses and
 * notifications, timeouts, retries, contradictions, supersession,
 * reconnects, unknown answers, the ACK / APPLIED / DRIFT events, and the
 * persistence API (save, load, pending_of, resume, abort, sequences).
 *
 * The table is pure logic with an injected clock, so every test drives it
 * with hand-built bm_response / bm_notification values and explicit times.
 * Tests state the exact sequence of events they expect (kinds()).  The
 * last part is a property test: a seeded PRNG drives thousands of random
 * operations -- including aborts and restarts into a new table from the
 * saved state -- and a small model of the header's rules checks the table
 * after every step.
 */
#include "relay.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

/* Prefixes of the plugin's own form, "<16 lowercase hex digits>": ids made
 * with them are recognised by their form (bm_relay_corr_seq), also across a
 * restart.  Most tests use the short prefix "t", whose ids relay.c
 * recognises through the relay's memory of its pending and recent commands
 * only (see test_old_own_ids). */
#define HEX_A "0123456789abcdef"
#define HEX_B "fedcba9876543210"

static const struct bm_relay_policy POLICY = {
    .ack_timeout = 5, .command_timeout = 10, .retries = 2, .retry_backoff = 1};

/* ---- helpers ----------------------------------------------------------- */

static bm_relay_table_t *table_new(const struct bm_relay_policy *p,
                                   const char *prefix)
{
  bm_relay_table_t *t = bm_relay_table_new(p, prefix);
  if (!t) {
    printf("Bail out! bm_relay_table_new failed\n");
    exit(1);
  }
  return t;
}

static struct bm_response response(const char *corr, enum bm_result res,
                                   const char *reason)
{
  struct bm_response r;
  memset(&r, 0, sizeof(r));
  snprintf(r.correlation_id, sizeof(r.correlation_id), "%s", corr);
  r.result = res;
  snprintf(r.reason, sizeof(r.reason), "%s", reason ? reason : "");
  return r;
}

/* An extDOStateChanged notification; corr NULL for one without an id. */
static struct bm_notification notification(const char *corr, int64_t rid,
                                           int output, int status)
{
  struct bm_notification n;
  memset(&n, 0, sizeof(n));
  snprintf(n.app_id, sizeof(n.app_id), "flexyWattApp.1");
  n.has_correlation_id = corr != NULL;
  snprintf(n.correlation_id, sizeof(n.correlation_id), "%s", corr ? corr : "");
  snprintf(n.command, sizeof(n.command), "setExtDO");
  snprintf(n.notification_type, sizeof(n.notification_type),
           "extDOStateChanged");
  n.has_state = true;
  n.state.resource_id = rid;
  n.state.output = output;
  n.state.status = status;
  return n;
}

static size_t count_kind(const struct bm_events *e, enum bm_event_kind k)
{
  size_t c = 0;
  for (size_t i = 0; i < e->n; i++)
    c += e->ev[i].kind == k;
  return c;
}

/* The first event of kind k, or a static zeroed event (so tests can read
 * fields of a missing event and fail on the values, not crash). */
static const struct bm_event *first_kind(const struct bm_events *e,
                                         enum bm_event_kind k)
{
  static struct bm_event none;
  for (size_t i = 0; i < e->n; i++)
    if (e->ev[i].kind == k)
      return &e->ev[i];
  memset(&none, 0, sizeof(none));
  none.kind = (enum bm_event_kind)-1;
  none.relay = -1;
  return &none;
}

/* Event i of the list, or a static zeroed one past the end (as first_kind). */
static const struct bm_event *nth(const struct bm_events *e, size_t i)
{
  static struct bm_event none;
  if (i < e->n)
    return &e->ev[i];
  memset(&none, 0, sizeof(none));
  none.kind = (enum bm_event_kind)-1;
  none.relay = -1;
  return &none;
}

static const char *kind_name(enum bm_event_kind k)
{
  switch (k) {
  case BM_EV_PUBLISH:
    return "PUBLISH";
  case BM_EV_STATE:
    return "STATE";
  case BM_EV_END:
    return "END";
  case BM_EV_ACK:
    return "ACK";
  case BM_EV_APPLIED:
    return "APPLIED";
  case BM_EV_DRIFT:
    return "DRIFT";
  }
  return "?";
}

/* The kinds of the listed events in order, "APPLIED,STATE" ("" for none), so
 * a test states the exact sequence it expects.  A static buffer, valid until
 * the next call. */
static const char *kinds(const struct bm_events *e)
{
  static char buf[512];
  size_t len = 0;

  buf[0] = '\0';
  for (size_t i = 0; i < e->n && len < sizeof(buf) - 16; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s",
                            i ? "," : "", kind_name(e->ev[i].kind));
  if (e->lost)
    snprintf(buf + len, sizeof(buf) - len, ",(%zu lost)", e->lost);
  return buf;
}

/* Whether e is the ACK of command corr (sequence seq) on relay with the
 * gateway's result and reason; says what it got when not. */
static bool ack_is(const struct bm_event *e, int relay, const char *corr,
                   uint64_t seq, enum bm_result res, const char *reason)
{
  if (e->kind == BM_EV_ACK && e->relay == relay &&
      strcmp(e->corr, corr) == 0 && e->seq == seq && e->result == res &&
      strcmp(e->reason, reason) == 0)
    return true;
  diag("got %s relay %d corr \"%s\" seq %llu result %d reason \"%s\"",
       kind_name(e->kind), e->relay, e->corr, (unsigned long long)e->seq,
       (int)e->result, e->reason);
  return false;
}

/* Whether e is the APPLIED of a notification (corr "" for none) that set
 * relay from previous to status; seq is our command's sequence, 0 none. */
static bool applied_is(const struct bm_event *e, int relay, const char *corr,
                       uint64_t seq, int status, int previous)
{
  if (e->kind == BM_EV_APPLIED && e->relay == relay &&
      strcmp(e->corr, corr) == 0 && e->seq == seq && e->status == status &&
      e->previous == previous)
    return true;
  diag("got %s relay %d corr \"%s\" seq %llu status %d previous %d",
       kind_name(e->kind), e->relay, e->corr, (unsigned long long)e->seq,
       e->status, e->previous);
  return false;
}

/* Whether e is the DRIFT of relay from previous to status, reported by a
 * notification with corr ("" for none). */
static bool drift_is(const struct bm_event *e, int relay, const char *corr,
                     int status, int previous)
{
  if (e->kind == BM_EV_DRIFT && e->relay == relay &&
      strcmp(e->corr, corr) == 0 && e->status == status &&
      e->previous == previous)
    return true;
  diag("got %s relay %d corr \"%s\" status %d previous %d",
       kind_name(e->kind), e->relay, e->corr, e->status, e->previous);
  return false;
}

static uint64_t op_count(bm_relay_table_t *t, enum bm_op op)
{
  struct bm_relay_stats s;
  bm_relay_table_stats(t, &s, false);
  return s.ops[op];
}

static struct bm_relay_view view_of(bm_relay_table_t *t, int relay)
{
  struct bm_relay_view v;
  bm_relay_table_view(t, relay, &v);
  return v;
}

/* Connects, sets relay's desired status and ticks: the command it publishes
 * (its corr is copied to corr). */
static void command(bm_relay_table_t *t, int relay, int status, double now,
                    char *corr, struct bm_events *ev)
{
  bm_events_clear(ev);
  bm_relay_table_set_connected(t, true, true, now, ev);
  bm_relay_table_set_desired(t, relay, status, "test", now);
  bm_relay_table_tick(t, now, ev);
  snprintf(corr, BM_MSG_ID_SIZE, "%s", first_kind(ev, BM_EV_PUBLISH)->corr);
}

/* ---- tests: table ------------------------------------------------------ */

static void test_add_find_lookup(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_relay_view v;
  char name[80];

  is_int(bm_relay_table_size(t), 0, "new table is empty");
  is_int(bm_relay_table_find(t, "pump"), -1, "find in an empty table");
  is_int(bm_relay_table_lookup(t, 101, 4), -1, "lookup in an empty table");
  is_int(bm_relay_table_add(t, "pump", 101, 4), 0, "first relay is index 0");
  is_int(bm_relay_table_add(t, "fan", 101, 5), 1, "second relay is index 1");
  is_int(bm_relay_table_add(t, "heater", 202, 4), 2, "third relay is index 2");
  is_int(bm_relay_table_size(t), 3, "size 3");
  is_int(bm_relay_table_find(t, "pump"), 0, "find pump");
  is_int(bm_relay_table_find(t, "fan"), 1, "find fan");
  is_int(bm_relay_table_find(t, "heater"), 2, "find heater");
  is_int(bm_relay_table_find(t, "Pump"), -1, "find is case-sensitive");
  is_int(bm_relay_table_find(t, ""), -1, "find of an empty name");
  is_int(bm_relay_table_lookup(t, 101, 4), 0, "lookup (101,4)");
  is_int(bm_relay_table_lookup(t, 101, 5), 1, "lookup (101,5)");
  is_int(bm_relay_table_lookup(t, 202, 4), 2, "lookup (202,4)");
  is_int(bm_relay_table_lookup(t, 202, 5), -1, "lookup of an absent output");
  is_int(bm_relay_table_lookup(t, 4, 101), -1, "lookup with swapped fields");

  is_int(bm_relay_table_add(t, "pump", 303, 1), -1, "duplicate name refused");
  is_int(bm_relay_table_add(t, "other", 101, 4), -1,
         "duplicate (resourceId, output) refused");
  is_int(bm_relay_table_size(t), 3, "refusals add nothing");
  is_int(bm_relay_table_find(t, "other"), -1, "refused name is not found");

  memset(name, 'n', 63);
  name[63] = '\0';
  is_int(bm_relay_table_add(t, name, 400, 1), 3, "a 63-byte name is accepted");
  is_int(bm_relay_table_find(t, name), 3, "and found");
  memset(name, 'm', 64);
  name[64] = '\0';
  is_int(bm_relay_table_add(t, name, 401, 1), -1, "a 64-byte name is refused");

  bm_relay_table_view(t, 1, &v);
  is_str(v.name, "fan", "view name");
  ok(v.resource_id == 101 && v.output == 5, "view address");
  ok(v.confirmed == -1 && v.desired == -1 && !v.stopped && v.pending == 0,
     "a new relay: confirmed unknown, no desired state, idle");

  /* Growth: the names handed out by view stay valid. */
  const char *pump_name = (bm_relay_table_view(t, 0, &v), v.name);
  bool all = true;
  for (int i = 0; i < 200; i++) {
    snprintf(name, sizeof(name), "r%d", i);
    if (bm_relay_table_add(t, name, 1000 + i, i % 7) != 4 + i)
      all = false;
  }
  ok(all, "200 more relays get consecutive indexes");
  all = true;
  for (int i = 0; i < 200; i++) {
    snprintf(name, sizeof(name), "r%d", i);
    if (bm_relay_table_find(t, name) != 4 + i ||
        bm_relay_table_lookup(t, 1000 + i, i % 7) != 4 + i)
      all = false;
  }
  ok(all, "all of them are found by name and by address");
  is_str(pump_name, "pump", "a view's name stays valid while the table grows");
  bm_relay_table_free(t);
  bm_relay_table_free(NULL);
  ok(true, "free(NULL) is a no-op");
}

/* (resourceId, output) pairs are packed into idmap keys; distinct pairs must
 * stay distinct relays even when their packed keys collide. */
static void test_address_collisions(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  const int64_t big = 4294901761LL; /* 2^32 - 2^16 + 1 */

  is_int(bm_relay_table_add(t, "a", 0, 1), 0, "relay at (0, 1)");
  is_int(bm_relay_table_add(t, "b", big, 0), 1,
         "relay at (4294901761, 0) is a different address");
  is_int(bm_relay_table_lookup(t, 0, 1), 0,
         "(0, 1) is still found after adding (4294901761, 0)");
  is_int(bm_relay_table_lookup(t, big, 0), 1, "(4294901761, 0) is found");

  is_int(bm_relay_table_add(t, "c", 0, 0), 2, "relay at (0, 0)");
  is_int(bm_relay_table_add(t, "d", (int64_t)1 << 48, 1), 3,
         "relay at (2^48, 1) is a different address");
  is_int(bm_relay_table_lookup(t, 0, 0), 2, "(0, 0) is still found");
  is_int(bm_relay_table_lookup(t, (int64_t)1 << 48, 1), 3, "(2^48, 1) found");

  /* What the collision costs in practice: the gateway's notification for
   * relay "a" is not recognised. */
  struct bm_notification n = notification(NULL, 0, 1, 1);
  is_int(bm_relay_table_on_notification(t, &n, 1, &ev), BM_APPLY_OK,
         "notification for (0, 1) applies to relay a");
  is_int(view_of(t, 0).confirmed, 1, "relay a confirmed 1");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_names_of_ops(void)
{
  static const char *want[BM_OP_COUNT] = {
      "published", "sent",    "confirmed", "not_send",  "failed",
      "send_no_ack", "unauthorized", "timeout", "gave_up", "duplicate",
      "malformed", "unsolicited", "contradicted", "unknown", "drift",
      "refused"};
  bool all = true;
  for (int i = 0; i < BM_OP_COUNT; i++)
    if (!bm_op_name((enum bm_op)i) ||
        strcmp(bm_op_name((enum bm_op)i), want[i]) != 0)
      all = false;
  ok(all, "bm_op_name names every op");
  ok(bm_op_name(BM_OP_COUNT) == NULL, "bm_op_name of BM_OP_COUNT is NULL");
  ok(bm_op_name((enum bm_op)-1) == NULL, "bm_op_name of -1 is NULL");

  bm_relay_table_t *t = table_new(&POLICY, "t");
  bm_relay_table_count_op(t, BM_OP_MALFORMED);
  bm_relay_table_count_op(t, BM_OP_MALFORMED);
  is_int(op_count(t, BM_OP_MALFORMED), 2, "count_op counts");
  is_int(op_count(t, BM_OP_PUBLISHED), 0, "count_op counts only its op");
  bm_relay_table_free(t);
}

static void test_idle(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  bool quiet = true;

  bm_relay_table_add(t, "a", 1, 1);
  bm_relay_table_add(t, "b", 1, 2);
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "idle table: next_deadline is HUGE_VAL");
  for (int i = 0; i < 100; i++) {
    bm_relay_table_tick(t, i * 37.5, &ev);
    if (ev.n)
      quiet = false;
  }
  ok(quiet, "ticks of an idle, disconnected table produce no events");
  bm_relay_table_set_connected(t, true, false, 5000, &ev);
  is_int(ev.n, 0, "connecting an idle table produces no events");
  for (int i = 0; i < 100; i++)
    bm_relay_table_tick(t, 5000 + i * 37.5, &ev);
  is_int(ev.n, 0, "ticks of an idle, connected table produce no events");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL, "still HUGE_VAL");
  is_int(op_count(t, BM_OP_PUBLISHED), 0, "nothing published");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: the normal command ------------------------------------------ */

static void test_disconnected_then_connect(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "gw1");
  struct bm_events ev = {0};
  struct bm_relay_view v;

  bm_relay_table_add(t, "pump", 101, 4);
  ok(bm_relay_table_set_desired(t, 0, 1, "trigger overheat", 10),
     "set_desired on a new relay may publish");
  bm_relay_table_tick(t, 10, &ev);
  is_int(ev.n, 0, "disconnected: a tick publishes nothing");
  bm_relay_table_tick(t, 100, &ev);
  is_int(ev.n, 0, "disconnected: later ticks publish nothing either");
  is_int(op_count(t, BM_OP_PUBLISHED), 0, "nothing counted as published");
  v = view_of(t, 0);
  ok(v.desired == 1 && v.pending == 0 && v.confirmed == -1,
     "desired 1 recorded, nothing pending");

  bm_relay_table_set_connected(t, true, true, 200, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "set_connected itself publishes no new command");
  bm_relay_table_tick(t, 200, &ev);
  is_int(ev.n, 1, "connected: the tick produces one event");
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  is_int(e->kind, BM_EV_PUBLISH, "it is a PUBLISH");
  is_int(e->relay, 0, "for relay 0");
  is_int(e->status, 1, "with status 1");
  is_str(e->corr, "gw1-1", "correlationId <prefix>-<seq>");
  is_int(e->seq, 1, "PUBLISH carries the sequence 1");
  is_int(e->attempt, 1, "attempt 1");
  ok(!e->republish, "not a republish");
  is_str(e->origin, "trigger overheat", "origin carried");
  is_int(op_count(t, BM_OP_PUBLISHED), 1, "published counted");
  v = view_of(t, 0);
  is_int(v.pending, 1, "one command pending");
  ok(bm_relay_table_next_deadline(t) == 205,
     "next_deadline is the ack deadline (200 + 5)");

  bm_events_clear(&ev);
  bm_relay_table_tick(t, 201, &ev);
  is_int(ev.n, 0, "a second tick does not publish again");
  ok(!bm_relay_table_set_desired(t, 0, 1, "again", 201),
     "the same desired state again: nothing to publish");
  bm_relay_table_tick(t, 201, &ev);
  is_int(ev.n, 0, "and the tick agrees");

  /* A second relay gets the next sequence number. */
  bm_relay_table_add(t, "fan", 101, 5);
  bm_relay_table_set_desired(t, 1, 0, NULL, 202);
  bm_relay_table_tick(t, 202, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "gw1-2",
         "the sequence is per table");
  is_int(first_kind(&ev, BM_EV_PUBLISH)->seq, 2, "PUBLISH sequence 2");
  is_str(first_kind(&ev, BM_EV_PUBLISH)->origin, "",
         "no origin: empty origin");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_confirm_flow(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  struct bm_relay_stats s;
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  is_str(corr, "t-1", "command t-1 published at 100");

  struct bm_response r = response(corr, BM_RESULT_SENT, "Command Queued");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 100.5, &ev), BM_APPLY_OK,
         "response sent applies");
  is_str(kinds(&ev), "ACK", "response sent: one ACK and nothing else");
  ok(ack_is(nth(&ev, 0), 0, "t-1", 1, BM_RESULT_SENT, "Command Queued"),
     "ACK: relay 0, t-1, sequence 1, sent, the gateway's reason");
  is_int(view_of(t, 0).pending, 1, "still pending after the response");
  is_int(op_count(t, BM_OP_SENT), 1, "sent counted");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 100.7, &ev), BM_APPLY_DUPLICATE,
         "the same response again is a duplicate");
  is_int(op_count(t, BM_OP_DUPLICATE), 1, "duplicate counted");
  is_int(op_count(t, BM_OP_SENT), 1, "sent not counted twice");
  is_int(ev.n, 0, "duplicate response: no event");

  struct bm_notification n = notification(corr, 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 102, &ev), BM_APPLY_OK,
         "notification applies");
  is_int(count_kind(&ev, BM_EV_STATE), 1, "one STATE event");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, then STATE");
  ok(applied_is(nth(&ev, 0), 0, "t-1", 1, 1, -1),
     "APPLIED: relay 0, t-1, sequence 1, -1 -> 1");
  const struct bm_event *e = first_kind(&ev, BM_EV_STATE);
  ok(e->kind == BM_EV_STATE && e->relay == 0 && e->status == 1 &&
         e->previous == -1,
     "STATE event: relay 0, -1 -> 1");
  is_str(e->corr, "t-1", "STATE event carries the correlationId");
  struct bm_relay_view v = view_of(t, 0);
  ok(v.confirmed == 1 && v.desired == 1 && v.pending == 0 && !v.stopped,
     "confirmed 1, nothing pending");

  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 103, &ev), BM_APPLY_DUPLICATE,
         "the same notification again is a duplicate");
  is_int(ev.n, 0, "duplicate notification: no event");
  is_int(op_count(t, BM_OP_DUPLICATE), 2, "second duplicate counted");
  is_int(bm_relay_table_on_response(t, &r, 103, &ev), BM_APPLY_DUPLICATE,
         "a response redelivered after the confirmation is a duplicate");
  is_int(op_count(t, BM_OP_DUPLICATE), 3, "third duplicate counted");

  bm_relay_table_stats(t, &s, true);
  is_int(s.ops[BM_OP_PUBLISHED], 1, "stats: published 1");
  is_int(s.ops[BM_OP_SENT], 1, "stats: sent 1");
  is_int(s.ops[BM_OP_CONFIRMED], 1, "stats: confirmed 1");
  is_int(s.ops[BM_OP_TIMEOUT], 0, "stats: no timeout");
  ok(s.ack_n == 1 && s.ack_sum == 0.5, "ack latency: 1 sample of 0.5 s");
  ok(s.confirm_n == 1 && s.confirm_sum == 2.0,
     "confirm latency: 1 sample of 2 s");
  bm_relay_table_stats(t, &s, false);
  ok(s.ack_n == 0 && s.ack_sum == 0 && s.confirm_n == 0 &&
         s.confirm_sum == 0,
     "reset_latency zeroed the sums");
  is_int(s.ops[BM_OP_CONFIRMED], 1, "but not the counters");

  /* Nothing is left to time: no wake-up is needed. */
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "after the confirmation next_deadline is HUGE_VAL (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 104, &ev);
  bm_relay_table_tick(t, 1000, &ev);
  is_int(ev.n, 0, "confirmed relay: ticks do nothing");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "after a tick past the old deadlines next_deadline is HUGE_VAL");
  is_int(op_count(t, BM_OP_TIMEOUT), 0, "no timeout after a confirmation");

  /* Desired equal to confirmed: no command. */
  ok(!bm_relay_table_set_desired(t, 0, 1, "again", 1001),
     "desired already confirmed: set_desired returns false");
  bm_relay_table_tick(t, 1001, &ev);
  is_int(ev.n, 0, "and no command goes out");

  /* A second command: confirmation without a "sent" first, latency sums add
   * up over two samples. */
  ok(bm_relay_table_set_desired(t, 0, 0, "off", 2000),
     "a different desired state may publish");
  bm_relay_table_tick(t, 2000, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-2", "t-2 published");
  is_int(first_kind(&ev, BM_EV_PUBLISH)->status, 0, "with status 0");
  is_int(first_kind(&ev, BM_EV_PUBLISH)->seq, 2, "sequence 2");
  r = response("t-2", BM_RESULT_SENT, "");
  bm_events_clear(&ev);
  bm_relay_table_on_response(t, &r, 2001.25, &ev);
  ok(ev.n == 1 && ack_is(nth(&ev, 0), 0, "t-2", 2, BM_RESULT_SENT, ""),
     "the only event: ACK of t-2, sequence 2, empty reason");
  n = notification("t-2", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 2004, &ev);
  is_str(kinds(&ev), "APPLIED,STATE", "t-2 confirmed: APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "t-2", 2, 0, 1),
     "APPLIED: t-2, sequence 2, 1 -> 0");
  e = first_kind(&ev, BM_EV_STATE);
  ok(e->status == 0 && e->previous == 1, "STATE 1 -> 0");
  bm_relay_table_stats(t, &s, false);
  ok(s.ack_n == 1 && s.ack_sum == 1.25, "ack latency after reset: 1.25 s");
  ok(s.confirm_n == 1 && s.confirm_sum == 4.0, "confirm latency: 4 s");
  is_int(s.ops[BM_OP_CONFIRMED], 2, "confirmed 2");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A known confirmed state equal to the desired one means no command. */
static void test_known_state_no_command(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  struct bm_notification n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 1, &ev);
  is_int(view_of(t, 0).confirmed, 0, "unsolicited notification: state known");
  ok(!bm_relay_table_set_desired(t, 0, 0, "x", 2),
     "desired == confirmed: set_desired returns false");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 2, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0, "desired == confirmed: no command");
  ok(bm_relay_table_set_desired(t, 0, 1, "x", 3), "desired 1 may publish");
  bm_relay_table_tick(t, 3, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 1, "desired 1: one command");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: refusals --------------------------------------------------- */

static void test_non_sent_results(void)
{
  static const struct {
    enum bm_result res;
    const char *name;
    enum bm_op op;
    enum bm_severity sev;
  } cases[] = {
      {BM_RESULT_NOT_SEND, "not_send", BM_OP_NOT_SEND, BM_SEV_FAILURE},
      {BM_RESULT_FAILED, "failed", BM_OP_FAILED, BM_SEV_FAILURE},
      {BM_RESULT_UNAUTHORIZED, "unauthorized", BM_OP_UNAUTHORIZED,
       BM_SEV_FAILURE},
      {BM_RESULT_SEND_NO_ACK, "send_no_ack", BM_OP_SEND_NO_ACK,
       BM_SEV_WARNING},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    bm_relay_table_t *t = table_new(&POLICY, "t");
    struct bm_events ev = {0};
    char corr[BM_MSG_ID_SIZE];
    const char *nm = cases[i].name;

    bm_relay_table_add(t, "pump", 101, 4);
    command(t, 0, 1, 100, corr, &ev);
    struct bm_response r =
        response(corr, cases[i].res, "The user does not have access rights");
    bm_events_clear(&ev);
    is_int(bm_relay_table_on_response(t, &r, 101, &ev), BM_APPLY_OK,
           "%s: response applies", nm);
    is_int(count_kind(&ev, BM_EV_END), 1, "%s: one END event", nm);
    is_str(kinds(&ev), "ACK,END", "%s: the ACK, then the END", nm);
    ok(ack_is(nth(&ev, 0), 0, "t-1", 1, cases[i].res,
              "The user does not have access rights"),
       "%s: ACK of t-1, sequence 1, the result and the gateway's reason", nm);
    const struct bm_event *e = first_kind(&ev, BM_EV_END);
    is_int(e->kind, BM_EV_END, "%s: an END event", nm);
    is_int(e->outcome, cases[i].op, "%s: outcome", nm);
    is_int(e->severity, cases[i].sev, "%s: severity", nm);
    is_str(e->corr, "t-1", "%s: END carries the correlationId", nm);
    ok(e->status == 1 && e->attempt == 1 && e->relay == 0,
       "%s: END carries relay, status and attempt", nm);
    ok(strstr(e->reason, nm) && strstr(e->reason, "access rights"),
       "%s: reason names the result and the gateway's reason (%s)", nm,
       e->reason);
    is_str(e->origin, "test", "%s: END carries the origin", nm);
    struct bm_relay_view v = view_of(t, 0);
    ok(v.stopped && v.pending == 0 && v.desired == 1 && v.confirmed == -1,
       "%s: relay stopped, nothing pending", nm);
    is_int(op_count(t, cases[i].op), 1, "%s: counted", nm);
    is_int(op_count(t, BM_OP_SENT), 0, "%s: not counted as sent", nm);

    bm_events_clear(&ev);
    bm_relay_table_tick(t, 102, &ev);
    bm_relay_table_tick(t, 500, &ev);
    bm_relay_table_set_connected(t, true, false, 501, &ev);
    bm_relay_table_tick(t, 502, &ev);
    is_int(ev.n, 0, "%s: no retry, not even after a reconnect", nm);
    is_int(op_count(t, BM_OP_PUBLISHED), 1, "%s: published once", nm);
    is_int(bm_relay_table_on_response(t, &r, 503, &ev), BM_APPLY_DUPLICATE,
           "%s: the response again is a duplicate", nm);
    is_int(ev.n, 0, "%s: and ends nothing more", nm);

    ok(bm_relay_table_set_desired(t, 0, 1, "again", 600),
       "%s: the same desired state again clears the stop", nm);
    ok(!view_of(t, 0).stopped, "%s: not stopped any more", nm);
    bm_relay_table_tick(t, 600, &ev);
    e = first_kind(&ev, BM_EV_PUBLISH);
    ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-2") == 0 &&
           e->attempt == 1,
       "%s: a new command t-2, attempt 1", nm);
    bm_events_release(&ev);
    bm_relay_table_free(t);
  }

  /* A reason-less refusal still explains itself. */
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  struct bm_response r = response(corr, BM_RESULT_FAILED, "");
  bm_events_clear(&ev);
  bm_relay_table_on_response(t, &r, 101, &ev);
  ok(strstr(first_kind(&ev, BM_EV_END)->reason, "failed") != NULL,
     "empty reason: END reason still names the result (%s)",
     first_kind(&ev, BM_EV_END)->reason);
  /* The device may have switched anyway: its notification is the truth. */
  struct bm_notification n = notification(corr, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 102, &ev), BM_APPLY_OK,
         "a notification of a refused command still applies");
  is_int(view_of(t, 0).confirmed, 1, "and sets the confirmed state");
  is_str(kinds(&ev), "APPLIED,STATE", "refused, then applied: APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "t-1", 1, 1, -1),
     "APPLIED carries the refused command's sequence 1");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "counted as confirmed");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: timeouts and retries ---------------------------------------- */

static void test_ack_timeout_retries(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t"); /* ack 5, retries 2, bo 1 */
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  const struct bm_event *e;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  ok(bm_relay_table_next_deadline(t) == 105, "deadline 105");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 104.9, &ev);
  is_int(ev.n, 0, "no timeout before the ack deadline");
  bm_relay_table_tick(t, 105, &ev);
  is_int(ev.n, 1, "ack deadline: one event");
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_TIMEOUT && e->severity == BM_SEV_WARNING,
     "END timeout, WARNING");
  ok(strcmp(e->corr, "t-1") == 0 && e->attempt == 1 && e->status == 1,
     "for t-1, attempt 1, status 1");
  ok(strstr(e->reason, "commandResponse") != NULL,
     "reason mentions the missing commandResponse (%s)", e->reason);
  is_int(view_of(t, 0).pending, 0, "nothing pending during the backoff");
  ok(!view_of(t, 0).stopped, "not stopped during the backoff");
  ok(bm_relay_table_next_deadline(t) == 106,
     "next_deadline is the retry time 106 (got %g)",
     bm_relay_table_next_deadline(t));

  /* A notification during the backoff that leaves desired unreached does
   * not cut the backoff short. */
  struct bm_notification n0 = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n0, 105.5, &ev);
  is_str(kinds(&ev), "APPLIED,STATE", "unsolicited 0: APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "", 0, 0, -1),
     "APPLIED without correlationId: corr \"\", sequence 0, -1 -> 0");
  bm_relay_table_tick(t, 105.5, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "a state report during the backoff does not hasten the retry");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105.9, &ev);
  is_int(ev.n, 0, "no retry before the backoff ends");
  bm_relay_table_tick(t, 106, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-2") == 0,
     "retry at 106 with a new correlationId t-2");
  ok(e->attempt == 2 && !e->republish && e->status == 1, "attempt 2");
  ok(bm_relay_table_next_deadline(t) == 111, "deadline 111");

  bm_events_clear(&ev);
  bm_relay_table_tick(t, 111, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_TIMEOUT && strcmp(e->corr, "t-2") == 0 &&
         e->attempt == 2,
     "t-2 times out at 111");
  is_int(count_kind(&ev, BM_EV_END), 1, "no give-up yet");
  ok(bm_relay_table_next_deadline(t) == 113,
     "backoff doubled: retry at 113 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 112.9, &ev);
  is_int(ev.n, 0, "no retry at 112.9");
  bm_relay_table_tick(t, 113, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, "t-3") == 0 && e->attempt == 3, "t-3, attempt 3, at 113");

  bm_events_clear(&ev);
  bm_relay_table_tick(t, 118, &ev);
  is_int(ev.n, 2, "t-3 times out: two events");
  ok(ev.n == 2 && ev.ev[0].kind == BM_EV_END &&
         ev.ev[0].outcome == BM_OP_TIMEOUT && ev.ev[1].kind == BM_EV_END &&
         ev.ev[1].outcome == BM_OP_GAVE_UP,
     "END timeout, then END gave_up");
  if (ev.n == 2) {
    is_int(ev.ev[1].severity, BM_SEV_FAILURE, "gave_up is a FAILURE");
    is_int(ev.ev[1].status, 1, "gave_up carries the desired status");
    ok(ev.ev[1].reason[0] != '\0', "gave_up has a reason (%s)",
       ev.ev[1].reason);
  }
  struct bm_relay_view v = view_of(t, 0);
  ok(v.stopped && v.pending == 0, "relay stopped");
  is_int(op_count(t, BM_OP_TIMEOUT), 3, "3 timeouts counted");
  is_int(op_count(t, BM_OP_GAVE_UP), 1, "1 give-up counted");
  is_int(op_count(t, BM_OP_PUBLISHED), 3, "3 commands published");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "given up: next_deadline HUGE_VAL");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 200, &ev);
  bm_relay_table_tick(t, 10000, &ev);
  is_int(ev.n, 0, "given up: no further command");

  /* A late answer to a timed-out command still confirms the state. */
  struct bm_response r = response("t-1", BM_RESULT_SENT, "late");
  is_int(bm_relay_table_on_response(t, &r, 10001, &ev), BM_APPLY_OK,
         "a late response to a timed-out command is recognised");
  is_str(kinds(&ev), "ACK", "and produces only its ACK");
  ok(ack_is(nth(&ev, 0), 0, "t-1", 1, BM_RESULT_SENT, "late"),
     "ACK of the timed-out t-1, sequence 1");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 10002, &ev), BM_APPLY_DUPLICATE,
         "the late response again is a duplicate");
  is_int(ev.n, 0, "and produces no second ACK");

  ok(bm_relay_table_set_desired(t, 0, 1, "again", 20000),
     "set_desired after the give-up may publish");
  bm_relay_table_tick(t, 20000, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, "t-4") == 0 && e->attempt == 1,
     "a new command t-4, attempt 1, after the give-up");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_backoff_cap_and_zero_retries(void)
{
  struct bm_relay_policy p = {.ack_timeout = 5, .command_timeout = 10,
                              .retries = 3, .retry_backoff = 40};
  bm_relay_table_t *t = table_new(&p, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 0.5, corr, &ev);
  bm_relay_table_tick(t, 5.5, &ev); /* timeout 1 -> retry at 45.5 */
  ok(bm_relay_table_next_deadline(t) == 45.5, "first backoff 40 s");
  bm_relay_table_tick(t, 45.5, &ev);
  bm_relay_table_tick(t, 50.5, &ev); /* timeout 2 -> retry at 110.5 */
  ok(bm_relay_table_next_deadline(t) == 110.5,
     "second backoff 80 s capped at 60 s (got %g)",
     bm_relay_table_next_deadline(t) - 50.5);
  bm_events_release(&ev);
  bm_relay_table_free(t);

  p.retries = 0;
  t = table_new(&p, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 1, corr, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 6, &ev);
  ok(ev.n == 2 && ev.ev[1].outcome == BM_OP_GAVE_UP,
     "retries 0: the first timeout gives up");
  ok(view_of(t, 0).stopped, "retries 0: stopped");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_confirm_timeout(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t"); /* command_timeout 10 */
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  const struct bm_event *e;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  struct bm_response r = response(corr, BM_RESULT_SENT, "Command Queued");
  bm_relay_table_on_response(t, &r, 101, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev);
  bm_relay_table_tick(t, 109.9, &ev);
  is_int(ev.n, 0, "acked: no ack timeout, no confirm timeout before 110");
  ok(bm_relay_table_next_deadline(t) <= 110, "a wake-up is due by 110");
  bm_relay_table_tick(t, 110, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_TIMEOUT && e->severity == BM_SEV_WARNING &&
         strcmp(e->corr, "t-1") == 0,
     "END timeout for t-1 at 110");
  ok(strstr(e->reason, "notification") != NULL,
     "reason mentions the missing notification (%s)", e->reason);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 111, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, "t-2") == 0 && e->attempt == 2, "retry t-2 at 111");
  r = response("t-2", BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 111, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 121, &ev);
  ok(count_kind(&ev, BM_EV_END) == 1, "t-2 times out at 121");
  bm_relay_table_tick(t, 123, &ev);
  r = response("t-3", BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 123, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 133, &ev);
  ok(ev.n == 2 && ev.ev[1].outcome == BM_OP_GAVE_UP,
     "t-3 times out at 133 and the relay gives up");
  is_int(op_count(t, BM_OP_TIMEOUT), 3, "three confirm timeouts");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* command_timeout shorter than ack_timeout: the notification deadline
   * comes first even without a response. */
  struct bm_relay_policy p = {.ack_timeout = 30, .command_timeout = 10,
                              .retries = 0, .retry_backoff = 1};
  t = table_new(&p, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  ok(bm_relay_table_next_deadline(t) == 110, "deadline is min(ack, command)");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 110, &ev);
  ok(count_kind(&ev, BM_EV_END) >= 1 &&
         first_kind(&ev, BM_EV_END)->outcome == BM_OP_TIMEOUT,
     "timed out at the command timeout");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* The late notification of a timed-out command arrives during the backoff:
 * desired is reached, the retry is not issued. */
static void test_retry_cancelled(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_tick(t, 105, &ev); /* ack timeout, retry at 106 */
  struct bm_notification n = notification(corr, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 105.5, &ev), BM_APPLY_OK,
         "late notification of the timed-out command applies");
  is_int(count_kind(&ev, BM_EV_STATE), 1, "STATE event");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "counted as confirmed");
  bm_relay_table_tick(t, 105.5, &ev);
  bm_relay_table_tick(t, 106, &ev);
  bm_relay_table_tick(t, 200, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "no retry once the state is confirmed");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL, "nothing left to time");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Same with an unsolicited notification during the backoff. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_tick(t, 105, &ev);
  n = notification(NULL, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 105.2, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 106, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "no retry after an unsolicited notification reached the state");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* The state is reached while the command is still pending (someone else
   * switched the relay); the command then times out: no retry, no give-up.
   * A later drift is a fresh start with the full retry budget. */
  struct bm_relay_policy p = POLICY;
  p.retries = 1;
  t = table_new(&p, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  n = notification(NULL, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  bm_relay_table_tick(t, 101, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev);
  ok(count_kind(&ev, BM_EV_END) == 1 && !view_of(t, 0).stopped,
     "pending command times out after the state was reached: no give-up");
  bm_relay_table_tick(t, 106, &ev);
  bm_relay_table_tick(t, 150, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0, "and no retry");
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 200, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 200, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && e->status == 1,
     "drift: a command restores desired 1");
  is_int(e->attempt, 1, "the drift correction is attempt 1");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 205, &ev); /* its ack timeout */
  ok(first_kind(&ev, BM_EV_END)->outcome == BM_OP_TIMEOUT,
     "the drift correction times out");
  ok(!view_of(t, 0).stopped,
     "retries 1: the drift correction gets its retry instead of a give-up");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* As in test_retry_cancelled, a drift after the desired state was reached
 * is a fresh start with the full retry budget -- also when the drift is
 * reported before any tick ran after the confirmation.  Each drift
 * correction is a command that "times out" and must be "retried ... up to
 * Retries times" (relay.h); it must not inherit the attempts of the command
 * that was confirmed. */
static void test_drift_before_tick(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t"); /* retries 2 */
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  struct bm_notification n;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_tick(t, 105, &ev); /* t-1 times out */
  bm_relay_table_tick(t, 106, &ev); /* t-2 */
  bm_relay_table_tick(t, 111, &ev); /* t-2 times out */
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 113, &ev); /* t-3 */
  ok(strcmp(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-3") == 0 &&
         first_kind(&ev, BM_EV_PUBLISH)->attempt == 3,
     "t-3 is the last attempt of the budget");
  n = notification("t-3", 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 114, &ev);
  is_int(view_of(t, 0).confirmed, 1, "t-3 confirmed: desired reached");
  n = notification(NULL, 101, 4, 0); /* drift, before the next tick */
  bm_relay_table_on_notification(t, &n, 114.5, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 115, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-4") == 0 &&
         e->status == 1,
     "drift: a command t-4 restores desired 1");
  is_int(e->attempt, 1, "the drift correction is attempt 1");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 120, &ev); /* t-4's ack timeout */
  ok(first_kind(&ev, BM_EV_END)->outcome == BM_OP_TIMEOUT,
     "the drift correction times out");
  ok(!view_of(t, 0).stopped && op_count(t, BM_OP_GAVE_UP) == 0,
     "and is retried, not given up at once");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Retries and reconciliation wait for the link. */
static void test_no_publish_while_down(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, false, false, 101, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev); /* timeout while down */
  bm_relay_table_tick(t, 106, &ev);
  bm_relay_table_tick(t, 500, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0, "no retry while disconnected");
  struct bm_notification n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 501, &ev);
  bm_relay_table_tick(t, 501, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0, "no drift command while down");
  bm_relay_table_set_connected(t, true, true, 600, &ev);
  bm_relay_table_tick(t, 600, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-2") == 0,
     "after the reconnect the retry goes out as t-2");
  is_int(count_kind(&ev, BM_EV_PUBLISH), 1, "exactly one command");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: supersession and ordering ---------------------------------- */

static void test_supersede_late_after(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  struct bm_response r = response("t-1", BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 100.5, &ev);
  ok(bm_relay_table_set_desired(t, 0, 0, "off", 101),
     "a newer desired state may publish");
  is_int(view_of(t, 0).pending, 0, "the old command is no longer pending");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-2") == 0 &&
         e->status == 0 && e->attempt == 1,
     "new command t-2 (status 0) at once");
  is_int(count_kind(&ev, BM_EV_END), 0,
         "a superseded command does not END with an event");
  is_int(view_of(t, 0).pending, 1, "one command pending");

  struct bm_notification n2 = notification("t-2", 101, 4, 0);
  struct bm_notification n1 = notification("t-1", 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n2, 102, &ev), BM_APPLY_OK,
         "t-2's notification applies");
  is_int(view_of(t, 0).confirmed, 0, "confirmed 0");
  bm_events_clear(&ev);
  uint64_t dup = op_count(t, BM_OP_DUPLICATE);
  is_int(bm_relay_table_on_notification(t, &n1, 103, &ev), BM_APPLY_DUPLICATE,
         "t-1's late notification after t-2's is stale");
  is_int(view_of(t, 0).confirmed, 0, "no rollback: confirmed stays 0");
  is_int(ev.n, 0, "no event");
  is_int(op_count(t, BM_OP_DUPLICATE), dup + 1, "counted as duplicate");
  bm_relay_table_tick(t, 103, &ev);
  bm_relay_table_tick(t, 150, &ev);
  is_int(ev.n, 0, "no further command, no timeout");
  is_int(op_count(t, BM_OP_TIMEOUT), 0, "the superseded t-1 never times out");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_supersede_late_before(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_desired(t, 0, 0, "off", 101);
  bm_relay_table_tick(t, 101, &ev);
  struct bm_notification n1 = notification("t-1", 101, 4, 1);
  struct bm_notification n2 = notification("t-2", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n1, 102, &ev), BM_APPLY_OK,
         "t-1's notification before t-2's applies");
  is_int(view_of(t, 0).confirmed, 1, "confirmed 1 for now");
  is_int(count_kind(&ev, BM_EV_STATE), 1, "STATE -1 -> 1");
  is_int(view_of(t, 0).pending, 1, "t-2 still pending");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 102, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "no extra command while t-2 is pending");
  is_int(bm_relay_table_on_notification(t, &n2, 103, &ev), BM_APPLY_OK,
         "then t-2's notification applies");
  is_int(view_of(t, 0).confirmed, 0, "confirmed 0");
  ok(first_kind(&ev, BM_EV_STATE)->previous == 1, "STATE 1 -> 0");
  is_int(view_of(t, 0).pending, 0, "nothing pending");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 104, &ev);
  is_int(ev.n, 0, "and nothing more to do");
  is_int(op_count(t, BM_OP_CONFIRMED), 2, "two confirmations counted");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Three commands in flight (t-1 on, t-2 off, t-3 on); the notifications of
 * the two superseded ones arrive newest first. */
static void test_supersede_chain(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  struct bm_notification n;

  struct bm_command_saved sup;
  int sup_relay = -1;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  ok(!bm_relay_table_take_superseded(t, &sup_relay, &sup),
     "a first command superseded nothing");
  ok(!bm_relay_table_set_desired(t, 0, 1, "again", 100.5) &&
         !bm_relay_table_take_superseded(t, &sup_relay, &sup),
     "the same intent again supersedes nothing");
  bm_relay_table_set_desired(t, 0, 0, "off", 101);
  ok(bm_relay_table_take_superseded(t, &sup_relay, &sup) && sup_relay == 0 &&
         strcmp(sup.corr, "t-1") == 0 && sup.status == 1 && sup.attempt == 1,
     "the off superseded t-1, an on of attempt 1 (got %s)", sup.corr);
  ok(!bm_relay_table_take_superseded(t, &sup_relay, &sup),
     "taken once");
  bm_relay_table_tick(t, 101, &ev);
  bm_relay_table_set_desired(t, 0, 1, "on", 102);
  ok(bm_relay_table_take_superseded(t, &sup_relay, &sup) &&
         strcmp(sup.corr, "t-2") == 0 && sup.status == 0,
     "the on superseded t-2, an off");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 102, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-3", "t-3 pending");
  n = notification("t-2", 101, 4, 0);
  is_int(bm_relay_table_on_notification(t, &n, 103, &ev), BM_APPLY_OK,
         "superseded t-2 confirms first: applies");
  is_int(view_of(t, 0).confirmed, 0, "confirmed 0");
  is_int(bm_relay_table_on_notification(t, &n, 103.5, &ev),
         BM_APPLY_DUPLICATE, "t-2 redelivered: duplicate");
  n = notification("t-1", 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 104, &ev), BM_APPLY_DUPLICATE,
         "then t-1 (older than the applied t-2) is stale");
  is_int(view_of(t, 0).confirmed, 0, "no rollback to t-1's state");
  n = notification("t-3", 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 105, &ev), BM_APPLY_OK,
         "t-3 applies");
  is_int(view_of(t, 0).confirmed, 1, "confirmed 1");
  is_int(op_count(t, BM_OP_CONFIRMED), 2, "two confirmations");
  is_int(op_count(t, BM_OP_DUPLICATE), 2, "two duplicates");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A superseded command's late refusal must not stop its successor. */
static void test_supersede_late_refusal(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_desired(t, 0, 0, "off", 101);
  bm_relay_table_tick(t, 101, &ev);
  struct bm_response r = response("t-1", BM_RESULT_NOT_SEND, "busy");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 102, &ev), BM_APPLY_OK,
         "late refusal of the superseded command is recognised");
  is_int(count_kind(&ev, BM_EV_END), 0, "and ends nothing");
  is_str(kinds(&ev), "ACK", "only its ACK");
  ok(ack_is(nth(&ev, 0), 0, "t-1", 1, BM_RESULT_NOT_SEND, "busy"),
     "ACK of the superseded t-1: sequence 1, not_send, \"busy\"");
  struct bm_relay_view v = view_of(t, 0);
  ok(v.pending == 1 && !v.stopped, "t-2 still pending, relay not stopped");
  is_int(op_count(t, BM_OP_NOT_SEND), 1, "not_send counted");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* Going back to the confirmed state while a command for the other state is
 * pending: the old command may still reach the device, so the new desired
 * state is commanded at once even though it is already confirmed (relay.h:
 * "the new command goes out even if the confirmed state already equals the
 * new desired one"). */
static void test_supersede_back_to_confirmed(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  struct bm_relay_view v;
  const struct bm_event *e;

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  struct bm_notification n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 1, &ev);
  command(t, 0, 1, 100, corr, &ev);
  is_str(corr, "t-1", "t-1 (status 1) pending, confirmed 0");
  ok(bm_relay_table_set_desired(t, 0, 0, "off", 101),
     "back to the confirmed state while t-1 is pending: set_desired "
     "returns true");
  v = view_of(t, 0);
  ok(v.pending == 0 && v.desired == 0 && v.confirmed == 0 && !v.stopped,
     "t-1 is no longer pending");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "t-1's deadlines are gone (got %g)", bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101, &ev);
  is_int(ev.n, 1, "the next tick: one event");
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-2") == 0 &&
         e->status == 0 && e->attempt == 1 && !e->republish,
     "a new command t-2 for status 0, attempt 1, at once");
  is_str(e->origin, "off", "with the new origin");
  is_int(op_count(t, BM_OP_PUBLISHED), 2, "two published");
  is_int(view_of(t, 0).pending, 1, "t-2 pending");
  ok(bm_relay_table_next_deadline(t) == 106, "t-2's ack deadline 106 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101.5, &ev);
  is_int(ev.n, 0, "no second command");

  n = notification("t-2", 101, 4, 0);
  is_int(bm_relay_table_on_notification(t, &n, 102, &ev), BM_APPLY_OK,
         "t-2's notification applies");
  is_str(kinds(&ev), "APPLIED",
         "the state did not change: APPLIED only, no STATE, no END");
  ok(applied_is(nth(&ev, 0), 0, "t-2", 2, 0, 0),
     "APPLIED: t-2, sequence 2, 0 -> 0");
  bm_events_clear(&ev);
  v = view_of(t, 0);
  ok(v.pending == 0 && v.confirmed == 0 && !v.stopped, "done, confirmed 0");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "confirmed counted");
  bm_relay_table_tick(t, 102, &ev);
  bm_relay_table_tick(t, 106, &ev);
  bm_relay_table_tick(t, 111, &ev);
  bm_relay_table_tick(t, 500, &ev);
  is_int(ev.n, 0, "no further command, no timeout");
  is_int(op_count(t, BM_OP_PUBLISHED), 2, "still two published");
  is_int(op_count(t, BM_OP_TIMEOUT), 0, "no timeout counted");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL, "nothing left to time");
  n = notification("t-1", 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 501, &ev), BM_APPLY_DUPLICATE,
         "t-1's late notification after t-2's is stale");
  is_int(view_of(t, 0).confirmed, 0, "no rollback");
  is_int(ev.n, 0, "a stale notification: no APPLIED, no event at all");
  ok(!bm_relay_table_set_desired(t, 0, 0, "off", 502),
     "the same intent again: nothing to publish");
  bm_relay_table_tick(t, 502, &ev);
  is_int(ev.n, 0, "and nothing goes out");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* The old command does reach the device before the new one. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 1, &ev);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_desired(t, 0, 0, "off", 101);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-2", "t-2 (status 0) out");
  n = notification("t-1", 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 102, &ev), BM_APPLY_OK,
         "the old t-1 switched the relay on: applies");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE and nothing else");
  ok(applied_is(nth(&ev, 0), 0, "t-1", 1, 1, 0),
     "APPLIED: the superseded t-1, sequence 1, 0 -> 1");
  ok(nth(&ev, 1)->status == 1 && nth(&ev, 1)->previous == 0, "STATE 0 -> 1");
  bm_relay_table_tick(t, 102, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "no extra command: t-2 is on its way");
  n = notification("t-2", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 103, &ev);
  is_str(kinds(&ev), "APPLIED,STATE",
         "t-2 switched it back off: APPLIED, STATE, no END, no DRIFT");
  ok(applied_is(nth(&ev, 0), 0, "t-2", 2, 0, 1),
     "APPLIED: t-2, sequence 2, 1 -> 0");
  ok(first_kind(&ev, BM_EV_STATE)->previous == 1 &&
         first_kind(&ev, BM_EV_STATE)->status == 0,
     "STATE 1 -> 0");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 103, &ev);
  bm_relay_table_tick(t, 200, &ev);
  is_int(ev.n, 0, "no further command");
  ok(op_count(t, BM_OP_PUBLISHED) == 2 && op_count(t, BM_OP_CONFIRMED) == 2 &&
         op_count(t, BM_OP_CONTRADICTED) == 0,
     "two published, two confirmed, none contradicted");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Superseded while disconnected: the command waits for the link and then
   * still goes out. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 1, &ev);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, false, false, 100.5, &ev);
  ok(bm_relay_table_set_desired(t, 0, 0, "off", 101),
     "disconnected: superseding returns true");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101, &ev);
  bm_relay_table_tick(t, 120, &ev);
  is_int(ev.n, 0, "disconnected: nothing goes out");
  bm_relay_table_set_connected(t, true, true, 150, &ev);
  bm_relay_table_tick(t, 150, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(ev.n == 1 && strcmp(e->corr, "t-2") == 0 && e->status == 0,
     "after the reconnect t-2 (status 0) goes out");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Only a pending command is superseded: after t-1 timed out, going back
   * to the confirmed state sends nothing (relay.h: "A newer desired state
   * supersedes an older pending command"). */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 1, &ev);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_tick(t, 105, &ev); /* timeout, retry at 106 */
  ok(!bm_relay_table_set_desired(t, 0, 0, "off", 105.5),
     "nothing pending: back to the confirmed state returns false");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105.5, &ev);
  bm_relay_table_tick(t, 106, &ev);
  bm_relay_table_tick(t, 200, &ev);
  is_int(ev.n, 0, "and no command, no retry");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* The ordering rule must hold for our own commands however old they are:
 * "a confirmation of an older command of ours (a late or redelivered one)
 * never rolls the relay back" -- also once the relay's ring of recent
 * commands has forgotten them.  Run with the plugin's own prefix form (16
 * hex digits) and with the short prefix of the other tests: relay.h lets
 * the caller choose any id_prefix and calls every "<id_prefix>-<sequence>"
 * ours. */
static void check_old_own_ids(const char *prefix)
{
  bm_relay_table_t *t = table_new(&POLICY, prefix);
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE], id[BM_MSG_ID_SIZE];
  struct bm_notification n;

  /* Six superseded commands in a row, -1 .. -6, alternating 1/0. */
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  for (int i = 2; i <= 6; i++) {
    bm_relay_table_set_desired(t, 0, i % 2, "flap", 100 + i);
    bm_relay_table_tick(t, 100 + i, &ev);
  }
  snprintf(id, sizeof(id), "%s-6", prefix);
  n = notification(id, 101, 4, 0);
  is_int(bm_relay_table_on_notification(t, &n, 110, &ev), BM_APPLY_OK,
         "prefix \"%s\": -6 confirms 0", prefix);
  uint64_t dup = op_count(t, BM_OP_DUPLICATE);
  snprintf(id, sizeof(id), "%s-1", prefix);
  n = notification(id, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 111, &ev), BM_APPLY_DUPLICATE,
         "prefix \"%s\": the late notification of -1 (5 commands older, "
         "out of the ring) is stale",
         prefix);
  is_int(view_of(t, 0).confirmed, 0, "prefix \"%s\": no rollback", prefix);
  is_int(ev.n, 0, "prefix \"%s\": no APPLIED, no STATE, no event", prefix);
  is_int(op_count(t, BM_OP_DUPLICATE), dup + 1,
         "prefix \"%s\": counted as duplicate", prefix);
  is_int(op_count(t, BM_OP_UNSOLICITED), 0,
         "prefix \"%s\": not counted as unsolicited", prefix);
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* A forgotten command of ours that nothing newer has overtaken: it
   * applies as a confirmation of ours (counted confirmed, APPLIED with its
   * sequence), not as somebody else's change. */
  t = table_new(&POLICY, prefix);
  memset(&ev, 0, sizeof(ev));
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  for (int i = 2; i <= 6; i++) {
    bm_relay_table_set_desired(t, 0, i % 2, "flap", 100 + i);
    bm_relay_table_tick(t, 100 + i, &ev);
  }
  n = notification(corr, 101, 4, 1); /* -1, forgotten by the ring */
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 110, &ev), BM_APPLY_OK,
         "prefix \"%s\": forgotten -1, nothing newer applied: applies",
         prefix);
  ok(op_count(t, BM_OP_CONFIRMED) == 1 && op_count(t, BM_OP_UNSOLICITED) == 0,
     "prefix \"%s\": counted confirmed, not unsolicited", prefix);
  is_str(kinds(&ev), "APPLIED,STATE", "prefix \"%s\": APPLIED, STATE",
         prefix);
  ok(applied_is(nth(&ev, 0), 0, corr, 1, 1, -1),
     "prefix \"%s\": APPLIED carries sequence 1", prefix);
  snprintf(id, sizeof(id), "%s-3", prefix); /* -3 (status 1) in the ring */
  n = notification(id, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 111, &ev), BM_APPLY_OK,
         "prefix \"%s\": the newer -3 applies after it", prefix);
  ok(applied_is(nth(&ev, 0), 0, id, 3, 1, 1),
     "prefix \"%s\": APPLIED -3, sequence 3", prefix);
  n = notification(corr, 101, 4, 0);
  is_int(bm_relay_table_on_notification(t, &n, 112, &ev), BM_APPLY_DUPLICATE,
         "prefix \"%s\": -1 again (other status): duplicate", prefix);
  is_int(view_of(t, 0).confirmed, 1, "prefix \"%s\": no rollback", prefix);
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* A confirmed notification redelivered (QoS 1) after five more
   * confirmed commands. */
  t = table_new(&POLICY, prefix);
  memset(&ev, 0, sizeof(ev));
  bm_relay_table_add(t, "pump", 101, 4);
  for (int i = 1; i <= 6; i++) {
    command(t, 0, i % 2, 100 * i, corr, &ev);
    n = notification(corr, 101, 4, i % 2);
    bm_relay_table_on_notification(t, &n, 100 * i + 1, &ev);
  }
  is_int(view_of(t, 0).confirmed, 0, "prefix \"%s\": -6 confirmed 0",
         prefix);
  snprintf(id, sizeof(id), "%s-1", prefix);
  n = notification(id, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 700, &ev), BM_APPLY_DUPLICATE,
         "prefix \"%s\": redelivery of -1's applied notification is a "
         "duplicate",
         prefix);
  is_int(view_of(t, 0).confirmed, 0, "prefix \"%s\": no rollback", prefix);
  bm_relay_table_tick(t, 700, &ev);
  is_int(ev.n, 0, "prefix \"%s\": no event, no corrective command", prefix);
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_old_own_ids(void)
{
  check_old_own_ids(HEX_A);
  /* relay.h, bm_relay_table_new: any id_prefix of at most 40 bytes, every
   * correlationId "<id_prefix>-<sequence>" -- so "t-1" is ours too. */
  check_old_own_ids("t");
}

/* The device reports the other state in answer to our command (it could not
 * switch).  The notification is the truth and answers the command (counted
 * confirmed and contradicted); the command is a failed attempt, retried with
 * the backoff of a timeout, and the relay gives up when the retries are
 * spent, instead of re-commanding a device that cannot switch without
 * bound. */
static void test_contradicting_notification(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t"); /* retries 2, backoff 1 */
  struct bm_events ev = {0};
  struct bm_relay_stats s;
  struct bm_relay_view v;
  char corr[BM_MSG_ID_SIZE];
  const struct bm_event *e;
  struct bm_notification n;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  struct bm_response r = response(corr, BM_RESULT_SENT, "Command Queued");
  bm_relay_table_on_response(t, &r, 100.5, &ev);
  n = notification(corr, 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 101, &ev), BM_APPLY_OK,
         "a notification contradicting the command applies");
  is_int(view_of(t, 0).confirmed, 0, "confirmed is what the device says");
  is_int(count_kind(&ev, BM_EV_STATE), 1, "one STATE");
  is_int(count_kind(&ev, BM_EV_END), 1, "one END");
  is_str(kinds(&ev), "APPLIED,STATE,END", "APPLIED, STATE, END");
  ok(applied_is(nth(&ev, 0), 0, "t-1", 1, 0, -1),
     "APPLIED: t-1, sequence 1, -1 -> 0");
  ok(nth(&ev, 1)->kind == BM_EV_STATE && nth(&ev, 1)->relay == 0 &&
         nth(&ev, 1)->previous == -1 && nth(&ev, 1)->status == 0 &&
         strcmp(nth(&ev, 1)->corr, "t-1") == 0,
     "then STATE -1 -> 0 carrying t-1");
  ok(nth(&ev, 2)->kind == BM_EV_END, "then the END");
  is_int(count_kind(&ev, BM_EV_DRIFT), 0, "an answer of ours is no drift");
  e = first_kind(&ev, BM_EV_END);
  is_int(e->outcome, BM_OP_CONTRADICTED, "END outcome contradicted");
  is_int(e->severity, BM_SEV_WARNING, "a WARNING");
  ok(e->relay == 0 && e->status == 1 && e->attempt == 1,
     "END for relay 0, commanded status 1, attempt 1");
  is_str(e->corr, "t-1", "END carries the correlationId");
  is_str(e->origin, "test", "END carries the origin");
  is_str(e->reason, "the device reported status 0 in answer to status 1",
         "END reason");
  v = view_of(t, 0);
  ok(v.pending == 0 && !v.stopped && v.desired == 1,
     "nothing pending, not stopped, desired still 1");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "it answers our command: confirmed");
  is_int(op_count(t, BM_OP_CONTRADICTED), 1, "and contradicted");
  is_int(op_count(t, BM_OP_TIMEOUT), 0, "no timeout");
  is_int(op_count(t, BM_OP_GAVE_UP), 0, "no give-up yet");
  is_int(op_count(t, BM_OP_UNSOLICITED), 0, "not unsolicited");
  bm_relay_table_stats(t, &s, false);
  ok(s.confirm_n == 1 && s.confirm_sum == 1.0,
     "confirm latency: 1 sample of 1 s");
  ok(bm_relay_table_next_deadline(t) == 102,
     "next_deadline is the retry after the first backoff, 102 (got %g)",
     bm_relay_table_next_deadline(t));

  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101, &ev);
  is_int(ev.n, 0, "no immediate re-command");
  bm_relay_table_tick(t, 101.99, &ev);
  is_int(ev.n, 0, "no retry before the backoff ends");
  bm_relay_table_tick(t, 102, &ev);
  is_int(ev.n, 1, "at 102: one event");
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-2") == 0 &&
         e->status == 1 && e->attempt == 2 && !e->republish,
     "retry t-2, status 1, attempt 2");
  ok(bm_relay_table_next_deadline(t) == 107, "deadline 107 (got %g)",
     bm_relay_table_next_deadline(t));

  /* The second contradiction: the backoff doubles. */
  n = notification("t-2", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 103, &ev), BM_APPLY_OK,
         "t-2 contradicted too");
  is_int(count_kind(&ev, BM_EV_STATE), 0, "state unchanged: no STATE");
  is_str(kinds(&ev), "APPLIED,END", "APPLIED and the END");
  ok(applied_is(nth(&ev, 0), 0, "t-2", 2, 0, 0),
     "APPLIED: t-2, sequence 2, 0 -> 0");
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_CONTRADICTED && e->attempt == 2 &&
         strcmp(e->corr, "t-2") == 0,
     "END contradicted for t-2, attempt 2");
  ok(bm_relay_table_next_deadline(t) == 105,
     "backoff doubled: retry at 105 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 104.99, &ev);
  is_int(ev.n, 0, "no retry at 104.99");
  bm_relay_table_tick(t, 105, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(ev.n == 1 && strcmp(e->corr, "t-3") == 0 && e->attempt == 3,
     "retry t-3, attempt 3, at 105");

  /* The third: the retries are spent. */
  n = notification("t-3", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 106, &ev), BM_APPLY_OK,
         "t-3 contradicted");
  is_int(count_kind(&ev, BM_EV_END), 2, "two END events");
  is_str(kinds(&ev), "APPLIED,END,END", "APPLIED, END, END");
  ok(applied_is(nth(&ev, 0), 0, "t-3", 3, 0, 0),
     "APPLIED: t-3, sequence 3, 0 -> 0");
  ok(nth(&ev, 1)->kind == BM_EV_END &&
         nth(&ev, 1)->outcome == BM_OP_CONTRADICTED &&
         nth(&ev, 1)->attempt == 3 && strcmp(nth(&ev, 1)->corr, "t-3") == 0,
     "END contradicted for t-3, attempt 3");
  ok(nth(&ev, 2)->kind == BM_EV_END && nth(&ev, 2)->outcome == BM_OP_GAVE_UP &&
         nth(&ev, 2)->severity == BM_SEV_FAILURE && nth(&ev, 2)->status == 1 &&
         nth(&ev, 2)->attempt == 3 && nth(&ev, 2)->relay == 0,
     "then END gave_up, FAILURE, status 1, attempt 3");
  is_str(nth(&ev, 2)->origin, "test", "gave_up carries the origin");
  ok(nth(&ev, 2)->reason[0] != '\0', "gave_up has a reason (%s)",
     nth(&ev, 2)->reason);
  v = view_of(t, 0);
  ok(v.stopped && v.pending == 0 && v.confirmed == 0 && v.desired == 1,
     "relay stopped, confirmed 0, desired 1");
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "given up: next_deadline HUGE_VAL (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 106, &ev);
  bm_relay_table_tick(t, 200, &ev);
  bm_relay_table_tick(t, 10000, &ev);
  is_int(ev.n, 0, "given up: no further command");
  bm_relay_table_stats(t, &s, false);
  is_int(s.ops[BM_OP_PUBLISHED], POLICY.retries + 1,
         "a relay that always reports 0 got retries + 1 = 3 commands");
  is_int(s.ops[BM_OP_CONFIRMED], 3, "3 confirmed");
  is_int(s.ops[BM_OP_CONTRADICTED], 3, "3 contradicted");
  is_int(s.ops[BM_OP_GAVE_UP], 1, "1 give-up");
  is_int(s.ops[BM_OP_TIMEOUT], 0, "no timeout");
  is_int(s.ops[BM_OP_DUPLICATE], 0, "no duplicate");

  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 10001, &ev),
         BM_APPLY_DUPLICATE, "t-3's notification redelivered: duplicate");
  is_int(ev.n, 0, "no event");
  is_int(op_count(t, BM_OP_CONTRADICTED), 3, "not contradicted again");

  ok(bm_relay_table_set_desired(t, 0, 1, "again", 20000),
     "set_desired after the give-up may publish");
  bm_relay_table_tick(t, 20000, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && strcmp(e->corr, "t-4") == 0 &&
         e->attempt == 1,
     "a new command t-4, attempt 1");
  n = notification("t-4", 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 20001, &ev), BM_APPLY_OK,
         "t-4 confirmed with the commanded status");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE and no END");
  ok(applied_is(nth(&ev, 0), 0, "t-4", 4, 1, 0),
     "APPLIED: t-4, sequence 4, 0 -> 1");
  ok(first_kind(&ev, BM_EV_STATE)->previous == 0 &&
         first_kind(&ev, BM_EV_STATE)->status == 1,
     "STATE 0 -> 1");
  is_int(op_count(t, BM_OP_CONTRADICTED), 3, "an agreeing answer: no count");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 20002, &ev);
  bm_relay_table_tick(t, 30000, &ev);
  is_int(ev.n, 0, "done");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A contradiction is a failed attempt like a timeout: they share the budget,
 * the cap and retries 0; a retry waits for the link and is dropped once the
 * desired state is reached; only the pending command can be contradicted. */
static void test_contradiction_cases(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t"); /* ack 5, retries 2, bo 1 */
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  const struct bm_event *e;
  struct bm_notification n;

  /* Timeout, then contradiction, then timeout: three attempts, give-up. */
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_tick(t, 105, &ev); /* ack timeout: retry at 106 */
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 106, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-2",
         "mixed: t-2 after t-1's timeout");
  n = notification("t-2", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 107, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_CONTRADICTED && e->attempt == 2,
     "mixed: t-2 contradicted, attempt 2");
  is_int(count_kind(&ev, BM_EV_END), 1, "mixed: no give-up yet");
  ok(bm_relay_table_next_deadline(t) == 109,
     "mixed: the second backoff is 2 s: retry at 109 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 108.99, &ev);
  is_int(ev.n, 0, "mixed: nothing at 108.99");
  bm_relay_table_tick(t, 109, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, "t-3") == 0 && e->attempt == 3,
     "mixed: t-3, attempt 3, at 109");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 114, &ev);
  ok(ev.n == 2 && ev.ev[0].outcome == BM_OP_TIMEOUT &&
         ev.ev[1].outcome == BM_OP_GAVE_UP && ev.ev[1].attempt == 3,
     "mixed: t-3 times out and the relay gives up after 3 attempts");
  ok(op_count(t, BM_OP_TIMEOUT) == 2 && op_count(t, BM_OP_CONTRADICTED) == 1 &&
         op_count(t, BM_OP_GAVE_UP) == 1 && op_count(t, BM_OP_PUBLISHED) == 3,
     "mixed: 2 timeouts, 1 contradiction, 1 give-up, 3 published");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* The backoff is capped at 60 s. */
  struct bm_relay_policy p = {.ack_timeout = 5, .command_timeout = 10,
                              .retries = 3, .retry_backoff = 40};
  t = table_new(&p, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 0.5, corr, &ev);
  n = notification("t-1", 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 1.5, &ev);
  ok(bm_relay_table_next_deadline(t) == 41.5,
     "cap: first backoff 40 s (got %g)", bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 41.5, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-2", "cap: t-2 at 41.5");
  n = notification("t-2", 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 42.5, &ev);
  ok(bm_relay_table_next_deadline(t) == 102.5,
     "cap: second backoff 80 s capped at 60 s (got %g)",
     bm_relay_table_next_deadline(t) - 42.5);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 102.4, &ev);
  is_int(ev.n, 0, "cap: nothing before 102.5");
  bm_relay_table_tick(t, 102.5, &ev);
  ok(first_kind(&ev, BM_EV_PUBLISH)->attempt == 3, "cap: attempt 3 at 102.5");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Retries 0: the first contradiction gives up. */
  p.retries = 0;
  t = table_new(&p, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 1, corr, &ev);
  n = notification("t-1", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 2, &ev);
  is_str(kinds(&ev), "APPLIED,STATE,END,END",
         "retries 0: APPLIED, STATE, END, END");
  ok(applied_is(nth(&ev, 0), 0, "t-1", 1, 0, -1),
     "retries 0: APPLIED t-1, sequence 1, -1 -> 0");
  ok(nth(&ev, 2)->outcome == BM_OP_CONTRADICTED &&
         nth(&ev, 3)->outcome == BM_OP_GAVE_UP && nth(&ev, 3)->attempt == 1,
     "retries 0: END contradicted, END gave_up");
  ok(view_of(t, 0).stopped, "retries 0: stopped");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 2, &ev);
  bm_relay_table_tick(t, 500, &ev);
  is_int(ev.n, 0, "retries 0: no further command");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* The desired state is reached during the backoff: no retry. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  n = notification("t-1", 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  n = notification(NULL, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 101.5, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101.5, &ev);
  bm_relay_table_tick(t, 102, &ev);
  bm_relay_table_tick(t, 200, &ev);
  is_int(ev.n, 0, "reached during the backoff: no retry");
  ok(!view_of(t, 0).stopped, "reached during the backoff: not stopped");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* The desired state is set to what the device reported: no retry. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  n = notification("t-1", 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  ok(!bm_relay_table_set_desired(t, 0, 0, "off", 101.5),
     "desired set to the reported state: nothing to publish");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 102, &ev);
  bm_relay_table_tick(t, 200, &ev);
  is_int(ev.n, 0, "and no retry of the contradicted command");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* The retry waits for the link. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, false, false, 100.5, &ev);
  n = notification("t-1", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  is_int(first_kind(&ev, BM_EV_END)->outcome, BM_OP_CONTRADICTED,
         "contradicted while disconnected");
  bm_relay_table_tick(t, 102, &ev);
  bm_relay_table_tick(t, 300, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0, "no retry while disconnected");
  bm_relay_table_set_connected(t, true, true, 400, &ev);
  bm_relay_table_tick(t, 400, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(count_kind(&ev, BM_EV_PUBLISH) == 1 && strcmp(e->corr, "t-2") == 0 &&
         e->attempt == 2,
     "after the reconnect the retry goes out as t-2, attempt 2");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Only the pending command is contradicted: the late notification of a
   * timed-out command reporting the other state is just applied. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_tick(t, 105, &ev); /* t-1 times out */
  bm_relay_table_tick(t, 106, &ev); /* t-2 goes out */
  n = notification("t-1", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 107, &ev), BM_APPLY_OK,
         "late notification of the timed-out t-1 (status 0) applies");
  is_int(view_of(t, 0).confirmed, 0, "confirmed 0");
  is_int(count_kind(&ev, BM_EV_END), 0, "no END: t-1 had already ended");
  is_int(op_count(t, BM_OP_CONTRADICTED), 0, "not counted contradicted");
  is_int(view_of(t, 0).pending, 1, "t-2 still pending");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: reorder, unsolicited, foreign, unknown --------------------- */

static void test_reorder(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  struct bm_notification n = notification(corr, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 101, &ev), BM_APPLY_OK,
         "notification before the response applies");
  is_int(view_of(t, 0).confirmed, 1, "confirmed 1");
  is_int(view_of(t, 0).pending, 0, "nothing pending");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "t-1", 1, 1, -1), "APPLIED t-1, sequence 1");
  struct bm_response r = response(corr, BM_RESULT_SENT, "");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 102, &ev), BM_APPLY_OK,
         "the response after the notification is recognised");
  is_str(kinds(&ev), "ACK", "an ACK for the already confirmed command");
  ok(ack_is(nth(&ev, 0), 0, "t-1", 1, BM_RESULT_SENT, ""),
     "ACK t-1, sequence 1, sent");
  is_int(op_count(t, BM_OP_DUPLICATE), 0, "and is not a duplicate");
  is_int(op_count(t, BM_OP_SENT), 1, "it counts as sent");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "confirmed once");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 103, &ev), BM_APPLY_DUPLICATE,
         "the response once more is a duplicate");
  is_int(ev.n, 0, "and has no ACK");
  bm_relay_table_tick(t, 200, &ev);
  is_int(ev.n, 0, "no timeout, no retry after the reordered pair");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_unsolicited(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  struct bm_notification n = notification(NULL, 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 1, &ev), BM_APPLY_OK,
         "notification without correlationId applies");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "", 0, 1, -1),
     "APPLIED with an empty corr, sequence 0, -1 -> 1");
  const struct bm_event *e = first_kind(&ev, BM_EV_STATE);
  ok(e->kind == BM_EV_STATE && e->status == 1 && e->previous == -1 &&
         e->corr[0] == '\0',
     "STATE -1 -> 1 with an empty corr");
  is_int(op_count(t, BM_OP_UNSOLICITED), 1, "counted unsolicited");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 2, &ev), BM_APPLY_OK,
         "the same unsolicited state again applies (no id to de-duplicate)");
  is_int(count_kind(&ev, BM_EV_STATE), 0, "the state did not change: no STATE");
  is_str(kinds(&ev), "APPLIED", "only the APPLIED");
  ok(applied_is(nth(&ev, 0), 0, "", 0, 1, 1), "APPLIED 1 -> 1, sequence 0");
  is_int(op_count(t, BM_OP_UNSOLICITED), 2, "counted again");
  is_int(op_count(t, BM_OP_DUPLICATE), 0, "not a duplicate");
  /* An empty correlationId counts as absent (message.h). */
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 3, &ev);
  is_int(view_of(t, 0).confirmed, 0, "unsolicited 0 applies");

  /* Drift: desired 1 is confirmed, then the relay turns off by itself. */
  command(t, 0, 1, 100, corr, &ev);
  n = notification(corr, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 102, &ev);
  is_int(ev.n, 0, "desired reached");
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 200, &ev);
  is_int(view_of(t, 0).confirmed, 0, "drift applied");
  is_str(kinds(&ev), "APPLIED,DRIFT,STATE", "APPLIED, DRIFT, STATE");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 200, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && e->status == 1 && strcmp(e->corr, "t-2") == 0,
     "drift: a new command t-2 restores desired 1");

  /* Unsolicited while a command is pending: applies, no extra command. */
  n = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 201, &ev);
  bm_relay_table_tick(t, 201, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "unsolicited during a pending command: no second command");
  is_int(view_of(t, 0).pending, 1, "t-2 still pending");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_foreign(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};

  bm_relay_table_add(t, "pump", 101, 4);
  struct bm_notification n = notification("otherApp-77", 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 1, &ev), BM_APPLY_OK,
         "foreign correlationId applies");
  is_int(view_of(t, 0).confirmed, 1, "confirmed 1");
  is_str(first_kind(&ev, BM_EV_STATE)->corr, "otherApp-77",
         "STATE carries the foreign id");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "otherApp-77", 0, 1, -1),
     "APPLIED carries the foreign id and sequence 0");
  is_int(op_count(t, BM_OP_UNSOLICITED), 1, "counted as unsolicited");
  n.state.status = 0; /* a redelivery cannot change anything */
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 2, &ev), BM_APPLY_DUPLICATE,
         "its repeat is a duplicate");
  is_int(view_of(t, 0).confirmed, 1, "the repeat does not change state");
  is_int(ev.n, 0, "no event");
  is_int(op_count(t, BM_OP_DUPLICATE), 1, "duplicate counted");
  n = notification("otherApp-78", 101, 4, 0);
  is_int(bm_relay_table_on_notification(t, &n, 3, &ev), BM_APPLY_OK,
         "another foreign id applies");
  is_int(view_of(t, 0).confirmed, 0, "confirmed 0");
  is_str(kinds(&ev), "APPLIED,STATE",
         "APPLIED, STATE: no DRIFT after a foreign state");
  /* Ids of our own form beyond the table's last sequence are somebody
   * else's (another instance's) too. */
  n = notification(HEX_A "-1", 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 3.5, &ev), BM_APPLY_OK,
         "an id of our form but never issued here applies");
  is_int(op_count(t, BM_OP_UNSOLICITED), 3, "as unsolicited");
  ok(applied_is(nth(&ev, 0), 0, HEX_A "-1", 0, 1, 0),
     "APPLIED with sequence 0: not ours");
  bm_events_clear(&ev);
  /* A response for a foreign id is not ours. */
  struct bm_response r = response("otherApp-77", BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 4, &ev), BM_APPLY_UNKNOWN_ID,
         "response with a foreign id: UNKNOWN_ID");
  is_int(ev.n, 0, "no ACK");
  is_int(op_count(t, BM_OP_UNKNOWN), 1, "counted unknown");
  is_int(op_count(t, BM_OP_DUPLICATE), 1, "not a duplicate");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A notification naming the correlationId of another relay's command
 * (a faulty gateway): the state is this relay's, applied as somebody
 * else's change; it confirms nothing, and the other relay's command is
 * still pending. */
static void test_other_relays_id(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_add(t, "fan", 102, 1);
  command(t, 0, 1, 100, corr, &ev);
  is_str(corr, "t-1", "the pump's command t-1");
  struct bm_notification n = notification(corr, 102, 1, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 100.5, &ev), BM_APPLY_OK,
         "a notification for the fan naming t-1 applies");
  is_int(view_of(t, 1).confirmed, 1, "the fan is on");
  ok(applied_is(nth(&ev, 0), 1, "t-1", 0, 1, -1),
     "APPLIED to the fan with sequence 0: no command of the fan's");
  is_int(op_count(t, BM_OP_UNSOLICITED), 1, "counted as unsolicited");
  is_int(op_count(t, BM_OP_CONFIRMED), 0, "nothing confirmed");
  is_int(view_of(t, 0).pending, 1, "the pump's command is still pending");
  n = notification(corr, 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 101, &ev), BM_APPLY_OK,
         "the pump's own notification of t-1 then confirms it");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "confirmed");
  is_int(view_of(t, 0).pending, 0, "nothing pending");
  ok(bm_relay_table_is_own_id(t, "t-1"), "t-1 is an id of ours");
  ok(bm_relay_table_is_own_id(t, HEX_A "-1"),
     "so is an earlier run's id of our form, issued up to here");
  ok(!bm_relay_table_is_own_id(t, "t-2") &&
         !bm_relay_table_is_own_id(t, HEX_A "-2"),
     "an id numbered beyond the last command is not");
  ok(!bm_relay_table_is_own_id(t, "otherApp-1"), "nor another one");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_unknown(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  struct bm_relay_stats before, after;
  bm_relay_table_stats(t, &before, false);

  struct bm_notification n = notification(corr, 101, 5, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 101, &ev),
         BM_APPLY_UNKNOWN_RELAY, "notification for an unknown output");
  n = notification(NULL, 999, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 101, &ev),
         BM_APPLY_UNKNOWN_RELAY, "notification for an unknown resource");
  struct bm_relay_view v = view_of(t, 0);
  ok(v.confirmed == -1 && v.pending == 1, "unknown relay: no state change");
  is_int(ev.n, 0, "unknown relay: no events");

  n = notification(corr, 101, 4, 1);
  n.has_state = false;
  snprintf(n.notification_type, sizeof(n.notification_type), "deviceOnline");
  is_int(bm_relay_table_on_notification(t, &n, 101, &ev), BM_APPLY_IGNORED,
         "notification without state is ignored");
  v = view_of(t, 0);
  ok(v.confirmed == -1 && v.pending == 1,
     "ignored notification: command still pending");

  struct bm_response r = response("t-999", BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 101, &ev), BM_APPLY_UNKNOWN_ID,
         "response with an id we never issued");
  r = response("", BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 101, &ev), BM_APPLY_UNKNOWN_ID,
         "response with an empty id");
  is_int(ev.n, 0, "no events");
  bm_relay_table_stats(t, &after, false);
  is_int(after.ops[BM_OP_UNKNOWN] - before.ops[BM_OP_UNKNOWN], 5,
         "the five answers for nobody count as unknown");
  bool same = true;
  for (int o = 0; o < BM_OP_COUNT; o++)
    if (o != BM_OP_UNKNOWN && before.ops[o] != after.ops[o]) {
      diag("%s moved from %llu to %llu", bm_op_name((enum bm_op)o),
           (unsigned long long)before.ops[o],
           (unsigned long long)after.ops[o]);
      same = false;
    }
  ok(same, "and as nothing else (not sent, confirmed, duplicate, "
           "unsolicited or malformed)");
  ok(after.ack_n == before.ack_n && after.confirm_n == before.confirm_n,
     "no latency sample");

  /* The real answers still work afterwards. */
  r = response(corr, BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 102, &ev), BM_APPLY_OK,
         "the real response still applies");
  ok(ev.n == 1 && ack_is(nth(&ev, 0), 0, "t-1", 1, BM_RESULT_SENT, ""),
     "with its ACK");
  is_int(op_count(t, BM_OP_UNKNOWN), 5, "and is not unknown");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* A response for one of our commands that the relay no longer remembers
   * (pushed out of the recent ones by newer commands) matches no command. */
  t = table_new(&POLICY, "t");
  memset(&ev, 0, sizeof(ev));
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  for (int i = 2; i <= 6; i++) { /* t-2 .. t-6 supersede each other */
    bm_relay_table_set_desired(t, 0, i % 2, "flap", 100 + i);
    bm_relay_table_tick(t, 100 + i, &ev);
  }
  bm_relay_table_stats(t, &before, false);
  r = response("t-2", BM_RESULT_SENT, "");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 110, &ev), BM_APPLY_OK,
         "a response to the recent t-2 is recognised");
  ok(ev.n == 1 && ack_is(nth(&ev, 0), 0, "t-2", 2, BM_RESULT_SENT, ""),
     "ACK of the recent t-2, sequence 2");
  r = response("t-1", BM_RESULT_SENT, "");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 110, &ev), BM_APPLY_UNKNOWN_ID,
         "a response to the forgotten t-1 is for no command");
  is_int(ev.n, 0, "no event");
  bm_relay_table_stats(t, &after, false);
  ok(after.ops[BM_OP_SENT] == before.ops[BM_OP_SENT] + 1 &&
         after.ops[BM_OP_UNKNOWN] == before.ops[BM_OP_UNKNOWN] + 1 &&
         after.ops[BM_OP_DUPLICATE] == before.ops[BM_OP_DUPLICATE],
     "t-2's counts as sent, t-1's as unknown");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: reconnects ------------------------------------------------- */

static void test_republish(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char c0[BM_MSG_ID_SIZE], c1[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "unacked", 101, 1);
  bm_relay_table_add(t, "acked", 101, 2);
  bm_relay_table_add(t, "idle", 101, 3);
  bm_relay_table_add(t, "done", 101, 4);
  command(t, 0, 1, 100, c0, &ev);
  command(t, 1, 0, 100, c1, &ev);
  struct bm_response r = response(c1, BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 100.5, &ev);
  char c3[BM_MSG_ID_SIZE];
  command(t, 3, 1, 100, c3, &ev);
  struct bm_notification n = notification(c3, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 100.6, &ev);
  uint64_t published = op_count(t, BM_OP_PUBLISHED);

  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, false, false, 101, &ev);
  is_int(ev.n, 0, "going down produces no events");
  bm_relay_table_set_connected(t, true, true, 102, &ev);
  is_int(ev.n, 0, "session present: nothing republished");
  bm_relay_table_tick(t, 102, &ev);
  is_int(ev.n, 0, "and the tick adds nothing");

  bm_relay_table_set_connected(t, false, false, 103, &ev);
  bm_relay_table_set_connected(t, true, false, 104, &ev);
  is_int(ev.n, 1, "session lost: one event");
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(e->kind == BM_EV_PUBLISH && e->relay == 0 && e->republish,
     "a republish of the unacked command only");
  is_str(e->corr, c0, "with the same correlationId");
  ok(e->status == 1 && e->attempt == 1, "same status and attempt");
  is_int(e->seq, 1, "and the same sequence");
  is_str(e->origin, "test", "and the origin");
  is_int(op_count(t, BM_OP_PUBLISHED), published + 1,
         "the republish counts as published");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 104, &ev);
  is_int(ev.n, 0, "the tick after the republish adds no new command");

  /* The republished command is still the same pending command. */
  r = response(c0, BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 105, &ev), BM_APPLY_OK,
         "the response to the republished id applies");
  ok(ev.n == 1 && ack_is(nth(&ev, 0), 0, c0, 1, BM_RESULT_SENT, ""),
     "ACK of the republished command, sequence 1");
  n = notification(c0, 101, 1, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 106, &ev), BM_APPLY_OK,
         "and its notification confirms");
  ok(ev.n == 2 && applied_is(nth(&ev, 0), 0, c0, 1, 1, -1),
     "APPLIED of the republished command, sequence 1, then STATE");
  is_int(view_of(t, 0).pending, 0, "relay 0 done");
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 107, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "acked commands are not republished");
  /* The next fresh command continues the sequence. */
  bm_relay_table_set_desired(t, 2, 1, "x", 108);
  bm_relay_table_tick(t, 108, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "t-4",
         "republishing consumed no sequence number");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A command republished after the broker lost the session gets its full
 * timeouts again from the republish (relay.h); its latency still counts
 * from the first publish.  With the session present, or once acked, the
 * deadlines stay where they were. */
static void test_republish_deadlines(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t"); /* ack 5, command 10 */
  struct bm_events ev = {0};
  struct bm_relay_stats s;
  char corr[BM_MSG_ID_SIZE];
  const struct bm_event *e;

  /* Unacked: the ack deadline 105 moves to 104 + 5 = 109. */
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, false, false, 103, &ev);
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 104, &ev);
  ok(ev.n == 1 && ev.ev[0].republish && strcmp(ev.ev[0].corr, "t-1") == 0,
     "unacked: t-1 republished at 104");
  ok(bm_relay_table_next_deadline(t) <= 109,
     "a wake-up is due by the new ack deadline 109 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev);
  is_int(ev.n, 0, "no timeout at the old ack deadline 105");
  ok(bm_relay_table_next_deadline(t) == 109,
     "next_deadline is the new ack deadline 109 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_relay_table_tick(t, 108.99, &ev);
  is_int(ev.n, 0, "no timeout at 108.99");
  bm_relay_table_tick(t, 109, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_TIMEOUT && strcmp(e->corr, "t-1") == 0 &&
         e->attempt == 1 && strstr(e->reason, "commandResponse") != NULL,
     "t-1 times out at 109 for want of a commandResponse");
  ok(bm_relay_table_next_deadline(t) == 110, "retry at 110 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Republished, then acked: the confirm deadline 110 moved to 114; the
   * latencies count from the first publish at 100. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, true, false, 104, &ev);
  struct bm_response r = response("t-1", BM_RESULT_SENT, "");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 106, &ev), BM_APPLY_OK,
         "the response to the republished t-1 applies");
  ok(ev.n == 1 && ack_is(nth(&ev, 0), 0, "t-1", 1, BM_RESULT_SENT, ""),
     "its ACK");
  bm_events_clear(&ev);
  ok(bm_relay_table_next_deadline(t) == 114,
     "acked: next_deadline is the new confirm deadline 114 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_relay_table_stats(t, &s, false);
  ok(s.ack_n == 1 && s.ack_sum == 6.0,
     "ack latency counts from the first publish: 6 s (got %g)", s.ack_sum);
  bm_relay_table_tick(t, 110, &ev);
  bm_relay_table_tick(t, 113.99, &ev);
  is_int(ev.n, 0, "no timeout at the old confirm deadline 110 nor at 113.99");
  bm_relay_table_tick(t, 114, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_TIMEOUT && strcmp(e->corr, "t-1") == 0 &&
         strstr(e->reason, "notification") != NULL,
     "t-1 times out at 114 for want of a notification");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Confirmed after the republish: latency from the first publish. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, true, false, 104, &ev);
  struct bm_notification n = notification("t-1", 101, 4, 1);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev);
  bm_relay_table_tick(t, 108.4, &ev);
  is_int(ev.n, 0, "no timeout at 105 nor at 108.4");
  is_int(bm_relay_table_on_notification(t, &n, 108.5, &ev), BM_APPLY_OK,
         "the notification of the republished t-1 confirms");
  bm_relay_table_stats(t, &s, false);
  ok(s.confirm_n == 1 && s.confirm_sum == 8.5,
     "confirm latency counts from the first publish: 8.5 s (got %g)",
     s.confirm_sum);
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Two republishes: each one restarts the clock. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, true, false, 104, &ev); /* ack at 109 */
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 108, &ev); /* ack at 113 */
  ok(ev.n == 1 && ev.ev[0].republish, "republished again at 108");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 109, &ev);
  bm_relay_table_tick(t, 112.99, &ev);
  is_int(ev.n, 0, "no timeout at 109 nor at 112.99");
  bm_relay_table_tick(t, 113, &ev);
  is_int(first_kind(&ev, BM_EV_END)->outcome, BM_OP_TIMEOUT,
         "times out at 113");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* command_timeout below ack_timeout: the confirm deadline of an unacked
   * command moves too (110 -> 115). */
  struct bm_relay_policy p = {.ack_timeout = 30, .command_timeout = 10,
                              .retries = 0, .retry_backoff = 1};
  t = table_new(&p, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, true, false, 105, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 110, &ev);
  bm_relay_table_tick(t, 114.99, &ev);
  is_int(ev.n, 0, "short command_timeout: no timeout at 110 nor at 114.99");
  bm_relay_table_tick(t, 115, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(e->outcome == BM_OP_TIMEOUT && strstr(e->reason, "notification"),
     "short command_timeout: times out at 105 + 10 = 115");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Session present: nothing republished, the deadline stays 105. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_connected(t, false, false, 103, &ev);
  bm_relay_table_set_connected(t, true, true, 104, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev);
  is_int(first_kind(&ev, BM_EV_END)->outcome, BM_OP_TIMEOUT,
         "session present: t-1 still times out at 105");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Acked before the session was lost: not republished, the confirm
   * deadline stays 110. */
  t = table_new(&POLICY, "t");
  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  r = response("t-1", BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 101, &ev);
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 104, &ev);
  is_int(ev.n, 0, "acked: not republished");
  bm_relay_table_tick(t, 110, &ev);
  is_int(first_kind(&ev, BM_EV_END)->outcome, BM_OP_TIMEOUT,
         "acked: t-1 still times out at 110");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: deadlines, events, strings ---------------------------------- */

static void test_next_deadline(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char c0[BM_MSG_ID_SIZE], c1[BM_MSG_ID_SIZE];

  bm_relay_table_add(t, "a", 1, 1);
  bm_relay_table_add(t, "b", 1, 2);
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL, "idle: HUGE_VAL");
  bm_relay_table_set_desired(t, 0, 1, "x", 10);
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "marked but not yet ticked: still HUGE_VAL (the tick is due at once)");
  command(t, 0, 1, 10, c0, &ev);
  ok(bm_relay_table_next_deadline(t) == 15, "a's ack deadline 15");
  command(t, 1, 1, 12, c1, &ev);
  ok(bm_relay_table_next_deadline(t) == 15, "earliest of 15 and 17");
  struct bm_response r = response(c0, BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 11, &ev);
  ok(bm_relay_table_next_deadline(t) == 17,
     "a acked (confirm 20), b unacked (17): earliest is 17 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_relay_table_tick(t, 15, &ev);
  ok(bm_relay_table_next_deadline(t) == 17,
     "after a tick at 15 with nothing due: 17 (got %g)",
     bm_relay_table_next_deadline(t));
  r = response(c1, BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 16, &ev);
  bm_relay_table_tick(t, 17, &ev);
  ok(bm_relay_table_next_deadline(t) == 20,
     "both acked: a's confirm deadline 20 (got %g)",
     bm_relay_table_next_deadline(t));
  struct bm_notification n = notification(c0, 1, 1, 1);
  bm_relay_table_on_notification(t, &n, 18, &ev);
  n = notification(c1, 1, 2, 1);
  bm_relay_table_on_notification(t, &n, 18, &ev);
  bm_relay_table_tick(t, 18, &ev);
  bm_relay_table_tick(t, 20, &ev);
  ok(bm_relay_table_next_deadline(t) == HUGE_VAL,
     "everything confirmed and ticked: HUGE_VAL");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_events_list(void)
{
  bm_relay_table_t *t = table_new(&POLICY, "t");
  struct bm_events ev = {0};
  char name[32];

  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof(name), "r%d", i);
    bm_relay_table_add(t, name, 5, i);
  }
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  for (int i = 0; i < 100; i++)
    bm_relay_table_set_desired(t, i, i % 2, "bulk", 1);
  bm_relay_table_tick(t, 1, &ev);
  is_int(ev.n, 100, "100 relays: 100 PUBLISH events in one tick");
  is_int(ev.lost, 0, "none lost");
  ok(ev.cap >= ev.n, "cap >= n");
  bool all = true;
  for (int i = 0; i < 100; i++) {
    char want[32];
    snprintf(want, sizeof(want), "t-%d", i + 1);
    if (ev.ev[i].kind != BM_EV_PUBLISH || ev.ev[i].relay != i ||
        ev.ev[i].status != i % 2 || strcmp(ev.ev[i].corr, want) != 0)
      all = false;
  }
  ok(all, "events in relay order with consecutive sequence numbers");
  bm_events_clear(&ev);
  ok(ev.n == 0 && ev.lost == 0 && ev.ev != NULL, "clear keeps the buffer");
  bm_relay_table_tick(t, 2, &ev);
  is_int(ev.n, 0, "nothing more");
  bm_events_release(&ev);
  ok(ev.ev == NULL && ev.n == 0 && ev.cap == 0, "release frees the buffer");
  bm_events_release(&ev);
  ok(true, "release twice is harmless");
  bm_relay_table_free(t);
}

static void test_strings(void)
{
  char prefix[41], origin[300];

  memset(prefix, 'p', 40);
  prefix[40] = '\0';
  bm_relay_table_t *t = table_new(&POLICY, prefix);
  struct bm_events ev = {0};
  memset(origin, 'o', 299);
  origin[299] = '\0';

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  bm_relay_table_set_desired(t, 0, 1, origin, 1);
  origin[0] = 'X'; /* the table copied it */
  bm_relay_table_tick(t, 1, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  char want[64];
  snprintf(want, sizeof(want), "%s-1", prefix);
  is_str(e->corr, want, "a 40-byte prefix is used whole");
  is_int(strlen(e->origin), BM_ORIGIN_SIZE - 1, "origin truncated");
  ok(e->origin[0] == 'o', "origin was copied by set_desired");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  t = table_new(&POLICY, "");
  memset(&ev, 0, sizeof(ev));
  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  bm_relay_table_set_desired(t, 0, 1, "x", 1);
  bm_relay_table_tick(t, 1, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, "-1", "empty prefix: \"-1\"");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: ACK and APPLIED events ------------------------------------- */

/* Every commandResponse that matches a command of ours (pending, or recent
 * and not yet answered) yields one ACK; every applied notification one
 * APPLIED, before any STATE, carrying the sequence of our command or 0. */
static void test_ack_applied(void)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};
  char c1[BM_MSG_ID_SIZE], c2[BM_MSG_ID_SIZE];
  struct bm_response r;
  struct bm_notification n;

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_add(t, "fan", 101, 5);
  command(t, 1, 1, 100, c1, &ev);
  is_str(c1, HEX_A "-1", "fan: command " HEX_A "-1");

  r = response(c1, BM_RESULT_SENT, "Command Queued");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 100.5, &ev), BM_APPLY_OK,
         "response to the pending command");
  is_str(kinds(&ev), "ACK", "one ACK");
  ok(ack_is(nth(&ev, 0), 1, c1, 1, BM_RESULT_SENT, "Command Queued"),
     "ACK: relay 1, its id, sequence 1, sent, the gateway's reason");

  /* Superseded before its notification: its answers still count. */
  bm_relay_table_set_desired(t, 1, 0, "off", 101);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101, &ev);
  snprintf(c2, sizeof(c2), "%s", first_kind(&ev, BM_EV_PUBLISH)->corr);
  ok(strcmp(c2, HEX_A "-2") == 0 && first_kind(&ev, BM_EV_PUBLISH)->seq == 2,
     "the superseding command " HEX_A "-2, sequence 2");
  n = notification(c1, 101, 5, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 102, &ev), BM_APPLY_OK,
         "the superseded command's notification applies");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, then STATE");
  ok(applied_is(nth(&ev, 0), 1, c1, 1, 1, -1),
     "APPLIED: relay 1, " HEX_A "-1, sequence 1, -1 -> 1");
  ok(strcmp(nth(&ev, 1)->corr, c1) == 0 && nth(&ev, 1)->status == 1,
     "STATE carries the same id");

  r = response(c2, BM_RESULT_UNAUTHORIZED, "no rights");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 103, &ev), BM_APPLY_OK,
         "a refusal of the pending command");
  is_str(kinds(&ev), "ACK,END", "ACK first, then the END");
  ok(ack_is(nth(&ev, 0), 1, c2, 2, BM_RESULT_UNAUTHORIZED, "no rights"),
     "ACK: " HEX_A "-2, sequence 2, unauthorized, \"no rights\"");
  is_str(nth(&ev, 1)->corr, c2, "END of the same command");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_response(t, &r, 104, &ev), BM_APPLY_DUPLICATE,
         "the refusal again: duplicate");
  is_int(ev.n, 0, "no second ACK");

  n = notification(c2, 101, 5, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 105, &ev), BM_APPLY_OK,
         "the refused command switched the relay after all");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 1, c2, 2, 0, 1),
     "APPLIED: " HEX_A "-2, sequence 2, 1 -> 0");

  /* Answers that match nothing, repeat or are stale: no ACK, no APPLIED. */
  bm_events_clear(&ev);
  r = response(HEX_A "-3", BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 106, &ev), BM_APPLY_UNKNOWN_ID,
         "a response to an id of our form never issued: unknown");
  r = response(c1, BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 106, &ev), BM_APPLY_DUPLICATE,
         "a response to the answered " HEX_A "-1: duplicate");
  n = notification(c1, 101, 5, 1);
  is_int(bm_relay_table_on_notification(t, &n, 106, &ev), BM_APPLY_DUPLICATE,
         HEX_A "-1 again, older than the applied -2: stale");
  n = notification(c2, 101, 6, 1);
  is_int(bm_relay_table_on_notification(t, &n, 106, &ev),
         BM_APPLY_UNKNOWN_RELAY, "a notification for no relay");
  n = notification(c2, 101, 5, 1);
  n.has_state = false;
  is_int(bm_relay_table_on_notification(t, &n, 106, &ev), BM_APPLY_IGNORED,
         "a notification without state");
  is_str(kinds(&ev), "", "none of them yields an event");
  is_int(view_of(t, 1).confirmed, 0, "and the fan stays off");

  /* Changes nobody here asked for: APPLIED with sequence 0. */
  n = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 107, &ev), BM_APPLY_OK,
         "pump: unsolicited 0");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, "", 0, 0, -1),
     "APPLIED: relay 0, no id, sequence 0, -1 -> 0");
  n = notification("otherApp-1", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 108, &ev), BM_APPLY_OK,
         "pump: a foreign id reporting the same state");
  is_str(kinds(&ev), "APPLIED", "APPLIED alone: nothing changed");
  ok(applied_is(nth(&ev, 0), 0, "otherApp-1", 0, 0, 0),
     "APPLIED: the foreign id, sequence 0, 0 -> 0");
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 109, &ev), BM_APPLY_DUPLICATE,
         "the foreign id again: duplicate");
  is_int(ev.n, 0, "no APPLIED");
  ok(op_count(t, BM_OP_SENT) == 1 && op_count(t, BM_OP_UNAUTHORIZED) == 1 &&
         op_count(t, BM_OP_CONFIRMED) == 2 &&
         op_count(t, BM_OP_UNSOLICITED) == 2 && op_count(t, BM_OP_DRIFT) == 0,
     "counted: 1 sent, 1 unauthorized, 2 confirmed, 2 unsolicited, no drift");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: drift ------------------------------------------------------ */

/* A change nobody here asked for, against the state that a confirmation of
 * one of our commands set, is drift: a DRIFT event (after the APPLIED,
 * before the STATE) and the drift counter.  The relay then commands its
 * desired state back as after any other change. */
static void test_drift(void)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  struct bm_notification n;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  n = notification(corr, 101, 4, 1);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  is_str(kinds(&ev), "APPLIED,STATE",
         "our command confirmed 1: no DRIFT (a confirmation of ours never "
         "drifts)");
  bm_relay_table_tick(t, 101, &ev);

  /* Switched off by hand. */
  n = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 200, &ev), BM_APPLY_OK,
         "unsolicited 0 applies");
  is_str(kinds(&ev), "APPLIED,DRIFT,STATE", "APPLIED, DRIFT, STATE");
  ok(applied_is(nth(&ev, 0), 0, "", 0, 0, 1), "APPLIED: no id, 1 -> 0");
  ok(drift_is(nth(&ev, 1), 0, "", 0, 1), "DRIFT: relay 0, 1 -> 0, no id");
  ok(nth(&ev, 2)->status == 0 && nth(&ev, 2)->previous == 1, "STATE 1 -> 0");
  is_int(op_count(t, BM_OP_DRIFT), 1, "drift counted");
  is_int(op_count(t, BM_OP_UNSOLICITED), 1, "and unsolicited");
  is_int(view_of(t, 0).confirmed, 0, "confirmed 0");

  /* The desired state is commanded back; its confirmation is no drift. */
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 200, &ev);
  is_str(kinds(&ev), "PUBLISH", "the drift is corrected by a command");
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, HEX_A "-2") == 0 && e->status == 1 && e->attempt == 1,
     HEX_A "-2, status 1, attempt 1");
  n = notification(e->corr, 101, 4, 1);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 201, &ev);
  is_str(kinds(&ev), "APPLIED,STATE", "its confirmation: no DRIFT");
  is_int(op_count(t, BM_OP_DRIFT), 1, "drift still counted once");

  /* A foreign command against it drifts too, with its id. */
  n = notification("otherApp-7", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 300, &ev);
  is_str(kinds(&ev), "APPLIED,DRIFT,STATE",
         "a foreign id switching it off: APPLIED, DRIFT, STATE");
  ok(drift_is(nth(&ev, 1), 0, "otherApp-7", 0, 1),
     "DRIFT carries the foreign id");
  is_int(op_count(t, BM_OP_DRIFT), 2, "drift counted twice");

  /* After a foreign change, further foreign changes are not drift. */
  n = notification(NULL, 101, 4, 1);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 300.5, &ev);
  is_str(kinds(&ev), "APPLIED,STATE", "unsolicited 1 after it: no DRIFT");
  n = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 300.7, &ev);
  is_str(kinds(&ev), "APPLIED,STATE", "unsolicited 0 after that: no DRIFT");
  is_int(op_count(t, BM_OP_DRIFT), 2, "no drift counted");

  /* Our command answered with the other state (contradicted): the
   * confirmation of ours is no drift either. */
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 301, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, HEX_A "-3") == 0 && e->status == 1,
     "the drift correction " HEX_A "-3");
  n = notification(HEX_A "-3", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 302, &ev);
  is_str(kinds(&ev), "APPLIED,END", "contradicted: APPLIED, END, no DRIFT");
  is_int(op_count(t, BM_OP_DRIFT), 2, "no drift counted");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Duplicates and stale confirmations change nothing, not even whose the
   * state is; nor does a state that was never ours drift. */
  t = table_new(&POLICY, HEX_A);
  memset(&ev, 0, sizeof(ev));
  bm_relay_table_add(t, "pump", 101, 4);
  n = notification(NULL, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 1, &ev);
  n = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 2, &ev);
  is_str(kinds(&ev), "APPLIED,STATE",
         "a relay never commanded: unsolicited changes are no drift");
  command(t, 0, 1, 100, corr, &ev); /* -1, status 1 */
  bm_relay_table_set_desired(t, 0, 0, "off", 101);
  bm_relay_table_tick(t, 101, &ev); /* -2, status 0, supersedes -1 */
  bm_relay_table_set_desired(t, 0, 1, "on", 102);
  bm_relay_table_tick(t, 102, &ev); /* -3, status 1 */
  n = notification(HEX_A "-3", 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 103, &ev);
  n = notification(HEX_A "-2", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(t, &n, 104, &ev), BM_APPLY_DUPLICATE,
         "the stale -2 (status 0) is ignored");
  n = notification(HEX_A "-3", 101, 4, 1);
  is_int(bm_relay_table_on_notification(t, &n, 104, &ev), BM_APPLY_DUPLICATE,
         "-3 redelivered: duplicate");
  is_int(ev.n, 0, "no events");
  n = notification(NULL, 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 105, &ev);
  is_str(kinds(&ev), "APPLIED,DRIFT,STATE",
         "the state is still -3's: an unsolicited 0 drifts");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* relay.h: DRIFT is "a change nobody here asked for [that] contradicts the
 * state our last confirmed command set"; bm_relay_saved.by_command: "the
 * confirmed state came from a command of ours (a later unsolicited change
 * is drift)".  A report that merely repeats that state (the gateway
 * re-announcing its outputs, a device rebooting into the same state)
 * changes nothing it set, so a later change against it is still drift. */
static void test_drift_after_same_state_report(void)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};
  struct bm_relay_saved sv;
  char corr[BM_MSG_ID_SIZE];
  struct bm_notification n;

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  n = notification(corr, 101, 4, 1);
  bm_relay_table_on_notification(t, &n, 101, &ev);
  n = notification(NULL, 101, 4, 1); /* the same state reported again */
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 150, &ev);
  is_str(kinds(&ev), "APPLIED", "a repeated report of 1: APPLIED only");
  bm_relay_table_save(t, 0, &sv);
  ok(sv.by_command, "the state 1 is still the one our command set "
                    "(saved by_command)");
  n = notification(NULL, 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 200, &ev);
  is_str(kinds(&ev), "APPLIED,DRIFT,STATE",
         "switched off by hand after the repeated report: DRIFT");
  is_int(op_count(t, BM_OP_DRIFT), 1, "drift counted");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* ---- tests: persistence ------------------------------------------------ */

static bool saved_equal(const struct bm_relay_saved *a,
                        const struct bm_relay_saved *b)
{
  return a->confirmed == b->confirmed &&
         a->confirmed_seq == b->confirmed_seq &&
         a->by_command == b->by_command &&
         memcmp(a->applied, b->applied, sizeof(a->applied)) == 0;
}

static int applied_slots(const struct bm_relay_saved *s)
{
  int c = 0;
  for (int i = 0; i < BM_RELAY_APPLIED_IDS; i++)
    c += s->applied[i] != 0;
  return c;
}

/* save copies out what the journal keeps of a relay; load into a fresh
 * table gives a relay that saves the same and behaves the same. */
static void test_save_load(void)
{
  bm_relay_table_t *a = table_new(&POLICY, HEX_A);
  bm_relay_table_t *b = table_new(&POLICY, HEX_B);
  struct bm_events ev = {0};
  struct bm_relay_saved sa[2], sb[2], fresh;
  char corr[BM_MSG_ID_SIZE], id[BM_MSG_ID_SIZE];
  struct bm_notification n;

  bm_relay_table_add(a, "pump", 101, 4);
  bm_relay_table_add(a, "fan", 101, 5);
  bm_relay_table_add(b, "pump", 101, 4);
  bm_relay_table_add(b, "fan", 101, 5);
  memset(&fresh, 0x55, sizeof(fresh));
  bm_relay_table_save(a, 0, &fresh);
  ok(fresh.confirmed == -1 && fresh.confirmed_seq == 0 && !fresh.by_command &&
         applied_slots(&fresh) == 0,
     "a new relay saves: unknown, sequence 0, not ours, no applied ids");

  /* pump: confirmed 1 by our command 3 (after two superseded ones). */
  command(a, 0, 1, 100, corr, &ev);
  bm_relay_table_set_desired(a, 0, 0, "off", 101);
  bm_relay_table_tick(a, 101, &ev);
  bm_relay_table_set_desired(a, 0, 1, "on", 102);
  bm_relay_table_tick(a, 102, &ev);
  n = notification(HEX_A "-3", 101, 4, 1);
  bm_relay_table_on_notification(a, &n, 103, &ev);
  /* fan: five foreign ids, the last four are remembered. */
  for (int i = 1; i <= 5; i++) {
    snprintf(id, sizeof(id), "otherApp-%d", i);
    n = notification(id, 101, 5, i % 2);
    bm_relay_table_on_notification(a, &n, 103 + i, &ev);
  }
  bm_relay_table_save(a, 0, &sa[0]);
  bm_relay_table_save(a, 1, &sa[1]);
  ok(sa[0].confirmed == 1 && sa[0].confirmed_seq == 3 && sa[0].by_command &&
         applied_slots(&sa[0]) == 0,
     "pump saves: 1, sequence 3, by our command, no foreign ids");
  ok(sa[1].confirmed == 1 && sa[1].confirmed_seq == 0 && !sa[1].by_command &&
         applied_slots(&sa[1]) == 4,
     "fan saves: 1, sequence 0, not ours, four foreign ids");
  bool distinct = true;
  for (int i = 0; i < BM_RELAY_APPLIED_IDS; i++)
    for (int k = i + 1; k < BM_RELAY_APPLIED_IDS; k++)
      if (sa[1].applied[i] == sa[1].applied[k])
        distinct = false;
  ok(distinct, "four distinct hashes");

  bm_relay_table_raise_seq(b, bm_relay_table_last_seq(a));
  bm_relay_table_load(b, 0, &sa[0]);
  bm_relay_table_load(b, 1, &sa[1]);
  bm_relay_table_save(b, 0, &sb[0]);
  bm_relay_table_save(b, 1, &sb[1]);
  ok(saved_equal(&sa[0], &sb[0]), "pump: load then save gives it back");
  ok(saved_equal(&sa[1], &sb[1]), "fan: load then save gives it back");
  struct bm_relay_view v = view_of(b, 0);
  ok(v.confirmed == 1 && v.desired == -1 && v.pending == 0 && !v.stopped,
     "loaded pump: confirmed 1, no intent, idle");
  ok(bm_relay_table_next_deadline(b) == HUGE_VAL, "load sets no timer");
  ok(!bm_relay_table_set_desired(b, 0, 1, "on", 200),
     "the loaded state is known: desired 1 needs no command");
  bm_relay_table_set_connected(b, true, true, 200, &ev);
  bm_events_clear(&ev);
  bm_relay_table_tick(b, 200, &ev);
  is_int(ev.n, 0, "and none goes out");

  /* The same answers get the same treatment in both tables. */
  for (int k = 0; k < 2; k++) {
    bm_relay_table_t *t = k ? b : a;
    const char *which = k ? "restored" : "live";
    n = notification(HEX_A "-2", 101, 4, 0);
    bm_events_clear(&ev);
    is_int(bm_relay_table_on_notification(t, &n, 300, &ev),
           BM_APPLY_DUPLICATE, "%s: the older " HEX_A "-2 is stale", which);
    for (int i = 2; i <= 5; i++) {
      snprintf(id, sizeof(id), "otherApp-%d", i);
      n = notification(id, 101, 5, 0);
      is_int(bm_relay_table_on_notification(t, &n, 301, &ev),
             BM_APPLY_DUPLICATE, "%s: %s is a duplicate", which, id);
    }
    is_int(ev.n, 0, "%s: no events", which);
    n = notification("otherApp-1", 101, 5, 0);
    is_int(bm_relay_table_on_notification(t, &n, 302, &ev), BM_APPLY_OK,
           "%s: otherApp-1, pushed out, applies again", which);
    n = notification("otherApp-3", 101, 5, 1);
    is_int(bm_relay_table_on_notification(t, &n, 303, &ev),
           BM_APPLY_DUPLICATE, "%s: otherApp-3 is still remembered", which);
    n = notification("otherApp-2", 101, 5, 1);
    is_int(bm_relay_table_on_notification(t, &n, 304, &ev), BM_APPLY_OK,
           "%s: otherApp-2, the oldest, was pushed out by otherApp-1",
           which);
    n = notification(NULL, 101, 4, 0);
    bm_events_clear(&ev);
    bm_relay_table_on_notification(t, &n, 305, &ev);
    is_str(kinds(&ev), "APPLIED,DRIFT,STATE",
           "%s: the pump's state was our command's: unsolicited 0 drifts",
           which);
  }
  bm_relay_table_save(a, 1, &sa[1]);
  bm_relay_table_save(b, 1, &sb[1]);
  ok(saved_equal(&sa[1], &sb[1]),
     "after the same answers both save the same fan");

  /* A partly filled ring keeps its order: the next id pushes out the
   * oldest one, not a newer one. */
  bm_relay_table_t *c = table_new(&POLICY, HEX_A);
  bm_relay_table_t *d = table_new(&POLICY, HEX_B);
  bm_relay_table_add(c, "fan", 101, 5);
  bm_relay_table_add(d, "fan", 101, 5);
  n = notification("x-1", 101, 5, 1);
  bm_relay_table_on_notification(c, &n, 1, &ev);
  n = notification("x-2", 101, 5, 0);
  bm_relay_table_on_notification(c, &n, 2, &ev);
  bm_relay_table_save(c, 0, &sa[0]);
  is_int(applied_slots(&sa[0]), 2, "two foreign ids saved");
  bm_relay_table_load(d, 0, &sa[0]);
  bm_relay_table_save(d, 0, &sb[0]);
  ok(saved_equal(&sa[0], &sb[0]), "two ids: load then save gives it back");
  for (int i = 3; i <= 5; i++) {
    snprintf(id, sizeof(id), "x-%d", i);
    n = notification(id, 101, 5, i % 2);
    bm_relay_table_on_notification(c, &n, i, &ev);
    bm_relay_table_on_notification(d, &n, i, &ev);
  }
  n = notification("x-2", 101, 5, 0);
  is_int(bm_relay_table_on_notification(d, &n, 6, &ev), BM_APPLY_DUPLICATE,
         "restored: x-2 is still remembered after three more");
  n = notification("x-1", 101, 5, 0);
  is_int(bm_relay_table_on_notification(d, &n, 7, &ev), BM_APPLY_OK,
         "restored: x-1, the oldest, was pushed out");
  bm_relay_table_on_notification(c, &n, 7, &ev);
  bm_relay_table_save(c, 0, &sa[0]);
  bm_relay_table_save(d, 0, &sb[0]);
  ok(saved_equal(&sa[0], &sb[0]), "and both tables save the same");
  bm_relay_table_free(c);
  bm_relay_table_free(d);

  bm_events_release(&ev);
  bm_relay_table_free(a);
  bm_relay_table_free(b);
}

/* The ordering rule across a restart: a table restored from the journal
 * (saved state, raise_seq to the old table's last sequence) still knows
 * the old table's commands by their form, so their late notifications
 * never roll the relay back; its own commands continue the sequence. */
static void test_restart_ordering(void)
{
  bm_relay_table_t *a = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};
  struct bm_relay_saved sv[2];
  char corr[BM_MSG_ID_SIZE];
  struct bm_notification n;

  bm_relay_table_add(a, "pump", 101, 4);
  bm_relay_table_add(a, "fan", 101, 5);
  for (int i = 1; i <= 5; i++) {
    command(a, 0, i % 2, 100 * i, corr, &ev);
    n = notification(corr, 101, 4, i % 2);
    bm_relay_table_on_notification(a, &n, 100 * i + 1, &ev);
  }
  is_str(corr, HEX_A "-5", "table A issued " HEX_A "-1 .. -5");
  is_int(bm_relay_table_last_seq(a), 5, "A's last sequence is 5");
  n = notification("otherApp-1", 101, 5, 1);
  bm_relay_table_on_notification(a, &n, 600, &ev);
  bm_relay_table_save(a, 0, &sv[0]);
  bm_relay_table_save(a, 1, &sv[1]);

  bm_relay_table_t *b = table_new(&POLICY, HEX_B);
  bm_relay_table_add(b, "pump", 101, 4);
  bm_relay_table_add(b, "fan", 101, 5);
  is_int(bm_relay_table_last_seq(b), 0, "a new table's last sequence is 0");
  bm_relay_table_raise_seq(b, bm_relay_table_last_seq(a));
  bm_relay_table_load(b, 0, &sv[0]);
  bm_relay_table_load(b, 1, &sv[1]);
  bm_relay_table_free(a);
  is_int(bm_relay_table_last_seq(b), 5, "B continues from 5");
  is_int(view_of(b, 0).confirmed, 1, "B: pump confirmed 1 (A's -5)");

  uint64_t dup = op_count(b, BM_OP_DUPLICATE);
  n = notification(HEX_A "-2", 101, 4, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(b, &n, 1000, &ev), BM_APPLY_DUPLICATE,
         "A's -2 arrives late with the other status: a duplicate");
  is_int(view_of(b, 0).confirmed, 1, "no rollback");
  is_int(ev.n, 0, "no APPLIED, no STATE");
  n = notification(HEX_A "-5", 101, 4, 1);
  is_int(bm_relay_table_on_notification(b, &n, 1001, &ev), BM_APPLY_DUPLICATE,
         "A's -5 redelivered: a duplicate");
  n = notification("otherApp-1", 101, 5, 0);
  is_int(bm_relay_table_on_notification(b, &n, 1002, &ev), BM_APPLY_DUPLICATE,
         "a foreign id A applied: a duplicate in B too");
  is_int(op_count(b, BM_OP_DUPLICATE), dup + 3, "three duplicates counted");
  ok(op_count(b, BM_OP_UNSOLICITED) == 0 && op_count(b, BM_OP_CONFIRMED) == 0,
     "none counted unsolicited or confirmed");
  bm_relay_table_tick(b, 1002, &ev);
  is_int(ev.n, 0, "no event, no command");

  /* B's own commands continue at 6. */
  bm_relay_table_set_connected(b, true, true, 1003, &ev);
  ok(bm_relay_table_set_desired(b, 0, 0, "off", 1003), "B: pump off");
  bm_relay_table_tick(b, 1003, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(strcmp(e->corr, HEX_B "-6") == 0 && e->seq == 6,
     "B's first command is " HEX_B "-6, sequence 6 (got %s)", e->corr);
  n = notification(HEX_B "-6", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(b, &n, 1004, &ev);
  ok(ev.n == 2 && applied_is(nth(&ev, 0), 0, HEX_B "-6", 6, 0, 1),
     "its confirmation: APPLIED sequence 6, then STATE");
  n = notification(HEX_A "-3", 101, 4, 1);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(b, &n, 1005, &ev), BM_APPLY_DUPLICATE,
         "A's -3 after B's -6: stale");
  is_int(view_of(b, 0).confirmed, 0, "no rollback");

  /* An id of the plugin's form beyond B's last sequence is not ours. */
  n = notification(HEX_A "-9", 101, 5, 0);
  bm_events_clear(&ev);
  is_int(bm_relay_table_on_notification(b, &n, 1006, &ev), BM_APPLY_OK,
         "fan: " HEX_A "-9 (beyond the last sequence 6) applies");
  ok(applied_is(nth(&ev, 0), 1, HEX_A "-9", 0, 0, 1),
     "as somebody else's: APPLIED with sequence 0");
  is_int(op_count(b, BM_OP_UNSOLICITED), 1, "counted unsolicited");
  bm_events_release(&ev);
  bm_relay_table_free(b);
}

static void test_pending_of(void)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};
  struct bm_command_saved c;

  bm_relay_table_add(t, "pump", 101, 4);
  ok(!bm_relay_table_pending_of(t, 0, &c), "nothing pending: false");
  bm_relay_table_set_connected(t, true, true, 100, &ev);
  bm_relay_table_set_desired(t, 0, 1, "trigger overheat", 100);
  ok(!bm_relay_table_pending_of(t, 0, &c), "marked, not yet ticked: false");
  bm_relay_table_tick(t, 100, &ev);
  memset(&c, 0x55, sizeof(c));
  ok(bm_relay_table_pending_of(t, 0, &c), "a command pending: true");
  is_str(c.corr, HEX_A "-1", "its correlationId");
  ok(c.seq == 1 && c.status == 1 && c.attempt == 1 && !c.acked,
     "sequence 1, status 1, attempt 1, not acked");
  ok(c.published_at == 100, "published at 100");
  is_str(c.origin, "trigger overheat", "the origin");

  bm_relay_table_set_connected(t, false, false, 102, &ev);
  bm_relay_table_set_connected(t, true, false, 102, &ev); /* republished */
  bm_relay_table_pending_of(t, 0, &c);
  ok(c.published_at == 100 && c.attempt == 1 &&
         strcmp(c.corr, HEX_A "-1") == 0,
     "republished: the same command, first published at 100 (got %g)",
     c.published_at);
  struct bm_response r = response(HEX_A "-1", BM_RESULT_SENT, "");
  bm_relay_table_on_response(t, &r, 103, &ev);
  bm_relay_table_pending_of(t, 0, &c);
  ok(c.acked, "after its response: acked");

  bm_relay_table_tick(t, 112, &ev); /* 102 + 10: no notification */
  ok(!bm_relay_table_pending_of(t, 0, &c), "timed out: nothing pending");
  bm_relay_table_tick(t, 113, &ev); /* the retry */
  ok(bm_relay_table_pending_of(t, 0, &c), "the retry is pending");
  ok(strcmp(c.corr, HEX_A "-2") == 0 && c.seq == 2 && c.attempt == 2 &&
         !c.acked && c.published_at == 113,
     "the retry: " HEX_A "-2, sequence 2, attempt 2, not acked, at 113");

  bm_relay_table_set_desired(t, 0, 0, "off", 114);
  ok(!bm_relay_table_pending_of(t, 0, &c), "superseded: nothing pending");
  bm_relay_table_tick(t, 114, &ev);
  bm_relay_table_pending_of(t, 0, &c);
  ok(strcmp(c.corr, HEX_A "-3") == 0 && c.status == 0 && c.attempt == 1,
     "the new command " HEX_A "-3, status 0, attempt 1");
  is_str(c.origin, "off", "with its origin");
  struct bm_notification n = notification(HEX_A "-3", 101, 4, 0);
  bm_relay_table_on_notification(t, &n, 115, &ev);
  ok(!bm_relay_table_pending_of(t, 0, &c), "confirmed: nothing pending");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static struct bm_command_saved saved_cmd(const char *corr, uint64_t seq,
                                         int status, int attempt, bool acked,
                                         double published_at,
                                         const char *origin)
{
  struct bm_command_saved c;
  memset(&c, 0, sizeof(c));
  snprintf(c.corr, sizeof(c.corr), "%s", corr);
  c.seq = seq;
  c.status = status;
  c.attempt = attempt;
  c.acked = acked;
  c.published_at = published_at;
  snprintf(c.origin, sizeof(c.origin), "%s", origin);
  return c;
}

/* A table restored with a resumed command behaves as the live table would
 * have. */
static bm_relay_table_t *resumed_table(const struct bm_command_saved *c)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_B);
  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_raise_seq(t, c->seq);
  if (bm_relay_table_resume(t, 0, c) != 0) {
    printf("Bail out! bm_relay_table_resume failed\n");
    exit(1);
  }
  return t;
}

/* A resumed "on" command whose interlock partner is on (switched by hand
 * while collectd was down) is not sent again: it ends refused, with its
 * correlationId, and the relay stops. */
static void test_resume_interlocked(void)
{
  struct bm_events ev = {0};
  struct bm_command_saved c = saved_cmd(HEX_A "-7", 7, 1, 1, false, 100, "test");
  bm_relay_table_t *t = table_new(&POLICY, HEX_B);
  int ids[2] = {0, 1};
  const struct bm_event *e;

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_add(t, "heater", 102, 1);
  bm_relay_table_interlock(t, ids, 2);
  bm_relay_table_raise_seq(t, c.seq);
  ok(bm_relay_table_resume(t, 0, &c) == 0, "resumed interlocked: resumed");
  struct bm_notification n = notification(NULL, 102, 1, 1);
  bm_relay_table_on_notification(t, &n, 101, &ev); /* the heater is on */
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 102, &ev);
  is_int(count_kind(&ev, BM_EV_PUBLISH), 0,
         "resumed interlocked: the pump's on is not published again");
  e = first_kind(&ev, BM_EV_END);
  ok(e && e->relay == 0 && e->outcome == BM_OP_REFUSED &&
         e->severity == BM_SEV_FAILURE && strcmp(e->corr, HEX_A "-7") == 0 &&
         strstr(e->reason, "interlocked with relay \"heater\"") != NULL,
     "resumed interlocked: it ends refused, naming its id and the heater (%s)",
     e ? e->reason : "no END");
  struct bm_relay_view v = view_of(t, 0);
  ok(v.pending == 0 && v.stopped, "resumed interlocked: nothing pending, stopped");
  struct bm_command_saved d;
  double ended;
  ok(bm_relay_table_doubt_of(t, 0, 102, &d, &ended) &&
         strcmp(d.corr, HEX_A "-7") == 0 && ended == 102,
     "resumed interlocked: it may have gone out before: in doubt from 102");
  is_int((int)op_count(t, BM_OP_REFUSED), 1, "resumed interlocked: counted refused");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 200, &ev);
  is_int((int)ev.n, 0, "resumed interlocked: no timer left behind");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_resume(void)
{
  struct bm_events lev = {0}, ev = {0};
  struct bm_command_saved c, got;
  char corr[BM_MSG_ID_SIZE];
  const struct bm_event *e;

  /* An old command: both deadlines lie in the past.  The live table and
   * the restored one time it out at their first tick alike, and retry
   * with a new id. */
  bm_relay_table_t *live = table_new(&POLICY, HEX_A);
  bm_relay_table_add(live, "pump", 101, 4);
  command(live, 0, 1, 100, corr, &lev);
  c = saved_cmd(HEX_A "-1", 1, 1, 1, false, 100, "test");
  bm_relay_table_t *t = resumed_table(&c);
  struct bm_relay_view v = view_of(t, 0);
  ok(v.pending == 1 && v.desired == 1 && v.confirmed == -1 && !v.stopped,
     "resumed: pending, desired its status 1, confirmed unknown");
  ok(bm_relay_table_pending_of(t, 0, &got) &&
         strcmp(got.corr, HEX_A "-1") == 0 && got.seq == 1 &&
         got.status == 1 && got.attempt == 1 && !got.acked &&
         got.published_at == 100,
     "pending_of gives the resumed command back");
  is_str(got.origin, "resumed after restart: test",
         "origin \"resumed after restart: <origin>\"");
  struct bm_command_saved twice;
  bm_relay_table_t *again = resumed_table(&got);
  ok(bm_relay_table_pending_of(again, 0, &twice), "resumed once more");
  is_str(twice.origin, "resumed after restart: test",
         "a second restart does not say it twice");
  bm_relay_table_free(again);
  ok(bm_relay_table_next_deadline(t) == bm_relay_table_next_deadline(live) &&
         bm_relay_table_next_deadline(t) == 105,
     "the same deadline as live: 100 + 5 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&lev);
  bm_relay_table_tick(live, 200, &lev);
  bm_relay_table_tick(t, 200, &ev); /* disconnected, as after a start */
  is_str(kinds(&ev), "END", "the first tick times the resumed command out");
  const struct bm_event *le = nth(&lev, 0), *re = nth(&ev, 0);
  ok(lev.n == 1 && re->outcome == le->outcome &&
         re->outcome == BM_OP_TIMEOUT && re->severity == le->severity &&
         re->status == le->status && re->attempt == le->attempt &&
         strcmp(re->corr, le->corr) == 0 &&
         strcmp(re->reason, le->reason) == 0,
     "exactly the live END: timeout, %s, attempt %d, \"%s\"", re->corr,
     re->attempt, re->reason);
  is_str(re->origin, "resumed after restart: test", "with the resumed origin");
  ok(bm_relay_table_next_deadline(t) == 201 &&
         bm_relay_table_next_deadline(live) == 201,
     "both retry at 201 (got %g)", bm_relay_table_next_deadline(t));
  is_int(op_count(t, BM_OP_TIMEOUT), 1, "timeout counted");
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, true, 201, &ev);
  is_int(ev.n, 0, "connecting afterwards republishes nothing: it ended");
  bm_events_clear(&lev);
  bm_relay_table_tick(live, 201, &lev);
  bm_relay_table_tick(t, 201, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(ev.n == 1 && strcmp(e->corr, HEX_B "-2") == 0 && e->seq == 2 &&
         e->status == 1 && e->attempt == 2 && !e->republish,
     "the retry is a new command " HEX_B "-2, attempt 2 (got %s)", e->corr);
  ok(lev.n == 1 && nth(&lev, 0)->attempt == 2 && nth(&lev, 0)->status == 1,
     "as live: attempt 2, status 1");
  is_str(e->origin, "resumed after restart: test", "the retry's origin");
  bm_events_release(&lev);
  bm_relay_table_free(live);
  bm_relay_table_free(t);

  /* Old and acked: it times out for want of its notification; its last
   * attempt gives up as it would have live. */
  c = saved_cmd(HEX_A "-4", 4, 0, 2, true, 100, "x");
  t = resumed_table(&c);
  ok(bm_relay_table_next_deadline(t) == 110, "acked: deadline 110 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 109.9, &ev);
  is_int(ev.n, 0, "nothing before 110");
  bm_relay_table_tick(t, 110, &ev);
  e = first_kind(&ev, BM_EV_END);
  ok(ev.n == 1 && e->outcome == BM_OP_TIMEOUT && e->attempt == 2 &&
         strstr(e->reason, "notification") != NULL,
     "at 110: timeout for want of the notification, attempt 2");
  ok(bm_relay_table_next_deadline(t) == 112,
     "the second backoff, 2 s: retry at 112 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_relay_table_free(t);
  c = saved_cmd(HEX_A "-4", 4, 0, 3, false, 100, "x");
  t = resumed_table(&c);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 300, &ev);
  ok(ev.n == 2 && nth(&ev, 0)->outcome == BM_OP_TIMEOUT &&
         nth(&ev, 1)->outcome == BM_OP_GAVE_UP,
     "the last attempt (3 of 3) times out and gives up");
  ok(view_of(t, 0).stopped, "stopped");
  bm_relay_table_free(t);

  /* A young command: published once more at the connection, with its own
   * id, even when the broker kept the session; then not again. */
  c = saved_cmd(HEX_A "-7", 7, 0, 2, false, 499, "trigger overheat");
  t = resumed_table(&c);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 500, &ev);
  is_int(ev.n, 0, "young: no timeout at the first tick (deadline 504)");
  bm_relay_table_set_connected(t, true, true, 500.5, &ev);
  is_str(kinds(&ev), "PUBLISH", "connected, session present: one PUBLISH");
  e = nth(&ev, 0);
  ok(e->republish && strcmp(e->corr, HEX_A "-7") == 0 && e->seq == 7 &&
         e->status == 0 && e->attempt == 2 && e->relay == 0,
     "a republish of " HEX_A "-7, sequence 7, status 0, attempt 2");
  is_str(e->origin, "resumed after restart: trigger overheat",
         "origin \"resumed after restart: trigger overheat\"");
  is_int(op_count(t, BM_OP_PUBLISHED), 1, "counted as published");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 500.5, &ev);
  bm_relay_table_tick(t, 504, &ev);
  is_int(ev.n, 0, "no new command; no timeout at the old deadline 504");
  ok(bm_relay_table_next_deadline(t) <= 505.5,
     "a wake-up by the republished deadline 505.5 (got %g)",
     bm_relay_table_next_deadline(t));
  bm_relay_table_set_connected(t, false, false, 501, &ev);
  bm_relay_table_set_connected(t, true, true, 501, &ev);
  is_int(ev.n, 0, "the second connection: not republished again");
  struct bm_response r = response(HEX_A "-7", BM_RESULT_SENT, "");
  is_int(bm_relay_table_on_response(t, &r, 502, &ev), BM_APPLY_OK,
         "its response applies");
  ok(ev.n == 1 && ack_is(nth(&ev, 0), 0, HEX_A "-7", 7, BM_RESULT_SENT, ""),
     "ACK of " HEX_A "-7, sequence 7");
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 503, &ev);
  is_int(ev.n, 0, "acked, session lost: not republished");
  struct bm_notification n = notification(HEX_A "-7", 101, 4, 0);
  is_int(bm_relay_table_on_notification(t, &n, 504, &ev), BM_APPLY_OK,
         "its confirmation applies");
  is_str(kinds(&ev), "APPLIED,STATE", "APPLIED, STATE");
  ok(applied_is(nth(&ev, 0), 0, HEX_A "-7", 7, 0, -1),
     "APPLIED " HEX_A "-7, sequence 7, -1 -> 0");
  v = view_of(t, 0);
  ok(v.confirmed == 0 && v.desired == 0 && v.pending == 0 && !v.stopped,
     "confirmed 0, done");
  is_int(op_count(t, BM_OP_CONFIRMED), 1, "confirmed counted");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 600, &ev);
  is_int(ev.n, 0, "nothing more to do");
  bm_relay_table_set_desired(t, 0, 1, "on", 601);
  bm_relay_table_tick(t, 601, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, HEX_B "-8",
         "the next command is " HEX_B "-8");
  bm_relay_table_free(t);

  /* Young and acked: republished at the connection all the same. */
  c = saved_cmd(HEX_A "-2", 2, 1, 1, true, 499, "x");
  t = resumed_table(&c);
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, true, 500, &ev);
  ok(ev.n == 1 && nth(&ev, 0)->republish &&
         strcmp(nth(&ev, 0)->corr, HEX_A "-2") == 0,
     "acked before the restart: republished once at the connection");
  bm_events_clear(&ev);
  bm_relay_table_set_connected(t, true, false, 501, &ev);
  is_int(ev.n, 0, "then not again");
  bm_relay_table_free(t);

  /* Answered with the other state: contradicted, retried with a new id. */
  c = saved_cmd(HEX_A "-3", 3, 1, 1, false, 99.5, "x");
  t = resumed_table(&c);
  bm_relay_table_set_connected(t, true, true, 100, &ev);
  n = notification(HEX_A "-3", 101, 4, 0);
  bm_events_clear(&ev);
  bm_relay_table_on_notification(t, &n, 100.5, &ev);
  is_str(kinds(&ev), "APPLIED,STATE,END", "contradicted: APPLIED, STATE, END");
  ok(nth(&ev, 2)->outcome == BM_OP_CONTRADICTED, "END contradicted");
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 101.5, &ev);
  e = first_kind(&ev, BM_EV_PUBLISH);
  ok(ev.n == 1 && strcmp(e->corr, HEX_B "-4") == 0 && e->attempt == 2,
     "retried after the backoff as " HEX_B "-4, attempt 2");

  /* A second resume on a relay with a pending command is refused. */
  c = saved_cmd(HEX_A "-9", 9, 0, 1, false, 101, "y");
  is_int(bm_relay_table_resume(t, 0, &c), -1,
         "resume with a command pending: -1");
  ok(bm_relay_table_pending_of(t, 0, &got) &&
         strcmp(got.corr, HEX_B "-4") == 0 && view_of(t, 0).desired == 1,
     "and the pending command is unchanged");
  bm_relay_table_free(t);

  /* The prefix does not overflow the origin. */
  char origin[BM_ORIGIN_SIZE];
  memset(origin, 'o', sizeof(origin) - 1);
  origin[sizeof(origin) - 1] = '\0';
  c = saved_cmd(HEX_A "-1", 1, 1, 1, false, 100, origin);
  t = resumed_table(&c);
  bm_relay_table_pending_of(t, 0, &got);
  ok(strlen(got.origin) == BM_ORIGIN_SIZE - 1 &&
         strncmp(got.origin, "resumed after restart: ooo", 26) == 0,
     "a full origin: truncated to %d bytes after the prefix",
     BM_ORIGIN_SIZE - 1);
  bm_relay_table_free(t);
  bm_events_release(&ev);
}

static void test_raise_seq(void)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};

  bm_relay_table_add(t, "pump", 101, 4);
  is_int(bm_relay_table_last_seq(t), 0, "a new table: last_seq 0");
  bm_relay_table_raise_seq(t, 10);
  is_int(bm_relay_table_last_seq(t), 10, "raised to 10");
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  bm_relay_table_set_desired(t, 0, 1, "x", 1);
  bm_relay_table_tick(t, 1, &ev);
  ok(strcmp(first_kind(&ev, BM_EV_PUBLISH)->corr, HEX_A "-11") == 0 &&
         first_kind(&ev, BM_EV_PUBLISH)->seq == 11,
     "the next command is -11");
  is_int(bm_relay_table_last_seq(t), 11, "last_seq 11");
  bm_relay_table_raise_seq(t, 5);
  is_int(bm_relay_table_last_seq(t), 11, "raise_seq(5) never lowers");
  bm_relay_table_raise_seq(t, 11);
  bm_relay_table_raise_seq(t, 0);
  is_int(bm_relay_table_last_seq(t), 11, "nor do raise_seq(11) and (0)");
  bm_relay_table_set_desired(t, 0, 0, "x", 2);
  bm_events_clear(&ev);
  bm_relay_table_tick(t, 2, &ev);
  is_str(first_kind(&ev, BM_EV_PUBLISH)->corr, HEX_A "-12",
         "the sequence went on at 12");
  /* A crafted journal's sequence near 2^64 would wrap the next to 0. */
  bm_relay_table_raise_seq(t, UINT64_MAX);
  ok(bm_relay_table_last_seq(t) == BM_RELAY_SEQ_MAX,
     "raise_seq(2^64-1) raises to BM_RELAY_SEQ_MAX (2^63) only");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

/* A resumed command's attempt beyond the Retries budget (a journal of a
 * larger Retries, or a crafted INT32_MAX) is the last one: its timeout
 * gives up, and nothing overflows. */
static void test_resume_attempt_bound(void)
{
  struct bm_events ev = {0};
  struct bm_command_saved c = saved_cmd(HEX_A "-1", 1, 1, INT32_MAX, false,
                                        100, "test"),
                          got;
  bm_relay_table_t *t = resumed_table(&c);

  memset(&got, 0, sizeof(got));
  ok(bm_relay_table_pending_of(t, 0, &got), "resumed");
  is_int(got.attempt, POLICY.retries + 1, "... as the last attempt the "
                                          "budget allows");
  bm_relay_table_tick(t, 200, &ev);
  is_str(kinds(&ev), "END,END", "its timeout ends it, then the relay gives up");
  ok(nth(&ev, 1)->outcome == BM_OP_GAVE_UP, "gave up");
  bm_events_release(&ev);
  bm_relay_table_free(t);

  /* Its sequence is bounded as a SEQ record's is (raise_seq). */
  c = saved_cmd(HEX_A "-18446744073709551615", UINT64_MAX, 1, 1, false, 100,
                "test");
  t = resumed_table(&c);
  ok(bm_relay_table_last_seq(t) == BM_RELAY_SEQ_MAX,
     "a resumed command numbered 2^64-1 raises the sequence to 2^63 only");
  bm_relay_table_free(t);
}

/* A command whose journal record could not be made durable is aborted
 * before it goes out: retired, counted failed, the relay stopped. */
static void test_abort(void)
{
  bm_relay_table_t *t = table_new(&POLICY, HEX_A);
  struct bm_events ev = {0};
  char corr[BM_MSG_ID_SIZE];
  struct bm_relay_view v;

  bm_relay_table_add(t, "pump", 101, 4);
  bm_relay_table_add(t, "fan", 101, 5);
  ok(!bm_relay_table_abort(t, 0, HEX_A "-1"), "nothing pending: false");
  command(t, 0, 1, 100, corr, &ev);
  ok(!bm_relay_table_abort(t, 0, HEX_A "-2"), "another id: false");
  ok(!bm_relay_table_abort(t, 0, ""), "an empty id: false");
  ok(!bm_relay_table_abort(t, 1, corr), "the right id on another relay: false");
  v = view_of(t, 0);
  ok(v.pending == 1 && !v.stopped && op_count(t, BM_OP_FAILED) == 0,
     "refused aborts change nothing: pending, not stopped, nothing counted");
  ok(bm_relay_table_abort(t, 0, corr), "the pending command: true");
  v = view_of(t, 0);
  ok(v.pending == 0 && v.stopped && v.desired == 1 && v.confirmed == -1,
     "nothing pending, stopped, desired kept");
  is_int(op_count(t, BM_OP_FAILED), 1, "counted failed");
  ok(!bm_relay_table_abort(t, 0, corr), "aborting it again: false");
  is_int(op_count(t, BM_OP_FAILED), 1, "counted once");

  bm_events_clear(&ev);
  bm_relay_table_tick(t, 105, &ev);
  bm_relay_table_tick(t, 110, &ev);
  bm_relay_table_tick(t, 500, &ev);
  bm_relay_table_set_connected(t, false, false, 501, &ev);
  bm_relay_table_set_connected(t, true, false, 502, &ev);
  bm_relay_table_tick(t, 502, &ev);
  is_int(ev.n, 0, "no timeout, no retry, no republish: no events");
  ok(op_count(t, BM_OP_TIMEOUT) == 0 && op_count(t, BM_OP_PUBLISHED) == 1,
     "no timeout counted, published once");
  ok(bm_relay_table_set_desired(t, 0, 1, "again", 600),
     "the same intent again clears the stop");
  bm_relay_table_tick(t, 600, &ev);
  const struct bm_event *e = first_kind(&ev, BM_EV_PUBLISH);
  ok(ev.n == 1 && strcmp(e->corr, HEX_A "-2") == 0 && e->attempt == 1,
     "a new command " HEX_A "-2, attempt 1");
  bm_events_release(&ev);
  bm_relay_table_free(t);
}

static void test_corr_seq(void)
{
  static const struct {
    const char *corr;
    uint64_t seq;
  } cases[] = {
      {HEX_A "-1", 1},
      {HEX_B "-42", 42},
      {"0000000000000000-7", 7},
      {HEX_A "-18446744073709551615", UINT64_MAX},
      {HEX_A "-18446744073709551616", 0}, /* overflow */
      {HEX_A "-99999999999999999999999", 0},
      {"0123456789ABCDEF-1", 0}, /* uppercase hex */
      {"0123456789abcdeF-1", 0},
      {"0123456789abcde-1", 0},   /* 15 hex digits */
      {"0123456789abcdef0-1", 0}, /* 17 */
      {"g123456789abcdef-1", 0},
      {HEX_A "-0", 0},
      {HEX_A "-01", 0},
      {HEX_A "-1x", 0}, /* trailing junk */
      {HEX_A "-1 ", 0},
      {HEX_A "-1-2", 0},
      {HEX_A "-", 0},
      {HEX_A "--1", 0},
      {HEX_A "-+1", 0},
      {HEX_A "- 1", 0},
      {HEX_A "_1", 0},
      {HEX_A, 0},
      {"0123456789abcd", 0},
      {"t-1", 0},
      {"", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint64_t got = bm_relay_corr_seq(cases[i].corr);
    ok(got == cases[i].seq, "bm_relay_corr_seq(\"%s\") = %llu (got %llu)",
       cases[i].corr, (unsigned long long)cases[i].seq,
       (unsigned long long)got);
  }
}

/* ---- the property test -------------------------------------------------- */

#define P_RELAYS 3

/* What the random gateway may answer, and what else happens. */
enum p_mode {
  P_RING,    /* prefix "prop": answers to pending and recent commands only */
  P_HISTORY, /* a 16-hex prefix: answers to any command ever issued */
  P_RESTART  /* as P_HISTORY, and the table restarts from its saved state */
};
static const char *p_mode_names[] = {
    "answers to pending/recent commands",
    "answers to any command ever issued",
    "any command, with restarts"};

static uint64_t rng_state;
static uint64_t rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}
static unsigned rnd(unsigned n) { return (unsigned)(rng() % n); }

struct p_cmd {
  char corr[BM_MSG_ID_SIZE];
  int relay;
  int status;
  int attempt;
  double published;
  double ack_deadline;     /* reset by a republish */
  double confirm_deadline; /* reset by a republish */
  unsigned gen;            /* the table (restart generation) that knows it */
  bool resumed;            /* resumed, not yet republished */
  bool response_seen;
  bool notif_applied;
};

struct p_relay {
  int confirmed;        /* model of the confirmed state */
  uint64_t applied_seq; /* seq of the last applied own confirmation */
  bool by_command;      /* confirmed was set by a confirmation of ours */
  uint64_t pending;     /* seq of the pending command, 0 none */
  uint64_t issued[8];   /* the last own commands, newest last */
  int n_issued;
  double retry_at;      /* 0: none expected */
  bool force;           /* superseded: a command is due even if confirmed */
  int foreign[4];       /* the last applied foreign ids */
  int n_foreign;
};

enum p_check {
  PC_RETURN,  /* return values of on_response / on_notification / abort */
  PC_STATE,   /* confirmed state per the ordering rule */
  PC_PENDING, /* pending is 0 or 1 and the one we know */
  PC_EVENTS,  /* events well-formed: ACK / APPLIED for every answer */
  PC_TIMERS,  /* no missed deadline, retry not early, no stuck relay */
  PC_LINK,    /* no new command while disconnected */
  PC_COUNTS,  /* every counter agrees with returns and events */
  PC_DRIFT,   /* DRIFT exactly when the rule says */
  PC_RESTART, /* saved state, pending commands and sequence survive */
  PC_COUNT
};
static const char *p_check_names[PC_COUNT] = {
    "return values", "confirmed state follows the ordering rule",
    "pending is 0 or 1", "events well-formed (ACK and APPLIED per answer)",
    "timers: none missed, retries not early, no stuck relay",
    "no new command while disconnected", "counters agree",
    "DRIFT exactly when a foreign change overrides our confirmed command",
    "restart: saved state, pending commands and sequence carry over"};

/* The time command c times out at: its ack deadline while unacked, at the
 * latest its confirm deadline. */
static double p_deadline(const struct p_cmd *c)
{
  return c->response_seen ? c->confirm_deadline
                          : fmin(c->ack_deadline, c->confirm_deadline);
}

struct prop {
  bm_relay_table_t *t;
  struct bm_relay_policy pol;
  enum p_mode mode;
  char prefix[24];    /* the current table's */
  unsigned gen;       /* restarts so far */
  struct p_cmd *cmds; /* indexed by seq */
  size_t ncmds, capcmds;
  struct p_relay r[P_RELAYS];
  bool connected;
  double now;
  int step;
  int next_foreign;
  unsigned aborts, drifts, resumes;
  unsigned fails[PC_COUNT];
  char first[PC_COUNT][256];
};

static void __attribute__((format(printf, 3, 4)))
p_fail(struct prop *p, enum p_check c, const char *fmt, ...)
{
  va_list ap;
  if (p->fails[c]++ == 0) {
    int n = snprintf(p->first[c], sizeof(p->first[c]), "step %d, t=%g: ",
                     p->step, p->now);
    va_start(ap, fmt);
    vsnprintf(p->first[c] + n, sizeof(p->first[c]) - (size_t)n, fmt, ap);
    va_end(ap);
  }
}

/* The sequence of a command the model issued under this id, or 0 (foreign
 * ids, ids never issued).  Prefixes change across restarts, so the id is
 * compared whole. */
static uint64_t corr_seq(const struct prop *p, const char *corr)
{
  const char *dash = strrchr(corr, '-');
  char *end;
  if (!dash || dash[1] < '1' || dash[1] > '9')
    return 0;
  unsigned long long v = strtoull(dash + 1, &end, 10);
  if (*end || v >= p->ncmds || strcmp(p->cmds[v].corr, corr) != 0)
    return 0;
  return (uint64_t)v;
}

static void p_new_cmd(struct prop *p, uint64_t seq, int relay, int status,
                      const char *corr)
{
  if (seq >= p->capcmds) {
    p->capcmds = p->capcmds ? p->capcmds * 2 : 1024;
    p->cmds = realloc(p->cmds, p->capcmds * sizeof(*p->cmds));
    if (!p->cmds) {
      printf("Bail out! out of memory\n");
      exit(1);
    }
  }
  memset(&p->cmds[seq], 0, sizeof(p->cmds[seq]));
  snprintf(p->cmds[seq].corr, sizeof(p->cmds[seq].corr), "%s", corr);
  p->cmds[seq].relay = relay;
  p->cmds[seq].status = status;
  p->cmds[seq].published = p->now;
  p->cmds[seq].ack_deadline = p->now + p->pol.ack_timeout;
  p->cmds[seq].confirm_deadline = p->now + p->pol.command_timeout;
  p->cmds[seq].gen = p->gen;
  p->ncmds = seq + 1;
  struct p_relay *r = &p->r[relay];
  if (r->n_issued == 8) {
    memmove(r->issued, r->issued + 1, 7 * sizeof(r->issued[0]));
    r->n_issued--;
  }
  r->issued[r->n_issued++] = seq;
}

/* Whether event i is preceded in its batch by the APPLIED that must come
 * before a STATE or DRIFT of the same change. */
static bool p_applied_before(const struct bm_events *ev, size_t i)
{
  const struct bm_event *e = &ev->ev[i];
  for (size_t k = i; k-- > 0;) {
    const struct bm_event *a = &ev->ev[k];
    if (a->kind == BM_EV_APPLIED && a->relay == e->relay)
      return a->status == e->status && a->previous == e->previous &&
             strcmp(a->corr, e->corr) == 0;
  }
  return false;
}

/* Checks one batch of events against the model and records the commands
 * they publish; `from_connect` says whether republishes are allowed. */
static void p_events(struct prop *p, const struct bm_events *ev,
                     bool from_connect)
{
  if (ev->lost)
    p_fail(p, PC_EVENTS, "%zu events lost", ev->lost);
  for (size_t i = 0; i < ev->n; i++) {
    const struct bm_event *e = &ev->ev[i];
    if (e->relay < 0 || e->relay >= P_RELAYS) {
      p_fail(p, PC_EVENTS, "event %zu for relay %d", i, e->relay);
      continue;
    }
    struct p_relay *r = &p->r[e->relay];
    struct bm_relay_view v;
    bm_relay_table_view(p->t, e->relay, &v);
    switch (e->kind) {
    case BM_EV_PUBLISH: {
      uint64_t seq = corr_seq(p, e->corr);
      if (e->status != 0 && e->status != 1)
        p_fail(p, PC_EVENTS, "PUBLISH with status %d", e->status);
      if (e->attempt < 1)
        p_fail(p, PC_EVENTS, "PUBLISH with attempt %d", e->attempt);
      if (e->republish) {
        if (!from_connect)
          p_fail(p, PC_EVENTS, "republish outside set_connected");
        if (seq == 0 || seq != r->pending)
          p_fail(p, PC_EVENTS, "republish of %s, pending is %llu", e->corr,
                 (unsigned long long)r->pending);
        else if (p->cmds[seq].response_seen && !p->cmds[seq].resumed)
          p_fail(p, PC_EVENTS, "republish of acked %s", e->corr);
        else if (p->cmds[seq].status != e->status ||
                 p->cmds[seq].attempt != e->attempt || e->seq != seq)
          p_fail(p, PC_EVENTS, "republish of %s with another status, "
                               "attempt or sequence",
                 e->corr);
        else { /* the command gets its full time again */
          p->cmds[seq].ack_deadline = p->now + p->pol.ack_timeout;
          p->cmds[seq].confirm_deadline = p->now + p->pol.command_timeout;
          p->cmds[seq].resumed = false;
        }
        break;
      }
      char want[BM_MSG_ID_SIZE];
      snprintf(want, sizeof(want), "%s-%zu", p->prefix, p->ncmds);
      if (!p->connected)
        p_fail(p, PC_LINK, "PUBLISH %s while disconnected", e->corr);
      if (strcmp(e->corr, want) != 0 || e->seq != p->ncmds)
        p_fail(p, PC_EVENTS, "PUBLISH %s (sequence %llu), expected %s",
               e->corr, (unsigned long long)e->seq, want);
      if (e->status != v.desired)
        p_fail(p, PC_EVENTS, "PUBLISH %s status %d, desired %d", e->corr,
               e->status, v.desired);
      if (v.confirmed == v.desired && !r->force)
        p_fail(p, PC_EVENTS, "PUBLISH %s for the confirmed state %d, "
                             "nothing superseded",
               e->corr, v.confirmed);
      if (e->attempt > p->pol.retries + 1)
        p_fail(p, PC_EVENTS, "PUBLISH %s attempt %d, retries %d", e->corr,
               e->attempt, p->pol.retries);
      if (r->retry_at > 0 && p->now < r->retry_at)
        p_fail(p, PC_TIMERS, "retry %s at %g before the backoff ends at %g",
               e->corr, p->now, r->retry_at);
      if (r->pending)
        p_fail(p, PC_PENDING, "PUBLISH %s while %llu is pending", e->corr,
               (unsigned long long)r->pending);
      r->retry_at = 0;
      r->force = false;
      p_new_cmd(p, p->ncmds, e->relay, e->status, want);
      p->cmds[p->ncmds - 1].attempt = e->attempt;
      r->pending = p->ncmds - 1;
      break;
    }
    case BM_EV_STATE:
      if ((e->status != 0 && e->status != 1) ||
          (e->previous < -1 || e->previous > 1) || e->previous == e->status)
        p_fail(p, PC_EVENTS, "STATE %d -> %d", e->previous, e->status);
      if (!p_applied_before(ev, i))
        p_fail(p, PC_EVENTS, "STATE %d -> %d (%s) without its APPLIED first",
               e->previous, e->status, e->corr);
      break;
    case BM_EV_ACK: {
      uint64_t seq = corr_seq(p, e->corr);
      if (!seq || e->seq != seq || p->cmds[seq].relay != e->relay)
        p_fail(p, PC_EVENTS, "ACK of %s with sequence %llu on relay %d",
               e->corr, (unsigned long long)e->seq, e->relay);
      if (e->result < BM_RESULT_SENT || e->result > BM_RESULT_UNAUTHORIZED)
        p_fail(p, PC_EVENTS, "ACK of %s with result %d", e->corr,
               (int)e->result);
      break;
    }
    case BM_EV_APPLIED:
      /* Ours carry their sequence; unsolicited and foreign ones 0. */
      if ((e->status != 0 && e->status != 1) || e->previous < -1 ||
          e->previous > 1 || e->seq != corr_seq(p, e->corr))
        p_fail(p, PC_EVENTS, "APPLIED %s: %d -> %d, sequence %llu", e->corr,
               e->previous, e->status, (unsigned long long)e->seq);
      break;
    case BM_EV_DRIFT:
      if ((e->status != 0 && e->status != 1) ||
          (e->previous != 0 && e->previous != 1) || e->previous == e->status)
        p_fail(p, PC_EVENTS, "DRIFT %d -> %d", e->previous, e->status);
      if (!p_applied_before(ev, i) || corr_seq(p, e->corr))
        p_fail(p, PC_EVENTS, "DRIFT %d -> %d (%s) not after the APPLIED of "
                             "a foreign change",
               e->previous, e->status, e->corr);
      p->drifts++;
      break;
    case BM_EV_END: {
      /* Timeouts and contradictions are failed attempts: retried with
       * backoff, then given up.  Refusals stop the relay. */
      bool failed_attempt = e->outcome == BM_OP_TIMEOUT ||
                            e->outcome == BM_OP_CONTRADICTED;
      bool warn = failed_attempt || e->outcome == BM_OP_SEND_NO_ACK;
      bool known = failed_attempt || e->outcome == BM_OP_GAVE_UP ||
                   e->outcome == BM_OP_NOT_SEND ||
                   e->outcome == BM_OP_FAILED ||
                   e->outcome == BM_OP_SEND_NO_ACK ||
                   e->outcome == BM_OP_UNAUTHORIZED;
      if (!known)
        p_fail(p, PC_EVENTS, "END with outcome %d", (int)e->outcome);
      if (e->severity != (warn ? BM_SEV_WARNING : BM_SEV_FAILURE))
        p_fail(p, PC_EVENTS, "END %s with severity %d",
               bm_op_name(e->outcome), (int)e->severity);
      if (!e->reason[0])
        p_fail(p, PC_EVENTS, "END without reason");
      if (e->outcome == BM_OP_GAVE_UP) {
        bool after_failure = i > 0 && ev->ev[i - 1].kind == BM_EV_END &&
                             ev->ev[i - 1].relay == e->relay &&
                             (ev->ev[i - 1].outcome == BM_OP_TIMEOUT ||
                              ev->ev[i - 1].outcome == BM_OP_CONTRADICTED);
        if (!after_failure)
          p_fail(p, PC_EVENTS, "gave up without a failed attempt before");
        if (e->attempt <= p->pol.retries)
          p_fail(p, PC_EVENTS, "gave up after %d attempts, retries %d",
                 e->attempt, p->pol.retries);
        if (!v.stopped)
          p_fail(p, PC_EVENTS, "gave up but not stopped");
        r->retry_at = 0;
        break;
      }
      uint64_t seq = corr_seq(p, e->corr);
      if (seq == 0 || seq != r->pending) {
        p_fail(p, PC_EVENTS, "END %s of %s, pending is %llu",
               bm_op_name(e->outcome), e->corr,
               (unsigned long long)r->pending);
        seq = 0;
      }
      if (seq && (e->status != p->cmds[seq].status ||
                  e->attempt != p->cmds[seq].attempt))
        p_fail(p, PC_EVENTS, "END %s of %s: status %d attempt %d, "
                             "published with %d and %d",
               bm_op_name(e->outcome), e->corr, e->status, e->attempt,
               p->cmds[seq].status, p->cmds[seq].attempt);
      if (e->outcome == BM_OP_TIMEOUT && seq) {
        /* No early timer: the (possibly republished) deadline passed. */
        double dl = p_deadline(&p->cmds[seq]);
        if (p->now < dl)
          p_fail(p, PC_TIMERS, "%s timed out at %g before its deadline %g",
                 e->corr, p->now, dl);
      }
      if (e->outcome == BM_OP_CONTRADICTED && seq &&
          v.confirmed == p->cmds[seq].status)
        p_fail(p, PC_EVENTS, "%s contradicted, but confirmed is %d",
               e->corr, v.confirmed);
      if (failed_attempt) {
        /* A retry follows if desired still differs and attempts remain. */
        bool gave_up = i + 1 < ev->n && ev->ev[i + 1].kind == BM_EV_END &&
                       ev->ev[i + 1].outcome == BM_OP_GAVE_UP &&
                       ev->ev[i + 1].relay == e->relay;
        bool differs = v.desired >= 0 && v.desired != v.confirmed;
        if (e->attempt > p->pol.retries && differs && !gave_up)
          p_fail(p, PC_EVENTS, "attempt %d of %d failed (%s) without give-up",
                 e->attempt, p->pol.retries + 1, bm_op_name(e->outcome));
        if (gave_up && !(e->attempt > p->pol.retries && differs))
          p_fail(p, PC_EVENTS, "attempt %d of %d failed (%s): gave up",
                 e->attempt, p->pol.retries + 1, bm_op_name(e->outcome));
        if (!gave_up && differs) {
          double bo = p->pol.retry_backoff * ldexp(1.0, e->attempt - 1);
          r->retry_at = p->now + fmin(bo, 60.0);
        }
        if (!gave_up && v.stopped)
          p_fail(p, PC_EVENTS, "%s failed (%s) and the relay stopped",
                 e->corr, bm_op_name(e->outcome));
      } else if (!v.stopped) {
        p_fail(p, PC_EVENTS, "refused (%s) but not stopped",
               bm_op_name(e->outcome));
      }
      r->pending = 0;
      break;
    }
    default:
      p_fail(p, PC_EVENTS, "event of kind %d", (int)e->kind);
    }
  }
}

/* What a batch of events counts: PUBLISH as published, DRIFT as drift, END
 * timeout, contradicted and gave_up as themselves (refusals are counted by
 * the response that carries them, ACK and APPLIED by their answer). */
static void p_event_ops(const struct bm_events *ev, uint64_t *want)
{
  for (size_t i = 0; i < ev->n; i++) {
    const struct bm_event *e = &ev->ev[i];
    if (e->kind == BM_EV_PUBLISH)
      want[BM_OP_PUBLISHED]++;
    else if (e->kind == BM_EV_DRIFT)
      want[BM_OP_DRIFT]++;
    else if (e->kind == BM_EV_END && (e->outcome == BM_OP_TIMEOUT ||
                                      e->outcome == BM_OP_CONTRADICTED ||
                                      e->outcome == BM_OP_GAVE_UP))
      want[e->outcome]++;
  }
}

/* Every counter moved by exactly want[op] since s0. */
static void p_counts(struct prop *p, const struct bm_relay_stats *s0,
                     const uint64_t *want, const char *what)
{
  struct bm_relay_stats s1;
  bm_relay_table_stats(p->t, &s1, false);
  for (int o = 0; o < BM_OP_COUNT; o++)
    if (s1.ops[o] - s0->ops[o] != want[o])
      p_fail(p, PC_COUNTS, "%s: %s moved by %llu, want %llu", what,
             bm_op_name((enum bm_op)o),
             (unsigned long long)(s1.ops[o] - s0->ops[o]),
             (unsigned long long)want[o]);
}

/* After every step: the table agrees with the model, and its next_deadline
 * is no later than the earliest timer the model knows of (the caller sleeps
 * until then). */
static void p_check(struct prop *p)
{
  double earliest = HUGE_VAL;

  if (bm_relay_table_check_timers(p->t, p->now) != 0)
    p_fail(p, PC_TIMERS, "step %d: the timer heap misses a deadline or is "
                         "out of order", p->step);

  for (int i = 0; i < P_RELAYS; i++) {
    struct bm_relay_view v;
    struct p_relay *r = &p->r[i];
    bm_relay_table_view(p->t, i, &v);
    if (v.pending != 0 && v.pending != 1)
      p_fail(p, PC_PENDING, "relay %d: pending %d", i, v.pending);
    if (v.pending == 0)
      r->pending = 0; /* superseded, refused, confirmed, timed out */
    else if (r->pending == 0)
      p_fail(p, PC_PENDING, "relay %d: pending command we never saw", i);
    if (v.confirmed != r->confirmed) {
      p_fail(p, PC_STATE, "relay %d: confirmed %d, model %d", i, v.confirmed,
             r->confirmed);
      r->confirmed = v.confirmed; /* resync: count each divergence once */
    }
    if (r->pending)
      earliest = fmin(earliest, p_deadline(&p->cmds[r->pending]));
    if (r->retry_at > p->now)
      earliest = fmin(earliest, r->retry_at);
  }
  if (bm_relay_table_next_deadline(p->t) > earliest)
    p_fail(p, PC_TIMERS, "next_deadline %g after the earliest timer %g",
           bm_relay_table_next_deadline(p->t), earliest);
}

static void p_views(struct prop *p, struct bm_relay_view *v)
{
  for (int i = 0; i < P_RELAYS; i++)
    bm_relay_table_view(p->t, i, &v[i]);
}

/* Picks one of our commands to answer: the pending or recent ones of a
 * relay (the last 4 issued), or in the history modes any command ever. */
static uint64_t p_pick(struct prop *p)
{
  if (p->ncmds <= 1)
    return 0;
  if (p->mode != P_RING && rnd(3) == 0)
    return 1 + rnd((unsigned)p->ncmds - 1);
  struct p_relay *r = &p->r[rnd(P_RELAYS)];
  if (r->n_issued == 0)
    return 0;
  int k = r->n_issued < 4 ? r->n_issued : 4;
  return r->issued[r->n_issued - 1 - (int)rnd((unsigned)k)];
}

/* Whether the table surely remembers command seq by its id: one of the
 * last 4 of its relay, issued or resumed by this table (not before a
 * restart). */
static bool p_in_ring(struct prop *p, uint64_t seq)
{
  struct p_relay *r = &p->r[p->cmds[seq].relay];
  if (p->cmds[seq].gen != p->gen)
    return false;
  for (int k = r->n_issued - 1; k >= 0 && k >= r->n_issued - 4; k--)
    if (r->issued[k] == seq)
      return true;
  return false;
}

static enum bm_op p_result_op(enum bm_result res)
{
  switch (res) {
  case BM_RESULT_SENT:
    return BM_OP_SENT;
  case BM_RESULT_NOT_SEND:
    return BM_OP_NOT_SEND;
  case BM_RESULT_SEND_NO_ACK:
    return BM_OP_SEND_NO_ACK;
  case BM_RESULT_UNAUTHORIZED:
    return BM_OP_UNAUTHORIZED;
  default:
    return BM_OP_FAILED;
  }
}

/* The gateway's commandResponse to one of our commands. */
static void p_response(struct prop *p, struct bm_events *ev,
                       const struct bm_relay_stats *s0, uint64_t *want_ops)
{
  static const enum bm_result res[] = {
      BM_RESULT_SENT,     BM_RESULT_SENT,   BM_RESULT_SENT,
      BM_RESULT_SENT,     BM_RESULT_SENT,   BM_RESULT_SENT,
      BM_RESULT_NOT_SEND, BM_RESULT_FAILED, BM_RESULT_SEND_NO_ACK,
      BM_RESULT_UNAUTHORIZED};
  uint64_t seq = p_pick(p);
  if (!seq)
    return;
  struct p_cmd *c = &p->cmds[seq];
  enum bm_result rs = res[rnd(10)];
  struct bm_response resp = response(c->corr, rs, "prop");
  bool was_pending = p->r[c->relay].pending == seq;
  bool in_ring = p_in_ring(p, seq);
  enum bm_apply a = bm_relay_table_on_response(p->t, &resp, p->now, ev);
  if (in_ring) {
    enum bm_apply want = c->response_seen ? BM_APPLY_DUPLICATE : BM_APPLY_OK;
    if (a != want)
      p_fail(p, PC_RETURN, "response %s: got %d, want %d", c->corr, (int)a,
             (int)want);
  } else if (c->gen != p->gen && !was_pending) {
    /* Issued before a restart: the new table never heard of it. */
    if (a != BM_APPLY_UNKNOWN_ID)
      p_fail(p, PC_RETURN, "response %s (before the restart): got %d",
             c->corr, (int)a);
  } else if (a != BM_APPLY_OK && a != BM_APPLY_DUPLICATE &&
             a != BM_APPLY_UNKNOWN_ID) {
    p_fail(p, PC_RETURN, "response %s (old): got %d", c->corr, (int)a);
  }
  /* Every matched response: one ACK, first; a refusal of the pending
   * command: then its END. */
  bool refusal = a == BM_APPLY_OK && was_pending && rs != BM_RESULT_SENT &&
                 !c->response_seen;
  const char *want_kinds = a != BM_APPLY_OK ? "" : refusal ? "ACK,END" : "ACK";
  if (strcmp(kinds(ev), want_kinds) != 0)
    p_fail(p, PC_EVENTS, "response %s (%s, %s): events \"%s\", want \"%s\"",
           c->corr, bm_result_name(rs), was_pending ? "pending" : "ended",
           kinds(ev), want_kinds);
  else if (a == BM_APPLY_OK &&
           (strcmp(ev->ev[0].corr, c->corr) != 0 || ev->ev[0].seq != seq ||
            ev->ev[0].result != rs || strcmp(ev->ev[0].reason, "prop") != 0))
    p_fail(p, PC_EVENTS, "ACK of %s: corr %s sequence %llu result %d",
           c->corr, ev->ev[0].corr, (unsigned long long)ev->ev[0].seq,
           (int)ev->ev[0].result);
  else if (refusal && ev->ev[1].outcome == BM_OP_TIMEOUT)
    p_fail(p, PC_EVENTS, "refusal of %s ended as a timeout", c->corr);
  p_events(p, ev, false);
  if (a == BM_APPLY_OK)
    c->response_seen = true;
  want_ops[a == BM_APPLY_OK          ? p_result_op(rs)
           : a == BM_APPLY_DUPLICATE ? BM_OP_DUPLICATE
                                     : BM_OP_UNKNOWN]++;
  p_counts(p, s0, want_ops, "response");
}

/* A notification answering one of our commands, mostly with its status. */
static void p_notification(struct prop *p, struct bm_events *ev,
                           const struct bm_relay_view *before,
                           const struct bm_relay_stats *s0,
                           uint64_t *want_ops)
{
  uint64_t seq = p_pick(p);
  if (!seq)
    return;
  struct p_cmd *c = &p->cmds[seq];
  struct p_relay *r = &p->r[c->relay];
  int st = rnd(8) ? c->status : (int)rnd(2);
  int previous = before[c->relay].confirmed;
  struct bm_notification n =
      notification(c->corr, 1000 + c->relay, c->relay + 1, st);
  enum bm_apply want = BM_APPLY_OK;
  if (c->notif_applied || seq < r->applied_seq)
    want = BM_APPLY_DUPLICATE;
  /* The pending command answered with the other state: contradicted. */
  bool contradicted =
      want == BM_APPLY_OK && r->pending == seq && st != c->status;
  enum bm_apply a = bm_relay_table_on_notification(p->t, &n, p->now, ev);
  if (a != want)
    p_fail(p, PC_RETURN, "notification %s (status %d, last applied %llu): "
                         "got %d, want %d",
           c->corr, st, (unsigned long long)r->applied_seq, (int)a,
           (int)want);
  if (want == BM_APPLY_OK) {
    c->notif_applied = true;
    r->applied_seq = seq;
    r->confirmed = st;
    r->by_command = true;
  }
  /* Applied: APPLIED (ours: its sequence), STATE if it changed, the END
   * of a contradiction (and maybe the give-up); never a DRIFT.  Stale or
   * repeated: nothing. */
  if (want == BM_APPLY_OK && a == BM_APPLY_OK) {
    char want_kinds[64];
    int len = snprintf(want_kinds, sizeof(want_kinds), "APPLIED%s%s",
                       st != previous ? ",STATE" : "",
                       contradicted ? ",END" : "");
    bool gave_up = contradicted && ev->n &&
                   ev->ev[ev->n - 1].kind == BM_EV_END &&
                   ev->ev[ev->n - 1].outcome == BM_OP_GAVE_UP;
    if (gave_up)
      snprintf(want_kinds + len, sizeof(want_kinds) - (size_t)len, ",END");
    if (strcmp(kinds(ev), want_kinds) != 0)
      p_fail(p, PC_EVENTS, "notification %s (status %d, commanded %d, %s): "
                           "events \"%s\", want \"%s\"",
             c->corr, st, c->status, r->pending == seq ? "pending" : "ended",
             kinds(ev), want_kinds);
    else if (strcmp(ev->ev[0].corr, c->corr) != 0 || ev->ev[0].seq != seq ||
             ev->ev[0].status != st || ev->ev[0].previous != previous)
      p_fail(p, PC_EVENTS, "APPLIED of %s: corr %s sequence %llu, %d -> %d",
             c->corr, ev->ev[0].corr, (unsigned long long)ev->ev[0].seq,
             ev->ev[0].previous, ev->ev[0].status);
    else if (contradicted &&
             (ev->ev[ev->n - 1 - gave_up].outcome != BM_OP_CONTRADICTED ||
              strcmp(ev->ev[ev->n - 1 - gave_up].corr, c->corr) != 0))
      p_fail(p, PC_EVENTS, "notification %s: no END contradicted", c->corr);
  } else if (a == BM_APPLY_DUPLICATE && ev->n) {
    p_fail(p, PC_EVENTS, "duplicate notification %s: events \"%s\"", c->corr,
           kinds(ev));
  }
  p_events(p, ev, false);
  p_event_ops(ev, want_ops);
  want_ops[a == BM_APPLY_DUPLICATE ? BM_OP_DUPLICATE : BM_OP_CONFIRMED]++;
  p_counts(p, s0, want_ops, "notification");
}

/* A state change without a correlationId, or with a foreign one (new, or a
 * repeat that is a duplicate). */
static void p_foreign(struct prop *p, struct bm_events *ev,
                      const struct bm_relay_view *before,
                      const struct bm_relay_stats *s0, uint64_t *want_ops)
{
  int i = (int)rnd(P_RELAYS), st = (int)rnd(2);
  struct p_relay *r = &p->r[i];
  unsigned kind = rnd(3);
  enum bm_apply want = BM_APPLY_OK;
  char corr[BM_MSG_ID_SIZE] = "";
  struct bm_notification n;
  int previous = before[i].confirmed;

  if (kind == 0) {
    n = notification(NULL, 1000 + i, i + 1, st);
  } else if (kind == 1 || r->n_foreign == 0) {
    snprintf(corr, sizeof(corr), "other-%d", ++p->next_foreign);
    n = notification(corr, 1000 + i, i + 1, st);
    if (r->n_foreign == 4) {
      memmove(r->foreign, r->foreign + 1, 3 * sizeof(int));
      r->n_foreign--;
    }
    r->foreign[r->n_foreign++] = p->next_foreign;
  } else {
    snprintf(corr, sizeof(corr), "other-%d",
             r->foreign[rnd((unsigned)r->n_foreign)]);
    n = notification(corr, 1000 + i, i + 1, st);
    want = BM_APPLY_DUPLICATE;
  }
  enum bm_apply a = bm_relay_table_on_notification(p->t, &n, p->now, ev);
  if (a != want)
    p_fail(p, PC_RETURN, "foreign/unsolicited %s: got %d, want %d",
           kind ? corr : "(none)", (int)a, (int)want);
  if (want == BM_APPLY_OK && a == BM_APPLY_OK) {
    /* Drift: a change nobody here asked for, against the state that the
     * last confirmation of a command of ours set (relay.h).  A report of
     * the same state leaves that state ours. */
    bool drift = r->by_command && previous >= 0 && previous != st;
    bool got_drift = count_kind(ev, BM_EV_DRIFT) != 0;
    char want_kinds[64];
    snprintf(want_kinds, sizeof(want_kinds), "APPLIED%s%s",
             got_drift ? ",DRIFT" : "", st != previous ? ",STATE" : "");
    if (strcmp(kinds(ev), want_kinds) != 0)
      p_fail(p, PC_EVENTS, "foreign/unsolicited %s %d -> %d: events \"%s\", "
                           "want \"%s\"",
             corr, previous, st, kinds(ev), want_kinds);
    else if (strcmp(ev->ev[0].corr, corr) != 0 || ev->ev[0].seq != 0 ||
             ev->ev[0].status != st || ev->ev[0].previous != previous)
      p_fail(p, PC_EVENTS, "APPLIED of foreign \"%s\": corr \"%s\" sequence "
                           "%llu, %d -> %d",
             corr, ev->ev[0].corr, (unsigned long long)ev->ev[0].seq,
             ev->ev[0].previous, ev->ev[0].status);
    if (got_drift != drift)
      p_fail(p, PC_DRIFT, "foreign/unsolicited \"%s\" %d -> %d after a "
                          "state %s: %s",
             corr, previous, st,
             r->by_command ? "set by our command" : "not ours",
             got_drift ? "DRIFT" : "no DRIFT");
    if (previous != st)
      r->by_command = false;
    r->confirmed = st;
  } else if (ev->n) {
    p_fail(p, PC_EVENTS, "duplicate foreign %s: events \"%s\"", corr,
           kinds(ev));
  }
  p_events(p, ev, false);
  p_event_ops(ev, want_ops);
  want_ops[a == BM_APPLY_DUPLICATE ? BM_OP_DUPLICATE : BM_OP_UNSOLICITED]++;
  p_counts(p, s0, want_ops, "foreign/unsolicited");
}

/* The journal could not make the pending command durable: abort it.  Or
 * an abort naming a command that is not pending changes nothing. */
static void p_abort(struct prop *p, const struct bm_relay_view *before,
                    const struct bm_relay_stats *s0, uint64_t *want_ops)
{
  int i = (int)rnd(P_RELAYS);
  struct p_relay *r = &p->r[i];
  char corr[BM_MSG_ID_SIZE];
  struct bm_relay_view v;
  unsigned pick = rnd(4);

  /* Mostly the pending command; else a recent one of the relay, or an id
   * nobody issued. */
  if (pick > 0 && before[i].pending && r->pending) {
    snprintf(corr, sizeof(corr), "%s", p->cmds[r->pending].corr);
  } else if (pick > 0 && r->n_issued) {
    int k = r->n_issued - 1 - (int)rnd((unsigned)(r->n_issued < 3 ? r->n_issued
                                                                  : 3));
    snprintf(corr, sizeof(corr), "%s", p->cmds[r->issued[k]].corr);
  } else {
    snprintf(corr, sizeof(corr), "nobody-%u", rnd(9) + 1);
  }
  bool real = before[i].pending && r->pending &&
              strcmp(corr, p->cmds[r->pending].corr) == 0;
  bool got = bm_relay_table_abort(p->t, i, corr);
  bm_relay_table_view(p->t, i, &v);
  if (got != real)
    p_fail(p, PC_RETURN, "abort(%d, %s): %d, want %d", i, corr, got, real);
  if (real) {
    p->aborts++;
    want_ops[BM_OP_FAILED] = 1;
    r->pending = 0;
    r->retry_at = 0;
    if (v.pending || !v.stopped || v.desired != before[i].desired ||
        v.confirmed != before[i].confirmed)
      p_fail(p, PC_PENDING, "abort(%d, %s): pending %d stopped %d", i, corr,
             v.pending, v.stopped);
  } else if (v.pending != before[i].pending ||
             v.stopped != before[i].stopped ||
             v.desired != before[i].desired ||
             v.confirmed != before[i].confirmed) {
    p_fail(p, PC_PENDING, "abort(%d, %s) of no pending command changed the "
                          "relay",
           i, corr);
  }
  p_counts(p, s0, want_ops, "abort");
}

/* The plugin restarts: a new table (a new prefix) gets what the journal
 * kept of the old one -- each relay's saved state, its pending command --
 * and the sequence continues.  Nothing else survives: desired states of
 * idle relays, backoffs, the link, the memory of recent commands. */
static void p_restart(struct prop *p)
{
  struct bm_relay_saved saved[P_RELAYS];
  struct bm_command_saved pend[P_RELAYS];
  bool has[P_RELAYS];
  uint64_t last = bm_relay_table_last_seq(p->t);

  if (last != p->ncmds - 1)
    p_fail(p, PC_RESTART, "last_seq %llu, issued %zu", (unsigned long long)last,
           p->ncmds - 1);
  for (int i = 0; i < P_RELAYS; i++) {
    struct p_relay *r = &p->r[i];
    bm_relay_table_save(p->t, i, &saved[i]);
    has[i] = bm_relay_table_pending_of(p->t, i, &pend[i]);
    if (saved[i].confirmed != r->confirmed ||
        saved[i].confirmed_seq != r->applied_seq)
      p_fail(p, PC_RESTART, "relay %d saved confirmed %d (seq %llu), model "
                            "%d (seq %llu)",
             i, saved[i].confirmed, (unsigned long long)saved[i].confirmed_seq,
             r->confirmed, (unsigned long long)r->applied_seq);
    if (saved[i].by_command != r->by_command)
      p_fail(p, PC_DRIFT, "relay %d saved by_command %d, model %d", i,
             saved[i].by_command, r->by_command);
    if (has[i] != (r->pending != 0)) {
      p_fail(p, PC_RESTART, "relay %d: pending_of %d, model pending %llu", i,
             has[i], (unsigned long long)r->pending);
    } else if (has[i]) {
      const struct p_cmd *c = &p->cmds[r->pending];
      if (strcmp(pend[i].corr, c->corr) != 0 || pend[i].seq != r->pending ||
          pend[i].status != c->status || pend[i].attempt != c->attempt ||
          pend[i].acked != c->response_seen ||
          pend[i].published_at != c->published)
        p_fail(p, PC_RESTART, "relay %d: pending_of %s seq %llu status %d "
                              "attempt %d acked %d at %g, model %s",
               i, pend[i].corr, (unsigned long long)pend[i].seq,
               pend[i].status, pend[i].attempt, pend[i].acked,
               pend[i].published_at, c->corr);
    }
  }

  bm_relay_table_free(p->t);
  snprintf(p->prefix, sizeof(p->prefix), "%016llx",
           (unsigned long long)rng());
  p->t = table_new(&p->pol, p->prefix);
  p->gen++;
  p->connected = false;
  for (int i = 0; i < P_RELAYS; i++) {
    char name[16];
    snprintf(name, sizeof(name), "r%d", i);
    bm_relay_table_add(p->t, name, 1000 + i, i + 1);
  }
  bm_relay_table_raise_seq(p->t, last);
  for (int i = 0; i < P_RELAYS; i++) {
    struct p_relay *r = &p->r[i];
    struct bm_relay_view v;
    bm_relay_table_load(p->t, i, &saved[i]);
    r->retry_at = 0;
    r->force = false;
    if (has[i]) {
      struct p_cmd *c = &p->cmds[r->pending];
      if (bm_relay_table_resume(p->t, i, &pend[i]) != 0)
        p_fail(p, PC_RESTART, "relay %d: resume of %s failed", i, c->corr);
      p->resumes++;
      c->gen = p->gen;
      c->resumed = true;
      c->ack_deadline = c->published + p->pol.ack_timeout;
      c->confirm_deadline = c->published + p->pol.command_timeout;
    }
    bm_relay_table_view(p->t, i, &v);
    if (v.confirmed != r->confirmed || v.pending != (has[i] ? 1 : 0) ||
        v.desired != (has[i] ? pend[i].status : -1) || v.stopped)
      p_fail(p, PC_RESTART, "relay %d restored: confirmed %d desired %d "
                            "pending %d stopped %d",
             i, v.confirmed, v.desired, v.pending, v.stopped);
  }
  if (bm_relay_table_last_seq(p->t) != last)
    p_fail(p, PC_RESTART, "restored last_seq %llu, want %llu",
           (unsigned long long)bm_relay_table_last_seq(p->t),
           (unsigned long long)last);
}

static void p_step(struct prop *p, struct bm_events *ev)
{
  struct bm_relay_view before[P_RELAYS];
  struct bm_relay_stats s0;
  uint64_t want_ops[BM_OP_COUNT] = {0};
  unsigned what = rnd(100);
  char corr[BM_MSG_ID_SIZE];

  p_views(p, before);
  bm_relay_table_stats(p->t, &s0, false);
  bm_events_clear(ev);

  if (what < 15) { /* set_desired */
    int i = (int)rnd(P_RELAYS), st = (int)rnd(2);
    struct p_relay *r = &p->r[i];
    bool same = st == before[i].desired && !before[i].stopped;
    bool superseded = !same && before[i].pending && r->pending &&
                      p->cmds[r->pending].status != st;
    if (!same)
      r->retry_at = 0;
    if (superseded) {
      r->pending = 0;
      r->force = true; /* the old command may still reach the device */
    }
    bool want = !same && !(before[i].pending && !superseded) &&
                (before[i].confirmed != st || r->force);
    bool got = bm_relay_table_set_desired(p->t, i, st, "prop", p->now);
    if (got != want)
      p_fail(p, PC_RETURN, "set_desired(%d, %d) returned %d, want %d "
                           "(desired %d confirmed %d pending %d stopped %d)",
             i, st, got, want, before[i].desired, before[i].confirmed,
             before[i].pending, before[i].stopped);
    p_counts(p, &s0, want_ops, "set_desired");
  } else if (what < 45) { /* tick, time advancing */
    unsigned j = rnd(10);
    p->now += j < 2 ? 0 : j < 9 ? rnd(3000) / 1000.0 : 5 + rnd(20);
    for (int i = 0; i < P_RELAYS; i++)
      if (before[i].desired >= 0 && before[i].confirmed == before[i].desired)
        p->r[i].retry_at = 0; /* reached: any retry is cancelled */
    bm_relay_table_tick(p->t, p->now, ev);
    p_events(p, ev, false);
    p_event_ops(ev, want_ops);
    p_counts(p, &s0, want_ops, "tick");
    /* No pending deadline has passed after a tick; no relay is stuck. */
    for (int i = 0; i < P_RELAYS; i++) {
      struct bm_relay_view v;
      bm_relay_table_view(p->t, i, &v);
      uint64_t pend = v.pending ? p->r[i].pending : 0;
      if (pend) {
        double dl = p_deadline(&p->cmds[pend]);
        if (p->now >= dl)
          p_fail(p, PC_TIMERS, "relay %d: pending past its deadline %g", i,
                 dl);
      } else if (p->connected && v.desired >= 0 && !v.stopped &&
                 (v.confirmed != v.desired || p->r[i].force) &&
                 !(p->r[i].retry_at > p->now)) {
        p_fail(p, PC_TIMERS, "relay %d stuck: desired %d confirmed %d%s", i,
               v.desired, v.confirmed,
               p->r[i].force ? " superseded" : "");
      }
    }
  } else if (what < 60) {
    p_response(p, ev, &s0, want_ops);
  } else if (what < 80) {
    p_notification(p, ev, before, &s0, want_ops);
  } else if (what < 88) {
    p_foreign(p, ev, before, &s0, want_ops);
  } else if (what < 92) { /* answers for nobody */
    struct bm_notification n = notification(NULL, 5, 5, (int)rnd(2));
    if (bm_relay_table_on_notification(p->t, &n, p->now, ev) !=
        BM_APPLY_UNKNOWN_RELAY)
      p_fail(p, PC_RETURN, "unknown relay not reported");
    snprintf(corr, sizeof(corr), "%s-1", p->prefix);
    n = notification(corr, 1000, 1, 1);
    n.has_state = false;
    if (bm_relay_table_on_notification(p->t, &n, p->now, ev) !=
        BM_APPLY_IGNORED)
      p_fail(p, PC_RETURN, "stateless notification not ignored");
    snprintf(corr, sizeof(corr), "%s-%zu", p->prefix, p->ncmds + 5);
    struct bm_response resp = response(corr, BM_RESULT_SENT, "");
    if (bm_relay_table_on_response(p->t, &resp, p->now, ev) !=
        BM_APPLY_UNKNOWN_ID)
      p_fail(p, PC_RETURN, "unknown id not reported");
    if (ev->n)
      p_fail(p, PC_EVENTS, "answers for nobody produced events");
    want_ops[BM_OP_UNKNOWN] = 3;
    p_counts(p, &s0, want_ops, "answers for nobody");
  } else if (what < 99) { /* link down / up */
    if (p->connected && rnd(2)) {
      p->connected = false;
      bm_relay_table_set_connected(p->t, false, false, p->now, ev);
      if (ev->n)
        p_fail(p, PC_EVENTS, "going down produced %zu events", ev->n);
    } else {
      bool sp = rnd(2);
      p->connected = true;
      bm_relay_table_set_connected(p->t, true, sp, p->now, ev);
      /* Republished: what the broker lost (not acked, no session), and
       * once whatever was resumed after a restart. */
      for (int i = 0; i < P_RELAYS; i++) {
        const struct p_cmd *c = p->r[i].pending ? &p->cmds[p->r[i].pending]
                                                : NULL;
        /* A resumed command whose deadline passed while we were down is
         * not published again: the next tick times it out. */
        bool expired = c && c->resumed &&
                       (c->response_seen
                            ? p->now >= c->confirm_deadline
                            : p->now >= fmin(c->ack_deadline,
                                             c->confirm_deadline));
        bool want = before[i].pending && c && !expired &&
                    (c->resumed || (!sp && !c->response_seen));
        size_t got = 0;
        for (size_t k = 0; k < ev->n; k++)
          got += ev->ev[k].relay == i && ev->ev[k].republish;
        if (got != (want ? 1u : 0u))
          p_fail(p, PC_EVENTS, "relay %d: %zu republishes, want %d%s", i, got,
                 want, c && c->resumed ? " (resumed)" : "");
      }
      for (size_t k = 0; k < ev->n; k++)
        if (ev->ev[k].kind != BM_EV_PUBLISH || !ev->ev[k].republish)
          p_fail(p, PC_EVENTS, "set_connected: an event other than a "
                               "republish");
    }
    p_events(p, ev, true);
    for (int i = 0; i < P_RELAYS && p->connected; i++)
      if (p->r[i].pending)
        p->cmds[p->r[i].pending].resumed = false;
    p_event_ops(ev, want_ops);
    p_counts(p, &s0, want_ops, "set_connected");
  } else if (p->mode == P_RESTART && rnd(4) == 0) {
    p_restart(p);
  } else {
    p_abort(p, before, &s0, want_ops);
  }
  p_check(p);
}

/* The gateway answers command corr truthfully: "sent", then the state. */
static void p_answer(struct prop *p, const char *corr, int relay, int status)
{
  struct bm_events sink = {0};

  struct bm_response resp = response(corr, BM_RESULT_SENT, "");
  struct bm_notification n =
      notification(corr, 1000 + relay, relay + 1, status);
  bm_relay_table_on_response(p->t, &resp, p->now, &sink);
  bm_relay_table_on_notification(p->t, &n, p->now, &sink);
  bm_events_release(&sink);
}

static void p_run(uint64_t seed, int steps, enum p_mode mode)
{
  struct prop p;
  struct bm_events ev = {0};
  char name[16];

  memset(&p, 0, sizeof(p));
  rng_state = seed;
  p.pol = POLICY;
  p.mode = mode;
  snprintf(p.prefix, sizeof(p.prefix), "%s", mode == P_RING ? "prop" : HEX_A);
  p.t = table_new(&p.pol, p.prefix);
  p.now = 1000;
  p.ncmds = 1; /* sequence numbers start at 1 */
  for (int i = 0; i < P_RELAYS; i++) {
    snprintf(name, sizeof(name), "r%d", i);
    bm_relay_table_add(p.t, name, 1000 + i, i + 1);
    p.r[i].confirmed = -1;
  }
  for (p.step = 0; p.step < steps; p.step++)
    p_step(&p, &ev);

  /* Drain: connected, every relay wants a state, the gateway answers every
   * command truthfully: everything converges. */
  p.connected = true;
  bm_events_clear(&ev);
  bm_relay_table_set_connected(p.t, true, true, p.now, &ev);
  for (int i = 0; i < P_RELAYS; i++) {
    uint64_t seq = p.r[i].pending; /* answer what is still in flight */
    if (seq)
      p_answer(&p, p.cmds[seq].corr, i, p.cmds[seq].status);
    bm_relay_table_set_desired(p.t, i, i % 2, "drain", p.now);
  }
  for (int round = 0; round < 50; round++) {
    p.now += 100; /* past every timer */
    bm_events_clear(&ev);
    bm_relay_table_tick(p.t, p.now, &ev);
    for (size_t k = 0; k < ev.n; k++)
      if (ev.ev[k].kind == BM_EV_PUBLISH)
        p_answer(&p, ev.ev[k].corr, ev.ev[k].relay, ev.ev[k].status);
  }
  bool converged = true;
  for (int i = 0; i < P_RELAYS; i++) {
    struct bm_relay_view v;
    bm_relay_table_view(p.t, i, &v);
    if (v.confirmed != i % 2 || v.pending) {
      converged = false;
      diag("relay %d: desired %d confirmed %d pending %d stopped %d", i,
           v.desired, v.confirmed, v.pending, v.stopped);
    }
  }

  const char *label = p_mode_names[mode];
  diag("property seed %llu, %d steps, %zu commands, %u drifts, %u aborts, "
       "%u restarts, %u resumed (%s)",
       (unsigned long long)seed, steps, p.ncmds - 1, p.drifts, p.aborts,
       p.gen, p.resumes, label);
  for (int c = 0; c < PC_COUNT; c++) {
    if (c == PC_RESTART && mode != P_RESTART)
      continue;
    if (p.fails[c])
      diag("%u violations, first: %s", p.fails[c], p.first[c]);
    ok(p.fails[c] == 0, "property (%s, seed %llu): %s", label,
       (unsigned long long)seed, p_check_names[c]);
  }
  /* A run that never drifts, aborts or restarts proves nothing of them. */
  if (steps >= 2000)
    ok(p.drifts > 0 && p.aborts > 0 &&
           (mode != P_RESTART || (p.gen > 0 && p.resumes > 0)),
       "property (%s, seed %llu): the run exercised drift, abort%s", label,
       (unsigned long long)seed,
       mode == P_RESTART ? ", restart and resume" : "");
  ok(converged, "property (%s, seed %llu): converges once the gateway answers",
     label, (unsigned long long)seed);
  free(p.cmds);
  bm_events_release(&ev);
  bm_relay_table_free(p.t);
}

/* relay_test [STEPS [SEED]]: the property test's length and seed. */
int main(int argc, char **argv)
{
  int steps = argc > 1 ? atoi(argv[1]) : 20000;

  test_add_find_lookup();
  test_address_collisions();
  test_names_of_ops();
  test_idle();
  test_disconnected_then_connect();
  test_confirm_flow();
  test_known_state_no_command();
  test_non_sent_results();
  test_ack_timeout_retries();
  test_backoff_cap_and_zero_retries();
  test_confirm_timeout();
  test_retry_cancelled();
  test_drift_before_tick();
  test_no_publish_while_down();
  test_supersede_late_after();
  test_supersede_late_before();
  test_supersede_chain();
  test_supersede_late_refusal();
  test_supersede_back_to_confirmed();
  test_old_own_ids();
  test_contradicting_notification();
  test_contradiction_cases();
  test_reorder();
  test_unsolicited();
  test_foreign();
  test_other_relays_id();
  test_unknown();
  test_republish();
  test_republish_deadlines();
  test_next_deadline();
  test_events_list();
  test_strings();
  test_ack_applied();
  test_drift();
  test_drift_after_same_state_report();
  test_save_load();
  test_restart_ordering();
  test_pending_of();
  test_resume();
  test_resume_interlocked();
  test_raise_seq();
  test_resume_attempt_bound();
  test_abort();
  test_corr_seq();
  if (argc > 2) { /* relay_test STEPS SEED: reproduce one seed */
    uint64_t seed = strtoull(argv[2], NULL, 0);
    p_run(seed, steps, P_RING);
    p_run(seed, steps, P_HISTORY);
    p_run(seed, steps, P_RESTART);
  } else {
    p_run(1, steps, P_RING);
    p_run(0xC0FFEE, steps, P_RING);
    p_run(42, steps, P_HISTORY);
    p_run(7, steps, P_RESTART);
  }
  return done_testing();
}
