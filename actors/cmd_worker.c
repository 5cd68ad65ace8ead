/*  cmd_worker — `zllm worker MODEL.gguf --connect ENDPOINT`: one device worker in its own
    process (on this host or another), serving a scheduler started with
    `zllm serve ... --worker-listen ENDPOINT`.

    It runs the worker actor (npu/worker.h) until SIGINT or SIGTERM (then it says BYE to
    the scheduler) or until the scheduler refuses it (exit status 1, with the reason).
*/
#include "commands.h"
#include "cli.h"
#include "device.h"
#include "supervisor.h"
#include "worker.h"
#include "zlog.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: zllm worker MODEL.gguf --connect ENDPOINT [options]\n"
        "\n"
        "Run one device worker for a scheduler in another process, started with\n"
        "`zllm serve MODEL.gguf --worker-listen ENDPOINT`. The model file must be the\n"
        "same as the server's (the scheduler compares their fingerprints).\n"
        "\n"
        "options:\n"
        "  --connect ENDPOINT    the scheduler's worker endpoint, e.g. tcp://10.0.0.1:5555\n"
        "  --device KIND:INDEX   the device to run on (default cpu:0)\n"
        "  --max-model-len N     tokens of context per sequence (default: the model's)\n"
        "  --block-size N        KV positions per cache block (default 16)\n"
        "  --kv-cache-memory SIZE  the KV cache: bytes with a suffix K, M, G, KiB, MiB,\n"
        "                        GiB (powers of 1024; e.g. 2GiB), or a fraction of the\n"
        "                        available memory (e.g. 0.5) (default: 4 sequences of the\n"
        "                        context, at most 1 GiB)\n"
        "  --threads N           compute threads (default 1, or $ZLLM_THREADS)\n"
        "  --log-level LEVEL     debug, info, warn or error (default info)\n"
        "  -h, --help            show this help\n"
        "\n"
        "How many sequences run at once is the scheduler's choice (zllm serve\n"
        "--max-num-seqs), within the KV cache this worker has.\n");
}

int
cmd_worker (int argc, char **argv)
{
    enum { OPT_CONNECT = 256, OPT_DEVICE, OPT_MAX_MODEL_LEN, OPT_LOG_LEVEL, OPT_THREADS,
           OPT_BLOCK_SIZE, OPT_KV_CACHE_MEMORY };
    static const struct option long_options [] = {
        { "connect", required_argument, NULL, OPT_CONNECT },
        { "device", required_argument, NULL, OPT_DEVICE },
        { "max-model-len", required_argument, NULL, OPT_MAX_MODEL_LEN },
        { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
        { "kv-cache-memory", required_argument, NULL, OPT_KV_CACHE_MEMORY },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    worker_args_t args = { .device = "cpu:0" };
    double kv_cache_fraction = 0;
    optind = 1;
    int option;
    uint64_t value;
    char err [256];
    while ((option = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
        switch (option) {
            case OPT_CONNECT:
                args.scheduler_endpoint = optarg;
                break;
            case OPT_DEVICE:
                if (device_check (optarg, err, sizeof err) != 0) {
                    fprintf (stderr, "zllm: --device: %s\n", err);
                    return 2;
                }
                args.device = optarg;
                break;
            case OPT_MAX_MODEL_LEN:
                if (cli_parse_uint ("--max-model-len", optarg, 1, 1u << 24, &value))
                    return 2;
                args.n_ctx = (uint32_t) value;
                break;
            case OPT_BLOCK_SIZE:
                if (cli_parse_uint ("--block-size", optarg, 1, 1024, &value))
                    return 2;
                args.block_size = (uint32_t) value;
                break;
            case OPT_KV_CACHE_MEMORY:
                if (cli_parse_size ("--kv-cache-memory", optarg, &args.kv_cache_bytes,
                                    &kv_cache_fraction))
                    return 2;
                break;
            case OPT_LOG_LEVEL:
                if (cli_set_log_level (optarg))
                    return 2;
                break;
            case OPT_THREADS:
                if (cli_parse_uint ("--threads", optarg, 1, 256, &value))
                    return 2;
                args.n_threads = (uint32_t) value;
                break;
            case 'h':
                s_usage (stdout);
                return 0;
            default:
                fprintf (stderr, "Try 'zllm worker --help'.\n");
                return 2;
        }
    }
    if (optind != argc - 1 || !args.scheduler_endpoint) {
        fprintf (stderr, "zllm worker: give one model file and --connect ENDPOINT\n"
                 "Try 'zllm worker --help'.\n");
        return 2;
    }
    args.model_path = argv [optind];
    if (kv_cache_fraction > 0
    &&  cli_memory_share ("--kv-cache-memory", kv_cache_fraction, 1, &args.kv_cache_bytes))
        return 2;

    supervisor_t *supervisor = supervisor_new ();
    if (!supervisor)
        return 1;
    char message [512];
    int exit_status = 0;
    if (supervisor_start (supervisor, "worker", worker_actor, &args, args.error, message,
                          sizeof message)) {
        fprintf (stderr, "zllm: %s\n", message);
        exit_status = 1;
    }
    else {
        const char *name = NULL;
        char *text = NULL;
        int signal_number = 0;
        while (true) {
            supervisor_event_t event = supervisor_wait (supervisor, -1, &name, &text,
                                                        &signal_number);
            zstr_free (&text);
            if (event == SUPERVISOR_SIGNAL) {
                zlog (ZLOG_INFO, "worker", 0, "%s: leaving", strsignal (signal_number));
                break;
            }
            if (event == SUPERVISOR_ACTOR_STOPPED) {
                fprintf (stderr, "zllm: %s\n", args.error [0] ? args.error : "worker stopped");
                exit_status = 1;
                break;
            }
        }
    }
    supervisor_destroy (&supervisor);
    return exit_status;
}
