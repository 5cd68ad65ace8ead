/*  commands — the subcommands of the zllm program. Each takes the arguments after its
    name (argv[0] is the subcommand) and returns the process exit status: 0 success,
    1 failure at run time, 2 bad command line.
*/
#ifndef ZLLM_COMMANDS_H
#define ZLLM_COMMANDS_H

//  zllm serve MODEL.gguf [options]: the whole server in one process.
int
    cmd_serve (int argc, char **argv);

//  zllm worker MODEL.gguf --connect ENDPOINT [options]: one device for a remote scheduler.
int
    cmd_worker (int argc, char **argv);

#endif
