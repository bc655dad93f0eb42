/* test_select.c — exact distributed selection (select.h) against the naive reference on the
 * gathered global array: both layouts, both orders, every candidate filter, k and fraction
 * requests, heavy ties, +-0.0, data spread unevenly over ranks (some with none), identical
 * results on every rank, invalid scores failing on every rank, thread-count independence.
 * Run under mpiexec -n 1/2/4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/comm.h"
#include "nest/rng.h"
#include "nest/select.h"

static nest_comm *comm;
static int R, P;

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t bytes) {
  const unsigned char *b = p;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
#define FNV0 1469598103934665603ull

/* Assert on every rank at once (a failure on one rank must not leave the others in a
 * collective): the condition fails everywhere if it fails anywhere. */
static void assert_all(int ok, const char *what) {
  int64_t bad = !ok;
  assert_int_equal(nest_comm_allreduce_max_i64(comm, &bad, 1), NEST_OK);
  if (bad) fprintf(stderr, "rank %d: %s: %s\n", R, what, ok ? "failed on another rank" : "FAILED");
  assert_true(bad == 0);
}

/* Gather every rank's n_r elements of `esize` bytes into the rank-major concatenation (padded
 * allgather: nest_comm_allgather takes equal sizes). Returns the global array (malloc) and
 * sets *total, and *offset = this rank's first global index. */
static void *gather(const void *mine, int64_t n, size_t esize, int64_t *total, int64_t *offset) {
  int64_t *cnt = malloc(sizeof *cnt * (size_t)P);
  assert_non_null(cnt);
  assert_int_equal(nest_comm_allgather(comm, &n, cnt, sizeof n), NEST_OK);
  int64_t mx = 1, tot = 0, off = 0;
  for (int r = 0; r < P; ++r) {
    if (cnt[r] > mx) mx = cnt[r];
    if (r < R) off += cnt[r];
    tot += cnt[r];
  }
  char *pad = calloc((size_t)mx, esize), *all = malloc((size_t)mx * esize * (size_t)P),
       *out = malloc((size_t)(tot ? tot : 1) * esize);
  assert_true(pad && all && out);
  if (n) memcpy(pad, mine, (size_t)n * esize);
  assert_int_equal(nest_comm_allgather(comm, pad, all, (size_t)mx * esize), NEST_OK);
  int64_t at = 0;
  for (int r = 0; r < P; ++r) {
    memcpy(out + (size_t)at * esize, all + (size_t)r * (size_t)mx * esize, (size_t)cnt[r] * esize);
    at += cnt[r];
  }
  free(cnt), free(pad), free(all);
  *total = tot;
  if (offset) *offset = off;
  return out;
}

/* ---- data ------------------------------------------------------------------------------ */

enum { KIND_CONT, KIND_FEW, KIND_MIXED, KIND_ZERO, NKINDS };
static const char *kind_name[] = {"continuous", "few-values", "mixed", "all-zero"};

static float draw(nest_rng *r, int kind) {
  static const float few[] = {0.0f, -0.0f, 1e-45f, FLT_MIN, 0.25f, 0.5f, 1.0f, 1.0f, 3.0f,
                              FLT_MAX};
  switch (kind) {
    case KIND_CONT: return fabsf(nest_rng_normal(r));
    case KIND_FEW: return few[nest_rng_below(r, sizeof few / sizeof few[0])];
    case KIND_MIXED: {
      const float u = nest_rng_uniform(r);
      if (u < 0.2f) return 0.0f;
      if (u < 0.4f) return -0.0f;
      return roundf(fabsf(nest_rng_normal(r)) * 4.0f) / 4.0f; /* quantised: ties in many bins */
    }
    default: return nest_rng_uniform(r) < 0.5f ? 0.0f : -0.0f;
  }
}

/* Masks: ~30% active (1 or 0.5), dormant ones are +0.0 or -0.0 (both count as 0). */
static float draw_mask(nest_rng *r) {
  const float u = nest_rng_uniform(r);
  return u < 0.15f ? 1.0f : u < 0.3f ? 0.5f : u < 0.65f ? 0.0f : -0.0f;
}

static void fill(float *score, float *mask, int64_t n, int kind, uint64_t seed, uint64_t stream) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, stream, (uint64_t)kind);
  for (int64_t i = 0; i < n; ++i) {
    score[i] = draw(&r, kind);
    mask[i] = draw_mask(&r);
  }
}

/* ---- one case -------------------------------------------------------------------------- */

typedef struct {
  int64_t n;  /* replicated: global size; spread: about the mean per rank */
  int kind;
  nest_select_order order;
  nest_cand cand;
  nest_select_req req;
  int spread;
  uint64_t seed;
} scase;

static int better_than(nest_select_order o, float a, float b) { return o ? a < b : a > b; }

/* Runs the case and checks it against nest_select_ref on the gathered array; returns a hash
 * of the chosen global indices and the decision (identical on every rank by construction). */
static uint64_t run_case(const scase *tc) {
  int64_t n = tc->n;
  if (tc->spread) {
    /* Uneven shares, from one stream all ranks draw alike: rank 1 always gets none. */
    nest_rng r;
    nest_rng_init(&r, tc->seed, NEST_RNG_TEST, 1000, 0);
    int64_t mine = 0;
    for (int q = 0; q < P; ++q) {
      const int64_t cnt = (q == 1) ? 0 : (int64_t)nest_rng_below(&r, (uint64_t)(2 * tc->n + 1));
      if (q == R) mine = cnt;
    }
    n = mine;
  }
  float *score = malloc(sizeof(float) * (size_t)(n ? n : 1));
  float *mask = malloc(sizeof(float) * (size_t)(n ? n : 1));
  assert_true(score && mask);
  /* Spread: each rank its own stream; replicated: the same array on every rank. */
  fill(score, mask, n, tc->kind, tc->seed, tc->spread ? 10 + (uint64_t)R : 0);

  const nest_scores s = {score, tc->cand == NEST_CAND_ALL && (tc->seed & 1) ? NULL : mask,
                         tc->cand, (size_t)n};
  nest_select_req req = tc->req;
  req.order = tc->order;
  nest_selection sel;
  nest_status st = tc->spread ? nest_select_spread(comm, &s, &req, &sel)
                              : nest_select_replicated(comm, &s, &req, &sel);
  if (st != NEST_OK) fprintf(stderr, "rank %d: select: %s\n", R, nest_error_message());
  assert_all(st == NEST_OK, "select returns OK");

  /* The global array and the reference. */
  int64_t N = n, off = 0;
  float *gs = score, *gm = mask;
  if (tc->spread) {
    gs = gather(score, n, sizeof(float), &N, &off);
    gm = gather(mask, n, sizeof(float), &N, NULL);
  }
  const nest_scores gsc = {gs, gm, tc->cand, (size_t)N};
  int64_t *ref = malloc(sizeof(int64_t) * (size_t)(N ? N : 1));
  assert_non_null(ref);
  const int64_t k = nest_select_ref(&gsc, &req, ref);
  int ok = k >= 0;

  /* Decision fields against the reference. */
  int64_t ncand = 0, nbetter = 0, nequal = 0, eq_lower = 0;
  float worst = 0.0f; /* the k-th in selection order = the worst chosen */
  for (int64_t j = 0; j < k; ++j)
    if (j == 0 || better_than(tc->order, worst, gs[ref[j]])) worst = gs[ref[j]];
  for (int64_t i = 0; i < N; ++i) {
    const int c = tc->cand == NEST_CAND_ALL ? 1 : tc->cand == NEST_CAND_DORMANT ? gm[i] == 0.0f
                                                                                 : gm[i] != 0.0f;
    if (!c) continue;
    ++ncand;
    if (k > 0 && better_than(tc->order, gs[i], worst)) ++nbetter;
    if (k > 0 && gs[i] == worst) {
      ++nequal;
      if (i < off) ++eq_lower;
    }
  }
  ok = ok && sel.order == tc->order && sel.candidates == ncand && sel.k == k;
  ok = ok && sel.threshold == worst && !signbit(sel.threshold); /* never -0.0 */
  ok = ok && sel.better == (k > 0 ? nbetter : 0) && sel.ties == k - sel.better;
  ok = ok && (k == 0 || (sel.ties >= 1 && sel.ties <= nequal));
  ok = ok && sel.ties_before == (tc->spread && k > 0 ? eq_lower : 0);
  if (!ok)
    fprintf(stderr,
            "rank %d: n=%lld kind=%s order=%d cand=%d k=%lld frac=%g spread=%d: sel k=%lld cand=%lld "
            "thr=%g better=%lld ties=%lld tb=%lld; ref k=%lld cand=%lld worst=%g better=%lld "
            "equal=%lld eq_lower=%lld\n",
            R, (long long)N, kind_name[tc->kind], tc->order, tc->cand, (long long)req.k,
            req.fraction, tc->spread, (long long)sel.k, (long long)sel.candidates,
            (double)sel.threshold, (long long)sel.better, (long long)sel.ties,
            (long long)sel.ties_before, (long long)k, (long long)ncand, (double)worst,
            (long long)nbetter, (long long)nequal, (long long)eq_lower);
  assert_all(ok, "selection fields match the reference");

  /* The chosen positions: exactly k, and exactly the reference's. */
  int64_t *chosen = malloc(sizeof(int64_t) * (size_t)(sel.k ? sel.k : 1));
  assert_non_null(chosen);
  int64_t m = nest_select_mark(&sel, &s, chosen);
  ok = m >= 0 && m <= sel.k;
  for (int64_t j = 0; ok && j < m; ++j)
    ok = chosen[j] >= 0 && chosen[j] < n && (j == 0 || chosen[j] > chosen[j - 1]);
  /* The per-element rule agrees with mark: walking this rank's part in order, a candidate is
   * chosen iff nest_select_is_chosen says so given the threshold-equal ones before it. */
  int64_t eq = sel.ties_before, at = 0;
  for (int64_t i = 0; ok && i < n; ++i) {
    if (!(tc->cand == NEST_CAND_ALL || (tc->cand == NEST_CAND_DORMANT) == (mask[i] == 0.0f)))
      continue;
    const int in = at < m && chosen[at] == i;
    ok = nest_select_is_chosen(&sel, score[i], eq) == in;
    at += in;
    eq += sel.k > 0 && score[i] == sel.threshold;
  }
  ok = ok && at == m;
  assert_all(ok, "mark returns ascending local indices, at most k");
  int64_t *gchosen = chosen, gm_n = m;
  if (tc->spread) {
    for (int64_t j = 0; j < m; ++j) chosen[j] += off; /* local -> global */
    gchosen = gather(chosen, m, sizeof(int64_t), &gm_n, NULL);
  }
  ok = gm_n == k && (k == 0 || memcmp(gchosen, ref, sizeof(int64_t) * (size_t)k) == 0);
  if (!ok)
    fprintf(stderr, "rank %d: n=%lld kind=%s order=%d cand=%d spread=%d: %lld chosen, ref %lld\n",
            R, (long long)N, kind_name[tc->kind], tc->order, tc->cand, tc->spread,
            (long long)gm_n, (long long)k);
  assert_all(ok, "exactly the reference's k positions are chosen");

  uint64_t h = fnv(FNV0, gchosen, sizeof(int64_t) * (size_t)gm_n);
  h = fnv(h, &sel.k, sizeof sel.k);
  h = fnv(h, &sel.threshold, sizeof sel.threshold);
  h = fnv(h, &sel.better, sizeof sel.better);
  h = fnv(h, &sel.candidates, sizeof sel.candidates);
  assert_int_equal(nest_comm_check_same(comm, h, "selections"), NEST_OK);

  if (tc->spread) free(gs), free(gm), free(gchosen);
  free(ref), free(chosen), free(score), free(mask);
  return h;
}

/* ---- tests ----------------------------------------------------------------------------- */

/* The reference itself, by hand: it is what everything else is checked against. */
static void test_ref_by_hand(void **state) {
  /* index:             0     1     2      3     4     5     6     7 */
  const float sc[8] = {3.0f, 1.0f, -0.0f, 2.0f, 2.0f, 0.0f, 5.0f, 2.0f};
  const float mk[8] = {1.0f, 0.0f, 0.0f, 1.0f, -0.0f, 1.0f, 0.0f, 1.0f};
  int64_t ch[8];
  nest_scores s = {sc, NULL, NEST_CAND_ALL, 8};
  nest_select_req q = {3, 0.0, NEST_SELECT_LARGEST};
  assert_int_equal(nest_select_ref(&s, &q, ch), 3); /* 5, 3, then the first 2 (index 3) */
  assert_true(ch[0] == 0 && ch[1] == 3 && ch[2] == 6);
  q.k = 4; /* the second 2 (index 4), not index 7 */
  assert_int_equal(nest_select_ref(&s, &q, ch), 4);
  assert_true(ch[0] == 0 && ch[1] == 3 && ch[2] == 4 && ch[3] == 6);
  q.k = 2;
  q.order = NEST_SELECT_SMALLEST; /* -0.0 (index 2) and 0 (index 5) are equal and smallest */
  assert_int_equal(nest_select_ref(&s, &q, ch), 2);
  assert_true(ch[0] == 2 && ch[1] == 5);
  q.k = -1, q.fraction = 0.5; /* 4 of 8: -0.0, 0, 1, then the first 2 (index 3) */
  assert_int_equal(nest_select_ref(&s, &q, ch), 4);
  assert_true(ch[0] == 1 && ch[1] == 2 && ch[2] == 3 && ch[3] == 5);
  s.mask = mk, s.cand = NEST_CAND_DORMANT; /* candidates 1, 2, 4, 6 (mask -0.0 is dormant) */
  q.k = 2, q.order = NEST_SELECT_LARGEST;
  assert_int_equal(nest_select_ref(&s, &q, ch), 2);
  assert_true(ch[0] == 4 && ch[1] == 6);
  s.cand = NEST_CAND_ACTIVE; /* candidates 0, 3, 5, 7; k larger than that is clamped */
  q.k = 100, q.order = NEST_SELECT_SMALLEST;
  assert_int_equal(nest_select_ref(&s, &q, ch), 4);
  assert_true(ch[0] == 0 && ch[1] == 3 && ch[2] == 5 && ch[3] == 7);
  q.k = 0;
  assert_int_equal(nest_select_ref(&s, &q, ch), 0);
  /* an invalid candidate fails; an invalid non-candidate does not */
  float bad[8];
  memcpy(bad, sc, sizeof bad);
  bad[1] = NAN; /* dormant: not an active candidate */
  s.score = bad;
  q.k = 2;
  assert_int_equal(nest_select_ref(&s, &q, ch), 2);
  bad[0] = -1.0f;
  assert_int_equal(nest_select_ref(&s, &q, ch), -1);
}

static void test_count_rule(void **state) {
  nest_select_req q = {-1, 0.3, NEST_SELECT_LARGEST};
  assert_int_equal(nest_select_count(&q, 10), 3); /* 0.3 x 10 = 3.0000000000000004 */
  q.fraction = 0.31;
  assert_int_equal(nest_select_count(&q, 10), 4); /* ceil */
  q.fraction = 0.56;
  assert_int_equal(nest_select_count(&q, 72000000), 40320000); /* 40320000.00000001 */
  q.fraction = 0.57;
  assert_int_equal(nest_select_count(&q, 100000000), 57000000); /* 56999999.99999999 */
  q.fraction = 0.01;
  assert_int_equal(nest_select_count(&q, 72000001), 720001); /* 720000.01 -> ceil */
  q.fraction = 1.0;
  assert_int_equal(nest_select_count(&q, 7), 7);
  q.fraction = 0.0;
  assert_int_equal(nest_select_count(&q, 7), 0);
  assert_int_equal(nest_select_count(&q, 0), 0);
  q.fraction = 1.5;
  assert_int_equal(nest_select_count(&q, 7), -1);
  q.fraction = NAN;
  assert_int_equal(nest_select_count(&q, 7), -1);
  q.k = 5;
  assert_int_equal(nest_select_count(&q, 3), 3); /* k ignores the fraction, clamps */
  assert_int_equal(nest_select_count(&q, 9), 5);
}

static void test_sort(void **state) {
  const float sc[8] = {3.0f, 1.0f, -0.0f, 2.0f, 2.0f, 0.0f, 5.0f, 2.0f};
  nest_selection sel = {.order = NEST_SELECT_LARGEST};
  int64_t a[5] = {7, 0, 4, 6, 3};
  nest_select_sort(&sel, sc, a, 5);
  assert_true(a[0] == 6 && a[1] == 0 && a[2] == 3 && a[3] == 4 && a[4] == 7);
  sel.order = NEST_SELECT_SMALLEST;
  int64_t b[6] = {1, 5, 3, 7, 2, 6}; /* -0.0 (2) and 0 (5) tie: by index */
  nest_select_sort(&sel, sc, b, 6);
  assert_true(b[0] == 2 && b[1] == 5 && b[2] == 1 && b[3] == 3 && b[4] == 7 && b[5] == 6);
  /* a larger random case against a comparison of floats */
  enum { N = 5000 };
  float *x = malloc(sizeof(float) * N);
  int64_t *idx = malloc(sizeof(int64_t) * N);
  nest_rng r;
  nest_rng_init(&r, 3, NEST_RNG_TEST, 0, 0);
  for (int i = 0; i < N; ++i) x[i] = draw(&r, KIND_MIXED), idx[i] = (int64_t)(N - 1 - i);
  for (int o = 0; o < 2; ++o) {
    sel.order = (nest_select_order)o;
    nest_select_sort(&sel, x, idx, N);
    for (int i = 1; i < N; ++i) {
      const float u = x[idx[i - 1]], v = x[idx[i]];
      assert_true(better_than(sel.order, u, v) || (u == v && idx[i - 1] < idx[i]));
    }
  }
  free(x), free(idx);
}

static const nest_select_req reqs[] = {
    {0, 0.0, 0},     {1, 0.0, 0},     {5, 0.0, 0},     {37, 0.0, 0},    {1000, 0.0, 0},
    {1LL << 40, 0.0, 0}, {-1, 0.0, 0}, {-1, 0.01, 0},  {-1, 0.3, 0},    {-1, 1.0, 0},
};

/* Every combination on small arrays; replicated and spread. */
static void test_against_ref(void **state) {
  const int64_t sizes[] = {0, 1, 3, 300, 5000};
  int cases = 0;
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si)
    for (int kind = 0; kind < NKINDS; ++kind)
      for (int order = 0; order < 2; ++order)
        for (int cand = 0; cand < 3; ++cand)
          for (size_t qi = 0; qi < sizeof reqs / sizeof reqs[0]; ++qi)
            for (int spread = 0; spread < 2; ++spread) {
              scase tc = {sizes[si], kind, (nest_select_order)order, (nest_cand)cand, reqs[qi],
                          spread, 100 + si * 7 + qi};
              if (reqs[qi].k == 1000) tc.req.k = sizes[si] / 3; /* a k inside the range */
              run_case(&tc);
              ++cases;
            }
  if (R == 0) printf("  %d cases\n", cases);
}

/* Larger arrays (over the parallel threshold and with round-1 bins large and small, so both
 * the kept-keys and the re-scan paths of round 3 run), with 1, 2 and 3 OpenMP threads: the
 * result must not depend on the thread count. */
static void test_threads(void **state) {
  const int saved = omp_get_max_threads();
  for (int kind = 0; kind < NKINDS; ++kind)
    for (int cand = 0; cand < 3; ++cand)
      for (int spread = 0; spread < 2; ++spread) {
        scase tc = {spread ? 100000 : 400000, kind, (nest_select_order)(cand & 1), (nest_cand)cand,
                    {-1, 0.01 + 0.2 * kind, 0}, spread, 7 + (uint64_t)kind};
        uint64_t h[3];
        for (int t = 1; t <= 3; ++t) {
          omp_set_num_threads(t);
          h[t - 1] = run_case(&tc);
        }
        assert_all(h[0] == h[1] && h[1] == h[2], "same selection with 1, 2 and 3 threads");
      }
  omp_set_num_threads(saved);
}

/* Invalid candidate scores fail on every rank with the same one-line message, wherever the
 * bad value is; the same value at a non-candidate position is ignored. */
static void expect_numeric(const nest_scores *s, const nest_select_req *q, int spread,
                           const char *what) {
  nest_selection sel;
  nest_status st = spread ? nest_select_spread(comm, s, q, &sel)
                          : nest_select_replicated(comm, s, q, &sel);
  const char *msg = nest_error_message();
  if (st != NEST_ERR_NUMERIC) fprintf(stderr, "rank %d: %s: status %d: %s\n", R, what, st, msg);
  assert_all(st == NEST_ERR_NUMERIC, what);
  assert_all(strchr(msg, '\n') == NULL && strstr(msg, "not finite and >= 0") != NULL,
             "one-line message naming the problem");
  assert_int_equal(nest_comm_check_same(comm, fnv(FNV0, msg, strlen(msg)), "error messages"),
                   NEST_OK);
  if (spread) { /* names where: the last rank, index N / 2 */
    char where[64];
    snprintf(where, sizeof where, "on rank %d at index 500", P - 1);
    assert_all(strstr(msg, where) != NULL, "the message names the first bad position");
  }
  nest_error_clear();
}

static void test_invalid(void **state) {
  const float bads[] = {NAN, -NAN, INFINITY, -INFINITY, -1.0f, -1e-45f};
  enum { N = 1000 };
  float *sc = malloc(sizeof(float) * N), *mk = malloc(sizeof(float) * N);
  assert_true(sc && mk);
  for (size_t b = 0; b < sizeof bads / sizeof bads[0]; ++b) {
    /* Replicated: the bad value in the first slice, then only in the last rank's slice. */
    const int64_t where[] = {0, N - 1};
    for (int w = 0; w < 2; ++w)
      for (int cand = 0; cand < 3; ++cand) {
        fill(sc, mk, N, KIND_CONT, 5, 0);
        nest_scores s = {sc, mk, (nest_cand)cand, N};
        const int64_t i = where[w];
        sc[i] = bads[b];
        mk[i] = cand == NEST_CAND_ACTIVE ? 1.0f : 0.0f; /* a candidate (all or dormant too) */
        nest_select_req q = {10, 0.0, (nest_select_order)w};
        char what[96];
        snprintf(what, sizeof what, "replicated, bad value %g at %lld, cand %d", (double)bads[b],
                 (long long)i, cand);
        expect_numeric(&s, &q, 0, what);
        q.k = 0; /* still an error: the scores are wrong whatever is asked of them */
        expect_numeric(&s, &q, 0, what);
        if (cand != NEST_CAND_ALL) { /* the same value where it is no candidate: ignored */
          mk[i] = cand == NEST_CAND_ACTIVE ? 0.0f : 1.0f;
          nest_selection sel;
          q.k = 10;
          assert_all(nest_select_replicated(comm, &s, &q, &sel) == NEST_OK && sel.k == 10,
                     "a bad non-candidate is ignored");
          int64_t ref[10];
          assert_int_equal(nest_select_ref(&s, &q, ref), 10);
        } else {
          int64_t *ref = malloc(sizeof(int64_t) * N);
          assert_int_equal(nest_select_ref(&s, &q, ref), -1);
          free(ref);
        }
      }
    /* Spread: the bad value only on the last rank's data. */
    for (int cand = 0; cand < 3; ++cand) {
      fill(sc, mk, N, KIND_CONT, 6, 10 + (uint64_t)R);
      nest_scores s = {sc, mk, (nest_cand)cand, N};
      if (R == P - 1) {
        sc[N / 2] = bads[b];
        mk[N / 2] = cand == NEST_CAND_ACTIVE ? 1.0f : 0.0f;
      }
      nest_select_req q = {-1, 0.1, NEST_SELECT_SMALLEST};
      expect_numeric(&s, &q, 1, "spread, bad value on the last rank");
    }
  }
  free(sc), free(mk);
}

/* A bad argument on one rank only (spread: its own mask missing) fails every rank alike. */
static void test_bad_args(void **state) {
  float sc[4] = {1, 2, 3, 4}, mk[4] = {0, 1, 0, 1};
  nest_scores s = {sc, R == P - 1 ? NULL : mk, NEST_CAND_DORMANT, 4};
  nest_select_req q = {1, 0.0, NEST_SELECT_LARGEST};
  nest_selection sel;
  nest_status st = nest_select_spread(comm, &s, &q, &sel);
  assert_all(st == NEST_ERR_ARG, "a missing mask on one rank fails everywhere");
  assert_all(strstr(nest_error_message(), "mask") != NULL, "the message names the mask");
  const char *msg = nest_error_message();
  assert_int_equal(nest_comm_check_same(comm, fnv(FNV0, msg, strlen(msg)), "error messages"),
                   NEST_OK);
  nest_error_clear();
  s.mask = mk;
  q.k = -1, q.fraction = 1.5;
  assert_all(nest_select_replicated(comm, &s, &q, &sel) == NEST_ERR_ARG, "fraction out of range");
  nest_error_clear();
  q.fraction = 0.5; /* and the collective still works afterwards */
  assert_all(nest_select_replicated(comm, &s, &q, &sel) == NEST_OK && sel.k == 1, "recovers");
}

/* Every candidate equal (all zeros, half of them -0.0): exactly k chosen, the lowest global
 * indices, spread over ranks in rank order. */
static void test_all_equal(void **state) {
  enum { N = 777 };
  float sc[N], mk[N];
  for (int i = 0; i < N; ++i) sc[i] = (i + R) % 2 ? -0.0f : 0.0f, mk[i] = 0.0f;
  nest_scores s = {sc, mk, NEST_CAND_ALL, N};
  for (int order = 0; order < 2; ++order) {
    nest_select_req q = {N + 5, 0.0, (nest_select_order)order}; /* one rank's worth and more */
    nest_selection sel;
    assert_all(nest_select_spread(comm, &s, &q, &sel) == NEST_OK, "spread over equal scores");
    assert_all(sel.k == N + 5 || (P == 1 && sel.k == N), "k");
    assert_all(sel.better == 0 && sel.ties == sel.k && sel.ties_before == (int64_t)R * N, "ties");
    int64_t ch[N];
    const int64_t m = nest_select_mark(&sel, &s, ch);
    const int64_t want = R == 0 ? N : R == 1 ? 5 : 0;
    int ok = m == (P == 1 ? N : want);
    for (int64_t j = 0; ok && j < m; ++j) ok = ch[j] == j;
    assert_all(ok, "the lowest global indices are chosen");
  }
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  R = nest_comm_rank(comm);
  P = nest_comm_size(comm);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ref_by_hand), cmocka_unit_test(test_count_rule),
      cmocka_unit_test(test_sort),        cmocka_unit_test(test_against_ref),
      cmocka_unit_test(test_threads),     cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_bad_args),    cmocka_unit_test(test_all_equal),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
