/*
 * message_test.c - TAP tests for message.c.
 *
 * The protocol's own examples are copied verbatim (SPEC_* below, and the
 * same text in tests/data/, which also seeds the fuzzers).  Invalid inputs
 * are made by editing the compact form of an example one member at a time
 * (json_edit), so each case differs from a valid message in exactly the way
 * its name says.  Every decode runs on an exact-size heap copy of the
 * payload, so AddressSanitizer or valgrind catch a read past len.
 */
#include "message.h"
#include "tap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

/* ---- the protocol's examples, verbatim ---------------------------- */

static const char SPEC_COMMAND[] =
    "{\n"
    "\"messageType\": \"commandMessage\",\n"
    "\"appId\": \"flexyWattApp.1\",\n"
    "\"brand\": \"Bimetri\",\n"
    "\"jwtToken\": \"replace-with-your-token\",\n"
    "\"userId\": 12345,\n"
    "\"organizationId\": 23456,\n"
    "\"command\": \"setExtDO\",\n"
    "\"correlationId\": \"100\",\n"
    "\"parameters\": {\n"
    "\"resourceId\": 101,\n"
    "\"output\": 4,\n"
    "\"status\": 0\n"
    "}\n"
    "}";

static const char SPEC_RESPONSE_SENT[] =
    "{\n"
    "\"messageType\": \"commandResponse\",\n"
    "\"correlationId\": \"100\",\n"
    "\"result\": \"sent\",\n"
    "\"reason\": \"Command Queued\",\n"
    "\"data\": {\n"
    "\"command\": \"setExtDO\",\n"
    "\"resourceId\": 101,\n"
    "\"brand\": \"Bimetri\",\n"
    "\"model\": \"BMM620\",\n"
    "\"networkId\": \"26:AA:E0:23:23:5E\"\n"
    "}\n"
    "}";

static const char SPEC_RESPONSE_NOT_SEND[] =
    "{\n"
    "\"messageType\": \"commandResponse\",\n"
    "\"correlationId\": \"100\",\n"
    "\"result\": \"not_send\",\n"
    "\"reason\": \"The user does not have access rights to the resource!\",\n"
    "\"data\": {\n"
    "\"command\": \"setExtDO\",\n"
    "\"resourceId\": 101,\n"
    "\"userId\": 12345\n"
    "}\n"
    "}";

static const char SPEC_NOTIFICATION[] =
    "{\n"
    "\"messageType\": \"notification\",\n"
    "\"appId\": \"flexyWattApp.1\",\n"
    "\"correlationId\": \"100\",\n"
    "\"command\": \"setExtDO\",\n"
    "\"notificationType\": \"extDOStateChanged\",\n"
    "\"userName\": \"Flexywatt User\",\n"
    "\"userId\": 12345,\n"
    "\"parameters\": {\n"
    "\"resourceId\": 101,\n"
    "\"brand\": \"Bimetri\",\n"
    "\"model\": \"BMM620\",\n"
    "\"networkId\": \"26:AA:E0:23:23:5E\",\n"
    "\"organizationId\": 23456,\n"
    "\"output\": 4,\n"
    "\"status\": 1\n"
    "}\n"
    "}";

/* Compact forms, filled by main() with json_compact(). */
static char base_command[1024];
static char base_sent[1024];
static char base_not_send[1024];
static char base_notification[1024];

/* Scratch space: struct bm_msg is ~9 KiB, payloads up to 64 KiB. */
#define BIG (BM_MSG_MAX_SIZE + 4096)
static struct bm_msg msg;
static char json[BIG];
static char json2[BIG];
static char err[256];

/* ---- helpers ------------------------------------------------------ */

/* Decodes len bytes of p from an exact-size heap copy. */
static int decode_n(const char *p, size_t len, struct bm_msg *out)
{
  char *copy = malloc(len ? len : 1);
  int rc;

  if (copy == NULL) {
    printf("Bail out! out of memory\n");
    exit(1);
  }
  memcpy(copy, p, len);
  strcpy(err, "(unset)");
  rc = bm_msg_decode(copy, len, out, err, sizeof(err));
  free(copy);
  return rc;
}

static int decode(const char *p, struct bm_msg *out)
{
  return decode_n(p, strlen(p), out);
}

/* Removes the whitespace outside strings: the spec's text, compacted. */
static void json_compact(const char *src, char *dst)
{
  bool in_string = false;

  for (; *src; src++) {
    if (in_string) {
      if (*src == '\\' && src[1]) {
        *dst++ = *src++;
      } else if (*src == '"') {
        in_string = false;
      }
    } else if (*src == '"') {
      in_string = true;
    } else if (*src == ' ' || *src == '\n' || *src == '\t' || *src == '\r') {
      continue;
    }
    *dst++ = *src;
  }
  *dst = '\0';
}

/* The end of the JSON value that starts at p. */
static const char *skip_value(const char *p)
{
  if (*p == '"') {
    for (p++; *p && *p != '"'; p++)
      if (*p == '\\' && p[1])
        p++;
    return *p ? p + 1 : p;
  }
  if (*p == '{' || *p == '[') {
    int depth = 0;
    for (; *p; p++) {
      if (*p == '"') {
        p = skip_value(p) - 1;
      } else if (*p == '{' || *p == '[') {
        depth++;
      } else if ((*p == '}' || *p == ']') && --depth == 0) {
        return p + 1;
      }
    }
    return p;
  }
  while (*p && *p != ',' && *p != '}' && *p != ']')
    p++;
  return p;
}

/* Copies compact JSON src to dst with the first member named key removed
 * (value NULL) or its value replaced by the text `value`. */
static void json_edit(const char *src, const char *key, const char *value,
                      char *dst)
{
  char needle[128];
  const char *start, *vstart, *end;

  snprintf(needle, sizeof(needle), "\"%s\":", key);
  start = strstr(src, needle);
  if (start == NULL) {
    printf("Bail out! test bug: no key %s in %s\n", key, src);
    exit(1);
  }
  vstart = start + strlen(needle);
  end = skip_value(vstart);
  if (value != NULL) {
    size_t n = (size_t)(vstart - src);
    memmove(dst, src, n);
    strcpy(dst + n, value);
    strcat(dst, end);
    return;
  }
  if (start > src && start[-1] == ',')
    start--;
  else if (*end == ',')
    end++;
  memmove(dst, src, (size_t)(start - src));
  strcpy(dst + (start - src), end);
}

/* Expects src with key edited to fail with exactly `want`. */
static void expect_edit_error(const char *src, const char *key,
                              const char *value, const char *want)
{
  json_edit(src, key, value, json);
  int rc = decode(json, &msg);
  is_int(rc, -1, "%s=%s rejected", key, value ? value : "(removed)");
  is_str(err, want, "  error for %s=%s", key, value ? value : "(removed)");
}

/* Expects src with key edited, a bad spare field (message.h), to decode
 * without it, err naming it as `want`. */
static void expect_edit_spare(const char *src, const char *key,
                              const char *value, const char *want)
{
  json_edit(src, key, value, json);
  int rc = decode(json, &msg);
  is_int(rc, 0, "%s=%s taken without it", key, value ? value : "(removed)");
  is_str(err, want, "  note for %s=%s", key, value ? value : "(removed)");
}

/* Expects src with key edited to decode, err empty. */
static void expect_edit_ok(const char *src, const char *key,
                           const char *value)
{
  json_edit(src, key, value, json);
  int rc = decode(json, &msg);
  if (!ok(rc == 0 && err[0] == '\0', "%s=%s accepted", key,
          value ? value : "(removed)"))
    diag("rc %d, err \"%s\"", rc, err);
}

static void expect_error(const char *payload, const char *want,
                         const char *what)
{
  int rc = decode(payload, &msg);
  is_int(rc, -1, "%s rejected", what);
  is_str(err, want, "  error for %s", what);
}

static void expect_error_prefix(const char *payload, size_t len,
                                const char *want, const char *what)
{
  int rc = decode_n(payload, len, &msg);
  is_int(rc, -1, "%s rejected", what);
  if (!ok(strncmp(err, want, strlen(want)) == 0, "  error for %s", what))
    diag("got \"%s\", expected a prefix \"%s\"", err, want);
}

/* Writes a JSON string of n two-byte characters (U+00E9) into dst. */
static void quoted_e_acutes(char *dst, size_t n)
{
  dst[0] = '"';
  for (size_t i = 0; i < n; i++)
    memcpy(dst + 1 + 2 * i, "\xc3\xa9", 2);
  strcpy(dst + 1 + 2 * n, "\"");
}

static char *repeat(char c, size_t n)
{
  static char s[BM_MSG_TOKEN_SIZE + 16];
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* ---- the examples decode ------------------------------------------ */

static void test_spec_command(void)
{
  struct bm_command *c = &msg.u.command;

  diag("spec: setExtDO request");
  is_int(decode(SPEC_COMMAND, &msg), 0, "request decodes");
  is_int(msg.type, BM_MSG_COMMAND, "type commandMessage");
  is_str(c->app_id, "flexyWattApp.1", "appId");
  is_str(c->brand, "Bimetri", "brand");
  is_str(c->jwt_token, "replace-with-your-token", "jwtToken");
  is_int(c->user_id, 12345, "userId");
  is_int(c->organization_id, 23456, "organizationId");
  is_str(c->command, "setExtDO", "command");
  is_str(c->correlation_id, "100", "correlationId");
  is_int(c->parameters.resource_id, 101, "parameters.resourceId");
  is_int(c->parameters.output, 4, "parameters.output");
  is_int(c->parameters.status, 0, "parameters.status");
}

static void test_spec_response_sent(void)
{
  struct bm_response *r = &msg.u.response;

  diag("spec: response sent");
  is_int(decode(SPEC_RESPONSE_SENT, &msg), 0, "response decodes");
  is_int(msg.type, BM_MSG_RESPONSE, "type commandResponse");
  is_str(r->correlation_id, "100", "correlationId");
  is_int(r->result, BM_RESULT_SENT, "result sent");
  is_str(r->reason, "Command Queued", "reason");
  ok(r->has_data, "has data");
  is_str(r->data_command, "setExtDO", "data.command");
  ok(r->has_resource_id, "has data.resourceId");
  is_int(r->resource_id, 101, "data.resourceId");
  ok(!r->has_user_id, "no data.userId");
  is_str(r->brand, "Bimetri", "data.brand");
  is_str(r->model, "BMM620", "data.model");
  is_str(r->network_id, "26:AA:E0:23:23:5E", "data.networkId");
}

static void test_spec_response_not_send(void)
{
  struct bm_response *r = &msg.u.response;

  diag("spec: error response");
  is_int(decode(SPEC_RESPONSE_NOT_SEND, &msg), 0, "error response decodes");
  is_int(msg.type, BM_MSG_RESPONSE, "type commandResponse");
  is_str(r->correlation_id, "100", "correlationId");
  is_int(r->result, BM_RESULT_NOT_SEND, "result not_send");
  is_str(r->reason, "The user does not have access rights to the resource!",
         "reason");
  ok(r->has_data, "has data");
  is_str(r->data_command, "setExtDO", "data.command");
  ok(r->has_resource_id, "has data.resourceId");
  is_int(r->resource_id, 101, "data.resourceId");
  ok(r->has_user_id, "has data.userId");
  is_int(r->user_id, 12345, "data.userId");
  is_str(r->brand, "", "no data.brand");
  is_str(r->model, "", "no data.model");
  is_str(r->network_id, "", "no data.networkId");
}

static void test_spec_notification(void)
{
  struct bm_notification *n = &msg.u.notification;

  diag("spec: state-change notification");
  is_int(decode(SPEC_NOTIFICATION, &msg), 0, "notification decodes");
  is_int(msg.type, BM_MSG_NOTIFICATION, "type notification");
  is_str(n->app_id, "flexyWattApp.1", "appId");
  ok(n->has_correlation_id, "has correlationId");
  is_str(n->correlation_id, "100", "correlationId");
  is_str(n->command, "setExtDO", "command");
  is_str(n->notification_type, "extDOStateChanged", "notificationType");
  is_str(n->user_name, "Flexywatt User", "userName");
  ok(n->has_user_id, "has userId");
  is_int(n->user_id, 12345, "userId");
  ok(n->has_state, "has state");
  is_int(n->state.resource_id, 101, "parameters.resourceId");
  is_str(n->brand, "Bimetri", "parameters.brand");
  is_str(n->model, "BMM620", "parameters.model");
  is_str(n->network_id, "26:AA:E0:23:23:5E", "parameters.networkId");
  ok(n->has_organization_id, "has parameters.organizationId");
  is_int(n->organization_id, 23456, "parameters.organizationId");
  is_int(n->state.output, 4, "parameters.output");
  is_int(n->state.status, 1, "parameters.status");
}

/* tests/data holds the same examples for the fuzzers: check they are
 * still the spec's text and still decode. */
static void test_seed_files(void)
{
  static const struct {
    const char *name;
    const char *spec; /* NULL: not a spec example */
    enum bm_msg_type type;
  } seeds[] = {
      {"command.json", SPEC_COMMAND, BM_MSG_COMMAND},
      {"response-sent.json", SPEC_RESPONSE_SENT, BM_MSG_RESPONSE},
      {"response-not-send.json", SPEC_RESPONSE_NOT_SEND, BM_MSG_RESPONSE},
      {"notification.json", SPEC_NOTIFICATION, BM_MSG_NOTIFICATION},
      {"notification-unsolicited.json", NULL, BM_MSG_NOTIFICATION},
      {"response-unauthorized.json", NULL, BM_MSG_RESPONSE},
  };
  const char *dir = getenv("top_srcdir");

  diag("seed files in tests/data");
  for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
    char path[1024];
    FILE *f;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/tests/data/%s", dir ? dir : ".",
             seeds[i].name);
    f = fopen(path, "rb");
    if (!ok(f != NULL, "%s readable", path))
      continue;
    n = fread(json, 1, sizeof(json) - 1, f);
    int read_err = ferror(f);
    int close_err = fclose(f);
    ok(!read_err && close_err == 0, "%s read", seeds[i].name);
    json[n] = '\0';
    if (seeds[i].spec != NULL) {
      ok(n > 0 && json[n - 1] == '\n' &&
             strncmp(json, seeds[i].spec, n - 1) == 0 &&
             strlen(seeds[i].spec) == n - 1,
         "%s is the spec's example", seeds[i].name);
    }
    is_int(decode_n(json, n, &msg), 0, "%s decodes", seeds[i].name);
    is_int(msg.type, seeds[i].type, "%s type", seeds[i].name);
    if (strcmp(seeds[i].name, "response-unauthorized.json") == 0) {
      is_int(msg.u.response.result, BM_RESULT_UNAUTHORIZED, "  result");
      ok(!msg.u.response.has_data, "  no data");
    }
  }
}

/* ---- encoding ------------------------------------------------------ */

static void spec_command_struct(struct bm_command *c)
{
  memset(c, 0, sizeof(*c));
  strcpy(c->app_id, "flexyWattApp.1");
  strcpy(c->brand, "Bimetri");
  strcpy(c->jwt_token, "replace-with-your-token");
  c->user_id = 12345;
  c->organization_id = 23456;
  strcpy(c->command, "setExtDO");
  strcpy(c->correlation_id, "100");
  c->parameters.resource_id = 101;
  c->parameters.output = 4;
  c->parameters.status = 0;
}

static void spec_sent_struct(struct bm_response *r)
{
  memset(r, 0, sizeof(*r));
  strcpy(r->correlation_id, "100");
  r->result = BM_RESULT_SENT;
  strcpy(r->reason, "Command Queued");
  r->has_data = true;
  strcpy(r->data_command, "setExtDO");
  r->has_resource_id = true;
  r->resource_id = 101;
  strcpy(r->brand, "Bimetri");
  strcpy(r->model, "BMM620");
  strcpy(r->network_id, "26:AA:E0:23:23:5E");
}

static void spec_not_send_struct(struct bm_response *r)
{
  memset(r, 0, sizeof(*r));
  strcpy(r->correlation_id, "100");
  r->result = BM_RESULT_NOT_SEND;
  strcpy(r->reason, "The user does not have access rights to the resource!");
  r->has_data = true;
  strcpy(r->data_command, "setExtDO");
  r->has_resource_id = true;
  r->resource_id = 101;
  r->has_user_id = true;
  r->user_id = 12345;
}

static void spec_notification_struct(struct bm_notification *n)
{
  memset(n, 0, sizeof(*n));
  strcpy(n->app_id, "flexyWattApp.1");
  n->has_correlation_id = true;
  strcpy(n->correlation_id, "100");
  strcpy(n->command, "setExtDO");
  strcpy(n->notification_type, "extDOStateChanged");
  strcpy(n->user_name, "Flexywatt User");
  n->has_user_id = true;
  n->user_id = 12345;
  n->has_state = true;
  n->state.resource_id = 101;
  strcpy(n->brand, "Bimetri");
  strcpy(n->model, "BMM620");
  strcpy(n->network_id, "26:AA:E0:23:23:5E");
  n->has_organization_id = true;
  n->organization_id = 23456;
  n->state.output = 4;
  n->state.status = 1;
}

static void test_encode_spec(void)
{
  struct bm_msg in;
  char buf[2048];
  int n;

  diag("encoders reproduce the spec's examples exactly");
  spec_command_struct(&in.u.command);
  n = bm_msg_encode_command(&in.u.command, buf, sizeof(buf));
  is_int(n, strlen(base_command), "command length");
  is_str(buf, base_command, "command is the spec's request, compact");

  spec_sent_struct(&in.u.response);
  n = bm_msg_encode_response(&in.u.response, buf, sizeof(buf));
  is_int(n, strlen(base_sent), "response length");
  is_str(buf, base_sent, "response is the spec's response, compact");

  spec_not_send_struct(&in.u.response);
  n = bm_msg_encode_response(&in.u.response, buf, sizeof(buf));
  is_int(n, strlen(base_not_send), "error response length");
  is_str(buf, base_not_send, "error response is the spec's, compact");

  spec_notification_struct(&in.u.notification);
  n = bm_msg_encode_notification(&in.u.notification, buf, sizeof(buf));
  is_int(n, strlen(base_notification), "notification length");
  is_str(buf, base_notification, "notification is the spec's, compact");
}

static void test_encode_optional(void)
{
  struct bm_msg in;
  char buf[2048];

  diag("encoders omit what is absent");
  spec_command_struct(&in.u.command);
  strcpy(in.u.command.command, "reboot");
  bm_msg_encode_command(&in.u.command, buf, sizeof(buf));
  ok(strstr(buf, "\"command\":\"reboot\",\"correlationId\":\"100\","
                 "\"parameters\":{}}") != NULL,
     "non-setExtDO command has empty parameters");

  memset(&in.u.response, 0, sizeof(in.u.response));
  strcpy(in.u.response.correlation_id, "x");
  in.u.response.result = BM_RESULT_SEND_NO_ACK;
  is_int(bm_msg_encode_response(&in.u.response, buf, sizeof(buf)),
         strlen(buf), "response without data encodes");
  is_str(buf,
         "{\"messageType\":\"commandResponse\",\"correlationId\":\"x\","
         "\"result\":\"send_no_ack\",\"reason\":\"\"}",
         "response without data");

  in.u.response.has_data = true;
  bm_msg_encode_response(&in.u.response, buf, sizeof(buf));
  ok(strstr(buf, "\"reason\":\"\",\"data\":{}}") != NULL,
     "empty data is an empty object");

  memset(&in.u.notification, 0, sizeof(in.u.notification));
  strcpy(in.u.notification.app_id, "a.b");
  strcpy(in.u.notification.notification_type, "deviceOnline");
  bm_msg_encode_notification(&in.u.notification, buf, sizeof(buf));
  is_str(buf,
         "{\"messageType\":\"notification\",\"appId\":\"a.b\","
         "\"notificationType\":\"deviceOnline\"}",
         "minimal notification");

  spec_notification_struct(&in.u.notification);
  in.u.notification.has_correlation_id = false;
  bm_msg_encode_notification(&in.u.notification, buf, sizeof(buf));
  ok(strstr(buf, "correlationId") == NULL,
     "notification without correlationId omits it");
  ok(strstr(buf, "\"appId\":\"flexyWattApp.1\",\"command\":") != NULL,
     "  and the next member follows appId");
}

/* Every capacity below the needed one fails without writing past it. */
static void check_small_buffers(const char *what,
                                int (*enc)(const void *, char *, size_t),
                                const void *in)
{
  char buf[2048 + 16];
  int bad = 0;
  int full_len = enc(in, buf, sizeof(buf));

  ok(full_len > 0, "%s encodes", what);

  for (size_t cap = 0; cap <= (size_t)full_len; cap++) {
    memset(buf, 'X', sizeof(buf));
    if (enc(in, cap ? buf : NULL, cap) != -1)
      bad++;
    for (size_t i = cap; i < sizeof(buf); i++)
      if (buf[i] != 'X')
        bad++;
  }
  is_int(bad, 0, "%s: -1 and no write past cap for all %d short caps", what,
         full_len + 1);
  memset(buf, 'X', sizeof(buf));
  is_int(enc(in, buf, (size_t)full_len + 1), full_len,
         "%s: fits exactly in len+1", what);
  is_int(buf[full_len], '\0', "%s: NUL-terminated", what);
  is_int(buf[full_len + 1], 'X', "%s: nothing written after the NUL", what);
}

static int enc_command(const void *in, char *buf, size_t cap)
{
  return bm_msg_encode_command(in, buf, cap);
}

static int enc_response(const void *in, char *buf, size_t cap)
{
  return bm_msg_encode_response(in, buf, cap);
}

static int enc_notification(const void *in, char *buf, size_t cap)
{
  return bm_msg_encode_notification(in, buf, cap);
}

static void test_encode_small_buffer(void)
{
  struct bm_msg in;

  diag("encoders fail on a short buffer");
  spec_command_struct(&in.u.command);
  check_small_buffers("command", enc_command, &in.u.command);
  spec_not_send_struct(&in.u.response);
  check_small_buffers("response", enc_response, &in.u.response);
  spec_notification_struct(&in.u.notification);
  strcpy(in.u.notification.user_name, "quote\" and \x01");
  check_small_buffers("notification with escapes", enc_notification,
                      &in.u.notification);
}

static void test_escaping(void)
{
  struct bm_response r;
  char buf[2048], want[64];
  char all_ctrl[40];
  int missing = 0, raw = 0;

  diag("JSON escaping");
  spec_sent_struct(&r);
  strcpy(r.reason, "a\"b\\c/d\n\r\t\b\f\x01\x1f\x7f\xc3\xa9");
  bm_msg_encode_response(&r, buf, sizeof(buf));
  ok(strstr(buf, "\"reason\":\"a\\\"b\\\\c/d\\n\\r\\t\\b\\f\\u0001\\u001f"
                 "\x7f\xc3\xa9\",") != NULL,
     "quote, backslash, control chars escaped; DEL and UTF-8 copied");
  is_int(decode(buf, &msg), 0, "escaped response decodes");
  is_str(msg.u.response.reason, "a\"b\\c/d????????\xc3\xa9",
         "reason decodes printable: each control character (DEL too) a '?'");

  /* Every control character, each in its own escape. */
  for (int c = 1; c < 0x20; c++)
    all_ctrl[c - 1] = (char)c;
  all_ctrl[0x1f] = '\0';
  strcpy(r.reason, all_ctrl);
  strcpy(r.correlation_id, "\"\\");
  ok(bm_msg_encode_response(&r, buf, sizeof(buf)) > 0,
     "control characters encode");
  for (int c = 1; c < 0x20; c++) {
    if (strchr("\b\f\n\r\t", c))
      continue;
    snprintf(want, sizeof(want), "\\u%04x", c);
    if (!strstr(buf, want))
      missing++;
  }
  is_int(missing, 0, "other control characters as \\u00XX");
  for (const char *p = buf; *p; p++)
    if ((unsigned char)*p < 0x20)
      raw++;
  is_int(raw, 0, "no raw control character in the output");
  ok(strstr(buf, "\"correlationId\":\"\\\"\\\\\"") != NULL,
     "correlationId escaped");
  is_int(decode(buf, &msg), 0, "control characters decode");
  is_str(msg.u.response.reason, repeat('?', 0x1f),
         "  each to a '?': a reason stays one printable line");
  is_str(msg.u.response.correlation_id, "\"\\", "quote/backslash round trip");

  /* Escapes on the decode side that the encoder never writes. */
  is_int(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
                "\"\\u0041\\u00e9\\u20ac\\ud834\\udd1e\\/\",\"result\":"
                "\"sent\"}",
                &msg),
         0, "\\u escapes decode");
  is_str(msg.u.response.correlation_id,
         "A\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e/",
         "  to UTF-8");

  /* What an escape makes that would not print: a forged log line, a
   * terminal's escape sequence, lone surrogates (yajl turns a high one
   * into '?' itself and a low one into ED B0 80, not UTF-8). */
  is_int(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
                "\"c-1\",\"result\":\"failed\",\"reason\":\"busy\\n[error] "
                "bimetri plugin: forged\\r\\u001b[2J\"}",
                &msg),
         0, "a reason with a newline, a carriage return and ESC decodes");
  is_str(msg.u.response.reason, "busy?[error] bimetri plugin: forged??[2J",
         "  as one printable line");
  is_int(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
                "\"a\\udc00b\\ud800c\\udfffd\",\"result\":\"sent\"}",
                &msg),
         0, "escaped lone surrogates decode");
  is_str(msg.u.response.correlation_id, "a???b?c???d",
         "  each byte of a lone low one a '?', a lone high one '?' (yajl)");
  /* Without any escape: a raw DEL (JSON allows it) is replaced too; a raw
   * control character is not JSON at all. */
  is_int(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
                "\"c-1\",\"result\":\"sent\",\"reason\":\"a\x7f" "b\"}",
                &msg),
         0, "a raw DEL in a string decodes");
  is_str(msg.u.response.reason, "a?b", "  as '?'");
  is_int(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
                "\"c-1\",\"result\":\"sent\",\"reason\":\"a\xc2\x9b" "2Jb "
                "\xc2\xa0\xc3\xa9\"}",
                &msg),
         0, "a raw C1 control (U+009B, CSI) decodes");
  is_str(msg.u.response.reason, "a??2Jb \xc2\xa0\xc3\xa9",
         "  as '?' per byte; U+00A0 and U+00E9 stay");
  is_int(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
                "\"c-1\",\"result\":\"sent\",\"reason\":\"a\\u0085b\"}",
                &msg),
         0, "an escaped C1 control (U+0085, NEL) decodes");
  is_str(msg.u.response.reason, "a??b", "  as '?' per byte");
  ok(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
            "\"c-1\",\"result\":\"sent\",\"data\":{\"k\\n\\u001b\":1,"
            "\"k\\n\\u001b\":2}}",
            &msg) != 0 &&
         strcmp(err, "field \"data.k??\": duplicate key") == 0,
     "a duplicate key is named printable (%s)", err);
  ok(decode("{\"messageType\":\"commandResponse\",\"correlationId\":"
            "\"c-1\",\"result\":\"sent\",\"reason\":\"a\nb\"}",
            &msg) != 0,
     "a raw newline in a string is an error (%s)", err);
}

/* ---- round trips -------------------------------------------------- */

static void test_round_trip_command(void)
{
  struct bm_command in;
  struct bm_command *out = &msg.u.command;
  char buf[BM_MSG_MAX_SIZE];
  int n;

  diag("round trip: commandMessage at the limits");
  memset(&in, 0, sizeof(in));
  strcpy(in.app_id, repeat('a', BM_MSG_ID_SIZE - 1));
  strcpy(in.brand, "Bi\"m\\e\ttri \xe2\x82\xac");
  strcpy(in.jwt_token, repeat('t', BM_MSG_TOKEN_SIZE - 1));
  in.user_id = BM_MSG_MAX_SAFE_INT;
  in.organization_id = 0;
  strcpy(in.command, "setExtDO");
  strcpy(in.correlation_id, repeat('c', BM_MSG_ID_SIZE - 1));
  in.parameters.resource_id = BM_MSG_MAX_SAFE_INT - 1;
  in.parameters.output = 65535;
  in.parameters.status = 1;
  n = bm_msg_encode_command(&in, buf, sizeof(buf));
  ok(n > 0, "encodes (%d bytes)", n);
  is_int(decode(buf, &msg), 0, "decodes");
  is_int(msg.type, BM_MSG_COMMAND, "type");
  is_str(out->app_id, in.app_id, "appId");
  is_str(out->brand, "Bi\"m\\e?tri \xe2\x82\xac", "brand (its tab a '?')");
  is_str(out->jwt_token, in.jwt_token, "jwtToken");
  is_int(out->user_id, in.user_id, "userId");
  is_int(out->organization_id, in.organization_id, "organizationId");
  is_str(out->command, in.command, "command");
  is_str(out->correlation_id, in.correlation_id, "correlationId");
  is_int(out->parameters.resource_id, in.parameters.resource_id,
         "resourceId");
  is_int(out->parameters.output, in.parameters.output, "output");
  is_int(out->parameters.status, in.parameters.status, "status");

  strcpy(in.command, "reboot");
  n = bm_msg_encode_command(&in, buf, sizeof(buf));
  ok(n > 0, "other command encodes");
  is_int(decode(buf, &msg), 0, "other command decodes");
  is_str(out->command, "reboot", "  command");
  is_int(out->parameters.resource_id, 0, "  parameters left zero");
}

static void test_round_trip_response(void)
{
  struct bm_response in;
  struct bm_response *out = &msg.u.response;
  char buf[4096];

  diag("round trip: commandResponse, every result");
  for (int res = BM_RESULT_SENT; res <= BM_RESULT_UNAUTHORIZED; res++) {
    memset(&in, 0, sizeof(in));
    snprintf(in.correlation_id, sizeof(in.correlation_id), "id-%d", res);
    in.result = (enum bm_result)res;
    strcpy(in.reason, repeat('r', BM_MSG_STR_SIZE - 1));
    in.has_data = res != BM_RESULT_SEND_NO_ACK;
    strcpy(in.data_command, "setExtDO");
    in.has_resource_id = res != BM_RESULT_FAILED;
    in.resource_id = res == BM_RESULT_SENT ? BM_MSG_MAX_SAFE_INT : 0;
    in.has_user_id = res == BM_RESULT_NOT_SEND;
    in.user_id = in.has_user_id ? 42 : 0;
    strcpy(in.brand, "Bimetri");
    strcpy(in.model, "BMM620");
    strcpy(in.network_id, "26:AA:E0:23:23:5E");
    if (!in.has_data) {
      in.data_command[0] = in.brand[0] = in.model[0] = in.network_id[0] = 0;
      in.has_resource_id = false;
      in.resource_id = 0;
    }
    ok(bm_msg_encode_response(&in, buf, sizeof(buf)) > 0, "%s encodes",
       bm_result_name(in.result));
    is_int(decode(buf, &msg), 0, "  decodes");
    is_int(msg.type, BM_MSG_RESPONSE, "  type");
    is_str(out->correlation_id, in.correlation_id, "  correlationId");
    is_int(out->result, in.result, "  result");
    is_str(out->reason, in.reason, "  reason");
    is_int(out->has_data, in.has_data, "  has_data");
    is_str(out->data_command, in.data_command, "  data.command");
    is_int(out->has_resource_id, in.has_resource_id, "  has resourceId");
    is_int(out->resource_id, in.resource_id, "  resourceId");
    is_int(out->has_user_id, in.has_user_id, "  has userId");
    is_int(out->user_id, in.user_id, "  userId");
    is_str(out->brand, in.brand, "  brand");
    is_str(out->model, in.model, "  model");
    is_str(out->network_id, in.network_id, "  networkId");
  }
}

static void test_round_trip_notification(void)
{
  struct bm_notification in;
  struct bm_notification *out = &msg.u.notification;
  char buf[4096];

  diag("round trip: notification, with and without state and ids");
  for (int variant = 0; variant < 3; variant++) {
    spec_notification_struct(&in);
    if (variant == 1) { /* unsolicited: no correlationId, no organization */
      in.has_correlation_id = false;
      in.correlation_id[0] = '\0';
      in.has_organization_id = false;
      in.organization_id = 0;
      in.has_user_id = false;
      in.user_id = 0;
      in.state.status = 0;
      in.state.output = 0;
      in.state.resource_id = BM_MSG_MAX_SAFE_INT;
    } else if (variant == 2) { /* another event type: no state */
      strcpy(in.notification_type, "deviceOffline");
      memset(&in.state, 0, sizeof(in.state));
      in.has_state = false;
      in.brand[0] = in.model[0] = in.network_id[0] = '\0';
      in.has_organization_id = false;
      in.organization_id = 0;
      strcpy(in.user_name, "\xe2\x82\xac \"quoted\"");
    }
    ok(bm_msg_encode_notification(&in, buf, sizeof(buf)) > 0,
       "variant %d encodes", variant);
    is_int(decode(buf, &msg), 0, "  decodes");
    is_int(msg.type, BM_MSG_NOTIFICATION, "  type");
    is_str(out->app_id, in.app_id, "  appId");
    is_int(out->has_correlation_id, in.has_correlation_id,
           "  has correlationId");
    is_str(out->correlation_id, in.correlation_id, "  correlationId");
    is_str(out->command, in.command, "  command");
    is_str(out->notification_type, in.notification_type,
           "  notificationType");
    is_str(out->user_name, in.user_name, "  userName");
    is_int(out->has_user_id, in.has_user_id, "  has userId");
    is_int(out->user_id, in.user_id, "  userId");
    is_int(out->has_state, in.has_state, "  has_state");
    is_int(out->state.resource_id, in.state.resource_id, "  resourceId");
    is_int(out->state.output, in.state.output, "  output");
    is_int(out->state.status, in.state.status, "  status");
    is_str(out->brand, in.brand, "  brand");
    is_str(out->model, in.model, "  model");
    is_str(out->network_id, in.network_id, "  networkId");
    is_int(out->has_organization_id, in.has_organization_id,
           "  has organizationId");
    is_int(out->organization_id, in.organization_id, "  organizationId");
  }
}

/* ---- validation ---------------------------------------------------- */

static void test_command_errors(void)
{
  static const char *const required[][2] = {
      {"messageType", "field \"messageType\": missing"},
      {"appId", "field \"appId\": missing"},
      {"brand", "field \"brand\": missing"},
      {"jwtToken", "field \"jwtToken\": missing"},
      {"userId", "field \"userId\": missing"},
      {"organizationId", "field \"organizationId\": missing"},
      {"command", "field \"command\": missing"},
      {"correlationId", "field \"correlationId\": missing"},
      {"parameters", "field \"parameters\": missing"},
      {"resourceId", "field \"parameters.resourceId\": missing"},
      {"output", "field \"parameters.output\": missing"},
      {"status", "field \"parameters.status\": missing"},
  };
  static const char *const wrong[][3] = {
      /* wrong JSON type */
      {"appId", "1", "field \"appId\": expected a string"},
      {"brand", "null", "field \"brand\": expected a string"},
      {"jwtToken", "true", "field \"jwtToken\": expected a string"},
      {"command", "{}", "field \"command\": expected a string"},
      {"correlationId", "100", "field \"correlationId\": expected a string"},
      {"parameters", "[]", "field \"parameters\": expected an object"},
      {"parameters", "\"x\"", "field \"parameters\": expected an object"},
      {"organizationId", "[]", "field \"organizationId\": expected an integer"},
      /* strings instead of numbers */
      {"userId", "\"12345\"", "field \"userId\": expected an integer"},
      {"resourceId", "\"101\"",
       "field \"parameters.resourceId\": expected an integer"},
      {"output", "\"4\"", "field \"parameters.output\": expected an integer"},
      {"status", "\"1\"", "field \"parameters.status\": expected an integer"},
      {"status", "true", "field \"parameters.status\": expected an integer"},
      {"status", "null", "field \"parameters.status\": expected an integer"},
      /* fractions and exponents, even whole ones */
      {"userId", "12345.0", "field \"userId\": expected an integer"},
      {"userId", "12345.5", "field \"userId\": expected an integer"},
      {"userId", "1e3", "field \"userId\": expected an integer"},
      {"userId", "1E3", "field \"userId\": expected an integer"},
      {"organizationId", "2.3456e4",
       "field \"organizationId\": expected an integer"},
      {"resourceId", "101.0",
       "field \"parameters.resourceId\": expected an integer"},
      {"output", "4.0", "field \"parameters.output\": expected an integer"},
      {"status", "1.0", "field \"parameters.status\": expected an integer"},
      {"status", "0e0", "field \"parameters.status\": expected an integer"},
      /* out of range */
      {"userId", "-1", "field \"userId\": out of range 0..9007199254740991"},
      {"userId", "9007199254740992",
       "field \"userId\": out of range 0..9007199254740991"},
      {"organizationId", "99999999999999999999",
       "field \"organizationId\": out of range 0..9007199254740991"},
      {"resourceId", "-101",
       "field \"parameters.resourceId\": out of range 0..9007199254740991"},
      {"resourceId", "9223372036854775807",
       "field \"parameters.resourceId\": out of range 0..9007199254740991"},
      {"output", "65536", "field \"parameters.output\": out of range 0..65535"},
      {"output", "-1", "field \"parameters.output\": out of range 0..65535"},
      {"status", "2", "field \"parameters.status\": expected 0 or 1"},
      {"status", "-1", "field \"parameters.status\": expected 0 or 1"},
      /* ids */
      {"correlationId", "\"\"", "field \"correlationId\": empty"},
      {"messageType", "\"commandmessage\"",
       "field \"messageType\": unknown value \"commandmessage\""},
      {"messageType", "\"\"", "field \"messageType\": unknown value \"\""},
      {"messageType", "5", "field \"messageType\": expected a string"},
  };
  static const char *const fine[][2] = {
      {"userId", "9007199254740991"},
      {"userId", "0"},
      {"organizationId", "-0"},
      {"resourceId", "0"},
      {"output", "65535"},
      {"output", "0"},
      {"status", "1"},
      {"brand", "\"\""},
      {"appId", "\"\""},
      {"jwtToken", "\"\""},
      {"brand", "\"Bi/metri\""},
  };

  diag("commandMessage: each required field missing");
  for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
    expect_edit_error(base_command, required[i][0], NULL, required[i][1]);
  diag("commandMessage: wrong types and ranges");
  for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
    expect_edit_error(base_command, wrong[i][0], wrong[i][1], wrong[i][2]);
  diag("commandMessage: boundary values accepted");
  for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
    expect_edit_ok(base_command, fine[i][0], fine[i][1]);
  expect_edit_ok(base_command, "userId", "9007199254740991");
  is_int(msg.u.command.user_id, BM_MSG_MAX_SAFE_INT, "  userId 2^53-1");
  expect_edit_ok(base_command, "output", "65535");
  is_int(msg.u.command.parameters.output, 65535, "  output 65535");

  diag("commandMessage: other commands leave parameters unchecked");
  json_edit(base_command, "command", "\"reboot\"", json2);
  expect_edit_ok(json2, "parameters", "{\"status\":7.5}");
  is_str(msg.u.command.command, "reboot", "  command reboot");
  is_int(msg.u.command.parameters.status, 0, "  parameters zero");
  expect_edit_error(json2, "parameters", "7",
                    "field \"parameters\": expected an object");
  expect_edit_error(json2, "parameters", NULL,
                    "field \"parameters\": missing");
}

/* Only the member decoded is cleared, and a commandMessage that fails
 * leaves nothing of its token behind. */
static void test_no_token_left(void)
{
  is_int(decode(SPEC_COMMAND, &msg), 0, "a command decodes");
  is_str(msg.u.command.jwt_token, "replace-with-your-token", "its token");
  json_edit(base_command, "parameters", "{\"resourceId\":101,\"output\":4,"
            "\"status\":7}", json);
  is_int(decode(json, &msg), -1, "a command failing after its token");
  is_int(msg.type, 0, "... is no envelope");
  is_str(msg.u.command.jwt_token, "", "... and leaves no token behind");
}

static void test_string_lengths(void)
{
  char value[BM_MSG_TOKEN_SIZE + 32]; /* a repeat() and two quotes */

  diag("strings: the longest fit, one more byte is an error");
  snprintf(value, sizeof(value), "\"%s\"", repeat('c', BM_MSG_ID_SIZE - 1));
  expect_edit_ok(base_command, "correlationId", value);
  is_int(strlen(msg.u.command.correlation_id), BM_MSG_ID_SIZE - 1,
         "  127-byte correlationId kept whole");
  snprintf(value, sizeof(value), "\"%s\"", repeat('c', BM_MSG_ID_SIZE));
  expect_edit_error(base_command, "correlationId", value,
                    "field \"correlationId\": longer than 127 bytes");
  snprintf(value, sizeof(value), "\"%s\"", repeat('a', BM_MSG_ID_SIZE));
  expect_edit_error(base_command, "appId", value,
                    "field \"appId\": longer than 127 bytes");
  snprintf(value, sizeof(value), "\"%s\"", repeat('b', BM_MSG_STR_SIZE - 1));
  expect_edit_ok(base_command, "brand", value);
  snprintf(value, sizeof(value), "\"%s\"", repeat('b', BM_MSG_STR_SIZE));
  expect_edit_error(base_command, "brand", value,
                    "field \"brand\": longer than 255 bytes");
  snprintf(value, sizeof(value), "\"%s\"",
           repeat('t', BM_MSG_TOKEN_SIZE - 1));
  expect_edit_ok(base_command, "jwtToken", value);
  is_int(strlen(msg.u.command.jwt_token), BM_MSG_TOKEN_SIZE - 1,
         "  8191-byte token kept whole");
  snprintf(value, sizeof(value), "\"%s\"", repeat('t', BM_MSG_TOKEN_SIZE));
  expect_edit_error(base_command, "jwtToken", value,
                    "field \"jwtToken\": longer than 8191 bytes");
  /* Length is counted in decoded bytes: 127 two-byte characters. */
  quoted_e_acutes(value, 64);
  expect_edit_error(base_command, "correlationId", value,
                    "field \"correlationId\": longer than 127 bytes");
  strcpy(value + 127, "\""); /* 63 characters, 126 bytes */
  expect_edit_ok(base_command, "correlationId", value);
  /* An escape shrinks when decoded: 127 x "\\u0041" fits. */
  value[0] = '"';
  for (int i = 0; i < 127; i++)
    memcpy(value + 1 + 6 * i, "\\u0041", 6);
  strcpy(value + 1 + 6 * 127, "\"");
  expect_edit_ok(base_command, "correlationId", value);
  is_str(msg.u.command.correlation_id, repeat('A', 127),
         "  escaped characters count once");
  snprintf(value, sizeof(value), "\"%s\"", repeat('r', BM_MSG_STR_SIZE));
  expect_edit_spare(base_sent, "reason", value,
                    "field \"reason\": longer than 255 bytes, cut");
  is_str(msg.u.response.reason, repeat('r', BM_MSG_STR_SIZE - 1),
         "  a reason too long is cut to 255 bytes");
  expect_edit_spare(base_sent, "model", value,
                    "field \"data.model\": longer than 255 bytes");
  expect_edit_spare(base_notification, "userName", value,
                    "field \"userName\": longer than 255 bytes");
  expect_edit_spare(base_notification, "networkId", value,
                    "field \"parameters.networkId\": longer than 255 bytes");
}

static void test_response_errors(void)
{
  struct bm_response *r = &msg.u.response;

  diag("commandResponse: required, optional, typed");
  expect_edit_error(base_sent, "correlationId", NULL,
                    "field \"correlationId\": missing");
  expect_edit_error(base_sent, "correlationId", "\"\"",
                    "field \"correlationId\": empty");
  expect_edit_error(base_sent, "correlationId", "100",
                    "field \"correlationId\": expected a string");
  expect_edit_error(base_sent, "result", NULL, "field \"result\": missing");
  expect_edit_error(base_sent, "result", "1",
                    "field \"result\": expected a string");
  expect_edit_error(base_sent, "result", "\"SENT\"",
                    "field \"result\": unknown value \"SENT\"");
  expect_edit_error(base_sent, "result", "\"queued\"",
                    "field \"result\": unknown value \"queued\"");
  expect_edit_error(base_sent, "result", "\"\"",
                    "field \"result\": unknown value \"\"");
  expect_edit_spare(base_sent, "reason", "5",
                    "field \"reason\": expected a string");
  expect_edit_spare(base_sent, "data", "[]",
                    "field \"data\": expected an object");
  expect_edit_spare(base_sent, "data", "\"x\"",
                    "field \"data\": expected an object");
  expect_edit_spare(base_sent, "command", "7",
                    "field \"data.command\": expected a string");
  expect_edit_spare(base_sent, "resourceId", "\"101\"",
                    "field \"data.resourceId\": expected an integer");
  expect_edit_spare(base_sent, "resourceId", "-2",
                    "field \"data.resourceId\": out of range "
                    "0..9007199254740991");
  expect_edit_spare(base_sent, "brand", "false",
                    "field \"data.brand\": expected a string");
  expect_edit_spare(base_sent, "networkId", "null",
                    "field \"data.networkId\": expected a string");
  expect_edit_spare(base_not_send, "userId", "12345.0",
                    "field \"data.userId\": expected an integer");
  expect_edit_spare(base_not_send, "userId", "\"12345\"",
                    "field \"data.userId\": expected an integer");

  expect_edit_ok(base_sent, "reason", NULL);
  is_str(r->reason, "", "  absent reason is empty");
  expect_edit_ok(base_sent, "data", NULL);
  ok(!r->has_data && !r->has_resource_id && r->data_command[0] == '\0',
     "  absent data: has_data false, members empty");
  expect_edit_ok(base_sent, "data", "{}");
  ok(r->has_data && !r->has_resource_id && !r->has_user_id,
     "  empty data: has_data true, no members");
  expect_edit_ok(base_sent, "resourceId", NULL);
  ok(!r->has_resource_id && r->resource_id == 0,
     "  absent data.resourceId: has flag false");
  expect_edit_ok(base_sent, "result", "\"send_no_ack\"");
  is_int(r->result, BM_RESULT_SEND_NO_ACK, "  send_no_ack");
  expect_edit_ok(base_sent, "result", "\"unauthorized\"");
  is_int(r->result, BM_RESULT_UNAUTHORIZED, "  unauthorized");
  expect_edit_ok(base_sent, "result", "\"failed\"");
  is_int(r->result, BM_RESULT_FAILED, "  failed");
}

static void test_notification_errors(void)
{
  struct bm_notification *n = &msg.u.notification;

  diag("notification: required, optional, typed");
  expect_edit_error(base_notification, "appId", NULL,
                    "field \"appId\": missing");
  expect_edit_error(base_notification, "appId", "[\"a\"]",
                    "field \"appId\": expected a string");
  expect_edit_error(base_notification, "notificationType", NULL,
                    "field \"notificationType\": missing");
  expect_edit_error(base_notification, "notificationType", "0",
                    "field \"notificationType\": expected a string");
  expect_edit_error(base_notification, "parameters", NULL,
                    "field \"parameters\": missing");
  expect_edit_error(base_notification, "parameters", "[]",
                    "field \"parameters\": expected an object");
  expect_edit_error(base_notification, "resourceId", NULL,
                    "field \"parameters.resourceId\": missing");
  expect_edit_error(base_notification, "output", NULL,
                    "field \"parameters.output\": missing");
  expect_edit_error(base_notification, "status", NULL,
                    "field \"parameters.status\": missing");
  expect_edit_error(base_notification, "status", "2",
                    "field \"parameters.status\": expected 0 or 1");
  expect_edit_error(base_notification, "output", "70000",
                    "field \"parameters.output\": out of range 0..65535");
  expect_edit_spare(base_notification, "organizationId", "-5",
                    "field \"parameters.organizationId\": out of range "
                    "0..9007199254740991");
  expect_edit_spare(base_notification, "organizationId", "\"23456\"",
                    "field \"parameters.organizationId\": expected an "
                    "integer");
  expect_edit_spare(base_notification, "model", "620",
                    "field \"parameters.model\": expected a string");
  expect_edit_spare(base_notification, "userId", "\"12345\"",
                    "field \"userId\": expected an integer");
  expect_edit_spare(base_notification, "userId", "1.2345e4",
                    "field \"userId\": expected an integer");
  expect_edit_spare(base_notification, "userName", "{}",
                    "field \"userName\": expected a string");
  expect_edit_spare(base_notification, "command", "null",
                    "field \"command\": expected a string");
  expect_edit_error(base_notification, "correlationId", "100",
                    "field \"correlationId\": expected a string");

  diag("notification: correlationId absent or empty");
  expect_edit_ok(base_notification, "correlationId", NULL);
  ok(!n->has_correlation_id, "  absent correlationId: has flag false");
  expect_edit_ok(base_notification, "correlationId", "\"\"");
  ok(!n->has_correlation_id, "  empty correlationId counts as absent");
  is_str(n->correlation_id, "", "  and is empty");
  expect_edit_ok(base_notification, "correlationId", "\"x\"");
  ok(n->has_correlation_id, "  one byte is present");

  diag("notification: optional members");
  expect_edit_ok(base_notification, "command", NULL);
  is_str(n->command, "", "  absent command is empty");
  expect_edit_ok(base_notification, "userName", NULL);
  is_str(n->user_name, "", "  absent userName is empty");
  expect_edit_ok(base_notification, "userId", NULL);
  ok(!n->has_user_id, "  absent userId: has flag false");
  expect_edit_ok(base_notification, "organizationId", NULL);
  ok(!n->has_organization_id, "  absent organizationId: has flag false");
  expect_edit_ok(base_notification, "brand", NULL);
  is_str(n->brand, "", "  absent brand is empty");

  diag("notification: other types decode without state");
  json_edit(base_notification, "notificationType", "\"deviceOnline\"", json2);
  expect_edit_ok(json2, "parameters", "[1.5,\"x\",{\"status\":9}]");
  ok(!n->has_state, "  has_state false");
  is_str(n->notification_type, "deviceOnline", "  notificationType");
  is_int(n->state.status, 0, "  state left zero");
  is_str(n->brand, "", "  parameters not read");
  expect_edit_ok(json2, "parameters", NULL);
  ok(!n->has_state, "  without parameters too");
  json_edit(base_notification, "notificationType", "\"extdostatechanged\"",
            json2);
  expect_edit_ok(json2, "parameters", "7");
  ok(!n->has_state, "  notificationType is case-sensitive");
}

static void test_spare_fields(void)
{
  struct bm_notification *n = &msg.u.notification;
  struct bm_response *r = &msg.u.response;
  char value[BM_MSG_STR_SIZE + 8];

  diag("spare fields: a bad one costs only itself");
  snprintf(value, sizeof(value), "\"%s\"", repeat('u', BM_MSG_STR_SIZE));
  expect_edit_spare(base_notification, "userName", value,
                    "field \"userName\": longer than 255 bytes");
  is_int(msg.type, BM_MSG_NOTIFICATION, "  a notification");
  is_str(n->user_name, "", "  userName read as absent");
  ok(n->has_state && n->state.resource_id == 101 && n->state.output == 4 &&
         n->state.status == 1,
     "  its state is whole: resourceId 101 output 4 status 1");
  is_str(n->correlation_id, "100", "  its correlationId too");
  ok(n->has_user_id && n->user_id == 12345, "  and the other spare fields");
  is_str(n->brand, "Bimetri", "  (brand)");

  expect_edit_spare(base_notification, "userId", "null",
                    "field \"userId\": expected an integer");
  ok(!n->has_user_id && n->user_id == 0, "  userId read as absent");
  ok(n->has_state && n->state.status == 1, "  state kept");

  json_edit(base_notification, "userName", "{}", json2);
  expect_edit_spare(json2, "model", "620",
                    "field \"userName\": expected a string");
  ok(n->model[0] == '\0' && n->user_name[0] == '\0',
     "  two bad spare fields: the first one is named, both read as absent");
  is_str(n->network_id, "26:AA:E0:23:23:5E", "  a good one next to them kept");

  json_edit(base_notification, "userName", "{}", json2);
  expect_edit_error(json2, "status", "2",
                    "field \"parameters.status\": expected 0 or 1");
  json_edit(base_notification, "status", "2", json2);
  expect_edit_error(json2, "model", "620",
                    "field \"parameters.status\": expected 0 or 1");

  /* 127 two-byte characters and one more: cut between characters. */
  quoted_e_acutes(value, 128);
  expect_edit_spare(base_sent, "reason", value,
                    "field \"reason\": longer than 255 bytes, cut");
  is_int(strlen(r->reason), 254, "  cut at 254 bytes: no character split");
  snprintf(value, sizeof(value), "\"%s\"", repeat('r', BM_MSG_STR_SIZE));
  json_edit(base_not_send, "reason", value, json2);
  expect_edit_spare(json2, "userId", "null",
                    "field \"reason\": longer than 255 bytes, cut");
  ok(strlen(r->reason) == 255 && !r->has_user_id && r->has_resource_id,
     "  a reason cut, then a bad data.userId: the first is named, the "
     "reason kept cut, data.userId absent");

  json_edit(base_sent, "reason", "5", json2);
  expect_edit_spare(json2, "data", "[]",
                    "field \"reason\": expected a string");
  ok(msg.type == BM_MSG_RESPONSE && r->result == BM_RESULT_SENT,
     "  a commandResponse with its result");
  is_str(r->correlation_id, "100", "  and its correlationId");
  ok(r->reason[0] == '\0' && !r->has_data, "  reason and data read as absent");
  expect_edit_spare(base_sent, "model", "620",
                    "field \"data.model\": expected a string");
  ok(r->has_data && r->has_resource_id && r->resource_id == 101 &&
         r->model[0] == '\0',
     "  a bad member of data: the rest of data kept");

  json_edit(base_notification, "userName", "{}", json);
  is_int(bm_msg_decode(json, strlen(json), &msg, NULL, 0), 0,
         "a bad spare field without an err buffer: taken");

  diag("spare fields: a commandMessage has none");
  expect_edit_error(base_command, "userId", "null",
                    "field \"userId\": expected an integer");
  expect_edit_error(base_command, "brand", "7",
                    "field \"brand\": expected a string");
}

static void test_envelope_errors(void)
{
  static char big[BM_MSG_MAX_SIZE + 2];
  size_t len = strlen(base_command);
  int bad = 0;
  char want[128];

  diag("envelope: unknown messageType, top level, size");
  json_edit(base_command, "messageType", "\"telemetry\"", json);
  expect_error(json, "field \"messageType\": unknown value \"telemetry\"",
               "unknown messageType");
  snprintf(json2, sizeof(json2), "\"%s\"", repeat('m', 100));
  json_edit(base_command, "messageType", json2, json);
  expect_error(json,
               "field \"messageType\": unknown value "
               "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\"",
               "long unknown messageType (echo cut to 32 bytes)");
  json_edit(base_sent, "result", "\"a\\nb\\u0001c\"", json);
  expect_error(json, "field \"result\": unknown value \"a?b?c\"",
               "control characters in an echoed value");
  /* 31 x 'm' then a 2-byte character: the cut backs off to 31 bytes. */
  snprintf(json2, sizeof(json2), "\"%s\xc3\xa9\"", repeat('m', 31));
  json_edit(base_command, "messageType", json2, json);
  expect_error(json,
               "field \"messageType\": unknown value "
               "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\"",
               "echo cut on a character boundary");
  snprintf(json2, sizeof(json2), "\"%s\xc3\xa9\"", repeat('m', 30));
  json_edit(base_command, "messageType", json2, json);
  expect_error(json,
               "field \"messageType\": unknown value "
               "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\xc3\xa9\"",
               "echo of exactly 32 bytes kept whole");
  expect_error("{}", "field \"messageType\": missing", "empty object");
  expect_error("[]", "top level: expected an object", "top-level array");
  expect_error("[{\"messageType\":\"notification\"}]",
               "top level: expected an object", "object inside an array");
  expect_error("\"commandMessage\"", "top level: expected an object",
               "top-level string");
  expect_error("42", "top level: expected an object", "top-level number");
  expect_error("null", "top level: expected an object", "top-level null");
  expect_error("true", "top level: expected an object", "top-level true");
  is_int(decode_n("", 0, &msg), -1, "empty payload rejected");
  is_str(err, "empty payload", "  error for empty payload");
  is_int(bm_msg_decode(NULL, 0, &msg, err, sizeof(err)), -1,
         "NULL payload rejected");
  expect_error_prefix("   ", 3, "invalid JSON: ", "whitespace only");

  /* Exactly the limit (padded with JSON whitespace) decodes. */
  memset(big, ' ', sizeof(big));
  memcpy(big, base_command, len);
  is_int(decode_n(big, BM_MSG_MAX_SIZE, &msg), 0,
         "payload of exactly BM_MSG_MAX_SIZE bytes decodes");
  is_int(decode_n(big, BM_MSG_MAX_SIZE + 1, &msg), -1,
         "one byte more is rejected");
  is_str(err, "payload of 65537 bytes exceeds the limit of 65536 bytes",
         "  error names the size");
  /* The size is checked before anything is read. */
  is_int(bm_msg_decode(big, (size_t)1 << 40, &msg, err, sizeof(err)), -1,
         "huge len rejected without reading");

  diag("envelope: truncated and malformed JSON");
  for (size_t i = 1; i < len; i++)
    if (decode_n(base_command, i, &msg) != -1 || strncmp(err, "invalid JSON",
                                                         12) != 0) {
      diag("prefix of %zu bytes: %s", i, err);
      bad++;
    }
  is_int(bad, 0, "all %zu proper prefixes of a command rejected as invalid "
                 "JSON", len - 1);
  bad = 0;
  for (size_t i = 1; i < strlen(SPEC_NOTIFICATION); i++)
    if (decode_n(SPEC_NOTIFICATION, i, &msg) != -1)
      bad++;
  is_int(bad, 0, "all proper prefixes of the spec notification rejected");
  expect_error_prefix(base_command, len - 1, "invalid JSON: parse error",
                      "missing closing brace");
  snprintf(json, sizeof(json), "%sx", base_command);
  expect_error_prefix(json, strlen(json), "invalid JSON: ",
                      "trailing garbage");
  snprintf(json, sizeof(json), "%s{}", base_command);
  expect_error_prefix(json, strlen(json), "invalid JSON: ",
                      "two objects");
  snprintf(json, sizeof(json), " \n%s\n ", base_command);
  is_int(decode(json, &msg), 0, "surrounding whitespace is fine");
  json_edit(base_command, "userId", "12345,", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: ", "trailing comma");
  json_edit(base_command, "userId", "0x10", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: ", "hex number");
  json_edit(base_command, "userId", "012", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: ", "leading zero");
  json_edit(base_command, "brand", "'Bimetri'", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: ", "single quotes");
  json_edit(base_command, "brand", "\"a\tb\"", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: ",
                      "raw tab in a string");
  json_edit(base_command, "brand", "\"\\x41\"", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: ",
                      "invalid escape");
  /* yajl's own message spans lines that quote the payload: cut. */
  ok(strchr(err, '\n') == NULL, "  error is one line");
  ok(strstr(err, "replace-with-your-token") == NULL,
     "  error does not quote the payload");

  diag("envelope: what yajl would let through");
  json_edit(base_command, "brand", "/*c*/\"Bimetri\"", json);
  snprintf(want, sizeof(want), "invalid JSON: comment at offset %zu",
           (size_t)(strstr(json, "/*") - json));
  expect_error(json, want, "block comment");
  snprintf(json, sizeof(json), "%s//c", base_command);
  expect_error_prefix(json, strlen(json), "invalid JSON: comment",
                      "line comment");
  json_edit(base_command, "correlationId", "\"1\\u00000\"", json);
  expect_error_prefix(json, strlen(json), "invalid JSON: \\u0000 in a string",
                      "\\u0000 would truncate a string");
  json_edit(base_command, "correlationId", "\"1\\\\u0000\"", json);
  is_int(decode(json, &msg), 0, "escaped backslash then u0000 is fine");
  is_str(msg.u.command.correlation_id, "1\\u0000", "  and kept literally");
  memcpy(json, base_command, len);
  json[len] = '\0';
  json[len + 1] = ' ';
  expect_error_prefix(json, len + 1, "invalid JSON: NUL byte at offset",
                      "NUL byte after the object");
  json_edit(base_command, "brand", "\"Bi?metri\"", json);
  len = strlen(json);
  *strchr(json, '?') = '\0';
  expect_error_prefix(json, len, "invalid JSON: NUL byte at offset",
                      "NUL byte in a string");
}

static void test_utf8(void)
{
  static const char *const bad[][2] = {
      {"\"\xff\"", "byte 0xff"},
      {"\"\x80\"", "lone continuation byte"},
      {"\"\xc3\"", "truncated 2-byte sequence"},
      {"\"\xe2\x82\"", "truncated 3-byte sequence"},
      {"\"\xc0\x80\"", "overlong NUL"},
      {"\"\xc1\xbf\"", "overlong 2-byte"},
      {"\"\xe0\x80\xaf\"", "overlong 3-byte"},
      {"\"\xf0\x80\x80\xaf\"", "overlong 4-byte"},
      {"\"\xed\xa0\x80\"", "UTF-16 surrogate"},
      {"\"\xf4\x90\x80\x80\"", "above U+10FFFF"},
      {"\"\xf8\x88\x80\x80\x80\"", "5-byte form"},
      {"\"\xc3\x28\"", "bad continuation"},
      {"\"\xe2\x82\xc0\"", "bad third byte"},
      {"\"\xf0\x9d\x84\xff\"", "bad fourth byte"},
  };
  char want[64];
  static const char *const good[][2] = {
      {"\"\xc3\xa9\"", "U+00E9"},
      {"\"\xe2\x82\xac\"", "U+20AC"},
      {"\"\xef\xbf\xbf\"", "U+FFFF"},
      {"\"\xf0\x9d\x84\x9e\"", "U+1D11E"},
      {"\"\xf4\x8f\xbf\xbf\"", "U+10FFFF"},
      {"\"\xed\x9f\xbf\"", "U+D7FF"},
  };

  diag("UTF-8");
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    json_edit(base_command, "brand", bad[i][0], json);
    snprintf(want, sizeof(want), "invalid UTF-8 at offset %zu",
             (size_t)(strstr(json, "\"brand\":") - json) + 9);
    expect_error(json, want, bad[i][1]);
  }
  snprintf(json, sizeof(json), "{\"x\xff\":1,%s", base_command + 1);
  expect_error(json, "invalid UTF-8 at offset 3", "invalid UTF-8 in a key");
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    json_edit(base_command, "brand", good[i][0], json);
    int rc = decode(json, &msg);
    if (!ok(rc == 0, "%s accepted", good[i][1]))
      diag("error: %s", err);
    ok(strlen(msg.u.command.brand) == strlen(good[i][0]) - 2 &&
           strncmp(msg.u.command.brand, good[i][0] + 1,
                   strlen(good[i][0]) - 2) == 0,
       "  %s kept byte for byte", good[i][1]);
  }
}

static void test_duplicates(void)
{
  size_t pos;
  int rc;
  clock_t t0;

  diag("duplicate keys");
  json_edit(base_command, "brand", "\"Bimetri\",\"appId\":\"other.1\"", json);
  expect_error(json, "field \"appId\": duplicate key", "duplicate appId");
  json_edit(base_command, "brand", "\"Bimetri\",\"brand\":\"Bimetri\"", json);
  expect_error(json, "field \"brand\": duplicate key",
               "duplicate with the same value");
  json_edit(base_command, "output", "4,\"output\":5", json);
  expect_error(json, "field \"parameters.output\": duplicate key",
               "duplicate inside parameters");
  json_edit(base_command, "status", "0,\"status\":1", json);
  expect_error(json, "field \"parameters.status\": duplicate key",
               "duplicate status");
  json_edit(base_command, "brand", "\"Bimetri\",\"x\":{\"a\":1,\"a\":1}",
            json);
  expect_error(json, "field \"x.a\": duplicate key",
               "duplicate in an unknown nested object");
  json_edit(base_command, "brand",
            "\"Bimetri\",\"x\":[{\"k\":1},{\"j\":[{\"k\":1,\"k\":2}]}]", json);
  expect_error(json, "field \"x[].j[].k\": duplicate key",
               "duplicate in objects inside arrays");
  json_edit(base_notification, "status", "1,\"status\":1", json);
  expect_error(json, "field \"parameters.status\": duplicate key",
               "duplicate in a notification");
  json_edit(base_sent, "model", "\"BMM620\",\"model\":\"x\"", json);
  expect_error(json, "field \"data.model\": duplicate key",
               "duplicate in response data");
  json_edit(base_command, "brand", "\"Bimetri\",\"\":1,\"\":2", json);
  expect_error(json, "field \"\": duplicate key", "duplicate empty key");
  {
    /* An error's path is cut at 127 bytes, like any part of it. */
    char key[151], value[200], want[200];
    memset(key, 'a', 150);
    key[150] = '\0';
    snprintf(value, sizeof(value), "\"Bimetri\",\"%s\":{\"b\":1,\"b\":2}",
             key);
    json_edit(base_command, "brand", value, json);
    snprintf(want, sizeof(want), "field \"%.127s\": duplicate key", key);
    expect_error(json, want, "duplicate under a 150-byte key: path cut");
  }
  /* 18 members: past the insertion sort's 16. */
  json_edit(base_command, "brand",
            "\"Bimetri\",\"q1\":1,\"q2\":1,\"q3\":1,\"q4\":1,\"q5\":1,"
            "\"q6\":1,\"q7\":1,\"q8\":1,\"q9\":1,\"q2\":0",
            json);
  expect_error(json, "field \"q2\": duplicate key",
               "duplicate among 18 members");
  json_edit(base_command, "brand", "\"Bimetri\",\"resourceId\":1", json);
  is_int(decode(json, &msg), 0, "same key in different objects is fine");
  is_int(msg.u.command.parameters.resource_id, 101,
         "  and each object keeps its own");

  diag("unknown keys are ignored, order does not matter");
  json_edit(base_command, "brand",
            "\"Bimetri\",\"future\":{\"x\":[1,2.5,null,{\"y\":true}]}", json);
  is_int(decode(json, &msg), 0, "unknown members ignored");
  is_int(decode("{\"parameters\":{\"status\":1,\"output\":2,\"resourceId\":3},"
                "\"correlationId\":\"c\",\"command\":\"setExtDO\","
                "\"organizationId\":5,\"userId\":6,\"jwtToken\":\"t\","
                "\"brand\":\"b\",\"appId\":\"a.1\","
                "\"messageType\":\"commandMessage\"}",
                &msg),
         0, "reversed member order decodes");
  ok(msg.u.command.parameters.status == 1 &&
         msg.u.command.parameters.output == 2 &&
         msg.u.command.parameters.resource_id == 3 &&
         msg.u.command.organization_id == 5 && msg.u.command.user_id == 6 &&
         strcmp(msg.u.command.app_id, "a.1") == 0 &&
         strcmp(msg.u.command.jwt_token, "t") == 0,
     "  every value lands in its field");

  /* Many keys: sorted, not compared pairwise.  5000 unique keys, then the
   * same with the last one repeating the first. */
  pos = (size_t)snprintf(json, sizeof(json), "{");
  for (int i = 0; i < 5000; i++)
    pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "\"k%d\":%d,", i,
                            i);
  snprintf(json + pos, sizeof(json) - pos, "%s", base_command + 1);
  t0 = clock();
  rc = decode(json, &msg);
  is_int(rc, 0, "5000 unknown keys decode");
  diag("  in %.1f ms", (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC);
  snprintf(json + pos, sizeof(json) - pos, "\"k0\":1,%s", base_command + 1);
  expect_error(json, "field \"k0\": duplicate key",
               "5001st key repeating the first");
}

static void test_depth(void)
{
  char value[256];
  int n;

  diag("nesting depth");
  /* The top object is level 1: 63 arrays inside reach 64. */
  n = 0;
  for (int i = 0; i < 63; i++)
    value[n++] = '[';
  for (int i = 0; i < 63; i++)
    value[n++] = ']';
  value[n] = '\0';
  json_edit(base_command, "organizationId", "23456,\"deep\":0", json2);
  json_edit(json2, "deep", value, json);
  is_int(decode(json, &msg), 0, "64 levels decode");
  memmove(value + 1, value, strlen(value) + 1);
  value[0] = '[';
  strcat(value, "]");
  json_edit(json2, "deep", value, json);
  expect_error_prefix(json, strlen(json),
                      "invalid JSON: nested deeper than 64",
                      "65 levels rejected");
  json_edit(json2, "deep", "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"",
            json);
  is_int(decode(json, &msg), 0, "brackets inside strings do not count");
}

static void test_error_buffer(void)
{
  char small[10];

  diag("the error buffer");
  json_edit(base_command, "userId", NULL, json);
  is_int(bm_msg_decode(json, strlen(json), &msg, NULL, 0), -1,
         "NULL err is allowed");
  is_int(bm_msg_decode(json, strlen(json), &msg, NULL, 100), -1,
         "NULL err with a length is allowed");
  memset(small, 'X', sizeof(small));
  is_int(bm_msg_decode(json, strlen(json), &msg, small, sizeof(small)), -1,
         "short err buffer");
  is_str(small, "field \"us", "  error cut to errlen-1 bytes");
  small[0] = 'X';
  is_int(bm_msg_decode(json, strlen(json), &msg, small, 1), -1,
         "one-byte err buffer");
  is_int(small[0], '\0', "  holds the empty string");
  small[0] = 'X';
  is_int(bm_msg_decode(json, strlen(json), &msg, small, 0), -1,
         "zero-length err buffer");
  is_int(small[0], 'X', "  untouched");
  strcpy(err, "stale");
  is_int(bm_msg_decode(base_command, strlen(base_command), &msg, err,
                       sizeof(err)),
         0, "success");
  is_str(err, "", "  clears err");

  /* len, not the NUL, ends the payload. */
  snprintf(json, sizeof(json), "%sGARBAGE", base_command);
  is_int(decode_n(json, strlen(base_command), &msg), 0,
         "bytes after len are not read");
}

static void test_result_names(void)
{
  static const char *const names[] = {NULL, "sent", "not_send", "failed",
                                      "send_no_ack", "unauthorized"};

  diag("result names");
  for (int i = BM_RESULT_SENT; i <= BM_RESULT_UNAUTHORIZED; i++) {
    is_str(bm_result_name((enum bm_result)i), names[i], "name of %d", i);
    is_int(bm_result_parse(names[i]), i, "parse %s", names[i]);
  }
  ok(bm_result_name((enum bm_result)0) == NULL, "name of 0 is NULL");
  ok(bm_result_name((enum bm_result)6) == NULL, "name of 6 is NULL");
  ok(bm_result_name((enum bm_result)-1) == NULL, "name of -1 is NULL");
  is_int(bm_result_parse("SENT"), 0, "parse is case-sensitive");
  is_int(bm_result_parse(""), 0, "parse of empty is 0");
  is_int(bm_result_parse("sent "), 0, "parse of \"sent \" is 0");
  is_int(bm_result_parse(NULL), 0, "parse of NULL is 0");
}

int main(void)
{
  json_compact(SPEC_COMMAND, base_command);
  json_compact(SPEC_RESPONSE_SENT, base_sent);
  json_compact(SPEC_RESPONSE_NOT_SEND, base_not_send);
  json_compact(SPEC_NOTIFICATION, base_notification);

  test_result_names();
  test_spec_command();
  test_spec_response_sent();
  test_spec_response_not_send();
  test_spec_notification();
  test_seed_files();
  test_encode_spec();
  test_encode_optional();
  test_encode_small_buffer();
  test_escaping();
  test_round_trip_command();
  test_round_trip_response();
  test_round_trip_notification();
  test_command_errors();
  test_no_token_left();
  test_string_lengths();
  test_response_errors();
  test_notification_errors();
  test_spare_fields();
  test_envelope_errors();
  test_utf8();
  test_duplicates();
  test_depth();
  test_error_buffer();
  return done_testing();
}
