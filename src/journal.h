/*
 * journal.h - the crash-safe, append-only correlation journal of a gateway.
 *
 * After a reconnect, a restart or a kill -9 the plugin must know every
 * relay's last confirmed state, every command still in flight and the
 * confirmations it already applied.  The gateway thread appends a record
 * for each of these events; on start the journal is replayed record by
 * record into a fresh relay table.  With sync mode "always" a command's
 * record is on disk before its PUBLISH leaves: the caller appends the
 * records of one loop turn, calls bm_journal_sync once (group commit), and
 * only then publishes.
 *
 * This module knows the file and the record types, not their meaning:
 * which records to replay into what is the caller's business.
 *
 * File format
 *
 * Integers are little-endian and fixed width; offsets are in bytes.  The
 * file is a header followed by records, back to back, without padding:
 *
 *   offset size  header (BM_JOURNAL_HEADER_SIZE = 28 bytes)
 *        0    4  magic "BMJ1" (42 4D 4A 31)
 *        4    4  format version, u32: 1
 *        8    8  creation time, i64, ms since the epoch (informative)
 *       16    8  first_seq, u64 >= 1: the sequence number of the first
 *                record; 1 in a new journal, and in a compacted one the
 *                number the old journal had reached, so a record number
 *                is never used twice for one path
 *       24    4  CRC-32C (src/crc32c.h) of bytes 0..23
 *
 *   offset size  record (L = payload length, 17 + L bytes in all)
 *        0    4  L, u32, at most BM_JOURNAL_MAX_PAYLOAD (4096)
 *        4    1  type, u8: one of enum bm_jrec_type (1..7)
 *        5    8  seq, u64: first_seq for the first record, then +1 per record
 *       13    L  payload, by type (below)
 *     13+L    4  CRC-32C of bytes 0..12+L (everything before it)
 *
 * Payloads: "str" is a u16 length n and n bytes, no NUL among them and
 * n < the size of the field it fills (so n <= 127 for a correlationId);
 * "corr+" is a non-empty correlationId, "corr" one that may be empty.
 * A payload must fill L exactly.
 *
 *   COMMAND (1)   0 i64 time, 8 u64 cmd_seq, 16 i64 resourceId, 24 u16
 *                 output, 26 u8 status (0|1), 27 u32 attempt (< 2^31),
 *                 31 str corr+, str relay (< 64), str origin (< 128)
 *   RESPONSE (2)  0 i64 time, 8 u8 result (enum bm_result, 1..5),
 *                 9 str corr+, str reason (< 256)
 *   CONFIRM (3)   0 i64 time, 8 i64 resourceId, 16 u16 output, 18 u8 status
 *                 (0|1), 19 str corr (empty: unsolicited)
 *   TIMEOUT (4)   0 i64 time, 8 str corr+
 *   GIVE_UP (5)   0 i64 time, 8 i64 resourceId, 16 u16 output, 18 str relay
 *   STATE (6)     0 i64 time of the last change, 8 i64 resourceId, 16 u16
 *                 output, 18 i8 confirmed (-1 unknown, 0, 1), 19 u8
 *                 by_command (0|1: the state came from a command of ours),
 *                 20 u64 applied_seq, 28 str relay, then u8 n (0..8) and n
 *                 times str corr+ (the correlationIds applied last, oldest
 *                 first), then u8 m (0..64) and m times i64 (the times of
 *                 the relay's last confirmed changes, ms, oldest first: the
 *                 switch budget and minimum on/off times hold across
 *                 restarts)
 *   SEQ (7)       0 i64 time, 8 u64 cmd_seq (the highest one issued)
 *
 * A sample: a new journal created at 1700000000000 ms, then one SEQ record
 * (time 1700000000123, cmd_seq 42), 61 bytes in all:
 *
 *   00  42 4d 4a 31 01 00 00 00  00 68 e5 cf 8b 01 00 00  BMJ1.....h......
 *   10  01 00 00 00 00 00 00 00  7b 9f 90 76 10 00 00 00  ........{..v....
 *   20  07 01 00 00 00 00 00 00  00 7b 68 e5 cf 8b 01 00  .........{h.....
 *   30  00 2a 00 00 00 00 00 00  00 b4 56 6f cd           .*........Vo.
 *
 *   (header: magic, version 1, created, first_seq 1, CRC 0x76909f7b;
 *   record at 0x1c: L 16, type 7, seq 1, time, cmd_seq 42, CRC 0xcd6f56b4;
 *   tests/journal_test.c replays exactly these bytes)
 *
 * Validity rule.  A record is valid when its 17 + L bytes are all in the
 * file, L <= 4096, the type is known, the CRC matches, seq is the expected
 * one, and the payload decodes to exactly L bytes with every field within
 * the bounds above.  The valid region is the header and the records up to,
 * not including, the first invalid one; nothing after it is ever replayed.
 *
 * Recovery (bm_journal_open), never reading outside the file or a bounded
 * window of it, and never trusting a length before checking it:
 *
 *   1. No file, or an empty one: a new journal (header written, fsync'd,
 *      and the directory fsync'd).
 *   2. A header that is short, or has a wrong magic, version or CRC: the
 *      file is renamed to the first free <path>.corrupt, <path>.corrupt.1,
 *      ... <path>.corrupt.9 and a new journal starts.  Logged as an error;
 *      when all ten names are taken the open fails instead.
 *   3. The records are replayed while valid.  Say the valid region ends at
 *      offset X before the end of the file.  Every later offset is tried
 *      as the start of a valid record whose seq is at least the expected
 *      one.
 *   4. None found: a torn or garbage tail (a crash during an append, a
 *      zero-filled block after a power loss).  The file is truncated to X
 *      and fsync'd; one warning says how many bytes were dropped.
 *   5. One found: corruption in the middle, with records after it that
 *      cannot be trusted either, because their predecessors are lost.  The
 *      whole file is first copied to the first free <path>.corrupt name
 *      (fsync'd), then the journal is truncated to X.  Logged as an error.
 *      When no name is free or the copy fails, the open fails and the file
 *      stays untouched: evidence is never destroyed without a copy.
 *   6. A <path>.tmp left by a compaction that crashed is removed: it never
 *      was the journal.
 *
 * Durability.  Appends write whole records with a loop that survives EINTR
 * and short writes; a failed write is cut back off the file (ftruncate), so
 * the file never ends in a half record this process wrote.  Compaction
 * writes <path>.tmp, fsyncs it, renames it over the journal and fsyncs the
 * directory (like Redis's aof.c); until the rename the old journal stays
 * the journal.  Sync mode "none" only drops the fsync of appends: creating,
 * recovering and compacting still fsync, because a rename of an unsynced
 * file can lose the whole journal in a crash.
 *
 * One process at a time: bm_journal_open takes an exclusive flock(2) on the
 * file and fails when another open journal (in this or another process)
 * holds it.  bm_journal_read takes no lock and writes nothing.
 *
 * A journal is not thread-safe: its owner serialises every call.
 */
#ifndef BM_JOURNAL_H
#define BM_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BM_JOURNAL_HEADER_SIZE 28
#define BM_JOURNAL_MAX_PAYLOAD 4096 /* hard maximum of L */
#define BM_JOURNAL_MAX_RECORD (17 + BM_JOURNAL_MAX_PAYLOAD)
#define BM_JOURNAL_DEFAULT_LIMIT (1024 * 1024) /* compaction bound, bytes */
#define BM_JOURNAL_CORRUPT_MAX 10 /* <path>.corrupt, .corrupt.1 .. .9 */

/* Field sizes, NUL included.  They are part of the format; journal.c checks
 * at compile time that they equal their counterparts in message.h and
 * relay.h. */
#define BM_JREC_CORR_SIZE 128   /* BM_MSG_ID_SIZE */
#define BM_JREC_NAME_SIZE 64    /* BM_RELAY_NAME_SIZE */
#define BM_JREC_ORIGIN_SIZE 128 /* BM_ORIGIN_SIZE */
#define BM_JREC_REASON_SIZE 256 /* BM_MSG_STR_SIZE */
#define BM_JREC_APPLIED_MAX 8   /* correlationIds a STATE remembers */
#define BM_JREC_SWITCHES_MAX 64 /* switch times a STATE remembers */

enum bm_jrec_type {
  BM_JREC_COMMAND = 1, /* a setExtDO command about to be published */
  BM_JREC_RESPONSE,    /* its commandResponse arrived */
  BM_JREC_CONFIRM,     /* an extDOStateChanged was applied to a relay */
  BM_JREC_TIMEOUT,     /* a command timed out (no answer in time) */
  BM_JREC_GIVE_UP,     /* a relay stopped retrying */
  BM_JREC_STATE,       /* snapshot: one relay's confirmed state */
  BM_JREC_SEQ          /* snapshot: the highest cmd_seq issued */
};

struct bm_jrec_command {
  uint64_t cmd_seq;                /* the relay table's command sequence */
  char corr[BM_JREC_CORR_SIZE];    /* correlationId, non-empty */
  char relay[BM_JREC_NAME_SIZE];   /* relay name */
  int64_t resource_id;
  int output;                      /* 0..65535 */
  int status;                      /* desired: 0 or 1 */
  int attempt;                     /* 1 for the first try; 0..INT32_MAX */
  char origin[BM_JREC_ORIGIN_SIZE]; /* trigger, rule or manual */
};

struct bm_jrec_response {
  char corr[BM_JREC_CORR_SIZE];    /* non-empty */
  int result;                      /* enum bm_result (message.h), 1..5 */
  char reason[BM_JREC_REASON_SIZE];
};

struct bm_jrec_confirm {
  char corr[BM_JREC_CORR_SIZE];    /* "" for an unsolicited change */
  int64_t resource_id;
  int output;                      /* 0..65535 */
  int status;                      /* 0 or 1 */
};

struct bm_jrec_timeout {
  char corr[BM_JREC_CORR_SIZE];    /* non-empty */
};

struct bm_jrec_give_up {
  char relay[BM_JREC_NAME_SIZE];
  int64_t resource_id;
  int output;                      /* 0..65535 */
};

struct bm_jrec_state {
  char relay[BM_JREC_NAME_SIZE];
  int64_t resource_id;
  int output;                      /* 0..65535 */
  int confirmed;                   /* -1 unknown, 0, 1 */
  int by_command;                  /* 0|1: set by a command of ours */
  uint64_t applied_seq;            /* cmd_seq of the last applied confirm */
  int n_applied;                   /* 0..BM_JREC_APPLIED_MAX */
  char applied[BM_JREC_APPLIED_MAX][BM_JREC_CORR_SIZE]; /* [0, n) used */
  int n_switches;                  /* 0..BM_JREC_SWITCHES_MAX */
  int64_t switches[BM_JREC_SWITCHES_MAX]; /* ms, oldest first */
};

struct bm_jrec_seq {
  uint64_t cmd_seq;                /* the highest cmd_seq issued so far */
};

/* One journal record: a value type with its strings inline, freely copied.
 * Invariants (checked by bm_journal_append, guaranteed on replay): `type`
 * is one of enum bm_jrec_type and only u.<that type> is meaningful; every
 * string of it is NUL-terminated within its array, and non-empty where its
 * comment says so; the integers are within the ranges in the comments.
 * Replay zeroes the whole struct before filling it. */
struct bm_jrec {
  enum bm_jrec_type type;
  int64_t time_ms; /* wall clock, ms since the epoch; STATE: last change */
  union {
    struct bm_jrec_command command;
    struct bm_jrec_response response;
    struct bm_jrec_confirm confirm;
    struct bm_jrec_timeout timeout;
    struct bm_jrec_give_up give_up;
    struct bm_jrec_state state;
    struct bm_jrec_seq seq;
  } u;
};

/* "command", "response", ...; NULL for a value outside the enum. */
const char *bm_jrec_type_name(enum bm_jrec_type type);

/* What bm_journal_sync does; which turns call it is the caller's choice
 * (the gateway: turns with commands under ALWAYS, every turn that wrote a
 * record under FULL). */
enum bm_journal_sync_mode {
  BM_JOURNAL_SYNC_NONE,   /* appends are never fsync'd (the OS decides) */
  BM_JOURNAL_SYNC_ALWAYS, /* bm_journal_sync fsyncs what was appended */
  BM_JOURNAL_SYNC_FULL    /* the same; the caller syncs every turn */
};

/* Parses "none", "always" or "full" (case-insensitive) into *out.  Returns
 * 0, or -1 for any other string (then *out is unchanged). */
int bm_journal_sync_mode_parse(const char *s, enum bm_journal_sync_mode *out);

struct bm_journal;
typedef struct bm_journal bm_journal_t;

/* Called once per valid record, in file order.  seq is the record's
 * sequence number in the file.  rec is owned by the journal and valid only
 * during the call.  Returns 0 to go on; anything else aborts the read (see
 * bm_journal_open and bm_journal_read). */
typedef int (*bm_journal_replay_cb)(const struct bm_jrec *rec, uint64_t seq,
                                    void *ctx);

/* Opens the journal at `path` (copied), creating missing parent directories
 * (mode 0700) and the file (0600), or recovering an existing file as the
 * design comment above describes: replay_cb (may be NULL) sees every valid
 * record, torn tails are truncated away, corrupt files are kept aside.
 * Returns the journal, positioned to append after the last valid record,
 * or NULL when the path is empty or too long, a directory or the file cannot
 * be created, opened, locked, read or repaired, or replay_cb returned
 * nonzero; then `err` (if not NULL) holds a one-line reason of at most
 * errlen-1 bytes, and a file that existed is left as it was (except for a
 * bad header's file already renamed aside).  Recovery actions are logged
 * with bm_log; a clean open logs nothing.  The caller frees the journal
 * with bm_journal_close. */
bm_journal_t *bm_journal_open(const char *path,
                              enum bm_journal_sync_mode mode,
                              bm_journal_replay_cb replay_cb, void *ctx,
                              char *err, size_t errlen);

/* Closes the journal: syncs (mode "always"), closes and frees it.  Returns
 * 0, or -1 with errno set when the final sync or close failed (the journal
 * is freed either way).  NULL is a no-op returning 0. */
int bm_journal_close(bm_journal_t *j);

/* Appends one record (not yet fsync'd: see bm_journal_sync).  rec is only
 * read.  Returns 0, or -1 with errno set:
 *   EINVAL  rec breaks an invariant of struct bm_jrec; nothing was written;
 *   EIO     the journal is failed (below) and refuses appends;
 *   other   the write failed (ENOSPC, EIO, ...): what was written of the
 *           record was cut off again, and the file still holds exactly the
 *           records appended before.  When even that cut fails, the journal
 *           becomes failed.
 * A failed journal (a record that may be half on disk, or an fsync that
 * failed and left unknown what reached the disk) refuses appends and syncs
 * with EIO until a successful bm_journal_compact rewrites it whole.  The
 * journal logs when it becomes failed; the caller reports the -1. */
int bm_journal_append(bm_journal_t *j, const struct bm_jrec *rec);

/* Appends one record to the journal's buffer instead: bm_journal_flush
 * writes what is buffered with one write, at the end of a batch (a loop
 * turn's records), and bm_journal_append, bm_journal_sync,
 * bm_journal_compact and bm_journal_close flush first, so records stay in
 * the order appended.  A full buffer (32 KiB) is flushed first.  Returns 0,
 * or -1 with errno set: EINVAL (rec breaks an invariant; nothing was
 * buffered), EIO (the journal is failed), or the error of the flush that
 * made room (see bm_journal_flush).  Without memory for the buffer the
 * record is written at once, as by bm_journal_append. */
int bm_journal_append_buffered(bm_journal_t *j, const struct bm_jrec *rec);

/* Writes the buffered records (one write per 32 KiB, the most a buffer
 * holds).  Returns 0 (at once when nothing is buffered), or -1 with errno
 * set: then none of them is in the file (what reached it was cut off, as
 * for a failed bm_journal_append) and the sequence numbers they took are
 * given again; or, when the cut failed too, the journal is failed, whole
 * records of them may be in the file, and their numbers stay taken. */
int bm_journal_flush(bm_journal_t *j);

/* Makes the records appended so far durable.  Mode "always": fsyncs when
 * something was appended since the last sync (and fsyncs the directory when
 * a compaction's directory fsync is still owed); returns 0 at once when
 * there is nothing to do.  Mode "none": never fsyncs, returns 0.  Returns
 * -1 with errno set when an fsync failed or the journal is failed (EIO);
 * a failed file fsync makes the journal failed (see bm_journal_append). */
int bm_journal_sync(bm_journal_t *j);

/* The file's size in bytes: header plus every record appended (buffered
 * records included). */
uint64_t bm_journal_size(const bm_journal_t *j);

/* A point of the journal to cut back to (bm_journal_cut): where the next
 * record appended goes, and its sequence number. A value type. */
struct bm_journal_mark {
  uint64_t size; /* bm_journal_size */
  uint64_t seq;  /* seq of the next record */
};

/* Where the next record appended will go. */
void bm_journal_mark(const bm_journal_t *j, struct bm_journal_mark *m);

/* Takes back every record appended since m was marked on j (no compaction
 * in between): buffered ones are dropped, written ones cut off the file
 * with ftruncate, and their sequence numbers are given again. A failed
 * journal is cut too, always with ftruncate (a write whose own cut failed
 * may have left whole records past its known end; to that end when the
 * mark lies beyond it), and stays failed (what reached the disk before is
 * still unknown). This is how a loop turn whose records could not all be
 * made durable keeps a restart from finding its commands. Returns 0, or
 * -1 with errno set when the file could not be cut: then whole records of
 * them may still be in it, and the journal is failed. */
int bm_journal_cut(bm_journal_t *j, const struct bm_journal_mark *m);

/* Sets the size bound of bm_journal_needs_compaction (default
 * BM_JOURNAL_DEFAULT_LIMIT). */
void bm_journal_set_limit(bm_journal_t *j, uint64_t bytes);

/* True when the file has outgrown both the limit and 4 times its size
 * right after the last compaction (so a snapshot larger than the limit does
 * not ask for a compaction on every append). */
bool bm_journal_needs_compaction(const bm_journal_t *j);

/* True while the journal refuses appends (see bm_journal_append): until a
 * successful bm_journal_compact. */
bool bm_journal_is_failed(const bm_journal_t *j);

/* A compaction in progress; see bm_journal_compact. */
struct bm_journal_snapshot;

/* Writes the snapshot: calls bm_journal_snapshot_emit once per record.
 * Returns 0, or nonzero to abort the compaction. */
typedef int (*bm_journal_snapshot_cb)(struct bm_journal_snapshot *s,
                                      void *ctx);

/* Adds one record to the snapshot being written (buffered).  Returns 0, or
 * -1 with errno set (EINVAL for a record breaking struct bm_jrec's
 * invariants, or the write error); after a failure every further emit
 * fails and the compaction fails even if the callback returns 0. */
int bm_journal_snapshot_emit(struct bm_journal_snapshot *s,
                             const struct bm_jrec *rec);

/* Replaces the journal with the snapshot `cb` emits: typically a SEQ
 * record, a STATE per relay, and the COMMAND (and RESPONSE) records of the
 * commands still pending.  Writes <path>.tmp (header, records numbered on
 * from the journal's sequence), fsyncs it, renames it over the journal,
 * fsyncs the directory; appends then go to the new file.  Returns 0.
 * Returns -1 with errno set and logs the failed step when cb returns
 * nonzero or any step fails: before the rename the old journal is intact
 * and still the one appended to, and <path>.tmp is removed; when only the
 * final directory fsync failed, the new journal is in place and usable and
 * the next bm_journal_sync retries that fsync.  A successful compaction
 * also clears a failed journal. */
int bm_journal_compact(bm_journal_t *j, bm_journal_snapshot_cb cb, void *ctx);

/* What bm_journal_read found. */
struct bm_journal_info {
  int64_t created_ms;  /* the header's creation time */
  uint64_t first_seq;  /* the header's first_seq */
  uint64_t records;    /* valid records passed to the callback */
  uint64_t valid_end;  /* offset just after the last valid record */
  uint64_t file_size;  /* the size when reading started */
  char stop[64];       /* why reading stopped: "end of file", "torn
                          record", "bad checksum", ... */
};

/* Reads the journal at `path` without changing anything: no lock, no
 * write, no truncation, no rename, so it is safe while the plugin appends
 * (a record being written reads as a torn one and ends the reading).
 * Calls cb (may be NULL) for every valid record up to the first invalid one
 * and fills *info (may be NULL).  Returns 0 when the header was valid,
 * whatever ended the records.  Returns -1 when the file cannot be opened or
 * read, its header is invalid, or cb returned nonzero; then `err` (if not
 * NULL) holds a one-line reason of at most errlen-1 bytes and *info holds
 * what was read up to there. */
int bm_journal_read(const char *path, bm_journal_replay_cb cb, void *ctx,
                    struct bm_journal_info *info, char *err, size_t errlen);

/* The system calls through which the journal changes files, so tests can
 * inject failures (SQLite's test/ioerr.test idea).  They behave like the
 * libc functions of the same name; a NULL member means the libc one. */
struct bm_journal_io {
  ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
  int (*fsync)(int fd);
  int (*ftruncate)(int fd, off_t len);
  int (*rename)(const char *from, const char *to);
};

/* Routes the journal's later appends, syncs and compactions through io
 * (copied; NULL restores libc).  bm_journal_open always uses libc. */
void bm_journal_set_io(bm_journal_t *j, const struct bm_journal_io *io);

#endif
