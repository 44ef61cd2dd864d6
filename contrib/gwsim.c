/*
 * gwsim.c - bimetri-gwsim, a field gateway for tests and demos that can be
 * told to misbehave.
 *
 * It speaks the gateway's side of the setExtDO API (see src/message.h and
 * the protocol text): it subscribes to the command topic at QoS 2, answers
 * each commandMessage with a commandResponse on
 * application/third-party/<AppName>/<InstanceId> and, when the command was
 * accepted, later with an extDOStateChanged notification carrying the
 * relay's new state.  The codec and the token check are the project's own
 * (message.c, jwt.c): nothing is written twice.
 *
 * Deciding the answer, in order (the first that applies wins):
 *
 *   payload is no valid commandMessage   failed, the decode error as reason,
 *                                        when appId and correlationId can
 *                                        still be read; else dropped
 *   appId is not "App.Inst"              dropped (no topic to answer on)
 *   brand empty                          failed "Invalid brand"
 *   command is not setExtDO              failed "Unknown command"
 *   --result RESULT                      RESULT (the checks below skipped)
 *   --secret-file, bad or expired token  unauthorized
 *   --deny RESOURCEID                    not_send
 *   output outside 1..--outputs          failed "Invalid output"
 *   otherwise                            sent, then the notification
 *
 * A sent command switches the simulated relay at once; the notification
 * reports that state --delay ms later.  Other results change nothing and
 * are never followed by a notification.
 *
 * Publications go through one time-ordered queue (due time, then order of
 * insertion), drained by the main loop between mosquitto_loop() calls and
 * only while the session is up.  Every misbehaviour is a property of a
 * queue entry decided when it is queued, so it is deterministic:
 *
 *   time t (command arrives), d = --delay
 *   normal       garbage(t) response(t) notification(t+d)
 *   --reorder    notification(t+d) garbage(t+d) response(t+d)
 *   --duplicate  each response and notification entry is published twice
 *                in a row (garbage is not)
 *   --drop-*     the entry is marked dropped: logged when due, never sent;
 *                a dropped response takes its garbage with it
 *   --unsolicited MS: every MS a relay flips and a notification without
 *                correlationId is queued at once (drops and duplicates
 *                apply to it like to any notification)
 *
 * The event log (--log) has one line per event, flushed at once:
 *
 *   cmd corr=<id> res=<r> out=<o> status=<s> token=<fingerprint>
 *   resp corr=<id> result=<result>
 *   notif corr=<id|-> res=<r> out=<o> status=<s>
 *   garbage corr=<id> kind=<text|unknown-type>
 *   drop resp corr=<id>
 *   drop notif corr=<id|->
 *   bad <reason>
 *
 * "cmd" lines of commands other than setExtDO show "-" for res, out and
 * status.  Ids are logged with control characters, spaces and '=' replaced
 * by '?', so each line splits on spaces.  A token appears only as its
 * fingerprint; the secret never appears.
 *
 * Exit status: 0 after --exit-after, SIGTERM or SIGINT; 1 on a runtime
 * error (unreadable secret, log write failure, broker refusing us); 2 on a
 * usage error.
 */
#include "jwt.h"
#include "message.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <yajl/yajl_tree.h>

#define PROG "bimetri-gwsim"

#define MAX_DENY 256        /* --deny entries */
#define MAX_RELAYS 1024     /* simulated relays */
#define QUEUE_MAX 1024      /* pending publications */
#define SECRET_MAX 4096     /* bytes of --secret-file */
#define TOPIC_SIZE 256
#define PAYLOAD_SIZE 4096   /* an encoded response or notification */
#define LINE_SIZE 1024      /* one log line */
#define LOOP_MS 10          /* mosquitto_loop timeout */
#define RECONNECT_MS 1000   /* delay before each reconnect attempt */
#define KEEPALIVE_S 30

#define REPLY_PREFIX "application/third-party/"
#define MODEL "BMM620"
#define NETWORK_ID "26:AA:E0:23:23:5E"
#define USER_NAME "Flexywatt User"
#define LOCAL_USER_NAME "Local Operator" /* who flips relays unsolicited */

#define REASON_SENT "Command Queued"
#define REASON_NOT_SEND "The user does not have access rights to the resource!"
#define REASON_UNAUTHORIZED "Invalid or expired token"
#define REASON_OUTPUT "Invalid output"
#define REASON_COMMAND "Unknown command"
#define REASON_BRAND "Invalid brand"
#define REASON_FULL "Simulator relay table full"
#define REASON_FAILED "Command failed"
#define REASON_NO_ACK "Command sent, no acknowledgement from the device"

#define GARBAGE_TEXT "this is not JSON {{{"
#define GARBAGE_UNKNOWN_TYPE                                                   \
  "{\"messageType\":\"gatewayHeartbeat\",\"uptime\":86400}"

struct relay {
  int64_t resource_id;
  int output;
  int status;
};

enum pub_kind { PUB_RESPONSE, PUB_NOTIFICATION, PUB_GARBAGE };

/* One pending publication.  The queue owns payload. */
struct pub {
  uint64_t due_ms;
  enum pub_kind kind;
  int copies;   /* 1, or 2 with --duplicate */
  bool dropped; /* --drop-*: logged when due, never published */
  char topic[TOPIC_SIZE];
  char *payload;
  char corr[BM_MSG_ID_SIZE]; /* "" for an unsolicited notification */
  const char *detail;        /* result name, or garbage kind */
  struct bm_ext_do state;    /* PUB_NOTIFICATION */
};

struct options {
  const char *host;
  int port;
  const char *user;
  const char *password;
  const char *command_topic;
  const char *secret_file;
  int64_t deny[MAX_DENY];
  size_t n_deny;
  int outputs;
  long delay_ms;
  int qos;
  long drop_responses;
  long drop_notifications;
  bool duplicate;
  bool reorder;
  bool garbage;
  long unsolicited_ms;
  bool has_unsolicited_relay;
  struct bm_ext_do unsolicited_relay;
  const char *app_id;
  enum bm_result result; /* 0: decide per command */
  bool no_notify;
  const char *log_path;
  bool verbose;
  long exit_after_s;
  long print_token_s;
};

struct sim {
  struct options opt;
  unsigned char secret[SECRET_MAX];
  size_t secret_len;
  bool has_secret;
  struct relay relays[MAX_RELAYS];
  size_t n_relays;
  struct pub *queue; /* QUEUE_MAX entries by due_ms, then insertion */
  size_t n_queue;
  long responses_to_drop;
  long notifications_to_drop;
  char unsolicited_topic[TOPIC_SIZE];
  uint64_t next_unsolicited_ms;
  FILE *log;
  struct mosquitto *mosq;
  bool link_up;  /* a socket to the broker exists */
  bool connected_once; /* mosquitto_reconnect may be used */
  bool retrying; /* in an outage that was already reported */
  bool ready;    /* CONNACK accepted: publications may go */
  uint64_t reconnect_at_ms;
  int fatal;     /* exit status a callback asked for, 0 if none */
  struct bm_msg msg; /* scratch for the decoder (~9 KiB) */
};

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
  stop_signal = sig;
}

static void __attribute__((format(printf, 1, 2))) complain(const char *fmt,
                                                           ...)
{
  va_list ap;

  fputs(PROG ": ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

/* Copies src into dst (capacity cap), where it is known to fit: a literal,
 * or a string from a field no larger than dst.  A longer one is cut. */
static void set_str(char *dst, size_t cap, const char *src)
{
  size_t n = strnlen(src, cap);

  assert(n < cap);
  if (n == cap)
    n--;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static uint64_t now_ms(void)
{
  struct timespec ts;

  /* CLOCK_MONOTONIC cannot fail on Linux with a valid pointer. */
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
    return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ */
/* The event log                                                        */
/* ------------------------------------------------------------------ */

/* Copies an id for a log line: bytes that would break the line's
 * space-separated key=value form become '?'. */
static void log_safe(char *dst, size_t cap, const char *src)
{
  size_t i = 0;

  for (; src[i] != '\0' && i + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = (c <= ' ' || c == 0x7f || c == '=') ? '?' : (char)c;
  }
  dst[i] = '\0';
}

/* Writes one event: the line to --log, and with -v, the time, the line and
 * the human note (may be NULL) to stdout.  A failed write is fatal. */
static void __attribute__((format(printf, 3, 4)))
sim_event(struct sim *s, const char *note, const char *fmt, ...)
{
  char line[LINE_SIZE];
  va_list ap;

  va_start(ap, fmt);
  /* A line longer than LINE_SIZE is cut: ids are at most 127 bytes. */
  (void)vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);

  if (s->log != NULL &&
      (fprintf(s->log, "%s\n", line) < 0 || fflush(s->log) != 0)) {
    complain("cannot write to \"%s\": %s", s->opt.log_path, strerror(errno));
    s->fatal = 1;
  }
  if (s->opt.verbose) {
    struct timespec ts = {0, 0};
    struct tm tm;
    char clock[16] = "--:--:--";

    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
        localtime_r(&ts.tv_sec, &tm) != NULL &&
        strftime(clock, sizeof(clock), "%H:%M:%S", &tm) == 0)
      clock[0] = '\0';
    if (printf("%s.%03ld %s%s%s%s\n", clock, ts.tv_nsec / 1000000L, line,
               note ? "  (" : "", note ? note : "", note ? ")" : "") < 0 ||
        fflush(stdout) != 0) {
      complain("cannot write to stdout: %s", strerror(errno));
      s->fatal = 1;
    }
  }
}

/* ------------------------------------------------------------------ */
/* Relays                                                               */
/* ------------------------------------------------------------------ */

/* The relay (resource_id, output), added with status 0 when new; NULL when
 * the table is full. */
static struct relay *relay_get(struct sim *s, int64_t resource_id, int output)
{
  struct relay *r;

  for (size_t i = 0; i < s->n_relays; i++)
    if (s->relays[i].resource_id == resource_id &&
        s->relays[i].output == output)
      return &s->relays[i];
  if (s->n_relays == MAX_RELAYS)
    return NULL;
  r = &s->relays[s->n_relays++];
  r->resource_id = resource_id;
  r->output = output;
  r->status = 0;
  return r;
}

/* ------------------------------------------------------------------ */
/* The publication queue                                                */
/* ------------------------------------------------------------------ */


static void queue_release(struct sim *s)
{
  for (size_t i = 0; i < s->n_queue; i++)
    free(s->queue[i].payload);
  free(s->queue);
  s->queue = NULL;
  s->n_queue = 0;
}

/* Queues publication p (kind, due_ms, copies, dropped, detail and state
 * set by the caller) of json on topic, after every entry due no later.
 * When the queue is full or memory runs out, the publication is lost and
 * that is reported. */
static void queue_push(struct sim *s, const struct pub *p, const char *topic,
                       const char *corr, const char *json)
{
  char *payload = NULL;
  struct pub *slot;
  size_t i = s->n_queue;

  if (s->n_queue == QUEUE_MAX) {
    complain("publication queue full (%d entries): one for correlationId "
             "\"%s\" is lost",
             QUEUE_MAX, corr);
    return;
  }
  payload = strdup(json);
  if (payload == NULL) {
    complain("out of memory: a publication for correlationId \"%s\" is "
             "lost",
             corr);
    return;
  }
  while (i > 0 && s->queue[i - 1].due_ms > p->due_ms)
    i--;
  memmove(&s->queue[i + 1], &s->queue[i], (s->n_queue - i) * sizeof(*p));
  s->n_queue++;
  slot = &s->queue[i];
  *slot = *p;
  slot->payload = payload;
  /* Topics are at most REPLY_PREFIX and an appId; ids fit by type. */
  set_str(slot->topic, sizeof(slot->topic), topic);
  set_str(slot->corr, sizeof(slot->corr), corr);
}

/* Publishes one entry (or logs its drop). */
static void pub_run(struct sim *s, const struct pub *p)
{
  char corr[BM_MSG_ID_SIZE];
  size_t len = strlen(p->payload);

  log_safe(corr, sizeof(corr), p->corr[0] ? p->corr : "-");
  if (p->dropped) {
    sim_event(s, "dropped on purpose", "drop %s corr=%s",
              p->kind == PUB_RESPONSE ? "resp" : "notif", corr);
    return;
  }
  for (int copy = 0; copy < p->copies; copy++) {
    int rc = mosquitto_publish(s->mosq, NULL, p->topic, (int)len, p->payload,
                               s->opt.qos, false);
    if (rc != MOSQ_ERR_SUCCESS) {
      complain("cannot publish to \"%s\": %s", p->topic,
               mosquitto_strerror(rc));
      continue;
    }
    switch (p->kind) {
    case PUB_RESPONSE:
      sim_event(s, copy ? "duplicate" : NULL, "resp corr=%s result=%s", corr,
                p->detail);
      break;
    case PUB_NOTIFICATION:
      sim_event(s,
                copy ? "duplicate" : (p->corr[0] ? NULL : "unsolicited"),
                "notif corr=%s res=%" PRId64 " out=%d status=%d", corr,
                p->state.resource_id, p->state.output, p->state.status);
      break;
    case PUB_GARBAGE:
      sim_event(s, NULL, "garbage corr=%s kind=%s", corr, p->detail);
      break;
    }
  }
}

/* Publishes every entry due by now. */
static void queue_run(struct sim *s, uint64_t now)
{
  while (s->n_queue > 0 && s->queue[0].due_ms <= now && s->ready &&
         !s->fatal) {
    struct pub p = s->queue[0];

    s->n_queue--;
    memmove(&s->queue[0], &s->queue[1], s->n_queue * sizeof(p));
    pub_run(s, &p);
    free(p.payload);
  }
}

/* ------------------------------------------------------------------ */
/* Building answers                                                     */
/* ------------------------------------------------------------------ */

/* Queues the garbage of --garbage for one response. */
static void queue_garbage(struct sim *s, uint64_t due, const char *topic,
                          const char *corr)
{
  struct pub p = {.kind = PUB_GARBAGE, .due_ms = due, .copies = 1};

  p.detail = "text";
  queue_push(s, &p, topic, corr, GARBAGE_TEXT);
  p.detail = "unknown-type";
  queue_push(s, &p, topic, corr, GARBAGE_UNKNOWN_TYPE);
}

/* Queues a response r on topic at due, with the garbage, drop and
 * duplicate switches applied. */
static void queue_response(struct sim *s, uint64_t due, const char *topic,
                           const struct bm_response *r)
{
  char json[PAYLOAD_SIZE];
  struct pub p = {.kind = PUB_RESPONSE, .due_ms = due};

  if (bm_msg_encode_response(r, json, sizeof(json)) < 0) {
    complain("cannot encode the response to \"%s\"", r->correlation_id);
    return;
  }
  p.detail = bm_result_name(r->result);
  p.copies = s->opt.duplicate ? 2 : 1;
  if (s->responses_to_drop > 0) {
    s->responses_to_drop--;
    p.dropped = true;
  }
  if (s->opt.garbage && !p.dropped)
    queue_garbage(s, due, topic, r->correlation_id);
  queue_push(s, &p, topic, r->correlation_id, json);
}

/* Queues notification n on topic at due, drops and duplicates applied. */
static void queue_notification(struct sim *s, uint64_t due, const char *topic,
                               const struct bm_notification *n)
{
  char json[PAYLOAD_SIZE];
  struct pub p = {.kind = PUB_NOTIFICATION, .due_ms = due};

  if (bm_msg_encode_notification(n, json, sizeof(json)) < 0) {
    complain("cannot encode a notification");
    return;
  }
  p.state = n->state;
  p.copies = s->opt.duplicate ? 2 : 1;
  if (s->notifications_to_drop > 0) {
    s->notifications_to_drop--;
    p.dropped = true;
  }
  queue_push(s, &p, topic, n->has_correlation_id ? n->correlation_id : "",
             json);
}

/* The notification that follows a sent command. */
static void make_notification(const struct bm_command *c,
                              const struct relay *relay,
                              struct bm_notification *n)
{
  memset(n, 0, sizeof(*n));
  memcpy(n->app_id, c->app_id, sizeof(n->app_id));
  n->has_correlation_id = true;
  memcpy(n->correlation_id, c->correlation_id, sizeof(n->correlation_id));
  set_str(n->command, sizeof(n->command), "setExtDO");
  set_str(n->notification_type, sizeof(n->notification_type),
          "extDOStateChanged");
  set_str(n->user_name, sizeof(n->user_name), USER_NAME);
  n->has_user_id = true;
  n->user_id = c->user_id;
  n->has_state = true;
  n->state.resource_id = relay->resource_id;
  n->state.output = relay->output;
  n->state.status = relay->status;
  memcpy(n->brand, c->brand, sizeof(n->brand));
  set_str(n->model, sizeof(n->model), MODEL);
  set_str(n->network_id, sizeof(n->network_id), NETWORK_ID);
  n->has_organization_id = true;
  n->organization_id = c->organization_id;
}

/* Writes the reply topic of app_id into topic.  Returns 0, or -1 with *why
 * set when app_id is not "AppName.InstanceId" (exactly one '.', neither
 * part empty, no MQTT wildcard or level separator). */
static int reply_topic(const char *app_id, char *topic, size_t cap,
                       const char **why)
{
  const char *dot = strchr(app_id, '.');
  int n;

  if (dot == NULL || strchr(dot + 1, '.') != NULL) {
    *why = "needs exactly one '.'";
    return -1;
  }
  if (dot == app_id || dot[1] == '\0') {
    *why = "has an empty part";
    return -1;
  }
  if (strpbrk(app_id, "/+#") != NULL) {
    *why = "contains '/', '+' or '#'";
    return -1;
  }
  n = snprintf(topic, cap, REPLY_PREFIX "%.*s/%s", (int)(dot - app_id),
               app_id, dot + 1);
  if (n < 0 || (size_t)n >= cap) {
    *why = "is too long";
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Handling a command                                                   */
/* ------------------------------------------------------------------ */

/* Reads appId and correlationId out of a payload that is no valid
 * commandMessage, so the error can still be answered.  Returns 0 when both
 * are strings that fit (correlationId not empty). */
static int salvage_ids(const void *payload, size_t len, char *app_id,
                       char *corr)
{
  const char *app_path[] = {"appId", NULL}; /* yajl wants non-const */
  const char *corr_path[] = {"correlationId", NULL};
  char *text = NULL;
  yajl_val top = NULL, a, c;
  int status = -1;

  if (len == 0 || len > BM_MSG_MAX_SIZE || memchr(payload, '\0', len))
    goto cleanup;
  text = malloc(len + 1);
  if (text == NULL)
    goto cleanup;
  memcpy(text, payload, len);
  text[len] = '\0';
  top = yajl_tree_parse(text, NULL, 0);
  a = yajl_tree_get(top, app_path, yajl_t_string);
  c = yajl_tree_get(top, corr_path, yajl_t_string);
  if (!YAJL_IS_OBJECT(top) || a == NULL || c == NULL ||
      strlen(a->u.string) >= BM_MSG_ID_SIZE ||
      strlen(c->u.string) >= BM_MSG_ID_SIZE || c->u.string[0] == '\0')
    goto cleanup;
  memcpy(app_id, a->u.string, strlen(a->u.string) + 1);
  memcpy(corr, c->u.string, strlen(c->u.string) + 1);
  status = 0;
cleanup:
  yajl_tree_free(top);
  free(text);
  return status;
}

/* A payload that is no valid commandMessage: logged, and answered failed
 * when it says where to. */
static void handle_undecodable(struct sim *s, const void *payload, size_t len,
                               const char *err, uint64_t now)
{
  char app_id[BM_MSG_ID_SIZE], topic[TOPIC_SIZE];
  struct bm_response r;
  const char *why = NULL;

  sim_event(s, NULL, "bad %s", err);
  memset(&r, 0, sizeof(r));
  if (salvage_ids(payload, len, app_id, r.correlation_id) != 0)
    return; /* nobody to answer */
  if (reply_topic(app_id, topic, sizeof(topic), &why) != 0) {
    log_safe(app_id, sizeof(app_id), app_id);
    sim_event(s, NULL, "bad appId \"%s\" %s: not answered", app_id, why);
    return;
  }
  r.result = BM_RESULT_FAILED;
  set_str(r.reason, sizeof(r.reason), err);
  queue_response(s, now, topic, &r);
}

/* 0 when the token is signed with the secret and within exp/nbf; else -1
 * with the reason in why. */
static int token_check(struct sim *s, const char *token, char *why,
                       size_t cap)
{
  struct bm_jwt_claims claims;
  time_t wall = time(NULL);

  if (bm_jwt_verify_hs256(token, s->secret, s->secret_len, why, cap) != 0 ||
      bm_jwt_decode(token, &claims, why, cap) != 0)
    return -1;
  if (claims.has_exp && claims.exp <= (int64_t)wall) {
    (void)snprintf(why, cap, "expired %" PRId64 " s ago",
             (int64_t)wall - claims.exp);
    return -1;
  }
  if (claims.has_nbf && claims.nbf > (int64_t)wall) {
    (void)snprintf(why, cap, "not valid for another %" PRId64 " s",
             claims.nbf - (int64_t)wall);
    return -1;
  }
  return 0;
}

static bool denied(const struct sim *s, int64_t resource_id)
{
  for (size_t i = 0; i < s->opt.n_deny; i++)
    if (s->opt.deny[i] == resource_id)
      return true;
  return false;
}

/* Fills r with the answer to c (decided as in the design comment) and
 * returns the relay switched, or NULL when nothing was switched. */
static struct relay *decide(struct sim *s, const struct bm_command *c,
                            struct bm_response *r)
{
  char why[256], fp[13];
  enum bm_result result = BM_RESULT_SENT;
  const char *reason = REASON_SENT;
  struct relay *relay = NULL;

  memset(r, 0, sizeof(*r));
  memcpy(r->correlation_id, c->correlation_id, sizeof(r->correlation_id));
  r->has_data = true;
  memcpy(r->data_command, c->command, sizeof(r->data_command));

  if (c->brand[0] == '\0') {
    result = BM_RESULT_FAILED;
    reason = REASON_BRAND;
  } else if (strcmp(c->command, "setExtDO") != 0) {
    result = BM_RESULT_FAILED;
    reason = REASON_COMMAND;
  } else if (s->opt.result != 0) {
    static const char *const forced[] = {
        [BM_RESULT_SENT] = REASON_SENT,
        [BM_RESULT_NOT_SEND] = REASON_NOT_SEND,
        [BM_RESULT_FAILED] = REASON_FAILED,
        [BM_RESULT_SEND_NO_ACK] = REASON_NO_ACK,
        [BM_RESULT_UNAUTHORIZED] = REASON_UNAUTHORIZED,
    };
    result = s->opt.result;
    reason = forced[result];
  } else if (s->has_secret && token_check(s, c->jwt_token, why,
                                          sizeof(why)) != 0) {
    bm_jwt_fingerprint(c->jwt_token, fp);
    sim_event(s, NULL, "bad token=%s: %s", fp, why);
    result = BM_RESULT_UNAUTHORIZED;
    reason = REASON_UNAUTHORIZED;
  } else if (denied(s, c->parameters.resource_id)) {
    result = BM_RESULT_NOT_SEND;
    reason = REASON_NOT_SEND;
  } else if (c->parameters.output < 1 ||
             c->parameters.output > s->opt.outputs) {
    result = BM_RESULT_FAILED;
    reason = REASON_OUTPUT;
  }
  if (result == BM_RESULT_SENT) {
    relay = relay_get(s, c->parameters.resource_id, c->parameters.output);
    if (relay == NULL) {
      result = BM_RESULT_FAILED;
      reason = REASON_FULL;
    } else {
      relay->status = c->parameters.status;
    }
  }

  r->result = result;
  set_str(r->reason, sizeof(r->reason), reason);
  if (strcmp(c->command, "setExtDO") == 0) {
    r->has_resource_id = true;
    r->resource_id = c->parameters.resource_id;
  }
  if (result == BM_RESULT_NOT_SEND) {
    r->has_user_id = true;
    r->user_id = c->user_id;
  } else if (result == BM_RESULT_SENT || result == BM_RESULT_SEND_NO_ACK) {
    memcpy(r->brand, c->brand, sizeof(r->brand));
    set_str(r->model, sizeof(r->model), MODEL);
    set_str(r->network_id, sizeof(r->network_id), NETWORK_ID);
  }
  return relay;
}

static void handle_command(struct sim *s, const void *payload, size_t len)
{
  char err[256], topic[TOPIC_SIZE], fp[13], corr[BM_MSG_ID_SIZE];
  char cmd_name[BM_MSG_STR_SIZE], app_id[BM_MSG_ID_SIZE];
  char note[BM_MSG_STR_SIZE + BM_MSG_ID_SIZE + 8];
  const struct bm_command *c = &s->msg.u.command;
  const char *why = NULL;
  struct bm_response r;
  struct bm_notification n;
  struct relay *relay;
  uint64_t now = now_ms(), notify_at;

  if (bm_msg_decode(payload, len, &s->msg, err, sizeof(err)) != 0) {
    handle_undecodable(s, payload, len, err, now);
    return;
  }
  if (s->msg.type != BM_MSG_COMMAND) {
    handle_undecodable(s, payload, len, "not a commandMessage", now);
    return;
  }

  bm_jwt_fingerprint(c->jwt_token, fp);
  log_safe(corr, sizeof(corr), c->correlation_id);
  log_safe(cmd_name, sizeof(cmd_name), c->command);
  log_safe(app_id, sizeof(app_id), c->app_id);
  (void)snprintf(note, sizeof(note), "%s from %s", cmd_name, app_id);
  if (strcmp(c->command, "setExtDO") == 0)
    sim_event(s, note,
              "cmd corr=%s res=%" PRId64 " out=%d status=%d token=%s", corr,
              c->parameters.resource_id, c->parameters.output,
              c->parameters.status, fp);
  else
    sim_event(s, note, "cmd corr=%s res=- out=- status=- token=%s", corr,
              fp);

  if (reply_topic(c->app_id, topic, sizeof(topic), &why) != 0) {
    sim_event(s, NULL, "bad appId \"%s\" %s: not answered", app_id, why);
    return;
  }

  relay = decide(s, c, &r);
  if (relay == NULL || s->opt.no_notify) {
    queue_response(s, now, topic, &r);
    return;
  }
  make_notification(c, relay, &n);
  notify_at = now + (uint64_t)s->opt.delay_ms;
  if (s->opt.reorder) {
    queue_notification(s, notify_at, topic, &n);
    queue_response(s, notify_at, topic, &r);
  } else {
    queue_response(s, now, topic, &r);
    queue_notification(s, notify_at, topic, &n);
  }
}

/* --unsolicited: flips the relay and queues its notification. */
static void unsolicited_tick(struct sim *s, uint64_t now)
{
  struct bm_notification n;
  struct relay *relay;

  if (s->opt.unsolicited_ms <= 0 || now < s->next_unsolicited_ms)
    return;
  s->next_unsolicited_ms = now + (uint64_t)s->opt.unsolicited_ms;
  relay = relay_get(s, s->opt.unsolicited_relay.resource_id,
                    s->opt.unsolicited_relay.output);
  if (relay == NULL) {
    complain("relay table full: no unsolicited change");
    return;
  }
  relay->status = !relay->status;
  memset(&n, 0, sizeof(n));
  set_str(n.app_id, sizeof(n.app_id), s->opt.app_id);
  set_str(n.command, sizeof(n.command), "setExtDO");
  set_str(n.notification_type, sizeof(n.notification_type),
          "extDOStateChanged");
  set_str(n.user_name, sizeof(n.user_name), LOCAL_USER_NAME);
  n.has_state = true;
  n.state.resource_id = relay->resource_id;
  n.state.output = relay->output;
  n.state.status = relay->status;
  set_str(n.brand, sizeof(n.brand), "Bimetri");
  set_str(n.model, sizeof(n.model), MODEL);
  set_str(n.network_id, sizeof(n.network_id), NETWORK_ID);
  queue_notification(s, now, s->unsolicited_topic, &n);
}

/* ------------------------------------------------------------------ */
/* MQTT                                                                 */
/* ------------------------------------------------------------------ */

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
  struct sim *s = obj;
  int sub;

  if (rc != 0) {
    complain("broker %s:%d refused the connection: %s", s->opt.host,
             s->opt.port, mosquitto_connack_string(rc));
    s->fatal = 1;
    return;
  }
  sub = mosquitto_subscribe(mosq, NULL, s->opt.command_topic, 2);
  if (sub != MOSQ_ERR_SUCCESS) {
    complain("cannot subscribe to \"%s\": %s", s->opt.command_topic,
             mosquitto_strerror(sub));
    s->fatal = 1;
    return;
  }
  s->ready = true;
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid,
                         int qos_count, const int *granted_qos)
{
  struct sim *s = obj;

  if (qos_count < 1 || granted_qos[0] > 2) {
    complain("broker refused the subscription to \"%s\"",
             s->opt.command_topic);
    s->fatal = 1;
    return;
  }
  complain("connected to %s:%d, subscribed to \"%s\" (QoS %d)", s->opt.host,
           s->opt.port, s->opt.command_topic, granted_qos[0]);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
  struct sim *s = obj;

  /* The main loop sees the lost link too, and reports it. */
  s->ready = false;
}

static void on_message(struct mosquitto *mosq, void *obj,
                       const struct mosquitto_message *m)
{
  struct sim *s = obj;

  if (m->payloadlen < 0 || (m->payloadlen > 0 && m->payload == NULL))
    return;
  handle_command(s, m->payload, (size_t)m->payloadlen);
}

/* Opens the link: mosquitto_connect the first time, mosquitto_reconnect
 * after.  On failure schedules the next attempt RECONNECT_MS later; only
 * the first failure of an outage is reported. */
static void session_connect(struct sim *s, uint64_t now)
{
  int rc = s->connected_once
               ? mosquitto_reconnect(s->mosq)
               : mosquitto_connect(s->mosq, s->opt.host, s->opt.port,
                                   KEEPALIVE_S);

  if (rc == MOSQ_ERR_SUCCESS) {
    s->link_up = true;
    s->connected_once = true;
    s->retrying = false;
    return;
  }
  s->link_up = false;
  s->reconnect_at_ms = now + RECONNECT_MS;
  if (!s->retrying)
    complain("cannot connect to %s:%d: %s; retrying every %d ms",
             s->opt.host, s->opt.port,
             rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc),
             RECONNECT_MS);
  s->retrying = true;
}

/* After mosquitto_loop failed: the link is gone, reconnect later. */
static void session_lost(struct sim *s, int rc, uint64_t now)
{
  if (!s->fatal && !s->retrying)
    complain("connection to %s:%d lost (%s); reconnecting every %d ms",
             s->opt.host, s->opt.port,
             rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc),
             RECONNECT_MS);
  s->link_up = false;
  s->ready = false;
  s->retrying = true;
  s->reconnect_at_ms = now + RECONNECT_MS;
}

/* The main loop: MQTT I/O, timers and the queue until a signal,
 * --exit-after or a fatal error. */
static void run(struct sim *s)
{
  uint64_t start = now_ms();
  uint64_t deadline = s->opt.exit_after_s > 0
                          ? start + (uint64_t)s->opt.exit_after_s * 1000u
                          : 0;

  s->next_unsolicited_ms = start + (uint64_t)s->opt.unsolicited_ms;
  session_connect(s, start);
  while (!stop_signal && !s->fatal) {
    uint64_t now = now_ms();
    struct timespec nap = {0, LOOP_MS * 1000000L};

    if (deadline != 0 && now >= deadline)
      break;
    if (s->link_up) {
      int rc = mosquitto_loop(s->mosq, LOOP_MS, 1);
      if (rc != MOSQ_ERR_SUCCESS)
        session_lost(s, rc, now);
    } else if (now >= s->reconnect_at_ms) {
      session_connect(s, now);
    } else if (nanosleep(&nap, NULL) != 0 && errno != EINTR) {
      complain("nanosleep: %s", strerror(errno));
      s->fatal = 1;
    }
    now = now_ms();
    unsolicited_tick(s, now);
    queue_run(s, now);
  }
  if (s->link_up) {
    int rc = mosquitto_disconnect(s->mosq);
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
      complain("disconnect: %s", mosquitto_strerror(rc));
  }
}

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
  fprintf(f,
    "Usage: " PROG " [OPTION]...\n"
    "Simulates the Bimetri field gateway's setExtDO API over MQTT.\n"
    "\n"
    "Broker:\n"
    "  -H, --host HOST            broker address (default 127.0.0.1)\n"
    "  -p, --port PORT            broker port (default 1883)\n"
    "      --user NAME            MQTT user name\n"
    "      --password PASSWORD    MQTT password (needs --user)\n"
    "      --command-topic TOPIC  where commands arrive (default\n"
    "                             resource/commands), subscribed at QoS 2\n"
    "      --qos QOS              QoS of everything published (default 1)\n"
    "\n"
    "The gateway:\n"
    "      --secret-file FILE     check HS256 tokens against this secret\n"
    "                             (one trailing newline stripped); without\n"
    "                             it tokens are not checked\n"
    "      --deny RESOURCEID      answer not_send for this resource\n"
    "                             (repeatable)\n"
    "      --outputs N            outputs per device (default 8): others\n"
    "                             answer failed \"Invalid output\"\n"
    "      --delay MS             notification delay (default 200)\n"
    "      --state RES:OUT=S      initial relay state (repeatable; default 0)\n"
    "      --result RESULT        answer every valid command with RESULT:\n"
    "                             sent, not_send, failed, send_no_ack or\n"
    "                             unauthorized\n"
    "\n"
    "Misbehaviour:\n"
    "      --drop-responses N     drop the first N responses\n"
    "      --drop-notifications N drop the first N notifications\n"
    "      --duplicate            publish every response and notification\n"
    "                             twice\n"
    "      --reorder              publish the notification before the\n"
    "                             response\n"
    "      --garbage              publish a non-JSON payload and an unknown\n"
    "                             messageType before each response\n"
    "      --no-notify            never publish notifications\n"
    "      --unsolicited MS       every MS, flip a relay and notify without\n"
    "                             correlationId (needs --app-id)\n"
    "      --unsolicited-relay RES:OUT\n"
    "                             the relay to flip (default the first\n"
    "                             --state, else 101:4)\n"
    "      --app-id APP.INST      appId and topic of unsolicited changes\n"
    "\n"
    "Running:\n"
    "      --log FILE             append one line per event to FILE\n"
    "  -v, --verbose              print the events to stdout\n"
    "      --exit-after SEC       exit cleanly after SEC seconds\n"
    "      --print-token SEC      print an HS256 token signed with\n"
    "                             --secret-file, valid for SEC seconds, and\n"
    "                             exit (no broker needed)\n"
    "  -h, --help                 print this help and exit\n"
    "\n"
    "Exit status: 0 when stopped by --exit-after, SIGTERM or SIGINT; 1 on a\n"
    "runtime error; 2 on a usage error.  See " PROG "(1).\n");
}

/* Parses a whole decimal number in min..max. */
static int parse_long(const char *text, long min, long max, long *out)
{
  char *end = NULL;
  long v;

  if (text[0] != '-' && (text[0] < '0' || text[0] > '9'))
    return -1;
  errno = 0;
  v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Parses a whole decimal resourceId (0 .. 2^53-1) ending at stop. */
static int parse_resource(const char *text, char stop, const char **rest,
                          int64_t *out)
{
  char *end = NULL;
  long long v;

  if (text[0] < '0' || text[0] > '9')
    return -1;
  errno = 0;
  v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != stop || v > BM_MSG_MAX_SAFE_INT)
    return -1;
  *out = v;
  *rest = end;
  return 0;
}

/* "RES:OUT" (want_status false) or "RES:OUT=S". */
static int parse_relay(const char *text, bool want_status,
                       struct bm_ext_do *out)
{
  char buf[64];
  const char *rest = NULL;
  char *eq;
  long output = 0, status = 0;

  if (parse_resource(text, ':', &rest, &out->resource_id) != 0)
    return -1;
  if (snprintf(buf, sizeof(buf), "%s", rest + 1) >= (int)sizeof(buf))
    return -1;
  eq = strchr(buf, '=');
  if ((eq != NULL) != want_status)
    return -1;
  if (eq != NULL) {
    *eq = '\0';
    if (parse_long(eq + 1, 0, 1, &status) != 0)
      return -1;
  }
  if (parse_long(buf, 0, 65535, &output) != 0)
    return -1;
  out->output = (int)output;
  out->status = (int)status;
  return 0;
}

enum {
  OPT_USER = 256,
  OPT_PASSWORD,
  OPT_COMMAND_TOPIC,
  OPT_SECRET_FILE,
  OPT_DENY,
  OPT_OUTPUTS,
  OPT_DELAY,
  OPT_STATE,
  OPT_QOS,
  OPT_DROP_RESPONSES,
  OPT_DROP_NOTIFICATIONS,
  OPT_DUPLICATE,
  OPT_REORDER,
  OPT_GARBAGE,
  OPT_UNSOLICITED,
  OPT_UNSOLICITED_RELAY,
  OPT_APP_ID,
  OPT_RESULT,
  OPT_NO_NOTIFY,
  OPT_LOG,
  OPT_EXIT_AFTER,
  OPT_PRINT_TOKEN,
};

static const struct option long_options[] = {
    {"host", required_argument, NULL, 'H'},
    {"port", required_argument, NULL, 'p'},
    {"user", required_argument, NULL, OPT_USER},
    {"password", required_argument, NULL, OPT_PASSWORD},
    {"command-topic", required_argument, NULL, OPT_COMMAND_TOPIC},
    {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
    {"deny", required_argument, NULL, OPT_DENY},
    {"outputs", required_argument, NULL, OPT_OUTPUTS},
    {"delay", required_argument, NULL, OPT_DELAY},
    {"state", required_argument, NULL, OPT_STATE},
    {"qos", required_argument, NULL, OPT_QOS},
    {"drop-responses", required_argument, NULL, OPT_DROP_RESPONSES},
    {"drop-notifications", required_argument, NULL, OPT_DROP_NOTIFICATIONS},
    {"duplicate", no_argument, NULL, OPT_DUPLICATE},
    {"reorder", no_argument, NULL, OPT_REORDER},
    {"garbage", no_argument, NULL, OPT_GARBAGE},
    {"unsolicited", required_argument, NULL, OPT_UNSOLICITED},
    {"unsolicited-relay", required_argument, NULL, OPT_UNSOLICITED_RELAY},
    {"app-id", required_argument, NULL, OPT_APP_ID},
    {"result", required_argument, NULL, OPT_RESULT},
    {"no-notify", no_argument, NULL, OPT_NO_NOTIFY},
    {"log", required_argument, NULL, OPT_LOG},
    {"verbose", no_argument, NULL, 'v'},
    {"exit-after", required_argument, NULL, OPT_EXIT_AFTER},
    {"print-token", required_argument, NULL, OPT_PRINT_TOKEN},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parses argv into s->opt and s->relays (--state).  Returns 0, 2 after a
 * usage error (reported), or -1 after --help (printed). */
static int parse_options(struct sim *s, int argc, char **argv)
{
  struct options *o = &s->opt;
  struct bm_ext_do relay;
  long v = 0;
  int c;

  o->host = "127.0.0.1";
  o->port = 1883;
  o->command_topic = "resource/commands";
  o->outputs = 8;
  o->delay_ms = 200;
  o->qos = 1;

  while ((c = getopt_long(argc, argv, "H:p:vh", long_options, NULL)) != -1) {
    const char *bad = NULL; /* the option whose argument is wrong */

    switch (c) {
    case 'H': o->host = optarg; break;
    case 'p':
      if (parse_long(optarg, 1, 65535, &v) != 0)
        bad = "--port";
      o->port = (int)v;
      break;
    case OPT_USER: o->user = optarg; break;
    case OPT_PASSWORD: o->password = optarg; break;
    case OPT_COMMAND_TOPIC:
      if (optarg[0] == '\0' || strpbrk(optarg, "+#") != NULL)
        bad = "--command-topic";
      o->command_topic = optarg;
      break;
    case OPT_SECRET_FILE: o->secret_file = optarg; break;
    case OPT_DENY: {
      const char *rest = NULL;
      if (o->n_deny == MAX_DENY) {
        complain("more than %d --deny options", MAX_DENY);
        return 2;
      }
      if (parse_resource(optarg, '\0', &rest, &o->deny[o->n_deny]) != 0)
        bad = "--deny";
      o->n_deny++;
      break;
    }
    case OPT_OUTPUTS:
      if (parse_long(optarg, 1, 65535, &v) != 0)
        bad = "--outputs";
      o->outputs = (int)v;
      break;
    case OPT_DELAY:
      if (parse_long(optarg, 0, 3600000, &o->delay_ms) != 0)
        bad = "--delay";
      break;
    case OPT_STATE:
      if (parse_relay(optarg, true, &relay) != 0) {
        bad = "--state";
      } else {
        struct relay *r = relay_get(s, relay.resource_id, relay.output);
        if (r == NULL) {
          complain("more than %d relays", MAX_RELAYS);
          return 2;
        }
        r->status = relay.status;
      }
      break;
    case OPT_QOS:
      if (parse_long(optarg, 0, 2, &v) != 0)
        bad = "--qos";
      o->qos = (int)v;
      break;
    case OPT_DROP_RESPONSES:
      if (parse_long(optarg, 0, LONG_MAX, &o->drop_responses) != 0)
        bad = "--drop-responses";
      break;
    case OPT_DROP_NOTIFICATIONS:
      if (parse_long(optarg, 0, LONG_MAX, &o->drop_notifications) != 0)
        bad = "--drop-notifications";
      break;
    case OPT_DUPLICATE: o->duplicate = true; break;
    case OPT_REORDER: o->reorder = true; break;
    case OPT_GARBAGE: o->garbage = true; break;
    case OPT_UNSOLICITED:
      if (parse_long(optarg, 1, 86400000, &o->unsolicited_ms) != 0)
        bad = "--unsolicited";
      break;
    case OPT_UNSOLICITED_RELAY:
      if (parse_relay(optarg, false, &o->unsolicited_relay) != 0)
        bad = "--unsolicited-relay";
      o->has_unsolicited_relay = true;
      break;
    case OPT_APP_ID: {
      char topic[TOPIC_SIZE];
      const char *why = NULL;
      if (strlen(optarg) >= BM_MSG_ID_SIZE ||
          reply_topic(optarg, topic, sizeof(topic), &why) != 0)
        bad = "--app-id";
      o->app_id = optarg;
      break;
    }
    case OPT_RESULT:
      o->result = bm_result_parse(optarg);
      if (o->result == 0)
        bad = "--result";
      break;
    case OPT_NO_NOTIFY: o->no_notify = true; break;
    case OPT_LOG: o->log_path = optarg; break;
    case 'v': o->verbose = true; break;
    case OPT_EXIT_AFTER:
      if (parse_long(optarg, 1, 31536000, &o->exit_after_s) != 0)
        bad = "--exit-after";
      break;
    case OPT_PRINT_TOKEN:
      if (parse_long(optarg, 1, 315360000, &o->print_token_s) != 0)
        bad = "--print-token";
      break;
    case 'h':
      usage(stdout);
      return -1;
    default: /* getopt_long said what */
      fprintf(stderr, "Try '" PROG " --help'.\n");
      return 2;
    }
    if (bad != NULL) {
      complain("invalid argument \"%s\" for %s", optarg, bad);
      fprintf(stderr, "Try '" PROG " --help'.\n");
      return 2;
    }
  }

  if (optind < argc) {
    complain("unexpected argument \"%s\"", argv[optind]);
  } else if (o->password != NULL && o->user == NULL) {
    complain("--password needs --user");
  } else if (o->unsolicited_ms > 0 && o->app_id == NULL) {
    complain("--unsolicited needs --app-id");
  } else if (o->unsolicited_ms > 0 && o->no_notify) {
    complain("--unsolicited and --no-notify contradict each other");
  } else if (o->print_token_s > 0 && o->secret_file == NULL) {
    complain("--print-token needs --secret-file");
  } else {
    if (!o->has_unsolicited_relay) {
      o->unsolicited_relay.resource_id =
          s->n_relays > 0 ? s->relays[0].resource_id : 101;
      o->unsolicited_relay.output = s->n_relays > 0 ? s->relays[0].output : 4;
    }
    return 0;
  }
  fprintf(stderr, "Try '" PROG " --help'.\n");
  return 2;
}

/* Reads --secret-file into s->secret.  Returns 0 or -1 (reported). */
static int load_secret(struct sim *s)
{
  FILE *f = NULL;
  size_t n = 0;
  int status = -1;

  f = fopen(s->opt.secret_file, "rb");
  if (f == NULL) {
    complain("cannot open \"%s\": %s", s->opt.secret_file, strerror(errno));
    goto cleanup;
  }
  n = fread(s->secret, 1, sizeof(s->secret), f);
  if (ferror(f)) {
    complain("cannot read \"%s\"", s->opt.secret_file);
    goto cleanup;
  }
  if (n == sizeof(s->secret)) {
    complain("\"%s\" is larger than %d bytes", s->opt.secret_file,
             SECRET_MAX - 1);
    goto cleanup;
  }
  if (n > 0 && s->secret[n - 1] == '\n')
    n--;
  if (n == 0) {
    complain("\"%s\" holds no secret", s->opt.secret_file);
    goto cleanup;
  }
  s->secret_len = n;
  s->has_secret = true;
  status = 0;
cleanup:
  if (f != NULL && fclose(f) != 0 && status == 0) {
    complain("cannot read \"%s\": %s", s->opt.secret_file, strerror(errno));
    status = -1;
  }
  return status;
}

/* --print-token, and the start-up check that the secret can sign. */
static int sign_token(struct sim *s, long lifetime_s, char *out, size_t cap)
{
  char payload[128];
  int64_t wall = (int64_t)time(NULL);
  int n = snprintf(payload, sizeof(payload),
                   "{\"iss\":\"" PROG "\",\"iat\":%" PRId64
                   ",\"exp\":%" PRId64 "}",
                   wall, wall + lifetime_s);

  if (n < 0 || (size_t)n >= sizeof(payload)) {
    complain("cannot build a token payload");
    return -1;
  }
  if (bm_jwt_sign_hs256(payload, s->secret, s->secret_len, out, cap) < 0) {
    complain("cannot sign an HS256 token with the %zu-byte secret in \"%s\" "
             "(too short?)",
             s->secret_len, s->opt.secret_file);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Start and end                                                        */
/* ------------------------------------------------------------------ */

static int install_signals(void)
{
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop_signal;
  if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
      sigaction(SIGINT, &sa, NULL) != 0)
    return -1;
  sa.sa_handler = SIG_IGN;
  return sigaction(SIGPIPE, &sa, NULL);
}

/* Everything the loop needs: log, queue, MQTT client. */
static int sim_open(struct sim *s)
{
  if (s->opt.log_path != NULL) {
    s->log = fopen(s->opt.log_path, "a");
    if (s->log == NULL) {
      complain("cannot open \"%s\": %s", s->opt.log_path, strerror(errno));
      return -1;
    }
  }
  s->queue = calloc(QUEUE_MAX, sizeof(*s->queue));
  if (s->queue == NULL) {
    complain("out of memory");
    return -1;
  }
  if (s->opt.app_id != NULL) {
    const char *why = NULL;
    if (reply_topic(s->opt.app_id, s->unsolicited_topic,
                    sizeof(s->unsolicited_topic), &why) != 0)
      return -1; /* checked by parse_options */
  }
  s->responses_to_drop = s->opt.drop_responses;
  s->notifications_to_drop = s->opt.drop_notifications;

  s->mosq = mosquitto_new(NULL, true, s);
  if (s->mosq == NULL) {
    complain("cannot create an MQTT client: %s", strerror(errno));
    return -1;
  }
  /* Answers leave at once, as a gateway's should (no Nagle delay). */
  if (mosquitto_int_option(s->mosq, MOSQ_OPT_TCP_NODELAY, 1) !=
      MOSQ_ERR_SUCCESS) {
    complain("cannot set TCP_NODELAY");
    return -1;
  }
  if (s->opt.user != NULL) {
    int rc = mosquitto_username_pw_set(s->mosq, s->opt.user, s->opt.password);
    if (rc != MOSQ_ERR_SUCCESS) {
      complain("cannot set the MQTT credentials: %s", mosquitto_strerror(rc));
      return -1;
    }
  }
  mosquitto_connect_callback_set(s->mosq, on_connect);
  mosquitto_subscribe_callback_set(s->mosq, on_subscribe);
  mosquitto_disconnect_callback_set(s->mosq, on_disconnect);
  mosquitto_message_callback_set(s->mosq, on_message);
  return 0;
}

static void sim_close(struct sim *s)
{
  if (s->mosq != NULL)
    mosquitto_destroy(s->mosq);
  s->mosq = NULL;
  queue_release(s);
  if (s->log != NULL && fclose(s->log) != 0) {
    complain("cannot write to \"%s\": %s", s->opt.log_path, strerror(errno));
    s->fatal = 1;
  }
  s->log = NULL;
  explicit_bzero(s->secret, sizeof(s->secret));
}

int main(int argc, char **argv)
{
  struct sim *s = calloc(1, sizeof(struct sim));
  char token[BM_JWT_MAX_SIZE];
  bool lib = false;
  int status = 1;
  int rc;

  if (s == NULL) {
    complain("out of memory");
    return 1;
  }
  rc = parse_options(s, argc, argv);
  if (rc != 0) {
    status = rc < 0 ? 0 : rc;
    goto cleanup;
  }
  if (s->opt.secret_file != NULL &&
      (load_secret(s) != 0 ||
       sign_token(s, s->opt.print_token_s > 0 ? s->opt.print_token_s : 60,
                  token, sizeof(token)) != 0))
    goto cleanup;
  if (s->opt.print_token_s > 0) {
    if (printf("%s\n", token) < 0 || fflush(stdout) != 0) {
      complain("cannot write the token: %s", strerror(errno));
      goto cleanup;
    }
    status = 0;
    goto cleanup;
  }
  if (install_signals() != 0) {
    complain("cannot install signal handlers: %s", strerror(errno));
    goto cleanup;
  }
  rc = mosquitto_lib_init();
  if (rc != MOSQ_ERR_SUCCESS) {
    complain("cannot initialise libmosquitto: %s", mosquitto_strerror(rc));
    goto cleanup;
  }
  lib = true;
  if (sim_open(s) != 0)
    goto cleanup;

  run(s);
  status = s->fatal;

cleanup:
  explicit_bzero(token, sizeof(token));
  sim_close(s);
  if (s->fatal)
    status = 1;
  if (lib)
    mosquitto_lib_cleanup();
  free(s);
  return status;
}
