/*  kernels — the products of the forward pass: weight rows times activation rows, for
    every weight type the model reads, plus a small thread pool to split them.

    Weights stay in their stored type (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K). The
    activation row they are multiplied with is first put in the form llama.cpp's CPU
    backend gives it (its "vec_dot_type"), because that decides the numbers:

      weights           activation row                      product
      F32               F32                                 float
      F16               F32 rounded to F16 precision        float (each product exact)
      BF16              F32 rounded to BF16 precision       float (each product exact)
      Q8_0, Q4_0        Q8_0 blocks of 32                   integer per block, then float
      Q4_K, Q6_K        Q8_K blocks of 256                  integer per block, then float

    (F16 and BF16 activations are kept as floats holding the rounded values: the products
    are the same as with 16-bit storage, and a row of them is loaded without converting.)
    Q8_0 activations are quantized as llama.cpp's x86 build does (scale 127 / amax,
    nearest-even rounding); Q8_K as its reference quantizer does (scale -127 / max, with
    the sums of every 16 values kept in bsums).

    Every product has a plain reference version (kernels_set_level (KERNELS_SCALAR)),
    loops that say what the math is, and a fast AVX2 + FMA + F16C version chosen at run
    time when the CPU has it (the build needs no -march flag; the functions carry their
    own target attribute). The tests hold the fast version to the reference: integer
    paths exactly, float paths within rounding. The environment variable
    ZLLM_KERNELS=scalar forces the reference everywhere. There is no AVX-512 version yet:
    VNNI's vpdpbusd (maddubs and madd in one instruction, on 64 bytes) would pay for the
    integer products in a prompt, but the machines these tests run on have no AVX-512,
    and a kernel that no test runs is not one to ship.

    Products of many activation rows (a prompt) use the same per-row arithmetic as one
    row, so a prompt run at once gives the same numbers as token by token; the model
    may instead send float products of many rows to OpenBLAS (kernels_sgemm), whose sums
    are ordered differently (equal within float rounding).

    OpenBLAS is loaded at run time (dlopen) by kernels_init, not linked: its CPU kernels
    are chosen once, when the library loads, from OPENBLAS_CORETYPE, and on AVX-512 CPUs
    its SkylakeX kernels run sgemm about twice as fast as the Haswell ones it picks by
    itself; loading it ourselves lets us set that first. Its own thread count is set to
    1: the callers split the work over their own threads, so kernels and BLAS together
    never use more threads than asked. ZLLM_BLAS=off leaves it unloaded. Without
    OpenBLAS everything still runs on the kernels here.

    Attention over the F16 KV cache uses the F16 vector functions below, which round to
    F16 exactly where llama.cpp's flash attention does.

    Who owns what: callers own every buffer. All products are safe to call from many
    threads at once. kernels_set_level and kernels_set_blas are for tests and the
    command line: call them before work starts. kernels_init may be called early from
    main (it sets environment variables for OpenBLAS; doing that before other threads
    exist is safest); everything else calls it too, once.
*/
#ifndef ZLLM_KERNELS_H
#define ZLLM_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"
#include "quant.h"

typedef enum {
    KERNELS_SCALAR = 0,             //  the plain reference loops
    KERNELS_AVX2 = 1                //  AVX2 + FMA + F16C
} kernels_level_t;

//  ggml's Q8_K activation block: 256 values q with scale d (value = d * q), and the sum
//  of every 16 of them.
typedef struct {
    float d;
    int8_t qs [QUANT_K_BLOCK];
    int16_t bsums [QUANT_K_BLOCK / 16];
} kernels_block_q8_K_t;

//  --- Setup -------------------------------------------------------------------------------

//  Pick the level (the best the CPU has, or what ZLLM_KERNELS says) and load OpenBLAS.
//  Runs once; later calls return at once.
void
    kernels_init (void);

//  The level in use, the best this CPU supports, and a name for each ("scalar", "avx2").
kernels_level_t
    kernels_level (void);
kernels_level_t
    kernels_best_level (void);
const char *
    kernels_level_name (kernels_level_t level);

//  Use `level` from now on (a level the CPU lacks becomes the best it has).
void
    kernels_set_level (kernels_level_t level);

//  --- Activations -------------------------------------------------------------------------

//  True for the weight types the products handle.
bool
    kernels_supports (ggml_type_t weight_type);

//  Bytes of an activation row of n values prepared for weights of weight_type.
size_t
    kernels_activation_row_bytes (ggml_type_t weight_type, size_t n);

//  Prepare x[0..n-1] for weights of weight_type (see the table above) into out
//  (kernels_activation_row_bytes bytes). n must be a whole number of the weight type's
//  blocks.
void
    kernels_prepare_activation (ggml_type_t weight_type, const float *x, void *out, size_t n);

//  The two quantizers behind it (n a multiple of 32, and of 256).
void
    kernels_quantize_row_q8_0 (const float *x, quant_block_q8_0_t *out, size_t n);
void
    kernels_quantize_row_q8_K (const float *x, kernels_block_q8_K_t *out, size_t n);

//  --- Products ----------------------------------------------------------------------------

//  The dot product of one weight row of n values (stored as weight_type) with one
//  prepared activation row.
float
    kernels_dot (ggml_type_t weight_type, size_t n, const void *weights, const void *activation);

//  out[m * out_stride + r] = dot (weight row r, activation row m) for r < n_rows and
//  m < n_activations; weight rows are weight_stride bytes apart, activation rows
//  activation_stride bytes apart.
void
    kernels_matmul (ggml_type_t weight_type, size_t n,
                    const void *weights, size_t weight_stride, size_t n_rows,
                    const void *activations, size_t activation_stride, size_t n_activations,
                    float *out, size_t out_stride);

//  --- F16 vectors (attention over the F16 KV cache) ----------------------------------------

//  y[i] = F16 (y[i] + x[i] * v), the product and sum fused (one rounding to float, then
//  one to F16), as llama.cpp's SIMD ggml_vec_mad_f16 computes it.
void
    kernels_f16_mad (uint16_t *y, const uint16_t *x, float v, size_t n);

//  y[i] = F16 (y[i] * v).
void
    kernels_f16_scale (uint16_t *y, float v, size_t n);

//  Attention's weighted sum of values, in F16 as llama.cpp keeps it: for each position t
//  in order, first sum = F16 (sum * scales[t]) when scales[t] is not 1, then
//  kernels_f16_mad (sum, values + t * value_stride, weights[t], n). The same numbers as
//  those calls one by one; the fast version keeps the sum in registers.
void
    kernels_f16_weighted_sum (uint16_t *sum, const uint16_t *values, size_t value_stride,
                              const float *scales, const float *weights, size_t n_positions,
                              size_t n);

//  The weighted sums of n_sums heads that share one KV head's values (grouped-query
//  attention): sum s is n values at sums + s * n, its scales and weights are at
//  scales + s * weight_stride and weights + s * weight_stride. Each sum gets exactly
//  what kernels_f16_weighted_sum (sums + s * n, values, value_stride, scales + s *
//  weight_stride, weights + s * weight_stride, n_positions, n) gives it; the fast
//  version reads each value row and converts it from F16 once for up to four sums,
//  not once per sum.
void
    kernels_f16_weighted_sums (uint16_t *sums, size_t n_sums, const uint16_t *values,
                               size_t value_stride, const float *scales, const float *weights,
                               size_t weight_stride, size_t n_positions, size_t n);

//  y[i] = F16 (x[i]), rounded to nearest even.
void
    kernels_f32_to_f16 (const float *x, uint16_t *y, size_t n);

//  A row of n F32, F16 or BF16 values (x, 2-byte aligned) as floats, exactly.
void
    kernels_row_to_f32 (ggml_type_t type, const void *x, float *y, size_t n);

//  --- OpenBLAS ------------------------------------------------------------------------------

//  True when OpenBLAS was loaded and is enabled.
bool
    kernels_blas_available (void);

//  Tests and benchmarks: stop (or go back to) using OpenBLAS.
void
    kernels_set_blas (bool enabled);

//  c[i * ldc + j] = sum over l of a[i * lda + l] * b[j * ldb + l], for i < m, j < n:
//  C = A B^T with A m x k and B n x k, all row-major. Runs on the calling thread only.
//  Returns 0, or -1 (nothing written) when OpenBLAS is not available.
int
    kernels_sgemm (size_t m, size_t n, size_t k, const float *a, size_t lda,
                   const float *b, size_t ldb, float *c, size_t ldc);

//  --- Thread pool ---------------------------------------------------------------------------

typedef struct _kernels_pool_t kernels_pool_t;

//  A task: do piece `task` of the work in arg; `thread` (0 .. n_threads - 1) says which
//  thread runs it, for per-thread scratch memory.
typedef void (kernels_task_fn) (void *arg, uint32_t task, uint32_t thread);

//  A pool of n_threads threads in all: the caller of kernels_pool_run is thread 0, and
//  n_threads - 1 threads are started. Between runs they spin briefly, then sleep.
//  Returns NULL when n_threads is 0 or a thread cannot be started.
kernels_pool_t *
    kernels_pool_new (uint32_t n_threads);

void
    kernels_pool_destroy (kernels_pool_t **self_p);

uint32_t
    kernels_pool_threads (const kernels_pool_t *self);

//  Run fn (arg, task, thread) for every task in 0 .. n_tasks - 1, spread over the
//  threads (each takes the next task not yet taken); returns when all are done. One
//  run at a time: the pool belongs to one calling thread. A NULL pool runs every task
//  on the caller (thread 0).
void
    kernels_pool_run (kernels_pool_t *self, kernels_task_fn *fn, void *arg, uint32_t n_tasks);

#endif
