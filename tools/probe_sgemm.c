/*  probe_sgemm — the float matrix product speed of OpenBLAS on this machine, the bound on
    prompt processing when the model sends its products to BLAS.

    It goes through the model's own path: kernels_sgemm (npu/kernels.h), which loads
    OpenBLAS at run time and keeps OpenBLAS itself on one thread, with the rows of the
    product split over a kernels_pool of N threads, as the model splits them. For each
    size S it times C = A B^T with A, B and C S x S (2 S^3 floating-point operations),
    once untimed and then R times, and prints the median GFLOP/s (and the lowest and
    highest).

        build/tools/probe_sgemm [--threads N] [--sizes 512,1024,2048] [--runs R]

    Without OpenBLAS (not installed, or ZLLM_BLAS=off) it says so and exits with 1.
*/
#include "probe_util.h"
#include "kernels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROBE_MAX_SIZES 16

//  One product, split by rows over the pool's threads.
typedef struct {
    size_t size;
    const float *a;
    const float *b;
    float *c;
    uint32_t n_tasks;
    int failed;                 //  set when kernels_sgemm refused
} product_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: probe_sgemm [--threads N] [--sizes LIST] [--runs R]\n"
        "\n"
        "Measure OpenBLAS sgemm GFLOP/s on square matrices, through the model's\n"
        "kernels_sgemm with the rows split over N threads; prints the median of R runs.\n"
        "\n"
        "options:\n"
        "  --threads N    threads (default: the online cores)\n"
        "  --sizes LIST   comma-separated matrix sizes (default 512,1024,2048)\n"
        "  --runs R       timed runs per size (default 5)\n"
        "  -h, --help     show this help\n");
}

//  Parse "512,1024,2048" into sizes; returns how many, or -1.
static int
s_parse_sizes (const char *text, long *sizes)
{
    char copy [256];
    if (strlen (text) >= sizeof (copy)) {
        fprintf (stderr, "probe_sgemm: --sizes: too long\n");
        return -1;
    }
    strcpy (copy, text);
    int n_sizes = 0;
    char *save = NULL;
    for (char *item = strtok_r (copy, ",", &save); item; item = strtok_r (NULL, ",", &save)) {
        if (n_sizes == PROBE_MAX_SIZES) {
            fprintf (stderr, "probe_sgemm: --sizes: at most %d sizes\n", PROBE_MAX_SIZES);
            return -1;
        }
        if (probe_parse_count ("probe_sgemm", "--sizes", item, 1, 16384, &sizes [n_sizes]))
            return -1;
        n_sizes++;
    }
    if (n_sizes == 0)
        fprintf (stderr, "probe_sgemm: --sizes: no size given\n");
    return n_sizes ? n_sizes : -1;
}

//  Pool task: rows [first, last) of the product.
static void
s_product_task (void *arg, uint32_t task, uint32_t thread)
{
    (void) thread;
    product_t *product = (product_t *) arg;
    size_t first = product->size * task / product->n_tasks;
    size_t last = product->size * (task + 1) / product->n_tasks;
    if (last == first)
        return;
    if (kernels_sgemm (last - first, product->size, product->size,
                       product->a + first * product->size, product->size,
                       product->b, product->size,
                       product->c + first * product->size, product->size))
        product->failed = 1;
}

static int
s_compare_doubles (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y ? 1 : 0;
}

//  Time one size: an untimed run, then `runs` timed ones; prints the line.
static int
s_measure (kernels_pool_t *pool, uint32_t n_threads, size_t size, long runs)
{
    size_t count = size * size;
    float *a = malloc (count * sizeof (float));
    float *b = malloc (count * sizeof (float));
    float *c = malloc (count * sizeof (float));
    double *seconds = calloc ((size_t) runs, sizeof (double));
    int status = 0;
    if (!a || !b || !c || !seconds) {
        fprintf (stderr, "probe_sgemm: cannot allocate %zu x %zu matrices\n", size, size);
        status = 1;
    }
    //  Values in [-1, 1) from a small linear congruential generator
    uint32_t state = 12345;
    for (size_t i = 0; status == 0 && i < count; i++) {
        state = state * 1664525u + 1013904223u;
        a [i] = (float) (state >> 8) / 8388608.0f - 1.0f;
        state = state * 1664525u + 1013904223u;
        b [i] = (float) (state >> 8) / 8388608.0f - 1.0f;
    }
    product_t product = { size, a, b, c, n_threads, 0 };
    for (long run = -1; run < runs && status == 0; run++) {
        double start = probe_now ();
        kernels_pool_run (pool, s_product_task, &product, n_threads);
        double elapsed = probe_now () - start;
        if (product.failed) {
            fprintf (stderr, "probe_sgemm: kernels_sgemm refused the product\n");
            status = 1;
        }
        if (run >= 0)
            seconds [run] = elapsed;
    }
    if (status == 0) {
        double flops = 2.0 * (double) size * (double) size * (double) size;
        qsort (seconds, (size_t) runs, sizeof (double), s_compare_doubles);
        double median = runs % 2 ? seconds [runs / 2]
                                 : (seconds [runs / 2 - 1] + seconds [runs / 2]) / 2;
        printf ("sgemm %5zu x %-5zu %7.1f GFLOP/s (median of %ld runs; %.1f to %.1f), "
                "threads %u\n", size, size, flops / median / 1e9, runs,
                flops / seconds [runs - 1] / 1e9, flops / seconds [0] / 1e9, n_threads);
        fflush (stdout);
    }
    free (a);
    free (b);
    free (c);
    free (seconds);
    return status;
}

int
main (int argc, char **argv)
{
    long n_threads = sysconf (_SC_NPROCESSORS_ONLN);
    long runs = 5;
    long sizes [PROBE_MAX_SIZES] = { 512, 1024, 2048 };
    int n_sizes = 3;
    if (n_threads < 1)
        n_threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *value = i + 1 < argc ? argv [i + 1] : "";
        if (strcmp (argv [i], "-h") == 0 || strcmp (argv [i], "--help") == 0) {
            s_usage (stdout);
            return 0;
        }
        else
        if (strcmp (argv [i], "--threads") == 0) {
            if (probe_parse_count ("probe_sgemm", "--threads", value, 1, 256, &n_threads))
                return 2;
            i++;
        }
        else
        if (strcmp (argv [i], "--sizes") == 0) {
            n_sizes = s_parse_sizes (value, sizes);
            if (n_sizes < 0)
                return 2;
            i++;
        }
        else
        if (strcmp (argv [i], "--runs") == 0) {
            if (probe_parse_count ("probe_sgemm", "--runs", value, 1, 1000, &runs))
                return 2;
            i++;
        }
        else {
            fprintf (stderr, "probe_sgemm: unknown argument '%s'\n", argv [i]);
            s_usage (stderr);
            return 2;
        }
    }

    kernels_init ();
    if (!kernels_blas_available ()) {
        fprintf (stderr, "probe_sgemm: OpenBLAS is not available (libopenblas.so.0 not "
                 "found, or ZLLM_BLAS=off): no sgemm to measure\n");
        return 1;
    }
    kernels_pool_t *pool = kernels_pool_new ((uint32_t) n_threads);
    if (!pool) {
        fprintf (stderr, "probe_sgemm: cannot start %ld threads\n", n_threads);
        return 1;
    }
    int status = 0;
    for (int i = 0; i < n_sizes && status == 0; i++)
        status = s_measure (pool, (uint32_t) n_threads, (size_t) sizes [i], runs);
    kernels_pool_destroy (&pool);
    return status;
}
