/* prefetch.h — the batch reader: a rank's rows of a batch as the net's input, with the next
 * batch read in a background thread while the current one computes (double buffer).
 *
 * A request names rows ids[0..n) of a dataset; the reader delivers x [n, C, H, W] (floats,
 * normalised) and y [n] (labels):
 *  - in-memory sets (IDX, CSV, nest .h5): nest_dataset_gather, exactly as before;
 *  - image shards: each sample's stored bytes by nest_dataset_read_u8 (a pread at an offset
 *    resolved when the set was opened), then nest_augment_crop_u8 (crop window, flip, u8 ->
 *    float and normalisation in one pass) — OpenMP over samples when read synchronously.
 * Each sample's result is a pure function of (dataset, id, train, seed, data key), so a batch
 * read in the background is bit for bit the batch a synchronous read gives.
 *
 * Double buffer: the caller owns one pair of buffers (x, y), the reader a second of the same
 * size. nest_prefetch_ahead(next) starts a background read of `next` into the reader's pair;
 * nest_prefetch_get(req) of that same request waits for it and SWAPS the pairs (no copy): the
 * caller's pointers then point at the batch just read, and its former buffers become the next
 * background target. Any other request is read synchronously into the caller's buffers (after a
 * running background read, then discarded, has ended). So correctness never depends on what was
 * announced: ahead is a hint.
 *
 * Threads and HDF5: Debian's HDF5 is not thread-safe (H5is_library_threadsafe() = 0) and the
 * main thread writes checkpoints with it; the background thread never calls HDF5 (see
 * src/data/shards.c), only pread and the crop kernel. It converts its samples one after the
 * other — no OpenMP team of its own competing with this rank's compute threads; a step of a
 * network worth prefetching (AlexNet: seconds) leaves it ample time (docs/performance.md).
 * Background reads are used for image shards only: in-memory gathers cost next to nothing. */
#ifndef NEST_PREFETCH_H
#define NEST_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

#include "nest/config.h"
#include "nest/data.h"
#include "nest/status.h"

typedef struct {
  const nest_dataset *ds;
  const int64_t *ids; /* [n] sample ids of ds (copied by ahead) */
  int n;
  int train;          /* 1: a training step: random crop window and flip; 0: centre window */
  int64_t data_key;   /* keys the window and flip when train (the epoch or a pruning key) */
} nest_batch_req;

typedef struct {
  int64_t sync_reads; /* batches read synchronously by get */
  int64_t prefetched; /* batches get took from a background read */
  int64_t discarded;  /* background reads get could not use (another request came) */
  double read_s;      /* seconds spent reading and converting, in any thread */
  double wait_s;      /* seconds callers spent inside get (synchronous reads included) */
  size_t buffer_bytes;/* the reader's own buffers: the second (x, y) pair and u8 scratch */
} nest_prefetch_stats;

typedef struct nest_prefetch nest_prefetch;

/* A reader for batches of up to max_rows rows of row_floats floats each, from image shards of
 * at most max_image_bytes stored bytes per sample (0: in-memory sets only). seed and flip:
 * augment's run seed and augment.flip. nthreads: OpenMP threads for synchronous reads.
 * background: 1 starts the prefetch thread (and allocates the second buffer pair). */
nest_status nest_prefetch_create(uint64_t seed, int flip, int max_rows, size_t row_floats,
                                 size_t max_image_bytes, int nthreads, int background,
                                 nest_prefetch **out);
/* The trainer's reader, from config: applies augment.crop to train and test (their shape
 * becomes the crop), checks augment.crop / augment.flip against the data (image shards
 * only: NEST_ERR_CONFIG naming the key), and starts the thread when data.prefetch = 1 and a set
 * is sharded. max_rows: rows per rank per batch. Decided from config and data: alike on every
 * rank. */
nest_status nest_prefetch_from_config(const nest_config *cfg, nest_dataset *train,
                                      nest_dataset *test, int max_rows, int nthreads,
                                      nest_prefetch **out);
/* Stops and joins the thread (a running read is finished first), frees the reader's buffers
 * (after swaps these are buffers the caller allocated: both pairs are allocated alike, with
 * nest_malloc_aligned (x) and nest_malloc (y), so either side frees either). */
void nest_prefetch_destroy(nest_prefetch **p);

/* Deliver request r into (*x, *y), maybe by swapping with the background pair (above). Not
 * collective: an image-shard read error is this rank's (NEST_ERR_IO naming the file); callers
 * agree on it at a point every rank reaches. */
nest_status nest_prefetch_get(nest_prefetch *p, const nest_batch_req *r, float **x, int32_t **y);
/* Start reading `next` in the background (a no-op without the thread or for in-memory data). */
void nest_prefetch_ahead(nest_prefetch *p, const nest_batch_req *next);
/* Counters since creation. */
void nest_prefetch_get_stats(nest_prefetch *p, nest_prefetch_stats *out);

/* One synchronous read of r into x, y with up to nthreads threads, scratch of nthreads stored
 * images (the path get takes; exposed for tests and benchmarks). */
nest_status nest_prefetch_read(const nest_batch_req *r, uint64_t seed, int flip, int nthreads,
                               uint8_t *scratch, size_t scratch_slot, float *x, int32_t *y);

#endif
