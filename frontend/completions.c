/*  completions — OpenAI JSON in and out for the frontend, as pure functions.

    Validation follows what OpenAI answers where it matters to clients: a 400 with the
    offending parameter in "param", a 404 with code "model_not_found" for a model we do
    not serve. vLLM's extensions (beam search, include_stop_str_in_output,
    skip_special_tokens) are checked as vLLM's SamplingParams checks them. What this
    server cannot do (a non-empty suffix, echo with token-id prompts, log-probabilities
    with beam search) is refused with a 400 that says so, never silently ignored. See
    completions.h.
*/
#include "completions.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
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

json_t *
api_json_string (const char *text, size_t size)
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
    return api_json_string (text, strlen (text));
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

json_t *
request_body_load (const char *body, size_t size, api_error_t *error)
{
    json_error_t json_error;
    json_t *root = json_loadb (body? body: "", body? size: 0, JSON_DECODE_ANY, &json_error);
    if (!root) {
        api_error_set (error, 400, NULL, NULL,
                       "the request body is not valid JSON: %s (line %d, column %d)",
                       json_error.text, json_error.line, json_error.column);
        return NULL;
    }
    if (!json_is_object (root)) {
        api_error_set (error, 400, NULL, NULL, "the request body must be a JSON object");
        json_decref (root);
        return NULL;
    }
    return root;
}

int
request_model_check (json_t *root, const char *model_name, api_error_t *error)
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

int
request_max_tokens_parse (json_t *root, const char *name, uint32_t *value,
                          api_error_t *error)
{
    json_t *member = json_object_get (root, name);
    if (!member || json_is_null (member))
        return 0;
    if (!json_is_integer (member)) {
        api_error_set (error, 400, name, NULL, "'%s' must be an integer or null", name);
        return -1;
    }
    json_int_t number = json_integer_value (member);
    if (number < 1) {
        api_error_set (error, 400, name, NULL,
                       "'%s' must be at least 1, got %" JSON_INTEGER_FORMAT, name, number);
        return -1;
    }
    if (number > (json_int_t) UINT32_MAX) {
        api_error_set (error, 400, name, NULL,
                       "'%s' is too large: %" JSON_INTEGER_FORMAT, name, number);
        return -1;
    }
    *value = (uint32_t) number;
    return 0;
}

//  The number member `name`, absent or null: left as it is. It must lie in [min, max]
//  (or (min, max] when min_exclusive).
static int
s_parse_number (json_t *root, const char *name, double min, double max, bool min_exclusive,
                float *value, api_error_t *error)
{
    json_t *member = json_object_get (root, name);
    if (!member || json_is_null (member))
        return 0;
    if (!json_is_number (member)) {
        api_error_set (error, 400, name, NULL, "'%s' must be a number or null", name);
        return -1;
    }
    double number = json_number_value (member);
    bool above_min = min_exclusive? number > min: number >= min;
    if (!(above_min && number <= max)) {
        if (min_exclusive)
            api_error_set (error, 400, name, NULL, "'%s' must be above %g and at most %g, "
                           "got %g", name, min, max, number);
        else
            api_error_set (error, 400, name, NULL, "'%s' must be between %g and %g, got %g",
                           name, min, max, number);
        return -1;
    }
    *value = (float) number;
    return 0;
}

//  The boolean member `name`, absent or null: left as it is.
static int
s_parse_boolean (json_t *root, const char *name, bool *value, api_error_t *error)
{
    json_t *member = json_object_get (root, name);
    if (!member || json_is_null (member))
        return 0;
    if (!json_is_boolean (member)) {
        api_error_set (error, 400, name, NULL, "'%s' must be a boolean or null", name);
        return -1;
    }
    *value = json_is_true (member);
    return 0;
}

//  The integer member `name` in [min, max], absent or null: left as it is.
static int
s_parse_integer (json_t *root, const char *name, json_int_t min, json_int_t max,
                 json_int_t *value, api_error_t *error)
{
    json_t *member = json_object_get (root, name);
    if (!member || json_is_null (member))
        return 0;
    if (!json_is_integer (member)) {
        api_error_set (error, 400, name, NULL, "'%s' must be an integer or null", name);
        return -1;
    }
    json_int_t number = json_integer_value (member);
    if (number < min || number > max) {
        api_error_set (error, 400, name, NULL, "'%s' must be from %" JSON_INTEGER_FORMAT
                       " to %" JSON_INTEGER_FORMAT ", got %" JSON_INTEGER_FORMAT,
                       name, min, max, number);
        return -1;
    }
    *value = number;
    return 0;
}

static int
s_parse_seed (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_t *seed = json_object_get (root, "seed");
    if (!seed || json_is_null (seed))
        return 0;
    if (!json_is_integer (seed)) {
        api_error_set (error, 400, "seed", NULL, "'seed' must be an integer or null");
        return -1;
    }
    options->has_seed = true;
    options->sampling.seed = (uint64_t) json_integer_value (seed);
    return 0;
}

//  logit_bias: {"token id": bias, ...}, bias from -100 to 100 (OpenAI). Whether the ids
//  exist in the vocabulary is the tokenizer's to check.
static int
s_parse_logit_bias (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_t *bias = json_object_get (root, "logit_bias");
    if (!bias || json_is_null (bias))
        return 0;
    if (!json_is_object (bias)) {
        api_error_set (error, 400, "logit_bias", NULL,
                       "'logit_bias' must be an object of token ids to numbers, or null");
        return -1;
    }
    size_t count = json_object_size (bias);
    if (count > PROTO_MAX_BIAS) {
        api_error_set (error, 400, "logit_bias", NULL, "'logit_bias' may hold at most %d "
                       "tokens, got %zu", PROTO_MAX_BIAS, count);
        return -1;
    }
    if (count == 0)
        return 0;
    proto_sampling_t *sampling = &options->sampling;
    sampling->bias_tokens = (uint32_t *) malloc (count * sizeof (uint32_t));
    sampling->bias_values = (float *) malloc (count * sizeof (float));
    if (!sampling->bias_tokens || !sampling->bias_values) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach (bias, key, value) {
        char *end = NULL;
        errno = 0;
        unsigned long long id = strtoull (key, &end, 10);
        if (!key [0] || *end || errno || key [0] == '-' || key [0] == '+'
        ||  id > UINT32_MAX) {
            api_error_set (error, 400, "logit_bias", NULL, "'logit_bias' keys must be "
                           "token ids (non-negative integers), got '%.40s'", key);
            return -1;
        }
        if (!json_is_number (value) || json_number_value (value) < -100
        ||  json_number_value (value) > 100) {
            api_error_set (error, 400, "logit_bias", NULL, "'logit_bias' values must be "
                           "numbers from -100 to 100 (token %.40s)", key);
            return -1;
        }
        sampling->bias_tokens [sampling->n_bias] = (uint32_t) id;
        sampling->bias_values [sampling->n_bias] = (float) json_number_value (value);
        sampling->n_bias++;
    }
    return 0;
}

//  temperature, top_p, top_k, min_p, the penalties, seed, min_tokens, logit_bias and
//  ignore_eos, with OpenAI's and vLLM's ranges.
static int
s_parse_sampling (json_t *root, generation_options_t *options, api_error_t *error)
{
    proto_sampling_t *sampling = &options->sampling;
    json_int_t top_k = 0, min_tokens = 0;
    if (s_parse_number (root, "temperature", 0, COMPLETION_MAX_TEMPERATURE, false,
                        &sampling->temperature, error) != 0
    ||  s_parse_number (root, "top_p", 0, 1, true, &sampling->top_p, error) != 0
    ||  s_parse_number (root, "min_p", 0, 1, false, &sampling->min_p, error) != 0
    ||  s_parse_number (root, "presence_penalty", -2, 2, false,
                        &sampling->presence_penalty, error) != 0
    ||  s_parse_number (root, "frequency_penalty", -2, 2, false,
                        &sampling->frequency_penalty, error) != 0
    ||  s_parse_number (root, "repetition_penalty", 0, 2, true,
                        &sampling->repetition_penalty, error) != 0
    ||  s_parse_integer (root, "top_k", -1, UINT32_MAX, &top_k, error) != 0
    ||  s_parse_integer (root, "min_tokens", 0, UINT32_MAX, &min_tokens, error) != 0
    ||  s_parse_seed (root, options, error) != 0
    ||  s_parse_logit_bias (root, options, error) != 0
    ||  s_parse_boolean (root, "ignore_eos", &options->ignore_eos, error) != 0)
        return -1;
    //  vLLM: top_k -1 (or 0) is every token.
    sampling->top_k = top_k > 0? (uint32_t) top_k: 0;
    sampling->min_tokens = (uint32_t) min_tokens;
    if (options->max_tokens && sampling->min_tokens > options->max_tokens) {
        api_error_set (error, 400, "min_tokens", NULL, "'min_tokens' (%u) must not be "
                       "above max_tokens (%u)", sampling->min_tokens, options->max_tokens);
        return -1;
    }
    return 0;
}

//  n: how many choices (sequences sampled from the one prompt), 1 .. PROTO_MAX_N.
//  best_of: how many to generate (n .. PROTO_MAX_N), of which the n with the highest
//  cumulative log-probability come back; they are known only at the end, so not with
//  stream (checked after stream is read).
static int
s_parse_n (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_int_t n = options->n? options->n: 1;
    if (s_parse_integer (root, "n", 1, PROTO_MAX_N, &n, error) != 0)
        return -1;
    options->n = (uint32_t) n;

    json_t *best_of = json_object_get (root, "best_of");
    if (best_of && !json_is_null (best_of)) {
        if (!json_is_integer (best_of)) {
            api_error_set (error, 400, "best_of", NULL,
                           "'best_of' must be an integer or null");
            return -1;
        }
        json_int_t value = json_integer_value (best_of);
        if (value < n) {
            api_error_set (error, 400, "best_of", NULL,
                           "best_of must be greater than or equal to n, got n=%"
                           JSON_INTEGER_FORMAT " and best_of=%" JSON_INTEGER_FORMAT,
                           n, value);
            return -1;
        }
        if (value > PROTO_MAX_N) {
            api_error_set (error, 400, "best_of", NULL, "best_of may be at most %d, got %"
                           JSON_INTEGER_FORMAT, PROTO_MAX_N, value);
            return -1;
        }
        options->best_of = (uint32_t) value;
    }
    return 0;
}

//  early_stopping (vLLM): true, false or "never"; absent or null leaves FALSE.
static int
s_parse_early_stopping (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_t *member = json_object_get (root, "early_stopping");
    if (!member || json_is_null (member))
        return 0;
    if (json_is_boolean (member))
        options->early_stopping = json_is_true (member)? PROTO_EARLY_STOPPING_TRUE
                                                       : PROTO_EARLY_STOPPING_FALSE;
    else
    if (json_is_string (member) && strcmp (json_string_value (member), "never") == 0)
        options->early_stopping = PROTO_EARLY_STOPPING_NEVER;
    else {
        api_error_set (error, 400, "early_stopping", NULL,
                       "'early_stopping' must be true, false or \"never\"");
        return -1;
    }
    return 0;
}

//  Is the number member `name` given (neither absent nor null)? Its value in *value.
//  Its type and range were checked with the sampling parameters.
static bool
s_number_given (json_t *root, const char *name, double *value)
{
    json_t *member = json_object_get (root, name);
    if (!member || json_is_null (member))
        return false;
    *value = json_number_value (member);
    return true;
}

//  Beam search keeps the most likely tokens: a sampling parameter `name` that asks for
//  sampling is refused, with the value that would not. Returns -1.
static int
s_refuse_beam_sampling (const char *name, const char *neutral, api_error_t *error)
{
    api_error_set (error, 400, name, NULL, "beam search is deterministic: leave '%s' out "
                   "or set it to %s", name, neutral);
    return -1;
}

//  use_beam_search, length_penalty and early_stopping (vLLM's beam search), after the
//  sampling parameters and stream: see generation_options_parse.
static int
s_parse_beam_search (json_t *root, generation_options_t *options, api_error_t *error)
{
    if (s_parse_boolean (root, "use_beam_search", &options->use_beam_search, error) != 0)
        return -1;
    json_t *length_penalty = json_object_get (root, "length_penalty");
    if (length_penalty && !json_is_null (length_penalty)) {
        double value = json_number_value (length_penalty);
        //  It becomes a float: beyond FLT_MAX it would be infinite.
        if (!json_is_number (length_penalty) || !(fabs (value) <= FLT_MAX)) {
            api_error_set (error, 400, "length_penalty", NULL,
                           "'length_penalty' must be a finite number or null");
            return -1;
        }
        options->length_penalty = (float) value;
    }
    if (s_parse_early_stopping (root, options, error) != 0)
        return -1;

    if (!options->use_beam_search) {
        //  As vLLM: they would silently do nothing.
        if (options->length_penalty != COMPLETION_DEFAULT_LENGTH_PENALTY) {
            api_error_set (error, 400, "length_penalty", NULL, "'length_penalty' is only "
                           "used by beam search: leave it out or set it to 1, or set "
                           "'use_beam_search' to true");
            return -1;
        }
        if (options->early_stopping != PROTO_EARLY_STOPPING_FALSE) {
            api_error_set (error, 400, "early_stopping", NULL, "'early_stopping' is only "
                           "used by beam search: leave it out or set it to false, or set "
                           "'use_beam_search' to true");
            return -1;
        }
        return 0;
    }
    if (options->stream) {
        api_error_set (error, 400, "use_beam_search", NULL, "beam search cannot be "
                       "streamed: the best beams are known only when all have finished");
        return -1;
    }
    double value;
    if (s_number_given (root, "temperature", &value) && value > 0)
        return s_refuse_beam_sampling ("temperature", "0", error);
    if (s_number_given (root, "top_p", &value) && value < 1)
        return s_refuse_beam_sampling ("top_p", "1", error);
    if (s_number_given (root, "top_k", &value) && value > 0)
        return s_refuse_beam_sampling ("top_k", "-1", error);
    if (s_number_given (root, "min_p", &value) && value > 0)
        return s_refuse_beam_sampling ("min_p", "0", error);
    //  Temperature absent (or 0): beam search keeps the most likely, it does not sample.
    options->sampling.temperature = 0;
    return 0;
}

//  vLLM's output options: include_stop_str_in_output (default false) and
//  skip_special_tokens (default true).
static int
s_parse_output_options (json_t *root, generation_options_t *options, api_error_t *error)
{
    if (s_parse_boolean (root, "include_stop_str_in_output",
                         &options->include_stop_str_in_output, error) != 0)
        return -1;
    bool skip_special_tokens = !options->keep_special_tokens;
    if (s_parse_boolean (root, "skip_special_tokens", &skip_special_tokens, error) != 0)
        return -1;
    options->keep_special_tokens = !skip_special_tokens;
    return 0;
}

//  Add one stop string to options (an empty one stops nothing and is left out).
static int
s_add_stop (generation_options_t *options, json_t *stop, api_error_t *error)
{
    if (json_string_length (stop) == 0)
        return 0;
    char *copy = strdup (json_string_value (stop));
    if (!copy) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    options->stops [options->n_stops++] = copy;
    return 0;
}

static int
s_parse_stop (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_t *stop = json_object_get (root, "stop");
    if (!stop || json_is_null (stop))
        return 0;
    if (!json_is_string (stop) && !json_is_array (stop)) {
        api_error_set (error, 400, "stop", NULL,
                       "'stop' must be a string, an array of strings or null");
        return -1;
    }
    size_t count = json_is_string (stop)? 1: json_array_size (stop);
    if (count > COMPLETION_MAX_STOPS) {
        api_error_set (error, 400, "stop", NULL,
                       "'stop' may hold at most %d strings, got %zu",
                       COMPLETION_MAX_STOPS, count);
        return -1;
    }
    for (size_t index = 0; json_is_array (stop) && index < count; index++)
        if (!json_is_string (json_array_get (stop, index))) {
            api_error_set (error, 400, "stop", NULL,
                           "'stop' must be a string, an array of strings or null");
            return -1;
        }
    if (count == 0)
        return 0;
    options->stops = (char **) calloc (count, sizeof (char *));
    if (!options->stops) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    if (json_is_string (stop))
        return s_add_stop (options, stop, error);
    for (size_t index = 0; index < count; index++)
        if (s_add_stop (options, json_array_get (stop, index), error) != 0)
            return -1;
    return 0;
}

static int
s_parse_stream (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_t *stream = json_object_get (root, "stream");
    if (stream && !json_is_null (stream)) {
        if (!json_is_boolean (stream)) {
            api_error_set (error, 400, "stream", NULL, "'stream' must be a boolean or null");
            return -1;
        }
        options->stream = json_is_true (stream);
    }
    json_t *stream_options = json_object_get (root, "stream_options");
    if (!stream_options || json_is_null (stream_options))
        return 0;
    if (!options->stream) {
        api_error_set (error, 400, "stream_options", NULL,
                       "The 'stream_options' parameter is only allowed when 'stream' "
                       "is enabled.");
        return -1;
    }
    if (!json_is_object (stream_options)) {
        api_error_set (error, 400, "stream_options", NULL,
                       "'stream_options' must be an object or null");
        return -1;
    }
    json_t *include_usage = json_object_get (stream_options, "include_usage");
    if (include_usage && !json_is_null (include_usage)) {
        if (!json_is_boolean (include_usage)) {
            api_error_set (error, 400, "stream_options.include_usage", NULL,
                           "'stream_options.include_usage' must be a boolean or null");
            return -1;
        }
        options->include_usage = json_is_true (include_usage);
    }
    return 0;
}

//  stop_token_ids (vLLM): token ids that end the generation, like the model's own
//  end-of-generation tokens.
static int
s_parse_stop_token_ids (json_t *root, generation_options_t *options, api_error_t *error)
{
    json_t *ids = json_object_get (root, "stop_token_ids");
    if (!ids || json_is_null (ids))
        return 0;
    if (!json_is_array (ids) || json_array_size (ids) > COMPLETION_MAX_STOP_TOKEN_IDS) {
        api_error_set (error, 400, "stop_token_ids", NULL, "'stop_token_ids' must be an "
                       "array of at most %d token ids", COMPLETION_MAX_STOP_TOKEN_IDS);
        return -1;
    }
    size_t index;
    json_t *id;
    json_array_foreach (ids, index, id) {
        if (!json_is_integer (id) || json_integer_value (id) < 0
        ||  json_integer_value (id) > (json_int_t) UINT32_MAX) {
            api_error_set (error, 400, "stop_token_ids", NULL,
                           "'stop_token_ids' must hold non-negative integers");
            return -1;
        }
        options->stop_token_ids [index] = (uint32_t) json_integer_value (id);
    }
    options->n_stop_token_ids = (uint32_t) json_array_size (ids);
    return 0;
}

void
generation_options_init (generation_options_t *options, uint32_t max_tokens)
{
    memset (options, 0, sizeof *options);
    options->max_tokens = max_tokens;
    options->sampling.temperature = COMPLETION_DEFAULT_TEMPERATURE;
    options->n = 1;
    options->length_penalty = COMPLETION_DEFAULT_LENGTH_PENALTY;
}

int
generation_options_parse (json_t *root, generation_options_t *options, api_error_t *error)
{
    if (s_parse_sampling (root, options, error) != 0
    ||  s_parse_n (root, options, error) != 0
    ||  s_parse_stop (root, options, error) != 0
    ||  s_parse_stop_token_ids (root, options, error) != 0
    ||  s_parse_stream (root, options, error) != 0
    ||  s_parse_beam_search (root, options, error) != 0
    ||  s_parse_output_options (root, options, error) != 0)
        return -1;
    if (options->stream && options->best_of > options->n) {
        api_error_set (error, 400, "best_of", NULL, "best_of above n cannot be streamed: "
                       "the best sequences are known only when all have finished");
        return -1;
    }
    return 0;
}

uint32_t
generation_options_width (const generation_options_t *options)
{
    uint32_t n = options->n? options->n: 1;
    return options->best_of > n? options->best_of: n;
}

void
generation_options_reset (generation_options_t *options)
{
    proto_sampling_reset (&options->sampling);
    if (options->stops) {
        for (uint32_t index = 0; index < options->n_stops; index++)
            free (options->stops [index]);
        free (options->stops);
    }
    memset (options, 0, sizeof *options);
}

//  Room for the longest prompt param: "prompt[<20 digits>][<20 digits>]".
#define PROMPT_PARAM_SIZE   64

//  A prompt of token ids: ids, a JSON array at param ("prompt" or "prompt[2]"), of 1 ..
//  PROTO_MAX_TOKENS integers from 0 to UINT32_MAX, into prompt->tokens.
static int
s_parse_token_prompt (json_t *ids, const char *param, completion_prompt_t *prompt,
                      api_error_t *error)
{
    size_t count = json_array_size (ids);
    if (count == 0) {
        api_error_set (error, 400, param, NULL, "'%s' must not be an empty array: give at "
                       "least one token id", param);
        return -1;
    }
    if (count > PROTO_MAX_TOKENS) {
        api_error_set (error, 400, param, NULL, "'%s' may hold at most %u token ids, got "
                       "%zu", param, PROTO_MAX_TOKENS, count);
        return -1;
    }
    prompt->tokens = (uint32_t *) malloc (count * sizeof (uint32_t));
    if (!prompt->tokens) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    size_t index;
    json_t *id;
    json_array_foreach (ids, index, id) {
        if (!json_is_integer (id) || json_integer_value (id) < 0
        ||  json_integer_value (id) > (json_int_t) UINT32_MAX) {
            char element [PROMPT_PARAM_SIZE];
            snprintf (element, sizeof element, "%s[%zu]", param, index);
            api_error_set (error, 400, element, NULL, "'%s' must be a token id: an "
                           "integer from 0 to %u", element, UINT32_MAX);
            return -1;
        }
        prompt->tokens [index] = (uint32_t) json_integer_value (id);
    }
    prompt->n_tokens = (uint32_t) count;
    return 0;
}

//  A text prompt, into prompt->text.
static int
s_parse_text_prompt (json_t *text, completion_prompt_t *prompt, api_error_t *error)
{
    prompt->text = strdup (json_string_value (text));
    if (!prompt->text) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    return 0;
}

//  An array of prompts (strings, or arrays of token ids, as its first element is), at
//  most COMPLETION_MAX_PROMPTS, into request->prompts.
static int
s_parse_prompt_list (json_t *list, completion_request_t *request, api_error_t *error)
{
    size_t count = json_array_size (list);
    if (count > COMPLETION_MAX_PROMPTS) {
        api_error_set (error, 400, "prompt", NULL, "'prompt' may hold at most %d prompts, "
                       "got %zu", COMPLETION_MAX_PROMPTS, count);
        return -1;
    }
    request->prompts = (completion_prompt_t *) calloc (count, sizeof (completion_prompt_t));
    if (!request->prompts) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    request->n_prompts = (uint32_t) count;
    bool of_strings = json_is_string (json_array_get (list, 0));
    size_t index;
    json_t *element;
    json_array_foreach (list, index, element) {
        char param [PROMPT_PARAM_SIZE];
        snprintf (param, sizeof param, "prompt[%zu]", index);
        completion_prompt_t *prompt = &request->prompts [index];
        int rc;
        if (of_strings && json_is_string (element))
            rc = s_parse_text_prompt (element, prompt, error);
        else
        if (!of_strings && json_is_array (element))
            rc = s_parse_token_prompt (element, param, prompt, error);
        else {
            api_error_set (error, 400, param, NULL, "'%s' must be %s, as 'prompt[0]' is: "
                           "an array of prompts holds strings or arrays of token ids, not "
                           "both", param, of_strings? "a string": "an array of token ids");
            rc = -1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

//  prompt, in OpenAI's four forms: a string, an array of strings, an array of token
//  ids, an array of arrays of token ids.
static int
s_parse_prompt (json_t *root, completion_request_t *request, api_error_t *error)
{
    json_t *prompt = json_object_get (root, "prompt");
    if (!prompt || json_is_null (prompt)) {
        api_error_set (error, 400, "prompt", NULL, "you must provide a prompt");
        return -1;
    }
    if (!json_is_string (prompt) && !json_is_array (prompt)) {
        api_error_set (error, 400, "prompt", NULL, "'prompt' must be a string, an array of "
                       "strings, an array of token ids or an array of arrays of token ids");
        return -1;
    }
    if (json_is_array (prompt) && json_array_size (prompt) == 0) {
        api_error_set (error, 400, "prompt", NULL, "'prompt' must not be an empty array: "
                       "give at least one prompt");
        return -1;
    }
    json_t *first = json_is_array (prompt)? json_array_get (prompt, 0): NULL;
    if (first && !json_is_string (first) && !json_is_array (first) && !json_is_number (first)) {
        api_error_set (error, 400, "prompt[0]", NULL, "'prompt[0]' must be a string, a "
                       "token id or an array of token ids");
        return -1;
    }
    if (first && (json_is_string (first) || json_is_array (first)))
        return s_parse_prompt_list (prompt, request, error);

    //  One prompt: a string, or an array of token ids.
    request->prompts = (completion_prompt_t *) calloc (1, sizeof (completion_prompt_t));
    if (!request->prompts) {
        api_error_set (error, 500, NULL, NULL, "out of memory");
        return -1;
    }
    request->n_prompts = 1;
    if (json_is_string (prompt))
        return s_parse_text_prompt (prompt, &request->prompts [0], error);
    return s_parse_token_prompt (prompt, "prompt", &request->prompts [0], error);
}

//  logprobs (completions): how many alternatives besides the chosen token, 0 ..
//  PROTO_MAX_LOGPROBS (OpenAI allows 5, vLLM 20); null or absent: none at all.
static int
s_parse_completion_logprobs (json_t *root, generation_options_t *options,
                             api_error_t *error)
{
    json_t *logprobs = json_object_get (root, "logprobs");
    if (!logprobs || json_is_null (logprobs))
        return 0;
    json_int_t top = 0;
    if (s_parse_integer (root, "logprobs", 0, PROTO_MAX_LOGPROBS, &top, error) != 0)
        return -1;
    options->want_logprobs = true;
    options->sampling.n_logprobs = (uint32_t) top;
    return generation_options_check_logprobs (options, error);
}

int
generation_options_check_logprobs (const generation_options_t *options, api_error_t *error)
{
    if (!options->want_logprobs)
        return 0;
    if (options->use_beam_search) {
        api_error_set (error, 400, "logprobs", NULL, "log-probabilities are not kept for "
                       "beam search yet");
        return -1;
    }
    if (options->best_of > options->n) {
        api_error_set (error, 400, "logprobs", NULL, "log-probabilities are not kept for "
                       "best_of above n yet");
        return -1;
    }
    return 0;
}

//  echo: the prompt comes back in front of each choice's text. suffix (text after the
//  completion, for insertion) needs a model trained for it: a non-empty one is refused.
static int
s_parse_echo_suffix (json_t *root, generation_options_t *options, api_error_t *error)
{
    if (s_parse_boolean (root, "echo", &options->echo, error) != 0)
        return -1;
    json_t *suffix = json_object_get (root, "suffix");
    if (suffix && !json_is_null (suffix)) {
        if (!json_is_string (suffix)) {
            api_error_set (error, 400, "suffix", NULL, "'suffix' must be a string or null");
            return -1;
        }
        if (json_string_length (suffix) > 0) {
            api_error_set (error, 400, "suffix", NULL, "'suffix' is not supported: this "
                           "server completes text only after the prompt");
            return -1;
        }
    }
    return 0;
}

//  echo needs each prompt's text: a prompt of token ids has none here (the tokenizer
//  would have to write it).
static int
s_check_echo_prompts (const completion_request_t *request, api_error_t *error)
{
    if (!request->options.echo)
        return 0;
    for (uint32_t index = 0; index < request->n_prompts; index++)
        if (request->prompts [index].tokens) {
            api_error_set (error, 400, "echo", NULL, "'echo' is not supported with a "
                           "prompt of token ids: send the prompt as text, or leave 'echo' "
                           "out");
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
    generation_options_init (&request->options, COMPLETION_DEFAULT_MAX_TOKENS);

    json_t *root = request_body_load (body, size, error);
    if (!root)
        return -1;
    int rc = request_model_check (root, model_name, error);
    if (rc == 0)
        rc = s_parse_prompt (root, request, error);
    if (rc == 0)
        rc = request_max_tokens_parse (root, "max_tokens", &request->options.max_tokens,
                                       error);
    if (rc == 0)
        rc = generation_options_parse (root, &request->options, error);
    if (rc == 0)
        rc = s_parse_echo_suffix (root, &request->options, error);
    if (rc == 0)
        rc = s_check_echo_prompts (request, error);
    if (rc == 0)
        rc = s_parse_completion_logprobs (root, &request->options, error);
    json_decref (root);
    if (rc != 0)
        completion_request_reset (request);
    return rc;
}

void
completion_request_reset (completion_request_t *request)
{
    for (uint32_t index = 0; request->prompts && index < request->n_prompts; index++) {
        free (request->prompts [index].text);
        free (request->prompts [index].tokens);
    }
    free (request->prompts);
    generation_options_reset (&request->options);
    memset (request, 0, sizeof *request);
}

void
completion_id_format (uint64_t request_id, char buffer [COMPLETION_ID_SIZE])
{
    snprintf (buffer, COMPLETION_ID_SIZE, "cmpl-%016" PRIx64, request_id);
}


//  --------------------------------------------------------------------------
//  Responses

//  The tokenizer's log-probability entries ({token, logprob, bytes, top_logprobs}, as
//  chat shows them) in the legacy completions shape: {"tokens": [...],
//  "token_logprobs": [...], "top_logprobs": [{token: logprob, ...}, ...],
//  "text_offset": [...]}, offsets counted from text_offset in bytes. JSON null when
//  entries is NULL; NULL when out of memory or entries is not such an array.
static json_t *
s_completion_logprobs (const char *entries, size_t text_offset)
{
    if (!entries)
        return json_null ();
    json_t *list = json_loads (entries, 0, NULL);
    json_t *tokens = json_array (), *token_logprobs = json_array ();
    json_t *top_logprobs = json_array (), *offsets = json_array ();
    bool ok = json_is_array (list) && tokens && token_logprobs && top_logprobs && offsets;
    size_t index;
    json_t *entry;
    json_array_foreach (ok? list: NULL, index, entry) {
        json_t *token = json_object_get (entry, "token");
        json_t *top = json_object_get (entry, "top_logprobs");
        json_t *alternatives = json_object ();
        size_t top_index;
        json_t *alternative;
        json_array_foreach (top, top_index, alternative)
            json_object_set (alternatives,
                             json_string_value (json_object_get (alternative, "token")),
                             json_object_get (alternative, "logprob"));
        ok = json_is_string (token)
          && json_array_append (tokens, token) == 0
          && json_array_append (token_logprobs, json_object_get (entry, "logprob")) == 0
          && json_array_append_new (top_logprobs, alternatives) == 0
          && json_array_append_new (offsets, json_integer ((json_int_t) text_offset)) == 0;
        if (!ok)
            break;
        text_offset += json_string_length (token);
    }
    json_decref (list);
    json_t *result = ok? json_pack ("{s:o, s:o, s:o, s:o}", "tokens", tokens,
                                    "token_logprobs", token_logprobs,
                                    "top_logprobs", top_logprobs, "text_offset", offsets)
                       : NULL;
    if (!result) {
        json_decref (tokens);
        json_decref (token_logprobs);
        json_decref (top_logprobs);
        json_decref (offsets);
    }
    return result;
}

//  One choice of a completion, or of one of its chunks: {"index", "text", "logprobs",
//  "finish_reason"} (logprobs null in chunks).
static json_t *
s_completion_choice (uint32_t index, const char *text, size_t text_size,
                     const char *finish_reason, json_t *logprobs)
{
    return json_pack ("{s:I, s:o, s:o, s:o}",
                      "index", (json_int_t) index,
                      "text", api_json_string (text, text_size),
                      "logprobs", logprobs? logprobs: json_null (),
                      "finish_reason", s_json_text_or_null (finish_reason));
}

char *
completion_response_json (const char *id, int64_t created, const char *model,
                          const completion_choice_t *choices, size_t n_choices,
                          uint32_t prompt_tokens, uint32_t completion_tokens)
{
    json_t *array = json_array ();
    for (size_t index = 0; array && index < n_choices; index++) {
        const completion_choice_t *choice = &choices [index];
        json_t *logprobs = s_completion_logprobs (choice->logprobs, choice->text_offset);
        if (!logprobs
        ||  json_array_append_new (array,
                s_completion_choice ((uint32_t) index, choice->text, choice->text_size,
                                     choice->finish_reason, logprobs)) != 0) {
            json_decref (array);
            array = NULL;
        }
    }
    json_t *usage = json_pack ("{s:I, s:I, s:I}",
                               "prompt_tokens", (json_int_t) prompt_tokens,
                               "completion_tokens", (json_int_t) completion_tokens,
                               "total_tokens",
                               (json_int_t) prompt_tokens + (json_int_t) completion_tokens);
    if (!array || !usage) {
        json_decref (array);
        json_decref (usage);
        return NULL;
    }
    json_t *root = json_pack ("{s:o, s:s, s:I, s:o, s:o, s:o}",
                              "id", api_json_string (id, strlen (id)),
                              "object", "text_completion",
                              "created", (json_int_t) created,
                              "model", api_json_string (model, strlen (model)),
                              "choices", array,
                              "usage", usage);
    return s_dump (root);
}

char *
completion_chunk_json (const char *id, int64_t created, const char *model, uint32_t index,
                       const char *text, size_t text_size, const char *finish_reason,
                       bool include_usage, const char *logprobs, size_t text_offset)
{
    json_t *converted = s_completion_logprobs (logprobs, text_offset);
    if (!converted)
        return NULL;
    json_t *choice = s_completion_choice (index, text, text_size, finish_reason, converted);
    json_t *root = json_pack ("{s:o, s:s, s:I, s:o, s:[o]}",
                              "id", api_json_string (id, strlen (id)),
                              "object", "text_completion",
                              "created", (json_int_t) created,
                              "model", api_json_string (model, strlen (model)),
                              "choices", choice);
    if (root && include_usage && json_object_set_new (root, "usage", json_null ()) != 0) {
        json_decref (root);
        return NULL;
    }
    return s_dump (root);
}

char *
usage_chunk_json (const char *id, const char *object, int64_t created, const char *model,
                  uint32_t prompt_tokens, uint32_t completion_tokens)
{
    json_t *root = json_pack ("{s:o, s:s, s:I, s:o, s:[], s:{s:I, s:I, s:I}}",
                              "id", api_json_string (id, strlen (id)),
                              "object", object,
                              "created", (json_int_t) created,
                              "model", api_json_string (model, strlen (model)),
                              "choices",
                              "usage",
                              "prompt_tokens", (json_int_t) prompt_tokens,
                              "completion_tokens", (json_int_t) completion_tokens,
                              "total_tokens",
                              (json_int_t) prompt_tokens + (json_int_t) completion_tokens);
    return s_dump (root);
}

char *
models_list_json (const char *model, int64_t created, uint32_t n_ctx)
{
    json_t *root = json_pack ("{s:s, s:[{s:o, s:s, s:I, s:s, s:I}]}",
                              "object", "list",
                              "data",
                              "id", api_json_string (model, strlen (model)),
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
    if (status == 429)
        return "rate_limit_error";
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
                              "message", api_json_string (message, strlen (message)),
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


//  --------------------------------------------------------------------------
//  /tokenize and /detokenize

int
tokenize_request_parse (const char *body, size_t size, const char *model_name,
                        bool detokenize, tokenize_request_t *request, api_error_t *error)
{
    memset (request, 0, sizeof *request);
    memset (error, 0, sizeof *error);
    request->add_special_tokens = true;
    json_t *root = request_body_load (body, size, error);
    if (!root)
        return -1;
    int rc = 0;
    json_t *model = json_object_get (root, "model");
    if (model && !json_is_null (model))
        rc = request_model_check (root, model_name, error);
    if (rc == 0 && detokenize) {
        json_t *tokens = json_object_get (root, "tokens");
        if (!json_is_array (tokens) || json_array_size (tokens) > PROTO_MAX_TOKENS) {
            api_error_set (error, 400, "tokens", NULL, "'tokens' must be an array of at "
                           "most %u token ids", PROTO_MAX_TOKENS);
            rc = -1;
        }
        size_t count = rc == 0? json_array_size (tokens): 0;
        if (count > 0) {
            request->tokens = (uint32_t *) malloc (count * sizeof (uint32_t));
            if (!request->tokens) {
                api_error_set (error, 500, NULL, NULL, "out of memory");
                rc = -1;
            }
        }
        for (size_t index = 0; rc == 0 && index < count; index++) {
            json_t *id = json_array_get (tokens, index);
            if (!json_is_integer (id) || json_integer_value (id) < 0
            ||  json_integer_value (id) > (json_int_t) UINT32_MAX) {
                api_error_set (error, 400, "tokens", NULL,
                               "'tokens' must hold non-negative integers");
                rc = -1;
            }
            else
                request->tokens [request->n_tokens++] = (uint32_t) json_integer_value (id);
        }
    }
    else
    if (rc == 0) {
        json_t *prompt = json_object_get (root, "prompt");
        if (json_object_get (root, "messages") && !prompt) {
            api_error_set (error, 400, "messages", NULL, "/tokenize takes a 'prompt' "
                           "string; the chat form with 'messages' is not supported yet");
            rc = -1;
        }
        else
        if (!json_is_string (prompt)) {
            api_error_set (error, 400, "prompt", NULL, "'prompt' must be a string");
            rc = -1;
        }
        else {
            request->prompt = strdup (json_string_value (prompt));
            if (!request->prompt) {
                api_error_set (error, 500, NULL, NULL, "out of memory");
                rc = -1;
            }
        }
        if (rc == 0)
            rc = s_parse_boolean (root, "add_special_tokens", &request->add_special_tokens,
                                  error);
    }
    json_decref (root);
    if (rc != 0)
        tokenize_request_reset (request);
    return rc;
}

void
tokenize_request_reset (tokenize_request_t *request)
{
    free (request->prompt);
    free (request->tokens);
    memset (request, 0, sizeof *request);
}

char *
tokenize_response_json (const uint32_t *tokens, uint32_t n_tokens, uint32_t n_ctx)
{
    json_t *ids = json_array ();
    for (uint32_t index = 0; ids && index < n_tokens; index++)
        if (json_array_append_new (ids, json_integer (tokens [index])) != 0) {
            json_decref (ids);
            ids = NULL;
        }
    json_t *root = ids? json_pack ("{s:I, s:I, s:o}", "count", (json_int_t) n_tokens,
                                   "max_model_len", (json_int_t) n_ctx, "tokens", ids)
                      : NULL;
    char *text = root? json_dumps (root, JSON_COMPACT): NULL;
    json_decref (root);
    return text;
}

char *
detokenize_response_json (const char *text, size_t size)
{
    json_t *prompt = api_json_string (text, size);
    json_t *root = prompt? json_pack ("{s:o}", "prompt", prompt): NULL;
    char *body = root? json_dumps (root, JSON_COMPACT): NULL;
    json_decref (root);
    return body;
}
