/* bench_select.c — exact selection on a 103M-element tensor (VGG-16 fc6, 25088 x 4096) with
 * whatever ranks and threads it is launched with; prints figures, asserts nothing.
 *
 *   mpirun -n 2 build/bench_select [--reps N] [--no-sort]
 *
 * Every rank builds the same replicated tensor: scores |N(0,1)|, a mask at ~30% density. Two
 * selections, as growth and pruning make them: the top 1% of dormant positions (LARGEST,
 * NEST_CAND_DORMANT) and the smallest 10% of active ones (SMALLEST, NEST_CAND_ACTIVE).
 * Timed: nest_select_replicated (the collective; its scan is split over ranks), the same data
 * as nest_select_spread (each rank holding 1/P of it), nest_select_mark (the whole array on
 * every rank, as growth applies it), nest_select_sort of the chosen, and one plain pass over
 * the slice (count the candidates) for scale. Each collective figure is the slowest rank's time,
 * best and median of --reps runs. Serial references on rank 0, same run, once each: copy the
 * candidates + quickselect of the k-th value, and copy + qsort of all candidates (the other
 * ranks wait in a barrier meanwhile). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/comm.h"
#include "nest/rng.h"
#include "nest/select.h"

#define ROWS 25088
#define COLS 4096
#define BLOCK 65536 /* generation: one RNG stream per block, so any thread count gives the same */

static nest_comm *comm;
static int rank, nranks;

static int die(const char *what) {
  fprintf(stderr, "bench_select: rank %d: %s: %s\n", rank, what, nest_error_message());
  nest_comm_destroy(&comm);
  return 1;
}

static void build(float *score, float *mask, size_t n) {
  const size_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
  for (size_t b = 0; b < nb; ++b) {
    nest_rng r;
    nest_rng_init(&r, 2024, NEST_RNG_SYNTH, b, 0);
    const size_t hi = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
    for (size_t i = b * BLOCK; i < hi; ++i) {
      const float z = nest_rng_normal(&r);
      score[i] = z < 0 ? -z : z;
      mask[i] = nest_rng_uniform(&r) < 0.3f ? 1.0f : 0.0f;
    }
  }
}

/* ---- serial references ------------------------------------------------------------------ */

static void swapf(float *a, float *b) {
  float t = *a;
  *a = *b;
  *b = t;
}

/* The value of rank `k` (0-based, ascending) of x[0..n): quickselect with a median-of-3 pivot
 * and a three-way partition (equal keys never make it quadratic). Reorders x. */
static float quickselect(float *x, size_t n, size_t k) {
  size_t lo = 0, hi = n; /* the answer is in [lo, hi) */
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    float a = x[lo], b = x[mid], c = x[hi - 1];
    const float p = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
    size_t lt = lo, i = lo, gt = hi; /* [lo,lt) < p, [lt,i) == p, [gt,hi) > p */
    while (i < gt) {
      if (x[i] < p) swapf(&x[lt++], &x[i++]);
      else if (x[i] > p) swapf(&x[i], &x[--gt]);
      else ++i;
    }
    if (k < lt) hi = lt;
    else if (k >= gt) lo = gt;
    else return p;
  }
  return x[lo];
}

static int cmp_float(const void *a, const void *b) {
  const float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static size_t gather_cand(const float *score, const float *mask, size_t n, nest_cand cand, float *out) {
  size_t m = 0;
  for (size_t i = 0; i < n; ++i)
    if (cand == NEST_CAND_DORMANT ? mask[i] == 0.0f : mask[i] != 0.0f) out[m++] = score[i];
  return m;
}

/* ---- timing helpers --------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  double best, median;
} timing;

static timing summarize(double *t, int reps) {
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  return (timing){t[0], t[reps / 2]};
}

/* The slowest rank's time of this rank's t. */
static double slowest(double t) {
  nest_comm_allreduce_max_f64(comm, &t, 1);
  return t;
}

static volatile int64_t sink;

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  rank = nest_comm_rank(comm);
  nranks = nest_comm_size(comm);
  int reps = 5, do_sort = 1;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-sort")) do_sort = 0;
    else {
      if (rank == 0) fprintf(stderr, "usage: bench_select [--reps N] [--no-sort]\n");
      nest_comm_destroy(&comm);
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  const size_t n = (size_t)ROWS * COLS;
  float *score = malloc(n * sizeof *score), *mask = malloc(n * sizeof *mask);
  double *t = malloc(sizeof(double) * (size_t)reps);
  if (!score || !mask || !t) {
    fprintf(stderr, "bench_select: out of memory for %zu elements\n", n);
    return 1;
  }
  double t0 = nest_comm_wtime();
  build(score, mask, n);
  const double tbuild = slowest(nest_comm_wtime() - t0);
  if (rank == 0)
    printf("bench_select: %d ranks x %d threads; %d x %d = %zu scores |N(0,1)|, mask ~30%% "
           "dense (built in %.2f s)\n",
           nranks, omp_get_max_threads(), ROWS, COLS, n, tbuild);

  struct {
    const char *name;
    nest_cand cand;
    nest_select_order order;
    double fraction;
  } cases[] = {
      {"growth: top 1% of dormant", NEST_CAND_DORMANT, NEST_SELECT_LARGEST, 0.01},
      {"pruning: smallest 10% of active", NEST_CAND_ACTIVE, NEST_SELECT_SMALLEST, 0.10},
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ++ci) {
    const nest_scores s = {score, mask, cases[ci].cand, n};
    const nest_select_req req = {-1, cases[ci].fraction, cases[ci].order};
    nest_selection sel;

    /* One plain pass over this rank's slice: what a scan costs here. */
    const size_t lo = n * (size_t)rank / (size_t)nranks, hi = n * (size_t)(rank + 1) / (size_t)nranks;
    for (int r = 0; r < reps; ++r) {
      nest_comm_barrier(comm);
      t0 = nest_comm_wtime();
      int64_t cnt = 0;
#pragma omp parallel for schedule(static) reduction(+ : cnt)
      for (size_t i = lo; i < hi; ++i) /* & not &&: no branch on the random mask */
        cnt += ((mask[i] == 0.0f) == (s.cand == NEST_CAND_DORMANT)) & (score[i] > 1.0f);
      sink = cnt;
      t[r] = slowest(nest_comm_wtime() - t0);
    }
    const timing tpass = summarize(t, reps);

    for (int r = 0; r < reps; ++r) {
      nest_comm_barrier(comm);
      t0 = nest_comm_wtime();
      if (nest_select_replicated(comm, &s, &req, &sel) != NEST_OK) return die("select");
      t[r] = slowest(nest_comm_wtime() - t0);
    }
    const timing tsel = summarize(t, reps);

    /* The same tensor spread: rank r holds elements [lo, hi) as its own scores. */
    const nest_scores sp = {score + lo, mask + lo, cases[ci].cand, hi - lo};
    nest_selection ssel;
    for (int r = 0; r < reps; ++r) {
      nest_comm_barrier(comm);
      t0 = nest_comm_wtime();
      if (nest_select_spread(comm, &sp, &req, &ssel) != NEST_OK) return die("select spread");
      t[r] = slowest(nest_comm_wtime() - t0);
    }
    const timing tspread = summarize(t, reps);

    int64_t *chosen = malloc(sizeof(int64_t) * (size_t)sel.k);
    if (!chosen) return 1;
    int64_t m = 0;
    for (int r = 0; r < reps; ++r) {
      nest_comm_barrier(comm);
      t0 = nest_comm_wtime();
      m = nest_select_mark(&sel, &s, chosen);
      t[r] = slowest(nest_comm_wtime() - t0);
    }
    const timing tmark = summarize(t, reps);
    double tsort = 0;
    if (do_sort) {
      nest_comm_barrier(comm);
      t0 = nest_comm_wtime();
      nest_select_sort(&sel, score, chosen, m);
      tsort = slowest(nest_comm_wtime() - t0);
    }

    if (rank == 0) {
      printf("\n%s: %lld candidates, k = %lld, threshold %.9g (better %lld, ties %lld), "
             "marked %lld; spread gives the same threshold: %s\n",
             cases[ci].name, (long long)sel.candidates, (long long)sel.k, (double)sel.threshold,
             (long long)sel.better, (long long)sel.ties, (long long)m,
             ssel.threshold == sel.threshold && ssel.k == sel.k ? "yes" : "NO");
      printf("  %-44s %9s %9s\n", "", "best s", "median s");
      printf("  %-44s %9.3f %9.3f\n", "one pass over the slice (count, for scale)", tpass.best,
             tpass.median);
      printf("  %-44s %9.3f %9.3f\n", "nest_select_replicated", tsel.best, tsel.median);
      printf("  %-44s %9.3f %9.3f\n", "nest_select_spread (1/P of the data per rank)",
             tspread.best, tspread.median);
      printf("  %-44s %9.3f %9.3f\n", "nest_select_mark (whole array, every rank)", tmark.best,
             tmark.median);
      if (do_sort) printf("  %-44s %9.3f\n", "nest_select_sort of the chosen", tsort);
    }

    /* Serial references on rank 0; the other ranks wait. */
    if (rank == 0) {
      float *cp = malloc(n * sizeof *cp);
      if (!cp) return 1;
      t0 = nest_comm_wtime();
      const size_t nc = gather_cand(score, mask, n, cases[ci].cand, cp);
      const double tcopy = nest_comm_wtime() - t0;
      const size_t kth = cases[ci].order == NEST_SELECT_LARGEST ? nc - (size_t)sel.k
                                                                 : (size_t)sel.k - 1;
      t0 = nest_comm_wtime();
      const float q = quickselect(cp, nc, kth);
      const double tqs = nest_comm_wtime() - t0;
      printf("  %-44s %9.3f            (%.3f copy + %.3f select; same threshold: %s)\n",
             "serial: copy candidates + quickselect", tcopy + tqs, tcopy, tqs,
             q == sel.threshold ? "yes" : "NO");
      if (do_sort) {
        t0 = nest_comm_wtime();
        const size_t nc2 = gather_cand(score, mask, n, cases[ci].cand, cp);
        qsort(cp, nc2, sizeof *cp, cmp_float);
        const double tqsort = nest_comm_wtime() - t0;
        printf("  %-44s %9.3f            (same threshold: %s)\n",
               "serial: copy candidates + qsort", tqsort, cp[kth] == sel.threshold ? "yes" : "NO");
      }
      fflush(stdout);
      free(cp);
    }
    nest_comm_barrier(comm);
    free(chosen);
  }
  free(score), free(mask), free(t);
  nest_comm_destroy(&comm);
  return 0;
}
