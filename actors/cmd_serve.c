/*  cmd_serve — `zllm serve MODEL.gguf`: every actor in one process.

    It checks the model file, then starts the actors in the order in which each one's
    peers must exist: scheduler (binds the inboxes), workers (one per --devices entry,
    they connect to the scheduler), tokenizer, frontend (opens the HTTP port last). It
    then waits:
      - SIGINT or SIGTERM: the frontend stops accepting and finishes what is in flight for
        up to --shutdown-timeout seconds (a second signal cuts that short); what is still
        open then gets 503; the actors stop in reverse order.
      - an actor that ends by itself: logged; the frontend fails what is in flight with
        503 and the server stops with exit status 1, so a service manager restarts it.
*/
#include "commands.h"
#include "cli.h"
#include "device.h"
#include "frontend.h"
#include "gguf.h"
#include "scheduler.h"
#include "supervisor.h"
#include "tokenizer_actor.h"
#include "worker.h"
#include "zlog.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_DEVICES 64
#define MAX_CHAT_TEMPLATE_BYTES (1024 * 1024)

typedef struct {
    const char *model_path;
    const char *host;
    uint16_t port;
    const char *chat_template_path;
    const char *served_model_name;
    bool enable_auto_tool_choice;
    const char *tool_call_parser;
    const char *response_role;
    char *devices [MAX_DEVICES];
    size_t n_devices;
    const char *worker_listen;
    uint32_t max_model_len;         //  0: the model's context length
    uint32_t max_num_seqs;          //  per worker; 0: the scheduler's default
    uint32_t max_num_batched_tokens;//  per step of a worker; 0: the scheduler's default
    bool no_prefix_caching;
    uint32_t block_size;            //  0: the worker's default
    uint64_t kv_cache_bytes;        //  per local worker; 0: the worker's default
    double kv_cache_fraction;       //  or this share of MemAvailable over local workers
    uint32_t threads;               //  per worker; 0: $ZLLM_THREADS or 1
    uint64_t max_body_bytes;
    uint32_t shutdown_timeout_s;
    const char *api_key;            //  --api-key, else $ZLLM_API_KEY; NULL: none
    const char *allowed_origins;    //  JSON lists for CORS; NULL: ["*"]
    const char *allowed_methods;
    const char *allowed_headers;
    bool allow_credentials;
    const char *ssl_certfile;
    const char *ssl_keyfile;
    uint32_t max_queued_requests;   //  0: no limit
    char model_name [256];
    char *devices_text;             //  owns the strings in devices
} serve_options_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm serve MODEL.gguf [options]\n"
        "\n"
        "Serve the model over the OpenAI HTTP API (POST /v1/completions,\n"
        "POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics, ...) on\n"
        "HTTP/1.1 and HTTP/2 (h2c, or h2 over TLS with --ssl-certfile/--ssl-keyfile).\n"
        "\n"
        "options:\n"
        "  --host HOST                 address to listen on (default 127.0.0.1)\n"
        "  --port PORT                 port to listen on (default 8000; 0: any free port)\n"
        "  --served-model-name NAME    the model id clients send and /v1/models lists\n"
        "                              (default: the file name without .gguf)\n"
        "  --chat-template FILE        a Jinja2 chat template that replaces the model's own\n"
        "                              (tokenizer.chat_template in the GGUF)\n"
        "  --enable-auto-tool-choice   let chat requests with tools get tool calls parsed\n"
        "                              from the output (needs --tool-call-parser)\n"
        "  --tool-call-parser NAME     how the model writes tool calls: llama3_json or hermes\n"
        "  --response-role ROLE        the role of generated chat messages (default\n"
        "                              assistant)\n"
        "  --devices LIST              devices to run workers on, comma-separated KIND:INDEX\n"
        "                              (default cpu:0), or 'none' when every worker joins\n"
        "                              from another process through --worker-listen\n"
        "  --worker-listen ENDPOINT    also accept workers (`zllm worker --connect`) on this\n"
        "                              ZeroMQ endpoint, e.g. tcp://127.0.0.1:5555\n"
        "  --max-model-len N           tokens of context per sequence (default: the model's)\n"
        "  --max-num-seqs N            sequences each worker runs at once (default 64)\n"
        "  --max-num-batched-tokens N  tokens one worker computes in one step (default 512)\n"
        "  --no-prefix-caching         do not reuse the KV cache of shared prompt prefixes\n"
        "  --block-size N              KV positions per cache block (default 16)\n"
        "  --kv-cache-memory SIZE      KV cache of each local worker: bytes with a suffix\n"
        "                              K, M, G, KiB, MiB, GiB (powers of 1024; e.g. 2GiB), or\n"
        "                              a fraction of the available memory (e.g. 0.5) split\n"
        "                              over the local workers (default: 4 sequences of the\n"
        "                              context, at most 1 GiB)\n"
        "  --threads N                 compute threads of each local worker (default 1, or\n"
        "                              $ZLLM_THREADS); split the cores between devices\n"
        "  --max-body-size BYTES       larger request bodies get 413 (default 16777216)\n"
        "  --max-queued-requests N     a generation request that finds N requests waiting\n"
        "                              gets 429 (default: no limit)\n"
        "  --api-key KEY               every /v1 request needs 'Authorization: Bearer KEY'\n"
        "                              (default: $ZLLM_API_KEY; none when unset)\n"
        "  --allowed-origins JSON      CORS: origins allowed, a JSON list (default [\"*\"])\n"
        "  --allowed-methods JSON      CORS: methods allowed (default [\"*\"])\n"
        "  --allowed-headers JSON      CORS: request headers allowed (default [\"*\"])\n"
        "  --allow-credentials         CORS: allow credentials (cookies, Authorization)\n"
        "  --ssl-certfile FILE         serve HTTPS (h2 and http/1.1 by ALPN) with this PEM\n"
        "                              certificate chain ...\n"
        "  --ssl-keyfile FILE          ... and this PEM private key (not encrypted)\n"
        "  --shutdown-timeout SECONDS  on SIGINT/SIGTERM, how long requests in flight may\n"
        "                              take to finish (default 5)\n"
        "  --log-level LEVEL           debug, info, warn or error (default info, or\n"
        "                              $ZLLM_LOG_LEVEL)\n"
        "  -h, --help                  show this help\n");
}

static int
s_parse_devices (serve_options_t *options, const char *text)
{
    free (options->devices_text);
    options->devices_text = strdup (text);
    options->n_devices = 0;
    if (!options->devices_text)
        return -1;
    if (strcmp (text, "none") == 0)
        return 0;
    char *saveptr = NULL;
    char *name = strtok_r (options->devices_text, ",", &saveptr);
    while (name) {
        char err [256];
        if (device_check (name, err, sizeof err) != 0) {
            fprintf (stderr, "zllm: --devices: %s\n", err);
            return -1;
        }
        for (size_t i = 0; i < options->n_devices; i++) {
            if (strcmp (options->devices [i], name) == 0) {
                fprintf (stderr, "zllm: --devices: %s is named twice\n", name);
                return -1;
            }
        }
        if (options->n_devices == MAX_DEVICES) {
            fprintf (stderr, "zllm: --devices: more than %d devices\n", MAX_DEVICES);
            return -1;
        }
        options->devices [options->n_devices++] = name;
        name = strtok_r (NULL, ",", &saveptr);
    }
    if (options->n_devices == 0) {
        fprintf (stderr, "zllm: --devices: no device named (use 'none' for none)\n");
        return -1;
    }
    return 0;
}

//  Check a CORS flag's JSON list; prints why and returns -1 when it is not one.
static int
s_check_list (const char *flag, const char *text)
{
    char err [256];
    if (frontend_check_string_list (text, err, sizeof err) != 0) {
        fprintf (stderr, "zllm: %s: %s\n", flag, err);
        return -1;
    }
    return 0;
}

//  Returns 0 to go on, 1 when --help was shown, -1 on a bad command line.
static int
s_parse_options (serve_options_t *options, int argc, char **argv)
{
    enum {
        OPT_HOST = 256, OPT_PORT, OPT_NAME, OPT_TEMPLATE, OPT_DEVICES, OPT_WORKER_LISTEN,
        OPT_MAX_MODEL_LEN, OPT_MAX_NUM_SEQS, OPT_MAX_BODY, OPT_SHUTDOWN, OPT_LOG_LEVEL,
        OPT_AUTO_TOOL_CHOICE, OPT_TOOL_CALL_PARSER, OPT_RESPONSE_ROLE, OPT_THREADS,
        OPT_MAX_BATCHED, OPT_NO_PREFIX_CACHING, OPT_BLOCK_SIZE, OPT_KV_CACHE_MEMORY,
        OPT_MAX_QUEUED, OPT_API_KEY, OPT_ALLOWED_ORIGINS, OPT_ALLOWED_METHODS,
        OPT_ALLOWED_HEADERS, OPT_ALLOW_CREDENTIALS, OPT_SSL_CERTFILE, OPT_SSL_KEYFILE
    };
    static const struct option long_options [] = {
        { "host", required_argument, NULL, OPT_HOST },
        { "port", required_argument, NULL, OPT_PORT },
        { "served-model-name", required_argument, NULL, OPT_NAME },
        { "chat-template", required_argument, NULL, OPT_TEMPLATE },
        { "devices", required_argument, NULL, OPT_DEVICES },
        { "worker-listen", required_argument, NULL, OPT_WORKER_LISTEN },
        { "max-model-len", required_argument, NULL, OPT_MAX_MODEL_LEN },
        { "max-num-seqs", required_argument, NULL, OPT_MAX_NUM_SEQS },
        { "max-body-size", required_argument, NULL, OPT_MAX_BODY },
        { "shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "enable-auto-tool-choice", no_argument, NULL, OPT_AUTO_TOOL_CHOICE },
        { "tool-call-parser", required_argument, NULL, OPT_TOOL_CALL_PARSER },
        { "response-role", required_argument, NULL, OPT_RESPONSE_ROLE },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "max-num-batched-tokens", required_argument, NULL, OPT_MAX_BATCHED },
        { "no-prefix-caching", no_argument, NULL, OPT_NO_PREFIX_CACHING },
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "kv-cache-memory", required_argument, NULL, OPT_KV_CACHE_MEMORY },
        { "max-queued-requests", required_argument, NULL, OPT_MAX_QUEUED },
        { "api-key", required_argument, NULL, OPT_API_KEY },
        { "allowed-origins", required_argument, NULL, OPT_ALLOWED_ORIGINS },
        { "allowed-methods", required_argument, NULL, OPT_ALLOWED_METHODS },
        { "allowed-headers", required_argument, NULL, OPT_ALLOWED_HEADERS },
        { "allow-credentials", no_argument, NULL, OPT_ALLOW_CREDENTIALS },
        { "ssl-certfile", required_argument, NULL, OPT_SSL_CERTFILE },
        { "ssl-keyfile", required_argument, NULL, OPT_SSL_KEYFILE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    options->host = "127.0.0.1";
    options->port = 8000;
    options->max_body_bytes = 16 * 1024 * 1024;
    options->shutdown_timeout_s = 5;
    if (s_parse_devices (options, "cpu:0") != 0)
        return -1;

    optind = 1;
    int option;
    uint64_t value;
    while ((option = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
        switch (option) {
            case OPT_HOST:
                options->host = optarg;
                break;
            case OPT_PORT:
                if (cli_parse_uint ("--port", optarg, 0, 65535, &value))
                    return -1;
                options->port = (uint16_t) value;
                break;
            case OPT_NAME:
                if (!optarg [0] || strlen (optarg) >= sizeof options->model_name) {
                    fprintf (stderr, "zllm: --served-model-name: 1 to %zu characters\n",
                             sizeof options->model_name - 1);
                    return -1;
                }
                options->served_model_name = optarg;
                break;
            case OPT_TEMPLATE:
                options->chat_template_path = optarg;
                break;
            case OPT_DEVICES:
                if (s_parse_devices (options, optarg))
                    return -1;
                break;
            case OPT_WORKER_LISTEN:
                options->worker_listen = optarg;
                break;
            case OPT_MAX_MODEL_LEN:
                if (cli_parse_uint ("--max-model-len", optarg, 1, 1u << 24, &value))
                    return -1;
                options->max_model_len = (uint32_t) value;
                break;
            case OPT_MAX_NUM_SEQS:
                if (cli_parse_uint ("--max-num-seqs", optarg, 1, 4096, &value))
                    return -1;
                options->max_num_seqs = (uint32_t) value;
                break;
            case OPT_MAX_BATCHED:
                if (cli_parse_uint ("--max-num-batched-tokens", optarg, 1, 1u << 20, &value))
                    return -1;
                options->max_num_batched_tokens = (uint32_t) value;
                break;
            case OPT_NO_PREFIX_CACHING:
                options->no_prefix_caching = true;
                break;
            case OPT_BLOCK_SIZE:
                if (cli_parse_uint ("--block-size", optarg, 1, 1024, &value))
                    return -1;
                options->block_size = (uint32_t) value;
                break;
            case OPT_KV_CACHE_MEMORY:
                if (cli_parse_size ("--kv-cache-memory", optarg, &options->kv_cache_bytes,
                                    &options->kv_cache_fraction))
                    return -1;
                break;
            case OPT_MAX_QUEUED:
                if (cli_parse_uint ("--max-queued-requests", optarg, 1, 1000000, &value))
                    return -1;
                options->max_queued_requests = (uint32_t) value;
                break;
            case OPT_API_KEY:
                if (!optarg [0]) {
                    fprintf (stderr, "zllm: --api-key: the key is empty\n");
                    return -1;
                }
                options->api_key = optarg;
                break;
            case OPT_ALLOWED_ORIGINS:
                if (s_check_list ("--allowed-origins", optarg))
                    return -1;
                options->allowed_origins = optarg;
                break;
            case OPT_ALLOWED_METHODS:
                if (s_check_list ("--allowed-methods", optarg))
                    return -1;
                options->allowed_methods = optarg;
                break;
            case OPT_ALLOWED_HEADERS:
                if (s_check_list ("--allowed-headers", optarg))
                    return -1;
                options->allowed_headers = optarg;
                break;
            case OPT_ALLOW_CREDENTIALS:
                options->allow_credentials = true;
                break;
            case OPT_SSL_CERTFILE:
                options->ssl_certfile = optarg;
                break;
            case OPT_SSL_KEYFILE:
                options->ssl_keyfile = optarg;
                break;
            case OPT_MAX_BODY:
                if (cli_parse_uint ("--max-body-size", optarg, 1024, 1ull << 32, &value))
                    return -1;
                options->max_body_bytes = value;
                break;
            case OPT_SHUTDOWN:
                if (cli_parse_uint ("--shutdown-timeout", optarg, 0, 3600, &value))
                    return -1;
                options->shutdown_timeout_s = (uint32_t) value;
                break;
            case OPT_LOG_LEVEL:
                if (cli_set_log_level (optarg))
                    return -1;
                break;
            case OPT_AUTO_TOOL_CHOICE:
                options->enable_auto_tool_choice = true;
                break;
            case OPT_TOOL_CALL_PARSER:
                if (strcmp (optarg, "llama3_json") != 0 && strcmp (optarg, "hermes") != 0) {
                    fprintf (stderr, "zllm: --tool-call-parser: '%s' is not one of "
                             "llama3_json, hermes\n", optarg);
                    return -1;
                }
                options->tool_call_parser = optarg;
                break;
            case OPT_THREADS:
                if (cli_parse_uint ("--threads", optarg, 1, 256, &value))
                    return -1;
                options->threads = (uint32_t) value;
                break;
            case OPT_RESPONSE_ROLE:
                if (!optarg [0] || strlen (optarg) > 64) {
                    fprintf (stderr, "zllm: --response-role: 1 to 64 characters\n");
                    return -1;
                }
                options->response_role = optarg;
                break;
            case 'h':
                s_usage (stdout);
                return 1;
            default:
                fprintf (stderr, "Try 'zllm serve --help'.\n");
                return -1;
        }
    }
    if (optind != argc - 1) {
        fprintf (stderr, "zllm serve: %s\nTry 'zllm serve --help'.\n",
                 optind == argc ? "which model? (give the path of a .gguf file)"
                                : "give exactly one model file");
        return -1;
    }
    options->model_path = argv [optind];
    if (options->enable_auto_tool_choice != (options->tool_call_parser != NULL)) {
        fprintf (stderr, "zllm serve: --enable-auto-tool-choice and --tool-call-parser go "
                 "together\n");
        return -1;
    }
    if ((options->ssl_certfile != NULL) != (options->ssl_keyfile != NULL)) {
        fprintf (stderr, "zllm serve: --ssl-certfile and --ssl-keyfile go together\n");
        return -1;
    }
    if (options->ssl_certfile) {
        char err [512];
        if (frontend_check_tls (options->ssl_certfile, options->ssl_keyfile, err,
                                sizeof err) != 0) {
            fprintf (stderr, "zllm: %s\n", err);
            return -1;
        }
    }
    //  As vLLM reads VLLM_API_KEY: the flag wins; an empty variable means no key.
    if (!options->api_key) {
        const char *key = getenv ("ZLLM_API_KEY");
        options->api_key = key && *key? key: NULL;
    }
    //  A fraction of the available memory is shared by the workers of this process.
    if (options->kv_cache_fraction > 0 && options->n_devices > 0
    &&  cli_memory_share ("--kv-cache-memory", options->kv_cache_fraction,
                          (uint32_t) options->n_devices, &options->kv_cache_bytes))
        return -1;
    if (options->n_devices == 0 && !options->worker_listen) {
        fprintf (stderr, "zllm serve: with --devices none, give --worker-listen so that "
                 "workers can join\n");
        return -1;
    }
    if (options->served_model_name)
        snprintf (options->model_name, sizeof options->model_name, "%s",
                  options->served_model_name);
    else {
        //  The file name without its folder and without .gguf.
        const char *base = strrchr (options->model_path, '/');
        base = base ? base + 1 : options->model_path;
        size_t length = strlen (base);
        if (length > 5 && strcmp (base + length - 5, ".gguf") == 0)
            length -= 5;
        if (length >= sizeof options->model_name)
            length = sizeof options->model_name - 1;
        snprintf (options->model_name, sizeof options->model_name, "%.*s", (int) length,
                  base);
    }
    return 0;
}

//  Read the chat template file (at most 1 MiB). Returns a heap string, or NULL after
//  saying why.
static char *
s_read_chat_template (const char *path)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        fprintf (stderr, "zllm: --chat-template: cannot open %s: %s\n", path,
                 strerror (errno));
        return NULL;
    }
    char *text = (char *) malloc (MAX_CHAT_TEMPLATE_BYTES + 1);
    size_t size = text ? fread (text, 1, MAX_CHAT_TEMPLATE_BYTES + 1, file) : 0;
    int failed = ferror (file);
    fclose (file);
    if (!text || failed || size == 0 || size > MAX_CHAT_TEMPLATE_BYTES
    ||  memchr (text, 0, size)) {
        fprintf (stderr, "zllm: --chat-template: %s is %s\n", path,
                 size == 0 ? "empty or unreadable"
               : size > MAX_CHAT_TEMPLATE_BYTES ? "larger than 1 MiB" : "not text");
        free (text);
        return NULL;
    }
    text [size] = 0;
    return text;
}

//  What the server needs from the model before any actor starts: is it readable, what
//  is its context length, what fingerprint must workers present.
static int
s_read_model (const serve_options_t *options, uint32_t *n_ctx, uint64_t *fingerprint)
{
    char err [256];
    gguf_t *gguf = gguf_open (options->model_path, err, sizeof err);
    if (!gguf) {
        fprintf (stderr, "zllm: %s\n", err);
        return -1;
    }
    *fingerprint = gguf_fingerprint (gguf);
    gguf_str_t architecture = { 0 };
    uint32_t trained_ctx = 0;
    char key [128] = "";
    if (gguf_get_str (gguf, "general.architecture", &architecture) == 0
    &&  architecture.len < 64)
        snprintf (key, sizeof key, "%.*s.context_length", (int) architecture.len,
                  architecture.ptr);
    if (!key [0] || gguf_get_u32 (gguf, key, &trained_ctx) != 0 || trained_ctx == 0) {
        fprintf (stderr, "zllm: %s: no general.architecture or context length\n",
                 options->model_path);
        gguf_destroy (&gguf);
        return -1;
    }
    gguf_destroy (&gguf);
    *n_ctx = options->max_model_len ? options->max_model_len : trained_ctx;
    return 0;
}

static int
s_run (serve_options_t *options)
{
    uint32_t n_ctx;
    uint64_t fingerprint;
    if (s_read_model (options, &n_ctx, &fingerprint) != 0)
        return 1;
    char *chat_template = NULL;
    if (options->chat_template_path) {
        chat_template = s_read_chat_template (options->chat_template_path);
        if (!chat_template)
            return 1;
    }

    //  inproc endpoints are unique per process; the pid keeps logs readable.
    char scheduler_inbox [64], scheduler_workers [64], status [64], tokenizer_inbox [64];
    snprintf (scheduler_inbox, sizeof scheduler_inbox, "inproc://zllm-%d-scheduler", getpid ());
    snprintf (scheduler_workers, sizeof scheduler_workers, "inproc://zllm-%d-workers", getpid ());
    snprintf (status, sizeof status, "inproc://zllm-%d-status", getpid ());
    snprintf (tokenizer_inbox, sizeof tokenizer_inbox, "inproc://zllm-%d-tokenizer", getpid ());

    supervisor_t *supervisor = supervisor_new ();
    if (!supervisor)
        return 1;
    char message [512];
    int exit_status = 1;

    scheduler_args_t scheduler_args = {
        .inbox_endpoint = scheduler_inbox, .worker_endpoint = scheduler_workers,
        .worker_listen = options->worker_listen, .status_endpoint = status,
        .model_fingerprint = fingerprint, .max_num_seqs = options->max_num_seqs,
        .max_num_batched_tokens = options->max_num_batched_tokens,
        .no_prefix_caching = options->no_prefix_caching
    };
    if (supervisor_start (supervisor, "scheduler", scheduler_actor, &scheduler_args,
                          scheduler_args.error, message, sizeof message))
        goto done;

    worker_args_t worker_args [MAX_DEVICES];
    for (size_t i = 0; i < options->n_devices; i++) {
        worker_args [i] = (worker_args_t) {
            .model_path = options->model_path, .scheduler_endpoint = scheduler_workers,
            .device = options->devices [i], .n_ctx = n_ctx,
            .block_size = options->block_size, .kv_cache_bytes = options->kv_cache_bytes,
            .n_threads = options->threads
        };
        char name [96];
        snprintf (name, sizeof name, "worker %s", options->devices [i]);
        if (supervisor_start (supervisor, name, worker_actor, &worker_args [i],
                              worker_args [i].error, message, sizeof message))
            goto done;
    }

    tokenizer_args_t tokenizer_args = {
        .model_path = options->model_path, .inbox_endpoint = tokenizer_inbox,
        .scheduler_endpoint = scheduler_inbox, .chat_template = chat_template,
        .tool_call_parser = options->tool_call_parser
    };
    if (supervisor_start (supervisor, "tokenizer", tokenizer_actor, &tokenizer_args,
                          tokenizer_args.error, message, sizeof message))
        goto done;

    frontend_args_t frontend_args = {
        .host = options->host, .port = options->port,
        .tokenizer_endpoint = tokenizer_inbox, .status_endpoint = status,
        .model_name = options->model_name, .n_ctx = n_ctx,
        .max_body_bytes = options->max_body_bytes,
        .enable_auto_tool_choice = options->enable_auto_tool_choice,
        .response_role = options->response_role, .version = ZLLM_VERSION,
        .api_key = options->api_key, .allowed_origins = options->allowed_origins,
        .allowed_methods = options->allowed_methods,
        .allowed_headers = options->allowed_headers,
        .allow_credentials = options->allow_credentials,
        .ssl_certfile = options->ssl_certfile, .ssl_keyfile = options->ssl_keyfile,
        .max_queued_requests = options->max_queued_requests
    };
    if (supervisor_start (supervisor, "frontend", frontend_actor, &frontend_args,
                          frontend_args.error, message, sizeof message))
        goto done;
    zactor_t *frontend = supervisor_actor (supervisor, "frontend");
    zlog (ZLOG_INFO, "serve", 0, "serving %s as \"%s\" on %s://%s:%u (%zu local worker%s)",
          options->model_path, options->model_name,
          options->ssl_certfile ? "https" : "http", options->host, frontend_args.bound_port,
          options->n_devices, options->n_devices == 1 ? "" : "s");

    exit_status = 0;
    while (true) {
        const char *name = NULL;
        char *text = NULL;
        int signal_number = 0;
        supervisor_event_t event = supervisor_wait (supervisor, -1, &name, &text,
                                                    &signal_number);
        if (event == SUPERVISOR_SIGNAL) {
            zlog (ZLOG_INFO, "serve", 0, "%s: finishing requests in flight (up to %u s)",
                  strsignal (signal_number), options->shutdown_timeout_s);
            break;
        }
        if (event == SUPERVISOR_ACTOR_STOPPED) {
            zlog (ZLOG_ERROR, "serve", 0, "the %s actor stopped; shutting down", name);
            if (strcmp (name, "frontend") != 0)
                zstr_send (frontend, "PEER_DOWN");
            exit_status = 1;
            options->shutdown_timeout_s = 0;
            break;
        }
        zstr_free (&text);
    }
    //  Drain: no new connections; wait for what is in flight.
    if (options->shutdown_timeout_s > 0) {
        zstr_send (frontend, "DRAIN");
        int64_t deadline = zclock_mono () + (int64_t) options->shutdown_timeout_s * 1000;
        while (true) {
            int64_t left = deadline - zclock_mono ();
            if (left <= 0) {
                zlog (ZLOG_WARN, "serve", 0, "shutdown timeout: requests still open get 503");
                break;
            }
            const char *name = NULL;
            char *text = NULL;
            int signal_number = 0;
            supervisor_event_t event = supervisor_wait (supervisor, (int) left, &name, &text,
                                                        &signal_number);
            bool drained = event == SUPERVISOR_MESSAGE && strcmp (name, "frontend") == 0
                        && strcmp (text, "DRAINED") == 0;
            zstr_free (&text);
            if (drained || event == SUPERVISOR_SIGNAL || event == SUPERVISOR_ACTOR_STOPPED)
                break;
        }
    }
    supervisor_destroy (&supervisor);
    free (chat_template);
    zlog (ZLOG_INFO, "serve", 0, "stopped");
    return exit_status;

done:
    fprintf (stderr, "zllm: %s\n", message);
    supervisor_destroy (&supervisor);
    free (chat_template);
    return exit_status;
}

int
cmd_serve (int argc, char **argv)
{
    serve_options_t options = { 0 };
    int rc = s_parse_options (&options, argc, argv);
    if (rc == 0)
        rc = s_run (&options);
    else
        rc = rc == 1 ? 0 : 2;
    free (options.devices_text);
    return rc;
}
