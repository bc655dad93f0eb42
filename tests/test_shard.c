/* test_shard.c — per-epoch sharding: every sample exactly once per epoch over all ranks and
 * steps, global batches independent of the rank count, permutations keyed by (seed, epoch). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "nest/shard.h"
#include "test_util.h"

static void test_steps_and_rows(void **state) {
  assert_int_equal(nest_shard_steps(0, 8), 0);
  assert_int_equal(nest_shard_steps(1, 8), 1);
  assert_int_equal(nest_shard_steps(16, 8), 2);
  assert_int_equal(nest_shard_steps(17, 8), 3);
  assert_int_equal(nest_shard_steps(60000, 128), 469);
  assert_int_equal(nest_shard_batch_rows(17, 8, 0), 8);
  assert_int_equal(nest_shard_batch_rows(17, 8, 1), 8);
  assert_int_equal(nest_shard_batch_rows(17, 8, 2), 1);
  assert_int_equal(nest_shard_batch_rows(17, 8, 3), 0); /* past the end */
  assert_int_equal(nest_shard_batch_rows(17, 8, -1), 0);
  assert_int_equal(nest_shard_batch_rows(60000, 128, 468), 60000 - 468 * 128);
}

static void test_slices_exact(void **state) {
  /* b = 7 rows over P = 3: ranks get 3, 2, 2 contiguous rows. */
  int64_t begin;
  int count;
  nest_shard_slice(100, 7, 2, 0, 3, &begin, &count);
  assert_int_equal(begin, 14);
  assert_int_equal(count, 3);
  nest_shard_slice(100, 7, 2, 1, 3, &begin, &count);
  assert_int_equal(begin, 17);
  assert_int_equal(count, 2);
  nest_shard_slice(100, 7, 2, 2, 3, &begin, &count);
  assert_int_equal(begin, 19);
  assert_int_equal(count, 2);
  /* Last, short batch: 100 - 14*7 = 2 rows over 3 ranks: 1, 1, 0. */
  nest_shard_slice(100, 7, 14, 2, 3, &begin, &count);
  assert_int_equal(count, 0);
  nest_shard_slice(100, 7, 14, 1, 3, &begin, &count);
  assert_int_equal(begin, 99);
  assert_int_equal(count, 1);
}

/* For each (n, batch) and P = 1..5: over all steps and ranks of an epoch, the positions
 * [begin, begin+count) tile [0, n) in order; so perm[...] covers the dataset exactly once and
 * each step's global batch is perm[s*B, s*B + b) whatever P is. */
static void test_epoch_coverage(void **state) {
  const int64_t ns[] = {1, 5, 17, 64, 100, 1001};
  const int batches[] = {1, 3, 4, 7, 8, 32, 128};
  for (size_t a = 0; a < sizeof ns / sizeof ns[0]; ++a)
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; ++b) {
      const int64_t n = ns[a];
      const int B = batches[b];
      int64_t *perm = malloc(sizeof(int64_t) * (size_t)n);
      int64_t *ref = malloc(sizeof(int64_t) * (size_t)n);  /* the P = 1 order of samples */
      int64_t *got = malloc(sizeof(int64_t) * (size_t)n);
      char *seen = malloc((size_t)n);
      assert_non_null(perm);
      assert_non_null(ref);
      assert_non_null(got);
      assert_non_null(seen);
      nest_shard_permute(7, 3, NULL, n, perm);
      for (int P = 1; P <= 5; ++P) {
        memset(seen, 0, (size_t)n);
        int64_t filled = 0;
        const int64_t steps = nest_shard_steps(n, B);
        for (int64_t s = 0; s < steps; ++s) {
          int rows = 0;
          int64_t next = s * B;
          for (int r = 0; r < P; ++r) {
            int64_t begin;
            int count;
            nest_shard_slice(n, B, s, r, P, &begin, &count);
            assert_true(count >= 0);
            if (count) assert_int_equal(begin, next); /* contiguous, in rank order */
            for (int k = 0; k < count; ++k) {
              int64_t item = perm[begin + k];
              assert_true(item >= 0 && item < n);
              assert_int_equal(seen[item], 0); /* no duplicates */
              seen[item] = 1;
              got[filled++] = item;
            }
            next += count;
            rows += count;
            /* Balanced: slices differ by at most one row. */
            int b_rows = nest_shard_batch_rows(n, B, s);
            assert_true(count == b_rows / P || count == b_rows / P + 1);
          }
          assert_int_equal(rows, nest_shard_batch_rows(n, B, s));
        }
        assert_int_equal(filled, n); /* union = the dataset */
        for (int64_t i = 0; i < n; ++i) assert_int_equal(seen[i], 1);
        if (P == 1) memcpy(ref, got, sizeof(int64_t) * (size_t)n);
        else assert_memory_equal(ref, got, sizeof(int64_t) * (size_t)n); /* independent of P */
      }
      free(perm);
      free(ref);
      free(got);
      free(seen);
    }
}

static void test_permute(void **state) {
  enum { N = 1000 };
  static int64_t a[N], b[N], c[N], items[N], d[N];
  nest_shard_permute(11, 0, NULL, N, a);
  nest_shard_permute(11, 0, NULL, N, b);
  assert_memory_equal(a, b, sizeof a); /* same (seed, epoch) */
  nest_shard_permute(11, 1, NULL, N, c);
  assert_memory_not_equal(a, c, sizeof a); /* another epoch */
  nest_shard_permute(12, 0, NULL, N, c);
  assert_memory_not_equal(a, c, sizeof a); /* another seed */

  /* A permutation, and not the identity. */
  static char seen[N];
  int fixed = 0;
  for (int i = 0; i < N; ++i) {
    assert_true(a[i] >= 0 && a[i] < N);
    assert_int_equal(seen[a[i]]++, 0);
    fixed += a[i] == i;
  }
  assert_true(fixed < 20);

  /* items: perm[i] = items[pi(i)], with the same pi as for 0..n-1. */
  for (int i = 0; i < N; ++i) items[i] = 5000 + 3 * i;
  nest_shard_permute(11, 0, items, N, d);
  for (int i = 0; i < N; ++i) assert_int_equal(d[i], items[a[i]]);

  /* Roughly uniform: position 0 over many epochs hits every value of a small n. */
  int hits[5] = {0};
  int64_t p5[5];
  for (int e = 0; e < 5000; ++e) {
    nest_shard_permute(3, e, NULL, 5, p5);
    hits[p5[0]]++;
  }
  for (int v = 0; v < 5; ++v) assert_true(hits[v] > 850 && hits[v] < 1150);

  /* Edge sizes. */
  int64_t one = -1;
  nest_shard_permute(1, 0, NULL, 1, &one);
  assert_int_equal(one, 0);
  nest_shard_permute(1, 0, NULL, 0, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_steps_and_rows),
      cmocka_unit_test(test_slices_exact),
      cmocka_unit_test(test_epoch_coverage),
      cmocka_unit_test(test_permute),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
