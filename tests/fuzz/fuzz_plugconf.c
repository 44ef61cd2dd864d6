/*
 * fuzz_plugconf.c - libFuzzer harness: a collectd configuration through
 * bm_conf_parse and then the <Plugin bimetri> reader (plugconf.h), as
 * bimetri-ctl reads collectd.conf.  Every <Plugin bimetri> block is added
 * in turn (the root itself when there is none, so that bare options are
 * read too).  Secret files are not read; journal paths are only resolved.
 * Checked: a refusal reports exactly one non-empty error; what is accepted
 * keeps the invariants plugconf.h states (names, at least one Relay per
 * Gateway, indexes in range).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conffile.h"
#include "log.h"
#include "plugconf.h"

static int errors;

static void on_error(void *ctx, const struct bm_conf_item *where,
                     const char *message)
{
  (void)ctx;
  (void)where;
  if (!message[0])
    abort();
  errors++;
}

static void quiet(int level, const char *line, void *ctx)
{
  (void)level;
  (void)line;
  (void)ctx;
}

static void check(const struct bm_plugconf *pc)
{
  if (pc->gateways_n < 1 || pc->gateways_n > BM_PLUGCONF_MAX_GATEWAYS)
    abort();
  for (size_t g = 0; g < pc->gateways_n; g++) {
    const struct bm_plugconf_gateway *gw = &pc->gateways[g];
    if (!gw->c.name[0] || gw->relays_n < 1 || !gw->c.journal_file[0] ||
        gw->c.port < 1 || gw->c.port > 65535)
      abort();
    for (size_t r = 0; r < gw->relays_n; r++)
      if (!gw->relays[r].name[0] || gw->relays[r].output < 0 ||
          gw->relays[r].output > 65535 || gw->relays[r].resource_id < 0)
        abort();
  }
  for (size_t i = 0; i < pc->interlocks_n; i++) {
    const struct bm_plugconf_interlock *il = &pc->interlocks[i];
    if (il->gateway < 0 || (size_t)il->gateway >= pc->gateways_n ||
        il->n < 2 || il->n > BM_PLUGCONF_MAX_INTERLOCK)
      abort();
    for (int k = 0; k < il->n; k++)
      if (il->relays[k] < 0 ||
          (size_t)il->relays[k] >= pc->gateways[il->gateway].relays_n)
        abort();
  }
  for (size_t i = 0; i < pc->triggers_n; i++)
    if (pc->triggers[i].gateway < 0 ||
        (size_t)pc->triggers[i].gateway >= pc->gateways_n ||
        pc->triggers[i].relay < 0 ||
        (size_t)pc->triggers[i].relay >=
            pc->gateways[pc->triggers[i].gateway].relays_n)
      abort();
  for (size_t i = 0; i < pc->rules_n; i++)
    if (pc->rules[i]->gateway < 0 ||
        (size_t)pc->rules[i]->gateway >= pc->gateways_n ||
        pc->rules[i]->relay < 0 ||
        (size_t)pc->rules[i]->relay >=
            pc->gateways[pc->rules[i]->gateway].relays_n)
      abort();
}

/* Adds one block; stops the run at the first refusal, as the plugin. */
static int add(struct bm_plugconf *pc, const struct bm_conf_item *block)
{
  struct bm_plugconf_opts o = {0};
  int rc;

  o.base_dir = "/nonexistent";
  o.error = on_error;
  errors = 0;
  rc = bm_plugconf_add(pc, block, &o);
  if (rc == 0 ? errors != 0 : errors != 1)
    abort();
  if (rc == 0)
    check(pc);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct bm_plugconf pc = BM_PLUGCONF_INIT;
  const struct bm_conf_item *root;
  char err[256];
  bm_conf_t *conf = bm_conf_parse((const char *)data, size, "fuzz.conf", err,
                                  sizeof(err));
  bool any = false;

  bm_log_set_sink(quiet, NULL);
  if (!conf)
    return 0;
  root = bm_conf_root(conf);
  for (size_t i = 0; i < root->children_num; i++) {
    const struct bm_conf_item *it = &root->children[i];
    if (strcasecmp(it->key, "Plugin") != 0 || it->values_num < 1 ||
        it->values[0].type != BM_CONF_STRING ||
        strcasecmp(it->values[0].string, "bimetri") != 0)
      continue;
    any = true;
    if (add(&pc, it) != 0)
      break;
  }
  if (!any)
    add(&pc, root);
  bm_plugconf_release(&pc);
  bm_conf_free(conf);
  return 0;
}
