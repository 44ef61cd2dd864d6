/*
 * fuzz_journal.c - libFuzzer harness: any bytes as a journal file, through
 * the read-only reader and through recovery (bm_journal_open, which may cut
 * a tail or copy a corrupt file aside), then one append to what is left.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"

static char dir[64];
static char path[128];

static void quiet(int level, const char *line, void *ctx)
{
  (void)level;
  (void)line;
  (void)ctx;
}

static int count(const struct bm_jrec *rec, uint64_t seq, void *ctx)
{
  (void)rec;
  (void)seq;
  ++*(unsigned long *)ctx;
  return 0;
}

static void clean(void)
{
  char p[160];
  unlink(path);
  snprintf(p, sizeof(p), "%s.tmp", path);
  unlink(p);
  snprintf(p, sizeof(p), "%s.corrupt", path);
  unlink(p);
  for (int i = 1; i < 10; i++) {
    snprintf(p, sizeof(p), "%s.corrupt.%d", path, i);
    unlink(p);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  bm_log_set_sink(quiet, NULL);
  snprintf(dir, sizeof(dir), "/tmp/bm-fuzz-journal.XXXXXX");
  if (!mkdtemp(dir))
    abort();
  snprintf(path, sizeof(path), "%s/j", dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  FILE *f = fopen(path, "wb");
  unsigned long n = 0;
  char err[256];
  bm_journal_t *j;

  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
    abort();
  (void)bm_journal_read(path, count, &n, NULL, err, sizeof(err));
  if ((j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, count, &n, err,
                           sizeof(err)))) {
    struct bm_jrec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_SEQ;
    rec.u.seq.cmd_seq = n;
    (void)bm_journal_append(j, &rec);
    (void)bm_journal_close(j);
  }
  clean();
  return 0;
}
