/* fake_cudart.c - the fake libcudart.so.13: empty; it depends on the fake
 * libcuda.so.1 (fake_cuda.c), where dlsym finds every cuda* symbol. */
int te_fake_cudart_marker(void);
int te_fake_cudart_marker(void)
{
    return 13;
}
