/*
 * rule.c - see rule.h.
 */
#include "rule.h"

#include "alloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bm_rule_init(struct bm_rule *r, const char *name)
{
  memset(r, 0, sizeof(*r));
  r->gateway = r->relay = -1;
  r->fail_safe = -1;
  r->decision = -1;
  r->on_at = r->off_at = NAN;
  if (!(r->name = bm_strdup(name)))
    return -1;
  pthread_mutex_init(&r->lock, NULL);
  pthread_mutex_init(&r->order, NULL);
  return 0;
}

void bm_rule_release(struct bm_rule *r)
{
  if (!r->name)
    return;
  for (int f = 0; f < BM_FIELD_COUNT; f++)
    bm_pattern_release(&r->pattern[f]);
  pthread_mutex_destroy(&r->lock);
  pthread_mutex_destroy(&r->order);
  free(r->name);
  memset(r, 0, sizeof(*r));
}

int bm_rule_check(const struct bm_rule *r, char *err, size_t errlen)
{
  if (isnan(r->on_at) || isnan(r->off_at)) {
    snprintf(err, errlen, "needs OnAbove and OffBelow (a cooler) or OnBelow "
                          "and OffAbove (a heater)");
    return -1;
  }
  if (!r->heater && !(r->on_at > r->off_at)) {
    snprintf(err, errlen, "OnAbove (%g) must be above OffBelow (%g)", r->on_at,
             r->off_at);
    return -1;
  }
  if (r->heater && !(r->on_at < r->off_at)) {
    snprintf(err, errlen, "OnBelow (%g) must be below OffAbove (%g)", r->on_at,
             r->off_at);
    return -1;
  }
  if (r->fail_safe >= 0 && r->stale_after <= 0) {
    snprintf(err, errlen, "FailSafe needs StaleAfter");
    return -1;
  }
  return 0;
}

bool bm_rule_matches(const struct bm_rule *r, const char *const field[])
{
  for (int f = 0; f < BM_FIELD_COUNT; f++) {
    const struct bm_pattern *p = &r->pattern[f];
    const char *s = field[f] ? field[f] : "";
    if (!p->set)
      continue;
    if (p->is_regex ? regexec(&p->regex, s, 0, NULL, 0) != 0
                    : strcmp(p->text, s) != 0)
      return false;
  }
  return true;
}

/* The hysteresis: the decision a value gives, or `previous` in between. */
static int level(const struct bm_rule *r, double v, int previous)
{
  if (isnan(v))
    return previous;
  if (!r->heater)
    return v > r->on_at ? 1 : v < r->off_at ? 0 : previous;
  return v < r->on_at ? 1 : v > r->off_at ? 0 : previous;
}

int bm_rule_feed(struct bm_rule *r, double value, double now, int *decision)
{
  int out = -1, d;

  pthread_mutex_lock(&r->lock);
  d = level(r, value, r->decision);
  if (d >= 0 &&
      (d != r->decision || r->stale || (r->reask && !isnan(value)))) {
    out = d;
    r->reask = false;
  }
  r->decision = d;
  if (!isnan(value)) {
    r->last_value_at = now;
    r->stale = false;
  }
  if (decision)
    *decision = r->decision;
  pthread_mutex_unlock(&r->lock);
  return out;
}

bool bm_rule_refused(struct bm_rule *r)
{
  bool before;

  pthread_mutex_lock(&r->lock);
  before = r->refused;
  r->refused = true;
  r->reask = true;
  pthread_mutex_unlock(&r->lock);
  return before;
}

void bm_rule_answered(struct bm_rule *r)
{
  pthread_mutex_lock(&r->lock);
  r->refused = false;
  pthread_mutex_unlock(&r->lock);
}

int bm_rule_tick(struct bm_rule *r, double now)
{
  int out = -1;

  if (r->stale_after <= 0)
    return -1;
  pthread_mutex_lock(&r->lock);
  /* Staleness counts only after a first value: at start nothing is known,
   * and the start is no outage. */
  if (r->last_value_at > 0 && !r->stale &&
      now - r->last_value_at >= r->stale_after) {
    r->stale = true;
    if (r->fail_safe >= 0) {
      r->decision = r->fail_safe;
      out = r->fail_safe;
    }
  }
  pthread_mutex_unlock(&r->lock);
  return out;
}

/* ---- index --------------------------------------------------------------- */

static bool exact(const struct bm_pattern *p) { return p->set && !p->is_regex; }

static uint64_t index_key(int fields, const char *plugin, const char *type,
                          const char *type_instance)
{
  char key[3 * BM_RULE_NAME_MAX + 3];
  size_t a = strnlen(plugin, BM_RULE_NAME_MAX);
  size_t b = strnlen(type, BM_RULE_NAME_MAX);
  size_t c = fields == 3 && type_instance
                 ? strnlen(type_instance, BM_RULE_NAME_MAX)
                 : 0;

  memcpy(key, plugin, a);
  key[a] = '/'; /* in no plugin or type name */
  memcpy(key + a + 1, type, b);
  key[a + 1 + b] = '/';
  memcpy(key + a + 2 + b, type_instance ? type_instance : "", c);
  key[a + 2 + b + c] = '\0';
  return bm_idmap_hash(key);
}

int bm_rule_index_build(struct bm_rule_index *x, struct bm_rule *const *rules,
                        size_t n)
{
  memset(x, 0, sizeof(*x));
  x->fields = 3;
  for (size_t i = 0; i < n; i++) {
    const struct bm_pattern *p = rules[i]->pattern;
    if (!exact(&p[BM_FIELD_PLUGIN]) || !exact(&p[BM_FIELD_TYPE]))
      x->fields = 0;
    else if (!exact(&p[BM_FIELD_TYPE_INSTANCE]) && x->fields == 3)
      x->fields = 2;
  }
  for (size_t i = 0; x->fields && i < n; i++) {
    const struct bm_pattern *p = rules[i]->pattern;
    int k = 0;

    while (k < x->plugins_n && strcmp(x->plugins[k], p[BM_FIELD_PLUGIN].text))
      k++;
    if (k == x->plugins_n && x->plugins_n >= 0) {
      if (x->plugins_n < BM_RULE_INDEX_PLUGINS)
        x->plugins[x->plugins_n++] = p[BM_FIELD_PLUGIN].text;
      else
        x->plugins_n = -1; /* too many to be quicker than the hash */
    }
    if (bm_idmap_put(&x->keys,
                     index_key(x->fields, p[BM_FIELD_PLUGIN].text,
                               p[BM_FIELD_TYPE].text,
                               p[BM_FIELD_TYPE_INSTANCE].text),
                     1) != 0) {
      bm_rule_index_release(x);
      return -1;
    }
  }
  return 0;
}

bool bm_rule_index_may_match(const struct bm_rule_index *x, const char *plugin,
                             const char *type, const char *type_instance)
{
  if (!x->fields)
    return true;
  if (x->plugins_n > 0) {
    int k = 0;
    while (k < x->plugins_n && strcmp(plugin, x->plugins[k]) != 0)
      k++;
    if (k == x->plugins_n)
      return false;
  }
  return bm_idmap_get(&x->keys,
                      index_key(x->fields, plugin, type, type_instance)) >= 0;
}

void bm_rule_index_release(struct bm_rule_index *x)
{
  bm_idmap_release(&x->keys);
  memset(x, 0, sizeof(*x));
}
