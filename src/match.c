/*
 * match.c - see match.h.
 */
#include "match.h"

#include "alloc.h"

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
  t->name = bm_strdup(name);
  return t->name ? 0 : -1;
}

void bm_trigger_release(struct bm_trigger *t)
{
  for (int f = 0; f < BM_FIELD_COUNT; f++)
    bm_pattern_release(&t->pattern[f]);
  free(t->name);
  memset(t, 0, sizeof(*t));
}

int bm_pattern_set(struct bm_pattern *p, enum bm_field f, const char *spec,
                   char *err, size_t errlen)
{
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
  p->text = p->is_regex ? bm_strndup(spec + 1, len - 2) : bm_strdup(spec);
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

void bm_pattern_release(struct bm_pattern *p)
{
  if (p->set && p->is_regex)
    regfree(&p->regex);
  free(p->text);
  memset(p, 0, sizeof(*p));
}

int bm_trigger_set_pattern(struct bm_trigger *t, enum bm_field f,
                           const char *spec, char *err, size_t errlen)
{
  return bm_pattern_set(&t->pattern[f], f, spec, err, errlen);
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

/* ---- chains ------------------------------------------------------------ */

/* Whether trigger t reacts to any of the plugin's own notifications about
 * relay r. */
static bool watches(const struct bm_trigger *t, const struct bm_relay_ref *r)
{
  static const char *types[] = {"relay_on", "relay_off", "relay_result",
                                "relay_drift"};
  struct bm_notif_fields f;

  f.field[BM_FIELD_HOST] = NULL; /* any host: the pattern is checked below */
  f.field[BM_FIELD_PLUGIN] = OWN_PLUGIN;
  f.field[BM_FIELD_PLUGIN_INSTANCE] = r->gateway;
  f.field[BM_FIELD_TYPE_INSTANCE] = r->relay;
  f.missing = false;
  for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
    f.field[BM_FIELD_TYPE] = types[k];
    for (int sev = BM_SEV_OKAY; sev <= BM_SEV_FAILURE; sev++) {
      struct bm_trigger loose = *t;
      f.severity = (enum bm_severity)sev;
      /* The host of our notifications is whatever collectd's Hostname is:
       * assume the Host pattern matches it. */
      loose.pattern[BM_FIELD_HOST].set = false;
      if (bm_trigger_evaluate(&loose, &f) >= 0)
        return true;
    }
  }
  return false;
}

int bm_triggers_check_cycles(const struct bm_trigger *triggers, size_t n,
                             const struct bm_relay_ref *relays,
                             size_t n_relays, char *err, size_t errlen)
{
  /* Nodes are relays; edge i -> j through trigger k.  Depth-first search
   * with colours; small graphs (configuration time), so adjacency is
   * recomputed instead of stored. */
  int *colour = bm_calloc(n_relays + 1, sizeof(int));
  int *via = bm_calloc(n_relays + 1, sizeof(int));   /* trigger into a node */
  int *from = bm_calloc(n_relays + 1, sizeof(int));  /* DFS parent */
  int *stack = bm_calloc(n_relays + 1, sizeof(int));
  size_t *next = bm_calloc(n_relays + 1, sizeof(size_t)); /* next trigger */
  int status = 0;

  if (!colour || !via || !from || !stack || !next) {
    snprintf(err, errlen, "out of memory");
    status = -1;
    goto out;
  }
  for (size_t root = 0; root < n_relays && status == 0; root++) {
    int depth = 0;
    if (colour[root])
      continue;
    stack[depth++] = (int)root;
    colour[root] = 1;
    from[root] = -1;
    while (depth > 0 && status == 0) {
      int node = stack[depth - 1];
      size_t k = next[node];
      int target = -1;

      for (; k < n; k++) {
        if (!watches(&triggers[k], &relays[node]))
          continue;
        for (size_t j = 0; j < n_relays; j++)
          if (relays[j].gateway_index == triggers[k].gateway &&
              relays[j].relay_index == triggers[k].relay)
            target = (int)j;
        if (target >= 0)
          break;
      }
      next[node] = k + 1;
      if (k >= n) { /* every edge of node done */
        colour[node] = 2;
        depth--;
        continue;
      }
      if (colour[target] == 1) {
        /* A cycle: target -> ... -> node -> target.  Collect the path
         * backwards from node, then print it forwards. */
        size_t len = 0, hops = 0;
        int m;

        for (m = node; m != target && m >= 0; m = from[m])
          stack[hops++] = m; /* the DFS stack is no longer needed */
        len += (size_t)snprintf(err, errlen,
                                "Triggers form a loop through the plugin's "
                                "own notifications: relay \"%s\"",
                                relays[target].relay);
        for (size_t h = hops; h-- > 0 && len < errlen;)
          len += (size_t)snprintf(err + len, errlen - len,
                                  " -> Trigger \"%s\" -> relay \"%s\"",
                                  triggers[via[stack[h]]].name,
                                  relays[stack[h]].relay);
        if (len < errlen)
          snprintf(err + len, errlen - len, " -> Trigger \"%s\" -> relay \"%s\"",
                   triggers[k].name, relays[target].relay);
        status = -1;
        break;
      }
      if (colour[target] == 0) {
        colour[target] = 1;
        from[target] = node;
        via[target] = (int)k;
        stack[depth++] = target;
      }
    }
  }
out:
  free(colour);
  free(via);
  free(from);
  free(stack);
  free(next);
  return status;
}
