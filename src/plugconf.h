/*
 * plugconf.h - the <Plugin bimetri> block, read.
 *
 * The plugin (bimetri.c, from collectd's oconfig_item_t tree) and
 * bimetri-ctl (ctl.c, from conffile.h's parse of collectd.conf) both hand
 * the block's items to this module as a conffile.h tree, and get plain
 * structs back: per <Gateway> a struct bm_gateway_conf (gateway.h) and its
 * relays, the Interlocks, the <Trigger>s (match.h) and the <Switch> rules
 * (rule.h).  Both therefore accept and refuse exactly the same
 * configurations with the same messages; nothing here creates a gateway or
 * touches the network.
 *
 * Children of the block, in order (keys case-insensitive, as collectd's):
 *
 *   <Gateway "name">  options and <Relay "name"> blocks (ResourceId, Output,
 *                     ManualControl); at most BM_PLUGCONF_MAX_GATEWAYS
 *   <Trigger "name">  a notification pattern driving a relay
 *   <Switch "name">   a value's hysteresis driving a relay
 *   Interlock "gateway" "relay" "relay" ...   never on together
 *
 * Triggers, Switches and Interlocks name Gateways and Relays defined
 * before them, possibly in an earlier block added to the same struct
 * bm_plugconf (collectd hands each <Plugin bimetri> block to the plugin
 * separately).  Every check of the plugin is made here: types, ranges,
 * names (1 to 63 of [A-Za-z0-9_.-], not starting with '-'), required
 * options, one token source, TLS options only with a CA, Port 8883 by
 * default with TLS, CertificateFile with CertificateKeyFile, Password with
 * User, relay names and addresses unique per Gateway, journal files unique
 * (compared with their directory resolved), and after each block: Trigger
 * chains without loops, at least one Gateway.
 *
 * Errors: the first error ends the block; it is reported once through the
 * caller's callback as one line (what the plugin logs after "bimetri
 * plugin: "), with the item it is about (for file and line; NULL for out
 * of memory), e.g.
 *   <Gateway "gw1">, option "Port": expects an integer from 1 to 65535, got 0
 *   <Gateway "gw1">: option "AppName" is required
 */
#ifndef BM_PLUGCONF_H
#define BM_PLUGCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conffile.h"
#include "gateway.h"
#include "match.h"
#include "rule.h"

#define BM_PLUGCONF_MAX_GATEWAYS 64
#define BM_PLUGCONF_MAX_INTERLOCK 64 /* relays in one Interlock */

/* A <Relay> block.  manual_control is resolved: the Relay's own option, or
 * the Gateway's ManualControl. */
struct bm_plugconf_relay {
  char name[BM_RELAY_NAME_SIZE];
  int64_t resource_id; /* 0 .. BM_MSG_MAX_SAFE_INT */
  int output;          /* 0 .. 65535 */
  bool manual_control;
};

/* A <Gateway> block.  c holds every option with the plugin's defaults;
 * c.journal_file is the JournalFile as given (relative paths are relative
 * to collectd's BaseDir, where the plugin runs; with join_base_dir they are
 * joined to base_dir) or <base_dir>/bimetri-<name>.journal; journal_key is
 * it with its directory resolved.  With
 * read_secrets, PasswordFile and CertificateKeyPasswordFile were read into
 * c.password and c.key_password; their paths are kept either way ("" none).
 * relays has relays_n (>= 1) entries, in the order of the blocks (a relay's
 * index is its position here). */
struct bm_plugconf_gateway {
  struct bm_gateway_conf c;
  char journal_key[BM_GW_PATH_SIZE];
  char password_file[BM_GW_PATH_SIZE];
  char key_password_file[BM_GW_PATH_SIZE];
  bool has_port; /* Port given: TLS does not change it */
  bool has_pass; /* Password or PasswordFile given */
  bool manual_control;
  /* StateInterval: seconds between two dispatches of an unchanged relay's
   * values (0: the plugin's interval, which collectd only knows later). */
  double state_interval;
  struct bm_plugconf_relay *relays;
  size_t relays_n;
};

/* An Interlock: n (2 .. 64) distinct relay indexes of one Gateway. */
struct bm_plugconf_interlock {
  int gateway;
  int relays[BM_PLUGCONF_MAX_INTERLOCK];
  int n;
};

/* Everything read so far.  Start from BM_PLUGCONF_INIT (all zero); owns
 * every array and what the triggers and rules hold: free it with
 * bm_plugconf_release.  A caller may take triggers or rules over (set the
 * pointer NULL and the count 0 before the release). */
struct bm_plugconf {
  struct bm_plugconf_gateway *gateways;
  size_t gateways_n;
  struct bm_plugconf_interlock *interlocks;
  size_t interlocks_n;
  struct bm_trigger *triggers; /* gateway and relay resolved to indexes */
  size_t triggers_n;
  struct bm_rule **rules; /* pointers: a rule holds a mutex; resolved too */
  size_t rules_n;
};
#define BM_PLUGCONF_INIT {0}

/* Receives the one error of a failed bm_plugconf_add: `where` is the item
 * it is about (NULL when out of memory), `message` one line without a
 * prefix.  Both are valid only during the call. */
typedef void (*bm_plugconf_error_fn)(void *ctx, const struct bm_conf_item *where,
                                     const char *message);

struct bm_plugconf_opts {
  const char *base_dir; /* for the default journal files; NULL: "." */
  /* Read PasswordFile and CertificateKeyPasswordFile now (the plugin);
   * otherwise only their paths are kept (bimetri-ctl reads them when it
   * connects).  A secret file readable by group or others is warned about
   * with BM_WARNING. */
  bool read_secrets;
  /* Join a relative JournalFile to base_dir (bimetri-ctl: it does not run
   * in BaseDir, as the plugin does). */
  bool join_base_dir;
  bm_plugconf_error_fn error; /* may be NULL */
  void *ctx;
};

/* Interprets the children of one <Plugin bimetri> block (`block` itself is
 * not looked at but for its children, and is the `where` of block-wide
 * errors) and appends what they define to pc.  Returns 0, or -1 after one
 * call of o->error; pc may then hold part of the block and must still be
 * released. */
int bm_plugconf_add(struct bm_plugconf *pc, const struct bm_conf_item *block,
                    const struct bm_plugconf_opts *o);

/* Frees everything pc owns (clearing the secrets first) and zeroes it. */
void bm_plugconf_release(struct bm_plugconf *pc);

/* The plugin's defaults of a Gateway named `name` (truncated to fit):
 * zeroes c first.  No journal file is set. */
void bm_plugconf_gateway_defaults(struct bm_gateway_conf *c, const char *name);

/* Whether s may be an AppName or InstanceId: non-empty, without '/', '+',
 * '#', '.', white space or control characters (they become topic levels). */
bool bm_plugconf_valid_topic_part(const char *s);

/* The index of the Gateway or of its Relay of that name, or -1. */
int bm_plugconf_find_gateway(const struct bm_plugconf *pc, const char *name);
int bm_plugconf_find_relay(const struct bm_plugconf_gateway *g,
                           const char *name);

#endif
