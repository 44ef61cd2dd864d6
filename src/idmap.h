/*
 * idmap.h - an open-addressing hash map from 64-bit keys to int values.
 *
 * The relay table finds relays by name, by (resourceId, output) and by
 * correlationId in O(1) through these maps; keys are hashes or packed
 * values the caller verifies on a hit.  Linear probing with backward-shift
 * deletion (no tombstones), load factor at most 1/2, at most 2^28 slots.
 * Not thread-safe.
 */
#ifndef BM_IDMAP_H
#define BM_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bm_idmap {
  uint64_t *keys; /* 0 marks an empty slot; key 0 lives in zero_value */
  int *values;
  size_t cap;     /* a power of two, or 0 before the first put */
  size_t n;       /* occupied slots (key 0 not included) */
  bool has_zero;  /* key 0 is present, with value zero_value */
  int zero_value;
};

/* A zeroed struct is an empty map.  Frees the slots; the map is empty and
 * usable again afterwards. */
void bm_idmap_release(struct bm_idmap *m);

/* Sets key to value (replacing an old value).  Returns 0, or -1 when memory
 * runs out or the map is full (the map is then unchanged). */
int bm_idmap_put(struct bm_idmap *m, uint64_t key, int value);

/* Returns the value of key, or -1 when absent. */
int bm_idmap_get(const struct bm_idmap *m, uint64_t key);

/* Removes key if present. */
void bm_idmap_del(struct bm_idmap *m, uint64_t key);

/* FNV-1a 64 of a NUL-terminated string: the key for names and ids. */
uint64_t bm_idmap_hash(const char *s);

#endif
