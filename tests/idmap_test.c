/*
 * idmap_test.c - unit tests of the 64-bit key -> int hash map (src/idmap.h).
 *
 * Besides the plain put/get/del cases, a seeded random walk of thousands of
 * puts and deletes is checked against a trivially correct reference array,
 * in a small dense map (long probe runs that wrap around the end of the
 * slot array, so the backward-shift deletion is exercised hard) and in a
 * large one.  The struct is visible, so the tests also check its documented
 * invariants (n, power-of-two cap, load factor at most 1/2).
 */
#include "idmap.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "tap.h"

/* xorshift64*: deterministic, seeded, good enough for test data. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

/* The documented invariants of a map: n counts the occupied slots, cap is 0
 * or a power of two, and the load factor stays at most 1/2. */
static bool map_invariants(const struct bm_idmap *m)
{
  size_t used = 0;
  if (m->cap == 0)
    return m->n == 0;
  if ((m->cap & (m->cap - 1)) != 0 || m->n * 2 > m->cap)
    return false;
  for (size_t i = 0; i < m->cap; i++)
    used += m->keys[i] != 0;
  return used == m->n;
}

/* The longest run of consecutive occupied slots (cyclic): with linear
 * probing this bounds the cost of every lookup. */
static size_t longest_run(const struct bm_idmap *m)
{
  size_t best = 0, run = 0;
  for (size_t k = 0; k < 2 * m->cap; k++) {
    if (m->keys[k & (m->cap - 1)]) {
      run++;
      if (run > best)
        best = run;
    } else {
      run = 0;
    }
  }
  return best > m->cap ? m->cap : best;
}

static void test_empty(void)
{
  struct bm_idmap m = {0};

  is_int(bm_idmap_get(&m, 42), -1, "empty map: get returns -1");
  is_int(bm_idmap_get(&m, 0), -1, "empty map: get of key 0 returns -1");
  bm_idmap_del(&m, 42); /* must not crash on a map without slots */
  is_int(m.n, 0, "empty map: del of an absent key leaves n at 0");
  ok(map_invariants(&m), "empty map: invariants hold");
  bm_idmap_release(&m);
  bm_idmap_release(&m); /* twice is harmless */
  ok(m.keys == NULL && m.cap == 0 && m.n == 0, "release of an empty map");
}

static void test_put_get_del(void)
{
  struct bm_idmap m = {0};

  is_int(bm_idmap_put(&m, 10, 100), 0, "put 10 -> 100");
  is_int(bm_idmap_put(&m, 20, 200), 0, "put 20 -> 200");
  is_int(bm_idmap_put(&m, UINT64_MAX, 7), 0, "put UINT64_MAX -> 7");
  is_int(bm_idmap_get(&m, 10), 100, "get 10");
  is_int(bm_idmap_get(&m, 20), 200, "get 20");
  is_int(bm_idmap_get(&m, UINT64_MAX), 7, "get UINT64_MAX");
  is_int(bm_idmap_get(&m, 30), -1, "get of an absent key is -1");
  is_int(m.n, 3, "n counts three keys");

  is_int(bm_idmap_put(&m, 10, 101), 0, "put replaces a value");
  is_int(bm_idmap_get(&m, 10), 101, "get sees the replaced value");
  is_int(m.n, 3, "replacing does not change n");

  is_int(bm_idmap_put(&m, 40, 0), 0, "value 0 can be stored");
  is_int(bm_idmap_get(&m, 40), 0, "value 0 is read back as 0, not absent");
  is_int(bm_idmap_put(&m, 41, -5), 0, "a negative value can be stored");
  is_int(bm_idmap_get(&m, 41), -5, "a negative value is read back");

  bm_idmap_del(&m, 20);
  is_int(bm_idmap_get(&m, 20), -1, "deleted key is gone");
  is_int(bm_idmap_get(&m, 10), 101, "other keys survive a delete");
  is_int(bm_idmap_get(&m, UINT64_MAX), 7, "UINT64_MAX survives a delete");
  is_int(m.n, 4, "n after one delete");

  bm_idmap_del(&m, 20); /* again: absent now */
  bm_idmap_del(&m, 12345);
  is_int(m.n, 4, "deleting absent keys leaves n unchanged");
  is_int(bm_idmap_get(&m, 10), 101, "deleting absent keys disturbs nothing");
  ok(map_invariants(&m), "invariants after put/del");

  bm_idmap_release(&m);
  ok(m.keys == NULL && m.values == NULL && m.cap == 0 && m.n == 0,
     "release empties the map");
  is_int(bm_idmap_get(&m, 10), -1, "released map finds nothing");
  is_int(bm_idmap_put(&m, 10, 1), 0, "released map is usable again");
  is_int(bm_idmap_get(&m, 10), 1, "and finds the new key");
  bm_idmap_release(&m);
}

static void test_key_zero(void)
{
  struct bm_idmap m = {0};

  is_int(bm_idmap_put(&m, 0, 7), 0, "put key 0");
  is_int(bm_idmap_get(&m, 0), 7, "get key 0");
  size_t n0 = m.n;
  is_int(bm_idmap_put(&m, 0, 9), 0, "put key 0 again");
  is_int(bm_idmap_get(&m, 0), 9, "key 0 replaced");
  is_int(m.n, n0, "replacing key 0 does not change n");
  /* The header says key 0 is stored as 1: keys 0 and 1 must still be
   * distinct keys of the map. */
  is_int(bm_idmap_get(&m, 1), -1, "key 1 is absent although key 0 is set");
  is_int(bm_idmap_put(&m, 1, 8), 0, "put key 1");
  is_int(bm_idmap_get(&m, 0), 9, "key 0 keeps its value after put of key 1");
  is_int(bm_idmap_get(&m, 1), 8, "key 1 has its own value");
  bm_idmap_del(&m, 1);
  is_int(bm_idmap_get(&m, 0), 9, "deleting key 1 keeps key 0");
  bm_idmap_del(&m, 0);
  is_int(bm_idmap_get(&m, 0), -1, "key 0 can be deleted");
  ok(map_invariants(&m), "invariants after key 0 / key 1");
  bm_idmap_release(&m);
}

static void test_growth(void)
{
  struct bm_idmap m = {0};
  const int n = 100000;
  bool all = true, put_ok = true;

  for (int i = 0; i < n; i++)
    if (bm_idmap_put(&m, (uint64_t)i * 7919 + 3, i) != 0)
      put_ok = false;
  ok(put_ok, "%d puts succeed", n);
  is_int(m.n, n, "n after %d puts", n);
  ok(map_invariants(&m), "invariants after growth (cap %zu)", m.cap);
  for (int i = 0; i < n && all; i++)
    if (bm_idmap_get(&m, (uint64_t)i * 7919 + 3) != i) {
      all = false;
      diag("key %d lost after growth", i);
    }
  ok(all, "every key is found after growth");
  /* Delete every other key; the rest stays findable. */
  for (int i = 0; i < n; i += 2)
    bm_idmap_del(&m, (uint64_t)i * 7919 + 3);
  all = true;
  for (int i = 0; i < n && all; i++) {
    int want = (i % 2) ? i : -1;
    if (bm_idmap_get(&m, (uint64_t)i * 7919 + 3) != want) {
      all = false;
      diag("key %d: wrong after deleting the even keys", i);
    }
  }
  ok(all, "deleting half the keys keeps the other half");
  is_int(m.n, n / 2, "n after deleting half");
  ok(map_invariants(&m), "invariants after mass deletion");
  bm_idmap_release(&m);
}

/* Keys that differ only in their high bits (packed values such as
 * resource_id << 32 | output) must still spread over the slots: the header
 * promises O(1) lookups and "Fibonacci mixing" for small packed integers. */
static void test_high_bit_keys_spread(void)
{
  struct bm_idmap m = {0};
  const int n = 4096;
  bool all = true;

  for (int i = 0; i < n; i++)
    if (bm_idmap_put(&m, (uint64_t)i << 40, i) != 0)
      all = false;
  for (int i = 0; i < n; i++)
    if (bm_idmap_get(&m, (uint64_t)i << 40) != i)
      all = false;
  ok(all, "keys i<<40 are stored and found");
  size_t run = longest_run(&m);
  ok(run < 64, "keys differing only in high bits do not form one probe run "
               "(longest run %zu of %zu slots)",
     run, m.cap);
  bm_idmap_release(&m);
}

/* Random puts and deletes against a reference array of (key, value). */
static void random_walk(const char *label, const uint64_t *universe,
                        size_t nu, int steps)
{
  struct bm_idmap m = {0};
  int *ref = malloc(nu * sizeof(*ref)); /* -1: absent */
  size_t present = 0;
  int first_bad = -1;
  char what[160] = "";

  for (size_t i = 0; i < nu; i++)
    ref[i] = -1;
  for (int s = 0; s < steps && first_bad < 0; s++) {
    size_t k = (size_t)(rng() % nu);
    unsigned op = (unsigned)(rng() % 10);

    if (op < 5) {
      int v = (int)(rng() % 1000000);
      if (bm_idmap_put(&m, universe[k], v) != 0) {
        snprintf(what, sizeof(what), "put failed");
        first_bad = s;
        break;
      }
      if (ref[k] < 0)
        present++;
      ref[k] = v;
    } else if (op < 9) {
      bm_idmap_del(&m, universe[k]);
      if (ref[k] >= 0)
        present--;
      ref[k] = -1;
    } else {
      /* a delete of a key that is certainly absent */
      bm_idmap_del(&m, 0xDEAD000000000000ULL | (rng() & 0xffff));
    }
    if (m.n != present) {
      snprintf(what, sizeof(what), "n %zu, reference %zu", m.n, present);
      first_bad = s;
      break;
    }
    /* Check all keys every step while small, a sample otherwise. */
    size_t checks = nu <= 64 ? nu : 16;
    for (size_t c = 0; c < checks; c++) {
      size_t j = nu <= 64 ? c : (size_t)(rng() % nu);
      int got = bm_idmap_get(&m, universe[j]);
      if (got != ref[j]) {
        snprintf(what, sizeof(what), "key #%zu (0x%llx): got %d, want %d", j,
                 (unsigned long long)universe[j], got, ref[j]);
        first_bad = s;
        break;
      }
    }
  }
  if (first_bad >= 0)
    diag("%s: step %d: %s", label, first_bad, what);
  ok(first_bad < 0, "%s: %d random puts/deletes agree with the reference",
     label, steps);

  bool all = true;
  for (size_t j = 0; j < nu; j++)
    if (bm_idmap_get(&m, universe[j]) != ref[j])
      all = false;
  ok(all && map_invariants(&m), "%s: final full comparison and invariants",
     label);
  free(ref);
  bm_idmap_release(&m);
}

static void test_random(void)
{
  uint64_t small[24], clustered[40], large[5000];

  /* A small universe keeps the map at 16..64 slots and densely filled, so
   * probe runs wrap around the end of the slot array. */
  for (size_t i = 0; i < 24; i++)
    small[i] = rng() | 2; /* never 0 or 1: those are tested apart */
  random_walk("small dense map", small, 24, 20000);

  /* Keys differing only in high bits share home slots: long runs, many
   * backward shifts. */
  for (size_t i = 0; i < 40; i++)
    clustered[i] = ((uint64_t)(i + 1) << 44) | 0x80;
  random_walk("colliding keys", clustered, 40, 20000);

  for (size_t i = 0; i < 5000; i++)
    large[i] = (i % 3 == 0) ? (uint64_t)i + 2 : rng() | 2;
  random_walk("large map", large, 5000, 50000);
}

static void test_hash(void)
{
  /* FNV-1a 64 reference vectors. */
  ok(bm_idmap_hash("") == 0xcbf29ce484222325ULL, "FNV-1a of \"\"");
  ok(bm_idmap_hash("a") == 0xaf63dc4c8601ec8cULL, "FNV-1a of \"a\"");
  ok(bm_idmap_hash("foobar") == 0x85944171f73967e8ULL, "FNV-1a of \"foobar\"");
  ok(bm_idmap_hash("t-1") != bm_idmap_hash("t-2"),
     "consecutive correlationIds hash apart");
  ok(bm_idmap_hash("\xff\x80") != bm_idmap_hash(""),
     "bytes above 127 are hashed");
}

int main(void)
{
  test_empty();
  test_put_get_del();
  test_key_zero();
  test_growth();
  test_high_bit_keys_spread();
  test_random();
  test_hash();
  return done_testing();
}
