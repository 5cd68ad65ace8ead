/*  cmd_bench — `zllm bench`: a load generator for any OpenAI-compatible server, reporting
    what vLLM's `bench serve` reports (throughput, TTFT, TPOT, ITL, end-to-end latency).

    How it works:

    1.  Before the clock starts, it asks the server for its model (GET /v1/models, unless
        --model is given) and builds N prompts of about I tokens each, all different (so
        that no prefix cache makes later requests cheaper). When the server has vLLM's
        POST /tokenize and /detokenize, a random text of common words is tokenized, cut to
        exactly I tokens and turned back into text; otherwise the prompt is I words from a
        fixed list of common English words, each one token in the usual BPE and
        SentencePiece vocabularies (so the prompt is about I tokens, plus what the chat
        template or BOS adds). The report says which was used; input token counts always
        come from the server's usage.

    2.  The requests run in one thread, on libcurl's multi interface: an event loop over
        curl_multi_poll that adds a request when it is due. With --concurrency C alone,
        C clients send back to back; with --rate R, requests arrive as a Poisson process
        (exponential gaps drawn from --seed), with no cap on those in flight unless
        --concurrency is also given. HTTP/1.1 runs on keep-alive connections (one per
        request in flight, reused); --http2 speaks h2c with prior knowledge (or, with
        libcurl before 8.0.0, by upgrading the first request's connection: see
        s_http_version) and multiplexes every request on one connection.

    3.  Every request streams (stream, stream_options.include_usage, max_tokens = O,
        ignore_eos). The server-sent events are parsed as the bytes arrive; a chunk that
        carries text (completions) or delta.content (chat) is a token arrival, timed when
        its bytes came in. From those: TTFT (first token), ITL (between tokens), TPOT
        ((end-to-end - TTFT) / (output tokens - 1)) and end-to-end latency. Every chunk's
        shape is checked (id, object, choices, finish_reason, usage, the final [DONE]);
        a request that breaks the shape, gets an HTTP or connection error, or gets no
        usage is a failed request. The number of content chunks is compared with
        usage.completion_tokens: they differ when a server sends several tokens in one
        chunk (or holds text back); that is counted and reported, not a failure.

    4.  The report goes to stdout as a table and, with --json FILE, as JSON with the
        settings. Exit status: 0 when every request succeeded, 1 when any failed, 2 for a
        bad command line.

    Who owns what: the bench_t owns the requests, the curl multi handle, the easy handle
    of the calls before the clock starts and the shared header list; each request owns
    its body, its easy handle (while it runs) and its buffers.
*/
#include "commands.h"
#include "cli.h"

#include <curl/curl.h>
#include <jansson.h>

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

//  A non-200 answer's body is kept up to this size, for the error message.
#define BENCH_ERROR_BODY_MAX 4096

//  Without a TTY, the progress line is written this often (seconds).
#define BENCH_PROGRESS_PERIOD 5.0

//  --- Settings ------------------------------------------------------------------------------

typedef struct {
    char *base_url;             //  the server, without a trailing / or /v1
    bool chat;                  //  /v1/chat/completions, else /v1/completions
    uint64_t concurrency;       //  requests in flight at most; 0: no cap (rate only)
    double rate;                //  requests per second; 0: not given; INFINITY: all at once
    uint64_t requests;
    uint64_t input_len;
    uint64_t output_len;
    uint64_t seed;
    uint64_t timeout_s;         //  per request
    double temperature;
    bool http2;
    const char *model;          //  --model, or NULL: ask /v1/models
    const char *json_path;
    const char *api_key;
} settings_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm bench (--concurrency C | --rate R) [options]\n"
        "\n"
        "Load an OpenAI-compatible server with N streamed requests of random prompts and\n"
        "report, as vLLM's `bench serve` does, the request and token throughput and the\n"
        "mean, median, p90 and p99 of TTFT, TPOT, ITL and end-to-end latency.\n"
        "\n"
        "options:\n"
        "  --url URL             the server (default http://127.0.0.1:8000)\n"
        "  --endpoint NAME       completions (default: /v1/completions) or chat\n"
        "                        (/v1/chat/completions)\n"
        "  --concurrency C       C clients sending back to back; with --rate, at most C\n"
        "                        requests in flight\n"
        "  --rate R              R requests per second on average, Poisson arrivals\n"
        "                        ('inf': all at once)\n"
        "  --requests N          requests in all (default 64)\n"
        "  --input-len I         prompt tokens per request (default 256)\n"
        "  --output-len O        tokens generated per request: max_tokens with ignore_eos\n"
        "                        (default 128)\n"
        "  --http2               HTTP/2 without TLS (prior knowledge), every request on\n"
        "                        one connection; default HTTP/1.1 with keep-alive\n"
        "  --model NAME          the model to ask for (default: the first of /v1/models)\n"
        "  --temperature T       sampling temperature (default 0)\n"
        "  --seed S              seed for the prompts and arrival times (default 0)\n"
        "  --timeout SECONDS     a request still running after this fails (default 600)\n"
        "  --api-key KEY         send 'Authorization: Bearer KEY'\n"
        "  --json FILE           also write every figure and the settings to FILE as JSON\n"
        "  -h, --help            show this help\n"
        "\n"
        "Exit status: 0 when every request succeeded, 1 when any failed, 2 for a bad\n"
        "command line.\n");
}

//  Parse a decimal number in [min, max], or "inf" when allow_inf. Prints the error.
static int
s_parse_double (const char *flag, const char *text, double min, double max, bool allow_inf,
                double *value)
{
    if (allow_inf && strcmp (text, "inf") == 0) {
        *value = INFINITY;
        return 0;
    }
    char *end = NULL;
    double parsed = strtod (text, &end);
    if (!text [0] || *end || !(parsed >= min && parsed <= max)) {
        fprintf (stderr, "zllm: %s: '%s' is not a number from %g to %g%s\n", flag, text,
                 min, max, allow_inf ? " (or 'inf')" : "");
        return -1;
    }
    *value = parsed;
    return 0;
}

//  The base URL without trailing slashes and without a final /v1 (the paths add it).
static char *
s_base_url (const char *url)
{
    char *base = strdup (url);
    if (!base)
        return NULL;
    size_t length = strlen (base);
    while (length > 0 && base [length - 1] == '/')
        base [--length] = 0;
    if (length >= 3 && strcmp (base + length - 3, "/v1") == 0)
        base [length -= 3] = 0;
    while (length > 0 && base [length - 1] == '/')
        base [--length] = 0;
    return base;
}

//  Read the command line into settings. Returns 0, 1 after --help (exit 0), or -1 after
//  printing what is wrong (exit 2).
static int
s_settings_parse (settings_t *settings, int argc, char **argv)
{
    enum { OPT_URL = 256, OPT_ENDPOINT, OPT_CONCURRENCY, OPT_RATE, OPT_REQUESTS,
           OPT_INPUT_LEN, OPT_OUTPUT_LEN, OPT_HTTP2, OPT_MODEL, OPT_TEMPERATURE, OPT_SEED,
           OPT_TIMEOUT, OPT_API_KEY, OPT_JSON };
    static const struct option long_options [] = {
        { "url", required_argument, NULL, OPT_URL },
        { "endpoint", required_argument, NULL, OPT_ENDPOINT },
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { "rate", required_argument, NULL, OPT_RATE },
        { "requests", required_argument, NULL, OPT_REQUESTS },
        { "input-len", required_argument, NULL, OPT_INPUT_LEN },
        { "output-len", required_argument, NULL, OPT_OUTPUT_LEN },
        { "http2", no_argument, NULL, OPT_HTTP2 },
        { "model", required_argument, NULL, OPT_MODEL },
        { "temperature", required_argument, NULL, OPT_TEMPERATURE },
        { "seed", required_argument, NULL, OPT_SEED },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "api-key", required_argument, NULL, OPT_API_KEY },
        { "json", required_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *url = "http://127.0.0.1:8000";
    settings->chat = false;
    settings->concurrency = 0;
    settings->rate = 0;
    settings->requests = 64;
    settings->input_len = 256;
    settings->output_len = 128;
    settings->seed = 0;
    settings->timeout_s = 600;
    settings->temperature = 0;
    settings->http2 = false;
    settings->model = NULL;
    settings->json_path = NULL;
    settings->api_key = NULL;
    settings->base_url = NULL;

    optind = 1;
    int option;
    while ((option = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
        switch (option) {
            case OPT_URL:
                url = optarg;
                break;
            case OPT_ENDPOINT:
                if (strcmp (optarg, "chat") == 0)
                    settings->chat = true;
                else
                if (strcmp (optarg, "completions") == 0)
                    settings->chat = false;
                else {
                    fprintf (stderr, "zllm: --endpoint: '%s' is not chat or completions\n",
                             optarg);
                    return -1;
                }
                break;
            case OPT_CONCURRENCY:
                if (cli_parse_uint ("--concurrency", optarg, 1, 100000,
                                    &settings->concurrency))
                    return -1;
                break;
            case OPT_RATE:
                if (s_parse_double ("--rate", optarg, 1e-6, 1e9, true, &settings->rate))
                    return -1;
                break;
            case OPT_REQUESTS:
                if (cli_parse_uint ("--requests", optarg, 1, 10000000, &settings->requests))
                    return -1;
                break;
            case OPT_INPUT_LEN:
                if (cli_parse_uint ("--input-len", optarg, 1, 1u << 20, &settings->input_len))
                    return -1;
                break;
            case OPT_OUTPUT_LEN:
                if (cli_parse_uint ("--output-len", optarg, 1, 1u << 20,
                                    &settings->output_len))
                    return -1;
                break;
            case OPT_HTTP2:
                settings->http2 = true;
                break;
            case OPT_MODEL:
                settings->model = optarg;
                break;
            case OPT_TEMPERATURE:
                if (s_parse_double ("--temperature", optarg, 0, 100, false,
                                    &settings->temperature))
                    return -1;
                break;
            case OPT_SEED:
                if (cli_parse_uint ("--seed", optarg, 0, UINT64_MAX, &settings->seed))
                    return -1;
                break;
            case OPT_TIMEOUT:
                if (cli_parse_uint ("--timeout", optarg, 1, 86400, &settings->timeout_s))
                    return -1;
                break;
            case OPT_API_KEY:
                settings->api_key = optarg;
                break;
            case OPT_JSON:
                settings->json_path = optarg;
                break;
            case 'h':
                s_usage (stdout);
                return 1;
            default:
                return -1;
        }
    }
    if (optind != argc) {
        fprintf (stderr, "zllm bench: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    if (settings->concurrency == 0 && settings->rate == 0) {
        fprintf (stderr, "zllm bench: give --concurrency C or --rate R (or both)\n");
        return -1;
    }
    if (strncmp (url, "http://", 7) != 0 && strncmp (url, "https://", 8) != 0) {
        fprintf (stderr, "zllm bench: --url: '%s' does not start with http:// or https://\n",
                 url);
        return -1;
    }
    settings->base_url = s_base_url (url);
    if (!settings->base_url) {
        fprintf (stderr, "zllm bench: out of memory\n");
        return -1;
    }
    return 0;
}

//  --- Small helpers -------------------------------------------------------------------------

static double
s_now (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

//  splitmix64: a small, seeded generator for the prompts and the arrival gaps.
static uint64_t
s_random_next (uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

//  A uniform number in [0, 1).
static double
s_random_uniform (uint64_t *state)
{
    return (double) (s_random_next (state) >> 11) * (1.0 / 9007199254740992.0);
}

//  A growing byte buffer, always 0-terminated.
typedef struct {
    char *data;
    size_t size;
    size_t capacity;
} buffer_t;

static int
s_buffer_append (buffer_t *buffer, const char *bytes, size_t size)
{
    if (buffer->size + size + 1 > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 256;
        while (buffer->size + size + 1 > capacity)
            capacity *= 2;
        char *data = realloc (buffer->data, capacity);
        if (!data)
            return -1;
        buffer->data = data;
        buffer->capacity = capacity;
    }
    memcpy (buffer->data + buffer->size, bytes, size);
    buffer->size += size;
    buffer->data [buffer->size] = 0;
    return 0;
}

static void
s_buffer_clear (buffer_t *buffer)
{
    buffer->size = 0;
    if (buffer->data)
        buffer->data [0] = 0;
}

static void
s_buffer_free (buffer_t *buffer)
{
    free (buffer->data);
    buffer->data = NULL;
    buffer->size = buffer->capacity = 0;
}

static size_t
s_buffer_write_callback (char *bytes, size_t size, size_t count, void *arg)
{
    buffer_t *buffer = (buffer_t *) arg;
    if (s_buffer_append (buffer, bytes, size * count))
        return 0;
    return size * count;
}

//  --- Prompts -------------------------------------------------------------------------------

//  Common English words, each one token (with its leading space) in the GPT-2, StarCoder
//  and Llama (SentencePiece) vocabularies: checked with `zllm tokenize`.
static const char *s_words [] = {
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "it",
    "at", "by", "from", "his", "her", "they", "this", "had", "not", "are", "but", "be",
    "have", "one", "all", "were", "we", "when", "there", "can", "an", "your", "which",
    "their", "said", "if", "do", "will", "each", "about", "how", "up", "out", "them",
    "then", "she", "many", "some", "so", "these", "would", "other", "into", "has", "more",
    "two", "time", "like", "him", "see", "could", "no", "make", "than", "first", "been",
    "its", "who", "now", "people", "my", "made", "over", "did", "down", "only", "way",
    "find", "use", "may", "water", "long", "little", "very", "after", "words", "called",
    "just", "where", "most", "know", "get", "through", "back", "much", "go", "good", "new",
    "write", "our", "me", "man", "too", "any", "day", "same", "right", "look", "think",
    "also", "around", "another", "came", "come", "work", "three", "word", "must",
    "because", "does", "part", "even", "place", "well", "such", "here", "take", "why",
    "things", "help", "put", "years", "different", "away", "again", "off", "went", "old",
    "number", "great", "tell", "men", "say", "small", "every", "found", "still",
    "between", "name", "should", "home", "big", "give", "air", "line", "set", "own",
    "under", "read", "last", "never", "us", "left", "end", "along", "while", "might",
    "next", "sound", "below", "saw", "something", "thought", "both", "few", "those",
    "always", "looked", "show", "large", "often", "together", "asked", "house", "world",
    "going", "want", "school", "important", "until", "form", "food", "keep", "children",
    "feet", "land", "side", "without", "boy", "once", "life", "enough", "took",
    "sometimes", "four", "head", "above", "kind", "began", "almost", "live", "page", "got",
    "earth", "need", "far", "hand", "high", "year", "mother", "light", "parts", "country",
    "father", "let", "night", "following", "picture", "being", "study", "second", "eyes",
    "soon", "times", "story", "since", "white", "days", "ever", "paper", "hard", "near",
    "sentence", "better", "best", "across", "during", "today", "others", "however", "sure",
    "means", "knew", "try", "told", "young", "sun", "ways", "thing", "whole", "hear",
    "example", "heard", "several", "change", "answer", "room", "sea", "against", "top",
    "turned", "learn", "point", "city", "play", "toward", "five", "using", "himself",
    "usually"
};

//  n_words random words from the list, separated by spaces; NULL when out of memory.
static char *
s_random_words (uint64_t *state, size_t n_words)
{
    size_t n_list = sizeof (s_words) / sizeof (s_words [0]);
    buffer_t text = { NULL, 0, 0 };
    for (size_t i = 0; i < n_words; i++) {
        const char *word = s_words [s_random_next (state) % n_list];
        if ((i > 0 && s_buffer_append (&text, " ", 1))
        ||  s_buffer_append (&text, word, strlen (word))) {
            s_buffer_free (&text);
            return NULL;
        }
    }
    return text.data;
}

//  --- Plain HTTP calls (before the clock starts) --------------------------------------------

//  The HTTP version to ask libcurl for. --http2 means h2c with prior knowledge, except
//  with libcurl before 8.0.0, which breaks that on a reused connection (curl issue
//  #10634, fixed in 8.0.0: the second request on the connection fails with "Error in the
//  HTTP2 framing layer"). There, the first request upgrades its HTTP/1.1 connection
//  (Upgrade: h2c) and the others multiplex on it as HTTP/2.
static bool
s_http2_by_upgrade (void)
{
    const curl_version_info_data *info = curl_version_info (CURLVERSION_NOW);
    return info && info->version_num < 0x080000;
}

//  How the HTTP version is reached, for the report.
static const char *
s_http_label (const settings_t *settings)
{
    if (!settings->http2)
        return "1.1";
    if (strncmp (settings->base_url, "https:", 6) == 0)
        return "2 (TLS, ALPN)";
    return s_http2_by_upgrade () ? "2 (h2c by Upgrade: libcurl < 8.0.0)"
                                 : "2 (h2c, prior knowledge)";
}

static long
s_http_version (const settings_t *settings)
{
    if (!settings->http2)
        return (long) CURL_HTTP_VERSION_1_1;
    return s_http2_by_upgrade () ? (long) CURL_HTTP_VERSION_2_0
                                 : (long) CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
}

//  One blocking request to base_url + path on easy (reused, so that its connection is
//  too): GET when body is NULL, else POST body as JSON. Fills *reply with the parsed
//  JSON answer when the status is 200. Returns the HTTP status, or 0 with err filled
//  when there was no answer or it was not JSON.
static long
s_http_call (CURL *easy, const settings_t *settings, struct curl_slist *headers,
             const char *path, json_t *body, json_t **reply, char *err, size_t err_size)
{
    *reply = NULL;
    long status = 0;
    char *url = NULL;
    char *body_text = NULL;
    char curl_err [CURL_ERROR_SIZE] = "";
    buffer_t answer = { NULL, 0, 0 };
    curl_easy_reset (easy);     //  the options of the last call go; its connection stays
    size_t url_size = strlen (settings->base_url) + strlen (path) + 1;
    url = malloc (url_size);
    if (body)
        body_text = json_dumps (body, JSON_COMPACT);
    if (!url || (body && !body_text)) {
        snprintf (err, err_size, "out of memory");
        goto done;
    }
    snprintf (url, url_size, "%s%s", settings->base_url, path);
    long version = s_http_version (settings);
    CURLcode rc = curl_easy_setopt (easy, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_HTTP_VERSION, version);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_TIMEOUT, 60L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_ERRORBUFFER, curl_err);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_HTTPHEADER, headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_buffer_write_callback);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (easy, CURLOPT_WRITEDATA, &answer);
    if (rc == CURLE_OK && body_text)
        rc = curl_easy_setopt (easy, CURLOPT_POSTFIELDS, body_text);
    if (rc == CURLE_OK)
        rc = curl_easy_perform (easy);
    if (rc != CURLE_OK) {
        snprintf (err, err_size, "%s", curl_err [0] ? curl_err : curl_easy_strerror (rc));
        goto done;
    }
    rc = curl_easy_getinfo (easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) {
        snprintf (err, err_size, "%s", curl_easy_strerror (rc));
        status = 0;
        goto done;
    }
    if (status == 200) {
        json_error_t json_err;
        *reply = answer.data ? json_loads (answer.data, 0, &json_err) : NULL;
        if (!*reply) {
            snprintf (err, err_size, "GET/POST %s: the answer is not JSON", path);
            status = 0;
        }
    }
    else
        snprintf (err, err_size, "HTTP %ld from %s", status, path);
done:
    curl_easy_reset (easy);     //  forget curl_err and answer, which end here
    free (url);
    free (body_text);
    s_buffer_free (&answer);
    return status;
}

//  --- One request ---------------------------------------------------------------------------

typedef struct {
    size_t index;
    bool chat;
    bool http2;
    char *body;                 //  the JSON request, built before the clock starts
    CURL *easy;                 //  while it runs
    char curl_err [CURL_ERROR_SIZE];

    //  The stream as it arrives
    long http_status;           //  0 until the first body bytes
    buffer_t line;              //  the line being read
    buffer_t data;              //  the data lines of the event being read
    buffer_t error_body;        //  the body of a non-200 answer (its start)
    double arrival;             //  when the bytes being parsed came in

    //  What the stream said
    double start;               //  when the request was sent
    double last_byte;           //  when its last bytes came in
    double *token_times;        //  arrival of each chunk with content
    size_t n_tokens;
    size_t token_capacity;
    char *id;
    bool finished;              //  a finish_reason came
    bool done;                  //  data: [DONE] came
    bool got_usage;
    long long prompt_tokens;
    long long completion_tokens;
    long connects;              //  connections this request opened
    char error [512];           //  the first thing wrong, or "": it succeeded
} request_t;

static request_t *
request_new (size_t index, bool chat, bool http2)
{
    request_t *self = calloc (1, sizeof (request_t));
    if (!self)
        return NULL;
    self->index = index;
    self->chat = chat;
    self->http2 = http2;
    return self;
}

static void
request_destroy (request_t **self_p)
{
    request_t *self = *self_p;
    if (!self)
        return;
    if (self->easy)
        curl_easy_cleanup (self->easy);
    free (self->body);
    s_buffer_free (&self->line);
    s_buffer_free (&self->data);
    s_buffer_free (&self->error_body);
    free (self->token_times);
    free (self->id);
    free (self);
    *self_p = NULL;
}

//  Note what went wrong; only the first problem is kept.
static void
    request_fail (request_t *self, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
request_fail (request_t *self, const char *format, ...)
{
    if (self->error [0])
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (self->error, sizeof (self->error), format, args);
    va_end (args);
    if (!self->error [0])
        snprintf (self->error, sizeof (self->error), "(no message)");
}

//  Build the request's JSON body: the prompt, and what every benchmark request asks.
static int
request_set_body (request_t *self, const settings_t *settings, const char *model,
                  const char *prompt)
{
    json_t *body;
    if (self->chat)
        body = json_pack ("{s:[{s:s, s:s}], s:I, s:b, s:{s:b}, s:b, s:f}",
                          "messages", "role", "user", "content", prompt,
                          "max_tokens", (json_int_t) settings->output_len,
                          "stream", 1,
                          "stream_options", "include_usage", 1,
                          "ignore_eos", 1,
                          "temperature", settings->temperature);
    else
        body = json_pack ("{s:s, s:I, s:b, s:{s:b}, s:b, s:f}",
                          "prompt", prompt,
                          "max_tokens", (json_int_t) settings->output_len,
                          "stream", 1,
                          "stream_options", "include_usage", 1,
                          "ignore_eos", 1,
                          "temperature", settings->temperature);
    if (!body)
        return -1;
    if (model && json_object_set_new (body, "model", json_string (model))) {
        json_decref (body);
        return -1;
    }
    self->body = json_dumps (body, JSON_COMPACT);
    json_decref (body);
    return self->body ? 0 : -1;
}

//  The text a chunk's choice carries (text, or delta.content), or NULL when it has none.
//  Fails the request when the choice is not shaped as the endpoint's chunks are.
static const char *
request_choice_content (request_t *self, json_t *choice)
{
    if (!json_is_object (choice)) {
        request_fail (self, "a choice is not an object");
        return NULL;
    }
    json_t *index = json_object_get (choice, "index");
    if (!json_is_integer (index) || json_integer_value (index) != 0) {
        request_fail (self, "a choice has no index 0 (one choice was asked for)");
        return NULL;
    }
    if (!self->chat) {
        json_t *text = json_object_get (choice, "text");
        if (!json_is_string (text)) {
            request_fail (self, "a completion choice has no \"text\" string");
            return NULL;
        }
        return json_string_value (text);
    }
    json_t *delta = json_object_get (choice, "delta");
    if (!json_is_object (delta)) {
        request_fail (self, "a chat choice has no \"delta\" object");
        return NULL;
    }
    json_t *role = json_object_get (delta, "role");
    if (role && !json_is_string (role) && !json_is_null (role)) {
        request_fail (self, "delta.role is not a string");
        return NULL;
    }
    json_t *content = json_object_get (delta, "content");
    if (content && !json_is_string (content) && !json_is_null (content)) {
        request_fail (self, "delta.content is not a string");
        return NULL;
    }
    return json_is_string (content) ? json_string_value (content) : NULL;
}

//  Record the arrival of one token (a chunk with content).
static int
request_add_token (request_t *self)
{
    if (self->n_tokens == self->token_capacity) {
        size_t capacity = self->token_capacity ? self->token_capacity * 2 : 64;
        double *times = realloc (self->token_times, capacity * sizeof (double));
        if (!times)
            return -1;
        self->token_times = times;
        self->token_capacity = capacity;
    }
    self->token_times [self->n_tokens++] = self->arrival;
    return 0;
}

//  Check the id, object, created and model fields every chunk carries.
static void
request_check_envelope (request_t *self, json_t *chunk)
{
    json_t *id = json_object_get (chunk, "id");
    if (!json_is_string (id) || !json_string_value (id) [0]) {
        request_fail (self, "a chunk has no \"id\"");
        return;
    }
    if (!self->id) {
        self->id = strdup (json_string_value (id));
        if (!self->id)
            request_fail (self, "out of memory");
    }
    else
    if (strcmp (self->id, json_string_value (id)) != 0)
        request_fail (self, "chunk ids differ: '%s', then '%s'", self->id,
                      json_string_value (id));
    const char *object = self->chat ? "chat.completion.chunk" : "text_completion";
    json_t *given = json_object_get (chunk, "object");
    if (!json_is_string (given) || strcmp (json_string_value (given), object) != 0)
        request_fail (self, "a chunk's \"object\" is not \"%s\"", object);
    if (!json_is_integer (json_object_get (chunk, "created")))
        request_fail (self, "a chunk has no integer \"created\"");
    if (!json_is_string (json_object_get (chunk, "model")))
        request_fail (self, "a chunk has no \"model\" string");
}

//  Check a chunk's usage when it has one (null or absent is fine until the end).
static void
request_check_usage (request_t *self, json_t *usage)
{
    if (!usage || json_is_null (usage))
        return;
    json_t *prompt = json_object_get (usage, "prompt_tokens");
    json_t *completion = json_object_get (usage, "completion_tokens");
    if (!json_is_integer (prompt) || !json_is_integer (completion)) {
        request_fail (self, "usage lacks integer prompt_tokens and completion_tokens");
        return;
    }
    if (self->got_usage) {
        request_fail (self, "usage came twice");
        return;
    }
    self->got_usage = true;
    self->prompt_tokens = json_integer_value (prompt);
    self->completion_tokens = json_integer_value (completion);
}

//  One server-sent event's data: a chunk, an error, or [DONE].
static void
request_on_event (request_t *self, const char *data)
{
    if (self->done) {
        request_fail (self, "data after [DONE]");
        return;
    }
    if (strcmp (data, "[DONE]") == 0) {
        self->done = true;
        return;
    }
    json_error_t json_err;
    json_t *chunk = json_loads (data, 0, &json_err);
    if (!json_is_object (chunk)) {
        request_fail (self, "a chunk is not a JSON object: %.80s", data);
        json_decref (chunk);
        return;
    }
    json_t *error = json_object_get (chunk, "error");
    if (error) {
        json_t *message = json_object_get (error, "message");
        request_fail (self, "error in the stream: %s",
                      json_is_string (message) ? json_string_value (message) : data);
        json_decref (chunk);
        return;
    }
    request_check_envelope (self, chunk);
    json_t *choices = json_object_get (chunk, "choices");
    if (!json_is_array (choices))
        request_fail (self, "a chunk has no \"choices\" array");
    size_t i;
    json_t *choice;
    json_array_foreach (choices, i, choice) {
        const char *content = request_choice_content (self, choice);
        if (content && content [0]) {
            if (self->finished)
                request_fail (self, "content after the finish_reason");
            if (request_add_token (self))
                request_fail (self, "out of memory");
        }
        json_t *finish_reason = json_object_get (choice, "finish_reason");
        if (json_is_string (finish_reason)) {
            if (self->finished)
                request_fail (self, "a second finish_reason");
            self->finished = true;
        }
        else
        if (finish_reason && !json_is_null (finish_reason))
            request_fail (self, "finish_reason is neither null nor a string");
    }
    request_check_usage (self, json_object_get (chunk, "usage"));
    json_decref (chunk);
}

//  One line of the stream (without its end of line).
static void
request_on_line (request_t *self, char *line, size_t size)
{
    if (size > 0 && line [size - 1] == '\r')
        line [--size] = 0;
    if (size == 0) {
        //  A blank line ends the event
        if (self->data.size > 0)
            request_on_event (self, self->data.data);
        s_buffer_clear (&self->data);
        return;
    }
    if (strncmp (line, "data:", 5) != 0)
        return;                 //  comments (":"), event:, id:, retry: say nothing here
    const char *value = line + 5;
    if (*value == ' ')
        value++;
    if ((self->data.size > 0 && s_buffer_append (&self->data, "\n", 1))
    ||  s_buffer_append (&self->data, value, strlen (value)))
        request_fail (self, "out of memory");
}

//  libcurl hands over the body as it arrives: split it into lines and events.
static size_t
request_write_callback (char *bytes, size_t size, size_t count, void *arg)
{
    request_t *self = (request_t *) arg;
    size_t total = size * count;
    self->arrival = s_now ();
    self->last_byte = self->arrival;
    if (self->http_status == 0
    &&  curl_easy_getinfo (self->easy, CURLINFO_RESPONSE_CODE, &self->http_status)
        != CURLE_OK) {
        request_fail (self, "cannot read the HTTP status");
        return 0;
    }
    if (self->http_status != 200) {
        //  Keep the start of the error body for the message
        size_t room = BENCH_ERROR_BODY_MAX - self->error_body.size;
        size_t keep = total < room ? total : room;
        if (keep > 0 && s_buffer_append (&self->error_body, bytes, keep))
            return 0;
        return total;
    }
    size_t at = 0;
    while (at < total) {
        //  Take the bytes up to the next end of line, or all that is left
        const char *newline = memchr (bytes + at, '\n', total - at);
        size_t size = newline ? (size_t) (newline - (bytes + at)) : total - at;
        if (s_buffer_append (&self->line, bytes + at, size))
            request_fail (self, "out of memory");
        at += size;
        if (newline && !self->error [0]) {
            request_on_line (self, self->line.data, self->line.size);
            s_buffer_clear (&self->line);
            at++;
        }
        if (self->error [0])
            return 0;           //  a broken stream: stop reading it
    }
    return total;
}

//  Make the request's easy handle. Returns 0 or -1 (out of memory, or curl refused).
static int
request_prepare (request_t *self, const settings_t *settings, const char *url,
                 struct curl_slist *headers)
{
    self->easy = curl_easy_init ();
    if (!self->easy)
        return -1;
    long version = s_http_version (settings);
    CURLcode rc = curl_easy_setopt (self->easy, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_HTTP_VERSION, version);
    if (rc == CURLE_OK && settings->http2)
        //  wait for the one connection rather than open another beside it
        rc = curl_easy_setopt (self->easy, CURLOPT_PIPEWAIT, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_TIMEOUT, (long) settings->timeout_s);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_CONNECTTIMEOUT, 10L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_ERRORBUFFER, self->curl_err);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_HTTPHEADER, headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_POSTFIELDS, self->body);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_POSTFIELDSIZE, (long) strlen (self->body));
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_WRITEFUNCTION, request_write_callback);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_WRITEDATA, self);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt (self->easy, CURLOPT_PRIVATE, self);
    return rc == CURLE_OK ? 0 : -1;
}

//  The message of a non-200 answer: error.message when the body is OpenAI-shaped JSON.
static void
request_fail_http (request_t *self)
{
    const char *body = self->error_body.data ? self->error_body.data : "";
    json_error_t json_err;
    json_t *reply = json_loads (body, 0, &json_err);
    json_t *message = json_object_get (json_object_get (reply, "error"), "message");
    if (json_is_string (message))
        request_fail (self, "HTTP %ld: %s", self->http_status, json_string_value (message));
    else
        request_fail (self, "HTTP %ld: %.200s", self->http_status, body);
    json_decref (reply);
}

//  The transfer ended (result is libcurl's verdict): check what the whole stream said.
static void
request_on_done (request_t *self, CURLcode result)
{
    if (self->http_status == 0
    &&  curl_easy_getinfo (self->easy, CURLINFO_RESPONSE_CODE, &self->http_status)
        != CURLE_OK)
        request_fail (self, "cannot read the HTTP status");
    if (curl_easy_getinfo (self->easy, CURLINFO_NUM_CONNECTS, &self->connects) != CURLE_OK)
        self->connects = 0;
    if (result != CURLE_OK)
        request_fail (self, "%s", self->curl_err [0] ? self->curl_err
                                                     : curl_easy_strerror (result));
    if (self->http_status != 200)
        request_fail_http (self);

    char *content_type = NULL;
    if (curl_easy_getinfo (self->easy, CURLINFO_CONTENT_TYPE, &content_type) != CURLE_OK
    ||  !content_type || strncmp (content_type, "text/event-stream", 17) != 0)
        request_fail (self, "the answer's Content-Type is '%s', not text/event-stream",
                      content_type ? content_type : "");
    long version = 0;
    if (curl_easy_getinfo (self->easy, CURLINFO_HTTP_VERSION, &version) != CURLE_OK)
        request_fail (self, "cannot read the HTTP version");
    else
    if (self->http2 && version != CURL_HTTP_VERSION_2_0)
        request_fail (self, "the answer did not come over HTTP/2");

    if (self->line.size > 0 || self->data.size > 0)
        request_fail (self, "the stream ends in the middle of an event");
    if (!self->done)
        request_fail (self, "the stream ended without data: [DONE]");
    if (!self->finished)
        request_fail (self, "no chunk had a finish_reason");
    if (!self->got_usage)
        request_fail (self, "no usage in the stream (stream_options.include_usage)");
    //  A request whose tokens all give no text (control tokens, which a random-weight
    //  model may well write) succeeded; one without any token did not.
    if (self->n_tokens == 0 && self->completion_tokens == 0)
        request_fail (self, "no chunk had content and usage counts no tokens");
    curl_easy_cleanup (self->easy);
    self->easy = NULL;
}

//  --- Statistics ----------------------------------------------------------------------------

typedef struct {
    size_t count;
    double mean, median, p90, p99;      //  in milliseconds
} summary_t;

static int
s_compare_doubles (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y ? 1 : 0;
}

//  The p-th percentile of sorted values, interpolating linearly between neighbours
//  (numpy's default, which vLLM's figures use).
static double
s_percentile (const double *sorted, size_t n, double p)
{
    double rank = p / 100.0 * (double) (n - 1);
    size_t below = (size_t) floor (rank);
    size_t above = (size_t) ceil (rank);
    return sorted [below] + (sorted [above] - sorted [below]) * (rank - (double) below);
}

//  Summarize values in seconds (sorted in place) as milliseconds.
static summary_t
s_summarize (double *values, size_t n)
{
    summary_t summary = { n, 0, 0, 0, 0 };
    if (n == 0)
        return summary;
    qsort (values, n, sizeof (double), s_compare_doubles);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += values [i];
    summary.mean = sum / (double) n * 1000.0;
    summary.median = s_percentile (values, n, 50) * 1000.0;
    summary.p90 = s_percentile (values, n, 90) * 1000.0;
    summary.p99 = s_percentile (values, n, 99) * 1000.0;
    return summary;
}

//  --- The benchmark -------------------------------------------------------------------------

typedef struct {
    const settings_t *settings;
    char *model;                //  the model asked for, or NULL: none known
    char *url;                  //  the endpoint's URL
    bool tokenizer_prompts;     //  prompts cut with /tokenize, else the word list
    struct curl_slist *headers;
    CURL *setup;                //  for the calls before the clock starts
    CURLM *multi;
    request_t **requests;
    double *arrivals;           //  with --rate: when each request is due (s after start)
    size_t n_started;
    size_t n_running;
    size_t n_finished;
    size_t n_failed;
    double started;             //  when the first request went
    double ended;               //  when the last one finished
    double last_progress;
    bool progress_tty;

    //  The figures
    size_t n_successful;
    long long input_tokens;
    long long output_tokens;
    size_t token_mismatches;
    long connections;
    const char *first_error;    //  points into a request
    size_t first_error_index;
    summary_t ttft, tpot, itl, e2el;
} bench_t;

static void
bench_destroy (bench_t **self_p)
{
    bench_t *self = *self_p;
    if (!self)
        return;
    if (self->requests) {
        for (size_t i = 0; i < self->settings->requests; i++) {
            if (self->requests [i] && self->requests [i]->easy && self->multi
            &&  curl_multi_remove_handle (self->multi, self->requests [i]->easy)
                != CURLM_OK)
                fprintf (stderr, "zllm bench: curl_multi_remove_handle failed\n");
            request_destroy (&self->requests [i]);
        }
        free (self->requests);
    }
    if (self->multi && curl_multi_cleanup (self->multi) != CURLM_OK)
        fprintf (stderr, "zllm bench: curl_multi_cleanup failed\n");
    if (self->setup)
        curl_easy_cleanup (self->setup);
    curl_slist_free_all (self->headers);
    free (self->arrivals);
    free (self->model);
    free (self->url);
    free (self);
    *self_p = NULL;
}

static bench_t *
bench_new (const settings_t *settings)
{
    bench_t *self = calloc (1, sizeof (bench_t));
    if (!self)
        return NULL;
    self->settings = settings;
    self->requests = calloc (settings->requests, sizeof (request_t *));
    const char *path = settings->chat ? "/v1/chat/completions" : "/v1/completions";
    size_t url_size = strlen (settings->base_url) + strlen (path) + 1;
    self->url = malloc (url_size);
    if (!self->requests || !self->url) {
        bench_destroy (&self);
        return NULL;
    }
    snprintf (self->url, url_size, "%s%s", settings->base_url, path);

    struct curl_slist *list = curl_slist_append (NULL, "Content-Type: application/json");
    //  No "Expect: 100-continue" for bodies over 1 KiB: curl would wait for the server's
    //  go-ahead (up to a second) before sending the prompt
    if (list)
        list = curl_slist_append (list, "Expect:");
    if (list && settings->api_key) {
        size_t size = strlen (settings->api_key) + 32;
        char *header = malloc (size);
        if (header) {
            snprintf (header, size, "Authorization: Bearer %s", settings->api_key);
            struct curl_slist *longer = curl_slist_append (list, header);
            if (!longer)
                curl_slist_free_all (list);
            list = longer;
            free (header);
        }
        else {
            curl_slist_free_all (list);
            list = NULL;
        }
    }
    self->headers = list;
    self->multi = curl_multi_init ();
    self->setup = curl_easy_init ();
    if (!self->headers || !self->multi || !self->setup) {
        bench_destroy (&self);
        return NULL;
    }
    self->progress_tty = isatty (STDERR_FILENO);
    return self;
}

//  The model to ask for: --model, or the first the server lists. When the server cannot
//  say, requests go without "model" (a server that needs one will say so, per request).
static int
bench_find_model (bench_t *self)
{
    if (self->settings->model) {
        self->model = strdup (self->settings->model);
        return self->model ? 0 : -1;
    }
    char err [256] = "";
    json_t *reply = NULL;
    long status = s_http_call (self->setup, self->settings, self->headers, "/v1/models",
                               NULL, &reply, err, sizeof (err));
    json_t *first = json_array_get (json_object_get (reply, "data"), 0);
    json_t *id = json_object_get (first, "id");
    if (status == 200 && json_is_string (id)) {
        self->model = strdup (json_string_value (id));
        json_decref (reply);
        return self->model ? 0 : -1;
    }
    json_decref (reply);
    fprintf (stderr, "zllm bench: cannot learn the model from /v1/models (%s); requests go "
             "without \"model\" (give --model NAME)\n",
             status == 200 ? "no model listed" : err);
    return 0;
}

//  A prompt of exactly input_len tokens through the server's /tokenize and /detokenize,
//  or NULL (with err) when the server cannot.
static char *
bench_tokenizer_prompt (bench_t *self, uint64_t *state, char *err, size_t err_size)
{
    const settings_t *settings = self->settings;
    size_t n_words = settings->input_len + settings->input_len / 4 + 8;
    char *prompt = NULL;
    for (int attempt = 0; attempt < 4 && !prompt && !err [0]; attempt++, n_words *= 2) {
        char *text = s_random_words (state, n_words);
        json_t *request = text ? json_pack ("{s:s, s:b}", "prompt", text,
                                            "add_special_tokens", 0) : NULL;
        free (text);
        if (!request || (self->model && json_object_set_new (request, "model",
                                                             json_string (self->model)))) {
            json_decref (request);
            snprintf (err, err_size, "out of memory");
            return NULL;
        }
        json_t *reply = NULL;
        long status = s_http_call (self->setup, settings, self->headers, "/tokenize",
                                   request, &reply, err, err_size);
        json_decref (request);
        json_t *tokens = json_object_get (reply, "tokens");
        if (status != 200 || !json_is_array (tokens)) {
            if (status == 200)
                snprintf (err, err_size, "/tokenize gave no \"tokens\" array");
            json_decref (reply);
            return NULL;
        }
        if (json_array_size (tokens) < settings->input_len) {
            json_decref (reply);
            continue;           //  too short: try again with more words
        }
        json_t *cut = json_array ();
        for (size_t i = 0; cut && i < settings->input_len; i++)
            if (json_array_append (cut, json_array_get (tokens, i))) {
                json_decref (cut);
                cut = NULL;
            }
        json_decref (reply);
        request = cut ? json_pack ("{s:o}", "tokens", cut) : NULL;
        if (!request || (self->model && json_object_set_new (request, "model",
                                                             json_string (self->model)))) {
            json_decref (request);
            snprintf (err, err_size, "out of memory");
            return NULL;
        }
        status = s_http_call (self->setup, settings, self->headers, "/detokenize",
                              request, &reply, err, err_size);
        json_decref (request);
        json_t *text_back = json_object_get (reply, "prompt");
        if (status == 200 && json_is_string (text_back)) {
            prompt = strdup (json_string_value (text_back));
            if (!prompt)
                snprintf (err, err_size, "out of memory");
        }
        else
        if (status == 200)
            snprintf (err, err_size, "/detokenize gave no \"prompt\" string");
        json_decref (reply);
    }
    if (!prompt && !err [0])
        snprintf (err, err_size, "/tokenize never gave %" PRIu64 " tokens",
                  settings->input_len);
    return prompt;
}

//  Make every request: a prompt (through the server's tokenizer when it has one) and its
//  body. Returns 0 or -1 (out of memory).
static int
bench_make_requests (bench_t *self)
{
    const settings_t *settings = self->settings;
    uint64_t state = settings->seed;
    self->tokenizer_prompts = true;
    for (size_t i = 0; i < settings->requests; i++) {
        char *prompt = NULL;
        if (self->tokenizer_prompts) {
            char err [256] = "";
            prompt = bench_tokenizer_prompt (self, &state, err, sizeof (err));
            if (!prompt && i > 0) {
                fprintf (stderr, "zllm bench: /tokenize worked, then failed: %s\n", err);
                return -1;
            }
            if (!prompt)
                self->tokenizer_prompts = false;
        }
        if (!self->tokenizer_prompts)
            prompt = s_random_words (&state, settings->input_len);
        self->requests [i] = request_new (i, settings->chat, settings->http2);
        int rc = self->requests [i] && prompt
               ? request_set_body (self->requests [i], settings, self->model, prompt) : -1;
        free (prompt);
        if (rc) {
            fprintf (stderr, "zllm bench: out of memory\n");
            return -1;
        }
    }
    return 0;
}

//  With --rate: the arrival times, as sums of exponential gaps (the first at 0).
static int
bench_plan_arrivals (bench_t *self)
{
    const settings_t *settings = self->settings;
    if (settings->rate == 0)
        return 0;
    self->arrivals = calloc (settings->requests, sizeof (double));
    if (!self->arrivals)
        return -1;
    //  A stream of its own, so that the arrivals do not depend on how the prompts
    //  were made
    uint64_t state = settings->seed ^ 0x5DEECE66Dull;
    double at = 0;
    for (size_t i = 0; i < settings->requests; i++) {
        self->arrivals [i] = at;
        if (isfinite (settings->rate))
            at += -log (1.0 - s_random_uniform (&state)) / settings->rate;
    }
    return 0;
}

//  True when the next request may go now: one is left, a slot is free, and (with --rate)
//  its time has come.
static bool
bench_next_is_due (bench_t *self, double now)
{
    const settings_t *settings = self->settings;
    if (self->n_started == settings->requests)
        return false;
    if (settings->concurrency > 0 && self->n_running >= settings->concurrency)
        return false;
    if (self->arrivals && self->started + self->arrivals [self->n_started] > now)
        return false;
    return true;
}

//  Send every request that is due. Returns 0 or -1 (curl refused).
static int
bench_start_due (bench_t *self)
{
    double now = s_now ();
    while (bench_next_is_due (self, now)) {
        request_t *request = self->requests [self->n_started];
        if (request_prepare (request, self->settings, self->url, self->headers)) {
            fprintf (stderr, "zllm bench: cannot set up a request with libcurl\n");
            return -1;
        }
        request->start = s_now ();
        CURLMcode mc = curl_multi_add_handle (self->multi, request->easy);
        if (mc != CURLM_OK) {
            fprintf (stderr, "zllm bench: curl_multi_add_handle: %s\n",
                     curl_multi_strerror (mc));
            return -1;
        }
        self->n_started++;
        self->n_running++;
    }
    return 0;
}

//  Collect the requests that finished. Returns 0 or -1 (curl refused).
static int
bench_collect_done (bench_t *self)
{
    int n_left;
    CURLMsg *message;
    while ((message = curl_multi_info_read (self->multi, &n_left))) {
        if (message->msg != CURLMSG_DONE)
            continue;
        CURL *easy = message->easy_handle;
        CURLcode result = message->data.result;
        char *private = NULL;
        if (curl_easy_getinfo (easy, CURLINFO_PRIVATE, &private) != CURLE_OK || !private) {
            fprintf (stderr, "zllm bench: a transfer without its request\n");
            return -1;
        }
        CURLMcode mc = curl_multi_remove_handle (self->multi, easy);
        if (mc != CURLM_OK) {
            fprintf (stderr, "zllm bench: curl_multi_remove_handle: %s\n",
                     curl_multi_strerror (mc));
            return -1;
        }
        request_t *request = (request_t *) private;
        request_on_done (request, result);
        self->n_running--;
        self->n_finished++;
        if (request->error [0])
            self->n_failed++;
    }
    return 0;
}

//  The progress line: rewritten in place on a terminal, else one line every few seconds.
static void
bench_show_progress (bench_t *self, bool last)
{
    double now = s_now ();
    double period = self->progress_tty ? 0.2 : BENCH_PROGRESS_PERIOD;
    if (!last && now - self->last_progress < period)
        return;
    if (last && !self->progress_tty)
        return;
    self->last_progress = now;
    fprintf (stderr, "%szllm bench: %zu/%" PRIu64 " done, %zu running, %zu failed, %.1f s%s",
             self->progress_tty ? "\r" : "", self->n_finished, self->settings->requests,
             self->n_running, self->n_failed, now - self->started,
             self->progress_tty ? (last ? "\n" : "   ") : "\n");
    fflush (stderr);
}

//  Milliseconds curl_multi_poll may sleep: until the next arrival, and at most a
//  progress period.
static int
bench_wait_ms (bench_t *self)
{
    double wait = self->progress_tty ? 0.2 : 1.0;
    const settings_t *settings = self->settings;
    if (self->arrivals && self->n_started < settings->requests
    &&  (settings->concurrency == 0 || self->n_running < settings->concurrency)) {
        double until = self->started + self->arrivals [self->n_started] - s_now ();
        if (until < wait)
            wait = until;
    }
    if (wait < 0)
        wait = 0;
    return (int) ceil (wait * 1000.0);
}

//  The event loop: send requests when due, let curl move the bytes, collect the ends.
//  Returns 0 when every request ran (successfully or not), -1 when libcurl refused.
static int
bench_run (bench_t *self)
{
    const settings_t *settings = self->settings;
    CURLMcode mc = curl_multi_setopt (self->multi, CURLMOPT_PIPELINING,
                                      settings->http2 ? CURLPIPE_MULTIPLEX : CURLPIPE_NOTHING);
    //  Keep a connection for each request that may be in flight, so none is closed and
    //  reopened between requests
    long keep = settings->concurrency > 0 ? (long) settings->concurrency
                                          : (long) settings->requests;
    if (mc == CURLM_OK)
        mc = curl_multi_setopt (self->multi, CURLMOPT_MAXCONNECTS, keep);
    if (mc != CURLM_OK) {
        fprintf (stderr, "zllm bench: curl_multi_setopt: %s\n", curl_multi_strerror (mc));
        return -1;
    }
    self->started = s_now ();
    self->last_progress = self->started;
    while (self->n_finished < settings->requests) {
        if (bench_start_due (self))
            return -1;
        int still_running = 0;
        mc = curl_multi_perform (self->multi, &still_running);
        if (mc != CURLM_OK) {
            fprintf (stderr, "zllm bench: curl_multi_perform: %s\n", curl_multi_strerror (mc));
            return -1;
        }
        if (bench_collect_done (self))
            return -1;
        bench_show_progress (self, false);
        if (self->n_finished == settings->requests)
            break;
        if (bench_next_is_due (self, s_now ()))
            continue;
        mc = curl_multi_poll (self->multi, NULL, 0, bench_wait_ms (self), NULL);
        if (mc != CURLM_OK) {
            fprintf (stderr, "zllm bench: curl_multi_poll: %s\n", curl_multi_strerror (mc));
            return -1;
        }
    }
    self->ended = s_now ();
    bench_show_progress (self, true);
    return 0;
}

//  Work out the figures from the finished requests. Returns 0 or -1 (out of memory).
static int
bench_compute (bench_t *self)
{
    size_t n = self->settings->requests;
    size_t n_gaps = 0;
    for (size_t i = 0; i < n; i++)
        if (!self->requests [i]->error [0] && self->requests [i]->n_tokens > 1)
            n_gaps += self->requests [i]->n_tokens - 1;
    double *ttfts = malloc ((n + 1) * sizeof (double));
    double *tpots = malloc ((n + 1) * sizeof (double));
    double *e2els = malloc ((n + 1) * sizeof (double));
    double *itls = malloc ((n_gaps + 1) * sizeof (double));
    if (!ttfts || !tpots || !e2els || !itls) {
        free (ttfts);
        free (tpots);
        free (e2els);
        free (itls);
        return -1;
    }
    size_t n_ttft = 0, n_tpot = 0, n_itl = 0, n_e2el = 0;
    for (size_t i = 0; i < n; i++) {
        request_t *request = self->requests [i];
        self->connections += request->connects;
        if (request->error [0]) {
            if (!self->first_error) {
                self->first_error = request->error;
                self->first_error_index = i;
            }
            continue;
        }
        self->n_successful++;
        self->input_tokens += request->prompt_tokens;
        self->output_tokens += request->completion_tokens;
        if ((long long) request->n_tokens != request->completion_tokens)
            self->token_mismatches++;
        double e2el = request->last_byte - request->start;
        e2els [n_e2el++] = e2el;
        if (request->n_tokens == 0)
            continue;           //  no text at all: no first token to time
        double ttft = request->token_times [0] - request->start;
        ttfts [n_ttft++] = ttft;
        if (request->completion_tokens > 1)
            tpots [n_tpot++] = (e2el - ttft) / (double) (request->completion_tokens - 1);
        for (size_t t = 1; t < request->n_tokens; t++)
            itls [n_itl++] = request->token_times [t] - request->token_times [t - 1];
    }
    self->ttft = s_summarize (ttfts, n_ttft);
    self->tpot = s_summarize (tpots, n_tpot);
    self->itl = s_summarize (itls, n_itl);
    self->e2el = s_summarize (e2els, n_e2el);
    free (ttfts);
    free (tpots);
    free (e2els);
    free (itls);
    return 0;
}

//  Requests, or tokens, per second of the benchmark's duration.
static double
bench_per_second (bench_t *self, double count)
{
    double duration = self->ended - self->started;
    return duration > 0 ? count / duration : 0;
}

static void
s_print_summary (const char *title, const char *name, summary_t summary)
{
    const char *dashes = "--------------------------------------------------";
    int pad = (50 - (int) strlen (title)) / 2;
    printf ("%.*s%s%.*s\n", pad, dashes, title, 50 - pad - (int) strlen (title), dashes);
    const char *labels [4] = { "Mean", "Median", "P90", "P99" };
    double values [4] = { summary.mean, summary.median, summary.p90, summary.p99 };
    for (int i = 0; i < 4; i++) {
        char label [64];
        snprintf (label, sizeof (label), "%s %s (ms):", labels [i], name);
        if (summary.count > 0)
            printf ("%-40s %.2f\n", label, values [i]);
        else
            printf ("%-40s %s\n", label, "n/a");
    }
}

//  The table on stdout, as vLLM's `bench serve` prints it.
static void
bench_print (bench_t *self)
{
    const settings_t *settings = self->settings;
    double duration = self->ended - self->started;
    printf ("============ Serving Benchmark Result ============\n");
    printf ("%-40s %s\n", "Endpoint:", self->url);
    printf ("%-40s %s\n", "Model:", self->model ? self->model : "(none given)");
    printf ("%-40s %s\n", "HTTP version:", s_http_label (settings));
    if (settings->concurrency > 0)
        printf ("%-40s %" PRIu64 "\n", "Maximum request concurrency:", settings->concurrency);
    if (settings->rate > 0 && isfinite (settings->rate))
        printf ("%-40s %.2f\n", "Request rate (req/s):", settings->rate);
    else
    if (settings->rate > 0)
        printf ("%-40s %s\n", "Request rate (req/s):", "inf");
    printf ("%-40s %s\n", "Prompts:", self->tokenizer_prompts
            ? "cut to length by the server's /tokenize"
            : "word list (1 word ~ 1 token; no /tokenize)");
    printf ("%-40s %zu\n", "Successful requests:", self->n_successful);
    printf ("%-40s %zu\n", "Failed requests:", self->n_failed);
    printf ("%-40s %.2f\n", "Benchmark duration (s):", duration);
    printf ("%-40s %lld\n", "Total input tokens:", self->input_tokens);
    printf ("%-40s %lld\n", "Total generated tokens:", self->output_tokens);
    printf ("%-40s %.2f\n", "Request throughput (req/s):",
            bench_per_second (self, (double) self->n_successful));
    printf ("%-40s %.2f\n", "Output token throughput (tok/s):",
            bench_per_second (self, (double) self->output_tokens));
    printf ("%-40s %.2f\n", "Total token throughput (tok/s):",
            bench_per_second (self, (double) (self->input_tokens + self->output_tokens)));
    printf ("%-40s %zu\n", "Token count mismatches:", self->token_mismatches);
    printf ("%-40s %ld\n", "Connections opened:", self->connections);
    s_print_summary ("Time to First Token", "TTFT", self->ttft);
    s_print_summary ("Time per Output Token (excl. 1st token)", "TPOT", self->tpot);
    s_print_summary ("Inter-token Latency", "ITL", self->itl);
    s_print_summary ("End-to-end Latency", "E2EL", self->e2el);
    printf ("==================================================\n");
    fflush (stdout);
}

//  Set key to value (a new reference) in object; counts failures in *errors.
static void
s_json_set (json_t *object, const char *key, json_t *value, int *errors)
{
    if (!value || json_object_set_new (object, key, value))
        (*errors)++;
}

static void
s_json_set_summary (json_t *object, const char *name, summary_t summary, int *errors)
{
    const char *labels [4] = { "mean", "median", "p90", "p99" };
    double values [4] = { summary.mean, summary.median, summary.p90, summary.p99 };
    for (int i = 0; i < 4; i++) {
        char key [64];
        snprintf (key, sizeof (key), "%s_%s_ms", labels [i], name);
        s_json_set (object, key, summary.count > 0 ? json_real (values [i]) : json_null (),
                    errors);
    }
}

//  Every figure and the settings, as JSON in path (key names as vLLM's --save-result).
static int
bench_write_json (bench_t *self, const char *path)
{
    const settings_t *settings = self->settings;
    int errors = 0;
    json_t *root = json_object ();
    json_t *given = json_object ();
    if (!root || !given) {
        json_decref (root);
        json_decref (given);
        return -1;
    }
    s_json_set (given, "url", json_string (settings->base_url), &errors);
    s_json_set (given, "endpoint", json_string (settings->chat ? "chat" : "completions"),
                &errors);
    s_json_set (given, "model", self->model ? json_string (self->model) : json_null (),
                &errors);
    s_json_set (given, "http2", json_boolean (settings->http2), &errors);
    s_json_set (given, "http_version", json_string (s_http_label (settings)), &errors);
    s_json_set (given, "concurrency", settings->concurrency > 0
                ? json_integer ((json_int_t) settings->concurrency) : json_null (), &errors);
    s_json_set (given, "rate", settings->rate == 0 ? json_null ()
                : isfinite (settings->rate) ? json_real (settings->rate) : json_string ("inf"),
                &errors);
    s_json_set (given, "requests", json_integer ((json_int_t) settings->requests), &errors);
    s_json_set (given, "input_len", json_integer ((json_int_t) settings->input_len), &errors);
    s_json_set (given, "output_len", json_integer ((json_int_t) settings->output_len),
                &errors);
    s_json_set (given, "temperature", json_real (settings->temperature), &errors);
    s_json_set (given, "seed", json_integer ((json_int_t) settings->seed), &errors);
    s_json_set (given, "prompts", json_string (self->tokenizer_prompts ? "tokenizer"
                                                                       : "word list"),
                &errors);
    s_json_set (root, "settings", given, &errors);

    double duration = self->ended - self->started;
    s_json_set (root, "successful", json_integer ((json_int_t) self->n_successful), &errors);
    s_json_set (root, "failed", json_integer ((json_int_t) self->n_failed), &errors);
    s_json_set (root, "duration", json_real (duration), &errors);
    s_json_set (root, "total_input_tokens", json_integer (self->input_tokens), &errors);
    s_json_set (root, "total_output_tokens", json_integer (self->output_tokens), &errors);
    s_json_set (root, "request_throughput",
                json_real (bench_per_second (self, (double) self->n_successful)), &errors);
    s_json_set (root, "output_throughput",
                json_real (bench_per_second (self, (double) self->output_tokens)), &errors);
    s_json_set (root, "total_token_throughput",
                json_real (bench_per_second (self, (double) (self->input_tokens
                                                             + self->output_tokens))),
                &errors);
    s_json_set (root, "token_count_mismatches",
                json_integer ((json_int_t) self->token_mismatches), &errors);
    s_json_set (root, "connections", json_integer (self->connections), &errors);
    s_json_set (root, "first_error", self->first_error ? json_string (self->first_error)
                                                       : json_null (), &errors);
    s_json_set_summary (root, "ttft", self->ttft, &errors);
    s_json_set_summary (root, "tpot", self->tpot, &errors);
    s_json_set_summary (root, "itl", self->itl, &errors);
    s_json_set_summary (root, "e2el", self->e2el, &errors);
    int rc = errors ? -1 : json_dump_file (root, path, JSON_INDENT (2));
    json_decref (root);
    if (rc)
        fprintf (stderr, "zllm bench: cannot write %s\n", path);
    return rc;
}

int
cmd_bench (int argc, char **argv)
{
    settings_t settings;
    int parsed = s_settings_parse (&settings, argc, argv);
    if (parsed != 0) {
        free (settings.base_url);
        if (parsed > 0)
            return 0;
        fprintf (stderr, "Try 'zllm bench --help'.\n");
        return 2;
    }
    if (curl_global_init (CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf (stderr, "zllm bench: libcurl failed to start\n");
        free (settings.base_url);
        return 1;
    }
    int exit_status = 1;
    bench_t *bench = bench_new (&settings);
    if (!bench)
        fprintf (stderr, "zllm bench: out of memory\n");
    else
    if (bench_find_model (bench) == 0
    &&  bench_make_requests (bench) == 0
    &&  bench_plan_arrivals (bench) == 0
    &&  bench_run (bench) == 0
    &&  bench_compute (bench) == 0) {
        bench_print (bench);
        if (bench->first_error)
            fprintf (stderr, "zllm bench: %zu of %" PRIu64 " requests failed; the first "
                     "(request %zu): %s\n", bench->n_failed, settings.requests,
                     bench->first_error_index, bench->first_error);
        int written = settings.json_path ? bench_write_json (bench, settings.json_path) : 0;
        exit_status = written == 0 && bench->n_failed == 0 ? 0 : 1;
    }
    bench_destroy (&bench);
    curl_global_cleanup ();
    free (settings.base_url);
    return exit_status;
}
