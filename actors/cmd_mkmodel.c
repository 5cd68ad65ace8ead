/*  cmd_mkmodel — `zllm mkmodel`: write a random-weight model of a real shape, for
    benchmarks (speed does not depend on the weights' values). The work is done by
    npu/mkmodel; this file reads the command line.
*/
#include "commands.h"
#include "cli.h"
#include "mkmodel.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm mkmodel --shape NAME --vocab VOCAB.gguf --type TYPE -o OUT.gguf [--seed N]\n"
        "\n"
        "Write a llama-architecture GGUF v3 model with random weights (normal, std 0.02;\n"
        "norms 1.0) at the shape of a real model, with the tokenizer of VOCAB.gguf and a\n"
        "ChatML chat template.\n"
        "\n"
        "  --shape NAME       the model's shape, one of:\n");
    for (size_t i = 0; i < mkmodel_shape_count (); i++) {
        const mkmodel_shape_t *shape = mkmodel_shape (i);
        fprintf (out, "                       %-13s %u layers, width %u, %u heads (%u KV), "
                 "FFN %u%s\n", shape->name, shape->n_layers, shape->dim, shape->n_heads,
                 shape->n_kv_heads, shape->ffn_dim, shape->tied_output? ", tied output": "");
    }
    fprintf (out,
        "  --vocab FILE       a GGUF whose tokenizer.* keys are copied (its token count is\n"
        "                     the model's vocabulary size), e.g. models/vocab/ggml-vocab-*.gguf\n"
        "  --type TYPE        weight type: F32, F16, BF16, Q8_0, Q4_0, Q4_K or Q6_K. Norms are\n"
        "                     always F32. Matrices whose rows do not fit a K-quant's 256-wide\n"
        "                     blocks fall back (Q4_K to Q4_0, Q6_K to Q8_0); with Q4_K the\n"
        "                     output matrix is Q6_K, as in llama.cpp's Q4_K files\n"
        "  -o, --output FILE  the GGUF to write (written beside it, then renamed onto it)\n"
        "  --seed N           seed of the random weights (default 1); the same arguments\n"
        "                     always give the same file\n"
        "  -h, --help         this help\n");
}

static int
s_parse_type (const char *text, ggml_type_t *type)
{
    static const ggml_type_t types [] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
        GGML_TYPE_Q4_K, GGML_TYPE_Q6_K
    };
    for (size_t i = 0; i < sizeof types / sizeof types [0]; i++)
        if (strcasecmp (text, ggml_type_name (types [i])) == 0) {
            *type = types [i];
            return 0;
        }
    return -1;
}

int
cmd_mkmodel (int argc, char **argv)
{
    const char *shape_name = NULL;
    const char *vocab_path = NULL;
    const char *type_name = NULL;
    const char *out_path = NULL;
    uint64_t seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *flag = argv [i];
        if (strcmp (flag, "-h") == 0 || strcmp (flag, "--help") == 0) {
            s_usage (stdout);
            return 0;
        }
        bool takes_value = strcmp (flag, "--shape") == 0 || strcmp (flag, "--vocab") == 0
                        || strcmp (flag, "--type") == 0 || strcmp (flag, "-o") == 0
                        || strcmp (flag, "--output") == 0 || strcmp (flag, "--seed") == 0;
        if (!takes_value) {
            fprintf (stderr, "zllm mkmodel: unknown argument '%s' (see zllm mkmodel --help)\n",
                     flag);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "zllm mkmodel: %s needs a value\n", flag);
            return 2;
        }
        const char *value = argv [++i];
        if (strcmp (flag, "--shape") == 0)
            shape_name = value;
        else
        if (strcmp (flag, "--vocab") == 0)
            vocab_path = value;
        else
        if (strcmp (flag, "--type") == 0)
            type_name = value;
        else
        if (strcmp (flag, "--seed") == 0) {
            if (cli_parse_uint ("--seed", value, 0, UINT64_MAX, &seed))
                return 2;
        }
        else
            out_path = value;
    }
    if (!shape_name || !vocab_path || !type_name || !out_path) {
        fprintf (stderr, "zllm mkmodel: --shape, --vocab, --type and -o are required "
                 "(see zllm mkmodel --help)\n");
        return 2;
    }
    const mkmodel_shape_t *shape = mkmodel_find_shape (shape_name);
    if (!shape) {
        fprintf (stderr, "zllm mkmodel: --shape: unknown shape '%s' (one of:", shape_name);
        for (size_t i = 0; i < mkmodel_shape_count (); i++)
            fprintf (stderr, " %s", mkmodel_shape (i)->name);
        fprintf (stderr, ")\n");
        return 2;
    }
    ggml_type_t type;
    if (s_parse_type (type_name, &type)) {
        fprintf (stderr, "zllm mkmodel: --type: '%s' is not one of F32, F16, BF16, Q8_0, "
                 "Q4_0, Q4_K, Q6_K\n", type_name);
        return 2;
    }

    fprintf (stderr, "zllm mkmodel: writing %s (%s, %s, seed %llu)\n", out_path, shape->name,
             ggml_type_name (type), (unsigned long long) seed);
    struct timespec start, end;
    clock_gettime (CLOCK_MONOTONIC, &start);
    char err [512] = "";
    if (mkmodel_write (shape, vocab_path, type, seed, out_path, err, sizeof err)) {
        fprintf (stderr, "zllm mkmodel: %s\n", err);
        return 1;
    }
    clock_gettime (CLOCK_MONOTONIC, &end);
    struct stat st;
    long long size = stat (out_path, &st) == 0? (long long) st.st_size: -1;
    double seconds = (double) (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    fprintf (stderr, "zllm mkmodel: wrote %s: %lld bytes in %.1f s\n", out_path, size, seconds);
    return 0;
}
