/*  cmd_mkmodel — placeholder while the module is written (replaced in this change). */
#include "commands.h"
#include <stdio.h>

int
cmd_mkmodel (int argc, char **argv)
{
    (void) argc;
    (void) argv;
    fprintf (stderr, "zllm: not built yet\n");
    return 1;
}
