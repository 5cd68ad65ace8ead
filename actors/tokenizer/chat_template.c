/*  chat_template — an OpenAI chat request rendered by the model's chat template, as
    Hugging Face's apply_chat_template renders it from what vLLM passes. See
    chat_template.h.

    The template's variables:
    - messages: the request's messages, where a content given as a list of parts becomes
      the text parts joined with "\n", and a tool call's function.arguments given as a
      JSON string becomes the value it encodes (when it is valid JSON);
    - tools and documents: as the request has them, when it has them and they are not null;
    - what the request's chat_template_kwargs holds (e.g. enable_thinking), each a variable;
    - bos_token, eos_token, add_generation_prompt.
*/
#include "chat_template.h"
#include "jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _chat_template_t {
    jinja_template_t *template;
    char *bos_token;
    char *eos_token;
};

static void
s_error (char *err, size_t err_size, const char *message)
{
    if (err && err_size)
        snprintf (err, err_size, "%s", message);
}

chat_template_t *
chat_template_new (const char *source, const char *bos_token, const char *eos_token,
                   char *err, size_t err_size)
{
    chat_template_t *self = calloc (1, sizeof (chat_template_t));
    if (!self) {
        s_error (err, err_size, "out of memory");
        return NULL;
    }
    self->bos_token = strdup (bos_token? bos_token: "");
    self->eos_token = strdup (eos_token? eos_token: "");
    if (!self->bos_token || !self->eos_token) {
        s_error (err, err_size, "out of memory");
        chat_template_destroy (&self);
        return NULL;
    }
    //  the tokens become JSON strings: they must be UTF-8
    json_t *bos_probe = json_string (self->bos_token);
    json_t *eos_probe = json_string (self->eos_token);
    bool valid = bos_probe && eos_probe;
    json_decref (bos_probe);
    json_decref (eos_probe);
    if (!valid) {
        s_error (err, err_size, "the bos or eos token is not valid UTF-8");
        chat_template_destroy (&self);
        return NULL;
    }
    self->template = jinja_template_new (source, err, err_size);
    if (!self->template) {
        chat_template_destroy (&self);
        return NULL;
    }
    return self;
}

void
chat_template_destroy (chat_template_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    chat_template_t *self = *self_p;
    jinja_template_destroy (&self->template);
    free (self->bos_token);
    free (self->eos_token);
    free (self);
    *self_p = NULL;
}

//  A content given as parts: the text of the text parts, joined with newlines.
static json_t *
s_joined_content (const json_t *parts)
{
    size_t total = 0;
    size_t index;
    json_t *part;
    json_array_foreach (parts, index, part) {
        const json_t *text = json_is_string (part)? part: json_object_get (part, "text");
        const json_t *type = json_object_get (part, "type");
        if (json_is_string (text) && (!type || json_is_string (type)))
            total += json_string_length (text) + 1;
    }
    char *joined = malloc (total + 1);
    if (!joined)
        return NULL;
    size_t used = 0;
    bool first = true;
    json_array_foreach (parts, index, part) {
        const json_t *text = json_is_string (part)? part: json_object_get (part, "text");
        const json_t *type = json_object_get (part, "type");
        if (!json_is_string (text) || (type && !json_is_string (type)))
            continue;
        if (type && strcmp (json_string_value (type), "text") != 0)
            continue;
        if (!first)
            joined [used++] = '\n';
        memcpy (joined + used, json_string_value (text), json_string_length (text));
        used += json_string_length (text);
        first = false;
    }
    json_t *content = json_stringn (joined, used);
    free (joined);
    return content;
}

//  A message as the template sees it (a new reference), or NULL with a message.
static json_t *
s_message (const json_t *message, size_t position, char *err, size_t err_size)
{
    if (!json_is_object (message)) {
        char text [128];
        snprintf (text, sizeof (text), "messages[%zu] is not an object", position);
        s_error (err, err_size, text);
        return NULL;
    }
    json_t *copy = json_deep_copy (message);
    if (!copy) {
        s_error (err, err_size, "out of memory");
        return NULL;
    }
    json_t *content = json_object_get (copy, "content");
    if (json_is_array (content)) {
        json_t *joined = s_joined_content (content);
        if (!joined || json_object_set_new (copy, "content", joined)) {
            json_decref (copy);
            s_error (err, err_size, "out of memory");
            return NULL;
        }
    }
    json_t *tool_calls = json_object_get (copy, "tool_calls");
    if (json_is_array (tool_calls)) {
        size_t index;
        json_t *call;
        json_array_foreach (tool_calls, index, call) {
            json_t *function = json_object_get (call, "function");
            json_t *arguments = json_object_get (function, "arguments");
            if (!json_is_string (arguments))
                continue;
            json_t *parsed = json_loadb (json_string_value (arguments),
                                         json_string_length (arguments),
                                         JSON_DECODE_ANY, NULL);
            if (parsed)
                json_object_set_new (function, "arguments", parsed);
        }
    }
    return copy;
}

char *
chat_template_render (const chat_template_t *self, const json_t *request,
                      const chat_template_options_t *options, char *err, size_t err_size)
{
    if (!json_is_object (request)) {
        s_error (err, err_size, "the request is not a JSON object");
        return NULL;
    }
    const json_t *messages = json_object_get (request, "messages");
    if (!json_is_array (messages)) {
        s_error (err, err_size, "messages must be an array");
        return NULL;
    }
    json_t *variables = json_object ();
    json_t *converted = json_array ();
    if (!variables || !converted) {
        json_decref (variables);
        json_decref (converted);
        s_error (err, err_size, "out of memory");
        return NULL;
    }
    const json_t *kwargs = json_object_get (request, "chat_template_kwargs");
    if (json_is_object (kwargs))
        json_object_update (variables, (json_t *) kwargs);

    size_t index;
    json_t *message;
    json_array_foreach (messages, index, message) {
        json_t *copy = s_message (message, index, err, err_size);
        if (!copy) {
            json_decref (variables);
            json_decref (converted);
            return NULL;
        }
        json_array_append_new (converted, copy);
    }
    json_object_set_new (variables, "messages", converted);
    static const char *const passed [] = { "tools", "documents" };
    for (size_t name = 0; name < sizeof (passed) / sizeof (passed [0]); name++) {
        json_t *value = json_object_get (request, passed [name]);
        if (value && !json_is_null (value))
            json_object_set (variables, passed [name], value);
        else
            json_object_del (variables, passed [name]);
    }
    json_object_set_new (variables, "bos_token", json_string (self->bos_token));
    json_object_set_new (variables, "eos_token", json_string (self->eos_token));
    json_object_set_new (variables, "add_generation_prompt",
                         json_boolean (options? options->add_generation_prompt: true));

    jinja_options_t render_options;
    memset (&render_options, 0, sizeof (render_options));
    render_options.now = options? options->now: 0;
    char *prompt = jinja_template_render (self->template, variables, &render_options, NULL,
                                          err, err_size);
    json_decref (variables);
    return prompt;
}
