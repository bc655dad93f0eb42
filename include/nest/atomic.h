/* atomic.h — replacing a file atomically, the one way nest writes every result file that must
 * survive a crash (config.ini, summary.txt, model.h5, nest_prep's .h5; next, checkpoints):
 * write PATH.tmp, fsync it, rename it over PATH, fsync the directory. A crash, a kill or a
 * full disk leaves either the old PATH or the complete new one, never a partial file; a
 * failed write removes PATH.tmp. Errors are NEST_ERR_IO naming the file and the reason. */
#ifndef NEST_ATOMIC_H
#define NEST_ATOMIC_H

#include <stddef.h>
#include <stdio.h>

#include "nest/status.h"

/* tmp = "PATH.tmp" (cap bytes); creates it empty, so a writer that cannot say why a create
 * failed (HDF5) still gets strerror's reason: "PATH.tmp: cannot create: No such file...". */
nest_status nest_atomic_begin(const char *path, char *tmp, size_t cap);
/* The complete tmp file is closed: fsync it, rename it over path, fsync the directory (best
 * effort: the new file is whole either way). On failure tmp is removed. */
nest_status nest_atomic_commit(const char *tmp, const char *path);
/* Give up: remove tmp (no error if it is gone). */
void nest_atomic_abort(const char *tmp);

/* Create directory `dir` and its missing parents (mode 0775, like mkdir -p): the place a
 * writer's PATH goes in. An existing directory is fine; an existing non-directory, or a
 * mkdir that fails, is NEST_ERR_IO naming that directory and the reason. */
nest_status nest_atomic_mkdirs(const char *dir);

/* stdio writers: nest_atomic_begin + fopen(tmp, "w"). */
nest_status nest_atomic_fopen(const char *path, char *tmp, size_t cap, FILE **f);
/* Check the stream for write errors (disk full), fclose, commit; on failure remove tmp. */
nest_status nest_atomic_fclose(FILE *f, const char *tmp, const char *path);

#endif
