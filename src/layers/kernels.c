/* kernels.c — fast float kernels (im2col / col2im, max pooling, batch-norm passes) and their
 * naive double-precision reference twins. See include/nest/kernels.h for layouts. */
#include "nest/kernels.h"

#include <math.h>
#include <string.h>

#include "nest/status.h"

nest_conv_geom nest_conv_geom_make(int c, int h, int w, int kh, int kw, int stride, int pad) {
  NEST_ASSERT(stride >= 1);
  nest_conv_geom g = {c, h, w, kh, kw, stride, pad, 0, 0};
  int eh = h + 2 * pad - kh, ew = w + 2 * pad - kw;
  /* floor division that stays correct for negative numerators */
  g.oh = eh >= 0 ? eh / stride + 1 : -1;
  g.ow = ew >= 0 ? ew / stride + 1 : -1;
  return g;
}

/* Output columns ox whose input column ix = ox*stride - pad + kj lies in [0, w):
 * ox in [*lo, *hi). Same formula for rows. No division for stride 1 (the common case; this
 * runs once per im2col row). */
static inline void valid_range(int kj, int stride, int pad, int w, int ow, int *lo, int *hi) {
  int a = pad - kj;     /* need ox*stride >= a */
  int b = w + pad - kj; /* need ox*stride < b */
  int l, h;
  if (stride == 1) {
    l = a > 0 ? a : 0;
    h = b > 0 ? b : 0;
  } else {
    l = a > 0 ? (a + stride - 1) / stride : 0;
    h = b > 0 ? (b + stride - 1) / stride : 0;
  }
  if (l > ow) l = ow;
  if (h > ow) h = ow;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

/* ---- im2col / col2im --------------------------------------------------------------------- */

/* im2col copies many short rows (LeNet: 8 or 24 floats); GCC would turn the copy loops into
 * memmove calls, which cost more than the copies. */
#if defined(__GNUC__) && !defined(__clang__)
#define NEST_NO_MEMCPY_IDIOM __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define NEST_NO_MEMCPY_IDIOM
#endif

/* One im2col row segment: d[0, ow) from input row src (ix = ox*s + off), zeros outside
 * [xlo, xhi). */
NEST_NO_MEMCPY_IDIOM static inline void im2col_row(float *restrict d, const float *restrict src,
                                                   int ow, int xlo, int xhi, int s, int off) {
  for (int ox = 0; ox < xlo; ++ox) d[ox] = 0.0f;
  if (s == 1) {
    const float *restrict sp = src + off; /* off + xlo >= 0 */
#pragma omp simd
    for (int ox = xlo; ox < xhi; ++ox) d[ox] = sp[ox];
  } else if (s == 2) { /* constant strides vectorise with permutes */
#pragma omp simd
    for (int ox = xlo; ox < xhi; ++ox) d[ox] = src[ox * 2 + off];
  } else if (s == 4) { /* AlexNet conv1 */
#pragma omp simd
    for (int ox = xlo; ox < xhi; ++ox) d[ox] = src[ox * 4 + off];
  } else {
    for (int ox = xlo; ox < xhi; ++ox) d[ox] = src[ox * s + off];
  }
  for (int ox = xhi; ox < ow; ++ox) d[ox] = 0.0f;
}

/* d[rows, ow] (contiguous) = rows of ow floats from src, `w` floats apart. */
NEST_NO_MEMCPY_IDIOM static void copy_rows(float *restrict d, const float *restrict src, int rows,
                                           int ow, int w) {
  if (ow == 8) { /* LeNet-5 conv2: one 256-bit vector per row */
    for (int r = 0; r < rows; ++r, d += 8, src += w)
#pragma omp simd
      for (int ox = 0; ox < 8; ++ox) d[ox] = src[ox];
    return;
  }
  for (int r = 0; r < rows; ++r, d += ow, src += w)
#pragma omp simd
    for (int ox = 0; ox < ow; ++ox) d[ox] = src[ox];
}

NEST_NO_MEMCPY_IDIOM void nest_kernel_im2col(const nest_conv_geom *g, const float *x, int oy0,
                                             int oy1, float *col, size_t ldcol) {
  const int h = g->h, w = g->w, s = g->stride, p = g->pad, ow = g->ow;
  NEST_ASSERT(0 <= oy0 && oy0 <= oy1 && oy1 <= g->oh);
  size_t r = 0;
  for (int ci = 0; ci < g->c; ++ci) {
    const float *xp = x + (size_t)ci * h * w;
    for (int ki = 0; ki < g->kh; ++ki) {
      int ylo, yhi; /* output rows reading a real input row, clipped to [oy0, oy1) */
      valid_range(ki, s, p, h, g->oh, &ylo, &yhi);
      ylo = ylo < oy0 ? oy0 : ylo > oy1 ? oy1 : ylo;
      yhi = yhi > oy1 ? oy1 : yhi < ylo ? ylo : yhi;
      for (int kj = 0; kj < g->kw; ++kj, ++r) {
        float *dst = col + r * ldcol; /* dst + (oy-oy0)*ow: output row oy */
        int xlo, xhi;
        valid_range(kj, s, p, w, ow, &xlo, &xhi);
        if (ylo > oy0) memset(dst, 0, sizeof(float) * (size_t)(ylo - oy0) * ow);
        const int off = kj - p; /* ix = ox*s + off */
        if (s == 1 && xlo == 0 && xhi == ow) {
          /* interior rows: plain copies of ow floats (LeNet, most of AlexNet) */
          if (yhi > ylo)
            copy_rows(dst + (size_t)(ylo - oy0) * ow, xp + (size_t)(ylo - p + ki) * w + off,
                      yhi - ylo, ow, w);
        } else {
          for (int oy = ylo; oy < yhi; ++oy)
            im2col_row(dst + (size_t)(oy - oy0) * ow, xp + (size_t)(oy * s - p + ki) * w, ow, xlo,
                       xhi, s, off);
        }
        if (yhi < oy1)
          memset(dst + (size_t)(yhi - oy0) * ow, 0, sizeof(float) * (size_t)(oy1 - yhi) * ow);
      }
    }
  }
}

/* rows of ow floats `w` apart in d += consecutive rows of src[rows, ow]. */
static void add_rows(float *restrict d, const float *restrict src, int rows, int ow, int w) {
  if (ow == 8) {
    for (int r = 0; r < rows; ++r, d += w, src += 8)
#pragma omp simd
      for (int ox = 0; ox < 8; ++ox) d[ox] += src[ox];
    return;
  }
  for (int r = 0; r < rows; ++r, d += w, src += ow)
#pragma omp simd
    for (int ox = 0; ox < ow; ++ox) d[ox] += src[ox];
}

void nest_kernel_col2im_add(const nest_conv_geom *g, const float *col, size_t ldcol, int oy0,
                            int oy1, float *x) {
  const int h = g->h, w = g->w, s = g->stride, p = g->pad, ow = g->ow;
  NEST_ASSERT(0 <= oy0 && oy0 <= oy1 && oy1 <= g->oh);
  size_t r = 0;
  for (int ci = 0; ci < g->c; ++ci) {
    float *xp = x + (size_t)ci * h * w;
    for (int ki = 0; ki < g->kh; ++ki) {
      int ylo, yhi;
      valid_range(ki, s, p, h, g->oh, &ylo, &yhi);
      if (ylo < oy0) ylo = oy0;
      if (yhi > oy1) yhi = oy1;
      for (int kj = 0; kj < g->kw; ++kj, ++r) {
        if (yhi <= ylo) continue;
        const float *src = col + r * ldcol; /* src + (oy-oy0)*ow: output row oy */
        int xlo, xhi;
        valid_range(kj, s, p, w, ow, &xlo, &xhi);
        const int off = kj - p;                /* ix = ox*s + off */
        if (s == 1 && xlo == 0 && xhi == ow) { /* interior rows */
          add_rows(xp + (size_t)(ylo - p + ki) * w + off, src + (size_t)(ylo - oy0) * ow, yhi - ylo,
                   ow, w);
          continue;
        }
        for (int oy = ylo; oy < yhi; ++oy) {
          const float *restrict c = src + (size_t)(oy - oy0) * ow;
          float *restrict d = xp + (size_t)(oy * s - p + ki) * w; /* input row iy */
          if (s == 1) {
            float *restrict dp = d + off;
#pragma omp simd
            for (int ox = xlo; ox < xhi; ++ox) dp[ox] += c[ox];
          } else {
            for (int ox = xlo; ox < xhi; ++ox) d[ox * s + off] += c[ox];
          }
        }
      }
    }
  }
}

/* ---- max pooling -------------------------------------------------------------------------- */

void nest_kernel_maxpool_forward(const nest_conv_geom *g, const float *x, float *y, int32_t *arg) {
  const int h = g->h, w = g->w, s = g->stride, p = g->pad;
  for (int oy = 0; oy < g->oh; ++oy) {
    int y0 = oy * s - p, y1 = y0 + g->kh;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    for (int ox = 0; ox < g->ow; ++ox) {
      int x0 = ox * s - p, x1 = x0 + g->kw;
      if (x0 < 0) x0 = 0;
      if (x1 > w) x1 = w;
      int best = y0 * w + x0;
      float m = x[best];
      for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
          float v = x[iy * w + ix];
          if (v > m) {
            m = v;
            best = iy * w + ix;
          }
        }
      y[oy * g->ow + ox] = m;
      arg[oy * g->ow + ox] = best;
    }
  }
}

void nest_kernel_maxpool_backward(const nest_conv_geom *g, const float *dy, const int32_t *arg,
                                  float *dx) {
  memset(dx, 0, sizeof(float) * (size_t)g->h * g->w);
  const int no = g->oh * g->ow;
  for (int j = 0; j < no; ++j) dx[arg[j]] += dy[j];
}

/* ---- batch norm ------------------------------------------------------------------------------ */

void nest_kernel_bn_sums(const float *a, const float *b, const float *center, int n, int c, int s,
                         int c0, int c1, double *sa, double *sab) {
  for (int ch = c0; ch < c1; ++ch) sa[ch] = sab[ch] = 0.0;
  if (s == 1) {
    /* dense input: rows are contiguous over channels, vectorise across channels */
    for (int i = 0; i < n; ++i) {
      const float *ar = a + (size_t)i * c, *br = b + (size_t)i * c;
      if (center) {
#pragma omp simd
        for (int ch = c0; ch < c1; ++ch) {
          sa[ch] += (double)ar[ch];
          sab[ch] += (double)ar[ch] * ((double)br[ch] - (double)center[ch]);
        }
      } else {
#pragma omp simd
        for (int ch = c0; ch < c1; ++ch) {
          sa[ch] += (double)ar[ch];
          sab[ch] += (double)ar[ch] * (double)br[ch];
        }
      }
    }
    return;
  }
  for (int ch = c0; ch < c1; ++ch) {
    const double m = center ? (double)center[ch] : 0.0;
    double ta = 0.0, tab = 0.0;
    for (int i = 0; i < n; ++i) {
      const float *ap = a + ((size_t)i * c + ch) * s, *bp = b + ((size_t)i * c + ch) * s;
      double ua = 0.0, uab = 0.0;
#pragma omp simd reduction(+ : ua, uab)
      for (int k = 0; k < s; ++k) {
        ua += (double)ap[k];
        uab += (double)ap[k] * ((double)bp[k] - m);
      }
      ta += ua;
      tab += uab;
    }
    sa[ch] = ta;
    sab[ch] = tab;
  }
}

void nest_kernel_bn_affine(const float *x, int n, int c, int s, int c0, int c1, const float *center,
                           const float *scale, const float *shift, float *y) {
  for (int i = 0; i < n; ++i) {
    if (s == 1) {
      const float *xr = x + (size_t)i * c;
      float *yr = y + (size_t)i * c;
#pragma omp simd
      for (int ch = c0; ch < c1; ++ch) yr[ch] = (xr[ch] - center[ch]) * scale[ch] + shift[ch];
      continue;
    }
    for (int ch = c0; ch < c1; ++ch) {
      const float *xp = x + ((size_t)i * c + ch) * s;
      float *yp = y + ((size_t)i * c + ch) * s;
      const float m = center[ch], k = scale[ch], t = shift[ch];
#pragma omp simd
      for (int j = 0; j < s; ++j) yp[j] = (xp[j] - m) * k + t;
    }
  }
}

void nest_kernel_bn_backward_dx(const float *dy, const float *x, int n, int c, int s, int c0,
                                int c1, const float *center, const float *ka, const float *kb,
                                const float *kc, float *dx) {
  for (int i = 0; i < n; ++i) {
    if (s == 1) {
      const float *dr = dy + (size_t)i * c, *xr = x + (size_t)i * c;
      float *o = dx + (size_t)i * c;
#pragma omp simd
      for (int ch = c0; ch < c1; ++ch)
        o[ch] = ka[ch] * dr[ch] + kb[ch] * (xr[ch] - center[ch]) + kc[ch];
      continue;
    }
    for (int ch = c0; ch < c1; ++ch) {
      size_t off = ((size_t)i * c + ch) * s;
      const float *dp = dy + off, *xp = x + off;
      float *o = dx + off;
      const float m = center[ch], a = ka[ch], b = kb[ch], k = kc[ch];
#pragma omp simd
      for (int j = 0; j < s; ++j) o[j] = a * dp[j] + b * (xp[j] - m) + k;
    }
  }
}

/* ---- reference twins ---------------------------------------------------------------------- */

/* x value at (ci, iy, ix) of one sample, 0 in the padding. */
static double ref_at(const nest_conv_geom *g, const double *x, int ci, int iy, int ix) {
  if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) return 0.0;
  return x[((size_t)ci * g->h + iy) * g->w + ix];
}

void nest_ref_im2col(const nest_conv_geom *g, const double *x, double *col) {
  const size_t N = (size_t)g->oh * g->ow;
  for (int ci = 0; ci < g->c; ++ci)
    for (int ki = 0; ki < g->kh; ++ki)
      for (int kj = 0; kj < g->kw; ++kj) {
        size_t r = ((size_t)ci * g->kh + ki) * g->kw + kj;
        for (int oy = 0; oy < g->oh; ++oy)
          for (int ox = 0; ox < g->ow; ++ox)
            col[r * N + (size_t)oy * g->ow + ox] =
                ref_at(g, x, ci, oy * g->stride - g->pad + ki, ox * g->stride - g->pad + kj);
      }
}

void nest_ref_col2im(const nest_conv_geom *g, const double *col, double *x) {
  const size_t N = (size_t)g->oh * g->ow;
  memset(x, 0, sizeof(double) * (size_t)g->c * g->h * g->w);
  for (int ci = 0; ci < g->c; ++ci)
    for (int ki = 0; ki < g->kh; ++ki)
      for (int kj = 0; kj < g->kw; ++kj) {
        size_t r = ((size_t)ci * g->kh + ki) * g->kw + kj;
        for (int oy = 0; oy < g->oh; ++oy)
          for (int ox = 0; ox < g->ow; ++ox) {
            int iy = oy * g->stride - g->pad + ki, ix = ox * g->stride - g->pad + kj;
            if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
            x[((size_t)ci * g->h + iy) * g->w + ix] += col[r * N + (size_t)oy * g->ow + ox];
          }
      }
}

void nest_ref_conv2d_forward(const nest_conv_geom *g, int oc, int n, const double *x,
                             const double *W, const double *b, double *y) {
  const size_t in_sz = (size_t)g->c * g->h * g->w, out_sz = (size_t)oc * g->oh * g->ow;
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < oc; ++o)
      for (int oy = 0; oy < g->oh; ++oy)
        for (int ox = 0; ox < g->ow; ++ox) {
          double acc = b[o];
          for (int ci = 0; ci < g->c; ++ci)
            for (int ki = 0; ki < g->kh; ++ki)
              for (int kj = 0; kj < g->kw; ++kj)
                acc += W[(((size_t)o * g->c + ci) * g->kh + ki) * g->kw + kj] *
                       ref_at(g, x + i * in_sz, ci, oy * g->stride - g->pad + ki,
                              ox * g->stride - g->pad + kj);
          y[i * out_sz + ((size_t)o * g->oh + oy) * g->ow + ox] = acc;
        }
}

void nest_ref_conv2d_backward(const nest_conv_geom *g, int oc, int n, const double *x,
                              const double *W, const double *dy, double *dx, double *dW,
                              double *db) {
  const size_t in_sz = (size_t)g->c * g->h * g->w, out_sz = (size_t)oc * g->oh * g->ow;
  const size_t wsz = (size_t)oc * g->c * g->kh * g->kw;
  memset(dW, 0, sizeof(double) * wsz);
  memset(db, 0, sizeof(double) * oc);
  if (dx) memset(dx, 0, sizeof(double) * in_sz * n);
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < oc; ++o)
      for (int oy = 0; oy < g->oh; ++oy)
        for (int ox = 0; ox < g->ow; ++ox) {
          double d = dy[i * out_sz + ((size_t)o * g->oh + oy) * g->ow + ox];
          db[o] += d;
          for (int ci = 0; ci < g->c; ++ci)
            for (int ki = 0; ki < g->kh; ++ki)
              for (int kj = 0; kj < g->kw; ++kj) {
                int iy = oy * g->stride - g->pad + ki, ix = ox * g->stride - g->pad + kj;
                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                size_t wi = (((size_t)o * g->c + ci) * g->kh + ki) * g->kw + kj;
                size_t xi = i * in_sz + ((size_t)ci * g->h + iy) * g->w + ix;
                dW[wi] += d * x[xi];
                if (dx) dx[xi] += d * W[wi];
              }
        }
}

/* ---- partial-area convolution (NeST Algorithm 2) --------------------------------------------- */

/* C[i, o, ci, oy, ox] = the contribution of input map ci through kernel (o, ci) at (oy, ox). */
static double ref_area_contrib(const nest_conv_geom *g, const double *xs, const double *W, int o,
                               int ci, int oy, int ox) {
  double c = 0.0;
  for (int ki = 0; ki < g->kh; ++ki)
    for (int kj = 0; kj < g->kw; ++kj)
      c += W[(((size_t)o * g->c + ci) * g->kh + ki) * g->kw + kj] *
           ref_at(g, xs, ci, oy * g->stride - g->pad + ki, ox * g->stride - g->pad + kj);
  return c;
}

void nest_ref_conv2d_area_forward(const nest_conv_geom *g, int oc, int n, const double *x,
                                  const double *W, const double *b, const double *msk,
                                  double *y) {
  const size_t in_sz = (size_t)g->c * g->h * g->w, plane = (size_t)g->oh * g->ow;
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < oc; ++o)
      for (int oy = 0; oy < g->oh; ++oy)
        for (int ox = 0; ox < g->ow; ++ox) {
          const size_t pq = (size_t)oy * g->ow + ox;
          double acc = b[o];
          for (int ci = 0; ci < g->c; ++ci)
            acc += msk[((size_t)o * g->c + ci) * plane + pq] *
                   ref_area_contrib(g, x + i * in_sz, W, o, ci, oy, ox);
          y[((size_t)i * oc + o) * plane + pq] = acc;
        }
}

void nest_ref_conv2d_area_backward(const nest_conv_geom *g, int oc, int n, const double *x,
                                   const double *W, const double *msk, const double *dy,
                                   double *dx, double *dW, double *db) {
  const size_t in_sz = (size_t)g->c * g->h * g->w, plane = (size_t)g->oh * g->ow;
  const size_t wsz = (size_t)oc * g->c * g->kh * g->kw;
  memset(dW, 0, sizeof(double) * wsz);
  memset(db, 0, sizeof(double) * oc);
  if (dx) memset(dx, 0, sizeof(double) * in_sz * n);
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < oc; ++o)
      for (int oy = 0; oy < g->oh; ++oy)
        for (int ox = 0; ox < g->ow; ++ox) {
          const size_t pq = (size_t)oy * g->ow + ox;
          const double d = dy[((size_t)i * oc + o) * plane + pq];
          db[o] += d; /* the bias is not gated */
          for (int ci = 0; ci < g->c; ++ci) {
            const double dc = msk[((size_t)o * g->c + ci) * plane + pq] * d; /* dL/dC */
            for (int ki = 0; ki < g->kh; ++ki)
              for (int kj = 0; kj < g->kw; ++kj) {
                int iy = oy * g->stride - g->pad + ki, ix = ox * g->stride - g->pad + kj;
                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                size_t wi = (((size_t)o * g->c + ci) * g->kh + ki) * g->kw + kj;
                size_t xi = i * in_sz + ((size_t)ci * g->h + iy) * g->w + ix;
                dW[wi] += dc * x[xi];
                if (dx) dx[xi] += dc * W[wi];
              }
          }
        }
}

void nest_ref_conv2d_area_accumulate(const nest_conv_geom *g, int oc, int n, const double *x,
                                     const double *W, double *acc) {
  const size_t in_sz = (size_t)g->c * g->h * g->w, plane = (size_t)g->oh * g->ow;
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < oc; ++o)
      for (int ci = 0; ci < g->c; ++ci)
        for (int oy = 0; oy < g->oh; ++oy)
          for (int ox = 0; ox < g->ow; ++ox)
            acc[((size_t)o * g->c + ci) * plane + (size_t)oy * g->ow + ox] +=
                fabs(ref_area_contrib(g, x + i * in_sz, W, o, ci, oy, ox));
}

/* Index (in the plane) of the window maximum, first one in row-major order on ties. */
static int ref_pool_argmax(const nest_conv_geom *g, const double *xp, int oy, int ox) {
  int best = -1;
  for (int ki = 0; ki < g->kh; ++ki)
    for (int kj = 0; kj < g->kw; ++kj) {
      int iy = oy * g->stride - g->pad + ki, ix = ox * g->stride - g->pad + kj;
      if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
      int idx = iy * g->w + ix;
      if (best < 0 || xp[idx] > xp[best]) best = idx;
    }
  NEST_ASSERT(best >= 0);
  return best;
}

void nest_ref_maxpool_forward(const nest_conv_geom *g, int n, const double *x, double *y) {
  const size_t hw = (size_t)g->h * g->w, ohw = (size_t)g->oh * g->ow;
  for (size_t pl = 0; pl < (size_t)n * g->c; ++pl)
    for (int oy = 0; oy < g->oh; ++oy)
      for (int ox = 0; ox < g->ow; ++ox)
        y[pl * ohw + (size_t)oy * g->ow + ox] =
            x[pl * hw + ref_pool_argmax(g, x + pl * hw, oy, ox)];
}

void nest_ref_maxpool_backward(const nest_conv_geom *g, int n, const double *x, const double *dy,
                               double *dx) {
  const size_t hw = (size_t)g->h * g->w, ohw = (size_t)g->oh * g->ow;
  memset(dx, 0, sizeof(double) * hw * g->c * n);
  for (size_t pl = 0; pl < (size_t)n * g->c; ++pl)
    for (int oy = 0; oy < g->oh; ++oy)
      for (int ox = 0; ox < g->ow; ++ox)
        dx[pl * hw + ref_pool_argmax(g, x + pl * hw, oy, ox)] +=
            dy[pl * ohw + (size_t)oy * g->ow + ox];
}

/* Batch mean and biased variance of channel ch of x[n, c, s] (two passes, double). */
static void ref_bn_stats(int n, int c, int s, int ch, const double *x, double *mean, double *var) {
  const double m = (double)n * s;
  double mu = 0.0, v = 0.0;
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < s; ++k) mu += x[((size_t)i * c + ch) * s + k];
  mu /= m;
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < s; ++k) {
      double d = x[((size_t)i * c + ch) * s + k] - mu;
      v += d * d;
    }
  *mean = mu;
  *var = v / m;
}

void nest_ref_batchnorm_forward(int n, int c, int s, double eps, const double *x,
                                const double *gamma, const double *beta, double *y, double *mean,
                                double *var) {
  for (int ch = 0; ch < c; ++ch) {
    double mu, v;
    ref_bn_stats(n, c, s, ch, x, &mu, &v);
    double is = 1.0 / sqrt(v + eps);
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < s; ++k) {
        size_t j = ((size_t)i * c + ch) * s + k;
        y[j] = gamma[ch] * (x[j] - mu) * is + beta[ch];
      }
    if (mean) mean[ch] = mu;
    if (var) var[ch] = v;
  }
}

void nest_ref_batchnorm_backward(int n, int c, int s, double eps, const double *x,
                                 const double *gamma, const double *dy, double *dx, double *dgamma,
                                 double *dbeta) {
  const double m = (double)n * s;
  for (int ch = 0; ch < c; ++ch) {
    double mu, v;
    ref_bn_stats(n, c, s, ch, x, &mu, &v);
    double is = 1.0 / sqrt(v + eps);
    double sdy = 0.0, sdyxh = 0.0;
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < s; ++k) {
        size_t j = ((size_t)i * c + ch) * s + k;
        sdy += dy[j];
        sdyxh += dy[j] * (x[j] - mu) * is;
      }
    dgamma[ch] = sdyxh;
    dbeta[ch] = sdy;
    if (!dx) continue;
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < s; ++k) {
        size_t j = ((size_t)i * c + ch) * s + k;
        double xh = (x[j] - mu) * is;
        dx[j] = gamma[ch] * is * (dy[j] - sdy / m - xh * sdyxh / m);
      }
  }
}

void nest_ref_dense_forward(int n, int d, int units, const double *x, const double *W,
                            const double *b, double *y) {
  for (int i = 0; i < n; ++i)
    for (int u = 0; u < units; ++u) {
      double acc = b[u];
      for (int k = 0; k < d; ++k) acc += x[(size_t)i * d + k] * W[(size_t)u * d + k];
      y[(size_t)i * units + u] = acc;
    }
}

void nest_ref_dense_backward(int n, int d, int units, const double *x, const double *W,
                             const double *dy, double *dx, double *dW, double *db) {
  memset(dW, 0, sizeof(double) * (size_t)units * d);
  memset(db, 0, sizeof(double) * units);
  if (dx) memset(dx, 0, sizeof(double) * (size_t)n * d);
  for (int i = 0; i < n; ++i)
    for (int u = 0; u < units; ++u) {
      double g = dy[(size_t)i * units + u];
      db[u] += g;
      for (int k = 0; k < d; ++k) {
        dW[(size_t)u * d + k] += g * x[(size_t)i * d + k];
        if (dx) dx[(size_t)i * d + k] += g * W[(size_t)u * d + k];
      }
    }
}

void nest_ref_relu_forward(size_t count, const double *x, double *y) {
  for (size_t i = 0; i < count; ++i) y[i] = x[i] > 0.0 ? x[i] : 0.0;
}

void nest_ref_relu_backward(size_t count, const double *x, const double *dy, double *dx) {
  for (size_t i = 0; i < count; ++i) dx[i] = x[i] > 0.0 ? dy[i] : 0.0;
}

void nest_ref_dropout_forward(size_t count, double rate, const uint8_t *keep, const double *x,
                              double *y) {
  for (size_t i = 0; i < count; ++i) y[i] = keep[i] ? x[i] / (1.0 - rate) : 0.0;
}

void nest_ref_dropout_backward(size_t count, double rate, const uint8_t *keep, const double *dy,
                               double *dx) {
  for (size_t i = 0; i < count; ++i) dx[i] = keep[i] ? dy[i] / (1.0 - rate) : 0.0;
}
