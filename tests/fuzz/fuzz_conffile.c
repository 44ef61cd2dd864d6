/*
 * fuzz_conffile.c - libFuzzer harness: a collectd configuration an operator
 * (or a tool) wrote, through bm_conf_parse, the parser bimetri-ctl reads
 * collectd.conf with.  bm_conf_parse never touches the file system, so
 * Include lines are parsed but not followed.  Every item of the tree is
 * walked and checked against the invariants conffile.h states.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conffile.h"

static void check(const struct bm_conf_item *it, int depth)
{
  size_t klen = strlen(it->key);

  if (depth > BM_CONF_MAX_DEPTH + 1 || klen > BM_CONF_MAX_KEY ||
      it->values_num > BM_CONF_MAX_VALUES ||
      (depth > 0 && (klen == 0 || it->line < 1 || !it->file)) ||
      (depth > 0 && !it->is_block &&
       (it->values_num == 0 || it->children_num > 0)))
    abort();
  for (size_t i = 0; i < it->values_num; i++) {
    const struct bm_conf_value *v = &it->values[i];
    if (v->type == BM_CONF_STRING) {
      if (!v->string || strlen(v->string) > BM_CONF_MAX_STRING)
        abort();
    } else if (v->type != BM_CONF_NUMBER && v->type != BM_CONF_BOOLEAN) {
      abort();
    }
  }
  for (size_t i = 0; i < it->children_num; i++)
    check(&it->children[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[256];
  bm_conf_t *conf = bm_conf_parse((const char *)data, size, "fuzz.conf", err,
                                  sizeof(err));

  if (conf) {
    check(bm_conf_root(conf), 0);
    bm_conf_free(conf);
  } else if (strncmp(err, "fuzz.conf:", 10) != 0) {
    abort(); /* every error names the file and the line */
  }
  return 0;
}
