/*
 * idmap.c - see idmap.h.
 */
#include "idmap.h"

#include "alloc.h"

#include <stdlib.h>

#define IDMAP_MAX_CAP ((size_t)1 << 28)

static size_t idmap_slot(uint64_t key, size_t cap)
{
  /* murmur3's finaliser: every key bit reaches the low bits we keep, so
   * packed keys that differ only in their high bits spread too. */
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return (size_t)key & (cap - 1);
}

void bm_idmap_release(struct bm_idmap *m)
{
  free(m->keys);
  free(m->values);
  m->keys = NULL;
  m->values = NULL;
  m->cap = 0;
  m->n = 0;
  m->has_zero = false;
}

static int idmap_grow(struct bm_idmap *m)
{
  size_t cap = m->cap ? m->cap * 2 : 16;
  uint64_t *keys = NULL;
  int *values = NULL;

  if (cap > IDMAP_MAX_CAP)
    return -1;
  keys = bm_calloc(cap, sizeof(*keys));
  values = bm_calloc(cap, sizeof(*values));
  if (!keys || !values) {
    free(keys);
    free(values);
    return -1;
  }
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->keys[i])
      continue;
    size_t j = idmap_slot(m->keys[i], cap);
    while (keys[j])
      j = (j + 1) & (cap - 1);
    keys[j] = m->keys[i];
    values[j] = m->values[i];
  }
  free(m->keys);
  free(m->values);
  m->keys = keys;
  m->values = values;
  m->cap = cap;
  return 0;
}

int bm_idmap_put(struct bm_idmap *m, uint64_t key, int value)
{
  if (key == 0) {
    m->has_zero = true;
    m->zero_value = value;
    return 0;
  }
  if ((m->n + 1) * 2 > m->cap && idmap_grow(m) != 0)
    return -1;
  size_t i = idmap_slot(key, m->cap);
  while (m->keys[i] && m->keys[i] != key)
    i = (i + 1) & (m->cap - 1);
  if (!m->keys[i])
    m->n++;
  m->keys[i] = key;
  m->values[i] = value;
  return 0;
}

int bm_idmap_get(const struct bm_idmap *m, uint64_t key)
{
  if (key == 0)
    return m->has_zero ? m->zero_value : -1;
  if (!m->cap)
    return -1;
  size_t i = idmap_slot(key, m->cap);
  while (m->keys[i]) {
    if (m->keys[i] == key)
      return m->values[i];
    i = (i + 1) & (m->cap - 1);
  }
  return -1;
}

void bm_idmap_del(struct bm_idmap *m, uint64_t key)
{
  if (key == 0) {
    m->has_zero = false;
    return;
  }
  if (!m->cap)
    return;
  size_t mask = m->cap - 1;
  size_t i = idmap_slot(key, m->cap);
  while (m->keys[i] && m->keys[i] != key)
    i = (i + 1) & mask;
  if (!m->keys[i])
    return;
  /* Backward-shift: move later members of the probe run into the hole. */
  size_t hole = i;
  for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
    size_t home = idmap_slot(m->keys[j], m->cap);
    /* j may move to hole when its home is not cyclically in (hole, j]. */
    int between = hole <= j ? (hole < home && home <= j)
                            : (hole < home || home <= j);
    if (!between) {
      m->keys[hole] = m->keys[j];
      m->values[hole] = m->values[j];
      hole = j;
    }
  }
  m->keys[hole] = 0;
  m->n--;
}

uint64_t bm_idmap_hash(const char *s)
{
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 0x100000001b3ULL;
  }
  return h;
}
