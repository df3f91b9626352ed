/* auth.h - optional peer authentication (MC_AUTH_TOKEN): a challenge-response
 * with HMAC-SHA256 run right after connect on the RPC and data ports.  The
 * token never crosses the wire; a fresh server nonce defeats replays. */
#ifndef TE_CORE_AUTH_H
#define TE_CORE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define TE_AUTH_MAGIC "TEAUTH1"  /* 7 chars + NUL = the 8-byte greeting */
#define TE_AUTH_NONCE 32
#define TE_AUTH_MAC 32

void te_sha256(const void *data, size_t len, uint8_t out[32]);
void te_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                    uint8_t out[32]);

/* Server side: sends the challenge, checks the answer, proves itself.
 * token NULL or "" = authentication off (returns 0 at once).  0, or
 * TE_ERR_REJECT_HANDSHAKE / a socket status. */
int te_auth_accept(const char *token, int fd, int64_t deadline_ns);
/* Client side: answers the challenge and checks the server's proof. */
int te_auth_connect(const char *token, int fd, int64_t deadline_ns);

#endif
