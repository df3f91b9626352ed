/* test_topology.c - the NIC priority matrix from hwloc XML hosts and from
 * this machine, MC_CUSTOM_TOPO_JSON and its validation, the NIC order for a
 * location, and memory location detection. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "te/te.h"
#include "topology.h"
#include "topology_model.h"
#include "test_util.h"

#define XML_8GPU TE_TOPO_DATA_DIR "/2socket-4nic-8gpu.xml"
#define XML_NO_NIC TE_TOPO_DATA_DIR "/2socket-no-nic.xml"
#define XML_RXE TE_TOPO_DATA_DIR "/1numa-virtual-nic.xml"

static void clean_env(void)
{
    unsetenv("MC_TE_FILTERS");
    unsetenv("MC_CUSTOM_TOPO_JSON");
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("HWLOC_XMLFILE");
}

static void check_nics(const char *filter, const char *location, const char *expect)
{
    char *json = NULL;
    ck_assert_msg(te_topology_nics_json(filter, location, &json) == 0, "%s", te_last_error());
    ck_assert_msg(strcmp(json, expect) == 0, "location %s: got %s, want %s",
                  location ? location : "(null)", json, expect);
    free(json);
}

static char tmp_path[64];

static const char *write_tmp(const char *content)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/te_topo_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return tmp_path;
}

static int sys_has_node(int n)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/sys/devices/system/node/node%d", n);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

#ifdef TE_HAVE_HWLOC

/* The 2-socket host: each GPU prefers the NIC behind its own PCIe switch,
 * each CPU node the two NICs of its socket. */
#define GPU_ROW(n, pref, o1, o2, o3)                                                              \
    "\"cuda:" #n "\":[[\"mlx5_" #pref "\"],[\"mlx5_" #o1 "\",\"mlx5_" #o2 "\",\"mlx5_" #o3 "\"]]"
static const char *const expect_8gpu =
    "{\"cpu:0\":[[\"mlx5_0\",\"mlx5_1\"],[\"mlx5_2\",\"mlx5_3\"]],"
    "\"cpu:1\":[[\"mlx5_2\",\"mlx5_3\"],[\"mlx5_0\",\"mlx5_1\"]]," GPU_ROW(0, 0, 1, 2, 3) ","
    GPU_ROW(1, 0, 1, 2, 3) "," GPU_ROW(2, 1, 0, 2, 3) "," GPU_ROW(3, 1, 0, 2, 3) ","
    GPU_ROW(4, 2, 0, 1, 3) "," GPU_ROW(5, 2, 0, 1, 3) "," GPU_ROW(6, 3, 0, 1, 2) ","
    GPU_ROW(7, 3, 0, 1, 2) "}";

/* te_topology_json_from_xml, checked against the exact text. */
static void check_xml(const char *xml, const char *filter, const char *expect)
{
    char *json = NULL;
    ck_assert_msg(te_topology_json_from_xml(xml, filter, &json) == 0, "%s: %s", xml,
                  te_last_error());
    ck_assert_str_eq(json, expect);
    free(json);
}

START_TEST(xml_gpu_prefers_nic_behind_its_switch)
{
    clean_env();
    check_xml(XML_8GPU, NULL, expect_8gpu);
    check_xml(XML_8GPU, "", expect_8gpu);
}
END_TEST

START_TEST(xml_host_without_nics_lists_every_node_and_gpu)
{
    clean_env();
    check_xml(XML_NO_NIC, NULL, "{\"cpu:0\":[[],[]],\"cpu:1\":[[],[]],\"cuda:0\":[[],[]]}");
}
END_TEST

START_TEST(xml_virtual_nic_on_single_node_is_preferred)
{
    clean_env();
    check_xml(XML_RXE, NULL, "{\"cpu:0\":[[\"rxe0\"],[]]}");
}
END_TEST

START_TEST(xml_filters_apply_before_choosing)
{
    clean_env();
    /* Both lists must accept a NIC; blanks around names are ignored. */
    check_xml(XML_8GPU, " mlx5_1 , mlx5_2,",
              "{\"cpu:0\":[[\"mlx5_1\"],[\"mlx5_2\"]],\"cpu:1\":[[\"mlx5_2\"],[\"mlx5_1\"]],"
              "\"cuda:0\":[[\"mlx5_1\"],[\"mlx5_2\"]],\"cuda:1\":[[\"mlx5_1\"],[\"mlx5_2\"]],"
              "\"cuda:2\":[[\"mlx5_1\"],[\"mlx5_2\"]],\"cuda:3\":[[\"mlx5_1\"],[\"mlx5_2\"]],"
              "\"cuda:4\":[[\"mlx5_2\"],[\"mlx5_1\"]],\"cuda:5\":[[\"mlx5_2\"],[\"mlx5_1\"]],"
              "\"cuda:6\":[[\"mlx5_2\"],[\"mlx5_1\"]],\"cuda:7\":[[\"mlx5_2\"],[\"mlx5_1\"]]}");
    /* No NIC left on the GPUs' socket: the nearest of all the others. */
    setenv("MC_TE_FILTERS", "mlx5_2,mlx5_3", 1);
    check_xml(XML_8GPU, "mlx5_0,mlx5_2",
              "{\"cpu:0\":[[],[\"mlx5_2\"]],\"cpu:1\":[[\"mlx5_2\"],[]],"
              "\"cuda:0\":[[\"mlx5_2\"],[]],\"cuda:1\":[[\"mlx5_2\"],[]],"
              "\"cuda:2\":[[\"mlx5_2\"],[]],\"cuda:3\":[[\"mlx5_2\"],[]],"
              "\"cuda:4\":[[\"mlx5_2\"],[]],\"cuda:5\":[[\"mlx5_2\"],[]],"
              "\"cuda:6\":[[\"mlx5_2\"],[]],\"cuda:7\":[[\"mlx5_2\"],[]]}");
    /* Names match exactly, not by prefix. */
    check_xml(XML_8GPU, "mlx5", "{\"cpu:0\":[[],[]],\"cpu:1\":[[],[]],\"cuda:0\":[[],[]],"
                                "\"cuda:1\":[[],[]],\"cuda:2\":[[],[]],\"cuda:3\":[[],[]],"
                                "\"cuda:4\":[[],[]],\"cuda:5\":[[],[]],\"cuda:6\":[[],[]],"
                                "\"cuda:7\":[[],[]]}");
}
END_TEST

START_TEST(xml_cuda_visible_devices_renumbers_gpus)
{
    clean_env();
    setenv("CUDA_VISIBLE_DEVICES", "6,1,9,2", 1); /* stops at the invalid 9 */
    check_xml(XML_8GPU, NULL,
              "{\"cpu:0\":[[\"mlx5_0\",\"mlx5_1\"],[\"mlx5_2\",\"mlx5_3\"]],"
              "\"cpu:1\":[[\"mlx5_2\",\"mlx5_3\"],[\"mlx5_0\",\"mlx5_1\"]]," GPU_ROW(0, 3, 0, 1, 2)
              "," GPU_ROW(1, 0, 1, 2, 3) "}");
    setenv("CUDA_VISIBLE_DEVICES", "GPU-8f6a2c1e-0000", 1); /* needs NVML: PCI order */
    check_xml(XML_8GPU, NULL, expect_8gpu);
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    check_xml(XML_8GPU, NULL,
              "{\"cpu:0\":[[\"mlx5_0\",\"mlx5_1\"],[\"mlx5_2\",\"mlx5_3\"]],"
              "\"cpu:1\":[[\"mlx5_2\",\"mlx5_3\"],[\"mlx5_0\",\"mlx5_1\"]]}");
}
END_TEST

START_TEST(xml_missing_or_bad_file_fails)
{
    char *json = (char *)"x";
    clean_env();
    ck_assert_int_eq(te_topology_json_from_xml("/nonexistent/topo.xml", NULL, &json),
                     TE_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(json);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "/nonexistent/topo.xml"));
    const char *path = write_tmp("<topology><object");
    ck_assert_int_lt(te_topology_json_from_xml(path, NULL, &json), 0);
    unlink(path);
    ck_assert_int_eq(te_topology_json_from_xml(NULL, NULL, &json), TE_ERR_INVALID_ARGUMENT);
}
END_TEST

/* Live discovery reads HWLOC_XMLFILE on its first use in the process; Check
 * forks each test (CK_FORK=yes, set by the build), so this test has its own. */
START_TEST(nics_for_location_follow_the_matrix)
{
    clean_env();
    setenv("HWLOC_XMLFILE", XML_8GPU, 1);
    char *json = NULL;
    ck_assert_int_eq(te_topology_local_json(NULL, &json), 0);
    ck_assert_str_eq(json, expect_8gpu);
    free(json);
    check_nics(NULL, "cpu:1", "[\"mlx5_2\",\"mlx5_3\",\"mlx5_0\",\"mlx5_1\"]");
    check_nics(NULL, "cuda:2", "[\"mlx5_1\",\"mlx5_0\",\"mlx5_2\",\"mlx5_3\"]");
    check_nics(NULL, "cuda:7", "[\"mlx5_3\",\"mlx5_0\",\"mlx5_1\",\"mlx5_2\"]");
    check_nics(NULL, "*", "[\"mlx5_0\",\"mlx5_1\",\"mlx5_2\",\"mlx5_3\"]");
    check_nics(NULL, "cuda:42", "[\"mlx5_0\",\"mlx5_1\",\"mlx5_2\",\"mlx5_3\"]");
    check_nics("mlx5_3,mlx5_0", "cuda:2", "[\"mlx5_0\",\"mlx5_3\"]");
    check_nics("mlx5_3,mlx5_0", "cpu:1", "[\"mlx5_3\",\"mlx5_0\"]");
}
END_TEST

#endif /* TE_HAVE_HWLOC */

START_TEST(this_host_has_an_entry_per_numa_node)
{
    clean_env();
    char *json = NULL, *again = NULL;
    ck_assert_msg(te_get_local_topology(NULL, &json) == 0, "%s", te_last_error());
    json_error_t err;
    json_t *root = json_loads(json, 0, &err);
    ck_assert_msg(json_is_object(root), "%s: %s", json, err.text);
    int nodes = 0;
    for (int n = 0; n < 4096; n++) {
        char key[32];
        if (!sys_has_node(n))
            continue;
        nodes++;
        snprintf(key, sizeof key, "cpu:%d", n);
        json_t *v = json_object_get(root, key);
        ck_assert_msg(json_is_array(v) && json_array_size(v) == 2, "%s missing in %s", key, json);
        ck_assert(json_is_array(json_array_get(v, 0)) && json_is_array(json_array_get(v, 1)));
    }
    ck_assert_int_ge(nodes, 1);
    /* Every NIC is in each entry, preferred or available. */
    const char *key;
    json_t *v;
    size_t total = json_array_size(json_array_get(json_object_get(root, "cpu:0"), 0)) +
                   json_array_size(json_array_get(json_object_get(root, "cpu:0"), 1));
    json_object_foreach(root, key, v) {
        ck_assert_uint_eq(json_array_size(json_array_get(v, 0)) +
                              json_array_size(json_array_get(v, 1)),
                          total);
    }
    ck_assert_int_eq(te_topology_local_json("", &again), 0);
    ck_assert_str_eq(json, again);
    json_decref(root);
    free(json);
    free(again);
}
END_TEST

START_TEST(fallback_lists_allowed_numa_nodes)
{
    te_topo_model m;
    ck_assert_int_eq(te_topo_model_fallback(&m), 0);
    ck_assert_int_ge(m.numa_count, 1);
    ck_assert_int_eq(m.nic_count, 0);
    ck_assert_int_eq(m.gpu_count, 0);
    for (int i = 0; i < m.numa_count; i++) {
        ck_assert_msg(sys_has_node(m.numa_ids[i]), "node %d", m.numa_ids[i]);
        ck_assert(i == 0 || m.numa_ids[i] > m.numa_ids[i - 1]);
    }
    te_topo_model_free(&m);
}
END_TEST

START_TEST(custom_file_replaces_discovery)
{
    clean_env();
    const char *path = write_tmp("{\"cuda:0\": [[\"d\"], [\"a\"]],\n"
                                 " \"cpu:1\": [[\"c\"], [\"a\", \"b\"]],\n"
                                 " \"cpu:0\": [[\"a\", \"b\"], [\"c\"]],\n"
                                 " \"cpu:2\": [[], []]}\n");
    setenv("MC_CUSTOM_TOPO_JSON", path, 1);
    setenv("MC_TE_FILTERS", "zzz", 1); /* the file is used as written */
    char *json = NULL;
    ck_assert_int_eq(te_topology_local_json("a", &json), 0);
    ck_assert_str_eq(json, "{\"cpu:0\":[[\"a\",\"b\"],[\"c\"]],\"cpu:1\":[[\"c\"],[\"a\",\"b\"]],"
                           "\"cpu:2\":[[],[]],\"cuda:0\":[[\"d\"],[\"a\"]]}");
    free(json);
    check_nics(NULL, "cpu:0", "[\"a\",\"b\",\"c\"]");
    check_nics(NULL, "cpu:1", "[\"c\",\"a\",\"b\"]");
    check_nics(NULL, "cuda:0", "[\"d\",\"a\"]");
    /* "*", NULL, unknown and empty entries: all preferred first, in key order. */
    check_nics(NULL, "*", "[\"a\",\"b\",\"c\",\"d\"]");
    check_nics(NULL, NULL, "[\"a\",\"b\",\"c\",\"d\"]");
    check_nics(NULL, "cuda:5", "[\"a\",\"b\",\"c\",\"d\"]");
    check_nics(NULL, "cpu:2", "[\"a\",\"b\",\"c\",\"d\"]");
    unlink(path);
}
END_TEST

/* Each malformed content must fail with TE_ERR_MALFORMED_JSON and a message
 * naming the file and the problem. */
static void check_bad_custom(const char *content, const char *problem)
{
    const char *path = write_tmp(content);
    char *json = (char *)"x";
    setenv("MC_CUSTOM_TOPO_JSON", path, 1);
    ck_assert_int_eq(te_topology_local_json(NULL, &json), TE_ERR_MALFORMED_JSON);
    ck_assert_ptr_null(json);
    ck_assert_msg(strstr(te_last_error(), path) && strstr(te_last_error(), problem),
                  "error \"%s\" should name %s and \"%s\"", te_last_error(), path, problem);
    ck_assert_int_eq(te_topology_nics_json(NULL, "cpu:0", &json), TE_ERR_MALFORMED_JSON);
    unlink(path);
}

START_TEST(custom_file_is_validated)
{
    clean_env();
    check_bad_custom("{\"cpu:0\": [[\"a\"], [\"b\"], []]}", "\"cpu:0\" holds 3 lists");
    check_bad_custom("{\"cpu:0\": [[\"a\"]]}", "holds 1 lists");
    check_bad_custom("{\"cpu:0\": [[\"a\", 7], []]}", "item 1 of list 0 is not a string");
    check_bad_custom("{\"cpu:0\": [[], {}]}", "list 1 is not an array");
    check_bad_custom("{\"cpu:0\": \"mlx5_0\"}", "is not an array");
    check_bad_custom("[[\"a\"], [\"b\"]]", "expected an object");
    check_bad_custom("{\"cpu:0\": [[\"a\"], []]", "line");
    check_bad_custom("{\"cpu:0\": [[], []], \"cpu:0\": [[], []]}", "duplicate");
}
END_TEST

START_TEST(custom_file_missing_fails)
{
    clean_env();
    char *json = (char *)"x";
    setenv("MC_CUSTOM_TOPO_JSON", "/nonexistent/topo.json", 1);
    ck_assert_int_eq(te_topology_local_json(NULL, &json), TE_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(json);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "/nonexistent/topo.json"));
    ck_assert_int_eq(te_get_local_topology(NULL, &json), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_topology_nics_json(NULL, "*", &json), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_topology_local_json(NULL, NULL), TE_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(memory_location_of_host_memory)
{
    char loc[64];
    size_t len = 1 << 20;
    char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    memset(buf, 1, len);
    ck_assert_int_eq(te_topology_memory_location(buf + 100, len - 100, loc, sizeof loc), 0);
    ck_assert_msg(strncmp(loc, "cpu:", 4) == 0 && sys_has_node(atoi(loc + 4)), "got %s", loc);
    free(buf);
    int on_stack = 1;
    ck_assert_int_eq(te_topology_memory_location(&on_stack, sizeof on_stack, loc, sizeof loc), 0);
    ck_assert_msg(strncmp(loc, "cpu:", 4) == 0, "got %s", loc);
    /* A page never touched has no node yet, and we must not touch it. */
    long page = sysconf(_SC_PAGESIZE);
    char *fresh = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
    ck_assert_ptr_ne(fresh, MAP_FAILED);
    ck_assert_int_eq(te_topology_memory_location(fresh, (size_t)page, loc, sizeof loc), 0);
    ck_assert_str_eq(loc, "*");
    munmap(fresh, (size_t)page);
    ck_assert_int_eq(te_topology_memory_location(NULL, 1, loc, sizeof loc),
                     TE_ERR_INVALID_ARGUMENT);
    ck_assert_str_eq(loc, "*");
    ck_assert_int_eq(te_topology_memory_location(loc, 1, NULL, 0), TE_ERR_INVALID_ARGUMENT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("topology");
    TCase *tc = tcase_create("topology");
#ifdef TE_HAVE_HWLOC
    tcase_add_test(tc, xml_gpu_prefers_nic_behind_its_switch);
    tcase_add_test(tc, xml_host_without_nics_lists_every_node_and_gpu);
    tcase_add_test(tc, xml_virtual_nic_on_single_node_is_preferred);
    tcase_add_test(tc, xml_filters_apply_before_choosing);
    tcase_add_test(tc, xml_cuda_visible_devices_renumbers_gpus);
    tcase_add_test(tc, xml_missing_or_bad_file_fails);
    tcase_add_test(tc, nics_for_location_follow_the_matrix);
#else
    fprintf(stderr, "test_topology: built without hwloc, XML topology tests skipped\n");
#endif
    tcase_add_test(tc, this_host_has_an_entry_per_numa_node);
    tcase_add_test(tc, fallback_lists_allowed_numa_nodes);
    tcase_add_test(tc, custom_file_replaces_discovery);
    tcase_add_test(tc, custom_file_is_validated);
    tcase_add_test(tc, custom_file_missing_fails);
    tcase_add_test(tc, memory_location_of_host_memory);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
