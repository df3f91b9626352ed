/* test_auth.c - MC_AUTH_TOKEN: SHA-256/HMAC vectors, engines with the same
 * token work, a wrong or missing token is refused on the RPC and data ports,
 * and a recorded answer cannot be replayed on a new connection. */
#include <check.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "net.h"
#include "rpc.h"
#include "te/te.h"
#include "test_util.h"

static te_test_peer peer;

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

START_TEST(sha256_and_hmac_vectors)
{
    uint8_t d[32];
    char h[65];
    te_sha256("", 0, d);
    hex(d, 32, h);
    ck_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    te_sha256("abc", 3, d);
    hex(d, 32, h);
    ck_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    te_sha256(m, strlen(m), d);
    hex(d, 32, h);
    ck_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* RFC 4231 test case 2. */
    const char *msg = "what do ya want for nothing?";
    te_hmac_sha256("Jefe", 4, msg, strlen(msg), d);
    hex(d, 32, h);
    ck_assert_str_eq(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* RFC 4231 test case 6: a key longer than the block. */
    uint8_t key[131];
    memset(key, 0xaa, sizeof key);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    te_hmac_sha256(key, sizeof key, m6, strlen(m6), d);
    hex(d, 32, h);
    ck_assert_str_eq(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}
END_TEST

static void start_peer(void)
{
    setenv("MC_AUTH_TOKEN", "s3cret", 1);
    const char *args[] = {"--size", "65536", NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
}

static void stop_peer(void)
{
    te_test_peer_stop(&peer);
    unsetenv("MC_AUTH_TOKEN");
}

static int transfer_with_token(const char *token)
{
    if (token)
        setenv("MC_AUTH_TOKEN", token, 1);
    else
        unsetenv("MC_AUTH_TOKEN");
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL);
    char buf[4096];
    memset(buf, 7, sizeof buf);
    te_segment_id seg;
    if (!rc)
        rc = te_segment_open(e, peer.segment, &seg);
    if (!rc) {
        te_request r = {TE_OP_WRITE, buf, seg, peer.addr, sizeof buf};
        rc = te_transfer_sync(e, &r, 1, NULL, NULL);
    }
    te_engine_destroy(e);
    return rc;
}

START_TEST(same_token_works_others_are_refused)
{
    start_peer();
    ck_assert_int_eq(transfer_with_token("s3cret"), 0);
    ck_assert_int_lt(transfer_with_token("wrong"), 0);
    ck_assert_int_lt(transfer_with_token(NULL), 0);
    ck_assert_int_eq(transfer_with_token("s3cret"), 0); /* the peer is still fine */
    stop_peer();
}
END_TEST

/* Runs the client half by hand; returns the 64-byte answer it sent. */
static int handshake(int fd, const char *token, uint8_t answer[64], const uint8_t *replay)
{
    uint8_t hello[40];
    int64_t dl = te_now_ns() + 3000000000LL;
    ck_assert_int_eq(te_net_read_full(fd, hello, sizeof hello, dl), 0);
    ck_assert_int_eq(memcmp(hello, "TEAUTH1", 8), 0);
    if (replay) {
        memcpy(answer, replay, 64);
    } else {
        uint8_t msg[17 + 64];
        memset(answer, 0x5a, 32); /* client nonce */
        memcpy(msg, "te-auth-v1 client", 17);
        memcpy(msg + 17, hello + 8, 32);
        memcpy(msg + 49, answer, 32);
        te_hmac_sha256(token, strlen(token), msg, sizeof msg, answer + 32);
    }
    ck_assert_int_eq(te_net_write_full(fd, answer, 64, dl), 0);
    uint8_t proof[32];
    return te_net_read_full(fd, proof, sizeof proof, dl);
}

START_TEST(replayed_answer_is_refused)
{
    start_peer();
    uint8_t first[64], second[64];
    int fd = te_net_connect("127.0.0.1", (uint16_t)peer.rpc_port, 2000);
    ck_assert_int_eq(handshake(fd, "s3cret", first, NULL), 0);
    close(fd);
    fd = te_net_connect("127.0.0.1", (uint16_t)peer.rpc_port, 2000);
    ck_assert_int_ne(handshake(fd, "s3cret", second, first), 0); /* closed, no proof */
    close(fd);
    /* Garbage instead of an answer on the data port: closed, nothing written. */
    char *reply = NULL;
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, 1, "{}", 2, &reply, NULL,
                                 3000, 1 << 20, "s3cret"), 0);
    json_error_t e;
    json_t *d = json_loads(reply, 0, &e);
    free(reply);
    int port = (int)json_integer_value(json_object_get(d, "tcp_data_port"));
    json_decref(d);
    ck_assert_int_eq(te_test_peer_cmd(&peer, "fill 0 65536 4", NULL, 0), 0);
    fd = te_net_connect("127.0.0.1", (uint16_t)port, 2000);
    uint8_t hello[40], junk[64 + 24 + 16];
    ck_assert_int_eq(te_net_read_full(fd, hello, 40, te_now_ns() + 3000000000LL), 0);
    memset(junk, 1, sizeof junk);
    te_net_write_full(fd, junk, sizeof junk, 0);
    char c;
    ck_assert_int_eq(te_net_wait(fd, POLLIN, te_now_ns() + 3000000000LL), 0);
    ck_assert_int_le(recv(fd, &c, 1, 0), 0);
    close(fd);
    char ok[64];
    ck_assert_int_eq(te_test_peer_cmd(&peer, "check 0 65536 4", ok, sizeof ok), 0);
    ck_assert_str_eq(ok, "OK");
    stop_peer();
}
END_TEST

int main(void)
{
    setenv("MC_TRANSFER_TIMEOUT", "3", 1);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("auth");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sha256_and_hmac_vectors);
    tcase_add_test(tc, same_token_works_others_are_refused);
    tcase_add_test(tc, replayed_answer_is_refused);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
