/* test_status.c — error records: message, origin, trace, one line, allocation helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "nest/status.h"

static nest_status inner(void) { return NEST_ERR(NEST_ERR_FORMAT, "%s: bad magic %#x", "x.idx", 7); }
static nest_status outer(void) {
  NEST_CALL(inner());
  return NEST_OK;
}

static void test_message_and_trace(void **state) {
  nest_error_clear();
  assert_int_equal(outer(), NEST_ERR_FORMAT);
  assert_string_equal(nest_error_message(), "x.idx: bad magic 0x7");
  assert_non_null(strstr(nest_error_origin(), "test_status.c:"));
  assert_non_null(strstr(nest_error_backtrace(), "test_status.c:"));
  assert_string_equal(nest_status_name(NEST_ERR_FORMAT), "format");
}

static void test_one_line(void **state) {
  NEST_ERR(NEST_ERR_IO, "a\nb\rc");
  assert_null(strchr(nest_error_message(), '\n'));
  assert_null(strchr(nest_error_message(), '\r'));
}

static void test_adopt_and_clear(void **state) {
  NEST_ERR(NEST_ERR_IO, "local");
  nest_error_adopt(NEST_ERR_IO, "rank 3: remote");
  assert_string_equal(nest_error_message(), "rank 3: remote");
  nest_error_clear();
  assert_string_equal(nest_error_message(), "");
}

static void test_alloc(void **state) {
  void *p = NULL;
  assert_int_equal(nest_malloc_aligned(&p, 100, "x"), NEST_OK);
  assert_int_equal((uintptr_t)p % 64, 0);
  nest_free_aligned(p);
#ifndef __SANITIZE_ADDRESS__ /* ASan aborts on impossible sizes instead of returning NULL */
  assert_int_equal(nest_malloc(&p, (size_t)1 << 62, "huge thing"), NEST_ERR_NOMEM);
  assert_non_null(strstr(nest_error_message(), "huge thing"));
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_message_and_trace),
      cmocka_unit_test(test_one_line),
      cmocka_unit_test(test_adopt_and_clear),
      cmocka_unit_test(test_alloc),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
