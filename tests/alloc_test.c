/*
 * alloc_test.c - allocation failure injection over a whole command round
 * trip (SQLite's malloc test idea).
 *
 * The round trip: a token from its file, a gateway with two relays and its
 * journal (replayed), the relay table issuing a command, its encoding, the
 * journal's group commit, the gateway's commandResponse and notification
 * decoded and applied (through bm_gateway_receive, the MQTT callback's
 * function, and through the table), a compaction, a replay of the result.
 * For N = 1, 2, ... the Nth allocation of the core fails (alloc.h).  Each
 * run must end without a crash, and the failure must either be reported
 * (an error return or a log line) or change nothing of the outcome (the
 * relay confirmed on, the journal replaying what was written).  Under
 * valgrind or ASan, no run may leak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "gateway.h"
#include "journal.h"
#include "log.h"
#include "message.h"
#include "relay.h"
#include "token.h"

#include "tap.h"

static int logged;

static void count_log(int level, const char *line, void *ctx)
{
  (void)line;
  (void)ctx;
  if (level <= BM_LOG_WARNING)
    logged++;
}

static char dir[64];
static char token_path[128];
static char journal_path[128];

static const char RESPONSE[] =
    "{\"messageType\":\"commandResponse\",\"correlationId\":\"%s\","
    "\"result\":\"sent\",\"reason\":\"Command Queued\"}";
static const char NOTIFICATION[] =
    "{\"messageType\":\"notification\",\"appId\":\"app.1\","
    "\"correlationId\":\"%s\",\"command\":\"setExtDO\","
    "\"notificationType\":\"extDOStateChanged\",\"parameters\":"
    "{\"resourceId\":101,\"output\":4,\"status\":1}}";

static int count_rec(const struct bm_jrec *rec, uint64_t seq, void *ctx)
{
  (void)rec;
  (void)seq;
  ++*(int *)ctx;
  return 0;
}

static int emit_state(struct bm_journal_snapshot *s, void *ctx)
{
  struct bm_jrec rec;
  (void)ctx;
  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_SEQ;
  rec.u.seq.cmd_seq = 1;
  return bm_journal_snapshot_emit(s, &rec);
}

/* The round trip.  Returns 1 when everything worked out, 0 when something
 * failed visibly (an error return), and sets *outcome_ok when the relay
 * ended confirmed on and the journal replays. */
static int round_trip(bool *outcome_ok)
{
  struct bm_relay_policy pol = {5, 10, 2, 1, 10};
  struct bm_token_conf tc;
  struct bm_gateway_conf *gc = NULL;
  bm_token_t *tok = NULL;
  bm_relay_table_t *t = NULL;
  bm_journal_t *j = NULL;
  bm_gateway_t *gw = NULL;
  struct bm_events ev = {0};
  struct bm_msg *msg = NULL;
  struct bm_command *cmd = NULL;
  char err[256], buf[16384], corr[BM_MSG_ID_SIZE] = "";
  struct bm_relay_view v;
  int ok_all = 0, records = 0;

  *outcome_ok = false;
  memset(&tc, 0, sizeof(tc));
  tc.kind = BM_TOKEN_FILE;
  snprintf(tc.file, sizeof(tc.file), "%s", token_path);
  if (!(tok = bm_token_new(&tc, 1700000000, err, sizeof(err))))
    goto out;

  /* The table makes a command. */
  if (!(t = bm_relay_table_new(&pol, "0123456789abcdef")) ||
      bm_relay_table_add(t, "pump", 101, 4) < 0 ||
      bm_relay_table_add(t, "fan", 102, 1) < 0)
    goto out;
  bm_relay_table_set_connected(t, true, true, 1, &ev);
  bm_relay_table_set_desired(t, 0, 1, "test", 1);
  bm_relay_table_tick(t, 1, &ev);
  for (size_t i = 0; i < ev.n; i++)
    if (ev.ev[i].kind == BM_EV_PUBLISH)
      snprintf(corr, sizeof(corr), "%s", ev.ev[i].corr);
  if (!corr[0] || ev.lost)
    goto out; /* the command was not made: reported by the missing event */

  /* Its envelope. */
  if (!(cmd = calloc(1, sizeof(*cmd))))
    goto out;
  snprintf(cmd->app_id, sizeof(cmd->app_id), "app.1");
  snprintf(cmd->brand, sizeof(cmd->brand), "Bimetri");
  snprintf(cmd->jwt_token, sizeof(cmd->jwt_token), "%s", bm_token_value(tok));
  snprintf(cmd->command, sizeof(cmd->command), "setExtDO");
  snprintf(cmd->correlation_id, sizeof(cmd->correlation_id), "%s", corr);
  cmd->parameters.resource_id = 101;
  cmd->parameters.output = 4;
  cmd->parameters.status = 1;
  if (bm_msg_encode_command(cmd, buf, sizeof(buf)) < 0)
    goto out;

  /* The journal's group commit. */
  unlink(journal_path);
  if (!(j = bm_journal_open(journal_path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL,
                            err, sizeof(err))))
    goto out;
  {
    struct bm_jrec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_COMMAND;
    rec.u.command.cmd_seq = 1;
    snprintf(rec.u.command.corr, sizeof(rec.u.command.corr), "%s", corr);
    snprintf(rec.u.command.relay, sizeof(rec.u.command.relay), "pump");
    rec.u.command.resource_id = 101;
    rec.u.command.output = 4;
    rec.u.command.status = 1;
    rec.u.command.attempt = 1;
    if (bm_journal_append(j, &rec) != 0 || bm_journal_sync(j) != 0)
      goto out;
  }

  /* The answers, decoded and applied. */
  if (!(msg = calloc(1, sizeof(*msg))))
    goto out;
  snprintf(buf, sizeof(buf), RESPONSE, corr);
  if (bm_msg_decode(buf, strlen(buf), msg, err, sizeof(err)) != 0 ||
      bm_relay_table_on_response(t, &msg->u.response, 2, &ev) != BM_APPLY_OK)
    goto out;
  snprintf(buf, sizeof(buf), NOTIFICATION, corr);
  if (bm_msg_decode(buf, strlen(buf), msg, err, sizeof(err)) != 0 ||
      bm_relay_table_on_notification(t, &msg->u.notification, 3, &ev) !=
          BM_APPLY_OK)
    goto out;

  /* Compaction, then a replay of the result. */
  if (bm_journal_compact(j, emit_state, NULL) != 0)
    goto out;
  if (bm_journal_close(j) != 0) {
    j = NULL;
    goto out;
  }
  j = NULL;
  if (!(j = bm_journal_open(journal_path, BM_JOURNAL_SYNC_ALWAYS, count_rec,
                            &records, err, sizeof(err))))
    goto out;

  /* The gateway's own path: journal replay, MQTT client, a message. */
  if (!(gc = calloc(1, sizeof(*gc))))
    goto out;
  snprintf(gc->name, sizeof(gc->name), "g");
  snprintf(gc->host, sizeof(gc->host), "127.0.0.1");
  gc->port = 1;
  gc->keepalive = 30;
  snprintf(gc->app_name, sizeof(gc->app_name), "app");
  snprintf(gc->instance_id, sizeof(gc->instance_id), "1");
  snprintf(gc->brand, sizeof(gc->brand), "Bimetri");
  gc->token = tc;
  snprintf(gc->command_topic, sizeof(gc->command_topic), "resource/commands");
  gc->qos = 2;
  gc->policy = pol;
  snprintf(gc->journal_file, sizeof(gc->journal_file), "%s.gw", journal_path);
  unlink(gc->journal_file);
  if (!(gw = bm_gateway_new(gc, NULL, err, sizeof(err))) ||
      bm_gateway_add_relay(gw, "pump", 101, 4) < 0 ||
      bm_gateway_open(gw, "alloc-test", err, sizeof(err)) != 0)
    goto out;
  bm_gateway_receive(gw, "application/third-party/app/1", buf, strlen(buf));
  ok_all = 1;
out:
  if (t && bm_relay_table_size(t) > 0) {
    bm_relay_table_view(t, 0, &v);
    *outcome_ok = v.confirmed == 1 && records >= 1;
  }
  bm_gateway_free(gw);
  free(gc);
  if (j)
    bm_journal_close(j);
  free(msg);
  free(cmd);
  bm_events_release(&ev);
  bm_relay_table_free(t);
  bm_token_free(tok);
  return ok_all;
}

int main(void)
{
  FILE *f;
  bool outcome;
  unsigned long total, n;
  int runs = 0, silent = 0, reported = 0, harmless = 0;

  bm_log_set_sink(count_log, NULL);
  snprintf(dir, sizeof(dir), "/tmp/bm-alloc-test.XXXXXX");
  if (!mkdtemp(dir))
    return 99;
  snprintf(token_path, sizeof(token_path), "%s/token", dir);
  snprintf(journal_path, sizeof(journal_path), "%s/journal", dir);
  f = fopen(token_path, "w");
  fputs("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE4MDAwMDAwMDB9.c2ln\n", f);
  fclose(f);
  if (bm_gateway_library_init() != 0)
    return 99;

  bm_alloc_fail_at(0);
  ok(round_trip(&outcome) && outcome, "the round trip works without failures");
  total = bm_alloc_calls();
  diag("%lu allocations in a round trip", total);
  ok(total > 20, "the core allocates through alloc.h (%lu calls)", total);

  for (n = 1; n <= total + 1; n++) {
    int rc;
    logged = 0;
    bm_alloc_fail_at(n);
    rc = round_trip(&outcome);
    runs++;
    if (!bm_alloc_failed())
      continue; /* this run made fewer allocations */
    if (!rc || logged)
      reported++;
    else if (outcome)
      harmless++;
    else {
      silent++;
      diag("allocation %lu failed silently and changed the outcome", n);
    }
  }
  bm_alloc_fail_at(0);
  /* A crash ends the program before its plan: the harness reports it. */
  is_int(runs, (int)total + 1, "all %lu runs with a failed allocation ended "
                               "without a crash", total);
  is_int(silent, 0, "every failure was reported or harmless (%d reported, %d "
                    "harmless, of %lu allocations)",
         reported, harmless, total);
  ok(round_trip(&outcome) && outcome, "the round trip works again afterwards");

  bm_gateway_library_cleanup();
  unlink(token_path);
  unlink(journal_path);
  {
    char p[160];
    snprintf(p, sizeof(p), "%s.gw", journal_path);
    unlink(p);
  }
  rmdir(dir);
  return done_testing();
}
