/* optim.c — masked SGD (momentum, Nesterov, decoupled-from-bias weight decay) and schedules. */
#include "nest/optim.h"

#include <math.h>
#include <string.h>

double nest_optim_lr(const nest_optim *o, double t) {
  double lr = o->lr;
  switch (o->schedule) {
    case NEST_SCHED_STEP:
      if (o->step_epochs > 0) lr *= pow(o->step_gamma, floor(t / o->step_epochs));
      break;
    case NEST_SCHED_COSINE:
      if (o->total_epochs > 0) {
        double u = t / o->total_epochs;
        if (u > 1) u = 1;
        lr = o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(3.14159265358979323846 * u));
      }
      break;
    default: break;
  }
  if (o->warmup_epochs > 0 && t < o->warmup_epochs) lr *= t / o->warmup_epochs;
  return lr;
}

int nest_schedule_parse(const char *name) {
  if (strcmp(name, "const") == 0) return NEST_SCHED_CONST;
  if (strcmp(name, "step") == 0) return NEST_SCHED_STEP;
  if (strcmp(name, "cosine") == 0) return NEST_SCHED_COSINE;
  return -1;
}

void nest_optim_step(nest_net *net, const nest_optim *o, double lr_d, int nthreads) {
  const float lr = (float)lr_d, mu = (float)o->momentum;
  const int nesterov = o->nesterov;
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_param *p = net->tensors[t].param;
    float *w = net->params + p->offset, *g = net->grads + p->offset;
    float *v = net->mom + p->offset;
    const float *m = net->masks + p->offset;
    const float wd = p->decay ? (float)o->weight_decay : 0.0f;
    const long n = (long)p->count;
#pragma omp parallel for simd schedule(static) num_threads(nthreads) if (n > 32768)
    for (long i = 0; i < n; ++i) {
      float gi = g[i] + wd * w[i];
      float vi = mu * v[i] + gi;
      float upd = nesterov ? gi + mu * vi : vi;
      /* Select, not multiply: a dormant weight stays +0.0 (never -0.0), and a NaN/Inf
       * gradient at a dormant position cannot leak into it. */
      const int on = m[i] != 0.0f;
      w[i] = on ? w[i] - lr * upd : 0.0f;
      v[i] = on ? vi : 0.0f;
    }
  }
}
