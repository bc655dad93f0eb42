/* atomic.c — atomic file replacement: PATH.tmp, fsync, rename, fsync the directory (atomic.h). */
#define _POSIX_C_SOURCE 200809L /* fsync, O_DIRECTORY */
#include "nest/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* fsync a file or directory by name; -1 with errno on failure. */
static int sync_path(const char *p, int dir) {
  int fd = open(p, O_RDONLY | (dir ? O_DIRECTORY : 0));
  if (fd < 0) return -1;
  int r = fsync(fd);
  int err = errno;
  close(fd);
  errno = err;
  return r;
}

nest_status nest_atomic_begin(const char *path, char *tmp, size_t cap) {
  if (!path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_atomic_begin: empty path");
  int n = snprintf(tmp, cap, "%s.tmp", path);
  if (n < 0 || (size_t)n >= cap) return NEST_ERR(NEST_ERR_ARG, "%s: path too long", path);
  FILE *probe = fopen(tmp, "wb");
  if (!probe) return NEST_ERR(NEST_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
  fclose(probe);
  return NEST_OK;
}

nest_status nest_atomic_commit(const char *tmp, const char *path) {
  /* Data on disk before the rename makes it visible: a crash never leaves a short PATH. */
  if (sync_path(tmp, 0) != 0) {
    const int e = errno;
    remove(tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: fsync failed: %s", tmp, strerror(e));
  }
  if (rename(tmp, path) != 0) {
    const int e = errno;
    remove(tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(e));
  }
  /* Make the rename itself durable (best effort: some file systems refuse fsync on a
   * directory, and the new file is complete either way). */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash == dir)
    dir[1] = '\0';
  else
    *slash = '\0';
  (void)sync_path(dir, 1);
  return NEST_OK;
}

void nest_atomic_abort(const char *tmp) {
  if (tmp && *tmp) remove(tmp);
}

nest_status nest_atomic_fopen(const char *path, char *tmp, size_t cap, FILE **f) {
  *f = NULL;
  NEST_CALL(nest_atomic_begin(path, tmp, cap));
  *f = fopen(tmp, "w");
  if (!*f) {
    const int e = errno;
    remove(tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: cannot create: %s", tmp, strerror(e));
  }
  return NEST_OK;
}

nest_status nest_atomic_fclose(FILE *f, const char *tmp, const char *path) {
  int e = 0;
  if (fflush(f) != 0 || ferror(f)) e = errno ? errno : EIO;
  if (fclose(f) != 0 && !e) e = errno ? errno : EIO;
  if (e) {
    remove(tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: cannot write: %s", path, strerror(e));
  }
  return nest_atomic_commit(tmp, path);
}

/* mkdir that accepts an existing directory (and only a directory). */
static nest_status mkdir_one(const char *dir) {
  if (mkdir(dir, 0775) == 0) return NEST_OK;
  const int err = errno;
  struct stat st;
  if (err == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return NEST_OK;
  return NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", dir,
                  err == EEXIST ? "exists and is not a directory" : strerror(err));
}

nest_status nest_atomic_mkdirs(const char *dir) {
  if (!dir || !*dir) return NEST_ERR(NEST_ERR_ARG, "nest_atomic_mkdirs: empty path");
  const size_t len = strlen(dir);
  char *buf = malloc(len + 1);
  if (!buf) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", dir);
  memcpy(buf, dir, len + 1);
  nest_status st = NEST_OK;
  /* each parent in turn ("a", "a/b", ...), then the directory itself */
  for (char *p = buf + 1; st == NEST_OK && *p; ++p) {
    if (*p != '/' || p[-1] == '/') continue;
    *p = '\0';
    st = mkdir_one(buf);
    *p = '/';
  }
  if (st == NEST_OK) st = mkdir_one(buf);
  free(buf);
  return st;
}
