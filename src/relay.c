/*
 * relay.c - see relay.h for the state machine and its rules.
 *
 * Layout: relays live in one array, indexed by the int the API hands out.
 * Three idmaps find them: by name hash, by packed (resourceId, output), and
 * by correlationId hash for the pending command and the RECENT_CMDS last
 * commands of each relay.  What only some relays need lives apart and is
 * allocated on first use: the pending command, the ids of recent commands
 * (relays commanded at least once, or told of other applications'
 * commands), the ring of confirmed change times (only as long as a
 * MaxSwitchesPerHour needs; the last change is kept inline for all), so a
 * relay that is only watched costs its struct, its name and two map
 * entries.  Marked relays wait in a queue for the next tick;
 * timers are found by a scan that runs only when the earliest cached
 * deadline has passed, so an idle table costs nothing per tick.
 */
#include "relay.h"

#include "alloc.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idmap.h"
#include "str.h"

#define RECENT_CMDS 4   /* our ended commands still recognised per relay */
#define APPLIED_IDS 4   /* foreign correlationIds remembered per relay */
#define MAX_BACKOFF 60.0
#define RESUMED "resumed after restart: " /* a resumed command's origin */

struct pending_cmd {
  char corr[BM_MSG_ID_SIZE];
  uint64_t hash;
  uint64_t seq;
  int status;
  int attempt;
  bool acked;
  bool resumed;     /* from before a restart: publish again on connect */
  double published_at;
  double ack_deadline;
  double confirm_deadline;
};

struct recent_cmd {
  uint64_t hash; /* 0: empty */
  uint64_t seq;
  double published_at;
  bool acked;
  bool confirmed;
};

/* The "on" command behind a relay's on_doubt_until, kept for the journal:
 * a restart within the doubt keeps it (bm_relay_table_doubt_of). */
struct doubt {
  struct bm_command_saved cmd;
  double ended_at; /* the doubt lasts until CommandTimeout after it */
};

/* The correlationIds a relay still recognises: our last ended commands,
 * and other applications' commands already applied; and the command of
 * its doubt, if it had one. */
struct relay_ids {
  struct recent_cmd recent[RECENT_CMDS];
  uint64_t applied[APPLIED_IDS];
  uint8_t recent_next;
  uint8_t applied_next;
  struct doubt *doubt; /* NULL until a doubt began */
};

struct relay {
  char *name;
  char *origin; /* who set the desired state, NULL for none */
  int64_t resource_id;
  int output;
  int8_t confirmed; /* -1 unknown */
  int8_t desired;   /* -1 none */
  bool stopped;
  bool queued;
  bool force;       /* superseded a command: send even if confirmed == desired */
  bool by_command;  /* confirmed came from a command of ours */
  int8_t manual;    /* override: -1 none, 0, 1 */
  uint8_t refused_kind; /* of the refusal reported at refused_at */
  int n_groups;        /* of groups (here: fills what would be padding) */
  double manual_until; /* 0: until "auto" */
  double *cmd_times;   /* ring of policy.max_per_minute publish times */
  int cmd_next;
  int heap_pos;        /* in the table's timer heap, -1 when not */
  int *groups;         /* interlock groups this relay is in */
  double refused_at;   /* last refusal reported (once a minute at most) */
  double not_before;   /* a rule's limits hold the command until then */
  const struct bm_relay_limits *hold_limits; /* those limits, checked again
                                                when the hold ends */
  double on_doubt_until; /* an "on" command ended unconfirmed (superseded,
                            timed out, refused when it was to go out
                            again) may still reach the device until then:
                            for interlocks the relay counts as commanded
                            on; 0 none */
  double last_switch;  /* time of the last confirmed change, if sw_n > 0 */
  double *switches;    /* ring of sw_cap change times when sw_cap > 1 */
  uint8_t sw_cap;      /* change times kept: 1 (last_switch) or the ring's */
  uint8_t sw_next;     /* next slot of the ring */
  uint8_t sw_n;        /* change times known, up to sw_cap */
  int attempt;      /* commands sent for the current desired state */
  uint64_t confirmed_seq;
  double retry_at;  /* 0: no retry scheduled */
  struct pending_cmd *pending;
  int next_name; /* next relay whose name hashes alike, -1 none */
  int next_addr; /* next relay whose address packs alike, -1 none */
  struct relay_ids *ids; /* NULL until needed */
};

/* A relay in the timer heap (see "timers" below). */
struct timer {
  double at;
  int relay;
};

struct bm_relay_table {
  struct bm_relay_policy policy;
  char prefix[48];
  struct relay *relays;
  size_t n, cap;
  struct { int *relays; int n; } *interlocks;
  int n_interlocks;
  struct bm_idmap by_name;
  struct bm_idmap by_addr;
  struct bm_idmap by_corr;
  int *queue; /* marked relays, each at most once */
  size_t queue_n;
  uint64_t seq;
  bool connected;
  struct timer *heap; /* relays with a deadline, earliest first (cap) */
  size_t heap_n;
  int *due;           /* run_timers' scratch (cap) */
  struct bm_relay_stats stats;
  /* The command the last request superseded, until the caller takes it
   * (bm_relay_table_take_superseded); superseded_relay -1: none. */
  struct bm_command_saved superseded;
  int superseded_relay;
};

static const char *op_names[BM_OP_COUNT] = {
    [BM_OP_PUBLISHED] = "published",       [BM_OP_SENT] = "sent",
    [BM_OP_CONFIRMED] = "confirmed",       [BM_OP_NOT_SEND] = "not_send",
    [BM_OP_FAILED] = "failed",             [BM_OP_SEND_NO_ACK] = "send_no_ack",
    [BM_OP_UNAUTHORIZED] = "unauthorized", [BM_OP_TIMEOUT] = "timeout",
    [BM_OP_GAVE_UP] = "gave_up",           [BM_OP_DUPLICATE] = "duplicate",
    [BM_OP_MALFORMED] = "malformed",       [BM_OP_UNSOLICITED] = "unsolicited",
    [BM_OP_CONTRADICTED] = "contradicted", [BM_OP_UNKNOWN] = "unknown",
    [BM_OP_DRIFT] = "drift",               [BM_OP_REFUSED] = "refused",
};

const char *bm_op_name(enum bm_op op)
{
  return (op >= 0 && op < BM_OP_COUNT) ? op_names[op] : NULL;
}

/* ---- events ------------------------------------------------------------ */

void bm_events_clear(struct bm_events *e)
{
  e->n = 0;
  e->lost = 0;
}

void bm_events_release(struct bm_events *e)
{
  free(e->ev);
  e->ev = NULL;
  e->n = e->cap = 0;
  e->lost = 0;
}

/* Returns a zeroed event at the end of the list, or NULL (counted lost). */
static struct bm_event *events_push(struct bm_events *e, enum bm_event_kind k,
                                    int relay)
{
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 16;
    struct bm_event *ev;
    if (cap > BM_EVENTS_MAX)
      cap = BM_EVENTS_MAX;
    if (cap == e->cap || !(ev = bm_realloc(e->ev, cap * sizeof(*ev)))) {
      e->lost++;
      return NULL;
    }
    e->ev = ev;
    e->cap = cap;
  }
  struct bm_event *ev = &e->ev[e->n++];
  memset(ev, 0, sizeof(*ev));
  ev->kind = k;
  ev->relay = relay;
  ev->previous = -1;
  return ev;
}

/* ---- table ------------------------------------------------------------- */

static uint64_t addr_key(int64_t resource_id, int output)
{
  return ((uint64_t)resource_id * 0x10001ULL) ^ ((uint64_t)output << 48) ^
         (uint64_t)output;
}

bm_relay_table_t *bm_relay_table_new(const struct bm_relay_policy *policy,
                                     const char *id_prefix)
{
  bm_relay_table_t *t = bm_calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  t->policy = *policy;
  bm_str_copy(t->prefix, sizeof(t->prefix), id_prefix);
  t->superseded_relay = -1;
  return t;
}

void bm_relay_table_free(bm_relay_table_t *t)
{
  if (!t)
    return;
  for (size_t i = 0; i < t->n; i++) {
    free(t->relays[i].name);
    free(t->relays[i].origin);
    free(t->relays[i].pending);
    free(t->relays[i].cmd_times);
    free(t->relays[i].groups);
    free(t->relays[i].switches);
    if (t->relays[i].ids)
      free(t->relays[i].ids->doubt);
    free(t->relays[i].ids);
  }
  for (int i = 0; i < t->n_interlocks; i++)
    free(t->interlocks[i].relays);
  free(t->interlocks);
  free(t->relays);
  free(t->queue);
  free(t->heap);
  free(t->due);
  bm_idmap_release(&t->by_name);
  bm_idmap_release(&t->by_addr);
  bm_idmap_release(&t->by_corr);
  free(t);
}

int bm_relay_table_add(bm_relay_table_t *t, const char *name,
                       int64_t resource_id, int output)
{
  char *copy = NULL;
  int idx = (int)t->n;
  uint64_t name_key = bm_idmap_hash(name);
  uint64_t addr = addr_key(resource_id, output);
  int name_head, addr_head;

  if (strlen(name) >= BM_RELAY_NAME_SIZE ||
      bm_relay_table_find(t, name) >= 0 ||
      bm_relay_table_lookup(t, resource_id, output) >= 0)
    return -1;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    struct relay *r = bm_realloc(t->relays, cap * sizeof(*r));
    struct timer *h;
    int *q;
    if (!r)
      return -1;
    t->relays = r;
    if (!(q = bm_realloc(t->queue, cap * sizeof(*q))))
      return -1;
    t->queue = q;
    /* Fresh arrays, only the heap's entries copied: pages never used by
     * the timers (most, at idle) stay untouched, so not resident. */
    if (!(h = bm_malloc(cap * sizeof(*h))))
      return -1;
    if (t->heap_n)
      memcpy(h, t->heap, t->heap_n * sizeof(*h));
    free(t->heap);
    t->heap = h;
    if (!(q = bm_malloc(cap * sizeof(*q))))
      return -1;
    free(t->due);
    t->due = q;
    t->cap = cap;
  }
  if (!(copy = bm_strdup(name)))
    return -1;
  /* Keys are hashes or packings that may collide: a new relay heads the
   * chain of the relays sharing its key. */
  name_head = bm_idmap_get(&t->by_name, name_key);
  addr_head = bm_idmap_get(&t->by_addr, addr);
  if (bm_idmap_put(&t->by_name, name_key, idx) != 0)
    goto fail;
  if (bm_idmap_put(&t->by_addr, addr, idx) != 0) {
    if (name_head >= 0)
      (void)bm_idmap_put(&t->by_name, name_key, name_head); /* no growth */
    else
      bm_idmap_del(&t->by_name, name_key);
    goto fail;
  }
  struct relay *r = &t->relays[t->n++];
  memset(r, 0, sizeof(*r));
  r->next_name = name_head;
  r->next_addr = addr_head;
  r->name = copy;
  r->resource_id = resource_id;
  r->output = output;
  r->confirmed = -1;
  r->desired = -1;
  r->manual = -1;
  r->sw_cap = 1;
  r->heap_pos = -1;
  return idx;

fail:
  free(copy);
  return -1;
}

size_t bm_relay_table_size(const bm_relay_table_t *t) { return t->n; }

int bm_relay_table_find(const bm_relay_table_t *t, const char *name)
{
  for (int i = bm_idmap_get(&t->by_name, bm_idmap_hash(name)); i >= 0;
       i = t->relays[i].next_name)
    if (strcmp(t->relays[i].name, name) == 0)
      return i;
  return -1;
}

int bm_relay_table_lookup(const bm_relay_table_t *t, int64_t resource_id,
                          int output)
{
  for (int i = bm_idmap_get(&t->by_addr, addr_key(resource_id, output));
       i >= 0; i = t->relays[i].next_addr)
    if (t->relays[i].resource_id == resource_id &&
        t->relays[i].output == output)
      return i;
  return -1;
}

void bm_relay_table_view(const bm_relay_table_t *t, int relay,
                         struct bm_relay_view *out)
{
  const struct relay *r = &t->relays[relay];
  out->name = r->name;
  out->resource_id = r->resource_id;
  out->output = r->output;
  out->confirmed = r->confirmed;
  out->desired = r->desired;
  out->pending = r->pending ? 1 : 0;
  out->stopped = r->stopped;
  out->manual = r->manual;
}

const char *bm_relay_table_name(const bm_relay_table_t *t, int relay)
{
  return (relay >= 0 && (size_t)relay < t->n) ? t->relays[relay].name : NULL;
}

void bm_relay_table_count_op(bm_relay_table_t *t, enum bm_op op)
{
  assert(op >= 0 && op < BM_OP_COUNT);
  t->stats.ops[op]++;
}

void bm_relay_table_stats(bm_relay_table_t *t, struct bm_relay_stats *out,
                          bool reset_latency)
{
  *out = t->stats;
  if (reset_latency) {
    t->stats.ack_sum = t->stats.confirm_sum = 0;
    t->stats.ack_n = t->stats.confirm_n = 0;
  }
}

double bm_relay_table_next_deadline(const bm_relay_table_t *t)
{
  return t->heap_n ? t->heap[0].at : HUGE_VAL;
}

static void mark(bm_relay_table_t *t, int relay)
{
  struct relay *r = &t->relays[relay];
  if (r->queued)
    return;
  r->queued = true;
  t->queue[t->queue_n++] = relay;
}

/* ---- timers -------------------------------------------------------------
 *
 * A relay's deadlines: its pending command's ack and confirm deadlines, a
 * retry, a rule's hold.  Every relay with one is in a binary min-heap
 * keyed by the earliest (at most once: heap_pos), so the next deadline of
 * the table is the heap's top and a change costs O(log n), where a scan
 * of every relay after each answer made a command cost O(relays).  An
 * answer or a supersede sets the relay's key to its earliest deadline
 * again; a deadline dropped otherwise (a new intent clearing a retry or a
 * hold) leaves the key earlier than needed, never later.  When a key
 * passes, run_timers takes the relay out, acts on what is due, and puts
 * it back with its earliest deadline, if any. */
static void heap_put(bm_relay_table_t *t, size_t pos, struct timer tm)
{
  t->heap[pos] = tm;
  t->relays[tm.relay].heap_pos = (int)pos;
}

/* Moves the entry at pos up or down to its place. */
static void heap_fix(bm_relay_table_t *t, size_t pos)
{
  struct timer tm = t->heap[pos];

  while (pos > 0 && t->heap[(pos - 1) / 2].at > tm.at) {
    heap_put(t, pos, t->heap[(pos - 1) / 2]);
    pos = (pos - 1) / 2;
  }
  for (;;) {
    size_t child = 2 * pos + 1;
    if (child >= t->heap_n)
      break;
    if (child + 1 < t->heap_n && t->heap[child + 1].at < t->heap[child].at)
      child++;
    if (t->heap[child].at >= tm.at)
      break;
    heap_put(t, pos, t->heap[child]);
    pos = child;
  }
  heap_put(t, pos, tm);
}

/* Gives relay the key `at`, entering the heap if it is not in it. */
static void heap_set(bm_relay_table_t *t, int relay, double at)
{
  int pos = t->relays[relay].heap_pos;

  if (pos < 0)
    pos = (int)t->heap_n++;
  heap_put(t, (size_t)pos, (struct timer){at, relay});
  heap_fix(t, (size_t)pos);
}

/* Takes the relay at pos out; returns it. */
static int heap_remove(bm_relay_table_t *t, size_t pos)
{
  int relay = t->heap[pos].relay;

  t->relays[relay].heap_pos = -1;
  if (pos < --t->heap_n) { /* the last one fills the gap */
    heap_put(t, pos, t->heap[t->heap_n]);
    heap_fix(t, pos);
  }
  return relay;
}

/* Relay `relay` has a deadline at `when`: its key becomes `when` if that is
 * earlier (or it enters the heap). */
static void want_deadline(bm_relay_table_t *t, int relay, double when)
{
  int pos = t->relays[relay].heap_pos;

  if (pos < 0 || when < t->heap[pos].at)
    heap_set(t, relay, when);
}

/* The earliest deadline of a relay still to come after `now` (HUGE_VAL:
 * none); its pending command's are due even when passed. */
static double relay_deadline(const struct relay *r, double now)
{
  const struct pending_cmd *p = r->pending;
  double next = HUGE_VAL;

  if (p)
    next = p->acked ? p->confirm_deadline
                    : fmin(p->ack_deadline, p->confirm_deadline);
  if (r->retry_at > now)
    next = fmin(next, r->retry_at);
  if (r->not_before > now)
    next = fmin(next, r->not_before);
  return next;
}

/* Sets a relay's key to its earliest deadline, or takes it out of the heap
 * when it has none: after a deadline went (an answer, a supersede). */
static void update_deadline(bm_relay_table_t *t, int relay, double now)
{
  double next = relay_deadline(&t->relays[relay], now);
  int pos = t->relays[relay].heap_pos;

  if (next < HUGE_VAL)
    heap_set(t, relay, next);
  else if (pos >= 0)
    heap_remove(t, (size_t)pos);
}

int bm_relay_table_check_timers(const bm_relay_table_t *t, double now)
{
  for (size_t pos = 0; pos < t->heap_n; pos++) {
    int relay = t->heap[pos].relay;
    if (relay < 0 || (size_t)relay >= t->n ||
        t->relays[relay].heap_pos != (int)pos ||
        (pos > 0 && t->heap[(pos - 1) / 2].at > t->heap[pos].at))
      return -1;
  }
  for (size_t i = 0; i < t->n; i++) {
    double next = relay_deadline(&t->relays[i], now);
    int pos = t->relays[i].heap_pos;
    if (pos >= 0 && ((size_t)pos >= t->heap_n ||
                     t->heap[pos].relay != (int)i))
      return -1;
    if (next < HUGE_VAL && (pos < 0 || t->heap[pos].at > next))
      return -1; /* a deadline the heap would miss */
  }
  return 0;
}

/* ---- commands ---------------------------------------------------------- */

/* The "on" command c of the relay ended unconfirmed at `at`: it may still
 * reach the device, so for its interlocks the relay counts as commanded on
 * until CommandTimeout later. The command is kept for the journal; without
 * memory for it, the doubt holds in this run only. */
static void begin_doubt(bm_relay_table_t *t, struct relay *r,
                        const struct bm_command_saved *c, double at)
{
  r->on_doubt_until = at + t->policy.command_timeout;
  if (!r->ids && !(r->ids = bm_calloc(1, sizeof(*r->ids))))
    return;
  if (!r->ids->doubt && !(r->ids->doubt = bm_calloc(1, sizeof(*r->ids->doubt))))
    return;
  r->ids->doubt->cmd = *c;
  r->ids->doubt->ended_at = at;
}

/* The relay's pending command, an "on", ends unconfirmed now. */
static void doubt_pending(bm_relay_table_t *t, int relay, double now)
{
  struct bm_command_saved c;

  if (bm_relay_table_pending_of(t, relay, &c))
    begin_doubt(t, &t->relays[relay], &c, now);
}

/* Ends the relay's doubt: its last command was confirmed. */
static void end_doubt(struct relay *r)
{
  r->on_doubt_until = 0;
  if (r->ids) {
    free(r->ids->doubt);
    r->ids->doubt = NULL;
  }
}

/* Moves the pending command into the relay's ring of recent commands; the
 * one it pushes out is forgotten by the correlation map. */
static void retire_pending(bm_relay_table_t *t, struct relay *r,
                           bool confirmed)
{
  struct pending_cmd *p = r->pending;
  struct recent_cmd *slot;

  if (!r->ids && !(r->ids = bm_calloc(1, sizeof(*r->ids)))) {
    bm_idmap_del(&t->by_corr, p->hash); /* forgotten at once, then */
    free(p);
    r->pending = NULL;
    return;
  }
  slot = &r->ids->recent[r->ids->recent_next];
  if (slot->hash)
    bm_idmap_del(&t->by_corr, slot->hash);
  slot->hash = p->hash;
  slot->seq = p->seq;
  slot->published_at = p->published_at;
  slot->acked = p->acked;
  slot->confirmed = confirmed;
  r->ids->recent_next = (uint8_t)((r->ids->recent_next + 1) % RECENT_CMDS);
  free(p);
  r->pending = NULL;
}

/* Another relay of an interlock group of `relay` that is on or commanded
 * on (or may still be: on_doubt_until), or -1. */
static int interlocked_with(const bm_relay_table_t *t, int relay, double now)
{
  const struct relay *r = &t->relays[relay];

  for (int g = 0; g < r->n_groups; g++) {
    const int *members = t->interlocks[r->groups[g]].relays;
    for (int k = 0; k < t->interlocks[r->groups[g]].n; k++) {
      const struct relay *o = &t->relays[members[k]];
      if (members[k] != relay &&
          (o->confirmed == 1 || (o->pending && o->pending->status == 1) ||
           o->on_doubt_until > now))
        return members[k];
    }
  }
  return -1;
}

/* Why relay `other` keeps its interlock partners off, after "interlocked
 * with relay \"<name>\", ": into buf (size n), returned. */
static const char *interlock_why(const bm_relay_table_t *t, int other,
                                 double now, char *buf, size_t n)
{
  const struct relay *o = &t->relays[other];

  if (o->confirmed == 1)
    snprintf(buf, n, "which is on");
  else if (o->pending && o->pending->status == 1)
    snprintf(buf, n, "which is being switched on");
  else
    snprintf(buf, n,
             "whose unconfirmed \"on\" command may still reach it for %.0f s",
             ceil(o->on_doubt_until - now));
  return buf;
}

enum refusal { REFUSED_INTERLOCK = 1, REFUSED_BUDGET };

/* The END event of a refused command: a FAILURE with the relay's origin;
 * corr "" for a command refused before it was made. */
static void push_refused(bm_relay_table_t *t, int relay, int status,
                         int attempt, const char *corr, const char *reason,
                         struct bm_events *out)
{
  struct bm_event *ev;

  if (!(ev = events_push(out, BM_EV_END, relay)))
    return;
  ev->outcome = BM_OP_REFUSED;
  ev->severity = BM_SEV_FAILURE;
  ev->status = status;
  ev->attempt = attempt;
  bm_str_copy(ev->corr, sizeof(ev->corr), corr);
  bm_str_copy(ev->origin, sizeof(ev->origin), t->relays[relay].origin);
  bm_str_copy(ev->reason, sizeof(ev->reason), reason);
}

/* Refuses a command about to be made: an END event, the relay stopped. */
static void refuse(bm_relay_table_t *t, int relay, enum refusal kind,
                   const char *reason, double now, struct bm_events *out)
{
  struct relay *r = &t->relays[relay];

  r->stopped = true;
  t->stats.ops[BM_OP_REFUSED]++;
  /* A flood of requests is refused each time but reported once a minute;
   * a refusal of another kind is news. */
  if (r->refused_at > 0 && now - r->refused_at < 60.0 &&
      r->refused_kind == kind)
    return;
  r->refused_at = now;
  r->refused_kind = (uint8_t)kind;
  push_refused(t, relay, r->desired, r->attempt + 1, "", reason, out);
}

/* The rules every command obeys (see relay.h): true when it may go. */
static bool command_allowed(bm_relay_table_t *t, int relay, double now,
                            struct bm_events *out)
{
  struct relay *r = &t->relays[relay];
  int max = t->policy.max_per_minute, other;
  char why[BM_REASON_SIZE];

  if (r->desired == 1 && (other = interlocked_with(t, relay, now)) >= 0) {
    char state[96];
    snprintf(why, sizeof(why), "refused: interlocked with relay \"%s\", %s",
             t->relays[other].name,
             interlock_why(t, other, now, state, sizeof(state)));
    refuse(t, relay, REFUSED_INTERLOCK, why, now, out);
    return false;
  }
  if (max > 0) {
    if (!r->cmd_times && !(r->cmd_times = bm_calloc((size_t)max, sizeof(double))))
      return false;
    /* The oldest of the last `max` commands must be a minute old. */
    double oldest = r->cmd_times[r->cmd_next];
    if (oldest > 0 && now - oldest < 60.0) {
      snprintf(why, sizeof(why),
               "refused: command budget of %d per minute spent; the last "
               "request came from %s",
               max, r->origin ? r->origin : "an unknown input");
      refuse(t, relay, REFUSED_BUDGET, why, now, out);
      return false;
    }
    r->cmd_times[r->cmd_next] = now;
    r->cmd_next = (r->cmd_next + 1) % max;
  }
  return true;
}

static void issue_command(bm_relay_table_t *t, int relay, double now,
                          struct bm_events *out)
{
  struct relay *r = &t->relays[relay];
  struct pending_cmd *p;
  struct bm_event *ev;

  if (!command_allowed(t, relay, now, out))
    return;
  if (!(p = bm_calloc(1, sizeof(*p))))
    return; /* stays marked-less; the next set_desired or tick retries */
  p->seq = ++t->seq;
  snprintf(p->corr, sizeof(p->corr), "%s-%llu", t->prefix,
           (unsigned long long)p->seq);
  p->hash = bm_idmap_hash(p->corr);
  if (bm_idmap_put(&t->by_corr, p->hash, relay) != 0) {
    free(p);
    return;
  }
  p->status = r->desired;
  p->attempt = ++r->attempt;
  p->published_at = now;
  p->ack_deadline = now + t->policy.ack_timeout;
  p->confirm_deadline = now + t->policy.command_timeout;
  r->pending = p;
  want_deadline(t, relay, fmin(p->ack_deadline, p->confirm_deadline));
  t->stats.ops[BM_OP_PUBLISHED]++;

  if (!(ev = events_push(out, BM_EV_PUBLISH, relay)))
    return;
  ev->status = p->status;
  ev->attempt = p->attempt;
  ev->seq = p->seq;
  bm_str_copy(ev->corr, sizeof(ev->corr), p->corr);
  bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
}

/* The k-th newest confirmed change time (1: the last), k <= r->sw_n. */
static double switch_at(const struct relay *r, int k)
{
  if (k == 1)
    return r->last_switch;
  return r->switches[(r->sw_next + r->sw_cap - k) % r->sw_cap];
}

/* When the limits allow the relay to leave its confirmed state, or 0 when
 * they allow it now; why says which limit holds it. */
static double limits_allow_at(const struct relay *r, int status,
                              const struct bm_relay_limits *l, double now,
                              char *why, size_t whylen)
{
  double at = 0, since;

  if (r->confirmed < 0 || r->confirmed == status || !r->sw_n)
    return 0;
  since = r->last_switch;
  if (r->confirmed == 1 && l->min_on > 0 && now < since + l->min_on) {
    at = since + l->min_on;
    if (why)
      snprintf(why, whylen, "MinOnTime: on for %.0f s of %.0f", now - since,
               l->min_on);
  } else if (r->confirmed == 0 && l->min_off > 0 && now < since + l->min_off) {
    at = since + l->min_off;
    if (why)
      snprintf(why, whylen, "MinOffTime: off for %.0f s of %.0f", now - since,
               l->min_off);
  }
  if (l->max_per_hour > 0 && r->sw_n >= l->max_per_hour) {
    int max = l->max_per_hour < BM_RELAY_SWITCHES ? l->max_per_hour
                                                 : BM_RELAY_SWITCHES;
    /* The max-th newest change must be an hour old. */
    double oldest = switch_at(r, max);
    if (now < oldest + 3600.0 && oldest + 3600.0 > at) {
      at = oldest + 3600.0;
      if (why)
        snprintf(why, whylen, "MaxSwitchesPerHour: %d changes in the last "
                              "hour",
                 max);
    }
  }
  return at;
}

static void reconcile(bm_relay_table_t *t, int relay, double now,
                      struct bm_events *out)
{
  struct relay *r = &t->relays[relay];

  if (r->desired < 0 || r->pending || r->stopped)
    return;
  if (r->confirmed == r->desired && !r->force) {
    r->attempt = 0;
    r->retry_at = 0;
    return;
  }
  if (!t->connected || (r->retry_at > 0 && r->retry_at > now) ||
      r->not_before > now)
    return;
  if (r->not_before > 0 && r->hold_limits) {
    /* The hold is over, but a change confirmed meanwhile (the device
     * switched by hand, say) counts against the limits too. */
    double at = limits_allow_at(r, r->desired, r->hold_limits, now, NULL, 0);
    if (at > now) {
      r->not_before = at;
      want_deadline(t, relay, at);
      return;
    }
  }
  r->retry_at = 0;
  r->not_before = 0;
  r->force = false;
  issue_command(t, relay, now, out);
}

bool bm_relay_table_set_desired(bm_relay_table_t *t, int relay, int status,
                                const char *origin, double now)
{
  struct relay *r = &t->relays[relay];
  char *copy;

  assert(status == 0 || status == 1);
  if (status == r->desired && !r->stopped) {
    /* The same intent again changes nothing, but lifts a rule's hold
     * (another input's request is not bound by that rule's limits; a
     * limited request sets its hold again right after). */
    if (r->not_before <= 0)
      return false;
    r->not_before = 0;
    mark(t, relay);
    return true;
  }
  r->desired = (int8_t)status;
  r->stopped = false;
  r->attempt = 0;
  r->retry_at = 0;
  r->not_before = 0;
  if (r->pending && r->pending->status != status) {
    /* Superseded: the old command may still reach the device, so a new one
     * goes out even when the confirmed state already is what we want, and
     * an old "on" keeps the relay's interlock partners off meanwhile (kept
     * with its own origin, replaced below); the caller says it ended. */
    bm_relay_table_pending_of(t, relay, &t->superseded);
    t->superseded_relay = relay;
    if (t->superseded.status == 1)
      begin_doubt(t, r, &t->superseded, now);
    retire_pending(t, r, false);
    update_deadline(t, relay, now);
    r->force = true;
  }
  if (origin && (copy = bm_strdup(origin))) {
    free(r->origin);
    r->origin = copy;
  }
  if (r->pending || (r->confirmed == status && !r->force))
    return false;
  mark(t, relay);
  return true;
}

/* A command in flight that may not be sent again (interlocked): ended as
 * refused, with its correlationId (the journal ends it too), the relay
 * stopped. Reported every time: there is one per command. */
static void refuse_republish(bm_relay_table_t *t, int relay, int other,
                             double now, struct bm_events *out)
{
  struct relay *r = &t->relays[relay];
  char why[BM_REASON_SIZE], state[96];

  t->stats.ops[BM_OP_REFUSED]++;
  snprintf(why, sizeof(why),
           "refused: not sent again: interlocked with relay \"%s\", %s",
           t->relays[other].name,
           interlock_why(t, other, now, state, sizeof(state)));
  push_refused(t, relay, r->pending->status, r->pending->attempt,
               r->pending->corr, why, out);
  if (r->pending->status == 1) /* it went out before the restart */
    doubt_pending(t, relay, now);
  retire_pending(t, r, false);
  r->stopped = true;
  update_deadline(t, relay, now);
}

void bm_relay_table_set_connected(bm_relay_table_t *t, bool up,
                                  bool session_present, double now,
                                  struct bm_events *out)
{
  int other;

  t->connected = up;
  if (!up)
    return;
  for (size_t i = 0; i < t->n; i++) {
    struct relay *r = &t->relays[i];
    struct bm_event *ev;

    if (!r->pending) {
      if (r->desired >= 0)
        mark(t, (int)i);
      continue;
    }
    if (!r->pending->resumed && (session_present || r->pending->acked))
      continue;
    if (r->pending->resumed &&
        now >= fmin(r->pending->ack_deadline, r->pending->confirm_deadline) &&
        !r->pending->acked)
      continue; /* expired while we were down: the next tick times it out */
    if (r->pending->resumed && r->pending->acked &&
        now >= r->pending->confirm_deadline)
      continue;
    if (r->pending->status == 1 && (other = interlocked_with(t, (int)i, now)) >= 0) {
      /* Its partner went on meanwhile (by hand, before a restart), or the
       * interlock is new: not sent again. It may have reached the device
       * before: the interlock can only keep it from going out again. */
      refuse_republish(t, (int)i, other, now, out);
      continue;
    }
    r->pending->resumed = false;
    /* The broker lost the session, and with it our QoS 2 exchange: the
     * command goes out again and gets its full time again. */
    r->pending->ack_deadline = now + t->policy.ack_timeout;
    r->pending->confirm_deadline = now + t->policy.command_timeout;
    want_deadline(t, (int)i,
                  fmin(r->pending->ack_deadline, r->pending->confirm_deadline));
    t->stats.ops[BM_OP_PUBLISHED]++;
    if (!(ev = events_push(out, BM_EV_PUBLISH, (int)i)))
      continue;
    ev->status = r->pending->status;
    ev->attempt = r->pending->attempt;
    ev->republish = true;
    ev->seq = r->pending->seq;
    bm_str_copy(ev->corr, sizeof(ev->corr), r->pending->corr);
    bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
  }
}

/* After a command failed to bring the relay to its desired state (timeout,
 * or the device reported the other state): schedule a retry with backoff,
 * or give up when the retries are spent. */
static void retry_or_give_up(bm_relay_table_t *t, int relay, int attempt,
                             double now, struct bm_events *out)
{
  struct relay *r = &t->relays[relay];
  struct bm_event *ev;

  if (r->desired < 0 || r->desired == r->confirmed) {
    r->attempt = 0; /* reached meanwhile: a later drift starts afresh */
    return;
  }
  if (attempt <= t->policy.retries) {
    double backoff = t->policy.retry_backoff * ldexp(1.0, attempt - 1);
    r->retry_at = now + fmin(backoff, MAX_BACKOFF);
    want_deadline(t, relay, r->retry_at);
    return;
  }
  r->stopped = true;
  t->stats.ops[BM_OP_GAVE_UP]++;
  if ((ev = events_push(out, BM_EV_END, relay))) {
    ev->outcome = BM_OP_GAVE_UP;
    ev->severity = BM_SEV_FAILURE;
    ev->status = r->desired;
    ev->attempt = attempt;
    bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
    snprintf(ev->reason, sizeof(ev->reason),
             "gave up after %d attempt%s without confirmation", attempt,
             attempt == 1 ? "" : "s");
  }
}

/* ---- answers ----------------------------------------------------------- */

static enum bm_op result_op(enum bm_result res)
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
  case BM_RESULT_FAILED:
  default:
    return BM_OP_FAILED;
  }
}

uint64_t bm_relay_corr_seq(const char *corr)
{
  unsigned long long seq;
  char *end;

  for (int i = 0; i < 16; i++)
    if (!isxdigit((unsigned char)corr[i]) || isupper((unsigned char)corr[i]))
      return 0;
  if (corr[16] != '-' || !isdigit((unsigned char)corr[17]) || corr[17] == '0')
    return 0;
  errno = 0;
  seq = strtoull(corr + 17, &end, 10);
  if (*end || errno)
    return 0;
  return (uint64_t)seq;
}

/* The sequence number of a correlationId of ours (this run's or an earlier
 * one's: sequences keep growing across restarts), or 0 for any other id. */
static uint64_t own_seq(const bm_relay_table_t *t, const char *corr)
{
  uint64_t seq = bm_relay_corr_seq(corr);
  size_t len = strlen(t->prefix);

  if (!seq && strncmp(corr, t->prefix, len) == 0 && corr[len] == '-' &&
      isdigit((unsigned char)corr[len + 1]) && corr[len + 1] != '0') {
    /* This run's own prefix, whatever its form. */
    char *end;
    unsigned long long n;
    errno = 0;
    n = strtoull(corr + len + 1, &end, 10);
    if (!*end && !errno)
      seq = (uint64_t)n;
  }
  return seq <= t->seq ? seq : 0;
}

bool bm_relay_table_is_own_id(const bm_relay_table_t *t, const char *corr)
{
  return own_seq(t, corr) != 0;
}

static struct recent_cmd *find_recent(struct relay *r, uint64_t hash)
{
  for (int i = 0; r->ids && i < RECENT_CMDS; i++)
    if (r->ids->recent[i].hash == hash)
      return &r->ids->recent[i];
  return NULL;
}

enum bm_apply bm_relay_table_on_response(bm_relay_table_t *t,
                                         const struct bm_response *resp,
                                         double now, struct bm_events *out)
{
  uint64_t hash = bm_idmap_hash(resp->correlation_id);
  int relay = bm_idmap_get(&t->by_corr, hash);
  struct relay *r;
  struct recent_cmd *old;
  struct bm_event *ev;
  enum bm_op op = result_op(resp->result);

  if (relay < 0) {
    t->stats.ops[BM_OP_UNKNOWN]++;
    return BM_APPLY_UNKNOWN_ID;
  }
  r = &t->relays[relay];

  if (r->pending && r->pending->hash == hash &&
      strcmp(r->pending->corr, resp->correlation_id) == 0) {
    struct pending_cmd *p = r->pending;

    if (p->acked) {
      t->stats.ops[BM_OP_DUPLICATE]++;
      return BM_APPLY_DUPLICATE;
    }
    p->acked = true;
    t->stats.ops[op]++;
    t->stats.ack_sum += now - p->published_at;
    t->stats.ack_n++;
    if ((ev = events_push(out, BM_EV_ACK, relay))) {
      ev->result = resp->result;
      ev->seq = p->seq;
      bm_str_copy(ev->corr, sizeof(ev->corr), p->corr);
      bm_str_copy(ev->reason, sizeof(ev->reason), resp->reason);
    }
    if (resp->result == BM_RESULT_SENT) {
      update_deadline(t, relay, now);
      return BM_APPLY_OK;
    }

    /* Any other result ends the command; the relay waits for a new intent
     * instead of hammering a gateway that said no. */
    if ((ev = events_push(out, BM_EV_END, relay))) {
      ev->outcome = op;
      ev->severity = resp->result == BM_RESULT_SEND_NO_ACK ? BM_SEV_WARNING
                                                           : BM_SEV_FAILURE;
      ev->status = p->status;
      ev->attempt = p->attempt;
      bm_str_copy(ev->corr, sizeof(ev->corr), p->corr);
      bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
      snprintf(ev->reason, sizeof(ev->reason), "%s: %s",
               bm_result_name(resp->result),
               resp->reason[0] ? resp->reason : "no reason given");
    }
    retire_pending(t, r, false);
    r->stopped = true;
    update_deadline(t, relay, now);
    return BM_APPLY_OK;
  }

  if (!(old = find_recent(r, hash))) {
    t->stats.ops[BM_OP_UNKNOWN]++;
    return BM_APPLY_UNKNOWN_ID;
  }
  if (old->acked) {
    t->stats.ops[BM_OP_DUPLICATE]++;
    return BM_APPLY_DUPLICATE;
  }
  /* A late answer to a command that already ended (timed out, superseded
   * or confirmed before its response): counted, nothing else changes. */
  old->acked = true;
  t->stats.ops[op]++;
  if ((ev = events_push(out, BM_EV_ACK, relay))) {
    ev->result = resp->result;
    ev->seq = old->seq;
    bm_str_copy(ev->corr, sizeof(ev->corr), resp->correlation_id);
    bm_str_copy(ev->reason, sizeof(ev->reason), resp->reason);
  }
  return BM_APPLY_OK;
}

/* Remembers a confirmed change (allocating the ring on first use). */
static void record_switch(struct relay *r, double now)
{
  r->last_switch = now;
  if (r->sw_cap > 1) {
    if (!r->switches &&
        !(r->switches = bm_calloc(r->sw_cap, sizeof(*r->switches)))) {
      r->sw_n = 1; /* the limits then see the last change only */
      return;
    }
    r->switches[r->sw_next] = now;
    r->sw_next = (uint8_t)((r->sw_next + 1) % r->sw_cap);
  }
  if (r->sw_n < r->sw_cap)
    r->sw_n++;
}

/* Keeps at least n (<= BM_RELAY_SWITCHES) change times from now on, with
 * those known.  Returns 0, or -1 out of memory (nothing changed). */
static int keep_switches(struct relay *r, int n)
{
  double *ring;
  int known = r->sw_n;

  if (n > BM_RELAY_SWITCHES)
    n = BM_RELAY_SWITCHES;
  if (n <= r->sw_cap)
    return 0;
  if (!(ring = bm_calloc((size_t)n, sizeof(*ring))))
    return -1;
  for (int k = known; k >= 1; k--)
    ring[known - k] = switch_at(r, k);
  free(r->switches);
  r->switches = ring;
  r->sw_cap = (uint8_t)n;
  r->sw_next = (uint8_t)(known % n);
  return 0;
}

int bm_relay_table_keep_switches(bm_relay_table_t *t, int relay, int n)
{
  return keep_switches(&t->relays[relay], n);
}

/* Applies a state the gateway reported.  seq is the sequence of our
 * command it answers, 0 for a change nobody here asked for. */
static void apply_state(bm_relay_table_t *t, int relay, int status,
                        const char *corr, uint64_t seq, double now,
                        struct bm_events *out)
{
  struct relay *r = &t->relays[relay];
  struct bm_event *ev;
  int previous = r->confirmed;
  bool drift = !seq && r->by_command && previous >= 0 && previous != status;

  r->confirmed = (int8_t)status;
  /* Whose state it is changes with a confirmation of ours, or with a change
   * by someone else; a mere repetition of the state changes nothing. */
  if (seq)
    r->by_command = true;
  else if (previous != status)
    r->by_command = false;
  if (seq)
    r->confirmed_seq = seq;
  if (r->confirmed == r->desired)
    r->attempt = 0; /* reached: a later drift gets the whole retry budget */
  if (previous != status)
    record_switch(r, now);
  mark(t, relay); /* desired may differ now (drift) or be reached */
  if ((ev = events_push(out, BM_EV_APPLIED, relay))) {
    ev->status = status;
    ev->previous = previous;
    ev->seq = seq;
    bm_str_copy(ev->corr, sizeof(ev->corr), corr);
  }
  if (drift) {
    /* Switched by hand, or the device rebooted into its power-on state. */
    t->stats.ops[BM_OP_DRIFT]++;
    if ((ev = events_push(out, BM_EV_DRIFT, relay))) {
      ev->status = status;
      ev->previous = previous;
      bm_str_copy(ev->corr, sizeof(ev->corr), corr);
      bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
    }
  }
  if (previous == status)
    return;
  if (!(ev = events_push(out, BM_EV_STATE, relay)))
    return;
  ev->status = status;
  ev->previous = previous;
  bm_str_copy(ev->corr, sizeof(ev->corr), corr);
}

enum bm_apply bm_relay_table_on_notification(bm_relay_table_t *t,
                                             const struct bm_notification *n,
                                             double now,
                                             struct bm_events *out)
{
  int relay;
  struct relay *r;
  uint64_t hash;
  struct recent_cmd *old;

  if (!n->has_state) {
    t->stats.ops[BM_OP_UNKNOWN]++;
    return BM_APPLY_IGNORED;
  }
  relay = bm_relay_table_lookup(t, n->state.resource_id, n->state.output);
  if (relay < 0) {
    t->stats.ops[BM_OP_UNKNOWN]++;
    return BM_APPLY_UNKNOWN_RELAY;
  }
  r = &t->relays[relay];

  if (!n->has_correlation_id) {
    t->stats.ops[BM_OP_UNSOLICITED]++;
    apply_state(t, relay, n->state.status, "", 0, now, out);
    return BM_APPLY_OK;
  }

  hash = bm_idmap_hash(n->correlation_id);
  if (r->pending && r->pending->hash == hash &&
      strcmp(r->pending->corr, n->correlation_id) == 0) {
    int attempt = r->pending->attempt, commanded = r->pending->status;
    uint64_t seq = r->pending->seq;
    struct bm_event *ev;

    t->stats.ops[BM_OP_CONFIRMED]++;
    t->stats.confirm_sum += now - r->pending->published_at;
    t->stats.confirm_n++;
    retire_pending(t, r, true);
    /* Issued after any command in doubt, and answered after it: the
     * gateway takes a client's commands in order. */
    end_doubt(r);
    apply_state(t, relay, n->state.status, n->correlation_id, seq, now, out);
    if (n->state.status != commanded) {
      /* The device answered with the other state: it could not switch.  A
       * failed attempt, retried with backoff like a timeout, never in a
       * tight loop. */
      t->stats.ops[BM_OP_CONTRADICTED]++;
      if ((ev = events_push(out, BM_EV_END, relay))) {
        ev->outcome = BM_OP_CONTRADICTED;
        ev->severity = BM_SEV_WARNING;
        ev->status = commanded;
        ev->attempt = attempt;
        bm_str_copy(ev->corr, sizeof(ev->corr), n->correlation_id);
        bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
        snprintf(ev->reason, sizeof(ev->reason),
                 "the device reported status %d in answer to status %d",
                 n->state.status, commanded);
      }
      retry_or_give_up(t, relay, attempt, now, out);
    }
    update_deadline(t, relay, now);
    return BM_APPLY_OK;
  }

  if ((old = find_recent(r, hash)) != NULL) {
    if (old->confirmed || old->seq < r->confirmed_seq) {
      /* Seen before, or older than what is applied: never roll back. */
      old->confirmed = true;
      t->stats.ops[BM_OP_DUPLICATE]++;
      return BM_APPLY_DUPLICATE;
    }
    old->confirmed = true;
    t->stats.ops[BM_OP_CONFIRMED]++;
    t->stats.confirm_sum += now - old->published_at;
    t->stats.confirm_n++;
    apply_state(t, relay, n->state.status, n->correlation_id, old->seq, now, out);
    return BM_APPLY_OK;
  }

  /* One of ours that the ring has forgotten: the ordering rule still holds
   * (the sequence applied last only grows, so an applied one is <= it).
   * Unless it is the id of a command of another relay, still known: a
   * faulty gateway's report, whose state is this relay's, but which
   * confirms no command of this relay (a confirmation would raise the
   * sequence applied and drop this relay's own late confirmations). */
  uint64_t seq = own_seq(t, n->correlation_id);
  if (seq && bm_idmap_get(&t->by_corr, hash) >= 0)
    seq = 0; /* still known, so another relay's: this relay's pending
              * command and its ring of recent ones were looked at above */
  if (seq) {
    if (seq <= r->confirmed_seq) {
      t->stats.ops[BM_OP_DUPLICATE]++;
      return BM_APPLY_DUPLICATE;
    }
    t->stats.ops[BM_OP_CONFIRMED]++;
    apply_state(t, relay, n->state.status, n->correlation_id, seq, now, out);
    return BM_APPLY_OK;
  }

  /* Not one of ours (another application's, or from before a restart). */
  for (int i = 0; r->ids && i < APPLIED_IDS; i++) {
    if (r->ids->applied[i] == hash) {
      t->stats.ops[BM_OP_DUPLICATE]++;
      return BM_APPLY_DUPLICATE;
    }
  }
  if (r->ids || (r->ids = bm_calloc(1, sizeof(*r->ids)))) {
    r->ids->applied[r->ids->applied_next] = hash;
    r->ids->applied_next = (uint8_t)((r->ids->applied_next + 1) % APPLIED_IDS);
  } /* else not remembered: a duplicate of it would apply again, harmless */
  t->stats.ops[BM_OP_UNSOLICITED]++;
  apply_state(t, relay, n->state.status, n->correlation_id, 0, now, out);
  return BM_APPLY_OK;
}

/* ---- time -------------------------------------------------------------- */

static void time_out(bm_relay_table_t *t, int relay, double now,
                     const char *why, struct bm_events *out)
{
  struct relay *r = &t->relays[relay];
  struct pending_cmd *p = r->pending;
  struct bm_event *ev;
  int attempt = p->attempt;

  t->stats.ops[BM_OP_TIMEOUT]++;
  if ((ev = events_push(out, BM_EV_END, relay))) {
    ev->outcome = BM_OP_TIMEOUT;
    ev->severity = BM_SEV_WARNING;
    ev->status = p->status;
    ev->attempt = attempt;
    bm_str_copy(ev->corr, sizeof(ev->corr), p->corr);
    bm_str_copy(ev->origin, sizeof(ev->origin), r->origin);
    bm_str_copy(ev->reason, sizeof(ev->reason), why);
  }
  if (p->status == 1) /* late, it may still arrive: see on_doubt_until */
    doubt_pending(t, relay, now);
  retire_pending(t, r, false);
  retry_or_give_up(t, relay, attempt, now, out);
}

static int by_index(const void *a, const void *b)
{
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* Acts on the deadlines that passed: the relays whose keys did, in the
 * order of the table (as the scan of every relay did), each put back with
 * its true earliest deadline afterwards. */
static void run_timers(bm_relay_table_t *t, double now, struct bm_events *out)
{
  char why[BM_REASON_SIZE];
  size_t n = 0;

  while (t->heap_n > 0 && t->heap[0].at <= now)
    t->due[n++] = heap_remove(t, 0);
  if (n > 1)
    qsort(t->due, n, sizeof(*t->due), by_index);
  for (size_t k = 0; k < n; k++) {
    int i = t->due[k];
    struct relay *r = &t->relays[i];
    struct pending_cmd *p = r->pending;

    if (p && !p->acked && now >= p->ack_deadline) {
      snprintf(why, sizeof(why), "no commandResponse within %g s",
               t->policy.ack_timeout);
      time_out(t, i, now, why, out);
    } else if (p && now >= p->confirm_deadline) {
      snprintf(why, sizeof(why), "no notification within %g s",
               t->policy.command_timeout);
      time_out(t, i, now, why, out);
    }
    if (r->retry_at > 0 && now >= r->retry_at)
      mark(t, i);
    if (r->not_before > 0 && now >= r->not_before)
      mark(t, i);
  }
  for (size_t k = 0; k < n; k++)
    update_deadline(t, t->due[k], now);
}

void bm_relay_table_tick(bm_relay_table_t *t, double now,
                         struct bm_events *out)
{
  if (t->heap_n > 0 && now >= t->heap[0].at)
    run_timers(t, now, out);
  /* reconcile() can only add to the queue through issue_command, which
   * does not mark, so one pass over a snapshot of the count suffices. */
  size_t n = t->queue_n;
  t->queue_n = 0;
  for (size_t i = 0; i < n; i++) {
    int relay = t->queue[i];
    t->relays[relay].queued = false;
    reconcile(t, relay, now, out);
  }
}

/* ---- persistence ------------------------------------------------------- */

void bm_relay_table_save(const bm_relay_table_t *t, int relay,
                         struct bm_relay_saved *out)
{
  const struct relay *r = &t->relays[relay];

  memset(out, 0, sizeof(*out));
  out->confirmed = r->confirmed;
  out->confirmed_seq = r->confirmed_seq;
  out->by_command = r->by_command;
  for (int i = 0; r->ids && i < APPLIED_IDS && i < BM_RELAY_APPLIED_IDS; i++)
    out->applied[i] =
        r->ids->applied[(r->ids->applied_next + i) % APPLIED_IDS];
  for (int k = r->sw_n; k >= 1; k--) /* oldest first */
    out->switches[out->n_switches++] = switch_at(r, k);
}

void bm_relay_table_load(bm_relay_table_t *t, int relay,
                         const struct bm_relay_saved *in)
{
  struct relay *r = &t->relays[relay];

  r->confirmed = (int8_t)(in->confirmed < 0 ? -1 : in->confirmed ? 1 : 0);
  r->confirmed_seq = in->confirmed_seq;
  r->by_command = in->by_command;
  if (r->ids) {
    memset(r->ids->applied, 0, sizeof(r->ids->applied));
    r->ids->applied_next = 0;
  }
  for (int i = 0; i < APPLIED_IDS && i < BM_RELAY_APPLIED_IDS; i++) {
    if (!in->applied[i] ||
        (!r->ids && !(r->ids = bm_calloc(1, sizeof(*r->ids)))))
      continue;
    r->ids->applied[r->ids->applied_next++ % APPLIED_IDS] = in->applied[i];
  }
  if (r->ids)
    r->ids->applied_next %= APPLIED_IDS;
  r->sw_n = r->sw_next = 0;
  for (int i = 0; i < in->n_switches && i < BM_RELAY_SWITCHES; i++)
    record_switch(r, in->switches[i]);
}

bool bm_relay_table_pending_of(const bm_relay_table_t *t, int relay,
                               struct bm_command_saved *out)
{
  const struct relay *r = &t->relays[relay];
  const struct pending_cmd *p = r->pending;

  if (!p)
    return false;
  memset(out, 0, sizeof(*out));
  bm_str_copy(out->corr, sizeof(out->corr), p->corr);
  out->seq = p->seq;
  out->status = p->status;
  out->attempt = p->attempt;
  out->acked = p->acked;
  out->published_at = p->published_at;
  bm_str_copy(out->origin, sizeof(out->origin), r->origin);
  return true;
}

bool bm_relay_table_take_superseded(bm_relay_table_t *t, int *relay,
                                    struct bm_command_saved *out)
{
  if (t->superseded_relay < 0)
    return false;
  *relay = t->superseded_relay;
  *out = t->superseded;
  t->superseded_relay = -1;
  return true;
}

bool bm_relay_table_doubt_of(const bm_relay_table_t *t, int relay,
                             double now, struct bm_command_saved *out,
                             double *ended_at)
{
  const struct relay *r = &t->relays[relay];

  if (r->on_doubt_until <= now || !r->ids || !r->ids->doubt)
    return false;
  *out = r->ids->doubt->cmd;
  *ended_at = r->ids->doubt->ended_at;
  return true;
}

int bm_relay_table_doubt(bm_relay_table_t *t, int relay,
                         const struct bm_command_saved *c, double ended_at,
                         double now)
{
  struct relay *r = &t->relays[relay];

  if (c->status != 1 || ended_at + t->policy.command_timeout <= now)
    return 0;
  begin_doubt(t, r, c, ended_at);
  return r->ids && r->ids->doubt ? 1 : -1;
}

int bm_relay_table_resume(bm_relay_table_t *t, int relay,
                          const struct bm_command_saved *c)
{
  struct relay *r = &t->relays[relay];
  struct pending_cmd *p;
  char origin[BM_ORIGIN_SIZE];
  char *copy;

  if (r->pending || (c->status != 0 && c->status != 1))
    return -1;
  if (!(p = bm_calloc(1, sizeof(*p))))
    return -1;
  bm_str_copy(p->corr, sizeof(p->corr), c->corr);
  p->hash = bm_idmap_hash(p->corr);
  if (bm_idmap_put(&t->by_corr, p->hash, relay) != 0) {
    free(p);
    return -1;
  }
  p->seq = c->seq;
  p->status = c->status;
  /* An attempt beyond the budget (a journal of a larger Retries, or a
   * crafted one) is the last: a failure then gives up. */
  p->attempt = c->attempt < 1                         ? 1
               : c->attempt > t->policy.retries + 1 ? t->policy.retries + 1
                                                      : c->attempt;
  p->acked = c->acked;
  p->resumed = true;
  p->published_at = c->published_at;
  p->ack_deadline = c->published_at + t->policy.ack_timeout;
  p->confirm_deadline = c->published_at + t->policy.command_timeout;
  r->pending = p;
  r->desired = (int8_t)c->status;
  r->attempt = p->attempt;
  /* Said once: a command resumed by an earlier start already says so. */
  if (strncmp(c->origin, RESUMED, strlen(RESUMED)) == 0)
    bm_str_copy(origin, sizeof(origin), c->origin);
  else
    snprintf(origin, sizeof(origin), RESUMED "%.104s", c->origin);
  if ((copy = bm_strdup(origin))) {
    free(r->origin);
    r->origin = copy;
  }
  bm_relay_table_raise_seq(t, c->seq); /* bounded, as a journal's SEQ */
  want_deadline(t, relay,
                p->acked ? p->confirm_deadline
                         : fmin(p->ack_deadline, p->confirm_deadline));
  return 0;
}

bool bm_relay_table_abort(bm_relay_table_t *t, int relay, const char *corr)
{
  struct relay *r = &t->relays[relay];

  if (!r->pending || strcmp(r->pending->corr, corr) != 0)
    return false;
  retire_pending(t, r, false);
  r->stopped = true;
  t->stats.ops[BM_OP_FAILED]++;
  return true;
}

uint64_t bm_relay_table_last_seq(const bm_relay_table_t *t) { return t->seq; }

/* ---- who may switch ---------------------------------------------------- */

int bm_relay_table_interlock(bm_relay_table_t *t, const int *relays, int n)
{
  void *grown;
  int *members, g = t->n_interlocks;

  if (n < 2 || n > 64)
    return -1;
  for (int i = 0; i < n; i++)
    if (relays[i] < 0 || (size_t)relays[i] >= t->n)
      return -1;
  if (!(grown = bm_realloc(t->interlocks, (size_t)(g + 1) * sizeof(*t->interlocks))))
    return -1;
  t->interlocks = grown;
  if (!(members = bm_malloc((size_t)n * sizeof(*members))))
    return -1;
  memcpy(members, relays, (size_t)n * sizeof(*members));
  for (int i = 0; i < n; i++) {
    struct relay *r = &t->relays[relays[i]];
    int *gs = bm_realloc(r->groups, (size_t)(r->n_groups + 1) * sizeof(*gs));
    if (!gs) {
      free(members);
      return -1; /* groups added to earlier members point past the end:
                    the table is unusable, as the caller's config fails */
    }
    r->groups = gs;
    r->groups[r->n_groups++] = g;
  }
  t->interlocks[g].relays = members;
  t->interlocks[g].n = n;
  t->n_interlocks++;
  return 0;
}

/* Interlocks are enforced where commands are made (command_allowed), so a
 * request only records the intent; the refusal, if any, is reported by the
 * gateway thread like any other end of a command. */
static enum bm_request request(bm_relay_table_t *t, int relay, int status,
                               const char *origin, double now)
{
  return bm_relay_table_set_desired(t, relay, status, origin, now)
             ? BM_REQ_OK
             : BM_REQ_SAME;
}

enum bm_request bm_relay_table_request(bm_relay_table_t *t, int relay,
                                       int status, const char *origin,
                                       bool require_known, double now,
                                       char *why, size_t whylen)
{
  struct relay *r = &t->relays[relay];

  if (r->manual >= 0 && r->manual_until > 0 && now >= r->manual_until)
    r->manual = -1; /* the hold time is over */
  if (r->manual >= 0) {
    if (why)
      snprintf(why, whylen, "a manual override holds relay \"%s\" %s",
               r->name, r->manual ? "on" : "off");
    return BM_REQ_OVERRIDDEN;
  }
  if (require_known && r->confirmed < 0)
    return BM_REQ_UNKNOWN;
  return request(t, relay, status, origin, now);
}

enum bm_request bm_relay_table_request_limited(
    bm_relay_table_t *t, int relay, int status, const char *origin,
    const struct bm_relay_limits *limits, double now, char *why,
    size_t whylen)
{
  struct relay *r = &t->relays[relay];
  enum bm_request res;
  double at;

  if (limits->max_per_hour > r->sw_cap)
    (void)keep_switches(r, limits->max_per_hour); /* else: as many as kept */
  res = bm_relay_table_request(t, relay, status, origin, false, now, why,
                               whylen);
  if (res == BM_REQ_OVERRIDDEN)
    return res;
  at = limits_allow_at(r, status, limits, now, why, whylen);
  if (r->desired != status || at <= now) {
    /* The hold is over: the relay is marked, as its timer would have, or
     * a request taken before the turn's tick would leave it unmarked, its
     * timer gone, and the desired state never pursued. */
    if (r->not_before > 0) {
      r->not_before = 0;
      mark(t, relay);
    }
    return res;
  }
  r->not_before = at;
  r->hold_limits = limits;
  want_deadline(t, relay, at);
  mark(t, relay);
  return BM_REQ_HELD;
}

enum bm_request bm_relay_table_override(bm_relay_table_t *t, int relay,
                                        int status, double hold,
                                        const char *origin, double now,
                                        char *why, size_t whylen)
{
  struct relay *r = &t->relays[relay];
  int other;

  if (status < 0) {
    r->manual = -1;
    r->manual_until = 0;
    return BM_REQ_OK;
  }
  if (status == 1 && (other = interlocked_with(t, relay, now)) >= 0) {
    char state[96];
    if (why)
      snprintf(why, whylen, "interlocked with relay \"%s\", %s",
               t->relays[other].name,
               interlock_why(t, other, now, state, sizeof(state)));
    t->stats.ops[BM_OP_REFUSED]++;
    return BM_REQ_INTERLOCKED;
  }
  r->manual = (int8_t)status;
  r->manual_until = hold > 0 ? now + hold : 0;
  return request(t, relay, status, origin, now);
}

void bm_relay_table_raise_seq(bm_relay_table_t *t, uint64_t seq)
{
  /* No run issues 2^63 commands: a larger one is a crafted journal's, and
   * would make the sequence wrap to 0 ("not ours"). */
  if (seq > BM_RELAY_SEQ_MAX)
    seq = BM_RELAY_SEQ_MAX;
  if (seq > t->seq)
    t->seq = seq;
}
