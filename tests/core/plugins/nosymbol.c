/* nosymbol.c - a shared object without te_plugin_init: refused. */
#include "te/plugin.h"

TE_PLUGIN_EXPORT int not_the_init_symbol(void)
{
    return 0;
}
