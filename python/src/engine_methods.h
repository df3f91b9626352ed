/* engine_methods.h - the TransferEngine methods of engine_methods.c as
 * X-macro entries (see pyte.h): initialization, engine information, managed
 * buffers, bytes I/O, registration, topology, notifications and probes. */
#ifndef PYTE_ENGINE_METHODS_H
#define PYTE_ENGINE_METHODS_H

#define PYTE_ENGINE_METHODS(KW, NOA) \
    KW(initialize, \
        "initialize($self, /, local_hostname, metadata_server, protocol, device_name='')\n--\n\n" \
        "Initializes the engine.  local_hostname is 'host[:port]' (in P2P mode the port\n" \
        "is ignored and the segment name becomes 'host:<rpc port>'); metadata_server is\n" \
        "'P2PHANDSHAKE', 'etcd://h:p', 'http://url' or a bare 'h:p' (etcd); protocol\n" \
        "names the transport ('tcp', 'rdma': without a usable RDMA device 'rdma' falls\n" \
        "back to 'tcp'); device_name is a comma separated NIC filter.\n" \
        "Returns 0 on success, -1 on failure (see mooncake.engine.last_error()).") \
    KW(initialize_ext, \
        "initialize_ext($self, /, local_hostname, metadata_server, protocol, device_name,\n" \
        "               metadata_type)\n--\n\n" \
        "Like initialize(), with the metadata store named explicitly: metadata_type is\n" \
        "'etcd', 'http', 'p2p', ... and applies when metadata_server has no '://'.\n" \
        "Returns 0 on success, -1 on failure.") \
    NOA(get_rpc_port, \
        "get_rpc_port($self, /)\n--\n\n" \
        "The port of the engine's RPC (handshake/metadata/notify) listener; in P2P mode\n" \
        "peers address this engine as 'host:<this port>'.  Negative before initialize().") \
    NOA(get_engine, \
        "get_engine($self, /)\n--\n\n" \
        "The inner engine (InnerTransferEngine): int(x) / x.address is the C\n" \
        "te_engine pointer, kept alive as long as the returned object lives.") \
    NOA(get_engine_ptr, \
        "get_engine_ptr($self, /)\n--\n\nThe C te_engine pointer as an int.") \
    KW(get_first_buffer_address, \
        "get_first_buffer_address($self, /, segment_name)\n--\n\n" \
        "Address of the first buffer (registration order) of a segment, this engine's\n" \
        "own name included; 0 if the segment is unknown or has no buffer.") \
    KW(allocate_managed_buffer, \
        "allocate_managed_buffer($self, /, length)\n--\n\n" \
        "Allocates registered memory from size classes 8 KiB << i (up to 256 MiB),\n" \
        "carved from registered regions of MC_MANAGED_REGION_MB MiB (default 256);\n" \
        "larger requests get their own registration.  Returns the address, or 0.") \
    KW(free_managed_buffer, \
        "free_managed_buffer($self, /, buffer_addr, length)\n--\n\n" \
        "Returns a managed buffer; length must be the allocated length (same size class).\n" \
        "Returns 0, -3 for an address that is not a live managed buffer, -1 for a length\n" \
        "of another size class.") \
    KW(write_bytes_to_buffer, \
        "write_bytes_to_buffer($self, /, dest_address, src_ptr, length)\n--\n\n" \
        "Copies the first `length` bytes of src_ptr (a str, written as UTF-8, or any\n" \
        "bytes-like object) to\n" \
        "dest_address.  Returns 0.  Raises ValueError if length exceeds src_ptr or the\n" \
        "destination is not inside memory registered or allocated through this engine.") \
    KW(read_bytes_from_buffer, \
        "read_bytes_from_buffer($self, /, source_address, length)\n--\n\n" \
        "Returns `length` bytes read at source_address.  Raises ValueError if the range\n" \
        "is not inside memory registered or allocated through this engine.") \
    KW(register_memory, \
        "register_memory($self, /, buffer_addr, capacity, location='*')\n--\n\n" \
        "Registers [buffer_addr, +capacity) for transfers and publishes it.  location is\n" \
        "'cpu:N', 'cuda:N' or '*' (detect).  Returns 0, -1 for a zero length or NULL\n" \
        "address, -7 if it overlaps a registered range, another negative code otherwise.") \
    KW(unregister_memory, \
        "unregister_memory($self, /, buffer_addr)\n--\n\n" \
        "Unregisters the range starting at buffer_addr after transfers using it end.\n" \
        "Returns 0, or -3 if no registered range starts there.") \
    KW(batch_register_memory, \
        "batch_register_memory($self, /, buffer_addresses, capacities, location='*')\n--\n\n" \
        "Registers several ranges, all or nothing, with one metadata publish.  Returns 0,\n" \
        "-1 if the lists differ in length, or register_memory's codes.") \
    KW(batch_unregister_memory, \
        "batch_unregister_memory($self, /, buffer_addresses)\n--\n\n" \
        "Unregisters several ranges with one metadata publish.  Returns 0, or the first\n" \
        "failure (-3 for an address that is not registered; the others are still removed).") \
    KW(get_local_topology, \
        "get_local_topology($self, /, device_name=None)\n--\n\n" \
        "The local NIC topology (priority matrix) as JSON text, filtered by a comma\n" \
        "separated device list; '{}' when nothing can be discovered.") \
    NOA(get_notifies, \
        "get_notifies($self, /)\n--\n\n" \
        "Removes and returns every notification received so far, oldest first, as a\n" \
        "list of TransferNotify.") \
    NOA(get_metrics, \
        "get_metrics($self, /)\n--\n\n" \
        "The engine's counters as a dict (an addition beyond the original API): bytes and\n" \
        "requests per transport and per peer segment, failures by cause, retries,\n" \
        "in-flight requests, registered bytes and a latency histogram (docs/metrics.md).\n" \
        "Raises RuntimeError before initialize().") \
    KW(get_segment_transport, \
        "get_segment_transport($self, /, segment_name)\n--\n\n" \
        "The name of the transport that carries requests to a target ('tcp', 'shm',\n" \
        "'rdma', 'nvlink'; an addition beyond the original API): 'shm' for a target on\n" \
        "this host unless MC_TE_SAME_HOST_TRANSPORT=0.  Raises RuntimeError when the\n" \
        "target cannot be resolved or before initialize().") \
    KW(send_probe, \
        "send_probe($self, /, peer_server_name)\n--\n\n" \
        "Checks that a peer's RPC port answers.  Returns 0, -102 (ERR_SOCKET) when it\n" \
        "cannot be connected to, -200 when a metadata server does not know the peer,\n" \
        "or another negative code.") \
    KW(warmup_efa_segment, \
        "warmup_efa_segment($self, /, segment_name)\n--\n\nNo EFA here: returns 0.")

PYTE_ENGINE_METHODS(PYTE_DECLARE_KW, PYTE_DECLARE_NOA)

#endif
