/*  cmd_render_chat — `zllm render-chat`: the prompt that a chat template builds for a
    chat request, exactly as the server would build it, printed as it is (no newline
    added). The template is a file (--template) or the model's own
    (tokenizer.chat_template in --model's GGUF, whose bos and eos tokens it then gets
    too, unless --bos-token / --eos-token say otherwise).

    Exit status: 0 printed; 1 the template refuses the request, or a file cannot be read;
    2 a bad command line.
*/
#include "commands.h"
#include "chat_template.h"
#include "gguf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEMPLATE_BYTES (16 * 1024 * 1024)

typedef struct {
    const char *template_path;
    const char *model_path;
    const char *request_path;
    const char *bos_token;          //  NULL: the model's, or empty
    const char *eos_token;
    bool generation_prompt;
} render_chat_options_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm render-chat (--template FILE | --model GGUF) --request REQUEST.json\n"
        "                        [--bos-token TEXT] [--eos-token TEXT]\n"
        "                        [--no-generation-prompt]\n"
        "\n"
        "Print the prompt that the chat template builds for an OpenAI chat request (a JSON\n"
        "object with \"messages\" and optionally \"tools\"), exactly as the server builds it\n"
        "(Hugging Face's apply_chat_template), with no newline added.\n"
        "\n"
        "options:\n"
        "  --template FILE           a Jinja2 chat template\n"
        "  --model GGUF              use the model's own template (tokenizer.chat_template)\n"
        "                            and its bos and eos tokens\n"
        "  --request FILE            the chat request (JSON; - reads standard input)\n"
        "  --bos-token TEXT          what the template sees as bos_token (default: the\n"
        "                            model's, or empty with --template)\n"
        "  --eos-token TEXT          what the template sees as eos_token (likewise)\n"
        "  --no-generation-prompt    do not open the assistant's turn at the end\n"
        "                            (add_generation_prompt is true otherwise)\n"
        "  -h, --help                show this help\n"
        "\n"
        "Exit status: 0 printed, 1 the template refused the request (the reason is on\n"
        "standard error), 2 a bad command line.\n");
}

//  Parse the command line; returns 0, 1 after --help, or -1 (message printed).
static int
s_parse (int argc, char **argv, render_chat_options_t *options)
{
    memset (options, 0, sizeof (*options));
    options->generation_prompt = true;
    for (int index = 1; index < argc; index++) {
        const char *arg = argv [index];
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0)
            return 1;
        if (strcmp (arg, "--no-generation-prompt") == 0) {
            options->generation_prompt = false;
            continue;
        }
        static const char *const flags [] = {
            "--template", "--model", "--request", "--bos-token", "--eos-token", NULL
        };
        const char **targets [] = {
            &options->template_path, &options->model_path, &options->request_path,
            &options->bos_token, &options->eos_token
        };
        bool known = false;
        for (size_t flag = 0; flags [flag]; flag++) {
            size_t length = strlen (flags [flag]);
            const char *value = NULL;
            if (strcmp (arg, flags [flag]) == 0) {
                if (index + 1 >= argc) {
                    fprintf (stderr, "zllm: render-chat: %s needs a value\n", flags [flag]);
                    return -1;
                }
                value = argv [++index];
            }
            else
            if (strncmp (arg, flags [flag], length) == 0 && arg [length] == '=')
                value = arg + length + 1;
            else
                continue;
            *targets [flag] = value;
            known = true;
            break;
        }
        if (!known) {
            fprintf (stderr, "zllm: render-chat: unknown argument '%s' (see --help)\n", arg);
            return -1;
        }
    }
    if (!options->template_path == !options->model_path) {
        fprintf (stderr, "zllm: render-chat: give either --template or --model (see --help)\n");
        return -1;
    }
    if (!options->request_path) {
        fprintf (stderr, "zllm: render-chat: --request is missing (see --help)\n");
        return -1;
    }
    return 0;
}

//  A whole file (or standard input for "-") as a NUL-terminated string.
static char *
s_read_file (const char *path, size_t limit, char *err, size_t err_size)
{
    FILE *file = strcmp (path, "-") == 0? stdin: fopen (path, "rb");
    if (!file) {
        snprintf (err, err_size, "cannot open %s", path);
        return NULL;
    }
    size_t size = 0, capacity = 4096;
    char *data = malloc (capacity);
    while (data) {
        if (size + 1 >= capacity) {
            capacity *= 2;
            char *grown = realloc (data, capacity);
            if (!grown) {
                free (data);
                data = NULL;
                break;
            }
            data = grown;
        }
        size_t got = fread (data + size, 1, capacity - size - 1, file);
        size += got;
        if (size > limit) {
            snprintf (err, err_size, "%s is larger than %zu bytes", path, limit);
            free (data);
            data = NULL;
            break;
        }
        if (got == 0)
            break;
    }
    bool failed = ferror (file);
    if (file != stdin)
        fclose (file);
    if (data && failed) {
        snprintf (err, err_size, "cannot read %s", path);
        free (data);
        return NULL;
    }
    if (!data) {
        if (!err [0])
            snprintf (err, err_size, "out of memory reading %s", path);
        return NULL;
    }
    data [size] = 0;
    if (strlen (data) != size) {
        snprintf (err, err_size, "%s holds a NUL byte", path);
        free (data);
        return NULL;
    }
    return data;
}

//  A GGUF string as a C string (the caller frees).
static char *
s_gguf_text (gguf_str_t text)
{
    char *copy = malloc (text.len + 1);
    if (copy) {
        memcpy (copy, text.ptr, text.len);
        copy [text.len] = 0;
    }
    return copy;
}

//  The text of the token whose id is at key (e.g. tokenizer.ggml.bos_token_id), or NULL.
static char *
s_special_token (const gguf_t *gguf, const char *key)
{
    uint32_t id;
    gguf_str_t text;
    if (gguf_get_u32 (gguf, key, &id) || gguf_array_str (gguf, "tokenizer.ggml.tokens", id, &text))
        return NULL;
    return s_gguf_text (text);
}

int
cmd_render_chat (int argc, char **argv)
{
    render_chat_options_t options;
    int parsed = s_parse (argc, argv, &options);
    if (parsed == 1) {
        s_usage (stdout);
        return 0;
    }
    if (parsed < 0)
        return 2;

    char err [1024] = "";
    char *source = NULL;
    char *bos_token = NULL;
    char *eos_token = NULL;
    if (options.model_path) {
        gguf_t *gguf = gguf_open (options.model_path, err, sizeof (err));
        if (!gguf) {
            fprintf (stderr, "zllm: render-chat: %s\n", err);
            return 1;
        }
        gguf_str_t text;
        if (gguf_get_str (gguf, "tokenizer.chat_template", &text) == 0) {
            if (memchr (text.ptr, 0, text.len))
                snprintf (err, sizeof (err), "the model's chat template holds a NUL byte");
            else
                source = s_gguf_text (text);
        }
        else
            snprintf (err, sizeof (err), "%s has no chat template (tokenizer.chat_template);"
                      " give one with --template", options.model_path);
        if (!options.bos_token)
            bos_token = s_special_token (gguf, "tokenizer.ggml.bos_token_id");
        if (!options.eos_token)
            eos_token = s_special_token (gguf, "tokenizer.ggml.eos_token_id");
        gguf_destroy (&gguf);
    }
    else
        source = s_read_file (options.template_path, MAX_TEMPLATE_BYTES, err, sizeof (err));
    if (!source) {
        fprintf (stderr, "zllm: render-chat: %s\n", err);
        free (bos_token);
        free (eos_token);
        return 1;
    }

    int status = 1;
    chat_template_t *template = chat_template_new (source,
                                                   options.bos_token? options.bos_token: bos_token,
                                                   options.eos_token? options.eos_token: eos_token,
                                                   err, sizeof (err));
    free (source);
    free (bos_token);
    free (eos_token);
    if (!template) {
        fprintf (stderr, "zllm: render-chat: the chat template: %s\n", err);
        return 1;
    }
    char *request_text = s_read_file (options.request_path, 256u << 20, err, sizeof (err));
    json_error_t json_error;
    json_t *request = request_text? json_loads (request_text, 0, &json_error): NULL;
    free (request_text);
    if (!request) {
        if (!err [0])
            snprintf (err, sizeof (err), "%s: line %d, column %d: %s", options.request_path,
                      json_error.line, json_error.column, json_error.text);
        fprintf (stderr, "zllm: render-chat: the request: %s\n", err);
    }
    else {
        chat_template_options_t render_options = {
            .add_generation_prompt = options.generation_prompt,
            .now = 0
        };
        char *prompt = chat_template_render (template, request, &render_options,
                                             err, sizeof (err));
        if (prompt) {
            size_t size = strlen (prompt);
            if (fwrite (prompt, 1, size, stdout) == size && fflush (stdout) == 0)
                status = 0;
            else
                fprintf (stderr, "zllm: render-chat: cannot write the prompt\n");
            free (prompt);
        }
        else
            fprintf (stderr, "zllm: render-chat: %s\n", err);
        json_decref (request);
    }
    chat_template_destroy (&template);
    return status;
}
