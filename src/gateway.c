/*
 * gateway.c - see gateway.h for the session and threading rules.
 *
 * Steps of one turn of the loop (bm_gateway_run):
 *   1. start a connection when none is up and the backoff has passed;
 *   2. tick the relay table under the mutex, carry out its events without it;
 *   3. poll the eventfd and the MQTT socket until the earliest of: the next
 *      table timer, the next reconnect, one second (keepalive bookkeeping);
 *   4. let libmosquitto read, write and do its housekeeping; its callbacks
 *      (CONNACK, SUBACK, PUBLISH in, disconnect) run here, in this thread.
 */
#include "gateway.h"

#include "alloc.h"
#include "clock.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "idmap.h"
#include "journal.h"
#include "jwt.h"
#include "token.h"
#include "log.h"
#include "message.h"
#include "str.h"

#define BACKOFF_MIN 1.0
#define BACKOFF_MAX 60.0
#define COMPLAIN_INTERVAL 10.0
#define STABLE_SESSION 1.0 /* s a session must last to reset the backoff */
#define TOKEN_MAX (BM_MSG_TOKEN_SIZE - 1)
#define ASKS_MIN 64      /* first size of the mailbox */
#define ASKS_MAX 65536   /* then it doubles up to this; callers wait
                            (but for no_wait asks) */

enum session {
  SESSION_IDLE,        /* no connection; next attempt at reconnect_at */
  SESSION_CONNECTING,  /* socket open, CONNECT sent */
  SESSION_SUBSCRIBING, /* CONNACK accepted, SUBSCRIBE sent */
  SESSION_READY        /* SUBACK granted */
};

/* The command a request superseded (bm_relay_table_take_superseded),
 * said once the lock is released. */
struct superseded {
  bool ended; /* the request superseded a command */
  int relay;
  struct bm_command_saved cmd;
};

struct ask_done {
  enum bm_request rc;
  char why[160];
  struct superseded sup;
};

/* A kind of complaint logged at most once per COMPLAIN_INTERVAL. */
struct complaints {
  double at;                /* mono time of the last one logged, 0: none */
  unsigned long suppressed; /* since */
};

struct bm_gateway {
  struct bm_gateway_conf conf;
  struct bm_gateway_hooks hooks;
  char topic[BM_GW_STR_SIZE]; /* application/third-party/<app>/<instance> */
  char app_id[BM_MSG_ID_SIZE];

  pthread_mutex_t lock; /* guards table and ready */
  bm_relay_table_t *table;
  bool ready;

  /* The mailbox of bm_gateway_ask: asks[0..asks_n) under ask_lock. The
   * thread swaps it with taken, an array of its own, at each turn. */
  pthread_mutex_t ask_lock;
  pthread_cond_t ask_room;      /* the mailbox was emptied */
  struct bm_gateway_ask *asks;
  size_t asks_n, asks_cap;

  /* Gateway thread only. */
  struct mosquitto *mosq;
  int wake_fd;
  atomic_bool stop;
  atomic_bool wake_pending; /* the eventfd was written since the last tick */
  enum session session;
  bool session_present;
  int sub_mid;
  double reconnect_at;
  double backoff;
  double ready_at;       /* when the session last became ready */
  int unacked;           /* our publications the broker has not acked */
  int granted_qos;       /* of the subscription, -1 before the first */
  double published_at;   /* last publication */
  struct bm_events events;
  bool running_events;             /* in run_events: see there */
  struct ask_done *done;           /* the decisions of the taken asks */
  size_t done_cap;
  struct bm_gateway_ask *taken;    /* the asks of this turn */
  size_t taken_n, taken_cap;
  struct bm_command cmd;           /* reused: holds the token */
  char payload[BM_MSG_TOKEN_SIZE + 4096];
  struct bm_msg msg;               /* reused for decoding */
  bm_token_t *token;
  bool *waiting_token;        /* per relay: stopped until a new token */
  bool *unauthorized_retried; /* per relay: the one retry is spent */
  enum bm_severity token_severity;
  double token_checked;       /* monotonic time of the last refresh */
  bool token_has_exp;         /* copies for the read callback (mutex) */
  int64_t token_exp;
  bool tls;                   /* a CA option was given */
  bool tls_ready;             /* libmosquitto's TLS is set up */
  bm_journal_t *journal;
  bool journal_behind;    /* a turn's records were not all written */
  double journal_heal_at; /* no compaction attempt before, mono */
  struct complaints complaints; /* messages not taken, and the like */
  struct complaints spare;   /* messages taken without a bad spare field */
  bool own_disconnect; /* our DISCONNECT (a reset, the stop): no loss */
  bool tcp_up;         /* the socket of this attempt was seen writable */
  int qos_closes; /* closes right after a publication, none acknowledged
                   * since (session_lost) */
};

static void client_reset(bm_gateway_t *gw);
static void hold(int sock, int on);


/* Logs a problem of kind c at most once per COMPLAIN_INTERVAL, saying how
 * many were suppressed in between. */
static void __attribute__((format(printf, 3, 4)))
complain(bm_gateway_t *gw, struct complaints *c, const char *fmt, ...)
{
  char line[512];
  va_list ap;
  double now = bm_now_mono();

  if (c->at > 0 && now - c->at < COMPLAIN_INTERVAL) {
    c->suppressed++;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (c->suppressed)
    BM_WARNING("gateway \"%s\": %s (and %lu similar since the last report)",
               gw->conf.name, line, c->suppressed);
  else
    BM_WARNING("gateway \"%s\": %s", gw->conf.name, line);
  c->at = now;
  c->suppressed = 0;
}

/* ---- token ------------------------------------------------------------ */

static const char *sev_word(enum bm_severity s)
{
  return s == BM_SEV_FAILURE ? "FAILURE" : s == BM_SEV_WARNING ? "WARNING" : "OKAY";
}

/* Reports the token's expiry state when it changes: WARNING within
 * TokenWarn of exp, FAILURE once expired, OKAY when a new token fixed it. */
static void token_report(bm_gateway_t *gw, int64_t now)
{
  int64_t exp = 0;
  bool has = bm_token_expiry(gw->token, &exp);
  enum bm_severity sev = BM_SEV_OKAY;
  char msg[256];

  if (has && exp <= now - gw->conf.token_leeway) /* exp: any int64 */
    sev = BM_SEV_FAILURE;
  else if (has && exp <= now + (int64_t)gw->conf.token_warn)
    sev = BM_SEV_WARNING;
  pthread_mutex_lock(&gw->lock);
  gw->token_has_exp = has;
  gw->token_exp = exp;
  pthread_mutex_unlock(&gw->lock);
  if (sev == gw->token_severity)
    return;
  gw->token_severity = sev;
  if (sev == BM_SEV_FAILURE)
    snprintf(msg, sizeof(msg), "token %s expired at %lld: commands fail until "
             "a new token is available", bm_token_fingerprint(gw->token),
             (long long)exp);
  else if (sev == BM_SEV_WARNING)
    snprintf(msg, sizeof(msg), "token %s expires in %lld s (at %lld)",
             bm_token_fingerprint(gw->token), (long long)(exp - now),
             (long long)exp);
  else
    snprintf(msg, sizeof(msg), "token %s is valid%s",
             bm_token_fingerprint(gw->token), has ? "" : " (no expiry)");
  bm_log(sev == BM_SEV_OKAY ? BM_LOG_INFO : sev == BM_SEV_WARNING
                                                ? BM_LOG_WARNING
                                                : BM_LOG_ERR,
         "gateway \"%s\": %s: %s", gw->conf.name, sev_word(sev), msg);
  if (gw->hooks.token)
    gw->hooks.token(gw->hooks.ctx, gw->conf.name, sev, msg);
}

/* Brings the token up to date (a changed file, a renewal due); with force
 * a minted or commanded token is renewed now.  Relays that wait for a new
 * token after an "unauthorized" are asked again when it changed. */
static void token_update(bm_gateway_t *gw, bool force)
{
  char err[256];
  int64_t now = bm_now_wall_ms() / 1000;
  int rc = bm_token_refresh(gw->token, now, force, err, sizeof(err));

  if (rc < 0)
    complain(gw, &gw->complaints, "%s; keeping token %s", err,
             bm_token_fingerprint(gw->token));
  if (rc == 1) {
    BM_INFO("gateway \"%s\": new token %s", gw->conf.name,
            bm_token_fingerprint(gw->token));
    for (size_t i = 0; i < bm_relay_table_size(gw->table); i++) {
      struct bm_relay_view v;
      if (!gw->waiting_token[i])
        continue;
      gw->waiting_token[i] = false;
      pthread_mutex_lock(&gw->lock);
      bm_relay_table_view(gw->table, (int)i, &v);
      if (v.desired >= 0)
        bm_relay_table_set_desired(gw->table, (int)i, v.desired,
                                   "retry with a new token", bm_now_mono());
      pthread_mutex_unlock(&gw->lock);
    }
  }
  gw->token_checked = bm_now_mono();
  token_report(gw, now);
}

/* Commands that cannot carry a valid token fail at once, unpublished. */
static void refuse_without_token(bm_gateway_t *gw)
{
  char why[128];
  bool checked = false;

  for (size_t i = 0; i < gw->events.n; i++) {
    struct bm_event *ev = &gw->events.ev[i];

    if (ev->kind != BM_EV_PUBLISH)
      continue;
    if (!checked) {
      token_update(gw, false);
      checked = true;
    }
    if (bm_token_usable(gw->token, bm_now_wall_ms() / 1000, gw->conf.token_leeway,
                        why, sizeof(why)) == 0)
      return;
    pthread_mutex_lock(&gw->lock);
    bm_relay_table_abort(gw->table, ev->relay, ev->corr);
    pthread_mutex_unlock(&gw->lock);
    ev->kind = BM_EV_END;
    ev->outcome = BM_OP_FAILED;
    ev->severity = BM_SEV_FAILURE;
    snprintf(ev->reason, sizeof(ev->reason), "%s (token %s): not sent", why,
             bm_token_fingerprint(gw->token));
    gw->waiting_token[ev->relay] = true;
  }
}

/* After "unauthorized": renew or reload the token once and retry once;
 * otherwise the relay waits for a new token.  A retried command's end is
 * only a WARNING: the FAILURE is for the retry that fails too. */
static void after_unauthorized(bm_gateway_t *gw, struct bm_event *ev)
{
  char before[13];

  bm_str_copy(before, sizeof(before), bm_token_fingerprint(gw->token));
  if (!gw->unauthorized_retried[ev->relay]) {
    token_update(gw, true);
    if (strcmp(before, bm_token_fingerprint(gw->token)) != 0) {
      gw->unauthorized_retried[ev->relay] = true;
      BM_NOTICE("gateway \"%s\": unauthorized with token %s; retrying once "
                "with token %s",
                gw->conf.name, before, bm_token_fingerprint(gw->token));
      pthread_mutex_lock(&gw->lock);
      bm_relay_table_set_desired(gw->table, ev->relay, ev->status,
                                 "retry after unauthorized with a new token",
                                 bm_now_mono());
      pthread_mutex_unlock(&gw->lock);
      ev->severity = BM_SEV_WARNING;
      snprintf(ev->reason + strlen(ev->reason),
               sizeof(ev->reason) - strlen(ev->reason),
               "; retrying once with a new token");
      return;
    }
  }
  gw->waiting_token[ev->relay] = true;
  BM_ERROR("gateway \"%s\": the gateway refused token %s: waiting for a new "
           "token",
           gw->conf.name, bm_token_fingerprint(gw->token));
}

/* ---- journal ----------------------------------------------------------- */

/* Writes one event's record, if it has one.  Returns 0, or -1 when the
 * record could not be written (errno kept). */
static int journal_event(bm_gateway_t *gw, const struct bm_event *ev,
                         const struct bm_relay_view *v)
{
  struct bm_jrec rec;

  memset(&rec, 0, sizeof(rec));
  rec.time_ms = bm_now_wall_ms();
  switch (ev->kind) {
  case BM_EV_PUBLISH:
    if (ev->republish)
      return 0; /* the same command again: its record exists */
    rec.type = BM_JREC_COMMAND;
    rec.u.command.cmd_seq = ev->seq;
    bm_str_copy(rec.u.command.corr, sizeof(rec.u.command.corr), ev->corr);
    bm_str_copy(rec.u.command.relay, sizeof(rec.u.command.relay), v->name);
    rec.u.command.resource_id = v->resource_id;
    rec.u.command.output = v->output;
    rec.u.command.status = ev->status;
    rec.u.command.attempt = ev->attempt;
    bm_str_copy(rec.u.command.origin, sizeof(rec.u.command.origin), ev->origin);
    break;
  case BM_EV_ACK:
    rec.type = BM_JREC_RESPONSE;
    bm_str_copy(rec.u.response.corr, sizeof(rec.u.response.corr), ev->corr);
    rec.u.response.result = (int)ev->result;
    bm_str_copy(rec.u.response.reason, sizeof(rec.u.response.reason),
                ev->reason);
    break;
  case BM_EV_APPLIED:
    rec.type = BM_JREC_CONFIRM;
    bm_str_copy(rec.u.confirm.corr, sizeof(rec.u.confirm.corr), ev->corr);
    rec.u.confirm.resource_id = v->resource_id;
    rec.u.confirm.output = v->output;
    rec.u.confirm.status = ev->status;
    break;
  case BM_EV_END:
    /* A command in flight refused (interlocked when it was to go out
     * again) ends in the journal as a timed-out one: not resumed. */
    if (ev->outcome == BM_OP_TIMEOUT ||
        (ev->outcome == BM_OP_REFUSED && ev->corr[0])) {
      rec.type = BM_JREC_TIMEOUT;
      bm_str_copy(rec.u.timeout.corr, sizeof(rec.u.timeout.corr), ev->corr);
    } else if (ev->outcome == BM_OP_GAVE_UP) {
      rec.type = BM_JREC_GIVE_UP;
      bm_str_copy(rec.u.give_up.relay, sizeof(rec.u.give_up.relay), v->name);
      rec.u.give_up.resource_id = v->resource_id;
      rec.u.give_up.output = v->output;
    } else {
      return 0; /* refusals are in the RESPONSE record */
    }
    break;
  default:
    return 0;
  }
  return bm_journal_append_buffered(gw->journal, &rec);
}

/* Logs a failed journal write or fsync (errno) and says why in why. */
static void journal_failed(bm_gateway_t *gw, const char *what, char *why,
                           size_t whylen)
{
  int e = errno;

  BM_ERROR("gateway \"%s\": cannot %s the journal \"%s\": %s", gw->conf.name,
           what, gw->conf.journal_file, strerror(e));
  snprintf(why, whylen, "journal %s failed: %s", what, strerror(e));
}

/* Makes the journal records of the collected events, written together (one
 * write for the turn, not one per notification); with JournalSync always,
 * fsyncs once for all commands among them (group commit), with full once
 * for any record (a notification's CONFIRM too: the turn's QoS 1
 * acknowledgements are still held, see read_packets, so a power loss
 * cannot lose a message the broker was told we have).  A failed write may
 * have taken any record of the turn, so every new command of the turn is
 * then taken back from the table and its event turned into a FAILURE: a
 * command whose record could not be made durable is never published. */
static void journal_events(bm_gateway_t *gw)
{
  bool commands = false, failed = false, sync;
  char why[160] = "";
  struct bm_journal_mark turn;

  if (!gw->journal)
    return;
  bm_journal_mark(gw->journal, &turn);
  for (size_t i = 0; i < gw->events.n; i++) {
    struct bm_event *ev = &gw->events.ev[i];
    struct bm_relay_view v;

    pthread_mutex_lock(&gw->lock);
    bm_relay_table_view(gw->table, ev->relay, &v);
    pthread_mutex_unlock(&gw->lock);
    commands |= ev->kind == BM_EV_PUBLISH && !ev->republish;
    if (journal_event(gw, ev, &v) != 0 && !failed) {
      journal_failed(gw, "write", why, sizeof(why));
      failed = true;
    }
  }
  if (bm_journal_flush(gw->journal) != 0 && !failed) {
    journal_failed(gw, "write", why, sizeof(why));
    failed = true;
  }
  sync = commands || (gw->conf.journal_sync == BM_JOURNAL_SYNC_FULL &&
                      gw->events.n > 0);
  if (sync && !failed && bm_journal_sync(gw->journal) != 0) {
    journal_failed(gw, "fsync", why, sizeof(why));
    failed = true;
  }
  if (failed)
    gw->journal_behind = true; /* run_events rewrites it from the table */
  if (!failed || !commands)
    return;

  /* Nothing promised durable leaves unrecorded: every new command of this
   * turn fails instead, and the turn's records are cut off the file (a
   * failed fsync leaves them in it, and so may an earlier flush of a long
   * turn), so that a restart cannot resume a command reported not sent;
   * the other records of the turn come back with the rewrite from the
   * table (journal_behind). A cut that fails leaves the journal failed,
   * refusing any record (a TIMEOUT for each included) until that rewrite:
   * said once. */
  if (bm_journal_cut(gw->journal, &turn) != 0)
    BM_ERROR("gateway \"%s\": the commands of this turn stay in the journal "
             "\"%s\": a restart before its rewrite may send them",
             gw->conf.name, gw->conf.journal_file);
  for (size_t i = 0; i < gw->events.n; i++) {
    struct bm_event *ev = &gw->events.ev[i];

    if (ev->kind != BM_EV_PUBLISH || ev->republish)
      continue;
    pthread_mutex_lock(&gw->lock);
    bm_relay_table_abort(gw->table, ev->relay, ev->corr);
    pthread_mutex_unlock(&gw->lock);
    ev->kind = BM_EV_END;
    ev->outcome = BM_OP_FAILED;
    ev->severity = BM_SEV_FAILURE;
    snprintf(ev->reason, sizeof(ev->reason), "not sent: %s", why);
  }
}

/* An "on" command in doubt (relay.h, bm_relay_table_doubt_of). */
struct snapshot_doubt {
  size_t relay;
  struct bm_command_saved cmd;
  double ended_at;
};

/* What a compaction writes, copied from the table under the mutex so that
 * the disk is written without it. */
struct snapshot {
  size_t n;
  uint64_t seq;
  struct bm_relay_view *views;
  struct bm_relay_saved *saved;
  struct bm_command_saved *pending;
  bool *has_pending;
  struct snapshot_doubt *doubts; /* by relay, the few in doubt */
  size_t n_doubts, cap_doubts;
  double mono;
  int64_t wall_ms;
};

static void snapshot_free(struct snapshot *s)
{
  free(s->views);
  free(s->saved);
  free(s->pending);
  free(s->has_pending);
  free(s->doubts);
}

/* Copies relay i's doubt, if it has one.  Returns 0, or -1 when memory ran
 * out. */
static int snapshot_doubt(bm_gateway_t *gw, struct snapshot *s, size_t i)
{
  struct snapshot_doubt d = {.relay = i};

  if (!bm_relay_table_doubt_of(gw->table, (int)i, s->mono, &d.cmd,
                               &d.ended_at))
    return 0;
  if (s->n_doubts == s->cap_doubts) {
    size_t cap = s->cap_doubts ? 2 * s->cap_doubts : 16;
    struct snapshot_doubt *more = bm_realloc(s->doubts, cap * sizeof(*more));
    if (!more)
      return -1;
    s->doubts = more;
    s->cap_doubts = cap;
  }
  s->doubts[s->n_doubts++] = d;
  return 0;
}

static int snapshot_take(bm_gateway_t *gw, struct snapshot *s)
{
  memset(s, 0, sizeof(*s));
  s->n = bm_relay_table_size(gw->table);
  s->views = bm_calloc(s->n + 1, sizeof(*s->views));
  s->saved = bm_calloc(s->n + 1, sizeof(*s->saved));
  s->pending = bm_calloc(s->n + 1, sizeof(*s->pending));
  s->has_pending = bm_calloc(s->n + 1, sizeof(*s->has_pending));
  if (!s->views || !s->saved || !s->pending || !s->has_pending) {
    snapshot_free(s);
    return -1;
  }
  s->mono = bm_now_mono();
  s->wall_ms = bm_now_wall_ms();
  pthread_mutex_lock(&gw->lock);
  s->seq = bm_relay_table_last_seq(gw->table);
  for (size_t i = 0; i < s->n; i++) {
    bm_relay_table_view(gw->table, (int)i, &s->views[i]);
    bm_relay_table_save(gw->table, (int)i, &s->saved[i]);
    s->has_pending[i] =
        bm_relay_table_pending_of(gw->table, (int)i, &s->pending[i]);
    if (snapshot_doubt(gw, s, i) != 0) {
      pthread_mutex_unlock(&gw->lock);
      snapshot_free(s);
      return -1;
    }
  }
  pthread_mutex_unlock(&gw->lock);
  return 0;
}

/* A snapshot's wall time (ms) of a monotonic time of the table. */
static int64_t snapshot_wall_ms(const struct snapshot *s, double mono)
{
  return s->wall_ms - (int64_t)((s->mono - mono) * 1000.0);
}

/* Emits relay i's command c as a COMMAND record, at its publish time. */
static int emit_command(struct bm_journal_snapshot *js,
                        const struct snapshot *s, size_t i,
                        const struct bm_command_saved *c)
{
  struct bm_jrec rec;

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_COMMAND;
  rec.time_ms = snapshot_wall_ms(s, c->published_at);
  rec.u.command.cmd_seq = c->seq;
  bm_str_copy(rec.u.command.corr, sizeof(rec.u.command.corr), c->corr);
  bm_str_copy(rec.u.command.relay, sizeof(rec.u.command.relay),
              s->views[i].name);
  rec.u.command.resource_id = s->views[i].resource_id;
  rec.u.command.output = s->views[i].output;
  rec.u.command.status = c->status;
  rec.u.command.attempt = c->attempt;
  bm_str_copy(rec.u.command.origin, sizeof(rec.u.command.origin), c->origin);
  return bm_journal_snapshot_emit(js, &rec);
}

/* A doubt as the records that replay makes one of: its command, then its
 * end (a timeout record) when the doubt began. */
static int emit_doubt(struct bm_journal_snapshot *js, const struct snapshot *s,
                      const struct snapshot_doubt *d)
{
  struct bm_jrec rec;

  if (emit_command(js, s, d->relay, &d->cmd) != 0)
    return -1;
  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_TIMEOUT;
  rec.time_ms = snapshot_wall_ms(s, d->ended_at);
  bm_str_copy(rec.u.timeout.corr, sizeof(rec.u.timeout.corr), d->cmd.corr);
  return bm_journal_snapshot_emit(js, &rec);
}

static int snapshot_emit(struct bm_journal_snapshot *js, void *ctx)
{
  const struct snapshot *s = ctx;
  struct bm_jrec rec;
  size_t d = 0;

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_SEQ;
  rec.time_ms = s->wall_ms;
  rec.u.seq.cmd_seq = s->seq;
  if (bm_journal_snapshot_emit(js, &rec) != 0)
    return -1;
  for (size_t i = 0; i < s->n; i++) {
    const struct bm_relay_saved *sv = &s->saved[i];
    struct bm_jrec_state *st = &rec.u.state;

    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_STATE;
    rec.time_ms = s->wall_ms; /* the last change, when one is known */
    bm_str_copy(st->relay, sizeof(st->relay), s->views[i].name);
    st->resource_id = s->views[i].resource_id;
    st->output = s->views[i].output;
    st->confirmed = sv->confirmed;
    st->by_command = sv->by_command;
    st->applied_seq = sv->confirmed_seq;
    for (int k = 0; k < BM_RELAY_APPLIED_IDS; k++)
      if (sv->applied[k])
        snprintf(st->applied[st->n_applied++], sizeof(st->applied[0]),
                 "#%016llx", (unsigned long long)sv->applied[k]);
    for (int k = 0; k < sv->n_switches && k < BM_JREC_SWITCHES_MAX; k++)
      st->switches[st->n_switches++] = snapshot_wall_ms(s, sv->switches[k]);
    if (st->n_switches)
      rec.time_ms = st->switches[st->n_switches - 1];
    if (bm_journal_snapshot_emit(js, &rec) != 0)
      return -1;
    if (d < s->n_doubts && s->doubts[d].relay == i &&
        emit_doubt(js, s, &s->doubts[d++]) != 0)
      return -1;
    if (!s->has_pending[i])
      continue;

    const struct bm_command_saved *c = &s->pending[i];
    if (emit_command(js, s, i, c) != 0)
      return -1;
    if (!c->acked)
      continue;
    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_RESPONSE;
    rec.time_ms = s->wall_ms;
    bm_str_copy(rec.u.response.corr, sizeof(rec.u.response.corr), c->corr);
    rec.u.response.result = BM_RESULT_SENT;
    if (bm_journal_snapshot_emit(js, &rec) != 0)
      return -1;
  }
  return 0;
}

static void journal_compact(bm_gateway_t *gw)
{
  struct snapshot s;
  uint64_t before = bm_journal_size(gw->journal);

  if (snapshot_take(gw, &s) != 0) {
    BM_ERROR("gateway \"%s\": out of memory for a journal snapshot",
             gw->conf.name);
    return;
  }
  if (bm_journal_compact(gw->journal, snapshot_emit, &s) != 0) {
    BM_ERROR("gateway \"%s\": compaction of the journal \"%s\" failed; the "
             "old journal stays in use",
             gw->conf.name, gw->conf.journal_file);
  } else {
    gw->journal_behind = false;
    BM_INFO("gateway \"%s\": journal \"%s\" compacted from %llu to %llu bytes",
            gw->conf.name, gw->conf.journal_file, (unsigned long long)before,
            (unsigned long long)bm_journal_size(gw->journal));
  }
  snapshot_free(&s);
}

/* A compaction rewrites the file from the table when it grew past its
 * size, when a turn's records were not all written (the file is behind
 * the table: records lost, or a command's record kept while the command
 * was taken back), and when a journal failed by an fsync or a write it
 * could not cut off refuses appends. Tried at once, then at most once a
 * second while it fails (a full disk: not at every turn). */
static bool journal_compaction_due(bm_gateway_t *gw)
{
  double now;

  if (!gw->journal_behind && !bm_journal_is_failed(gw->journal) &&
      !bm_journal_needs_compaction(gw->journal))
    return false;
  now = bm_now_mono();
  if (now < gw->journal_heal_at)
    return false;
  gw->journal_heal_at = now + 1.0;
  return true;
}

/* Replay: records are folded into per-relay state, loaded into the table
 * once the whole journal has been read. */
struct replay_doubt {
  struct bm_command_saved cmd;
  int64_t published_ms, ended_ms;
};

struct replay {
  bm_gateway_t *gw;
  struct bm_relay_saved *saved;
  struct bm_command_saved *pending;
  int64_t *published_ms;
  bool *has_pending;
  struct replay_doubt **doubt; /* the relay's "on" in doubt, NULL none */
  struct bm_idmap corr; /* correlationId hash -> relay, for answers */
  uint64_t max_seq;
  unsigned long records, unknown_relays;
  double mono;      /* the clocks when replay started, to turn the */
  int64_t wall_ms;  /* journal's wall times into monotonic ones */
};

/* A journal's wall time (ms) on our monotonic clock, kept within ten
 * years before now: a time in the future is now (a crafted journal's
 * times, or a broken clock's; snapshot_emit and journal_compact turn them
 * back into int64 milliseconds, which must not overflow; the switch limits
 * look back a day at most, bimetri-ctl shows the last switch as "since"). */
static double replay_mono(const struct replay *rp, int64_t ms)
{
  double ago = fmin(fmax((double)rp->wall_ms - (double)ms, 0.0), 3.15576e11);

  return rp->mono - ago / 1000.0;
}

static void replay_switch(struct replay *rp, struct bm_relay_saved *sv,
                          int64_t ms)
{
  double at = replay_mono(rp, ms);

  if (sv->n_switches == BM_RELAY_SWITCHES) {
    memmove(&sv->switches[0], &sv->switches[1],
            sizeof(sv->switches[0]) * (BM_RELAY_SWITCHES - 1));
    sv->n_switches--;
  }
  sv->switches[sv->n_switches++] = at;
}

static void replay_applied(struct bm_relay_saved *sv, uint64_t hash)
{
  memmove(&sv->applied[0], &sv->applied[1],
          sizeof(sv->applied[0]) * (BM_RELAY_APPLIED_IDS - 1));
  sv->applied[BM_RELAY_APPLIED_IDS - 1] = hash;
}

/* The relay's pending command ended unconfirmed at ms: an "on" may still
 * reach the device (relay.c, begin_doubt).  Returns 0, or -1 when memory
 * ran out. */
static int replay_doubt(struct replay *rp, int relay, int64_t ms)
{
  struct replay_doubt *d = rp->doubt[relay];

  if (rp->pending[relay].status != 1)
    return 0;
  if (!d && !(d = rp->doubt[relay] = bm_calloc(1, sizeof(*d))))
    return -1;
  d->cmd = rp->pending[relay];
  d->published_ms = rp->published_ms[relay];
  d->ended_ms = ms;
  return 0;
}

static void replay_doubt_end(struct replay *rp, int relay)
{
  free(rp->doubt[relay]);
  rp->doubt[relay] = NULL;
}

static int replay_record(const struct bm_jrec *rec, uint64_t seq, void *ctx)
{
  struct replay *rp = ctx;
  bm_relay_table_t *t = rp->gw->table;
  int relay = -1;
  const char *corr = NULL;

  (void)seq;
  rp->records++;
  switch (rec->type) {
  case BM_JREC_COMMAND: {
    const struct bm_jrec_command *c = &rec->u.command;
    if (c->cmd_seq > rp->max_seq)
      rp->max_seq = c->cmd_seq;
    if ((relay = bm_relay_table_lookup(t, c->resource_id, c->output)) < 0)
      break;
    /* A command while another was pending superseded it. */
    if (rp->has_pending[relay] && rp->pending[relay].status != c->status &&
        replay_doubt(rp, relay, rec->time_ms) != 0)
      return -1;
    struct bm_command_saved *p = &rp->pending[relay];
    memset(p, 0, sizeof(*p));
    bm_str_copy(p->corr, sizeof(p->corr), c->corr);
    p->seq = c->cmd_seq;
    p->status = c->status;
    p->attempt = c->attempt;
    bm_str_copy(p->origin, sizeof(p->origin), c->origin);
    rp->published_ms[relay] = rec->time_ms;
    rp->has_pending[relay] = true;
    if (bm_idmap_put(&rp->corr, bm_idmap_hash(c->corr), relay) != 0)
      return -1;
    break;
  }
  case BM_JREC_RESPONSE:
    corr = rec->u.response.corr;
    relay = bm_idmap_get(&rp->corr, bm_idmap_hash(corr));
    if (relay < 0 || !rp->has_pending[relay] ||
        strcmp(rp->pending[relay].corr, corr) != 0)
      break;
    if (rec->u.response.result == BM_RESULT_SENT)
      rp->pending[relay].acked = true;
    else
      rp->has_pending[relay] = false;
    break;
  case BM_JREC_TIMEOUT:
    corr = rec->u.timeout.corr;
    relay = bm_idmap_get(&rp->corr, bm_idmap_hash(corr));
    if (relay >= 0 && rp->has_pending[relay] &&
        strcmp(rp->pending[relay].corr, corr) == 0) {
      rp->has_pending[relay] = false;
      if (replay_doubt(rp, relay, rec->time_ms) != 0)
        return -1;
    }
    break;
  case BM_JREC_CONFIRM: {
    const struct bm_jrec_confirm *c = &rec->u.confirm;
    struct bm_relay_saved *sv;
    uint64_t cseq = c->corr[0] ? bm_relay_corr_seq(c->corr) : 0;

    /* Judged as the live run did (relay.c's own_seq): a number beyond
     * every command sent so far is not ours, whatever its shape. The
     * records come in order: our confirmations follow their COMMAND. */
    if (cseq > rp->max_seq)
      cseq = 0;

    if ((relay = bm_relay_table_lookup(t, c->resource_id, c->output)) < 0) {
      rp->unknown_relays++;
      break;
    }
    /* The id of another relay's command confirms nothing here (relay.c,
     * bm_relay_table_on_notification). */
    if (cseq) {
      int owner = bm_idmap_get(&rp->corr, bm_idmap_hash(c->corr));
      if (owner >= 0 && owner != relay)
        cseq = 0;
    }
    sv = &rp->saved[relay];
    if (rp->has_pending[relay] &&
        strcmp(rp->pending[relay].corr, c->corr) == 0) {
      rp->has_pending[relay] = false;
      replay_doubt_end(rp, relay);
    }
    if (cseq && cseq <= sv->confirmed_seq)
      break; /* the live run judged it stale too */
    if (cseq)
      sv->by_command = true;
    else if (sv->confirmed != c->status)
      sv->by_command = false;
    if (sv->confirmed != c->status)
      replay_switch(rp, sv, rec->time_ms);
    sv->confirmed = c->status;
    if (cseq)
      sv->confirmed_seq = cseq;
    else if (c->corr[0])
      replay_applied(sv, bm_idmap_hash(c->corr));
    break;
  }
  case BM_JREC_STATE: {
    const struct bm_jrec_state *st = &rec->u.state;
    struct bm_relay_saved *sv;

    if ((relay = bm_relay_table_lookup(t, st->resource_id, st->output)) < 0) {
      rp->unknown_relays++;
      break;
    }
    sv = &rp->saved[relay];
    memset(sv, 0, sizeof(*sv));
    replay_doubt_end(rp, relay); /* a snapshot's doubt follows its state */
    sv->confirmed = st->confirmed;
    sv->by_command = st->by_command != 0;
    sv->confirmed_seq = st->applied_seq;
    for (int k = 0; k < st->n_switches; k++)
      replay_switch(rp, sv, st->switches[k]);
    for (int k = 0; k < st->n_applied; k++) {
      unsigned long long h;
      if (st->applied[k][0] == '#' && sscanf(st->applied[k] + 1, "%16llx", &h) == 1)
        replay_applied(sv, (uint64_t)h);
      else
        replay_applied(sv, bm_idmap_hash(st->applied[k]));
    }
    break;
  }
  case BM_JREC_SEQ:
    if (rec->u.seq.cmd_seq > rp->max_seq)
      rp->max_seq = rec->u.seq.cmd_seq;
    break;
  case BM_JREC_GIVE_UP:
  default:
    break;
  }
  return 0;
}

/* Opens (creating or recovering) the journal and restores the table. */
static int journal_restore(bm_gateway_t *gw, char *err, size_t errlen)
{
  struct replay rp;
  size_t n = bm_relay_table_size(gw->table);
  unsigned long known = 0, resumed = 0, doubts = 0;
  int status = -1;

  memset(&rp, 0, sizeof(rp));
  rp.gw = gw;
  rp.mono = bm_now_mono();
  rp.wall_ms = bm_now_wall_ms();
  rp.saved = bm_calloc(n + 1, sizeof(*rp.saved));
  rp.pending = bm_calloc(n + 1, sizeof(*rp.pending));
  rp.published_ms = bm_calloc(n + 1, sizeof(*rp.published_ms));
  rp.has_pending = bm_calloc(n + 1, sizeof(*rp.has_pending));
  rp.doubt = bm_calloc(n + 1, sizeof(*rp.doubt));
  if (!rp.saved || !rp.pending || !rp.published_ms || !rp.has_pending ||
      !rp.doubt) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    rp.saved[i].confirmed = -1;

  gw->journal = bm_journal_open(gw->conf.journal_file, gw->conf.journal_sync,
                                replay_record, &rp, err, errlen);
  if (!gw->journal)
    goto out;
  if (gw->conf.journal_limit)
    bm_journal_set_limit(gw->journal, gw->conf.journal_limit);

  bm_relay_table_raise_seq(gw->table, rp.max_seq);
  for (size_t i = 0; i < n; i++) {
    bm_relay_table_load(gw->table, (int)i, &rp.saved[i]);
    known += rp.saved[i].confirmed >= 0;
    if (rp.doubt[i]) {
      struct replay_doubt *d = rp.doubt[i];
      int rc;

      d->cmd.published_at = replay_mono(&rp, d->published_ms);
      rc = bm_relay_table_doubt(gw->table, (int)i, &d->cmd,
                                replay_mono(&rp, d->ended_ms), rp.mono);
      doubts += rc > 0;
      if (rc < 0) {
        struct bm_relay_view v;
        bm_relay_table_view(gw->table, (int)i, &v);
        BM_ERROR("gateway \"%s\": out of memory for the doubt of relay "
                 "\"%s\" (command \"%s\"): the next compaction forgets it",
                 gw->conf.name, v.name, d->cmd.corr);
      }
    }
    if (!rp.has_pending[i])
      continue;
    /* Deadlines count from the original publish, on our monotonic clock. */
    rp.pending[i].published_at = replay_mono(&rp, rp.published_ms[i]);
    if (bm_relay_table_resume(gw->table, (int)i, &rp.pending[i]) == 0)
      resumed++;
  }
  BM_INFO("gateway \"%s\": journal \"%s\": %lu records replayed, %lu relay "
          "states restored, %lu commands resumed, %lu ended \"on\" commands "
          "in doubt%s",
          gw->conf.name, gw->conf.journal_file, rp.records, known, resumed,
          doubts, rp.unknown_relays ? " (records of relays no longer configured "
                              "ignored)"
                            : "");
  journal_compact(gw);
  status = 0;
out:
  bm_idmap_release(&rp.corr);
  free(rp.saved);
  free(rp.pending);
  free(rp.published_ms);
  free(rp.has_pending);
  for (size_t i = 0; rp.doubt && i < n; i++)
    free(rp.doubt[i]);
  free(rp.doubt);
  return status;
}

/* ---- events ------------------------------------------------------------ */

static void publish_command(bm_gateway_t *gw, const struct bm_event *ev)
{
  struct bm_relay_view v;
  int len, rc;
  bool queued;

  pthread_mutex_lock(&gw->lock);
  bm_relay_table_view(gw->table, ev->relay, &v);
  pthread_mutex_unlock(&gw->lock);

  bm_str_copy(gw->cmd.correlation_id, sizeof(gw->cmd.correlation_id), ev->corr);
  gw->cmd.parameters.resource_id = v.resource_id;
  gw->cmd.parameters.output = v.output;
  gw->cmd.parameters.status = ev->status;
  bm_str_copy(gw->cmd.jwt_token, sizeof(gw->cmd.jwt_token),
              bm_token_value(gw->token));
  len = bm_msg_encode_command(&gw->cmd, gw->payload, sizeof(gw->payload));
  if (len < 0) {
    BM_ERROR("gateway \"%s\": cannot encode command \"%s\": too large",
             gw->conf.name, ev->corr);
    return;
  }
  rc = mosquitto_publish(gw->mosq, NULL, gw->conf.command_topic, len,
                         gw->payload, gw->conf.qos, false);
  /* At QoS 1 and 2 libmosquitto queues the message before it writes it: a
   * connection that fails in that write leaves it queued, sent again at the
   * next connection (and acknowledged then), so it counts as unacked. */
  queued = gw->conf.qos > 0 &&
           (rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST ||
            rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_TLS);
  if ((rc == MOSQ_ERR_SUCCESS && gw->conf.qos > 0) || queued) {
    gw->unacked++;
    gw->published_at = bm_now_mono();
  }
  /* The payload held the token. */
  memset(gw->payload, 0, (size_t)len);
  if (queued) {
    BM_WARNING("gateway \"%s\": the connection failed while publishing "
               "correlationId \"%s\" (%s); the MQTT client sends it again at "
               "the next connection",
               gw->conf.name, ev->corr, mosquitto_strerror(rc));
    return;
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    BM_WARNING("gateway \"%s\": publish of correlationId \"%s\" failed: %s; "
               "it times out and is retried",
               gw->conf.name, ev->corr, mosquitto_strerror(rc));
    return;
  }
  BM_INFO("gateway \"%s\": %s setExtDO relay \"%s\" (resourceId %lld, output "
          "%d) status %d, correlationId \"%s\", attempt %d, origin \"%s\", "
          "token %s",
          gw->conf.name, ev->republish ? "republished" : "published", v.name,
          (long long)v.resource_id, v.output, ev->status, ev->corr,
          ev->attempt, ev->origin, bm_token_fingerprint(gw->token));
}

/* Carries out and hands to the host every collected event, then empties the
 * list.  Called without the mutex.  Not again from inside: a give-up's
 * client_reset ends in set_ready(false), whose call here would journal,
 * publish and report the whole batch a second time (and empty it under
 * the loop); what such a call would collect, the loop below takes, as it
 * reads the list's length at every step (set_ready(false) collects
 * nothing). */
static void run_events(bm_gateway_t *gw)
{
  bool any;

  if (gw->running_events)
    return;
  gw->running_events = true;
  refuse_without_token(gw);
  journal_events(gw);
  if (gw->events.lost)
    BM_ERROR("gateway \"%s\": out of memory: %zu relay events lost",
             gw->conf.name, gw->events.lost);
  for (size_t i = 0; i < gw->events.n; i++) {
    struct bm_event *ev = &gw->events.ev[i];
    if (ev->kind == BM_EV_PUBLISH)
      publish_command(gw, ev);
    if (ev->kind == BM_EV_ACK && ev->result == BM_RESULT_SENT)
      gw->unauthorized_retried[ev->relay] = false;
    if (ev->kind == BM_EV_END && ev->outcome == BM_OP_UNAUTHORIZED)
      after_unauthorized(gw, ev);
    if (ev->kind == BM_EV_END && ev->outcome == BM_OP_GAVE_UP && gw->unacked > 0) {
      client_reset(gw);
      ev = &gw->events.ev[i]; /* in case the list grew */
    }
    if (gw->hooks.event)
      gw->hooks.event(gw->hooks.ctx, gw->conf.name, ev);
  }
  any = gw->events.n > 0;
  bm_events_clear(&gw->events);
  gw->running_events = false;
  if (any && gw->hooks.events_done)
    gw->hooks.events_done(gw->hooks.ctx);
  if (gw->journal && journal_compaction_due(gw))
    journal_compact(gw);
}

/* Commands and acknowledgements are small packets that must leave at
 * once: with Nagle's algorithm a command published soon after we
 * acknowledged an answer waits for the broker's delayed ACK (40 ms). Set
 * once the session is ready, not before: while connecting, Nagle holds a
 * publication libmosquitto resends after the CONNACK behind our SUBSCRIBE,
 * so a broker that refuses it (QoS 2 on a QoS-1-only broker) has granted
 * the subscription first, and the plugin sees why and recovers. */
static void set_nodelay(bm_gateway_t *gw)
{
  int one = 1, sock = mosquitto_socket(gw->mosq);

  if (sock >= 0 &&
      setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    BM_WARNING("gateway \"%s\": cannot set TCP_NODELAY: %s; commands may "
               "wait up to 40 ms for the broker's ACK",
               gw->conf.name, strerror(errno));
}

/* libmosquitto explains TLS and socket failures through its log. */
static void on_mosq_log(struct mosquitto *m, void *obj, int level,
                        const char *line)
{
  bm_gateway_t *gw = obj;

  (void)m;
  if (level & MOSQ_LOG_ERR)
    BM_ERROR("gateway \"%s\": MQTT: %s", gw->conf.name, line);
  else if (level & MOSQ_LOG_WARNING)
    BM_WARNING("gateway \"%s\": MQTT: %s", gw->conf.name, line);
}

static void set_ready(bm_gateway_t *gw, bool ready)
{
  bool was;

  if (ready)
    set_nodelay(gw);
  /* libmosquitto formats every line it has (a malloc and a vsnprintf per
   * packet, debug lines all but a few) as soon as a log callback is set:
   * ours is set while a session is made, where its errors (TLS, refused
   * connections) say why, and off while it is ready. A session lost comes
   * back here with its reason from our own callbacks. */
  mosquitto_log_callback_set(gw->mosq, ready ? NULL : on_mosq_log);

  pthread_mutex_lock(&gw->lock);
  was = gw->ready;
  gw->ready = ready;
  bm_relay_table_set_connected(gw->table, ready, gw->session_present,
                               bm_now_mono(), &gw->events);
  /* The intents that waited for the session go out now, in this turn:
   * read_packets goes on reading, and a broker that closes the session
   * right away (one refusing the QoS 2 publication libmosquitto resends
   * after the CONNACK) would otherwise end it before the loop's tick. */
  if (ready)
    bm_relay_table_tick(gw->table, bm_now_mono(), &gw->events);
  pthread_mutex_unlock(&gw->lock);
  if (was != ready && gw->hooks.connection)
    gw->hooks.connection(gw->hooks.ctx, gw->conf.name, ready);
  run_events(gw);
}

/* ---- libmosquitto callbacks (gateway thread) --------------------------- */

static void session_lost(bm_gateway_t *gw, const char *why)
{
  double now = bm_now_mono();

  if (gw->session == SESSION_IDLE)
    return;
  /* Only a session that lasted resets the backoff: one that a broker drops
   * right after it is ready (every PUBLISH cut, a crash loop) must not
   * bring back a reconnect a second. */
  if (gw->session == SESSION_READY && now - gw->ready_at >= STABLE_SESSION)
    gw->backoff = BACKOFF_MIN;
  gw->session = SESSION_IDLE;
  gw->reconnect_at = now + gw->backoff;
  BM_WARNING("gateway \"%s\": connection to %s:%d lost (%s); reconnecting in "
             "%g s",
             gw->conf.name, gw->conf.host, gw->conf.port, why, gw->backoff);
  /* A broker that takes QoS 1 at most closes the connection on a QoS 2
   * PUBLISH. Certain when it granted the subscription less than asked.
   * Subscribed at QoS 1 we cannot tell: a likely reason when it happens
   * twice with no publication acknowledged since (once is any restart). */
  if (gw->granted_qos >= 0 && gw->granted_qos < gw->conf.qos &&
      gw->unacked > 0 && now - gw->published_at < 2.0) {
    if (gw->granted_qos < gw->conf.sub_qos)
      BM_ERROR("gateway \"%s\": the broker closed the connection right after "
               "a QoS %d publication; it subscribed us at QoS %d only, so it "
               "refuses QoS %d: set \"QoS %d\" in the Gateway block",
               gw->conf.name, gw->conf.qos, gw->granted_qos, gw->conf.qos,
               gw->granted_qos);
    else if (gw->conf.qos == 2 && ++gw->qos_closes == 2)
      BM_WARNING("gateway \"%s\": the broker closed the connection right "
                 "after a QoS 2 publication twice, and acknowledged none in "
                 "between; a broker that takes QoS 1 at most (AWS IoT Core, "
                 "Azure IoT Hub) does that: then set \"QoS 1\" in the "
                 "Gateway block",
                 gw->conf.name);
  }
  gw->backoff = fmin(gw->backoff * 2, BACKOFF_MAX);
  set_ready(gw, false);
}

/* A session we ended ourselves (a reset, the stop): idle, the next
 * attempt after the current backoff, no warning. Once. */
static void session_closed(bm_gateway_t *gw)
{
  if (gw->session == SESSION_IDLE)
    return;
  gw->session = SESSION_IDLE;
  gw->reconnect_at = bm_now_mono() + gw->backoff;
  set_ready(gw, false);
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
  bm_gateway_t *gw = obj;
  int mid = 0;

  (void)props;
  if (rc != 0) {
    BM_ERROR("gateway \"%s\": broker %s:%d refused the connection: %s",
             gw->conf.name, gw->conf.host, gw->conf.port,
             mosquitto_connack_string(rc));
    mosquitto_disconnect(m);
    session_lost(gw, "connection refused");
    return;
  }
  gw->session_present = (flags & 1) != 0;
  rc = mosquitto_subscribe(m, &mid, gw->topic, gw->conf.sub_qos);
  if (rc != MOSQ_ERR_SUCCESS) {
    BM_ERROR("gateway \"%s\": cannot subscribe to \"%s\": %s", gw->conf.name,
             gw->topic, mosquitto_strerror(rc));
    mosquitto_disconnect(m);
    session_lost(gw, "subscribe failed");
    return;
  }
  gw->sub_mid = mid;
  gw->session = SESSION_SUBSCRIBING;
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int count,
                         const int *granted, const mosquitto_property *props)
{
  bm_gateway_t *gw = obj;

  (void)props;
  if (mid != gw->sub_mid || gw->session != SESSION_SUBSCRIBING)
    return;
  if (count < 1 || granted[0] < 0 || granted[0] > 2) {
    BM_ERROR("gateway \"%s\": broker refused the subscription to \"%s\"",
             gw->conf.name, gw->topic);
    mosquitto_disconnect(m);
    session_lost(gw, "subscription refused");
    return;
  }
  BM_INFO("gateway \"%s\": connected to %s:%d as \"%s\", subscribed to \"%s\" "
          "(granted QoS %d, session %s)",
          gw->conf.name, gw->conf.host, gw->conf.port, gw->conf.client_id,
          gw->topic, granted[0], gw->session_present ? "resumed" : "new");
  if (granted[0] < gw->conf.sub_qos && granted[0] != gw->granted_qos)
    BM_WARNING("gateway \"%s\": broker granted QoS %d below the requested %d: "
               "duplicates are expected and ignored",
               gw->conf.name, granted[0], gw->conf.sub_qos);
  gw->granted_qos = granted[0];
  gw->session = SESSION_READY;
  gw->ready_at = bm_now_mono();
  set_ready(gw, true);
}

/* The broker acknowledged a publication (PUBACK, or PUBCOMP at QoS 2). */
static void on_publish(struct mosquitto *m, void *obj, int mid, int reason,
                       const mosquitto_property *props)
{
  bm_gateway_t *gw = obj;

  (void)m;
  (void)mid;
  (void)reason;
  (void)props;
  if (gw->unacked > 0)
    gw->unacked--;
  gw->qos_closes = 0; /* the broker takes our QoS (session_lost) */
}

const char *bm_mqtt_lost_why(int rc, bool connecting, int keepalive,
                             char *buf, size_t len)
{
  static const char unknown[] = "Unknown error"; /* its default text */
  const char *text;

  if (rc == MOSQ_ERR_ERRNO)
    return strerror(errno);
  if (rc == MOSQ_ERR_KEEPALIVE) {
    if (connecting)
      snprintf(buf, len, "not connected within KeepAlive (%d s): no CONNACK",
               keepalive);
    else
      snprintf(buf, len, "nothing from the broker within KeepAlive (%d s)",
               keepalive);
    return buf;
  }
  text = mosquitto_strerror(rc);
  if (strncmp(text, unknown, sizeof(unknown) - 1) != 0)
    return text;
  snprintf(buf, len, "libmosquitto error %d", rc);
  return buf;
}

static const char *lost_why(bm_gateway_t *gw, int rc, char *buf, size_t len)
{
  return bm_mqtt_lost_why(rc, gw->session == SESSION_CONNECTING,
                          gw->conf.keepalive, buf, len);
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc,
                          const mosquitto_property *props)
{
  bm_gateway_t *gw = obj;
  char why[96];

  (void)m;
  (void)props;
  if (gw->own_disconnect && rc == 0) {
    /* Our own DISCONNECT: no broker close to warn about or to count
     * towards the QoS 2 hint. */
    session_closed(gw);
    return;
  }
  session_lost(gw, rc == 0 ? "disconnected"
                           : lost_why(gw, rc, why, sizeof(why)));
}

static void handle_message(bm_gateway_t *gw, const void *payload, size_t len)
{
  char err[256];
  enum bm_apply res = BM_APPLY_OK;
  bool own_id = false; /* an unknown response's id is one of ours */
  bool decoded, foreign;
  double now = bm_now_mono();

  if (len > BM_MSG_MAX_SIZE) {
    pthread_mutex_lock(&gw->lock);
    bm_relay_table_count_op(gw->table, BM_OP_MALFORMED);
    pthread_mutex_unlock(&gw->lock);
    complain(gw, &gw->complaints, "dropped a message of %zu bytes (limit %d)",
             len, BM_MSG_MAX_SIZE);
    return;
  }
  decoded = bm_msg_decode(payload, len, &gw->msg, err, sizeof(err)) == 0;
  foreign = decoded && gw->msg.type == BM_MSG_NOTIFICATION &&
            strcmp(gw->msg.u.notification.app_id, gw->app_id) != 0;
  if (!decoded || gw->msg.type == BM_MSG_COMMAND || foreign) {
    /* err: the decoder's reason, else (decoded) why we drop it */
    if (decoded && gw->msg.type == BM_MSG_COMMAND)
      snprintf(err, sizeof(err), "a commandMessage on the response topic");
    else if (foreign)
      snprintf(err, sizeof(err), "notification for appId \"%s\", not ours",
               gw->msg.u.notification.app_id);
    pthread_mutex_lock(&gw->lock);
    bm_relay_table_count_op(gw->table, BM_OP_MALFORMED);
    pthread_mutex_unlock(&gw->lock);
    complain(gw, &gw->complaints, "dropped a message on \"%s\": %s", gw->topic,
             err);
    if (gw->msg.type == BM_MSG_COMMAND) /* someone's token: not kept */
      memset(&gw->msg.u.command, 0, sizeof(gw->msg.u.command));
    return;
  }
  if (err[0] != '\0') { /* a bad field the plugin does not use (message.h) */
    const char *corr = gw->msg.type == BM_MSG_RESPONSE
                           ? gw->msg.u.response.correlation_id
                           : gw->msg.u.notification.correlation_id;
    complain(gw, &gw->spare, "took a %s%s%s%s despite its %s",
             gw->msg.type == BM_MSG_RESPONSE ? "commandResponse"
                                             : "notification",
             corr[0] ? " (correlationId \"" : "", corr, corr[0] ? "\")" : "",
             err);
  }

  pthread_mutex_lock(&gw->lock);
  if (gw->msg.type == BM_MSG_RESPONSE) {
    res = bm_relay_table_on_response(gw->table, &gw->msg.u.response, now,
                                     &gw->events);
    own_id = res == BM_APPLY_UNKNOWN_ID &&
             bm_relay_table_is_own_id(gw->table,
                                      gw->msg.u.response.correlation_id);
  }
  else
    res = bm_relay_table_on_notification(gw->table, &gw->msg.u.notification,
                                         now, &gw->events);
  bm_relay_table_tick(gw->table, now, &gw->events);
  pthread_mutex_unlock(&gw->lock);

  if (gw->msg.type == BM_MSG_RESPONSE) {
    const struct bm_response *r = &gw->msg.u.response;
    BM_INFO("gateway \"%s\": received commandResponse correlationId \"%s\" "
            "result %s%s%s%s",
            gw->conf.name, r->correlation_id, bm_result_name(r->result),
            r->reason[0] ? " (\"" : "", r->reason, r->reason[0] ? "\")" : "");
  } else {
    const struct bm_notification *n = &gw->msg.u.notification;
    /* One without a correlationId is the device's own news: the relay_on/off
     * notification of its change says it all, so its line would only double
     * the log at the rate the devices speak. */
    if (n->has_state)
      bm_log(n->has_correlation_id ? BM_LOG_INFO : BM_LOG_DEBUG,
             "gateway \"%s\": received notification %s correlationId \"%s\" "
             "resourceId %lld output %d status %d",
             gw->conf.name, n->notification_type,
             n->has_correlation_id ? n->correlation_id : "",
             (long long)n->state.resource_id, n->state.output,
             n->state.status);
    /* else: no state to show; BM_APPLY_IGNORED below says what it was */
  }
  if (res == BM_APPLY_DUPLICATE)
    BM_INFO("gateway \"%s\": correlationId \"%s\" already applied: duplicate "
            "ignored",
            gw->conf.name,
            gw->msg.type == BM_MSG_RESPONSE
                ? gw->msg.u.response.correlation_id
                : gw->msg.u.notification.correlation_id);
  else if (res == BM_APPLY_UNKNOWN_ID && own_id)
    /* A late or repeated answer to a command that ended long ago (or
     * before a restart): expected now and then, not a fault. */
    BM_INFO("gateway \"%s\": commandResponse for correlationId \"%s\", an "
            "earlier command of this plugin no longer followed: ignored",
            gw->conf.name, gw->msg.u.response.correlation_id);
  else if (res == BM_APPLY_UNKNOWN_ID)
    complain(gw, &gw->complaints,
             "commandResponse for correlationId \"%s\", which is not a "
             "command of this plugin",
             gw->msg.u.response.correlation_id);
  else if (res == BM_APPLY_UNKNOWN_RELAY)
    complain(gw, &gw->complaints,
             "notification for resourceId %lld output %d, which is no "
             "configured Relay",
             (long long)gw->msg.u.notification.state.resource_id,
             gw->msg.u.notification.state.output);
  else if (res == BM_APPLY_IGNORED)
    complain(gw, &gw->complaints, "ignored a notification of type \"%s\"",
             gw->msg.u.notification.notification_type);
}

/* A message, its events left for the caller to run: the MQTT loop runs
 * those of a whole read at once. */
static void receive(bm_gateway_t *gw, const char *topic, const void *payload,
                    size_t len)
{
  if (strcmp(topic, gw->topic) != 0) {
    pthread_mutex_lock(&gw->lock);
    bm_relay_table_count_op(gw->table, BM_OP_MALFORMED);
    pthread_mutex_unlock(&gw->lock);
    complain(gw, &gw->complaints,
             "dropped a message on unexpected topic \"%.64s\"", topic);
    return;
  }
  handle_message(gw, payload, len);
}

void bm_gateway_receive(bm_gateway_t *gw, const char *topic,
                        const void *payload, size_t len)
{
  receive(gw, topic, payload, len);
  run_events(gw);
}

static void on_message(struct mosquitto *m, void *obj,
                       const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
  (void)m;
  (void)props;
  receive(obj, msg->topic, msg->payload,
          (size_t)(msg->payloadlen > 0 ? msg->payloadlen : 0));
}

/* ---- lifecycle --------------------------------------------------------- */

int bm_gateway_library_init(void)
{
  return mosquitto_lib_init() == MOSQ_ERR_SUCCESS ? 0 : -1;
}

void bm_gateway_library_cleanup(void) { mosquitto_lib_cleanup(); }

bm_gateway_t *bm_gateway_new(const struct bm_gateway_conf *conf,
                             const struct bm_gateway_hooks *hooks, char *err,
                             size_t errlen)
{
  bm_gateway_t *gw = NULL;
  unsigned char rnd[8];
  char prefix[24];

  if (!(gw = bm_calloc(1, sizeof(*gw)))) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  gw->conf = *conf;
  gw->conf.sub_qos = bm_gateway_sub_qos(conf); /* resolved: 0, 1 or 2 */
  if (hooks)
    gw->hooks = *hooks;
  gw->wake_fd = -1;
  gw->backoff = BACKOFF_MIN;
  gw->granted_qos = -1;
  pthread_mutex_init(&gw->lock, NULL);
  pthread_mutex_init(&gw->ask_lock, NULL);
  pthread_cond_init(&gw->ask_room, NULL);
  snprintf(gw->topic, sizeof(gw->topic), "application/third-party/%s/%s",
           conf->app_name, conf->instance_id);
  snprintf(gw->app_id, sizeof(gw->app_id), "%s.%s", conf->app_name,
           conf->instance_id);

  /* correlationIds: random per process and gateway, then a sequence. */
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
    snprintf(err, errlen, "cannot draw random bytes for correlationIds");
    goto fail;
  }
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(prefix + 2 * i, 3, "%02x", rnd[i]);
  if (!(gw->table = bm_relay_table_new(&conf->policy, prefix))) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  bm_str_copy(gw->cmd.app_id, sizeof(gw->cmd.app_id), gw->app_id);
  bm_str_copy(gw->cmd.brand, sizeof(gw->cmd.brand), conf->brand);
  snprintf(gw->cmd.command, sizeof(gw->cmd.command), "setExtDO");
  gw->cmd.user_id = conf->user_id;
  gw->cmd.organization_id = conf->organization_id;
  gw->token_severity = BM_SEV_OKAY;
  if (!(gw->token = bm_token_new(&conf->token, bm_now_wall_ms() / 1000, err,
                                 errlen)))
    goto fail;
  BM_INFO("gateway \"%s\": token %s ready", conf->name,
          bm_token_fingerprint(gw->token));
  gw->tls = conf->ca_file[0] || conf->ca_path[0] || conf->tls_system_cas;

  if ((gw->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    snprintf(err, errlen, "eventfd failed: %s", strerror(errno));
    goto fail;
  }
  return gw;

fail:
  bm_gateway_free(gw);
  return NULL;
}

static int key_password_cb(char *buf, int size, int rwflag, void *userdata)
{
  bm_gateway_t *gw = mosquitto_userdata(userdata);
  int n;

  (void)rwflag;
  n = snprintf(buf, (size_t)size, "%s", gw->conf.key_password);
  return n < size ? n : size - 1;
}

/* Checks that a file TLS needs can be read, naming it when not. */
static int tls_file_ok(bm_gateway_t *gw, const char *option, const char *path)
{
  if (!path[0] || access(path, R_OK) == 0)
    return 0;
  BM_ERROR("gateway \"%s\": cannot read %s \"%s\": %s; retrying", gw->conf.name,
           option, path, strerror(errno));
  return -1;
}

/* Sets libmosquitto's TLS up; called before each connection attempt until
 * it succeeds, so files fixed later are picked up without a restart. */
static int tls_setup(bm_gateway_t *gw)
{
  const struct bm_gateway_conf *c = &gw->conf;
  int rc;

  if (tls_file_ok(gw, "CACert", c->ca_file) || tls_file_ok(gw, "CAPath", c->ca_path) ||
      tls_file_ok(gw, "CertificateFile", c->cert_file) ||
      tls_file_ok(gw, "CertificateKeyFile", c->key_file))
    return -1;
  if (c->tls_system_cas &&
      (rc = mosquitto_int_option(gw->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1)) !=
          MOSQ_ERR_SUCCESS) {
    BM_ERROR("gateway \"%s\": cannot use the system's CA store: %s",
             c->name, mosquitto_strerror(rc));
    return -1;
  }
  /* libmosquitto wants a CA file or directory even when the system store
   * is used: OpenSSL's default directory satisfies it (and the store,
   * SSL_CERT_FILE and SSL_CERT_DIR included, is what verifies). */
  rc = mosquitto_tls_set(gw->mosq, c->ca_file[0] ? c->ca_file : NULL,
                         c->ca_path[0] ? c->ca_path
                         : c->ca_file[0] ? NULL
                                         : X509_get_default_cert_dir(),
                         c->cert_file[0] ? c->cert_file : NULL,
                         c->key_file[0] ? c->key_file : NULL,
                         c->key_password[0] ? key_password_cb : NULL);
  if (rc != MOSQ_ERR_SUCCESS) {
    BM_ERROR("gateway \"%s\": TLS setup failed: %s", c->name,
             mosquitto_strerror(rc));
    return -1;
  }
  rc = mosquitto_tls_opts_set(gw->mosq, c->tls_verify_peer ? 1 : 0,
                              c->tls_version[0] ? c->tls_version : NULL,
                              c->ciphers[0] ? c->ciphers : NULL);
  if (rc == MOSQ_ERR_SUCCESS)
    rc = mosquitto_tls_insecure_set(gw->mosq, !c->tls_verify_hostname);
  if (rc != MOSQ_ERR_SUCCESS) {
    BM_ERROR("gateway \"%s\": TLS options refused (TLSProtocol \"%s\", "
             "CipherSuite \"%s\"): %s",
             c->name, c->tls_version, c->ciphers, mosquitto_strerror(rc));
    return -1;
  }
  gw->tls_ready = true;
  return 0;
}

bool bm_gateway_token_expiry(bm_gateway_t *gw, int64_t *exp)
{
  bool has;

  pthread_mutex_lock(&gw->lock);
  has = gw->token_has_exp;
  *exp = gw->token_exp;
  pthread_mutex_unlock(&gw->lock);
  return has;
}

/* Callbacks and options of a new (or reinitialised) MQTT client. */
static int client_setup(bm_gateway_t *gw, char *err, size_t errlen)
{
  int rc;

  mosquitto_connect_v5_callback_set(gw->mosq, on_connect);
  mosquitto_subscribe_v5_callback_set(gw->mosq, on_subscribe);
  mosquitto_disconnect_v5_callback_set(gw->mosq, on_disconnect);
  mosquitto_message_v5_callback_set(gw->mosq, on_message);
  mosquitto_publish_v5_callback_set(gw->mosq, on_publish);
  mosquitto_log_callback_set(gw->mosq, on_mosq_log);
  gw->tls_ready = false;
  gw->unacked = 0;
  rc = mosquitto_int_option(gw->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                            gw->conf.protocol_version == 5   ? MQTT_PROTOCOL_V5
                            : gw->conf.protocol_version == 3 ? MQTT_PROTOCOL_V31
                                                             : MQTT_PROTOCOL_V311);
  if (rc != MOSQ_ERR_SUCCESS) {
    snprintf(err, errlen, "cannot set MQTT protocol version %d: %s",
             gw->conf.protocol_version, mosquitto_strerror(rc));
    return -1;
  }
  if (gw->conf.user[0]) {
    rc = mosquitto_username_pw_set(gw->mosq, gw->conf.user,
                                   gw->conf.password[0] ? gw->conf.password
                                                        : NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
      snprintf(err, errlen, "cannot set the MQTT user: %s",
               mosquitto_strerror(rc));
      return -1;
    }
  }
  return 0;
}

/* Forgets every publication libmosquitto still holds: after a give-up, a
 * command the broker never acknowledged must not be sent again at every
 * reconnect, nor be delivered long after it was reported as given up.
 * Commands still pending in the table time out and retry as usual. */
static void client_reset(bm_gateway_t *gw)
{
  char err[256];
  int rc;

  BM_WARNING("gateway \"%s\": %d publication%s the broker never acknowledged "
             "dropped with the client's state; reconnecting afresh",
             gw->conf.name, gw->unacked, gw->unacked == 1 ? "" : "s");
  if (gw->session != SESSION_IDLE) {
    /* Called in read_packets' turn (a give-up), the socket may be held:
     * let go first, or the close would reset the connection and drop the
     * DISCONNECT and this turn's PUBLISHes and acknowledgements (its
     * journal records are written by now). */
    hold(mosquitto_socket(gw->mosq), 0);
    gw->own_disconnect = true;
    mosquitto_disconnect(gw->mosq);
    gw->own_disconnect = false;
  }
  if ((rc = mosquitto_reinitialise(gw->mosq, gw->conf.client_id, false, gw)) !=
      MOSQ_ERR_SUCCESS)
    BM_ERROR("gateway \"%s\": cannot reinitialise the MQTT client: %s",
             gw->conf.name, mosquitto_strerror(rc));
  else if (client_setup(gw, err, sizeof(err)) != 0)
    BM_ERROR("gateway \"%s\": cannot set the MQTT client up again: %s",
             gw->conf.name, err);
  session_closed(gw);
}

int bm_gateway_open(bm_gateway_t *gw, const char *default_client_id,
                    char *err, size_t errlen)
{
  size_t n = bm_relay_table_size(gw->table);

  if (gw->mosq)
    return 0;
  if (!(gw->waiting_token = bm_calloc(n + 1, sizeof(bool))) ||
      !(gw->unauthorized_retried = bm_calloc(n + 1, sizeof(bool)))) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (gw->conf.journal_file[0] && journal_restore(gw, err, errlen) != 0)
    return -1;
  if (!gw->conf.client_id[0])
    bm_str_copy(gw->conf.client_id, sizeof(gw->conf.client_id),
                default_client_id);
  if (!(gw->mosq = mosquitto_new(gw->conf.client_id, false, gw))) {
    snprintf(err, errlen, "cannot create the MQTT client: %s",
             strerror(errno));
    return -1;
  }
  return client_setup(gw, err, errlen);
}

void bm_gateway_free(bm_gateway_t *gw)
{
  if (!gw)
    return;
  if (gw->mosq)
    mosquitto_destroy(gw->mosq);
  if (gw->journal && bm_journal_close(gw->journal) != 0)
    BM_ERROR("gateway \"%s\": closing the journal \"%s\" failed",
             gw->conf.name, gw->conf.journal_file);
  if (gw->wake_fd >= 0)
    close(gw->wake_fd);
  bm_relay_table_free(gw->table);
  bm_token_free(gw->token);
  free(gw->waiting_token);
  free(gw->unauthorized_retried);
  bm_events_release(&gw->events);
  free(gw->asks);
  free(gw->taken);
  free(gw->done);
  pthread_cond_destroy(&gw->ask_room);
  pthread_mutex_destroy(&gw->ask_lock);
  pthread_mutex_destroy(&gw->lock);
  /* The command buffer held the token. */
  memset(&gw->cmd, 0, sizeof(gw->cmd));
  memset(gw->conf.password, 0, sizeof(gw->conf.password));
  free(gw);
}

int bm_gateway_add_relay(bm_gateway_t *gw, const char *name,
                         int64_t resource_id, int output)
{
  return bm_relay_table_add(gw->table, name, resource_id, output);
}

int bm_gateway_keep_switches(bm_gateway_t *gw, int relay, int n)
{
  int rc;

  pthread_mutex_lock(&gw->lock);
  rc = bm_relay_table_keep_switches(gw->table, relay, n);
  pthread_mutex_unlock(&gw->lock);
  return rc;
}

int bm_gateway_find_relay(const bm_gateway_t *gw, const char *name)
{
  /* Relays are fixed once the thread runs: the lookup needs no lock. */
  return bm_relay_table_find(gw->table, name);
}

const char *bm_gateway_name(const bm_gateway_t *gw) { return gw->conf.name; }

const char *bm_gateway_relay_name(const bm_gateway_t *gw, int relay)
{
  return bm_relay_table_name(gw->table, relay);
}

size_t bm_gateway_relay_count(const bm_gateway_t *gw)
{
  return bm_relay_table_size(gw->table);
}

static void wake_now(bm_gateway_t *gw)
{
  uint64_t one = 1;
  /* A full counter (EAGAIN) already means "awake": nothing is lost. */
  if (write(gw->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    BM_ERROR("gateway \"%s\": cannot wake the gateway thread: %s",
             gw->conf.name, strerror(errno));
}

/* After a request changed the table or an ask was put in the mailbox
 * (their locks released): wakes the gateway thread unless a wake-up since
 * its last turn is still to be served. That turn comes after the wake-up,
 * so it sees this request too: in a burst only the first caller pays the
 * write(2) and the wake-up (the thread clears the flag right before it
 * takes the mailbox and ticks the table). Write callback p50 in cmdpath's
 * Switch bursts: 2.2 -> 1.6-1.9 us. */
static void wake(bm_gateway_t *gw)
{
  if (!atomic_exchange(&gw->wake_pending, true))
    wake_now(gw);
}

/* Under the mutex, after a request: what it superseded. */
static void take_superseded(bm_gateway_t *gw, struct superseded *sup)
{
  sup->ended =
      bm_relay_table_take_superseded(gw->table, &sup->relay, &sup->cmd);
}

/* After the mutex: a superseded command ends in the log like any other
 * (no counter, no notification: nothing failed). */
static void say_superseded(bm_gateway_t *gw, const struct superseded *sup)
{
  if (!sup->ended)
    return;
  BM_INFO("gateway \"%s\": command to switch relay \"%s\" %s (correlationId "
          "\"%s\", attempt %d) ended: superseded by a newer request%s",
          gw->conf.name, bm_gateway_relay_name(gw, sup->relay),
          sup->cmd.status ? "on" : "off", sup->cmd.corr, sup->cmd.attempt,
          sup->cmd.status ? "; it may still reach the device: the relay's "
                            "Interlock partners, if any, stay off for "
                            "CommandTimeout"
                          : "");
}

/* Under the mutex: one request or ask decided by the relay table (a bad
 * relay index or status: BM_REQ_SAME); sup says what it superseded. */
static enum bm_request decide(bm_gateway_t *gw, const struct bm_gateway_ask *a,
                              double now, char *why, size_t whylen,
                              struct superseded *sup)
{
  enum bm_request rc;

  sup->ended = false;
  if (a->relay < 0 || (size_t)a->relay >= bm_relay_table_size(gw->table) ||
      (a->status != 0 && a->status != 1))
    return BM_REQ_SAME;
  if (a->limits)
    rc = bm_relay_table_request_limited(gw->table, a->relay, a->status,
                                        a->origin, a->limits, now, why,
                                        whylen);
  else
    rc = bm_relay_table_request(gw->table, a->relay, a->status, a->origin,
                                a->require_known, now, why, whylen);
  take_superseded(gw, sup);
  return rc;
}

enum bm_request bm_gateway_request(bm_gateway_t *gw, int relay, int status,
                                   const char *origin, bool require_known,
                                   char *why, size_t whylen)
{
  struct bm_gateway_ask a = {
      .relay = relay, .status = status, .require_known = require_known};
  struct superseded sup;
  enum bm_request res;

  bm_str_copy(a.origin, sizeof(a.origin), origin ? origin : "");
  pthread_mutex_lock(&gw->lock);
  res = decide(gw, &a, bm_now_mono(), why, whylen, &sup);
  pthread_mutex_unlock(&gw->lock);
  say_superseded(gw, &sup);
  if (res == BM_REQ_OK)
    wake(gw);
  return res;
}

void bm_gateway_ask(bm_gateway_t *gw, const struct bm_gateway_ask *ask)
{
  pthread_mutex_lock(&gw->ask_lock);
  while (gw->asks_n == gw->asks_cap) {
    size_t cap = gw->asks_cap ? 2 * gw->asks_cap : ASKS_MIN;
    struct bm_gateway_ask *grown = NULL;

    if ((cap <= ASKS_MAX || ask->no_wait) && cap > gw->asks_cap &&
        (grown = bm_realloc(gw->asks, cap * sizeof(*grown)))) {
      gw->asks = grown;
      gw->asks_cap = cap;
      break;
    }
    if (ask->no_wait) {
      pthread_mutex_unlock(&gw->ask_lock);
      BM_ERROR("gateway \"%s\": out of memory for its mailbox: relay %d "
               "to %d (%s) not asked",
               gw->conf.name, ask->relay, ask->status, ask->origin);
      return;
    }
    /* Full, or no memory: the thread empties it at its next turn; a
     * stopped thread never will, and would not carry the ask out. */
    if (atomic_load(&gw->stop)) {
      pthread_mutex_unlock(&gw->ask_lock);
      BM_ERROR("gateway \"%s\": stopping with its mailbox full: relay %d "
               "to %d (%s) not asked",
               gw->conf.name, ask->relay, ask->status, ask->origin);
      return;
    }
    wake_now(gw);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 100 * 1000 * 1000;
    until.tv_sec += until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&gw->ask_room, &gw->ask_lock, &until);
  }
  gw->asks[gw->asks_n++] = *ask;
  pthread_mutex_unlock(&gw->ask_lock);
  wake(gw);
}

/* Gateway thread, before its turn's lock: takes the mailbox's asks (the
 * two arrays change places) and makes room for their decisions. */
static void take_asks(bm_gateway_t *gw)
{
  struct bm_gateway_ask *t;
  size_t cap;

  pthread_mutex_lock(&gw->ask_lock);
  t = gw->taken;
  cap = gw->taken_cap;
  gw->taken = gw->asks;
  gw->taken_cap = gw->asks_cap;
  gw->taken_n = gw->asks_n;
  gw->asks = t;
  gw->asks_cap = cap;
  gw->asks_n = 0;
  pthread_cond_broadcast(&gw->ask_room);
  pthread_mutex_unlock(&gw->ask_lock);
  if (gw->done_cap < gw->taken_n) {
    struct ask_done *d = bm_realloc(gw->done, gw->taken_cap * sizeof(*d));
    if (d) {
      gw->done = d;
      gw->done_cap = gw->taken_cap;
    }
  }
}

/* Under the mutex: decides the taken asks, in the order they came, into
 * gw->done (the decisions beyond done_cap, which only a failed allocation
 * leaves short, go unreported). */
static void decide_asks(bm_gateway_t *gw, double now)
{
  for (size_t i = 0; i < gw->taken_n; i++) {
    struct ask_done spare, *d = i < gw->done_cap ? &gw->done[i] : &spare;

    d->why[0] = '\0';
    d->rc = decide(gw, &gw->taken[i], now, d->why, sizeof(d->why), &d->sup);
  }
}

/* After the mutex: hands the decisions to the host. */
static void report_asks(bm_gateway_t *gw)
{
  size_t n = gw->taken_n < gw->done_cap ? gw->taken_n : gw->done_cap;

  for (size_t i = 0; i < n; i++) {
    say_superseded(gw, &gw->done[i].sup);
    if (gw->hooks.asked)
      gw->hooks.asked(gw->hooks.ctx, gw->conf.name, &gw->taken[i],
                      gw->done[i].rc, gw->done[i].why);
  }
  gw->taken_n = 0;
}

enum bm_request bm_gateway_override(bm_gateway_t *gw, int relay, int status,
                                    double hold, const char *origin,
                                    char *why, size_t whylen)
{
  struct superseded sup;
  enum bm_request res;

  if (relay < 0 || (size_t)relay >= bm_relay_table_size(gw->table) ||
      status < -1 || status > 1)
    return BM_REQ_SAME;
  pthread_mutex_lock(&gw->lock);
  res = bm_relay_table_override(gw->table, relay, status, hold, origin,
                                bm_now_mono(), why, whylen);
  take_superseded(gw, &sup);
  pthread_mutex_unlock(&gw->lock);
  say_superseded(gw, &sup);
  if (res == BM_REQ_OK)
    wake(gw);
  return res;
}

int bm_gateway_interlock(bm_gateway_t *gw, const int *relays, int n)
{
  return bm_relay_table_interlock(gw->table, relays, n);
}

void bm_gateway_stop(bm_gateway_t *gw)
{
  atomic_store(&gw->stop, true);
  wake_now(gw); /* at once: a pending wake-up may already be served */
}

size_t bm_gateway_snapshot(bm_gateway_t *gw, size_t first,
                           struct bm_relay_view *views, size_t n,
                           struct bm_relay_stats *stats, bool *ready)
{
  size_t size;

  pthread_mutex_lock(&gw->lock);
  size = bm_relay_table_size(gw->table);
  n = first >= size ? 0 : n > size - first ? size - first : n;
  for (size_t i = 0; i < n; i++)
    bm_relay_table_view(gw->table, (int)(first + i), &views[i]);
  if (stats) {
    bm_relay_table_stats(gw->table, stats, true);
    *ready = gw->ready;
  }
  pthread_mutex_unlock(&gw->lock);
  return n;
}

/* ---- the loop ---------------------------------------------------------- */

static void start_connect(bm_gateway_t *gw)
{
  int rc;

  gw->tcp_up = false;

  if (gw->tls && !gw->tls_ready && tls_setup(gw) != 0) {
    gw->reconnect_at = bm_now_mono() + gw->backoff;
    gw->backoff = fmin(gw->backoff * 2, BACKOFF_MAX);
    return;
  }
  if (gw->tls && (!gw->conf.tls_verify_hostname || !gw->conf.tls_verify_peer))
    BM_WARNING("gateway \"%s\": connecting to %s:%d with TLS verification "
               "OFF (%s): anyone on the path can read and forge commands",
               gw->conf.name, gw->conf.host, gw->conf.port,
               !gw->conf.tls_verify_peer ? "TLSVerifyPeer false"
                                         : "TLSVerifyHostname false");
  if (gw->conf.protocol_version == 5) {
    /* libmosquitto sends CONNECT properties (the session expiry that makes
     * a persistent MQTT 5 session outlive a disconnect) only from its
     * blocking connect; it runs in this thread, never in collectd's. */
    mosquitto_property *props = NULL;
    rc = mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                      (uint32_t)gw->conf.session_expiry);
    if (rc == MOSQ_ERR_SUCCESS)
      rc = mosquitto_connect_bind_v5(gw->mosq, gw->conf.host, gw->conf.port,
                                     gw->conf.keepalive, NULL, props);
    mosquitto_property_free_all(&props);
  } else {
    rc = mosquitto_connect_async(gw->mosq, gw->conf.host, gw->conf.port,
                                 gw->conf.keepalive);
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    BM_WARNING("gateway \"%s\": cannot connect to %s:%d: %s; retrying in %g s",
               gw->conf.name, gw->conf.host, gw->conf.port,
               rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc),
               gw->backoff);
    gw->reconnect_at = bm_now_mono() + gw->backoff;
    gw->backoff = fmin(gw->backoff * 2, BACKOFF_MAX);
    return;
  }
  gw->session = SESSION_CONNECTING;
}

/* Holds (on) what is written to the broker's socket, or lets it go (off).
 * While held, a crash (the kernel closing the socket of a dead process)
 * resets the connection instead of sending what is held: libmosquitto
 * 2.0 acknowledges a QoS 1 message (PUBACK) before its callback sees it,
 * and the turn's journal write comes after, so an acknowledgement that
 * left with the crash's FIN would tell the broker that a message whose
 * state reached no journal was delivered, and it would never come again.
 * Reset, the broker sends it again to the restarted plugin. (TCP_CORK
 * holds 200 ms at most: a turn whose journal write takes longer gives its
 * acknowledgements away early.) Off: sent at once, and a close is a
 * normal one again (a DISCONNECT is never thrown away). */
static void hold(int sock, int on)
{
  struct linger lg = {.l_onoff = on, .l_linger = 0};

  if (sock < 0)
    return;
  if (on)
    (void)setsockopt(sock, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  (void)setsockopt(sock, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
  if (!on)
    (void)setsockopt(sock, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* Reads what the socket holds: libmosquitto reads one packet a call at
 * QoS 0, so a burst would otherwise cost a turn of the loop (poll, timers)
 * per message. It returns success also when the socket had nothing more
 * (its read failed with EAGAIN, left in errno): that ends the burst, at
 * the cost of one empty read, where asking the socket (FIONREAD) cost a
 * syscall per packet. An EAGAIN left by a callback only ends a burst
 * early: poll then reports the rest. A bounded number of packets, so that
 * timers and the wake-up counter are seen between bursts; then the events
 * of them all, so that the hooks see a batch.
 *
 * Subscribed at QoS 1 or 2, libmosquitto answers every message at once (PUBACK,
 * PUBREC, PUBCOMP: 4 bytes each, one segment each under TCP_NODELAY), and
 * the broker spends a read on each. The socket is corked for the burst
 * and the turn's commands, so they leave together when it is uncorked
 * right after (bench/README, sixth round: ingest at QoS 1, 4 interleaved
 * A/B rounds, medians 29-33k -> 32-35k messages/s). Only once the CONNACK
 * was read: in its handling libmosquitto writes our SUBSCRIBE and then
 * resends its QoS 2 PUBLISHes in flight, and a broker that refuses QoS 2
 * (Aedes) closes the connection on the PUBLISH; sent in one segment, the
 * SUBSCRIBE was never answered and the session never became ready
 * (qos1_broker.sh). From then on, SUBACK or not (a broker sends the
 * messages it kept for a resumed session right after the CONNACK), held
 * also against a crash before the turn's journal write (see hold). When
 * the connection was lost meanwhile, its descriptor (closed, maybe reused
 * by another plugin) is left alone. */
static int read_packets(bm_gateway_t *gw)
{
  int rc = MOSQ_ERR_SUCCESS;
  int sock = -1;

  for (int i = 0; i < 256; i++) {
    if (sock < 0 && gw->conf.sub_qos > 0 &&
        (gw->session == SESSION_SUBSCRIBING || gw->session == SESSION_READY))
      hold(sock = mosquitto_socket(gw->mosq), 1);
    errno = 0;
    rc = mosquitto_loop_read(gw->mosq, 1);
    if (rc != MOSQ_ERR_SUCCESS || errno == EAGAIN || errno == EWOULDBLOCK)
      break;
  }
  run_events(gw);
  if (sock >= 0 && mosquitto_socket(gw->mosq) == sock)
    hold(sock, 0);
  return rc;
}

void *bm_gateway_run(void *arg)
{
  bm_gateway_t *gw = arg;
  struct pollfd pfd[2];

  assert(gw->mosq); /* bm_gateway_open came first */
  gw->reconnect_at = 0;
  {
    /* Woken by collectd's callbacks (an eventfd write), this thread would
     * take the CPU from the caller at once as an ordinary thread: on 2
     * cores the scheduler often moves it to the caller's CPU, and the
     * callback then waited for this thread's turn (~150 us; its p99 was
     * 190-210 us). SCHED_BATCH keeps the share, not the wake-up
     * preemption: callback p99 31 us, notification -> PUBLISH unchanged
     * (bench/README, cmdpath). Best effort: a sandbox may refuse it. */
    struct sched_param sp = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  }
  while (!atomic_load(&gw->stop)) {
    double now = bm_now_mono(), deadline;
    int sock, timeout_ms, n;

    /* 1. connect */
    if (gw->session == SESSION_IDLE && now >= gw->reconnect_at)
      start_connect(gw);

    /* 2. timers, intents, the token's file and expiry (once a second) */
    if (now - gw->token_checked >= 1.0)
      token_update(gw, false);
    atomic_store(&gw->wake_pending, false); /* see wake() */
    take_asks(gw);
    pthread_mutex_lock(&gw->lock);
    decide_asks(gw, now);
    bm_relay_table_tick(gw->table, now, &gw->events);
    deadline = bm_relay_table_next_deadline(gw->table);
    pthread_mutex_unlock(&gw->lock);
    report_asks(gw);
    run_events(gw);

    /* 3. wait */
    deadline = fmin(deadline, now + 1.0);
    if (gw->session == SESSION_IDLE)
      deadline = fmin(deadline, gw->reconnect_at);
    timeout_ms = deadline <= now ? 0 : (int)ceil((deadline - now) * 1000.0);
    sock = mosquitto_socket(gw->mosq);
    pfd[0].fd = gw->wake_fd;
    pfd[0].events = POLLIN;
    pfd[1].fd = sock;
    /* Until the TCP connect of an attempt completes (writable), poll for
     * it: a TLS handshake that could not start does not ask (see 4.). */
    pfd[1].events = POLLIN | (mosquitto_want_write(gw->mosq) ||
                                      (gw->session == SESSION_CONNECTING &&
                                       !gw->tcp_up)
                                  ? POLLOUT
                                  : 0);
    pfd[0].revents = pfd[1].revents = 0;
    /* Between attempts the old socket may linger, hung up: not polled. */
    if (gw->session == SESSION_IDLE)
      sock = -1;
    n = poll(pfd, sock >= 0 ? 2 : 1, timeout_ms);
    if (n < 0 && errno != EINTR) {
      BM_ERROR("gateway \"%s\": poll failed: %s", gw->conf.name,
               strerror(errno));
      struct timespec pause = {0, 100 * 1000 * 1000};
      nanosleep(&pause, NULL);
    }
    if (pfd[0].revents & POLLIN) {
      uint64_t count;
      if (read(gw->wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        BM_ERROR("gateway \"%s\": cannot read the wake-up counter: %s",
                 gw->conf.name, strerror(errno));
    }

    /* 4. MQTT I/O; callbacks run inside these calls */
    if (sock >= 0 && gw->session == SESSION_CONNECTING &&
        (pfd[1].revents & (POLLHUP | POLLERR))) {
      /* A refused or failed TCP connect (libmosquitto's TLS connect would
       * otherwise poll a dead socket until the keepalive). */
      int soerr = 0;
      socklen_t len = sizeof(soerr);
      if (getsockopt(sock, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
      if (soerr || (pfd[1].revents & POLLHUP)) {
        mosquitto_disconnect(gw->mosq);
        session_lost(gw, soerr ? strerror(soerr)
                               : "connection refused or closed by the broker");
        continue;
      }
    }
    if (sock >= 0 && gw->session != SESSION_IDLE) {
      int rc = MOSQ_ERR_SUCCESS;
      /* The first writable of an attempt is its TCP connect completing,
       * under a TLS handshake that may not have started (SSL_connect met
       * the pending connect): only mosquitto_loop_read carries it on
       * (mosquitto_loop_write waits for it, and libmosquitto may not even
       * ask for writable), so it is a cue to read. Without a handshake
       * pending the read finds nothing (EAGAIN). A connect slower than
       * loopback's (a remote broker) otherwise stalled until the
       * keepalive, the ClientHello never sent, polling at full CPU. */
      bool writable_connecting = gw->session == SESSION_CONNECTING &&
                                 (pfd[1].revents & POLLOUT);
      if (writable_connecting)
        gw->tcp_up = true;
      if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))
        rc = read_packets(gw);
      else if (writable_connecting)
        rc = mosquitto_loop_read(gw->mosq, 1);
      if (rc == MOSQ_ERR_SUCCESS && (pfd[1].revents & POLLOUT))
        rc = mosquitto_loop_write(gw->mosq, 1);
      if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_misc(gw->mosq);
      if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(gw->mosq) < 0) {
        char why[96];
        session_lost(gw, lost_why(gw, rc, why, sizeof(why)));
      }
    }
  }

  /* Leave cleanly: DISCONNECT, so the broker keeps our session. */
  if (gw->session != SESSION_IDLE) {
    gw->own_disconnect = true;
    mosquitto_disconnect(gw->mosq);
    mosquitto_loop_write(gw->mosq, 1);
    gw->own_disconnect = false;
  }
  return NULL;
}
