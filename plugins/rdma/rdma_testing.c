/* rdma_testing.c - the test seam of the RDMA transport.  Compiled only into
 * the test build of the plugin (tests/rdma/CMakeLists.txt, with
 * TE_RDMA_TESTING, never installed): the shipped libte_rdma.so reads no test
 * switch.  A test sets in its environment:
 *   TE_RDMA_TEST_LOSE_READ=<n>  every n-th successful READ completion on a
 *       soft-RoCE device that was its QP's last WR on the wire is made what
 *       rdma_rxe's completer error path makes of one (rxe_comp.c, Linux
 *       6.1): its bytes are zeroed (the data never came) and its QP is moved
 *       to ERR after the engine polled the success, as when the completer's
 *       CPU stalls between the two.  Only the last WR: rxe fails
 *       the QP before it completes anything after the bogus success, and a
 *       later WR may have completed already when this seam runs. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rdma.h"

bool rdma_testing_lose_read(rdma_inst *in, rdma_qp *q, te_slice *s)
{
    static atomic_uint reads;
    const char *v = te_host_table->config(in->host, "TE_RDMA_TEST_LOSE_READ");
    unsigned every = v ? (unsigned)strtoul(v, NULL, 10) : 0;
    if (!every || s->opcode != TE_OP_READ || !q->ep->ctx->check_success || q->outstanding ||
        (atomic_fetch_add(&reads, 1) + 1) % every)
        return false;
    memset(s->local, 0, s->length);
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
    ibv_modify_qp(q->qp, &a, IBV_QP_STATE);
    RLOG(in, TE_LOG_INFO, "test seam: a read on QP %u made a lost one", q->qp->qp_num);
    return true;
}
