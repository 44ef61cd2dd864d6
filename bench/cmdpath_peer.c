/*
 * cmdpath_peer.c - the command path's peer in bench/cmdpath.sh: a plain
 * libmosquitto client that publishes the same setExtDO commands the plugin
 * publishes, to the same broker and gateway simulator, and waits for their
 * notifications.
 *
 *   cmdpath_peer PORT TOKEN_FILE BASE_SEC MODE COUNT PAUSE_MS OUTFILE
 *                [--sync FILE] [--nodelay]
 *
 *   MODE lat    COUNT commands one at a time: each published, then the
 *               client waits for its extDOStateChanged notification before
 *               the next
 *   MODE burst  COUNT bursts of 64 commands: all 64 published at once, then
 *               the client waits for the 64 notifications
 *
 * After each command (lat) or burst, PAUSE_MS milliseconds of quiet.
 *
 * The commands are the plugin's bytes but for the ids: the same envelope
 * (appId "benchPeer.1", brand, JWT from TOKEN_FILE, userId, organizationId,
 * a correlationId of the plugin's form), QoS 2, on resource/commands, for
 * relays resourceId 9001, outputs 1..64 in turn, each command flipping its
 * relay. Answers come on application/third-party/benchPeer/1, subscribed at
 * QoS 2 before the first command, as the plugin does.
 *
 * The client runs libmosquitto's loop in its own (only) thread, so that
 * mosquitto_publish writes the PUBLISH at once: the least any libmosquitto
 * publisher does. With --sync, each command is first made durable the way
 * the plugin's journal does it with JournalSync always: a 150-byte record
 * (the size of the journal's COMMAND record) pwritten at the end of FILE,
 * then fsync; in burst mode the 64 records, then one fsync (group commit at
 * its best). --nodelay sets MOSQ_OPT_TCP_NODELAY (Nagle's algorithm off);
 * without it the socket has libmosquitto's defaults, as the plugin's has.
 *
 * One line per command in OUTFILE, times in ns since BASE_SEC
 * (CLOCK_REALTIME):
 *
 *   P <resourceId> <output> <status> <t_call> <t_notified>
 *
 * t_call is taken before the pwrite (with --sync), or before the payload is
 * formatted and published; t_notified in the message callback of the
 * notification. Exits 0 when every notification came, 1 otherwise (10 s
 * without progress, or 120 s in all), 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RELAYS 64
#define RESOURCE_ID 9001
#define APP_TOPIC "application/third-party/benchPeer/1"
#define STALL_NS 10000000000LL
#define TOTAL_NS 120000000000LL
#define RECORD_SIZE 150

struct cmd {
  char corr[40];
  int output, status;
  int64_t t_call, t_notified;
};

static long base_sec;
static struct cmd cmds[RELAYS];
static int cmds_n, notified_n;
static bool subscribed;

static int64_t now_ns(clockid_t clk)
{
  struct timespec ts;
  clock_gettime(clk, &ts);
  return (int64_t)(ts.tv_sec - (clk == CLOCK_REALTIME ? base_sec : 0)) *
             1000000000 +
         ts.tv_nsec;
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n,
                         const int *granted)
{
  (void)m;
  (void)ud;
  (void)mid;
  subscribed = n == 1 && granted[0] == 2;
}

/* A notification for one of the commands in flight: its time. */
static void on_message(struct mosquitto *m, void *ud,
                       const struct mosquitto_message *msg)
{
  int64_t t = now_ns(CLOCK_REALTIME);
  const char *p = msg->payload;
  (void)m;
  (void)ud;

  if (!p || !memmem(p, (size_t)msg->payloadlen,
                    "\"messageType\":\"notification\"", 28))
    return;
  for (int i = 0; i < cmds_n; i++) {
    char key[64];
    int n = snprintf(key, sizeof(key), "\"correlationId\":\"%s\"", cmds[i].corr);
    if (cmds[i].t_notified == 0 &&
        memmem(p, (size_t)msg->payloadlen, key, (size_t)n)) {
      cmds[i].t_notified = t;
      notified_n++;
      return;
    }
  }
}

/* Runs the loop until every command in flight was notified. */
static int wait_notified(struct mosquitto *m, int64_t deadline)
{
  int64_t stall = now_ns(CLOCK_MONOTONIC) + STALL_NS;
  int last = notified_n;

  while (notified_n < cmds_n) {
    int64_t now = now_ns(CLOCK_MONOTONIC);
    if (now >= stall || now >= deadline) {
      fprintf(stderr, "cmdpath_peer: %d of %d notifications\n", notified_n,
              cmds_n);
      return -1;
    }
    if (mosquitto_loop(m, 10, 1) != MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "cmdpath_peer: connection lost\n");
      return -1;
    }
    if (notified_n != last) {
      last = notified_n;
      stall = now_ns(CLOCK_MONOTONIC) + STALL_NS;
    }
  }
  return 0;
}

int main(int argc, char **argv)
{
  struct mosquitto *m = NULL;
  FILE *out = NULL, *tf = NULL;
  char token[4096], payload[8192], record[RECORD_SIZE];
  int port, count, burst, sync_fd = -1, status = 1, state[RELAYS] = {0};
  unsigned long long seq = 0, prefix;
  const char *sync_path = NULL;
  bool nodelay = false;
  off_t sync_off = 0;
  long pause_ms;
  int64_t deadline;

  for (int i = 8; i < argc; i++) {
    if (strcmp(argv[i], "--sync") == 0 && i + 1 < argc)
      sync_path = argv[++i];
    else if (strcmp(argv[i], "--nodelay") == 0)
      nodelay = true;
    else
      argc = 0; /* usage */
  }
  if (argc < 8) {
    fprintf(stderr, "usage: cmdpath_peer PORT TOKEN_FILE BASE_SEC lat|burst "
                    "COUNT PAUSE_MS OUTFILE [--sync FILE] [--nodelay]\n");
    return 2;
  }
  port = atoi(argv[1]);
  base_sec = atol(argv[3]);
  count = atoi(argv[5]);
  pause_ms = atol(argv[6]);
  if (strcmp(argv[4], "lat") == 0)
    burst = 1;
  else if (strcmp(argv[4], "burst") == 0)
    burst = RELAYS;
  else
    burst = 0;
  if (port <= 0 || port > 65535 || base_sec <= 0 || count <= 0 || !burst ||
      pause_ms < 0 || pause_ms > 10000) {
    fprintf(stderr, "cmdpath_peer: bad arguments\n");
    return 2;
  }
  deadline = now_ns(CLOCK_MONOTONIC) + TOTAL_NS;
  srand((unsigned)getpid() ^ (unsigned)now_ns(CLOCK_MONOTONIC));
  prefix = ((unsigned long long)rand() << 32) ^ (unsigned long long)rand();
  memset(record, 'c', sizeof(record));

  if (!(tf = fopen(argv[2], "r")) || !fgets(token, sizeof(token), tf)) {
    perror(argv[2]);
    goto out;
  }
  token[strcspn(token, "\r\n")] = '\0';
  if (!(out = fopen(argv[7], "w"))) {
    perror(argv[7]);
    goto out;
  }
  if (sync_path &&
      (sync_fd = open(sync_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0) {
    perror(sync_path);
    goto out;
  }

  mosquitto_lib_init();
  char id[64];
  snprintf(id, sizeof(id), "cmdpath-peer-%d", (int)getpid());
  if (!(m = mosquitto_new(id, true, NULL))) {
    fprintf(stderr, "cmdpath_peer: mosquitto_new failed\n");
    goto out;
  }
  if (nodelay &&
      mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1) != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "cmdpath_peer: MOSQ_OPT_TCP_NODELAY failed\n");
    goto out;
  }
  mosquitto_subscribe_callback_set(m, on_subscribe);
  mosquitto_message_callback_set(m, on_message);
  if (mosquitto_connect(m, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS ||
      mosquitto_subscribe(m, NULL, APP_TOPIC, 2) != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "cmdpath_peer: cannot connect to 127.0.0.1:%d\n", port);
    goto out;
  }
  while (!subscribed) {
    if (now_ns(CLOCK_MONOTONIC) >= deadline ||
        mosquitto_loop(m, 100, 1) != MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "cmdpath_peer: not subscribed\n");
      goto out;
    }
  }

  for (int round = 0, next = 0; round < count; round++) {
    cmds_n = notified_n = 0;
    for (int i = 0; i < burst; i++) {
      struct cmd *c = &cmds[cmds_n++];
      int r = next++ % RELAYS;
      c->output = r + 1;
      c->status = state[r] = !state[r];
      c->t_notified = 0;
      snprintf(c->corr, sizeof(c->corr), "%016llx-%llu", prefix, ++seq);
    }
    for (int i = 0; i < cmds_n; i++) {
      struct cmd *c = &cmds[i];
      int len;

      c->t_call = now_ns(CLOCK_REALTIME);
      if (sync_fd >= 0) {
        /* lat: this command's record; burst: all 64 before the first. */
        if (burst == 1 || i == 0) {
          for (int k = 0; k < burst; k++, sync_off += RECORD_SIZE)
            if (pwrite(sync_fd, record, sizeof(record), sync_off) !=
                (ssize_t)sizeof(record)) {
              perror("cmdpath_peer: pwrite");
              goto out;
            }
          if (fsync(sync_fd) != 0) {
            perror("cmdpath_peer: fsync");
            goto out;
          }
        }
      }
      len = snprintf(payload, sizeof(payload),
                     "{\"messageType\":\"commandMessage\",\"appId\":"
                     "\"benchPeer.1\",\"brand\":\"Bimetri\",\"jwtToken\":\"%s\","
                     "\"userId\":12345,\"organizationId\":23456,\"command\":"
                     "\"setExtDO\",\"correlationId\":\"%s\",\"parameters\":{"
                     "\"resourceId\":%d,\"output\":%d,\"status\":%d}}",
                     token, c->corr, RESOURCE_ID, c->output, c->status);
      if (mosquitto_publish(m, NULL, "resource/commands", len, payload, 2,
                            false) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cmdpath_peer: publish failed\n");
        goto out;
      }
    }
    if (wait_notified(m, deadline) != 0)
      goto out;
    for (int i = 0; i < cmds_n; i++)
      fprintf(out, "P %d %d %d %" PRId64 " %" PRId64 "\n", RESOURCE_ID,
              cmds[i].output, cmds[i].status, cmds[i].t_call,
              cmds[i].t_notified);
    struct timespec nap = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
      ;
  }
  status = 0;
out:
  if (m) {
    mosquitto_disconnect(m);
    mosquitto_destroy(m);
  }
  mosquitto_lib_cleanup();
  if (sync_fd >= 0)
    close(sync_fd);
  if (tf)
    fclose(tf);
  if (out && fclose(out) != 0) {
    perror(argv[7]);
    status = 1;
  }
  return status;
}
