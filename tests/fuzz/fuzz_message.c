/*
 * fuzz_message.c - libFuzzer harness: one MQTT payload from the gateway,
 * through bm_gateway_receive, the function the MQTT callback calls
 * (size limit, decode, validation, appId check, apply to the relay table,
 * events).  A gateway with two relays and a pending command of ours, so that
 * responses and notifications can match something.  Each input is also
 * parsed by src/jtree.c and by yajl_tree_parse, which must agree
 * (tests/jtree_compare.h): a difference aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway.h"
#include "log.h"
#include "message.h"

#include "../gateway_conf.h"
#include "../jtree_compare.h"

#define TOPIC "application/third-party/flexyWattApp/1"

static bm_gateway_t *gw;

static void quiet(int level, const char *line, void *ctx)
{
  (void)level;
  (void)line;
  (void)ctx;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  static struct bm_gateway_conf c;
  char err[256], path[] = "/tmp/bm-fuzz-token.XXXXXX";
  int fd = mkstemp(path);

  (void)argc;
  (void)argv;
  bm_log_set_sink(quiet, NULL);
  if (fd < 0 || write(fd, "a.b.c\n", 6) != 6) {
    perror("token file");
    abort();
  }
  close(fd);
  test_gateway_conf(&c, "fuzz", path);
  if (!(gw = bm_gateway_new(&c, NULL, err, sizeof(err))) ||
      bm_gateway_add_relay(gw, "pump", 101, 4) < 0 ||
      bm_gateway_add_relay(gw, "fan", 102, 1) < 0) {
    fprintf(stderr, "setup: %s\n", err);
    abort();
  }
  unlink(path);
  bm_gateway_request(gw, 0, 1, "fuzz", false, NULL, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static char text[BM_MSG_MAX_SIZE + 1];
  char why[600];

  if (size <= BM_MSG_MAX_SIZE && memchr(data, 0, size) == NULL) {
    memcpy(text, data, size);
    text[size] = '\0';
    if (jtree_compare(text, size, why, sizeof(why)) == 0) {
      fprintf(stderr, "jtree and yajl_tree differ: %s\n", why);
      abort();
    }
  }
  bm_gateway_receive(gw, TOPIC, data, size);
  return 0;
}
