/*  cmd_tokenize — `zllm tokenize --model GGUF [--special] [--no-bos] (TEXT | --file F)`:
    print the token ids of a text, space-separated on one line, as the server would
    tokenize it (the model's own vocabulary, SPM or byte-level BPE; BOS, and EOS where
    the GGUF asks for it).

    Exit status: 0 done, 1 the model or the file could not be read (or the text could not
    be tokenized), 2 a bad command line.
*/
#include "commands.h"
#include "gguf.h"
#include "vocab.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm tokenize --model GGUF [--special] [--no-bos] (TEXT | --file F)\n"
        "\n"
        "Print the token ids of TEXT (or of the contents of file F; - reads standard\n"
        "input), space-separated on one line, with the model's vocabulary.\n"
        "\n"
        "options:\n"
        "  -m, --model GGUF    the model (or vocabulary-only) GGUF file\n"
        "  -f, --file F        tokenize the contents of F instead of TEXT\n"
        "  --special           recognise special tokens written in the text (\"<|im_end|>\")\n"
        "  --no-bos            do not add BOS, even where the GGUF asks for it (EOS is\n"
        "                      added only where the GGUF asks for it: add_eos_token)\n"
        "  -h, --help          show this help\n");
}

//  Reads all of path ("-": standard input). Returns the bytes (caller frees) or NULL.
static char *
s_read_all (const char *path, size_t *len)
{
    FILE *file = strcmp (path, "-") == 0? stdin: fopen (path, "rb");
    if (!file)
        return NULL;
    size_t cap = 4096;
    size_t used = 0;
    char *data = (char *) malloc (cap);
    while (data) {
        if (used == cap) {
            char *grown = (char *) realloc (data, cap * 2);
            if (!grown) {
                free (data);
                data = NULL;
                break;
            }
            data = grown;
            cap *= 2;
        }
        size_t got = fread (data + used, 1, cap - used, file);
        used += got;
        if (got == 0) {
            if (ferror (file)) {
                free (data);
                data = NULL;
            }
            break;
        }
    }
    if (file != stdin)
        fclose (file);
    *len = used;
    return data;
}

int
cmd_tokenize (int argc, char **argv)
{
    enum { OPT_SPECIAL = 256, OPT_NO_BOS };
    static const struct option long_options [] = {
        { "model", required_argument, NULL, 'm' },
        { "file", required_argument, NULL, 'f' },
        { "special", no_argument, NULL, OPT_SPECIAL },
        { "no-bos", no_argument, NULL, OPT_NO_BOS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *model_path = NULL;
    const char *file_path = NULL;
    bool special = false;
    bool no_bos = false;
    optind = 1;
    int option;
    while ((option = getopt_long (argc, argv, "m:f:h", long_options, NULL)) != -1) {
        switch (option) {
            case 'm':
                model_path = optarg;
                break;
            case 'f':
                file_path = optarg;
                break;
            case OPT_SPECIAL:
                special = true;
                break;
            case OPT_NO_BOS:
                no_bos = true;
                break;
            case 'h':
                s_usage (stdout);
                return 0;
            default:
                fprintf (stderr, "Try 'zllm tokenize --help'.\n");
                return 2;
        }
    }
    int texts = argc - optind;
    if (!model_path || (file_path? texts != 0: texts != 1)) {
        fprintf (stderr, "zllm tokenize: give --model GGUF and either one TEXT or --file F\n"
                 "Try 'zllm tokenize --help'.\n");
        return 2;
    }

    char err [256] = "out of memory";
    int exit_status = 1;
    char *file_text = NULL;
    uint32_t *ids = NULL;
    vocab_t *vocab = NULL;
    gguf_t *gguf = gguf_open (model_path, err, sizeof err);
    if (gguf)
        vocab = vocab_new (gguf, err, sizeof err);
    gguf_destroy (&gguf);
    if (!vocab) {
        fprintf (stderr, "zllm tokenize: %s: %s\n", model_path, err);
        goto done;
    }
    const char *text = argv [optind];
    size_t length = 0;
    if (file_path) {
        file_text = s_read_all (file_path, &length);
        if (!file_text) {
            fprintf (stderr, "zllm tokenize: cannot read %s\n", file_path);
            goto done;
        }
        text = file_text;
    }
    else
        length = strlen (text);

    bool add_bos = vocab_add_bos (vocab) && !no_bos;
    size_t cap = length + 8;
    int64_t count = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        free (ids);
        ids = (uint32_t *) malloc (cap * sizeof (uint32_t));
        if (!ids) {
            fprintf (stderr, "zllm tokenize: out of memory\n");
            goto done;
        }
        count = special?
            vocab_tokenize_special (vocab, text, length, add_bos, ids, cap, err, sizeof err):
            vocab_tokenize (vocab, text, length, add_bos, ids, cap, err, sizeof err);
        if (count < 0 || (size_t) count <= cap)
            break;
        cap = (size_t) count;
    }
    if (count < 0) {
        fprintf (stderr, "zllm tokenize: %s\n", err);
        goto done;
    }
    for (int64_t i = 0; i < count; i++)
        printf ("%s%" PRIu32, i? " ": "", ids [i]);
    if (vocab_add_eos (vocab) && vocab_eos (vocab) != UINT32_MAX)
        printf ("%s%" PRIu32, count? " ": "", vocab_eos (vocab));
    printf ("\n");
    exit_status = fflush (stdout) == 0? 0: 1;

done:
    free (ids);
    free (file_text);
    vocab_destroy (&vocab);
    return exit_status;
}
