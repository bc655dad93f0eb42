/* pipeline.h — one synthesis run, what nest_mpi runs: the phases of synthesis.phases in order
 * on top of the training engine (train.h), then the run's files.
 *
 *   grow   the growth phase (grow.h);
 *   train  train.epochs epochs with the optim schedule; the EPOCH and STEP growth policies (set,
 *          rigl) act after its epochs and steps through the engine's hooks;
 *   prune  the pruning phase, area the partial-area phase (prune.h), each followed by
 *          prune.epochs epochs of fine-tuning (a cosine from prune.lr down to optim.min_lr;
 *          area: prune.area_epochs when set);
 *   scann  SCANN's scheme synthesis.scheme (scann.h): operations with training in between,
 *          ending with the best validation network.
 * A run that changes the architecture keeps model_seed.h5 (the starting network) and, after a
 * growth phase, model_grown.h5: the stages of the report; every run ends with summary.txt, the
 * final model.h5 and, with a synthesis phase, report.csv (report.h).
 *
 * The pipeline owns the run's state beyond the engine: the phases' cursor (phase.h), the growth
 * driver, the pruning state, the latest evaluation, the run directory (rundir.h) and the
 * checkpoint writer (restart.h), which it plugs into the engine's epochs and the phases' loops
 * as checkpoint points. */
#ifndef NEST_PIPELINE_H
#define NEST_PIPELINE_H

#include "nest/dr.h"
#include "nest/grow.h"
#include "nest/phase.h"
#include "nest/prune.h"
#include "nest/restart.h"
#include "nest/scann.h"

/* The phases of a run (synthesis.phases), in the order they run. */
typedef enum { NEST_PHASE_GROW, NEST_PHASE_TRAIN, NEST_PHASE_PRUNE, NEST_PHASE_AREA,
               NEST_PHASE_SCANN, NEST_PHASE_COUNT } nest_phase_kind;
#define NEST_MAX_PHASES 8

typedef struct {
  nest_trainer *t;          /* the engine (owned) */
  nest_phase_ctx run;       /* the cursor, resuming, the checkpoint point (run.t == t) */
  nest_grow *grow;          /* growth policies and events (grow.h); NULL without grow.policy
                               and pruning phases */
  nest_prune_state prune;   /* pruning targets, guard snapshot, results (prune.h) */
  nest_scann_state scann;   /* the scann phase's best network and result (scann.h) */
  nest_dr_result dr;        /* DR+SCANN's reduction of the data (dr.h; t->reduce points here) */
  nest_restart *rst;        /* the checkpoint writer (restart.h) */
  nest_phase_kind phases[NEST_MAX_PHASES];
  int nphases;
  int phase_has[NEST_PHASE_COUNT];
  nest_eval last_val, last_test; /* the latest evaluation (summary.txt) */
  char run_dir[NEST_PATH_LEN];   /* "" = none */
} nest_pipeline;

/* Check the config (grow.policy, synthesis.phases), load the data, reduce them (dr.reduce,
 * dr.h), build the engine and its
 * net, check the phases' keys against the net and the data (a pruning phase or
 * grow.target_error needs validation samples), then create or resume the run directory (a
 * resumed run takes its net from its checkpoint: model.init_from is not read again).
 * Configuration errors are found before anything is written. Collective. */
nest_status nest_pipeline_create(const nest_config *cfg, nest_comm *comm, nest_pipeline **out);
/* Same with datasets supplied by the caller (ownership passes, also on failure; test may be
 * NULL). Used by tests. */
nest_status nest_pipeline_create_with_data(const nest_config *cfg, nest_comm *comm,
                                           nest_dataset *train, nest_dataset *test,
                                           nest_pipeline **out);
void nest_pipeline_destroy(nest_pipeline **p);

/* The whole run (see above), from where a resumed one stopped. Collective. */
nest_status nest_pipeline_run(nest_pipeline *p);

#endif
