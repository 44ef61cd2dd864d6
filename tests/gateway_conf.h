/*
 * gateway_conf.h - the Gateway configuration of the tests that run a
 * gateway without a broker (tests/gateway_test.c, the message fuzzer): the
 * plugin's defaults, 127.0.0.1 port 1 (nothing listens: every connection is
 * refused), appId flexyWattApp.1 and a token file.
 */
#ifndef BM_TEST_GATEWAY_CONF_H
#define BM_TEST_GATEWAY_CONF_H

#include <stdio.h>

#include "plugconf.h"

static inline void test_gateway_conf(struct bm_gateway_conf *c,
                                     const char *name, const char *token_path)
{
  bm_plugconf_gateway_defaults(c, name);
  snprintf(c->host, sizeof(c->host), "127.0.0.1");
  c->port = 1;
  snprintf(c->app_name, sizeof(c->app_name), "flexyWattApp");
  snprintf(c->instance_id, sizeof(c->instance_id), "1");
  c->token.kind = BM_TOKEN_FILE;
  snprintf(c->token.file, sizeof(c->token.file), "%s", token_path);
}

#endif
