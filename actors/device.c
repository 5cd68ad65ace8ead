/*  device — names of devices, KIND:INDEX. See device.h. */
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEVICE_INDEX 1023

int
device_check (const char *name, char *err, size_t err_size)
{
    const char *colon = strchr (name, ':');
    if (!colon || colon == name) {
        snprintf (err, err_size, "device '%s' is not of the form KIND:INDEX (e.g. cpu:0)",
                  name);
        return -1;
    }
    char *end = NULL;
    long index = strtol (colon + 1, &end, 10);
    if (colon [1] < '0' || colon [1] > '9' || *end != 0 || index < 0
    ||  index > MAX_DEVICE_INDEX) {
        snprintf (err, err_size, "device '%s' has no valid index (0 to %d)", name,
                  MAX_DEVICE_INDEX);
        return -1;
    }
    if ((size_t) (colon - name) != 3 || strncmp (name, "cpu", 3) != 0) {
        snprintf (err, err_size, "device kind '%.*s' is not built into this zllm "
                  "(it runs on: cpu)", (int) (colon - name), name);
        return -1;
    }
    return 0;
}
