/*  device — names of devices, KIND:INDEX as in `--devices cpu:0,cpu:1`.

    This build has one kind, "cpu". Another kind (npu, cuda, ...) is refused with a
    message that says so, never mapped silently to the CPU.
*/
#ifndef ZLLM_DEVICE_H
#define ZLLM_DEVICE_H

#include <stddef.h>

//  Returns 0 when name is a device this build can run, else -1 with a message.
int
    device_check (const char *name, char *err, size_t err_size);

#endif
