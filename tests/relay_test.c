/*
 * relay_test.c - unit tests of the relay table (src/relay.h): desired,
 * confirmed and pending state, correlation of commands with responses and
 * notifications, timeouts, retries, contradictions, supersession,
 * reconnects, unknown answers.
 *
 * The table is pure logic with an injected clock, so every test drives it
 * with hand-built bm_response / bm_notification values and explicit times.
 * The last part is a property test: a seeded PRNG drives thousands of
 * random operations and a small model of the header's rules checks the
 * table after every step.
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
      "malformed", "unsolicited", "contradicted", "unknown", "drift"};
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

  bm_relay_table_add(t, "pump", 101, 4);
  command(t, 0, 1, 100, corr, &ev);
  bm_relay_table_set_desired(t, 0, 0, "off", 101);
  bm_relay_table_tick(t, 101, &ev);
  bm_relay_table_set_desired(t, 0, 1, "on", 102);
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

/* ---- the property test -------------------------------------------------- */

#define P_RELAYS 3
#define P_PREFIX "prop"

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
  int relay;
  int status;
  int attempt;
  double published;
  double ack_deadline;     /* reset by a republish */
  double confirm_deadline; /* reset by a republish */
  bool response_seen;
  bool notif_applied;
};

struct p_relay {
  int confirmed;        /* model of the confirmed state */
  uint64_t applied_seq; /* seq of the last applied own confirmation */
  uint64_t pending;     /* seq of the pending command, 0 none */
  uint64_t issued[8];   /* the last own commands, newest last */
  int n_issued;
  double retry_at;      /* 0: none expected */
  bool force;           /* superseded: a command is due even if confirmed */
  int foreign[4];       /* the last applied foreign ids */
  int n_foreign;
};

enum p_check {
  PC_RETURN,  /* return values of on_response / on_notification */
  PC_STATE,   /* confirmed state per the ordering rule */
  PC_PENDING, /* pending is 0 or 1 and the one we know */
  PC_EVENTS,  /* events well-formed */
  PC_TIMERS,  /* no missed deadline, retry not early, no stuck relay */
  PC_LINK,    /* no new command while disconnected */
  PC_COUNTS,  /* every counter agrees with returns and events */
  PC_COUNT
};
static const char *p_check_names[PC_COUNT] = {
    "return values", "confirmed state follows the ordering rule",
    "pending is 0 or 1", "events well-formed",
    "timers: none missed, retries not early, no stuck relay",
    "no new command while disconnected", "counters agree"};

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
  struct p_cmd *cmds; /* indexed by seq */
  size_t ncmds, capcmds;
  struct p_relay r[P_RELAYS];
  bool connected;
  double now;
  int step;
  int next_foreign;
  bool whole_history; /* answers may name any command ever issued */
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

static uint64_t corr_seq(const char *corr)
{
  size_t n = strlen(P_PREFIX "-");
  if (strncmp(corr, P_PREFIX "-", n) != 0 || !corr[n])
    return 0;
  char *end;
  unsigned long long v = strtoull(corr + n, &end, 10);
  return *end ? 0 : (uint64_t)v;
}

static void p_corr(uint64_t seq, char *buf)
{
  snprintf(buf, BM_MSG_ID_SIZE, P_PREFIX "-%llu", (unsigned long long)seq);
}

static void p_new_cmd(struct prop *p, uint64_t seq, int relay, int status)
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
  p->cmds[seq].relay = relay;
  p->cmds[seq].status = status;
  p->cmds[seq].published = p->now;
  p->cmds[seq].ack_deadline = p->now + p->pol.ack_timeout;
  p->cmds[seq].confirm_deadline = p->now + p->pol.command_timeout;
  p->ncmds = seq + 1;
  struct p_relay *r = &p->r[relay];
  if (r->n_issued == 8) {
    memmove(r->issued, r->issued + 1, 7 * sizeof(r->issued[0]));
    r->n_issued--;
  }
  r->issued[r->n_issued++] = seq;
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
      uint64_t seq = corr_seq(e->corr);
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
        else if (p->cmds[seq].response_seen)
          p_fail(p, PC_EVENTS, "republish of acked %s", e->corr);
        else if (p->cmds[seq].status != e->status ||
                 p->cmds[seq].attempt != e->attempt)
          p_fail(p, PC_EVENTS, "republish of %s with another status or "
                               "attempt",
                 e->corr);
        else { /* the command gets its full time again */
          p->cmds[seq].ack_deadline = p->now + p->pol.ack_timeout;
          p->cmds[seq].confirm_deadline = p->now + p->pol.command_timeout;
        }
        break;
      }
      if (!p->connected)
        p_fail(p, PC_LINK, "PUBLISH %s while disconnected", e->corr);
      if (seq != p->ncmds)
        p_fail(p, PC_EVENTS, "PUBLISH %s, expected sequence %zu", e->corr,
               p->ncmds);
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
      p_new_cmd(p, p->ncmds, e->relay, e->status);
      p->cmds[p->ncmds - 1].attempt = e->attempt;
      r->pending = p->ncmds - 1;
      break;
    }
    case BM_EV_STATE:
      if ((e->status != 0 && e->status != 1) ||
          (e->previous < -1 || e->previous > 1) || e->previous == e->status)
        p_fail(p, PC_EVENTS, "STATE %d -> %d", e->previous, e->status);
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
      uint64_t seq = corr_seq(e->corr);
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

/* What a batch of events counts: PUBLISH as published, END timeout,
 * contradicted and gave_up as themselves (refusals are counted by the
 * response that carries them). */
static void p_event_ops(const struct bm_events *ev, uint64_t *want)
{
  for (size_t i = 0; i < ev->n; i++) {
    const struct bm_event *e = &ev->ev[i];
    if (e->kind == BM_EV_PUBLISH)
      want[BM_OP_PUBLISHED]++;
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
 * relay (the last 4 issued), or with whole_history any command ever. */
static uint64_t p_pick(struct prop *p)
{
  if (p->ncmds <= 1)
    return 0;
  if (p->whole_history && rnd(3) == 0)
    return 1 + rnd((unsigned)p->ncmds - 1);
  struct p_relay *r = &p->r[rnd(P_RELAYS)];
  if (r->n_issued == 0)
    return 0;
  int k = r->n_issued < 4 ? r->n_issued : 4;
  return r->issued[r->n_issued - 1 - (int)rnd((unsigned)k)];
}

static bool p_in_ring(struct prop *p, uint64_t seq)
{
  struct p_relay *r = &p->r[p->cmds[seq].relay];
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
  } else if (what < 60) { /* a response */
    uint64_t seq = p_pick(p);
    if (!seq)
      return;
    struct p_cmd *c = &p->cmds[seq];
    static const enum bm_result res[] = {
        BM_RESULT_SENT,        BM_RESULT_SENT,   BM_RESULT_SENT,
        BM_RESULT_SENT,        BM_RESULT_SENT,   BM_RESULT_SENT,
        BM_RESULT_NOT_SEND,    BM_RESULT_FAILED, BM_RESULT_SEND_NO_ACK,
        BM_RESULT_UNAUTHORIZED};
    enum bm_result rs = res[rnd(10)];
    p_corr(seq, corr);
    struct bm_response resp = response(corr, rs, "prop");
    bool was_pending = p->r[c->relay].pending == seq;
    enum bm_apply a = bm_relay_table_on_response(p->t, &resp, p->now, ev);
    bool in_ring = p_in_ring(p, seq);
    if (in_ring) {
      enum bm_apply want = c->response_seen ? BM_APPLY_DUPLICATE : BM_APPLY_OK;
      if (a != want)
        p_fail(p, PC_RETURN, "response %s: got %d, want %d", corr, (int)a,
               (int)want);
    } else if (a != BM_APPLY_OK && a != BM_APPLY_DUPLICATE &&
               a != BM_APPLY_UNKNOWN_ID) {
      p_fail(p, PC_RETURN, "response %s (old): got %d", corr, (int)a);
    }
    size_t ends = count_kind(ev, BM_EV_END);
    if (a == BM_APPLY_OK && was_pending && rs != BM_RESULT_SENT &&
        !c->response_seen) {
      if (ends != 1 || first_kind(ev, BM_EV_END)->outcome == BM_OP_TIMEOUT)
        p_fail(p, PC_EVENTS, "refusal of pending %s: %zu END events", corr,
               ends);
    } else if (ev->n) {
      p_fail(p, PC_EVENTS, "response %s produced %zu events", corr, ev->n);
    }
    p_events(p, ev, false);
    if (a == BM_APPLY_OK)
      c->response_seen = true;
    want_ops[a == BM_APPLY_OK          ? p_result_op(rs)
             : a == BM_APPLY_DUPLICATE ? BM_OP_DUPLICATE
                                       : BM_OP_UNKNOWN]++;
    p_counts(p, &s0, want_ops, "response");
  } else if (what < 80) { /* a notification of one of ours */
    uint64_t seq = p_pick(p);
    if (!seq)
      return;
    struct p_cmd *c = &p->cmds[seq];
    struct p_relay *r = &p->r[c->relay];
    struct bm_relay_view v;
    int st = rnd(8) ? c->status : (int)rnd(2);
    p_corr(seq, corr);
    struct bm_notification n =
        notification(corr, 1000 + c->relay, c->relay + 1, st);
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
             corr, st, (unsigned long long)r->applied_seq, (int)a,
             (int)want);
    if (want == BM_APPLY_OK) {
      c->notif_applied = true;
      r->applied_seq = seq;
      r->confirmed = st;
    }
    bm_relay_table_view(p->t, c->relay, &v);
    bool changed = v.confirmed != before[c->relay].confirmed;
    if (count_kind(ev, BM_EV_STATE) != (changed ? 1u : 0u))
      p_fail(p, PC_EVENTS, "notification %s: STATE events %zu", corr,
             count_kind(ev, BM_EV_STATE));
    if (count_kind(ev, BM_EV_STATE) &&
        strcmp(first_kind(ev, BM_EV_STATE)->corr, corr) != 0)
      p_fail(p, PC_EVENTS, "STATE of %s carries %s", corr,
             first_kind(ev, BM_EV_STATE)->corr);
    size_t ends = count_kind(ev, BM_EV_END);
    const struct bm_event *e = first_kind(ev, BM_EV_END);
    if (contradicted ? ends < 1 || e->outcome != BM_OP_CONTRADICTED ||
                           strcmp(e->corr, corr) != 0
                     : ends != 0)
      p_fail(p, PC_EVENTS, "notification %s (status %d, commanded %d, %s): "
                           "%zu END events, the first %s",
             corr, st, c->status, r->pending == seq ? "pending" : "ended",
             ends, ends ? bm_op_name(e->outcome) : "none");
    if (count_kind(ev, BM_EV_PUBLISH))
      p_fail(p, PC_EVENTS, "notification %s published", corr);
    p_events(p, ev, false);
    p_event_ops(ev, want_ops);
    want_ops[a == BM_APPLY_DUPLICATE ? BM_OP_DUPLICATE : BM_OP_CONFIRMED]++;
    p_counts(p, &s0, want_ops, "notification");
  } else if (what < 88) { /* unsolicited, or a foreign id (new or repeat) */
    int i = (int)rnd(P_RELAYS), st = (int)rnd(2);
    struct p_relay *r = &p->r[i];
    unsigned kind = rnd(3);
    enum bm_apply want = BM_APPLY_OK;
    struct bm_notification n;
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
    if (want == BM_APPLY_OK)
      r->confirmed = st;
    if (count_kind(ev, BM_EV_PUBLISH) || count_kind(ev, BM_EV_END))
      p_fail(p, PC_EVENTS, "foreign/unsolicited %s: PUBLISH or END",
             kind ? corr : "(none)");
    p_events(p, ev, false);
    want_ops[a == BM_APPLY_DUPLICATE ? BM_OP_DUPLICATE : BM_OP_UNSOLICITED]++;
    p_counts(p, &s0, want_ops, "foreign/unsolicited");
  } else if (what < 92) { /* answers for nobody */
    struct bm_notification n = notification(NULL, 5, 5, (int)rnd(2));
    if (bm_relay_table_on_notification(p->t, &n, p->now, ev) !=
        BM_APPLY_UNKNOWN_RELAY)
      p_fail(p, PC_RETURN, "unknown relay not reported");
    n = notification(P_PREFIX "-1", 1000, 1, 1);
    n.has_state = false;
    if (bm_relay_table_on_notification(p->t, &n, p->now, ev) !=
        BM_APPLY_IGNORED)
      p_fail(p, PC_RETURN, "stateless notification not ignored");
    snprintf(corr, sizeof(corr), P_PREFIX "-%zu", p->ncmds + 5);
    struct bm_response resp = response(corr, BM_RESULT_SENT, "");
    if (bm_relay_table_on_response(p->t, &resp, p->now, ev) !=
        BM_APPLY_UNKNOWN_ID)
      p_fail(p, PC_RETURN, "unknown id not reported");
    if (ev->n)
      p_fail(p, PC_EVENTS, "answers for nobody produced events");
    want_ops[BM_OP_UNKNOWN] = 3;
    p_counts(p, &s0, want_ops, "answers for nobody");
  } else { /* link down / up */
    if (p->connected && rnd(2)) {
      p->connected = false;
      bm_relay_table_set_connected(p->t, false, false, p->now, ev);
      if (ev->n)
        p_fail(p, PC_EVENTS, "going down produced %zu events", ev->n);
    } else {
      bool sp = rnd(2);
      p->connected = true;
      bm_relay_table_set_connected(p->t, true, sp, p->now, ev);
      if (sp && ev->n)
        p_fail(p, PC_EVENTS, "session present but %zu events", ev->n);
      for (int i = 0; i < P_RELAYS && !sp; i++) {
        bool want = before[i].pending && p->r[i].pending &&
                    !p->cmds[p->r[i].pending].response_seen;
        size_t got = 0;
        for (size_t k = 0; k < ev->n; k++)
          got += ev->ev[k].relay == i && ev->ev[k].republish;
        if (got != (want ? 1u : 0u))
          p_fail(p, PC_EVENTS, "relay %d: %zu republishes, want %d", i, got,
                 want);
      }
      for (size_t k = 0; k < ev->n; k++)
        if (ev->ev[k].kind != BM_EV_PUBLISH || !ev->ev[k].republish)
          p_fail(p, PC_EVENTS, "set_connected: an event other than a "
                               "republish");
    }
    p_events(p, ev, true);
    p_event_ops(ev, want_ops);
    p_counts(p, &s0, want_ops, "set_connected");
  }
  p_check(p);
}

/* The gateway answers command seq truthfully: "sent", then the state. */
static void p_answer(struct prop *p, uint64_t seq, int relay, int status)
{
  char corr[BM_MSG_ID_SIZE];
  struct bm_events sink = {0};

  p_corr(seq, corr);
  struct bm_response resp = response(corr, BM_RESULT_SENT, "");
  struct bm_notification n =
      notification(corr, 1000 + relay, relay + 1, status);
  bm_relay_table_on_response(p->t, &resp, p->now, &sink);
  bm_relay_table_on_notification(p->t, &n, p->now, &sink);
  bm_events_release(&sink);
}

static void p_run(uint64_t seed, int steps, bool whole_history)
{
  struct prop p;
  struct bm_events ev = {0};
  char name[16];

  memset(&p, 0, sizeof(p));
  rng_state = seed;
  p.pol = POLICY;
  p.whole_history = whole_history;
  p.t = table_new(&p.pol, P_PREFIX);
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
      p_answer(&p, seq, i, p.cmds[seq].status);
    bm_relay_table_set_desired(p.t, i, i % 2, "drain", p.now);
  }
  for (int round = 0; round < 50; round++) {
    p.now += 100; /* past every timer */
    bm_events_clear(&ev);
    bm_relay_table_tick(p.t, p.now, &ev);
    for (size_t k = 0; k < ev.n; k++)
      if (ev.ev[k].kind == BM_EV_PUBLISH)
        p_answer(&p, corr_seq(ev.ev[k].corr), ev.ev[k].relay,
                 ev.ev[k].status);
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

  const char *label = whole_history ? "answers to any command ever issued"
                                    : "answers to pending/recent commands";
  diag("property seed %llu, %d steps, %zu commands (%s)",
       (unsigned long long)seed, steps, p.ncmds - 1, label);
  for (int c = 0; c < PC_COUNT; c++) {
    if (p.fails[c])
      diag("%u violations, first: %s", p.fails[c], p.first[c]);
    ok(p.fails[c] == 0, "property (%s, seed %llu): %s", label,
       (unsigned long long)seed, p_check_names[c]);
  }
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
  test_unknown();
  test_republish();
  test_republish_deadlines();
  test_next_deadline();
  test_events_list();
  test_strings();
  if (argc > 2) { /* relay_test STEPS SEED: reproduce one seed */
    uint64_t seed = strtoull(argv[2], NULL, 0);
    p_run(seed, steps, false);
    p_run(seed, steps, true);
  } else {
    p_run(1, steps, false);
    p_run(0xC0FFEE, steps, false);
    p_run(42, steps, true);
  }
  return done_testing();
}
