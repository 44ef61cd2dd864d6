/*
 * bm_floor.c - a collectd plugin for the ingest benchmark: the least a
 * collectd plugin can do for each MQTT message it is to turn into a
 * metric. It subscribes with libmosquitto and, for every message,
 * dispatches one gauge, without reading the payload: no decode, no
 * validation, no state, no journal. Reading and dispatching run in two
 * threads, the way the bimetri plugin splits them (its Gateway thread and
 * its dispatcher): libmosquitto's loop counts the messages, a second
 * thread dispatches a value for each one counted, in batches of whatever
 * arrived meanwhile. (Dispatching in libmosquitto's loop instead measured
 * slower here: the socket waits while collectd copies each value.)
 *
 *   LoadPlugin bm_floor
 *   <Plugin bm_floor>
 *     Host "127.0.0.1"
 *     Port 1883
 *     Topic "application/third-party/benchFloorApp/1"
 *     QoS 0
 *     Relays 100
 *   </Plugin>
 *
 * Message i becomes bmfloor/bool-r<i % Relays> with value (i / Relays) % 2,
 * the relays and values bench/ingest.sh's messages carry, so collectd's
 * cache holds as many entries as for the bimetri plugin. What it costs is
 * libmosquitto's reading, a hand-over between two threads and collectd's
 * dispatch: a floor under any collectd plugin doing the same job, the
 * bimetri plugin included.
 */
#include <collectd/core/daemon/plugin.h>
#include <collectd/core/utils/common/common.h>

#include <mosquitto.h>
#include <pthread.h>

static char host[256] = "127.0.0.1";
static int port = 1883;
static char topic[256];
static int qos;
static int relays = 100;

static struct mosquitto *mosq;
static pthread_t loop_thread, dispatch_thread;
static bool loop_running, dispatch_running;

/* Messages counted by the loop, values dispatched; under lock. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arrived = PTHREAD_COND_INITIALIZER;
static unsigned long long received, dispatched;
static bool dispatcher_waits, stopping;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
  (void)ud;
  if (rc != 0) {
    ERROR("bm_floor plugin: connect refused: %s", mosquitto_connack_string(rc));
    return;
  }
  rc = mosquitto_subscribe(m, NULL, topic, qos);
  if (rc != MOSQ_ERR_SUCCESS)
    ERROR("bm_floor plugin: subscribe: %s", mosquitto_strerror(rc));
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n,
                         const int *granted)
{
  (void)m, (void)ud, (void)mid;
  INFO("bm_floor plugin: subscribed to \"%s\" (QoS %d)", topic,
       n > 0 ? granted[0] : -1);
}

static void on_message(struct mosquitto *m, void *ud,
                       const struct mosquitto_message *msg)
{
  (void)m, (void)ud, (void)msg;
  pthread_mutex_lock(&lock);
  received++;
  if (dispatcher_waits)
    pthread_cond_signal(&arrived);
  pthread_mutex_unlock(&lock);
}

static void dispatch_one(unsigned long long i)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.gauge = (gauge_t)((i / (unsigned)relays) % 2)};

  vl.values = &v;
  vl.values_len = 1;
  sstrncpy(vl.plugin, "bmfloor", sizeof(vl.plugin));
  sstrncpy(vl.type, "bool", sizeof(vl.type));
  snprintf(vl.type_instance, sizeof(vl.type_instance), "r%llu",
           i % (unsigned)relays);
  plugin_dispatch_values(&vl);
}

/* A value for each message counted, no lock held while dispatching. */
static void *dispatch_run(void *arg)
{
  (void)arg;
  pthread_mutex_lock(&lock);
  while (!stopping) {
    unsigned long long from = dispatched, to = received;

    if (from == to) {
      dispatcher_waits = true;
      pthread_cond_wait(&arrived, &lock);
      dispatcher_waits = false;
      continue;
    }
    pthread_mutex_unlock(&lock);
    for (unsigned long long i = from; i < to; i++)
      dispatch_one(i);
    pthread_mutex_lock(&lock);
    dispatched = to;
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

static void *loop_run(void *arg)
{
  int rc = mosquitto_loop_forever(arg, -1, 1);

  if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
    ERROR("bm_floor plugin: loop ended: %s", mosquitto_strerror(rc));
  return NULL;
}

static int floor_config(oconfig_item_t *ci)
{
  for (int i = 0; i < ci->children_num; i++) {
    oconfig_item_t *c = ci->children + i;
    int rc;

    if (strcasecmp(c->key, "Host") == 0)
      rc = cf_util_get_string_buffer(c, host, sizeof(host));
    else if (strcasecmp(c->key, "Port") == 0)
      rc = cf_util_get_int(c, &port);
    else if (strcasecmp(c->key, "Topic") == 0)
      rc = cf_util_get_string_buffer(c, topic, sizeof(topic));
    else if (strcasecmp(c->key, "QoS") == 0)
      rc = cf_util_get_int(c, &qos);
    else if (strcasecmp(c->key, "Relays") == 0)
      rc = cf_util_get_int(c, &relays);
    else {
      ERROR("bm_floor plugin: unknown option \"%s\"", c->key);
      return -1;
    }
    if (rc != 0)
      return -1;
  }
  if (!topic[0] || qos < 0 || qos > 2 || relays < 1) {
    ERROR("bm_floor plugin: needs Topic, QoS 0..2 and Relays >= 1");
    return -1;
  }
  return 0;
}

static int floor_init(void)
{
  int rc;

  mosquitto_lib_init();
  mosq = mosquitto_new("bench-floor", true, NULL);
  if (!mosq) {
    ERROR("bm_floor plugin: mosquitto_new failed");
    return -1;
  }
  mosquitto_connect_callback_set(mosq, on_connect);
  mosquitto_subscribe_callback_set(mosq, on_subscribe);
  mosquitto_message_callback_set(mosq, on_message);
  rc = mosquitto_connect(mosq, host, port, 60);
  if (rc != MOSQ_ERR_SUCCESS) {
    ERROR("bm_floor plugin: connect to %s:%d: %s", host, port,
          mosquitto_strerror(rc));
    return -1;
  }
  /* From plugin_thread_create: the dispatching thread needs collectd's
   * context; the loop's gets one too, as the bimetri plugin's does. */
  if (plugin_thread_create(&dispatch_thread, dispatch_run, NULL,
                           "bm_floor/d") != 0) {
    ERROR("bm_floor plugin: cannot start its dispatching thread");
    return -1;
  }
  dispatch_running = true;
  if (plugin_thread_create(&loop_thread, loop_run, mosq, "bm_floor") != 0) {
    ERROR("bm_floor plugin: cannot start its thread");
    return -1;
  }
  loop_running = true;
  return 0;
}

static int floor_shutdown(void)
{
  if (loop_running) {
    mosquitto_disconnect(mosq);
    pthread_join(loop_thread, NULL);
    loop_running = false;
  }
  if (dispatch_running) {
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&arrived);
    pthread_mutex_unlock(&lock);
    pthread_join(dispatch_thread, NULL);
    dispatch_running = false;
  }
  mosquitto_destroy(mosq);
  mosq = NULL;
  mosquitto_lib_cleanup();
  return 0;
}

void module_register(void)
{
  plugin_register_complex_config("bm_floor", floor_config);
  plugin_register_init("bm_floor", floor_init);
  plugin_register_shutdown("bm_floor", floor_shutdown);
}
