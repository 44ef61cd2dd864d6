/*
 * match_test.c - unit tests of the Trigger matcher (src/match.h): exact and
 * /regex/ patterns per field, absent fields, pattern errors, the severity
 * map and the rule that the plugin's own notifications (plugin "bimetri")
 * only reach a Trigger whose Plugin pattern names "bimetri".
 */
#include "match.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

/* A trigger with the given map: okay, warning, failure (-1, 0 or 1). */
static void trigger(struct bm_trigger *t, int okay, int warning, int failure)
{
  if (bm_trigger_init(t, "test") != 0) {
    printf("Bail out! bm_trigger_init failed\n");
    exit(1);
  }
  t->on[BM_SEV_OKAY] = okay;
  t->on[BM_SEV_WARNING] = warning;
  t->on[BM_SEV_FAILURE] = failure;
}

static int set(struct bm_trigger *t, enum bm_field f, const char *spec)
{
  char err[256] = "";
  int rc = bm_trigger_set_pattern(t, f, spec, err, sizeof(err));
  if (rc != 0)
    diag("set %s \"%s\": %s", bm_field_name(f), spec, err);
  return rc;
}

static struct bm_notif_fields notif(const char *host, const char *plugin,
                                    const char *pi, const char *type,
                                    const char *ti, enum bm_severity sev)
{
  struct bm_notif_fields n;
  n.field[BM_FIELD_HOST] = host;
  n.field[BM_FIELD_PLUGIN] = plugin;
  n.field[BM_FIELD_PLUGIN_INSTANCE] = pi;
  n.field[BM_FIELD_TYPE] = type;
  n.field[BM_FIELD_TYPE_INSTANCE] = ti;
  n.severity = sev;
  n.missing = false;
  return n;
}

static void test_names_and_init(void)
{
  struct bm_trigger t;

  is_str(bm_field_name(BM_FIELD_HOST), "Host", "field name Host");
  is_str(bm_field_name(BM_FIELD_PLUGIN), "Plugin", "field name Plugin");
  is_str(bm_field_name(BM_FIELD_PLUGIN_INSTANCE), "PluginInstance",
         "field name PluginInstance");
  is_str(bm_field_name(BM_FIELD_TYPE), "Type", "field name Type");
  is_str(bm_field_name(BM_FIELD_TYPE_INSTANCE), "TypeInstance",
         "field name TypeInstance");
  ok(bm_field_name(BM_FIELD_COUNT) == NULL, "no name past the last field");

  char name[] = "overheat";
  is_int(bm_trigger_init(&t, name), 0, "init");
  name[0] = 'X';
  is_str(t.name, "overheat", "init copies the name");
  ok(t.on[BM_SEV_OKAY] == -1 && t.on[BM_SEV_WARNING] == -1 &&
         t.on[BM_SEV_FAILURE] == -1,
     "a new trigger ignores every severity");
  ok(t.gateway == -1 && t.relay == -1, "gateway and relay start unresolved");
  bool none = true;
  for (int f = 0; f < BM_FIELD_COUNT; f++)
    none = none && !t.pattern[f].set;
  ok(none, "a new trigger has no pattern");
  struct bm_notif_fields n =
      notif("h", "cpu", "0", "cpu", "idle", BM_SEV_FAILURE);
  is_int(bm_trigger_evaluate(&t, &n), -1,
         "a new trigger reacts to nothing (all severities ignored)");
  bm_trigger_release(&t);
}

static void test_severity_map(void)
{
  struct bm_trigger t;
  struct bm_notif_fields n = notif("h", "cpu", "", "cpu", "", BM_SEV_OKAY);

  trigger(&t, 0, -1, 1);
  n.severity = BM_SEV_OKAY;
  is_int(bm_trigger_evaluate(&t, &n), 0, "OKAY maps to 0");
  n.severity = BM_SEV_WARNING;
  is_int(bm_trigger_evaluate(&t, &n), -1, "WARNING mapped to -1 is ignored");
  n.severity = BM_SEV_FAILURE;
  is_int(bm_trigger_evaluate(&t, &n), 1, "FAILURE maps to 1");
  n.severity = (enum bm_severity)0;
  is_int(bm_trigger_evaluate(&t, &n), -1, "severity 0 (invalid) is ignored");
  n.severity = (enum bm_severity)(BM_SEV_FAILURE + 1);
  is_int(bm_trigger_evaluate(&t, &n), -1, "severity past FAILURE is ignored");
  bm_trigger_release(&t);

  trigger(&t, 1, 1, 0);
  n.severity = BM_SEV_WARNING;
  is_int(bm_trigger_evaluate(&t, &n), 1, "WARNING maps to 1");
  n.severity = BM_SEV_FAILURE;
  is_int(bm_trigger_evaluate(&t, &n), 0, "FAILURE maps to 0");
  bm_trigger_release(&t);
}

/* For each field alone: an exact pattern matches only that exact string,
 * and the other (absent) fields match anything, NULL included. */
static void test_exact_per_field(void)
{
  for (int f = 0; f < BM_FIELD_COUNT; f++) {
    struct bm_trigger t;
    const char *name = bm_field_name((enum bm_field)f);
    struct bm_notif_fields n =
        notif("other", "other", "other", "other", "other", BM_SEV_FAILURE);

    trigger(&t, -1, -1, 1);
    is_int(set(&t, (enum bm_field)f, "fan1"), 0, "%s: exact pattern set", name);
    n.field[f] = "fan1";
    is_int(bm_trigger_evaluate(&t, &n), 1, "%s: exact string matches", name);
    n.field[f] = "fan12";
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: longer string does not match",
           name);
    n.field[f] = "fan";
    is_int(bm_trigger_evaluate(&t, &n), -1,
           "%s: prefix of the pattern does not match", name);
    n.field[f] = "FAN1";
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: exact match is case-sensitive",
           name);
    n.field[f] = "";
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: empty field does not match",
           name);
    n.field[f] = NULL;
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: NULL field does not match",
           name);
    /* The other fields do not matter, even NULL or empty. */
    struct bm_notif_fields m = notif(NULL, "", NULL, "", NULL, BM_SEV_FAILURE);
    m.field[f] = "fan1";
    is_int(bm_trigger_evaluate(&t, &m), 1,
           "%s: absent patterns match NULL and empty fields", name);
    bm_trigger_release(&t);
  }
}

static void test_regex_per_field(void)
{
  for (int f = 0; f < BM_FIELD_COUNT; f++) {
    struct bm_trigger t;
    const char *name = bm_field_name((enum bm_field)f);
    struct bm_notif_fields n = notif("h", "p", "pi", "t", "ti", BM_SEV_WARNING);

    trigger(&t, -1, 0, -1);
    is_int(set(&t, (enum bm_field)f, "/^fan[0-9]+$/"), 0,
           "%s: regex pattern set", name);
    ok(t.pattern[f].set && t.pattern[f].is_regex, "%s: stored as a regex",
       name);
    is_str(t.pattern[f].text, "^fan[0-9]+$", "%s: slashes stripped", name);
    n.field[f] = "fan12";
    is_int(bm_trigger_evaluate(&t, &n), 0, "%s: regex matches fan12", name);
    n.field[f] = "fan";
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: regex refuses fan", name);
    n.field[f] = "myfan1";
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: anchor respected", name);
    n.field[f] = NULL;
    is_int(bm_trigger_evaluate(&t, &n), -1, "%s: NULL field refused", name);
    bm_trigger_release(&t);
  }

  struct bm_trigger t;
  struct bm_notif_fields n = notif("", "", "", "", "", BM_SEV_FAILURE);

  trigger(&t, -1, -1, 1);
  is_int(set(&t, BM_FIELD_TYPE, "/fan/"), 0, "unanchored regex");
  n.field[BM_FIELD_TYPE] = "myfan1";
  is_int(bm_trigger_evaluate(&t, &n), 1, "unanchored regex finds a substring");
  is_int(set(&t, BM_FIELD_HOST, "/^$/"), 0, "regex for the empty string");
  n.field[BM_FIELD_HOST] = NULL;
  is_int(bm_trigger_evaluate(&t, &n), 1, "NULL field is the empty string");
  n.field[BM_FIELD_HOST] = "x";
  is_int(bm_trigger_evaluate(&t, &n), -1, "/^$/ refuses a non-empty field");
  is_int(set(&t, BM_FIELD_PLUGIN_INSTANCE, "/a/b/"), 0,
         "regex containing a slash");
  is_str(t.pattern[BM_FIELD_PLUGIN_INSTANCE].text, "a/b",
         "only the outer slashes are stripped");
  n.field[BM_FIELD_HOST] = "";
  n.field[BM_FIELD_PLUGIN_INSTANCE] = "xa/by";
  is_int(bm_trigger_evaluate(&t, &n), 1, "regex with a slash matches");
  is_int(set(&t, BM_FIELD_TYPE_INSTANCE, "/(idle|user)/"), 0,
         "extended regex alternation");
  n.field[BM_FIELD_TYPE_INSTANCE] = "user";
  is_int(bm_trigger_evaluate(&t, &n), 1, "ERE alternation matches");
  n.field[BM_FIELD_TYPE_INSTANCE] = "system";
  is_int(bm_trigger_evaluate(&t, &n), -1, "ERE alternation refuses");
  bm_trigger_release(&t);

  /* Slashes that do not enclose the pattern make an exact string. */
  trigger(&t, -1, -1, 1);
  is_int(set(&t, BM_FIELD_HOST, "/"), 0, "a lone slash is an exact pattern");
  ok(!t.pattern[BM_FIELD_HOST].is_regex, "a lone slash is not a regex");
  is_int(set(&t, BM_FIELD_TYPE, "/var/log"), 0, "a leading slash only");
  ok(!t.pattern[BM_FIELD_TYPE].is_regex, "/var/log is an exact string");
  n = notif("/", "p", "", "/var/log", "", BM_SEV_FAILURE);
  is_int(bm_trigger_evaluate(&t, &n), 1, "exact patterns with slashes match");
  n.field[BM_FIELD_TYPE] = "var/log";
  is_int(bm_trigger_evaluate(&t, &n), -1, "and only exactly");
  bm_trigger_release(&t);
}

static void test_all_fields(void)
{
  struct bm_trigger t;
  const char *good[BM_FIELD_COUNT] = {"host1", "sensors", "chip0",
                                      "temperature", "cpu3"};

  trigger(&t, 0, 1, 1);
  ok(set(&t, BM_FIELD_HOST, "host1") == 0 &&
         set(&t, BM_FIELD_PLUGIN, "/^sens/") == 0 &&
         set(&t, BM_FIELD_PLUGIN_INSTANCE, "chip0") == 0 &&
         set(&t, BM_FIELD_TYPE, "/^temp/") == 0 &&
         set(&t, BM_FIELD_TYPE_INSTANCE, "/^cpu[0-9]$/") == 0,
     "five patterns set");
  struct bm_notif_fields n = notif(good[0], good[1], good[2], good[3], good[4],
                                   BM_SEV_WARNING);
  is_int(bm_trigger_evaluate(&t, &n), 1, "all five fields match");
  for (int f = 0; f < BM_FIELD_COUNT; f++) {
    n.field[f] = "nomatch";
    is_int(bm_trigger_evaluate(&t, &n), -1, "one mismatching field (%s) fails",
           bm_field_name((enum bm_field)f));
    n.field[f] = good[f];
  }
  n.severity = BM_SEV_OKAY;
  is_int(bm_trigger_evaluate(&t, &n), 0, "same fields, OKAY maps to 0");
  bm_trigger_release(&t);
}

static void test_errors(void)
{
  struct bm_trigger t;
  char err[256];
  struct bm_notif_fields n = notif("h", "p", "", "fan", "", BM_SEV_FAILURE);

  trigger(&t, -1, -1, 1);
  err[0] = '\0';
  is_int(bm_trigger_set_pattern(&t, BM_FIELD_TYPE, "/fan[/", err, sizeof(err)),
         -1, "invalid regex refused");
  ok(strstr(err, "invalid regex") != NULL, "error says invalid regex: %s",
     err);
  ok(strstr(err, "\"Type\"") != NULL, "error names the option: %s", err);
  ok(strstr(err, "fan[") != NULL, "error quotes the regex: %s", err);
  ok(!t.pattern[BM_FIELD_TYPE].set, "a refused pattern is not set");
  is_int(bm_trigger_evaluate(&t, &n), 1,
         "after the refusal the field still matches anything");
  is_int(set(&t, BM_FIELD_TYPE, "/^fa/"), 0,
         "the field can be set after a refused pattern");
  is_int(bm_trigger_evaluate(&t, &n), 1, "and the new pattern works");

  err[0] = '\0';
  is_int(bm_trigger_set_pattern(&t, BM_FIELD_TYPE, "fan", err, sizeof(err)),
         -1, "field set twice refused");
  ok(strstr(err, "twice") != NULL && strstr(err, "\"Type\"") != NULL,
     "error says the option was given twice: %s", err);
  ok(t.pattern[BM_FIELD_TYPE].is_regex &&
         strcmp(t.pattern[BM_FIELD_TYPE].text, "^fa") == 0,
     "the first pattern stays");
  n.field[BM_FIELD_TYPE] = "fax";
  is_int(bm_trigger_evaluate(&t, &n), 1, "the first pattern still decides");

  err[0] = '\0';
  is_int(bm_trigger_set_pattern(&t, BM_FIELD_HOST, "", err, sizeof(err)), -1,
         "empty pattern refused");
  ok(strstr(err, "empty") != NULL && strstr(err, "\"Host\"") != NULL,
     "error says empty: %s", err);
  ok(!t.pattern[BM_FIELD_HOST].set, "refused empty pattern is not set");

  /* "//" is the empty pattern written as a regex: an empty regex matches
   * everything, which is what leaving the option out already means. */
  err[0] = '\0';
  is_int(bm_trigger_set_pattern(&t, BM_FIELD_HOST, "//", err, sizeof(err)), -1,
         "empty regex \"//\" refused as an empty pattern");

  /* A long regex error still fits and is NUL-terminated. */
  char small[16];
  memset(small, 'x', sizeof(small));
  is_int(bm_trigger_set_pattern(&t, BM_FIELD_PLUGIN, "/(((/", small,
                                sizeof(small)),
         -1, "unbalanced parentheses refused");
  ok(memchr(small, '\0', sizeof(small)) != NULL,
     "error truncated to the buffer and terminated");
  bm_trigger_release(&t);

  /* Release of a trigger whose only regex was refused (valgrind: no leak, no
   * regfree of an uncompiled regex). */
  trigger(&t, -1, -1, 1);
  is_int(bm_trigger_set_pattern(&t, BM_FIELD_HOST, "/[/", err, sizeof(err)), -1,
         "refused regex on a fresh trigger");
  bm_trigger_release(&t);
  ok(t.name == NULL && !t.pattern[BM_FIELD_HOST].set,
     "release leaves a cleared trigger");
  /* Release twice is harmless on the cleared struct. */
  bm_trigger_release(&t);
  ok(true, "release of a released trigger");
}

/* The plugin's own notifications reach only triggers whose Plugin pattern
 * names "bimetri". */
static void test_own_plugin(void)
{
  static const struct {
    const char *spec; /* NULL: no Plugin pattern */
    int want;         /* for plugin "bimetri" */
    const char *why;
  } cases[] = {
      {NULL, -1, "no Plugin pattern"},
      {"/.*/", -1, "catch-all regex"},
      {"/^b/", -1, "regex that matches but does not name bimetri"},
      {"/i/", -1, "substring regex that does not name bimetri"},
      {"/bimetr/", -1, "regex naming part of the word"},
      {"bimetri", 1, "exact bimetri"},
      {"/bimetri/", 1, "regex bimetri"},
      {"/^bimetri$/", 1, "anchored regex bimetri"},
      {"/^(cpu|bimetri)$/", 1, "alternation naming bimetri"},
      {"/bimetrix/", -1, "regex naming bimetri that does not match"},
      {"bimetri2", -1, "exact other plugin containing the word"},
      {"cpu", -1, "exact other plugin"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct bm_trigger t;
    struct bm_notif_fields n =
        notif("host", "bimetri", "gw1", "gauge", "relay", BM_SEV_FAILURE);

    trigger(&t, -1, -1, 1);
    if (cases[i].spec)
      set(&t, BM_FIELD_PLUGIN, cases[i].spec);
    is_int(bm_trigger_evaluate(&t, &n), cases[i].want,
           "plugin \"bimetri\", Plugin %s (%s)",
           cases[i].spec ? cases[i].spec : "absent", cases[i].why);
    bm_trigger_release(&t);
  }

  /* Other fields matching do not open the door either. */
  struct bm_trigger t;
  struct bm_notif_fields n =
      notif("host", "bimetri", "gw1", "gauge", "relay", BM_SEV_FAILURE);
  trigger(&t, -1, -1, 1);
  set(&t, BM_FIELD_HOST, "host");
  set(&t, BM_FIELD_TYPE_INSTANCE, "/relay/");
  is_int(bm_trigger_evaluate(&t, &n), -1,
         "matching Host and TypeInstance do not admit plugin bimetri");
  /* ... but a plugin merely containing the word is not the plugin. */
  n.field[BM_FIELD_PLUGIN] = "bimetri_old";
  is_int(bm_trigger_evaluate(&t, &n), 1,
         "plugin \"bimetri_old\" is an ordinary plugin");
  n.field[BM_FIELD_PLUGIN] = "Bimetri";
  is_int(bm_trigger_evaluate(&t, &n), 1,
         "plugin \"Bimetri\" (other case) is an ordinary plugin");
  n.field[BM_FIELD_PLUGIN] = NULL;
  is_int(bm_trigger_evaluate(&t, &n), 1, "NULL plugin is an ordinary plugin");
  bm_trigger_release(&t);

  /* A Plugin pattern naming bimetri still needs the severity mapped. */
  trigger(&t, -1, -1, 1);
  set(&t, BM_FIELD_PLUGIN, "bimetri");
  n = notif("host", "bimetri", "gw1", "gauge", "relay", BM_SEV_WARNING);
  is_int(bm_trigger_evaluate(&t, &n), -1,
         "plugin bimetri with an ignored severity");
  n.field[BM_FIELD_PLUGIN] = "cpu";
  n.severity = BM_SEV_FAILURE;
  is_int(bm_trigger_evaluate(&t, &n), -1,
         "Plugin bimetri does not match plugin cpu");
  bm_trigger_release(&t);
}

static void pattern_release_plugin(struct bm_trigger *t)
{
  struct bm_pattern *p = &t->pattern[BM_FIELD_PLUGIN];
  if (p->set && p->is_regex)
    regfree(&p->regex);
  free(p->text);
  memset(p, 0, sizeof(*p));
}

/* A missing value says nothing about the level: only OnMissing counts. */
static void test_missing(void)
{
  struct bm_trigger t;
  struct bm_notif_fields n = notif("h", "sensors", "", "temperature", "",
                                   BM_SEV_FAILURE);

  bm_trigger_init(&t, "m");
  set(&t, BM_FIELD_TYPE, "temperature");
  is_int(t.on_missing, -1, "on_missing starts ignored");
  t.on[BM_SEV_FAILURE] = 1;
  t.on[BM_SEV_WARNING] = 1;
  is_int(bm_trigger_evaluate(&t, &n), 1, "a range FAILURE maps to OnFailure");
  n.missing = true;
  is_int(bm_trigger_evaluate(&t, &n), -1,
         "a missing-value FAILURE does not map to OnFailure");
  n.severity = BM_SEV_WARNING;
  is_int(bm_trigger_evaluate(&t, &n), -1, "nor a missing WARNING to OnWarning");
  t.on_missing = 0;
  is_int(bm_trigger_evaluate(&t, &n), 0, "it maps to OnMissing when set");
  n.field[BM_FIELD_TYPE] = "humidity";
  is_int(bm_trigger_evaluate(&t, &n), -1, "only when the fields match");
  bm_trigger_release(&t);
}

/* Chains through the plugin's own notifications must not loop. */
static void test_cycles(void)
{
  struct bm_trigger t[3];
  struct bm_relay_ref refs[3] = {{"plant1", "pump", 0, 0},
                                 {"plant1", "fan", 0, 1},
                                 {"plant1", "heater", 0, 2}};
  char err[512];

  bm_trigger_init(&t[0], "pump-then-fan");
  set(&t[0], BM_FIELD_PLUGIN, "bimetri");
  set(&t[0], BM_FIELD_TYPE_INSTANCE, "pump");
  t[0].on[BM_SEV_OKAY] = 1;
  t[0].gateway = 0;
  t[0].relay = 1;
  bm_trigger_init(&t[1], "fan-then-heater");
  set(&t[1], BM_FIELD_PLUGIN, "/^bimetri$/");
  set(&t[1], BM_FIELD_TYPE_INSTANCE, "fan");
  t[1].on[BM_SEV_OKAY] = 1;
  t[1].gateway = 0;
  t[1].relay = 2;
  is_int(bm_triggers_check_cycles(t, 2, refs, 3, err, sizeof(err)), 0,
         "a chain pump -> fan -> heater is no loop");
  /* heater -> pump closes it. */
  bm_trigger_init(&t[2], "heater-then-pump");
  set(&t[2], BM_FIELD_PLUGIN, "bimetri");
  set(&t[2], BM_FIELD_TYPE, "relay_off");
  set(&t[2], BM_FIELD_TYPE_INSTANCE, "/^heat/");
  t[2].on[BM_SEV_WARNING] = 0;
  t[2].gateway = 0;
  t[2].relay = 0;
  is_int(bm_triggers_check_cycles(t, 3, refs, 3, err, sizeof(err)), -1,
         "pump -> fan -> heater -> pump is a loop");
  ok(strstr(err, "heater-then-pump") && strstr(err, "pump-then-fan") &&
         strstr(err, "fan-then-heater"),
     "the error names every Trigger of the loop: %s", err);
  /* A Trigger that ignores the plugin's own notifications adds no edge. */
  pattern_release_plugin(&t[2]);
  is_int(bm_triggers_check_cycles(t, 3, refs, 3, err, sizeof(err)), 0,
         "without Plugin \"bimetri\" the third Trigger closes nothing");
  /* Watching another gateway's relay of the same name is no edge. */
  struct bm_relay_ref other[3] = {{"plant1", "pump", 0, 0},
                                  {"plant1", "fan", 0, 1},
                                  {"plant2", "heater", 1, 0}};
  set(&t[2], BM_FIELD_PLUGIN, "bimetri");
  set(&t[2], BM_FIELD_PLUGIN_INSTANCE, "plant1");
  is_int(bm_triggers_check_cycles(t, 3, other, 3, err, sizeof(err)), 0,
         "the PluginInstance pattern keeps gateways apart");
  /* A self loop. */
  t[0].relay = 0;
  is_int(bm_triggers_check_cycles(t, 1, refs, 3, err, sizeof(err)), -1,
         "a Trigger driving the relay it watches is a loop");
  for (int i = 0; i < 3; i++)
    bm_trigger_release(&t[i]);
}

int main(void)
{
  test_cycles();
  test_missing();
  test_names_and_init();
  test_severity_map();
  test_exact_per_field();
  test_regex_per_field();
  test_all_fields();
  test_errors();
  test_own_plugin();
  return done_testing();
}
