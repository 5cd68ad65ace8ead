/*  chat_template — an OpenAI chat request rendered into a prompt by the model's Jinja2
    chat template, exactly as Hugging Face transformers renders it (apply_chat_template:
    Jinja2 with trim_blocks, lstrip_blocks, loop controls, tojson without ASCII escaping,
    raise_exception, strftime_now).

    The request becomes template variables as OpenAI-compatible servers (vLLM) do:
    messages (a content given as a list of text parts is joined with newlines; a tool
    call's `arguments` JSON string becomes an object), tools when present, bos_token,
    eos_token, add_generation_prompt.

    Who owns what: chat_template_new copies the source and the token strings. A
    chat_template_t never changes after chat_template_new: many threads may render with
    one. Rendered prompts are heap strings the caller frees.
*/
#ifndef ZLLM_CHAT_TEMPLATE_H
#define ZLLM_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

typedef struct _chat_template_t chat_template_t;

//  Parse a template. bos_token / eos_token (may be NULL: empty) are what the template
//  sees as bos_token and eos_token. On a syntax error returns NULL and writes a message
//  that names the line and column.
chat_template_t *
    chat_template_new (const char *source, const char *bos_token, const char *eos_token,
                       char *err, size_t err_size);

void
    chat_template_destroy (chat_template_t **self_p);

typedef struct {
    bool add_generation_prompt;     //  open the assistant's turn at the end
    time_t now;                     //  what strftime_now formats; 0: the real clock
} chat_template_options_t;

//  Render request (an OpenAI chat request object: "messages", optionally "tools" and
//  anything else the template may read). Returns the prompt, or NULL with a message when
//  the request does not fit (e.g. messages is not an array) or the template refuses it
//  (raise_exception, a type error, ...).
char *
    chat_template_render (const chat_template_t *self, const json_t *request,
                          const chat_template_options_t *options, char *err, size_t err_size);

#endif
