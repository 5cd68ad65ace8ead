/*  metrics — the counters and histograms behind GET /metrics. See metrics.h.

    A histogram keeps one count per bucket (not cumulative) plus the +Inf bucket, the
    sum and the count; the text makes the buckets cumulative, as Prometheus wants.
*/
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  vLLM's buckets (vllm/v1/metrics/loggers.py), so that the same dashboards work. Its
//  request_queue_time_seconds uses the latency buckets, as e2e_request_latency does.
static const double s_ttft_buckets [] = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0
};
static const double s_itl_buckets [] = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0
};
static const double s_latency_buckets [] = {
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0
};

#define COUNT_OF(array) (sizeof (array) / sizeof (array) [0])
//  The most buckets any histogram above has, plus +Inf.
#define MAX_BUCKETS 32

typedef struct {
    const double *bounds;           //  upper bounds, increasing
    size_t n_bounds;
    uint64_t counts [MAX_BUCKETS];  //  counts [n_bounds] is the +Inf bucket
    double sum;
    uint64_t count;
} histogram_t;

//  The finish reasons request_success_total is labelled with, in the order written.
static const char *s_finish_reasons [] = { "stop", "length", "tool_calls" };
#define N_FINISH_REASONS COUNT_OF (s_finish_reasons)

struct _metrics_t {
    char *model_name;
    uint64_t prompt_tokens;
    uint64_t generation_tokens;
    uint64_t successes [N_FINISH_REASONS];
    histogram_t ttft;
    histogram_t itl;
    histogram_t e2e;
    histogram_t queue;              //  time in the scheduler's queue
};


//  --------------------------------------------------------------------------
//  Histograms

static void
s_histogram_init (histogram_t *histogram, const double *bounds, size_t n_bounds)
{
    memset (histogram, 0, sizeof *histogram);
    histogram->bounds = bounds;
    histogram->n_bounds = n_bounds;
}

//  count samples of value: Prometheus' buckets are "less than or equal".
static void
s_histogram_observe (histogram_t *histogram, double value, uint64_t count)
{
    if (value < 0)
        value = 0;                  //  a clock step backwards is no negative latency
    size_t bucket = 0;
    while (bucket < histogram->n_bounds && value > histogram->bounds [bucket])
        bucket++;
    histogram->counts [bucket] += count;
    histogram->sum += value * (double) count;
    histogram->count += count;
}


//  --------------------------------------------------------------------------
//  Construction

metrics_t *
metrics_new (const char *model_name)
{
    metrics_t *self = (metrics_t *) calloc (1, sizeof (metrics_t));
    if (!self)
        return NULL;
    self->model_name = strdup (model_name? model_name: "");
    if (!self->model_name) {
        free (self);
        return NULL;
    }
    s_histogram_init (&self->ttft, s_ttft_buckets, COUNT_OF (s_ttft_buckets));
    s_histogram_init (&self->itl, s_itl_buckets, COUNT_OF (s_itl_buckets));
    s_histogram_init (&self->e2e, s_latency_buckets, COUNT_OF (s_latency_buckets));
    s_histogram_init (&self->queue, s_latency_buckets, COUNT_OF (s_latency_buckets));
    return self;
}

void
metrics_destroy (metrics_t **self_p)
{
    metrics_t *self = *self_p;
    if (!self)
        return;
    free (self->model_name);
    free (self);
    *self_p = NULL;
}


//  --------------------------------------------------------------------------
//  Observations

void
metrics_time_to_first_token (metrics_t *self, double seconds)
{
    s_histogram_observe (&self->ttft, seconds, 1);
}

void
metrics_queue_time (metrics_t *self, double seconds)
{
    s_histogram_observe (&self->queue, seconds, 1);
}

void
metrics_inter_token_latency (metrics_t *self, double seconds, uint32_t count)
{
    if (count == 0)
        return;
    s_histogram_observe (&self->itl, seconds / count, count);
}

void
metrics_request_finished (metrics_t *self, const char *finish_reason,
                          uint32_t prompt_tokens, uint32_t completion_tokens,
                          double seconds)
{
    self->prompt_tokens += prompt_tokens;
    self->generation_tokens += completion_tokens;
    for (size_t index = 0; index < N_FINISH_REASONS; index++) {
        if (finish_reason && strcmp (finish_reason, s_finish_reasons [index]) == 0)
            self->successes [index]++;
    }
    s_histogram_observe (&self->e2e, seconds, 1);
}


//  --------------------------------------------------------------------------
//  The text

//  A growing heap string; failed is set once memory ran out (then nothing more is
//  written and the caller gets NULL).
typedef struct {
    char *data;
    size_t size;
    size_t limit;
    bool failed;
} text_t;

static void
s_text_printf (text_t *text, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_text_printf (text_t *text, const char *format, ...)
{
    if (text->failed)
        return;
    while (true) {
        size_t room = text->limit - text->size;
        va_list args;
        va_start (args, format);
        int written = vsnprintf (text->data? text->data + text->size: NULL, room, format, args);
        va_end (args);
        if (written < 0) {
            text->failed = true;
            return;
        }
        if ((size_t) written < room) {
            text->size += (size_t) written;
            return;
        }
        size_t limit = text->limit? text->limit * 2: 4096;
        while (limit < text->size + (size_t) written + 1)
            limit *= 2;
        char *grown = (char *) realloc (text->data, limit);
        if (!grown) {
            text->failed = true;
            return;
        }
        text->data = grown;
        text->limit = limit;
    }
}

//  A number as Python's prometheus_client writes it (repr of a float): the fewest
//  significant digits that read back as the same double; plain decimals when the
//  exponent is from -4 to 15, with ".0" on whole numbers ("3.0", "2560.0", "0.025"),
//  else scientific ("1e+16", "1.5e-05"); and "+Inf".
static void
s_format_number (double value, char buffer [32])
{
    if (value > 1.7976931348623157e308) {
        snprintf (buffer, 32, "+Inf");
        return;
    }
    if (value != value) {
        snprintf (buffer, 32, "NaN");
        return;
    }
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf (buffer, 32, "%.*e", digits - 1, value);
        if (strtod (buffer, NULL) == value)
            break;
    }
    snprintf (buffer, 32, "%.*e", digits - 1, value);
    int exponent = atoi (strchr (buffer, 'e') + 1);
    if (exponent < -4 || exponent >= 16)
        return;                     //  C's %e writes it as Python does
    int decimals = digits - 1 - exponent;
    snprintf (buffer, 32, "%.*f", decimals > 0? decimals: 0, value);
    if (!strchr (buffer, '.'))
        strcat (buffer, ".0");
}

//  The model_name label's value: backslash, double quote and newline escaped.
static void
s_text_label_value (text_t *text, const char *value)
{
    for (const char *at = value; *at; at++) {
        if (*at == '\\')
            s_text_printf (text, "\\\\");
        else
        if (*at == '"')
            s_text_printf (text, "\\\"");
        else
        if (*at == '\n')
            s_text_printf (text, "\\n");
        else
            s_text_printf (text, "%c", *at);
    }
}

static void
s_text_header (text_t *text, const char *name, const char *type, const char *help)
{
    s_text_printf (text, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

//  One sample: name{model_name="..."<extra>} value. extra is "" or ",label=\"value\"".
static void
s_text_sample (text_t *text, metrics_t *self, const char *name, const char *extra,
               double value)
{
    char number [32];
    s_format_number (value, number);
    s_text_printf (text, "%s{model_name=\"", name);
    s_text_label_value (text, self->model_name);
    s_text_printf (text, "\"%s} %s\n", extra, number);
}

static void
s_text_gauge (text_t *text, metrics_t *self, const char *name, const char *help,
              double value)
{
    s_text_header (text, name, "gauge", help);
    s_text_sample (text, self, name, "", value);
}

static void
s_text_counter (text_t *text, metrics_t *self, const char *name, const char *help,
                double value)
{
    s_text_header (text, name, "counter", help);
    s_text_sample (text, self, name, "", value);
}

static void
s_text_histogram (text_t *text, metrics_t *self, const char *name, const char *help,
                  const histogram_t *histogram)
{
    s_text_header (text, name, "histogram", help);
    char sample_name [128];
    snprintf (sample_name, sizeof sample_name, "%s_bucket", name);
    uint64_t cumulative = 0;
    for (size_t bucket = 0; bucket <= histogram->n_bounds; bucket++) {
        cumulative += histogram->counts [bucket];
        char bound [32], label [64];
        if (bucket < histogram->n_bounds)
            s_format_number (histogram->bounds [bucket], bound);
        else
            snprintf (bound, sizeof bound, "+Inf");
        snprintf (label, sizeof label, ",le=\"%s\"", bound);
        s_text_sample (text, self, sample_name, label, (double) cumulative);
    }
    snprintf (sample_name, sizeof sample_name, "%s_sum", name);
    s_text_sample (text, self, sample_name, "", histogram->sum);
    snprintf (sample_name, sizeof sample_name, "%s_count", name);
    s_text_sample (text, self, sample_name, "", (double) histogram->count);
}

char *
metrics_text (metrics_t *self, const metrics_status_t *status)
{
    text_t text = { NULL, 0, 0, false };
    s_text_gauge (&text, self, "zllm:num_requests_running",
                  "Number of requests in model execution batches.",
                  (double) status->running);
    s_text_gauge (&text, self, "zllm:num_requests_waiting",
                  "Number of requests waiting to be processed.",
                  (double) status->waiting);
    double usage = status->kv_blocks_total > 0
                 ? (double) status->kv_blocks_used / (double) status->kv_blocks_total: 0.0;
    s_text_gauge (&text, self, "zllm:kv_cache_usage_perc",
                  "KV-cache usage. 1 means 100 percent usage.", usage);
    s_text_counter (&text, self, "zllm:prefix_cache_queries_total",
                    "Prefix cache queries, in KV blocks.", (double) status->prefix_queries);
    s_text_counter (&text, self, "zllm:prefix_cache_hits_total",
                    "Prefix cache hits, in KV blocks.", (double) status->prefix_hits);
    s_text_counter (&text, self, "zllm:num_preemptions_total",
                    "Cumulative number of preemption from the engine.",
                    (double) status->preemptions);
    s_text_counter (&text, self, "zllm:prompt_tokens_total",
                    "Number of prefill tokens processed.", (double) self->prompt_tokens);
    s_text_counter (&text, self, "zllm:generation_tokens_total",
                    "Number of generation tokens processed.",
                    (double) self->generation_tokens);
    s_text_header (&text, "zllm:request_success_total", "counter",
                   "Count of successfully processed requests.");
    for (size_t index = 0; index < N_FINISH_REASONS; index++) {
        char label [64];
        snprintf (label, sizeof label, ",finished_reason=\"%s\"", s_finish_reasons [index]);
        s_text_sample (&text, self, "zllm:request_success_total", label,
                       (double) self->successes [index]);
    }
    s_text_histogram (&text, self, "zllm:time_to_first_token_seconds",
                      "Histogram of time to first token in seconds.", &self->ttft);
    s_text_histogram (&text, self, "zllm:inter_token_latency_seconds",
                      "Histogram of inter-token latency in seconds.", &self->itl);
    s_text_histogram (&text, self, "zllm:e2e_request_latency_seconds",
                      "Histogram of e2e request latency in seconds.", &self->e2e);
    s_text_histogram (&text, self, "zllm:request_queue_time_seconds",
                      "Histogram of time spent in WAITING phase for request.",
                      &self->queue);
    if (text.failed) {
        free (text.data);
        return NULL;
    }
    return text.data;
}
