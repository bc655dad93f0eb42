/* rundir.h — a run's directory (outputs/README.md, docs/restart.md): choosing and creating it,
 * refusing one that holds another run, the files a new run starts with (metrics.csv with its
 * header, config.ini), the checkpoint files in it (RUN_DIR/checkpoints/ckpt-NNNNNNNN.h5),
 * cutting a log back to a checkpoint's length on resume, and the metrics.csv row format.
 *
 * Rank 0 does the file work; nest_rundir_open agrees on the outcome and hands every rank the
 * same directory. Nothing here knows about training, phases or checkpoints' contents. */
#ifndef NEST_RUNDIR_H
#define NEST_RUNDIR_H

#include <stdint.h>
#include <stdio.h>

#include "nest/comm.h"
#include "nest/config.h"

typedef struct {
  char path[NEST_PATH_LEN]; /* "" = no run directory (run.run_dir and run.out_dir empty) */
  int resume;               /* 1: the directory holds checkpoints; the run resumes them */
  FILE *metrics;            /* rank 0 of a new run: metrics.csv, header written (caller owns) */
} nest_rundir;

/* The run directory of cfg: run.run_dir (created if missing), or a new
 * run.out_dir/NAME-job<id>[_<task>] (Slurm) or NAME-YYYYmmdd-HHMMSS[-k]. A directory that holds
 * checkpoints is resumed; one that holds another run's files without a checkpoint is refused
 * (nothing in it is touched); cfg->resume (--resume) without a checkpoint is an error. A new run
 * gets metrics.csv (first: nest's own file) and config.ini (nest_config_write). Collective. */
nest_status nest_rundir_open(const nest_config *cfg, nest_comm *comm, nest_rundir *out);

/* The directory a run of cfg would continue if it exists: run.run_dir, or under Slurm the
 * job's own run.out_dir/NAME-job<id>; "" when the run always starts a new directory. Nothing is
 * created or checked. */
void nest_rundir_existing(const nest_config *cfg, char *out, size_t cap);

/* The checkpoint sequence numbers in RUN_DIR/checkpoints, newest first (*seqs malloc'd, NULL
 * when there are none; a missing directory holds none). */
nest_status nest_rundir_checkpoints(const char *run_dir, int64_t **seqs, int *n);
/* RUN_DIR/checkpoints/ckpt-NNNNNNNN.h5 of sequence number seq. */
void nest_rundir_checkpoint(const char *run_dir, int64_t seq, char *out, size_t cap);
/* The newest checkpoint ("" in path when there is none); *any = 1 when there is one. */
nest_status nest_rundir_newest(const char *run_dir, char *path, size_t cap, int *any);

/* Cut `path` back to `bytes` (an error if it is shorter: it was edited or lost) and open it
 * for appending into *f (closing *f first). A missing file with bytes = 0 is created. */
nest_status nest_rundir_truncate(const char *path, int64_t bytes, FILE **f);

/* One metrics.csv row (NaN: an empty field): an epoch's, or a pruning iteration's (no epoch
 * ran: lr, training loss and accuracy and images_per_s NaN). */
typedef struct {
  int64_t epoch, step;       /* completed epochs, optimizer steps */
  double lr, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc;
  int64_t active, total;     /* active and total weights */
  double images_per_s, elapsed_s;
  const char *phase;
  double val_top5_error, test_top5_error;
  int64_t iteration;         /* the growth or pruning iteration (from 1) of the row; 0 = none */
} nest_metrics_row;
/* Append the row to f and flush it (a crash loses at most the row being written); an error
 * names `path`. */
nest_status nest_rundir_metrics_row(FILE *f, const char *path, const nest_metrics_row *r);

/* ",<v in fmt>", or "," alone when v is NaN: the numbers of every CSV file a run writes
 * (metrics.csv, events.csv, report.csv). */
void nest_rundir_csv_num(FILE *f, double v, const char *fmt);

#endif
