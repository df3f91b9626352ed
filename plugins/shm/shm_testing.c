/* shm_testing.c - the test seams of the same-host transport.  Compiled only
 * into the test build of the plugin (tests/shm/CMakeLists.txt, with
 * TE_SHM_TESTING, never installed): the shipped libte_shm.so reads no test
 * switch.  The tests set these in their environment (also a peer process's):
 *   TE_SHM_TEST_HOST_ID=<text>  replaces the host id (a peer "on another host");
 *   TE_SHM_TEST_FORCE_EPERM=1   the probe acts as if the kernel said EPERM;
 *   TE_SHM_TEST_VERIFY_MS=<ms>  replaces the time between confirmations by pid
 *                               of a mapped table (SHM_VERIFY_NS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"

void shm_testing_apply(shm_inst *in)
{
    const char *host_id = te_host_table->config(in->host, "TE_SHM_TEST_HOST_ID");
    if (host_id)
        snprintf(in->host_id, sizeof in->host_id, "%s", host_id);
    const char *v = te_host_table->config(in->host, "TE_SHM_TEST_FORCE_EPERM");
    in->force_eperm = v && (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") ||
                            !strcmp(v, "on"));
    const char *verify = te_host_table->config(in->host, "TE_SHM_TEST_VERIFY_MS");
    if (verify)
        in->verify_ns = strtoll(verify, NULL, 10) * 1000000;
}
