/* test_tcp_rail.c - the TCP transport's rails (plugins/tcp/tcp_rail.c):
 * throughput is measured over busy time only, slices are spread in
 * proportion to the measured rates with a probing share for slow rails, a
 * failed rail is set aside with a cool-down that doubles while failures
 * repeat, and a rail back from a pause takes one slice at a time. */
#include <check.h>

#include "tcp_rail.h"
#include "test_util.h"

#define MS 1000000LL
#define MB (1u << 20)

static tcp_rail rails[3];

static void setup(void)
{
    tcp_rail_spec spec = {"10.0.0.1", "10.0.0.2"};
    for (int i = 0; i < 3; i++)
        tcp_rail_init(&rails[i], &spec);
}

static void teardown(void)
{
    for (int i = 0; i < 3; i++)
        tcp_rail_destroy(&rails[i]);
}

/* Moves `bytes` through rail r in `ms` milliseconds starting at t0. */
static void move(int r, uint64_t bytes, int64_t t0, int64_t ms)
{
    tcp_rail_sent(&rails[r], bytes, t0);
    tcp_rail_done(&rails[r], bytes, true, t0 + ms * MS);
}

START_TEST(rate_counts_busy_time_only)
{
    move(0, 10 * MB, 0, 100);            /* 100 MB/s while busy */
    move(0, 10 * MB, 10000 * MS, 100);   /* after ten idle seconds: still 100 MB/s */
    double want = 10.0 * MB / 0.1;
    ck_assert_double_eq_tol(rails[0].rate, want, want * 0.01);
}
END_TEST

START_TEST(slices_spread_in_proportion_to_rates)
{
    move(0, 30 * MB, 0, 100); /* rail 0 three times as fast as rail 1 */
    move(1, 10 * MB, 0, 100);
    int count[2] = {0, 0};
    for (int i = 0; i < 400; i++) {
        int r = tcp_rail_pick(rails, 2, MB, 200 * MS, -1);
        ck_assert_int_ge(r, 0);
        count[r]++;
        tcp_rail_sent(&rails[r], MB, 200 * MS); /* nothing drains: queues only grow */
    }
    ck_assert_int_ge(count[0], 290);
    ck_assert_int_le(count[0], 310);
}
END_TEST

START_TEST(unmeasured_rails_share_equally)
{
    int count[3] = {0, 0, 0};
    for (int i = 0; i < 300; i++) {
        int r = tcp_rail_pick(rails, 3, MB, 0, -1);
        count[r]++;
        tcp_rail_sent(&rails[r], MB, 0);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(count[i], 100);
}
END_TEST

START_TEST(a_slow_rail_keeps_a_probing_share)
{
    move(0, 100 * MB, 0, 100);
    move(1, MB / 100, 0, 100); /* measured at 1/10000 of rail 0 */
    int slow = 0;
    for (int i = 0; i < 1000; i++) {
        int r = tcp_rail_pick(rails, 2, MB, 200 * MS, -1);
        slow += r == 1;
        tcp_rail_sent(&rails[r], MB, 200 * MS);
    }
    ck_assert_int_ge(slow, 30); /* about 5% */
    ck_assert_int_le(slow, 70);
}
END_TEST

START_TEST(a_failed_rail_is_avoided_then_probed)
{
    int64_t now = 1000 * MS;
    ck_assert(tcp_rail_failed(&rails[0], now, 100 * MS));
    ck_assert(!tcp_rail_failed(&rails[0], now + MS, 100 * MS)); /* same outage */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tcp_rail_pick(rails, 2, MB, now + 50 * MS, -1), 1);
    /* Moving away from rail 1 with rail 0 paused: nowhere to go. */
    ck_assert_int_eq(tcp_rail_pick(rails, 2, MB, now + 50 * MS, 1), -1);
    /* Every rail paused and nothing excluded: the choice is made anyway. */
    ck_assert(tcp_rail_failed(&rails[1], now, 100 * MS));
    ck_assert_int_ge(tcp_rail_pick(rails, 2, MB, now + 50 * MS, -1), 0);
    /* After the pause, one slice at a time until data moves again. */
    int64_t later = now + 150 * MS;
    tcp_rail_sent(&rails[1], 100 * MB, later); /* rail 1 (also back) is busy */
    ck_assert_int_eq(tcp_rail_pick(rails, 2, MB, later, -1), 0);
    tcp_rail_sent(&rails[0], MB, later);
    ck_assert_int_eq(tcp_rail_pick(rails, 2, MB, later, 1), -1); /* rail 0 holds its probe */
    tcp_rail_done(&rails[0], MB, true, later + MS);
    tcp_rail_sent(&rails[0], MB, later + MS);
    ck_assert_int_eq(tcp_rail_pick(rails, 2, MB, later + MS, 1), 0); /* proven */
}
END_TEST

START_TEST(the_cool_down_doubles_while_failures_repeat)
{
    int64_t now = 0, pause = 100 * MS;
    int64_t want[] = {100, 200, 400, 800, 1600, 3200, 3200};
    for (int i = 0; i < 7; i++) {
        ck_assert(tcp_rail_failed(&rails[0], now, pause));
        ck_assert_int_eq(rails[0].paused_until - now, want[i] * MS);
        ck_assert(!tcp_rail_usable(&rails[0], rails[0].paused_until - 1));
        now = rails[0].paused_until;
        ck_assert(tcp_rail_usable(&rails[0], now));
    }
    move(0, MB, now, 1); /* data moved: the next failure starts over */
    ck_assert(tcp_rail_failed(&rails[0], now + MS, pause));
    ck_assert_int_eq(rails[0].paused_until - now - MS, 100 * MS);
}
END_TEST

START_TEST(one_rail_or_none)
{
    ck_assert_int_eq(tcp_rail_pick(rails, 1, MB, 0, -1), 0);
    ck_assert_int_eq(tcp_rail_pick(rails, 1, MB, 0, 0), -1);
    ck_assert_int_eq(tcp_rail_pick(rails, 0, MB, 0, -1), -1);
    ck_assert(!tcp_rail_failed(&rails[0], 0, 0)); /* pausing disabled */
    ck_assert(tcp_rail_usable(&rails[0], 0));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tcp_rail");
    TCase *tc = tcase_create("rails");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, rate_counts_busy_time_only);
    tcase_add_test(tc, slices_spread_in_proportion_to_rates);
    tcase_add_test(tc, unmeasured_rails_share_equally);
    tcase_add_test(tc, a_slow_rail_keeps_a_probing_share);
    tcase_add_test(tc, a_failed_rail_is_avoided_then_probed);
    tcase_add_test(tc, the_cool_down_doubles_while_failures_repeat);
    tcase_add_test(tc, one_rail_or_none);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
