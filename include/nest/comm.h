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

/* MPI_Init (thread level FUNNELED) + the world communicator. Call once per process. */
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
 * promise that for MPI_Allreduce): each element is reduced exactly once, on one rank
 * (MPI_Reduce_scatter_block over P equal blocks, MPI_Reduce for the n mod P tail) and those
 * bits are copied to every rank (MPI_Allgather / MPI_Bcast). Short vectors (n x P <= 256) are
 * allgathered and summed on every rank in rank order, which is identical by the same argument.
 * Used for every value a decision or the weights are computed from: the gradient arena of
 * each step, batch-norm statistics, growth gradient sums, losses that are compared. */
nest_status nest_comm_sum_same_f32(nest_comm *c, float *buf, size_t n);
nest_status nest_comm_sum_same_f64(nest_comm *c, double *buf, size_t n);
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

/* Last resort for a broken invariant where agreement is impossible: MPI_Abort. */
void nest_comm_abort(nest_comm *c, int code) __attribute__((noreturn));

#endif
