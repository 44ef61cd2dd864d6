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
  return 0;
}

void bm_rule_release(struct bm_rule *r)
{
  if (!r->name)
    return;
  for (int f = 0; f < BM_FIELD_COUNT; f++)
    bm_pattern_release(&r->pattern[f]);
  pthread_mutex_destroy(&r->lock);
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
  if (d >= 0 && (d != r->decision || r->stale))
    out = d;
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
