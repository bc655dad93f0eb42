/* test_layering.c — the include graph of nest points one way (docs/design.md, "Layers").
 *
 * Reads the layer table of docs/design.md (lines "L<n>: module module ..." in its text block)
 * and every `#include "nest/<m>.h"` line of src/ and include/nest/, and fails on
 *   - an include cycle between modules,
 *   - an include that goes up (a module of layer a including one of layer b > a),
 *   - a module with files but no row in the table, or a row naming a module without files.
 * Modules: include/nest/<m>.h and src/<m>.c are module m; src/layers/, src/policies/ and
 * src/tools/ are one module each ("layers", "policies", "tools"); src/data/ is module "data"
 * (with data.h: the readers form one group); src/main.c is "main".
 *
 * NEST_LAYERING_ROOT=DIR checks the tree at DIR instead of this source tree (against this tree's
 * table, or NEST_LAYERING_TABLE=FILE): how the note shows that the pre-pipeline sources fail.
 * A second test adds a reverse include (train.c -> pipeline.h) to the graph read from the tree
 * and checks that both the order check and the cycle check catch it. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXMOD 128
#define NAMELEN 48

typedef struct {
  int n;
  char name[MAXMOD][NAMELEN];
  int layer[MAXMOD];                /* from the table; -1 = not in it */
  int files[MAXMOD];                /* files of the module found in the tree */
  unsigned char edge[MAXMOD][MAXMOD]; /* edge[a][b]: a includes b */
  char where[MAXMOD][MAXMOD][96];   /* the first file that makes edge a -> b */
} graph;

static int find(graph *g, const char *name, int add) {
  for (int i = 0; i < g->n; ++i)
    if (strcmp(g->name[i], name) == 0) return i;
  if (!add) return -1;
  assert_true(g->n < MAXMOD);
  snprintf(g->name[g->n], NAMELEN, "%s", name);
  g->layer[g->n] = -1;
  return g->n++;
}

/* ---- the table ------------------------------------------------------------------------------ */

/* Lines "L<n>: a b c   # comment" anywhere in the file. Returns the number of rows read. */
static int read_table(graph *g, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("%s: cannot open the layer table", path);
  char line[1024];
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    int layer, used = 0;
    if (sscanf(line, "L%d:%n", &layer, &used) != 1 || used == 0) continue;
    ++rows;
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    for (char *tok = strtok(line + used, " \t\r\n,"); tok; tok = strtok(NULL, " \t\r\n,")) {
      const int m = find(g, tok, 1);
      if (g->layer[m] >= 0) fail_msg("%s: module %s is listed twice", path, tok);
      g->layer[m] = layer;
    }
  }
  fclose(f);
  return rows;
}

/* ---- the tree ------------------------------------------------------------------------------- */

/* The includes of one file of module m. */
static void read_includes(graph *g, int m, const char *path, const char *shown) {
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("%s: cannot open", path);
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') ++p;
    if (*p++ != '#') continue;
    while (*p == ' ' || *p == '\t') ++p;
    if (strncmp(p, "include", 7) != 0) continue;
    p += 7;
    while (*p == ' ' || *p == '\t') ++p;
    if (strncmp(p, "\"nest/", 6) != 0) continue;
    p += 6;
    char name[NAMELEN];
    size_t k = 0;
    while ((isalnum((unsigned char)*p) || *p == '_') && k + 1 < sizeof name) name[k++] = *p++;
    name[k] = '\0';
    if (strcmp(p, ".h\"") != 0 && strncmp(p, ".h\"", 3) != 0) continue;
    const int b = find(g, name, 1);
    if (b == m) continue;
    if (!g->edge[m][b]) snprintf(g->where[m][b], sizeof g->where[m][b], "%s", shown);
    g->edge[m][b] = 1;
  }
  fclose(f);
}

/* Files of dir ending in `suffix`: module `group`, or (group NULL) the file's stem. */
static void read_dir(graph *g, const char *root, const char *sub, const char *suffix,
                     const char *group) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", root, sub);
  DIR *d = opendir(dir);
  if (!d) fail_msg("%s: cannot list", dir);
  for (struct dirent *e; (e = readdir(d));) {
    const size_t len = strlen(e->d_name), sl = strlen(suffix);
    if (len <= sl || strcmp(e->d_name + len - sl, suffix) != 0) continue;
    char stem[NAMELEN];
    snprintf(stem, sizeof stem, "%.*s", (int)(len - sl), e->d_name);
    const int m = find(g, group ? group : stem, 1);
    g->files[m]++;
    char path[8192], shown[96];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    snprintf(shown, sizeof shown, "%s/%s", sub, e->d_name);
    read_includes(g, m, path, shown);
  }
  closedir(d);
}

static void read_tree(graph *g, const char *root) {
  read_dir(g, root, "include/nest", ".h", NULL);
  read_dir(g, root, "src", ".c", NULL);
  read_dir(g, root, "src/layers", ".c", "layers");
  read_dir(g, root, "src/policies", ".c", "policies");
  read_dir(g, root, "src/data", ".c", "data");
  read_dir(g, root, "src/data", ".h", "data");
  read_dir(g, root, "src/tools", ".c", "tools");
}

/* ---- the checks ------------------------------------------------------------------------------ */

/* A path a -> ... -> b along edges (BFS); writes "a -> x -> b" into out. 0 if none. */
static int path_of(const graph *g, int a, int b, char *out, size_t cap) {
  int prev[MAXMOD], queue[MAXMOD], head = 0, tail = 0;
  for (int i = 0; i < g->n; ++i) prev[i] = -2;
  prev[a] = -1;
  queue[tail++] = a;
  while (head < tail && prev[b] == -2) {
    const int u = queue[head++];
    for (int v = 0; v < g->n; ++v)
      if (g->edge[u][v] && prev[v] == -2) prev[v] = u, queue[tail++] = v;
  }
  if (prev[b] == -2) return 0;
  int chain[MAXMOD], n = 0;
  for (int v = b; v != -1; v = prev[v]) chain[n++] = v;
  out[0] = '\0';
  for (int i = n - 1; i >= 0; --i)
    snprintf(out + strlen(out), cap - strlen(out), "%s%s", i == n - 1 ? "" : " -> ",
             g->name[chain[i]]);
  return 1;
}

/* Every problem of g, one per line, into report; returns how many (missing, order, cycles). */
static int check(const graph *g, char *report, size_t cap, int *n_order, int *n_cycle) {
  int problems = 0;
  *n_order = *n_cycle = 0;
  report[0] = '\0';
#define SAY(...) (snprintf(report + strlen(report), cap - strlen(report), __VA_ARGS__), ++problems)
  for (int m = 0; m < g->n; ++m) {
    if (g->layer[m] < 0)
      SAY("module %s (%d file%s) is not in the layer table of docs/design.md\n", g->name[m],
          g->files[m], g->files[m] == 1 ? "" : "s");
    else if (g->files[m] == 0)
      SAY("the layer table names module %s, which has no file\n", g->name[m]);
  }
  for (int a = 0; a < g->n; ++a)
    for (int b = 0; b < g->n; ++b)
      if (g->edge[a][b] && g->layer[a] >= 0 && g->layer[b] > g->layer[a]) {
        SAY("%s includes nest/%s.h: %s (L%d) may not include %s (L%d)\n", g->where[a][b],
            g->name[b], g->name[a], g->layer[a], g->name[b], g->layer[b]);
        ++*n_order;
      }
  /* cycles: a and b (a < b) reach each other; each strongly connected group reported once */
  int reported[MAXMOD] = {0};
  for (int a = 0; a < g->n; ++a) {
    if (reported[a]) continue;
    char cyc[4200] = "", back[2048];
    int members = 0;
    for (int b = 0; b < g->n; ++b) {
      if (b == a || !path_of(g, a, b, back, sizeof back) || !path_of(g, b, a, back, sizeof back))
        continue;
      reported[b] = 1;
      ++members;
      if (!cyc[0]) {
        char fwd[2048];
        path_of(g, a, b, fwd, sizeof fwd);
        snprintf(cyc, sizeof cyc, "%s -> %s", fwd, strchr(back, '>') ? strchr(back, '>') + 2 : back);
      }
    }
    if (members) {
      reported[a] = 1;
      SAY("include cycle of %d modules through %s: %s\n", members + 1, g->name[a], cyc);
      ++*n_cycle;
    }
  }
#undef SAY
  return problems;
}

static const char *root_dir(void) {
  const char *r = getenv("NEST_LAYERING_ROOT");
  return r && *r ? r : NEST_SOURCE_DIR;
}

static void load(graph *g) {
  memset(g, 0, sizeof *g);
  const char *table = getenv("NEST_LAYERING_TABLE");
  char path[4096];
  snprintf(path, sizeof path, "%s/docs/design.md", NEST_SOURCE_DIR);
  const int rows = read_table(g, table && *table ? table : path);
  if (rows < 3) fail_msg("%s: no layer table (lines \"L<n>: modules\")", table ? table : path);
  read_tree(g, root_dir());
}

static void test_one_way(void **state) {
  (void)state;
  graph *g = calloc(1, sizeof *g);
  assert_non_null(g);
  load(g);
  static char report[65536];
  int order, cycles;
  const int n = check(g, report, sizeof report, &order, &cycles);
  int edges = 0;
  for (int a = 0; a < g->n; ++a)
    for (int b = 0; b < g->n; ++b) edges += g->edge[a][b];
  printf("layering of %s: %d modules, %d include edges between them: %d problem%s\n",
         root_dir(), g->n, edges, n, n == 1 ? "" : "s");
  free(g);
  if (n) fail_msg("%d problem%s (%d includes against the order, %d cycles):\n%s", n,
                  n == 1 ? "" : "s", order, cycles, report);
}

/* The checker itself: a reverse include added to the real graph must be reported. */
static void test_reverse_include_caught(void **state) {
  (void)state;
  graph *g = calloc(1, sizeof *g);
  assert_non_null(g);
  load(g);
  const int train = find(g, "train", 0), pipeline = find(g, "pipeline", 0);
  assert_true(train >= 0 && pipeline >= 0);
  g->edge[train][pipeline] = 1;
  snprintf(g->where[train][pipeline], sizeof g->where[train][pipeline], "src/train.c (added)");
  static char report[65536];
  int order, cycles;
  check(g, report, sizeof report, &order, &cycles);
  printf("with train.c including pipeline.h:\n%s", report);
  free(g);
  assert_true(order >= 1);
  assert_true(cycles >= 1);
  assert_non_null(strstr(report, "train (L5) may not include pipeline"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_way),
      cmocka_unit_test(test_reverse_include_caught),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
