/*
 * rule.h - switching rules: a relay follows a value, level-based.
 *
 *   <Switch "fan-cooling">
 *     Relay "plant1" "fan"
 *     Plugin "sensors"           # which value: identity patterns as in
 *     Type "temperature"         #   match.h, plus DataSource
 *     OnAbove 70                 # on above 70 ...
 *     OffBelow 60                # ... off below 60 (hysteresis)
 *     MinOnTime 120              # limits: relay.h's bm_relay_limits
 *     MinOffTime 60
 *     MaxSwitchesPerHour 6
 *     StaleAfter 300             # no value for this long ...
 *     FailSafe 0                 # ... asks for this state
 *   </Switch>
 *
 * Each value a rule matches gives a decision: with OnAbove/OffBelow (a
 * cooler) the relay is wanted on above OnAbove, off below OffBelow, and
 * between them keeps the last decision; with OnBelow/OffAbove (a heater)
 * the other way round.  Before a rule has seen a value it decides nothing
 * (a fresh value is needed after start).  When StaleAfter passes without a
 * value the decision becomes FailSafe (or stays, without FailSafe) until a
 * value comes again.  The decision goes to the relay table as a request
 * with the rule's limits; the table holds it back while MinOnTime,
 * MinOffTime or the switch budget forbid the change.
 *
 * Rules are evaluated in collectd's write threads, several at once: each
 * rule guards its state with its own mutex, held for a few instructions.
 * Time comes in as an argument.
 */
#ifndef BM_RULE_H
#define BM_RULE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "idmap.h"
#include "match.h"
#include "relay.h"

#define BM_RULE_DS_SIZE 64

struct bm_rule {
  char *name;
  struct bm_pattern pattern[BM_FIELD_COUNT]; /* identity, as Triggers */
  char data_source[BM_RULE_DS_SIZE];         /* "" for the only one */
  int gateway, relay;                        /* resolved by the owner */
  bool heater;            /* OnBelow/OffAbove instead of OnAbove/OffBelow */
  double on_at, off_at;   /* the thresholds */
  struct bm_relay_limits limits;
  double stale_after;     /* s; 0: never stale */
  int fail_safe;          /* -1: none */

  pthread_mutex_t lock;   /* guards the state below */
  int decision;           /* -1 none yet, 0, 1 */
  double last_value_at;   /* monotonic s of the last value, 0 none */
  bool stale;
  bool reask;             /* its last request was refused (an override):
                             the next value asks again */
  bool refused;           /* the last request's outcome was a refusal */

  pthread_mutex_t order;  /* the owner's: held across a decision and the
                             hand-off of its request, so that a rule's
                             requests leave in the order of its decisions
                             (a write thread's fresh value, the read
                             thread's FailSafe) */
};

/* Initialises an empty rule named `name` (copied); fail_safe -1, no
 * thresholds.  Returns 0, or -1 when out of memory. */
int bm_rule_init(struct bm_rule *r, const char *name);
void bm_rule_release(struct bm_rule *r);

/* Checks the thresholds: exactly one of the pairs, with OnAbove > OffBelow
 * (cooler) or OnBelow < OffAbove (heater).  Returns 0 or -1 with err. */
int bm_rule_check(const struct bm_rule *r, char *err, size_t errlen);

/* Whether a value list's identity (host, plugin, plugin_instance, type,
 * type_instance) matches the rule's patterns.  Lock-free. */
bool bm_rule_matches(const struct bm_rule *r, const char *const field[]);

/* Feeds one value at monotonic time now.  Returns the decision (0 or 1)
 * when it is new (changed, or the first one, or the first after staleness,
 * or the first after a refusal: bm_rule_refused), -1 when it stays as it
 * was or there is none yet.  *decision (may be NULL)
 * gets the current one either way. */
int bm_rule_feed(struct bm_rule *r, double value, double now, int *decision);

/* The owner's report of what the rule's last request came to: refused by
 * a manual override (the next value, even one that changes nothing, asks
 * again: a Switch is level-based, and the relay should follow it once the
 * override ends), or taken (recorded, held back, already wanted) or
 * refused for good (an interlock).  bm_rule_refused returns whether the
 * request before was refused too (a caller logs the first refusal only). */
bool bm_rule_refused(struct bm_rule *r);
void bm_rule_answered(struct bm_rule *r);

/* Checks staleness at monotonic time now.  Returns FailSafe (0 or 1) when
 * the rule just became stale and has one, -1 otherwise. */
int bm_rule_tick(struct bm_rule *r, double now);

/* The write callback's first test, as every value of every plugin passes
 * there: the few plugin names the rules name (up to BM_RULE_INDEX_PLUGINS;
 * most values come from other plugins, and a strcmp or two rejects them),
 * then a hash of the identities the rules name exactly, as (plugin, type,
 * type instance) when every rule gives all three exactly, else as (plugin,
 * type) when every rule gives those.  A value that fails either matches no
 * rule; one that passes goes through the rules (a hash collision costs
 * only that).  When some rule's Plugin or Type is a regex or unset there
 * is no index: every value goes through the rules.  Built once, then
 * read-only: lock-free for the write threads. */
#define BM_RULE_INDEX_PLUGINS 4
#define BM_RULE_NAME_MAX 64 /* collectd's DATA_MAX_NAME_LEN */

struct bm_rule_index {
  struct bm_idmap keys;
  int fields;   /* 3, 2, or 0: no index */
  const char *plugins[BM_RULE_INDEX_PLUGINS]; /* the rules' own strings */
  int plugins_n; /* -1: more than BM_RULE_INDEX_PLUGINS, not checked */
};

/* Builds the index of n rules (which must outlive it).  Returns 0, or -1
 * when out of memory (the index is then empty: every value goes through
 * the rules). */
int bm_rule_index_build(struct bm_rule_index *x, struct bm_rule *const *rules,
                        size_t n);
/* false when no rule can match a value of this identity. */
bool bm_rule_index_may_match(const struct bm_rule_index *x, const char *plugin,
                             const char *type, const char *type_instance);
void bm_rule_index_release(struct bm_rule_index *x);

#endif
