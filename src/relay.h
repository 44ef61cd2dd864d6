/*
 * relay.h - the relays of one gateway: desired, confirmed and pending state,
 * and the correlation of commands with the gateway's answers.
 *
 * Pure logic.  The clock comes in as an argument (monotonic seconds), I/O
 * goes out as events that the caller carries out after releasing its lock:
 * nothing here publishes, logs a relay event, sleeps or allocates per
 * message.  A table is not thread-safe; its owner (the gateway) serialises
 * every call with one mutex.
 *
 * Each relay is a small state machine:
 *
 *   confirmed  the state the gateway last reported (extDOStateChanged), or
 *              unknown (-1) until the first report.  The source of truth.
 *   desired    what the plugin's inputs asked for last, or none (-1).
 *   pending    at most one command in flight: published, waiting for its
 *              commandResponse (AckTimeout) and its notification
 *              (CommandTimeout).
 *
 * Reconciliation (bm_relay_table_tick): a relay whose desired state is set,
 * differs from the confirmed one (or the confirmed one is unknown) and has no
 * command pending or waiting for a retry gets a new command, but only while
 * the gateway is connected.  A newer desired state supersedes an older
 * pending command: the old one is forgotten as pending (its late answers are
 * still recognised) and a new command goes out at once.  A command that times
 * out is retried with a new correlationId after a backoff (RetryBackoff,
 * doubled per attempt, at most 60 s) while desired still differs from
 * confirmed, up to Retries times; then the relay gives up until its desired
 * state is set again.  A notification answering a command with the other
 * state (the device could not switch) counts as a failed attempt, retried
 * the same way.  A commandResponse other than "sent" ends the command and is
 * not retried.  When a superseded command is replaced, the new command goes
 * out even if the confirmed state already equals the new desired one: the
 * old command may still reach the device.  Republished commands (after the
 * broker lost the session) get their full timeouts again.
 *
 * Ordering and de-duplication: every command gets the next number of the
 * table's sequence.  The relay remembers the sequence of the command whose
 * confirmation it applied last; a confirmation of an older command of ours
 * (a late or redelivered one) never rolls the relay back.  A notification
 * whose correlationId was already applied to the relay is a duplicate.
 * Notifications without a correlationId (changes nobody here asked for), and
 * with one that is not ours, always apply.
 */
#ifndef BM_RELAY_H
#define BM_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

#define BM_RELAY_NAME_SIZE 64
#define BM_ORIGIN_SIZE 128
#define BM_REASON_SIZE 300

/* Counted outcomes: the metric operations-<name> of each. */
enum bm_op {
  BM_OP_PUBLISHED,    /* command PUBLISHed */
  BM_OP_SENT,         /* commandResponse "sent" (queued by the gateway) */
  BM_OP_CONFIRMED,    /* notification confirmed a command of ours */
  BM_OP_NOT_SEND,     /* commandResponse results that end a command */
  BM_OP_FAILED,
  BM_OP_SEND_NO_ACK,
  BM_OP_UNAUTHORIZED,
  BM_OP_TIMEOUT,      /* no response or no notification in time */
  BM_OP_GAVE_UP,      /* retries exhausted */
  BM_OP_DUPLICATE,    /* answers already seen, stale confirmations */
  BM_OP_MALFORMED,    /* undecodable, unknown or foreign messages */
  BM_OP_UNSOLICITED,  /* state changes without a correlationId of ours */
  BM_OP_CONTRADICTED, /* the device reported the other state to a command */
  BM_OP_UNKNOWN,      /* answers for no command, relay or state of ours */
  BM_OP_DRIFT,        /* unsolicited changes against our confirmed state */
  BM_OP_REFUSED,      /* commands refused here: interlock, budget, manual */
  BM_OP_COUNT
};

/* "published", "sent", ...: the type instance of the metric. */
const char *bm_op_name(enum bm_op op);

enum bm_severity { BM_SEV_OKAY = 1, BM_SEV_WARNING, BM_SEV_FAILURE };

enum bm_event_kind {
  BM_EV_PUBLISH, /* publish a setExtDO command: relay, status, corr, seq */
  BM_EV_STATE,   /* the confirmed state changed (or became known) */
  BM_EV_END,     /* a command ended other than confirmed: outcome, reason */
  BM_EV_ACK,     /* a commandResponse matched a command: corr, result */
  BM_EV_APPLIED, /* a notification was applied: corr ("" none), status, seq */
  BM_EV_DRIFT    /* a change nobody here asked for contradicts the state
                    our last confirmed command set: status, previous */
};

/* One effect for the caller to carry out.  A value type. */
struct bm_event {
  enum bm_event_kind kind;
  int relay;                          /* index in the table */
  int status;                         /* PUBLISH: commanded; STATE: new */
  int previous;                       /* STATE: old confirmed, -1 unknown */
  enum bm_op outcome;                 /* END: why it ended */
  enum bm_severity severity;          /* END: WARNING or FAILURE */
  int attempt;                        /* PUBLISH, END: 1 for the first try */
  bool republish;                     /* PUBLISH: same correlationId again */
  uint64_t seq;                       /* PUBLISH, APPLIED: command sequence
                                         (0: not a command of ours) */
  enum bm_result result;              /* ACK */
  char corr[BM_MSG_ID_SIZE];          /* "" for STATE without one */
  char origin[BM_ORIGIN_SIZE];        /* who asked, e.g. "trigger overheat" */
  char reason[BM_REASON_SIZE];        /* END: human-readable */
};

/* A growing list of events, bounded by BM_EVENTS_MAX (events beyond it are
 * dropped and counted in `lost`, which callers log).  Start zeroed; release
 * with bm_events_release. */
#define BM_EVENTS_MAX 1000000
struct bm_events {
  struct bm_event *ev;
  size_t n, cap;
  size_t lost;
};
void bm_events_clear(struct bm_events *e);
void bm_events_release(struct bm_events *e);

struct bm_relay_policy {
  double ack_timeout;     /* s until the commandResponse is overdue */
  double command_timeout; /* s until the notification is overdue */
  int retries;            /* further commands after a timeout */
  double retry_backoff;   /* s before the first retry */
  int max_per_minute;     /* commands per relay per 60 s; 0: unlimited */
};

/* What the metrics need of a relay, copied out under the owner's lock. */
struct bm_relay_view {
  const char *name;  /* owned by the table, valid while it lives */
  int64_t resource_id;
  int output;
  int confirmed;     /* -1 unknown */
  int desired;       /* -1 none */
  bool stopped;      /* gave up or refused: waits for a new intent */
  int pending;       /* commands awaiting their notification: 0 or 1 */
  int manual;        /* manual override: -1 none, 0, 1 */
};

struct bm_relay_stats {
  uint64_t ops[BM_OP_COUNT];
  double ack_sum, confirm_sum;  /* seconds, since the last reset */
  uint64_t ack_n, confirm_n;
};

struct bm_relay_table;
typedef struct bm_relay_table bm_relay_table_t;

/* Creates an empty table.  id_prefix (copied; at most 40 bytes) starts
 * every correlationId, which is "<id_prefix>-<sequence>"; the caller makes it
 * unique per process and gateway.  Returns NULL when out of memory. */
bm_relay_table_t *bm_relay_table_new(const struct bm_relay_policy *policy,
                                     const char *id_prefix);
/* Frees the table and everything it holds; NULL is a no-op. */
void bm_relay_table_free(bm_relay_table_t *t);

/* Adds a relay.  Returns its index (0, 1, ...), or -1 when the name or the
 * (resource_id, output) pair is already taken, the name is longer than
 * BM_RELAY_NAME_SIZE-1, or memory runs out. */
int bm_relay_table_add(bm_relay_table_t *t, const char *name,
                       int64_t resource_id, int output);
size_t bm_relay_table_size(const bm_relay_table_t *t);
/* Index of the relay named `name`, or -1. */
int bm_relay_table_find(const bm_relay_table_t *t, const char *name);
/* Index of the relay at (resource_id, output), or -1. */
int bm_relay_table_lookup(const bm_relay_table_t *t, int64_t resource_id,
                          int output);
void bm_relay_table_view(const bm_relay_table_t *t, int relay,
                         struct bm_relay_view *out);
/* The relay's name, owned by the table; NULL for a bad index. */
const char *bm_relay_table_name(const bm_relay_table_t *t, int relay);

/* Sets relay's desired state (0 or 1) on behalf of `origin` (copied,
 * truncated to BM_ORIGIN_SIZE-1).  Clears a previous give-up.  Only marks
 * the relay for the next tick; returns true when that may publish (the
 * desired state differs from what is confirmed or pending). */
bool bm_relay_table_set_desired(bm_relay_table_t *t, int relay, int status,
                                const char *origin, double now);

/* The gateway link came up (subscribed) or went down.  On up with
 * session_present false, commands still waiting for their commandResponse
 * are republished with their own correlationId (PUBLISH events with
 * republish set). */
void bm_relay_table_set_connected(bm_relay_table_t *t, bool up,
                                  bool session_present, double now,
                                  struct bm_events *out);

/* What became of an answer from the gateway, for the caller's log. */
enum bm_apply {
  BM_APPLY_OK,            /* matched and applied */
  BM_APPLY_DUPLICATE,     /* already seen, or older than the applied state */
  BM_APPLY_UNKNOWN_ID,    /* commandResponse for no command of ours */
  BM_APPLY_UNKNOWN_RELAY, /* notification for no configured relay */
  BM_APPLY_IGNORED        /* notification carrying no relay state */
};

/* Applies a decoded commandResponse / notification.  Duplicates are counted
 * and never change state; a notification always counts as the relay's real
 * state unless it is a duplicate or stale.  Appends events to out. */
enum bm_apply bm_relay_table_on_response(bm_relay_table_t *t,
                                         const struct bm_response *r,
                                         double now, struct bm_events *out);
enum bm_apply bm_relay_table_on_notification(bm_relay_table_t *t,
                                             const struct bm_notification *n,
                                             double now,
                                             struct bm_events *out);

/* Fires due timeouts and retries and reconciles marked relays. */
void bm_relay_table_tick(bm_relay_table_t *t, double now,
                         struct bm_events *out);
/* Monotonic time of the next timer, or HUGE_VAL when none; never later
 * than the next timer, and earlier after a new intent dropped a retry or a
 * hold (a tick then finds nothing due: O(log relays)).  A tick is also due
 * at once when bm_relay_table_set_desired returned true. */
double bm_relay_table_next_deadline(const bm_relay_table_t *t);

/* Testing: 0 when the table's timer heap holds every relay's deadline
 * (none later than the relay's own, heap order, positions), else -1. */
int bm_relay_table_check_timers(const bm_relay_table_t *t, double now);

/* Counts an outcome that happened outside the table (a malformed message). */
void bm_relay_table_count_op(bm_relay_table_t *t, enum bm_op op);
/* Copies the counters and the latency sums; reset_latency zeroes the sums
 * afterwards (the counters are never reset: they are DERIVE). */
void bm_relay_table_stats(bm_relay_table_t *t, struct bm_relay_stats *out,
                          bool reset_latency);

/* ---- who may switch ----------------------------------------------------
 * Rules every command obeys, whoever asked for it, checked where commands
 * are made (so retries, resumed commands and drift corrections obey them
 * too):
 *
 *   budget     at most policy.max_per_minute commands per relay in any 60 s;
 *              one more is refused (END, FAILURE, outcome REFUSED, naming
 *              the origin that kept asking) and the relay stops until a new
 *              intent.  A flood can never chatter a contactor.
 *   interlock  relays of one interlock group are never on together: a
 *              command to switch one on is refused while another of the
 *              group is on, or commanded on.
 *   override   a manual override (on or off) holds the relay: other inputs
 *              are refused until "auto" or the override's hold time ends.
 */

enum bm_request {
  BM_REQ_OK,          /* recorded; a command may follow */
  BM_REQ_HELD,        /* recorded, but held back by MinOnTime, MinOffTime
                         or the switch budget until a time (why says) */
  BM_REQ_SAME,        /* nothing to do: already wanted */
  BM_REQ_UNKNOWN,     /* skipped: the relay's state is not known yet */
  BM_REQ_OVERRIDDEN,  /* refused: a manual override holds the relay */
  BM_REQ_INTERLOCKED  /* refused: another relay of its interlock is on */
};

/* Puts relays in one interlock group (at most 64 relays; a relay may be in
 * several groups).  Returns 0, or -1 for bad input or out of memory. */
int bm_relay_table_interlock(bm_relay_table_t *t, const int *relays,
                             int n);

/* An input asks for `status`: the entry point for Triggers and rules
 * (set_desired is the unchecked one beneath it).  A manual override refuses
 * it; with require_known, nothing happens while the confirmed state is
 * unknown.  Interlocks and the budget are enforced when the command is
 * made, and reported then.  Returns what happened; on a refusal `why` (may
 * be NULL) says why. */
enum bm_request bm_relay_table_request(bm_relay_table_t *t, int relay,
                                       int status, const char *origin,
                                       bool require_known, double now,
                                       char *why, size_t whylen);

/* What a switching rule asks of the relay it drives, on top of a plain
 * request: minimum on and off times, and a switch budget per hour, over the
 * relay's confirmed changes (which the journal keeps across restarts). */
struct bm_relay_limits {
  double min_on;    /* s; 0: none */
  double min_off;   /* s; 0: none */
  int max_per_hour; /* confirmed changes in any 3600 s; 0: none */
};

/* As bm_relay_table_request, with limits: a change they forbid now is
 * recorded and held back until they allow it (a timer then sends it, no
 * new value needed); BM_REQ_HELD, with why saying which limit and for how
 * long.  Another input's request lifts the hold. */
enum bm_request bm_relay_table_request_limited(
    bm_relay_table_t *t, int relay, int status, const char *origin,
    const struct bm_relay_limits *limits, double now, char *why,
    size_t whylen);

/* Keeps the times of the relay's last n confirmed changes (at most
 * BM_RELAY_SWITCHES) rather than the last one only: what a
 * MaxSwitchesPerHour of n needs, across restarts too (bm_relay_table_save).
 * Call it at configuration, before the journal's states are loaded;
 * bm_relay_table_request_limited grows the history by itself, from what is
 * known then.  Returns 0, or -1 out of memory (nothing changed). */
int bm_relay_table_keep_switches(bm_relay_table_t *t, int relay, int n);

/* Sets (status 0/1) or clears (status -1: "auto") the manual override of a
 * relay; hold > 0 ends it by itself after hold seconds.  Setting one also
 * asks for its status.  An override to "on" that an interlock forbids is
 * refused at once (BM_REQ_INTERLOCKED) and not set. */
enum bm_request bm_relay_table_override(bm_relay_table_t *t, int relay,
                                        int status, double hold,
                                        const char *origin, double now,
                                        char *why, size_t whylen);

/* ---- persistence ------------------------------------------------------
 * What the journal keeps of a relay, and how a restarted table gets it
 * back.  Restoring happens before the table is used (no tick has run). */

#define BM_RELAY_APPLIED_IDS 4
#define BM_RELAY_SWITCHES 64 /* confirmed change times kept per relay */

struct bm_relay_saved {
  int confirmed;          /* -1 unknown */
  uint64_t confirmed_seq; /* command sequence of the last applied
                             confirmation of ours, 0 none */
  bool by_command;        /* the confirmed state came from a command of ours
                             (a later unsolicited change is drift) */
  uint64_t applied[BM_RELAY_APPLIED_IDS]; /* hashes of foreign ids applied,
                                             0 for an empty slot */
  int n_switches;         /* confirmed change times, monotonic s, oldest */
  double switches[BM_RELAY_SWITCHES]; /* first (may lie in the past); the
                                         last one is the time of the
                                         current state */
};

struct bm_command_saved {
  char corr[BM_MSG_ID_SIZE];
  uint64_t seq;
  int status;
  int attempt;
  bool acked;
  double published_at; /* monotonic seconds, may lie in the past */
  char origin[BM_ORIGIN_SIZE];
};

/* Copies what the journal keeps of a relay into out (applied ids oldest
 * first). */
void bm_relay_table_save(const bm_relay_table_t *t, int relay,
                         struct bm_relay_saved *out);
/* Replaces the relay's confirmed state, sequence, drift ownership and
 * applied ids with `in`; meant for a fresh table, before any tick. */
void bm_relay_table_load(bm_relay_table_t *t, int relay,
                         const struct bm_relay_saved *in);
/* The command the last request (set_desired, request, override) superseded
 * before its confirmation, once: true with its relay and a copy, then
 * false until a request supersedes another. */
bool bm_relay_table_take_superseded(bm_relay_table_t *t, int *relay,
                                    struct bm_command_saved *out);
/* Copies the relay's pending command; false when none is pending. */
bool bm_relay_table_pending_of(const bm_relay_table_t *t, int relay,
                               struct bm_command_saved *out);
/* Puts a command from before a restart back in flight: pending with its
 * own correlationId, sequence and timing (deadlines count from
 * published_at, so an old one times out at the first tick, as it would
 * have live), the relay's desired state set to its status with the origin
 * "resumed after restart: <origin>", and published again at the next
 * connection whatever the broker's session holds.  Returns 0, or -1 when
 * the relay already has a pending command or memory runs out.  A resumed
 * command whose deadline passed before the connection is not published
 * again: the next tick times it out. */
int bm_relay_table_resume(bm_relay_table_t *t, int relay,
                          const struct bm_command_saved *c);
/* An "on" command that ended unconfirmed (superseded, timed out, refused
 * when it was to go out again) may still reach the device: the relay
 * counts as commanded on for its interlocks until CommandTimeout after
 * the command ended.  doubt_of copies the command behind the relay's doubt
 * at now and when it ended (monotonic s); false when there is none.
 * bm_relay_table_doubt restores one from before a restart (ended_at may
 * lie in the past): returns 1, 0 when ignored (a doubt over by now, or of
 * an "off"), or -1 when memory ran out (the doubt then holds, but a
 * snapshot does not keep it). */
bool bm_relay_table_doubt_of(const bm_relay_table_t *t, int relay,
                             double now, struct bm_command_saved *out,
                             double *ended_at);
int bm_relay_table_doubt(bm_relay_table_t *t, int relay,
                         const struct bm_command_saved *c, double ended_at,
                         double now);
/* Ends the relay's pending command `corr` before it was published (its
 * journal record could not be made durable): the relay is stopped until a
 * new intent, and the command counts as failed.  Returns true when it was
 * pending. */
bool bm_relay_table_abort(bm_relay_table_t *t, int relay, const char *corr);
/* The highest command sequence issued; raise_seq makes the next command's
 * sequence larger than seq (sequences never go back across restarts), seq
 * taken as BM_RELAY_SEQ_MAX when larger. */
#define BM_RELAY_SEQ_MAX (UINT64_C(1) << 63)
uint64_t bm_relay_table_last_seq(const bm_relay_table_t *t);
void bm_relay_table_raise_seq(bm_relay_table_t *t, uint64_t seq);
/* The command sequence in a correlationId of this plugin's form
 * "<16 hex digits>-<n>", from this run or an earlier one, or 0. */
uint64_t bm_relay_corr_seq(const char *corr);
/* True when corr is the id of a command t issued, tracked or long
 * forgotten: this plugin's form, or this run's prefix, with a sequence no
 * higher than the last one issued (bm_relay_table_last_seq). */
bool bm_relay_table_is_own_id(const bm_relay_table_t *t, const char *corr);

#endif
