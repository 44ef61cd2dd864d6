/*
 * plugconf.c - the <Plugin bimetri> block, read (see plugconf.h).
 *
 * One function per block kind, each reading its children in order and
 * stopping at the first error, which is reported once through the caller's
 * callback.  The messages are the plugin's: the integration tests
 * (tests/integration/config.sh) and operators grep for them.  Every option
 * error names the block and the option:
 *
 *   <Gateway "gw1"> <Relay "pump">, option "Output": expects an integer
 *   from 0 to 65535, got 70000
 */
#include "plugconf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"
#include "message.h"

/* The state of one bm_plugconf_add. */
struct reader {
  struct bm_plugconf *pc;
  const struct bm_plugconf_opts *o;
};

static void __attribute__((format(printf, 3, 4)))
report(const struct reader *rd, const struct bm_conf_item *where,
       const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (rd->o->error)
    rd->o->error(rd->o->ctx, where, msg);
}

/* An option's error: names the block and the option.  Returns -1. */
static int __attribute__((format(printf, 4, 5)))
conf_err(const struct reader *rd, const char *block,
         const struct bm_conf_item *it, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  report(rd, it, "%s, option \"%s\": %s", block, it->key, msg);
  return -1;
}

static int out_of_memory(const struct reader *rd)
{
  report(rd, NULL, "out of memory");
  return -1;
}

/* ---- values ------------------------------------------------------------ */

static int conf_string(const struct reader *rd, const char *block,
                       const struct bm_conf_item *it, char *buf, size_t size)
{
  if (it->values_num != 1 || it->values[0].type != BM_CONF_STRING)
    return conf_err(rd, block, it, "expects exactly one string argument");
  if (strlen(it->values[0].string) >= size)
    return conf_err(rd, block, it, "longer than %zu bytes", size - 1);
  snprintf(buf, size, "%s", it->values[0].string);
  return 0;
}

static int conf_number(const struct reader *rd, const char *block,
                       const struct bm_conf_item *it, double min, double max,
                       bool integer, double *out)
{
  double v;

  if (it->values_num != 1 || it->values[0].type != BM_CONF_NUMBER)
    return conf_err(rd, block, it, "expects exactly one number argument");
  v = it->values[0].number;
  /* The range test first: the cast is undefined outside int64_t. */
  if (!(v >= min && v <= max) || (integer && v != (double)(int64_t)v))
    return conf_err(rd, block, it, "expects %s from %g to %g, got %g",
                    integer ? "an integer" : "a number", min, max, v);
  *out = v;
  return 0;
}

static int conf_int(const struct reader *rd, const char *block,
                    const struct bm_conf_item *it, double min, double max,
                    int64_t *out)
{
  double v = 0;

  if (conf_number(rd, block, it, min, max, true, &v) != 0)
    return -1;
  *out = (int64_t)v;
  return 0;
}

static int conf_bool(const struct reader *rd, const char *block,
                     const struct bm_conf_item *it, bool *out)
{
  if (it->values_num != 1 || it->values[0].type != BM_CONF_BOOLEAN)
    return conf_err(rd, block, it, "expects true or false");
  *out = it->values[0].boolean;
  return 0;
}

/* Reads a secret from a file (one line, the newline dropped), warning when
 * group or others may read it. */
static int read_secret(const struct reader *rd, const char *block,
                       const struct bm_conf_item *it, const char *path,
                       char *buf, size_t size)
{
  struct stat st;
  FILE *f = fopen(path, "re");
  size_t len;
  int status = -1;

  if (!f)
    return conf_err(rd, block, it, "cannot open \"%s\": %s", path,
                    strerror(errno));
  if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
    BM_WARNING("%s, option \"%s\": \"%s\" is readable by group or others "
               "(mode %04o): chmod 600 it",
               block, it->key, path, (unsigned)(st.st_mode & 07777));
  if (!fgets(buf, (int)size, f)) {
    conf_err(rd, block, it, "\"%s\" is empty", path);
    goto out;
  }
  len = strlen(buf);
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    buf[--len] = '\0';
  if (len == 0) {
    conf_err(rd, block, it, "\"%s\" is empty", path);
    goto out;
  }
  status = 0;
out:
  fclose(f);
  return status;
}

/* ---- names ------------------------------------------------------------- */

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

bool bm_plugconf_valid_topic_part(const char *s)
{
  if (!*s)
    return false;
  for (; *s; s++)
    if (strchr("/+#.", *s) || isspace((unsigned char)*s) ||
        (unsigned char)*s < 0x20)
      return false;
  return true;
}

static int block_name(const struct reader *rd, const struct bm_conf_item *it,
                      const char *what, char *buf, size_t size)
{
  if (it->values_num != 1 || it->values[0].type != BM_CONF_STRING) {
    report(rd, it, "<%s> block expects exactly one string argument (its "
                   "name)",
           what);
    return -1;
  }
  if (!valid_instance(it->values[0].string)) {
    report(rd, it, "<%s \"%s\">: invalid name: use 1 to 63 of letters, "
                   "digits, '_', '.', '-', not starting with '-'",
           what, it->values[0].string);
    return -1;
  }
  snprintf(buf, size, "%s", it->values[0].string);
  return 0;
}

int bm_plugconf_find_gateway(const struct bm_plugconf *pc, const char *name)
{
  for (size_t i = 0; i < pc->gateways_n; i++)
    if (strcmp(pc->gateways[i].c.name, name) == 0)
      return (int)i;
  return -1;
}

int bm_plugconf_find_relay(const struct bm_plugconf_gateway *g,
                           const char *name)
{
  for (size_t i = 0; i < g->relays_n; i++)
    if (strcmp(g->relays[i].name, name) == 0)
      return (int)i;
  return -1;
}

/* Relay "gateway" "relay" of a Trigger or Switch: indexes into what is
 * defined so far.  `what` names the block kind for the message. */
static int conf_relay_ref(const struct reader *rd, const char *block,
                          const struct bm_conf_item *o, const char *what,
                          int *gateway, int *relay)
{
  const struct bm_plugconf *pc = rd->pc;
  int g, r;

  if (o->values_num != 2 || o->values[0].type != BM_CONF_STRING ||
      o->values[1].type != BM_CONF_STRING)
    return conf_err(rd, block, o, "expects two strings: the Gateway and the "
                                  "Relay");
  if ((g = bm_plugconf_find_gateway(pc, o->values[0].string)) < 0)
    return conf_err(rd, block, o, "no Gateway \"%s\" is defined (before this "
                                  "%s)",
                    o->values[0].string, what);
  if ((r = bm_plugconf_find_relay(&pc->gateways[g], o->values[1].string)) < 0)
    return conf_err(rd, block, o, "Gateway \"%s\" has no Relay \"%s\"",
                    o->values[0].string, o->values[1].string);
  *gateway = g;
  *relay = r;
  return 0;
}

/* ---- <Gateway> --------------------------------------------------------- */

/* <Token>: a token minted by the plugin. */
static int conf_token_block(const struct reader *rd, const char *gw_block,
                            const struct bm_conf_item *ci,
                            struct bm_token_conf *t)
{
  static const char *const reserved[] = {"iss", "sub", "aud", "exp",
                                         "nbf", "iat", "jti"};
  char block[160], alg[16] = "";
  bool has_key = false;
  double d;

  snprintf(block, sizeof(block), "%s <Token>", gw_block);
  if (ci->values_num != 0) {
    report(rd, ci, "%s: the block takes no argument", block);
    return -1;
  }
  t->kind = BM_TOKEN_MINT;
  for (size_t i = 0; i < ci->children_num; i++) {
    const struct bm_conf_item *o = &ci->children[i];
    const char *name, *value;
    int rc = 0;

    if (strcasecmp(o->key, "Algorithm") == 0) {
      if ((rc = conf_string(rd, block, o, alg, sizeof(alg))) == 0) {
        if (strcmp(alg, "HS256") == 0)
          t->alg = BM_TOKEN_HS256;
        else if (strcmp(alg, "RS256") == 0)
          t->alg = BM_TOKEN_RS256;
        else if (strcmp(alg, "ES256") == 0)
          t->alg = BM_TOKEN_ES256;
        else
          rc = conf_err(rd, block, o,
                        "expects HS256, RS256 or ES256, got \"%s\"", alg);
      }
    } else if (strcasecmp(o->key, "KeyFile") == 0) {
      rc = conf_string(rd, block, o, t->file, sizeof(t->file));
      has_key = true;
    } else if (strcasecmp(o->key, "Issuer") == 0) {
      rc = conf_string(rd, block, o, t->issuer, sizeof(t->issuer));
    } else if (strcasecmp(o->key, "Subject") == 0) {
      rc = conf_string(rd, block, o, t->subject, sizeof(t->subject));
    } else if (strcasecmp(o->key, "Audience") == 0) {
      rc = conf_string(rd, block, o, t->audience, sizeof(t->audience));
    } else if (strcasecmp(o->key, "Lifetime") == 0) {
      if ((rc = conf_number(rd, block, o, 60, 31536000, false, &d)) == 0)
        t->lifetime = d;
    } else if (strcasecmp(o->key, "RenewBefore") == 0) {
      if ((rc = conf_number(rd, block, o, 1, 31536000, false, &d)) == 0)
        t->renew_before = d;
    } else if (strcasecmp(o->key, "Claim") == 0) {
      if (o->values_num != 2 || o->values[0].type != BM_CONF_STRING ||
          o->values[1].type != BM_CONF_STRING)
        return conf_err(rd, block, o,
                        "expects two strings: the claim's name and value");
      name = o->values[0].string;
      value = o->values[1].string;
      if (t->n_claims == BM_TOKEN_MAX_CLAIMS)
        return conf_err(rd, block, o, "at most %d claims",
                        BM_TOKEN_MAX_CLAIMS);
      if (!name[0] || strlen(name) >= sizeof(t->claims[0].name) ||
          strlen(value) >= sizeof(t->claims[0].value))
        return conf_err(rd, block, o, "the name must be 1 to 63 bytes, the "
                                      "value at most 255");
      for (size_t r = 0; r < sizeof(reserved) / sizeof(reserved[0]); r++)
        if (strcmp(name, reserved[r]) == 0)
          return conf_err(rd, block, o, "\"%s\" is set by the plugin itself",
                          reserved[r]);
      for (int c = 0; c < t->n_claims; c++)
        if (strcmp(t->claims[c].name, name) == 0)
          return conf_err(rd, block, o, "claim \"%s\" given twice", name);
      snprintf(t->claims[t->n_claims].name, sizeof(t->claims[0].name), "%s",
               name);
      snprintf(t->claims[t->n_claims].value, sizeof(t->claims[0].value), "%s",
               value);
      t->n_claims++;
    } else {
      rc = conf_err(rd, block, o, "unknown option");
    }
    if (rc != 0)
      return -1;
  }
  if (!t->alg || !has_key) {
    report(rd, ci, "%s: option \"%s\" is required", block,
           !t->alg ? "Algorithm" : "KeyFile");
    return -1;
  }
  if (t->renew_before >= t->lifetime) {
    report(rd, ci, "%s: \"RenewBefore\" must be shorter than \"Lifetime\"",
           block);
    return -1;
  }
  return 0;
}

/* <Relay "name">; *manual_control is -1 when the Relay leaves it to the
 * Gateway. */
static int conf_relay(const struct reader *rd, const char *gw_block,
                      const struct bm_conf_item *ci,
                      struct bm_plugconf_relay *r, int *manual_control)
{
  char block[160];
  bool has_res = false, has_out = false, on = false;
  int64_t v;

  *manual_control = -1;
  if (block_name(rd, ci, "Relay", r->name, sizeof(r->name)) != 0)
    return -1;
  snprintf(block, sizeof(block), "%s <Relay \"%s\">", gw_block, r->name);
  for (size_t i = 0; i < ci->children_num; i++) {
    const struct bm_conf_item *c = &ci->children[i];
    int rc;

    if (strcasecmp(c->key, "ResourceId") == 0) {
      rc = conf_int(rd, block, c, 0, (double)BM_MSG_MAX_SAFE_INT,
                    &r->resource_id);
      has_res = true;
    } else if (strcasecmp(c->key, "Output") == 0) {
      if ((rc = conf_int(rd, block, c, 0, 65535, &v)) == 0)
        r->output = (int)v;
      has_out = true;
    } else if (strcasecmp(c->key, "ManualControl") == 0) {
      if ((rc = conf_bool(rd, block, c, &on)) == 0)
        *manual_control = on;
    } else {
      rc = conf_err(rd, block, c, "unknown option");
    }
    if (rc != 0)
      return -1;
  }
  if (!has_res || !has_out) {
    report(rd, ci, "%s: option \"%s\" is required", block,
           has_res ? "Output" : "ResourceId");
    return -1;
  }
  return 0;
}

void bm_plugconf_gateway_defaults(struct bm_gateway_conf *c, const char *name)
{
  memset(c, 0, sizeof(*c));
  snprintf(c->name, sizeof(c->name), "%s", name);
  snprintf(c->host, sizeof(c->host), "localhost");
  c->port = 1883;
  c->keepalive = 30;
  snprintf(c->brand, sizeof(c->brand), "Bimetri");
  snprintf(c->command_topic, sizeof(c->command_topic), "resource/commands");
  c->qos = 2;
  c->sub_qos = -1; /* unset: see bm_gateway_sub_qos */
  c->policy.ack_timeout = 10;
  c->policy.command_timeout = 30;
  c->policy.retries = 2;
  c->policy.retry_backoff = 1;
  c->journal_sync = BM_JOURNAL_SYNC_ALWAYS;
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

/* Puts base (if any) before the relative path in buf.  Returns 0, or -1
 * when the result would not fit (buf unchanged). */
static int join_path(char *buf, size_t size, const char *base)
{
  char tmp[BM_GW_PATH_SIZE];
  int n;

  if (!base || !*base)
    return 0;
  n = snprintf(tmp, sizeof(tmp), "%s/%s", base, buf);
  if (n < 0 || (size_t)n >= sizeof(tmp) || (size_t)n >= size)
    return -1;
  memcpy(buf, tmp, (size_t)n + 1);
  return 0;
}

/* Flags of a <Gateway> block being read. */
struct gw_seen {
  bool app, inst, user, org;
  int token_sources;
};

/* Sets an AppName or InstanceId. */
static int conf_topic_part(const struct reader *rd, const char *block,
                           const struct bm_conf_item *o, char *buf,
                           size_t size)
{
  if (conf_string(rd, block, o, buf, size) != 0)
    return -1;
  if (!bm_plugconf_valid_topic_part(buf))
    return conf_err(rd, block, o, "\"%s\" must be non-empty without '/', "
                                  "'+', '#', '.' or white space",
                    buf);
  return 0;
}

/* A string option that must not be empty. */
static int conf_nonempty(const struct reader *rd, const char *block,
                         const struct bm_conf_item *o, char *buf, size_t size)
{
  if (conf_string(rd, block, o, buf, size) != 0)
    return -1;
  if (!buf[0])
    return conf_err(rd, block, o, "must not be empty");
  return 0;
}

/* A <Relay> of the Gateway g, unique by name and by address. */
static int gateway_relay(const struct reader *rd, const char *block,
                         const struct bm_conf_item *o,
                         struct bm_plugconf_gateway *g, int *manual)
{
  struct bm_plugconf_relay *r = &g->relays[g->relays_n];

  if (conf_relay(rd, block, o, r, &manual[g->relays_n]) != 0)
    return -1;
  for (size_t j = 0; j < g->relays_n; j++) {
    if (strcmp(g->relays[j].name, r->name) == 0) {
      report(rd, o, "%s: Relay \"%s\" is defined twice", block, r->name);
      return -1;
    }
    if (g->relays[j].resource_id == r->resource_id &&
        g->relays[j].output == r->output) {
      report(rd, o, "%s: Relays \"%s\" and \"%s\" both address ResourceId "
                    "%lld Output %lld",
             block, g->relays[j].name, r->name, (long long)r->resource_id,
             (long long)r->output);
      return -1;
    }
  }
  g->relays_n++;
  return 0;
}

/* One option of a <Gateway> (not a <Relay>). */
static int gateway_option(const struct reader *rd, const char *block,
                          const struct bm_conf_item *o,
                          struct bm_plugconf_gateway *g, struct gw_seen *seen)
{
  struct bm_gateway_conf *c = &g->c;
  const char *k = o->key;
  char mode[16];
  int64_t v;
  double d;
  int rc = 0;

  if (strcasecmp(k, "Host") == 0) {
    rc = conf_string(rd, block, o, c->host, sizeof(c->host));
  } else if (strcasecmp(k, "Port") == 0) {
    if ((rc = conf_int(rd, block, o, 1, 65535, &v)) == 0)
      c->port = (int)v;
    g->has_port = true;
  } else if (strcasecmp(k, "ClientId") == 0) {
    rc = conf_nonempty(rd, block, o, c->client_id, sizeof(c->client_id));
  } else if (strcasecmp(k, "User") == 0) {
    rc = conf_string(rd, block, o, c->user, sizeof(c->user));
  } else if (strcasecmp(k, "Password") == 0) {
    rc = conf_string(rd, block, o, c->password, sizeof(c->password));
    g->has_pass = true;
  } else if (strcasecmp(k, "PasswordFile") == 0) {
    if ((rc = conf_string(rd, block, o, g->password_file,
                          sizeof(g->password_file))) == 0 &&
        rd->o->read_secrets)
      rc = read_secret(rd, block, o, g->password_file, c->password,
                       sizeof(c->password));
    g->has_pass = rc == 0;
  } else if (strcasecmp(k, "KeepAlive") == 0) {
    if ((rc = conf_int(rd, block, o, 5, 65535, &v)) == 0)
      c->keepalive = (int)v;
  } else if (strcasecmp(k, "AppName") == 0) {
    rc = conf_topic_part(rd, block, o, c->app_name, sizeof(c->app_name));
    seen->app = true;
  } else if (strcasecmp(k, "InstanceId") == 0) {
    rc = conf_topic_part(rd, block, o, c->instance_id,
                         sizeof(c->instance_id));
    seen->inst = true;
  } else if (strcasecmp(k, "Brand") == 0) {
    rc = conf_nonempty(rd, block, o, c->brand, sizeof(c->brand));
  } else if (strcasecmp(k, "UserId") == 0) {
    rc = conf_int(rd, block, o, 0, (double)BM_MSG_MAX_SAFE_INT, &c->user_id);
    seen->user = true;
  } else if (strcasecmp(k, "OrganizationId") == 0) {
    rc = conf_int(rd, block, o, 0, (double)BM_MSG_MAX_SAFE_INT,
                  &c->organization_id);
    seen->org = true;
  } else if (strcasecmp(k, "TokenFile") == 0) {
    rc = conf_string(rd, block, o, c->token.file, sizeof(c->token.file));
    c->token.kind = BM_TOKEN_FILE;
    seen->token_sources++;
  } else if (strcasecmp(k, "TokenCommand") == 0) {
    rc = conf_string(rd, block, o, c->token.command, sizeof(c->token.command));
    c->token.kind = BM_TOKEN_COMMAND;
    seen->token_sources++;
  } else if (strcasecmp(k, "TokenCommandTimeout") == 0) {
    if ((rc = conf_number(rd, block, o, 0.1, 600, false, &d)) == 0)
      c->token.command_timeout = d;
  } else if (strcasecmp(k, "Token") == 0) {
    rc = conf_token_block(rd, block, o, &c->token);
    seen->token_sources++;
  } else if (strcasecmp(k, "TokenWarn") == 0) {
    if ((rc = conf_number(rd, block, o, 0, 31536000, false, &d)) == 0)
      c->token_warn = d;
  } else if (strcasecmp(k, "TokenLeeway") == 0) {
    if ((rc = conf_int(rd, block, o, 0, 86400, &v)) == 0)
      c->token_leeway = v;
  } else if (strcasecmp(k, "CACert") == 0) {
    rc = conf_string(rd, block, o, c->ca_file, sizeof(c->ca_file));
  } else if (strcasecmp(k, "CAPath") == 0) {
    rc = conf_string(rd, block, o, c->ca_path, sizeof(c->ca_path));
  } else if (strcasecmp(k, "TLSSystemCAs") == 0) {
    rc = conf_bool(rd, block, o, &c->tls_system_cas);
  } else if (strcasecmp(k, "CertificateFile") == 0) {
    rc = conf_string(rd, block, o, c->cert_file, sizeof(c->cert_file));
  } else if (strcasecmp(k, "CertificateKeyFile") == 0) {
    rc = conf_string(rd, block, o, c->key_file, sizeof(c->key_file));
  } else if (strcasecmp(k, "CertificateKeyPassword") == 0) {
    rc = conf_string(rd, block, o, c->key_password, sizeof(c->key_password));
  } else if (strcasecmp(k, "CertificateKeyPasswordFile") == 0) {
    if ((rc = conf_string(rd, block, o, g->key_password_file,
                          sizeof(g->key_password_file))) == 0 &&
        rd->o->read_secrets)
      rc = read_secret(rd, block, o, g->key_password_file, c->key_password,
                       sizeof(c->key_password));
  } else if (strcasecmp(k, "TLSProtocol") == 0) {
    if ((rc = conf_string(rd, block, o, c->tls_version,
                          sizeof(c->tls_version))) == 0 &&
        strcmp(c->tls_version, "tlsv1.2") != 0 &&
        strcmp(c->tls_version, "tlsv1.3") != 0)
      rc = conf_err(rd, block, o, "expects \"tlsv1.2\" or \"tlsv1.3\", got "
                                  "\"%s\"",
                    c->tls_version);
  } else if (strcasecmp(k, "CipherSuite") == 0) {
    rc = conf_string(rd, block, o, c->ciphers, sizeof(c->ciphers));
  } else if (strcasecmp(k, "TLSVerifyHostname") == 0) {
    rc = conf_bool(rd, block, o, &c->tls_verify_hostname);
  } else if (strcasecmp(k, "TLSVerifyPeer") == 0) {
    rc = conf_bool(rd, block, o, &c->tls_verify_peer);
  } else if (strcasecmp(k, "CommandTopic") == 0) {
    if ((rc = conf_string(rd, block, o, c->command_topic,
                          sizeof(c->command_topic))) == 0 &&
        (c->command_topic[0] == '\0' || strpbrk(c->command_topic, "+#")))
      rc = conf_err(rd, block, o, "must be a topic name without wildcards");
  } else if (strcasecmp(k, "QoS") == 0) {
    if ((rc = conf_int(rd, block, o, 0, 2, &v)) == 0)
      c->qos = (int)v;
  } else if (strcasecmp(k, "SubscribeQoS") == 0) {
    if ((rc = conf_int(rd, block, o, 0, 2, &v)) == 0)
      c->sub_qos = (int)v;
  } else if (strcasecmp(k, "AckTimeout") == 0) {
    if ((rc = conf_number(rd, block, o, 0.1, 86400, false, &d)) == 0)
      c->policy.ack_timeout = d;
  } else if (strcasecmp(k, "CommandTimeout") == 0) {
    if ((rc = conf_number(rd, block, o, 0.1, 86400, false, &d)) == 0)
      c->policy.command_timeout = d;
  } else if (strcasecmp(k, "Retries") == 0) {
    if ((rc = conf_int(rd, block, o, 0, 100, &v)) == 0)
      c->policy.retries = (int)v;
  } else if (strcasecmp(k, "RetryBackoff") == 0) {
    if ((rc = conf_number(rd, block, o, 0, 60, false, &d)) == 0)
      c->policy.retry_backoff = d;
  } else if (strcasecmp(k, "ProtocolVersion") == 0) {
    if ((rc = conf_int(rd, block, o, 3, 5, &v)) == 0)
      c->protocol_version = (int)v;
  } else if (strcasecmp(k, "SessionExpiry") == 0) {
    if ((rc = conf_int(rd, block, o, 1, 2147483647.0, &v)) == 0)
      c->session_expiry = (int)v;
  } else if (strcasecmp(k, "MaxCommandsPerMinute") == 0) {
    if ((rc = conf_int(rd, block, o, 1, 600, &v)) == 0)
      c->policy.max_per_minute = (int)v;
  } else if (strcasecmp(k, "ManualControl") == 0) {
    rc = conf_bool(rd, block, o, &g->manual_control);
  } else if (strcasecmp(k, "StateInterval") == 0) {
    rc = conf_number(rd, block, o, 0.001, 86400, false, &g->state_interval);
  } else if (strcasecmp(k, "JournalFile") == 0) {
    rc = conf_nonempty(rd, block, o, c->journal_file, sizeof(c->journal_file));
  } else if (strcasecmp(k, "JournalSync") == 0) {
    if ((rc = conf_string(rd, block, o, mode, sizeof(mode))) == 0 &&
        bm_journal_sync_mode_parse(mode, &c->journal_sync) != 0)
      rc = conf_err(rd, block, o,
                    "expects \"always\", \"full\" or \"none\", got \"%s\"",
                    mode);
  } else if (strcasecmp(k, "JournalSizeLimit") == 0) {
    if ((rc = conf_int(rd, block, o, 4096, 1073741824.0, &v)) == 0)
      c->journal_limit = (uint64_t)v;
  } else {
    rc = conf_err(rd, block, o, "unknown option");
  }
  return rc;
}

/* The checks across a <Gateway>'s options, once all are read. */
static int gateway_check(const struct reader *rd, const char *block,
                         const struct bm_conf_item *ci,
                         struct bm_plugconf_gateway *g,
                         const struct gw_seen *seen)
{
  struct bm_gateway_conf *c = &g->c;
  const char *missing = !seen->app             ? "AppName"
                        : !seen->inst          ? "InstanceId"
                        : !seen->user          ? "UserId"
                        : !seen->org           ? "OrganizationId"
                        : !seen->token_sources ? "TokenFile"
                                               : NULL;
  const char *why = NULL;

  if (missing) {
    report(rd, ci, "%s: option \"%s\" is required", block, missing);
    return -1;
  }
  if (seen->token_sources > 1)
    why = "give one of \"TokenFile\", \"TokenCommand\" and <Token>, not "
          "several";
  else if (c->ca_file[0] || c->ca_path[0] || c->tls_system_cas) {
    if (!g->has_port)
      c->port = 8883;
  } else if (c->cert_file[0] || c->key_file[0] || c->tls_version[0] ||
             c->ciphers[0] || c->key_password[0] || g->key_password_file[0])
    why = "TLS options need \"CACert\", \"CAPath\" or \"TLSSystemCAs true\"";
  if (!why && !c->cert_file[0] != !c->key_file[0])
    why = "\"CertificateFile\" and \"CertificateKeyFile\" go together";
  if (!why && g->has_pass && !c->user[0])
    why = "option \"Password\" needs \"User\"";
  if (!why && g->relays_n == 0)
    why = "at least one <Relay> block is required";
  if (why) {
    report(rd, ci, "%s: %s", block, why);
    return -1;
  }
  return 0;
}

/* Appends g to pc, taking it over (g is zeroed). */
static int gateway_append(const struct reader *rd,
                          struct bm_plugconf_gateway *g)
{
  struct bm_plugconf *pc = rd->pc;
  struct bm_plugconf_gateway *grown =
      realloc(pc->gateways, (pc->gateways_n + 1) * sizeof(*grown));

  if (!grown)
    return out_of_memory(rd);
  pc->gateways = grown;
  pc->gateways[pc->gateways_n++] = *g;
  memset(g, 0, sizeof(*g));
  return 0;
}

static void gateway_release(struct bm_plugconf_gateway *g)
{
  memset(g->c.password, 0, sizeof(g->c.password));
  memset(g->c.key_password, 0, sizeof(g->c.key_password));
  free(g->relays);
  g->relays = NULL;
  g->relays_n = 0;
}

static int conf_gateway(const struct reader *rd, const struct bm_conf_item *ci)
{
  struct bm_plugconf *pc = rd->pc;
  struct bm_plugconf_gateway *g = NULL;
  struct gw_seen seen = {0};
  int *manual = NULL; /* per relay: its ManualControl, -1 the Gateway's */
  char block[96], name[BM_GW_NAME_SIZE];
  int status = -1;

  if (pc->gateways_n == BM_PLUGCONF_MAX_GATEWAYS) {
    report(rd, ci, "more than %d <Gateway> blocks", BM_PLUGCONF_MAX_GATEWAYS);
    goto out;
  }
  if (block_name(rd, ci, "Gateway", name, sizeof(name)) != 0)
    goto out;
  snprintf(block, sizeof(block), "<Gateway \"%s\">", name);
  if (bm_plugconf_find_gateway(pc, name) >= 0) {
    report(rd, ci, "%s: a Gateway of this name already exists", block);
    goto out;
  }
  if (!(g = calloc(1, sizeof(*g))) ||
      !(g->relays = calloc(ci->children_num + 1, sizeof(*g->relays))) ||
      !(manual = calloc(ci->children_num + 1, sizeof(*manual)))) {
    out_of_memory(rd);
    goto out;
  }
  bm_plugconf_gateway_defaults(&g->c, name);

  for (size_t i = 0; i < ci->children_num; i++) {
    const struct bm_conf_item *o = &ci->children[i];
    int rc = strcasecmp(o->key, "Relay") == 0
                 ? gateway_relay(rd, block, o, g, manual)
                 : gateway_option(rd, block, o, g, &seen);
    if (rc != 0)
      goto out;
  }
  if (gateway_check(rd, block, ci, g, &seen) != 0)
    goto out;
  for (size_t i = 0; i < g->relays_n; i++)
    g->relays[i].manual_control =
        manual[i] < 0 ? g->manual_control : manual[i] != 0;

  /* Journal files: <BaseDir>/bimetri-<gateway>.journal, and one each. */
  if (!g->c.journal_file[0])
    snprintf(g->c.journal_file, sizeof(g->c.journal_file),
             "%s/bimetri-%s.journal",
             rd->o->base_dir && *rd->o->base_dir ? rd->o->base_dir : ".",
             name);
  else if (rd->o->join_base_dir && g->c.journal_file[0] != '/' &&
           join_path(g->c.journal_file, sizeof(g->c.journal_file),
                     rd->o->base_dir) != 0) {
    report(rd, ci, "%s: option \"JournalFile\": \"%s\" is too long under "
                   "\"%s\"",
           block, g->c.journal_file, rd->o->base_dir);
    goto out;
  }
  canonical_path(g->c.journal_file, g->journal_key, sizeof(g->journal_key));
  for (size_t i = 0; i < pc->gateways_n; i++) {
    if (strcmp(pc->gateways[i].journal_key, g->journal_key) == 0) {
      report(rd, ci, "%s: option \"JournalFile\": \"%s\" is the journal of "
                     "another Gateway already",
             block, g->c.journal_file);
      goto out;
    }
  }
  status = gateway_append(rd, g);
out:
  if (g)
    gateway_release(g);
  free(g);
  free(manual);
  return status;
}

/* ---- <Trigger>, <Switch>, Interlock ------------------------------------ */

/* The field a key names (Host, Plugin, ...), or -1. */
static int field_of(const char *key)
{
  for (int f = 0; f < BM_FIELD_COUNT; f++)
    if (strcasecmp(key, bm_field_name(f)) == 0)
      return f;
  return -1;
}

static int conf_trigger(const struct reader *rd, const struct bm_conf_item *ci)
{
  struct bm_plugconf *pc = rd->pc;
  struct bm_trigger t, *grown;
  char name[64], block[96], err[256];
  bool has_relay = false, inited = false;
  int status = -1;
  int64_t v;

  if (block_name(rd, ci, "Trigger", name, sizeof(name)) != 0)
    goto out;
  snprintf(block, sizeof(block), "<Trigger \"%s\">", name);
  for (size_t i = 0; i < pc->triggers_n; i++) {
    if (strcmp(pc->triggers[i].name, name) == 0) {
      report(rd, ci, "%s: a Trigger of this name already exists", block);
      goto out;
    }
  }
  if (bm_trigger_init(&t, name) != 0) {
    out_of_memory(rd);
    goto out;
  }
  inited = true;

  for (size_t i = 0; i < ci->children_num; i++) {
    const struct bm_conf_item *o = &ci->children[i];
    int rc = -1, field = field_of(o->key), sev = -1;

    if (strcasecmp(o->key, "OnFailure") == 0)
      sev = BM_SEV_FAILURE;
    else if (strcasecmp(o->key, "OnWarning") == 0)
      sev = BM_SEV_WARNING;
    else if (strcasecmp(o->key, "OnOkay") == 0)
      sev = BM_SEV_OKAY;

    if (field >= 0) {
      if (o->values_num != 1 || o->values[0].type != BM_CONF_STRING)
        conf_err(rd, block, o, "expects exactly one string argument");
      else if ((rc = bm_trigger_set_pattern(&t, field, o->values[0].string,
                                            err, sizeof(err))) != 0)
        report(rd, o, "%s, %s", block, err); /* err names the option */
    } else if (sev >= 0) {
      if ((rc = conf_int(rd, block, o, 0, 1, &v)) == 0)
        t.on[sev] = (int)v;
    } else if (strcasecmp(o->key, "OnMissing") == 0) {
      if ((rc = conf_int(rd, block, o, 0, 1, &v)) == 0)
        t.on_missing = (int)v;
    } else if (strcasecmp(o->key, "Relay") == 0) {
      rc = conf_relay_ref(rd, block, o, "Trigger", &t.gateway, &t.relay);
      has_relay = rc == 0;
    } else {
      conf_err(rd, block, o, "unknown option");
    }
    if (rc != 0)
      goto out;
  }
  if (!has_relay) {
    report(rd, ci, "%s: option \"Relay\" is required", block);
    goto out;
  }
  if (t.on[BM_SEV_OKAY] < 0 && t.on[BM_SEV_WARNING] < 0 &&
      t.on[BM_SEV_FAILURE] < 0 && t.on_missing < 0) {
    report(rd, ci, "%s: at least one of \"OnFailure\", \"OnWarning\", "
                   "\"OnOkay\", \"OnMissing\" is required",
           block);
    goto out;
  }
  if (!(grown = realloc(pc->triggers, (pc->triggers_n + 1) * sizeof(*grown)))) {
    out_of_memory(rd);
    goto out;
  }
  pc->triggers = grown;
  pc->triggers[pc->triggers_n++] = t;
  inited = false;
  status = 0;
out:
  if (inited)
    bm_trigger_release(&t);
  return status;
}

/* The options of a <Switch> but its identity and Relay. */
static int switch_option(const struct reader *rd, const char *block,
                         const struct bm_conf_item *o, struct bm_rule *r,
                         bool *cooler, bool *heater)
{
  const char *k = o->key;
  int64_t v;
  double d;
  int rc = -1;

  if (strcasecmp(k, "DataSource") == 0) {
    rc = conf_string(rd, block, o, r->data_source, sizeof(r->data_source));
  } else if (strcasecmp(k, "OnAbove") == 0 || strcasecmp(k, "OnBelow") == 0) {
    if ((rc = conf_number(rd, block, o, -1e300, 1e300, false, &d)) == 0)
      r->on_at = d;
    *(strcasecmp(k, "OnAbove") == 0 ? cooler : heater) = true;
  } else if (strcasecmp(k, "OffBelow") == 0 ||
             strcasecmp(k, "OffAbove") == 0) {
    if ((rc = conf_number(rd, block, o, -1e300, 1e300, false, &d)) == 0)
      r->off_at = d;
    *(strcasecmp(k, "OffBelow") == 0 ? cooler : heater) = true;
  } else if (strcasecmp(k, "MinOnTime") == 0) {
    if ((rc = conf_number(rd, block, o, 0, 86400, false, &d)) == 0)
      r->limits.min_on = d;
  } else if (strcasecmp(k, "MinOffTime") == 0) {
    if ((rc = conf_number(rd, block, o, 0, 86400, false, &d)) == 0)
      r->limits.min_off = d;
  } else if (strcasecmp(k, "MaxSwitchesPerHour") == 0) {
    if ((rc = conf_int(rd, block, o, 1, BM_RELAY_SWITCHES, &v)) == 0)
      r->limits.max_per_hour = (int)v;
  } else if (strcasecmp(k, "StaleAfter") == 0) {
    if ((rc = conf_number(rd, block, o, 1, 86400, false, &d)) == 0)
      r->stale_after = d;
  } else if (strcasecmp(k, "FailSafe") == 0) {
    if ((rc = conf_int(rd, block, o, 0, 1, &v)) == 0)
      r->fail_safe = (int)v;
  } else {
    conf_err(rd, block, o, "unknown option");
  }
  return rc;
}

/* <Switch>: a relay follows a value (rule.h). */
static int conf_switch(const struct reader *rd, const struct bm_conf_item *ci)
{
  struct bm_plugconf *pc = rd->pc;
  struct bm_rule *r = NULL, **grown;
  char name[64], block[96], err[256];
  bool has_relay = false, cooler = false, heater = false, inited = false;
  int status = -1;

  if (block_name(rd, ci, "Switch", name, sizeof(name)) != 0)
    goto out;
  snprintf(block, sizeof(block), "<Switch \"%s\">", name);
  for (size_t i = 0; i < pc->rules_n; i++) {
    if (strcmp(pc->rules[i]->name, name) == 0) {
      report(rd, ci, "%s: a Switch of this name already exists", block);
      goto out;
    }
  }
  if (!(r = calloc(1, sizeof(*r))) || bm_rule_init(r, name) != 0) {
    out_of_memory(rd);
    goto out;
  }
  inited = true;
  for (size_t i = 0; i < ci->children_num; i++) {
    const struct bm_conf_item *o = &ci->children[i];
    int rc = -1, field = field_of(o->key);

    if (field >= 0) {
      if (o->values_num != 1 || o->values[0].type != BM_CONF_STRING)
        conf_err(rd, block, o, "expects exactly one string argument");
      else if ((rc = bm_pattern_set(&r->pattern[field], field,
                                    o->values[0].string, err,
                                    sizeof(err))) != 0)
        report(rd, o, "%s, %s", block, err);
    } else if (strcasecmp(o->key, "Relay") == 0) {
      rc = conf_relay_ref(rd, block, o, "Switch", &r->gateway, &r->relay);
      has_relay = rc == 0;
    } else {
      rc = switch_option(rd, block, o, r, &cooler, &heater);
    }
    if (rc != 0)
      goto out;
  }
  if (!has_relay) {
    report(rd, ci, "%s: option \"Relay\" is required", block);
    goto out;
  }
  if (cooler && heater) {
    report(rd, ci, "%s: OnAbove/OffBelow (a cooler) and OnBelow/OffAbove (a "
                   "heater) do not mix",
           block);
    goto out;
  }
  r->heater = heater;
  if (bm_rule_check(r, err, sizeof(err)) != 0) {
    report(rd, ci, "%s: %s", block, err);
    goto out;
  }
  if (!(grown = realloc(pc->rules, (pc->rules_n + 1) * sizeof(*grown)))) {
    out_of_memory(rd);
    goto out;
  }
  pc->rules = grown;
  pc->rules[pc->rules_n++] = r;
  r = NULL;
  status = 0;
out:
  if (r && inited)
    bm_rule_release(r);
  free(r);
  return status;
}

/* Interlock "gateway" "relay" "relay" ...: never on together. */
static int conf_interlock(const struct reader *rd,
                          const struct bm_conf_item *ci)
{
  static const char *const block = "<Plugin bimetri>";
  struct bm_plugconf *pc = rd->pc;
  struct bm_plugconf_interlock il, *grown;
  const struct bm_plugconf_gateway *g;
  int gi;

  memset(&il, 0, sizeof(il));
  if (ci->values_num < 3 || ci->values_num > BM_PLUGCONF_MAX_INTERLOCK + 1)
    return conf_err(rd, block, ci, "expects a Gateway and 2 to %d of its "
                                   "Relays",
                    BM_PLUGCONF_MAX_INTERLOCK);
  for (size_t i = 0; i < ci->values_num; i++)
    if (ci->values[i].type != BM_CONF_STRING)
      return conf_err(rd, block, ci, "expects strings: a Gateway and its "
                                     "Relays");
  if ((gi = bm_plugconf_find_gateway(pc, ci->values[0].string)) < 0)
    return conf_err(rd, block, ci, "no Gateway \"%s\" is defined (before this "
                                   "option)",
                    ci->values[0].string);
  g = &pc->gateways[gi];
  for (size_t i = 1; i < ci->values_num; i++) {
    const char *name = ci->values[i].string;
    int r = bm_plugconf_find_relay(g, name);

    if (r < 0)
      return conf_err(rd, block, ci, "Gateway \"%s\" has no Relay \"%s\"",
                      ci->values[0].string, name);
    for (int k = 0; k < il.n; k++)
      if (il.relays[k] == r)
        return conf_err(rd, block, ci, "Relay \"%s\" is named twice", name);
    il.relays[il.n++] = r;
  }
  il.gateway = gi;
  grown = realloc(pc->interlocks, (pc->interlocks_n + 1) * sizeof(*grown));
  if (!grown)
    return out_of_memory(rd);
  pc->interlocks = grown;
  pc->interlocks[pc->interlocks_n++] = il;
  return 0;
}

/* Chains of Triggers through the plugin's own notifications must not loop:
 * the configuration is refused when they do. */
static int check_trigger_loops(const struct reader *rd,
                               const struct bm_conf_item *block)
{
  const struct bm_plugconf *pc = rd->pc;
  struct bm_relay_ref *refs;
  size_t n = 0, cap = 0;
  char err[1024];
  int status = 0;

  for (size_t g = 0; g < pc->gateways_n; g++)
    cap += pc->gateways[g].relays_n;
  if (!(refs = calloc(cap + 1, sizeof(*refs))))
    return out_of_memory(rd);
  for (size_t g = 0; g < pc->gateways_n; g++) {
    for (size_t r = 0; r < pc->gateways[g].relays_n; r++) {
      refs[n].gateway = pc->gateways[g].c.name;
      refs[n].relay = pc->gateways[g].relays[r].name;
      refs[n].gateway_index = (int)g;
      refs[n++].relay_index = (int)r;
    }
  }
  if (bm_triggers_check_cycles(pc->triggers, pc->triggers_n, refs, n, err,
                               sizeof(err)) != 0) {
    report(rd, block, "<Plugin bimetri>: %s", err);
    status = -1;
  }
  free(refs);
  return status;
}

/* ---- the block --------------------------------------------------------- */

int bm_plugconf_add(struct bm_plugconf *pc, const struct bm_conf_item *block,
                    const struct bm_plugconf_opts *o)
{
  struct reader rd = {pc, o};

  for (size_t i = 0; i < block->children_num; i++) {
    const struct bm_conf_item *c = &block->children[i];
    int rc;

    if (strcasecmp(c->key, "Gateway") == 0)
      rc = conf_gateway(&rd, c);
    else if (strcasecmp(c->key, "Trigger") == 0)
      rc = conf_trigger(&rd, c);
    else if (strcasecmp(c->key, "Interlock") == 0)
      rc = conf_interlock(&rd, c);
    else if (strcasecmp(c->key, "Switch") == 0)
      rc = conf_switch(&rd, c);
    else
      rc = conf_err(&rd, "<Plugin bimetri>", c, "unknown option");
    if (rc != 0)
      return -1;
  }
  if (check_trigger_loops(&rd, block) != 0)
    return -1;
  if (pc->gateways_n == 0) {
    report(&rd, block, "<Plugin bimetri>: at least one <Gateway> block is "
                       "required");
    return -1;
  }
  return 0;
}

void bm_plugconf_release(struct bm_plugconf *pc)
{
  for (size_t i = 0; i < pc->gateways_n; i++)
    gateway_release(&pc->gateways[i]);
  free(pc->gateways);
  free(pc->interlocks);
  for (size_t i = 0; i < pc->triggers_n; i++)
    bm_trigger_release(&pc->triggers[i]);
  free(pc->triggers);
  for (size_t i = 0; i < pc->rules_n; i++) {
    bm_rule_release(pc->rules[i]);
    free(pc->rules[i]);
  }
  free(pc->rules);
  memset(pc, 0, sizeof(*pc));
}
