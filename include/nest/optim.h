/* optim.h — SGD with momentum / Nesterov, weight decay and learning-rate schedules.
 *
 * Update of every ACTIVE parameter (mask 1); dormant weights and their momentum stay 0:
 *   g' = g + wd * w            (wd only on tensors declared with decay: weights, not biases/BN)
 *   v  = mu * v + g'
 *   w -= lr * (nesterov ? g' + mu * v : v)
 *   w = m ? w : 0, v = m ? v : 0   (a select: dormant weights stay exactly +0.0 even when the
 *                                   gradient there is NaN or Inf) */
#ifndef NEST_OPTIM_H
#define NEST_OPTIM_H

#include "nest/net.h"

typedef enum { NEST_SCHED_CONST, NEST_SCHED_STEP, NEST_SCHED_COSINE } nest_schedule;

typedef struct {
  double lr, momentum, weight_decay;
  int nesterov;
  nest_schedule schedule;
  double warmup_epochs; /* linear ramp from lr/steps to lr over this many epochs */
  double step_epochs, step_gamma;
  double min_lr;
  double total_epochs; /* cosine horizon */
} nest_optim;

/* Learning rate at fractional epoch `t` (e.g. epoch + step / steps_per_epoch). */
double nest_optim_lr(const nest_optim *o, double t);
/* Parse "const" | "step" | "cosine"; returns -1 if unknown. */
int nest_schedule_parse(const char *name);
/* One update of every tensor of the net from net->grads (already summed over ranks). */
void nest_optim_step(nest_net *net, const nest_optim *o, double lr, int nthreads);

#endif
