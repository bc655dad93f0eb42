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

/* Knowledge distillation (Hinton et al. 2015): logits [n, k] of the network trained, teacher
 * [n, k] the logits of a teacher network on the same rows, labels [n]. For each row:
 *   loss = (1 - alpha) CE(softmax(logits), label) + alpha T^2 KL(q || p_T),
 *   q = softmax(teacher / T), p_T = softmax(logits / T)   (T = temp > 0, alpha in [0, 1]);
 * the T^2 keeps the soft term's gradient on the scale of the hard one's. Adds the summed loss
 * to *loss_sum and the argmax hits (as nest_loss_softmax_xent) to *correct; dlogits (if not
 * NULL) = scale ((1 - alpha) (p - onehot) + alpha T (p_T - q)). alpha = 0 is the cross-entropy
 * of nest_loss_softmax_xent. */
void nest_loss_distill(const float *logits, const float *teacher, const int32_t *labels, int n,
                       int k, float scale, double alpha, double temp, float *dlogits,
                       double *loss_sum, int64_t *correct);

/* logits [n, k], labels [n]: the number of rows whose label is among the `top` largest logits
 * (top-5 accuracy with top = 5). Logit j ranks above the label's logit z[l] when z[j] > z[l],
 * or z[j] == z[l] and j < l (ties by lowest index, as the argmax above: top = 1 counts exactly
 * what *correct counts); the row is a hit when fewer than `top` logits rank above z[l]. A NaN
 * label logit is a miss (for logits without NaN, top = 1 matches *correct exactly).
 * top >= k: every row is a hit. O(n k). */
int64_t nest_loss_topk_hits(const float *logits, const int32_t *labels, int n, int k, int top);

/* top-5 error means something only with more than 5 classes (with 5 or fewer every label is
 * among the 5 largest logits): metrics.csv, summary.txt, the model files and report.csv have it
 * only for models with more classes than NEST_TOP5_MIN_CLASSES (metrics.csv and report.csv keep
 * the columns, empty). Progress lines and the model report show it only with more than
 * NEST_TOP5_SHOW_CLASSES: with 10 classes (MNIST) top-5 is half the classes and says little. */
#define NEST_TOP5_MIN_CLASSES 5
#define NEST_TOP5_SHOW_CLASSES 10

#endif
