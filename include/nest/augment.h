/* augment.h — affine distortion of training images (ALGORITHMS.md §12, our reading).
 *
 * Each training sample gets its own random affine map, drawn from a counter-based stream keyed
 * by (run seed, data key, global sample id): the data key is the key of the permutation the
 * step draws from (the epoch, or a pruning-phase key; train.h), so a sample is distorted
 * differently every epoch, and identically whatever the rank count, the thread count or its
 * position in the batch. Six uniforms per sample, each in (-1, 1):
 *   angle = rotate deg * u0, sx = 1 + scale * u1, sy = 1 + scale * u2, shear = shear * u3,
 *   tx = translate * u4, ty = translate * u5;
 * a range of 0 gives exactly 0 (or scale exactly 1), so it turns that part off.
 *
 * Geometry. Pixel (x, y) is column x, row y (y grows downwards); c = ((w-1)/2, (h-1)/2) is the
 * image centre. The forward map, applied to the image content, is
 *   p_out = A (p_in - c) + c + t,   A = R(angle) * [[1, shear], [0, 1]] * diag(sx, sy),
 *   R(a) = [[cos a, -sin a], [sin a, cos a]], t = (tx, ty),
 * i.e. scale, then shear, then rotate about the centre, then translate. The output image is
 * resampled: output pixel p_out takes the bilinear interpolation of the input at
 * p_in = A^-1 (p_out - c - t) + c, and a neighbour outside the image reads as the fill value.
 * All channels of a sample share the map.
 *
 * Fill. The trainer augments the NORMALISED batch (data.h: gather normalises per channel,
 * v -> a v + b). Bilinear weights sum to 1, so interpolating normalised values with the fill
 * b = normalised value of a raw 0 is the normalisation of interpolating raw values with fill 0:
 * "zero fill" means a zero pixel of the original data. nest_augment_from_config computes that b
 * from the dataset's normalisation exactly as gather does.
 *
 * nest_ref_augment is the naive reference twin (double, per-pixel 2x2 solve, explicit bounds
 * checks) the fast path is tested against. */
#ifndef NEST_AUGMENT_H
#define NEST_AUGMENT_H

#include <stdint.h>

#include "nest/config.h"
#include "nest/data.h"
#include "nest/layer.h"
#include "nest/status.h"

/* The ranges of the distortion (config keys augment.*). All >= 0; scale < 1. */
typedef struct {
  double rotate;    /* degrees: angle uniform in +-rotate */
  double scale;     /* per-axis scale uniform in [1 - scale, 1 + scale] */
  double shear;     /* shear factor uniform in +-shear */
  double translate; /* pixels: translation per axis uniform in +-translate */
} nest_aug_ranges;

/* One sample's transform (see the geometry above). */
typedef struct {
  double angle;  /* radians */
  double sx, sy; /* scale along x (columns) and y (rows); > 0 */
  double shear;  /* x gains shear * y (before rotation) */
  double tx, ty; /* translation in pixels along x and y */
} nest_aug_xform;

/* Set up once (create); apply never allocates. */
typedef struct nest_augment {
  nest_aug_ranges ranges;
  uint64_t seed;
  nest_shape shape;     /* per sample (c, h, w), h > 1 and w > 1 */
  float *fill;          /* [c]: value written where the map reads outside the image */
  int max_threads;      /* scratch slots */
  size_t slot_floats;   /* floats per slot: c * (h + 2) * (w + 2), a fill-bordered copy */
  float *scratch;       /* [max_threads * slot_floats] */
} nest_augment;

/* The transform of sample `id` under data key `data_key`: a pure function of its arguments
 * (nest_rng_at(seed, NEST_RNG_AUGMENT, id, data_key, 0..5)). */
nest_aug_xform nest_aug_draw(const nest_aug_ranges *r, uint64_t seed, int64_t data_key,
                             int64_t id);
/* The inverse map as a 2x3 matrix m (row-major): the input position read by output pixel
 * (X, Y) is (m[0] X + m[1] Y + m[2], m[3] X + m[4] Y + m[5]), for an h x w image. */
void nest_aug_inverse(const nest_aug_xform *xf, int h, int w, double m[6]);

/* An augmenter for samples of `shape` with per-channel fill[shape.c] (copied; NULL = 0), usable by up to
 * max_threads OpenMP threads at once. NEST_ERR_CONFIG naming augment.affine if the shape is not
 * an image (h or w below 2); NEST_ERR_ARG on bad ranges. */
nest_status nest_augment_create(const nest_aug_ranges *r, uint64_t seed, nest_shape shape,
                                const float *fill, int max_threads, nest_augment **out);
/* The trainer's augmenter: *out = NULL when cfg->aug_affine is 0; otherwise ranges and seed
 * from cfg, shape from `train`, fill = the normalised value of a raw 0 under train->norm (set
 * the normalisation first). Fails (NEST_ERR_CONFIG, one line naming augment.affine) when the
 * training data are not images — decided from config and data shape, so alike on every rank. */
nest_status nest_augment_from_config(const nest_config *cfg, const nest_dataset *train,
                                     int max_threads, nest_augment **out);
void nest_augment_destroy(nest_augment **a);

/* Distort one sample x[c, h, w] in place with transform xf, using scratch slot `slot`
 * (0 <= slot < max_threads; two threads must not share a slot). */
void nest_augment_warp(const nest_augment *a, const nest_aug_xform *xf, float *x, int slot);
/* Distort a batch x[n, c, h, w] in place: sample i gets nest_aug_draw(.., data_key, ids[i]).
 * OpenMP over samples with up to nthreads (<= max_threads) threads; each sample's result
 * depends only on its own pixels and (seed, data_key, ids[i]). */
void nest_augment_apply(const nest_augment *a, int64_t data_key, const int64_t *ids, int n,
                        float *x, int nthreads);

/* Reference twin: dst[c, h, w] = src distorted by xf with fill[c], computed naively in double.
 * src and dst must not overlap. */
void nest_ref_augment(const nest_aug_xform *xf, nest_shape shape, const double *fill,
                      const double *src, double *dst);

/* ---- crop and flip of image shards (augment.crop, augment.flip) --------------------------------
 *
 * A stored image [C, H, W] (uint8) becomes the net's input [C, ch, cw] (the crop; the stored
 * size when augment.crop = 0). Training steps take a random window and, with flip, mirror it
 * left-right with probability 1/2; evaluation and gradient passes take the centre window
 * ((H - ch) / 2, (W - cw) / 2) unflipped. The training window comes from elements 6, 7, 8 of
 * the same per-sample stream as the affine map (nest_rng_at(seed, NEST_RNG_AUGMENT, id,
 * data_key, k)): a pure function of (seed, data key = epoch or pruning key, global sample id),
 * so the same on any rank count, thread count or batch position, and new every epoch.
 *
 * The kernel fuses the window, the flip, the u8 -> float conversion and the normalisation in
 * one pass, computing each value exactly as nest_dataset_gather does: x = v * a[c] + b[c] with
 * a = u8_scale / std[c], b = -mean[c] / std[c] (so an uncropped, unflipped read gives gather's
 * bits). nest_ref_crop_u8 is its naive double twin. */
typedef struct {
  int y0, x0; /* top-left corner of the window in the stored image */
  int flip;   /* 1: mirrored left-right */
} nest_crop_window;

/* The window of sample `id`: train = 1 random (flip allowed when `flip`), 0 the centre. */
nest_crop_window nest_aug_crop_draw(uint64_t seed, int64_t data_key, int64_t id, nest_shape stored,
                                    nest_shape out, int flip, int train);
/* dst[C, out.h, out.w] = window `win` of src[C, stored.h, stored.w], mirrored if win.flip,
 * times a[c] plus b[c]. No allocation. */
void nest_augment_crop_u8(const uint8_t *src, nest_shape stored, nest_shape out,
                          nest_crop_window win, const float *a, const float *b, float *dst);
/* Reference twin in double: dst = (v * scale - mean[c]) / std[c] over the window, by explicit
 * source coordinates. */
void nest_ref_crop_u8(const uint8_t *src, nest_shape stored, nest_shape out, nest_crop_window win,
                      const float *mean, const float *std, double scale, double *dst);

#endif
