/* test_rpc.c - raw bytes against a peer's RPC port and TCP data port:
 * malformed, truncated, oversized and idle frames never take the port down;
 * the Mooncake wire formats (RPC frames, v1/v2 data framing) work byte for
 * byte; ranges outside registered memory are refused and write nothing. */
#include <check.h>
#include <jansson.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "rpc.h"
#include "test_util.h"

static te_test_peer peer;

static void setup(void)
{
    const char *args[] = {"--size", "1048576", NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
}

static void teardown(void)
{
    te_test_peer_stop(&peer);
}

static int rpc_connect(uint16_t port)
{
    int fd = te_net_connect("127.0.0.1", port, 2000);
    ck_assert_int_ge(fd, 0);
    return fd;
}

/* The server closes the connection within `secs` seconds. */
static void expect_closed(int fd, int secs)
{
    char buf[256];
    int64_t deadline = te_now_ns() + (int64_t)secs * 1000000000;
    for (;;) {
        ck_assert_msg(te_net_wait(fd, POLLIN, deadline) == 0, "connection not closed");
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
    }
    close(fd);
}

static void probe_ok(void)
{
    char *reply = NULL;
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, 3, "{}", 2, &reply, NULL,
                                 3000, 1 << 20, NULL), 0);
    ck_assert_str_eq(reply, "{\"status\":\"success\"}");
    free(reply);
}

START_TEST(malformed_rpc_frames_are_dropped)
{
    uint16_t port = (uint16_t)peer.rpc_port;
    uint8_t zero[9] = {0};
    int fd = rpc_connect(port);
    te_net_write_full(fd, zero, sizeof zero, 0);
    expect_closed(fd, 2);

    uint8_t huge[9];
    te_rpc_encode_header(huge, 1ull << 40, 1);
    fd = rpc_connect(port);
    te_net_write_full(fd, huge, sizeof huge, 0);
    expect_closed(fd, 2);

    uint8_t shorty[9];
    te_rpc_encode_header(shorty, 100, 1);
    fd = rpc_connect(port);
    te_net_write_full(fd, shorty, sizeof shorty, 0);
    te_net_write_full(fd, "{\"a\":", 5, 0); /* then silence: the 5 s limit cuts it */
    expect_closed(fd, 8);

    fd = rpc_connect(port);
    const char legacy[] = "\x05\0\0\0\0\0\0\0{\"x\":1}"; /* untyped: no handshake handler */
    te_net_write_full(fd, legacy, sizeof legacy - 1, 0);
    expect_closed(fd, 2);

    char junk[1000];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 131 + 7);
    fd = rpc_connect(port);
    te_net_write_full(fd, junk, sizeof junk, 0);
    expect_closed(fd, 7);
    probe_ok();
}
END_TEST

START_TEST(idle_connections_do_not_block_the_port_for_good)
{
    int fds[80];
    for (int i = 0; i < 80; i++)
        fds[i] = rpc_connect((uint16_t)peer.rpc_port);
    for (int i = 0; i < 80; i++)
        close(fds[i]);
    usleep(200000);
    probe_ok();
}
END_TEST

static json_t *fetch_descriptor(void)
{
    char *reply = NULL;
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, 1, "{}", 2, &reply, NULL,
                                 3000, 1 << 20, NULL), 0);
    json_error_t e;
    json_t *d = json_loads(reply, 0, &e);
    free(reply);
    ck_assert_ptr_nonnull(d);
    return d;
}

START_TEST(metadata_frame_returns_the_descriptor)
{
    json_t *d = fetch_descriptor();
    ck_assert_str_eq(json_string_value(json_object_get(d, "name")), peer.segment);
    ck_assert_str_eq(json_string_value(json_object_get(d, "protocol")), "tcp");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "tcp_proto_version")), 2);
    json_t *b = json_array_get(json_object_get(d, "buffers"), 0);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(b, "addr")), peer.addr);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(b, "length")), peer.size);
    ck_assert_str_eq(json_string_value(json_object_get(b, "name")), peer.segment);
    json_decref(d);
    /* A reply frame over our cap is a malformed frame, not malformed JSON. */
    char *reply = NULL;
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, 1, "{}", 2, &reply, NULL,
                                 3000, 16, NULL), TE_ERR_MALFORMED_FRAME);
    ck_assert_ptr_null(reply);
}
END_TEST

static void header(uint8_t h[24], uint64_t size, uint64_t addr, uint8_t op)
{
    memset(h, 0, 24);
    for (int i = 0; i < 8; i++) {
        h[i] = (uint8_t)(size >> (8 * i));
        h[8 + i] = (uint8_t)(addr >> (8 * i));
    }
    h[16] = op;
}

static uint64_t read_status(int fd)
{
    uint8_t s[8];
    ck_assert_int_eq(te_net_read_full(fd, s, 8, te_now_ns() + 3000000000LL), 0);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)s[i] << (8 * i);
    return v;
}

static int data_connect(void)
{
    json_t *d = fetch_descriptor();
    int port = (int)json_integer_value(json_object_get(d, "tcp_data_port"));
    json_decref(d);
    return te_net_connect("127.0.0.1", (uint16_t)port, 2000);
}

START_TEST(data_port_speaks_mooncake_v2)
{
    te_test_peer_expect(&peer, "fill 0 1048576 3", "OK");
    int fd = data_connect();
    ck_assert_int_ge(fd, 0);
    uint8_t h[24], payload[16], back[16];
    te_test_fill(payload, 16, 4, 0);
    /* A good v2 write, acknowledged after it landed. */
    header(h, 16, peer.addr + 64, 0x81);
    te_net_write_full(fd, h, 24, 0);
    te_net_write_full(fd, payload, 16, 0);
    ck_assert_uint_eq(read_status(fd), 0x4D43545600000000ull);
    /* A write past the end: refused, payload drained, nothing written. */
    header(h, 16, peer.addr + peer.size - 8, 0x81);
    te_net_write_full(fd, h, 24, 0);
    te_net_write_full(fd, payload, 16, 0);
    ck_assert_uint_eq(read_status(fd), 0x4D43545600000001ull);
    /* A read before the start: refused, and the connection still works. */
    header(h, 16, peer.addr - 16, 0x80);
    te_net_write_full(fd, h, 24, 0);
    ck_assert_uint_eq(read_status(fd), 0x4D43545600000001ull);
    header(h, 16, peer.addr + 64, 0x80);
    te_net_write_full(fd, h, 24, 0);
    ck_assert_uint_eq(read_status(fd), 0x4D43545600000000ull);
    ck_assert_int_eq(te_net_read_full(fd, back, 16, te_now_ns() + 3000000000LL), 0);
    ck_assert_int_eq(memcmp(back, payload, 16), 0);
    close(fd);
    /* Around the accepted write the fill is intact; the refused write left
     * the last 8 bytes alone (checked with the fill's own offsets). */
    te_test_peer_expect(&peer, "check 0 64 3", "OK");
}
END_TEST

START_TEST(data_port_v1_and_bad_headers)
{
    uint8_t h[24], payload[32], back[32];
    te_test_fill(payload, 32, 8, 0);
    int fd = data_connect();
    header(h, 32, peer.addr + 128, 0x01); /* v1 write: no acknowledgement */
    te_net_write_full(fd, h, 24, 0);
    te_net_write_full(fd, payload, 32, 0);
    header(h, 32, peer.addr + 128, 0x00); /* v1 read: data with no status */
    te_net_write_full(fd, h, 24, 0);
    ck_assert_int_eq(te_net_read_full(fd, back, 32, te_now_ns() + 3000000000LL), 0);
    ck_assert_int_eq(memcmp(back, payload, 32), 0);
    header(h, 32, peer.addr + peer.size, 0x00); /* v1 refusal is a close */
    te_net_write_full(fd, h, 24, 0);
    expect_closed(fd, 3);

    fd = data_connect();
    header(h, 32, peer.addr, 0x07); /* unknown opcode */
    te_net_write_full(fd, h, 24, 0);
    expect_closed(fd, 3);

    fd = data_connect();
    header(h, 1ull << 62, peer.addr, 0x81); /* absurd size */
    te_net_write_full(fd, h, 24, 0);
    expect_closed(fd, 3);

    fd = data_connect();
    header(h, 0, peer.addr, 0x81); /* empty request */
    te_net_write_full(fd, h, 24, 0);
    ck_assert_uint_eq(read_status(fd), 0x4D43545600000001ull);
    close(fd);
}
END_TEST

START_TEST(reader_hanging_up_mid_payload_does_not_kill_the_target)
{
    /* A large READ answer meets a reset socket; the target must survive
     * readers that vanish (no SIGPIPE, pins let go). */
    for (int i = 0; i < 5; i++) {
        int fd = data_connect();
        uint8_t h[24];
        header(h, peer.size, peer.addr, 0x80);
        te_net_write_full(fd, h, 24, 0);
        struct linger lg = {1, 0}; /* reset, not a clean close */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        usleep(20000);
        close(fd);
    }
    usleep(200000);
    te_test_peer_expect(&peer, "zero 0 16", "OK"); /* still alive */
}
END_TEST

START_TEST(notify_frames_are_validated)
{
    char *reply = NULL;
    const char *bad = "{\"name\":5}";
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, 2, bad, strlen(bad), &reply,
                                 NULL, 3000, 1 << 20, NULL), 0);
    ck_assert_ptr_nonnull(strstr(reply, "malformed"));
    free(reply);
    const char *good = "{\"name\":\"n\",\"notify_msg\":\"m\"}";
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, 2, good, strlen(good),
                                 &reply, NULL, 3000, 1 << 20, NULL), 0);
    ck_assert_ptr_nonnull(strstr(reply, "success"));
    free(reply);
    te_test_peer_expect(&peer, "notifies", "NOTIFIES 1");
    char line[128];
    ck_assert_int_eq(te_test_peer_read(&peer, line, sizeof line), 0);
    ck_assert_str_eq(line, "n\tm");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rpc");
    TCase *tc = tcase_create("wire");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, malformed_rpc_frames_are_dropped);
    tcase_add_test(tc, idle_connections_do_not_block_the_port_for_good);
    tcase_add_test(tc, metadata_frame_returns_the_descriptor);
    tcase_add_test(tc, data_port_speaks_mooncake_v2);
    tcase_add_test(tc, data_port_v1_and_bad_headers);
    tcase_add_test(tc, notify_frames_are_validated);
    tcase_add_test(tc, reader_hanging_up_mid_payload_does_not_kill_the_target);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
