/*
 * abi_check.c - built by sdk_test.sh against the installed package only:
 * loads the abi_plugin.c variants found on MC_PLUGIN_PATH and checks which
 * load (and carry a transfer) and which are refused, with what message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <te/plugin.h> /* for the ABI numbers the core was built with */
#include <te/te.h>

static int failures;

static void check(int ok, const char *name, const char *what)
{
    printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name, what);
    if (!ok)
        failures++;
}

/* A request cut into several slices, written to the engine's own segment. */
static int self_transfer(te_engine *e)
{
    enum { LEN = 10007 };
    static unsigned char src[LEN], dst[LEN];
    for (int i = 0; i < LEN; i++)
        src[i] = (unsigned char)(i * 31 + 7);
    memset(dst, 0, sizeof dst);
    if (te_register_memory(e, dst, sizeof dst, NULL))
        return 0;
    te_request r = {TE_OP_WRITE, src, 0, (uint64_t)(uintptr_t)dst, LEN};
    int ok = te_transfer_sync(e, &r, 1, NULL, NULL) == 0 && !memcmp(src, dst, LEN);
    te_unregister_memory(e, dst);
    return ok;
}

static void expect_loads(const char *name)
{
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", name, "", NULL);
    check(rc == 0, name, "loads");
    if (rc)
        printf("     %s\n", te_last_error());
    else
        check(self_transfer(e), name, "carries a sliced transfer");
    te_engine_destroy(e);
}

static void expect_refused(const char *name, const char *message)
{
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", name, "", NULL);
    char file[64];
    snprintf(file, sizeof file, "libte_%s.so", name);
    const char *err = te_last_error();
    check(rc == TE_ERR_PLUGIN, name, "is refused with TE_ERR_PLUGIN");
    check(strstr(err, file) != NULL, name, "the message names the file");
    check(strstr(err, message) != NULL, name, message);
    if (!strstr(err, message))
        printf("     got: %s\n", err);
    te_engine_destroy(e);
}

int main(void)
{
    char major[96];
    snprintf(major, sizeof major, "built for ABI %d.%d, core is %d.%d", TE_PLUGIN_ABI_MAJOR + 1,
             TE_PLUGIN_ABI_MINOR, TE_PLUGIN_ABI_MAJOR, TE_PLUGIN_ABI_MINOR);
    expect_loads("sdkcurrent");
    expect_loads("sdkfrozen10");
    expect_loads("sdknewer");
    expect_refused("sdkmajor", major);
    expect_refused("sdkshortops", "ops table of");
    expect_refused("sdkshortdesc", "incomplete descriptor");
    printf("%s\n", failures ? "ABI checks FAILED" : "ABI checks passed");
    return failures ? 1 : 0;
}
