/* checkpoint.h — transitional: the former header of model files and restart checkpoints, now
 * split into model.h (model files, src/model.c) and ckpt.h (the restart container, src/ckpt.c).
 * It only includes both, for files not yet switched over (src/train.c, src/restart.c,
 * src/report.c, include/nest/grow.h); delete it once they include what they use. */
#ifndef NEST_CHECKPOINT_H
#define NEST_CHECKPOINT_H

#include "nest/ckpt.h"
#include "nest/model.h"

#endif
