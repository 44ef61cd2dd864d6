/*
 * match.c - see match.h.
 */
#include "match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OWN_PLUGIN "bimetri"

static const char *field_names[BM_FIELD_COUNT] = {
    "Host", "Plugin", "PluginInstance", "Type", "TypeInstance"};

const char *bm_field_name(enum bm_field f)
{
  return (f >= 0 && f < BM_FIELD_COUNT) ? field_names[f] : NULL;
}

int bm_trigger_init(struct bm_trigger *t, const char *name)
{
  memset(t, 0, sizeof(*t));
  for (int s = 0; s <= BM_SEV_FAILURE; s++)
    t->on[s] = -1;
  t->gateway = t->relay = -1;
  t->on_missing = -1;
  t->name = strdup(name);
  return t->name ? 0 : -1;
}

void bm_trigger_release(struct bm_trigger *t)
{
  for (int f = 0; f < BM_FIELD_COUNT; f++) {
    struct bm_pattern *p = &t->pattern[f];
    if (p->set && p->is_regex)
      regfree(&p->regex);
    free(p->text);
  }
  free(t->name);
  memset(t, 0, sizeof(*t));
}

int bm_trigger_set_pattern(struct bm_trigger *t, enum bm_field f,
                           const char *spec, char *err, size_t errlen)
{
  struct bm_pattern *p = &t->pattern[f];
  size_t len = strlen(spec);
  int rc;

  if (p->set) {
    snprintf(err, errlen, "option \"%s\" given twice", bm_field_name(f));
    return -1;
  }
  p->is_regex = len >= 2 && spec[0] == '/' && spec[len - 1] == '/';
  if (len == 0 || (p->is_regex && len == 2)) {
    snprintf(err, errlen, "option \"%s\": empty pattern", bm_field_name(f));
    return -1;
  }
  p->text = p->is_regex ? strndup(spec + 1, len - 2) : strdup(spec);
  if (!p->text) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (p->is_regex) {
    rc = regcomp(&p->regex, p->text, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
      char msg[128];
      regerror(rc, &p->regex, msg, sizeof(msg));
      snprintf(err, errlen, "option \"%s\": invalid regex \"%s\": %s",
               bm_field_name(f), p->text, msg);
      free(p->text);
      p->text = NULL;
      return -1;
    }
  }
  p->set = true;
  return 0;
}

static bool pattern_test(const struct bm_pattern *p, const char *s)
{
  if (!p->set)
    return true;
  if (p->is_regex)
    return regexec(&p->regex, s, 0, NULL, 0) == 0;
  return strcmp(p->text, s) == 0;
}

int bm_trigger_evaluate(const struct bm_trigger *t,
                        const struct bm_notif_fields *n)
{
  const char *plugin = n->field[BM_FIELD_PLUGIN] ? n->field[BM_FIELD_PLUGIN] : "";

  int want;

  if (n->severity < BM_SEV_OKAY || n->severity > BM_SEV_FAILURE)
    return -1;
  want = n->missing ? t->on_missing : t->on[n->severity];
  if (want < 0)
    return -1;
  /* The plugin's own reports need a Plugin pattern that names it. */
  if (strcmp(plugin, OWN_PLUGIN) == 0 &&
      !(t->pattern[BM_FIELD_PLUGIN].set &&
        strstr(t->pattern[BM_FIELD_PLUGIN].text, OWN_PLUGIN)))
    return -1;
  for (int f = 0; f < BM_FIELD_COUNT; f++)
    if (!pattern_test(&t->pattern[f], n->field[f] ? n->field[f] : ""))
      return -1;
  return want;
}
