/*  cmd_generate — `zllm generate MODEL.gguf --prompt TEXT -n N`: the engine alone, no
    server: tokenize the prompt, prefill it, decode N tokens, print the text (and the ids
    with --ids), and how fast prefill and decoding ran.

    It is the same code path a worker runs for one sequence (model_forward, then
    sampler_sample), so its timings are the engine's own, without actors or HTTP.
*/
#include "commands.h"
#include "cli.h"
#include "detok.h"
#include "gguf.h"
#include "model.h"
#include "sampler.h"
#include "vocab.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm generate MODEL.gguf --prompt TEXT [-n N] [options]\n"
        "\n"
        "Run the model directly (no server): print the continuation of TEXT, then the\n"
        "prompt and generation speed on stderr.\n"
        "\n"
        "options:\n"
        "  --prompt TEXT       the prompt (special tokens in it are recognised)\n"
        "  -n, --n-predict N   tokens to generate (default 32)\n"
        "  --temperature T     0 (default) is greedy\n"
        "  --seed S            the sampler's seed (default 0)\n"
        "  --ignore-eos        go on after the end-of-sequence token\n"
        "  --ids               also print the prompt and generated token ids\n"
        "  --max-model-len N   context length (default: prompt + N)\n"
        "  --threads N         compute threads (default 1, or $ZLLM_THREADS)\n"
        "  -h, --help          show this help\n");
}

static double
s_seconds (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

static void
s_print_ids (const char *label, const uint32_t *ids, size_t n)
{
    printf ("%s:", label);
    for (size_t i = 0; i < n; i++)
        printf (" %" PRIu32, ids [i]);
    printf ("\n");
}

int
cmd_generate (int argc, char **argv)
{
    enum { OPT_PROMPT = 256, OPT_TEMPERATURE, OPT_SEED, OPT_IGNORE_EOS, OPT_IDS, OPT_CTX,
           OPT_THREADS };
    static const struct option long_options [] = {
        { "prompt", required_argument, NULL, OPT_PROMPT },
        { "n-predict", required_argument, NULL, 'n' },
        { "temperature", required_argument, NULL, OPT_TEMPERATURE },
        { "seed", required_argument, NULL, OPT_SEED },
        { "ignore-eos", no_argument, NULL, OPT_IGNORE_EOS },
        { "ids", no_argument, NULL, OPT_IDS },
        { "max-model-len", required_argument, NULL, OPT_CTX },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *prompt = NULL;
    uint64_t n_predict = 32, seed = 0, max_model_len = 0, n_threads = 0;
    float temperature = 0;
    bool ignore_eos = false, print_ids = false;
    optind = 1;
    int option;
    while ((option = getopt_long (argc, argv, "n:h", long_options, NULL)) != -1) {
        switch (option) {
            case OPT_PROMPT:
                prompt = optarg;
                break;
            case 'n':
                if (cli_parse_uint ("--n-predict", optarg, 1, 1u << 24, &n_predict))
                    return 2;
                break;
            case OPT_TEMPERATURE: {
                char *end = NULL;
                temperature = strtof (optarg, &end);
                if (!optarg [0] || *end || !(temperature >= 0 && temperature <= 100)) {
                    fprintf (stderr, "zllm: --temperature: '%s' is not a number from 0 to "
                             "100\n", optarg);
                    return 2;
                }
                break;
            }
            case OPT_SEED:
                if (cli_parse_uint ("--seed", optarg, 0, UINT64_MAX, &seed))
                    return 2;
                break;
            case OPT_IGNORE_EOS:
                ignore_eos = true;
                break;
            case OPT_IDS:
                print_ids = true;
                break;
            case OPT_CTX:
                if (cli_parse_uint ("--max-model-len", optarg, 1, 1u << 24, &max_model_len))
                    return 2;
                break;
            case OPT_THREADS:
                if (cli_parse_uint ("--threads", optarg, 1, 256, &n_threads))
                    return 2;
                break;
            case 'h':
                s_usage (stdout);
                return 0;
            default:
                fprintf (stderr, "Try 'zllm generate --help'.\n");
                return 2;
        }
    }
    if (optind != argc - 1 || !prompt) {
        fprintf (stderr, "zllm generate: give one model file and --prompt TEXT\n"
                 "Try 'zllm generate --help'.\n");
        return 2;
    }

    char err [256] = "out of memory";
    int exit_status = 1;
    uint32_t *ids = NULL;
    vocab_t *vocab = NULL;
    model_t *model = NULL;
    detok_t *detok = NULL;
    gguf_t *gguf = gguf_open (argv [optind], err, sizeof err);
    if (gguf)
        vocab = vocab_new (gguf, err, sizeof err);
    if (!vocab)
        goto done;

    size_t length = strlen (prompt);
    size_t max_ids = length + 16;
    ids = (uint32_t *) malloc ((max_ids + n_predict) * sizeof (uint32_t));
    int64_t n_prompt = ids ? vocab_tokenize_special (vocab, prompt, length,
                                                     vocab_add_bos (vocab), ids, max_ids,
                                                     err, sizeof err)
                           : -1;
    if (n_prompt <= 0 || (size_t) n_prompt > max_ids) {
        if (n_prompt == 0)
            snprintf (err, sizeof err, "the prompt has no tokens");
        goto done;
    }
    uint64_t n_ctx = max_model_len ? max_model_len : (uint64_t) n_prompt + n_predict;
    model = model_new (gguf, 1, (uint32_t) n_ctx, err, sizeof err);
    detok = detok_new (vocab);
    if (!model || !detok)
        goto done;
    if (n_threads && model_set_threads (model, (uint32_t) n_threads, err, sizeof err) != 0)
        goto done;

    sampler_rng_t rng;
    sampler_rng_seed (&rng, seed);
    const model_config_t *config = model_config (model);
    double started = s_seconds ();
    const float *logits = model_forward (model, 0, 0, ids, (uint32_t) n_prompt, err,
                                         sizeof err);
    double prefilled = s_seconds ();
    if (!logits)
        goto done;
    uint64_t n_generated = 0;
    uint32_t eos = vocab_eos (vocab);
    while (n_generated < n_predict) {
        uint32_t token = sampler_sample (logits, config->n_vocab, temperature, &rng, NULL);
        ids [n_prompt + n_generated++] = token;
        if (token == eos && !ignore_eos)
            break;
        fputs (detok_add (detok, token), stdout);
        fflush (stdout);
        if (n_generated == n_predict || (uint64_t) n_prompt + n_generated >= n_ctx)
            break;
        logits = model_forward (model, 0, (uint32_t) (n_prompt + n_generated - 1), &token, 1,
                                err, sizeof err);
        if (!logits)
            goto done;
    }
    double finished = s_seconds ();
    fputs (detok_flush (detok), stdout);
    printf ("\n");
    if (print_ids) {
        s_print_ids ("prompt ids", ids, (size_t) n_prompt);
        s_print_ids ("generated ids", ids + n_prompt, (size_t) n_generated);
    }
    //  The first generated token comes from the prefill's logits: decoding ran
    //  n_generated - 1 forward passes.
    fprintf (stderr, "prompt: %" PRId64 " tokens in %.3f s, %.1f tokens/s\n", n_prompt,
             prefilled - started, (double) n_prompt / (prefilled - started));
    if (n_generated > 1)
        fprintf (stderr, "generation: %" PRIu64 " tokens in %.3f s, %.1f tokens/s\n",
                 n_generated - 1, finished - prefilled,
                 (double) (n_generated - 1) / (finished - prefilled));
    exit_status = 0;

done:
    if (exit_status != 0)
        fprintf (stderr, "zllm: %s\n", err);
    detok_destroy (&detok);
    model_destroy (&model);
    vocab_destroy (&vocab);
    gguf_destroy (&gguf);
    free (ids);
    return exit_status;
}
