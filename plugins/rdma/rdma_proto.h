/* rdma_proto.h - the RDMA transport's wire formats, free of libibverbs so
 * that unit tests run on hosts without RDMA: GID text, NIC paths, the
 * handshake JSON (RPC type 0) and the peer's segment descriptor. */
#ifndef TE_RDMA_PROTO_H
#define TE_RDMA_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RDMA_NAME_MAX 64    /* a NIC name, NUL included */
#define RDMA_PATH_MAX 640   /* "<segment>@<nic>", NUL included */
#define RDMA_GID_STR 48     /* "xx:xx:...:xx" (47 chars) + NUL */
#define RDMA_MAX_QP 64      /* QPs per endpoint we accept */
#define RDMA_MAX_DEVICES 64 /* devices in a peer descriptor */

/* ---- GIDs and NIC paths --------------------------------------------------- */

/* "fe:80:00:...": 16 bytes as %02x joined by ':'.  Returns 0 or -1. */
int rdma_gid_parse(const char *s, uint8_t gid[16]);
void rdma_gid_format(const uint8_t gid[16], char out[RDMA_GID_STR]);

/* Splits "<segment>@<nic>" at the last '@'.  Returns 0, or -1 when there is
 * no '@', either part is empty or does not fit. */
int rdma_nic_path_split(const char *path, char *seg, size_t seg_len, char *nic, size_t nic_len);

/* A NIC name we accept from a peer: 1..63 of [A-Za-z0-9_.:-]. */
bool rdma_valid_nic_name(const char *name);

/* ---- the handshake message ------------------------------------------------ */

typedef struct rdma_hs_msg {
    char local_nic_path[RDMA_PATH_MAX];
    char peer_nic_path[RDMA_PATH_MAX];
    uint16_t local_lid;
    uint8_t local_gid[16];
    uint32_t qp_num[RDMA_MAX_QP];
    int nqp;
    bool ready_ack;
    char reply_msg[256];
} rdma_hs_msg;

/* The original's JSON: {"local_nic_path","local_lid","local_gid",
 * "peer_nic_path","qp_num":[...],"reply_msg","ready_ack","payload"}.
 * *json is malloc()'d.  0 or TE_ERR_MEMORY. */
int rdma_hs_encode(const rdma_hs_msg *m, char **json);

/* Parses and validates every member (types, ranges, gid format, qp_num
 * count 1..RDMA_MAX_QP, paths "<seg>@<nic>").  A message with a non-empty
 * reply_msg only needs that member (it is a rejection).  Missing ready_ack
 * reads as false.  0 or TE_ERR_MALFORMED_JSON with the reason in err. */
int rdma_hs_decode(const char *json, size_t len, rdma_hs_msg *m, char *err, size_t err_len);

/* ---- the peer's segment descriptor ---------------------------------------- */

typedef struct rdma_peer_dev {
    char name[RDMA_NAME_MAX];
    uint16_t lid;
    uint8_t gid[16];
} rdma_peer_dev;

typedef struct rdma_peer_buf {
    uint64_t addr, length;
    uint32_t *rkey; /* one per device */
    int *nics;      /* device indices for this buffer's location, preferred first */
    int nnics, npref;
} rdma_peer_buf;

typedef struct rdma_peer_desc {
    char name[RDMA_PATH_MAX];
    int ndev;
    rdma_peer_dev *devs;
    size_t nbuf;
    rdma_peer_buf *bufs; /* in descriptor order (slice->remote_buffer indexes it) */
} rdma_peer_desc;

/* Parses a peer's descriptor.  TE_ERR_NOT_SUPPORTED_TRANSPORT when it is
 * not an RDMA one (protocol other than "rdma", or no "devices");
 * TE_ERR_MALFORMED_JSON (reason in err) when a member is missing or wrong:
 * device name/lid/gid, rkey count != device count, lkey count when present,
 * buffer addr/length, a priority_matrix entry that is not two arrays of
 * strings. */
int rdma_peer_desc_parse(const char *json, rdma_peer_desc **out, char *err, size_t err_len);
void rdma_peer_desc_free(rdma_peer_desc *d);

/* ---- priority matrices ----------------------------------------------------- */

/* Looks `location` up in a priority matrix (JSON object text) and maps the
 * names of its [[preferred],[available]] lists to indices in names[]
 * (unknown names and repeats skipped).  Returns the number of indices
 * written to out (at most n), *npref the preferred ones among them; -1 when
 * the matrix is unusable or has no such location (the caller then uses all). */
int rdma_matrix_nics(const char *matrix_json, const char *location, const char *const *names,
                     int n, int *out, int *npref);

/* Ranks names[] by first appearance in the matrix (keys in sorted order,
 * preferred then available), the order in which Mooncake numbers a peer's
 * devices.  rank[i] gets a position; names absent from the matrix come last
 * in their given order.  0, or -1 if the matrix cannot be read (ranks are
 * then 0..n-1). */
int rdma_matrix_rank(const char *matrix_json, const char *const *names, int n, int *rank);

/* Maps a JSON array of names (text) to indices in names[], in order, unknown
 * names and repeats skipped.  Returns the count written to out (<= n), or
 * -1 when the text is not an array of strings. */
int rdma_names_to_indices(const char *array_json, const char *const *names, int n, int *out);

/* A copy of a matrix with only the names in names[] (entries that are not
 * two arrays of strings dropped); NULL when nothing usable remains. */
char *rdma_matrix_filter(const char *matrix_json, const char *const *names, int n);

/* A fallback matrix {"cpu:N":[[all names],[]], ...} for nodes 0..numa_nodes-1. */
char *rdma_matrix_fallback(const char *const *names, int n, int numa_nodes);

#endif
