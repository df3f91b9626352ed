/* cuda_methods.h - the *_on_cuda methods of cuda.c and
 * get_cuda_transfer_errors as X-macro entries (see pyte.h). */
#ifndef PYTE_CUDA_METHODS_H
#define PYTE_CUDA_METHODS_H

#define PYTE_ON_CUDA_DOC \
    "The transfer starts when the CUDA stream `stream_ptr` (an int cudaStream_t, e.g.\n"     \
    "torch.cuda.current_stream().cuda_stream; 0 = default stream) reaches this point;\n"   \
    "returns None at once.  Raises RuntimeError if the CUDA runtime is not available,\n"   \
    "the segment cannot be opened, the lists differ in length, cudaLaunchHostFunc fails,\n" \
    "or an earlier transfer on a CUDA stream failed and was not read yet.\n"                \
    "Unlike the original (which calls _exit(1)), a transfer that fails inside the stream\n" \
    "callback leaves the destination unmodified or partially written, logs an error and\n"  \
    "is recorded: get_cuda_transfer_errors() returns and clears the records, and until\n"   \
    "then every *_on_cuda call raises RuntimeError, so the failure cannot go unnoticed."

#define PYTE_CUDA_METHODS(KW, NOA) \
    KW(transfer_write_on_cuda, \
        "transfer_write_on_cuda($self, /, target_hostname, buffer, peer_buffer_address, length,\n" \
        "                       stream_ptr=0, transport_hint='')\n--\n\n" \
        "Writes `length` bytes at `buffer` to `peer_buffer_address` of the target, in\n" \
        "stream order.\n" PYTE_ON_CUDA_DOC) \
    KW(transfer_read_on_cuda, \
        "transfer_read_on_cuda($self, /, target_hostname, buffer, peer_buffer_address, length,\n" \
        "                      stream_ptr=0, transport_hint='')\n--\n\n" \
        "Reads `length` bytes at `peer_buffer_address` of the target into `buffer`, in\n" \
        "stream order.\n" PYTE_ON_CUDA_DOC) \
    KW(batch_transfer_write_on_cuda, \
        "batch_transfer_write_on_cuda($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                             lengths, stream_ptr=0, transport_hint='')\n--\n\n" \
        "A batch of writes in stream order.\n" PYTE_ON_CUDA_DOC) \
    KW(batch_transfer_read_on_cuda, \
        "batch_transfer_read_on_cuda($self, /, target_hostname, buffers, peer_buffer_addresses,\n" \
        "                            lengths, stream_ptr=0, transport_hint='')\n--\n\n" \
        "A batch of reads in stream order.\n" PYTE_ON_CUDA_DOC) \
    NOA(get_cuda_transfer_errors, \
        "get_cuda_transfer_errors($self, /)\n--\n\n" \
        "Extension: returns (and clears) the messages of transfers on CUDA streams that\n" \
        "failed since the last call, oldest first (at most 64 kept, then a count).  An empty\n" \
        "list means every *_on_cuda transfer that ran so far succeeded.")

PYTE_CUDA_METHODS(PYTE_DECLARE_KW, PYTE_DECLARE_NOA)

#endif
