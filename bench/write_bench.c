/*
 * write_bench.c - the plugin's write callback when no switch rule matches,
 * for values of collectd's usual identities (cpu, memory, interface, load,
 * df, sensors: host/plugin/plugin_instance/type/type_instance), as
 * bimetri.c's bimetri_write runs it for every value collectd writes, with
 * 100 rules of two kinds:
 *   - rules naming their Plugin, Type and TypeInstance exactly ("sensors",
 *     "temperature", "zone-N", as the writepath benchmark's): the rule
 *     index (rule.h) answers, then the rules it lets through;
 *   - rules naming only a Type ("rule-type-N"): no index can be built, so
 *     bm_rule_matches runs over all 100 for every value.
 * Peer: a bare loop of strcmp of the value's type against 100 strings, the
 * least an exact-match filter over 100 rules can do without an index.
 *
 *   write_bench [--runs R] [--seconds S] [--rules N]
 *
 * Prints bench/run's CSV rows: ns per value, median of R runs of S s each,
 * ours and the peer interleaved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "match.h"
#include "rule.h"

#define NVAL 8
#define MAXRULES 1000

static const char *const values[NVAL][BM_FIELD_COUNT] = {
    {"web-01.example.org", "cpu", "0", "cpu", "user"},
    {"web-01.example.org", "cpu", "1", "cpu", "idle"},
    {"web-01.example.org", "memory", "", "memory", "used"},
    {"web-01.example.org", "interface", "eth0", "if_octets", ""},
    {"web-01.example.org", "load", "", "load", ""},
    {"web-01.example.org", "df", "root", "df_complex", "free"},
    {"web-01.example.org", "sensors", "coretemp", "temperature", "temp1"},
    {"web-01.example.org", "disk", "vda", "disk_ops", ""},
};

static struct bm_rule rules[MAXRULES];  /* Type only */
static struct bm_rule zones[MAXRULES];  /* sensors/temperature-zone-N */
static struct bm_rule *zone_ptrs[MAXRULES];
static struct bm_rule_index zone_index;
static char *types[MAXRULES];
static int nrules = 100;
static volatile unsigned long sink;

__attribute__((noinline)) static unsigned match_ours(const char *const *f)
{
  unsigned hits = 0;
  for (int i = 0; i < nrules; i++)
    hits += bm_rule_matches(&rules[i], f);
  return hits;
}

__attribute__((noinline)) static unsigned match_index(const char *const *f)
{
  unsigned hits = 0;
  if (!bm_rule_index_may_match(&zone_index, f[BM_FIELD_PLUGIN],
                               f[BM_FIELD_TYPE], f[BM_FIELD_TYPE_INSTANCE]))
    return 0;
  for (int i = 0; i < nrules; i++)
    hits += bm_rule_matches(&zones[i], f);
  return hits;
}

__attribute__((noinline)) static unsigned match_bare(const char *const *f)
{
  unsigned hits = 0;
  for (int i = 0; i < nrules; i++)
    hits += strcmp(types[i], f[BM_FIELD_TYPE]) == 0;
  return hits;
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Nanoseconds per value over about `seconds`. */
static double ns_per_value(unsigned (*fn)(const char *const *), double seconds)
{
  unsigned long n = 0, hits = 0;
  double t0 = now_s(), t;
  do {
    for (int k = 0; k < 1000; k++)
      hits += fn(values[k % NVAL]);
    n += 1000;
  } while ((t = now_s() - t0) < seconds);
  sink += hits;
  if (hits) {
    fprintf(stderr, "write_bench: a rule matched\n");
    exit(1);
  }
  return t * 1e9 / n;
}

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof(double), cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
  int runs = 5;
  double seconds = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--runs"))
      runs = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--seconds"))
      seconds = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--rules"))
      nrules = atoi(argv[i + 1]);
  }
  if (runs < 1 || runs > 99 || nrules < 1 || nrules > MAXRULES)
    return 2;
  for (int i = 0; i < nrules; i++) {
    char name[32], type[32], zone[32], err[256] = "";
    snprintf(name, sizeof(name), "rule-%d", i);
    snprintf(type, sizeof(type), "rule-type-%d", i);
    snprintf(zone, sizeof(zone), "zone-%d", i);
    zone_ptrs[i] = &zones[i];
    if (bm_rule_init(&rules[i], name) != 0 ||
        bm_pattern_set(&rules[i].pattern[BM_FIELD_TYPE], BM_FIELD_TYPE, type,
                       err, sizeof(err)) != 0 ||
        bm_rule_init(&zones[i], name) != 0 ||
        bm_pattern_set(&zones[i].pattern[BM_FIELD_PLUGIN], BM_FIELD_PLUGIN,
                       "sensors", err, sizeof(err)) != 0 ||
        bm_pattern_set(&zones[i].pattern[BM_FIELD_TYPE], BM_FIELD_TYPE,
                       "temperature", err, sizeof(err)) != 0 ||
        bm_pattern_set(&zones[i].pattern[BM_FIELD_TYPE_INSTANCE],
                       BM_FIELD_TYPE_INSTANCE, zone, err, sizeof(err)) != 0 ||
        !(types[i] = strdup(type))) {
      fprintf(stderr, "write_bench: rule %d: %s\n", i, err);
      return 1;
    }
  }
  if (bm_rule_index_build(&zone_index, zone_ptrs, (size_t)nrules) != 0 ||
      zone_index.fields != 3) {
    fprintf(stderr, "write_bench: no index of the zone rules\n");
    return 1;
  }
  double o[99], x[99], b[99];
  ns_per_value(match_ours, 0.2);
  ns_per_value(match_index, 0.2);
  ns_per_value(match_bare, 0.2);
  for (int r = 0; r < runs; r++) { /* taking turns at going first */
    unsigned (*fn[3])(const char *const *) = {match_ours, match_index,
                                              match_bare};
    double *out[3] = {o, x, b};
    for (int k = 0; k < 3; k++)
      out[(k + r) % 3][r] = ns_per_value(fn[(k + r) % 3], seconds);
    fprintf(stderr,
            "write_bench: run %d: every rule %.1f ns, index %.1f ns, bare "
            "%.1f ns\n",
            r + 1, o[r], x[r], b[r]);
  }
  double om = median(o, runs), xm = median(x, runs), bm = median(b, runs);
  printf("write callback matching nothing (%d rules naming their identity),"
         "ns/value,lower,%.4g,%.4g,%.4g,strcmp loop over %d types,%.4g,%.4g,"
         "%.4g,%d,%.4g,< 1000 ns,%s\n",
         nrules, xm, x[0], x[runs - 1], nrules, bm, b[0], b[runs - 1], runs,
         xm / bm, xm < 1000 ? "yes" : "no");
  printf("write callback matching nothing (%d rules naming a Type only),"
         "ns/value,lower,%.4g,%.4g,%.4g,strcmp loop over %d types,%.4g,%.4g,"
         "%.4g,%d,%.4g,< 1000 ns,%s\n",
         nrules, om, o[0], o[runs - 1], nrules, bm, b[0], b[runs - 1], runs,
         om / bm, om < 1000 ? "yes" : "no");
  bm_rule_index_release(&zone_index);
  for (int i = 0; i < nrules; i++) {
    bm_rule_release(&rules[i]);
    bm_rule_release(&zones[i]);
    free(types[i]);
  }
  return 0;
}
