/*
 * log.c - see log.h.
 */
#include "log.h"

#include <stdio.h>

#include "str.h"

static void bm_log_stderr(int level, const char *line, void *ctx)
{
  (void)ctx;
  static const char *names[] = {"emerg", "alert", "crit",   "error",
                                "warning", "notice", "info", "debug"};
  const char *name = (level >= 0 && level <= 7) ? names[level] : "?";
  fprintf(stderr, "[%s] bimetri: %s\n", name, line);
}

static bm_log_sink log_sink = bm_log_stderr;
static void *log_ctx;
static int log_max = BM_LOG_DEBUG;

void bm_log_set_max_level(int level) { log_max = level; }

void bm_log_set_sink(bm_log_sink sink, void *ctx)
{
  log_sink = sink ? sink : bm_log_stderr;
  log_ctx = sink ? ctx : NULL;
}

void bm_log(int level, const char *fmt, ...)
{
  char line[1024];
  va_list ap;

  if (level > log_max)
    return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  /* One call, one line: a newline in text from a message, a file or a
   * command's output must not start a line of its own (forged). */
  bm_str_printable(line);
  log_sink(level, line, log_ctx);
}
