/*  cmd_generate — `zllm generate MODEL.gguf --prompt TEXT -n N`: the engine alone, no
    server: tokenize the prompt, prefill it, decode N tokens, print the text (and the ids
    with --ids), and how fast prefill and decoding ran.

    It is the code path a worker runs (model_forward_seqs over a paged KV cache, then
    the sampler), so its timings are the engine's own, without actors or HTTP. The KV
    cache has blocks of 16 positions; each sequence has blocks of its own, enough for
    the context length.

    --parallel N is our llama-batched-bench: N sequences with the same prompt run as one
    batch. Their prompts are prefilled in one call (N times the prompt's rows, in passes
    of up to 256), then each step decodes the next token of every sequence still going
    in one call. The speeds are those of the whole batch: prompt tokens and generated
    tokens of all sequences, per second. With --temperature, sequence i samples with
    seed + i. The texts are printed at the end, one after another.
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

//  KV positions per block.
#define GENERATE_BLOCK_SIZE 16
#define GENERATE_MAX_PARALLEL 256

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
        "  --parallel N        run N sequences of the prompt as one batch (1 .. 256,\n"
        "                      default 1); the speeds are the whole batch's\n"
        "  --temperature T     0 (default) is greedy\n"
        "  --seed S            the sampler's seed (default 0); sequence i uses S + i\n"
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

//  One sequence of the batch.
typedef struct {
    sampler_seq_t *sampler;
    uint32_t *table;                    //  its blocks
    uint32_t *generated;                //  the tokens it generated
    uint64_t n_generated;
    bool done;
} sequence_t;

int
cmd_generate (int argc, char **argv)
{
    enum { OPT_PROMPT = 256, OPT_TEMPERATURE, OPT_SEED, OPT_IGNORE_EOS, OPT_IDS, OPT_CTX,
           OPT_THREADS, OPT_PARALLEL };
    static const struct option long_options [] = {
        { "prompt", required_argument, NULL, OPT_PROMPT },
        { "n-predict", required_argument, NULL, 'n' },
        { "parallel", required_argument, NULL, OPT_PARALLEL },
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
    uint64_t n_predict = 32, seed = 0, max_model_len = 0, n_threads = 0, n_parallel = 1;
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
            case OPT_PARALLEL:
                if (cli_parse_uint ("--parallel", optarg, 1, GENERATE_MAX_PARALLEL,
                                    &n_parallel))
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
    uint32_t n_seqs = (uint32_t) n_parallel;
    uint32_t *ids = NULL;
    vocab_t *vocab = NULL;
    model_t *model = NULL;
    detok_t *detok = NULL;
    sampler_t *sampler = NULL;
    sequence_t *seqs = NULL;
    model_seq_t *calls = NULL;
    uint32_t *call_seq = NULL;
    gguf_t *gguf = gguf_open (argv [optind], err, sizeof err);
    if (gguf)
        vocab = vocab_new (gguf, err, sizeof err);
    if (!vocab)
        goto done;

    size_t length = strlen (prompt);
    size_t max_ids = length + 16;
    ids = (uint32_t *) malloc (max_ids * sizeof (uint32_t));
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
    if (n_ctx > UINT32_MAX) {
        snprintf (err, sizeof err, "a context of %" PRIu64 " tokens is too long", n_ctx);
        goto done;
    }
    model = model_new (gguf, (uint32_t) n_ctx, err, sizeof err);
    detok = detok_new (vocab);
    if (!model || !detok)
        goto done;
    if (n_threads && model_set_threads (model, (uint32_t) n_threads, err, sizeof err) != 0)
        goto done;
    //  Each sequence: blocks for the whole context, its own.
    uint32_t per_seq = (uint32_t) ((n_ctx + GENERATE_BLOCK_SIZE - 1) / GENERATE_BLOCK_SIZE);
    if ((uint64_t) per_seq * n_seqs > UINT32_MAX) {
        snprintf (err, sizeof err, "%u sequences of %" PRIu64 " tokens are too many blocks",
                  n_seqs, n_ctx);
        goto done;
    }
    if (model_cache_new (model, per_seq * n_seqs, GENERATE_BLOCK_SIZE, err, sizeof err) != 0)
        goto done;

    //  A sequence generates at most n_predict tokens, and stops at the context's end.
    const model_config_t *config = model_config (model);
    uint64_t room = n_ctx > (uint64_t) n_prompt? n_ctx - (uint64_t) n_prompt: 1;
    uint64_t max_generated = n_predict < room? n_predict: room;
    sampler = sampler_new (config->n_vocab);
    seqs = (sequence_t *) calloc (n_seqs, sizeof (sequence_t));
    calls = (model_seq_t *) calloc (n_seqs, sizeof (model_seq_t));
    call_seq = (uint32_t *) calloc (n_seqs, sizeof (uint32_t));
    if (!sampler || !seqs || !calls || !call_seq) {
        snprintf (err, sizeof err, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < n_seqs; i++) {
        sequence_t *seq = &seqs [i];
        sampler_params_t params;
        memset (&params, 0, sizeof params);
        params.temperature = temperature;
        params.seed = seed + i;
        seq->sampler = sampler_seq_new (&params, config->n_vocab, err, sizeof err);
        seq->table = (uint32_t *) malloc (per_seq * sizeof (uint32_t));
        seq->generated = (uint32_t *) malloc (max_generated * sizeof (uint32_t));
        if (!seq->sampler)
            goto done;
        if (!seq->table || !seq->generated
        ||  sampler_seq_add_prompt (seq->sampler, ids, (uint32_t) n_prompt) != 0) {
            snprintf (err, sizeof err, "out of memory");
            goto done;
        }
        for (uint32_t b = 0; b < per_seq; b++)
            seq->table [b] = i * per_seq + b;
        calls [i] = (model_seq_t) { ids, (uint32_t) n_prompt, 0, seq->table, per_seq, true };
        call_seq [i] = i;
    }

    //  Prefill: every sequence's prompt in one call. Then one call a step, a token of
    //  every sequence still going.
    double started = s_seconds ();
    const float *logits = model_forward_seqs (model, calls, n_seqs, err, sizeof err);
    double prefilled = s_seconds ();
    if (!logits)
        goto done;
    uint32_t eos = vocab_eos (vocab);
    uint32_t n_calls = n_seqs;
    uint64_t n_generated = 0;
    while (true) {
        //  The rows of logits are the sequences of the last call, in order.
        uint32_t n_going = 0;
        for (uint32_t c = 0; c < n_calls; c++) {
            sequence_t *seq = &seqs [call_seq [c]];
            const float *row = logits + (size_t) c * config->n_vocab;
            uint32_t token = sampler_sample (sampler, seq->sampler, row, NULL);
            if (sampler_seq_add_outputs (seq->sampler, &token, 1) != 0) {
                snprintf (err, sizeof err, "out of memory");
                goto done;
            }
            seq->generated [seq->n_generated++] = token;
            n_generated++;
            if (token == eos && !ignore_eos)
                seq->done = true;
            else
            if (n_seqs == 1) {
                fputs (detok_add (detok, token), stdout);
                fflush (stdout);
            }
            if (seq->n_generated == max_generated
            ||  (uint64_t) n_prompt + seq->n_generated >= n_ctx)
                seq->done = true;
            if (!seq->done) {
                uint32_t pos = (uint32_t) (n_prompt + seq->n_generated - 1);
                calls [n_going] = (model_seq_t) { &seq->generated [seq->n_generated - 1], 1,
                                                  pos, seq->table, per_seq, true };
                call_seq [n_going++] = call_seq [c];
            }
        }
        n_calls = n_going;
        if (n_calls == 0)
            break;
        logits = model_forward_seqs (model, calls, n_calls, err, sizeof err);
        if (!logits)
            goto done;
    }
    double finished = s_seconds ();

    if (n_seqs == 1) {
        fputs (detok_flush (detok), stdout);
        printf ("\n");
    }
    else
        for (uint32_t i = 0; i < n_seqs; i++) {
            const sequence_t *seq = &seqs [i];
            printf ("--- sequence %u ---\n", i);
            for (uint64_t t = 0; t < seq->n_generated; t++)
                if (seq->generated [t] != eos || ignore_eos)
                    fputs (detok_add (detok, seq->generated [t]), stdout);
            fputs (detok_flush (detok), stdout);
            printf ("\n");
        }
    if (print_ids) {
        s_print_ids ("prompt ids", ids, (size_t) n_prompt);
        for (uint32_t i = 0; i < n_seqs; i++) {
            char label [64];
            if (n_seqs == 1)
                snprintf (label, sizeof label, "generated ids");
            else
                snprintf (label, sizeof label, "generated ids %u", i);
            s_print_ids (label, seqs [i].generated, (size_t) seqs [i].n_generated);
        }
    }
    //  The first generated token of each sequence comes from the prefill's logits:
    //  decoding made n_generated - n_seqs tokens.
    uint64_t n_prompt_tokens = (uint64_t) n_prompt * n_seqs;
    fprintf (stderr, "prompt: %" PRIu64 " tokens in %.3f s, %.1f tokens/s\n",
             n_prompt_tokens, prefilled - started,
             (double) n_prompt_tokens / (prefilled - started));
    if (n_generated > n_seqs)
        fprintf (stderr, "generation: %" PRIu64 " tokens in %.3f s, %.1f tokens/s\n",
                 n_generated - n_seqs, finished - prefilled,
                 (double) (n_generated - n_seqs) / (finished - prefilled));
    if (n_seqs > 1)
        fprintf (stderr, "batch: %u sequences of %" PRId64 " prompt tokens, %.1f total "
                 "tokens/s\n", n_seqs, n_prompt,
                 (double) (n_prompt_tokens + n_generated - n_seqs) / (finished - started));
    exit_status = 0;

done:
    if (exit_status != 0)
        fprintf (stderr, "zllm: %s\n", err);
    if (seqs)
        for (uint32_t i = 0; i < n_seqs; i++) {
            sampler_seq_destroy (&seqs [i].sampler);
            free (seqs [i].table);
            free (seqs [i].generated);
        }
    free (seqs);
    free (calls);
    free (call_seq);
    sampler_destroy (&sampler);
    detok_destroy (&detok);
    model_destroy (&model);
    vocab_destroy (&vocab);
    gguf_destroy (&gguf);
    free (ids);
    return exit_status;
}
