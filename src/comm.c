/* comm.c — the only file that calls MPI (see comm.h for the error discipline).
 *
 * Every wrapper checks the MPI return code (the communicator uses MPI_ERRORS_RETURN) and
 * turns a failure into NEST_ERR_MPI. A "self" communicator makes every collective an identity
 * so serial tools and unit tests need no MPI. */
#define _GNU_SOURCE
#include "nest/comm.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct nest_comm {
  MPI_Comm comm;
  int rank, size, local_size;
  int self;           /* 1: single process, no MPI calls */
  int finalize;       /* 1: we called MPI_Init and must finalize */
  void *scratch;      /* receive block of the by-construction sums; grows, never shrinks */
  size_t scratch_bytes;
};

static nest_status check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return NEST_OK;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return NEST_ERR(NEST_ERR_MPI, "%s failed: %s", what, msg);
}

nest_status nest_comm_init(int *argc, char ***argv, nest_comm **out) {
  *out = NULL;
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      return NEST_ERR(NEST_ERR_MPI, "MPI_Init_thread failed");
  }
  nest_comm *c = calloc(1, sizeof *c);
  if (!c) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for the communicator");
  c->finalize = !inited;
  NEST_CALL(check(MPI_Comm_dup(MPI_COMM_WORLD, &c->comm), "MPI_Comm_dup"));
  MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(c->comm, &c->rank);
  MPI_Comm_size(c->comm, &c->size);
  MPI_Comm node;
  if (MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) ==
      MPI_SUCCESS) {
    MPI_Comm_size(node, &c->local_size);
    MPI_Comm_free(&node);
  } else {
    c->local_size = 1;
  }
  *out = c;
  return NEST_OK;
}

nest_status nest_comm_create_self(nest_comm **out) {
  nest_comm *c = calloc(1, sizeof *c);
  if (!c) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for the communicator");
  c->self = 1;
  c->size = 1;
  c->local_size = 1;
  *out = c;
  return NEST_OK;
}

void nest_comm_destroy(nest_comm **cp) {
  if (!cp || !*cp) return;
  nest_comm *c = *cp;
  if (!c->self) {
    MPI_Comm_free(&c->comm);
    int fin = 0;
    MPI_Finalized(&fin);
    if (c->finalize && !fin) MPI_Finalize();
  }
  free(c->scratch);
  free(c);
  *cp = NULL;
}

int nest_comm_rank(const nest_comm *c) { return c->rank; }
int nest_comm_size(const nest_comm *c) { return c->size; }
int nest_comm_local_size(const nest_comm *c) { return c->local_size; }

/* MPI counts are int: split long messages into chunks of at most 2^30 elements. */
#define CHUNK ((size_t)1 << 30)

static nest_status allreduce(nest_comm *c, void *buf, size_t n, MPI_Datatype t, size_t esize,
                             MPI_Op op, const char *what) {
  if (c->self || c->size == 1 || n == 0) return NEST_OK;
  for (size_t off = 0; off < n; off += CHUNK) {
    size_t cnt = n - off < CHUNK ? n - off : CHUNK;
    NEST_CALL(check(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * esize, (int)cnt, t, op, c->comm),
                    what));
  }
  return NEST_OK;
}

nest_status nest_comm_allreduce_f32(nest_comm *c, float *buf, size_t n) {
  return allreduce(c, buf, n, MPI_FLOAT, sizeof(float), MPI_SUM, "MPI_Allreduce(float sum)");
}
nest_status nest_comm_allreduce_f64(nest_comm *c, double *buf, size_t n) {
  return allreduce(c, buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM, "MPI_Allreduce(double sum)");
}
nest_status nest_comm_allreduce_i64(nest_comm *c, int64_t *buf, size_t n) {
  return allreduce(c, buf, n, MPI_INT64_T, sizeof(int64_t), MPI_SUM, "MPI_Allreduce(int64 sum)");
}
nest_status nest_comm_allreduce_max_i64(nest_comm *c, int64_t *buf, size_t n) {
  return allreduce(c, buf, n, MPI_INT64_T, sizeof(int64_t), MPI_MAX, "MPI_Allreduce(int64 max)");
}
nest_status nest_comm_allreduce_min_i64(nest_comm *c, int64_t *buf, size_t n) {
  return allreduce(c, buf, n, MPI_INT64_T, sizeof(int64_t), MPI_MIN, "MPI_Allreduce(int64 min)");
}
nest_status nest_comm_allreduce_max_f64(nest_comm *c, double *buf, size_t n) {
  return allreduce(c, buf, n, MPI_DOUBLE, sizeof(double), MPI_MAX, "MPI_Allreduce(double max)");
}

static nest_status scratch_reserve(nest_comm *c, size_t bytes) {
  if (bytes <= c->scratch_bytes) return NEST_OK;
  void *p = realloc(c->scratch, bytes);
  if (!p) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for a %zu-byte reduction buffer", bytes);
  c->scratch = p;
  c->scratch_bytes = bytes;
  return NEST_OK;
}

/* See comm.h. Elements [0, P*blk) go through reduce-scatter + allgather in segments of at
 * most P * 2^26 elements (MPI counts are int); the tail of n mod P through reduce + bcast. */
static nest_status sum_same(nest_comm *c, void *buf, size_t n, MPI_Datatype t, size_t esize) {
  if (c->self || c->size == 1 || n == 0) return NEST_OK;
  const size_t P = (size_t)c->size;
  char *b = buf;
  if (n * P <= 256) { /* tiny: allgather everything, sum in rank order on every rank */
    NEST_CALL(scratch_reserve(c, n * P * esize));
    NEST_CALL(check(MPI_Allgather(b, (int)n, t, c->scratch, (int)n, t, c->comm),
                    "MPI_Allgather(sum)"));
    for (size_t i = 0; i < n; ++i) {
      if (t == MPI_DOUBLE) {
        const double *all = c->scratch;
        double v = all[i];
        for (size_t r = 1; r < P; ++r) v += all[r * n + i];
        ((double *)b)[i] = v;
      } else {
        const float *all = c->scratch;
        float v = all[i];
        for (size_t r = 1; r < P; ++r) v += all[r * n + i];
        ((float *)b)[i] = v;
      }
    }
    return NEST_OK;
  }
  const size_t seg_blk = (size_t)1 << 26;
  size_t done = 0, body = n / P * P;
  while (done < body) {
    size_t blk = (body - done) / P;
    if (blk > seg_blk) blk = seg_blk;
    NEST_CALL(scratch_reserve(c, blk * esize));
    NEST_CALL(check(MPI_Reduce_scatter_block(b + done * esize, c->scratch, (int)blk, t, MPI_SUM,
                                             c->comm),
                    "MPI_Reduce_scatter_block"));
    NEST_CALL(check(MPI_Allgather(c->scratch, (int)blk, t, b + done * esize, (int)blk, t, c->comm),
                    "MPI_Allgather"));
    done += blk * P;
  }
  if (n > body) {
    const int tail = (int)(n - body);
    void *in = c->rank == 0 ? MPI_IN_PLACE : (void *)(b + body * esize);
    NEST_CALL(check(MPI_Reduce(in, b + body * esize, tail, t, MPI_SUM, 0, c->comm), "MPI_Reduce"));
    NEST_CALL(check(MPI_Bcast(b + body * esize, tail, t, 0, c->comm), "MPI_Bcast"));
  }
  return NEST_OK;
}

nest_status nest_comm_sum_same_f32(nest_comm *c, float *buf, size_t n) {
  return sum_same(c, buf, n, MPI_FLOAT, sizeof(float));
}
nest_status nest_comm_sum_same_f64(nest_comm *c, double *buf, size_t n) {
  return sum_same(c, buf, n, MPI_DOUBLE, sizeof(double));
}

nest_status nest_comm_bcast(nest_comm *c, void *buf, size_t bytes, int root) {
  if (c->self || c->size == 1 || bytes == 0) return NEST_OK;
  for (size_t off = 0; off < bytes; off += CHUNK) {
    size_t cnt = bytes - off < CHUNK ? bytes - off : CHUNK;
    NEST_CALL(check(MPI_Bcast((char *)buf + off, (int)cnt, MPI_BYTE, root, c->comm), "MPI_Bcast"));
  }
  return NEST_OK;
}

nest_status nest_comm_allgather(nest_comm *c, const void *in, void *out, size_t bytes) {
  if (c->self || c->size == 1) {
    memmove(out, in, bytes);
    return NEST_OK;
  }
  if (bytes > (size_t)1 << 30) return NEST_ERR(NEST_ERR_ARG, "allgather of %zu bytes is too large", bytes);
  return check(MPI_Allgather(in, (int)bytes, MPI_BYTE, out, (int)bytes, MPI_BYTE, c->comm),
               "MPI_Allgather");
}

nest_status nest_comm_barrier(nest_comm *c) {
  if (c->self || c->size == 1) return NEST_OK;
  return check(MPI_Barrier(c->comm), "MPI_Barrier");
}

nest_status nest_comm_agree(nest_comm *c, nest_status local) {
  if (c->self || c->size == 1) return local;
  /* Lowest failing rank wins: encode (failed ? rank : size) and take the minimum. */
  int mine = local != NEST_OK ? c->rank : c->size, first = c->size;
  nest_status st = check(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->comm),
                         "MPI_Allreduce(agree)");
  if (st != NEST_OK) return st;
  if (first == c->size) return NEST_OK;
  /* The failing rank broadcasts its code and message so every rank reports the same. */
  struct {
    int code;
    char msg[1000];
  } e;
  memset(&e, 0, sizeof e);
  if (c->rank == first) {
    e.code = (int)local;
    if (first == 0)
      snprintf(e.msg, sizeof e.msg, "%s", nest_error_message());
    else
      snprintf(e.msg, sizeof e.msg, "rank %d: %s", first, nest_error_message());
  }
  st = check(MPI_Bcast(&e, (int)sizeof e, MPI_BYTE, first, c->comm), "MPI_Bcast(agree)");
  if (st != NEST_OK) return st;
  if (c->rank != first) nest_error_adopt((nest_status)e.code, e.msg);
  else if (first != 0) nest_error_adopt((nest_status)e.code, e.msg);
  return (nest_status)e.code;
}

nest_status nest_comm_check_same(nest_comm *c, uint64_t value, const char *what) {
  if (c->self || c->size == 1) return NEST_OK;
  uint64_t *all = malloc(sizeof(uint64_t) * (size_t)c->size);
  if (!all) return NEST_ERR(NEST_ERR_NOMEM, "out of memory checking %s", what);
  nest_status st = check(MPI_Allgather(&value, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, c->comm),
                         "MPI_Allgather(check_same)");
  if (st == NEST_OK) {
    for (int r = 1; r < c->size; ++r)
      if (all[r] != all[0]) {
        st = NEST_ERR(NEST_ERR_MISMATCH,
                      "%s differ between ranks: rank 0 has %016llx, rank %d has %016llx", what,
                      (unsigned long long)all[0], r, (unsigned long long)all[r]);
        break;
      }
  }
  free(all);
  return st;
}

double nest_comm_wtime(void) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return MPI_Wtime();
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void nest_comm_abort(nest_comm *c, int code) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited && c && !c->self) MPI_Abort(c->comm, code);
  (void)code;
  abort();
}
