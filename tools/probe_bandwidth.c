/*  probe_bandwidth — how fast this machine reads memory, the bound on token generation
    (each generated token reads every weight once).

    It fills an array much larger than the caches (1 GiB by default), then sums it with
    N threads, each reading its own contiguous slice, several times over; a run's
    bandwidth is the bytes read over the wall time from starting the threads to the last
    one finishing. It prints the median of the runs (and the lowest and highest), in
    GB/s of 10^9 bytes.

    The sum runs on 8 independent 64-bit accumulators so that the loop is bound by
    loads, not by the adds' latency; the compiler may vectorize it. Each thread first
    writes its own slice (first touch), so the pages are mapped before any timing.

        build/tools/probe_bandwidth [--threads N] [--mib M] [--runs R]
*/
#include "probe_util.h"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint64_t *values;           //  this thread's slice
    size_t count;
    uint64_t sum;               //  what the thread read (kept so the reads stay)
} slice_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: probe_bandwidth [--threads N] [--mib M] [--runs R]\n"
        "\n"
        "Measure memory read bandwidth: N threads sum an array of M MiB, R times;\n"
        "prints the median GB/s.\n"
        "\n"
        "options:\n"
        "  --threads N   reading threads (default: the online cores)\n"
        "  --mib M       array size in MiB (default 1024)\n"
        "  --runs R      timed passes over the array (default 5)\n"
        "  -h, --help    show this help\n");
}

//  Thread body: write the slice (so its pages are this thread's, and mapped).
static void *
s_fill_slice (void *arg)
{
    slice_t *slice = (slice_t *) arg;
    for (size_t i = 0; i < slice->count; i++)
        slice->values [i] = i;
    return NULL;
}

//  Thread body: sum the slice with 8 accumulators.
static void *
s_sum_slice (void *arg)
{
    slice_t *slice = (slice_t *) arg;
    const uint64_t *values = slice->values;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    size_t i = 0;
    for (; i + 8 <= slice->count; i += 8) {
        s0 += values [i + 0];
        s1 += values [i + 1];
        s2 += values [i + 2];
        s3 += values [i + 3];
        s4 += values [i + 4];
        s5 += values [i + 5];
        s6 += values [i + 6];
        s7 += values [i + 7];
    }
    for (; i < slice->count; i++)
        s0 += values [i];
    slice->sum = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    return NULL;
}

//  Run body on every slice, one thread each; returns the wall time, or -1.
static double
s_run_threads (slice_t *slices, long n_threads, void *(*body) (void *))
{
    pthread_t *threads = calloc ((size_t) n_threads, sizeof (pthread_t));
    if (!threads)
        return -1;
    double start = probe_now ();
    long started = 0;
    for (; started < n_threads; started++)
        if (pthread_create (&threads [started], NULL, body, &slices [started]) != 0)
            break;
    for (long t = 0; t < started; t++)
        pthread_join (threads [t], NULL);
    double elapsed = probe_now () - start;
    free (threads);
    return started == n_threads ? elapsed : -1;
}

static int
s_compare_doubles (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y ? 1 : 0;
}

int
main (int argc, char **argv)
{
    long n_threads = sysconf (_SC_NPROCESSORS_ONLN);
    long mib = 1024, runs = 5;
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
            if (probe_parse_count ("probe_bandwidth", "--threads",
                                   value, 1, 1024, &n_threads))
                return 2;
            i++;
        }
        else
        if (strcmp (argv [i], "--mib") == 0) {
            if (probe_parse_count ("probe_bandwidth", "--mib", value, 1, 1 << 20, &mib))
                return 2;
            i++;
        }
        else
        if (strcmp (argv [i], "--runs") == 0) {
            if (probe_parse_count ("probe_bandwidth", "--runs", value, 1, 1000, &runs))
                return 2;
            i++;
        }
        else {
            fprintf (stderr, "probe_bandwidth: unknown argument '%s'\n", argv [i]);
            s_usage (stderr);
            return 2;
        }
    }

    size_t count = (size_t) mib * 1024 * 1024 / sizeof (uint64_t);
    uint64_t *values = malloc (count * sizeof (uint64_t));
    slice_t *slices = calloc ((size_t) n_threads, sizeof (slice_t));
    double *seconds = calloc ((size_t) runs, sizeof (double));
    if (!values || !slices || !seconds) {
        fprintf (stderr, "probe_bandwidth: cannot allocate %ld MiB\n", mib);
        free (values);
        free (slices);
        free (seconds);
        return 1;
    }
    //  Contiguous slices, as equal as whole elements allow
    for (long t = 0; t < n_threads; t++) {
        size_t first = count * (size_t) t / (size_t) n_threads;
        size_t last = count * (size_t) (t + 1) / (size_t) n_threads;
        slices [t].values = values + first;
        slices [t].count = last - first;
    }
    int status = 0;
    if (s_run_threads (slices, n_threads, s_fill_slice) < 0) {
        fprintf (stderr, "probe_bandwidth: cannot start %ld threads\n", n_threads);
        status = 1;
    }
    //  One untimed pass, then the timed ones
    uint64_t expected = 0;
    for (long run = -1; run < runs && status == 0; run++) {
        double elapsed = s_run_threads (slices, n_threads, s_sum_slice);
        if (elapsed < 0) {
            fprintf (stderr, "probe_bandwidth: cannot start %ld threads\n", n_threads);
            status = 1;
            break;
        }
        uint64_t sum = 0;
        for (long t = 0; t < n_threads; t++)
            sum += slices [t].sum;
        if (run < 0)
            expected = sum;
        else {
            if (sum != expected) {
                fprintf (stderr, "probe_bandwidth: the sums differ between runs\n");
                status = 1;
            }
            seconds [run] = elapsed;
        }
    }
    if (status == 0) {
        double bytes = (double) count * sizeof (uint64_t);
        qsort (seconds, (size_t) runs, sizeof (double), s_compare_doubles);
        double median = runs % 2 ? seconds [runs / 2]
                                 : (seconds [runs / 2 - 1] + seconds [runs / 2]) / 2;
        printf ("read bandwidth: %.1f GB/s (median of %ld runs; %.1f to %.1f), "
                "threads %ld, %ld MiB\n", bytes / median / 1e9, runs,
                bytes / seconds [runs - 1] / 1e9, bytes / seconds [0] / 1e9, n_threads, mib);
    }
    free (values);
    free (slices);
    free (seconds);
    return status;
}
