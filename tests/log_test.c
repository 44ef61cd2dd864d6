/*
 * log_test.c - unit tests of the log module (src/log.h): lines reach the
 * installed sink with their level, truncated at 1 KiB, control characters
 * replaced; lines above the maximum level are dropped before the sink;
 * NULL restores the default.
 */
#include "log.h"

#include <string.h>

#include "tap.h"

static int calls, last_level;
static char last_line[2048];

static void capture(int level, const char *line, void *ctx)
{
  (void)ctx;
  calls++;
  last_level = level;
  snprintf(last_line, sizeof(last_line), "%s", line);
}

int main(void)
{
  char big[1500];

  bm_log_set_sink(capture, NULL);
  BM_DEBUG("relay %s is %d", "pump", 1);
  is_int(calls, 1, "by default a debug line reaches the sink");
  is_int(last_level, BM_LOG_DEBUG, "with its level");
  is_str(last_line, "relay pump is 1", "formatted");

  bm_log_set_max_level(BM_LOG_INFO);
  BM_DEBUG("dropped %d", 2);
  is_int(calls, 1, "above the maximum level a line is dropped");
  is_str(last_line, "relay pump is 1", "and not formatted into the sink");
  BM_INFO("kept %d", 3);
  is_int(calls, 2, "a line at the maximum level is kept");
  is_str(last_line, "kept 3", "as written");
  BM_ERROR("error %d", 4);
  is_int(calls, 3, "a more severe one too");
  is_int(last_level, BM_LOG_ERR, "with its level");

  bm_log_set_max_level(BM_LOG_ERR);
  BM_WARNING("warning");
  is_int(calls, 3, "a warning is dropped when only errors are wanted");
  bm_log_set_max_level(BM_LOG_DEBUG);
  BM_DEBUG("back");
  is_int(calls, 4, "BM_LOG_DEBUG lets every line through again");

  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  BM_INFO("%s", big);
  is_int((int)strlen(last_line), 1023, "a line longer than 1 KiB is truncated");

  BM_WARNING("gateway \"%s\": reason \"%s\"", "gw",
             "busy\n[error] bimetri plugin: forged\r\x1b[2J\x7f\t.\xc2\x9b" "1m");
  is_str(last_line,
         "gateway \"gw\": reason \"busy?[error] bimetri plugin: forged??[2J??.??1m\"",
         "control characters, C0 and C1, become '?': one call, one line");

  bm_log_set_sink(NULL, NULL);
  BM_DEBUG("to stderr");
  is_int(calls, 6, "NULL restores the default sink: ours sees no more lines");
  return done_testing();
}
