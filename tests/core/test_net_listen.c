/* test_net_listen.c - te_net_listen_in_range, the listener the RPC port and
 * tcp's data port share (host service listen_in_range): a port of the range,
 * refusal of a bad range, and a full range reported as such. */
#include <check.h>
#include <unistd.h>

#include "net.h"
#include "te/te.h"
#include "test_util.h"

START_TEST(port_is_in_range)
{
    uint16_t port = 0;
    int fd = te_net_listen_in_range(20000, 40000, 16, &port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(port, 20000);
    ck_assert_int_le(port, 40000);
    close(fd);
}
END_TEST

START_TEST(bad_range_is_refused)
{
    uint16_t port = 0;
    ck_assert_int_eq(te_net_listen_in_range(30001, 30000, 16, &port), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_net_listen_in_range(0, 10, 16, &port), TE_ERR_INVALID_ARGUMENT);
}
END_TEST

/* A one-port range whose port is taken has nothing free. */
START_TEST(full_range_fails)
{
    uint16_t port = 0;
    int fd = te_net_listen_in_range(20000, 40000, 16, &port);
    ck_assert_int_ge(fd, 0);
    uint16_t again = 0;
    ck_assert_int_eq(te_net_listen_in_range(port, port, 16, &again), TE_ERR_SOCKET);
    close(fd);
    int fd2 = te_net_listen_in_range(port, port, 16, &again);
    ck_assert_int_ge(fd2, 0);
    ck_assert_int_eq(again, port);
    close(fd2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("net_listen");
    TCase *tc = tcase_create("net_listen");
    tcase_add_test(tc, port_is_in_range);
    tcase_add_test(tc, bad_range_is_refused);
    tcase_add_test(tc, full_range_fails);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
