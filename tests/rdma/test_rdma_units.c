/* test_rdma_units.c - the RDMA transport's pure parts on a host without
 * RDMA: slice/NIC scheduling over several NICs (striping, retries stepping
 * away from the failed rail, every case pinned here; test_rdma_rails_vm runs
 * them on soft-RoCE), rail pausing and the paths that avoid paused rails,
 * GID ranking, the QP cap's choice of
 * an idle endpoint to retire, and validation of everything a peer sends
 * (handshake, descriptor). */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_proto.h"
#include "rdma_rail.h"
#include "rdma_sched.h"
#include "te/te.h"
#include "test_util.h"

/* ---- scheduling ------------------------------------------------------------------ */

START_TEST(stripes_evenly_over_preferred_nics)
{
    int local[4] = {0, 1, 2, 3}, peer[4] = {0, 1, 2, 3}, hits[4] = {0};
    for (uint64_t seq = 0; seq < 1000; seq++) {
        rdma_path p;
        ck_assert_int_eq(rdma_sched_path(local, 4, 4, NULL, peer, 4, 4, seq, 0, &p), 0);
        ck_assert_int_eq(p.local, p.peer); /* equal lists: rails stay aligned */
        hits[p.local]++;
    }
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(hits[i], 250);
}
END_TEST

START_TEST(first_attempt_uses_only_preferred_nics)
{
    int list[4] = {2, 0, 1, 3}, hits[4] = {0};
    for (uint64_t seq = 0; seq < 100; seq++)
        hits[rdma_sched_pick(list, 4, 2, seq, 0, NULL)]++;
    ck_assert_int_eq(hits[2], 50);
    ck_assert_int_eq(hits[0], 50);
    ck_assert_int_eq(hits[1] + hits[3], 0);
}
END_TEST

START_TEST(down_nics_are_skipped)
{
    int list[4] = {0, 1, 2, 3};
    bool usable[4] = {true, false, true, true};
    for (uint64_t seq = 0; seq < 20; seq++)
        ck_assert_int_eq(rdma_sched_pick(list, 4, 2, seq, 0, usable), 0);
    usable[0] = false; /* no preferred NIC left: the available ones take over */
    for (uint64_t seq = 0; seq < 20; seq++) {
        int v = rdma_sched_pick(list, 4, 2, seq, 0, usable);
        ck_assert(v == 2 || v == 3);
    }
    usable[2] = usable[3] = false;
    ck_assert_int_eq(rdma_sched_pick(list, 4, 2, 0, 0, usable), -1);
    ck_assert_int_eq(rdma_sched_pick(list, 0, 0, 0, 0, NULL), -1);
}
END_TEST

START_TEST(retries_walk_to_other_nics)
{
    int list[3] = {0, 1, 2};
    for (uint64_t seq = 0; seq < 9; seq++) {
        int seen[3] = {0};
        for (unsigned a = 0; a < 3; a++)
            seen[rdma_sched_pick(list, 3, 1, seq, a, NULL)]++;
        ck_assert_msg(seen[0] == 1 && seen[1] == 1 && seen[2] == 1,
                      "3 attempts should visit 3 NICs (seq %llu)", (unsigned long long)seq);
    }
}
END_TEST

START_TEST(retries_cover_every_nic_pair)
{
    int l[2] = {0, 1}, p[2] = {0, 1};
    for (uint64_t seq = 0; seq < 4; seq++) {
        int seen[2][2] = {{0}};
        for (unsigned a = 0; a < 4; a++) {
            rdma_path path;
            ck_assert_int_eq(rdma_sched_path(l, 2, 2, NULL, p, 2, 2, seq, a, &path), 0);
            seen[path.local][path.peer]++;
        }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++)
                ck_assert_int_eq(seen[i][j], 1);
    }
}
END_TEST

START_TEST(single_nic_retries_stay_on_it)
{
    int l[1] = {0};
    for (unsigned a = 0; a < 10; a++)
        ck_assert_int_eq(rdma_sched_pick(l, 1, 1, 12345, a, NULL), 0);
}
END_TEST

/* ---- rails ---------------------------------------------------------------------------- */

#define SEC 1000000000ll
#define PAUSE (30 * SEC)

/* n errors at `now`; returns how many of them reported starting a pause. */
static int errors(rdma_rail *r, int n, int64_t now, int64_t pause)
{
    int paused = 0;
    for (int i = 0; i < n; i++)
        paused += rdma_rail_error(r, now, pause);
    return paused;
}

START_TEST(rail_pauses_at_exactly_five_errors)
{
    rdma_rail r = {0};
    ck_assert_int_eq(errors(&r, RDMA_RAIL_ERROR_THRESHOLD - 1, 100, PAUSE), 0);
    ck_assert_int_eq(rdma_rail_check(&r, 100), RDMA_RAIL_USABLE);
    ck_assert(rdma_rail_error(&r, 100, PAUSE)); /* the 5th */
    ck_assert_int_eq(rdma_rail_check(&r, 100), RDMA_RAIL_PAUSED);
    ck_assert_int_eq(rdma_rail_check(&r, 100 + PAUSE - 1), RDMA_RAIL_PAUSED);
    /* Errors while paused (flushed work) neither re-pause nor extend it. */
    ck_assert_int_eq(errors(&r, 20, 200, PAUSE), 0);
    ck_assert_int_eq(rdma_rail_check(&r, 100 + PAUSE), RDMA_RAIL_RESUMED);
}
END_TEST

START_TEST(rail_success_resets_the_count)
{
    rdma_rail r = {0};
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(errors(&r, RDMA_RAIL_ERROR_THRESHOLD - 1, 0, PAUSE), 0);
        rdma_rail_success(&r);
    }
    ck_assert_int_eq(rdma_rail_check(&r, 0), RDMA_RAIL_USABLE);
    ck_assert_int_eq(errors(&r, RDMA_RAIL_ERROR_THRESHOLD - 1, 0, PAUSE), 0);
    ck_assert_int_eq(errors(&r, 1, 0, PAUSE), 1);
    ck_assert_int_eq(rdma_rail_check(&r, 0), RDMA_RAIL_PAUSED);
    rdma_rail_success(&r); /* a late success does not cut the pause short */
    ck_assert_int_eq(rdma_rail_check(&r, 1), RDMA_RAIL_PAUSED);
}
END_TEST

START_TEST(rail_pause_expires_and_the_count_restarts)
{
    rdma_rail r = {0};
    int64_t t0 = 5 * SEC;
    ck_assert_int_eq(errors(&r, RDMA_RAIL_ERROR_THRESHOLD, t0, 2 * SEC), 1);
    ck_assert_int_eq(rdma_rail_check(&r, t0 + 2 * SEC - 1), RDMA_RAIL_PAUSED);
    ck_assert_int_eq(rdma_rail_check(&r, t0 + 2 * SEC), RDMA_RAIL_RESUMED);
    ck_assert_int_eq(rdma_rail_check(&r, t0 + 2 * SEC), RDMA_RAIL_USABLE); /* reported once */
    /* A fresh count: 4 more errors do not pause it again, the 5th does. */
    int64_t t1 = t0 + 3 * SEC;
    ck_assert_int_eq(errors(&r, RDMA_RAIL_ERROR_THRESHOLD - 1, t1, 2 * SEC), 0);
    ck_assert_int_eq(rdma_rail_check(&r, t1), RDMA_RAIL_USABLE);
    ck_assert_int_eq(errors(&r, 1, t1, 2 * SEC), 1);
    ck_assert_int_eq(rdma_rail_check(&r, t1 + SEC), RDMA_RAIL_PAUSED);
    ck_assert_int_eq(rdma_rail_check(&r, t1 + 2 * SEC), RDMA_RAIL_RESUMED);
}
END_TEST

START_TEST(rail_pause_zero_disables_pausing)
{
    rdma_rail r = {0};
    ck_assert_int_eq(errors(&r, 100, SEC, 0), 0);
    ck_assert_int_eq(rdma_rail_check(&r, SEC), RDMA_RAIL_USABLE);
    ck_assert_int_eq(errors(&r, 100, SEC, -1), 0);
    ck_assert_int_eq(rdma_rail_check(&r, SEC), RDMA_RAIL_USABLE);
}
END_TEST

/* Rails as a matrix [local][peer] for rdma_sched_path_rails. */
typedef struct rail_grid {
    rdma_rail r[4][4];
    int64_t now;
    int calls;
} rail_grid;

static bool grid_paused(void *arg, int local, int peer)
{
    rail_grid *g = arg;
    g->calls++;
    return rdma_rail_check(&g->r[local][peer], g->now) == RDMA_RAIL_PAUSED;
}

static void grid_pause(rail_grid *g, int local, int peer)
{
    ck_assert_int_eq(errors(&g->r[local][peer], RDMA_RAIL_ERROR_THRESHOLD, g->now, PAUSE), 1);
}

START_TEST(paths_skip_a_paused_rail)
{
    int l[2] = {0, 1}, p[2] = {0, 1};
    rail_grid g = {.now = SEC};
    grid_pause(&g, 0, 0);
    int hits[2][2] = {{0}};
    for (uint64_t seq = 0; seq < 100; seq++)
        for (unsigned a = 0; a < 4; a++) {
            rdma_path path, plain;
            ck_assert_int_eq(
                rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, seq, a, NULL, grid_paused, &g, &path),
                0);
            ck_assert_int_eq(rdma_sched_path(l, 2, 2, NULL, p, 2, 2, seq, a, &plain), 0);
            hits[path.local][path.peer]++;
            if (plain.local != 0 || plain.peer != 0) { /* unpaused picks are kept */
                ck_assert_int_eq(path.local, plain.local);
                ck_assert_int_eq(path.peer, plain.peer);
            } else { /* the same local NIC towards the other peer NIC */
                ck_assert_int_eq(path.local, 0);
                ck_assert_int_eq(path.peer, 1);
            }
        }
    ck_assert_int_eq(hits[0][0], 0);
    ck_assert_int_gt(hits[0][1], 0);
    ck_assert_int_gt(hits[1][0], 0);
    ck_assert_int_gt(hits[1][1], 0);
    /* The pause over, the rail carries slices again. */
    g.now += PAUSE;
    rdma_path path;
    ck_assert_int_eq(
        rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, 0, 0, NULL, grid_paused, &g, &path), 0);
    ck_assert_int_eq(path.local, 0);
    ck_assert_int_eq(path.peer, 0);
}
END_TEST

START_TEST(paths_find_the_last_unpaused_rail)
{
    /* 3 local NICs (one down) x 3 peer NICs, every usable rail paused but one. */
    int l[3] = {0, 1, 2}, p[3] = {0, 1, 2};
    bool usable[3] = {true, false, true};
    rail_grid g = {.now = SEC};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (usable[i] && !(i == 2 && j == 1))
                grid_pause(&g, i, j);
    for (uint64_t seq = 0; seq < 30; seq++)
        for (unsigned a = 0; a < 10; a++) {
            rdma_path path;
            ck_assert_int_eq(rdma_sched_path_rails(l, 3, 1, usable, p, 3, 1, seq, a, NULL,
                                                   grid_paused, &g, &path),
                             0);
            ck_assert_msg(path.local == 2 && path.peer == 1, "seq %llu attempt %u: %d -> %d",
                          (unsigned long long)seq, a, path.local, path.peer);
        }
}
END_TEST

START_TEST(paths_use_paused_rails_when_all_are_paused)
{
    int l[2] = {0, 1}, p[2] = {0, 1};
    rail_grid g = {.now = SEC};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            grid_pause(&g, i, j);
    for (uint64_t seq = 0; seq < 20; seq++)
        for (unsigned a = 0; a < 6; a++) {
            rdma_path path, plain;
            g.calls = 0;
            ck_assert_int_eq(
                rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, seq, a, NULL, grid_paused, &g, &path),
                0);
            ck_assert_int_eq(g.calls, 4); /* each rail looked at once */
            ck_assert_int_eq(rdma_sched_path(l, 2, 2, NULL, p, 2, 2, seq, a, &plain), 0);
            ck_assert_int_eq(path.local, plain.local); /* the plain pick, retries walk on */
            ck_assert_int_eq(path.peer, plain.peer);
        }
    /* No usable local NIC is still an error, paused or not. */
    bool none[2] = {false, false};
    rdma_path path;
    ck_assert_int_eq(
        rdma_sched_path_rails(l, 2, 2, none, p, 2, 2, 0, 0, NULL, grid_paused, &g, &path), -1);
    /* Without a pause callback it is rdma_sched_path. */
    ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, 3, 1, NULL, NULL, NULL, &path),
                     0);
    rdma_path plain;
    rdma_sched_path(l, 2, 2, NULL, p, 2, 2, 3, 1, &plain);
    ck_assert_int_eq(path.local, plain.local);
    ck_assert_int_eq(path.peer, plain.peer);
}
END_TEST

/* A slice's attempts on 2 x 2 rails with one NIC dead, as the data path
 * runs them: a fresh seq per routing (other slices take seq values in
 * between), the rail of each failed attempt passed to the next.  Returns
 * how many attempts it took to reach a live rail (or max + 1). */
static unsigned attempts_to_live_rail(uint64_t seq0, int dead_local, int dead_peer, unsigned max)
{
    int l[2] = {0, 1}, p[2] = {2, 3}; /* the peer's NICs by their own indexes */
    rdma_path path, failed;
    for (unsigned a = 0; a <= max; a++) {
        ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, seq0 + 7 * a, a,
                                               a ? &failed : NULL, NULL, NULL, &path),
                         0);
        if (path.local != dead_local && path.peer != dead_peer)
            return a;
        failed = path;
    }
    return max + 1;
}

START_TEST(retries_step_away_from_the_failed_rail)
{
    int l[2] = {0, 1}, p[2] = {2, 3};
    for (uint64_t seq = 0; seq < 8; seq++) {
        rdma_path path, failed = {.local = 1, .peer = 3};
        /* Odd attempts move the peer NIC, even ones the local NIC, whatever seq says. */
        ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, seq, 1, &failed, NULL,
                                               NULL, &path), 0);
        ck_assert(path.local == 1 && path.peer == 2);
        ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, seq, 2, &failed, NULL,
                                               NULL, &path), 0);
        ck_assert(path.local == 0 && path.peer == 3);
        /* Attempt 0 has no failed rail: seq's pick, even where it is that rail. */
        ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, seq, 0, &failed, NULL,
                                               NULL, &path), 0);
        ck_assert_int_eq(path.local, (int)(seq % 2));
        ck_assert_int_eq(path.peer, 2 + (int)(seq % 2));
    }
}
END_TEST

START_TEST(a_dead_nic_is_left_within_two_retries)
{
    for (uint64_t seq = 0; seq < 64; seq++) {
        /* A dead peer NIC: the next attempt moves the peer side. */
        unsigned a = attempts_to_live_rail(seq, -1, 3, 9);
        ck_assert_msg(a <= 1, "seq %llu: %u attempts", (unsigned long long)seq, a);
        /* A dead local NIC: the peer side first, then the local side. */
        a = attempts_to_live_rail(seq, 1, -1, 9);
        ck_assert_msg(a <= 2, "seq %llu: %u attempts", (unsigned long long)seq, a);
    }
}
END_TEST

START_TEST(a_retry_moves_the_side_that_has_another_nic)
{
    int two[2] = {0, 1}, one[1] = {5};
    rdma_path path, failed = {.local = 0, .peer = 5};
    /* One peer NIC: an odd attempt moves the local NIC instead. */
    ck_assert_int_eq(rdma_sched_path_rails(two, 2, 2, NULL, one, 1, 1, 0, 1, &failed, NULL, NULL,
                                           &path), 0);
    ck_assert(path.local == 1 && path.peer == 5);
    /* One local NIC: an even attempt moves the peer NIC. */
    failed = (rdma_path){.local = 5, .peer = 1};
    ck_assert_int_eq(rdma_sched_path_rails(one, 1, 1, NULL, two, 2, 2, 0, 2, &failed, NULL, NULL,
                                           &path), 0);
    ck_assert(path.local == 5 && path.peer == 0);
    /* One rail only: retried on it. */
    failed = (rdma_path){.local = 5, .peer = 5};
    ck_assert_int_eq(rdma_sched_path_rails(one, 1, 1, NULL, one, 1, 1, 0, 3, &failed, NULL, NULL,
                                           &path), 0);
    ck_assert(path.local == 5 && path.peer == 5);
}
END_TEST

START_TEST(a_retry_skips_paused_rails_and_lost_nics)
{
    int l[2] = {0, 1}, p[2] = {0, 1};
    rail_grid g = {.now = SEC};
    grid_pause(&g, 1, 0);
    rdma_path path, failed = {.local = 1, .peer = 1};
    /* The step from (1,1) is (1,0), paused: the walk goes on to (0,0). */
    ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, 0, 1, &failed, grid_paused, &g,
                                           &path), 0);
    ck_assert(path.local == 0 && path.peer == 0);
    /* The failed rail's local NIC went down: seq's pick among the usable ones,
     * never the failed rail. */
    bool usable[2] = {true, false};
    for (uint64_t seq = 0; seq < 8; seq++) {
        ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, usable, p, 2, 2, seq, 3, &failed, NULL,
                                               NULL, &path), 0);
        ck_assert_int_eq(path.local, 0);
    }
    /* Every other rail paused: the failed one is used again rather than none. */
    grid_pause(&g, 0, 0);
    grid_pause(&g, 0, 1);
    ck_assert_int_eq(rdma_sched_path_rails(l, 2, 2, NULL, p, 2, 2, 0, 1, &failed, grid_paused, &g,
                                           &path), 0);
    ck_assert(path.local == 1 && path.peer == 1);
}
END_TEST

/* ---- GIDs ---------------------------------------------------------------------------- */

static void v4(uint8_t g[16], int a, int b, int c, int d)
{
    memset(g, 0, 16);
    g[10] = g[11] = 0xff;
    g[12] = (uint8_t)a, g[13] = (uint8_t)b, g[14] = (uint8_t)c, g[15] = (uint8_t)d;
}

START_TEST(gid_ranking_prefers_routable_rocev2_ipv4)
{
    uint8_t pub[16], priv[16], v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}, ll[16] = {0xfe, 0x80,
                                                                                      [15] = 7};
    uint8_t zero[16] = {0}, lla[16];
    v4(pub, 198, 18, 0, 1);
    v4(priv, 10, 1, 2, 3);
    v4(lla, 169, 254, 1, 1);
    int s_pub = rdma_gid_score(pub, RDMA_GID_TYPE_ROCE_V2, true, false);
    int s_priv = rdma_gid_score(priv, RDMA_GID_TYPE_ROCE_V2, true, false);
    int s_v6 = rdma_gid_score(v6, RDMA_GID_TYPE_ROCE_V2, true, false);
    int s_v1 = rdma_gid_score(pub, RDMA_GID_TYPE_ROCE_V1, true, false);
    int s_nodev = rdma_gid_score(pub, RDMA_GID_TYPE_ROCE_V2, false, false);
    ck_assert_int_gt(s_pub, s_priv);
    ck_assert_int_gt(s_priv, s_v6);
    ck_assert_int_gt(s_v6, s_v1);
    ck_assert_int_gt(s_pub, s_nodev);
    ck_assert_int_lt(rdma_gid_score(ll, RDMA_GID_TYPE_ROCE_V2, true, false), 0);
    ck_assert_int_lt(rdma_gid_score(zero, RDMA_GID_TYPE_ROCE_V2, true, false), 0);
    ck_assert_int_lt(rdma_gid_score(lla, RDMA_GID_TYPE_ROCE_V2, true, false), 0);
    ck_assert_int_ge(rdma_gid_score(ll, RDMA_GID_TYPE_IB, false, true), 0); /* IB: fe80 is normal */
}
END_TEST

/* A RoCE table: 0 link-local (as every port has), 1 private IPv4, 2 empty. */
static void roce_table(rdma_gid_entry t[4])
{
    memset(t, 0, 4 * sizeof *t);
    uint8_t ll[16] = {0xfe, 0x80, [15] = 7};
    memcpy(t[0].gid, ll, 16);
    v4(t[1].gid, 10, 1, 2, 3);
    for (int i = 0; i < 4; i++) {
        t[i].type = RDMA_GID_TYPE_ROCE_V2;
        t[i].netdev = true;
        t[i].present = i != 2;
    }
    v4(t[3].gid, 10, 1, 2, 4); /* equal to 1, later in the table */
}

START_TEST(gid_best_is_the_first_top_scored_entry)
{
    rdma_gid_entry t[4];
    roce_table(t);
    ck_assert_int_eq(rdma_gid_best(t, 4, false), 1);
    t[1].present = false;
    ck_assert_int_eq(rdma_gid_best(t, 4, false), 3);
    t[3].present = false;
    ck_assert_int_eq(rdma_gid_best(t, 4, false), -1); /* only link-local left */
    ck_assert_int_eq(rdma_gid_best(t, 4, true), 0);   /* which InfiniBand accepts */
    ck_assert_int_eq(rdma_gid_best(NULL, 0, false), -1);
}
END_TEST

START_TEST(gid_reprobe_keeps_the_best_when_it_is_unchanged)
{
    rdma_gid_entry t[4];
    roce_table(t);
    ck_assert_int_eq(rdma_gid_reprobe_pick(1, t, 4, false), 1);
    /* entry 3 scores the same as 1: no reason to move either way */
    ck_assert_int_eq(rdma_gid_reprobe_pick(3, t, 4, false), 3);
}
END_TEST

START_TEST(gid_reprobe_switches_to_a_better_entry)
{
    rdma_gid_entry t[4];
    roce_table(t);
    v4(t[2].gid, 198, 18, 0, 1); /* a public address was assigned at index 2 */
    t[2].present = true;
    ck_assert_int_eq(rdma_gid_reprobe_pick(1, t, 4, false), 2);
}
END_TEST

START_TEST(gid_reprobe_leaves_an_entry_that_became_unusable)
{
    rdma_gid_entry t[4];
    roce_table(t);
    memset(t[1].gid, 0, 16); /* the address at 1 went away: zeroed entry */
    ck_assert_int_eq(rdma_gid_reprobe_pick(1, t, 4, false), 3);
    roce_table(t);
    uint8_t ll[16] = {0xfe, 0x80, [15] = 9};
    memcpy(t[1].gid, ll, 16); /* now link-local */
    ck_assert_int_eq(rdma_gid_reprobe_pick(1, t, 4, false), 3);
    roce_table(t);
    t[1].present = false; /* unreadable */
    ck_assert_int_eq(rdma_gid_reprobe_pick(1, t, 4, false), 3);
    /* nothing usable anywhere: keep what we have */
    t[3].present = false;
    ck_assert_int_eq(rdma_gid_reprobe_pick(1, t, 4, false), 1);
    /* an index beyond a table that shrank */
    roce_table(t);
    ck_assert_int_eq(rdma_gid_reprobe_pick(7, t, 4, false), 1);
}
END_TEST

START_TEST(gid_reprobe_gate_override_budget_and_rate)
{
    const int64_t s = 1000000000LL, t0 = 50 * s;
    ck_assert(rdma_gid_reprobe_due(false, 0, 2, 0, t0));           /* first one */
    ck_assert(!rdma_gid_reprobe_due(false, 0, 2, t0, t0 + s / 2)); /* no switch yet: still limited */
    ck_assert(rdma_gid_reprobe_due(false, 0, 2, t0, t0 + s));
    ck_assert(!rdma_gid_reprobe_due(true, 0, 2, 0, t0));           /* MC_GID_INDEX set */
    ck_assert(!rdma_gid_reprobe_due(true, 0, 1000, 0, t0 + 100 * s));
    ck_assert(!rdma_gid_reprobe_due(false, 0, 0, 0, t0));          /* 0 disables */
    ck_assert(rdma_gid_reprobe_due(false, 1, 2, t0, t0 + s));      /* second, a second later */
    ck_assert(!rdma_gid_reprobe_due(false, 2, 2, t0, t0 + 100 * s)); /* budget spent */
    ck_assert(!rdma_gid_reprobe_due(false, 1, 2, t0, t0 + s - 1)); /* rate limit */
    ck_assert(!rdma_gid_reprobe_due(false, 1, 2, t0, t0));
    ck_assert(rdma_gid_reprobe_due(false, 1, 2, t0, t0 + 2 * s));
}
END_TEST

START_TEST(gid_text_round_trips_and_rejects_junk)
{
    uint8_t g[16], back[16];
    char s[RDMA_GID_STR];
    v4(g, 198, 18, 0, 1);
    rdma_gid_format(g, s);
    ck_assert_str_eq(s, "00:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01");
    ck_assert_int_eq(rdma_gid_parse(s, back), 0);
    ck_assert_mem_eq(g, back, 16);
    ck_assert_int_eq(rdma_gid_parse("FE:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01", back), 0);
    ck_assert_int_eq(rdma_gid_parse("00:00", back), -1);
    ck_assert_int_eq(rdma_gid_parse("0g:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01", back), -1);
    ck_assert_int_eq(rdma_gid_parse("00-00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01", back), -1);
    ck_assert_int_eq(rdma_gid_parse(NULL, back), -1);
}
END_TEST

START_TEST(nic_paths_split_at_the_last_at)
{
    char seg[64], nic[64];
    ck_assert_int_eq(rdma_nic_path_split("10.0.0.1:15000@mlx5_0", seg, 64, nic, 64), 0);
    ck_assert_str_eq(seg, "10.0.0.1:15000");
    ck_assert_str_eq(nic, "mlx5_0");
    ck_assert_int_eq(rdma_nic_path_split("a@b@rxe0", seg, 64, nic, 64), 0);
    ck_assert_str_eq(seg, "a@b");
    ck_assert_int_eq(rdma_nic_path_split("noat", seg, 64, nic, 64), -1);
    ck_assert_int_eq(rdma_nic_path_split("@rxe0", seg, 64, nic, 64), -1);
    ck_assert_int_eq(rdma_nic_path_split("seg@", seg, 64, nic, 64), -1);
    ck_assert(!rdma_valid_nic_name("bad name"));
    ck_assert(rdma_valid_nic_name("mlx5_0"));
}
END_TEST

/* ---- the handshake ---------------------------------------------------------------------- */

static rdma_hs_msg sample_msg(void)
{
    rdma_hs_msg m = {0};
    strcpy(m.local_nic_path, "127.0.0.1:15001@rxe0");
    strcpy(m.peer_nic_path, "127.0.0.1:15002@rxe0");
    m.local_lid = 7;
    v4(m.local_gid, 198, 18, 0, 1);
    m.nqp = 2;
    m.qp_num[0] = 17;
    m.qp_num[1] = 18;
    return m;
}

static int decode_text(const char *text, rdma_hs_msg *m)
{
    char err[256];
    return rdma_hs_decode(text, strlen(text), m, err, sizeof err);
}

START_TEST(handshake_round_trips_in_the_original_format)
{
    rdma_hs_msg m = sample_msg(), back;
    char *json;
    ck_assert_int_eq(rdma_hs_encode(&m, &json), 0);
    ck_assert_ptr_nonnull(strstr(json, "\"qp_num\":[17,18]"));
    ck_assert_ptr_nonnull(strstr(json, "\"ready_ack\":false"));
    ck_assert_ptr_nonnull(strstr(json, "\"reply_msg\":\"\""));
    ck_assert_ptr_nonnull(strstr(json, "\"local_gid\":\"00:00:00:00:00:00:00:00:00:00:ff:ff"));
    ck_assert_int_eq(decode_text(json, &back), 0);
    free(json);
    ck_assert_str_eq(back.local_nic_path, m.local_nic_path);
    ck_assert_str_eq(back.peer_nic_path, m.peer_nic_path);
    ck_assert_int_eq(back.local_lid, 7);
    ck_assert_int_eq(back.nqp, 2);
    ck_assert_int_eq(back.qp_num[1], 18);
    ck_assert(!back.ready_ack);
    ck_assert_mem_eq(back.local_gid, m.local_gid, 16);
}
END_TEST

START_TEST(handshake_rejects_malformed_members)
{
    rdma_hs_msg m;
#define HS_BASE                                                                               \
    "\"local_nic_path\":\"a:1@rxe0\",\"peer_nic_path\":\"b:2@rxe0\","                         \
    "\"local_gid\":\"00:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01\""
    const char *base = HS_BASE;
    char buf[1024];
    const char *bad[] = {
        "{" HS_BASE ",\"local_lid\":0}",                                /* no qp_num */
        "{" HS_BASE ",\"local_lid\":0,\"qp_num\":[]}",                  /* zero QPs */
        "{" HS_BASE ",\"local_lid\":0,\"qp_num\":[\"17\"]}",            /* string QP */
        "{" HS_BASE ",\"local_lid\":0,\"qp_num\":[16777216]}",          /* > 24 bits */
        "{" HS_BASE ",\"local_lid\":70000,\"qp_num\":[1]}",             /* lid range */
        "{" HS_BASE ",\"local_lid\":0,\"qp_num\":[1],\"ready_ack\":1}", /* ack type */
        "{" HS_BASE ",\"local_lid\":0,\"qp_num\":[1],\"reply_msg\":5}", /* reply type */
        "{" HS_BASE ",\"qp_num\":[1]}",                                 /* no lid */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(decode_text(bad[i], &m) == TE_ERR_MALFORMED_JSON, "accepted %s", bad[i]);
    char many[2048] = "";
    size_t n = (size_t)snprintf(many, sizeof many, "{%s,\"local_lid\":0,\"qp_num\":[", base);
    for (int i = 0; i < RDMA_MAX_QP + 1; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, i ? ",%d" : "%d", i + 1);
    snprintf(many + n, sizeof many - n, "]}");
    ck_assert_int_eq(decode_text(many, &m), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(decode_text("{\"local_nic_path\":\"nopath\",\"peer_nic_path\":\"b@x\","
                                 "\"local_lid\":0,\"local_gid\":\"00\",\"qp_num\":[1]}",
                                 &m),
                     TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(decode_text("[1,2]", &m), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(decode_text("not json", &m), TE_ERR_MALFORMED_JSON);
    snprintf(buf, sizeof buf, "{%s,\"local_lid\":0,\"qp_num\":[1],\"local_gid\":\"xx\"}", base);
    ck_assert_int_eq(decode_text(buf, &m), TE_ERR_MALFORMED_JSON); /* later gid wins: bad */
}
END_TEST

START_TEST(handshake_rejection_and_missing_ack_are_read)
{
    rdma_hs_msg m;
    ck_assert_int_eq(decode_text("{\"reply_msg\":\"no such device\"}", &m), 0);
    ck_assert_str_eq(m.reply_msg, "no such device");
    ck_assert_int_eq(decode_text("{\"local_nic_path\":\"a:1@rxe0\",\"peer_nic_path\":\"b:2@rxe0\","
                                 "\"local_lid\":0,\"qp_num\":[5,6],\"local_gid\":"
                                 "\"00:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01\"}",
                                 &m),
                     0);
    ck_assert(!m.ready_ack); /* an older peer without ready_ack */
    ck_assert_int_eq(m.nqp, 2);
}
END_TEST

/* ---- peer descriptors --------------------------------------------------------------------- */

#define GID_A "00:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01"
#define GID_B "00:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:02"

static const char *good_desc =
    "{\"name\":\"10.0.0.2:15000\",\"protocol\":\"rdma\","
    "\"devices\":[{\"name\":\"mlx5_0\",\"lid\":0,\"gid\":\"" GID_A "\"},"
    "{\"name\":\"mlx5_1\",\"lid\":3,\"gid\":\"" GID_B "\"}],"
    "\"priority_matrix\":{\"cpu:0\":[[\"mlx5_1\"],[\"mlx5_0\"]],\"cpu:1\":[[\"mlx5_0\"],[]]},"
    "\"buffers\":[{\"name\":\"cpu:0\",\"addr\":4096,\"length\":8192,\"lkey\":[1,2],"
    "\"rkey\":[11,12]},{\"name\":\"cuda:3\",\"addr\":65536,\"length\":4096,\"lkey\":[3,4],"
    "\"rkey\":[13,14]}]}";

START_TEST(peer_descriptor_is_parsed)
{
    rdma_peer_desc *d;
    char err[256];
    ck_assert_int_eq(rdma_peer_desc_parse(good_desc, &d, err, sizeof err), 0);
    ck_assert_str_eq(d->name, "10.0.0.2:15000");
    ck_assert_int_eq(d->ndev, 2);
    ck_assert_int_eq(d->devs[1].lid, 3);
    ck_assert_int_eq(d->devs[1].gid[15], 2);
    ck_assert_uint_eq(d->nbuf, 2);
    ck_assert_uint_eq(d->bufs[0].rkey[1], 12);
    /* cpu:0 prefers mlx5_1 (index 1), then mlx5_0 */
    ck_assert_int_eq(d->bufs[0].nnics, 2);
    ck_assert_int_eq(d->bufs[0].npref, 1);
    ck_assert_int_eq(d->bufs[0].nics[0], 1);
    ck_assert_int_eq(d->bufs[0].nics[1], 0);
    /* cuda:3 is not in the matrix: every device, all preferred */
    ck_assert_int_eq(d->bufs[1].nnics, 2);
    ck_assert_int_eq(d->bufs[1].npref, 2);
    rdma_peer_desc_free(d);
}
END_TEST

static int parse_variant(const char *from, const char *to)
{
    char text[2048], err[256];
    const char *at = strstr(good_desc, from);
    ck_assert_ptr_nonnull(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good_desc), good_desc, to,
             at + strlen(from));
    rdma_peer_desc *d = NULL;
    int rc = rdma_peer_desc_parse(text, &d, err, sizeof err);
    rdma_peer_desc_free(d);
    return rc;
}

START_TEST(peer_descriptor_rejects_bad_members)
{
    ck_assert_int_eq(parse_variant("\"rkey\":[11,12]", "\"rkey\":[11]"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"rkey\":[11,12]", "\"rkey\":[11,-1]"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"rkey\":[11,12]", "\"rkey\":[11,4294967296]"),
                     TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"rkey\":[11,12]", "\"x\":0"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"lkey\":[1,2]", "\"lkey\":[1,2,3]"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant(GID_B, "fe:80"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"lid\":3", "\"lid\":\"3\""), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"name\":\"mlx5_1\"", "\"name\":\"mlx5_0\""),
                     TE_ERR_MALFORMED_JSON); /* a device listed twice */
    ck_assert_int_eq(parse_variant("[[\"mlx5_0\"],[]]", "[[\"mlx5_0\"]]"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"addr\":4096", "\"addr\":0"), TE_ERR_MALFORMED_JSON);
    ck_assert_int_eq(parse_variant("\"protocol\":\"rdma\"", "\"protocol\":\"tcp\""),
                     TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_int_eq(parse_variant("\"devices\"", "\"nodevices\""), TE_ERR_NOT_SUPPORTED_TRANSPORT);
    rdma_peer_desc *d;
    ck_assert_int_eq(rdma_peer_desc_parse("[]", &d, NULL, 0), TE_ERR_MALFORMED_JSON);
}
END_TEST

/* ---- priority matrices ------------------------------------------------------------------------ */

START_TEST(matrix_lookup_filter_and_rank)
{
    const char *m = "{\"cpu:1\":[[\"b\"],[\"a\",\"zz\"]],\"cpu:0\":[[\"a\",\"b\"],[]],"
                    "\"bad\":[1]}";
    const char *names[2] = {"a", "b"};
    int out[2], np, rank[2];
    ck_assert_int_eq(rdma_matrix_nics(m, "cpu:1", names, 2, out, &np), 2);
    ck_assert_int_eq(np, 1);
    ck_assert_int_eq(out[0], 1);
    ck_assert_int_eq(rdma_matrix_nics(m, "cuda:0", names, 2, out, &np), -1);
    ck_assert_int_eq(rdma_matrix_nics(m, "bad", names, 2, out, &np), -1);
    ck_assert_int_eq(rdma_matrix_rank(m, names, 2, rank), 0);
    ck_assert_int_eq(rank[0], 0); /* cpu:0 sorts first and lists a first */
    ck_assert_int_eq(rank[1], 1);
    char *f = rdma_matrix_filter(m, names + 1, 1);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_null(strstr(f, "\"a\""));
    ck_assert_ptr_null(strstr(f, "zz"));
    ck_assert_ptr_null(strstr(f, "bad"));
    free(f);
    const char *none[1] = {"nic9"};
    ck_assert_ptr_null(rdma_matrix_filter(m, none, 1));
    char *fb = rdma_matrix_fallback(names, 2, 2);
    ck_assert_str_eq(fb, "{\"cpu:0\":[[\"a\",\"b\"],[]],\"cpu:1\":[[\"a\",\"b\"],[]]}");
    free(fb);
    int idx[2];
    ck_assert_int_eq(rdma_names_to_indices("[\"b\",\"x\",\"b\",\"a\"]", names, 2, idx), 2);
    ck_assert_int_eq(idx[0], 1);
    ck_assert_int_eq(idx[1], 0);
    ck_assert_int_eq(rdma_names_to_indices("{}", names, 2, idx), -1);
}
END_TEST

/* ---- the QP cap's eviction (CLOCK / SIEVE second chance) ------------------------------------- */

#define EV(q, i, v) ((rdma_evict_ep){.has_qps = (q), .idle = (i), .visited = (v)})

START_TEST(evict_picks_the_first_idle_unvisited_endpoint)
{
    rdma_evict_ep e[4] = {EV(true, false, false), EV(false, true, false), EV(true, true, false),
                          EV(true, true, false)};
    int hand = 0;
    ck_assert_int_eq(rdma_evict_pick(e, 4, &hand), 2); /* busy and QP-less ones are passed */
    ck_assert_int_eq(hand, 3);
    ck_assert_int_eq(rdma_evict_pick(e, 4, &hand), 3); /* the hand moves on */
    ck_assert_int_eq(hand, 0);
}
END_TEST

START_TEST(evict_gives_visited_endpoints_a_second_chance)
{
    rdma_evict_ep e[3] = {EV(true, true, true), EV(true, true, true), EV(true, true, false)};
    int hand = 0;
    ck_assert_int_eq(rdma_evict_pick(e, 3, &hand), 2);
    ck_assert(!e[0].visited && !e[1].visited); /* cleared as the hand passed */
    ck_assert_int_eq(hand, 0);
    e[1].visited = true; /* used again since */
    ck_assert_int_eq(rdma_evict_pick(e, 3, &hand), 0);
    ck_assert_int_eq(hand, 1);
    ck_assert(e[1].visited); /* not passed yet */
}
END_TEST

START_TEST(evict_wraps_around_and_clears_every_bit_once)
{
    rdma_evict_ep e[3] = {EV(true, true, true), EV(true, false, true), EV(true, true, true)};
    int hand = 2;
    /* 2 and 0 lose their bits on the first round, 2 is taken on the second */
    ck_assert_int_eq(rdma_evict_pick(e, 3, &hand), 2);
    ck_assert_int_eq(hand, 0);
    ck_assert(!e[0].visited);
    ck_assert(e[1].visited); /* busy: untouched */
    hand = 7;                /* out of range (the ring shrank in a test): from 0 */
    ck_assert_int_eq(rdma_evict_pick(e, 3, &hand), 0);
    ck_assert_int_eq(hand, 1);
}
END_TEST

START_TEST(evict_never_picks_a_busy_endpoint)
{
    for (int victim = 0; victim < 5; victim++)
        for (int start = 0; start < 5; start++) {
            rdma_evict_ep e[5];
            for (int i = 0; i < 5; i++)
                e[i] = EV(true, i == victim, i % 2 == 0);
            int hand = start;
            ck_assert_int_eq(rdma_evict_pick(e, 5, &hand), victim);
            ck_assert_int_eq(hand, (victim + 1) % 5);
        }
}
END_TEST

START_TEST(evict_returns_none_when_all_are_busy)
{
    rdma_evict_ep e[3] = {EV(true, false, true), EV(false, true, false), EV(true, false, false)};
    int hand = 1;
    ck_assert_int_eq(rdma_evict_pick(e, 3, &hand), -1);
    ck_assert_int_eq(hand, 1); /* kept */
    ck_assert(e[0].visited);   /* nothing cleared */
    ck_assert_int_eq(rdma_evict_pick(e, 0, &hand), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rdma_units");
    TCase *tc = tcase_create("sched");
    tcase_add_test(tc, stripes_evenly_over_preferred_nics);
    tcase_add_test(tc, first_attempt_uses_only_preferred_nics);
    tcase_add_test(tc, down_nics_are_skipped);
    tcase_add_test(tc, retries_walk_to_other_nics);
    tcase_add_test(tc, retries_cover_every_nic_pair);
    tcase_add_test(tc, single_nic_retries_stay_on_it);
    tcase_add_test(tc, gid_ranking_prefers_routable_rocev2_ipv4);
    tcase_add_test(tc, gid_best_is_the_first_top_scored_entry);
    tcase_add_test(tc, gid_reprobe_keeps_the_best_when_it_is_unchanged);
    tcase_add_test(tc, gid_reprobe_switches_to_a_better_entry);
    tcase_add_test(tc, gid_reprobe_leaves_an_entry_that_became_unusable);
    tcase_add_test(tc, gid_reprobe_gate_override_budget_and_rate);
    suite_add_tcase(s, tc);
    tc = tcase_create("rails");
    tcase_add_test(tc, rail_pauses_at_exactly_five_errors);
    tcase_add_test(tc, rail_success_resets_the_count);
    tcase_add_test(tc, rail_pause_expires_and_the_count_restarts);
    tcase_add_test(tc, rail_pause_zero_disables_pausing);
    tcase_add_test(tc, paths_skip_a_paused_rail);
    tcase_add_test(tc, paths_find_the_last_unpaused_rail);
    tcase_add_test(tc, paths_use_paused_rails_when_all_are_paused);
    tcase_add_test(tc, retries_step_away_from_the_failed_rail);
    tcase_add_test(tc, a_dead_nic_is_left_within_two_retries);
    tcase_add_test(tc, a_retry_moves_the_side_that_has_another_nic);
    tcase_add_test(tc, a_retry_skips_paused_rails_and_lost_nics);
    suite_add_tcase(s, tc);
    tc = tcase_create("wire");
    tcase_add_test(tc, gid_text_round_trips_and_rejects_junk);
    tcase_add_test(tc, nic_paths_split_at_the_last_at);
    tcase_add_test(tc, handshake_round_trips_in_the_original_format);
    tcase_add_test(tc, handshake_rejects_malformed_members);
    tcase_add_test(tc, handshake_rejection_and_missing_ack_are_read);
    tcase_add_test(tc, peer_descriptor_is_parsed);
    tcase_add_test(tc, peer_descriptor_rejects_bad_members);
    tcase_add_test(tc, matrix_lookup_filter_and_rank);
    suite_add_tcase(s, tc);
    tc = tcase_create("evict");
    tcase_add_test(tc, evict_picks_the_first_idle_unvisited_endpoint);
    tcase_add_test(tc, evict_gives_visited_endpoints_a_second_chance);
    tcase_add_test(tc, evict_wraps_around_and_clears_every_bit_once);
    tcase_add_test(tc, evict_never_picks_a_busy_endpoint);
    tcase_add_test(tc, evict_returns_none_when_all_are_busy);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
