/*
 * bimetri.c - the collectd plugin glue: the only file that includes collectd
 * headers.
 *
 * It hands the <Plugin bimetri> block, as a conffile.h tree, to plugconf.h
 * (which checks it and reads it into plain structs), turns what that read
 * into gateways (gateway.h), triggers (match.h) and switching rules
 * (rule.h), starts one thread per gateway with plugin_thread_create, feeds
 * collectd notifications to the triggers, and turns the gateways' events
 * into collectd notifications and values:
 *
 *   bimetri-<gateway>/bool-<relay>                confirmed state 0/1
 *   bimetri-<gateway>/pending_operations-<relay>  commands in flight
 *   bimetri-<gateway>/current_connections         1 while subscribed
 *   bimetri-<gateway>/operations-<outcome>        DERIVE counters
 *   bimetri-<gateway>/response_time-ack|confirm   mean seconds per interval
 *
 * Callbacks never block: the notification and write callbacks only hand
 * intents to the gateway's thread (bm_gateway_ask copies one into a
 * mailbox under a mutex held for that copy), which decides them at its
 * next turn and reports refusals and holds through on_asked. Values
 * and notifications about relays are dispatched by one dispatcher thread
 * ("bimetri#d"), which the gateway threads hand their events to through a
 * bounded queue, so that collectd's write queue and the notification
 * plugins (logfile opens its file per line) never hold up MQTT; it holds no
 * lock while it dispatches notifications (values: dispatch_order, which
 * orders them with the read callback's). A full queue makes the gateway
 * threads wait: nothing is dropped.
 */
#include "bm_config.h"

#include <collectd/core/daemon/plugin.h>
#include <collectd/core/utils/common/common.h>

#include <collectd/core/daemon/utils_cache.h>

#include <stdatomic.h>

#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif

#include "clock.h"
#include "gateway.h"
#include "idmap.h"
#include "log.h"
#include "match.h"
#include "plugconf.h"
#include "rule.h"
#include "str.h"

#define PLUGIN_NAME "bimetri"

/* Who asked (struct bm_gateway_ask's kind; its tag is the rule). */
enum { ASK_TRIGGER = 1, ASK_SWITCH };

struct gateway_slot {
  bm_gateway_t *gw;
  pthread_t thread;
  bool running;
  struct bm_relay_view *views; /* snapshot buffer for the read callback */
  double state_seconds;        /* StateInterval as configured, 0: none */
  /* Set at init: the relay values' interval (StateInterval rounded to a
   * multiple of the plugin's interval), and that multiple. */
  cdtime_t state_interval;
  unsigned state_every;
};

static struct gateway_slot gateways[BM_PLUGCONF_MAX_GATEWAYS];
static size_t gateways_n;

/* From 2 * RELAY_SLICE_MIN relays on, the relay values of an interval go
 * out in slices, one per read, spread over the interval (a read per
 * RELAY_SLICE_MIN relays, RELAY_SLICES at most, each a contiguous part of
 * every gateway's relays): at
 * once, 100,000 relays put 100,000-200,000 values in collectd's write
 * queue together, about 740 bytes each, which malloc kept resident after
 * they were written (the first read's burst, at start, too). Every value
 * carries the plugin's interval, so each relay's value is still due once
 * per interval. A gateway with a StateInterval of k intervals spreads its
 * relays over k times as many reads, after a first round at the plugin's
 * interval (the states replayed from the journal go out at start), and
 * its relay values carry the StateInterval instead. */
#define RELAY_SLICES 10
#define RELAY_SLICE_MIN 1000
static cdtime_t values_interval; /* every value's interval (set at init) */
static unsigned relay_slices = 1; /* reads per interval */
static unsigned read_turn;        /* reads so far */
static int bimetri_read(user_data_t *ud);

static bool config_failed;
/* Set at the end of init: rules act only once the journal's states are
 * restored (values may be written before our init ran). */
static volatile bool started;
/* Notification callbacks in flight, and whether they may act: closed when
 * init failed (collectd then unregisters only the read callback, and the
 * Triggers would fill the mailboxes of gateways that never run, then wait
 * for room forever) and at shutdown, which frees what they read and waits
 * for the callbacks in flight (unixsock's threads live on) first. Both
 * sequentially consistent: a callback either sees closed, or shutdown sees
 * it in flight. */
static atomic_int notif_inflight;
static atomic_bool notif_closed;

/* ---- logging ----------------------------------------------------------- */

static void glue_log(int level, const char *line, void *ctx)
{
  (void)ctx;
  plugin_log(level, PLUGIN_NAME " plugin: %s", line);
}

/* ---- configuration ----------------------------------------------------- */

/* plugconf.h reads the block; this part only hands it collectd's tree and
 * turns what it read into running objects. */
static struct bm_plugconf conf = BM_PLUGCONF_INIT;

static void on_event(void *ctx, const char *gateway, const struct bm_event *ev);
static int bimetri_write(const data_set_t *ds, const value_list_t *vl,
                         user_data_t *ud);
static void rules_tick(void);
/* The write callback's first test (rule.h): built at configuration,
 * read-only after. */
static struct bm_rule_index rule_index;
/* What a Trigger's or a Switch's ask came to (gateway thread): refusals
 * and holds are logged, as they were when the callbacks decided. */
static void on_asked(void *ctx, const char *gateway,
                     const struct bm_gateway_ask *a, enum bm_request rc,
                     const char *why)
{
  struct gateway_slot *s = ctx;

  (void)gateway;
  if (a->kind == ASK_TRIGGER) {
    const struct bm_trigger *t = a->tag;
    if (rc == BM_REQ_UNKNOWN)
      INFO(PLUGIN_NAME " plugin: Trigger \"%s\": OKAY not acted on: the "
                       "relay's state is not known yet",
           t->name);
    else if (rc == BM_REQ_OVERRIDDEN)
      INFO(PLUGIN_NAME " plugin: Trigger \"%s\" not acted on: %s", t->name,
           why);
  } else if (a->kind == ASK_SWITCH) {
    /* The rules are the configuration's, the tag only a const view. */
    struct bm_rule *r = (struct bm_rule *)a->tag;
    bool said = false;

    if (rc == BM_REQ_OVERRIDDEN)
      said = bm_rule_refused(r); /* asked again, said once */
    else
      bm_rule_answered(r);
    if ((rc == BM_REQ_HELD || rc == BM_REQ_OVERRIDDEN) && !said)
      INFO(PLUGIN_NAME " plugin: Switch \"%s\" wants relay \"%s\" %s: %s %s",
           r->name, bm_gateway_relay_name(s->gw, a->relay),
           a->status ? "on" : "off",
           rc == BM_REQ_HELD ? "waiting for" : "refused:", why);
  }
}

static void on_connection(void *ctx, const char *gateway, bool up);
static void on_events_done(void *ctx);
static void on_token(void *ctx, const char *gateway, enum bm_severity sev,
                     const char *message);

static void conf_tree_free(struct bm_conf_item *it)
{
  for (size_t i = 0; i < it->children_num; i++)
    conf_tree_free(&it->children[i]);
  free(it->children);
  free(it->values);
}

/* collectd's oconfig_item_t tree as conffile.h's: new items and values,
 * collectd's strings (valid as long as ci).  There is no file name or line
 * to give.  Returns 0, or -1 out of memory; free it with conf_tree_free
 * either way. */
static int conf_tree_from(const oconfig_item_t *ci, struct bm_conf_item *it)
{
  memset(it, 0, sizeof(*it));
  it->key = ci->key;
  it->is_block = ci->children_num > 0;
  if (!(it->values = calloc((size_t)ci->values_num + 1, sizeof(*it->values))) ||
      !(it->children =
            calloc((size_t)ci->children_num + 1, sizeof(*it->children))))
    return -1;
  for (int i = 0; i < ci->values_num; i++) {
    struct bm_conf_value *v = &it->values[it->values_num];

    switch (ci->values[i].type) {
    case OCONFIG_TYPE_STRING:
      v->type = BM_CONF_STRING;
      v->string = ci->values[i].value.string;
      break;
    case OCONFIG_TYPE_NUMBER:
      v->type = BM_CONF_NUMBER;
      v->number = ci->values[i].value.number;
      break;
    case OCONFIG_TYPE_BOOLEAN:
      v->type = BM_CONF_BOOLEAN;
      v->boolean = ci->values[i].value.boolean != 0;
      break;
    default:
      continue; /* no such value in collectd: the checks see fewer values */
    }
    it->values_num++;
  }
  for (int i = 0; i < ci->children_num; i++) {
    int rc = conf_tree_from(&ci->children[i], &it->children[i]);
    it->children_num++; /* freed with it, whole or not */
    if (rc != 0)
      return -1;
  }
  return 0;
}

static void conf_error(void *ctx, const struct bm_conf_item *where,
                       const char *message)
{
  (void)ctx;
  (void)where;
  ERROR(PLUGIN_NAME " plugin: %s", message);
}

/* Creates the gateway conf.gateways[i] in slot i, with its relays. */
static int create_gateway(size_t i)
{
  const struct bm_plugconf_gateway *g = &conf.gateways[i];
  struct gateway_slot *s = &gateways[i];
  struct bm_gateway_hooks hooks = {0};
  bm_gateway_t *gw = NULL;
  char err[512];
  int status = -1;

  hooks.event = on_event;
  hooks.connection = on_connection;
  hooks.token = on_token;
  hooks.events_done = on_events_done;
  hooks.asked = on_asked;
  hooks.ctx = s;
  if (!(gw = bm_gateway_new(&g->c, &hooks, err, sizeof(err)))) {
    ERROR(PLUGIN_NAME " plugin: <Gateway \"%s\">: %s", g->c.name, err);
    goto out;
  }
  for (size_t r = 0; r < g->relays_n; r++) {
    if (bm_gateway_add_relay(gw, g->relays[r].name, g->relays[r].resource_id,
                             g->relays[r].output) != (int)r) {
      ERROR(PLUGIN_NAME " plugin: <Gateway \"%s\">: cannot add Relay \"%s\"",
            g->c.name, g->relays[r].name);
      goto out;
    }
  }
  if (!(s->views = calloc(g->relays_n, sizeof(struct bm_relay_view)))) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    goto out;
  }
  s->state_seconds = g->state_interval;
  s->gw = gw;
  gw = NULL;
  gateways_n = i + 1;
  status = 0;
out:
  bm_gateway_free(gw);
  return status;
}

/* The MQTT client id when the Gateway names none: collectd's host name is
 * known only once the daemon has started. */
static void default_client_id(char *buf, size_t size, const char *gateway)
{
  char host[64];
  size_t j = 0;

  /* MQTT client ids are safest in [A-Za-z0-9-]; stable across restarts. */
  for (const char *p = hostname_g ? hostname_g : "collectd";
       *p && j < sizeof(host) - 1; p++)
    host[j++] = isalnum((unsigned char)*p) ? *p : '-';
  host[j] = '\0';
  snprintf(buf, size, "collectd-%s-%s", host, gateway);
}

static int find_gateway(const char *name)
{
  for (size_t i = 0; i < gateways_n; i++)
    if (strcmp(bm_gateway_name(gateways[i].gw), name) == 0)
      return (int)i;
  return -1;
}

/* Called once per <Plugin bimetri> block: what it defines adds to what the
 * blocks before defined. */
static int bimetri_config(oconfig_item_t *ci)
{
  struct bm_conf_item block;
  struct bm_plugconf_opts opts = {0};
  const char *base = global_option_get("BaseDir"); /* read before plugins */
  size_t interlocks_from = conf.interlocks_n;
  int status = -1;

  memset(&block, 0, sizeof(block));
  bm_log_set_sink(glue_log, NULL);
  /* plugin_log drops debug lines unless collectd was built to log them. */
  bm_log_set_max_level(COLLECT_DEBUG ? BM_LOG_DEBUG : BM_LOG_INFO);
  if (bm_gateway_library_init() != 0) {
    ERROR(PLUGIN_NAME " plugin: cannot initialise libmosquitto");
    goto out;
  }
  if (conf_tree_from(ci, &block) != 0) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    goto out;
  }
  opts.base_dir = base && *base ? base : ".";
  opts.read_secrets = true;
  opts.error = conf_error;
  if (bm_plugconf_add(&conf, &block, &opts) != 0)
    goto out;
  for (size_t i = gateways_n; i < conf.gateways_n; i++)
    if (create_gateway(i) != 0)
      goto out;
  for (size_t i = interlocks_from; i < conf.interlocks_n; i++) {
    const struct bm_plugconf_interlock *il = &conf.interlocks[i];
    if (bm_gateway_interlock(gateways[il->gateway].gw, il->relays, il->n) !=
        0) {
      ERROR(PLUGIN_NAME " plugin: out of memory");
      goto out;
    }
  }
  for (size_t i = 0; i < conf.rules_n; i++) {
    const struct bm_rule *r = conf.rules[i];
    if (r->limits.max_per_hour > 0 &&
        bm_gateway_keep_switches(gateways[r->gateway].gw, r->relay,
                                 r->limits.max_per_hour) != 0) {
      ERROR(PLUGIN_NAME " plugin: out of memory");
      goto out;
    }
  }
  if (bm_rule_index_build(&rule_index, conf.rules, conf.rules_n) != 0) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    goto out;
  }
  if (conf.rules_n > 0 &&
      plugin_register_write(PLUGIN_NAME, bimetri_write, NULL) != 0) {
    ERROR(PLUGIN_NAME " plugin: cannot register the write callback");
    goto out;
  }
  status = 0;
out:
  conf_tree_free(&block);
  if (status != 0)
    config_failed = true;
  return status;
}

/* ---- events to collectd ------------------------------------------------ */

/* A gauge of the plugin with the given interval (a relay's value carries
 * its gateway's state_interval, the others values_interval; never the read
 * callback's, which the slices shorten). */
static void dispatch_gauge_every(const char *gateway, const char *type,
                                 const char *type_instance, gauge_t value,
                                 cdtime_t interval)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.gauge = value};

  vl.values = &v;
  vl.values_len = 1;
  vl.interval = interval;
  /* bm_str_copy, not sstrncpy: vl is zeroed, and strncpy's padding wrote
   * the whole 128 bytes of each field (a value per message at ingest). */
  bm_str_copy(vl.plugin, sizeof(vl.plugin), PLUGIN_NAME);
  bm_str_copy(vl.plugin_instance, sizeof(vl.plugin_instance), gateway);
  bm_str_copy(vl.type, sizeof(vl.type), type);
  if (type_instance)
    bm_str_copy(vl.type_instance, sizeof(vl.type_instance), type_instance);
  plugin_dispatch_values(&vl);
}

static void dispatch_gauge(const char *gateway, const char *type,
                           const char *type_instance, gauge_t value)
{
  dispatch_gauge_every(gateway, type, type_instance, value, values_interval);
}

static void dispatch_derive(const char *gateway, const char *type,
                            const char *type_instance, derive_t value)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.derive = value};

  vl.values = &v;
  vl.values_len = 1;
  vl.interval = values_interval; /* not the read callback's (sliced) one */
  sstrncpy(vl.plugin, PLUGIN_NAME, sizeof(vl.plugin));
  sstrncpy(vl.plugin_instance, gateway, sizeof(vl.plugin_instance));
  sstrncpy(vl.type, type, sizeof(vl.type));
  sstrncpy(vl.type_instance, type_instance, sizeof(vl.type_instance));
  plugin_dispatch_values(&vl);
}

static const char *state_name(int s)
{
  return s < 0 ? "unknown" : s ? "on" : "off";
}

/* A notification's meta data on the caller's stack. collectd's
 * plugin_notification_meta_add_* allocate every entry and copy every
 * string: 3 to 5 allocations per notification, freed right after the
 * dispatch, in a malloc arena the dispatcher shares with collectd's write
 * threads at ingest rates. Callbacks receive the notification read-only
 * and copy what they keep (plugin_notification_meta_copy), so entries and
 * strings that live until plugin_dispatch_notification returns will do. */
#define NOTIF_META_MAX 5

struct notif_meta {
  notification_meta_t entry[NOTIF_META_MAX];
  size_t n;
};

/* Appends entry name to n's meta data (in order), leaving its value to
 * the caller; NULL when the list is full (a bug: logged). m starts zeroed
 * (struct notif_meta m = {.n = 0}): its entries are used as they are. */
static notification_meta_t *notif_meta_add(notification_t *n,
                                           struct notif_meta *m,
                                           const char *name)
{
  notification_meta_t *e;

  if (m->n == NOTIF_META_MAX) {
    ERROR(PLUGIN_NAME " plugin: notification meta data \"%s\" left out", name);
    return NULL;
  }
  e = &m->entry[m->n];
  sstrncpy(e->name, name, sizeof(e->name));
  if (m->n > 0)
    m->entry[m->n - 1].next = e;
  else
    n->meta = e;
  m->n++;
  return e;
}

static void notif_meta_string(notification_t *n, struct notif_meta *m,
                              const char *name, const char *value)
{
  notification_meta_t *e = notif_meta_add(n, m, name);

  if (e) {
    e->type = NM_TYPE_STRING;
    e->nm_value.nm_string = value;
  }
}

static void notif_meta_int(notification_t *n, struct notif_meta *m,
                           const char *name, int64_t value)
{
  notification_meta_t *e = notif_meta_add(n, m, name);

  if (e) {
    e->type = NM_TYPE_SIGNED_INT;
    e->nm_value.nm_signed_int = value;
  }
}

/* The value of one event of a gateway, if it has one (a state's): before
 * the event's notification (dispatch_event). s is the gateway's slot. */
static void dispatch_event_value(struct gateway_slot *s, const char *gateway,
                                 const struct bm_event *ev)
{
  if (ev->kind == BM_EV_STATE)
    dispatch_gauge_every(gateway, "bool",
                         bm_gateway_relay_name(s->gw, ev->relay),
                         (gauge_t)ev->status, s->state_interval);
}

/* Dispatches one event of a gateway as a notification: in the dispatcher
 * thread, no lock held, after the event's value. s is the gateway's slot. */
static void dispatch_event(struct gateway_slot *s, const char *gateway,
                           const struct bm_event *ev)
{
  notification_t n = {0};
  struct notif_meta meta = {.n = 0};
  const char *relay = bm_gateway_relay_name(s->gw, ev->relay);

  n.time = cdtime();
  bm_str_copy(n.host, sizeof(n.host), hostname_g); /* n is zeroed */
  bm_str_copy(n.plugin, sizeof(n.plugin), PLUGIN_NAME);
  bm_str_copy(n.plugin_instance, sizeof(n.plugin_instance), gateway);
  bm_str_copy(n.type_instance, sizeof(n.type_instance), relay);

  if (ev->kind == BM_EV_DRIFT) {
    n.severity = NOTIF_WARNING;
    sstrncpy(n.type, "relay_drift", sizeof(n.type));
    snprintf(n.message, sizeof(n.message),
             "relay \"%s\" is %s, but our last confirmed command had set it "
             "%s: switched outside this plugin (by hand, or a device restart)",
             relay, state_name(ev->status), state_name(ev->previous));
    WARNING(PLUGIN_NAME " plugin: gateway \"%s\": %s", gateway, n.message);
  } else if (ev->kind == BM_EV_STATE) {
    /* One per state change, at ingest rates: built piece by piece, the
     * text snprintf's format "relay \"%s\" is %s (was %s)%s%s%s" made
     * (8% of the dispatcher's time went to that snprintf). */
    char *m = n.message;
    size_t at = 0, size = sizeof(n.message);

    n.severity = NOTIF_OKAY;
    bm_str_copy(n.type, sizeof(n.type), ev->status ? "relay_on" : "relay_off");
    at = bm_str_append(m, size, at, "relay \"");
    at = bm_str_append(m, size, at, relay);
    at = bm_str_append(m, size, at, "\" is ");
    at = bm_str_append(m, size, at, state_name(ev->status));
    at = bm_str_append(m, size, at, " (was ");
    at = bm_str_append(m, size, at, state_name(ev->previous));
    if (ev->corr[0]) {
      at = bm_str_append(m, size, at, "), correlationId \"");
      at = bm_str_append(m, size, at, ev->corr);
      (void)bm_str_append(m, size, at, "\"");
    } else {
      (void)bm_str_append(m, size, at, "), unsolicited");
    }
  } else {
    n.severity = ev->severity == BM_SEV_FAILURE ? NOTIF_FAILURE : NOTIF_WARNING;
    sstrncpy(n.type, "relay_result", sizeof(n.type));
    if (ev->corr[0])
      snprintf(n.message, sizeof(n.message),
               "command to switch relay \"%s\" %s (correlationId \"%s\", "
               "attempt %d) ended: %s",
               relay, state_name(ev->status), ev->corr, ev->attempt,
               ev->reason);
    else
      snprintf(n.message, sizeof(n.message), "relay \"%s\" not switched %s: %s",
               relay, state_name(ev->status), ev->reason);
    INFO(PLUGIN_NAME " plugin: gateway \"%s\": %s", gateway, n.message);
    notif_meta_string(&n, &meta, "outcome", bm_op_name(ev->outcome));
    notif_meta_string(&n, &meta, "reason", ev->reason);
  }
  notif_meta_int(&n, &meta, "status", ev->status);
  if (ev->corr[0])
    notif_meta_string(&n, &meta, "correlationId", ev->corr);
  if (ev->origin[0])
    notif_meta_string(&n, &meta, "origin", ev->origin);
  plugin_dispatch_notification(&n);
}

/* ---- the dispatcher ---------------------------------------------------- */

#define DISPATCH_QUEUE 1024 /* events waiting, about 600 bytes each */
#define DISPATCH_BATCH 64   /* taken out of the queue at a time */

struct dispatch_item {
  struct gateway_slot *slot;
  const char *gateway; /* owned by the gateway, which outlives the thread */
  struct bm_event ev;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t more; /* signalled when the dispatcher sleeps */
  pthread_cond_t room; /* signalled when a gateway waits for room */
  struct dispatch_item items[DISPATCH_QUEUE];
  size_t head, n;
  int sleeping, waiting;
  bool stop, running;
  pthread_t thread;
} dq = {.lock = PTHREAD_MUTEX_INITIALIZER,
        .more = PTHREAD_COND_INITIALIZER,
        .room = PTHREAD_COND_INITIALIZER};

/* Held while relay values are dispatched: by the dispatcher for each batch
 * of events, by dispatch_relays for its snapshot and values. collectd
 * stamps a value with the time of its dispatch and keeps the newest, so
 * two threads dispatching the same relay's state must not interleave: the
 * read callback's snapshot, taken before a change was applied and
 * dispatched after the change's event, would win with an older state until
 * the next interval. Under this lock a snapshot is dispatched either
 * before the events applied after it, or after every event it shows.
 * Nothing that takes it dispatches into this plugin's own callbacks while
 * needing it again (lock order: this, then a gateway's). */
static pthread_mutex_t dispatch_order = PTHREAD_MUTEX_INITIALIZER;

/* True in a thread dispatching the gateways' events: the dispatcher, or a
 * gateway's own thread when there is none. A Trigger matching one of the
 * plugin's notifications (a chain) then asks without waiting for room in
 * the mailbox: the gateway thread may be waiting for room in the dispatch
 * queue, which only this thread makes. */
static _Thread_local bool dispatching_events;

/* The hook of every gateway: runs in the gateway's thread, no lock held;
 * ctx is the gateway's slot. Queues the events that become values and
 * notifications (PUBLISH, ACK, APPLIED are logged and journaled by the
 * gateway), waiting for room when the dispatcher is behind. The
 * dispatcher is woken once per batch (on_events_done), or when the queue
 * is full. */
static void on_event(void *ctx, const char *gateway, const struct bm_event *ev)
{
  struct dispatch_item *it;

  if (ev->kind != BM_EV_STATE && ev->kind != BM_EV_END &&
      ev->kind != BM_EV_DRIFT)
    return;
  pthread_mutex_lock(&dq.lock);
  if (!dq.running) { /* start-up or shutdown: no dispatcher, dispatch here */
    pthread_mutex_unlock(&dq.lock);
    pthread_mutex_lock(&dispatch_order);
    dispatch_event_value(ctx, gateway, ev);
    pthread_mutex_unlock(&dispatch_order);
    dispatching_events = true;
    dispatch_event(ctx, gateway, ev);
    dispatching_events = false;
    return;
  }
  while (dq.n == DISPATCH_QUEUE) {
    if (dq.sleeping)
      pthread_cond_signal(&dq.more);
    dq.waiting++;
    pthread_cond_wait(&dq.room, &dq.lock);
    dq.waiting--;
  }
  it = &dq.items[(dq.head + dq.n++) % DISPATCH_QUEUE];
  it->slot = ctx;
  it->gateway = gateway;
  it->ev = *ev;
  pthread_mutex_unlock(&dq.lock);
}

/* The end of a gateway's batch of events: wakes the dispatcher. */
static void on_events_done(void *ctx)
{
  (void)ctx;
  pthread_mutex_lock(&dq.lock);
  if (dq.sleeping && dq.n > 0)
    pthread_cond_signal(&dq.more);
  pthread_mutex_unlock(&dq.lock);
}

/* Takes the queue's events in batches and dispatches them, until stopped
 * with the queue empty. */
static void *dispatcher_thread(void *arg)
{
  static struct dispatch_item batch[DISPATCH_BATCH];
  (void)arg;

  dispatching_events = true;
  for (;;) {
    size_t k = 0;

    pthread_mutex_lock(&dq.lock);
    while (dq.n == 0 && !dq.stop) {
      dq.sleeping++;
      pthread_cond_wait(&dq.more, &dq.lock);
      dq.sleeping--;
    }
    if (dq.n == 0) { /* stopped, and everything dispatched */
      pthread_mutex_unlock(&dq.lock);
      return NULL;
    }
    for (; k < DISPATCH_BATCH && dq.n > 0; k++, dq.n--) {
      batch[k] = dq.items[dq.head];
      dq.head = (dq.head + 1) % DISPATCH_QUEUE;
    }
    if (dq.waiting)
      pthread_cond_broadcast(&dq.room);
    pthread_mutex_unlock(&dq.lock);
    /* The batch's values back to back, then its notifications: collectd
     * wakes a write thread for each value that finds them all asleep, and
     * a notification between two values gave them the time to fall asleep
     * again. Each relay's value still comes before its notification.
     * dispatch_order orders the values with the read callback's; the
     * notifications go out without it (notification plugins may write
     * files or the network, and a chained Trigger comes back in here). */
    pthread_mutex_lock(&dispatch_order);
    for (size_t i = 0; i < k; i++)
      dispatch_event_value(batch[i].slot, batch[i].gateway, &batch[i].ev);
    pthread_mutex_unlock(&dispatch_order);
    for (size_t i = 0; i < k; i++)
      dispatch_event(batch[i].slot, batch[i].gateway, &batch[i].ev);
  }
}

static int start_dispatcher(void)
{
  if (dq.running)
    return 0;
  dq.stop = false;
  if (plugin_thread_create(&dq.thread, dispatcher_thread, NULL,
                           "bimetri#d") != 0)
    return -1;
  pthread_mutex_lock(&dq.lock);
  dq.running = true;
  pthread_mutex_unlock(&dq.lock);
  return 0;
}

/* After the gateway threads: dispatches what is queued, then joins. */
static void stop_dispatcher(void)
{
  if (!dq.running)
    return;
  pthread_mutex_lock(&dq.lock);
  dq.stop = true;
  pthread_cond_signal(&dq.more);
  pthread_mutex_unlock(&dq.lock);
  pthread_join(dq.thread, NULL);
  pthread_mutex_lock(&dq.lock);
  dq.running = false;
  pthread_mutex_unlock(&dq.lock);
}

static void on_token(void *ctx, const char *gateway, enum bm_severity sev,
                     const char *message)
{
  notification_t n = {0};

  (void)ctx;
  n.severity = sev == BM_SEV_FAILURE   ? NOTIF_FAILURE
               : sev == BM_SEV_WARNING ? NOTIF_WARNING
                                       : NOTIF_OKAY;
  n.time = cdtime();
  sstrncpy(n.host, hostname_g, sizeof(n.host));
  sstrncpy(n.plugin, PLUGIN_NAME, sizeof(n.plugin));
  sstrncpy(n.plugin_instance, gateway, sizeof(n.plugin_instance));
  sstrncpy(n.type, "token", sizeof(n.type));
  sstrncpy(n.message, message, sizeof(n.message));
  plugin_dispatch_notification(&n);
}

/* Under dispatch_order, as the read callback's value from its snapshot:
 * a 0 dispatched between that snapshot and its value would lose to the
 * stale 1 for an interval. */
static void on_connection(void *ctx, const char *gateway, bool up)
{
  (void)ctx;
  pthread_mutex_lock(&dispatch_order);
  dispatch_gauge(gateway, "current_connections", NULL, up ? 1 : 0);
  pthread_mutex_unlock(&dispatch_order);
}

/* ---- collectd callbacks ------------------------------------------------ */

static void *gateway_thread(void *arg) { return bm_gateway_run(arg); }

/* The known state and pending commands of the relays of one slice
 * (slices of them in all), from a snapshot; when st is not NULL the
 * snapshot also hands back the counters, and the connection state goes
 * out with the relays. */
static void dispatch_relays(struct gateway_slot *s, unsigned slice,
                            unsigned slices, struct bm_relay_stats *st)
{
  const char *gateway = bm_gateway_name(s->gw);
  size_t count = bm_gateway_relay_count(s->gw);
  size_t first = count * slice / slices, n;
  bool ready = false;

  pthread_mutex_lock(&dispatch_order);
  n = bm_gateway_snapshot(s->gw, first, s->views,
                          count * (slice + 1) / slices - first, st, &ready);
  if (st)
    dispatch_gauge(gateway, "current_connections", NULL, ready ? 1 : 0);
  for (size_t i = 0; i < n; i++) {
    if (s->views[i].confirmed >= 0)
      dispatch_gauge_every(gateway, "bool", s->views[i].name,
                           (gauge_t)s->views[i].confirmed, s->state_interval);
    dispatch_gauge_every(gateway, "pending_operations", s->views[i].name,
                         (gauge_t)s->views[i].pending, s->state_interval);
  }
  pthread_mutex_unlock(&dispatch_order);
}

/* Stops and joins the Gateway threads that run. */
static void stop_gateways(void)
{
  for (size_t i = 0; i < gateways_n; i++)
    if (gateways[i].running)
      bm_gateway_stop(gateways[i].gw);
  for (size_t i = 0; i < gateways_n; i++) {
    if (gateways[i].running)
      pthread_join(gateways[i].thread, NULL);
    gateways[i].running = false;
  }
}

/* A gateway's StateInterval, in whole intervals of the plugin (at least
 * one); a rounded one is said once. */
static void set_state_interval(struct gateway_slot *s)
{
  double interval = CDTIME_T_TO_DOUBLE(values_interval);
  double k = s->state_seconds > 0 ? round(s->state_seconds / interval) : 1;

  if (k < 1)
    k = 1;
  if (k > 86400)
    k = 86400;
  s->state_every = (unsigned)k;
  s->state_interval = values_interval * s->state_every;
  if (s->state_seconds > 0 &&
      fabs(s->state_seconds - k * interval) > 0.001 * interval)
    NOTICE(PLUGIN_NAME " plugin: gateway \"%s\": StateInterval %g s "
                       "rounded to %g s, a multiple of the plugin's interval",
           bm_gateway_name(s->gw), s->state_seconds, k * interval);
}

/* Registers the read callback: relay_slices reads per interval. */
static int register_read(void)
{
  size_t relays = 0, slices;

  for (size_t i = 0; i < gateways_n; i++)
    relays += bm_gateway_relay_count(gateways[i].gw);
  slices = relays / RELAY_SLICE_MIN;
  relay_slices = slices < 1              ? 1
                 : slices > RELAY_SLICES ? RELAY_SLICES
                                         : (unsigned)slices;
  values_interval = plugin_get_interval();
  read_turn = 0;
  for (size_t i = 0; i < gateways_n; i++)
    set_state_interval(&gateways[i]);
  return plugin_register_complex_read(NULL, PLUGIN_NAME, bimetri_read,
                                      values_interval / relay_slices, NULL);
}

/* All or nothing: every Gateway's journal and client first, then the
 * threads; a failure anywhere leaves none running, as a half-started
 * plugin would switch relays unseen. (collectd then unregisters only the
 * read callback: bimetri_init closes the notification callback, and the
 * write callback waits for started.) */
static int init_all(void)
{
  if (config_failed) {
    ERROR(PLUGIN_NAME " plugin: not started: the configuration has errors "
                      "(see above)");
    return -1;
  }
  for (size_t i = 0; i < gateways_n; i++) {
    char client_id[BM_GW_STR_SIZE], err[256];

    default_client_id(client_id, sizeof(client_id),
                      bm_gateway_name(gateways[i].gw));
    if (bm_gateway_open(gateways[i].gw, client_id, err, sizeof(err)) != 0) {
      ERROR(PLUGIN_NAME " plugin: gateway \"%s\": %s; the plugin does not "
                        "start",
            bm_gateway_name(gateways[i].gw), err);
      return -1;
    }
  }
  if (register_read() != 0) {
    ERROR(PLUGIN_NAME " plugin: cannot register the read callback; the "
                      "plugin does not start");
    return -1;
  }
  if (start_dispatcher() != 0) {
    ERROR(PLUGIN_NAME " plugin: cannot start the dispatcher thread; the "
                      "plugin does not start");
    return -1;
  }
  for (size_t i = 0; i < gateways_n; i++) {
    char name[16];

    if (gateways[i].running)
      continue;
    /* The journal's restored states go out with the first reads, the
     * first of which collectd runs as soon as every init returned (a read
     * callback is due from its registration): dispatching them here too
     * doubled start-up's burst in collectd's write queue (100,000 relays:
     * 200,000 values, about 50 MB of RSS that malloc kept). */
    snprintf(name, sizeof(name), "bimetri#%zu", i);
    if (plugin_thread_create(&gateways[i].thread, gateway_thread,
                             gateways[i].gw, name) != 0) {
      ERROR(PLUGIN_NAME " plugin: gateway \"%s\": cannot start its thread; "
                        "the plugin does not start",
            bm_gateway_name(gateways[i].gw));
      stop_gateways();
      stop_dispatcher();
      return -1;
    }
    gateways[i].running = true;
  }
  started = true;
  /* What reading a large configuration freed (collectd's tree of it: about
   * 500 bytes per Relay block) and the journals' replay left in the main
   * thread's malloc arena would stay resident: collectd's own allocations
   * from then on come from its other threads' arenas. 100,000 relays:
   * 45-58 MB less RSS. Free memory only; a walk of the heap, once. */
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  return 0;
}

static int bimetri_init(void)
{
  if (init_all() == 0)
    return 0;
  atomic_store(&notif_closed, true);
  return -1;
}

/* Runs relay_slices times per interval: each run dispatches one slice of
 * every gateway's relays (of relay_slices slices in the first round, then
 * of relay_slices * state_every), the run of slice 0 (the first run too)
 * the gateways' own values as well. */
static int bimetri_read(user_data_t *ud)
{
  unsigned turn = read_turn++;
  unsigned slice = turn % relay_slices;

  (void)ud;
  rules_tick();
  for (size_t g = 0; g < gateways_n; g++) {
    struct gateway_slot *s = &gateways[g];
    const char *gateway = bm_gateway_name(s->gw);
    struct bm_relay_stats st;
    unsigned slices = relay_slices, relay_slice = slice;

    if (turn >= relay_slices) { /* after the first round */
      slices = relay_slices * s->state_every;
      relay_slice = (turn - relay_slices) % slices;
    }
    dispatch_relays(s, relay_slice, slices, slice == 0 ? &st : NULL);
    if (slice != 0)
      continue;
    {
      int64_t exp;
      if (bm_gateway_token_expiry(s->gw, &exp))
        dispatch_gauge(gateway, "timestamp", "token_expiry", (gauge_t)exp);
    }
    for (int op = 0; op < BM_OP_COUNT; op++)
      dispatch_derive(gateway, "operations", bm_op_name(op),
                      (derive_t)st.ops[op]);
    if (st.ack_n)
      dispatch_gauge(gateway, "response_time", "ack",
                     st.ack_sum / (double)st.ack_n);
    if (st.confirm_n)
      dispatch_gauge(gateway, "response_time", "confirm",
                     st.confirm_sum / (double)st.confirm_n);
  }
  return 0;
}

/* A rule's request, handed to its gateway's thread (on_asked reports it
 * when held back or refused). */
static void rule_request(const struct bm_rule *r, int want, const char *origin,
                         bool limited)
{
  struct bm_gateway_ask a = {.relay = r->relay,
                             .status = want,
                             .limits = limited ? &r->limits : NULL,
                             .kind = ASK_SWITCH,
                             .tag = r};

  bm_str_copy(a.origin, sizeof(a.origin), origin);
  bm_gateway_ask(gateways[r->gateway].gw, &a);
}

/* Runs for every value collectd writes, in up to 5 threads at once: a
 * cheap identity check first, then the matching rules' hysteresis. */
static int bimetri_write(const data_set_t *ds, const value_list_t *vl,
                         user_data_t *ud)
{
  const char *field[BM_FIELD_COUNT] = {vl->host, vl->plugin,
                                       vl->plugin_instance, vl->type,
                                       vl->type_instance};
  (void)ud;
  if (!started)
    return 0;
  if (!bm_rule_index_may_match(&rule_index, vl->plugin, vl->type,
                               vl->type_instance))
    return 0;
  for (size_t i = 0; i < conf.rules_n; i++) {
    struct bm_rule *r = conf.rules[i];
    size_t k = 0;
    double value;
    int want;

    if (!bm_rule_matches(r, field))
      continue;
    if (r->data_source[0]) {
      for (k = 0; k < ds->ds_num && strcmp(ds->ds[k].name, r->data_source); k++)
        ;
      if (k == ds->ds_num)
        continue;
    } else if (ds->ds_num != 1) {
      continue; /* the rule names no DataSource: only single-valued types */
    }
    if (ds->ds[k].type == DS_TYPE_GAUGE) {
      value = vl->values[k].gauge;
    } else {
      gauge_t *rates = uc_get_rate(ds, vl);
      if (!rates)
        continue;
      value = rates[k];
      free(rates);
    }
    pthread_mutex_lock(&r->order);
    if ((want = bm_rule_feed(r, value, bm_now_mono(), NULL)) >= 0) {
      char origin[BM_ORIGIN_SIZE];
      snprintf(origin, sizeof(origin), "switch %s: %g from %s/%s%s%s/%s%s%s",
               r->name, value, vl->host, vl->plugin,
               vl->plugin_instance[0] ? "-" : "", vl->plugin_instance,
               vl->type, vl->type_instance[0] ? "-" : "", vl->type_instance);
      rule_request(r, want, origin, true);
    }
    pthread_mutex_unlock(&r->order);
  }
  return 0;
}

/* Once an interval: rules whose value stopped coming fall back to their
 * FailSafe (safety first: without the limits). */
static void rules_tick(void)
{
  double now = bm_now_mono();

  for (size_t i = 0; i < conf.rules_n; i++) {
    char origin[BM_ORIGIN_SIZE];
    int want;

    pthread_mutex_lock(&conf.rules[i]->order);
    if ((want = bm_rule_tick(conf.rules[i], now)) >= 0) {
      snprintf(origin, sizeof(origin),
               "switch %s: no value for %g s (StaleAfter): FailSafe",
               conf.rules[i]->name, conf.rules[i]->stale_after);
      rule_request(conf.rules[i], want, origin, false);
    }
    pthread_mutex_unlock(&conf.rules[i]->order);
    if (want < 0)
      continue;
    WARNING(PLUGIN_NAME " plugin: Switch \"%s\": no value for %g s: relay "
                        "\"%s\" goes to its FailSafe state %s",
            conf.rules[i]->name, conf.rules[i]->stale_after,
            bm_gateway_relay_name(gateways[conf.rules[i]->gateway].gw,
                                  conf.rules[i]->relay),
            want ? "on" : "off");
  }
}

static enum bm_severity severity_of(int collectd_severity)
{
  switch (collectd_severity) {
  case NOTIF_FAILURE:
    return BM_SEV_FAILURE;
  case NOTIF_WARNING:
    return BM_SEV_WARNING;
  case NOTIF_OKAY:
    return BM_SEV_OKAY;
  default:
    return 0;
  }
}

/* The threshold plugin reports a value that stopped coming as a FAILURE
 * (or WARNING) without any of the meta data its range reports carry. */
static bool is_missing_report(const notification_t *n)
{
  if (n->severity == NOTIF_OKAY || !strstr(n->message, " has not been updated for "))
    return false;
  for (const notification_meta_t *m = n->meta; m; m = m->next)
    if (strcmp(m->name, "CurrentValue") == 0)
      return false;
  return true;
}

/* Reports a refused or invalid manual command: a FAILURE notification, so
 * that whoever sent it (through unixsock, a plugin, the network) sees it. */
static void manual_refused(const notification_t *in, const char *fmt, ...)
{
  notification_t n = {0};
  struct notif_meta meta = {.n = 0};
  va_list ap;

  n.severity = NOTIF_FAILURE;
  n.time = cdtime();
  sstrncpy(n.host, hostname_g, sizeof(n.host));
  sstrncpy(n.plugin, PLUGIN_NAME, sizeof(n.plugin));
  sstrncpy(n.plugin_instance, in->plugin_instance, sizeof(n.plugin_instance));
  sstrncpy(n.type, "relay_result", sizeof(n.type));
  sstrncpy(n.type_instance, in->type_instance, sizeof(n.type_instance));
  va_start(ap, fmt);
  vsnprintf(n.message, sizeof(n.message), fmt, ap);
  va_end(ap);
  WARNING(PLUGIN_NAME " plugin: %s", n.message);
  notif_meta_string(&n, &meta, "outcome", "refused");
  plugin_dispatch_notification(&n);
}

/* plugin "bimetri", plugin_instance the Gateway, type "relay_command",
 * type_instance the Relay, message "on", "off" or "auto", optionally
 * followed by a hold time in seconds ("on 600"). */
static void manual_command(const notification_t *n)
{
  char word[16] = "", origin[BM_ORIGIN_SIZE], why[160];
  double hold = 0;
  int g = find_gateway(n->plugin_instance), relay = -1, status, fields;
  enum bm_request rc;

  if (g >= 0)
    relay = bm_gateway_find_relay(gateways[g].gw, n->type_instance);
  if (relay < 0) {
    manual_refused(n, "manual command for relay \"%s\" of Gateway \"%s\" "
                      "refused: no such Relay (from host \"%s\")",
                   n->type_instance, n->plugin_instance, n->host);
    return;
  }
  if (!conf.gateways[g].relays[relay].manual_control) {
    manual_refused(n, "manual command \"%.32s\" for relay \"%s\" refused: "
                      "ManualControl is off (from host \"%s\")",
                   n->message, n->type_instance, n->host);
    return;
  }
  fields = sscanf(n->message, " %15s %lf", word, &hold);
  if (fields < 1 || (fields == 2 && !(hold > 0 && hold <= 31536000)) ||
      (strcmp(word, "on") && strcmp(word, "off") && strcmp(word, "auto"))) {
    manual_refused(n, "manual command \"%.32s\" for relay \"%s\" refused: "
                      "expected \"on\", \"off\" or \"auto\", optionally "
                      "with a hold time in seconds (from host \"%s\")",
                   n->message, n->type_instance, n->host);
    return;
  }
  status = !strcmp(word, "on") ? 1 : !strcmp(word, "off") ? 0 : -1;
  snprintf(origin, sizeof(origin), "manual %s from host %s", word, n->host);
  rc = bm_gateway_override(gateways[g].gw, relay, status, hold, origin, why,
                           sizeof(why));
  if (rc == BM_REQ_INTERLOCKED) {
    manual_refused(n, "manual command \"%s\" for relay \"%s\" refused: %s "
                      "(from host \"%s\")",
                   word, n->type_instance, why, n->host);
    return;
  }
  INFO(PLUGIN_NAME " plugin: gateway \"%s\": relay \"%s\": %s%s (from host "
                   "\"%s\")",
       n->plugin_instance, n->type_instance,
       status < 0 ? "manual override ended: rules and Triggers drive it again"
                  : status ? "manual override: on" : "manual override: off",
       hold > 0 ? ", with a hold time" : "", n->host);
}

static void notification_act(const notification_t *n)
{
  struct bm_notif_fields f;
  static const char *sev_names[] = {"", "OKAY", "WARNING", "FAILURE"};

  if (strcmp(n->plugin, PLUGIN_NAME) == 0 &&
      strcmp(n->type, "relay_command") == 0) {
    manual_command(n);
    return;
  }
  f.field[BM_FIELD_HOST] = n->host;
  f.field[BM_FIELD_PLUGIN] = n->plugin;
  f.field[BM_FIELD_PLUGIN_INSTANCE] = n->plugin_instance;
  f.field[BM_FIELD_TYPE] = n->type;
  f.field[BM_FIELD_TYPE_INSTANCE] = n->type_instance;
  f.severity = severity_of(n->severity);
  if (!f.severity)
    return;
  f.missing = is_missing_report(n);

  for (size_t i = 0; i < conf.triggers_n; i++) {
    const struct bm_trigger *t = &conf.triggers[i];
    int want = bm_trigger_evaluate(t, &f);
    struct bm_gateway_ask a;

    if (want < 0)
      continue;
    a = (struct bm_gateway_ask){.kind = ASK_TRIGGER, .tag = t};
    snprintf(a.origin, sizeof(a.origin),
             "trigger %s: %s%s from %s/%s%s%s/%s%s%s",
             t->name, sev_names[f.severity], f.missing ? " (missing value)" : "", n->host, n->plugin,
             n->plugin_instance[0] ? "-" : "", n->plugin_instance, n->type,
             n->type_instance[0] ? "-" : "", n->type_instance);
    a.relay = t->relay;
    a.status = want;
    /* An OKAY from elsewhere may be the threshold plugin's start-up OKAY;
     * the plugin's own reports (a chain) are real events. */
    a.require_known =
        f.severity == BM_SEV_OKAY && strcmp(n->plugin, PLUGIN_NAME) != 0;
    a.no_wait = dispatching_events;
    bm_gateway_ask(gateways[t->gateway].gw, &a);
  }
}

static int bimetri_notification(const notification_t *n, user_data_t *ud)
{
  (void)ud;
  atomic_fetch_add(&notif_inflight, 1);
  /* With a failed configuration, Triggers may name Gateways that were
   * never created. */
  if (!config_failed && !atomic_load(&notif_closed))
    notification_act(n);
  atomic_fetch_sub(&notif_inflight, 1);
  return 0;
}

static int bimetri_shutdown(void)
{
  atomic_store(&notif_closed, true);
  started = false;
  stop_gateways(); /* a callback waiting for a mailbox's room returns */
  stop_dispatcher();
  for (int waited = 0; atomic_load(&notif_inflight) > 0; waited++) {
    struct timespec ms = {0, 1000 * 1000};
    if (waited == 10000) {
      ERROR(PLUGIN_NAME " plugin: a notification callback is still running "
                        "after 10 s; the plugin's memory is not freed");
      return -1;
    }
    nanosleep(&ms, NULL);
  }
  for (size_t i = 0; i < gateways_n; i++) {
    bm_gateway_free(gateways[i].gw);
    free(gateways[i].views);
  }
  gateways_n = 0;
  bm_rule_index_release(&rule_index);
  bm_plugconf_release(&conf);
  bm_gateway_library_cleanup();
  bm_log_set_sink(NULL, NULL);
  bm_log_set_max_level(BM_LOG_DEBUG);
  return 0;
}

void module_register(void)
{
  plugin_register_complex_config(PLUGIN_NAME, bimetri_config);
  plugin_register_init(PLUGIN_NAME, bimetri_init);
  plugin_register_notification(PLUGIN_NAME, bimetri_notification, NULL);
  plugin_register_shutdown(PLUGIN_NAME, bimetri_shutdown);
}
