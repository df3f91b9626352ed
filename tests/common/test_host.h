/* test_host.h - a stand-in for the core's host table, for tests that load a
 * plugin themselves (dlopen, te_plugin_init) instead of through an engine:
 * the members every such test fills alike (log, set_error, config,
 * config_int, config_bool, slice_done, now_ns), what they recorded, and the loading itself.  Tests
 * set the members they care about over these. */
#ifndef TE_TEST_HOST_H
#define TE_TEST_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "te/plugin.h"

/* The text of the last set_error call. */
extern char te_test_host_error[1024];

/* Fills *api for this ABI: log keeps the last message (and prints it with
 * TE_TEST_VERBOSE set), set_error keeps its text, config reads the
 * environment (empty is unset), config_int and config_bool are the
 * engine's (te_config_int, te_config_bool: the user links libte), slice_done
 * does nothing, now_ns is te_test_now_ns; every other member is NULL. */
void te_test_host_init(te_host_api *api);
/* CLOCK_MONOTONIC in nanoseconds. */
int64_t te_test_now_ns(void);
/* Whether the last logged message contains `what`; a copy of it in line. */
bool te_test_host_log_has(const char *what, char *line, size_t len);
/* dlopens the plugin at path (asserting with Check) and returns its
 * te_plugin_init; *handle (when not NULL) gets the library's handle. */
te_plugin_init_fn te_test_plugin_init(const char *path, void **handle);

#endif
