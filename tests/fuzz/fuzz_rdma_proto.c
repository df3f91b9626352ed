/* fuzz_rdma_proto.c - what an RDMA peer sends, parsed by plugins/rdma/proto.c
 * (linked in; it needs no libibverbs): the handshake JSON of RPC type 0,
 * the peer's segment descriptor (devices, keys, priority matrix), GIDs,
 * NIC paths and priority-matrix lookups.  The first byte picks the parser. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "rdma_proto.h"
#include "te/te.h"

static const char *const names[] = {"mlx5_0", "mlx5_1", "erdma_0", "rxe0"};
#define NNAMES 4

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    return 0;
}

static void handshake(const char *json, size_t len)
{
    rdma_hs_msg m;
    char err[128];
    int rc = rdma_hs_decode(json, len, &m, err, sizeof err);
    if (rc) {
        FUZZ_ASSERT(rc == TE_ERR_MALFORMED_JSON, "status %d", rc);
        FUZZ_ASSERT(memchr(err, 0, sizeof err), "error text not terminated");
        return;
    }
    FUZZ_ASSERT(memchr(m.reply_msg, 0, sizeof m.reply_msg), "reply_msg not terminated");
    if (m.reply_msg[0])
        return; /* a rejection carries nothing else */
    FUZZ_ASSERT(m.nqp >= 1 && m.nqp <= RDMA_MAX_QP, "%d QPs accepted", m.nqp);
    FUZZ_ASSERT(memchr(m.local_nic_path, 0, sizeof m.local_nic_path) &&
                    memchr(m.peer_nic_path, 0, sizeof m.peer_nic_path),
                "paths not terminated");
    char seg[RDMA_PATH_MAX], nic[RDMA_NAME_MAX];
    FUZZ_ASSERT(rdma_nic_path_split(m.local_nic_path, seg, sizeof seg, nic, sizeof nic) == 0 &&
                    rdma_valid_nic_name(nic),
                "accepted local path '%s'", m.local_nic_path);
    /* What we accept, we encode and accept again unchanged. */
    char *again = NULL;
    if (rdma_hs_encode(&m, &again) == 0) {
        rdma_hs_msg m2;
        FUZZ_ASSERT(rdma_hs_decode(again, strlen(again), &m2, err, sizeof err) == 0,
                    "re-encoded handshake refused: %s (%s)", err, again);
        FUZZ_ASSERT(m2.nqp == m.nqp && !memcmp(m2.qp_num, m.qp_num, sizeof(uint32_t) * m.nqp) &&
                        m2.local_lid == m.local_lid && !memcmp(m2.local_gid, m.local_gid, 16) &&
                        !strcmp(m2.local_nic_path, m.local_nic_path) &&
                        !strcmp(m2.peer_nic_path, m.peer_nic_path) && m2.ready_ack == m.ready_ack,
                    "handshake changed in a round trip: %s", again);
        free(again);
    }
}

static void descriptor(const char *json)
{
    rdma_peer_desc *d = NULL;
    char err[128];
    int rc = rdma_peer_desc_parse(json, &d, err, sizeof err);
    if (rc) {
        FUZZ_ASSERT(rc == TE_ERR_MALFORMED_JSON || rc == TE_ERR_NOT_SUPPORTED_TRANSPORT,
                    "status %d", rc);
        FUZZ_ASSERT(!d, "output on failure");
        return;
    }
    FUZZ_ASSERT(d->ndev >= 1 && d->ndev <= RDMA_MAX_DEVICES, "%d devices", d->ndev);
    for (int i = 0; i < d->ndev; i++)
        FUZZ_ASSERT(rdma_valid_nic_name(d->devs[i].name), "device %d", i);
    for (size_t b = 0; b < d->nbuf; b++) {
        const rdma_peer_buf *pb = &d->bufs[b];
        FUZZ_ASSERT(pb->length > 0 && pb->addr + pb->length > pb->addr, "buffer %zu", b);
        FUZZ_ASSERT(pb->nnics >= 0 && pb->nnics <= d->ndev && pb->npref <= pb->nnics,
                    "buffer %zu: %d NICs (%d preferred) of %d", b, pb->nnics, pb->npref, d->ndev);
        for (int k = 0; k < pb->nnics; k++)
            FUZZ_ASSERT(pb->nics[k] >= 0 && pb->nics[k] < d->ndev, "NIC index %d", pb->nics[k]);
        for (int k = 0; k < d->ndev; k++)
            (void)pb->rkey[k]; /* one key per device, readable */
    }
    rdma_peer_desc_free(d);
}

static void matrix(const char *json)
{
    int out[NNAMES], npref = -1, rank[NNAMES];
    static const char *const locs[] = {"cpu:0", "cuda:0", "*"};
    for (int i = 0; i < 3; i++) {
        int n = rdma_matrix_nics(json, locs[i], names, NNAMES, out, &npref);
        FUZZ_ASSERT(n >= -1 && n <= NNAMES, "%d NICs", n);
        for (int k = 0; k < n; k++)
            FUZZ_ASSERT(out[k] >= 0 && out[k] < NNAMES, "index %d", out[k]);
        if (n >= 0)
            FUZZ_ASSERT(npref >= 0 && npref <= n, "%d preferred of %d", npref, n);
    }
    if (rdma_matrix_rank(json, names, NNAMES, rank) == 0) {
        int seen[NNAMES] = {0};
        for (int i = 0; i < NNAMES; i++) {
            FUZZ_ASSERT(rank[i] >= 0 && rank[i] < NNAMES && !seen[rank[i]]++,
                        "rank %d of %s", rank[i], names[i]);
        }
    }
    int n = rdma_names_to_indices(json, names, NNAMES, out);
    FUZZ_ASSERT(n >= -1 && n <= NNAMES, "%d indices", n);
    char *f = rdma_matrix_filter(json, names, NNAMES);
    free(f);
}

static void small_parsers(const char *s)
{
    uint8_t gid[16];
    if (rdma_gid_parse(s, gid) == 0) {
        char text[RDMA_GID_STR];
        uint8_t gid2[16];
        rdma_gid_format(gid, text);
        FUZZ_ASSERT(rdma_gid_parse(text, gid2) == 0 && !memcmp(gid, gid2, 16),
                    "gid '%s' -> '%s'", s, text);
    }
    char seg[64], nic[RDMA_NAME_MAX];
    if (rdma_nic_path_split(s, seg, sizeof seg, nic, sizeof nic) == 0)
        FUZZ_ASSERT(*seg && *nic && strlen(seg) < sizeof seg && strlen(nic) < sizeof nic,
                    "split '%s'", s);
    rdma_valid_nic_name(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *s = fuzz_strndup(data + 1, size - 1);
    switch (data[0] % 4) {
    case 0:
        handshake((const char *)data + 1, size - 1);
        break;
    case 1:
        descriptor(s);
        break;
    case 2:
        matrix(s);
        break;
    default:
        small_parsers(s);
        break;
    }
    free(s);
    return 0;
}
