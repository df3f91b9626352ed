/* fuzz_host_port.c - "host:port" strings from users and peers
 * (local_hostname, P2P segment names, rpc_meta, etcd endpoints):
 * te_parse_host_port into small and large buffers, and format/parse round
 * trips of whatever it accepts. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "hostport.h"
#include "te/te.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint16_t def = (uint16_t)(data[0] | data[1] << 8);
    char *s = fuzz_strndup(data + 2, size - 2);
    static const size_t caps[] = {1, 4, 46, 256};
    for (size_t i = 0; i < sizeof caps / sizeof *caps; i++) {
        char *host = malloc(caps[i]);
        uint16_t port = 0;
        int rc = te_parse_host_port(s, host, caps[i], &port, def);
        if (rc) {
            FUZZ_ASSERT(rc == TE_ERR_INVALID_ARGUMENT, "status %d", rc);
            free(host);
            continue;
        }
        size_t n = strnlen(host, caps[i]);
        FUZZ_ASSERT(n > 0 && n < caps[i], "host of %zu bytes in %zu", n, caps[i]);
        FUZZ_ASSERT(port != 0 || def == 0, "port 0 from '%s'", s);
        for (size_t k = 0; k < n; k++)
            FUZZ_ASSERT((unsigned char)host[k] > ' ' && host[k] != '/' && host[k] != '[' &&
                            host[k] != ']',
                        "host '%s' holds byte 0x%02x", host, (unsigned char)host[k]);
        if (port) {
            char text[600], host2[256];
            uint16_t port2 = 0;
            te_format_host_port(host, port, text, sizeof text);
            FUZZ_ASSERT(te_parse_host_port(text, host2, sizeof host2, &port2, 1) == 0 &&
                            port2 == port && !strcmp(host2, host),
                        "'%s' -> host '%s' port %u -> '%s' does not parse back", s, host, port,
                        text);
        }
        free(host);
    }
    free(s);
    return 0;
}
