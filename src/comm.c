/* comm.c — the only file that calls MPI (see comm.h for the error discipline).
 *
 * Every wrapper checks the MPI return code (the communicator uses MPI_ERRORS_RETURN) and
 * turns a failure into NEST_ERR_MPI. A "self" communicator makes every collective an identity
 * so serial tools and unit tests need no MPI. */
#define _GNU_SOURCE
#include "nest/comm.h"

#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct nest_bucket_sum nest_bucket_sum;
static void bucket_destroy(nest_bucket_sum *q);

struct nest_comm {
  MPI_Comm comm;
  int rank, size, local_size;
  int self;           /* 1: single process, no MPI calls */
  int finalize;       /* 1: we called MPI_Init and must finalize */
  int thread_level;    /* what MPI_Init_thread provided (or the running MPI reports) */
  void *scratch;      /* received blocks of the by-construction sums; grows, never shrinks */
  size_t scratch_bytes;
  int *cnt;           /* [4 x size] counts and displacements of those sums */
  nest_bucket_sum *bq; /* the bucketed sums' thread, started by the first bucket round */
  float *bucket_buf;  /* the current round's array */
  double bucket_busy; /* without the thread: seconds the round's sums took */
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
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
      return NEST_ERR(NEST_ERR_MPI, "MPI_Init_thread failed");
  } else {
    MPI_Query_thread(&provided);
  }
  nest_comm *c = calloc(1, sizeof *c);
  if (!c) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for the communicator");
  c->finalize = !inited;
  c->thread_level = provided;
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
  c->cnt = malloc(sizeof(int) * 4 * (size_t)c->size);
  if (!c->cnt) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for the communicator");
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
    if (c->bq) bucket_destroy(c->bq);
    MPI_Comm_free(&c->comm);
    int fin = 0;
    MPI_Finalized(&fin);
    if (c->finalize && !fin) MPI_Finalize();
  }
  free(c->scratch);
  free(c->cnt);
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

/* ---- by-construction sums ----------------------------------------------------------------
 *
 * Every element's sum is computed by nest, on exactly one rank (its owner), in rank order
 * ((x0 + x1) + x2) + ... + x(P-1); every other rank receives those bits. The owner of an
 * element and the cutting of the array into segments or buckets therefore never change a bit:
 * a bucketed sum equals the fused one by construction, for any P. */

/* What one sum needs besides the data: a communicator and a receive buffer. The main thread
 * and the bucket thread each have their own. */
typedef struct {
  MPI_Comm comm;
  int rank, size;
  int poll;             /* 1: non-blocking calls completed by a Test loop that sleeps between
                           tests (the bucket thread: it must not spin on a core the layers
                           compute on); 0: blocking calls (the main thread) */
  void *scratch;        /* P-1 received blocks; grows, never shrinks */
  size_t scratch_bytes;
  int *cnt;             /* [4P]: send counts, send displacements, receive counts, displs */
} sum_ctx;

static nest_status scratch_reserve(sum_ctx *x, size_t bytes) {
  if (bytes <= x->scratch_bytes) return NEST_OK;
  void *p = realloc(x->scratch, bytes);
  if (!p) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for a %zu-byte reduction buffer", bytes);
  x->scratch = p;
  x->scratch_bytes = bytes;
  return NEST_OK;
}

/* Complete *req: MPI_Wait, or (poll) MPI_Test with sleeps of 20 us to 0.5 ms in between. */
static nest_status finish(const sum_ctx *x, MPI_Request *req, const char *what) {
  if (!x->poll) return check(MPI_Wait(req, MPI_STATUS_IGNORE), what);
  long ns = 20000;
  for (;;) {
    int done = 0;
    NEST_CALL(check(MPI_Test(req, &done, MPI_STATUS_IGNORE), what));
    if (done) return NEST_OK;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    if (ns < 500000) ns *= 2;
  }
}

/* scratch_reserve for a request that is the same on every rank (so every rank grows its
 * scratch at the same calls), with the growth agreed: a local out-of-memory must not leave the
 * other ranks waiting in the collective that follows. Costs a 1-int allreduce only when the
 * scratch grows (the first sums of a run). */
static nest_status scratch_agree(sum_ctx *x, size_t bytes) {
  if (bytes <= x->scratch_bytes) return NEST_OK;
  const nest_status mine = scratch_reserve(x, bytes);
  int fail = mine != NEST_OK, any = 0;
  MPI_Request req;
  NEST_CALL(check(MPI_Iallreduce(&fail, &any, 1, MPI_INT, MPI_MAX, x->comm, &req),
                  "MPI_Iallreduce(reduction buffer)"));
  NEST_CALL(finish(x, &req, "MPI_Iallreduce(reduction buffer)"));
  if (fail) return mine;
  if (any)
    return NEST_ERR(NEST_ERR_NOMEM, "another rank ran out of memory for a %zu-byte reduction buffer",
                    bytes);
  return NEST_OK;
}

/* a[i] += b[i]: one rank's term of the rank-order sum (elementwise, so vector code adds the
 * same floats in the same order as a scalar loop). */
static void add_to(void *a, const void *b, size_t n, int dbl) {
  if (dbl) {
    double *restrict p = a;
    const double *restrict q = b;
    for (size_t i = 0; i < n; ++i) p[i] += q[i];
  } else {
    float *restrict p = a;
    const float *restrict q = b;
    for (size_t i = 0; i < n; ++i) p[i] += q[i];
  }
}

/* Elements per segment: a segment's P-1 received blocks fit the scratch (<= 64 MiB of floats)
 * and every MPI count fits an int. */
#define SEG_ELEMS ((size_t)1 << 24)

/* One segment b[0, m) (m <= SEG_ELEMS): block r = [m r / P, m (r+1) / P) belongs to rank r.
 * 1. all-to-all: rank r receives every other rank's block r (scratch, in rank order, its own
 *    block skipped); 2. rank r sums block r in rank order; 3. allgather of the summed blocks. */
static nest_status sum_segment(sum_ctx *x, char *b, size_t m, MPI_Datatype t, size_t esize) {
  const int P = x->size, me = x->rank, dbl = t == MPI_DOUBLE;
  int *scnt = x->cnt, *sdsp = scnt + P, *rcnt = sdsp + P, *rdsp = rcnt + P;
  const size_t mlo = m * (size_t)me / (size_t)P, mine = m * (size_t)(me + 1) / (size_t)P - mlo;
  /* the largest block's size, not this rank's: the same request on every rank */
  NEST_CALL(scratch_agree(x, ((m + (size_t)P - 1) / (size_t)P) * (size_t)(P - 1) * esize));
  for (int r = 0; r < P; ++r) {
    const size_t lo = m * (size_t)r / (size_t)P, hi = m * (size_t)(r + 1) / (size_t)P;
    scnt[r] = r == me ? 0 : (int)(hi - lo);
    sdsp[r] = (int)lo;
    rcnt[r] = r == me ? 0 : (int)mine;
    rdsp[r] = (int)(mine * (size_t)(r < me ? r : r - 1)); /* slot of rank r */
  }
  MPI_Request req;
  if (x->poll) {
    NEST_CALL(check(MPI_Ialltoallv(b, scnt, sdsp, t, x->scratch, rcnt, rdsp, t, x->comm, &req),
                    "MPI_Ialltoallv(sum)"));
    NEST_CALL(finish(x, &req, "MPI_Ialltoallv(sum)"));
  } else {
    NEST_CALL(check(MPI_Alltoallv(b, scnt, sdsp, t, x->scratch, rcnt, rdsp, t, x->comm),
                    "MPI_Alltoallv(sum)"));
  }
  /* block me = x0 + x1 + ... in rank order; own = rank me's term */
  char *own = b + mlo * esize, *slot = x->scratch;
  if (me == 0) {
    for (int r = 1; r < P; ++r) add_to(own, slot + (size_t)(r - 1) * mine * esize, mine, dbl);
  } else {
    char *acc = slot; /* rank 0's term, then the others added into it */
    for (int r = 1; r < P; ++r)
      add_to(acc, r == me ? own : slot + (size_t)(r < me ? r : r - 1) * mine * esize, mine, dbl);
    memcpy(own, acc, mine * esize);
  }
  for (int r = 0; r < P; ++r) {
    const size_t lo = m * (size_t)r / (size_t)P, hi = m * (size_t)(r + 1) / (size_t)P;
    rcnt[r] = (int)(hi - lo);
    rdsp[r] = (int)lo;
  }
  if (x->poll) {
    NEST_CALL(check(MPI_Iallgatherv(MPI_IN_PLACE, 0, t, b, rcnt, rdsp, t, x->comm, &req),
                    "MPI_Iallgatherv(sum)"));
    return finish(x, &req, "MPI_Iallgatherv(sum)");
  }
  return check(MPI_Allgatherv(MPI_IN_PLACE, 0, t, b, rcnt, rdsp, t, x->comm),
               "MPI_Allgatherv(sum)");
}

/* See comm.h. Short vectors (n x P <= 256): allgather everything, every rank sums in rank
 * order (the same bits as the owner's sum). */
static nest_status sum_same(sum_ctx *x, void *buf, size_t n, MPI_Datatype t, size_t esize) {
  if (x->size == 1 || n == 0) return NEST_OK;
  const size_t P = (size_t)x->size;
  const int dbl = t == MPI_DOUBLE;
  char *b = buf;
  if (n * P <= 256) {
    NEST_CALL(scratch_agree(x, n * P * esize));
    NEST_CALL(check(MPI_Allgather(b, (int)n, t, x->scratch, (int)n, t, x->comm),
                    "MPI_Allgather(sum)"));
    char *all = x->scratch;
    for (size_t r = 1; r < P; ++r) add_to(all, all + r * n * esize, n, dbl);
    memcpy(b, all, n * esize);
    return NEST_OK;
  }
  for (size_t done = 0; done < n; done += SEG_ELEMS) {
    const size_t m = n - done < SEG_ELEMS ? n - done : SEG_ELEMS;
    NEST_CALL(sum_segment(x, b + done * esize, m, t, esize));
  }
  return NEST_OK;
}

static sum_ctx main_ctx(nest_comm *c) {
  return (sum_ctx){c->comm, c->rank, c->size, 0, c->scratch, c->scratch_bytes, c->cnt};
}

static nest_status main_sum(nest_comm *c, void *buf, size_t n, MPI_Datatype t, size_t esize) {
  if (c->self || c->size == 1 || n == 0) return NEST_OK;
  sum_ctx x = main_ctx(c);
  nest_status st = sum_same(&x, buf, n, t, esize);
  c->scratch = x.scratch; /* it may have grown */
  c->scratch_bytes = x.scratch_bytes;
  return st;
}

nest_status nest_comm_sum_same_f32(nest_comm *c, float *buf, size_t n) {
  return main_sum(c, buf, n, MPI_FLOAT, sizeof(float));
}
nest_status nest_comm_sum_same_f64(nest_comm *c, double *buf, size_t n) {
  return main_sum(c, buf, n, MPI_DOUBLE, sizeof(double));
}

/* ---- bucketed sums on a communication thread ------------------------------------------- */

struct nest_bucket_sum {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t wake, idle; /* posted work / all posted work done */
  sum_ctx x;                 /* the thread's own communicator (a duplicate) and scratch */
  float *buf;                /* the array of the current round */
  size_t *lo, *hi;           /* posted ranges, in posting order */
  int cap, posted, done;
  int quit;
  nest_status st;            /* the thread's first error; its message in msg */
  char msg[1000];
  double t_first, t_last;    /* start of the round's first range, end of its last */
};

static void *bucket_thread(void *arg) {
  nest_bucket_sum *q = arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (!q->quit && q->done == q->posted) pthread_cond_wait(&q->wake, &q->mu);
    if (q->quit) break;
    const size_t lo = q->lo[q->done], hi = q->hi[q->done];
    float *buf = q->buf;
    const int failed = q->st != NEST_OK;
    pthread_mutex_unlock(&q->mu);
    /* After an error the remaining ranges are skipped (the round's result is an error). Errors
     * that one rank alone could meet (its reduction buffer) are agreed inside the sum, so
     * every rank stops at the same range and none waits in the next range's all-to-all. */
    const double t0 = MPI_Wtime();
    nest_status st = failed ? NEST_OK : sum_same(&q->x, buf + lo, hi - lo, MPI_FLOAT, sizeof(float));
    const double t1 = MPI_Wtime();
    pthread_mutex_lock(&q->mu);
    if (q->done == 0) q->t_first = t0;
    q->t_last = t1;
    if (st != NEST_OK && q->st == NEST_OK) {
      q->st = st;
      snprintf(q->msg, sizeof q->msg, "%s", nest_error_message());
    }
    q->done++;
    if (q->done == q->posted) pthread_cond_signal(&q->idle);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

static void bucket_destroy(nest_bucket_sum *q) {
  if (!q) return;
  pthread_mutex_lock(&q->mu);
  q->quit = 1;
  pthread_cond_signal(&q->wake);
  pthread_mutex_unlock(&q->mu);
  pthread_join(q->thread, NULL);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->wake);
  pthread_cond_destroy(&q->idle);
  MPI_Comm_free(&q->x.comm);
  free(q->x.scratch);
  free(q->x.cnt);
  free(q->lo);
  free(q->hi);
  free(q);
}

/* Collective (MPI_Comm_dup): every rank creates its thread at the same call. */
static nest_status bucket_create(nest_comm *c, nest_bucket_sum **out) {
  nest_bucket_sum *q = calloc(1, sizeof *q);
  if (q) {
    q->cap = 64;
    q->lo = malloc(sizeof *q->lo * (size_t)q->cap);
    q->hi = malloc(sizeof *q->hi * (size_t)q->cap);
    q->x.cnt = malloc(sizeof(int) * 4 * (size_t)c->size);
  }
  nest_status st = NEST_OK;
  if (!q || !q->lo || !q->hi || !q->x.cnt)
    st = NEST_ERR(NEST_ERR_NOMEM, "out of memory for the bucketed sum");
  /* agreed before the collective MPI_Comm_dup, which a failed rank would not reach */
  st = nest_comm_agree(c, st);
  if (st == NEST_OK) st = check(MPI_Comm_dup(c->comm, &q->x.comm), "MPI_Comm_dup(buckets)");
  if (st != NEST_OK) {
    if (q) free(q->lo), free(q->hi), free(q->x.cnt), free(q);
    return st;
  }
  MPI_Comm_set_errhandler(q->x.comm, MPI_ERRORS_RETURN);
  q->x.rank = c->rank;
  q->x.size = c->size;
  q->x.poll = 1;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->wake, NULL);
  pthread_cond_init(&q->idle, NULL);
  if (pthread_create(&q->thread, NULL, bucket_thread, q) != 0) {
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->wake);
    pthread_cond_destroy(&q->idle);
    MPI_Comm_free(&q->x.comm);
    free(q->lo), free(q->hi), free(q->x.cnt), free(q);
    return NEST_ERR(NEST_ERR_NOMEM, "cannot start the communication thread");
  }
  *out = q;
  return NEST_OK;
}

static int bucket_threaded(const nest_comm *c) { return c->thread_level >= MPI_THREAD_MULTIPLE; }

/* Double the range list (rare: a round with more buckets than any before). Every rank posts the
 * same ranges, so every rank comes here at the same post: the outcome is agreed (on the main
 * communicator; the thread uses its own), and on a failure anywhere every rank stops posting at
 * this range — the round then ends with the same ranges summed everywhere, and no thread waits
 * for a range another rank never posted. Only this thread touches the lists' storage while the
 * communication thread reads their entries, hence the lock around the swap. */
static nest_status bucket_grow(nest_comm *c, nest_bucket_sum *q) {
  const size_t cap = 2 * (size_t)q->cap;
  pthread_mutex_lock(&q->mu); /* the thread reads the entries under the lock */
  size_t *l = realloc(q->lo, sizeof *l * cap);
  if (l) q->lo = l;
  size_t *h = l ? realloc(q->hi, sizeof *h * cap) : NULL;
  if (h) q->hi = h;
  pthread_mutex_unlock(&q->mu);
  nest_status st = NEST_OK;
  if (!l || !h) /* q->cap stays: both lists hold at least that many */
    st = NEST_ERR(NEST_ERR_NOMEM, "out of memory for the bucket list (%zu ranges)", cap);
  NEST_CALL(nest_comm_agree(c, st));
  pthread_mutex_lock(&q->mu);
  q->cap = (int)cap;
  pthread_mutex_unlock(&q->mu);
  return NEST_OK;
}

nest_status nest_comm_bucket_begin(nest_comm *c, float *buf) {
  if (c->self || c->size == 1) return NEST_OK;
  c->bucket_buf = buf;
  if (!bucket_threaded(c)) return NEST_OK;
  if (!c->bq) NEST_CALL(bucket_create(c, &c->bq));
  nest_bucket_sum *q = c->bq;
  pthread_mutex_lock(&q->mu);
  NEST_ASSERT(q->done == q->posted); /* the previous round was ended */
  q->buf = buf;
  q->posted = q->done = 0;
  q->st = NEST_OK;
  q->t_first = q->t_last = 0;
  pthread_mutex_unlock(&q->mu);
  return NEST_OK;
}

nest_status nest_comm_bucket_post(nest_comm *c, size_t lo, size_t hi) {
  if (c->self || c->size == 1 || hi <= lo) return NEST_OK;
  if (!bucket_threaded(c)) { /* no thread: sum now, on this thread (the same bits) */
    const double t0 = MPI_Wtime();
    nest_status st = nest_comm_sum_same_f32(c, c->bucket_buf + lo, hi - lo);
    c->bucket_busy += MPI_Wtime() - t0;
    return st;
  }
  nest_bucket_sum *q = c->bq;
  pthread_mutex_lock(&q->mu);
  const int full = q->posted == q->cap;
  pthread_mutex_unlock(&q->mu);
  if (full) NEST_CALL(bucket_grow(c, q));
  pthread_mutex_lock(&q->mu);
  q->lo[q->posted] = lo;
  q->hi[q->posted] = hi;
  q->posted++;
  pthread_cond_signal(&q->wake);
  pthread_mutex_unlock(&q->mu);
  return NEST_OK;
}

nest_status nest_comm_bucket_end(nest_comm *c, double *seconds) {
  if (seconds) *seconds = 0;
  if (c->self || c->size == 1) return NEST_OK;
  if (!bucket_threaded(c)) {
    if (seconds) *seconds = c->bucket_busy;
    c->bucket_busy = 0;
    return NEST_OK;
  }
  nest_bucket_sum *q = c->bq;
  pthread_mutex_lock(&q->mu);
  while (q->done < q->posted) pthread_cond_wait(&q->idle, &q->mu);
  nest_status st = q->st;
  if (seconds && q->posted) *seconds = q->t_last - q->t_first;
  pthread_mutex_unlock(&q->mu);
  if (st != NEST_OK) nest_error_adopt(st, q->msg);
  return st;
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
