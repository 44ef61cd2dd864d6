/*
 * plugconf_test.c - unit tests of the <Plugin bimetri> reader
 * (src/plugconf.h): the defaults, what a good block yields (gateways,
 * relays, ManualControl resolved, Triggers, Switches, Interlocks, journal
 * paths), blocks added one after the other, and every error with the exact
 * message the plugin logs and the item it is about.
 */
#include "plugconf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "tap.h"

static char last_error[1024];
static int errors;
static int error_line; /* of the item reported, 0 for none */

static void on_error(void *ctx, const struct bm_conf_item *where,
                     const char *message)
{
  (void)ctx;
  errors++;
  error_line = where ? where->line : 0;
  snprintf(last_error, sizeof(last_error), "%s", message);
}

static void quiet(int level, const char *line, void *ctx)
{
  (void)level;
  (void)line;
  (void)ctx;
}

/* Parses text (the inside of a <Plugin bimetri> block) and adds it to pc
 * with base_dir "/base".  Returns bm_plugconf_add's result (-2: a syntax
 * error in the test itself). */
static int add_opts(struct bm_plugconf *pc, const char *inner,
                    bool read_secrets, bool join)
{
  static char text[65536];
  char err[256];
  struct bm_plugconf_opts o = {0};
  bm_conf_t *tree;
  int rc;

  snprintf(text, sizeof(text), "<Plugin bimetri>\n%s</Plugin>\n", inner);
  if (!(tree = bm_conf_parse(text, strlen(text), "t.conf", err, sizeof(err)))) {
    diag("syntax: %s", err);
    return -2;
  }
  o.base_dir = "/base";
  o.read_secrets = read_secrets;
  o.join_base_dir = join;
  o.error = on_error;
  last_error[0] = '\0';
  errors = 0;
  error_line = -1;
  rc = bm_plugconf_add(pc, &bm_conf_root(tree)->children[0], &o);
  bm_conf_free(tree);
  return rc;
}

static int add(struct bm_plugconf *pc, const char *inner)
{
  return add_opts(pc, inner, false, false);
}

#define GW_HEAD(name)                                                          \
  "<Gateway \"" name "\">\n"                                                   \
  "  AppName \"app\"\n"                                                        \
  "  InstanceId \"i1\"\n"                                                      \
  "  UserId 12\n"                                                              \
  "  OrganizationId 34\n"
#define GW_TOKEN "  TokenFile \"/run/token\"\n"
#define RELAY(name, res, out)                                                  \
  "  <Relay \"" name "\">\n    ResourceId " #res "\n    Output " #out "\n"      \
  "  </Relay>\n"
#define GW(name) GW_HEAD(name) GW_TOKEN RELAY("pump", 101, 4) RELAY("fan", 102, 1)
#define GW_END "</Gateway>\n"

/* One block that must be refused with exactly `want`. */
static void refused(const char *what, const char *inner, const char *want)
{
  struct bm_plugconf pc = BM_PLUGCONF_INIT;
  int rc = add(&pc, inner);

  if (!want) { /* the message is another module's: any one will do */
    ok(rc == -1 && errors == 1 && last_error[0], "refused: %s", what);
    diag("%s", last_error);
  } else if (!ok(rc == -1 && errors == 1 && strcmp(last_error, want) == 0,
                 "refused: %s", what))
    diag("rc %d, %d errors, got \"%s\"\n#   expected \"%s\"", rc, errors,
         last_error, want);
  bm_plugconf_release(&pc);
}

/* A gateway with one extra option line (before the relays). */
static void refused_opt(const char *what, const char *line, const char *want)
{
  char inner[4096];

  snprintf(inner, sizeof(inner),
           GW_HEAD("gw") GW_TOKEN "%s\n" RELAY("pump", 101, 4) GW_END, line);
  refused(what, inner, want);
}

static void test_defaults(void)
{
  struct bm_plugconf pc = BM_PLUGCONF_INIT;
  const struct bm_plugconf_gateway *g;
  const struct bm_gateway_conf *c;

  is_int(add(&pc, GW("gw") GW_END), 0, "a minimal Gateway is accepted");
  is_int(errors, 0, "without an error");
  if (pc.gateways_n != 1) {
    ok(0, "one Gateway");
    bm_plugconf_release(&pc);
    return;
  }
  g = &pc.gateways[0];
  c = &g->c;
  is_str(c->name, "gw", "its name");
  is_str(c->host, "localhost", "Host defaults to localhost");
  is_int(c->port, 1883, "Port defaults to 1883");
  is_int(c->keepalive, 30, "KeepAlive 30");
  is_str(c->brand, "Bimetri", "Brand Bimetri");
  is_str(c->command_topic, "resource/commands", "CommandTopic");
  is_int(c->qos, 2, "QoS 2");
  is_int(bm_gateway_sub_qos(c), 1, "SubscribeQoS 1");
  ok(c->policy.ack_timeout == 10 && c->policy.command_timeout == 30,
     "AckTimeout 10, CommandTimeout 30");
  is_int(c->policy.retries, 2, "Retries 2");
  ok(c->policy.retry_backoff == 1, "RetryBackoff 1");
  is_int(c->policy.max_per_minute, 10, "MaxCommandsPerMinute 10");
  is_int(c->protocol_version, 4, "ProtocolVersion 4");
  is_int(c->session_expiry, 86400, "SessionExpiry 86400");
  ok(c->journal_sync == BM_JOURNAL_SYNC_ALWAYS, "JournalSync always");
  is_int(c->journal_limit, 1024 * 1024, "JournalSizeLimit 1 MiB");
  ok(c->token_warn == 3600 && c->token_leeway == 60,
     "TokenWarn 3600, TokenLeeway 60");
  ok(c->token.command_timeout == 10 && c->token.lifetime == 3600 &&
         c->token.renew_before == 300,
     "token command timeout, lifetime, renewal");
  ok(c->tls_verify_hostname && c->tls_verify_peer && !c->tls_system_cas,
     "TLS verification on, no system CAs");
  is_int(c->token.kind, BM_TOKEN_FILE, "TokenFile");
  is_str(c->token.file, "/run/token", "its path");
  is_int(c->user_id, 12, "UserId");
  is_int(c->organization_id, 34, "OrganizationId");
  is_str(c->app_name, "app", "AppName");
  is_str(c->instance_id, "i1", "InstanceId");
  is_str(c->journal_file, "/base/bimetri-gw.journal",
         "the journal is under BaseDir");
  is_int(g->relays_n, 2, "two relays");
  is_str(g->relays[1].name, "fan", "in order");
  is_int(g->relays[1].resource_id, 102, "ResourceId");
  is_int(g->relays[1].output, 1, "Output");
  ok(!g->relays[0].manual_control && !g->has_port && !g->has_pass,
     "no ManualControl, Port or Password");
  ok(g->state_interval == 0, "StateInterval: the plugin's interval");
  bm_plugconf_release(&pc);
  ok(pc.gateways == NULL && pc.gateways_n == 0, "release zeroes");

  /* bm_plugconf_gateway_defaults is what a Gateway starts from. */
  {
    struct bm_gateway_conf d;
    bm_plugconf_gateway_defaults(&d, "cli");
    ok(strcmp(d.name, "cli") == 0 && d.port == 1883 && d.qos == 2 &&
           !d.journal_file[0],
       "bm_plugconf_gateway_defaults");
  }
}

static void test_full(void)
{
  struct bm_plugconf pc = BM_PLUGCONF_INIT;
  const struct bm_gateway_conf *c;
  int rc;

  rc = add(&pc, GW_HEAD("a") GW_TOKEN
           "  Host \"broker\"\n  CACert \"/ca.pem\"\n  ManualControl true\n"
           "  User \"u\"\n  PasswordFile \"/nonexistent/pw\"\n"
           "  CertificateFile \"/c.pem\"\n  CertificateKeyFile \"/k.pem\"\n"
           "  CertificateKeyPasswordFile \"/nonexistent/kpw\"\n"
           "  TLSProtocol \"tlsv1.3\"\n  JournalFile \"rel/a.journal\"\n"
           "  JournalSync \"None\"\n  JournalSizeLimit 4096\n"
           "  ProtocolVersion 5\n  SessionExpiry 60\n"
           "  MaxCommandsPerMinute 600\n  Retries 0\n  RetryBackoff 0.5\n"
           "  QoS 1\n  KeepAlive 5\n  ClientId \"me\"\n  Brand \"B\"\n"
           "  CommandTopic \"x/y\"\n  TokenWarn 0\n  TokenLeeway 0\n"
           "  TokenCommandTimeout 0.1\n  TLSVerifyPeer false\n"
           "  TLSVerifyHostname false\n  CipherSuite \"HIGH\"\n"
           "  AckTimeout 0.5\n  CommandTimeout 86400\n  StateInterval 60\n"
           RELAY("pump", 101, 4)
           "  <Relay \"fan\">\n    ResourceId 9007199254740991\n    Output 65535\n"
           "    ManualControl false\n  </Relay>\n"
           RELAY("valve", 101, 5) GW_END
           GW("b") "  JournalFile \"/tmp/b.journal\"\n  JournalSync Full\n"
           GW_END
           "Interlock \"a\" \"pump\" \"valve\"\n"
           "<Trigger \"t1\">\n  Relay \"b\" \"fan\"\n  Type \"temperature\"\n"
           "  OnFailure 1\n  OnOkay 0\n</Trigger>\n"
           "<Switch \"s1\">\n  Relay \"a\" \"valve\"\n  Plugin \"/^cpu/\"\n"
           "  DataSource \"value\"\n  OnBelow 5\n  OffAbove 10\n"
           "  MinOnTime 60\n  MaxSwitchesPerHour 4\n  StaleAfter 120\n"
           "  FailSafe 0\n</Switch>\n");
  is_int(rc, 0, "every option is accepted");
  if (rc != 0) {
    diag("%s", last_error);
    bm_plugconf_release(&pc);
    return;
  }
  c = &pc.gateways[0].c;
  is_int(c->port, 8883, "Port 8883 with a CA");
  is_str(c->host, "broker", "Host");
  is_str(pc.gateways[0].password_file, "/nonexistent/pw",
         "PasswordFile kept, not read");
  ok(pc.gateways[0].has_pass && !c->password[0], "has_pass, no password");
  is_str(pc.gateways[0].key_password_file, "/nonexistent/kpw",
         "CertificateKeyPasswordFile kept");
  is_str(c->journal_file, "rel/a.journal", "a relative JournalFile as given");
  ok(c->journal_sync == BM_JOURNAL_SYNC_NONE && c->journal_limit == 4096,
     "JournalSync none, limit");
  ok(pc.gateways_n == 2 && pc.gateways[1].c.journal_sync == BM_JOURNAL_SYNC_FULL,
     "JournalSync full");
  ok(c->protocol_version == 5 && c->session_expiry == 60,
     "ProtocolVersion, SessionExpiry");
  ok(pc.gateways[0].state_interval == 60, "StateInterval 60");
  ok(c->policy.max_per_minute == 600 && c->policy.retries == 0 &&
         c->policy.retry_backoff == 0.5 && c->qos == 1 && c->keepalive == 5,
     "policy, QoS, KeepAlive");
  is_int(bm_gateway_sub_qos(c), 1, "SubscribeQoS 1 under QoS 1");
  ok(!c->tls_verify_peer && !c->tls_verify_hostname, "TLS verification off");
  ok(pc.gateways[0].relays[0].manual_control &&
         !pc.gateways[0].relays[1].manual_control &&
         pc.gateways[0].relays[2].manual_control,
     "ManualControl: the Gateway's unless the Relay says");
  is_int(pc.gateways[0].relays[1].resource_id, 9007199254740991LL,
         "the largest ResourceId");
  is_int(pc.interlocks_n, 1, "one Interlock");
  ok(pc.interlocks[0].gateway == 0 && pc.interlocks[0].n == 2 &&
         pc.interlocks[0].relays[0] == 0 && pc.interlocks[0].relays[1] == 2,
     "its relays by index");
  is_int(pc.triggers_n, 1, "one Trigger");
  ok(pc.triggers[0].gateway == 1 && pc.triggers[0].relay == 1 &&
         pc.triggers[0].on[BM_SEV_FAILURE] == 1 &&
         pc.triggers[0].on[BM_SEV_OKAY] == 0 &&
         pc.triggers[0].on[BM_SEV_WARNING] == -1,
     "the Trigger's relay and severities");
  is_int(pc.rules_n, 1, "one Switch");
  ok(pc.rules[0]->gateway == 0 && pc.rules[0]->relay == 2 &&
         pc.rules[0]->heater && pc.rules[0]->on_at == 5 &&
         pc.rules[0]->off_at == 10 && pc.rules[0]->limits.min_on == 60 &&
         pc.rules[0]->limits.max_per_hour == 4 &&
         pc.rules[0]->stale_after == 120 && pc.rules[0]->fail_safe == 0 &&
         strcmp(pc.rules[0]->data_source, "value") == 0,
     "the Switch");

  /* A second block sees the first's Gateways. */
  rc = add(&pc, "<Trigger \"t2\">\n  Relay \"a\" \"pump\"\n  OnWarning 1\n"
                "</Trigger>\nInterlock \"b\" \"pump\" \"fan\"\n");
  is_int(rc, 0, "a second block names the first's Gateways");
  ok(pc.triggers_n == 2 && pc.interlocks_n == 2, "and adds to them");
  is_int(add(&pc, GW("a") GW_END), -1, "a Gateway of an earlier block");
  is_str(last_error, "<Gateway \"a\">: a Gateway of this name already exists",
         "is a duplicate");
  is_int(add(&pc, "<Trigger \"t1\">\n  Relay \"a\" \"pump\"\n  OnOkay 1\n"
                  "</Trigger>\n"),
         -1, "so is a Trigger");
  is_str(last_error, "<Trigger \"t1\">: a Trigger of this name already exists",
         "with its message");
  is_int(add(&pc, "<Switch \"s1\">\n  Relay \"a\" \"pump\"\n  OnAbove 5\n"
                  "  OffBelow 1\n</Switch>\n"),
         -1, "and a Switch");
  is_str(last_error, "<Switch \"s1\">: a Switch of this name already exists",
         "with its message");
  is_int(add(&pc, GW_HEAD("c") GW_TOKEN RELAY("pump", 1, 1)
                  "  JournalFile \"/tmp/../tmp/b.journal\"\n" GW_END),
         -1, "a journal of another Gateway, spelled otherwise");
  is_str(last_error, "<Gateway \"c\">: option \"JournalFile\": "
                     "\"/tmp/../tmp/b.journal\" is the journal of another "
                     "Gateway already",
         "is refused");
  bm_plugconf_release(&pc);
}

/* The subscription's QoS after a Gateway block with `lines`. */
static int sub_qos_of(const char *lines)
{
  struct bm_plugconf pc = BM_PLUGCONF_INIT;
  char inner[4096];
  int qos = -2;

  snprintf(inner, sizeof(inner),
           GW_HEAD("gw") GW_TOKEN "%s\n" RELAY("pump", 101, 4) GW_END, lines);
  if (add(&pc, inner) == 0 && pc.gateways_n == 1)
    qos = bm_gateway_sub_qos(&pc.gateways[0].c);
  else
    diag("refused: %s", last_error);
  bm_plugconf_release(&pc);
  return qos;
}

static void test_subscribe_qos(void)
{
  is_int(sub_qos_of(""), 1, "SubscribeQoS: 1 by default");
  is_int(sub_qos_of("  QoS 0"), 0, "  0 under QoS 0");
  is_int(sub_qos_of("  QoS 2"), 1, "  1 under QoS 2");
  is_int(sub_qos_of("  SubscribeQoS 2"), 2, "  2 when asked");
  is_int(sub_qos_of("  SubscribeQoS 0\n  QoS 2"), 0, "  0 when asked");
  is_int(sub_qos_of("  QoS 0\n  SubscribeQoS 1"), 1,
         "  1 under QoS 0 when asked");
}

static void test_journal_and_secrets(void)
{
  struct bm_plugconf pc = BM_PLUGCONF_INIT;
  char dir[] = "/tmp/plugconf_test.XXXXXX", path[256], inner[2048];
  FILE *f;

  is_int(add_opts(&pc, GW("gw") "  JournalFile \"j/x.journal\"\n" GW_END,
                  false, true),
         0, "join_base_dir");
  if (pc.gateways_n == 1)
    is_str(pc.gateways[0].c.journal_file, "/base/j/x.journal",
           "puts a relative JournalFile under BaseDir");
  bm_plugconf_release(&pc);

  if (!mkdtemp(dir)) {
    ok(0, "mkdtemp");
    return;
  }
  snprintf(path, sizeof(path), "%s/pw", dir);
  f = fopen(path, "w");
  fputs("s3cret\n", f);
  fclose(f);
  chmod(path, 0600);
  snprintf(inner, sizeof(inner),
           GW_HEAD("gw") GW_TOKEN "  User \"u\"\n  PasswordFile \"%s\"\n"
           RELAY("pump", 1, 1) GW_END, path);
  is_int(add_opts(&pc, inner, true, false), 0, "read_secrets reads");
  if (pc.gateways_n == 1)
    is_str(pc.gateways[0].c.password, "s3cret", "the password, no newline");
  bm_plugconf_release(&pc);

  f = fopen(path, "w");
  fputs("\n", f);
  fclose(f);
  is_int(add_opts(&pc, inner, true, false), -1, "an empty password file");
  snprintf(inner, sizeof(inner), "<Gateway \"gw\">, option \"PasswordFile\": "
                                 "\"%s\" is empty", path);
  is_str(last_error, inner, "is refused");
  bm_plugconf_release(&pc);
  unlink(path);

  snprintf(inner, sizeof(inner),
           GW_HEAD("gw") GW_TOKEN "  User \"u\"\n  PasswordFile \"%s\"\n"
           RELAY("pump", 1, 1) GW_END, path);
  is_int(add_opts(&pc, inner, true, false), -1, "a missing password file");
  snprintf(inner, sizeof(inner), "<Gateway \"gw\">, option \"PasswordFile\": "
                                 "cannot open \"%s\": No such file or "
                                 "directory", path);
  is_str(last_error, inner, "is refused");
  bm_plugconf_release(&pc);
  rmdir(dir);
}

static void test_gateway_errors(void)
{
  refused("no Gateway", "", "<Plugin bimetri>: at least one <Gateway> block "
                            "is required");
  refused("an unknown top-level option", "Gatway \"x\"\n",
          "<Plugin bimetri>, option \"Gatway\": unknown option");
  refused("a Gateway without a name", "<Gateway>\n</Gateway>\n",
          "<Gateway> block expects exactly one string argument (its name)");
  refused("an invalid Gateway name", "<Gateway \"-a\">\n</Gateway>\n",
          "<Gateway \"-a\">: invalid name: use 1 to 63 of letters, digits, "
          "'_', '.', '-', not starting with '-'");
  refused("a duplicate Gateway", GW("g") GW_END GW("g") GW_END,
          "<Gateway \"g\">: a Gateway of this name already exists");
  refused_opt("an unknown option", "  Colour \"red\"",
              "<Gateway \"gw\">, option \"Colour\": unknown option");
  refused("a missing AppName",
          "<Gateway \"gw\">\n  InstanceId \"i\"\n" GW_TOKEN
          RELAY("pump", 1, 1) GW_END,
          "<Gateway \"gw\">: option \"AppName\" is required");
  refused("a missing InstanceId",
          "<Gateway \"gw\">\n  AppName \"a\"\n" GW_TOKEN
          RELAY("pump", 1, 1) GW_END,
          "<Gateway \"gw\">: option \"InstanceId\" is required");
  refused("a missing UserId",
          "<Gateway \"gw\">\n  AppName \"a\"\n  InstanceId \"i\"\n" GW_TOKEN
          RELAY("pump", 1, 1) GW_END,
          "<Gateway \"gw\">: option \"UserId\" is required");
  refused("a missing OrganizationId",
          "<Gateway \"gw\">\n  AppName \"a\"\n  InstanceId \"i\"\n"
          "  UserId 1\n" GW_TOKEN RELAY("pump", 1, 1) GW_END,
          "<Gateway \"gw\">: option \"OrganizationId\" is required");
  refused("a missing token", GW_HEAD("gw") RELAY("pump", 1, 1) GW_END,
          "<Gateway \"gw\">: option \"TokenFile\" is required");
  refused("no Relay", GW_HEAD("gw") GW_TOKEN GW_END,
          "<Gateway \"gw\">: at least one <Relay> block is required");
  refused_opt("two token sources", "  TokenCommand \"cat /x\"",
              "<Gateway \"gw\">: give one of \"TokenFile\", \"TokenCommand\" "
              "and <Token>, not several");
  refused_opt("TLS options without a CA",
              "  CertificateFile \"/x\"\n  CertificateKeyFile \"/y\"",
              "<Gateway \"gw\">: TLS options need \"CACert\", \"CAPath\" or "
              "\"TLSSystemCAs true\"");
  refused_opt("a key password file without a CA",
              "  CertificateKeyPasswordFile \"/x\"",
              "<Gateway \"gw\">: TLS options need \"CACert\", \"CAPath\" or "
              "\"TLSSystemCAs true\"");
  refused_opt("a certificate without its key",
              "  TLSSystemCAs true\n  CertificateFile \"/x\"",
              "<Gateway \"gw\">: \"CertificateFile\" and "
              "\"CertificateKeyFile\" go together");
  refused_opt("a Password without User", "  Password \"p\"",
              "<Gateway \"gw\">: option \"Password\" needs \"User\"");
  refused_opt("a string for a number", "  UserId \"1\"",
              "<Gateway \"gw\">, option \"UserId\": expects exactly one "
              "number argument");
  refused_opt("a number for a string", "  Host 1",
              "<Gateway \"gw\">, option \"Host\": expects exactly one string "
              "argument");
  refused_opt("two values", "  Host \"a\" \"b\"",
              "<Gateway \"gw\">, option \"Host\": expects exactly one string "
              "argument");
  refused_opt("a string for a boolean", "  ManualControl \"yes\"",
              "<Gateway \"gw\">, option \"ManualControl\": expects true or "
              "false");
  refused_opt("a Port out of range", "  Port 70000",
              "<Gateway \"gw\">, option \"Port\": expects an integer from 1 "
              "to 65535, got 70000");
  refused_opt("a SubscribeQoS out of range", "  SubscribeQoS -1",
              "<Gateway \"gw\">, option \"SubscribeQoS\": expects an integer "
              "from 0 to 2, got -1");
  refused_opt("a QoS out of range", "  QoS 3",
              "<Gateway \"gw\">, option \"QoS\": expects an integer from 0 to "
              "2, got 3");
  refused_opt("a fractional integer", "  KeepAlive 10.5",
              "<Gateway \"gw\">, option \"KeepAlive\": expects an integer "
              "from 5 to 65535, got 10.5");
  refused_opt("an AckTimeout too short", "  AckTimeout 0.01",
              "<Gateway \"gw\">, option \"AckTimeout\": expects a number from "
              "0.1 to 86400, got 0.01");
  refused_opt("a ProtocolVersion 6", "  ProtocolVersion 6",
              "<Gateway \"gw\">, option \"ProtocolVersion\": expects an "
              "integer from 3 to 5, got 6");
  refused_opt("a SessionExpiry 0", "  SessionExpiry 0",
              "<Gateway \"gw\">, option \"SessionExpiry\": expects an integer "
              "from 1 to 2.14748e+09, got 0");
  refused_opt("MaxCommandsPerMinute 0", "  MaxCommandsPerMinute 0",
              "<Gateway \"gw\">, option \"MaxCommandsPerMinute\": expects an "
              "integer from 1 to 600, got 0");
  refused_opt("a StateInterval 0", "  StateInterval 0",
              "<Gateway \"gw\">, option \"StateInterval\": expects a "
              "number from 0.001 to 86400, got 0");
  refused_opt("a StateInterval over a day", "  StateInterval 86401",
              "<Gateway \"gw\">, option \"StateInterval\": expects a "
              "number from 0.001 to 86400, got 86401");
  refused_opt("a JournalSizeLimit too small", "  JournalSizeLimit 100",
              "<Gateway \"gw\">, option \"JournalSizeLimit\": expects an "
              "integer from 4096 to 1.07374e+09, got 100");
  refused_opt("a NaN-free range check", "  Retries 101",
              "<Gateway \"gw\">, option \"Retries\": expects an integer from "
              "0 to 100, got 101");
  refused_opt("an AppName with a slash", "  AppName \"a/b\"",
              "<Gateway \"gw\">, option \"AppName\": \"a/b\" must be "
              "non-empty without '/', '+', '#', '.' or white space");
  refused_opt("an InstanceId with a space", "  InstanceId \"1 2\"",
              "<Gateway \"gw\">, option \"InstanceId\": \"1 2\" must be "
              "non-empty without '/', '+', '#', '.' or white space");
  refused_opt("an empty Brand", "  Brand \"\"",
              "<Gateway \"gw\">, option \"Brand\": must not be empty");
  refused_opt("an empty ClientId", "  ClientId \"\"",
              "<Gateway \"gw\">, option \"ClientId\": must not be empty");
  refused_opt("an empty JournalFile", "  JournalFile \"\"",
              "<Gateway \"gw\">, option \"JournalFile\": must not be empty");
  refused_opt("a CommandTopic with a wildcard", "  CommandTopic \"a/+\"",
              "<Gateway \"gw\">, option \"CommandTopic\": must be a topic "
              "name without wildcards");
  refused_opt("a TLSProtocol tlsv1", "  TLSProtocol \"tlsv1\"",
              "<Gateway \"gw\">, option \"TLSProtocol\": expects \"tlsv1.2\" "
              "or \"tlsv1.3\", got \"tlsv1\"");
  refused_opt("a JournalSync sometimes", "  JournalSync \"sometimes\"",
              "<Gateway \"gw\">, option \"JournalSync\": expects \"always\", "
              "\"full\" or \"none\", got \"sometimes\"");
  {
    char line[400];
    snprintf(line, sizeof(line), "  Host \"%0300d\"", 0);
    refused_opt("a Host too long", line,
                "<Gateway \"gw\">, option \"Host\": longer than 255 bytes");
  }
  {
    struct bm_plugconf pc = BM_PLUGCONF_INIT;
    add(&pc, GW_HEAD("gw") GW_TOKEN "  Port 0\n" RELAY("r", 1, 1) GW_END);
    is_int(error_line, 8, "the error names the option's item (its line)");
    add(&pc, GW_HEAD("gw") GW_TOKEN GW_END);
    is_int(error_line, 2, "a Gateway's error names the block's");
    bm_plugconf_release(&pc);
  }
  refused("journals shared",
          GW("a") "  JournalFile \"/j/x\"\n" GW_END GW("b")
          "  JournalFile \"/j/x\"\n" GW_END,
          "<Gateway \"b\">: option \"JournalFile\": \"/j/x\" is the journal "
          "of another Gateway already");
  refused("default journals shared through JournalFile",
          GW("a") GW_END GW("b") "  JournalFile \"/base/bimetri-a.journal\"\n"
          GW_END,
          "<Gateway \"b\">: option \"JournalFile\": \"/base/bimetri-a.journal\" "
          "is the journal of another Gateway already");
  {
    static char inner[60000];
    size_t n = 0;
    for (int i = 0; i <= BM_PLUGCONF_MAX_GATEWAYS; i++) {
      char name[16];
      snprintf(name, sizeof(name), "g%d", i);
      n += (size_t)snprintf(inner + n, sizeof(inner) - n,
                            "<Gateway \"%s\">\n  AppName \"a\"\n"
                            "  InstanceId \"i\"\n  UserId 1\n"
                            "  OrganizationId 1\n" GW_TOKEN
                            RELAY("r", 1, 1) GW_END,
                            name);
    }
    refused("65 Gateways", inner, "more than 64 <Gateway> blocks");
  }
}

static void test_relay_and_token_errors(void)
{
  refused("a Relay without a name",
          GW_HEAD("gw") GW_TOKEN "  <Relay>\n  </Relay>\n" GW_END,
          "<Relay> block expects exactly one string argument (its name)");
  refused("an invalid Relay name",
          GW_HEAD("gw") GW_TOKEN RELAY("pump/1", 1, 1) GW_END,
          "<Relay \"pump/1\">: invalid name: use 1 to 63 of letters, digits, "
          "'_', '.', '-', not starting with '-'");
  refused("a duplicate Relay",
          GW_HEAD("gw") GW_TOKEN RELAY("pump", 1, 1) RELAY("pump", 1, 2)
          GW_END,
          "<Gateway \"gw\">: Relay \"pump\" is defined twice");
  refused("two Relays on one output",
          GW_HEAD("gw") GW_TOKEN RELAY("pump", 101, 4) RELAY("fan", 101, 4)
          GW_END,
          "<Gateway \"gw\">: Relays \"pump\" and \"fan\" both address "
          "ResourceId 101 Output 4");
  refused("a Relay without ResourceId",
          GW_HEAD("gw") GW_TOKEN "  <Relay \"fan\">\n    Output 1\n"
          "  </Relay>\n" GW_END,
          "<Gateway \"gw\"> <Relay \"fan\">: option \"ResourceId\" is "
          "required");
  refused("a Relay without Output",
          GW_HEAD("gw") GW_TOKEN "  <Relay \"fan\">\n    ResourceId 1\n"
          "  </Relay>\n" GW_END,
          "<Gateway \"gw\"> <Relay \"fan\">: option \"Output\" is required");
  refused("an Output out of range",
          GW_HEAD("gw") GW_TOKEN RELAY("fan", 1, 65536) GW_END,
          "<Gateway \"gw\"> <Relay \"fan\">, option \"Output\": expects an "
          "integer from 0 to 65535, got 65536");
  refused("an unknown Relay option",
          GW_HEAD("gw") GW_TOKEN "  <Relay \"fan\">\n    Colour 1\n"
          "  </Relay>\n" GW_END,
          "<Gateway \"gw\"> <Relay \"fan\">, option \"Colour\": unknown "
          "option");
  refused("a <Token> with an argument",
          GW_HEAD("gw") "  <Token \"x\">\n  </Token>\n" RELAY("r", 1, 1)
          GW_END,
          "<Gateway \"gw\"> <Token>: the block takes no argument");
  refused("a <Token> with an unknown algorithm",
          GW_HEAD("gw") "  <Token>\n    Algorithm \"HS512\"\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>, option \"Algorithm\": expects HS256, "
          "RS256 or ES256, got \"HS512\"");
  refused("a <Token> without Algorithm",
          GW_HEAD("gw") "  <Token>\n    KeyFile \"/k\"\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>: option \"Algorithm\" is required");
  refused("a <Token> without KeyFile",
          GW_HEAD("gw") "  <Token>\n    Algorithm \"ES256\"\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>: option \"KeyFile\" is required");
  refused("a RenewBefore not shorter than Lifetime",
          GW_HEAD("gw") "  <Token>\n    Algorithm \"ES256\"\n"
          "    KeyFile \"/k\"\n    Lifetime 60\n    RenewBefore 60\n"
          "  </Token>\n" RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>: \"RenewBefore\" must be shorter than "
          "\"Lifetime\"");
  refused("a reserved claim",
          GW_HEAD("gw") "  <Token>\n    Claim \"exp\" \"1\"\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>, option \"Claim\": \"exp\" is set by the "
          "plugin itself");
  refused("a claim twice",
          GW_HEAD("gw") "  <Token>\n    Claim \"x\" \"1\"\n"
          "    Claim \"x\" \"2\"\n  </Token>\n" RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>, option \"Claim\": claim \"x\" given "
          "twice");
  refused("a claim with one value",
          GW_HEAD("gw") "  <Token>\n    Claim \"x\"\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>, option \"Claim\": expects two strings: "
          "the claim's name and value");
  refused("a claim with an empty name",
          GW_HEAD("gw") "  <Token>\n    Claim \"\" \"v\"\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>, option \"Claim\": the name must be 1 to "
          "63 bytes, the value at most 255");
  {
    char inner[4096];
    size_t n = (size_t)snprintf(inner, sizeof(inner), GW_HEAD("gw")
                                "  <Token>\n");
    for (int i = 0; i <= BM_TOKEN_MAX_CLAIMS; i++)
      n += (size_t)snprintf(inner + n, sizeof(inner) - n,
                            "    Claim \"c%d\" \"v\"\n", i);
    snprintf(inner + n, sizeof(inner) - n, "  </Token>\n" RELAY("r", 1, 1)
             GW_END);
    snprintf(last_error, sizeof(last_error),
             "<Gateway \"gw\"> <Token>, option \"Claim\": at most %d claims",
             BM_TOKEN_MAX_CLAIMS);
    {
      char want[256];
      snprintf(want, sizeof(want), "%s", last_error);
      refused("too many claims", inner, want);
    }
  }
  refused("an unknown <Token> option",
          GW_HEAD("gw") "  <Token>\n    Colour 1\n  </Token>\n"
          RELAY("r", 1, 1) GW_END,
          "<Gateway \"gw\"> <Token>, option \"Colour\": unknown option");
}

static void test_trigger_switch_interlock_errors(void)
{
  refused("a Trigger without a name", GW("g") GW_END "<Trigger>\n</Trigger>\n",
          "<Trigger> block expects exactly one string argument (its name)");
  refused("a duplicate Trigger",
          GW("g") GW_END
          "<Trigger \"t\">\n  Relay \"g\" \"pump\"\n  OnOkay 1\n</Trigger>\n"
          "<Trigger \"t\">\n  Relay \"g\" \"pump\"\n  OnOkay 1\n</Trigger>\n",
          "<Trigger \"t\">: a Trigger of this name already exists");
  refused("a Trigger on an unknown relay",
          GW("g") GW_END "<Trigger \"t\">\n  Relay \"g\" \"boiler\"\n"
          "  OnOkay 1\n</Trigger>\n",
          "<Trigger \"t\">, option \"Relay\": Gateway \"g\" has no Relay "
          "\"boiler\"");
  refused("a Trigger on an unknown Gateway",
          GW("g") GW_END "<Trigger \"t\">\n  Relay \"h\" \"pump\"\n"
          "  OnOkay 1\n</Trigger>\n",
          "<Trigger \"t\">, option \"Relay\": no Gateway \"h\" is defined "
          "(before this Trigger)");
  refused("a Trigger Relay with one value",
          GW("g") GW_END "<Trigger \"t\">\n  Relay \"g\"\n</Trigger>\n",
          "<Trigger \"t\">, option \"Relay\": expects two strings: the "
          "Gateway and the Relay");
  refused("a Trigger without Relay",
          GW("g") GW_END "<Trigger \"t\">\n  OnOkay 1\n</Trigger>\n",
          "<Trigger \"t\">: option \"Relay\" is required");
  refused("a Trigger without On*",
          GW("g") GW_END "<Trigger \"t\">\n  Relay \"g\" \"pump\"\n"
          "</Trigger>\n",
          "<Trigger \"t\">: at least one of \"OnFailure\", \"OnWarning\", "
          "\"OnOkay\", \"OnMissing\" is required");
  refused("an OnFailure 2",
          GW("g") GW_END "<Trigger \"t\">\n  OnFailure 2\n</Trigger>\n",
          "<Trigger \"t\">, option \"OnFailure\": expects an integer from 0 "
          "to 1, got 2");
  refused("an OnMissing true",
          GW("g") GW_END "<Trigger \"t\">\n  OnMissing true\n</Trigger>\n",
          "<Trigger \"t\">, option \"OnMissing\": expects exactly one number "
          "argument");
  refused("a pattern that is a number",
          GW("g") GW_END "<Trigger \"t\">\n  Type 1\n</Trigger>\n",
          "<Trigger \"t\">, option \"Type\": expects exactly one string "
          "argument");
  refused("an invalid regex",
          GW("g") GW_END "<Trigger \"t\">\n  Type \"/temp[/\"\n</Trigger>\n",
          NULL);
  refused("an unknown Trigger option",
          GW("g") GW_END "<Trigger \"t\">\n  Colour 1\n</Trigger>\n",
          "<Trigger \"t\">, option \"Colour\": unknown option");
  refused("a loop of Triggers",
          GW("g") GW_END
          "<Trigger \"a\">\n  Relay \"g\" \"fan\"\n  Plugin \"bimetri\"\n"
          "  TypeInstance \"pump\"\n  OnOkay 1\n</Trigger>\n"
          "<Trigger \"b\">\n  Relay \"g\" \"pump\"\n  Plugin \"bimetri\"\n"
          "  TypeInstance \"fan\"\n  OnOkay 0\n</Trigger>\n",
          "<Plugin bimetri>: Triggers form a loop through the plugin's own "
          "notifications: relay \"pump\" -> Trigger \"a\" -> relay \"fan\" "
          "-> Trigger \"b\" -> relay \"pump\"");

  refused("a Switch without a name", GW("g") GW_END "<Switch>\n</Switch>\n",
          "<Switch> block expects exactly one string argument (its name)");
  refused("a Switch on an unknown Gateway",
          GW("g") GW_END "<Switch \"s\">\n  Relay \"h\" \"pump\"\n</Switch>\n",
          "<Switch \"s\">, option \"Relay\": no Gateway \"h\" is defined "
          "(before this Switch)");
  refused("a Switch without Relay",
          GW("g") GW_END "<Switch \"s\">\n  OnAbove 5\n  OffBelow 1\n"
          "</Switch>\n",
          "<Switch \"s\">: option \"Relay\" is required");
  refused("a cooler and a heater",
          GW("g") GW_END "<Switch \"s\">\n  Relay \"g\" \"pump\"\n"
          "  OnAbove 5\n  OffAbove 1\n</Switch>\n",
          "<Switch \"s\">: OnAbove/OffBelow (a cooler) and OnBelow/OffAbove "
          "(a heater) do not mix");
  refused("a Switch without thresholds",
          GW("g") GW_END "<Switch \"s\">\n  Relay \"g\" \"pump\"\n</Switch>\n",
          "<Switch \"s\">: needs OnAbove and OffBelow (a cooler) or OnBelow "
          "and OffAbove (a heater)");
  refused("a MaxSwitchesPerHour 0",
          GW("g") GW_END "<Switch \"s\">\n  MaxSwitchesPerHour 0\n</Switch>\n",
          "<Switch \"s\">, option \"MaxSwitchesPerHour\": expects an integer "
          "from 1 to 64, got 0");
  refused("a StaleAfter 0",
          GW("g") GW_END "<Switch \"s\">\n  StaleAfter 0\n</Switch>\n",
          "<Switch \"s\">, option \"StaleAfter\": expects a number from 1 to "
          "86400, got 0");
  refused("an unknown Switch option",
          GW("g") GW_END "<Switch \"s\">\n  Colour 1\n</Switch>\n",
          "<Switch \"s\">, option \"Colour\": unknown option");

  refused("an Interlock of one relay", GW("g") GW_END "Interlock \"g\" \"pump\"\n",
          "<Plugin bimetri>, option \"Interlock\": expects a Gateway and 2 "
          "to 64 of its Relays");
  refused("an Interlock with a number",
          GW("g") GW_END "Interlock \"g\" \"pump\" 1\n",
          "<Plugin bimetri>, option \"Interlock\": expects strings: a "
          "Gateway and its Relays");
  refused("an Interlock on an unknown Gateway",
          GW("g") GW_END "Interlock \"h\" \"pump\" \"fan\"\n",
          "<Plugin bimetri>, option \"Interlock\": no Gateway \"h\" is "
          "defined (before this option)");
  refused("an Interlock on an unknown Relay",
          GW("g") GW_END "Interlock \"g\" \"pump\" \"boiler\"\n",
          "<Plugin bimetri>, option \"Interlock\": Gateway \"g\" has no "
          "Relay \"boiler\"");
  refused("an Interlock naming a Relay twice",
          GW("g") GW_END "Interlock \"g\" \"pump\" \"pump\"\n",
          "<Plugin bimetri>, option \"Interlock\": Relay \"pump\" is named "
          "twice");
  refused("an Interlock before its Gateway",
          "Interlock \"g\" \"pump\" \"fan\"\n" GW("g") GW_END,
          "<Plugin bimetri>, option \"Interlock\": no Gateway \"g\" is "
          "defined (before this option)");
}

int main(void)
{
  bm_log_set_sink(quiet, NULL);
  test_defaults();
  test_full();
  test_subscribe_qos();
  test_journal_and_secrets();
  test_gateway_errors();
  test_relay_and_token_errors();
  test_trigger_switch_interlock_errors();
  return done_testing();
}
