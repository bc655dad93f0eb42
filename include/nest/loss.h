/* loss.h — softmax cross-entropy, fused forward + backward. */
#ifndef NEST_LOSS_H
#define NEST_LOSS_H

#include <stdint.h>

/* logits [n, k], labels [n]. For each row: p = softmax(logits), loss = -log p[label].
 * Adds the summed loss to *loss_sum and the number of rows whose argmax (lowest index on ties)
 * equals the label to *correct. If dlogits is not NULL, writes dL/dlogits = scale (p - onehot),
 * where scale = 1 / global batch size makes an allreduce SUM the mean-loss gradient. */
void nest_loss_softmax_xent(const float *logits, const int32_t *labels, int n, int k, float scale,
                            float *dlogits, double *loss_sum, int64_t *correct);

#endif
