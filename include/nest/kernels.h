/* kernels.h — the compute kernels behind the conv2d, maxpool and batchnorm layers, and a
 * naive double-precision reference twin for each of them (and for dense / relu / dropout).
 *
 * Fast kernels (nest_kernel_*) work on float, on one sample (or one channel range), never
 * allocate and never open OpenMP regions: the layers call them from their own parallel
 * loops. Reference twins (nest_ref_*) are the textbook loops in double, written for
 * obviousness, not speed; the tests check every fast kernel and every layer against them,
 * and check every reference backward against finite differences of its forward.
 *
 * Layouts: a sample is NCHW-contiguous, x[c, h, w]; a batch is x[n, c, h, w].
 * im2col matrix of one sample: col[K, N] with K = c*kh*kw (row r = (ci*kh + ki)*kw + kj) and
 * N = oh*ow (column j = oy*ow + ox); rows are `ldcol` floats apart so several samples can
 * sit side by side in one wider matrix (ldcol = G*N for a group of G samples). */
#ifndef NEST_KERNELS_H
#define NEST_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Geometry of a 2-D window (convolution or pooling) over one sample: input (c, h, w),
 * kernel kh x kw, the same stride and zero padding on both axes, output oh x ow. */
typedef struct {
  int c, h, w;
  int kh, kw, stride, pad;
  int oh, ow; /* (h + 2*pad - kh) / stride + 1; may be <= 0 for impossible shapes */
} nest_conv_geom;

/* Fill in oh, ow (floor division; <= 0 when the kernel does not fit). stride >= 1. */
nest_conv_geom nest_conv_geom_make(int c, int h, int w, int kh, int kw, int stride, int pad);

/* ---- fast kernels (float) ---------------------------------------------------------------- */

/* col = the receptive fields of x[c, h, w] for output rows [oy0, oy1) (0 <= oy0 <= oy1 <= oh):
 * col[K, (oy1-oy0)*ow] with row stride ldcol, column (oy-oy0)*ow + ox; padding reads as 0.
 * oy0 = 0, oy1 = oh gives the whole im2col matrix [K, N]. */
void nest_kernel_im2col(const nest_conv_geom *g, const float *x, int oy0, int oy1, float *col,
                        size_t ldcol);
/* The adjoint of im2col: x[c, h, w] += every col entry of output rows [oy0, oy1), added to
 * the input position it was read from (padding positions dropped). Accumulates: zero x
 * first for a plain col2im. */
void nest_kernel_col2im_add(const nest_conv_geom *g, const float *col, size_t ldcol, int oy0,
                            int oy1, float *x);

/* Max pooling of ONE plane x[h, w] -> y[oh, ow]; arg[oh*ow] = index iy*w + ix of the
 * maximum in the plane (padding never wins; the first maximum in row-major window order wins
 * ties). g->c is ignored. Requires pad < kh and pad < kw (every window holds a real pixel). */
void nest_kernel_maxpool_forward(const nest_conv_geom *g, const float *x, float *y, int32_t *arg);
/* dx[h, w] = scatter-add of dy[oh, ow] to arg positions (overlapping windows accumulate). */
void nest_kernel_maxpool_backward(const nest_conv_geom *g, const float *dy, const int32_t *arg,
                                  float *dx);

/* Batch norm over x[n, c, s] (s = h*w; channel ch of sample i is x + (i*c + ch)*s).
 * Per channel ch in [c0, c1): sa[ch] = sum a, sab[ch] = sum a*(b - center[ch]) over n
 * samples and s positions, in double (b == a, center == NULL gives the sum of squares).
 * center may be NULL (0). Overwrites sa, sab in the range (zeros when n == 0). */
void nest_kernel_bn_sums(const float *a, const float *b, const float *center, int n, int c, int s,
                         int c0, int c1, double *sa, double *sab);
/* y = (x - center[ch]) * scale[ch] + shift[ch] for channels [c0, c1). */
void nest_kernel_bn_affine(const float *x, int n, int c, int s, int c0, int c1, const float *center,
                           const float *scale, const float *shift, float *y);
/* dx = ka[ch] * dy + kb[ch] * (x - center[ch]) + kc[ch] for channels [c0, c1). */
void nest_kernel_bn_backward_dx(const float *dy, const float *x, int n, int c, int s, int c0,
                                int c1, const float *center, const float *ka, const float *kb,
                                const float *kc, float *dx);

/* ---- reference twins (double, naive) ----------------------------------------------------- */

void nest_ref_im2col(const nest_conv_geom *g, const double *x, double *col);
void nest_ref_col2im(const nest_conv_geom *g, const double *col, double *x);

/* Direct convolution. x[n, c, h, w], W[oc, c, kh, kw], b[oc], y[n, oc, oh, ow]. */
void nest_ref_conv2d_forward(const nest_conv_geom *g, int oc, int n, const double *x,
                             const double *W, const double *b, double *y);
/* dW, db overwritten with the sums over the batch; dx (may be NULL) overwritten. */
void nest_ref_conv2d_backward(const nest_conv_geom *g, int oc, int n, const double *x,
                              const double *W, const double *dy, double *dx, double *dW,
                              double *db);

/* Partial-area convolution (NeST Algorithm 2; the conv2d layer with hp.area = 1).
 * msk[oc, c, oh, ow] is the 0/1 area mask; C[i, o, ci, oy, ox] = sum_{ki,kj} W[o, ci, ki, kj] *
 * x[i, ci, oy*s + ki - pad, ox*s + kj - pad] is the contribution of input map ci through kernel
 * (o, ci) at output position (oy, ox), and
 *   y[i, o, oy, ox] = b[o] + sum_ci msk[o, ci, oy, ox] * C[i, o, ci, oy, ox].
 * Backward: dC = msk * dy; dW, dx from dC (dW dense: dormant weights included); db = sum dy.
 * dW, db overwritten; dx (may be NULL) overwritten. */
void nest_ref_conv2d_area_forward(const nest_conv_geom *g, int oc, int n, const double *x,
                                  const double *W, const double *b, const double *msk,
                                  double *y);
void nest_ref_conv2d_area_backward(const nest_conv_geom *g, int oc, int n, const double *x,
                                   const double *W, const double *msk, const double *dy,
                                   double *dx, double *dW, double *db);
/* acc[o, ci, oy, ox] += sum_i |C[i, o, ci, oy, ox]| (the partial-area score; twin of
 * nest_conv2d_area_accumulate in area.h). */
void nest_ref_conv2d_area_accumulate(const nest_conv_geom *g, int oc, int n, const double *x,
                                     const double *W, double *acc);

/* Max pooling of x[n, c, h, w] -> y[n, c, oh, ow] (same tie rule as the fast kernel). */
void nest_ref_maxpool_forward(const nest_conv_geom *g, int n, const double *x, double *y);
/* dx overwritten; the argmax is recomputed from x. */
void nest_ref_maxpool_backward(const nest_conv_geom *g, int n, const double *x, const double *dy,
                               double *dx);

/* Training-mode batch norm of x[n, c, s] with the statistics of these n*s values per
 * channel (biased variance): y = gamma * (x - mean) / sqrt(var + eps) + beta.
 * mean, var (may be NULL) receive the per-channel statistics. */
void nest_ref_batchnorm_forward(int n, int c, int s, double eps, const double *x,
                                const double *gamma, const double *beta, double *y, double *mean,
                                double *var);
/* Exact gradient of the above (statistics depend on x). dx may be NULL. */
void nest_ref_batchnorm_backward(int n, int c, int s, double eps, const double *x,
                                 const double *gamma, const double *dy, double *dx, double *dgamma,
                                 double *dbeta);

/* Dense: x[n, d], W[units, d], b[units], y[n, units] = x Wᵀ + b. dx may be NULL. */
void nest_ref_dense_forward(int n, int d, int units, const double *x, const double *W,
                            const double *b, double *y);
void nest_ref_dense_backward(int n, int d, int units, const double *x, const double *W,
                             const double *dy, double *dx, double *dW, double *db);

/* ReLU over `count` values; dx = dy where x > 0. */
void nest_ref_relu_forward(size_t count, const double *x, double *y);
void nest_ref_relu_backward(size_t count, const double *x, const double *dy, double *dx);

/* Dropout with a given keep mask (1 kept, 0 dropped): y = x * keep / (1 - rate). */
void nest_ref_dropout_forward(size_t count, double rate, const uint8_t *keep, const double *x,
                              double *y);
void nest_ref_dropout_backward(size_t count, double rate, const uint8_t *keep, const double *dy,
                               double *dx);

#endif
