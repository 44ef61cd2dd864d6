/*
 * ctl.c - bimetri-ctl: switch a relay by hand, read a gateway's journal,
 * watch its topics; for operators and for debugging a gateway.
 *
 *   bimetri-ctl [-C FILE] [-g GATEWAY] set RELAY on|off [--timeout S]
 *   bimetri-ctl [-C FILE] [-g GATEWAY] status [--journal PATH] [--history]
 *   bimetri-ctl [-C FILE] [-g GATEWAY] watch [--count N] [--duration S]
 *                                             [--commands]
 *
 * It reads the very <Plugin bimetri> block collectd gives the plugin
 * (conffile.h parses collectd's syntax, Include included) and interprets
 * it with the plugin's own reader (plugconf.h): the same defaults, checks
 * and messages, so a configuration the plugin refuses is refused here too.
 * Flags override what the file says, or replace it (--no-config).
 *
 * set: its own MQTT session (client id "bimetri-ctl-<random>", clean
 * session, so nothing of it outlives the run), subscribed to
 * application/third-party/<AppName>/<InstanceId> before one setExtDO goes
 * out, encoded by message.h with the Gateway's token (token.h: file, mint
 * or command, checked for expiry first).  Its correlationId is
 * "ctl-<16 random hex digits>-1": never of the plugin's form (relay.h's
 * bm_relay_corr_seq gives 0 for it), so the plugin applies the resulting
 * notification as a change made by someone else and its journal says so.
 * Then it waits for the commandResponse (AckTimeout) and the
 * extDOStateChanged notification (CommandTimeout, from the publish), both
 * matched by correlationId, and the exit status tells the outcome:
 *
 *   0 confirmed: the notification reports the requested status
 *   1 confirmed, but the device reports the other status
 *   2 usage, configuration or local file error (nothing was sent)
 *   3 not_send  4 failed  5 send_no_ack  6 unauthorized (the gateway's
 *     commandResponse; 6 also for a token known to be expired: not sent)
 *   7 timeout: no response or no notification in time (or interrupted)
 *   8 the broker could not be reached, refused us, or dropped us
 *   9 refused here: switching on would break an Interlock of the
 *     configuration, as far as the journal tells (--force overrides)
 *
 * status: bm_journal_read (read-only, no lock, safe while collectd appends)
 * folds the Gateway's journal the way the plugin's replay does (gateway.c
 * replay_record: a confirmation of an older command of the plugin's never
 * rolls a relay back), and prints each relay's confirmed state, since when,
 * what set it (a command of the plugin and who asked for it, bimetri-ctl,
 * another application, the device itself), its last command with its
 * outcome, and the commands still pending; --history prints every record on
 * the way, as an audit trail.  Times are local ISO 8601.
 *
 * watch: subscribes to the application topic (and with --commands the
 * command topic) and prints each message decoded by message.h, one per
 * line; a command's jwtToken is shown as its fingerprint (jwt.h) only, and
 * an undecodable payload as the decoder's error and a bounded, escaped
 * excerpt in which anything that looks like a token is replaced by its
 * fingerprint.
 *
 * --json: every line on standard output is one JSON object (yajl_gen) with
 * a "type" member; errors are reported as {"type":"error",...} too.
 *
 * A full token is never printed: it lives in the token module and in the
 * one buffer the command is encoded into, which is cleared after the
 * publish.
 */
#include "bm_config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <yajl/yajl_gen.h>

#include "clock.h"
#include "conffile.h"
#include "gateway.h"
#include "journal.h"
#include "jwt.h"
#include "log.h"
#include "message.h"
#include "plugconf.h"
#include "relay.h"
#include "token.h"

#define PROG "bimetri-ctl"
#define DEFAULT_CONFIG "/etc/collectd/collectd.conf"
#define DEFAULT_BASEDIR "/var/lib/collectd" /* collectd's compiled default */
#define MAX_RELAYS 1024                     /* per Gateway, in the journal */
#define CONNECT_TIMEOUT 10.0 /* s for CONNACK and SUBACK */
#define EXCERPT_MAX 200      /* bytes of an undecodable payload shown */

enum ctl_exit {
  EXIT_CONFIRMED = 0,
  EXIT_OTHER_STATE = 1,
  EXIT_USAGE = 2,
  EXIT_NOT_SEND = 3,
  EXIT_FAILED = 4,
  EXIT_SEND_NO_ACK = 5,
  EXIT_UNAUTHORIZED = 6,
  EXIT_TIMEOUT = 7,
  EXIT_CONNECTION = 8,
  EXIT_INTERLOCK = 9
};

/* ---- output ------------------------------------------------------------
 * Human lines are built in a bounded buffer; everything that came from the
 * network or a file is quoted and escaped, so no control character reaches
 * the terminal.  JSON lines are built with yajl_gen, one object per line. */

static bool opt_json;
static bool opt_verbose;
static volatile sig_atomic_t interrupted;

struct line {
  char b[4096];
  size_t n;
};

static void __attribute__((format(printf, 2, 3)))
line_add(struct line *l, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (l->n >= sizeof(l->b) - 1)
    return;
  va_start(ap, fmt);
  n = vsnprintf(l->b + l->n, sizeof(l->b) - l->n, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof(l->b) - l->n)
    l->n = sizeof(l->b) - 1; /* cut: a line never overflows */
  else
    l->n += (size_t)n;
}

/* Appends s (len bytes) in double quotes: '"' and '\\' escaped, bytes below
 * 0x20 and 0x7f as \n, \t or \xNN; other bytes as they are (UTF-8). */
static void line_quoted_n(struct line *l, const char *s, size_t len)
{
  line_add(l, "\"");
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\')
      line_add(l, "\\%c", c);
    else if (c == '\n')
      line_add(l, "\\n");
    else if (c == '\t')
      line_add(l, "\\t");
    else if (c < 0x20 || c == 0x7f)
      line_add(l, "\\x%02x", c);
    else
      line_add(l, "%c", c);
  }
  line_add(l, "\"");
}

static void line_quoted(struct line *l, const char *s)
{
  line_quoted_n(l, s, strlen(s));
}

static void line_print(struct line *l)
{
  fwrite(l->b, 1, l->n, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  l->n = 0;
  l->b[0] = '\0';
}

static yajl_gen jl;

static void jl_begin(const char *type)
{
  if (!(jl = yajl_gen_alloc(NULL))) {
    fprintf(stderr, PROG ": out of memory\n");
    exit(EXIT_USAGE);
  }
  yajl_gen_config(jl, yajl_gen_validate_utf8, 1);
  yajl_gen_map_open(jl);
  yajl_gen_string(jl, (const unsigned char *)"type", 4);
  yajl_gen_string(jl, (const unsigned char *)type, strlen(type));
}

static void jl_key(const char *k)
{
  yajl_gen_string(jl, (const unsigned char *)k, strlen(k));
}

/* A string value; bytes that are not UTF-8 are written as \xNN text. */
static void jl_value_str(const char *v)
{
  if (!v) {
    yajl_gen_null(jl);
    return;
  }
  if (yajl_gen_string(jl, (const unsigned char *)v, strlen(v)) ==
      yajl_gen_invalid_string) {
    struct line l = {.n = 0};
    for (const char *p = v; *p; p++)
      if ((unsigned char)*p < 0x80)
        line_add(&l, "%c", *p);
      else
        line_add(&l, "\\x%02x", (unsigned char)*p);
    yajl_gen_string(jl, (const unsigned char *)l.b, l.n);
  }
}

static void jl_str(const char *k, const char *v)
{
  jl_key(k);
  jl_value_str(v);
}

static void jl_int(const char *k, long long v)
{
  jl_key(k);
  yajl_gen_integer(jl, v);
}

/* Seconds, to the millisecond (yajl_gen_double would print 20 digits). */
static void jl_num(const char *k, double v)
{
  char num[64];
  int n = snprintf(num, sizeof(num), "%.3f", v);

  jl_key(k);
  yajl_gen_number(jl, num, (size_t)n);
}

static void jl_bool(const char *k, bool v)
{
  jl_key(k);
  yajl_gen_bool(jl, v);
}

static void jl_null(const char *k)
{
  jl_key(k);
  yajl_gen_null(jl);
}

static void jl_open(const char *k)
{
  jl_key(k);
  yajl_gen_map_open(jl);
}

static void jl_close(void) { yajl_gen_map_close(jl); }

static void jl_end(void)
{
  const unsigned char *buf;
  size_t len;

  yajl_gen_map_close(jl);
  if (yajl_gen_get_buf(jl, &buf, &len) == yajl_gen_status_ok) {
    fwrite(buf, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
  }
  yajl_gen_free(jl);
  jl = NULL;
}

/* Local ISO 8601 with the UTC offset, e.g. 2026-11-26T03:12:05+01:00. */
static void iso_time(int64_t ms, char *buf, size_t cap)
{
  time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  struct tm tm;
  char tz[8];
  size_t n;

  if (!localtime_r(&t, &tm) ||
      (n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm)) == 0 ||
      strftime(tz, sizeof(tz), "%z", &tm) != 5) {
    snprintf(buf, cap, "@%lld", (long long)ms);
    return;
  }
  snprintf(buf + n, cap - n, "%.3s:%.2s", tz, tz + 3);
}


static const char *state_word(int s)
{
  return s < 0 ? "unknown" : s ? "on" : "off";
}

/* The one error of a run: printed by main, on stderr and, with --json, as
 * an error object on stdout too. */
static char error_msg[1024];

static int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(error_msg, sizeof(error_msg), fmt, ap);
  va_end(ap);
  return -1;
}

/* As fail, for a command function: returns the exit status `code`. */
static int __attribute__((format(printf, 2, 3)))
fail_exit(int code, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(error_msg, sizeof(error_msg), fmt, ap);
  va_end(ap);
  return code;
}

static void report_error(int code)
{
  fprintf(stderr, PROG ": %s\n", error_msg);
  if (opt_json) {
    jl_begin("error");
    jl_str("message", error_msg);
    jl_int("exit", code);
    jl_end();
  }
}

/* Core modules log through log.h: warnings and errors go to stderr, the
 * rest with --verbose only. */
static void log_sink(int level, const char *line, void *ctx)
{
  static const char *const names[] = {"emerg",   "alert",  "crit", "error",
                                      "warning", "notice", "info", "debug"};

  (void)ctx;
  if (level > BM_LOG_WARNING && !opt_verbose)
    return;
  fprintf(stderr, PROG ": %s: %s\n",
          level >= 0 && level <= 7 ? names[level] : "?", line);
}

/* ---- gateway settings --------------------------------------------------
 * plugconf.h reads the <Plugin bimetri> blocks exactly as the plugin does:
 * the same options, defaults, checks and messages (here after the file and
 * line), so this tool refuses what the plugin refuses.  Secret files
 * (PasswordFile, CertificateKeyPasswordFile) are read only when a command
 * connects, so `status` works for whoever may read the journal. */

struct ctl_gateway {
  struct bm_gateway_conf c;
  char password_file[BM_GW_PATH_SIZE];     /* "" none */
  char key_password_file[BM_GW_PATH_SIZE]; /* "" none */
  /* What the configuration or the flags gave (require() checks them). */
  bool has_app, has_inst, has_user, has_org, has_port, has_pass;
  int token_sources;
  const struct bm_plugconf_relay *relays; /* owned by ctl_conf.pc */
  size_t relays_n;
};

struct ctl_conf {
  struct bm_plugconf pc; /* what the file says */
  struct ctl_gateway *gw; /* pc's Gateways, or the one of --no-config */
  size_t n;
  const struct bm_plugconf_interlock *interlocks; /* owned by pc */
  size_t interlocks_n;
  bool from_file;
};

/* plugconf.h's error, after the file and line it is about. */
static void conf_error(void *ctx, const struct bm_conf_item *where,
                       const char *message)
{
  (void)ctx;
  if (where)
    fail("%s:%d: %s", where->file, where->line, message);
  else
    fail("%s", message);
}

static void conf_release(struct ctl_conf *cf)
{
  for (size_t i = 0; i < cf->n; i++) {
    OPENSSL_cleanse(cf->gw[i].c.password, sizeof(cf->gw[i].c.password));
    OPENSSL_cleanse(cf->gw[i].c.key_password,
                    sizeof(cf->gw[i].c.key_password));
  }
  free(cf->gw);
  bm_plugconf_release(&cf->pc);
  memset(cf, 0, sizeof(*cf));
}

/* Interprets the <Plugin bimetri> blocks of a parsed collectd.conf, with
 * the global BaseDir as collectd has it when it reaches each block, then
 * takes the Gateways over. */
static int conf_interpret(struct ctl_conf *cf, const bm_conf_t *tree)
{
  const struct bm_conf_item *root = bm_conf_root(tree);
  char base_dir[BM_GW_PATH_SIZE] = DEFAULT_BASEDIR;
  struct bm_plugconf_opts opts = {0};

  opts.base_dir = base_dir;
  opts.join_base_dir = true; /* the plugin runs in BaseDir, this tool not */
  opts.error = conf_error;
  for (size_t i = 0; i < root->children_num; i++) {
    const struct bm_conf_item *top = &root->children[i];

    if (strcasecmp(top->key, "BaseDir") == 0 && top->values_num == 1 &&
        top->values[0].type == BM_CONF_STRING && top->values[0].string[0]) {
      snprintf(base_dir, sizeof(base_dir), "%s", top->values[0].string);
      continue;
    }
    if (strcasecmp(top->key, "Plugin") != 0 || !top->is_block ||
        top->values_num < 1 || top->values[0].type != BM_CONF_STRING ||
        strcasecmp(top->values[0].string, "bimetri") != 0)
      continue;
    if (bm_plugconf_add(&cf->pc, top, &opts) != 0)
      return -1;
  }
  if (!(cf->gw = calloc(cf->pc.gateways_n + 1, sizeof(*cf->gw))))
    return fail("out of memory");
  for (size_t i = 0; i < cf->pc.gateways_n; i++) {
    const struct bm_plugconf_gateway *p = &cf->pc.gateways[i];
    struct ctl_gateway *g = &cf->gw[cf->n++];

    g->c = p->c;
    snprintf(g->password_file, sizeof(g->password_file), "%s",
             p->password_file);
    snprintf(g->key_password_file, sizeof(g->key_password_file), "%s",
             p->key_password_file);
    /* The plugin requires these, and one token source. */
    g->has_app = g->has_inst = g->has_user = g->has_org = true;
    g->token_sources = 1;
    g->has_port = p->has_port;
    g->has_pass = p->has_pass;
    g->relays = p->relays;
    g->relays_n = p->relays_n;
  }
  cf->interlocks = cf->pc.interlocks;
  cf->interlocks_n = cf->pc.interlocks_n;
  return 0;
}

/* ---- options ----------------------------------------------------------- */

enum opt_id {
  OPT_HOST = 256,
  OPT_PORT,
  OPT_APP_NAME,
  OPT_INSTANCE_ID,
  OPT_USER_ID,
  OPT_ORG_ID,
  OPT_TOKEN_FILE,
  OPT_CAFILE,
  OPT_USER,
  OPT_PASSWORD_FILE,
  OPT_CLIENT_ID,
  OPT_RESOURCE_ID,
  OPT_OUTPUT,
  OPT_TIMEOUT,
  OPT_FORCE,
  OPT_JOURNAL,
  OPT_HISTORY,
  OPT_COUNT,
  OPT_DURATION,
  OPT_COMMANDS
};

struct ctl_opts {
  const char *config;
  bool no_config;
  const char *gateway;
  const char *host;
  int64_t port; /* -1: not given, and so on */
  const char *app_name;
  const char *instance_id;
  int64_t user_id;
  int64_t org_id;
  const char *token_file;
  const char *cafile;
  const char *user;
  const char *password_file;
  const char *client_id;
  int64_t resource_id;
  int64_t output;
  double timeout;
  bool force;
  const char *journal;
  bool history;
  int64_t count;
  double duration;
  bool commands;
  const char *command;
  char **args;
  int nargs;
};

static void usage(FILE *f)
{
  fprintf(f,
          "Usage: " PROG " [OPTION]... set RELAY on|off [--timeout S] [--force]\n"
          "       " PROG " [OPTION]... set on|off --resource-id N --output N\n"
          "       " PROG " [OPTION]... status [--journal PATH] [--history]\n"
          "       " PROG " [OPTION]... watch [--count N] [--duration S] "
          "[--commands]\n"
          "Switch a relay through a Bimetri gateway, show what the collectd "
          "plugin's\njournal says, or watch the gateway's MQTT topics.\n"
          "\n"
          "  -C, --config FILE      collectd configuration (default " DEFAULT_CONFIG
          ")\n"
          "  -n, --no-config        read no configuration: flags only\n"
          "  -g, --gateway NAME     the <Gateway> to use (needed when there "
          "are several)\n"
          "  -j, --json             one JSON object per output line\n"
          "  -v, --verbose          also print ignored messages and MQTT "
          "details\n"
          "      --host HOST        broker host (Host)\n"
          "      --port PORT        broker port (Port)\n"
          "      --app-name NAME    AppName\n"
          "      --instance-id ID   InstanceId\n"
          "      --user-id N        UserId\n"
          "      --org-id N         OrganizationId\n"
          "      --token-file FILE  TokenFile (instead of the Gateway's token "
          "source)\n"
          "      --cafile FILE      CACert: TLS (the port then defaults to "
          "8883)\n"
          "      --user NAME        MQTT user (User)\n"
          "      --password-file F  MQTT password file (PasswordFile)\n"
          "      --client-id ID     MQTT client id (default "
          "bimetri-ctl-<random>)\n"
          "  set:\n"
          "      --resource-id N, --output N   address a relay directly\n"
          "      --timeout S        wait S seconds for the response and the "
          "notification\n"
          "                         (default AckTimeout and CommandTimeout)\n"
          "      --force            switch on even when an Interlock "
          "forbids it\n"
          "  status:\n"
          "      --journal PATH     the journal (default JournalFile, or "
          "BaseDir/bimetri-GATEWAY.journal)\n"
          "      --history          print every journal record first\n"
          "  watch:\n"
          "      --count N          stop after N messages\n"
          "      --duration S       stop after S seconds\n"
          "      --commands         also watch the command topic (tokens "
          "shown as fingerprints)\n"
          "  -h, --help             this help\n"
          "  -V, --version          the version\n"
          "\n"
          "Exit status of set: 0 confirmed, 1 confirmed with the other state, "
          "2 usage or\nconfiguration error, 3 not_send, 4 failed, 5 "
          "send_no_ack, 6 unauthorized,\n7 timeout, 8 broker unreachable, 9 "
          "refused by an Interlock.  See bimetri-ctl(1).\n");
}

/* A usage error: the message and a pointer to --help.  Returns -1. */
static int __attribute__((format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
  va_list ap;
  char msg[512];

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return fail("%s (try '" PROG " --help')", msg);
}

/* Whole-string integer within [min, max]. */
static int parse_int(const char *opt, const char *s, int64_t min, int64_t max,
                     int64_t *out)
{
  char *end;
  long long v;

  errno = 0;
  v = strtoll(s, &end, 10);
  if (!*s || *end || errno || v < min || v > max)
    return usage_error("%s expects an integer from %lld to %lld, got \"%s\"",
                       opt, (long long)min, (long long)max, s);
  *out = v;
  return 0;
}

static int parse_seconds(const char *opt, const char *s, double min,
                         double max, double *out)
{
  char *end;
  double v;

  errno = 0;
  v = strtod(s, &end);
  if (!*s || *end || errno || !(v >= min && v <= max))
    return usage_error("%s expects seconds from %g to %g, got \"%s\"", opt,
                       min, max, s);
  *out = v;
  return 0;
}

static int parse_opts(int argc, char **argv, struct ctl_opts *o)
{
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'C'},
      {"no-config", no_argument, NULL, 'n'},
      {"gateway", required_argument, NULL, 'g'},
      {"json", no_argument, NULL, 'j'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {"host", required_argument, NULL, OPT_HOST},
      {"port", required_argument, NULL, OPT_PORT},
      {"app-name", required_argument, NULL, OPT_APP_NAME},
      {"instance-id", required_argument, NULL, OPT_INSTANCE_ID},
      {"user-id", required_argument, NULL, OPT_USER_ID},
      {"org-id", required_argument, NULL, OPT_ORG_ID},
      {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
      {"cafile", required_argument, NULL, OPT_CAFILE},
      {"user", required_argument, NULL, OPT_USER},
      {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
      {"client-id", required_argument, NULL, OPT_CLIENT_ID},
      {"resource-id", required_argument, NULL, OPT_RESOURCE_ID},
      {"output", required_argument, NULL, OPT_OUTPUT},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"force", no_argument, NULL, OPT_FORCE},
      {"journal", required_argument, NULL, OPT_JOURNAL},
      {"history", no_argument, NULL, OPT_HISTORY},
      {"count", required_argument, NULL, OPT_COUNT},
      {"duration", required_argument, NULL, OPT_DURATION},
      {"commands", no_argument, NULL, OPT_COMMANDS},
      {NULL, 0, NULL, 0}};
  int c;

  memset(o, 0, sizeof(*o));
  o->port = o->user_id = o->org_id = o->resource_id = o->output = -1;
  o->count = -1;
  o->timeout = o->duration = -1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":C:ng:jvhV", longopts, NULL)) != -1) {
    switch (c) {
    case 'C':
      o->config = optarg;
      break;
    case 'n':
      o->no_config = true;
      break;
    case 'g':
      o->gateway = optarg;
      break;
    case 'j':
      opt_json = true;
      break;
    case 'v':
      opt_verbose = true;
      break;
    case 'h':
      usage(stdout);
      exit(0);
    case 'V':
      printf(PROG " (collectd-bimetri) %s\n", PACKAGE_VERSION);
      exit(0);
    case OPT_HOST:
      o->host = optarg;
      break;
    case OPT_PORT:
      if (parse_int("--port", optarg, 1, 65535, &o->port) != 0)
        return -1;
      break;
    case OPT_APP_NAME:
      o->app_name = optarg;
      break;
    case OPT_INSTANCE_ID:
      o->instance_id = optarg;
      break;
    case OPT_USER_ID:
      if (parse_int("--user-id", optarg, 0, BM_MSG_MAX_SAFE_INT, &o->user_id))
        return -1;
      break;
    case OPT_ORG_ID:
      if (parse_int("--org-id", optarg, 0, BM_MSG_MAX_SAFE_INT, &o->org_id))
        return -1;
      break;
    case OPT_TOKEN_FILE:
      o->token_file = optarg;
      break;
    case OPT_CAFILE:
      o->cafile = optarg;
      break;
    case OPT_USER:
      o->user = optarg;
      break;
    case OPT_PASSWORD_FILE:
      o->password_file = optarg;
      break;
    case OPT_CLIENT_ID:
      o->client_id = optarg;
      break;
    case OPT_RESOURCE_ID:
      if (parse_int("--resource-id", optarg, 0, BM_MSG_MAX_SAFE_INT,
                    &o->resource_id))
        return -1;
      break;
    case OPT_OUTPUT:
      if (parse_int("--output", optarg, 0, 65535, &o->output) != 0)
        return -1;
      break;
    case OPT_TIMEOUT:
      if (parse_seconds("--timeout", optarg, 0.1, 86400, &o->timeout) != 0)
        return -1;
      break;
    case OPT_FORCE:
      o->force = true;
      break;
    case OPT_JOURNAL:
      o->journal = optarg;
      break;
    case OPT_HISTORY:
      o->history = true;
      break;
    case OPT_COUNT:
      if (parse_int("--count", optarg, 1, INT64_MAX, &o->count) != 0)
        return -1;
      break;
    case OPT_DURATION:
      if (parse_seconds("--duration", optarg, 0.1, 31536000, &o->duration))
        return -1;
      break;
    case OPT_COMMANDS:
      o->commands = true;
      break;
    case ':':
      return usage_error("option %s needs an argument", argv[optind - 1]);
    default:
      if (optopt > 0 && optopt < 256)
        return usage_error("unknown option -%c", optopt);
      return usage_error("unknown option %s", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    return usage_error("no command: set, status or watch");
  o->command = argv[optind];
  o->args = argv + optind + 1;
  o->nargs = argc - optind - 1;
  if (strcmp(o->command, "set") != 0 && strcmp(o->command, "status") != 0 &&
      strcmp(o->command, "watch") != 0)
    return usage_error("unknown command \"%s\": set, status or watch",
                       o->command);
  /* Every command-specific option must belong to the command given. */
  if ((o->resource_id >= 0 || o->output >= 0 || o->timeout >= 0 ||
       o->force) &&
      strcmp(o->command, "set") != 0)
    return usage_error("%s is an option of set",
                       o->resource_id >= 0 ? "--resource-id"
                       : o->output >= 0    ? "--output"
                       : o->timeout >= 0   ? "--timeout"
                                           : "--force");
  if ((o->journal || o->history) && strcmp(o->command, "status") != 0)
    return usage_error("%s is an option of status",
                       o->journal ? "--journal" : "--history");
  if ((o->count >= 0 || o->duration >= 0 || o->commands) &&
      strcmp(o->command, "watch") != 0)
    return usage_error("%s is an option of watch",
                       o->count >= 0      ? "--count"
                       : o->duration >= 0 ? "--duration"
                                          : "--commands");
  if (o->config && o->no_config)
    return usage_error("-C and --no-config exclude each other");
  return 0;
}

/* ---- the Gateway to use ------------------------------------------------ */

/* Reads the configuration (or none: a Gateway "cli" of defaults). */
static int load_config(const struct ctl_opts *o, struct ctl_conf *cf)
{
  const char *path = o->config ? o->config : DEFAULT_CONFIG;
  char err[1024];
  bm_conf_t *tree;
  int status = -1;

  if (o->no_config || (!o->config && access(DEFAULT_CONFIG, F_OK) != 0)) {
    if (!(cf->gw = calloc(1, sizeof(*cf->gw))))
      return fail("out of memory");
    cf->n = 1;
    bm_plugconf_gateway_defaults(&cf->gw[0].c, "cli");
    return 0;
  }
  if (!(tree = bm_conf_read(path, err, sizeof(err))))
    return fail("%s", err);
  cf->from_file = true;
  if (conf_interpret(cf, tree) != 0)
    goto out;
  if (cf->n == 0) {
    fail("%s: no <Gateway> in a <Plugin bimetri> block", path);
    goto out;
  }
  status = 0;
out:
  bm_conf_free(tree);
  return status;
}

static int select_gateway(const struct ctl_conf *cf, const char *name,
                          bool all_allowed, int *out)
{
  struct line names = {.n = 0};

  *out = -1;
  for (size_t i = 0; i < cf->n; i++) {
    if (name && strcmp(cf->gw[i].c.name, name) == 0)
      *out = (int)i;
    line_add(&names, "%s\"%s\"", i ? ", " : "", cf->gw[i].c.name);
  }
  if (name && *out < 0)
    return fail("no Gateway \"%s\" in the configuration (there is %s)", name,
                names.b);
  if (!name && cf->n == 1)
    *out = 0;
  if (!name && cf->n > 1 && !all_allowed)
    return fail("the configuration has several Gateways (%s): pick one with "
                "-g",
                names.b);
  return 0;
}

/* Flags override the Gateway's settings. */
static int apply_overrides(const struct ctl_opts *o, struct ctl_gateway *g)
{
  struct bm_gateway_conf *c = &g->c;

#define SET_STR(field, value, opt)                                             \
  do {                                                                         \
    if (strlen(value) >= sizeof(c->field))                                     \
      return usage_error("%s: longer than %zu bytes", opt,                     \
                         sizeof(c->field) - 1);                                \
    snprintf(c->field, sizeof(c->field), "%s", value);                         \
  } while (0)

  if (o->host)
    SET_STR(host, o->host, "--host");
  if (o->app_name) {
    SET_STR(app_name, o->app_name, "--app-name");
    if (!bm_plugconf_valid_topic_part(c->app_name))
      return usage_error("--app-name \"%s\" must be non-empty without '/', "
                         "'+', '#', '.' or white space",
                         o->app_name);
    g->has_app = true;
  }
  if (o->instance_id) {
    SET_STR(instance_id, o->instance_id, "--instance-id");
    if (!bm_plugconf_valid_topic_part(c->instance_id))
      return usage_error("--instance-id \"%s\" must be non-empty without "
                         "'/', '+', '#', '.' or white space",
                         o->instance_id);
    g->has_inst = true;
  }
  if (o->user_id >= 0) {
    c->user_id = o->user_id;
    g->has_user = true;
  }
  if (o->org_id >= 0) {
    c->organization_id = o->org_id;
    g->has_org = true;
  }
  if (o->token_file) {
    memset(&c->token, 0, sizeof(c->token));
    c->token.kind = BM_TOKEN_FILE;
    c->token.command_timeout = 10;
    c->token.lifetime = 3600;
    c->token.renew_before = 300;
    SET_STR(token.file, o->token_file, "--token-file");
    g->token_sources = 1;
  }
  if (o->cafile) {
    SET_STR(ca_file, o->cafile, "--cafile");
    if (!g->has_port)
      c->port = 8883;
  }
  if (o->port > 0) {
    c->port = (int)o->port;
    g->has_port = true;
  }
  if (o->user)
    SET_STR(user, o->user, "--user");
  if (o->password_file) {
    if (strlen(o->password_file) >= sizeof(g->password_file))
      return usage_error("--password-file: path too long");
    snprintf(g->password_file, sizeof(g->password_file), "%s",
             o->password_file);
    c->password[0] = '\0';
    g->has_pass = true;
  }
  if (o->client_id)
    SET_STR(client_id, o->client_id, "--client-id");
  if (g->has_pass && !c->user[0])
    return usage_error("a password needs a user (--user)");
#undef SET_STR
  return 0;
}

/* What a command needs of the Gateway, named by option and flag. */
static int require(const struct ctl_gateway *g, bool to_send)
{
  const char *missing = !g->has_app                ? "AppName (--app-name)"
                        : !g->has_inst             ? "InstanceId (--instance-id)"
                        : !to_send                 ? NULL
                        : !g->has_user             ? "UserId (--user-id)"
                        : !g->has_org              ? "OrganizationId (--org-id)"
                        : !g->token_sources        ? "TokenFile (--token-file)"
                                                   : NULL;
  if (missing)
    return fail("gateway \"%s\": %s is required", g->c.name, missing);
  return 0;
}

/* ---- MQTT -------------------------------------------------------------- */

/* Reads a secret from the first line of a file (bimetri.c read_secret). */
static int read_secret(const char *what, const char *path, char *buf,
                       size_t size)
{
  struct stat st;
  FILE *f = fopen(path, "re");
  size_t len;
  int status = -1;

  if (!f)
    return fail("cannot open %s \"%s\": %s", what, path, strerror(errno));
  if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
    BM_WARNING("%s \"%s\" is readable by group or others (mode %04o): chmod "
               "600 it",
               what, path, (unsigned)(st.st_mode & 07777));
  if (!fgets(buf, (int)size, f)) {
    fail("%s \"%s\" is empty", what, path);
    goto out;
  }
  len = strlen(buf);
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    buf[--len] = '\0';
  if (len == 0) {
    fail("%s \"%s\" is empty", what, path);
    goto out;
  }
  status = 0;
out:
  fclose(f);
  return status;
}

enum session_state { SESS_CONNECTING, SESS_SUBSCRIBING, SESS_READY, SESS_LOST };

struct session {
  struct mosquitto *m;
  struct ctl_gateway *g;
  enum session_state state;
  const char *topics[2];
  int ntopics;
  int mids[2];
  int subacks;
  char why[256];
  bool stop; /* set by on_message: leave session_run */
  void (*on_message)(struct session *s, const struct mosquitto_message *msg);
  void *ctx;
};

static void session_lost(struct session *s, const char *why)
{
  if (s->state == SESS_LOST)
    return; /* keep the first reason */
  s->state = SESS_LOST;
  snprintf(s->why, sizeof(s->why), "%s", why);
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
  struct session *s = obj;
  char why[256];

  (void)flags;
  (void)props;
  if (rc != 0) {
    snprintf(why, sizeof(why), "the broker refused the connection: %s",
             mosquitto_connack_string(rc));
    session_lost(s, why);
    mosquitto_disconnect(m);
    return;
  }
  s->state = SESS_SUBSCRIBING;
  for (int i = 0; i < s->ntopics; i++) {
    rc = mosquitto_subscribe(m, &s->mids[i], s->topics[i],
                             bm_gateway_sub_qos(&s->g->c));
    if (rc != MOSQ_ERR_SUCCESS) {
      snprintf(why, sizeof(why), "cannot subscribe to \"%s\": %s",
               s->topics[i], mosquitto_strerror(rc));
      session_lost(s, why);
      mosquitto_disconnect(m);
      return;
    }
  }
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int count,
                         const int *granted, const mosquitto_property *props)
{
  struct session *s = obj;
  char why[256];

  (void)props;
  for (int i = 0; i < s->ntopics; i++) {
    if (mid != s->mids[i])
      continue;
    if (count < 1 || granted[0] < 0 || granted[0] > 2) {
      snprintf(why, sizeof(why), "the broker refused the subscription to "
                                 "\"%s\"",
               s->topics[i]);
      session_lost(s, why);
      mosquitto_disconnect(m);
      return;
    }
    if (granted[0] < bm_gateway_sub_qos(&s->g->c))
      BM_WARNING("the broker granted QoS %d for \"%s\", below the %d asked: "
                 "duplicates may arrive",
                 granted[0], s->topics[i], bm_gateway_sub_qos(&s->g->c));
    if (++s->subacks == s->ntopics && s->state == SESS_SUBSCRIBING)
      s->state = SESS_READY;
  }
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc,
                          const mosquitto_property *props)
{
  struct session *s = obj;
  char why[96];

  (void)m;
  (void)props;
  session_lost(s, rc == 0 ? "disconnected"
                          : bm_mqtt_lost_why(rc, s->state == SESS_CONNECTING,
                                             s->g->c.keepalive, why,
                                             sizeof(why)));
}

static void on_message(struct mosquitto *m, void *obj,
                       const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
  struct session *s = obj;

  (void)m;
  (void)props;
  if (s->state == SESS_READY && s->on_message)
    s->on_message(s, msg);
}

static void on_mosq_log(struct mosquitto *m, void *obj, int level,
                        const char *line)
{
  (void)m;
  (void)obj;
  if (opt_verbose || (level & MOSQ_LOG_ERR))
    fprintf(stderr, PROG ": MQTT: %s\n", line);
}

static int key_password_cb(char *buf, int size, int rwflag, void *userdata)
{
  struct session *s = mosquitto_userdata(userdata);
  int n;

  (void)rwflag;
  n = snprintf(buf, (size_t)size, "%s", s->g->c.key_password);
  return n < size ? n : size - 1;
}

/* TLS as the plugin sets it up (gateway.c tls_setup). */
static int tls_setup(struct session *s)
{
  const struct bm_gateway_conf *c = &s->g->c;
  const char *files[][2] = {{"CACert", c->ca_file},
                            {"CAPath", c->ca_path},
                            {"CertificateFile", c->cert_file},
                            {"CertificateKeyFile", c->key_file}};
  int rc;

  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
    if (files[i][1][0] && access(files[i][1], R_OK) != 0)
      return fail("cannot read %s \"%s\": %s", files[i][0], files[i][1],
                  strerror(errno));
  if (c->tls_system_cas &&
      (rc = mosquitto_int_option(s->m, MOSQ_OPT_TLS_USE_OS_CERTS, 1)) !=
          MOSQ_ERR_SUCCESS)
    return fail("cannot use the system's CA store: %s",
                mosquitto_strerror(rc));
  rc = mosquitto_tls_set(s->m, c->ca_file[0] ? c->ca_file : NULL,
                         c->ca_path[0] ? c->ca_path : NULL,
                         c->cert_file[0] ? c->cert_file : NULL,
                         c->key_file[0] ? c->key_file : NULL,
                         c->key_password[0] ? key_password_cb : NULL);
  if (rc != MOSQ_ERR_SUCCESS)
    return fail("TLS setup failed: %s", mosquitto_strerror(rc));
  rc = mosquitto_tls_opts_set(s->m, c->tls_verify_peer ? 1 : 0,
                              c->tls_version[0] ? c->tls_version : NULL,
                              c->ciphers[0] ? c->ciphers : NULL);
  if (rc == MOSQ_ERR_SUCCESS)
    rc = mosquitto_tls_insecure_set(s->m, !c->tls_verify_hostname);
  if (rc != MOSQ_ERR_SUCCESS)
    return fail("TLS options refused (TLSProtocol \"%s\", CipherSuite "
                "\"%s\"): %s",
                c->tls_version, c->ciphers, mosquitto_strerror(rc));
  if (!c->tls_verify_hostname || !c->tls_verify_peer)
    BM_WARNING("connecting to %s:%d with TLS verification OFF (%s)", c->host,
               c->port,
               !c->tls_verify_peer ? "TLSVerifyPeer false"
                                   : "TLSVerifyHostname false");
  return 0;
}

/* Runs the MQTT loop until `until` (monotonic s), the connection is lost,
 * a handler sets s->stop, SIGINT/SIGTERM, or (ready_stops) the session
 * becomes ready. */
static void session_run(struct session *s, double until, bool ready_stops)
{
  s->stop = false;
  while (!s->stop && s->state != SESS_LOST && !interrupted &&
         !(ready_stops && s->state == SESS_READY)) {
    double now = bm_now_mono();
    struct pollfd pfd;
    int sock, n, rc = MOSQ_ERR_SUCCESS;

    if (now >= until)
      break;
    if ((sock = mosquitto_socket(s->m)) < 0) {
      session_lost(s, "not connected");
      break;
    }
    pfd.fd = sock;
    pfd.events = POLLIN | (mosquitto_want_write(s->m) ? POLLOUT : 0);
    pfd.revents = 0;
    n = poll(&pfd, 1, (int)fmin(1000.0, ceil((until - now) * 1000.0)));
    if (n < 0 && errno != EINTR) {
      session_lost(s, strerror(errno));
      break;
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
      rc = mosquitto_loop_read(s->m, 1);
    if (rc == MOSQ_ERR_SUCCESS && (pfd.revents & POLLOUT))
      rc = mosquitto_loop_write(s->m, 1);
    if (rc == MOSQ_ERR_SUCCESS)
      rc = mosquitto_loop_misc(s->m);
    if (rc != MOSQ_ERR_SUCCESS) {
      char why[96];
      session_lost(s, bm_mqtt_lost_why(rc, s->state == SESS_CONNECTING,
                                       s->g->c.keepalive, why, sizeof(why)));
    }
  }
}

/* Connects with a clean session and subscribes to the topics.  Returns 0
 * when ready; -1 with the error set (exit 2 when *config_error, else 8). */
static int session_open(struct session *s, struct ctl_gateway *g,
                        bool *config_error)
{
  struct bm_gateway_conf *c = &g->c;
  char id[BM_GW_STR_SIZE];
  unsigned char rnd[4];
  int rc;

  *config_error = true;
  s->g = g;
  s->state = SESS_CONNECTING;
  if (g->password_file[0] &&
      read_secret("PasswordFile", g->password_file, c->password,
                  sizeof(c->password)) != 0)
    return -1;
  if (g->key_password_file[0] &&
      read_secret("CertificateKeyPasswordFile", g->key_password_file,
                  c->key_password, sizeof(c->key_password)) != 0)
    return -1;
  if (c->client_id[0]) {
    snprintf(id, sizeof(id), "%s", c->client_id);
  } else {
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
      return fail("cannot get random bytes for the client id");
    snprintf(id, sizeof(id), "bimetri-ctl-%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3]);
  }
  if (!(s->m = mosquitto_new(id, true, s)))
    return fail("cannot create the MQTT client: %s", strerror(errno));
  if (mosquitto_int_option(s->m, MOSQ_OPT_TCP_NODELAY, 1) != MOSQ_ERR_SUCCESS)
    return fail("cannot set TCP_NODELAY");
  mosquitto_connect_v5_callback_set(s->m, on_connect);
  mosquitto_subscribe_v5_callback_set(s->m, on_subscribe);
  mosquitto_disconnect_v5_callback_set(s->m, on_disconnect);
  mosquitto_message_v5_callback_set(s->m, on_message);
  mosquitto_log_callback_set(s->m, on_mosq_log);
  if (c->user[0] &&
      (rc = mosquitto_username_pw_set(s->m, c->user,
                                      c->password[0] ? c->password : NULL)) !=
          MOSQ_ERR_SUCCESS)
    return fail("cannot set the MQTT user: %s", mosquitto_strerror(rc));
  if ((c->ca_file[0] || c->ca_path[0] || c->tls_system_cas) &&
      tls_setup(s) != 0)
    return -1;

  *config_error = false;
  rc = mosquitto_connect_async(s->m, c->host, c->port, c->keepalive);
  if (rc != MOSQ_ERR_SUCCESS)
    return fail("gateway \"%s\": cannot connect to the broker at %s:%d: %s",
                c->name, c->host, c->port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
  session_run(s, bm_now_mono() + CONNECT_TIMEOUT, true);
  if (s->state == SESS_READY)
    return 0;
  if (interrupted)
    return fail("interrupted while connecting");
  return fail("gateway \"%s\": no MQTT session with the broker at %s:%d: %s",
              c->name, c->host, c->port,
              s->state == SESS_LOST ? s->why
                                    : "no answer within 10 s");
}

static void session_close(struct session *s)
{
  if (!s->m)
    return;
  if (s->state == SESS_READY || s->state == SESS_SUBSCRIBING) {
    mosquitto_disconnect(s->m);
    mosquitto_loop_write(s->m, 1);
  }
  mosquitto_destroy(s->m);
  s->m = NULL;
}

static void app_topic(const struct ctl_gateway *g, char *buf, size_t size)
{
  snprintf(buf, size, "application/third-party/%s/%s", g->c.app_name,
           g->c.instance_id);
}

/* ---- the journal, folded -----------------------------------------------
 * The records are folded in file order the way the plugin's replay folds
 * them (gateway.c replay_record), relays matched by (ResourceId, Output),
 * so each relay ends with its confirmed state, what set it and when, and a
 * copy of its last command with everything the journal says about it.
 * Memory is bounded by the number of relays, not by the journal's length:
 * --history prints each record as it is read instead of keeping it. */

struct fold_cmd {
  char corr[BM_JREC_CORR_SIZE];
  int status;
  int attempt;
  char origin[BM_JREC_ORIGIN_SIZE];
  int64_t time_ms;
  int result; /* enum bm_result, 0 none */
  char reason[BM_JREC_REASON_SIZE];
  int64_t response_ms;
  int confirmed; /* status its notification reported, -1 none */
  int64_t confirm_ms;
  int64_t timeout_ms;    /* 0 none */
  int64_t superseded_ms; /* a newer command for the relay, 0 none */
  int64_t gave_up_ms;    /* the relay gave up after it, 0 none */
};

struct fold_relay {
  char name[BM_JREC_NAME_SIZE]; /* "" when only the address is known */
  bool configured;
  int64_t resource_id;
  int output;
  int confirmed; /* -1 unknown */
  uint64_t confirmed_seq;
  int64_t since_ms;    /* when it changed to confirmed, 0 unknown */
  int64_t snapshot_ms; /* the state came from a STATE record, 0 no */
  bool has_changed_by;
  char changed_by[BM_JREC_CORR_SIZE]; /* the CONFIRM's corr ("" none) */
  bool has_last;
  struct fold_cmd last;
  int64_t doubt_ms; /* an "on" command ended unconfirmed then (timed out,
                       superseded, not sent again): it may still reach the
                       device for CommandTimeout (relay.h); 0 none */
};

struct fold {
  struct fold_relay *relays;
  size_t n;
  double command_timeout; /* the Gateway's CommandTimeout: how long a doubt
                             lasts (fold_relay.doubt_ms) */
  unsigned long ignored; /* records of relays beyond MAX_RELAYS */
  bool history;
  const char *gateway;
  struct bm_journal_info info;
};

static struct fold_relay *fold_relay_at(struct fold *f, int64_t res, int out,
                                        const char *name)
{
  struct fold_relay *r;

  for (size_t i = 0; i < f->n; i++)
    if (f->relays[i].resource_id == res && f->relays[i].output == out) {
      if (!f->relays[i].name[0] && name)
        snprintf(f->relays[i].name, sizeof(f->relays[i].name), "%s", name);
      return &f->relays[i];
    }
  if (f->n == MAX_RELAYS) {
    f->ignored++;
    return NULL;
  }
  r = &f->relays[f->n++];
  memset(r, 0, sizeof(*r));
  r->resource_id = res;
  r->output = out;
  r->confirmed = -1;
  if (name)
    snprintf(r->name, sizeof(r->name), "%s", name);
  return r;
}

/* The relay whose last command is corr, or NULL. */
static struct fold_relay *fold_relay_of(struct fold *f, const char *corr)
{
  for (size_t i = 0; i < f->n; i++)
    if (f->relays[i].has_last && strcmp(f->relays[i].last.corr, corr) == 0)
      return &f->relays[i];
  return NULL;
}

static bool cmd_finished(const struct fold_cmd *c)
{
  return c->confirmed >= 0 || (c->result && c->result != BM_RESULT_SENT) ||
         c->timeout_ms || c->superseded_ms;
}

/* What became of a command, in one word. */
static const char *cmd_outcome(const struct fold_cmd *c)
{
  if (c->confirmed >= 0)
    return c->confirmed == c->status ? "confirmed" : "contradicted";
  if (c->result && c->result != BM_RESULT_SENT)
    return "refused";
  if (c->timeout_ms)
    return "timed_out";
  if (c->superseded_ms)
    return "superseded";
  return "pending";
}

static void relay_label(const struct fold_relay *r, struct line *l)
{
  if (r->name[0])
    line_quoted(l, r->name);
  else
    line_add(l, "(unnamed)");
}

/* --history: one line per record, as it is read. */
static void history_record(struct fold *f, const struct bm_jrec *rec,
                           const struct fold_relay *r)
{
  static const char *const kinds[] = {"",        "command", "response",
                                      "confirm", "timeout", "give_up",
                                      "state",   "seq"};
  const char *kind = rec->type >= 1 && rec->type <= 7 ? kinds[rec->type] : "?";
  char when[64];
  struct line l = {.n = 0};

  iso_time(rec->time_ms, when, sizeof(when));
  if (opt_json) {
    jl_begin("record");
    jl_str("gateway", f->gateway);
    jl_str("record", kind);
    jl_str("time", when);
    jl_int("timeMs", rec->time_ms);
    if (r) {
      jl_str("relay", r->name[0] ? r->name : NULL);
      jl_int("resourceId", r->resource_id);
      jl_int("output", r->output);
    }
  } else {
    line_add(&l, "%s %-8s", when, kind);
    if (r) {
      line_add(&l, " relay ");
      relay_label(r, &l);
    }
  }
  switch (rec->type) {
  case BM_JREC_COMMAND:
    if (opt_json) {
      jl_str("state", state_word(rec->u.command.status));
      jl_str("correlationId", rec->u.command.corr);
      jl_int("attempt", rec->u.command.attempt);
      jl_str("origin", rec->u.command.origin);
    } else {
      line_add(&l, " %s correlationId ", state_word(rec->u.command.status));
      line_quoted(&l, rec->u.command.corr);
      line_add(&l, " attempt %d origin ", rec->u.command.attempt);
      line_quoted(&l, rec->u.command.origin);
    }
    break;
  case BM_JREC_RESPONSE:
    if (opt_json) {
      jl_str("correlationId", rec->u.response.corr);
      jl_str("result", bm_result_name(rec->u.response.result));
      jl_str("reason", rec->u.response.reason);
    } else {
      line_add(&l, " correlationId ");
      line_quoted(&l, rec->u.response.corr);
      line_add(&l, " %s ", bm_result_name(rec->u.response.result));
      line_quoted(&l, rec->u.response.reason);
    }
    break;
  case BM_JREC_CONFIRM:
    if (opt_json) {
      jl_str("state", state_word(rec->u.confirm.status));
      jl_str("correlationId",
             rec->u.confirm.corr[0] ? rec->u.confirm.corr : NULL);
    } else {
      line_add(&l, " is %s, correlationId ",
               state_word(rec->u.confirm.status));
      if (rec->u.confirm.corr[0])
        line_quoted(&l, rec->u.confirm.corr);
      else
        line_add(&l, "none (unsolicited)");
    }
    break;
  case BM_JREC_TIMEOUT:
    if (opt_json) {
      jl_str("correlationId", rec->u.timeout.corr);
    } else {
      line_add(&l, " correlationId ");
      line_quoted(&l, rec->u.timeout.corr);
    }
    break;
  case BM_JREC_STATE:
    if (opt_json)
      jl_str("state", state_word(rec->u.state.confirmed));
    else
      line_add(&l, " is %s (snapshot)", state_word(rec->u.state.confirmed));
    break;
  case BM_JREC_SEQ:
    if (opt_json)
      jl_int("commandSeq", (long long)rec->u.seq.cmd_seq);
    else
      line_add(&l, " command sequence %llu",
               (unsigned long long)rec->u.seq.cmd_seq);
    break;
  default:
    break;
  }
  if (opt_json)
    jl_end();
  else
    line_print(&l);
}

/* Applies an answer record to a command. */
static void cmd_apply(struct fold_cmd *c, const struct bm_jrec *rec)
{
  switch (rec->type) {
  case BM_JREC_RESPONSE:
    c->result = rec->u.response.result;
    snprintf(c->reason, sizeof(c->reason), "%s", rec->u.response.reason);
    c->response_ms = rec->time_ms;
    break;
  case BM_JREC_CONFIRM:
    c->confirmed = rec->u.confirm.status;
    c->confirm_ms = rec->time_ms;
    break;
  case BM_JREC_TIMEOUT:
    c->timeout_ms = rec->time_ms;
    break;
  default:
    break;
  }
}

static int fold_record(const struct bm_jrec *rec, uint64_t seq, void *ctx)
{
  struct fold *f = ctx;
  struct fold_relay *r = NULL;

  (void)seq;
  switch (rec->type) {
  case BM_JREC_COMMAND: {
    const struct bm_jrec_command *c = &rec->u.command;
    if (!(r = fold_relay_at(f, c->resource_id, c->output, c->relay)))
      break;
    if (r->has_last && !cmd_finished(&r->last) &&
        strcmp(r->last.corr, c->corr) != 0) {
      r->last.superseded_ms = rec->time_ms;
      if (r->last.status == 1 && c->status != 1)
        r->doubt_ms = rec->time_ms;
    }
    memset(&r->last, 0, sizeof(r->last));
    r->has_last = true;
    snprintf(r->last.corr, sizeof(r->last.corr), "%s", c->corr);
    r->last.status = c->status;
    r->last.attempt = c->attempt;
    snprintf(r->last.origin, sizeof(r->last.origin), "%s", c->origin);
    r->last.time_ms = rec->time_ms;
    r->last.confirmed = -1;
    break;
  }
  case BM_JREC_RESPONSE:
    if ((r = fold_relay_of(f, rec->u.response.corr)))
      cmd_apply(&r->last, rec);
    break;
  case BM_JREC_TIMEOUT:
    if ((r = fold_relay_of(f, rec->u.timeout.corr))) {
      if (!cmd_finished(&r->last) && r->last.status == 1)
        r->doubt_ms = rec->time_ms;
      cmd_apply(&r->last, rec);
    }
    break;
  case BM_JREC_GIVE_UP: {
    const struct bm_jrec_give_up *g = &rec->u.give_up;
    if ((r = fold_relay_at(f, g->resource_id, g->output, g->relay)) &&
        r->has_last)
      r->last.gave_up_ms = rec->time_ms;
    break;
  }
  case BM_JREC_CONFIRM: {
    const struct bm_jrec_confirm *c = &rec->u.confirm;
    uint64_t cseq = c->corr[0] ? bm_relay_corr_seq(c->corr) : 0;

    if (!(r = fold_relay_at(f, c->resource_id, c->output, NULL)))
      break;
    if (c->corr[0] && r->has_last && strcmp(r->last.corr, c->corr) == 0) {
      if (!cmd_finished(&r->last))
        r->doubt_ms = 0; /* answered after any command in doubt */
      cmd_apply(&r->last, rec);
    }
    if (cseq && cseq <= r->confirmed_seq)
      break; /* the live run judged it stale too */
    if (r->confirmed != c->status || !r->since_ms)
      r->since_ms = rec->time_ms;
    r->confirmed = c->status;
    if (cseq)
      r->confirmed_seq = cseq;
    r->snapshot_ms = 0;
    r->has_changed_by = true;
    snprintf(r->changed_by, sizeof(r->changed_by), "%s", c->corr);
    break;
  }
  case BM_JREC_STATE: {
    const struct bm_jrec_state *st = &rec->u.state;
    if (!(r = fold_relay_at(f, st->resource_id, st->output, st->relay)))
      break;
    r->confirmed = st->confirmed;
    r->confirmed_seq = st->applied_seq;
    r->snapshot_ms = rec->time_ms;
    r->doubt_ms = 0; /* a snapshot's doubt follows its state */
    r->has_changed_by = false;
    r->since_ms = 0;
#ifdef BM_JREC_SWITCHES_MAX
    /* Newer journals keep the times of the last confirmed changes. */
    if (st->n_switches > 0)
      r->since_ms = st->switches[st->n_switches - 1];
#endif
    break;
  }
  default:
    break;
  }
  if (f->history)
    history_record(f, rec, r);
  return 0;
}

/* Reads the journal at path into f (relays from g first, so configured
 * names win).  Returns 0, or -1 with the error set. */
static int fold_read(struct fold *f, const struct ctl_gateway *g,
                     const char *path, bool history)
{
  char err[512];

  memset(f, 0, sizeof(*f));
  f->history = history;
  f->gateway = g->c.name;
  f->command_timeout = g->c.policy.command_timeout;
  if (!(f->relays = calloc(MAX_RELAYS, sizeof(*f->relays))))
    return fail("out of memory");
  for (size_t i = 0; i < g->relays_n; i++) {
    struct fold_relay *r = fold_relay_at(f, g->relays[i].resource_id,
                                         g->relays[i].output,
                                         g->relays[i].name);
    if (r)
      r->configured = true;
  }
  if (bm_journal_read(path, fold_record, f, &f->info, err, sizeof(err)) != 0)
    return fail("gateway \"%s\": cannot read the journal: %s", g->c.name,
                err);
  return 0;
}

static void fold_release(struct fold *f)
{
  free(f->relays);
  f->relays = NULL;
}

/* ---- status ------------------------------------------------------------ */

/* Who set the relay's state, as far as the journal tells. */
static const char *changed_by_kind(const struct fold_relay *r)
{
  if (r->confirmed < 0)
    return "none";
  if (!r->has_changed_by)
    return "snapshot";
  if (!r->changed_by[0])
    return "unsolicited";
  if (r->has_last && strcmp(r->changed_by, r->last.corr) == 0)
    return "command";
  if (bm_relay_corr_seq(r->changed_by))
    return "plugin";
  if (strncmp(r->changed_by, "ctl-", 4) == 0)
    return "bimetri-ctl";
  return "other";
}

static void json_cmd(const char *key, const struct fold_cmd *c)
{
  char when[64];

  jl_open(key);
  jl_str("correlationId", c->corr);
  jl_str("state", state_word(c->status));
  jl_int("status", c->status);
  jl_int("attempt", c->attempt);
  jl_str("origin", c->origin);
  iso_time(c->time_ms, when, sizeof(when));
  jl_str("time", when);
  jl_int("timeMs", c->time_ms);
  jl_str("outcome", cmd_outcome(c));
  if (c->result) {
    jl_str("result", bm_result_name(c->result));
    jl_str("reason", c->reason);
    iso_time(c->response_ms, when, sizeof(when));
    jl_str("responseTime", when);
  } else {
    jl_null("result");
  }
  if (c->confirmed >= 0) {
    jl_str("confirmedState", state_word(c->confirmed));
    iso_time(c->confirm_ms, when, sizeof(when));
    jl_str("confirmTime", when);
  }
  if (c->timeout_ms) {
    iso_time(c->timeout_ms, when, sizeof(when));
    jl_str("timeoutTime", when);
  }
  if (c->gave_up_ms) {
    iso_time(c->gave_up_ms, when, sizeof(when));
    jl_str("gaveUpTime", when);
  }
  jl_close();
}

/* "confirmed at T (response sent "Command Queued")" and the like. */
static void describe_outcome(const struct fold_cmd *c, struct line *l)
{
  const char *o = cmd_outcome(c);
  char when[64];

  if (!strcmp(o, "confirmed") || !strcmp(o, "contradicted")) {
    iso_time(c->confirm_ms, when, sizeof(when));
    if (!strcmp(o, "confirmed"))
      line_add(l, "confirmed at %s", when);
    else
      line_add(l, "contradicted at %s: the device reported %s", when,
               state_word(c->confirmed));
  } else if (!strcmp(o, "refused")) {
    line_add(l, "refused by the gateway: %s ", bm_result_name(c->result));
    line_quoted(l, c->reason);
  } else if (!strcmp(o, "timed_out")) {
    iso_time(c->timeout_ms, when, sizeof(when));
    line_add(l, "timed out at %s (%s)", when,
             c->result ? "queued, but no notification"
                       : "no commandResponse");
  } else if (!strcmp(o, "superseded")) {
    line_add(l, "superseded by a newer command");
  } else {
    line_add(l, "pending (%s)", c->result ? "queued by the gateway, waiting "
                                            "for the notification"
                                          : "waiting for the commandResponse");
  }
  if (c->result == BM_RESULT_SENT && strcmp(o, "pending") != 0 &&
      strcmp(o, "timed_out") != 0) {
    line_add(l, " (response sent ");
    line_quoted(l, c->reason);
    line_add(l, ")");
  }
  if (c->gave_up_ms) {
    iso_time(c->gave_up_ms, when, sizeof(when));
    line_add(l, "; retries exhausted at %s", when);
  }
}

static void print_relay(const struct fold *f, const struct fold_relay *r)
{
  const char *kind = changed_by_kind(r);
  char since[64] = "", asof[64] = "", doubt[64] = "";
  struct line l = {.n = 0};
  int64_t doubt_end = r->doubt_ms + (int64_t)(f->command_timeout * 1000.0);

  if (r->doubt_ms && bm_now_wall_ms() < doubt_end)
    iso_time(doubt_end, doubt, sizeof(doubt));
  if (r->since_ms)
    iso_time(r->since_ms, since, sizeof(since));
  if (r->snapshot_ms)
    iso_time(r->snapshot_ms, asof, sizeof(asof));
  if (opt_json) {
    jl_begin("relay");
    jl_str("gateway", f->gateway);
    jl_str("relay", r->name[0] ? r->name : NULL);
    jl_int("resourceId", r->resource_id);
    jl_int("output", r->output);
    jl_bool("configured", r->configured);
    jl_str("state", state_word(r->confirmed));
    jl_str("since", since[0] ? since : NULL);
    jl_str("changedBy", kind);
    jl_str("changedByCorrelationId",
           r->has_changed_by && r->changed_by[0] ? r->changed_by : NULL);
    jl_str("onInDoubtUntil", doubt[0] ? doubt : NULL);
    if (r->has_last) {
      jl_bool("pending", !cmd_finished(&r->last));
      json_cmd("lastCommand", &r->last);
    } else {
      jl_bool("pending", false);
      jl_null("lastCommand");
    }
    jl_end();
    return;
  }

  line_add(&l, "relay ");
  relay_label(r, &l);
  line_add(&l, " (resourceId %lld, output %d%s): %s",
           (long long)r->resource_id, r->output,
           r->configured ? "" : ", not configured", state_word(r->confirmed));
  if (since[0])
    line_add(&l, " since %s", since);
  line_print(&l);

  if (!strcmp(kind, "none")) {
    line_add(&l, "  never reported by the gateway");
  } else if (!strcmp(kind, "snapshot")) {
    line_add(&l, "  as of the journal's snapshot of %s: the records of the "
                 "change were compacted away",
             asof);
  } else if (!strcmp(kind, "unsolicited")) {
    line_add(&l, "  changed without a correlationId: switched at the device, "
                 "or by someone who sent none");
  } else if (!strcmp(kind, "command")) {
    line_add(&l, "  set by the plugin's command below");
  } else {
    line_add(&l, "  set by correlationId ");
    line_quoted(&l, r->changed_by);
    line_add(&l, ": %s",
             !strcmp(kind, "plugin")        ? "an earlier command of the plugin"
             : !strcmp(kind, "bimetri-ctl") ? "bimetri-ctl, by hand"
                                            : "another application");
  }
  line_print(&l);
  if (doubt[0]) {
    line_add(&l, "  perhaps on until %s: an \"on\" command ended unconfirmed "
                 "and may still reach it (its Interlock partners stay off)",
             doubt);
    line_print(&l);
  }

  if (!r->has_last) {
    line_add(&l, "  no command of the plugin in the journal");
    line_print(&l);
    return;
  }
  {
    char when[64];
    iso_time(r->last.time_ms, when, sizeof(when));
    line_add(&l, "  last command: %s at %s, correlationId ",
             state_word(r->last.status), when);
    line_quoted(&l, r->last.corr);
    line_add(&l, ", attempt %d", r->last.attempt);
    line_print(&l);
    line_add(&l, "    origin: ");
    line_quoted(&l, r->last.origin);
    line_print(&l);
    line_add(&l, "    outcome: ");
    describe_outcome(&r->last, &l);
    line_print(&l);
  }
}

static int status_gateway(const struct ctl_opts *o, const struct ctl_gateway *g)
{
  const char *path = o->journal ? o->journal : g->c.journal_file;
  struct fold f;
  char created[64];
  size_t pending = 0;
  int status = -1;
  struct line l = {.n = 0};

  if (!path[0]) {
    fail("gateway \"%s\": no journal: give --journal PATH", g->c.name);
    return -1;
  }
  if (fold_read(&f, g, path, o->history) != 0)
    goto out;
  iso_time(f.info.created_ms, created, sizeof(created));
  if (opt_json) {
    jl_begin("journal");
    jl_str("gateway", g->c.name);
    jl_str("path", path);
    jl_str("created", created);
    jl_int("records", (long long)f.info.records);
    jl_str("stop", f.info.stop);
    jl_bool("complete", strcmp(f.info.stop, "end of file") == 0);
    jl_end();
  } else {
    line_add(&l, "gateway \"%s\": journal ", g->c.name);
    line_quoted(&l, path);
    line_add(&l, ", created %s, %llu records", created,
             (unsigned long long)f.info.records);
    if (strcmp(f.info.stop, "end of file") != 0)
      line_add(&l, ", reading stopped at: %s (a record being written "
                   "right now, or damage: run again to tell)",
               f.info.stop);
    line_print(&l);
  }
  if (f.ignored)
    BM_WARNING("gateway \"%s\": %lu records of relays beyond the first %d "
               "ignored",
               g->c.name, f.ignored, MAX_RELAYS);
  for (size_t i = 0; i < f.n; i++)
    print_relay(&f, &f.relays[i]);

  /* Commands still pending: at most one per relay. */
  for (size_t i = 0; i < f.n; i++) {
    const struct fold_relay *r = &f.relays[i];
    char when[64];

    if (!r->has_last || cmd_finished(&r->last))
      continue;
    pending++;
    if (opt_json) {
      jl_begin("pending");
      jl_str("gateway", g->c.name);
      jl_str("relay", r->name[0] ? r->name : NULL);
      jl_int("resourceId", r->resource_id);
      jl_int("output", r->output);
      json_cmd("command", &r->last);
      jl_end();
      continue;
    }
    if (pending == 1) {
      line_add(&l, "pending commands:");
      line_print(&l);
    }
    iso_time(r->last.time_ms, when, sizeof(when));
    line_add(&l, "  relay ");
    relay_label(r, &l);
    line_add(&l, " %s since %s, correlationId ", state_word(r->last.status),
             when);
    line_quoted(&l, r->last.corr);
    line_add(&l, ": ");
    describe_outcome(&r->last, &l);
    line_print(&l);
  }
  if (!opt_json && pending == 0) {
    line_add(&l, "pending commands: none");
    line_print(&l);
  }
  status = 0;
out:
  fold_release(&f);
  return status;
}

static int cmd_status(const struct ctl_opts *o, struct ctl_conf *cf)
{
  int gi;

  if (o->nargs > 0)
    return fail_exit(EXIT_USAGE, "status takes no arguments (try '" PROG
                                 " --help')");
  if (select_gateway(cf, o->gateway, true, &gi) != 0)
    return EXIT_USAGE;
  if (o->journal && gi < 0 && cf->n > 1)
    return fail_exit(EXIT_USAGE,
                     "--journal with several Gateways: pick one with -g");
  for (size_t i = 0; i < cf->n; i++) {
    if (gi >= 0 && (size_t)gi != i)
      continue;
    if (apply_overrides(o, &cf->gw[i]) != 0 ||
        status_gateway(o, &cf->gw[i]) != 0)
      return EXIT_USAGE;
  }
  return 0;
}

/* ---- set --------------------------------------------------------------- */

struct set_ctx {
  const struct ctl_gateway *g;
  char topic[BM_GW_STR_SIZE * 2];
  const char *relay; /* configured name, or NULL */
  int64_t resource_id;
  int output;
  int status;
  char corr[BM_MSG_ID_SIZE];
  double t0;
  bool got_response;
  struct bm_response resp;
  double resp_at;
  bool got_notif;
  struct bm_notification notif;
  double notif_at;
  unsigned long undecodable;
};

/* A decoded message, large (the token buffer): one per process. */
static struct bm_msg msg_buf;

static void print_response(const struct set_ctx *x)
{
  const struct bm_response *r = &x->resp;
  struct line l = {.n = 0};

  if (opt_json) {
    jl_begin("response");
    jl_str("correlationId", r->correlation_id);
    jl_str("result", bm_result_name(r->result));
    jl_str("reason", r->reason);
    jl_num("elapsed", x->resp_at - x->t0);
    if (r->has_data) {
      if (r->model[0])
        jl_str("model", r->model);
      if (r->network_id[0])
        jl_str("networkId", r->network_id);
    }
    jl_end();
    return;
  }
  line_add(&l, "response: %s ", bm_result_name(r->result));
  line_quoted(&l, r->reason);
  line_add(&l, " after %.3f s", x->resp_at - x->t0);
  if (r->model[0] || r->network_id[0]) {
    line_add(&l, " (model ");
    line_quoted(&l, r->model);
    line_add(&l, ", networkId ");
    line_quoted(&l, r->network_id);
    line_add(&l, ")");
  }
  line_print(&l);
}

static void print_notification(const struct set_ctx *x)
{
  const struct bm_notification *n = &x->notif;
  struct line l = {.n = 0};

  if (opt_json) {
    jl_begin("notification");
    jl_str("correlationId", n->correlation_id);
    jl_str("notificationType", n->notification_type);
    jl_int("resourceId", n->state.resource_id);
    jl_int("output", n->state.output);
    jl_int("status", n->state.status);
    jl_str("state", state_word(n->state.status));
    if (n->user_name[0])
      jl_str("userName", n->user_name);
    jl_num("elapsed", x->notif_at - x->t0);
    jl_end();
    return;
  }
  line_add(&l, "notification: %s: status %d (%s) after %.3f s",
           n->notification_type, n->state.status,
           state_word(n->state.status), x->notif_at - x->t0);
  if (n->user_name[0]) {
    line_add(&l, ", userName ");
    line_quoted(&l, n->user_name);
  }
  line_print(&l);
}

static void set_on_message(struct session *s, const struct mosquitto_message *msg)
{
  struct set_ctx *x = s->ctx;
  struct bm_msg *m = &msg_buf;
  char err[256];

  if (strcmp(msg->topic, x->topic) != 0)
    return;
  if (msg->payloadlen < 0 ||
      bm_msg_decode(msg->payload, (size_t)msg->payloadlen, m, err,
                    sizeof(err)) != 0) {
    x->undecodable++;
    if (opt_verbose)
      fprintf(stderr, PROG ": ignored an undecodable message: %s\n", err);
    return;
  }
  if (opt_verbose && err[0] != '\0') /* a bad spare field (message.h) */
    fprintf(stderr, PROG ": took a message despite its %s\n", err);
  if (m->type == BM_MSG_RESPONSE && !x->got_response &&
      strcmp(m->u.response.correlation_id, x->corr) == 0) {
    x->got_response = true;
    x->resp = m->u.response;
    x->resp_at = bm_now_mono();
    print_response(x);
    if (x->resp.result != BM_RESULT_SENT)
      s->stop = true;
  } else if (m->type == BM_MSG_NOTIFICATION && !x->got_notif &&
             m->u.notification.has_correlation_id &&
             strcmp(m->u.notification.correlation_id, x->corr) == 0) {
    const struct bm_notification *n = &m->u.notification;
    if (!n->has_state || n->state.resource_id != x->resource_id ||
        n->state.output != x->output) {
      BM_WARNING("a notification with our correlationId \"%s\" is not about "
                 "resourceId %lld output %d: ignored",
                 x->corr, (long long)x->resource_id, x->output);
    } else {
      x->got_notif = true;
      x->notif = *n;
      x->notif_at = bm_now_mono();
      print_notification(x);
      s->stop = true;
    }
  } else if (opt_verbose) {
    fprintf(stderr, PROG ": ignored a message of another command\n");
  }
  OPENSSL_cleanse(m, sizeof(*m)); /* a command on this topic holds a token */
}

/* Interlock check before switching on: refused (exit 9) when another relay
 * of one of the relay's Interlocks is on, commanded on, or perhaps on (an
 * "on" command of it ended unconfirmed less than CommandTimeout ago), as
 * far as the journal tells; unknown states do not refuse (as in the
 * plugin). */
static int check_interlock(const struct ctl_opts *o, const struct ctl_conf *cf,
                           int gi, int relay)
{
  const struct ctl_gateway *g = &cf->gw[gi];
  struct fold f;
  bool involved = false;
  int status = EXIT_USAGE;
  int64_t now_ms = bm_now_wall_ms();
  double timeout = g->c.policy.command_timeout;

  for (size_t i = 0; i < cf->interlocks_n; i++)
    for (int k = 0; k < cf->interlocks[i].n; k++)
      involved |= cf->interlocks[i].gateway == gi &&
                  cf->interlocks[i].relays[k] == relay;
  if (!involved)
    return 0;
  if (fold_read(&f, g, g->c.journal_file, false) != 0) {
    if (o->force) {
      BM_WARNING("%s; --force: switching on without the Interlock check",
                 error_msg);
      error_msg[0] = '\0';
      status = 0;
    } else {
      char why[1024];
      snprintf(why, sizeof(why), "%s", error_msg);
      fail("relay \"%s\" is in an Interlock, and its partners' states are "
           "not known (%s): not sent (--force switches anyway)",
           g->relays[relay].name, why);
      status = EXIT_INTERLOCK;
    }
    goto out;
  }
  for (size_t i = 0; i < cf->interlocks_n; i++) {
    const struct bm_plugconf_interlock *il = &cf->interlocks[i];
    bool here = false;

    for (int k = 0; k < il->n; k++)
      here |= il->gateway == gi && il->relays[k] == relay;
    if (!here)
      continue;
    for (int k = 0; k < il->n; k++) {
      const struct bm_plugconf_relay *p = &g->relays[il->relays[k]];
      if (il->relays[k] == relay)
        continue;
      for (size_t j = 0; j < f.n; j++) {
        const struct fold_relay *r = &f.relays[j];
        bool on_now = r->confirmed == 1;
        bool on_soon = r->has_last && !cmd_finished(&r->last) &&
                       r->last.status == 1;
        bool in_doubt = r->doubt_ms &&
                        now_ms < r->doubt_ms + (int64_t)(timeout * 1000.0);
        const char *is = on_now    ? "on"
                         : on_soon ? "commanded on"
                                   : "perhaps on (an unconfirmed \"on\" "
                                     "command may still reach it)";
        if (r->resource_id != p->resource_id || r->output != p->output ||
            (!on_now && !on_soon && !in_doubt))
          continue;
        if (o->force) {
          BM_WARNING("Interlock: relay \"%s\" is %s; --force: switching "
                     "\"%s\" on anyway",
                     p->name, is, g->relays[relay].name);
          continue;
        }
        fail("relay \"%s\" may not be on together with relay \"%s\", which "
             "is %s (Interlock): not sent (--force switches anyway)",
             g->relays[relay].name, p->name, is);
        status = EXIT_INTERLOCK;
        goto out;
      }
    }
  }
  status = 0;
out:
  fold_release(&f);
  return status;
}

static int parse_state(const char *s)
{
  if (!strcasecmp(s, "on") || !strcmp(s, "1"))
    return 1;
  if (!strcasecmp(s, "off") || !strcmp(s, "0"))
    return 0;
  return -1;
}

static void print_result(const struct set_ctx *x, const char *outcome,
                         int code, const char *detail)
{
  struct line l = {.n = 0};

  if (opt_json) {
    jl_begin("result");
    jl_str("outcome", outcome);
    jl_int("exit", code);
    jl_str("correlationId", x->corr);
    jl_str("relay", x->relay);
    jl_int("resourceId", x->resource_id);
    jl_int("output", x->output);
    jl_str("requested", state_word(x->status));
    if (x->got_notif)
      jl_str("state", state_word(x->notif.state.status));
    else
      jl_null("state");
    jl_str("detail", detail);
    jl_end();
    return;
  }
  line_add(&l, "result: %s: %s", outcome, detail);
  line_print(&l);
}

static int cmd_set(const struct ctl_opts *o, struct ctl_conf *cf)
{
  static struct bm_command cmd; /* holds the token: cleared below */
  static char payload[BM_MSG_MAX_SIZE];
  struct set_ctx x;
  struct session s;
  struct ctl_gateway *g;
  bm_token_t *tok = NULL;
  const char *state_arg;
  char err[512], why[256], detail[512];
  int gi, relay = -1, len = 0, rc, code = EXIT_USAGE;
  bool config_error;
  int64_t exp;

  memset(&x, 0, sizeof(x));
  memset(&s, 0, sizeof(s));
  if (select_gateway(cf, o->gateway, false, &gi) != 0)
    return EXIT_USAGE;
  g = &cf->gw[gi];
  if (apply_overrides(o, g) != 0 || require(g, true) != 0)
    return EXIT_USAGE;

  /* 1. which relay, which state */
  if ((o->resource_id >= 0) != (o->output >= 0)) {
    usage_error("--resource-id and --output go together");
    return EXIT_USAGE;
  }
  if (o->resource_id >= 0) {
    if (o->nargs != 1) {
      usage_error("set with --resource-id takes one argument: on or off");
      return EXIT_USAGE;
    }
    x.resource_id = o->resource_id;
    x.output = (int)o->output;
    for (size_t i = 0; i < g->relays_n; i++)
      if (g->relays[i].resource_id == x.resource_id &&
          g->relays[i].output == x.output)
        relay = (int)i;
    state_arg = o->args[0];
  } else {
    if (o->nargs != 2) {
      usage_error("set takes two arguments: RELAY on|off");
      return EXIT_USAGE;
    }
    for (size_t i = 0; i < g->relays_n; i++)
      if (strcmp(g->relays[i].name, o->args[0]) == 0)
        relay = (int)i;
    if (relay < 0) {
      struct line names = {.n = 0};
      for (size_t i = 0; i < g->relays_n; i++)
        line_add(&names, "%s\"%s\"", i ? ", " : "", g->relays[i].name);
      return fail_exit(EXIT_USAGE, "gateway \"%s\" has no Relay \"%s\" (%s%s)",
                       g->c.name, o->args[0],
                       g->relays_n ? "it has " : "it has none", names.b);
    }
    x.resource_id = g->relays[relay].resource_id;
    x.output = g->relays[relay].output;
    state_arg = o->args[1];
  }
  if ((x.status = parse_state(state_arg)) < 0) {
    usage_error("expected on or off, got \"%s\"", state_arg);
    return EXIT_USAGE;
  }
  x.g = g;
  x.relay = relay >= 0 ? g->relays[relay].name : NULL;
  app_topic(g, x.topic, sizeof(x.topic));
  if (x.status == 1 && relay >= 0 &&
      (code = check_interlock(o, cf, gi, relay)) != 0)
    return code;

  /* 2. the token, before anything goes on the wire */
  if (!(tok = bm_token_new(&g->c.token, (int64_t)time(NULL), err,
                           sizeof(err)))) {
    fail("gateway \"%s\": no token: %s", g->c.name, err);
    return EXIT_USAGE;
  }
  if (bm_token_usable(tok, (int64_t)time(NULL), g->c.token_leeway, why,
                      sizeof(why)) != 0) {
    fail("gateway \"%s\": not sent: token %s: %s", g->c.name,
         bm_token_fingerprint(tok), why);
    code = EXIT_UNAUTHORIZED;
    goto out;
  }

  /* 3. the session, subscribed before the command goes out */
  s.topics[0] = x.topic;
  s.ntopics = 1;
  s.on_message = set_on_message;
  s.ctx = &x;
  if (session_open(&s, g, &config_error) != 0) {
    code = config_error ? EXIT_USAGE : EXIT_CONNECTION;
    goto out;
  }

  /* 4. the command */
  {
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
      fail("cannot get random bytes for the correlationId");
      goto out;
    }
    snprintf(x.corr, sizeof(x.corr), "ctl-");
    for (size_t i = 0; i < sizeof(rnd); i++)
      snprintf(x.corr + 4 + 2 * i, 3, "%02x", rnd[i]);
    snprintf(x.corr + 20, sizeof(x.corr) - 20, "-1");
  }
  memset(&cmd, 0, sizeof(cmd));
  snprintf(cmd.app_id, sizeof(cmd.app_id), "%s.%s", g->c.app_name,
           g->c.instance_id);
  snprintf(cmd.brand, sizeof(cmd.brand), "%s", g->c.brand);
  snprintf(cmd.jwt_token, sizeof(cmd.jwt_token), "%s", bm_token_value(tok));
  cmd.user_id = g->c.user_id;
  cmd.organization_id = g->c.organization_id;
  snprintf(cmd.command, sizeof(cmd.command), "setExtDO");
  snprintf(cmd.correlation_id, sizeof(cmd.correlation_id), "%s", x.corr);
  cmd.parameters.resource_id = x.resource_id;
  cmd.parameters.output = x.output;
  cmd.parameters.status = x.status;
  len = bm_msg_encode_command(&cmd, payload, sizeof(payload));
  OPENSSL_cleanse(cmd.jwt_token, sizeof(cmd.jwt_token));
  if (len < 0) {
    fail("cannot encode the command: too large");
    goto out;
  }
  x.t0 = bm_now_mono();
  rc = mosquitto_publish(s.m, NULL, g->c.command_topic, len, payload,
                         g->c.qos, false);
  OPENSSL_cleanse(payload, (size_t)len);
  if (rc != MOSQ_ERR_SUCCESS) {
    fail("gateway \"%s\": publish failed: %s", g->c.name,
         mosquitto_strerror(rc));
    code = EXIT_CONNECTION;
    goto out;
  }
  {
    char when[64];
    struct line l = {.n = 0};
    iso_time(bm_now_wall_ms(), when, sizeof(when));
    if (opt_json) {
      jl_begin("published");
      jl_str("gateway", g->c.name);
      jl_str("relay", x.relay);
      jl_int("resourceId", x.resource_id);
      jl_int("output", x.output);
      jl_int("status", x.status);
      jl_str("state", state_word(x.status));
      jl_str("correlationId", x.corr);
      jl_str("topic", g->c.command_topic);
      jl_int("qos", g->c.qos);
      jl_str("token", bm_token_fingerprint(tok));
      if (bm_token_expiry(tok, &exp)) {
        char e[64];
        iso_time(exp * 1000, e, sizeof(e));
        jl_str("tokenExpires", e);
      }
      jl_str("time", when);
      jl_end();
    } else {
      line_add(&l, "published: setExtDO ");
      if (x.relay)
        line_add(&l, "relay \"%s\" ", x.relay);
      line_add(&l, "(resourceId %lld, output %d) %s, correlationId \"%s\", "
                   "gateway \"%s\" at %s:%d, token %s, %s",
               (long long)x.resource_id, x.output, state_word(x.status),
               x.corr, g->c.name, g->c.host, g->c.port,
               bm_token_fingerprint(tok), when);
      line_print(&l);
    }
  }

  /* 5. the answers: response within AckTimeout, notification within
   * CommandTimeout, both from the publish (or --timeout for both) */
  {
    double ack_by = x.t0 + (o->timeout > 0 ? o->timeout
                                           : g->c.policy.ack_timeout);
    double notif_by = x.t0 + (o->timeout > 0 ? o->timeout
                                             : g->c.policy.command_timeout);
    for (;;) {
      double until = x.got_response ? notif_by : fmin(ack_by, notif_by);
      if (x.got_notif || (x.got_response && x.resp.result != BM_RESULT_SENT))
        break;
      if (bm_now_mono() >= until || s.state == SESS_LOST || interrupted)
        break;
      session_run(&s, until, false);
    }
    if (x.got_notif) {
      bool same = x.notif.state.status == x.status;
      snprintf(detail, sizeof(detail), "the device reports relay %s%s%s is %s",
               x.relay ? "\"" : "", x.relay ? x.relay : "",
               x.relay ? "\"" : "", state_word(x.notif.state.status));
      code = same ? EXIT_CONFIRMED : EXIT_OTHER_STATE;
      print_result(&x, same ? "confirmed" : "other_state", code, detail);
    } else if (x.got_response && x.resp.result != BM_RESULT_SENT) {
      static const int codes[] = {0, 0, EXIT_NOT_SEND, EXIT_FAILED,
                                  EXIT_SEND_NO_ACK, EXIT_UNAUTHORIZED};
      code = codes[x.resp.result];
      snprintf(detail, sizeof(detail), "the gateway answered %s: %s",
               bm_result_name(x.resp.result), x.resp.reason);
      print_result(&x, bm_result_name(x.resp.result), code, detail);
    } else if (s.state == SESS_LOST) {
      code = EXIT_CONNECTION;
      snprintf(detail, sizeof(detail), "the broker connection was lost (%s) "
                                       "before the outcome: the command may "
                                       "still be carried out",
               s.why);
      print_result(&x, "connection_lost", code, detail);
    } else {
      code = EXIT_TIMEOUT;
      if (interrupted)
        snprintf(detail, sizeof(detail), "interrupted before the outcome");
      else if (!x.got_response)
        snprintf(detail, sizeof(detail), "no commandResponse within %g s%s",
                 ack_by - x.t0,
                 x.undecodable ? " (undecodable messages were ignored)" : "");
      else
        snprintf(detail, sizeof(detail), "queued, but no notification within "
                                         "%g s",
                 notif_by - x.t0);
      print_result(&x, "timeout", code, detail);
    }
  }
out:
  session_close(&s);
  bm_token_free(tok);
  return code;
}

/* ---- watch ------------------------------------------------------------- */

struct watch_ctx {
  char app[BM_GW_STR_SIZE * 2];
  int64_t count; /* -1 unlimited */
  int64_t seen;
};

static bool b64url_char(char c)
{
  return isalnum((unsigned char)c) || c == '-' || c == '_';
}

/* Length of a JWT-looking word at p ("eyJ" base64url, '.', base64url, and
 * optionally '.' and a signature), 0 when there is none. */
static size_t jwt_at(const char *p, size_t len)
{
  size_t i = 0, dots = 0;

  if (len < 3 || memcmp(p, "eyJ", 3) != 0)
    return 0;
  while (i < len && (b64url_char(p[i]) || (p[i] == '.' && dots < 2))) {
    dots += p[i] == '.';
    i++;
  }
  return dots >= 1 && i >= 10 ? i : 0;
}

/* Appends "<token FINGERPRINT>" for the n bytes at p. */
static size_t put_fingerprint(const char *p, size_t n, char *out, size_t cap,
                              size_t o)
{
  char fp[13], *copy = malloc(n + 1), tag[32];
  size_t tl;

  if (copy) {
    memcpy(copy, p, n);
    copy[n] = '\0';
    bm_jwt_fingerprint(copy, fp);
    OPENSSL_cleanse(copy, n);
    free(copy);
  } else {
    snprintf(fp, sizeof(fp), "------------");
  }
  tl = (size_t)snprintf(tag, sizeof(tag), "<token %s>", fp);
  for (size_t i = 0; i < tl && o < cap; i++)
    out[o++] = tag[i];
  return o;
}

/* Copies at most cap bytes of the payload into out, every string value of
 * a "jwtToken" member and every JWT-looking word replaced by
 * "<token FINGERPRINT>".  Returns the bytes written. */
static size_t redact(const char *in, size_t len, char *out, size_t cap)
{
  static const char key[] = "\"jwtToken\"";
  size_t i = 0, o = 0, n;

  while (i < len && o < cap) {
    if (len - i >= sizeof(key) - 1 && memcmp(in + i, key, sizeof(key) - 1) == 0) {
      size_t j = i + sizeof(key) - 1, k;
      while (j < len && (isspace((unsigned char)in[j]) || in[j] == ':'))
        j++;
      for (; i < j && o < cap; i++)
        out[o++] = in[i];
      if (j < len && in[j] == '"') {
        for (k = j + 1; k < len && in[k] != '"'; k++)
          if (in[k] == '\\')
            k++;
        k = k < len ? k : len;
        o = put_fingerprint(in + j + 1, k - j - 1, out, cap, o);
        i = k < len ? k + 1 : len;
      }
      continue;
    }
    if ((i == 0 || !b64url_char(in[i - 1])) && (n = jwt_at(in + i, len - i))) {
      o = put_fingerprint(in + i, n, out, cap, o);
      i += n;
      continue;
    }
    out[o++] = in[i++];
  }
  return o;
}

static void watch_error(const char *topic, const char *when, int64_t ms,
                        const char *err, const void *payload, size_t len)
{
  char excerpt[EXCERPT_MAX + 1];
  size_t n = redact(payload, len, excerpt, EXCERPT_MAX);
  bool cut = n == EXCERPT_MAX;
  struct line l = {.n = 0};

  excerpt[n] = '\0';
  if (opt_json) {
    jl_begin("error");
    jl_str("time", when);
    jl_int("timeMs", ms);
    jl_str("topic", topic);
    jl_str("error", err);
    jl_int("size", (long long)len);
    /* The excerpt may hold NUL bytes: shown as \x00 text. */
    {
      struct line e = {.n = 0};
      for (size_t i = 0; i < n; i++)
        if (excerpt[i] == '\0')
          line_add(&e, "\\x00");
        else
          line_add(&e, "%c", excerpt[i]);
      jl_str("excerpt", e.b);
    }
    jl_bool("truncated", cut);
    jl_end();
    return;
  }
  line_add(&l, "%s %s ERROR undecodable (%s), %zu bytes: ", when, topic, err,
           len);
  line_quoted_n(&l, excerpt, n);
  if (cut)
    line_add(&l, "...");
  line_print(&l);
}

static void watch_message(struct session *s, const struct mosquitto_message *msg)
{
  struct watch_ctx *w = s->ctx;
  struct bm_msg *m = &msg_buf;
  char err[256], when[64], fp[13];
  int64_t ms = bm_now_wall_ms();
  struct line l = {.n = 0};
  size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;

  iso_time(ms, when, sizeof(when));
  w->seen++;
  if (w->count > 0 && w->seen >= w->count)
    s->stop = true;
  if (bm_msg_decode(msg->payload, len, m, err, sizeof(err)) != 0) {
    watch_error(msg->topic, when, ms, err, msg->payload, len);
    return;
  }
  if (opt_json) {
    jl_begin("message");
    jl_str("time", when);
    jl_int("timeMs", ms);
    jl_str("topic", msg->topic);
    jl_bool("retained", msg->retain);
  } else {
    line_add(&l, "%s %s%s", when, msg->topic, msg->retain ? " (retained)" : "");
  }

  switch (m->type) {
  case BM_MSG_COMMAND: {
    const struct bm_command *c = &m->u.command;
    bm_jwt_fingerprint(c->jwt_token, fp);
    if (opt_json) {
      jl_str("messageType", "commandMessage");
      jl_str("appId", c->app_id);
      jl_str("brand", c->brand);
      jl_str("jwtTokenFingerprint", fp);
      jl_int("userId", c->user_id);
      jl_int("organizationId", c->organization_id);
      jl_str("command", c->command);
      jl_str("correlationId", c->correlation_id);
      if (!strcmp(c->command, "setExtDO")) {
        jl_int("resourceId", c->parameters.resource_id);
        jl_int("output", c->parameters.output);
        jl_int("status", c->parameters.status);
      }
    } else {
      line_add(&l, " commandMessage correlationId=");
      line_quoted(&l, c->correlation_id);
      line_add(&l, " command=");
      line_quoted(&l, c->command);
      if (!strcmp(c->command, "setExtDO"))
        line_add(&l, " resourceId=%lld output=%d status=%d",
                 (long long)c->parameters.resource_id, c->parameters.output,
                 c->parameters.status);
      line_add(&l, " appId=");
      line_quoted(&l, c->app_id);
      line_add(&l, " brand=");
      line_quoted(&l, c->brand);
      line_add(&l, " userId=%lld organizationId=%lld token=%s",
               (long long)c->user_id, (long long)c->organization_id, fp);
    }
    break;
  }
  case BM_MSG_RESPONSE: {
    const struct bm_response *r = &m->u.response;
    if (opt_json) {
      jl_str("messageType", "commandResponse");
      jl_str("correlationId", r->correlation_id);
      jl_str("result", bm_result_name(r->result));
      jl_str("reason", r->reason);
      if (r->has_data) {
        jl_open("data");
        if (r->data_command[0])
          jl_str("command", r->data_command);
        if (r->has_resource_id)
          jl_int("resourceId", r->resource_id);
        if (r->has_user_id)
          jl_int("userId", r->user_id);
        if (r->brand[0])
          jl_str("brand", r->brand);
        if (r->model[0])
          jl_str("model", r->model);
        if (r->network_id[0])
          jl_str("networkId", r->network_id);
        jl_close();
      }
    } else {
      line_add(&l, " commandResponse correlationId=");
      line_quoted(&l, r->correlation_id);
      line_add(&l, " result=%s reason=", bm_result_name(r->result));
      line_quoted(&l, r->reason);
      if (r->has_resource_id)
        line_add(&l, " resourceId=%lld", (long long)r->resource_id);
      if (r->has_user_id)
        line_add(&l, " userId=%lld", (long long)r->user_id);
      if (r->model[0]) {
        line_add(&l, " model=");
        line_quoted(&l, r->model);
      }
      if (r->network_id[0]) {
        line_add(&l, " networkId=");
        line_quoted(&l, r->network_id);
      }
    }
    break;
  }
  case BM_MSG_NOTIFICATION: {
    const struct bm_notification *n = &m->u.notification;
    if (opt_json) {
      jl_str("messageType", "notification");
      jl_str("appId", n->app_id);
      jl_str("correlationId", n->has_correlation_id ? n->correlation_id : NULL);
      jl_str("notificationType", n->notification_type);
      if (n->command[0])
        jl_str("command", n->command);
      if (n->user_name[0])
        jl_str("userName", n->user_name);
      if (n->has_user_id)
        jl_int("userId", n->user_id);
      if (n->has_state) {
        jl_int("resourceId", n->state.resource_id);
        jl_int("output", n->state.output);
        jl_int("status", n->state.status);
      }
    } else {
      line_add(&l, " notification correlationId=");
      if (n->has_correlation_id)
        line_quoted(&l, n->correlation_id);
      else
        line_add(&l, "none");
      line_add(&l, " notificationType=");
      line_quoted(&l, n->notification_type);
      if (n->has_state)
        line_add(&l, " resourceId=%lld output=%d status=%d",
                 (long long)n->state.resource_id, n->state.output,
                 n->state.status);
      line_add(&l, " appId=");
      line_quoted(&l, n->app_id);
      if (n->user_name[0]) {
        line_add(&l, " userName=");
        line_quoted(&l, n->user_name);
      }
    }
    break;
  }
  }
  if (err[0] != '\0') { /* a bad spare field, read as absent (message.h) */
    if (opt_json) {
      jl_str("ignored", err);
    } else {
      line_add(&l, " ignored=");
      line_quoted(&l, err);
    }
  }
  OPENSSL_cleanse(m, sizeof(*m));
  if (opt_json)
    jl_end();
  else
    line_print(&l);
}

static int cmd_watch(const struct ctl_opts *o, struct ctl_conf *cf)
{
  struct watch_ctx w;
  struct session s;
  struct ctl_gateway *g;
  bool config_error;
  int gi, code;

  memset(&w, 0, sizeof(w));
  memset(&s, 0, sizeof(s));
  if (o->nargs > 0) {
    usage_error("watch takes no arguments");
    return EXIT_USAGE;
  }
  if (select_gateway(cf, o->gateway, false, &gi) != 0)
    return EXIT_USAGE;
  g = &cf->gw[gi];
  if (apply_overrides(o, g) != 0 || require(g, false) != 0)
    return EXIT_USAGE;
  app_topic(g, w.app, sizeof(w.app));
  w.count = o->count;
  s.topics[0] = w.app;
  s.ntopics = 1;
  if (o->commands)
    s.topics[s.ntopics++] = g->c.command_topic;
  s.on_message = watch_message;
  s.ctx = &w;
  if (session_open(&s, g, &config_error) != 0) {
    code = config_error ? EXIT_USAGE : EXIT_CONNECTION;
    goto out;
  }
  /* On stderr, so that standard output holds only the messages. */
  fprintf(stderr, PROG ": gateway \"%s\": watching \"%s\"%s%s%s on %s:%d\n",
          g->c.name, w.app, o->commands ? " and \"" : "",
          o->commands ? g->c.command_topic : "", o->commands ? "\"" : "",
          g->c.host, g->c.port);
  {
    double until = o->duration > 0 ? bm_now_mono() + o->duration : HUGE_VAL;
    while (!interrupted && s.state != SESS_LOST && bm_now_mono() < until &&
           !(w.count > 0 && w.seen >= w.count))
      session_run(&s, fmin(until, bm_now_mono() + 3600), false);
  }
  if (s.state == SESS_LOST) {
    fail("gateway \"%s\": the broker connection was lost: %s", g->c.name,
         s.why);
    code = EXIT_CONNECTION;
  } else if (w.count > 0 && w.seen < w.count && !interrupted) {
    fail("%lld of %lld messages within %g s", (long long)w.seen,
         (long long)w.count, o->duration);
    code = EXIT_TIMEOUT;
  } else {
    code = 0;
  }
out:
  session_close(&s);
  return code;
}

/* ---- main -------------------------------------------------------------- */

static void on_signal(int sig)
{
  (void)sig;
  interrupted = 1;
}

int main(int argc, char **argv)
{
  struct ctl_opts o;
  struct ctl_conf cf;
  struct sigaction sa;
  int code = EXIT_USAGE;
  bool lib = false;

  memset(&cf, 0, sizeof(cf));
  bm_log_set_sink(log_sink, NULL);
  if (parse_opts(argc, argv, &o) != 0)
    goto out;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (load_config(&o, &cf) != 0)
    goto out;
  if (bm_gateway_library_init() != 0) {
    fail("cannot initialise libmosquitto");
    goto out;
  }
  lib = true;
  if (!strcmp(o.command, "set"))
    code = cmd_set(&o, &cf);
  else if (!strcmp(o.command, "status"))
    code = cmd_status(&o, &cf);
  else
    code = cmd_watch(&o, &cf);
out:
  if (error_msg[0])
    report_error(code);
  conf_release(&cf);
  if (lib)
    bm_gateway_library_cleanup();
  return code;
}
