/*
 * replay.c - runs a libFuzzer harness over its seed corpus and the crashes
 * kept as regression inputs, without libFuzzer, as a TAP test of
 * `make check`: every file of tests/fuzz/corpus/<FUZZ_NAME>/ is one test
 * point, passed when the harness returns (a crash or a sanitizer report
 * fails the whole program, under valgrind too).  Extra arguments name more
 * files or directories to run.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static void run_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  long len;

  if (!f || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET) != 0 || !(buf = malloc((size_t)len + 1)) ||
      fread(buf, 1, (size_t)len, f) != (size_t)len) {
    ok(0, "read %s", path);
  } else {
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    ok(1, "%s", path);
  }
  free(buf);
  if (f)
    fclose(f);
}

static int by_name(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *path)
{
  struct stat st;
  DIR *d;
  struct dirent *e;
  char **names = NULL;
  size_t n = 0;

  if (stat(path, &st) != 0) {
    ok(0, "no corpus at %s", path);
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    run_file(path);
    return;
  }
  if (!(d = opendir(path))) {
    ok(0, "open %s", path);
    return;
  }
  while ((e = readdir(d))) {
    char **grown;
    size_t len = strlen(path) + strlen(e->d_name) + 2;
    if (e->d_name[0] == '.')
      continue;
    if (!(grown = realloc(names, (n + 1) * sizeof(*names))))
      break;
    names = grown;
    if (!(names[n] = malloc(len)))
      break;
    snprintf(names[n++], len, "%s/%s", path, e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof(*names), by_name);
  for (size_t i = 0; i < n; i++) {
    run_file(names[i]);
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv)
{
  const char *top = getenv("top_srcdir");
  char corpus[4096];

  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);
  snprintf(corpus, sizeof(corpus), "%s/tests/fuzz/corpus/%s",
           top ? top : ".", FUZZ_NAME);
  run_path(corpus);
  for (int i = 1; i < argc; i++)
    run_path(argv[i]);
  return done_testing();
}
