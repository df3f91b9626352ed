/* connstr.h - how initialize() turns its metadata arguments into a store
 * plugin name and connection string; exposed for unit tests and fuzzing. */
#ifndef TE_CORE_CONNSTR_H
#define TE_CORE_CONNSTR_H

#include <stddef.h>

/* server/type as given to te_engine_initialize (type may be NULL).  Writes
 * "metadata_<scheme>" into plugin and points *conn into server.  0, or
 * TE_ERR_INVALID_ARGUMENT for an empty server or a bad scheme. */
int te_choose_metadata(const char *server, const char *type, char *plugin, size_t plen,
                       const char **conn);

#endif
