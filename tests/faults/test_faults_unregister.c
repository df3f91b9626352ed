/* test_faults_unregister.c - unregister racing with in-flight transfers, two
 * engines in this process: on the target nothing lands after it returns, on
 * the initiator every task using the range is final; bounded, no crash, and
 * memory registered again works. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault_util.h"
#include "te/te.h"
#include "test_util.h"

#define KIB 1024u
#define MIB (1024u * KIB)
#define TLEN (8 * MIB) /* the target range that gets unregistered */
#define WRITERS 3
#define CHUNK (256 * KIB)
#define MARK 0xA5

static te_engine *tgt, *ini;
static te_segment_id seg;
static uint8_t *tmem, *imem; /* target range, initiator source/destination */
static atomic_uintptr_t target_addr; /* where writers aim now */
static atomic_bool stop_flag;

typedef struct writer {
    pthread_t th;
    int idx;
    uint64_t ok, failed;
} writer;

static void setup(void)
{
    tgt = te_engine_create();
    ini = te_engine_create();
    ck_assert_int_eq(te_engine_initialize(tgt, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    ck_assert_int_eq(te_engine_initialize(ini, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    tmem = aligned_alloc(4096, TLEN);
    imem = aligned_alloc(4096, 4 * TLEN);
    memset(tmem, 0, TLEN);
    te_test_fill(imem, 4 * TLEN, 3, 0);
    ck_assert_int_eq(te_register_memory(tgt, tmem, TLEN, "cpu:0"), 0);
    ck_assert_int_eq(te_segment_open(ini, te_engine_segment_name(tgt), &seg), 0);
    atomic_store(&target_addr, (uintptr_t)tmem);
    atomic_store(&stop_flag, false);
}

static void teardown(void)
{
    te_engine_destroy(ini);
    te_engine_destroy(tgt);
    free(tmem);
    free(imem);
}

/* Keeps writing CHUNKs (never MARK bytes) into the current target range. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    uint8_t *src = imem + (size_t)w->idx * CHUNK;
    for (unsigned i = 0; !atomic_load(&stop_flag); i++) {
        uint64_t off = (uint64_t)((i * 7 + (unsigned)w->idx * 13) % (TLEN / CHUNK)) * CHUNK;
        te_request r = {TE_OP_WRITE, src, seg, (uint64_t)atomic_load(&target_addr) + off, CHUNK};
        double t0 = fault_now();
        int rc = te_transfer_sync(ini, &r, 1, NULL, NULL);
        ck_assert_msg(fault_now() - t0 < fault_secs(2) + 1.5 * fault_scale(),
                      "transfer took %.2f s", fault_now() - t0);
        if (rc == 0)
            w->ok++;
        else
            w->failed++;
    }
    return NULL;
}

static bool all_mark(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != MARK)
            return false;
    return true;
}

START_TEST(target_unregister_waits_and_nothing_lands_after)
{
    writer w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer){.idx = i};
        ck_assert_int_eq(pthread_create(&w[i].th, NULL, writer_main, &w[i]), 0);
    }
    for (int round = 0; round < 3; round++) {
        usleep(200000);
        uint8_t *range = (uint8_t *)atomic_load(&target_addr);
        double t0 = fault_now();
        ck_assert_int_eq(te_unregister_memory(tgt, range), 0);
        ck_assert_double_lt(fault_now() - t0, 2.0 * fault_scale());
        /* From here the range is the application's again: mark it, keep the
         * writers going, and check that no byte of theirs ever lands. */
        memset(range, MARK, TLEN);
        usleep(300000);
        ck_assert_msg(all_mark(range, TLEN), "round %d: a write landed after unregister returned",
                      round);
        /* Register it again (and let the writers find it again). */
        ck_assert_int_eq(te_register_memory(tgt, range, TLEN, "cpu:0"), 0);
    }
    atomic_store(&stop_flag, true);
    uint64_t ok = 0, failed = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(w[i].th, NULL);
        ok += w[i].ok;
        failed += w[i].failed;
    }
    printf("  target side: %llu writes completed, %llu refused around unregisters\n",
           (unsigned long long)ok, (unsigned long long)failed);
    ck_assert_uint_gt(ok, 0);
    ck_assert_uint_gt(failed, 0);
    /* Registered again: writes land and verify. */
    te_test_fill(imem, MIB, 11, 0);
    te_request r = {TE_OP_WRITE, imem, seg, (uint64_t)(uintptr_t)tmem, MIB};
    ck_assert_int_eq(te_transfer_sync(ini, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(tmem, MIB, 11, 0), -1);
}
END_TEST

START_TEST(initiator_unregister_waits_for_tasks_in_flight)
{
    /* Batches of WRITEs from and READs into imem (registered), left in
     * flight while imem is unregistered. */
    ck_assert_int_eq(te_register_memory(ini, imem, 4 * TLEN, "cpu:0"), 0);
    /* Under sanitizers (scale > 1) every byte is slow: smaller requests,
     * same layout, same races. */
    const uint64_t len = fault_scale() > 1 ? 256 * KIB : 2 * MIB;
    for (int round = 0; round < 3; round++) {
        enum { N = 8 };
        te_batch_id b[N];
        for (int i = 0; i < N; i++) {
            te_request rq[2] = {
                {TE_OP_WRITE, imem + (size_t)i * 2 * MIB, seg,
                 (uint64_t)(uintptr_t)tmem + (uint64_t)(i % 4) * 2 * MIB, len},
                {TE_OP_READ, imem + 2 * TLEN + (size_t)i * 2 * MIB, seg,
                 (uint64_t)(uintptr_t)tmem + (uint64_t)(i % 4) * 2 * MIB, len}};
            ck_assert_int_eq(te_batch_allocate(ini, 2, &b[i]), 0);
            ck_assert_int_eq(te_submit(ini, b[i], rq, 2), 0);
        }
        double t0 = fault_now();
        ck_assert_int_eq(te_unregister_memory(ini, imem), 0);
        ck_assert_double_lt(fault_now() - t0, fault_secs(2) + 1.5 * fault_scale());
        /* Nothing may still be using imem: every task is final now. */
        int done = 0;
        for (int i = 0; i < N; i++) {
            for (size_t k = 0; k < 2; k++) {
                int st;
                ck_assert_int_eq(te_task_status(ini, b[i], k, &st, NULL), 0);
                ck_assert_msg(st == TE_TRANSFER_COMPLETED || st == TE_TRANSFER_FAILED,
                              "round %d batch %d task %zu is %d after unregister returned", round,
                              i, k, st);
                done += st == TE_TRANSFER_COMPLETED;
            }
            ck_assert_int_eq(te_batch_free(ini, b[i]), 0);
        }
        ck_assert_int_gt(done, 0);
        /* And nothing lands in the READ destinations any more. */
        memset(imem + 2 * TLEN, MARK, 2 * TLEN);
        usleep(100000);
        ck_assert(all_mark(imem + 2 * TLEN, 2 * TLEN));
        ck_assert_int_eq(te_register_memory(ini, imem, 4 * TLEN, "cpu:0"), 0);
    }
    te_test_fill(tmem, MIB, 12, 0);
    te_request r = {TE_OP_READ, imem, seg, (uint64_t)(uintptr_t)tmem, MIB};
    ck_assert_int_eq(te_transfer_sync(ini, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(imem, MIB, 12, 0), -1);
    ck_assert_int_eq(te_unregister_memory(ini, imem), 0);
}
END_TEST

int main(void)
{
    fault_setenv_secs("MC_TRANSFER_TIMEOUT", 2);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    Suite *s = suite_create("faults_unregister");
    TCase *tc = tcase_create("two_engines");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 40 * fault_scale());
    tcase_add_test(tc, target_unregister_waits_and_nothing_lands_after);
    tcase_add_test(tc, initiator_unregister_waits_for_tasks_in_flight);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
