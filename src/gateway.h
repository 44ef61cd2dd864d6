/*
 * gateway.h - one field gateway: its MQTT session and its relays.
 *
 * A gateway owns a libmosquitto client and a relay table (relay.h).  Its
 * thread (the host creates it and calls bm_gateway_run) runs the session
 * with an external poll loop, so it can be woken at once:
 *
 *   connect (clean session off, stable ClientId) -> CONNACK
 *     -> SUBSCRIBE application/third-party/<AppName>/<InstanceId>
 *     -> SUBACK: ready; the table may publish
 *   lost -> reconnect after a backoff of 1 s doubling to 60 s
 *
 * Any thread may call bm_gateway_request: it records the intent under the
 * gateway's mutex and wakes the thread through an eventfd; it never touches
 * the network or the disk.  bm_gateway_ask does the same without waiting
 * for that mutex: the thread takes the ask from a mailbox at its next turn.
 * Everything else (publishing commands, applying
 * answers, timers) happens in the gateway thread, which releases the mutex
 * before it hands events to the host's hooks, so a hook may call
 * bm_gateway_request on any gateway.
 *
 * Journal (journal.h): every command's record is appended, and with
 * JournalSync fsync'd once for all the commands of one loop turn (group
 * commit), before any of them is published; answers, timeouts and
 * give-ups are appended as they happen.  A command whose record cannot be
 * made durable is not published: it fails loudly.  Past its size limit the
 * journal is compacted to a snapshot of the relay table, copied under the
 * mutex and written without it.
 *
 * Incoming messages are accepted only on the subscribed topic, at most
 * BM_MSG_MAX_SIZE bytes, with a notification's appId equal to ours; the rest
 * is counted as malformed and logged at most once per 10 s per gateway.
 */
#ifndef BM_GATEWAY_H
#define BM_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

#include "journal.h"
#include "relay.h"
#include "token.h"

#define BM_GW_NAME_SIZE 64
#define BM_GW_STR_SIZE 256
#define BM_GW_PATH_SIZE 4096

/* Settings of one <Gateway> block, validated by the caller. */
struct bm_gateway_conf {
  char name[BM_GW_NAME_SIZE];
  char host[BM_GW_STR_SIZE];
  int port;
  char client_id[BM_GW_STR_SIZE];
  char user[BM_GW_STR_SIZE];     /* "" for none */
  char password[BM_GW_STR_SIZE];
  int keepalive;                 /* seconds */
  char app_name[BM_GW_NAME_SIZE];
  char instance_id[BM_GW_NAME_SIZE];
  char brand[BM_GW_STR_SIZE];
  int64_t user_id;
  int64_t organization_id;
  struct bm_token_conf token;    /* TokenFile, <Token> or TokenCommand */
  int64_t token_leeway;          /* s of clock difference allowed */
  double token_warn;             /* s before exp: WARNING */
  /* TLS: any of ca_file, ca_path, tls_system_cas turns it on. */
  char ca_file[BM_GW_PATH_SIZE];
  char ca_path[BM_GW_PATH_SIZE];
  bool tls_system_cas;
  char cert_file[BM_GW_PATH_SIZE];
  char key_file[BM_GW_PATH_SIZE];
  char key_password[BM_GW_STR_SIZE];
  char tls_version[16];          /* "" for libmosquitto's default */
  char ciphers[BM_GW_STR_SIZE];
  bool tls_verify_hostname;
  bool tls_verify_peer;
  char command_topic[BM_GW_STR_SIZE];
  int qos;                       /* 0, 1 or 2: of the commands */
  int sub_qos;                   /* 0, 1 or 2: of the subscription; -1
                                    unset (bm_gateway_sub_qos) */
  int protocol_version;          /* 3 (3.1), 4 (3.1.1) or 5 */
  int session_expiry;            /* s, MQTT 5: how long the broker keeps
                                    our session after a disconnect */
  struct bm_relay_policy policy;
  char journal_file[BM_GW_PATH_SIZE]; /* "" for none (tests of the core) */
  enum bm_journal_sync_mode journal_sync; /* ALWAYS: fsync commands before
                                    they leave; FULL: every turn's records
                                    before its acknowledgements leave */
  uint64_t journal_limit;        /* bytes before a compaction */
};

/* The subscription's QoS: SubscribeQoS, by default 1 (or QoS when that is
 * 0). Of what comes in, QoS 1 is the level a crash loses nothing at:
 * libmosquitto takes a QoS 2 message over only at the broker's PUBREL, a
 * turn after it acknowledged it (docs/journal.md). */
static inline int bm_gateway_sub_qos(const struct bm_gateway_conf *c)
{
  if (c->sub_qos >= 0)
    return c->sub_qos;
  return c->qos < 1 ? c->qos : 1;
}

/* Called from the gateway thread, without the gateway's mutex held. */
/* A request handed to the gateway thread without waiting for it: see
 * bm_gateway_ask. */
struct bm_gateway_ask {
  int relay, status;                    /* as bm_gateway_request's */
  bool require_known;                   /* the same (without limits) */
  const struct bm_relay_limits *limits; /* not NULL: a switching rule's
                                           (see bm_gateway_ask); must
                                           outlive the gateway */
  char origin[BM_ORIGIN_SIZE];
  int kind;                             /* the host's, handed back */
  const void *tag;                      /* the same */
  bool no_wait; /* the caller must not wait for room: see bm_gateway_ask */
};

struct bm_gateway_hooks {
  /* Every event after it was carried out (PUBLISH after the publish). */
  void (*event)(void *ctx, const char *gateway, const struct bm_event *ev);
  /* The session became ready (subscribed) or was lost. */
  void (*connection)(void *ctx, const char *gateway, bool up);
  /* The token's state changed: OKAY, WARNING (expires within TokenWarn),
   * FAILURE (expired).  The message names the token by its fingerprint. */
  void (*token)(void *ctx, const char *gateway, enum bm_severity severity,
                const char *message);
  /* After a batch of events (those of one read from the broker, say):
   * where a consumer that queues them wakes whoever takes them. */
  void (*events_done)(void *ctx);
  /* What became of a bm_gateway_ask (its copy, with the decision and the
   * reason of a refusal or hold), in the gateway thread, no lock held. */
  void (*asked)(void *ctx, const char *gateway,
                const struct bm_gateway_ask *ask, enum bm_request rc,
                const char *why);
  void *ctx;
};

struct bm_gateway;
typedef struct bm_gateway bm_gateway_t;

/* Sets up libmosquitto once per process; call before the first
 * bm_gateway_new and bm_gateway_library_cleanup after the last free. */
int bm_gateway_library_init(void);
void bm_gateway_library_cleanup(void);

/* Creates a gateway from conf (copied) and gets its first token; no network
 * yet (see bm_gateway_open).  Returns NULL with a reason in err (no token:
 * an unreadable or empty file, a bad key, a failing command; out of
 * memory). */
bm_gateway_t *bm_gateway_new(const struct bm_gateway_conf *conf,
                             const struct bm_gateway_hooks *hooks, char *err,
                             size_t errlen);
/* Opens the journal (replaying it into the relay table: confirmed states,
 * sequences, commands still in flight) and creates the MQTT client, with
 * default_client_id when the configuration named none (the host's name is
 * known only once the host has started).  Call once before the thread
 * starts.  Returns 0, or -1 with err set. */
int bm_gateway_open(bm_gateway_t *gw, const char *default_client_id,
                    char *err, size_t errlen);
/* Frees a gateway whose thread has returned (or never ran).  NULL: no-op. */
void bm_gateway_free(bm_gateway_t *gw);

/* Adds a relay before the thread starts.  Returns its index, or -1 (name or
 * address taken, out of memory). */
int bm_gateway_add_relay(bm_gateway_t *gw, const char *name,
                         int64_t resource_id, int output);
/* Index of a relay by name, or -1.  Safe from any thread once running. */
int bm_gateway_find_relay(const bm_gateway_t *gw, const char *name);
const char *bm_gateway_name(const bm_gateway_t *gw);
/* Why libmosquitto ended a connection (rc: of its calls, or of its
 * disconnect callback; not 0), in words: its own texts lack some codes
 * ("Unknown error." for its keepalive check, which also bounds a connect
 * still waiting for its CONNACK: connecting). Built in buf when needed. */
const char *bm_mqtt_lost_why(int rc, bool connecting, int keepalive,
                             char *buf, size_t len);
/* Name of a relay (owned by the gateway; relays never change once the
 * thread runs, so no lock is needed). */
const char *bm_gateway_relay_name(const bm_gateway_t *gw, int relay);
size_t bm_gateway_relay_count(const bm_gateway_t *gw);

/* Handles one message from the broker: the MQTT callback's whole work
 * (topic check, size limit, decode, validation, apply, events).  Gateway
 * thread only; the fuzzer drives it directly. */
void bm_gateway_receive(bm_gateway_t *gw, const char *topic,
                        const void *payload, size_t len);

/* The thread body: runs the session until bm_gateway_stop.  Returns NULL. */
void *bm_gateway_run(void *gw);
/* Asks the thread to disconnect and return; does not wait. */
void bm_gateway_stop(bm_gateway_t *gw);

/* Records that `relay` should be at `status` (0/1) because of `origin`
 * (relay.h's bm_relay_table_request: a manual override, an interlock and,
 * with require_known, an unknown state refuse it: the threshold plugin's
 * start-up OKAY must not switch a relay nobody knows the state of), and
 * wakes the thread when that may publish.  Thread-safe, never blocks on
 * I/O.  why (may be NULL) gets the reason of a refusal.  A bad relay index
 * or status gives BM_REQ_SAME. */
enum bm_request bm_gateway_request(bm_gateway_t *gw, int relay, int status,
                                   const char *origin, bool require_known,
                                   char *why, size_t whylen);
/* relay.h's bm_relay_table_keep_switches, for the relays a rule with
 * MaxSwitchesPerHour drives: before bm_gateway_open. */
int bm_gateway_keep_switches(bm_gateway_t *gw, int relay, int n);

/* bm_gateway_request or, with limits, relay.h's
 * bm_relay_table_request_limited (BM_REQ_HELD: the change waits for them),
 * carried out by the gateway thread at its next turn: the caller copies
 * the ask into the gateway's mailbox (a mutex held for that copy, not the
 * relay table's, which the thread holds during its turn) and returns, so
 * that a burst of callers (collectd's write threads, 64 notification
 * threads) does not queue behind the thread and each other on the table's
 * mutex. Asks are decided in the order they came, the commands they cause
 * published in that turn; the asked hook hands each decision back. The
 * mailbox grows to 65,536 asks; a caller finding it full waits for the
 * thread to empty it, so nothing is dropped (but by a thread already
 * stopping, which logs it). An ask with no_wait grows the mailbox past
 * that instead (dropped, and logged, only when memory runs out): for a
 * caller the gateway thread may itself be waiting for, such as the
 * host's thread that takes the event hook's events from a bounded queue
 * and dispatches them into the host's Triggers (a chain), which would
 * otherwise wait for a thread waiting for it. A bad relay index or status
 * is decided as BM_REQ_SAME. Thread-safe; never blocks on I/O. */
void bm_gateway_ask(bm_gateway_t *gw, const struct bm_gateway_ask *ask);
/* Sets (0/1) or clears (-1) a manual override, as bm_relay_table_override;
 * same threading as bm_gateway_request. */
enum bm_request bm_gateway_override(bm_gateway_t *gw, int relay, int status,
                                    double hold, const char *origin,
                                    char *why, size_t whylen);
/* Adds an interlock group, before the thread starts.  Returns 0 or -1. */
int bm_gateway_interlock(bm_gateway_t *gw, const int *relays, int n);

/* The current token's exp, when it has one (any thread). */
bool bm_gateway_token_expiry(bm_gateway_t *gw, int64_t *exp);

/* Copies the views of relays first, first+1, ... (n at most, as many as
 * there are) into views, under the mutex; when stats is not NULL, also the
 * counters and whether the session is ready, resetting the latency sums.
 * Returns the number of views written. */
size_t bm_gateway_snapshot(bm_gateway_t *gw, size_t first,
                           struct bm_relay_view *views, size_t n,
                           struct bm_relay_stats *stats, bool *ready);

#endif
