/* test_list.c — the comma-list parser (list.h): blanks trimmed everywhere, empty items and
 * overlong items rejected with the key's name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "nest/list.h"

static void test_trims_blanks(void **state) {
  (void)state;
  char it[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n = -1;
  assert_int_equal(nest_list_split("grow.policy", " conn ,\tneuron,fmap ", it, 8, &n), NEST_OK);
  assert_int_equal(n, 3);
  assert_string_equal(it[0], "conn");
  assert_string_equal(it[1], "neuron");
  assert_string_equal(it[2], "fmap");
  assert_int_equal(nest_list_split("x", "fc1, fc2", it, 8, &n), NEST_OK);
  assert_int_equal(n, 2);
  assert_string_equal(it[1], "fc2");
}

static void test_empty_list(void **state) {
  (void)state;
  char it[4][NEST_LIST_ITEM];
  int n = -1;
  assert_int_equal(nest_list_split("x", "", it, 4, &n), NEST_OK);
  assert_int_equal(n, 0);
  assert_int_equal(nest_list_split("x", "  ", it, 4, &n), NEST_OK);
  assert_int_equal(n, 0);
  assert_int_equal(nest_list_split("x", NULL, it, 4, &n), NEST_OK);
  assert_int_equal(n, 0);
}

static void test_errors_name_the_key(void **state) {
  (void)state;
  char it[4][NEST_LIST_ITEM];
  int n;
  const char *bad[] = {"a,,b", "a,", ",a", "a, ,b"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    assert_int_equal(nest_list_split("prune.layers", bad[i], it, 4, &n), NEST_ERR_CONFIG);
    assert_non_null(strstr(nest_error_message(), "prune.layers"));
    assert_non_null(strstr(nest_error_message(), "empty item"));
  }
  assert_int_equal(nest_list_split("k", "a,b,c,d,e", it, 4, &n), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "more than 4"));
  char longer[NEST_LIST_ITEM + 8];
  memset(longer, 'x', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  assert_int_equal(nest_list_split("k", longer, it, 4, &n), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "longer than"));
  nest_error_clear();
}

static void test_has(void **state) {
  (void)state;
  assert_true(nest_list_has("fc1, fc2", "fc2"));
  assert_true(nest_list_has("fc1,fc2", "fc1"));
  assert_false(nest_list_has("fc1, fc2", "fc"));
  assert_false(nest_list_has("", "fc1"));
  assert_false(nest_list_has("fc1,,fc2", "fc1")); /* malformed: matches nothing */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trims_blanks),
      cmocka_unit_test(test_empty_list),
      cmocka_unit_test(test_errors_name_the_key),
      cmocka_unit_test(test_has),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
