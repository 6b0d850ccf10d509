// syslet.h from C++: extern "C" linkage, the layout, `private` spelled private_.
#include <syslet.h>
#include <cstddef>
#include <cstdio>

static_assert(sizeof(syslet_uatom) == 88, "atom size");
static_assert(offsetof(syslet_uatom, ret_ptr) == 16, "ret_ptr");
static_assert(offsetof(syslet_uatom, arg_ptr) == 32, "arg_ptr");
static_assert(offsetof(syslet_uatom, private_) == 80, "private");
static_assert(offsetof(async_head_user, max_nr_threads) == 16, "max_nr_threads");

int main()
{
    unsigned long v = 1;
    std::printf("%lu %d\n", umem_add(&v, 41), __NR_async_exec);
    return 0;
}
