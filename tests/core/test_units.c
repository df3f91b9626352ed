/* test_units.c - pure functions of the core: host:port parsing, config
 * parsing, segment descriptor decoding, metadata keys, RPC frame headers,
 * the registration table. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "hostport.h"
#include "memreg.h"
#include "rpc.h"
#include "segdesc.h"
#include "test_util.h"

START_TEST(host_port_forms)
{
    char h[64];
    uint16_t p;
    ck_assert_int_eq(te_parse_host_port("0.0.0.0:1234", h, sizeof h, &p, 12001), 0);
    ck_assert_str_eq(h, "0.0.0.0");
    ck_assert_uint_eq(p, 1234);
    ck_assert_int_eq(te_parse_host_port("1.2.3.4", h, sizeof h, &p, 12001), 0);
    ck_assert_str_eq(h, "1.2.3.4");
    ck_assert_uint_eq(p, 12001);
    ck_assert_int_eq(te_parse_host_port("[::1]:80", h, sizeof h, &p, 1), 0);
    ck_assert_str_eq(h, "::1");
    ck_assert_uint_eq(p, 80);
    ck_assert_int_eq(te_parse_host_port("[fe80::1]", h, sizeof h, &p, 7), 0);
    ck_assert_uint_eq(p, 7);
    ck_assert_int_eq(te_parse_host_port("fe80::1:2", h, sizeof h, &p, 9), 0); /* bare v6 */
    ck_assert_str_eq(h, "fe80::1:2");
    ck_assert_uint_eq(p, 9);
    ck_assert_int_eq(te_parse_host_port("fe80::1%eth0:4000", h, sizeof h, &p, 9), 0);
    ck_assert_str_eq(h, "fe80::1%eth0");
    ck_assert_uint_eq(p, 4000);
    ck_assert_int_eq(te_parse_host_port("node-a:15000", h, sizeof h, &p, 1), 0);
    ck_assert_str_eq(h, "node-a");
    /* Missing or bad ports and hosts. */
    ck_assert_int_ne(te_parse_host_port("host:", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port(":80", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("host:0", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("host:65536", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("host:12a", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("[::1", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("[::1]x", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("", h, sizeof h, &p, 1), 0);
    ck_assert_int_ne(te_parse_host_port("a b:1", h, sizeof h, &p, 1), 0);
    char tiny[4];
    ck_assert_int_ne(te_parse_host_port("toolong:1", tiny, sizeof tiny, &p, 1), 0);
    char out[64];
    te_format_host_port("::1", 5, out, sizeof out);
    ck_assert_str_eq(out, "[::1]:5");
    te_format_host_port("10.0.0.1", 5, out, sizeof out);
    ck_assert_str_eq(out, "10.0.0.1:5");
}
END_TEST

START_TEST(config_values)
{
    bool b;
    uint64_t v;
    ck_assert_int_eq(te_parse_bool("On", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(te_parse_bool("no", &b), 0);
    ck_assert(!b);
    ck_assert_int_ne(te_parse_bool("maybe", &b), 0);
    ck_assert_int_eq(te_parse_u64("42", 1, 100, &v), 0);
    ck_assert_uint_eq(v, 42);
    ck_assert_int_ne(te_parse_u64("-1", 0, 100, &v), 0);
    ck_assert_int_ne(te_parse_u64("101", 0, 100, &v), 0);
    ck_assert_int_ne(te_parse_u64("4x", 0, 100, &v), 0);
    ck_assert_int_ne(te_parse_u64("99999999999999999999999", 0, UINT64_MAX, &v), 0);

    te_config c;
    setenv("MC_TRANSFER_TIMEOUT", "7", 1);
    setenv("MC_MIN_RPC_PORT", "20000", 1);
    setenv("MC_MAX_RPC_PORT", "19000", 1); /* min > max: defaults */
    setenv("MC_FORCE_TCP", "yes", 1);
    setenv("MC_HANDSHAKE_MAX_LENGTH", "1", 1); /* below the floor: default */
    setenv("MC_METADATA_CLUSTER_ID", "blue", 1);
    te_config_load(&c);
    ck_assert_int_eq(c.transfer_timeout_ms, 7000);
    ck_assert_uint_eq(c.min_rpc_port, 15000);
    ck_assert_uint_eq(c.max_rpc_port, 17000);
    ck_assert(c.force_tcp);
    ck_assert_uint_eq(c.max_frame, 1u << 20);
    ck_assert_str_eq(c.cluster_id, "blue");
    setenv("MC_TRANSFER_TIMEOUT", "soon", 1);
    unsetenv("MC_MIN_RPC_PORT");
    unsetenv("MC_MAX_RPC_PORT");
    setenv("MC_MIN_PRC_PORT", "16000", 1); /* the original's misspelt alias */
    te_config_load(&c);
    ck_assert_int_eq(c.transfer_timeout_ms, 30000);
    ck_assert_uint_eq(c.min_rpc_port, 16000);
}
END_TEST

static int decode(const char *json, te_segdesc **d)
{
    return te_segdesc_decode(json, strlen(json), d);
}

START_TEST(descriptor_decoding)
{
    te_segdesc *d;
    const char *ok = "{\"name\":\"127.0.0.1:1\",\"protocol\":\"tcp\",\"tcp_data_port\":16050,"
                     "\"buffers\":[{\"addr\":4096,\"length\":100,\"name\":\"x\"},"
                     "{\"addr\":1024,\"length\":10}]}";
    ck_assert_int_eq(decode(ok, &d), 0);
    ck_assert_str_eq(d->name, "127.0.0.1:1");
    ck_assert_str_eq(d->protocol, "tcp");
    ck_assert_uint_eq(d->buffer_count, 2);
    ck_assert_uint_eq(d->buffers_in_order[0].addr, 4096);
    ck_assert_int_eq(te_segdesc_find(d, 4096, 100), 0);
    ck_assert_int_eq(te_segdesc_find(d, 1030, 4), 1);
    ck_assert_int_eq(te_segdesc_find(d, 4096, 101), -1);
    ck_assert_int_eq(te_segdesc_find(d, 4000, 100), -1);
    ck_assert_int_eq(te_segdesc_find(d, 4096, 0), -1);
    ck_assert_int_eq(te_segdesc_find(d, UINT64_MAX, 2), -1);
    te_segdesc_free(d);
    static const char *const bad[] = {
        "", "{", "[]", "null", "{\"name\":1,\"protocol\":\"tcp\"}",
        "{\"name\":\"a\"}",
        "{\"name\":\"a\",\"protocol\":\"tcp\",\"buffers\":{}}",
        "{\"name\":\"a\",\"protocol\":\"tcp\",\"buffers\":[1]}",
        "{\"name\":\"a\",\"protocol\":\"tcp\",\"buffers\":[{\"addr\":0,\"length\":1}]}",
        "{\"name\":\"a\",\"protocol\":\"tcp\",\"buffers\":[{\"addr\":1,\"length\":0}]}",
        "{\"name\":\"a\",\"protocol\":\"tcp\",\"buffers\":[{\"addr\":\"1\",\"length\":1}]}",
        "{\"name\":\"a\",\"protocol\":\"tcp\",\"buffers\":[{\"addr\":-2,\"length\":9}]}",
        "{\"name\":\"a\",\"name\":\"b\",\"protocol\":\"tcp\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(decode(bad[i], &d) == TE_ERR_MALFORMED_JSON, "accepted %s", bad[i]);
}
END_TEST

START_TEST(metadata_keys)
{
    char k[256];
    const char *name;
    ck_assert_int_eq(te_meta_segment_key("", "10.0.0.1:5", k, sizeof k), 0);
    ck_assert_str_eq(k, "mooncake/ram/10.0.0.1:5");
    ck_assert_int_eq(te_meta_segment_key("c1", "n", k, sizeof k), 0);
    ck_assert_str_eq(k, "mooncake/c1/ram/n");
    ck_assert_int_eq(te_meta_parse_key("c1", k, &name), 1);
    ck_assert_str_eq(name, "n");
    ck_assert_int_eq(te_meta_segment_key("", "nvmeof/x", k, sizeof k), 0);
    ck_assert_str_eq(k, "mooncake/nvmeof/x");
    ck_assert_int_eq(te_meta_rpc_key("", "n", k, sizeof k), 0);
    ck_assert_str_eq(k, "mooncake/rpc_meta/n");
    ck_assert_int_eq(te_meta_parse_key("", k, &name), 2);
    ck_assert_str_eq(name, "n");
    ck_assert_int_eq(te_meta_parse_key("", "other/key", &name), 0);
    char small[8];
    ck_assert_int_ne(te_meta_segment_key("", "long-name", small, sizeof small), 0);
    char h[64], *json;
    uint16_t p;
    ck_assert_int_eq(te_rpc_meta_encode("10.1.2.3", 15001, &json), 0);
    ck_assert_str_eq(json, "{\"ip_or_host_name\":\"10.1.2.3\",\"rpc_port\":15001}");
    ck_assert_int_eq(te_rpc_meta_decode(json, h, sizeof h, &p), 0);
    ck_assert_str_eq(h, "10.1.2.3");
    ck_assert_uint_eq(p, 15001);
    free(json);
    ck_assert_int_ne(te_rpc_meta_decode("{\"ip_or_host_name\":\"x\",\"rpc_port\":70000}", h,
                                        sizeof h, &p), 0);
    ck_assert_int_ne(te_rpc_meta_decode("{\"rpc_port\":1}", h, sizeof h, &p), 0);
    ck_assert_int_ne(te_rpc_meta_decode("garbage", h, sizeof h, &p), 0);
}
END_TEST

START_TEST(rpc_frame_headers)
{
    uint8_t hdr[9];
    uint64_t len;
    int type, legacy;
    te_rpc_encode_header(hdr, 5, 2);
    ck_assert_uint_eq(hdr[0], 6); /* length counts the type byte */
    ck_assert_int_eq(te_rpc_decode_header(hdr, 1 << 20, &len, &type, &legacy), 0);
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(type, 2);
    ck_assert_int_eq(legacy, 0);
    memset(hdr, 0, sizeof hdr); /* zero length */
    ck_assert_int_eq(te_rpc_decode_header(hdr, 1 << 20, &len, &type, &legacy),
                     TE_ERR_MALFORMED_FRAME);
    te_rpc_encode_header(hdr, 1 << 20, 1); /* one byte over the cap */
    ck_assert_int_eq(te_rpc_decode_header(hdr, 1 << 20, &len, &type, &legacy),
                     TE_ERR_MALFORMED_FRAME);
    memset(hdr, 0xff, sizeof hdr);
    ck_assert_int_eq(te_rpc_decode_header(hdr, 1 << 20, &len, &type, &legacy),
                     TE_ERR_MALFORMED_FRAME);
    ck_assert_str_eq(te_strerror(TE_ERR_MALFORMED_FRAME), "malformed frame");
    te_rpc_encode_header(hdr, 9, 1);
    hdr[8] = '{'; /* legacy untyped frame: that byte is JSON */
    ck_assert_int_eq(te_rpc_decode_header(hdr, 1 << 20, &len, &type, &legacy), 0);
    ck_assert_int_eq(type, 0);
    ck_assert_int_eq(legacy, 1);
    ck_assert_uint_eq(len, 10);
}
END_TEST

static te_region *region(uint64_t a, uint64_t l)
{
    te_region *r = calloc(1, sizeof *r);
    r->addr = a;
    r->length = l;
    return r;
}

START_TEST(registration_table)
{
    te_memreg m;
    te_memreg_init(&m);
    ck_assert_int_eq(te_memreg_insert(&m, region(1000, 100)), 0);
    ck_assert_int_eq(te_memreg_insert(&m, region(3000, 100)), 0);
    ck_assert_int_eq(te_memreg_insert(&m, region(2000, 100)), 0);
    te_region *dup = region(2050, 10);
    ck_assert_int_eq(te_memreg_insert(&m, dup), TE_ERR_ADDRESS_OVERLAPPED);
    free(dup);
    ck_assert(te_memreg_overlaps(&m, 1099, 2));
    ck_assert(!te_memreg_overlaps(&m, 1100, 900));
    te_region *r;
    ck_assert_int_eq(te_memreg_pin(&m, 2000, 100, &r), 0);
    ck_assert_uint_eq(r->addr, 2000);
    te_memreg_unpin(&m, r);
    ck_assert_int_eq(te_memreg_pin(&m, 2000, 101, &r), TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(te_memreg_pin(&m, 1050, 1000, &r), TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(te_memreg_pin(&m, UINT64_MAX - 1, 10, &r), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_memreg_remove(&m, 2001, &r), TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(te_memreg_remove(&m, 2000, &r), 0);
    free(r);
    ck_assert_int_eq(te_memreg_pin(&m, 2000, 1, &r), TE_ERR_ADDRESS_NOT_REGISTERED);
    te_memreg_destroy(&m);
}
END_TEST

typedef struct pinner {
    te_memreg *m;
    atomic_int pins; /* pins that succeeded */
    atomic_bool stop;
} pinner;

/* Pins and unpins [1000, 1100) until a pin fails (the region was removed). */
static void *pin_loop(void *arg)
{
    pinner *p = arg;
    te_region *r;
    while (te_memreg_pin(p->m, 1000, 100, &r) == 0) {
        atomic_fetch_add(&p->pins, 1);
        te_memreg_unpin(p->m, r);
    }
    return NULL;
}

static void *unpin_slowly(void *arg)
{
    void **a = arg;
    struct timespec pause = {0, 20000000};
    for (int i = 0; i < 3; i++) {
        nanosleep(&pause, NULL);
        atomic_fetch_add((atomic_int *)a[2], 1);
        te_memreg_unpin(a[0], a[1]);
    }
    return NULL;
}

/* Removal waits for every pin held, however they are released; pins that
 * race with it from other threads either land before it (and it waits for
 * them) or fail after. */
START_TEST(removal_waits_for_the_last_pin)
{
    te_memreg m;
    te_memreg_init(&m);
    ck_assert_int_eq(te_memreg_insert(&m, region(1000, 100)), 0);
    te_region *r;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(te_memreg_pin(&m, 1000, 100, &r), 0);
    atomic_int unpinned = 0;
    void *args[3] = {&m, r, &unpinned};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, unpin_slowly, args), 0);
    te_region *out;
    ck_assert_int_eq(te_memreg_remove(&m, 1000, &out), 0);
    ck_assert_int_eq(atomic_load(&unpinned), 3);
    pthread_join(th, NULL);
    free(out);

    ck_assert_int_eq(te_memreg_insert(&m, region(1000, 100)), 0);
    pinner p = {.m = &m};
    pthread_t ths[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&ths[i], NULL, pin_loop, &p), 0);
    while (atomic_load(&p.pins) < 10000)
        sched_yield();
    ck_assert_int_eq(te_memreg_remove(&m, 1000, &out), 0);
    ck_assert_uint_eq(atomic_load(&out->pin_state), TE_REGION_DYING); /* none held */
    for (int i = 0; i < 4; i++)
        pthread_join(ths[i], NULL);
    free(out);
    te_memreg_destroy(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("units");
    TCase *tc = tcase_create("units");
    tcase_add_test(tc, host_port_forms);
    tcase_add_test(tc, config_values);
    tcase_add_test(tc, descriptor_decoding);
    tcase_add_test(tc, metadata_keys);
    tcase_add_test(tc, rpc_frame_headers);
    tcase_add_test(tc, registration_table);
    tcase_add_test(tc, removal_waits_for_the_last_pin);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
