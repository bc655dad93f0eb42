/* area.c — partial-area convolution scores (area.h).
 *
 * For input map m and a block of output maps [o0, o1), one work item walks the samples in
 * order; per sample and per chunk of output rows it builds the im2col rows of map m alone,
 * colm[kh*kw, len] (a one-channel geometry on plane m of the sample), then
 *   c[o, j] = sum_k W[o, m, k] * colm[k, j]       (float, k in order; zero weights skipped)
 *   acc[o, m, l0 + j] += |c[o, j]|                 (double)
 * Items write disjoint (o, m) slices of acc, so no sum crosses threads and the result is the
 * same for any thread count. Chunks of rows keep colm near AREA_COL_BUDGET floats (L2). */
#include "nest/area.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "nest/kernels.h"

#define AREA_OB 8                  /* output maps per work item */
#define AREA_COL_BUDGET (32 * 1024) /* floats of colm per chunk */

nest_status nest_conv2d_area_accumulate(const nest_layer *l, const float *x, int n, double *acc) {
  if (!l || l->kind != NEST_LAYER_CONV2D)
    return NEST_ERR(NEST_ERR_ARG, "%s: partial-area scores need a conv2d layer",
                    l ? l->name : "(no layer)");
  if (n < 0 || (n > 0 && (!x || !acc)))
    return NEST_ERR(NEST_ERR_ARG, "%s: partial-area scores of %d samples without data or output",
                    l->name, n);
  if (n == 0) return NEST_OK;
  const int oc = l->hp.out_c, c = l->in.c;
  /* one input map: geometry of a single channel, fed plane m of each sample */
  const nest_conv_geom g =
      nest_conv_geom_make(1, l->in.h, l->in.w, l->hp.kh, l->hp.kw, l->hp.stride, l->hp.pad);
  const size_t kk = (size_t)g.kh * g.kw, N = (size_t)g.oh * g.ow, plane = (size_t)g.h * g.w;
  const size_t in_sz = nest_shape_size(l->in);
  int R = (int)(AREA_COL_BUDGET / (kk * (size_t)g.ow));
  if (R < 1) R = 1;
  if (R > g.oh) R = g.oh;
  const size_t cols = (size_t)R * g.ow;
  const int nob = (oc + AREA_OB - 1) / AREA_OB, items = c * nob;
  int nt = omp_get_max_threads();
  if (nt > items) nt = items;
  if (nt < 1) nt = 1;
  const size_t per = (kk * cols + AREA_OB * cols + 15) & ~(size_t)15; /* floats per thread */
  float *scratch;
  NEST_CALL(nest_malloc_aligned((void **)&scratch, sizeof(float) * per * (size_t)nt,
                                "partial-area score scratch"));
  const float *W = l->p[0];

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float *colm = scratch + per * (size_t)omp_get_thread_num(), *cb = colm + kk * cols;
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; ++it) {
      const int m = it / nob, o0 = (it % nob) * AREA_OB;
      const int o1 = o0 + AREA_OB < oc ? o0 + AREA_OB : oc;
      for (int s = 0; s < n; ++s) {
        const float *xm = x + (size_t)s * in_sz + (size_t)m * plane;
        for (int r0 = 0; r0 < g.oh; r0 += R) {
          const int r1 = r0 + R < g.oh ? r0 + R : g.oh;
          const size_t len = (size_t)(r1 - r0) * g.ow;
          nest_kernel_im2col(&g, xm, r0, r1, colm, len);
          /* cb[o - o0, j] = C[s, o, m, r0*OW + j] */
          memset(cb, 0, sizeof(float) * (size_t)(o1 - o0) * len);
          for (size_t k = 0; k < kk; ++k) {
            const float *restrict ck = colm + k * len;
            for (int o = o0; o < o1; ++o) {
              const float w = W[((size_t)o * c + m) * kk + k];
              if (w == 0.0f) continue; /* dormant: adds exactly nothing */
              float *restrict co = cb + (size_t)(o - o0) * len;
#pragma omp simd
              for (size_t j = 0; j < len; ++j) co[j] += w * ck[j];
            }
          }
          for (int o = o0; o < o1; ++o) {
            double *restrict a = acc + ((size_t)o * c + m) * N + (size_t)r0 * g.ow;
            const float *restrict co = cb + (size_t)(o - o0) * len;
            for (size_t j = 0; j < len; ++j) a[j] += fabs((double)co[j]);
          }
        }
      }
    }
  }
  nest_free_aligned(scratch);
  return NEST_OK;
}
