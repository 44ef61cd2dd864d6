/*
 * tap.h - a minimal Test Anything Protocol emitter for the unit tests.
 *
 * ok(cond, fmt, ...) prints "ok N - ..." or "not ok N - ...";
 * is_int/is_str print what was expected and got on failure;
 * done_testing() prints the plan and returns the exit status.
 */
#ifndef BM_TAP_H
#define BM_TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_count;
static int tap_failed;

static int __attribute__((format(printf, 2, 3))) ok(int cond, const char *fmt, ...)
{
  va_list ap;
  tap_count++;
  if (!cond)
    tap_failed++;
  printf("%sok %d - ", cond ? "" : "not ", tap_count);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  return cond;
}

#define is_int(got, want, ...)                                                  \
  do {                                                                          \
    int64_t got_ = (int64_t)(got), want_ = (int64_t)(want);                     \
    if (!ok(got_ == want_, __VA_ARGS__))                                        \
      printf("#   got %" PRId64 ", expected %" PRId64 "\n", got_, want_);       \
  } while (0)

#define is_str(got, want, ...)                                                  \
  do {                                                                          \
    const char *got_ = (got), *want_ = (want);                                  \
    int same_ = (got_ && want_) ? strcmp(got_, want_) == 0 : got_ == want_;     \
    if (!ok(same_, __VA_ARGS__))                                                \
      printf("#   got \"%s\", expected \"%s\"\n", got_ ? got_ : "(null)",        \
             want_ ? want_ : "(null)");                                          \
  } while (0)

static void __attribute__((format(printf, 1, 2), unused)) diag(const char *fmt, ...)
{
  va_list ap;
  printf("# ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

static int __attribute__((unused)) done_testing(void)
{
  printf("1..%d\n", tap_count);
  return tap_failed ? 1 : 0;
}

#endif
