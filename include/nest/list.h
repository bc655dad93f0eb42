/* list.h — the one comma-list parser of nest.
 *
 * Every list-valued key and option (synthesis.phases, grow.policy, grow.layers, prune.layers,
 * model.widths, data.csv_drop_cols, tool options, ...) is split here, so that every list
 * accepts the same spelling: items separated by commas, blanks (spaces, tabs) around an item
 * ignored. "grow, train" == "grow,train". An empty string is the empty list; an empty item
 * (",,", a leading or trailing comma, a blank item) is an error naming `what` (the key).
 *
 * Items are copied into fixed-width slots of NEST_LIST_ITEM bytes, so callers need no
 * allocation: char items[NEST_LIST_MAX][NEST_LIST_ITEM]. */
#ifndef NEST_LIST_H
#define NEST_LIST_H

#include "nest/status.h"

#define NEST_LIST_ITEM 64 /* bytes per item, NUL included */
#define NEST_LIST_MAX 64  /* items a list may hold (callers may pass a smaller max) */

/* Split `s` into items[0..*n). Errors (NEST_ERR_CONFIG, message "<what> = <s>: <problem>"):
 * an empty item, an item of NEST_LIST_ITEM bytes or more, more than `max` items. */
nest_status nest_list_split(const char *what, const char *s, char (*items)[NEST_LIST_ITEM],
                            int max, int *n);

/* 1 if `word` is one of the items of `s` (blanks trimmed; a malformed list matches nothing
 * it could not split). */
int nest_list_has(const char *s, const char *word);

#endif
