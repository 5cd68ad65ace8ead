/*  zllm — the program: an OpenAI-compatible LLM server built from actors.

    `zllm COMMAND [options]`; each command lives in its own file (cmd_*.c) and says its
    options with --help. See docs/cli.md.
*/
#include "commands.h"

#include <stdio.h>
#include <string.h>

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm COMMAND [options]\n"
        "\n"
        "An OpenAI-compatible LLM server for GGUF models.\n"
        "\n"
        "commands:\n"
        "  serve MODEL.gguf    serve /v1/completions and friends over HTTP (all actors in\n"
        "                      one process; devices may also join from other hosts)\n"
        "  worker MODEL.gguf   run one device worker for a scheduler elsewhere\n"
        "                      (zllm serve --worker-listen)\n"
        "  generate MODEL.gguf run the model directly on a prompt, with its speed\n"
        "  render-chat         print the prompt a chat template builds for a request\n"
        "  tokenize            print the token ids of a text\n"
        "  mkmodel             write a random-weight GGUF of a real model's shape\n"
        "  bench               load an OpenAI-compatible server and report its speed\n"
        "\n"
        "options:\n"
        "  -h, --help          show this help; `zllm COMMAND --help` shows a command's\n"
        "  --version           print the version\n");
}

int
main (int argc, char **argv)
{
    if (argc < 2) {
        s_usage (stderr);
        return 2;
    }
    const char *command = argv [1];
    if (strcmp (command, "serve") == 0)
        return cmd_serve (argc - 1, argv + 1);
    if (strcmp (command, "worker") == 0)
        return cmd_worker (argc - 1, argv + 1);
    if (strcmp (command, "render-chat") == 0)
        return cmd_render_chat (argc - 1, argv + 1);
    if (strcmp (command, "tokenize") == 0)
        return cmd_tokenize (argc - 1, argv + 1);
    if (strcmp (command, "generate") == 0)
        return cmd_generate (argc - 1, argv + 1);
    if (strcmp (command, "mkmodel") == 0)
        return cmd_mkmodel (argc - 1, argv + 1);
    if (strcmp (command, "bench") == 0)
        return cmd_bench (argc - 1, argv + 1);
    if (strcmp (command, "-h") == 0 || strcmp (command, "--help") == 0) {
        s_usage (stdout);
        return 0;
    }
    if (strcmp (command, "--version") == 0) {
        printf ("zllm %s\n", ZLLM_VERSION);
        return 0;
    }
    fprintf (stderr, "zllm: unknown command '%s'\n\n", command);
    s_usage (stderr);
    return 2;
}
