/*
 * log.h - the one logging hook of the collectd-free core.
 *
 * Core modules never print: they call bm_log(), which forwards to a sink the
 * host installs (the plugin glue forwards to collectd's plugin_log, the tools
 * and tests to stderr).  Levels use syslog's numbers, like collectd's LOG_*.
 * Every line the plugin writes starts with "bimetri plugin: "; the sink adds
 * that prefix, callers never do.
 */
#ifndef BM_LOG_H
#define BM_LOG_H

#include <stdarg.h>

#define BM_LOG_ERR 3
#define BM_LOG_WARNING 4
#define BM_LOG_NOTICE 5
#define BM_LOG_INFO 6
#define BM_LOG_DEBUG 7

typedef void (*bm_log_sink)(int level, const char *line, void *ctx);

/* Installs the sink; NULL restores the default (stderr).  Not thread-safe:
 * call before any other thread logs. */
void bm_log_set_sink(bm_log_sink sink, void *ctx);

/* Drops the lines less severe than level (a BM_LOG_* value) before they
 * are formatted: the plugin sets what its host can log at all (Debian's
 * collectd drops debug lines), so that a debug line on a hot path costs a
 * comparison.  Default BM_LOG_DEBUG: every line.  Same rule as the sink. */
void bm_log_set_max_level(int level);

/* Formats one line and hands it to the sink, unless its level is above the
 * maximum (bm_log_set_max_level).  Never fails visibly: a line
 * longer than 1 KiB is truncated.  What would not print (a newline in a
 * message's text: bm_str_printable) becomes '?': one call, one line. */
void bm_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define BM_ERROR(...) bm_log(BM_LOG_ERR, __VA_ARGS__)
#define BM_WARNING(...) bm_log(BM_LOG_WARNING, __VA_ARGS__)
#define BM_NOTICE(...) bm_log(BM_LOG_NOTICE, __VA_ARGS__)
#define BM_INFO(...) bm_log(BM_LOG_INFO, __VA_ARGS__)
#define BM_DEBUG(...) bm_log(BM_LOG_DEBUG, __VA_ARGS__)

#endif
