/* select.c — exact order statistics over ranks (see select.h, ALGORITHMS.md §9).
 *
 * A score's key is its bit pattern with the sign cleared (so -0.0 is 0), XOR 0x7FFFFFFF for
 * SMALLEST (= 0x7FFFFFFF - key on 31 bits), so that in both orders a LARGER key is BETTER and
 * keys order exactly like the scores. The k-th best key is found digit by digit (11, 11, 9
 * bits): each round histograms the digit of the candidates whose higher digits match the
 * prefix found so far, sums the histograms over ranks with an integer allreduce (exact, so
 * every rank derives the same digit), and walks the bins from the best one down.
 *
 * Round 1 also counts invalid candidate scores (NaN, Inf, negative) and ranks that failed
 * locally, in the same allreduce, so every rank fails together, with the same message, and
 * none is left waiting in a collective.
 *
 * The scan is split over OpenMP in a fixed number of chunks with one histogram each; counts
 * are integers, so the result does not depend on the thread count or the chunking. Round 2
 * also copies the keys of the chosen round-1 bin into a small buffer (when that bin holds at
 * most a quarter of the slice) so round 3 does not read the scores again. The hot loops work
 * in blocks: a vectorisable pass over the block, then scalar work only where it is needed. */
#include "nest/select.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define ABS_MASK 0x7FFFFFFFu
#define INF_BITS 0x7F800000u
#define SIGN_BIT 0x80000000u

/* The three digits of a 31-bit key, most significant first. */
#define D1_SHIFT 20
#define D2_SHIFT 9
#define D1_BINS 2048
#define D2_BINS 2048
#define D3_BINS 512

/* Round 1 histograms four more bins past the digits: non-candidates (ignored) and the three
 * kinds of invalid candidate scores, whose counts travel in the same allreduce. */
enum { BIN_NONCAND = D1_BINS, BIN_NAN, BIN_INF, BIN_NEG, R1_BINS };
/* The round-1 allreduce vector: the digits, NaN / Inf / negative counts, and the number of
 * ranks that failed locally (bad argument, out of memory) before they could scan. */
enum { G_NAN = D1_BINS, G_INF, G_NEG, G_FAIL, G_LEN };

/* Below this many elements a scan stays on one thread (a team costs more than it saves). */
#define PAR_MIN ((size_t)1 << 16)

static inline uint32_t fbits(float v) {
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  return b;
}

static inline uint32_t flip_of(nest_select_order o) {
  return o == NEST_SELECT_SMALLEST ? ABS_MASK : 0u;
}

/* Valid: finite and >= 0, where -0.0 counts as 0 (a negative NaN or Inf is not valid). */
static inline int valid_bits(uint32_t b) { return (b & ABS_MASK) < INF_BITS && b <= SIGN_BIT; }

/* Always inlined (AI) with a constant `cand`, so each candidate filter gets its own loop. */
#define AI inline __attribute__((always_inline))

/* All ones if position i is a candidate, else 0, from the mask's bits without a branch (a
 * random mask defeats branch prediction): +0.0 and -0.0 are dormant, anything else active —
 * the same as mask == 0.0f / mask != 0.0f. */
static AI uint32_t cand_ones(nest_cand cand, const float *mask, size_t i) {
  if (cand == NEST_CAND_ALL) return ~0u;
  const uint32_t zero = (fbits(mask[i]) & ABS_MASK) == 0;
  return cand == NEST_CAND_DORMANT ? 0u - zero : zero - 1u;
}

static AI int cand_at(nest_cand cand, const float *mask, size_t i) {
  return cand_ones(cand, mask, i) != 0;
}

/* Chunk c of C over [lo, hi): the same split in every round, so per-chunk counts of one round
 * give the write offsets of the next. (The product stays below 2^64 for any real array and
 * thread or rank count: 2^44 elements x 2^20.) */
static inline size_t chunk_at(size_t lo, size_t hi, int c, int C) {
  return lo + (size_t)((uint64_t)(hi - lo) * (uint64_t)c / (uint64_t)C);
}

/* ---- round 1: digit 1 of every candidate, plus validity ------------------------------- */

static AI uint32_t bin1(const float *score, const float *mask, size_t i, nest_cand cand,
                        uint32_t flip) {
  const uint32_t b = fbits(score[i]), a = b & ABS_MASK, cm = cand_ones(cand, mask, i);
  uint32_t bin = (a ^ flip) >> D1_SHIFT;
  if (a >= INF_BITS) bin = a == INF_BITS ? BIN_INF : BIN_NAN;
  else if (b > SIGN_BIT) bin = BIN_NEG;
  return (bin & cm) | (BIN_NONCAND & ~cm);
}

/* Blocks of BLK elements: a vectorisable pass computes what each element needs (its bin, or
 * whether anything in the block can matter), then a short scalar pass does the rest. */
#define BLK 64

/* Eight 0/1 flag bytes as one word: each set byte has exactly its lowest bit set, so
 * ctz / 8 is the index of the first flagged element and word &= word - 1 clears it. */
static inline uint64_t flag_word(const uint8_t *f) {
  uint64_t w;
  memcpy(&w, f, sizeof w);
  return w;
}

/* Four interleaved 32-bit histograms: runs of equal bins (zeros, non-candidates) would
 * otherwise serialise on one counter. Flushed to h every SUB1 elements, below 2^32. */
#define SUB1 ((size_t)1 << 30)

static AI void hist1_loop(const float *score, const float *mask, size_t lo, size_t hi,
                          nest_cand cand, uint32_t flip, int64_t *h) {
  uint32_t c4[4][R1_BINS];
  uint16_t bins[BLK];
  for (size_t blo = lo; blo < hi; blo += SUB1) {
    const size_t bhi = hi - blo > SUB1 ? blo + SUB1 : hi;
    memset(c4, 0, sizeof c4);
    size_t i = blo;
    for (; i + BLK <= bhi; i += BLK) {
      uint32_t bad = 0;
      for (int j = 0; j < BLK; ++j) { /* vectorised: bins, assuming valid scores */
        const uint32_t b = fbits(score[i + j]), a = b & ABS_MASK, cm = cand_ones(cand, mask, i + j);
        bad |= cm & ((uint32_t)(a >= INF_BITS) | (uint32_t)(b > SIGN_BIT));
        bins[j] = (uint16_t)((((a ^ flip) >> D1_SHIFT) & cm) | (BIN_NONCAND & ~cm));
      }
      if (bad) /* an invalid candidate: classify the block element by element */
        for (int j = 0; j < BLK; ++j) bins[j] = (uint16_t)bin1(score, mask, i + j, cand, flip);
      for (int j = 0; j < BLK; j += 4) {
        c4[0][bins[j]]++;
        c4[1][bins[j + 1]]++;
        c4[2][bins[j + 2]]++;
        c4[3][bins[j + 3]]++;
      }
    }
    for (; i < bhi; ++i) c4[0][bin1(score, mask, i, cand, flip)]++;
    for (int b = 0; b < R1_BINS; ++b) h[b] += (int64_t)c4[0][b] + c4[1][b] + c4[2][b] + c4[3][b];
  }
}

static void hist1(const nest_scores *s, size_t lo, size_t hi, uint32_t flip, int64_t *h) {
  switch (s->cand) {
    case NEST_CAND_ALL: hist1_loop(s->score, s->mask, lo, hi, NEST_CAND_ALL, flip, h); break;
    case NEST_CAND_DORMANT: hist1_loop(s->score, s->mask, lo, hi, NEST_CAND_DORMANT, flip, h); break;
    case NEST_CAND_ACTIVE: hist1_loop(s->score, s->mask, lo, hi, NEST_CAND_ACTIVE, flip, h); break;
  }
}

/* ---- rounds 2 and 3 over the scores: the digit at dshift of candidates matching the prefix;
 * optionally keep the matching keys (round 2, compaction for round 3). Validity was settled
 * in round 1 (any invalid candidate anywhere stops the selection there). */

static AI int64_t histp_loop(const float *score, const float *mask, size_t lo, size_t hi,
                             nest_cand cand, uint32_t flip, int pshift, uint32_t prefix,
                             int dshift, uint32_t dmask, int64_t *h, uint32_t *keep) {
  int64_t m = 0;
  uint8_t f[BLK];
  for (size_t i = lo; i < hi; i += BLK) {
    const int nb = hi - i < BLK ? (int)(hi - i) : BLK;
    uint32_t any = 0; /* vectorised: which candidates of the block match the prefix? */
    for (int j = 0; j < nb; ++j) {
      const uint32_t key = (fbits(score[i + j]) & ABS_MASK) ^ flip;
      f[j] = (uint8_t)((uint32_t)((key >> pshift) == prefix) & cand_ones(cand, mask, i + j));
      any |= f[j];
    }
    if (!any) continue;
    if (nb < BLK) memset(f + nb, 0, (size_t)(BLK - nb));
    for (int w = 0; w < BLK; w += 8) /* then visit the matches only */
      for (uint64_t word = flag_word(f + w); word; word &= word - 1) {
        const size_t at = i + (size_t)w + (size_t)(__builtin_ctzll(word) >> 3);
        const uint32_t key = (fbits(score[at]) & ABS_MASK) ^ flip;
        h[(key >> dshift) & dmask]++;
        if (keep) keep[m] = key;
        ++m;
      }
  }
  return m;
}

static int64_t histp(const nest_scores *s, size_t lo, size_t hi, uint32_t flip, int pshift,
                     uint32_t prefix, int dshift, uint32_t dmask, int64_t *h, uint32_t *keep) {
  switch (s->cand) {
    case NEST_CAND_ALL:
      return histp_loop(s->score, s->mask, lo, hi, NEST_CAND_ALL, flip, pshift, prefix, dshift,
                        dmask, h, keep);
    case NEST_CAND_DORMANT:
      return histp_loop(s->score, s->mask, lo, hi, NEST_CAND_DORMANT, flip, pshift, prefix,
                        dshift, dmask, h, keep);
    case NEST_CAND_ACTIVE:
      return histp_loop(s->score, s->mask, lo, hi, NEST_CAND_ACTIVE, flip, pshift, prefix, dshift,
                        dmask, h, keep);
  }
  return 0;
}

/* Walk the global bins from the best (highest) down to the one holding the *krem-th best;
 * what lies in better bins is chosen for sure and leaves krem. */
static uint32_t pick_digit(const int64_t *h, int nbins, int64_t *krem, int64_t *better) {
  for (int d = nbins - 1; d >= 0; --d) {
    if (h[d] >= *krem) return (uint32_t)d;
    *krem -= h[d];
    *better += h[d];
  }
  NEST_ASSERT(!"the global histogram holds fewer candidates than requested");
  return 0;
}

int64_t nest_select_count(const nest_select_req *req, int64_t candidates) {
  if (candidates < 0) return -1;
  if (req->k >= 0) return req->k < candidates ? req->k : candidates;
  if (!(req->fraction >= 0.0 && req->fraction <= 1.0)) return -1;
  double x = req->fraction * (double)candidates;
  /* fraction x candidates is off by a few ulps when the decimal fraction is not a binary one
   * (0.3 x 10 = 3.0000000000000004, 0.56 x 72e6 = 40320000.00000001): snap to the integer
   * when within 1e-9, or 1e-12 relative for large products, before taking the ceiling. */
  const double r = nearbyint(x);
  if (fabs(x - r) <= fmax(1e-9, 1e-12 * x)) x = r;
  const int64_t k = (int64_t)ceil(x);
  return k < candidates ? k : candidates;
}

/* The local argument checks; every rank runs them before its first collective. */
static nest_status check_args(const nest_scores *s, const nest_select_req *req) {
  if (!s || !req) return NEST_ERR(NEST_ERR_ARG, "select: scores or request is NULL");
  if (req->order != NEST_SELECT_LARGEST && req->order != NEST_SELECT_SMALLEST)
    return NEST_ERR(NEST_ERR_ARG, "select: unknown order %d", (int)req->order);
  if (s->cand != NEST_CAND_ALL && s->cand != NEST_CAND_DORMANT && s->cand != NEST_CAND_ACTIVE)
    return NEST_ERR(NEST_ERR_ARG, "select: unknown candidate filter %d", (int)s->cand);
  if (s->n > 0 && !s->score) return NEST_ERR(NEST_ERR_ARG, "select: %zu scores but no array", s->n);
  if (s->n > 0 && s->cand != NEST_CAND_ALL && !s->mask)
    return NEST_ERR(NEST_ERR_ARG, "select: dormant/active candidates need a mask");
  if (req->k < 0 && !(req->fraction >= 0.0 && req->fraction <= 1.0))
    return NEST_ERR(NEST_ERR_ARG, "select: fraction %g is not in [0, 1]", req->fraction);
  return NEST_OK;
}

/* Every rank is here because the global invalid count is non-zero: report the same line
 * everywhere, with the first bad position (the lowest rank's, in the spread layout). */
static nest_status numeric_error(nest_comm *c, const nest_scores *s, size_t lo, size_t hi,
                                 int spread, const int64_t *g, int64_t candidates) {
  int64_t first = INT64_MAX;
  for (size_t i = lo; i < hi; ++i)
    if (cand_at(s->cand, s->mask, i) && !valid_bits(fbits(s->score[i]))) {
      /* spread: (rank, local index) packed so the minimum is the lowest rank's first */
      first = spread ? ((int64_t)nest_comm_rank(c) << 40) | (int64_t)i : (int64_t)i;
      break;
    }
  NEST_CALL(nest_comm_allreduce_min_i64(c, &first, 1));
  const long long bad = (long long)(g[G_NAN] + g[G_INF] + g[G_NEG]);
  const long long all = (long long)(candidates + bad);
  if (spread)
    return NEST_ERR(NEST_ERR_NUMERIC,
                    "select: %lld of %lld candidate scores are not finite and >= 0 (%lld NaN, "
                    "%lld Inf, %lld negative); the first is on rank %lld at index %lld",
                    bad, all, (long long)g[G_NAN], (long long)g[G_INF], (long long)g[G_NEG],
                    (long long)(first >> 40), (long long)(first & (((int64_t)1 << 40) - 1)));
  return NEST_ERR(NEST_ERR_NUMERIC,
                  "select: %lld of %lld candidate scores are not finite and >= 0 (%lld NaN, "
                  "%lld Inf, %lld negative); the first is at index %lld",
                  bad, all, (long long)g[G_NAN], (long long)g[G_INF], (long long)g[G_NEG],
                  (long long)first);
}

/* What the rounds of one selection share. */
typedef struct {
  nest_comm *c;
  const nest_scores *s;
  int spread, C;        /* C: chunks of this rank's slice, one per thread */
  size_t lo, hi;        /* this rank's slice of the scores */
  uint32_t flip;
  int64_t *ch;          /* [C x R1_BINS]: each chunk's histogram */
  int64_t loc[R1_BINS]; /* round 1: this rank's histogram */
  uint32_t *keep;       /* round 2: the keys of the candidates in bin d1 (NULL: not kept) */
  int64_t *off;         /* round 2: chunk q writes its kept keys at keep + off[q] */
  int64_t *all_eq;      /* spread: [P] threshold-equal candidates per rank */
} sel_ctx;

/* out[0, nb) = the sum of the chunks' histograms. */
static void sum_chunks(const sel_ctx *x, int nb, int64_t *out) {
  memset(out, 0, (size_t)nb * sizeof *out);
  for (int q = 0; q < x->C; ++q)
    for (int b = 0; b < nb; ++b) out[b] += x->ch[(size_t)q * R1_BINS + b];
}

/* Round 1: this rank's histogram of digit 1 (and the invalid scores) into x->loc and g.
 * A local failure is g[G_FAIL] = 1, agreed after the allreduce that follows. */
static nest_status round1(sel_ctx *x, const nest_select_req *req, nest_selection *out,
                          int64_t *g) {
  const int R = nest_comm_rank(x->c), P = nest_comm_size(x->c);
  const nest_scores *s = x->s;
  nest_status st = check_args(s, req);
  if (st == NEST_OK) {
    out->order = req->order;
    x->flip = flip_of(req->order);
    x->lo = x->spread ? 0 : chunk_at(0, s->n, R, P); /* replicated: this rank's slice */
    x->hi = x->spread ? s->n : chunk_at(0, s->n, R + 1, P);
    x->C = x->hi - x->lo >= PAR_MIN ? omp_get_max_threads() : 1;
    if (x->C < 1) x->C = 1;
    st = nest_calloc((void **)&x->ch, (size_t)x->C, R1_BINS * sizeof *x->ch, "select histograms");
    if (st == NEST_OK && x->spread) /* here: an allocation failure is agreed after round 1 */
      st = nest_malloc((void **)&x->all_eq, (size_t)P * sizeof *x->all_eq, "select tie counts");
  }
  if (st != NEST_OK) {
    g[G_FAIL] = 1;
    return st;
  }
  const int C = x->C;
#pragma omp parallel for schedule(static) num_threads(C) if (C > 1)
  for (int k = 0; k < C; ++k)
    hist1(s, chunk_at(x->lo, x->hi, k, C), chunk_at(x->lo, x->hi, k + 1, C), x->flip,
          x->ch + (size_t)k * R1_BINS);
  sum_chunks(x, R1_BINS, x->loc);
  memcpy(g, x->loc, D1_BINS * sizeof *g);
  g[G_NAN] = x->loc[BIN_NAN];
  g[G_INF] = x->loc[BIN_INF];
  g[G_NEG] = x->loc[BIN_NEG];
  return NEST_OK;
}

/* Round 2: this rank's histogram of digit 2 of the candidates in bin d1 into loc2, keeping
 * their keys (for round 3) when they are few. */
static void round2(sel_ctx *x, uint32_t d1, int64_t *loc2) {
  const int64_t in_d1 = x->loc[d1];
  const int C = x->C;
  if (in_d1 > 0 && (size_t)in_d1 <= (x->hi - x->lo) / 4) {
    if (nest_malloc((void **)&x->keep, (size_t)in_d1 * sizeof *x->keep, "select keys") != NEST_OK ||
        nest_malloc((void **)&x->off, (size_t)(C + 1) * sizeof *x->off, "select offsets") != NEST_OK) {
      nest_error_clear(); /* not fatal: round 3 reads the scores again instead */
      free(x->keep);
      x->keep = NULL;
    } else {
      x->off[0] = 0;
      for (int q = 0; q < C; ++q) x->off[q + 1] = x->off[q] + x->ch[(size_t)q * R1_BINS + d1];
    }
  }
  memset(x->ch, 0, (size_t)C * R1_BINS * sizeof *x->ch);
#pragma omp parallel for schedule(static) num_threads(C) if (C > 1)
  for (int q = 0; q < C; ++q) {
    int64_t m = histp(x->s, chunk_at(x->lo, x->hi, q, C), chunk_at(x->lo, x->hi, q + 1, C), x->flip,
                      D1_SHIFT, d1, D2_SHIFT, D2_BINS - 1, x->ch + (size_t)q * R1_BINS,
                      x->keep ? x->keep + x->off[q] : NULL);
    NEST_ASSERT(!x->keep || m == x->off[q + 1] - x->off[q]);
  }
  sum_chunks(x, D2_BINS, loc2);
}

/* Round 3: this rank's histogram of digit 3 of the candidates matching digits 1 and 2 (p2),
 * from the kept keys or the scores, into loc3. */
static void round3(sel_ctx *x, uint32_t d1, uint32_t p2, int64_t *loc3) {
  const int C = x->C;
  memset(x->ch, 0, (size_t)C * R1_BINS * sizeof *x->ch);
  if (x->keep) {
    const int64_t in_d1 = x->loc[d1];
    const int Ck = in_d1 >= (int64_t)PAR_MIN ? C : 1;
    const uint32_t *keep = x->keep;
#pragma omp parallel for schedule(static) num_threads(Ck) if (Ck > 1)
    for (int q = 0; q < Ck; ++q) {
      int64_t *h = x->ch + (size_t)q * R1_BINS;
      const size_t a = chunk_at(0, (size_t)in_d1, q, Ck), b = chunk_at(0, (size_t)in_d1, q + 1, Ck);
      for (size_t i = a; i < b; ++i)
        if ((keep[i] >> D2_SHIFT) == p2) h[keep[i] & (D3_BINS - 1)]++;
    }
  } else {
#pragma omp parallel for schedule(static) num_threads(C) if (C > 1)
    for (int q = 0; q < C; ++q)
      histp(x->s, chunk_at(x->lo, x->hi, q, C), chunk_at(x->lo, x->hi, q + 1, C), x->flip, D2_SHIFT,
            p2, 0, D3_BINS - 1, x->ch + (size_t)q * R1_BINS, NULL);
  }
  sum_chunks(x, D3_BINS, loc3);
}

/* Rounds 2 and 3 after round 1 chose digit d1 (krem, better: what round 1 left), then the
 * threshold, the ties and (spread) the ties on lower ranks. */
static nest_status rounds23(sel_ctx *x, uint32_t d1, int64_t k, int64_t krem, int64_t better,
                            nest_selection *out) {
  int64_t g2[D2_BINS], g3[D3_BINS], loc3[D3_BINS];
  round2(x, d1, g2);
  NEST_CALL(nest_comm_allreduce_i64(x->c, g2, D2_BINS));
  const uint32_t d2 = pick_digit(g2, D2_BINS, &krem, &better);
  const uint32_t p2 = (d1 << (D1_SHIFT - D2_SHIFT)) | d2;
  round3(x, d1, p2, loc3);
  memcpy(g3, loc3, sizeof g3);
  NEST_CALL(nest_comm_allreduce_i64(x->c, g3, D3_BINS));
  const uint32_t d3 = pick_digit(g3, D3_BINS, &krem, &better);
  const uint32_t key = (p2 << D2_SHIFT) | d3, abits = key ^ x->flip;
  memcpy(&out->threshold, &abits, sizeof abits);
  out->better = better;
  out->ties = k - better;
  NEST_ASSERT(out->ties >= 1 && out->ties == krem && out->ties <= g3[d3]);
  if (!x->spread) return NEST_OK;
  /* Threshold-equal candidates on lower ranks come first in the rank-major global order. */
  NEST_CALL(nest_comm_allgather(x->c, &loc3[d3], x->all_eq, sizeof *x->all_eq));
  for (int r = 0; r < nest_comm_rank(x->c); ++r) out->ties_before += x->all_eq[r];
  return NEST_OK;
}

static nest_status select_core(nest_comm *c, const nest_scores *s, const nest_select_req *req,
                               int spread, nest_selection *out) {
  memset(out, 0, sizeof *out);
  sel_ctx x = {.c = c, .s = s, .spread = spread, .C = 1};
  int64_t g[G_LEN];
  memset(g, 0, sizeof g);
  /* Local failures must not leave the other ranks waiting in the allreduce: they are counted
   * in g[G_FAIL] and agreed on (with the failing rank's message) after it. */
  nest_status st = round1(&x, req, out, g);
  nest_status rs = nest_comm_allreduce_i64(c, g, G_LEN);
  if (rs != NEST_OK) {
    st = rs;
    goto done;
  }
  if (g[G_FAIL] > 0) {
    st = nest_comm_agree(c, st);
    NEST_ASSERT(st != NEST_OK);
    goto done;
  }
  int64_t candidates = 0;
  for (int b = 0; b < D1_BINS; ++b) candidates += g[b];
  out->candidates = candidates;
  if (g[G_NAN] + g[G_INF] + g[G_NEG] > 0) {
    st = numeric_error(c, s, x.lo, x.hi, spread, g, candidates);
    goto done;
  }
  const int64_t k = nest_select_count(req, candidates);
  NEST_ASSERT(k >= 0 && k <= candidates);
  out->k = k;
  if (k == 0) goto done; /* every rank knows: nothing chosen, threshold 0 */
  int64_t krem = k, better = 0;
  const uint32_t d1 = pick_digit(g, D1_BINS, &krem, &better);
  st = rounds23(&x, d1, k, krem, better, out);
done:
  free(x.ch);
  free(x.off);
  free(x.all_eq);
  free(x.keep);
  return st;
}

nest_status nest_select_replicated(nest_comm *c, const nest_scores *s, const nest_select_req *req,
                                   nest_selection *out) {
  NEST_CALL(select_core(c, s, req, 0, out));
  return NEST_OK;
}

nest_status nest_select_spread(nest_comm *c, const nest_scores *s, const nest_select_req *req,
                               nest_selection *out) {
  NEST_CALL(select_core(c, s, req, 1, out));
  return NEST_OK;
}

/* ---- marking --------------------------------------------------------------------------- */

int nest_select_is_chosen(const nest_selection *sel, float v, int64_t equal_before) {
  const uint32_t b = fbits(v);
  if (sel->k == 0 || !valid_bits(b)) return 0;
  const uint32_t flip = flip_of(sel->order), t = (fbits(sel->threshold) & ABS_MASK) ^ flip,
                 key = (b & ABS_MASK) ^ flip;
  return key > t || (key == t && equal_before < sel->ties);
}

/* Count the better and the threshold-equal candidates of [lo, hi). */
static AI void mark_count_loop(const float *score, const float *mask, size_t lo, size_t hi,
                               nest_cand cand, uint32_t flip, uint32_t t, int64_t *better,
                               int64_t *equal) {
  int64_t nb = 0, ne = 0;
  for (size_t i = lo; i < hi; ++i) {
    const uint32_t b = fbits(score[i]), key = (b & ABS_MASK) ^ flip;
    const uint32_t ok = cand_ones(cand, mask, i) & (0u - (uint32_t)valid_bits(b));
    nb += ok & (key > t);
    ne += ok & (key == t);
  }
  *better = nb;
  *equal = ne;
}

/* Write the chosen of [lo, hi) to out (at most cap), the first `ties_left` threshold-equal
 * ones included; returns how many were chosen. Per block, a vectorised pass flags the better
 * (1) and threshold-equal (2) candidates; blocks with any flag are written branch-free (every
 * index is stored, the count advances only for the chosen: with a random mask or a 10%
 * selection, branches would mispredict). Past cap the stores go to a scratch slot and the
 * caller's NEST_ASSERT on the count fires: the scores are then not the ones the selection was
 * made from. */
static AI int64_t mark_write_loop(const float *score, const float *mask, size_t lo, size_t hi,
                                  nest_cand cand, uint32_t flip, uint32_t t, int64_t ties_left,
                                  int64_t *out, int64_t cap) {
  int64_t m = 0, spill;
  uint8_t f[BLK];
  for (size_t i = lo; i < hi; i += BLK) {
    const int nb = hi - i < BLK ? (int)(hi - i) : BLK;
    uint32_t any = 0;
    for (int j = 0; j < nb; ++j) {
      const uint32_t b = fbits(score[i + j]), key = (b & ABS_MASK) ^ flip;
      const uint32_t ok = cand_ones(cand, mask, i + j) & (0u - (uint32_t)valid_bits(b));
      f[j] = (uint8_t)(ok & ((uint32_t)(key > t) | ((uint32_t)(key == t) << 1)));
      any |= f[j];
    }
    if (!any) continue;
    if (!(any & 2)) { /* no ties in the block: visit the chosen only */
      if (nb < BLK) memset(f + nb, 0, (size_t)(BLK - nb));
      for (int w = 0; w < BLK; w += 8)
        for (uint64_t word = flag_word(f + w); word; word &= word - 1) {
          int64_t *dst = m < cap ? out + m : &spill;
          *dst = (int64_t)(i + (size_t)w + (size_t)(__builtin_ctzll(word) >> 3));
          ++m;
        }
      continue;
    }
    for (int j = 0; j < nb; ++j) {
      const int64_t take = (f[j] >> 1) & (ties_left > 0);
      ties_left -= take;
      int64_t *dst = m < cap ? out + m : &spill;
      *dst = (int64_t)(i + (size_t)j);
      m += (f[j] & 1) | take;
    }
  }
  (void)spill;
  return m;
}

static void mark_count(const nest_scores *s, size_t lo, size_t hi, uint32_t flip, uint32_t t,
                       int64_t *better, int64_t *equal) {
  switch (s->cand) {
    case NEST_CAND_ALL:
      mark_count_loop(s->score, s->mask, lo, hi, NEST_CAND_ALL, flip, t, better, equal);
      break;
    case NEST_CAND_DORMANT:
      mark_count_loop(s->score, s->mask, lo, hi, NEST_CAND_DORMANT, flip, t, better, equal);
      break;
    case NEST_CAND_ACTIVE:
      mark_count_loop(s->score, s->mask, lo, hi, NEST_CAND_ACTIVE, flip, t, better, equal);
      break;
  }
}

static int64_t mark_write(const nest_scores *s, size_t lo, size_t hi, uint32_t flip, uint32_t t,
                          int64_t ties_left, int64_t *out, int64_t cap) {
  switch (s->cand) {
    case NEST_CAND_ALL:
      return mark_write_loop(s->score, s->mask, lo, hi, NEST_CAND_ALL, flip, t, ties_left, out, cap);
    case NEST_CAND_DORMANT:
      return mark_write_loop(s->score, s->mask, lo, hi, NEST_CAND_DORMANT, flip, t, ties_left, out,
                             cap);
    case NEST_CAND_ACTIVE:
      return mark_write_loop(s->score, s->mask, lo, hi, NEST_CAND_ACTIVE, flip, t, ties_left, out,
                             cap);
  }
  return 0;
}

int64_t nest_select_mark(const nest_selection *sel, const nest_scores *s, int64_t *chosen) {
  if (sel->k == 0 || s->n == 0) return 0;
  const uint32_t flip = flip_of(sel->order), t = (fbits(sel->threshold) & ABS_MASK) ^ flip;
  const int64_t ties_left = sel->ties - sel->ties_before; /* may be <= 0 on higher ranks */
  int C = s->n >= PAR_MIN ? omp_get_max_threads() : 1;
  int64_t *cnt = NULL;
  if (C > 1 && nest_malloc((void **)&cnt, (size_t)C * 3 * sizeof *cnt, "mark counts") != NEST_OK) {
    nest_error_clear(); /* not fatal: mark serially */
    C = 1;
  }
  if (C == 1) {
    const int64_t m = mark_write(s, 0, s->n, flip, t, ties_left, chosen, sel->k);
    NEST_ASSERT(m <= sel->k); /* else the scores are not those the selection was made from */
    return m;
  }

  /* Two passes: count per chunk, then each chunk writes at its prefix offset, its equal
   * candidates taking whatever ties the lower chunks left — exactly the serial result. */
  int64_t *nb = cnt, *ne = cnt + C, *pos = cnt + 2 * C;
#pragma omp parallel for schedule(static) num_threads(C)
  for (int q = 0; q < C; ++q)
    mark_count(s, chunk_at(0, s->n, q, C), chunk_at(0, s->n, q + 1, C), flip, t, &nb[q], &ne[q]);
  int64_t at = 0, left = ties_left;
  for (int q = 0; q < C; ++q) {
    const int64_t take = left <= 0 ? 0 : left < ne[q] ? left : ne[q];
    pos[q] = at;
    at += nb[q] + take;
    left -= ne[q];
    ne[q] = take;
  }
  NEST_ASSERT(at <= sel->k);
#pragma omp parallel for schedule(static) num_threads(C)
  for (int q = 0; q < C; ++q) {
    const int64_t want = nb[q] + ne[q];
    const int64_t m = mark_write(s, chunk_at(0, s->n, q, C), chunk_at(0, s->n, q + 1, C), flip, t,
                                 ne[q], chosen + pos[q], want);
    NEST_ASSERT(m == want);
  }
  free(cnt);
  return at;
}

/* ---- sorting --------------------------------------------------------------------------- */

/* Each entry becomes (inverted key << 33 | index): ascending order of these 64-bit words is
 * best score first, then ascending index — a context-free comparison, sorted in place. */
#define SORT_IDX_BITS 33

static int cmp_u64(const void *a, const void *b) {
  const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

void nest_select_sort(const nest_selection *sel, const float *score, int64_t *chosen, int64_t n) {
  if (n <= 1) return;
  const uint32_t flip = flip_of(sel->order);
  const uint64_t imask = ((uint64_t)1 << SORT_IDX_BITS) - 1;
  uint64_t *w = (uint64_t *)chosen; /* same object, its unsigned type */
  for (int64_t i = 0; i < n; ++i) {
    const int64_t idx = chosen[i];
    NEST_ASSERT(idx >= 0 && (uint64_t)idx <= imask);
    const uint32_t key = (fbits(score[idx]) & ABS_MASK) ^ flip;
    w[i] = ((uint64_t)(ABS_MASK ^ key) << SORT_IDX_BITS) | (uint64_t)idx;
  }
  qsort(w, (size_t)n, sizeof *w, cmp_u64);
  for (int64_t i = 0; i < n; ++i) chosen[i] = (int64_t)(w[i] & imask);
}

/* ---- the naive reference ---------------------------------------------------------------- */

/* Compares floats, not bits: an independent check of the key mapping (-0.0 == 0.0 here). */
typedef struct {
  float v;
  int64_t i;
} ref_item;

static int ref_cmp_largest(const void *a, const void *b) {
  const ref_item *x = a, *y = b;
  if (x->v != y->v) return x->v > y->v ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

static int ref_cmp_smallest(const void *a, const void *b) {
  const ref_item *x = a, *y = b;
  if (x->v != y->v) return x->v < y->v ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

static int cmp_i64(const void *a, const void *b) {
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int ref_cand(const nest_scores *s, size_t i) {
  switch (s->cand) {
    case NEST_CAND_ALL: return 1;
    case NEST_CAND_DORMANT: return s->mask[i] == 0.0f;
    case NEST_CAND_ACTIVE: return s->mask[i] != 0.0f;
  }
  return 0;
}

int64_t nest_select_ref(const nest_scores *s, const nest_select_req *req, int64_t *chosen) {
  int64_t n = 0;
  if (req->order != NEST_SELECT_LARGEST && req->order != NEST_SELECT_SMALLEST) {
    NEST_ERR(NEST_ERR_ARG, "select_ref: unknown order %d", (int)req->order);
    return -1;
  }
  for (size_t i = 0; i < s->n; ++i) {
    if (!ref_cand(s, i)) continue;
    if (!isfinite(s->score[i]) || s->score[i] < 0.0f) {
      NEST_ERR(NEST_ERR_NUMERIC, "select_ref: candidate score %g at index %zu", s->score[i], i);
      return -1;
    }
    ++n;
  }
  const int64_t k = nest_select_count(req, n);
  if (k < 0) {
    NEST_ERR(NEST_ERR_ARG, "select_ref: bad request");
    return -1;
  }
  ref_item *it;
  if (nest_malloc((void **)&it, (size_t)n * sizeof *it, "select_ref items") != NEST_OK) return -1;
  n = 0;
  for (size_t i = 0; i < s->n; ++i)
    if (ref_cand(s, i)) it[n++] = (ref_item){s->score[i], (int64_t)i};
  qsort(it, (size_t)n, sizeof *it,
        req->order == NEST_SELECT_SMALLEST ? ref_cmp_smallest : ref_cmp_largest);
  for (int64_t j = 0; j < k; ++j) chosen[j] = it[j].i;
  free(it);
  qsort(chosen, (size_t)k, sizeof *chosen, cmp_i64);
  return k;
}
