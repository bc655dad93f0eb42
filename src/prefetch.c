/* prefetch.c — the batch reader (prefetch.h): synchronous reads (gather, or image shards read
 * with pread and converted by the crop kernel, OpenMP over samples) and the background thread
 * that reads the announced next batch into the second buffer pair. */
#define _GNU_SOURCE
#include "nest/prefetch.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nest/augment.h"

#define MAX_CHANNELS 64 /* the crop kernel's per-channel factors live on the stack */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- one synchronous read ---------------------------------------------------------------- */

nest_status nest_prefetch_read(const nest_batch_req *r, uint64_t seed, int flip, int nthreads,
                               uint8_t *scratch, size_t scratch_slot, float *x, int32_t *y) {
  const nest_dataset *ds = r->ds;
  if (!nest_dataset_is_sharded(ds)) {
    nest_dataset_gather(ds, r->ids, r->n, x, y);
    return NEST_OK;
  }
  const nest_shape stored = nest_dataset_stored_shape(ds), out = ds->shape;
  const int C = out.c;
  if (C > MAX_CHANNELS)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %d channels; image shards have at most %d", ds->path, C,
                    MAX_CHANNELS);
  NEST_ASSERT(scratch_slot >= nest_shape_size(stored));
  /* x = v * a + b, the factors gather uses (data.h), so both paths agree bit for bit. */
  float a[MAX_CHANNELS], b[MAX_CHANNELS];
  for (int c = 0; c < C; ++c) nest_dataset_u8_factors(ds, c, &a[c], &b[c]);
  const size_t dim = nest_shape_size(out);
  int bad_i = r->n; /* the lowest failing row: the same message whatever the schedule */
  nest_status bad = NEST_OK;
  char msg[1024] = "";
  if (nthreads < 1) nthreads = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1 && r->n > 1)
  for (int i = 0; i < r->n; ++i) {
    uint8_t *buf = scratch + (size_t)omp_get_thread_num() * scratch_slot;
    const int64_t id = r->ids[i];
    const nest_status s = nest_dataset_read_u8(ds, id, buf);
    if (s != NEST_OK) {
#pragma omp critical(nest_prefetch_error)
      if (i < bad_i) { /* NEST_ERR wrote this thread's own message buffer (status.h) */
        bad_i = i, bad = s;
        snprintf(msg, sizeof msg, "%s", nest_error_message());
      }
      continue;
    }
    const nest_crop_window w = nest_aug_crop_draw(seed, r->data_key, id, stored, out, flip, r->train);
    nest_augment_crop_u8(buf, stored, out, w, a, b, x + (size_t)i * dim);
    if (y) y[i] = ds->labels[id];
  }
  if (bad != NEST_OK) nest_error_adopt(bad, msg); /* into the calling thread's message */
  return bad;
}

/* ---- the reader ------------------------------------------------------------------------------ */

enum { JOB_IDLE, JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct nest_prefetch {
  uint64_t seed;
  int flip, nthreads, max_rows;
  size_t row_floats, img_bytes;
  uint8_t *scratch;    /* [nthreads + 1][img_bytes]: slots 0.. for synchronous reads, the last
                          for the background thread */
  float *x;            /* the reader's pair [max_rows][row_floats], [max_rows] */
  int32_t *y;
  int64_t *ids;        /* [max_rows] the job's ids (a copy) */

  int background;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;   /* state changes, both directions */
  int state, quit;
  nest_batch_req job;  /* job.ids == ids */
  nest_status job_st;
  char job_msg[1024];
  nest_prefetch_stats stats;
};

static void *worker(void *arg) {
  nest_prefetch *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->state != JOB_QUEUED && !p->quit) pthread_cond_wait(&p->cv, &p->mu);
    if (p->quit) break;
    p->state = JOB_RUNNING;
    const nest_batch_req job = p->job;
    pthread_mutex_unlock(&p->mu);
    /* Only this thread touches p->x, p->y, p->ids and the last scratch slot while RUNNING. */
    const double t0 = now_s();
    const nest_status st = nest_prefetch_read(&job, p->seed, p->flip, 1,
                                              p->scratch + (size_t)p->nthreads * p->img_bytes,
                                              p->img_bytes, p->x, p->y);
    const double dt = now_s() - t0;
    pthread_mutex_lock(&p->mu);
    p->stats.read_s += dt;
    p->job_st = st;
    if (st != NEST_OK) snprintf(p->job_msg, sizeof p->job_msg, "%s", nest_error_message());
    p->state = JOB_DONE;
    pthread_cond_broadcast(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

nest_status nest_prefetch_create(uint64_t seed, int flip, int max_rows, size_t row_floats,
                                 size_t max_image_bytes, int nthreads, int background,
                                 nest_prefetch **out) {
  *out = NULL;
  if (max_rows < 1 || row_floats < 1)
    return NEST_ERR(NEST_ERR_ARG, "nest_prefetch_create: need max_rows, row_floats >= 1");
  if (nthreads < 1) nthreads = 1;
  nest_prefetch *p;
  NEST_CALL(nest_calloc((void **)&p, 1, sizeof *p, "batch reader"));
  p->seed = seed;
  p->flip = flip;
  p->nthreads = nthreads;
  p->max_rows = max_rows;
  p->row_floats = row_floats;
  p->img_bytes = max_image_bytes;
  p->background = background && max_image_bytes > 0;
  nest_status st = NEST_OK;
  if (max_image_bytes > 0)
    st = nest_malloc((void **)&p->scratch, (size_t)(nthreads + 1) * max_image_bytes, "image scratch");
  if (st == NEST_OK && p->background) {
    st = nest_malloc_aligned((void **)&p->x, sizeof(float) * row_floats * (size_t)max_rows,
                             "prefetch batch");
    if (st == NEST_OK) st = nest_malloc((void **)&p->y, sizeof(int32_t) * (size_t)max_rows, "prefetch labels");
    if (st == NEST_OK) st = nest_malloc((void **)&p->ids, sizeof(int64_t) * (size_t)max_rows, "prefetch ids");
  }
  if (st != NEST_OK) {
    nest_prefetch_destroy(&p);
    return st;
  }
  p->stats.buffer_bytes = (p->scratch ? (size_t)(nthreads + 1) * max_image_bytes : 0) +
                          (p->x ? sizeof(float) * row_floats * (size_t)max_rows +
                                      sizeof(int32_t) * (size_t)max_rows : 0);
  if (p->background) {
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, worker, p) != 0) {
      pthread_cond_destroy(&p->cv);
      pthread_mutex_destroy(&p->mu);
      p->background = 0;
      nest_prefetch_destroy(&p);
      return NEST_ERR(NEST_ERR_NOMEM, "cannot start the prefetch thread (set data.prefetch = 0)");
    }
  }
  *out = p;
  return NEST_OK;
}

nest_status nest_prefetch_from_config(const nest_config *cfg, nest_dataset *train,
                                      nest_dataset *test, int max_rows, int nthreads,
                                      nest_prefetch **out) {
  *out = NULL;
  if (cfg->aug_flip && !nest_dataset_is_sharded(train))
    return NEST_ERR(NEST_ERR_CONFIG, "augment.flip = 1: %s is not a set of image shards (flip "
                    "needs data written by nest_prep --images or --synthetic-images)", train->path);
  NEST_CALL(nest_dataset_set_crop(train, cfg->aug_crop));
  if (test) NEST_CALL(nest_dataset_set_crop(test, cfg->aug_crop));
  size_t img = 0;
  const nest_dataset *sets[2] = {train, test};
  for (int k = 0; k < 2; ++k)
    if (sets[k] && nest_dataset_is_sharded(sets[k])) {
      const size_t b = nest_shape_size(nest_dataset_stored_shape(sets[k]));
      if (b > img) img = b;
    }
  return nest_prefetch_create(cfg->seed, cfg->aug_flip, max_rows,
                              (size_t)nest_dataset_dim(train), img, nthreads, cfg->prefetch, out);
}

void nest_prefetch_destroy(nest_prefetch **pp) {
  if (!pp || !*pp) return;
  nest_prefetch *p = *pp;
  if (p->background) {
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL); /* a running read ends first: the worker checks quit after */
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
  }
  free(p->scratch);
  nest_free_aligned(p->x);
  free(p->y);
  free(p->ids);
  free(p);
  *pp = NULL;
}

static int same_request(const nest_batch_req *a, const nest_batch_req *b) {
  return a->ds == b->ds && a->n == b->n && a->train == b->train &&
         (!a->train || a->data_key == b->data_key) &&
         memcmp(a->ids, b->ids, sizeof(int64_t) * (size_t)a->n) == 0;
}

nest_status nest_prefetch_get(nest_prefetch *p, const nest_batch_req *r, float **x, int32_t **y) {
  NEST_ASSERT(r->n >= 0 && r->n <= p->max_rows);
  const double t0 = now_s();
  if (p->background) {
    pthread_mutex_lock(&p->mu);
    if (p->state != JOB_IDLE && same_request(&p->job, r)) {
      while (p->state != JOB_DONE) pthread_cond_wait(&p->cv, &p->mu);
      /* Swap the pairs: the caller takes the batch just read, we take its old buffers. */
      float *tx = *x;
      int32_t *ty = *y;
      *x = p->x, *y = p->y;
      p->x = tx, p->y = ty;
      const nest_status st = p->job_st;
      p->state = JOB_IDLE;
      p->stats.prefetched++;
      p->stats.wait_s += now_s() - t0;
      char msg[sizeof p->job_msg];
      snprintf(msg, sizeof msg, "%s", p->job_msg);
      pthread_mutex_unlock(&p->mu);
      if (st != NEST_OK) nest_error_adopt(st, msg);
      return st;
    }
    /* Not the announced batch: drop the background read (wait if it is running, since it
     * writes the reader's pair and shares the disk) and read synchronously. */
    if (p->state == JOB_QUEUED) p->state = JOB_IDLE, p->stats.discarded++;
    while (p->state == JOB_RUNNING) pthread_cond_wait(&p->cv, &p->mu);
    if (p->state == JOB_DONE) p->state = JOB_IDLE, p->stats.discarded++;
    pthread_mutex_unlock(&p->mu);
  }
  const nest_status st = nest_prefetch_read(r, p->seed, p->flip, p->nthreads, p->scratch,
                                            p->img_bytes, *x, *y);
  const double dt = now_s() - t0;
  if (p->background) pthread_mutex_lock(&p->mu);
  p->stats.sync_reads++;
  p->stats.read_s += dt;
  p->stats.wait_s += dt;
  if (p->background) pthread_mutex_unlock(&p->mu);
  return st;
}

void nest_prefetch_ahead(nest_prefetch *p, const nest_batch_req *next) {
  if (!p->background || !nest_dataset_is_sharded(next->ds) || next->n <= 0) return;
  NEST_ASSERT(next->n <= p->max_rows);
  pthread_mutex_lock(&p->mu);
  while (p->state == JOB_RUNNING) pthread_cond_wait(&p->cv, &p->mu);
  if (p->state == JOB_DONE || p->state == JOB_QUEUED) p->stats.discarded++; /* never taken */
  memcpy(p->ids, next->ids, sizeof(int64_t) * (size_t)next->n);
  p->job = *next;
  p->job.ids = p->ids;
  p->state = JOB_QUEUED;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

void nest_prefetch_get_stats(nest_prefetch *p, nest_prefetch_stats *out) {
  if (p->background) pthread_mutex_lock(&p->mu);
  *out = p->stats;
  if (p->background) pthread_mutex_unlock(&p->mu);
}
