/* fuzz_segdesc.c - a peer's segment descriptor (JSON from a metadata store
 * or the RPC port): te_segdesc_decode and the range lookup that decides
 * which remote buffer a request may touch. */
#include <string.h>

#include "fuzz_util.h"
#include "segdesc.h"
#include "te/te.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    return 0;
}

static uint64_t u64_at(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Inputs with a trailing 16-byte probe ("\0" + addr + len... ) are split:
     * JSON first, then lookup ranges.  Plain JSON works too. */
    size_t json_len = size;
    const uint8_t *probe = NULL;
    size_t nprobe = 0;
    const uint8_t *nul = memchr(data, 0, size);
    if (nul) {
        json_len = (size_t)(nul - data);
        probe = nul + 1;
        nprobe = (size - json_len - 1) / 16;
    }
    te_segdesc *d = NULL;
    int rc = te_segdesc_decode((const char *)data, json_len, &d);
    if (rc) {
        FUZZ_ASSERT(rc == TE_ERR_MALFORMED_JSON || rc == TE_ERR_MEMORY, "status %d", rc);
        FUZZ_ASSERT(d == NULL, "output set on failure");
        return 0;
    }
    FUZZ_ASSERT(d && d->name && d->protocol && d->json, "incomplete descriptor");
    FUZZ_ASSERT(strlen(d->json) <= json_len, "json copy longer than input");
    for (size_t i = 0; i < d->buffer_count; i++) {
        const te_seg_buffer *b = &d->buffers_in_order[i];
        FUZZ_ASSERT(b->addr && b->length && b->addr + b->length > b->addr,
                    "buffer %zu accepted with addr %llu length %llu", i,
                    (unsigned long long)b->addr, (unsigned long long)b->length);
        /* Every buffer is found by its own range. */
        int k = te_segdesc_find(d, b->addr, b->length);
        FUZZ_ASSERT(k >= 0, "buffer %zu not found by its own range", i);
        if (i > 0)
            FUZZ_ASSERT(d->buffers[i - 1].addr <= d->buffers[i].addr, "buffers not sorted");
    }
    for (size_t i = 0; i < nprobe; i++) {
        uint64_t addr = u64_at(probe + 16 * i), len = u64_at(probe + 16 * i + 8);
        int k = te_segdesc_find(d, addr, len);
        if (k < 0)
            continue;
        /* A hit lies wholly inside the buffer it names: the remote side of a
         * transfer can never be steered outside a published buffer. */
        FUZZ_ASSERT((size_t)k < d->buffer_count, "index %d of %zu", k, d->buffer_count);
        const te_seg_buffer *b = &d->buffers_in_order[k];
        FUZZ_ASSERT(len > 0 && addr >= b->addr && addr + len >= addr &&
                        addr + len <= b->addr + b->length,
                    "range 0x%llx+%llu matched buffer 0x%llx+%llu", (unsigned long long)addr,
                    (unsigned long long)len, (unsigned long long)b->addr,
                    (unsigned long long)b->length);
    }
    te_segdesc_free(d);
    return 0;
}
