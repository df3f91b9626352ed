/* nvlink_hex.h - the `shm_name` text of a CUDA IPC handle: uppercase hex,
 * as the original writes it.  No CUDA types, so the unit tests link it alone. */
#ifndef TE_NVLINK_HEX_H
#define TE_NVLINK_HEX_H

#include <stdbool.h>
#include <stddef.h>

/* Writes 2*len uppercase hex digits and a NUL; out_len must hold them. */
bool nvl_hex_encode(const void *bytes, size_t len, char *out, size_t out_len);

/* Reads exactly 2*len hex digits (either case) from a NUL-terminated
 * string; false for any other length or a non-hex digit. */
bool nvl_hex_decode(const char *text, void *bytes, size_t len);

#endif
