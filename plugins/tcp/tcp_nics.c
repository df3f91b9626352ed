/* tcp_nics.c - the interfaces the TCP transport may use (named by the device
 * filter of initialize and MC_TE_FILTERS), the "tcp_addresses" member that
 * publishes their addresses in the segment descriptor (Mooncake peers ignore
 * it), and the pairing of local and remote addresses into rails. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp.h"
#include "tcp_rail.h"

typedef struct nic_addr {
    int family;
    unsigned char addr[16], mask[16];
    char text[TCP_ADDR_LEN];
    char ifname[IF_NAMESIZE];
} nic_addr;

struct tcp_nics {
    int n;
    nic_addr a[TCP_MAX_RAILS];
};

/* Whether `name` is an item of the comma separated list (empty list: yes). */
static bool listed(const char *list, const char *name)
{
    if (!list || !list[strspn(list, " ,")])
        return true;
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        p += strspn(p, " ,");
        size_t item = strcspn(p, " ,");
        if (item == len && !strncmp(p, name, len))
            return true;
        p += item;
    }
    return false;
}

static bool blank(const char *list)
{
    return !list || !list[strspn(list, " ,")];
}

static bool keep_addr(const struct ifaddrs *ifa, nic_addr *out)
{
    const struct sockaddr *sa = ifa->ifa_addr, *nm = ifa->ifa_netmask;
    if (!sa || !nm || !(ifa->ifa_flags & IFF_UP))
        return false;
    size_t len;
    const void *a, *m;
    if (sa->sa_family == AF_INET) {
        a = &((const struct sockaddr_in *)sa)->sin_addr;
        m = &((const struct sockaddr_in *)nm)->sin_addr;
        len = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LINKLOCAL(a6)) /* needs a scope id: not advertised */
            return false;
        a = a6;
        m = &((const struct sockaddr_in6 *)nm)->sin6_addr;
        len = 16;
    } else {
        return false;
    }
    memset(out, 0, sizeof *out);
    out->family = sa->sa_family;
    memcpy(out->addr, a, len);
    memcpy(out->mask, m, len);
    return inet_ntop(out->family, out->addr, out->text, sizeof out->text) != NULL;
}

static bool has_ipv4(const struct ifaddrs *all, const char *name)
{
    for (const struct ifaddrs *ifa = all; ifa; ifa = ifa->ifa_next)
        if (ifa->ifa_addr && ifa->ifa_addr->sa_family == AF_INET && !strcmp(ifa->ifa_name, name))
            return true;
    return false;
}

/* One address per interface and family; IPv6 only where there is no IPv4,
 * so that one NIC is one rail. */
static bool wanted(const struct ifaddrs *all, const struct ifaddrs *ifa, const tcp_nics *n,
                   const char *device_filter, const char *env)
{
    if (!listed(device_filter, ifa->ifa_name) || !listed(env, ifa->ifa_name) || !ifa->ifa_addr)
        return false;
    if (ifa->ifa_addr->sa_family == AF_INET6 && has_ipv4(all, ifa->ifa_name))
        return false;
    for (int i = 0; i < n->n; i++)
        if (!strcmp(n->a[i].ifname, ifa->ifa_name) && n->a[i].family == ifa->ifa_addr->sa_family)
            return false;
    return true;
}

tcp_nics *tcp_nics_open(te_host *h, const char *device_filter)
{
    const char *env = te_host_table->config(h, "MC_TE_FILTERS");
    if (blank(device_filter) && blank(env))
        return NULL;
    struct ifaddrs *all = NULL;
    if (getifaddrs(&all) < 0)
        return NULL;
    tcp_nics *n = calloc(1, sizeof *n);
    for (struct ifaddrs *ifa = all; n && ifa && n->n < TCP_MAX_RAILS; ifa = ifa->ifa_next)
        if (wanted(all, ifa, n, device_filter, env) && keep_addr(ifa, &n->a[n->n])) {
            snprintf(n->a[n->n].ifname, sizeof n->a[n->n].ifname, "%s", ifa->ifa_name);
            te_host_table->log(h, TE_LOG_INFO, "tcp", "rail on %s (%s)", ifa->ifa_name,
                              n->a[n->n].text);
            n->n++;
        }
    freeifaddrs(all);
    if (n && n->n == 0) { /* the filters name no interface (RDMA devices): one route */
        free(n);
        n = NULL;
    }
    return n;
}

void tcp_nics_free(tcp_nics *n)
{
    free(n);
}

int tcp_nics_describe(const tcp_nics *n, json_t *obj)
{
    if (!n)
        return 0;
    json_t *arr = json_array();
    for (int i = 0; arr && i < n->n; i++)
        json_array_append_new(arr, json_string(n->a[i].text));
    return arr && json_object_set_new(obj, "tcp_addresses", arr) == 0 ? 0 : TE_ERR_MEMORY;
}

static bool same_subnet(const nic_addr *local, const char *remote)
{
    unsigned char r[16];
    if (inet_pton(local->family, remote, r) != 1)
        return false;
    size_t len = local->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < len; i++)
        if ((r[i] & local->mask[i]) != (local->addr[i] & local->mask[i]))
            return false;
    return true;
}

/* The peer's advertised addresses, else its RPC host. */
static int remote_addrs(json_t *d, const char *rpc_host, const char **out, int max)
{
    json_t *arr = json_object_get(d, "tcp_addresses");
    int n = 0;
    for (size_t i = 0; json_is_array(arr) && i < json_array_size(arr) && n < max; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (s && *s && strlen(s) < TCP_ADDR_LEN)
            out[n++] = s;
    }
    if (n == 0 && rpc_host && *rpc_host)
        out[n++] = rpc_host;
    return n;
}

int tcp_nics_rails(const tcp_nics *n, json_t *descriptor, const char *rpc_host,
                   tcp_rail_spec *out, int max)
{
    if (!n)
        return 0;
    const char *remote[TCP_MAX_RAILS];
    int nr = remote_addrs(descriptor, rpc_host, remote, TCP_MAX_RAILS), k = 0;
    for (int pass = 0; pass < 2 && k == 0; pass++)
        for (int i = 0; i < n->n; i++)
            for (int j = 0; j < nr && k < max; j++) {
                if (pass == 0 && !same_subnet(&n->a[i], remote[j]))
                    continue;
                snprintf(out[k].local, sizeof out[k].local, "%s", n->a[i].text);
                snprintf(out[k].remote, sizeof out[k].remote, "%s", remote[j]);
                k++;
            }
    return k;
}
