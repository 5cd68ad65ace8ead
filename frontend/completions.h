/*  completions — OpenAI JSON in and out for the frontend, as pure functions (no I/O).

    Parses and validates a POST /v1/completions body into a completion_request_t, and
    builds the JSON bodies the frontend answers with: the completion (whole, or as
    streamed chunks), the model list and OpenAI error bodies
    {"error":{"message","type","param","code"}}.

    It also holds what every generation endpoint shares, which chat.c uses too: loading
    the body, checking "model", "max_tokens"-like integers, and the generation options
    (temperature, seed, n, best_of, beam search, stop, stream, stream_options, the vLLM
    output options) in a generation_options_t; the usage chunk that ends a stream; UTF-8
    sanitizing and the error bodies.

    A request may ask for n choices (n sequences sampled from the same prompt), and a
    completion may hold several prompts (OpenAI's array forms of "prompt"): each prompt
    gets its n choices, and choice j of prompt i is choice i * n + j of the answer. The
    answers take them as an array, choice k with "index" k; a streamed chunk carries one
    choice, named by its index.

    Every JSON text these functions return is a heap string (free it); NULL means out of
    memory. A request that fails validation fills an api_error_t that says which HTTP
    status, message, param and code the client gets.
*/
#ifndef ZLLM_COMPLETIONS_H
#define ZLLM_COMPLETIONS_H

#include "protocol.h"
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COMPLETION_DEFAULT_MAX_TOKENS   16
#define COMPLETION_DEFAULT_TEMPERATURE  1.0f
#define COMPLETION_MAX_TEMPERATURE      2.0
//  "stop": a string or an array of at most this many strings, as OpenAI allows.
#define COMPLETION_MAX_STOPS            4
//  "prompt" as an array: at most this many prompts in one request (OpenAI sets no
//  number; each prompt is one request for the scheduler).
#define COMPLETION_MAX_PROMPTS          64
//  Beam search's default length_penalty (vLLM's): scores are cumulative log-probability
//  divided by length ^ length_penalty.
#define COMPLETION_DEFAULT_LENGTH_PENALTY 1.0f

//  "cmpl-" + 16 hex digits + NUL
#define COMPLETION_ID_SIZE              22

//  Why a request was refused: an HTTP status and the fields of an OpenAI error body.
typedef struct {
    int status;                 //  HTTP status (400, 404, ...); 0 when there is no error
    char message [512];
    char param [96];            //  the parameter at fault ("messages[2].content");
                                //  "" writes JSON null
    char code [32];             //  OpenAI's error code ("model_not_found"); "" writes null
} api_error_t;

//  At most this many stop_token_ids (a vLLM extension) per request.
#define COMPLETION_MAX_STOP_TOKEN_IDS   32

//  What every generation request carries on to the tokenizer, and how it is answered.
typedef struct {
    uint32_t max_tokens;        //  0: up to the context (chat's default)
    proto_sampling_t sampling;  //  temperature 0 .. 2 (0 greedy), top_p, top_k, ...;
                                //  its logit_bias arrays are heap, freed by reset
    bool has_seed;              //  false: the caller picks a random sampling.seed
    bool ignore_eos;            //  vLLM: do not stop at the model's end tokens
    uint32_t best_of;           //  sequences to generate, when more than n (0: n);
                                //  with beam search, the beam width when given
    bool use_beam_search;       //  vLLM: beam search (deterministic, not streamed), of
                                //  width best_of, or n when best_of is not given
    float length_penalty;       //  beam search only (1 otherwise): default 1
    proto_early_stopping_t early_stopping;  //  beam search only (FALSE otherwise)
    bool include_stop_str_in_output;    //  vLLM: a stop string stays in the text
    bool keep_special_tokens;   //  vLLM's skip_special_tokens false: special tokens
                                //  (</s>, <|end|>) are written into the text
    bool echo;                  //  completions: the prompt comes back before the text
    bool want_logprobs;         //  log-probabilities of the chosen tokens (and
                                //  sampling.n_logprobs alternatives); not streamed
    char **stops;               //  n_stops non-empty heap strings in a heap array, or NULL
    uint32_t n_stops;           //  at most COMPLETION_MAX_STOPS
    uint32_t stop_token_ids [COMPLETION_MAX_STOP_TOKEN_IDS];  //  vLLM's stop_token_ids
    uint32_t n_stop_token_ids;
    bool stream;                //  answer with server-sent events
    bool include_usage;         //  stream_options.include_usage: a last chunk with usage
    uint32_t n;                 //  choices wanted, 1 .. PROTO_MAX_N (default 1)
} generation_options_t;

//  One prompt of a completion: text, or token ids that the model runs as they are (no
//  BOS added).
typedef struct {
    char *text;                 //  heap, NUL-terminated UTF-8 (jansson refuses \u0000),
                                //  or NULL for a prompt of token ids
    uint32_t *tokens;           //  heap, n_tokens ids (1 .. PROTO_MAX_TOKENS), or NULL
    uint32_t n_tokens;          //  for a text prompt
} completion_prompt_t;

//  A valid completion request, as the frontend passes it on.
typedef struct {
    completion_prompt_t *prompts;   //  heap, n_prompts of them, in the request's order
    uint32_t n_prompts;         //  1 .. COMPLETION_MAX_PROMPTS
    generation_options_t options;   //  max_tokens >= 1 (default 16)
} completion_request_t;

//  Fill error with status, param, code (either may be NULL) and a printf-style message.
void
    api_error_set (api_error_t *error, int status, const char *param, const char *code,
                   const char *format, ...) __attribute__ ((format (printf, 5, 6)));

//  Parse body (size bytes, need not be NUL-terminated) as a JSON object. Returns it, or
//  NULL with error filled (400: not JSON, or not an object).
json_t *
    request_body_load (const char *body, size_t size, api_error_t *error);

//  Check "model": required, a string, and the served model_name (else 404
//  model_not_found). Returns 0, or -1 with error filled.
int
    request_model_check (json_t *root, const char *model_name, api_error_t *error);

//  Read the integer member name (>= 1, at most UINT32_MAX) into *value; absent or null
//  leaves *value as it is. Returns 0, or -1 with error filled (param = name).
int
    request_max_tokens_parse (json_t *root, const char *name, uint32_t *value,
                              api_error_t *error);

//  Zero options and set the defaults every generation request starts from: max_tokens
//  as given (0: up to the context), temperature 1, n 1, length_penalty 1.
void
    generation_options_init (generation_options_t *options, uint32_t max_tokens);

//  Read the sampling parameters (temperature, top_p, top_k, min_p, presence_penalty,
//  frequency_penalty, repetition_penalty, seed, min_tokens, logit_bias), ignore_eos,
//  n (1 .. PROTO_MAX_N), best_of (n .. PROTO_MAX_N; above n not with stream),
//  use_beam_search with length_penalty and early_stopping (see below),
//  include_stop_str_in_output, skip_special_tokens, stop, stop_token_ids, stream and
//  stream_options (allowed only with stream true) into options, which keeps what it
//  holds for absent members (the caller sets the defaults with generation_options_init,
//  and max_tokens, first: min_tokens may not exceed it; an n left at 0 becomes 1).
//
//  Beam search, as vLLM's SamplingParams checks it: use_beam_search a boolean;
//  length_penalty a finite number; early_stopping true, false or "never". Without beam
//  search, length_penalty must be 1 and early_stopping false. With it: not streamed;
//  temperature, top_p, top_k and min_p, when given, must say "no sampling" (0, 1, -1 or
//  0, 0); temperature becomes 0. The width is best_of when given, else n.
//
//  Returns 0, or -1 with error filled; options may hold arrays either way: release it
//  with generation_options_reset.
int
    generation_options_parse (json_t *root, generation_options_t *options,
                              api_error_t *error);

//  The number of sequences the scheduler runs for one prompt: best_of when given, else
//  n (for beam search, the beam width).
uint32_t
    generation_options_width (const generation_options_t *options);

//  Free what options owns and zero it.
void
    generation_options_reset (generation_options_t *options);

//  Log-probabilities are not kept for best_of above n nor for beam search: a request
//  that asks for them with either gets a 400 (param "logprobs"). Returns 0 or -1 with
//  error filled.
int
    generation_options_check_logprobs (const generation_options_t *options,
                                       api_error_t *error);

//  Parse and validate a /v1/completions body (size bytes, need not be NUL-terminated).
//  model_name is the only model served. "prompt" is a string, an array of strings, an
//  array of token ids (one prompt) or an array of arrays of token ids: at most
//  COMPLETION_MAX_PROMPTS prompts, none an empty array, token ids integers from 0 to
//  UINT32_MAX (whether the vocabulary has them is the tokenizer's to say), no mix of
//  forms; an error names the element at fault ("prompt[2][5]"). An empty string is a
//  prompt (the model starts from BOS). "echo" is refused with token-id prompts (their
//  text is not known here). Returns 0 and fills request (release it with
//  completion_request_reset), or -1 and fills error (request is left zeroed).
int
    completion_request_parse (const char *body, size_t size, const char *model_name,
                              completion_request_t *request, api_error_t *error);

//  Free what request owns and zero it.
void
    completion_request_reset (completion_request_t *request);

//  Write "cmpl-" and the id as 16 lower-case hex digits into buffer.
void
    completion_id_format (uint64_t request_id, char buffer [COMPLETION_ID_SIZE]);

//  One choice of a finished completion, as the caller holds it (nothing is copied).
typedef struct {
    const char *text;           //  text_size bytes, need not be valid UTF-8 (invalid
    size_t text_size;           //  sequences become U+FFFD); NULL is ""
    const char *finish_reason;  //  "stop" or "length"
    const char *logprobs;       //  NULL, or a JSON array of {token, logprob, bytes,
                                //  top_logprobs} (the tokenizer's): written in the
                                //  completions shape {tokens, token_logprobs,
                                //  top_logprobs, text_offset}
    size_t text_offset;         //  where the first token's text starts (echo: after
                                //  the prompt)
} completion_choice_t;

//  The body of a finished, non-streamed completion: choices [0 .. n_choices-1], each
//  with "index" its place in the array, and one usage for the request (prompt_tokens
//  the sum over its prompts, completion_tokens the sum over the choices).
char *
    completion_response_json (const char *id, int64_t created, const char *model,
                              const completion_choice_t *choices, size_t n_choices,
                              uint32_t prompt_tokens, uint32_t completion_tokens);

//  One chunk of a streamed completion: object "text_completion", one choice, number
//  index, with text (text_size bytes, sanitized) and finish_reason (NULL: JSON null),
//  and logprobs (NULL: null; else as in completion_choice_t, offsets from text_offset).
//  With include_usage the chunk carries "usage": null, as OpenAI's do when a usage
//  chunk will follow.
char *
    completion_chunk_json (const char *id, int64_t created, const char *model,
                           uint32_t index, const char *text, size_t text_size,
                           const char *finish_reason, bool include_usage,
                           const char *logprobs, size_t text_offset);

//  The last chunk of a stream asked for with stream_options.include_usage: object
//  ("text_completion" or "chat.completion.chunk"), "choices": [] and the usage.
char *
    usage_chunk_json (const char *id, const char *object, int64_t created,
                      const char *model, uint32_t prompt_tokens, uint32_t completion_tokens);

//  The body of GET /v1/models.
char *
    models_list_json (const char *model, int64_t created, uint32_t n_ctx);

//  POST /tokenize (vLLM's): {"model"? (when given, ours), "prompt": string,
//  "add_special_tokens"? (default true: BOS as the model asks)}; POST /detokenize:
//  {"model"?, "tokens": [ids]} (at most PROTO_MAX_TOKENS). A chat "messages" form is not
//  there yet (400).
typedef struct {
    char *prompt;               //  heap (tokenize)
    bool add_special_tokens;
    uint32_t *tokens;           //  heap (detokenize)
    uint32_t n_tokens;
} tokenize_request_t;

int
    tokenize_request_parse (const char *body, size_t size, const char *model_name,
                            bool detokenize, tokenize_request_t *request,
                            api_error_t *error);

void
    tokenize_request_reset (tokenize_request_t *request);

//  {"count": n, "max_model_len": n_ctx, "tokens": [...]} and {"prompt": text}.
char *
    tokenize_response_json (const uint32_t *tokens, uint32_t n_tokens, uint32_t n_ctx);
char *
    detokenize_response_json (const char *text, size_t size);

//  An OpenAI error body. param and code may be NULL or "" (JSON null).
char *
    api_error_json (int status, const char *message, const char *param, const char *code);

//  The same, from an api_error_t.
char *
    api_error_to_json (const api_error_t *error);

//  OpenAI's error "type" for an HTTP status: "authentication_error" for 401,
//  "invalid_request_error" for other 4xx (404 included, as OpenAI sends it),
//  "server_error" for 5xx.
const char *
    api_error_type (int status);

//  The reason phrase for an HTTP status ("Bad Request"), "Error" when unknown.
const char *
    http_status_reason (int status);

//  A JSON string holding size bytes of text (NULL: ""), every invalid UTF-8 sequence
//  replaced by U+FFFD. NULL when out of memory.
json_t *
    api_json_string (const char *text, size_t size);

//  Copy size bytes of text into a new NUL-terminated heap string where every invalid
//  UTF-8 sequence (and every NUL) is replaced by U+FFFD. *out_size gets its length.
char *
    utf8_sanitize (const char *text, size_t size, size_t *out_size);

#endif
