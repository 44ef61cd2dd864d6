/*
 * message.h - the gateway's MQTT command API (setExtDO), encoded and decoded.
 *
 * Three JSON envelopes travel over MQTT (../shared/protocol):
 *
 *   commandMessage   app -> gateway on resource/commands
 *     {"messageType":"commandMessage","appId":"flexyWattApp.1",
 *      "brand":"Bimetri","jwtToken":"...","userId":12345,
 *      "organizationId":23456,"command":"setExtDO","correlationId":"100",
 *      "parameters":{"resourceId":101,"output":4,"status":0}}
 *   commandResponse  gateway -> app on application/third-party/<app>/<inst>
 *     {"messageType":"commandResponse","correlationId":"100",
 *      "result":"sent","reason":"Command Queued",
 *      "data":{"command":"setExtDO","resourceId":101,"brand":"Bimetri",
 *              "model":"BMM620","networkId":"26:AA:E0:23:23:5E"}}
 *   notification     gateway -> app, same topic
 *     {"messageType":"notification","appId":"flexyWattApp.1",
 *      "correlationId":"100","command":"setExtDO",
 *      "notificationType":"extDOStateChanged","userName":"Flexywatt User",
 *      "userId":12345,"parameters":{"resourceId":101,"brand":"Bimetri",
 *      "model":"BMM620","networkId":"26:AA:E0:23:23:5E",
 *      "organizationId":23456,"output":4,"status":1}}
 *
 * Validation rule (decode): the payload is at most BM_MSG_MAX_SIZE bytes of
 * UTF-8 JSON whose top level is an object.  Every field the envelope requires
 * is present with its JSON type: strings are strings (never numbers), numbers
 * are integers (never strings, fractions or exponents) within the ranges
 * below, objects are objects.  Strings are at most the size of their buffer
 * minus one; a longer one is an error, never truncated.  A key that appears
 * twice in one object is an error.  NUL bytes, the escape \u0000, comments,
 * UTF-8 that is not RFC 3629's (overlong forms, surrogates) and nesting
 * deeper than 64 levels are errors too.  What a string holds that would
 * not print is kept as '?', one per byte (bm_str_printable): control
 * characters, C0 ones escaped (raw, they are invalid JSON), C1 ones and
 * DEL raw or escaped ("\n", "\u001b", "\u009b": the strings end up in
 * log lines and notifications, one line each, and in terminals), and the
 * bytes of an escaped lone low surrogate ("\uDC00";
 * yajl itself turns a lone high one into '?').  Keys the envelope does
 * not define are ignored (the gateway may add fields).  On any error
 * out->type is 0 and nothing else of `out` may be used, and `err` names the
 * field and what was wrong with it.
 *
 * Spare fields: those of a commandResponse or notification that the plugin
 * never acts on (reason, data and its members; command, userName, userId
 * and parameters' brand, model, networkId, organizationId) are read by the
 * same rule, but a bad one does not fail the decode: it reads as absent
 * (empty, has_... false, data NULL; a reason too long is cut to its
 * buffer, on a character boundary) and the decode succeeds with `err`
 * naming it, as for an error (the first such field; with no room in err,
 * unreported).  A state is never lost over a field the plugin does not
 * use; the caller reports the field.
 *
 *   resourceId, userId, organizationId : 0 .. 2^53-1 (JSON-safe integer)
 *   output                             : 0 .. 65535
 *   status                             : 0 or 1
 *   result                             : sent | not_send | failed |
 *                                        send_no_ack | unauthorized
 *   correlationId                      : 1 .. BM_MSG_ID_SIZE-1 bytes
 *
 * commandResponse requires correlationId, result; reason and data are
 * optional (data's members are each optional, typed when present).
 * notification requires correlationId only in the sense of the protocol's
 * "same-as-request-or-omitted": it may be absent (has_correlation_id false)
 * and an empty string counts as absent.  notification requires appId,
 * notificationType; when notificationType is "extDOStateChanged" it also
 * requires parameters with resourceId, output and status; other
 * notificationTypes decode with has_state false and their parameters
 * unchecked.  command, userName, userId are optional, typed when present.
 * commandMessage requires every field of the envelope, and for command
 * "setExtDO" the three parameters.
 *
 * Encoding produces compact JSON with the keys in the order shown above.
 * Encoders only assert (the caller built the struct); they fail only when
 * the output buffer is too small.  Absent optional members are omitted;
 * "reason" is always written; a command other than "setExtDO" is encoded
 * with "parameters":{}.
 *
 * Value types below hold their strings inline, so decoding allocates nothing
 * that outlives the call and the structs can be copied freely.
 */
#ifndef BM_MESSAGE_H
#define BM_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BM_MSG_MAX_SIZE 65536 /* larger payloads are rejected unparsed */
#define BM_MSG_ID_SIZE 128    /* correlationId, appId, incl. NUL */
#define BM_MSG_STR_SIZE 256   /* reason, userName, model, ... incl. NUL */
#define BM_MSG_TOKEN_SIZE 8192 /* jwtToken incl. NUL */
#define BM_MSG_MAX_SAFE_INT 9007199254740991LL /* 2^53 - 1 */

enum bm_msg_type {
  BM_MSG_COMMAND = 1, /* commandMessage */
  BM_MSG_RESPONSE,    /* commandResponse */
  BM_MSG_NOTIFICATION /* notification */
};

enum bm_result {
  BM_RESULT_SENT = 1,
  BM_RESULT_NOT_SEND,
  BM_RESULT_FAILED,
  BM_RESULT_SEND_NO_ACK,
  BM_RESULT_UNAUTHORIZED
};

/* The relay address and state carried by setExtDO and extDOStateChanged. */
struct bm_ext_do {
  int64_t resource_id;
  int output;
  int status; /* 0 off/open, 1 on/closed */
};

/* commandMessage.  For encoding, every string must be NUL-terminated. */
struct bm_command {
  char app_id[BM_MSG_ID_SIZE];
  char brand[BM_MSG_STR_SIZE];
  char jwt_token[BM_MSG_TOKEN_SIZE];
  int64_t user_id;
  int64_t organization_id;
  char command[BM_MSG_STR_SIZE]; /* "setExtDO" */
  char correlation_id[BM_MSG_ID_SIZE];
  struct bm_ext_do parameters; /* meaningful when command is "setExtDO" */
};

/* commandResponse.  Absent optional strings are empty, absent numbers have
 * their has_ flag false. */
struct bm_response {
  char correlation_id[BM_MSG_ID_SIZE];
  enum bm_result result;
  char reason[BM_MSG_STR_SIZE];
  bool has_data;
  char data_command[BM_MSG_STR_SIZE];
  bool has_resource_id;
  int64_t resource_id;
  bool has_user_id;
  int64_t user_id;
  char brand[BM_MSG_STR_SIZE];
  char model[BM_MSG_STR_SIZE];
  char network_id[BM_MSG_STR_SIZE];
};

/* notification. */
struct bm_notification {
  char app_id[BM_MSG_ID_SIZE];
  bool has_correlation_id;
  char correlation_id[BM_MSG_ID_SIZE];
  char command[BM_MSG_STR_SIZE];
  char notification_type[BM_MSG_STR_SIZE];
  char user_name[BM_MSG_STR_SIZE];
  bool has_user_id;
  int64_t user_id;
  bool has_state; /* true iff notification_type is "extDOStateChanged" */
  struct bm_ext_do state;
  char brand[BM_MSG_STR_SIZE];
  char model[BM_MSG_STR_SIZE];
  char network_id[BM_MSG_STR_SIZE];
  bool has_organization_id;
  int64_t organization_id;
};

struct bm_msg {
  enum bm_msg_type type;
  union {
    struct bm_command command;
    struct bm_response response;
    struct bm_notification notification;
  } u;
};

/* Decodes one MQTT payload (not NUL-terminated; `len` bytes) into `out`.
 * Returns 0 on success, `err` (if not NULL) then empty or naming a bad spare
 * field.  Returns -1 when the payload is malformed, oversized
 * or of an unknown messageType; then `err` (if not NULL) holds a one-line
 * reason of at most errlen-1 bytes naming the field, e.g.
 * "field \"parameters.status\": expected 0 or 1".  Never reads past len,
 * allocates only transiently (the yajl tree), thread-safe.  Uses about
 * 70 KiB of stack (a copy of the payload). */
int bm_msg_decode(const void *payload, size_t len, struct bm_msg *out,
                  char *err, size_t errlen);

/* Encoders write compact JSON and a terminating NUL into buf (capacity cap).
 * They return the JSON's length without the NUL, or -1 when cap is too small
 * (buf then holds nothing useful). */
int bm_msg_encode_command(const struct bm_command *c, char *buf, size_t cap);
int bm_msg_encode_response(const struct bm_response *r, char *buf, size_t cap);
int bm_msg_encode_notification(const struct bm_notification *n, char *buf,
                               size_t cap);

/* "sent", "not_send", ... for a result; NULL for an invalid value. */
const char *bm_result_name(enum bm_result r);
/* The result for its protocol name; 0 when the name is unknown. */
enum bm_result bm_result_parse(const char *name);

#endif
