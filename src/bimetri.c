/*
 * bimetri.c - the collectd plugin glue: the only file that includes collectd
 * headers.
 *
 * It turns the <Plugin bimetri> block into gateways (gateway.h) and triggers
 * (match.h), starts one thread per gateway with plugin_thread_create, feeds
 * collectd notifications to the triggers, and turns the gateways' events
 * into collectd notifications and values:
 *
 *   bimetri-<gateway>/bool-<relay>                confirmed state 0/1
 *   bimetri-<gateway>/pending_operations-<relay>  commands in flight
 *   bimetri-<gateway>/current_connections         1 while subscribed
 *   bimetri-<gateway>/operations-<outcome>        DERIVE counters
 *   bimetri-<gateway>/response_time-ack|confirm   mean seconds per interval
 *
 * Callbacks never block: the notification callback only records intents
 * (bm_gateway_request takes a mutex for a few hundred nanoseconds); values
 * and notifications about relays are dispatched from the gateway threads,
 * which hold no lock while they do so.
 */
#include "bm_config.h"

#include <collectd/core/daemon/plugin.h>
#include <collectd/core/utils/common/common.h>

#include <regex.h>

#include <collectd/core/daemon/utils_cache.h>

#include "gateway.h"
#include "log.h"
#include "match.h"
#include "rule.h"

#define PLUGIN_NAME "bimetri"
#define MAX_GATEWAYS 64

struct gateway_slot {
  bm_gateway_t *gw;
  pthread_t thread;
  bool running;
  struct bm_relay_view *views; /* snapshot buffer for the read callback */
  char journal_file[BM_GW_PATH_SIZE];
  bool *manual_control; /* per relay: relay_command notifications obeyed */
};

static struct gateway_slot gateways[MAX_GATEWAYS];
static size_t gateways_n;
static struct bm_trigger *triggers;
static size_t triggers_n;
static struct bm_rule **rules; /* pointers: a rule holds a mutex */
static size_t rules_n;
static bool config_failed;
/* Set at the end of init: rules act only once the journal's states are
 * restored (values may be written before our init ran). */
static volatile bool started;

/* ---- logging ----------------------------------------------------------- */

static void glue_log(int level, const char *line, void *ctx)
{
  (void)ctx;
  plugin_log(level, PLUGIN_NAME " plugin: %s", line);
}

/* ---- config helpers ---------------------------------------------------- */

/* Every config error names the block and the option. */
#define CONF_ERR(block, ci, ...)                                               \
  do {                                                                         \
    char msg_[512];                                                            \
    snprintf(msg_, sizeof(msg_), __VA_ARGS__);                                 \
    ERROR(PLUGIN_NAME " plugin: %s, option \"%s\": %s", block, (ci)->key,      \
          msg_);                                                               \
  } while (0)

static int conf_string(const char *block, const oconfig_item_t *ci, char *buf,
                       size_t size)
{
  if (ci->values_num != 1 || ci->values[0].type != OCONFIG_TYPE_STRING) {
    CONF_ERR(block, ci, "expects exactly one string argument");
    return -1;
  }
  if (strlen(ci->values[0].value.string) >= size) {
    CONF_ERR(block, ci, "longer than %zu bytes", size - 1);
    return -1;
  }
  sstrncpy(buf, ci->values[0].value.string, size);
  return 0;
}

static int conf_number(const char *block, const oconfig_item_t *ci, double min,
                       double max, bool integer, double *out)
{
  double v;

  if (ci->values_num != 1 || ci->values[0].type != OCONFIG_TYPE_NUMBER) {
    CONF_ERR(block, ci, "expects exactly one number argument");
    return -1;
  }
  v = ci->values[0].value.number;
  if (!(v >= min && v <= max) || (integer && v != (double)(int64_t)v)) {
    CONF_ERR(block, ci, "expects %s from %g to %g, got %g",
             integer ? "an integer" : "a number", min, max, v);
    return -1;
  }
  *out = v;
  return 0;
}

static int conf_int(const char *block, const oconfig_item_t *ci, double min,
                    double max, int64_t *out)
{
  double v;
  if (conf_number(block, ci, min, max, true, &v) != 0)
    return -1;
  *out = (int64_t)v;
  return 0;
}

static int conf_bool(const char *block, const oconfig_item_t *ci, bool *out)
{
  if (ci->values_num != 1 || ci->values[0].type != OCONFIG_TYPE_BOOLEAN) {
    CONF_ERR(block, ci, "expects true or false");
    return -1;
  }
  *out = ci->values[0].value.boolean;
  return 0;
}

/* Reads a password from a file (one line, the newline dropped), warning
 * when group or others may read it. */
static int read_secret(const char *block, const oconfig_item_t *ci,
                       const char *path, char *buf, size_t size)
{
  struct stat st;
  FILE *f = fopen(path, "re");
  size_t len;
  int status = -1;

  if (!f) {
    CONF_ERR(block, ci, "cannot open \"%s\": %s", path, STRERRNO);
    return -1;
  }
  if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
    WARNING(PLUGIN_NAME " plugin: %s, option \"%s\": \"%s\" is readable by "
                        "group or others (mode %04o): chmod 600 it",
            block, ci->key, path, (unsigned)(st.st_mode & 07777));
  if (!fgets(buf, (int)size, f)) {
    CONF_ERR(block, ci, "\"%s\" is empty", path);
    goto out;
  }
  len = strlen(buf);
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    buf[--len] = '\0';
  if (len == 0) {
    CONF_ERR(block, ci, "\"%s\" is empty", path);
    goto out;
  }
  status = 0;
out:
  fclose(f);
  return status;
}

/* <Token>: a token minted here. */
static int conf_token_block(const char *gw_block, const oconfig_item_t *ci,
                            struct bm_token_conf *t)
{
  char block[160], alg[16] = "";
  bool has_key = false;
  double d;

  snprintf(block, sizeof(block), "%s <Token>", gw_block);
  if (ci->values_num != 0) {
    ERROR(PLUGIN_NAME " plugin: %s: the block takes no argument", block);
    return -1;
  }
  t->kind = BM_TOKEN_MINT;
  for (int i = 0; i < ci->children_num; i++) {
    const oconfig_item_t *o = &ci->children[i];
    int rc = -1;

    if (strcasecmp(o->key, "Algorithm") == 0) {
      if ((rc = conf_string(block, o, alg, sizeof(alg))) == 0) {
        if (strcmp(alg, "HS256") == 0)
          t->alg = BM_TOKEN_HS256;
        else if (strcmp(alg, "RS256") == 0)
          t->alg = BM_TOKEN_RS256;
        else if (strcmp(alg, "ES256") == 0)
          t->alg = BM_TOKEN_ES256;
        else {
          CONF_ERR(block, o, "expects HS256, RS256 or ES256, got \"%s\"", alg);
          rc = -1;
        }
      }
    } else if (strcasecmp(o->key, "KeyFile") == 0) {
      rc = conf_string(block, o, t->file, sizeof(t->file));
      has_key = true;
    } else if (strcasecmp(o->key, "Issuer") == 0) {
      rc = conf_string(block, o, t->issuer, sizeof(t->issuer));
    } else if (strcasecmp(o->key, "Subject") == 0) {
      rc = conf_string(block, o, t->subject, sizeof(t->subject));
    } else if (strcasecmp(o->key, "Audience") == 0) {
      rc = conf_string(block, o, t->audience, sizeof(t->audience));
    } else if (strcasecmp(o->key, "Lifetime") == 0) {
      if ((rc = conf_number(block, o, 60, 31536000, false, &d)) == 0)
        t->lifetime = d;
    } else if (strcasecmp(o->key, "RenewBefore") == 0) {
      if ((rc = conf_number(block, o, 1, 31536000, false, &d)) == 0)
        t->renew_before = d;
    } else if (strcasecmp(o->key, "Claim") == 0) {
      static const char *reserved[] = {"iss", "sub", "aud", "exp",
                                       "nbf", "iat", "jti"};
      if (o->values_num != 2 || o->values[0].type != OCONFIG_TYPE_STRING ||
          o->values[1].type != OCONFIG_TYPE_STRING) {
        CONF_ERR(block, o, "expects two strings: the claim's name and value");
      } else if (t->n_claims == BM_TOKEN_MAX_CLAIMS) {
        CONF_ERR(block, o, "at most %d claims", BM_TOKEN_MAX_CLAIMS);
      } else if (!o->values[0].value.string[0] ||
                 strlen(o->values[0].value.string) >= sizeof(t->claims[0].name) ||
                 strlen(o->values[1].value.string) >= sizeof(t->claims[0].value)) {
        CONF_ERR(block, o, "the name must be 1 to 63 bytes, the value at most "
                           "255");
      } else {
        rc = 0;
        for (size_t r = 0; r < sizeof(reserved) / sizeof(reserved[0]); r++)
          if (strcmp(o->values[0].value.string, reserved[r]) == 0) {
            CONF_ERR(block, o, "\"%s\" is set by the plugin itself",
                     reserved[r]);
            rc = -1;
          }
        for (int c = 0; c < t->n_claims && rc == 0; c++)
          if (strcmp(t->claims[c].name, o->values[0].value.string) == 0) {
            CONF_ERR(block, o, "claim \"%s\" given twice", t->claims[c].name);
            rc = -1;
          }
        if (rc == 0) {
          sstrncpy(t->claims[t->n_claims].name, o->values[0].value.string,
                   sizeof(t->claims[0].name));
          sstrncpy(t->claims[t->n_claims].value, o->values[1].value.string,
                   sizeof(t->claims[0].value));
          t->n_claims++;
        }
      }
    } else {
      CONF_ERR(block, o, "unknown option");
    }
    if (rc != 0)
      return -1;
  }
  if (!t->alg || !has_key) {
    ERROR(PLUGIN_NAME " plugin: %s: option \"%s\" is required", block,
          !t->alg ? "Algorithm" : "KeyFile");
    return -1;
  }
  if (t->renew_before >= t->lifetime) {
    ERROR(PLUGIN_NAME " plugin: %s: \"RenewBefore\" must be shorter than "
                      "\"Lifetime\"",
          block);
    return -1;
  }
  return 0;
}

/* Names that end up in metric identifiers: 1..63 of [A-Za-z0-9_.-], not
 * starting with '-'. */
static bool valid_instance(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n >= 64 || s[0] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
      return false;
  return true;
}

/* AppName and InstanceId become topic levels and the appId "<a>.<i>". */
static bool valid_topic_part(const char *s)
{
  if (!*s)
    return false;
  for (; *s; s++)
    if (strchr("/+#.", *s) || isspace((unsigned char)*s) ||
        (unsigned char)*s < 0x20)
      return false;
  return true;
}

static int block_name(const oconfig_item_t *ci, const char *what, char *buf,
                      size_t size)
{
  if (ci->values_num != 1 || ci->values[0].type != OCONFIG_TYPE_STRING) {
    ERROR(PLUGIN_NAME " plugin: <%s> block expects exactly one string "
                      "argument (its name)",
          what);
    return -1;
  }
  if (!valid_instance(ci->values[0].value.string)) {
    ERROR(PLUGIN_NAME " plugin: <%s \"%s\">: invalid name: use 1 to 63 of "
                      "letters, digits, '_', '.', '-', not starting with '-'",
          what, ci->values[0].value.string);
    return -1;
  }
  sstrncpy(buf, ci->values[0].value.string, size);
  return 0;
}

/* ---- <Gateway> --------------------------------------------------------- */

static void on_event(void *ctx, const char *gateway, const struct bm_event *ev);
static int bimetri_write(const data_set_t *ds, const value_list_t *vl,
                         user_data_t *ud);
static void rules_tick(void);
static void on_connection(void *ctx, const char *gateway, bool up);
static void on_token(void *ctx, const char *gateway, enum bm_severity sev,
                     const char *message);

struct relay_conf {
  char name[BM_RELAY_NAME_SIZE];
  int64_t resource_id;
  int64_t output;
  int manual_control; /* -1: as the Gateway says */
};

static int conf_relay(const char *gw_block, const oconfig_item_t *ci,
                      struct relay_conf *r)
{
  char block[160];
  bool has_res = false, has_out = false;

  r->manual_control = -1;
  if (block_name(ci, "Relay", r->name, sizeof(r->name)) != 0)
    return -1;
  snprintf(block, sizeof(block), "%s <Relay \"%s\">", gw_block, r->name);
  for (int i = 0; i < ci->children_num; i++) {
    const oconfig_item_t *c = &ci->children[i];
    int rc;
    if (strcasecmp(c->key, "ResourceId") == 0) {
      rc = conf_int(block, c, 0, (double)BM_MSG_MAX_SAFE_INT, &r->resource_id);
      has_res = true;
    } else if (strcasecmp(c->key, "Output") == 0) {
      rc = conf_int(block, c, 0, 65535, &r->output);
      has_out = true;
    } else if (strcasecmp(c->key, "ManualControl") == 0) {
      bool on;
      if ((rc = conf_bool(block, c, &on)) == 0)
        r->manual_control = on;
    } else {
      CONF_ERR(block, c, "unknown option");
      rc = -1;
    }
    if (rc != 0)
      return -1;
  }
  if (!has_res || !has_out) {
    ERROR(PLUGIN_NAME " plugin: %s: option \"%s\" is required", block,
          has_res ? "Output" : "ResourceId");
    return -1;
  }
  return 0;
}

static void default_client_id(char *buf, size_t size, const char *gateway)
{
  char host[64];
  size_t j = 0;

  /* MQTT client ids are safest in [A-Za-z0-9-]; stable across restarts. */
  for (const char *p = hostname_g ? hostname_g : "collectd";
       *p && j < sizeof(host) - 1; p++)
    host[j++] = isalnum((unsigned char)*p) ? *p : '-';
  host[j] = '\0';
  snprintf(buf, size, "collectd-%s-%s", host, gateway);
}

/* <BaseDir>/bimetri-<gateway>.journal: BaseDir is a global option, read
 * before any plugin's block. */
static void default_journal_file(char *buf, size_t size, const char *gateway)
{
  const char *base = global_option_get("BaseDir");
  snprintf(buf, size, "%s/bimetri-%s.journal", base && *base ? base : ".",
           gateway);
}

/* A journal path as a key: its directory resolved (symbolic links, "."
 * and "..") when it exists, so two spellings of one file compare equal. */
static void canonical_path(const char *path, char *out, size_t size)
{
  char dir[BM_GW_PATH_SIZE], real[PATH_MAX];
  const char *slash = strrchr(path, '/');

  if (!slash) {
    snprintf(dir, sizeof(dir), ".");
    slash = path - 1;
  } else {
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    if (!dir[0])
      snprintf(dir, sizeof(dir), "/");
  }
  if (realpath(dir, real))
    snprintf(out, size, "%s/%s", strcmp(real, "/") ? real : "", slash + 1);
  else
    snprintf(out, size, "%s", path);
}

static int conf_gateway(const oconfig_item_t *ci)
{
  struct bm_gateway_conf *c = NULL;
  struct relay_conf *relays = NULL;
  size_t relays_n = 0;
  bm_gateway_t *gw = NULL;
  char block[96], err[512], journal_key[BM_GW_PATH_SIZE];
  bool has_app = false, has_inst = false, has_user = false, has_org = false,
       has_pass = false, has_port = false, manual_control = false;
  int token_sources = 0;
  int status = -1;
  int64_t v;
  double d;

  if (gateways_n == MAX_GATEWAYS) {
    ERROR(PLUGIN_NAME " plugin: more than %d <Gateway> blocks", MAX_GATEWAYS);
    goto out;
  }
  if (!(c = calloc(1, sizeof(*c))) ||
      !(relays = calloc((size_t)ci->children_num + 1, sizeof(*relays)))) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    goto out;
  }
  if (block_name(ci, "Gateway", c->name, sizeof(c->name)) != 0)
    goto out;
  snprintf(block, sizeof(block), "<Gateway \"%s\">", c->name);
  for (size_t i = 0; i < gateways_n; i++) {
    if (strcmp(bm_gateway_name(gateways[i].gw), c->name) == 0) {
      ERROR(PLUGIN_NAME " plugin: %s: a Gateway of this name already exists",
            block);
      goto out;
    }
  }

  /* Defaults */
  sstrncpy(c->host, "localhost", sizeof(c->host));
  c->port = 1883;
  c->keepalive = 30;
  sstrncpy(c->brand, "Bimetri", sizeof(c->brand));
  sstrncpy(c->command_topic, "resource/commands", sizeof(c->command_topic));
  c->qos = 2;
  c->policy.ack_timeout = 10;
  c->policy.command_timeout = 30;
  c->policy.retries = 2;
  c->policy.retry_backoff = 1;
  c->journal_sync = true;
  c->journal_limit = 1024 * 1024;
  c->policy.max_per_minute = 10;
  c->protocol_version = 4;
  c->session_expiry = 86400;
  c->token.command_timeout = 10;
  c->token.lifetime = 3600;
  c->token.renew_before = 300;
  c->token_warn = 3600;
  c->token_leeway = 60;
  c->tls_verify_hostname = true;
  c->tls_verify_peer = true;

  for (int i = 0; i < ci->children_num; i++) {
    const oconfig_item_t *o = &ci->children[i];
    const char *k = o->key;
    int rc = -1;

    if (strcasecmp(k, "Host") == 0)
      rc = conf_string(block, o, c->host, sizeof(c->host));
    else if (strcasecmp(k, "Port") == 0) {
      if ((rc = conf_int(block, o, 1, 65535, &v)) == 0)
        c->port = (int)v;
      has_port = true;
    } else if (strcasecmp(k, "ClientId") == 0) {
      if ((rc = conf_string(block, o, c->client_id, sizeof(c->client_id))) == 0 &&
          c->client_id[0] == '\0') {
        CONF_ERR(block, o, "must not be empty");
        rc = -1;
      }
    } else if (strcasecmp(k, "User") == 0)
      rc = conf_string(block, o, c->user, sizeof(c->user));
    else if (strcasecmp(k, "Password") == 0) {
      rc = conf_string(block, o, c->password, sizeof(c->password));
      has_pass = true;
    } else if (strcasecmp(k, "KeepAlive") == 0) {
      if ((rc = conf_int(block, o, 5, 65535, &v)) == 0)
        c->keepalive = (int)v;
    } else if (strcasecmp(k, "AppName") == 0) {
      if ((rc = conf_string(block, o, c->app_name, sizeof(c->app_name))) == 0 &&
          !valid_topic_part(c->app_name)) {
        CONF_ERR(block, o, "\"%s\" must be non-empty without '/', '+', '#', "
                           "'.' or white space",
                 c->app_name);
        rc = -1;
      }
      has_app = true;
    } else if (strcasecmp(k, "InstanceId") == 0) {
      if ((rc = conf_string(block, o, c->instance_id, sizeof(c->instance_id))) ==
              0 &&
          !valid_topic_part(c->instance_id)) {
        CONF_ERR(block, o, "\"%s\" must be non-empty without '/', '+', '#', "
                           "'.' or white space",
                 c->instance_id);
        rc = -1;
      }
      has_inst = true;
    } else if (strcasecmp(k, "Brand") == 0) {
      if ((rc = conf_string(block, o, c->brand, sizeof(c->brand))) == 0 &&
          c->brand[0] == '\0') {
        CONF_ERR(block, o, "must not be empty");
        rc = -1;
      }
    } else if (strcasecmp(k, "UserId") == 0) {
      rc = conf_int(block, o, 0, (double)BM_MSG_MAX_SAFE_INT, &c->user_id);
      has_user = true;
    } else if (strcasecmp(k, "OrganizationId") == 0) {
      rc = conf_int(block, o, 0, (double)BM_MSG_MAX_SAFE_INT,
                    &c->organization_id);
      has_org = true;
    } else if (strcasecmp(k, "TokenFile") == 0) {
      rc = conf_string(block, o, c->token.file, sizeof(c->token.file));
      c->token.kind = BM_TOKEN_FILE;
      token_sources++;
    } else if (strcasecmp(k, "TokenCommand") == 0) {
      rc = conf_string(block, o, c->token.command, sizeof(c->token.command));
      c->token.kind = BM_TOKEN_COMMAND;
      token_sources++;
    } else if (strcasecmp(k, "TokenCommandTimeout") == 0) {
      if ((rc = conf_number(block, o, 0.1, 600, false, &d)) == 0)
        c->token.command_timeout = d;
    } else if (strcasecmp(k, "Token") == 0) {
      rc = conf_token_block(block, o, &c->token);
      token_sources++;
    } else if (strcasecmp(k, "TokenWarn") == 0) {
      if ((rc = conf_number(block, o, 0, 31536000, false, &d)) == 0)
        c->token_warn = d;
    } else if (strcasecmp(k, "TokenLeeway") == 0) {
      if ((rc = conf_int(block, o, 0, 86400, &v)) == 0)
        c->token_leeway = v;
    } else if (strcasecmp(k, "PasswordFile") == 0) {
      char path[BM_GW_PATH_SIZE];
      if ((rc = conf_string(block, o, path, sizeof(path))) == 0 &&
          (rc = read_secret(block, o, path, c->password, sizeof(c->password))) == 0)
        has_pass = true;
    } else if (strcasecmp(k, "CACert") == 0) {
      rc = conf_string(block, o, c->ca_file, sizeof(c->ca_file));
    } else if (strcasecmp(k, "CAPath") == 0) {
      rc = conf_string(block, o, c->ca_path, sizeof(c->ca_path));
    } else if (strcasecmp(k, "TLSSystemCAs") == 0) {
      rc = conf_bool(block, o, &c->tls_system_cas);
    } else if (strcasecmp(k, "CertificateFile") == 0) {
      rc = conf_string(block, o, c->cert_file, sizeof(c->cert_file));
    } else if (strcasecmp(k, "CertificateKeyFile") == 0) {
      rc = conf_string(block, o, c->key_file, sizeof(c->key_file));
    } else if (strcasecmp(k, "CertificateKeyPassword") == 0) {
      rc = conf_string(block, o, c->key_password, sizeof(c->key_password));
    } else if (strcasecmp(k, "CertificateKeyPasswordFile") == 0) {
      char path[BM_GW_PATH_SIZE];
      if ((rc = conf_string(block, o, path, sizeof(path))) == 0)
        rc = read_secret(block, o, path, c->key_password,
                         sizeof(c->key_password));
    } else if (strcasecmp(k, "TLSProtocol") == 0) {
      if ((rc = conf_string(block, o, c->tls_version, sizeof(c->tls_version))) == 0 &&
          strcmp(c->tls_version, "tlsv1.2") != 0 &&
          strcmp(c->tls_version, "tlsv1.3") != 0) {
        CONF_ERR(block, o, "expects \"tlsv1.2\" or \"tlsv1.3\", got \"%s\"",
                 c->tls_version);
        rc = -1;
      }
    } else if (strcasecmp(k, "CipherSuite") == 0) {
      rc = conf_string(block, o, c->ciphers, sizeof(c->ciphers));
    } else if (strcasecmp(k, "TLSVerifyHostname") == 0) {
      rc = conf_bool(block, o, &c->tls_verify_hostname);
    } else if (strcasecmp(k, "TLSVerifyPeer") == 0) {
      rc = conf_bool(block, o, &c->tls_verify_peer);
    } else if (strcasecmp(k, "CommandTopic") == 0) {
      if ((rc = conf_string(block, o, c->command_topic,
                            sizeof(c->command_topic))) == 0 &&
          (c->command_topic[0] == '\0' || strpbrk(c->command_topic, "+#"))) {
        CONF_ERR(block, o, "must be a topic name without wildcards");
        rc = -1;
      }
    } else if (strcasecmp(k, "QoS") == 0) {
      if ((rc = conf_int(block, o, 0, 2, &v)) == 0)
        c->qos = (int)v;
    } else if (strcasecmp(k, "AckTimeout") == 0) {
      if ((rc = conf_number(block, o, 0.1, 86400, false, &d)) == 0)
        c->policy.ack_timeout = d;
    } else if (strcasecmp(k, "CommandTimeout") == 0) {
      if ((rc = conf_number(block, o, 0.1, 86400, false, &d)) == 0)
        c->policy.command_timeout = d;
    } else if (strcasecmp(k, "Retries") == 0) {
      if ((rc = conf_int(block, o, 0, 100, &v)) == 0)
        c->policy.retries = (int)v;
    } else if (strcasecmp(k, "RetryBackoff") == 0) {
      if ((rc = conf_number(block, o, 0, 60, false, &d)) == 0)
        c->policy.retry_backoff = d;
    } else if (strcasecmp(k, "ProtocolVersion") == 0) {
      if ((rc = conf_int(block, o, 3, 5, &v)) == 0)
        c->protocol_version = (int)v;
    } else if (strcasecmp(k, "SessionExpiry") == 0) {
      if ((rc = conf_int(block, o, 1, 2147483647.0, &v)) == 0)
        c->session_expiry = (int)v;
    } else if (strcasecmp(k, "MaxCommandsPerMinute") == 0) {
      if ((rc = conf_int(block, o, 1, 600, &v)) == 0)
        c->policy.max_per_minute = (int)v;
    } else if (strcasecmp(k, "ManualControl") == 0) {
      rc = conf_bool(block, o, &manual_control);
    } else if (strcasecmp(k, "JournalFile") == 0) {
      if ((rc = conf_string(block, o, c->journal_file,
                            sizeof(c->journal_file))) == 0 &&
          c->journal_file[0] == '\0') {
        CONF_ERR(block, o, "must not be empty");
        rc = -1;
      }
    } else if (strcasecmp(k, "JournalSync") == 0) {
      char mode[16];
      if ((rc = conf_string(block, o, mode, sizeof(mode))) == 0) {
        if (strcasecmp(mode, "always") == 0)
          c->journal_sync = true;
        else if (strcasecmp(mode, "none") == 0)
          c->journal_sync = false;
        else {
          CONF_ERR(block, o, "expects \"always\" or \"none\", got \"%s\"", mode);
          rc = -1;
        }
      }
    } else if (strcasecmp(k, "JournalSizeLimit") == 0) {
      if ((rc = conf_int(block, o, 4096, 1073741824.0, &v)) == 0)
        c->journal_limit = (uint64_t)v;
    } else if (strcasecmp(k, "Relay") == 0) {
      struct relay_conf *r = &relays[relays_n];
      if ((rc = conf_relay(block, o, r)) == 0) {
        for (size_t j = 0; j < relays_n && rc == 0; j++) {
          if (strcmp(relays[j].name, r->name) == 0) {
            ERROR(PLUGIN_NAME " plugin: %s: Relay \"%s\" is defined twice",
                  block, r->name);
            rc = -1;
          } else if (relays[j].resource_id == r->resource_id &&
                     relays[j].output == r->output) {
            ERROR(PLUGIN_NAME " plugin: %s: Relays \"%s\" and \"%s\" both "
                              "address ResourceId %lld Output %lld",
                  block, relays[j].name, r->name, (long long)r->resource_id,
                  (long long)r->output);
            rc = -1;
          }
        }
      }
      relays_n += rc == 0;
    } else {
      CONF_ERR(block, o, "unknown option");
    }
    if (rc != 0)
      goto out;
  }

  {
    const char *missing = !has_app           ? "AppName"
                          : !has_inst        ? "InstanceId"
                          : !has_user        ? "UserId"
                          : !has_org         ? "OrganizationId"
                          : !token_sources   ? "TokenFile"
                                             : NULL;
    if (missing) {
      ERROR(PLUGIN_NAME " plugin: %s: option \"%s\" is required", block,
            missing);
      goto out;
    }
  }
  if (token_sources > 1) {
    ERROR(PLUGIN_NAME " plugin: %s: give one of \"TokenFile\", "
                      "\"TokenCommand\" and <Token>, not several",
          block);
    goto out;
  }
  if (c->ca_file[0] || c->ca_path[0] || c->tls_system_cas) {
    if (!has_port)
      c->port = 8883;
  } else if (c->cert_file[0] || c->key_file[0] || c->tls_version[0] ||
             c->ciphers[0] || c->key_password[0]) {
    ERROR(PLUGIN_NAME " plugin: %s: TLS options need \"CACert\", \"CAPath\" "
                      "or \"TLSSystemCAs true\"",
          block);
    goto out;
  }
  if (!c->cert_file[0] != !c->key_file[0]) {
    ERROR(PLUGIN_NAME " plugin: %s: \"CertificateFile\" and "
                      "\"CertificateKeyFile\" go together",
          block);
    goto out;
  }
  if (has_pass && !c->user[0]) {
    ERROR(PLUGIN_NAME " plugin: %s: option \"Password\" needs \"User\"", block);
    goto out;
  }
  if (relays_n == 0) {
    ERROR(PLUGIN_NAME " plugin: %s: at least one <Relay> block is required",
          block);
    goto out;
  }
  if (!c->journal_file[0])
    default_journal_file(c->journal_file, sizeof(c->journal_file), c->name);
  canonical_path(c->journal_file, journal_key, sizeof(journal_key));
  for (size_t i = 0; i < gateways_n; i++) {
    if (strcmp(gateways[i].journal_file, journal_key) == 0) {
      ERROR(PLUGIN_NAME " plugin: %s: option \"JournalFile\": \"%s\" is "
                        "the journal of another Gateway already",
            block, c->journal_file);
      goto out;
    }
  }

  {
    struct bm_gateway_hooks hooks;
    hooks.event = on_event;
    hooks.connection = on_connection;
    hooks.token = on_token;
    hooks.ctx = &gateways[gateways_n];
    if (!(gw = bm_gateway_new(c, &hooks, err, sizeof(err)))) {
      ERROR(PLUGIN_NAME " plugin: %s: %s", block, err);
      goto out;
    }
  }
  for (size_t i = 0; i < relays_n; i++) {
    if (bm_gateway_add_relay(gw, relays[i].name, relays[i].resource_id,
                             (int)relays[i].output) < 0) {
      ERROR(PLUGIN_NAME " plugin: %s: cannot add Relay \"%s\"", block,
            relays[i].name);
      goto out;
    }
  }
  gateways[gateways_n].views = calloc(relays_n, sizeof(struct bm_relay_view));
  gateways[gateways_n].manual_control = calloc(relays_n, sizeof(bool));
  if (!gateways[gateways_n].views || !gateways[gateways_n].manual_control) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    goto out;
  }
  for (size_t i = 0; i < relays_n; i++)
    gateways[gateways_n].manual_control[i] =
        relays[i].manual_control < 0 ? manual_control
                                     : relays[i].manual_control != 0;
  sstrncpy(gateways[gateways_n].journal_file, journal_key,
           sizeof(gateways[gateways_n].journal_file));
  gateways[gateways_n++].gw = gw;
  gw = NULL;
  status = 0;
out:
  if (gw) {
    free(gateways[gateways_n].views);
    free(gateways[gateways_n].manual_control);
    gateways[gateways_n].views = NULL;
    gateways[gateways_n].manual_control = NULL;
  }
  bm_gateway_free(gw);
  if (c) {
    memset(c->password, 0, sizeof(c->password));
    memset(c->key_password, 0, sizeof(c->key_password));
  }
  free(c);
  free(relays);
  return status;
}

/* ---- <Trigger> --------------------------------------------------------- */

static int find_gateway(const char *name)
{
  for (size_t i = 0; i < gateways_n; i++)
    if (strcmp(bm_gateway_name(gateways[i].gw), name) == 0)
      return (int)i;
  return -1;
}

static int conf_trigger(const oconfig_item_t *ci)
{
  struct bm_trigger t;
  char name[64], block[96], err[256];
  bool has_relay = false, inited = false;
  int status = -1;
  int64_t v;

  if (block_name(ci, "Trigger", name, sizeof(name)) != 0)
    return -1;
  snprintf(block, sizeof(block), "<Trigger \"%s\">", name);
  for (size_t i = 0; i < triggers_n; i++) {
    if (strcmp(triggers[i].name, name) == 0) {
      ERROR(PLUGIN_NAME " plugin: %s: a Trigger of this name already exists",
            block);
      return -1;
    }
  }
  if (bm_trigger_init(&t, name) != 0) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    return -1;
  }
  inited = true;

  for (int i = 0; i < ci->children_num; i++) {
    const oconfig_item_t *o = &ci->children[i];
    int rc = -1, field = -1, sev = -1;

    for (int f = 0; f < BM_FIELD_COUNT; f++)
      if (strcasecmp(o->key, bm_field_name(f)) == 0)
        field = f;
    if (strcasecmp(o->key, "OnFailure") == 0)
      sev = BM_SEV_FAILURE;
    else if (strcasecmp(o->key, "OnWarning") == 0)
      sev = BM_SEV_WARNING;
    else if (strcasecmp(o->key, "OnOkay") == 0)
      sev = BM_SEV_OKAY;

    if (field >= 0) {
      if (o->values_num != 1 || o->values[0].type != OCONFIG_TYPE_STRING)
        CONF_ERR(block, o, "expects exactly one string argument");
      else if ((rc = bm_trigger_set_pattern(&t, field, o->values[0].value.string,
                                            err, sizeof(err))) != 0)
        ERROR(PLUGIN_NAME " plugin: %s, %s", block, err); /* names the option */
    } else if (sev >= 0) {
      if ((rc = conf_int(block, o, 0, 1, &v)) == 0)
        t.on[sev] = (int)v;
    } else if (strcasecmp(o->key, "OnMissing") == 0) {
      if ((rc = conf_int(block, o, 0, 1, &v)) == 0)
        t.on_missing = (int)v;
    } else if (strcasecmp(o->key, "Relay") == 0) {
      int g, r = -1;
      if (o->values_num != 2 || o->values[0].type != OCONFIG_TYPE_STRING ||
          o->values[1].type != OCONFIG_TYPE_STRING) {
        CONF_ERR(block, o, "expects two strings: the Gateway and the Relay");
      } else if ((g = find_gateway(o->values[0].value.string)) < 0) {
        CONF_ERR(block, o, "no Gateway \"%s\" is defined (before this Trigger)",
                 o->values[0].value.string);
      } else if ((r = bm_gateway_find_relay(gateways[g].gw,
                                            o->values[1].value.string)) < 0) {
        CONF_ERR(block, o, "Gateway \"%s\" has no Relay \"%s\"",
                 o->values[0].value.string, o->values[1].value.string);
      } else {
        t.gateway = g;
        t.relay = r;
        has_relay = true;
        rc = 0;
      }
    } else {
      CONF_ERR(block, o, "unknown option");
    }
    if (rc != 0)
      goto out;
  }
  if (!has_relay) {
    ERROR(PLUGIN_NAME " plugin: %s: option \"Relay\" is required", block);
    goto out;
  }
  if (t.on[BM_SEV_OKAY] < 0 && t.on[BM_SEV_WARNING] < 0 &&
      t.on[BM_SEV_FAILURE] < 0 && t.on_missing < 0) {
    ERROR(PLUGIN_NAME " plugin: %s: at least one of \"OnFailure\", "
                      "\"OnWarning\", \"OnOkay\", \"OnMissing\" is required",
          block);
    goto out;
  }
  {
    struct bm_trigger *grown =
        realloc(triggers, (triggers_n + 1) * sizeof(*triggers));
    if (!grown) {
      ERROR(PLUGIN_NAME " plugin: out of memory");
      goto out;
    }
    triggers = grown;
    triggers[triggers_n++] = t;
    inited = false;
  }
  status = 0;
out:
  if (inited)
    bm_trigger_release(&t);
  return status;
}

/* <Switch>: a relay follows a value (rule.h). */
static int conf_switch(const oconfig_item_t *ci)
{
  struct bm_rule *r = NULL, **grown;
  char name[64], block[96], err[256];
  bool has_relay = false, cooler = false, heater = false;
  int status = -1;
  int64_t v;
  double d;

  if (block_name(ci, "Switch", name, sizeof(name)) != 0)
    return -1;
  snprintf(block, sizeof(block), "<Switch \"%s\">", name);
  for (size_t i = 0; i < rules_n; i++) {
    if (strcmp(rules[i]->name, name) == 0) {
      ERROR(PLUGIN_NAME " plugin: %s: a Switch of this name already exists",
            block);
      return -1;
    }
  }
  if (!(r = calloc(1, sizeof(*r))) || bm_rule_init(r, name) != 0) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    free(r);
    return -1;
  }
  for (int i = 0; i < ci->children_num; i++) {
    const oconfig_item_t *o = &ci->children[i];
    int rc = -1, field = -1;

    for (int f = 0; f < BM_FIELD_COUNT; f++)
      if (strcasecmp(o->key, bm_field_name(f)) == 0)
        field = f;
    if (field >= 0) {
      if (o->values_num != 1 || o->values[0].type != OCONFIG_TYPE_STRING)
        CONF_ERR(block, o, "expects exactly one string argument");
      else if ((rc = bm_pattern_set(&r->pattern[field], field,
                                    o->values[0].value.string, err,
                                    sizeof(err))) != 0)
        ERROR(PLUGIN_NAME " plugin: %s, %s", block, err);
    } else if (strcasecmp(o->key, "Relay") == 0) {
      int g, rl = -1;
      if (o->values_num != 2 || o->values[0].type != OCONFIG_TYPE_STRING ||
          o->values[1].type != OCONFIG_TYPE_STRING)
        CONF_ERR(block, o, "expects two strings: the Gateway and the Relay");
      else if ((g = find_gateway(o->values[0].value.string)) < 0)
        CONF_ERR(block, o, "no Gateway \"%s\" is defined (before this Switch)",
                 o->values[0].value.string);
      else if ((rl = bm_gateway_find_relay(gateways[g].gw,
                                           o->values[1].value.string)) < 0)
        CONF_ERR(block, o, "Gateway \"%s\" has no Relay \"%s\"",
                 o->values[0].value.string, o->values[1].value.string);
      else {
        r->gateway = g;
        r->relay = rl;
        has_relay = true;
        rc = 0;
      }
    } else if (strcasecmp(o->key, "DataSource") == 0) {
      rc = conf_string(block, o, r->data_source, sizeof(r->data_source));
    } else if (strcasecmp(o->key, "OnAbove") == 0 ||
               strcasecmp(o->key, "OnBelow") == 0) {
      if ((rc = conf_number(block, o, -1e300, 1e300, false, &d)) == 0)
        r->on_at = d;
      if (strcasecmp(o->key, "OnAbove") == 0)
        cooler = true;
      else
        heater = true;
    } else if (strcasecmp(o->key, "OffBelow") == 0 ||
               strcasecmp(o->key, "OffAbove") == 0) {
      if ((rc = conf_number(block, o, -1e300, 1e300, false, &d)) == 0)
        r->off_at = d;
      if (strcasecmp(o->key, "OffBelow") == 0)
        cooler = true;
      else
        heater = true;
    } else if (strcasecmp(o->key, "MinOnTime") == 0) {
      if ((rc = conf_number(block, o, 0, 86400, false, &d)) == 0)
        r->limits.min_on = d;
    } else if (strcasecmp(o->key, "MinOffTime") == 0) {
      if ((rc = conf_number(block, o, 0, 86400, false, &d)) == 0)
        r->limits.min_off = d;
    } else if (strcasecmp(o->key, "MaxSwitchesPerHour") == 0) {
      if ((rc = conf_int(block, o, 1, BM_RELAY_SWITCHES, &v)) == 0)
        r->limits.max_per_hour = (int)v;
    } else if (strcasecmp(o->key, "StaleAfter") == 0) {
      if ((rc = conf_number(block, o, 1, 86400, false, &d)) == 0)
        r->stale_after = d;
    } else if (strcasecmp(o->key, "FailSafe") == 0) {
      if ((rc = conf_int(block, o, 0, 1, &v)) == 0)
        r->fail_safe = (int)v;
    } else {
      CONF_ERR(block, o, "unknown option");
    }
    if (rc != 0)
      goto out;
  }
  if (!has_relay) {
    ERROR(PLUGIN_NAME " plugin: %s: option \"Relay\" is required", block);
    goto out;
  }
  if (cooler && heater) {
    ERROR(PLUGIN_NAME " plugin: %s: OnAbove/OffBelow (a cooler) and "
                      "OnBelow/OffAbove (a heater) do not mix",
          block);
    goto out;
  }
  r->heater = heater;
  if (bm_rule_check(r, err, sizeof(err)) != 0) {
    ERROR(PLUGIN_NAME " plugin: %s: %s", block, err);
    goto out;
  }
  if (!(grown = realloc(rules, (rules_n + 1) * sizeof(*rules)))) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    goto out;
  }
  rules = grown;
  rules[rules_n++] = r;
  r = NULL;
  status = 0;
out:
  if (r) {
    bm_rule_release(r);
    free(r);
  }
  return status;
}

/* Interlock "gateway" "relay" "relay" ...: never on together. */
static int conf_interlock(const oconfig_item_t *ci)
{
  const char *block = "<Plugin bimetri>";
  int relays[64], g;

  if (ci->values_num < 3 || ci->values_num > 65) {
    CONF_ERR(block, ci, "expects a Gateway and 2 to 64 of its Relays");
    return -1;
  }
  for (int i = 0; i < ci->values_num; i++) {
    if (ci->values[i].type != OCONFIG_TYPE_STRING) {
      CONF_ERR(block, ci, "expects strings: a Gateway and its Relays");
      return -1;
    }
  }
  if ((g = find_gateway(ci->values[0].value.string)) < 0) {
    CONF_ERR(block, ci, "no Gateway \"%s\" is defined (before this option)",
             ci->values[0].value.string);
    return -1;
  }
  for (int i = 1; i < ci->values_num; i++) {
    const char *name = ci->values[i].value.string;
    if ((relays[i - 1] = bm_gateway_find_relay(gateways[g].gw, name)) < 0) {
      CONF_ERR(block, ci, "Gateway \"%s\" has no Relay \"%s\"",
               ci->values[0].value.string, name);
      return -1;
    }
    for (int k = 0; k < i - 1; k++) {
      if (relays[k] == relays[i - 1]) {
        CONF_ERR(block, ci, "Relay \"%s\" is named twice", name);
        return -1;
      }
    }
  }
  if (bm_gateway_interlock(gateways[g].gw, relays, ci->values_num - 1) != 0) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    return -1;
  }
  return 0;
}

/* Chains of Triggers through the plugin's own notifications must not loop:
 * the configuration is refused when they do. */
static int check_trigger_loops(void)
{
  struct bm_relay_ref *refs;
  size_t n = 0, cap = 0;
  char err[1024];
  int status = 0;

  for (size_t g = 0; g < gateways_n; g++)
    cap += bm_gateway_relay_count(gateways[g].gw);
  if (!(refs = calloc(cap + 1, sizeof(*refs)))) {
    ERROR(PLUGIN_NAME " plugin: out of memory");
    return -1;
  }
  for (size_t g = 0; g < gateways_n; g++) {
    for (size_t r = 0; r < bm_gateway_relay_count(gateways[g].gw); r++) {
      refs[n].gateway = bm_gateway_name(gateways[g].gw);
      refs[n].relay = bm_gateway_relay_name(gateways[g].gw, (int)r);
      refs[n].gateway_index = (int)g;
      refs[n++].relay_index = (int)r;
    }
  }
  if (bm_triggers_check_cycles(triggers, triggers_n, refs, n, err,
                               sizeof(err)) != 0) {
    ERROR(PLUGIN_NAME " plugin: <Plugin bimetri>: %s", err);
    status = -1;
  }
  free(refs);
  return status;
}

static int bimetri_config(oconfig_item_t *ci)
{
  int status = 0;

  bm_log_set_sink(glue_log, NULL);
  if (bm_gateway_library_init() != 0) {
    ERROR(PLUGIN_NAME " plugin: cannot initialise libmosquitto");
    config_failed = true;
    return -1;
  }
  for (int i = 0; i < ci->children_num && status == 0; i++) {
    const oconfig_item_t *c = &ci->children[i];
    if (strcasecmp(c->key, "Gateway") == 0)
      status = conf_gateway(c);
    else if (strcasecmp(c->key, "Trigger") == 0)
      status = conf_trigger(c);
    else if (strcasecmp(c->key, "Interlock") == 0)
      status = conf_interlock(c);
    else if (strcasecmp(c->key, "Switch") == 0)
      status = conf_switch(c);
    else {
      ERROR(PLUGIN_NAME " plugin: <Plugin bimetri>, option \"%s\": unknown "
                        "option",
            c->key);
      status = -1;
    }
  }
  if (status == 0 && check_trigger_loops() != 0)
    status = -1;
  if (status == 0 && gateways_n == 0) {
    ERROR(PLUGIN_NAME " plugin: <Plugin bimetri>: at least one <Gateway> "
                      "block is required");
    status = -1;
  }
  if (status == 0 && rules_n > 0 &&
      plugin_register_write(PLUGIN_NAME, bimetri_write, NULL) != 0) {
    ERROR(PLUGIN_NAME " plugin: cannot register the write callback");
    status = -1;
  }
  if (status != 0)
    config_failed = true;
  return status;
}

/* ---- events to collectd ------------------------------------------------ */

static void dispatch_gauge(const char *gateway, const char *type,
                           const char *type_instance, gauge_t value)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.gauge = value};

  vl.values = &v;
  vl.values_len = 1;
  sstrncpy(vl.plugin, PLUGIN_NAME, sizeof(vl.plugin));
  sstrncpy(vl.plugin_instance, gateway, sizeof(vl.plugin_instance));
  sstrncpy(vl.type, type, sizeof(vl.type));
  if (type_instance)
    sstrncpy(vl.type_instance, type_instance, sizeof(vl.type_instance));
  plugin_dispatch_values(&vl);
}

static void dispatch_derive(const char *gateway, const char *type,
                            const char *type_instance, derive_t value)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.derive = value};

  vl.values = &v;
  vl.values_len = 1;
  sstrncpy(vl.plugin, PLUGIN_NAME, sizeof(vl.plugin));
  sstrncpy(vl.plugin_instance, gateway, sizeof(vl.plugin_instance));
  sstrncpy(vl.type, type, sizeof(vl.type));
  sstrncpy(vl.type_instance, type_instance, sizeof(vl.type_instance));
  plugin_dispatch_values(&vl);
}

static const char *state_name(int s)
{
  return s < 0 ? "unknown" : s ? "on" : "off";
}

/* The hook of every gateway: runs in the gateway's thread, no lock held.
 * ctx is the gateway's slot. */
static void on_event(void *ctx, const char *gateway, const struct bm_event *ev)
{
  struct gateway_slot *s = ctx;
  notification_t n = {0};
  const char *relay;

  if (ev->kind != BM_EV_STATE && ev->kind != BM_EV_END &&
      ev->kind != BM_EV_DRIFT)
    return; /* PUBLISH, ACK, APPLIED: logged and journaled by the gateway */
  relay = bm_gateway_relay_name(s->gw, ev->relay);

  n.time = cdtime();
  sstrncpy(n.host, hostname_g, sizeof(n.host));
  sstrncpy(n.plugin, PLUGIN_NAME, sizeof(n.plugin));
  sstrncpy(n.plugin_instance, gateway, sizeof(n.plugin_instance));
  sstrncpy(n.type_instance, relay, sizeof(n.type_instance));

  if (ev->kind == BM_EV_DRIFT) {
    n.severity = NOTIF_WARNING;
    sstrncpy(n.type, "relay_drift", sizeof(n.type));
    snprintf(n.message, sizeof(n.message),
             "relay \"%s\" is %s, but our last confirmed command had set it "
             "%s: switched outside this plugin (by hand, or a device restart)",
             relay, state_name(ev->status), state_name(ev->previous));
    WARNING(PLUGIN_NAME " plugin: gateway \"%s\": %s", gateway, n.message);
  } else if (ev->kind == BM_EV_STATE) {
    dispatch_gauge(gateway, "bool", relay, (gauge_t)ev->status);
    n.severity = NOTIF_OKAY;
    sstrncpy(n.type, ev->status ? "relay_on" : "relay_off", sizeof(n.type));
    snprintf(n.message, sizeof(n.message),
             "relay \"%s\" is %s (was %s)%s%s%s", relay,
             state_name(ev->status), state_name(ev->previous),
             ev->corr[0] ? ", correlationId \"" : ", unsolicited",
             ev->corr, ev->corr[0] ? "\"" : "");
  } else {
    n.severity = ev->severity == BM_SEV_FAILURE ? NOTIF_FAILURE : NOTIF_WARNING;
    sstrncpy(n.type, "relay_result", sizeof(n.type));
    if (ev->corr[0])
      snprintf(n.message, sizeof(n.message),
               "command to switch relay \"%s\" %s (correlationId \"%s\", "
               "attempt %d) ended: %s",
               relay, state_name(ev->status), ev->corr, ev->attempt,
               ev->reason);
    else
      snprintf(n.message, sizeof(n.message), "relay \"%s\" not switched %s: %s",
               relay, state_name(ev->status), ev->reason);
    INFO(PLUGIN_NAME " plugin: gateway \"%s\": %s", gateway, n.message);
    plugin_notification_meta_add_string(&n, "outcome", bm_op_name(ev->outcome));
    plugin_notification_meta_add_string(&n, "reason", ev->reason);
  }
  plugin_notification_meta_add_signed_int(&n, "status", ev->status);
  if (ev->corr[0])
    plugin_notification_meta_add_string(&n, "correlationId", ev->corr);
  if (ev->origin[0])
    plugin_notification_meta_add_string(&n, "origin", ev->origin);
  plugin_dispatch_notification(&n);
  plugin_notification_meta_free(n.meta);
}

static void on_token(void *ctx, const char *gateway, enum bm_severity sev,
                     const char *message)
{
  notification_t n = {0};

  (void)ctx;
  n.severity = sev == BM_SEV_FAILURE   ? NOTIF_FAILURE
               : sev == BM_SEV_WARNING ? NOTIF_WARNING
                                       : NOTIF_OKAY;
  n.time = cdtime();
  sstrncpy(n.host, hostname_g, sizeof(n.host));
  sstrncpy(n.plugin, PLUGIN_NAME, sizeof(n.plugin));
  sstrncpy(n.plugin_instance, gateway, sizeof(n.plugin_instance));
  sstrncpy(n.type, "token", sizeof(n.type));
  sstrncpy(n.message, message, sizeof(n.message));
  plugin_dispatch_notification(&n);
}

static void on_connection(void *ctx, const char *gateway, bool up)
{
  (void)ctx;
  dispatch_gauge(gateway, "current_connections", NULL, up ? 1 : 0);
}

/* ---- collectd callbacks ------------------------------------------------ */

static void *gateway_thread(void *arg) { return bm_gateway_run(arg); }

/* The journal's confirmed states, reported before the first interval. */
static void dispatch_restored(struct gateway_slot *s)
{
  const char *gateway = bm_gateway_name(s->gw);
  struct bm_relay_stats st;
  bool ready;
  size_t n = bm_gateway_snapshot(s->gw, s->views,
                                 bm_gateway_relay_count(s->gw), &st, &ready);

  for (size_t i = 0; i < n; i++) {
    if (s->views[i].confirmed >= 0)
      dispatch_gauge(gateway, "bool", s->views[i].name,
                     (gauge_t)s->views[i].confirmed);
    dispatch_gauge(gateway, "pending_operations", s->views[i].name,
                   (gauge_t)s->views[i].pending);
  }
}

/* Stops and joins the Gateway threads that run. */
static void stop_gateways(void)
{
  for (size_t i = 0; i < gateways_n; i++)
    if (gateways[i].running)
      bm_gateway_stop(gateways[i].gw);
  for (size_t i = 0; i < gateways_n; i++) {
    if (gateways[i].running)
      pthread_join(gateways[i].thread, NULL);
    gateways[i].running = false;
  }
}

/* All or nothing: every Gateway's journal and client first, then the
 * threads; a failure anywhere leaves none running (collectd unloads the
 * plugin, and a half-started one would switch relays unseen). */
static int bimetri_init(void)
{
  if (config_failed) {
    ERROR(PLUGIN_NAME " plugin: not started: the configuration has errors "
                      "(see above)");
    return -1;
  }
  for (size_t i = 0; i < gateways_n; i++) {
    char client_id[BM_GW_STR_SIZE], err[256];

    default_client_id(client_id, sizeof(client_id),
                      bm_gateway_name(gateways[i].gw));
    if (bm_gateway_open(gateways[i].gw, client_id, err, sizeof(err)) != 0) {
      ERROR(PLUGIN_NAME " plugin: gateway \"%s\": %s; the plugin does not "
                        "start",
            bm_gateway_name(gateways[i].gw), err);
      return -1;
    }
  }
  for (size_t i = 0; i < gateways_n; i++) {
    char name[16];

    if (gateways[i].running)
      continue;
    dispatch_restored(&gateways[i]);
    snprintf(name, sizeof(name), "bimetri#%zu", i);
    if (plugin_thread_create(&gateways[i].thread, gateway_thread,
                             gateways[i].gw, name) != 0) {
      ERROR(PLUGIN_NAME " plugin: gateway \"%s\": cannot start its thread; "
                        "the plugin does not start",
            bm_gateway_name(gateways[i].gw));
      stop_gateways();
      return -1;
    }
    gateways[i].running = true;
  }
  started = true;
  return 0;
}

static int bimetri_read(void)
{
  rules_tick();
  for (size_t g = 0; g < gateways_n; g++) {
    struct gateway_slot *s = &gateways[g];
    const char *gateway = bm_gateway_name(s->gw);
    struct bm_relay_stats st;
    bool ready;
    size_t n = bm_gateway_snapshot(s->gw, s->views,
                                   bm_gateway_relay_count(s->gw), &st, &ready);

    for (size_t i = 0; i < n; i++) {
      if (s->views[i].confirmed >= 0)
        dispatch_gauge(gateway, "bool", s->views[i].name,
                       (gauge_t)s->views[i].confirmed);
      dispatch_gauge(gateway, "pending_operations", s->views[i].name,
                     (gauge_t)s->views[i].pending);
    }
    dispatch_gauge(gateway, "current_connections", NULL, ready ? 1 : 0);
    {
      int64_t exp;
      if (bm_gateway_token_expiry(s->gw, &exp))
        dispatch_gauge(gateway, "timestamp", "token_expiry", (gauge_t)exp);
    }
    for (int op = 0; op < BM_OP_COUNT; op++)
      dispatch_derive(gateway, "operations", bm_op_name(op),
                      (derive_t)st.ops[op]);
    if (st.ack_n)
      dispatch_gauge(gateway, "response_time", "ack",
                     st.ack_sum / (double)st.ack_n);
    if (st.confirm_n)
      dispatch_gauge(gateway, "response_time", "confirm",
                     st.confirm_sum / (double)st.confirm_n);
  }
  return 0;
}

/* A rule's request, reported when held back or refused. */
static void rule_request(const struct bm_rule *r, int want, const char *origin,
                         bool limited)
{
  char why[160] = "";
  enum bm_request rc =
      limited ? bm_gateway_request_limited(gateways[r->gateway].gw, r->relay,
                                           want, origin, &r->limits, why,
                                           sizeof(why))
              : bm_gateway_request(gateways[r->gateway].gw, r->relay, want,
                                   origin, false, why, sizeof(why));

  if (rc == BM_REQ_HELD || rc == BM_REQ_OVERRIDDEN)
    INFO(PLUGIN_NAME " plugin: Switch \"%s\" wants relay \"%s\" %s: %s %s",
         r->name, bm_gateway_relay_name(gateways[r->gateway].gw, r->relay),
         want ? "on" : "off", rc == BM_REQ_HELD ? "waiting for" : "refused:",
         why);
}

/* Runs for every value collectd writes, in up to 5 threads at once: a
 * cheap identity check first, then the matching rules' hysteresis. */
static int bimetri_write(const data_set_t *ds, const value_list_t *vl,
                         user_data_t *ud)
{
  const char *field[BM_FIELD_COUNT] = {vl->host, vl->plugin,
                                       vl->plugin_instance, vl->type,
                                       vl->type_instance};
  (void)ud;
  if (!started)
    return 0;
  for (size_t i = 0; i < rules_n; i++) {
    struct bm_rule *r = rules[i];
    size_t k = 0;
    double value;
    int want;

    if (!bm_rule_matches(r, field))
      continue;
    if (r->data_source[0]) {
      for (k = 0; k < ds->ds_num && strcmp(ds->ds[k].name, r->data_source); k++)
        ;
      if (k == ds->ds_num)
        continue;
    } else if (ds->ds_num != 1) {
      continue; /* the rule names no DataSource: only single-valued types */
    }
    if (ds->ds[k].type == DS_TYPE_GAUGE) {
      value = vl->values[k].gauge;
    } else {
      gauge_t *rates = uc_get_rate(ds, vl);
      if (!rates)
        continue;
      value = rates[k];
      free(rates);
    }
    if ((want = bm_rule_feed(r, value, CDTIME_T_TO_DOUBLE(cdtime()), NULL)) < 0)
      continue;
    {
      char origin[BM_ORIGIN_SIZE];
      snprintf(origin, sizeof(origin), "switch %s: %g from %s/%s%s%s/%s%s%s",
               r->name, value, vl->host, vl->plugin,
               vl->plugin_instance[0] ? "-" : "", vl->plugin_instance,
               vl->type, vl->type_instance[0] ? "-" : "", vl->type_instance);
      rule_request(r, want, origin, true);
    }
  }
  return 0;
}

/* Once an interval: rules whose value stopped coming fall back to their
 * FailSafe (safety first: without the limits). */
static void rules_tick(void)
{
  double now = CDTIME_T_TO_DOUBLE(cdtime());

  for (size_t i = 0; i < rules_n; i++) {
    char origin[BM_ORIGIN_SIZE];
    int want = bm_rule_tick(rules[i], now);
    if (want < 0)
      continue;
    snprintf(origin, sizeof(origin),
             "switch %s: no value for %g s (StaleAfter): FailSafe",
             rules[i]->name, rules[i]->stale_after);
    WARNING(PLUGIN_NAME " plugin: Switch \"%s\": no value for %g s: relay "
                        "\"%s\" goes to its FailSafe state %s",
            rules[i]->name, rules[i]->stale_after,
            bm_gateway_relay_name(gateways[rules[i]->gateway].gw,
                                  rules[i]->relay),
            want ? "on" : "off");
    rule_request(rules[i], want, origin, false);
  }
}

static enum bm_severity severity_of(int collectd_severity)
{
  switch (collectd_severity) {
  case NOTIF_FAILURE:
    return BM_SEV_FAILURE;
  case NOTIF_WARNING:
    return BM_SEV_WARNING;
  case NOTIF_OKAY:
    return BM_SEV_OKAY;
  default:
    return 0;
  }
}

/* The threshold plugin reports a value that stopped coming as a FAILURE
 * (or WARNING) without any of the meta data its range reports carry. */
static bool is_missing_report(const notification_t *n)
{
  if (n->severity == NOTIF_OKAY || !strstr(n->message, " has not been updated for "))
    return false;
  for (const notification_meta_t *m = n->meta; m; m = m->next)
    if (strcmp(m->name, "CurrentValue") == 0)
      return false;
  return true;
}

/* Reports a refused or invalid manual command: a FAILURE notification, so
 * that whoever sent it (through unixsock, a plugin, the network) sees it. */
static void manual_refused(const notification_t *in, const char *fmt, ...)
{
  notification_t n = {0};
  va_list ap;

  n.severity = NOTIF_FAILURE;
  n.time = cdtime();
  sstrncpy(n.host, hostname_g, sizeof(n.host));
  sstrncpy(n.plugin, PLUGIN_NAME, sizeof(n.plugin));
  sstrncpy(n.plugin_instance, in->plugin_instance, sizeof(n.plugin_instance));
  sstrncpy(n.type, "relay_result", sizeof(n.type));
  sstrncpy(n.type_instance, in->type_instance, sizeof(n.type_instance));
  va_start(ap, fmt);
  vsnprintf(n.message, sizeof(n.message), fmt, ap);
  va_end(ap);
  WARNING(PLUGIN_NAME " plugin: %s", n.message);
  plugin_notification_meta_add_string(&n, "outcome", "refused");
  plugin_dispatch_notification(&n);
  plugin_notification_meta_free(n.meta);
}

/* plugin "bimetri", plugin_instance the Gateway, type "relay_command",
 * type_instance the Relay, message "on", "off" or "auto", optionally
 * followed by a hold time in seconds ("on 600"). */
static void manual_command(const notification_t *n)
{
  char word[16] = "", origin[BM_ORIGIN_SIZE], why[160];
  double hold = 0;
  int g = find_gateway(n->plugin_instance), relay = -1, status, fields;
  enum bm_request rc;

  if (g >= 0)
    relay = bm_gateway_find_relay(gateways[g].gw, n->type_instance);
  if (relay < 0) {
    manual_refused(n, "manual command for relay \"%s\" of Gateway \"%s\" "
                      "refused: no such Relay (from host \"%s\")",
                   n->type_instance, n->plugin_instance, n->host);
    return;
  }
  if (!gateways[g].manual_control[relay]) {
    manual_refused(n, "manual command \"%.32s\" for relay \"%s\" refused: "
                      "ManualControl is off (from host \"%s\")",
                   n->message, n->type_instance, n->host);
    return;
  }
  fields = sscanf(n->message, " %15s %lf", word, &hold);
  if (fields < 1 || (fields == 2 && !(hold > 0 && hold <= 31536000)) ||
      (strcmp(word, "on") && strcmp(word, "off") && strcmp(word, "auto"))) {
    manual_refused(n, "manual command \"%.32s\" for relay \"%s\" refused: "
                      "expected \"on\", \"off\" or \"auto\", optionally "
                      "with a hold time in seconds (from host \"%s\")",
                   n->message, n->type_instance, n->host);
    return;
  }
  status = !strcmp(word, "on") ? 1 : !strcmp(word, "off") ? 0 : -1;
  snprintf(origin, sizeof(origin), "manual %s from host %s", word, n->host);
  rc = bm_gateway_override(gateways[g].gw, relay, status, hold, origin, why,
                           sizeof(why));
  if (rc == BM_REQ_INTERLOCKED) {
    manual_refused(n, "manual command \"%s\" for relay \"%s\" refused: %s "
                      "(from host \"%s\")",
                   word, n->type_instance, why, n->host);
    return;
  }
  INFO(PLUGIN_NAME " plugin: gateway \"%s\": relay \"%s\": %s%s (from host "
                   "\"%s\")",
       n->plugin_instance, n->type_instance,
       status < 0 ? "manual override ended: rules and Triggers drive it again"
                  : status ? "manual override: on" : "manual override: off",
       hold > 0 ? ", with a hold time" : "", n->host);
}

static int bimetri_notification(const notification_t *n, user_data_t *ud)
{
  struct bm_notif_fields f;
  static const char *sev_names[] = {"", "OKAY", "WARNING", "FAILURE"};

  (void)ud;
  if (strcmp(n->plugin, PLUGIN_NAME) == 0 &&
      strcmp(n->type, "relay_command") == 0) {
    manual_command(n);
    return 0;
  }
  f.field[BM_FIELD_HOST] = n->host;
  f.field[BM_FIELD_PLUGIN] = n->plugin;
  f.field[BM_FIELD_PLUGIN_INSTANCE] = n->plugin_instance;
  f.field[BM_FIELD_TYPE] = n->type;
  f.field[BM_FIELD_TYPE_INSTANCE] = n->type_instance;
  f.severity = severity_of(n->severity);
  if (!f.severity)
    return 0;
  f.missing = is_missing_report(n);

  for (size_t i = 0; i < triggers_n; i++) {
    const struct bm_trigger *t = &triggers[i];
    int want = bm_trigger_evaluate(t, &f);
    char origin[BM_ORIGIN_SIZE], why[160];
    enum bm_request rc;

    if (want < 0)
      continue;
    snprintf(origin, sizeof(origin), "trigger %s: %s%s from %s/%s%s%s/%s%s%s",
             t->name, sev_names[f.severity], f.missing ? " (missing value)" : "", n->host, n->plugin,
             n->plugin_instance[0] ? "-" : "", n->plugin_instance, n->type,
             n->type_instance[0] ? "-" : "", n->type_instance);
    /* An OKAY from elsewhere may be the threshold plugin's start-up OKAY;
     * the plugin's own reports (a chain) are real events. */
    rc = bm_gateway_request(gateways[t->gateway].gw, t->relay, want, origin,
                            f.severity == BM_SEV_OKAY &&
                                strcmp(n->plugin, PLUGIN_NAME) != 0,
                            why, sizeof(why));
    if (rc == BM_REQ_UNKNOWN)
      INFO(PLUGIN_NAME " plugin: Trigger \"%s\": OKAY not acted on: the "
                       "relay's state is not known yet",
           t->name);
    else if (rc == BM_REQ_OVERRIDDEN)
      INFO(PLUGIN_NAME " plugin: Trigger \"%s\" not acted on: %s", t->name,
           why);
  }
  return 0;
}

static int bimetri_shutdown(void)
{
  started = false;
  stop_gateways();
  for (size_t i = 0; i < gateways_n; i++) {
    bm_gateway_free(gateways[i].gw);
    free(gateways[i].views);
    free(gateways[i].manual_control);
  }
  gateways_n = 0;
  for (size_t i = 0; i < triggers_n; i++)
    bm_trigger_release(&triggers[i]);
  free(triggers);
  triggers = NULL;
  triggers_n = 0;
  for (size_t i = 0; i < rules_n; i++) {
    bm_rule_release(rules[i]);
    free(rules[i]);
  }
  free(rules);
  rules = NULL;
  rules_n = 0;
  bm_gateway_library_cleanup();
  bm_log_set_sink(NULL, NULL);
  return 0;
}

void module_register(void)
{
  plugin_register_complex_config(PLUGIN_NAME, bimetri_config);
  plugin_register_init(PLUGIN_NAME, bimetri_init);
  plugin_register_read(PLUGIN_NAME, bimetri_read);
  plugin_register_notification(PLUGIN_NAME, bimetri_notification, NULL);
  plugin_register_shutdown(PLUGIN_NAME, bimetri_shutdown);
}
