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

//  zllm render-chat (--template FILE | --model GGUF) --request REQ.json: the prompt the
//  server would build for that chat request.
int
    cmd_render_chat (int argc, char **argv);

//  zllm tokenize --model GGUF [--special] [--no-bos] (TEXT | --file F): the token ids.
int
    cmd_tokenize (int argc, char **argv);

//  zllm generate MODEL.gguf --prompt TEXT [-n N]: the engine alone, with its speed.
int
    cmd_generate (int argc, char **argv);

//  zllm mkmodel --shape NAME --vocab VOCAB.gguf --type TYPE -o OUT.gguf: a random-weight
//  model of a real shape, for benchmarks.
int
    cmd_mkmodel (int argc, char **argv);

//  zllm bench --url URL [options]: a load generator for any OpenAI-compatible server.
int
    cmd_bench (int argc, char **argv);

#endif
