/* augment.c — affine distortion of training images: per-sample transforms from a counter-based
 * stream, the fast in-place bilinear warp over a batch, and its naive double reference twin;
 * crop and flip of image shards fused with the u8 -> float conversion, and its twin.
 * Geometry and conventions: include/nest/augment.h. */
#include "nest/augment.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nest/rng.h"

/* ---- transforms ---------------------------------------------------------------------------- */

/* Element k of the sample's stream as a uniform in (-1, 1), symmetric about 0: (r + 1/2) / 2^31
 * - 1 is exact in double for every 32-bit r, so a range of 0 gives exactly (+-)0. */
static double uniform_pm1(uint64_t seed, int64_t data_key, int64_t id, int k) {
  uint32_t r = nest_rng_at(seed, NEST_RNG_AUGMENT, (uint64_t)id, (uint64_t)data_key, (uint64_t)k);
  return ((double)r + 0.5) * (1.0 / 2147483648.0) - 1.0;
}

nest_aug_xform nest_aug_draw(const nest_aug_ranges *r, uint64_t seed, int64_t data_key,
                             int64_t id) {
  const double deg = 3.14159265358979323846 / 180.0;
  nest_aug_xform xf;
  xf.angle = r->rotate * deg * uniform_pm1(seed, data_key, id, 0);
  xf.sx = 1.0 + r->scale * uniform_pm1(seed, data_key, id, 1);
  xf.sy = 1.0 + r->scale * uniform_pm1(seed, data_key, id, 2);
  xf.shear = r->shear * uniform_pm1(seed, data_key, id, 3);
  xf.tx = r->translate * uniform_pm1(seed, data_key, id, 4);
  xf.ty = r->translate * uniform_pm1(seed, data_key, id, 5);
  return xf;
}

void nest_aug_inverse(const nest_aug_xform *xf, int h, int w, double m[6]) {
  /* A = R * Sh * S in closed form; det A = sx * sy (R and Sh have determinant 1). */
  const double c = cos(xf->angle), s = sin(xf->angle), k = xf->shear;
  const double a00 = c * xf->sx, a01 = (c * k - s) * xf->sy;
  const double a10 = s * xf->sx, a11 = (s * k + c) * xf->sy;
  const double det = xf->sx * xf->sy;
  const double cx = 0.5 * (w - 1), cy = 0.5 * (h - 1);
  m[0] = a11 / det;
  m[1] = -a01 / det;
  m[3] = -a10 / det;
  m[4] = a00 / det;
  /* p_in = A^-1 (p_out - c - t) + c: the constant column. With the identity this is
   * cx - (cx + 0) = 0 exactly, so an all-zero range warps each pixel onto itself. */
  const double ux = cx + xf->tx, uy = cy + xf->ty;
  m[2] = cx - (m[0] * ux + m[1] * uy);
  m[5] = cy - (m[3] * ux + m[4] * uy);
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static int ranges_ok(const nest_aug_ranges *r) {
  return r->rotate >= 0 && isfinite(r->rotate) && r->scale >= 0 && r->scale < 1 &&
         r->shear >= 0 && isfinite(r->shear) && r->translate >= 0 && isfinite(r->translate);
}

nest_status nest_augment_create(const nest_aug_ranges *r, uint64_t seed, nest_shape shape,
                                const float *fill, int max_threads, nest_augment **out) {
  *out = NULL;
  if (shape.c < 1 || shape.h < 2 || shape.w < 2)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "augment.affine: samples of shape %dx%dx%d (c x h x w) are not images: "
                    "affine distortion needs h > 1 and w > 1",
                    shape.c, shape.h, shape.w);
  if (!ranges_ok(r))
    return NEST_ERR(NEST_ERR_ARG,
                    "augment: bad ranges (rotate %g, scale %g, shear %g, translate %g): each "
                    "must be finite and >= 0, scale < 1",
                    r->rotate, r->scale, r->shear, r->translate);
  if (max_threads < 1) max_threads = 1;
  nest_augment *a;
  NEST_CALL(nest_calloc((void **)&a, 1, sizeof *a, "augmenter"));
  a->ranges = *r;
  a->seed = seed;
  a->shape = shape;
  a->max_threads = max_threads;
  a->slot_floats = (size_t)shape.c * (size_t)(shape.h + 2) * (size_t)(shape.w + 2);
  nest_status st = nest_malloc((void **)&a->fill, sizeof(float) * (size_t)shape.c, "fill");
  if (st == NEST_OK)
    st = nest_malloc_aligned((void **)&a->scratch,
                             sizeof(float) * a->slot_floats * (size_t)max_threads,
                             "augmentation scratch");
  if (st != NEST_OK) {
    nest_augment_destroy(&a);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  for (int c = 0; c < shape.c; ++c) a->fill[c] = fill ? fill[c] : 0.0f;
  *out = a;
  return NEST_OK;
}

nest_status nest_augment_from_config(const nest_config *cfg, const nest_dataset *train,
                                     int max_threads, nest_augment **out) {
  *out = NULL;
  if (!cfg->aug_affine) return NEST_OK;
  const nest_shape s = train->shape;
  if (s.h < 2 || s.w < 2)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "augment.affine = 1 but %s holds samples of shape %dx%dx%d (c x h x w), not "
                    "images: affine distortion needs h > 1 and w > 1; set augment.affine = 0",
                    train->path, s.c, s.h, s.w);
  nest_aug_ranges r = {.rotate = cfg->aug_rotate,
                       .scale = cfg->aug_scale,
                       .shear = cfg->aug_shear,
                       .translate = cfg->aug_translate};
  NEST_CALL(nest_augment_create(&r, cfg->seed, s, NULL, max_threads, out));
  /* The normalised value of a raw 0, computed as nest_dataset_gather computes it:
   * u8: 0 * (u8_scale / std) + (-mean / std); f32: (0 - mean) / std. Both are -mean / std. */
  if (train->norm.nch == s.c)
    for (int c = 0; c < s.c; ++c) (*out)->fill[c] = -train->norm.mean[c] / train->norm.std[c];
  return NEST_OK;
}

void nest_augment_destroy(nest_augment **ap) {
  if (!ap || !*ap) return;
  nest_augment *a = *ap;
  free(a->fill);
  nest_free_aligned(a->scratch);
  free(a);
  *ap = NULL;
}

/* ---- the fast warp ------------------------------------------------------------------------- */

void nest_augment_warp(const nest_augment *a, const nest_aug_xform *xf, float *x, int slot) {
  NEST_ASSERT(slot >= 0 && slot < a->max_threads);
  const int C = a->shape.c, H = a->shape.h, W = a->shape.w;
  const int PW = W + 2, PH = H + 2; /* the copy has a one-pixel border of fill */
  const size_t hw = (size_t)H * W, phw = (size_t)PH * PW;
  float *restrict pad = a->scratch + (size_t)slot * a->slot_floats;

  /* pad[c, PH, PW]: the sample with a fill border, so every bilinear neighbour of a source
   * position in [-1, W) x [-1, H) is a real read and the inner loop has no bounds checks. */
  for (int c = 0; c < C; ++c) {
    float *restrict P = pad + c * phw;
    const float f = a->fill[c];
    for (int i = 0; i < PW; ++i) P[i] = f, P[(size_t)(PH - 1) * PW + i] = f;
    for (int y = 0; y < H; ++y) {
      float *row = P + (size_t)(y + 1) * PW;
      row[0] = f;
      memcpy(row + 1, x + c * hw + (size_t)y * W, sizeof(float) * (size_t)W);
      row[W + 1] = f;
    }
  }

  double m[6];
  nest_aug_inverse(xf, H, W, m);
  for (int Y = 0; Y < H; ++Y) {
    const double bx = m[1] * Y + m[2], by = m[4] * Y + m[5];
    for (int X = 0; X < W; ++X) {
      /* Source position in double (coordinates up to ~1e3 keep ~1e-13 absolute error). */
      const double sx = m[0] * X + bx, sy = m[3] * X + by;
      size_t k = 0; /* padded index of the top-left neighbour; 0 = a border corner (fill) */
      float fx = 0.0f, fy = 0.0f;
      if (sx >= -1.0 && sx < (double)W && sy >= -1.0 && sy < (double)H) {
        const double x0 = floor(sx), y0 = floor(sy); /* in [-1, W-1] and [-1, H-1] */
        fx = (float)(sx - x0);
        fy = (float)(sy - y0);
        k = (size_t)((int)y0 + 1) * PW + (size_t)((int)x0 + 1);
      }
      /* Outside the [-1, W) x [-1, H) box all four neighbours are fill: k = 0 with zero
       * weights reads the fill corner alone, exactly. */
      for (int c = 0; c < C; ++c) {
        const float *P = pad + c * phw + k;
        const float top = P[0] + fx * (P[1] - P[0]);
        const float bot = P[PW] + fx * (P[PW + 1] - P[PW]);
        x[c * hw + (size_t)Y * W + X] = top + fy * (bot - top);
      }
    }
  }
}

void nest_augment_apply(const nest_augment *a, int64_t data_key, const int64_t *ids, int n,
                        float *x, int nthreads) {
  if (nthreads < 1) nthreads = 1;
  if (nthreads > a->max_threads) nthreads = a->max_threads;
  const size_t dim = nest_shape_size(a->shape);
  /* Samples are independent: which thread (slot) handles one does not change its result. */
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n > 1 && nthreads > 1)
  for (int i = 0; i < n; ++i) {
    const nest_aug_xform xf = nest_aug_draw(&a->ranges, a->seed, data_key, ids[i]);
    nest_augment_warp(a, &xf, x + (size_t)i * dim, omp_get_thread_num());
  }
}

/* ---- reference twin -------------------------------------------------------------------------- */

void nest_ref_augment(const nest_aug_xform *xf, nest_shape shape, const double *fill,
                      const double *src, double *dst) {
  const int C = shape.c, H = shape.h, W = shape.w;
  /* A = R * Sh * S by explicit matrix products. */
  const double R[2][2] = {{cos(xf->angle), -sin(xf->angle)}, {sin(xf->angle), cos(xf->angle)}};
  const double Sh[2][2] = {{1.0, xf->shear}, {0.0, 1.0}};
  const double S[2][2] = {{xf->sx, 0.0}, {0.0, xf->sy}};
  double T[2][2] = {{0, 0}, {0, 0}}, A[2][2] = {{0, 0}, {0, 0}};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k) T[i][j] += Sh[i][k] * S[k][j];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k) A[i][j] += R[i][k] * T[k][j];
  const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0;
  for (int c = 0; c < C; ++c) {
    const double *in = src + (size_t)c * H * W;
    for (int Y = 0; Y < H; ++Y) {
      for (int X = 0; X < W; ++X) {
        /* Solve A (p - centre) = (X, Y) - centre - t for p by Cramer's rule. */
        const double u = X - cx - xf->tx, v = Y - cy - xf->ty;
        const double det = A[0][0] * A[1][1] - A[0][1] * A[1][0];
        const double px = (u * A[1][1] - A[0][1] * v) / det + cx;
        const double py = (A[0][0] * v - A[1][0] * u) / det + cy;
        const double x0 = floor(px), y0 = floor(py), fx = px - x0, fy = py - y0;
        double val = 0.0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) {
            const double xi = x0 + dx, yi = y0 + dy;
            const double wgt = (dx ? fx : 1.0 - fx) * (dy ? fy : 1.0 - fy);
            const int inside = xi >= 0 && xi < W && yi >= 0 && yi < H;
            val += wgt * (inside ? in[(size_t)yi * W + (size_t)xi] : fill[c]);
          }
        }
        dst[(size_t)c * H * W + (size_t)Y * W + X] = val;
      }
    }
  }
}

/* ---- crop and flip ----------------------------------------------------------------------------- */

/* Uniform integer in [0, n) from a 32-bit draw: (r * n) >> 32 (bias below n / 2^32). */
static int below(uint32_t r, int n) { return (int)(((uint64_t)r * (uint64_t)n) >> 32); }

nest_crop_window nest_aug_crop_draw(uint64_t seed, int64_t data_key, int64_t id, nest_shape stored,
                                    nest_shape out, int flip, int train) {
  nest_crop_window w = {(stored.h - out.h) / 2, (stored.w - out.w) / 2, 0};
  if (!train) return w;
  /* Elements 6..8: 0..5 are the affine map's (both may be on). */
  const uint64_t k = (uint64_t)data_key, i = (uint64_t)id;
  w.y0 = below(nest_rng_at(seed, NEST_RNG_AUGMENT, i, k, 6), stored.h - out.h + 1);
  w.x0 = below(nest_rng_at(seed, NEST_RNG_AUGMENT, i, k, 7), stored.w - out.w + 1);
  w.flip = flip ? (int)(nest_rng_at(seed, NEST_RNG_AUGMENT, i, k, 8) & 1u) : 0;
  return w;
}

void nest_augment_crop_u8(const uint8_t *src, nest_shape stored, nest_shape out,
                          nest_crop_window win, const float *a, const float *b, float *dst) {
  const size_t shw = (size_t)stored.h * stored.w, ohw = (size_t)out.h * out.w;
  const int cw = out.w;
  for (int c = 0; c < out.c; ++c) {
    const float ac = a[c], bc = b[c];
    for (int i = 0; i < out.h; ++i) {
      const uint8_t *restrict row = src + c * shw + (size_t)(win.y0 + i) * stored.w + win.x0;
      float *restrict o = dst + c * ohw + (size_t)i * cw;
      if (!win.flip)
        for (int j = 0; j < cw; ++j) o[j] = (float)row[j] * ac + bc;
      else
        for (int j = 0; j < cw; ++j) o[j] = (float)row[cw - 1 - j] * ac + bc;
    }
  }
}

void nest_ref_crop_u8(const uint8_t *src, nest_shape stored, nest_shape out, nest_crop_window win,
                      const float *mean, const float *std, double scale, double *dst) {
  for (int c = 0; c < out.c; ++c)
    for (int y = 0; y < out.h; ++y)
      for (int x = 0; x < out.w; ++x) {
        const int sy = win.y0 + y, sx = win.x0 + (win.flip ? out.w - 1 - x : x);
        NEST_ASSERT(sy >= 0 && sy < stored.h && sx >= 0 && sx < stored.w);
        const double v = src[((size_t)c * stored.h + sy) * stored.w + sx];
        dst[((size_t)c * out.h + y) * out.w + x] = (v * scale - mean[c]) / std[c];
      }
}
