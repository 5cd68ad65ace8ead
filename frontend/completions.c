/*  completions — OpenAI JSON in and out for the frontend, as pure functions.

    Validation follows what OpenAI answers where it matters to clients: a 400 with the
    offending parameter in "param", a 404 with code "model_not_found" for a model we do
    not serve. What this server cannot do yet (array prompts, streaming, n > 1) is
    refused with a 400 that says so, never silently ignored. See completions.h.
*/
#include "completions.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
api_error_set (api_error_t *error, int status, const char *param, const char *code,
               const char *format, ...)
{
    error->status = status;
    snprintf (error->param, sizeof error->param, "%s", param? param: "");
    snprintf (error->code, sizeof error->code, "%s", code? code: "");
    va_list args;
    va_start (args, format);
    vsnprintf (error->message, sizeof error->message, format, args);
    va_end (args);
}


//  --------------------------------------------------------------------------
//  UTF-8

//  Length of the valid UTF-8 sequence at text [0 .. size-1], or 0 when it is not valid;
//  *prefix gets how many of its bytes form a valid start (at least 1) when it is not.
static size_t
s_utf8_sequence (const unsigned char *text, size_t size, size_t *prefix)
{
    unsigned char lead = text [0];
    size_t length;
    unsigned char low = 0x80, high = 0xBF;     //  range of the second byte
    *prefix = 1;
    if (lead >= 0x01 && lead <= 0x7F)
        return 1;
    else
    if (lead >= 0xC2 && lead <= 0xDF)
        length = 2;
    else
    if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        if (lead == 0xE0)
            low = 0xA0;                         //  no overlong forms
        else
        if (lead == 0xED)
            high = 0x9F;                        //  no surrogates
    }
    else
    if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        if (lead == 0xF0)
            low = 0x90;
        else
        if (lead == 0xF4)
            high = 0x8F;                        //  nothing above U+10FFFF
    }
    else
        return 0;                               //  NUL, continuation byte, C0, C1, F5..FF

    size_t valid = 1;
    while (valid < length && valid < size) {
        unsigned char byte = text [valid];
        unsigned char min = valid == 1? low: 0x80;
        unsigned char max = valid == 1? high: 0xBF;
        if (byte < min || byte > max)
            break;
        valid++;
    }
    if (valid == length)
        return length;
    *prefix = valid;
    return 0;
}

char *
utf8_sanitize (const char *text, size_t size, size_t *out_size)
{
    //  Each input byte becomes at most the 3 bytes of U+FFFD.
    char *clean = (char *) malloc (size * 3 + 1);
    if (!clean)
        return NULL;
    const unsigned char *input = (const unsigned char *) text;
    size_t used = 0;
    size_t at = 0;
    while (at < size) {
        size_t prefix;
        size_t length = s_utf8_sequence (input + at, size - at, &prefix);
        if (length) {
            memcpy (clean + used, input + at, length);
            used += length;
            at += length;
        }
        else {
            memcpy (clean + used, "\xEF\xBF\xBD", 3);
            used += 3;
            at += prefix;
        }
    }
    clean [used] = 0;
    if (out_size)
        *out_size = used;
    return clean;
}

//  A JSON string from any bytes (sanitized), or NULL when out of memory.
static json_t *
s_json_text (const char *text, size_t size)
{
    size_t clean_size;
    char *clean = utf8_sanitize (text? text: "", text? size: 0, &clean_size);
    if (!clean)
        return NULL;
    json_t *string = json_stringn (clean, clean_size);
    free (clean);
    return string;
}

//  A JSON string, or null when text is NULL or empty.
static json_t *
s_json_text_or_null (const char *text)
{
    if (!text || !*text)
        return json_null ();
    return s_json_text (text, strlen (text));
}

//  Serialize and release root; NULL when root is NULL or out of memory.
static char *
s_dump (json_t *root)
{
    if (!root)
        return NULL;
    char *text = json_dumps (root, JSON_COMPACT);
    json_decref (root);
    return text;
}


//  --------------------------------------------------------------------------
//  Request

//  Each s_parse_ helper returns 0, or -1 with error filled. A member that is absent or
//  null leaves the default in place.

static int
s_parse_model (json_t *root, const char *model_name, api_error_t *error)
{
    json_t *model = json_object_get (root, "model");
    if (!model || json_is_null (model)) {
        api_error_set (error, 400, "model", NULL,
                       "you must provide a model parameter");
        return -1;
    }
    if (!json_is_string (model)) {
        api_error_set (error, 400, "model", NULL, "'model' must be a string");
        return -1;
    }
    const char *name = json_string_value (model);
    size_t name_size = json_string_length (model);
    if (name_size != strlen (model_name) || memcmp (name, model_name, name_size) != 0) {
        api_error_set (error, 404, "model", "model_not_found",
                       "The model `%.200s` does not exist. This server serves `%.200s`.",
                       name, model_name);
        return -1;
    }
    return 0;
}

static int
s_parse_prompt (json_t *root, completion_request_t *request, api_error_t *error)
{
    json_t *prompt = json_object_get (root, "prompt");
    if (!prompt || json_is_null (prompt)) {
        api_error_set (error, 400, "prompt", NULL, "you must provide a prompt");
        return -1;
    }
    if (json_is_array (prompt)) {
        api_error_set (error, 400, "prompt", NULL,
                       "only a string prompt is supported for now");
        return -1;
    }
    if (!json_is_string (prompt)) {
        api_error_set (error, 400, "prompt", NULL, "'prompt' must be a string");
        return -1;
    }
    request->prompt = strdup (json_string_value (prompt));
    if (!request->prompt) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    return 0;
}

static int
s_parse_max_tokens (json_t *root, completion_request_t *request, api_error_t *error)
{
    json_t *max_tokens = json_object_get (root, "max_tokens");
    if (!max_tokens || json_is_null (max_tokens))
        return 0;
    if (!json_is_integer (max_tokens)) {
        api_error_set (error, 400, "max_tokens", NULL,
                       "'max_tokens' must be an integer or null");
        return -1;
    }
    json_int_t value = json_integer_value (max_tokens);
    if (value < 1) {
        api_error_set (error, 400, "max_tokens", NULL,
                       "'max_tokens' must be at least 1, got %" JSON_INTEGER_FORMAT, value);
        return -1;
    }
    if (value > (json_int_t) UINT32_MAX) {
        api_error_set (error, 400, "max_tokens", NULL,
                       "'max_tokens' is too large: %" JSON_INTEGER_FORMAT, value);
        return -1;
    }
    request->max_tokens = (uint32_t) value;
    return 0;
}

static int
s_parse_temperature (json_t *root, completion_request_t *request, api_error_t *error)
{
    json_t *temperature = json_object_get (root, "temperature");
    if (!temperature || json_is_null (temperature))
        return 0;
    if (!json_is_number (temperature)) {
        api_error_set (error, 400, "temperature", NULL,
                       "'temperature' must be a number or null");
        return -1;
    }
    double value = json_number_value (temperature);
    if (!(value >= 0 && value <= COMPLETION_MAX_TEMPERATURE)) {
        api_error_set (error, 400, "temperature", NULL,
                       "'temperature' must be between 0 and 2, got %g", value);
        return -1;
    }
    request->temperature = (float) value;
    return 0;
}

static int
s_parse_seed (json_t *root, completion_request_t *request, api_error_t *error)
{
    json_t *seed = json_object_get (root, "seed");
    if (!seed || json_is_null (seed))
        return 0;
    if (!json_is_integer (seed)) {
        api_error_set (error, 400, "seed", NULL, "'seed' must be an integer or null");
        return -1;
    }
    request->has_seed = true;
    request->seed = (uint64_t) json_integer_value (seed);
    return 0;
}

static int
s_parse_n (json_t *root, api_error_t *error)
{
    json_t *n = json_object_get (root, "n");
    if (!n || json_is_null (n))
        return 0;
    if (!json_is_integer (n)) {
        api_error_set (error, 400, "n", NULL, "'n' must be an integer or null");
        return -1;
    }
    if (json_integer_value (n) != 1) {
        api_error_set (error, 400, "n", NULL, "only n=1 is supported for now, got %"
                       JSON_INTEGER_FORMAT, json_integer_value (n));
        return -1;
    }
    return 0;
}

static int
s_parse_stream (json_t *root, api_error_t *error)
{
    json_t *stream = json_object_get (root, "stream");
    if (!stream || json_is_null (stream))
        return 0;
    if (!json_is_boolean (stream)) {
        api_error_set (error, 400, "stream", NULL, "'stream' must be a boolean or null");
        return -1;
    }
    if (json_is_true (stream)) {
        api_error_set (error, 400, "stream", NULL,
                       "streaming is not supported yet: leave 'stream' out or set it to false");
        return -1;
    }
    return 0;
}

int
completion_request_parse (const char *body, size_t size, const char *model_name,
                          completion_request_t *request, api_error_t *error)
{
    memset (request, 0, sizeof *request);
    memset (error, 0, sizeof *error);
    request->max_tokens = COMPLETION_DEFAULT_MAX_TOKENS;
    request->temperature = COMPLETION_DEFAULT_TEMPERATURE;

    json_error_t json_error;
    json_t *root = json_loadb (body? body: "", body? size: 0, JSON_DECODE_ANY, &json_error);
    if (!root) {
        api_error_set (error, 400, NULL, NULL,
                       "the request body is not valid JSON: %s (line %d, column %d)",
                       json_error.text, json_error.line, json_error.column);
        return -1;
    }
    int rc = 0;
    if (!json_is_object (root)) {
        api_error_set (error, 400, NULL, NULL, "the request body must be a JSON object");
        rc = -1;
    }
    if (rc == 0)
        rc = s_parse_model (root, model_name, error);
    if (rc == 0)
        rc = s_parse_prompt (root, request, error);
    if (rc == 0)
        rc = s_parse_max_tokens (root, request, error);
    if (rc == 0)
        rc = s_parse_temperature (root, request, error);
    if (rc == 0)
        rc = s_parse_seed (root, request, error);
    if (rc == 0)
        rc = s_parse_n (root, error);
    if (rc == 0)
        rc = s_parse_stream (root, error);
    json_decref (root);
    if (rc != 0)
        completion_request_reset (request);
    return rc;
}

void
completion_request_reset (completion_request_t *request)
{
    free (request->prompt);
    memset (request, 0, sizeof *request);
}

void
completion_id_format (uint64_t request_id, char buffer [COMPLETION_ID_SIZE])
{
    snprintf (buffer, COMPLETION_ID_SIZE, "cmpl-%016" PRIx64, request_id);
}


//  --------------------------------------------------------------------------
//  Responses

char *
completion_response_json (const char *id, int64_t created, const char *model,
                          const char *text, size_t text_size, const char *finish_reason,
                          uint32_t prompt_tokens, uint32_t completion_tokens)
{
    json_t *choice = json_pack ("{s:i, s:o, s:n, s:o}",
                                "index", 0,
                                "text", s_json_text (text, text_size),
                                "logprobs",
                                "finish_reason", s_json_text_or_null (finish_reason));
    json_t *usage = json_pack ("{s:I, s:I, s:I}",
                               "prompt_tokens", (json_int_t) prompt_tokens,
                               "completion_tokens", (json_int_t) completion_tokens,
                               "total_tokens",
                               (json_int_t) prompt_tokens + (json_int_t) completion_tokens);
    if (!choice || !usage) {
        json_decref (choice);
        json_decref (usage);
        return NULL;
    }
    json_t *root = json_pack ("{s:o, s:s, s:I, s:o, s:[o], s:o}",
                              "id", s_json_text (id, strlen (id)),
                              "object", "text_completion",
                              "created", (json_int_t) created,
                              "model", s_json_text (model, strlen (model)),
                              "choices", choice,
                              "usage", usage);
    return s_dump (root);
}

char *
models_list_json (const char *model, int64_t created, uint32_t n_ctx)
{
    json_t *root = json_pack ("{s:s, s:[{s:o, s:s, s:I, s:s, s:I}]}",
                              "object", "list",
                              "data",
                              "id", s_json_text (model, strlen (model)),
                              "object", "model",
                              "created", (json_int_t) created,
                              "owned_by", "zllm",
                              "max_model_len", (json_int_t) n_ctx);
    return s_dump (root);
}

const char *
api_error_type (int status)
{
    if (status == 401)
        return "authentication_error";
    if (status >= 500)
        return "server_error";
    return "invalid_request_error";
}

const char *
http_status_reason (int status)
{
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 413: return "Payload Too Large";
        case 415: return "Unsupported Media Type";
        case 422: return "Unprocessable Entity";
        case 429: return "Too Many Requests";
        case 499: return "Client Closed Request";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        default:  return "Error";
    }
}

char *
api_error_json (int status, const char *message, const char *param, const char *code)
{
    if (!message)
        message = "";
    json_t *root = json_pack ("{s:{s:o, s:s, s:o, s:o}}",
                              "error",
                              "message", s_json_text (message, strlen (message)),
                              "type", api_error_type (status),
                              "param", s_json_text_or_null (param),
                              "code", s_json_text_or_null (code));
    return s_dump (root);
}

char *
api_error_to_json (const api_error_t *error)
{
    return api_error_json (error->status, error->message, error->param, error->code);
}
