/* list.c — the one comma-list parser (list.h): split at commas, trim blanks, reject empty
 * items. Every list-valued key goes through nest_list_split. */
#include "nest/list.h"

#include <string.h>

static int blank(char c) { return c == ' ' || c == '\t'; }

nest_status nest_list_split(const char *what, const char *s, char (*items)[NEST_LIST_ITEM],
                            int max, int *n) {
  *n = 0;
  if (!s) return NEST_OK;
  const char *p = s;
  while (blank(*p)) ++p;
  if (!*p) return NEST_OK; /* "" or only blanks: the empty list */
  for (;;) {
    const size_t len = strcspn(p, ",");
    size_t a = 0, b = len;
    while (a < b && blank(p[a])) ++a;
    while (b > a && blank(p[b - 1])) --b;
    if (b == a)
      return NEST_ERR(NEST_ERR_CONFIG, "%s = %s: empty item in the comma-separated list", what, s);
    if (b - a >= NEST_LIST_ITEM)
      return NEST_ERR(NEST_ERR_CONFIG, "%s = %s: item '%.*s' is longer than %d characters", what,
                      s, (int)(b - a), p + a, NEST_LIST_ITEM - 1);
    if (*n >= max)
      return NEST_ERR(NEST_ERR_CONFIG, "%s = %s: more than %d items", what, s, max);
    memcpy(items[*n], p + a, b - a);
    items[*n][b - a] = '\0';
    ++*n;
    if (!p[len]) return NEST_OK;
    p += len + 1;
  }
}

int nest_list_has(const char *s, const char *word) {
  char items[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n = 0;
  if (nest_list_split("list", s, items, NEST_LIST_MAX, &n) != NEST_OK) {
    nest_error_clear();
    return 0;
  }
  for (int i = 0; i < n; ++i)
    if (strcmp(items[i], word) == 0) return 1;
  return 0;
}
