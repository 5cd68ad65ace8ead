/*  tokenizer_actor — between text and token ids, for every request. See tokenizer_actor.h.

    Where a request goes next:
        GENERATE -> s_handle_generate (s_render_chat, s_tokenize) -> SUBMIT to the scheduler
        TOKENS   -> s_handle_tokens (output_text)                 -> OUTPUT to the frontend
        ERROR    -> s_handle_scheduler_error                      -> ERROR to the frontend
*/
#include "tokenizer_actor.h"
#include "chat_template.h"
#include "detok.h"
#include "gguf.h"
#include "output_text.h"
#include "protocol.h"
#include "tool_parser.h"
#include "vocab.h"
#include "zlog.h"

#include <inttypes.h>
#include <math.h>
#include <jansson.h>
#include <string.h>

#define ACTOR "tokenizer"
//  A request's own stop_token_ids beyond this many are ignored (the frontend allows 32).
#define MAX_REQUEST_STOP_TOKENS 64

//  The text of one of a request's sequences.
typedef struct {
    output_text_t *output;
    uint32_t completion_tokens;
    bool finished;
} sequence_text_t;

//  One request between GENERATE and its end (all its n sequences finished).
typedef struct {
    uint64_t id;
    zframe_t *reply_to;             //  routing id of the frontend that sent it
    sequence_text_t *sequences;     //  [n]
    uint32_t n;
    uint32_t n_finished;
    uint32_t prompt_tokens;
    bool want_logprobs;             //  OUTPUTs carry the tokens' log-probabilities
    bool include_stop;              //  include_stop_str_in_output: the stop token that
                                    //  ends a sequence is written too
    uint64_t queue_us;              //  the scheduler's queue time, for the first OUTPUT
    bool queue_us_given;            //  an OUTPUT has carried it
} request_t;

typedef struct {
    tokenizer_args_t *args;
    zsock_t *pipe;
    zsock_t *inbox;                 //  ROUTER, frontend side
    zsock_t *scheduler;             //  DEALER to the scheduler's inbox
    zpoller_t *poller;
    vocab_t *vocab;
    chat_template_t *chat_template; //  NULL: the model has none and none was given
    char chat_template_error [256]; //  why, for chat requests
    bool parse_tools;               //  --tool-call-parser was given
    tool_parser_format_t tool_format;
    uint32_t stop_tokens [64];      //  the model's end-of-generation tokens
    uint32_t n_stop_tokens;
    zhashx_t *requests;             //  request_t * by its id
    bool scheduler_down;
    bool terminated;
    bool asked_to_stop;             //  "$TERM" came; otherwise we say STOPPED
} tokenizer_t;


static void
s_request_destroy (request_t **self_p)
{
    request_t *self = *self_p;
    if (!self)
        return;
    zframe_destroy (&self->reply_to);
    for (uint32_t i = 0; self->sequences && i < self->n; i++)
        output_text_destroy (&self->sequences [i].output);
    free (self->sequences);
    free (self);
    *self_p = NULL;
}

//  zhashx destructor adapter
static void
s_request_free (void **item)
{
    s_request_destroy ((request_t **) item);
}

static request_t *
s_find (tokenizer_t *self, uint64_t id)
{
    return (request_t *) zhashx_lookup (self->requests, &id);
}

static void
s_forget (tokenizer_t *self, uint64_t id)
{
    zhashx_delete (self->requests, &id);
}

static void
s_send_to_frontend (tokenizer_t *self, const proto_msg_t *msg, zframe_t *reply_to)
{
    if (proto_send_to (msg, self->inbox, reply_to) != 0)
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "could not send %s to the frontend: %s",
              proto_kind_name (msg->kind), zmq_strerror (zmq_errno ()));
}

static void
s_send_error (tokenizer_t *self, uint64_t id, zframe_t *reply_to, uint32_t status,
              const char *message)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_ERROR;
    msg.request_id = id;
    msg.status = status;
    if (proto_msg_set_text (&msg, message) == 0)
        s_send_to_frontend (self, &msg, reply_to);
    proto_msg_reset (&msg);
}

//  continue_final_message, as vLLM does it: the prompt ends right after the content of
//  the last (assistant) message, so the model continues that message instead of
//  closing it. Content given as parts counts as their texts joined with newlines.
static int
s_cut_after_final_message (char *prompt, const json_t *request)
{
    const json_t *messages = json_object_get (request, "messages");
    const json_t *content = json_object_get (json_array_get (messages,
                                             json_array_size (messages) - 1), "content");
    char *text = NULL;
    if (json_is_string (content))
        text = strdup (json_string_value (content));
    else
    if (json_is_array (content)) {
        size_t size = 0;
        FILE *stream = open_memstream (&text, &size);
        if (!stream)
            return -1;
        size_t index;
        const json_t *part;
        bool first = true;
        json_array_foreach (content, index, part) {
            const char *part_text = json_string_value (json_object_get (part, "text"));
            if (part_text) {
                fprintf (stream, "%s%s", first ? "" : "\n", part_text);
                first = false;
            }
        }
        fclose (stream);
    }
    if (!text)
        return -1;
    //  The last occurrence: the final message is rendered last.
    char *found = NULL;
    for (char *at = strstr (prompt, text); at && text [0]; at = strstr (at + 1, text))
        found = at;
    if (found)
        found [strlen (text)] = 0;
    bool ok = found != NULL || text [0] == 0;
    free (text);
    return ok ? 0 : -1;
}

//  Render a chat request (JSON text from the frontend) into a prompt. Returns a heap
//  string, or NULL with the reason in err. *tools says whether its tool calls are parsed.
static char *
s_render_chat (tokenizer_t *self, const char *chat, bool *tools, char *err, size_t err_size)
{
    if (!self->chat_template) {
        snprintf (err, err_size, "%s", self->chat_template_error);
        return NULL;
    }
    json_error_t json_error;
    json_t *request = json_loads (chat, 0, &json_error);
    if (!json_is_object (request)) {
        snprintf (err, err_size, "the chat request is not a JSON object: %s", json_error.text);
        json_decref (request);
        return NULL;
    }
    const char *tool_choice = json_string_value (json_object_get (request, "tool_choice"));
    *tools = self->parse_tools && json_array_size (json_object_get (request, "tools")) > 0
          && (!tool_choice || strcmp (tool_choice, "none") != 0);
    json_t *add = json_object_get (request, "add_generation_prompt");
    bool continue_final = json_is_true (json_object_get (request, "continue_final_message"));
    chat_template_options_t options = {
        .add_generation_prompt = !continue_final && (!add || json_is_true (add)), .now = 0
    };
    char *prompt = chat_template_render (self->chat_template, request, &options, err,
                                         err_size);
    if (prompt && continue_final && s_cut_after_final_message (prompt, request) != 0) {
        snprintf (err, err_size, "continue_final_message: the final message's content is "
                  "not in the rendered prompt");
        free (prompt);
        prompt = NULL;
    }
    json_decref (request);
    return prompt;
}

//  Tokenize a prompt with special tokens recognised. BOS is added as the model asks,
//  unless the prompt already starts with it (a chat template that writes bos_token).
//  Returns the count and a heap array in *ids, or -1 with the reason in err.
static int64_t
s_tokenize (tokenizer_t *self, const char *text, bool add_special_tokens, uint32_t **ids,
            bool *out_of_memory, char *err, size_t err_size)
{
    size_t length = strlen (text);
    bool add_bos = add_special_tokens && vocab_add_bos (self->vocab);
    uint32_t bos = vocab_bos (self->vocab);
    const char *bos_text = bos != UINT32_MAX ? vocab_token_text (self->vocab, bos) : NULL;
    if (add_bos && bos_text && bos_text [0] && strncmp (text, bos_text, strlen (bos_text)) == 0)
        add_bos = false;
    //  A first guess at the number of tokens; vocab_tokenize says when it needs more.
    size_t max_ids = length / 2 + 16;
    *ids = NULL;
    *out_of_memory = false;
    while (true) {
        uint32_t *grown = (uint32_t *) realloc (*ids, max_ids * sizeof (uint32_t));
        if (!grown) {
            snprintf (err, err_size, "out of memory");
            *out_of_memory = true;
            return -1;
        }
        *ids = grown;
        int64_t n_ids = vocab_tokenize_special (self->vocab, text, length, add_bos, *ids,
                                                max_ids, err, err_size);
        if (n_ids < 0 || (size_t) n_ids <= max_ids)
            return n_ids;
        if (n_ids > PROTO_MAX_TOKENS) {
            snprintf (err, err_size, "the prompt has %" PRId64 " tokens; at most %u are "
                      "accepted", n_ids, PROTO_MAX_TOKENS);
            return -1;
        }
        max_ids = (size_t) n_ids;
    }
}

//  Every id of tokens[0 .. n-1] must be in the vocabulary. Returns 0, or -1 with
//  "WHAT: token ID (at I) is not in the vocabulary (of N tokens)" in err.
static int
s_check_in_vocabulary (tokenizer_t *self, const char *what, const uint32_t *tokens,
                       uint32_t n, char *err, size_t err_size)
{
    uint32_t n_vocab = vocab_size (self->vocab);
    for (uint32_t i = 0; i < n; i++)
        if (tokens [i] >= n_vocab) {
            snprintf (err, err_size, "%s: token %u (at %u) is not in the vocabulary (of %u "
                      "tokens)", what, tokens [i], i, n_vocab);
            return -1;
        }
    return 0;
}

//  The token ids a request names (logit_bias, stop_token_ids) must be in the vocabulary:
//  the frontend cannot know its size. Returns 0, or -1 with the reason in err.
static int
s_check_token_ids (tokenizer_t *self, const proto_msg_t *msg, char *err, size_t err_size)
{
    if (s_check_in_vocabulary (self, "logit_bias", msg->sampling.bias_tokens,
                               msg->sampling.n_bias, err, err_size) != 0
    ||  s_check_in_vocabulary (self, "stop_token_ids", msg->stop_tokens, msg->n_stop_tokens,
                               err, err_size) != 0)
        return -1;
    return 0;
}

//  The prompt of a GENERATE as token ids: its own token ids as they are (each must be in
//  the vocabulary; no BOS is added), else its chat request rendered by the template,
//  else its text, tokenized with BOS as the model asks. Returns the count, with a heap
//  array in *ids (the caller frees it) and *tools saying whether tool calls are parsed;
//  or -1 with the HTTP status in *status and the message in err.
static int64_t
s_prompt_ids (tokenizer_t *self, const proto_msg_t *msg, uint32_t **ids, bool *tools,
              uint32_t *status, char *err, size_t err_size)
{
    *ids = NULL;
    *tools = false;
    *status = 400;
    char reason [512];
    if (msg->n_tokens > 0) {
        if (msg->chat || (msg->text && msg->text [0])) {
            snprintf (err, err_size, "the prompt is given both as token ids and as %s: "
                      "give one of them", msg->chat? "a chat request": "text");
            return -1;
        }
        if (s_check_in_vocabulary (self, "prompt", msg->tokens, msg->n_tokens, err,
                                   err_size) != 0)
            return -1;
        *ids = (uint32_t *) malloc (msg->n_tokens * sizeof (uint32_t));
        if (!*ids) {
            *status = 500;
            snprintf (err, err_size, "out of memory");
            return -1;
        }
        memcpy (*ids, msg->tokens, msg->n_tokens * sizeof (uint32_t));
        return msg->n_tokens;
    }
    char *rendered = NULL;
    if (msg->chat) {
        rendered = s_render_chat (self, msg->chat, tools, reason, sizeof reason);
        if (!rendered) {
            snprintf (err, err_size, "the chat template could not render this request: "
                      "%s", reason);
            return -1;
        }
    }
    bool out_of_memory = false;
    int64_t n_ids = s_tokenize (self, rendered? rendered: msg->text? msg->text: "",
                                true, ids, &out_of_memory, reason, sizeof reason);
    free (rendered);
    if (n_ids < 0) {
        snprintf (err, err_size, "could not tokenize the prompt: %s", reason);
        *status = out_of_memory? 500: 400;
        free (*ids);
        *ids = NULL;
    }
    return n_ids;
}

static void
s_handle_generate (tokenizer_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    if (self->scheduler_down) {
        s_send_error (self, msg->request_id, reply_to, 503, "the scheduler is not running");
        return;
    }
    if (s_find (self, msg->request_id)) {
        s_send_error (self, msg->request_id, reply_to, 400, "duplicate request id");
        return;
    }
    char err [600] = "";
    if (s_check_token_ids (self, msg, err, sizeof err) != 0) {
        s_send_error (self, msg->request_id, reply_to, 400, err);
        return;
    }
    uint32_t *ids = NULL;
    bool tools = false;
    uint32_t status = 400;
    int64_t n_ids = s_prompt_ids (self, msg, &ids, &tools, &status, err, sizeof err);
    if (n_ids < 0) {
        s_send_error (self, msg->request_id, reply_to, status, err);
        return;
    }
    uint32_t n = msg->n > 1? msg->n: 1;
    request_t *request = (request_t *) calloc (1, sizeof (request_t));
    bool made = request != NULL;
    if (request) {
        request->id = msg->request_id;
        request->reply_to = zframe_dup (reply_to);
        request->prompt_tokens = (uint32_t) n_ids;
        request->want_logprobs = msg->want_logprobs;
        request->include_stop = msg->include_stop_str_in_output;
        request->sequences = (sequence_text_t *) calloc (n, sizeof (sequence_text_t));
        made = request->reply_to && request->sequences;
        if (request->sequences)
            request->n = n;
        output_text_options_t options = {
            .stops = (const char *const *) msg->stops,
            .n_stops = msg->n_stops,
            .include_stop = msg->include_stop_str_in_output,
            .keep_special = msg->keep_special_tokens,
            .tools = tools,
            .format = self->tool_format,
            .id_seed = msg->request_id
        };
        for (uint32_t i = 0; made && i < n; i++) {
            request->sequences [i].output = output_text_new (self->vocab, &options);
            made = request->sequences [i].output != NULL;
        }
    }
    if (!made) {
        s_request_destroy (&request);
        s_send_error (self, msg->request_id, reply_to, 500, "out of memory");
        free (ids);
        return;
    }
    zhashx_insert (self->requests, &request->id, request);

    proto_msg_t submit = PROTO_MSG_INIT;
    submit.kind = PROTO_SUBMIT;
    submit.request_id = msg->request_id;
    submit.tokens = ids;
    submit.n_tokens = (uint32_t) n_ids;
    submit.max_tokens = msg->max_tokens;
    submit.sampling = msg->sampling;            //  borrowed, as the tokens
    submit.n = n;
    submit.best_of = msg->best_of;
    submit.use_beam_search = msg->use_beam_search;
    submit.length_penalty = msg->length_penalty;
    submit.early_stopping = msg->early_stopping;
    //  The model's end-of-generation tokens (unless the request ignores them, as vLLM's
    //  ignore_eos), then the request's own stop_token_ids.
    uint32_t stop_tokens [64 + MAX_REQUEST_STOP_TOKENS];
    uint32_t n_stop_tokens = msg->ignore_eos? 0: self->n_stop_tokens;
    memcpy (stop_tokens, self->stop_tokens, n_stop_tokens * sizeof (uint32_t));
    size_t capacity = sizeof stop_tokens / sizeof stop_tokens [0];
    for (uint32_t i = 0; i < msg->n_stop_tokens && n_stop_tokens < capacity; i++)
        stop_tokens [n_stop_tokens++] = msg->stop_tokens [i];
    submit.stop_tokens = stop_tokens;
    submit.n_stop_tokens = n_stop_tokens;
    int rc = proto_send (&submit, self->scheduler);
    free (ids);
    if (rc != 0) {
        s_send_error (self, request->id, reply_to, 503, "the scheduler is not reachable");
        s_forget (self, request->id);
        return;
    }
    zlog (ZLOG_DEBUG, ACTOR, msg->request_id, "%" PRId64 " prompt tokens%s", n_ids,
          tools ? ", tool calls parsed" : "");
}

//  {"token": text, "logprob": x, "bytes": [...]} for one token: its text is what it
//  stands for in output (U+FFFD for bytes that are not whole characters), its bytes
//  those bytes, as OpenAI's logprobs show them.
static json_t *
s_logprob_entry (tokenizer_t *self, uint32_t token, float logprob)
{
    char piece [256];
    int length = vocab_piece (self->vocab, token, piece, sizeof piece);
    if (length < 0)
        length = 0;
    if ((size_t) length > sizeof piece)
        length = (int) sizeof piece;
    json_t *bytes = json_array ();
    for (int i = 0; bytes && i < length; i++)
        json_array_append_new (bytes, json_integer ((unsigned char) piece [i]));
    json_t *text = json_stringn (piece, (size_t) length);
    if (!text)
        text = json_string ("\xEF\xBF\xBD");     //  not valid UTF-8 on its own
    //  JSON has no -infinity: a token the model gives no chance gets OpenAI's floor.
    double value = isfinite (logprob)? (double) logprob: -9999.0;
    return json_pack ("{s:o, s:f, s:o}", "token", text, "logprob", value,
                      "bytes", bytes? bytes: json_array ());
}

//  The OUTPUT's logprobs: [entry of the token, with top_logprobs: [entries]], as JSON
//  text (heap), or NULL when out of memory.
static char *
s_logprobs_json (tokenizer_t *self, const proto_msg_t *msg)
{
    json_t *entry = s_logprob_entry (self, msg->tokens [0], msg->logprob);
    json_t *top = json_array ();
    for (uint32_t i = 0; top && i < msg->n_top; i++)
        json_array_append_new (top, s_logprob_entry (self, msg->top_tokens [i],
                                                     msg->top_logprobs [i]));
    char *text = NULL;
    if (entry && top && json_object_set_new (entry, "top_logprobs", top) == 0) {
        top = NULL;
        json_t *list = json_pack ("[O]", entry);
        text = list? json_dumps (list, JSON_COMPACT): NULL;
        json_decref (list);
    }
    json_decref (top);
    json_decref (entry);
    return text;
}

static void
s_handle_tokens (tokenizer_t *self, proto_msg_t *msg)
{
    request_t *request = s_find (self, msg->request_id);
    if (!request)
        return;                     //  cancelled or stopped meanwhile
    //  The queue time comes on the request's first TOKENS; it goes on its first OUTPUT.
    if (msg->queue_us > 0 && !request->queue_us_given)
        request->queue_us = msg->queue_us;
    if (msg->index >= request->n || request->sequences [msg->index].finished) {
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "TOKENS for sequence %u, which is not "
              "running; ignored", msg->index);
        return;
    }
    sequence_text_t *sequence = &request->sequences [msg->index];
    //  A stop token that ends the sequence gives no text, unless the request keeps what
    //  ends it (include_stop_str_in_output, as vLLM: then its text is written when it has
    //  one, a special token's only with keep_special_tokens).
    uint32_t n_rendered = msg->n_tokens;
    if (msg->finish == PROTO_FINISH_STOP && n_rendered > 0 && !request->include_stop)
        n_rendered--;
    uint32_t n_taken = 0;
    while (n_taken < n_rendered && !output_text_stopped (sequence->output))
        output_text_add (sequence->output, msg->tokens [n_taken++]);
    proto_finish_t finish = msg->finish;
    if (output_text_stopped (sequence->output)) {
        //  A stop string: the sequence ends here, whatever the scheduler still runs.
        finish = PROTO_FINISH_STOP;
        sequence->completion_tokens += n_taken;
        proto_msg_t cancel = PROTO_MSG_INIT;
        cancel.kind = PROTO_CANCEL;
        cancel.request_id = request->id;
        cancel.index = msg->index;
        cancel.only_index = request->n > 1;
        if (msg->finish == PROTO_FINISH_NONE && proto_send (&cancel, self->scheduler) != 0)
            zlog (ZLOG_WARN, ACTOR, request->id, "could not cancel after a stop string");
    }
    else
        sequence->completion_tokens += msg->n_tokens;
    if (finish != PROTO_FINISH_NONE) {
        output_text_finish (sequence->output);
        if (finish == PROTO_FINISH_STOP && output_text_tool_call_count (sequence->output) > 0)
            finish = PROTO_FINISH_TOOL_CALLS;
    }

    proto_msg_t output = PROTO_MSG_INIT;
    output.kind = PROTO_OUTPUT;
    output.request_id = request->id;
    output.index = msg->index;
    //  Log-probabilities of a token that counts in the text (one per TOKENS when asked).
    bool with_logprobs = request->want_logprobs && msg->n_tokens == 1 && n_rendered == 1;
    if ((with_logprobs && !(output.logprobs = s_logprobs_json (self, msg)))
    ||  output_text_take (sequence->output, &output.text, &output.tool_calls) != 0) {
        proto_msg_reset (&output);
        s_send_error (self, request->id, request->reply_to, 500, "out of memory");
        s_forget (self, request->id);
        return;
    }
    output.finish = finish;
    output.prompt_tokens = request->prompt_tokens;
    output.completion_tokens = sequence->completion_tokens;
    if (request->queue_us > 0 && !request->queue_us_given) {
        output.queue_us = request->queue_us;
        request->queue_us_given = true;
    }
    s_send_to_frontend (self, &output, request->reply_to);
    proto_msg_reset (&output);
    if (finish != PROTO_FINISH_NONE) {
        sequence->finished = true;
        if (++request->n_finished == request->n)
            s_forget (self, request->id);
    }
}

//  TOKENIZE: the prompt's ids (as a GENERATE would send them with add_special_tokens,
//  BOS as the model asks) in a TOKENS answer.
static void
s_handle_tokenize (tokenizer_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    uint32_t *ids = NULL;
    bool out_of_memory = false;
    char err [512];
    int64_t n_ids = s_tokenize (self, msg->text? msg->text: "", msg->add_special_tokens,
                                &ids, &out_of_memory, err, sizeof err);
    if (n_ids < 0) {
        s_send_error (self, msg->request_id, reply_to, out_of_memory? 500: 400, err);
        free (ids);
        return;
    }
    proto_msg_t tokens = PROTO_MSG_INIT;
    tokens.kind = PROTO_TOKENS;
    tokens.request_id = msg->request_id;
    tokens.tokens = ids;                    //  borrowed: tokens is not reset
    tokens.n_tokens = (uint32_t) n_ids;
    tokens.finish = PROTO_FINISH_STOP;
    s_send_to_frontend (self, &tokens, reply_to);
    free (ids);
}

//  DETOKENIZE: the text of the ids (special tokens as their text) in an OUTPUT answer.
static void
s_handle_detokenize (tokenizer_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    char message [160];
    if (s_check_in_vocabulary (self, "tokens", msg->tokens, msg->n_tokens, message,
                               sizeof message) != 0) {
        s_send_error (self, msg->request_id, reply_to, 400, message);
        return;
    }
    //  Each token gives at most a few bytes: grow when a piece does not fit.
    detok_t *detok = detok_new (self->vocab);
    size_t size = 0, limit = 256;
    char *text = (char *) malloc (limit);
    bool ok = detok && text;
    for (uint32_t i = 0; ok && i <= msg->n_tokens; i++) {
        const char *piece = i < msg->n_tokens? detok_add (detok, msg->tokens [i])
                                             : detok_flush (detok);
        size_t length = strlen (piece);
        if (size + length + 1 > limit) {
            limit = 2 * (size + length + 1);
            char *grown = (char *) realloc (text, limit);
            ok = grown != NULL;
            if (ok)
                text = grown;
        }
        if (ok) {
            memcpy (text + size, piece, length + 1);
            size += length;
        }
    }
    proto_msg_t output = PROTO_MSG_INIT;
    output.kind = PROTO_OUTPUT;
    output.request_id = msg->request_id;
    output.finish = PROTO_FINISH_STOP;
    if (ok) {
        output.text = text;                 //  borrowed: output is not reset
        s_send_to_frontend (self, &output, reply_to);
    }
    else
        s_send_error (self, msg->request_id, reply_to, 500, "out of memory");
    free (text);
    detok_destroy (&detok);
}

static void
s_handle_scheduler_error (tokenizer_t *self, proto_msg_t *msg)
{
    request_t *request = s_find (self, msg->request_id);
    if (!request)
        return;
    s_send_error (self, request->id, request->reply_to, msg->status,
                  msg->text ? msg->text : "the request failed");
    s_forget (self, request->id);
}

static void
s_handle_cancel (tokenizer_t *self, proto_msg_t *msg)
{
    if (!s_find (self, msg->request_id))
        return;
    s_forget (self, msg->request_id);
    if (proto_send (msg, self->scheduler) != 0)
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "could not pass CANCEL on");
}

//  The scheduler is gone: every open request fails.
static void
s_fail_all (tokenizer_t *self, const char *message)
{
    request_t *request = (request_t *) zhashx_first (self->requests);
    while (request) {
        s_send_error (self, request->id, request->reply_to, 503, message);
        request = (request_t *) zhashx_next (self->requests);
    }
    zhashx_purge (self->requests);
}

static void
s_read_inbox (tokenizer_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    zframe_t *routing_id = NULL;
    char err [256];
    if (proto_recv (self->inbox, &msg, &routing_id, err, sizeof err) != 0)
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the frontend side: %s", err);
    else
    if (msg.kind == PROTO_GENERATE)
        s_handle_generate (self, &msg, routing_id);
    else
    if (msg.kind == PROTO_CANCEL)
        s_handle_cancel (self, &msg);
    else
    if (msg.kind == PROTO_TOKENIZE)
        s_handle_tokenize (self, &msg, routing_id);
    else
    if (msg.kind == PROTO_DETOKENIZE)
        s_handle_detokenize (self, &msg, routing_id);
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the frontend side",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
    zframe_destroy (&routing_id);
}

static void
s_read_scheduler (tokenizer_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    char err [256];
    if (proto_recv (self->scheduler, &msg, NULL, err, sizeof err) != 0)
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the scheduler: %s", err);
    else
    if (msg.kind == PROTO_TOKENS)
        s_handle_tokens (self, &msg);
    else
    if (msg.kind == PROTO_ERROR)
        s_handle_scheduler_error (self, &msg);
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the scheduler",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
}

static void
s_read_pipe (tokenizer_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command || streq (command, "$TERM"))
        self->terminated = self->asked_to_stop = true;
    else
    if (streq (command, "PEER_DOWN")) {
        self->scheduler_down = true;
        s_fail_all (self, "the scheduler stopped");
    }
    else
        zlog (ZLOG_WARN, ACTOR, 0, "unknown command on the pipe: %s", command);
    zstr_free (&command);
}

//  The chat template: --chat-template's text, else the GGUF's. A template given on the
//  command line that does not parse stops the start; the GGUF's own only makes chat
//  requests fail, with the reason.
static int
s_load_chat_template (tokenizer_t *self, const gguf_t *gguf)
{
    tokenizer_args_t *args = self->args;
    char *source = NULL;
    gguf_str_t stored;
    if (args->chat_template)
        source = strdup (args->chat_template);
    else
    if (gguf_get_str (gguf, "tokenizer.chat_template", &stored) == 0)
        source = strndup (stored.ptr, stored.len);
    else {
        snprintf (self->chat_template_error, sizeof self->chat_template_error,
                  "this model has no chat template; start the server with --chat-template");
        return 0;
    }
    if (!source)
        return -1;
    uint32_t bos = vocab_bos (self->vocab);
    uint32_t eos = vocab_eos (self->vocab);
    char err [256];
    self->chat_template = chat_template_new (
        source, bos != UINT32_MAX ? vocab_token_text (self->vocab, bos) : "",
        eos != UINT32_MAX ? vocab_token_text (self->vocab, eos) : "", err, sizeof err);
    free (source);
    if (self->chat_template)
        return 0;
    if (args->chat_template) {
        snprintf (args->error, sizeof args->error, "--chat-template: %.200s", err);
        return -1;
    }
    snprintf (self->chat_template_error, sizeof self->chat_template_error,
              "the model's chat template does not parse: %.200s", err);
    zlog (ZLOG_WARN, ACTOR, 0, "%s", self->chat_template_error);
    return 0;
}

static int
s_start (tokenizer_t *self)
{
    tokenizer_args_t *args = self->args;
    char err [256];
    gguf_t *gguf = gguf_open (args->model_path, err, sizeof err);
    if (!gguf) {
        snprintf (args->error, sizeof args->error, "%s", err);
        return -1;
    }
    self->vocab = vocab_new (gguf, err, sizeof err);
    if (!self->vocab) {
        snprintf (args->error, sizeof args->error, "%s", err);
        gguf_destroy (&gguf);
        return -1;
    }
    int rc = s_load_chat_template (self, gguf);
    gguf_destroy (&gguf);
    if (rc != 0)
        return -1;
    if (args->tool_call_parser) {
        if (tool_parser_format_from_name (args->tool_call_parser, &self->tool_format) != 0) {
            snprintf (args->error, sizeof args->error, "unknown tool call parser '%s'",
                      args->tool_call_parser);
            return -1;
        }
        self->parse_tools = true;
    }
    //  Every end-of-generation token stops a request (toy-chat: <|end|> and
    //  <|endoftext|>), as llama.cpp does.
    size_t n_eog = vocab_eog_tokens (self->vocab, self->stop_tokens,
                                     sizeof self->stop_tokens / sizeof self->stop_tokens [0]);
    self->n_stop_tokens = (uint32_t) (n_eog < 64 ? n_eog : 64);
    self->requests = proto_id_table_new (s_request_free);

    self->inbox = proto_router_new (args->inbox_endpoint, args->error,
                                    sizeof args->error);
    if (!self->inbox)
        return -1;
    self->scheduler = zsock_new (ZMQ_DEALER);
    if (!self->scheduler)
        return -1;
    zsock_set_sndhwm (self->scheduler, 0);
    zsock_set_rcvhwm (self->scheduler, 0);
    if (zsock_connect (self->scheduler, "%s", args->scheduler_endpoint) == -1) {
        snprintf (args->error, sizeof args->error, "could not connect %s",
                  args->scheduler_endpoint);
        return -1;
    }
    self->poller = zpoller_new (self->pipe, self->inbox, self->scheduler, NULL);
    zlog (ZLOG_INFO, ACTOR, 0, "vocabulary of %u tokens", vocab_size (self->vocab));
    return self->poller ? 0 : -1;
}

static void
s_stop (tokenizer_t *self)
{
    zhashx_destroy (&self->requests);
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->scheduler);
    zsock_destroy (&self->inbox);
    chat_template_destroy (&self->chat_template);
    vocab_destroy (&self->vocab);
}

void
tokenizer_actor (zsock_t *pipe, void *args)
{
    tokenizer_t self = { 0 };
    self.args = (tokenizer_args_t *) args;
    self.pipe = pipe;
    self.args->error [0] = 0;
    if (s_start (&self) != 0) {
        if (!self.args->error [0])
            snprintf (self.args->error, sizeof self.args->error, "could not start");
        s_stop (&self);
        zsock_signal (pipe, 0);
        return;
    }
    zsock_signal (pipe, 0);
    zlog (ZLOG_INFO, ACTOR, 0, "ready");
    while (!self.terminated) {
        void *which = zpoller_wait (self.poller, -1);
        if (which == self.pipe)
            s_read_pipe (&self);
        else
        if (which == self.inbox)
            s_read_inbox (&self);
        else
        if (which == self.scheduler)
            s_read_scheduler (&self);
        else
        if (zpoller_terminated (self.poller))
            break;
    }
    s_stop (&self);
    if (!self.asked_to_stop)
        zstr_send (pipe, "STOPPED");
}
