/* select.h — exact order statistics over ranks (ALGORITHMS.md §9): the ONE selection function
 * behind every threshold in nest (connection growth top-k, neuron-growth percentiles, SET and
 * RigL drops, random regrowth, and next the pruning percentiles).
 *
 * Scores are non-negative finite floats. -0.0 counts as +0.0; NaN, +-Inf or a negative score
 * is NEST_ERR_NUMERIC, reported identically on every rank (the bad count travels with the first
 * histogram). Non-negative IEEE floats order like their bit patterns, so a radix select on the
 * low 31 bits finds the exact k-th score in three rounds of {local histogram of one 11/11/9-bit
 * digit; MPI integer SUM}. Integer sums are exact and associative, so every rank derives the
 * same threshold BY CONSTRUCTION, whatever the rank count or MPI's reduction order.
 *
 * Order: NEST_SELECT_LARGEST chooses the k largest scores, NEST_SELECT_SMALLEST the k smallest.
 * Among equal scores the LOWER GLOBAL INDEX is chosen first, so exactly min(k, candidates)
 * positions are chosen, never more (no "everything >= threshold").
 *
 * Candidates: every position (NEST_CAND_ALL), or only those whose mask is 0 (NEST_CAND_DORMANT)
 * or non-zero (NEST_CAND_ACTIVE). Non-candidates are never read for their score's validity.
 *
 * Two layouts of the scores over ranks:
 *   replicated — every rank holds the whole array (e.g. a gradient sum after the by-construction
 *     allreduce). Rank r histograms only its slice [n r / P, n (r+1) / P); the selection then
 *     applies to the whole array on every rank (nest_select_mark with the result as is).
 *   spread — each rank holds its own scores (data-dependent, e.g. per-sample quantities); the
 *     global index is the rank-major concatenation (all of rank 0's, then rank 1's, ...). Each
 *     rank marks its own part; the result carries ties_before for that.
 * Every rank must call with the same k / fraction and order (they are part of the decision). */
#ifndef NEST_SELECT_H
#define NEST_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "nest/comm.h"
#include "nest/status.h"

typedef enum { NEST_SELECT_LARGEST = 0, NEST_SELECT_SMALLEST = 1 } nest_select_order;
typedef enum { NEST_CAND_ALL = 0, NEST_CAND_DORMANT = 1, NEST_CAND_ACTIVE = 2 } nest_cand;

/* The scores one call selects from (this rank's array). */
typedef struct {
  const float *score; /* [n] */
  const float *mask;  /* [n], or NULL with cand == NEST_CAND_ALL */
  nest_cand cand;
  size_t n;
} nest_scores;

/* How many to choose: k >= 0 chooses k (clamped to the candidate count); k < 0 chooses
 * ceil(fraction x candidates) with fraction in [0, 1] (a product within 1e-9 of an integer,
 * or within 1e-12 relative when larger, is rounded to it first, so 0.3 x 10 chooses 3, not 4,
 * and 0.56 x 72,000,000 chooses 40,320,000, not one more). */
typedef struct {
  int64_t k;
  double fraction;
  nest_select_order order;
} nest_select_req;

/* What was decided; identical on every rank except ties_before (spread layout). */
typedef struct {
  nest_select_order order;
  int64_t candidates;  /* global number of candidates */
  int64_t k;           /* number chosen: min(requested, candidates) */
  float threshold;     /* score of the k-th chosen (the last in selection order); 0 if k == 0 */
  int64_t better;      /* candidates strictly before the threshold in selection order: all chosen */
  int64_t ties;        /* candidates equal to the threshold that are chosen: k - better */
  int64_t ties_before; /* spread: threshold-equal candidates on lower ranks; replicated: 0 */
} nest_selection;

/* The k / fraction rule above: how many req chooses out of `candidates`; -1 if the fraction
 * is not in [0, 1] or candidates < 0. (The selection functions and the reference use it.) */
int64_t nest_select_count(const nest_select_req *req, int64_t candidates);

/* Replicated layout (see above). Collective over c. Errors (NEST_ERR_NUMERIC for invalid
 * scores, NEST_ERR_ARG for a bad request, NULL arrays, NEST_ERR_NOMEM) are returned on every
 * rank with the same message, also when only one rank's data or arguments are at fault.
 * Invalid candidate scores are an error even when k == 0. */
nest_status nest_select_replicated(nest_comm *c, const nest_scores *s, const nest_select_req *req,
                                   nest_selection *out);
/* Spread layout (see above). Collective over c; errors as for nest_select_replicated. */
nest_status nest_select_spread(nest_comm *c, const nest_scores *s, const nest_select_req *req,
                               nest_selection *out);

/* Is score v of a candidate chosen, given how many threshold-equal candidates precede it?
 * (the rule nest_select_mark applies; exposed for callers that walk their own layout) */
int nest_select_is_chosen(const nest_selection *sel, float v, int64_t equal_before);

/* Write the chosen positions of s (ascending local indices) to chosen[] and return how many.
 * Replicated: the whole array, returns sel->k. Spread: this rank's part. chosen must hold
 * sel->k entries (those past the returned count are used as scratch). Not collective; the
 * same inputs give the same output on every rank, whatever the OpenMP thread count. s must
 * hold the scores the selection was made from (NEST_ASSERT if more than k would be chosen). */
int64_t nest_select_mark(const nest_selection *sel, const nest_scores *s, int64_t *chosen);

/* Sort chosen[0..n) into selection order: best first (largest score for LARGEST, smallest for
 * SMALLEST), equal scores by ascending index. In place, no allocation; indices must be below
 * 2^33 (each entry is packed with its score's key into one 64-bit word while sorting). */
void nest_select_sort(const nest_selection *sel, const float *score, int64_t *chosen, int64_t n);

/* Naive reference twin (tests): sort the candidates of s by (score in selection order, index)
 * and write the first min(k, candidates) indices, ascending, to chosen[]; returns how many.
 * Uses the same k / fraction rule and the same validity rules (returns -1 on NaN, Inf or a
 * negative candidate score). */
int64_t nest_select_ref(const nest_scores *s, const nest_select_req *req, int64_t *chosen);

#endif
