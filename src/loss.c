/* loss.c — softmax cross-entropy with a numerically stable log-sum-exp (max subtracted), the
 * distillation loss (soft targets of a teacher at a temperature), and top-k hit counts (top-5
 * error). */
#include "nest/loss.h"

#include <math.h>
#include <stddef.h>

void nest_loss_softmax_xent(const float *logits, const int32_t *labels, int n, int k, float scale,
                            float *dlogits, double *loss_sum, int64_t *correct) {
  double loss = 0;
  int64_t hits = 0;
  for (int i = 0; i < n; ++i) {
    const float *z = logits + (size_t)i * k;
    int arg = 0;
    float mx = z[0];
    for (int j = 1; j < k; ++j)
      if (z[j] > mx) mx = z[j], arg = j;
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += exp((double)z[j] - mx);
    double lse = mx + log(sum);
    loss += lse - z[labels[i]];
    hits += arg == labels[i];
    if (dlogits) {
      float *d = dlogits + (size_t)i * k;
      for (int j = 0; j < k; ++j)
        d[j] = scale * (float)(exp((double)z[j] - lse) - (j == labels[i] ? 1.0 : 0.0));
    }
  }
  *loss_sum += loss;
  *correct += hits;
}

/* log-sum-exp of z[0..k) / temp, max subtracted (double). */
static double lse_temp(const float *z, int k, double temp) {
  double mx = z[0];
  for (int j = 1; j < k; ++j)
    if (z[j] > mx) mx = z[j];
  double sum = 0;
  for (int j = 0; j < k; ++j) sum += exp(((double)z[j] - mx) / temp);
  return mx / temp + log(sum);
}

void nest_loss_distill(const float *logits, const float *teacher, const int32_t *labels, int n,
                       int k, float scale, double alpha, double temp, float *dlogits,
                       double *loss_sum, int64_t *correct) {
  double loss = 0;
  int64_t hits = 0;
  for (int i = 0; i < n; ++i) {
    const float *z = logits + (size_t)i * k, *v = teacher + (size_t)i * k;
    int arg = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[arg]) arg = j;
    hits += arg == labels[i];
    const double lse1 = lse_temp(z, k, 1.0);
    const double lsez = lse_temp(z, k, temp), lsev = lse_temp(v, k, temp);
    /* KL(q || p_T) = sum_j q_j (log q_j - log p_T,j), q = softmax(v / T), p_T = softmax(z / T) */
    double kl = 0;
    for (int j = 0; j < k; ++j) {
      const double lq = (double)v[j] / temp - lsev, lp = (double)z[j] / temp - lsez;
      kl += exp(lq) * (lq - lp);
    }
    loss += (1.0 - alpha) * (lse1 - z[labels[i]]) + alpha * temp * temp * kl;
    if (dlogits) {
      /* d/dz: (1 - a) (p - onehot) + a T (p_T - q) */
      float *d = dlogits + (size_t)i * k;
      for (int j = 0; j < k; ++j) {
        const double p = exp((double)z[j] - lse1);
        const double pt = exp((double)z[j] / temp - lsez), q = exp((double)v[j] / temp - lsev);
        d[j] = scale * (float)((1.0 - alpha) * (p - (j == labels[i] ? 1.0 : 0.0)) +
                               alpha * temp * (pt - q));
      }
    }
  }
  *loss_sum += loss;
  *correct += hits;
}

int64_t nest_loss_topk_hits(const float *logits, const int32_t *labels, int n, int k, int top) {
  int64_t hits = 0;
  for (int i = 0; i < n; ++i) {
    const float *z = logits + (size_t)i * k;
    const int l = labels[i];
    const float zl = z[l];
    if (zl != zl) continue; /* NaN: never a hit (the argmax never picks it either) */
    /* Count the logits ranked above the label's, stopping once `top` of them are found. */
    int above = 0;
    for (int j = 0; j < k && above < top; ++j) above += z[j] > zl || (z[j] == zl && j < l);
    hits += above < top;
  }
  return hits;
}
