/* auth.c - SHA-256 (FIPS 180-4), HMAC (RFC 2104) and the connection
 * handshake of MC_AUTH_TOKEN:
 *   server -> client  "TEAUTH1\0" + server nonce (32)
 *   client -> server  client nonce (32) + HMAC(token, "te-auth-v1 client" | sn | cn)
 *   server -> client  HMAC(token, "te-auth-v1 server" | sn | cn)
 * Each side checks the other's MAC in constant time. */
#include "auth.h"

#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "net.h"

typedef struct sha256 {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t total;
    size_t used;
} sha256;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ROR(v[4], 6) ^ ROR(v[4], 11) ^ ROR(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + K[i] + w[i];
        uint32_t t2 = (ROR(v[0], 2) ^ ROR(v[0], 13) ^ ROR(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

static void sha_init(sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->total = 0;
    s->used = 0;
}

static void sha_update(sha256 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->total += len;
    while (len > 0) {
        size_t take = 64 - s->used < len ? 64 - s->used : len;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        len -= take;
        if (s->used == 64) {
            block(s, s->buf);
            s->used = 0;
        }
    }
}

static void sha_final(sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha_update(s, &pad, 1);
    while (s->used != 56)
        sha_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void te_sha256(const void *data, size_t len, uint8_t out[32])
{
    sha256 s;
    sha_init(&s);
    sha_update(&s, data, len);
    sha_final(&s, out);
}

void te_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                    uint8_t out[32])
{
    uint8_t k[64] = {0}, ipad[64], opad[64], inner[32];
    if (key_len > 64)
        te_sha256(key, key_len, k);
    else
        memcpy(k, key, key_len);
    for (int i = 0; i < 64; i++) {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    sha256 s;
    sha_init(&s);
    sha_update(&s, ipad, 64);
    sha_update(&s, msg, msg_len);
    sha_final(&s, inner);
    sha_init(&s);
    sha_update(&s, opad, 64);
    sha_update(&s, inner, 32);
    sha_final(&s, out);
}

static void mac(const char *token, const char *role, const uint8_t *sn, const uint8_t *cn,
                uint8_t out[32])
{
    uint8_t msg[32 + 2 * TE_AUTH_NONCE];
    size_t rl = strlen(role);
    memcpy(msg, role, rl);
    memcpy(msg + rl, sn, TE_AUTH_NONCE);
    memcpy(msg + rl + TE_AUTH_NONCE, cn, TE_AUTH_NONCE);
    te_hmac_sha256(token, strlen(token), msg, rl + 2 * TE_AUTH_NONCE, out);
}

static int same(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

static int nonce(uint8_t out[TE_AUTH_NONCE])
{
    return getrandom(out, TE_AUTH_NONCE, 0) == TE_AUTH_NONCE ? 0 : TE_ERR_SOCKET;
}

int te_auth_accept(const char *token, int fd, int64_t deadline)
{
    if (!token || !*token)
        return 0;
    uint8_t hello[8 + TE_AUTH_NONCE], answer[TE_AUTH_NONCE + TE_AUTH_MAC], want[32], proof[32];
    memcpy(hello, TE_AUTH_MAGIC, 8);
    if (nonce(hello + 8))
        return TE_ERR_SOCKET;
    int rc = te_net_write_full(fd, hello, sizeof hello, deadline);
    if (!rc)
        rc = te_net_read_full(fd, answer, sizeof answer, deadline);
    if (rc)
        return rc;
    mac(token, "te-auth-v1 client", hello + 8, answer, want);
    if (!same(want, answer + TE_AUTH_NONCE, 32)) {
        te_log(TE_LOG_WARN, "auth", "peer failed MC_AUTH_TOKEN authentication: connection refused");
        return TE_ERR_REJECT_HANDSHAKE;
    }
    mac(token, "te-auth-v1 server", hello + 8, answer, proof);
    return te_net_write_full(fd, proof, sizeof proof, deadline);
}

int te_auth_connect(const char *token, int fd, int64_t deadline)
{
    if (!token || !*token)
        return 0;
    uint8_t hello[8 + TE_AUTH_NONCE], answer[TE_AUTH_NONCE + TE_AUTH_MAC], want[32], proof[32];
    int rc = te_net_read_full(fd, hello, sizeof hello, deadline);
    if (rc)
        return te_fail(rc, "authentication: no challenge from the peer (%s); does it use "
                           "MC_AUTH_TOKEN?", te_strerror(rc));
    if (memcmp(hello, TE_AUTH_MAGIC, 8) != 0)
        return te_fail(TE_ERR_REJECT_HANDSHAKE, "authentication: the peer sent no challenge");
    if (nonce(answer))
        return TE_ERR_SOCKET;
    mac(token, "te-auth-v1 client", hello + 8, answer, answer + TE_AUTH_NONCE);
    rc = te_net_write_full(fd, answer, sizeof answer, deadline);
    if (!rc)
        rc = te_net_read_full(fd, proof, sizeof proof, deadline);
    if (rc)
        return te_fail(rc == TE_ERR_PEER_CLOSED ? TE_ERR_REJECT_HANDSHAKE : rc,
                       "authentication refused by the peer (wrong MC_AUTH_TOKEN?)");
    mac(token, "te-auth-v1 server", hello + 8, answer, want);
    if (!same(want, proof, 32))
        return te_fail(TE_ERR_REJECT_HANDSHAKE, "authentication: the peer's proof is wrong");
    return 0;
}
