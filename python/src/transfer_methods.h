/* transfer_methods.h - the transfer methods of transfer_methods.c as
 * X-macro entries (see pyte.h).  transport_hint (every transfer method): ''
 * lets the engine choose per request; a transport name pins it
 * (docs/transports.md); an unknown name raises ValueError. */
#ifndef PYTE_TRANSFER_METHODS_H
#define PYTE_TRANSFER_METHODS_H

#define PYTE_SYNC_RET \
    "Returns 0 on success, -1 on failure (timeout: MC_TRANSFER_TIMEOUT seconds\n" \
    "plus 1 ns per byte)."
#define PYTE_ASYNC_RET "Returns a batch id for get_batch_transfer_status(), or 0 on failure."

#define PYTE_TRANSFER_METHODS(KW, NOA) \
    KW(transfer_sync_write, \
        "transfer_sync_write($self, /, target_hostname, buffer, peer_buffer_address, length,\n" \
        "                    transport_hint='')\n--\n\n" \
        "Writes `length` bytes at local address `buffer` to `peer_buffer_address` in the\n" \
        "segment `target_hostname`.  " PYTE_SYNC_RET) \
    KW(transfer_sync_read, \
        "transfer_sync_read($self, /, target_hostname, buffer, peer_buffer_address, length,\n" \
        "                   transport_hint='')\n--\n\n" \
        "Reads `length` bytes at `peer_buffer_address` of segment `target_hostname` into\n" \
        "local address `buffer`.  " PYTE_SYNC_RET) \
    KW(transfer_sync, \
        "transfer_sync($self, /, target_hostname, buffer, peer_buffer_address, length, opcode,\n" \
        "              notify=None, transport_hint='')\n--\n\n" \
        "One transfer in direction `opcode` (TransferOpcode); with a TransferNotify, the\n" \
        "target receives it once the transfer has completed.  " PYTE_SYNC_RET) \
    KW(transfer_submit_write, \
        "transfer_submit_write($self, /, target_hostname, buffer, peer_buffer_address, length,\n" \
        "                      transport_hint='')\n--\n\n" \
        "Starts one write and returns its batch id for transfer_check_status(), or -1\n" \
        "on failure.") \
    KW(transfer_check_status, \
        "transfer_check_status($self, /, batch_id)\n--\n\n" \
        "State of a transfer_submit_write(): 1 completed, 0 in progress, -1 failed (also\n" \
        "for an unknown id), -2 timed out.  The batch id is freed on 1 and -1.") \
    KW(batch_transfer_sync_write, \
        "batch_transfer_sync_write($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                          lengths, transport_hint='')\n--\n\n" \
        "Writes each buffers[i] to peer_buffer_addresses[i] (lengths[i] bytes), as one\n" \
        "batch.  " PYTE_SYNC_RET "  Lists of different lengths give -1.") \
    KW(batch_transfer_sync_read, \
        "batch_transfer_sync_read($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                         lengths, transport_hint='')\n--\n\n" \
        "Reads each peer_buffer_addresses[i] into buffers[i] (lengths[i] bytes), as one\n" \
        "batch.  " PYTE_SYNC_RET "  Lists of different lengths give -1.") \
    KW(batch_transfer_sync, \
        "batch_transfer_sync($self, /, target_hostname, buffers, peer_buffer_addresses, lengths,\n" \
        "                    opcode, notify=None, transport_hint='')\n--\n\n" \
        "A batch in direction `opcode`, then the optional TransferNotify.  " PYTE_SYNC_RET) \
    KW(batch_transfer_async_write, \
        "batch_transfer_async_write($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                           lengths, transport_hint='')\n--\n\n" \
        "Starts a batch of writes.  " PYTE_ASYNC_RET) \
    KW(batch_transfer_async_read, \
        "batch_transfer_async_read($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                          lengths, transport_hint='')\n--\n\n" \
        "Starts a batch of reads.  " PYTE_ASYNC_RET) \
    KW(batch_transfer_async, \
        "batch_transfer_async($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                     lengths, opcode, transport_hint='')\n--\n\n" \
        "Starts a batch in direction `opcode`.  " PYTE_ASYNC_RET) \
    KW(get_batch_transfer_status, \
        "get_batch_transfer_status($self, /, batch_ids)\n--\n\n" \
        "Waits (sleeping, GIL released) until every batch has completed, one fails or\n" \
        "its deadline passes, and frees every given batch id once.  Returns 0 if all\n" \
        "completed, -1 otherwise (also for an unknown id).")

PYTE_TRANSFER_METHODS(PYTE_DECLARE_KW, PYTE_DECLARE_NOA)

#endif
