/*
 * ingest_pub.c - publishes every line of a file as one MQTT message, as fast
 * as libmosquitto takes them, then waits until all are sent (QoS 0) or
 * acknowledged (QoS 1: PUBACK, QoS 2: PUBCOMP) and disconnects.  The
 * ingest benchmark's publisher: faster than `mosquitto_pub -l`, which
 * writes one message per loop turn.
 *
 *   ingest_pub PORT TOPIC QOS FILE
 *
 * With TOPIC "-", each line is "topic payload" (one space between). Prints
 * the CLOCK_REALTIME (ns) at which the first message was handed to
 * libmosquitto, the benchmark's start. Exits 0 when every message went
 * out, 1 otherwise (after 120 s at most). QoS 1 and 2 messages are kept
 * 20 in flight, or INGEST_PUB_INFLIGHT (0: no limit).
 */
#include <inttypes.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int done;

static void on_publish(struct mosquitto *m, void *obj, int mid)
{
  (void)m;
  (void)obj;
  (void)mid;
  __atomic_add_fetch(&done, 1, __ATOMIC_RELAXED);
}

int main(int argc, char **argv)
{
  if (argc != 5)
    return 2;
  int port = atoi(argv[1]), qos = atoi(argv[3]), sent = 0;
  const char *env = getenv("INGEST_PUB_INFLIGHT");
  int inflight = env && *env ? atoi(env) : 20;
  FILE *f = fopen(argv[4], "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  struct mosquitto *m;

  if (!f)
    return 1;
  mosquitto_lib_init();
  m = mosquitto_new(NULL, true, NULL);
  if (!m)
    return 1;
  mosquitto_publish_callback_set(m, on_publish);
  mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, inflight ? inflight : 65535);
  mosquitto_max_inflight_messages_set(m, (unsigned)inflight);
  if (mosquitto_connect(m, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS ||
      mosquitto_loop_start(m) != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "ingest_pub: cannot connect to 127.0.0.1:%d\n", port);
    return 1;
  }
  struct timespec t0;
  clock_gettime(CLOCK_REALTIME, &t0);
  printf("%" PRId64 "\n", (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec);
  fflush(stdout);
  while ((len = getline(&line, &cap, f)) > 0) {
    const char *topic = argv[2], *payload = line;
    if (line[len - 1] == '\n')
      line[--len] = '\0';
    if (strcmp(topic, "-") == 0) {
      char *sp = strchr(line, ' ');
      if (!sp) {
        fprintf(stderr, "ingest_pub: line without \"topic payload\"\n");
        return 1;
      }
      *sp = '\0';
      topic = line;
      payload = sp + 1;
      len -= payload - line;
    }
    if (mosquitto_publish(m, NULL, topic, (int)len, payload, qos, false) !=
        MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "ingest_pub: publish failed\n");
      return 1;
    }
    sent++;
  }
  for (int i = 0; i < 120000 &&
                  __atomic_load_n(&done, __ATOMIC_RELAXED) < sent; i++)
    usleep(1000);
  int ok = __atomic_load_n(&done, __ATOMIC_RELAXED) == sent;
  mosquitto_disconnect(m);
  mosquitto_loop_stop(m, false);
  mosquitto_destroy(m);
  mosquitto_lib_cleanup();
  free(line);
  fclose(f);
  if (!ok)
    fprintf(stderr, "ingest_pub: %d of %d published\n", done, sent);
  return ok ? 0 : 1;
}
