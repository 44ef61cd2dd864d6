/*
 * match.h - which collectd notifications a Trigger reacts to.
 *
 * A matcher holds up to one pattern per identity field (Host, Plugin,
 * PluginInstance, Type, TypeInstance).  A pattern is an exact string, or a
 * POSIX extended regular expression written between slashes ("/^fan[0-9]+$/");
 * an absent field matches anything.  A Trigger maps each severity to the
 * desired relay status (0 or 1), or to nothing.  A report that a value went
 * missing (the threshold plugin's FAILURE "... has not been updated for ...")
 * says nothing about the value's level: it maps to OnMissing only, never to
 * OnFailure or OnWarning.
 *
 * The plugin's own notifications (plugin "bimetri") match only a Trigger whose
 * Plugin pattern names "bimetri" itself (exactly, or a regex that contains
 * the word and matches): a Trigger never reacts to the plugin's own reports
 * by accident, not even through a catch-all regex.
 */
#ifndef BM_MATCH_H
#define BM_MATCH_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "relay.h"

enum bm_field {
  BM_FIELD_HOST,
  BM_FIELD_PLUGIN,
  BM_FIELD_PLUGIN_INSTANCE,
  BM_FIELD_TYPE,
  BM_FIELD_TYPE_INSTANCE,
  BM_FIELD_COUNT
};

/* The option name of a field: "Host", "Plugin", ... */
const char *bm_field_name(enum bm_field f);

/* The identity of one notification; NULL or "" fields are empty strings. */
struct bm_notif_fields {
  const char *field[BM_FIELD_COUNT];
  enum bm_severity severity;
  bool missing; /* the threshold plugin's "has not been updated" report */
};

struct bm_pattern {
  bool set;
  bool is_regex;
  char *text;     /* the exact string, or the regex source */
  regex_t regex;  /* compiled when is_regex */
};

/* Sets pattern p (of field f, for messages) from `spec` ("exact" or
 * "/regex/").  Returns 0, or -1 with a reason in err (an invalid regex, a
 * field set twice, an empty pattern). */
int bm_pattern_set(struct bm_pattern *p, enum bm_field f, const char *spec,
                   char *err, size_t errlen);
/* Frees what bm_pattern_set allocated; the pattern is unset again. */
void bm_pattern_release(struct bm_pattern *p);

/* A Trigger: patterns, severity map, and the relay it drives.  A value type
 * owned by whoever called bm_trigger_init; release with bm_trigger_release.
 * Invariant: on[s] is -1, 0 or 1 for every severity s. */
struct bm_trigger {
  char *name;
  struct bm_pattern pattern[BM_FIELD_COUNT];
  int on[BM_SEV_FAILURE + 1]; /* indexed by enum bm_severity; -1: ignore */
  int on_missing;             /* for a missing value; -1: ignore */
  int gateway;                /* index, resolved by the owner */
  int relay;
};

/* Initialises an empty trigger named `name` (copied).  Returns 0 or -1 when
 * out of memory. */
int bm_trigger_init(struct bm_trigger *t, const char *name);
void bm_trigger_release(struct bm_trigger *t);

/* Sets the pattern of field f from `spec` ("exact" or "/regex/").  Returns 0,
 * or -1 with a reason in err (an invalid regex, a field set twice, an empty
 * pattern). */
int bm_trigger_set_pattern(struct bm_trigger *t, enum bm_field f,
                           const char *spec, char *err, size_t errlen);

/* The desired status the notification asks of the trigger's relay: 0 or 1,
 * or -1 when the notification does not match or its severity (or, for a
 * missing value, on_missing) is ignored. */
int bm_trigger_evaluate(const struct bm_trigger *t,
                        const struct bm_notif_fields *n);

/* A relay as the plugin's own notifications name it: plugin_instance the
 * gateway, type_instance the relay. */
struct bm_relay_ref {
  const char *gateway;
  const char *relay;
  int gateway_index; /* as in bm_trigger.gateway / .relay */
  int relay_index;
};

/* Triggers may watch the plugin's own notifications about a relay and
 * drive another: "pump on, then fan on".  Such chains must stay finite: an
 * edge runs from every relay whose notifications (types relay_on,
 * relay_off, relay_result, relay_drift, any severity a Trigger acts on)
 * a Trigger matches to the relay it drives.  Returns 0 when the graph has
 * no cycle, -1 when it has one; then err names the Triggers along it. */
int bm_triggers_check_cycles(const struct bm_trigger *triggers, size_t n,
                             const struct bm_relay_ref *relays,
                             size_t n_relays, char *err, size_t errlen);

#endif
