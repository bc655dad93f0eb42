/* comm.h — the only door to MPI. src/comm.c is the only file that calls MPI.
 *
 * Error discipline (CoMD style): every rank fails the same way. Errors decided from shared
 * data are found identically on every rank; local errors (I/O, NaN) are agreed at sync points
 * with nest_comm_agree(), which gives every rank the lowest-ranked failure's code and message,
 * so all ranks return the same status and none is left waiting in a collective. */
#ifndef NEST_COMM_H
#define NEST_COMM_H

#include <stddef.h>
#include <stdint.h>
#include "nest/status.h"

typedef struct nest_comm nest_comm;

/* MPI_Init_thread + the world communicator. Call once per process. It asks for
 * MPI_THREAD_MULTIPLE: the bucketed sums below run on a thread of their own while the main
 * thread may call MPI too (sync batch-norm in backward). With a lower level provided, bucketed
 * sums run at post time on the calling thread instead (no overlap, the same bits). */
nest_status nest_comm_init(int *argc, char ***argv, nest_comm **out);
/* A communicator over a single process (no MPI required), for serial tools and unit tests.
 * All collectives become identities. */
nest_status nest_comm_create_self(nest_comm **out);
/* Frees the handle; finalizes MPI if nest_comm_init initialised it. */
void nest_comm_destroy(nest_comm **c);

int nest_comm_rank(const nest_comm *c);
int nest_comm_size(const nest_comm *c);
/* Number of ranks on this node (for thread budgeting: ranks x threads <= cores). */
int nest_comm_local_size(const nest_comm *c);

/* In-place sums over all ranks. */
nest_status nest_comm_allreduce_f32(nest_comm *c, float *buf, size_t n);
nest_status nest_comm_allreduce_f64(nest_comm *c, double *buf, size_t n);
nest_status nest_comm_allreduce_i64(nest_comm *c, int64_t *buf, size_t n);
/* In-place sums whose result is bit-identical on every rank BY CONSTRUCTION (MPI does not
 * promise that for MPI_Allreduce): each element is summed by nest on exactly one rank, its
 * owner, in rank order ((x0 + x1) + x2) + ... + x(P-1), and the owner's bits are copied to
 * every rank. The array is cut into segments of at most 2^24 elements; segment [0, m) is cut
 * into P blocks, block r = [m r / P, m (r+1) / P) owned by rank r: MPI_Alltoallv sends every
 * block to its owner, the owner adds the P terms in rank order, MPI_Allgatherv copies the sums
 * back. Since neither the owner nor the cutting changes an element's sum, any split of the
 * array into ranges summed separately (nest_comm_bucket_*) gives the same bits as one sum of
 * the whole, for any P. Short vectors (n x P <= 256) are allgathered and summed on every rank
 * in rank order, which is the same sum. Traffic per rank: (P-1)/P of the array out and in per
 * phase, as a ring allreduce; P-1 messages per phase. Used for every value a decision or the
 * weights are computed from: the gradient arena of each step, batch-norm statistics, growth
 * gradient sums, losses that are compared. */
nest_status nest_comm_sum_same_f32(nest_comm *c, float *buf, size_t n);
nest_status nest_comm_sum_same_f64(nest_comm *c, double *buf, size_t n);

/* Bucketed sum of a float array, overlapped with the caller's work (the gradient arena during
 * backward, train.c). A round: begin(buf); post(lo, hi) for ranges of buf whose values are
 * final, as soon as they are; end() waits until every posted range holds its sum. The result
 * is nest_comm_sum_same_f32 of each range, whose bits equal those of one fused sum of their
 * union (see above). Every rank posts the same ranges in the same order; the ranges are
 * disjoint, and the caller leaves them alone between post and end.
 *
 * Why a thread: Open MPI 4.1 has no asynchronous progress ("OMPI progress: no" in ompi_info),
 * so a non-blocking collective started during backward would only advance inside later MPI
 * calls — between layers at best, never inside a long convolution. A communication thread
 * (started by the first round; needs MPI_THREAD_MULTIPLE) runs the ranges' sums in posting
 * order on its own duplicate communicator, so the exchanges and the owners' additions proceed
 * while the layers compute. It sleeps on a condition variable when idle and completes its
 * non-blocking calls with MPI_Test and short sleeps (20 us doubling to 0.5 ms), rather than
 * spinning in MPI_Wait on a core the layers need. A no-op with one rank. end() returns the
 * thread's first error (its message adopted); *seconds (optional) = the time from the start
 * of the round's first sum to the end of its last.
 * A post can fail locally (its range list cannot grow): that is agreed at the post itself,
 * which every rank reaches, so every rank's post of that range returns the same error; the
 * caller stops posting and calls end(), which returns once the ranges posted before it are
 * summed on every rank — no communication thread is left waiting for a range. */
nest_status nest_comm_bucket_begin(nest_comm *c, float *buf);
nest_status nest_comm_bucket_post(nest_comm *c, size_t lo, size_t hi);
nest_status nest_comm_bucket_end(nest_comm *c, double *seconds);
/* In-place max / min over all ranks. */
nest_status nest_comm_allreduce_max_i64(nest_comm *c, int64_t *buf, size_t n);
nest_status nest_comm_allreduce_min_i64(nest_comm *c, int64_t *buf, size_t n);
nest_status nest_comm_allreduce_max_f64(nest_comm *c, double *buf, size_t n);
/* Broadcast `bytes` bytes from `root`. */
nest_status nest_comm_bcast(nest_comm *c, void *buf, size_t bytes, int root);
/* Gather `bytes` from every rank into `out` (size bytes x nranks) on every rank. */
nest_status nest_comm_allgather(nest_comm *c, const void *in, void *out, size_t bytes);
nest_status nest_comm_barrier(nest_comm *c);

/* Sync point for local errors: every rank passes its own status (and the thread's error
 * message if not OK). Returns NEST_OK on every rank if all passed OK; otherwise every rank
 * returns the code of the lowest failing rank, with that rank's message adopted locally
 * (prefixed "rank R: " when R != 0). */
nest_status nest_comm_agree(nest_comm *c, nest_status local);

/* Agree that a 64-bit value (e.g. a hash of weights and masks) is the same on every rank.
 * Returns NEST_ERR_MISMATCH on every rank, naming `what` and the first differing rank, if not. */
nest_status nest_comm_check_same(nest_comm *c, uint64_t value, const char *what);

/* Wall clock in seconds (MPI_Wtime when MPI is up). */
double nest_comm_wtime(void);

#endif
