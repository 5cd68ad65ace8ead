/*  kernels — the products of the forward pass, and a thread pool. See kernels.h.

    The file goes: setup (level, OpenBLAS), activation preparation, the reference
    products, the AVX2 products, dispatch and matmul, F16 vectors, the thread pool.

    Every product works on "rows": one weight row against up to four activation rows at
    once (s_*_rows functions, `count` 1..4). Loading and unpacking a weight block once
    for four activation rows is what makes a prompt faster than token by token; each
    (weight row, activation row) pair is still summed in exactly the order it would be
    alone, so the result does not depend on how many rows went together.

    kernels_matmul goes further for the weights a batch of sequences decodes with. Q8_0
    and Q4_0 (with two or more activation rows): two weight rows against four activation
    rows per step, every block scale made a float once per call (not once per pair), and
    the next tile of weight rows fetched from memory while one is computed. F32, F16 and
    BF16 (n a multiple of 8; attention's keys): eight weight rows' sums added up across
    their lanes together (s_hsum8_avx2) instead of one by one. Both keep each pair's
    operations and their order, so kernels_matmul still gives kernels_dot's numbers.

    How the AVX2 integer products work: _mm256_maddubs_epi16 multiplies unsigned bytes by
    signed bytes and adds neighbouring pairs into 16-bit sums; _mm256_madd_epi16 then
    multiplies 16-bit values and adds pairs into 32-bit sums. Q8_0 weights, and Q4_0
    weights less 8, are signed, so the weight's sign is moved onto the activation first
    (|w| * (a * sign w)); Q4_K and Q6_K values are unsigned, and their offsets (the mins
    of Q4_K, the -32 of Q6_K) are applied per sub-block from the activation's bsums. No
    16-bit sum can overflow: 15 * 127 * 2, 63 * 127 * 2 and 128 * 127 * 2 all fit.

    The float sums of a row run in two accumulators (even and odd steps) so that one
    multiply-add need not wait for the one before; they are added at the end.
*/
#include "kernels.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define KERNELS_HAVE_X86 1
#endif

_Static_assert (sizeof (kernels_block_q8_K_t) == 292, "Q8_K block is 292 bytes, as in ggml");

//  kernels_matmul's blocking: a tile of weight rows of about this many bytes stays in
//  the first-level cache while a chunk of activation rows of about this many bytes
//  (in the second-level cache) passes it, up to KERNELS_MAX_COUNT rows per product call.
#define KERNELS_TILE_BYTES 16384
#define KERNELS_CHUNK_BYTES 262144
#define KERNELS_MAX_COUNT 4

//  The Q8_0 and Q4_0 matmul: weight rows per step, and room for the block scales (as
//  floats) of a chunk of activation rows and of a tile of weight rows, for rows of up
//  to KERNELS_SCALES_W blocks (longer rows take the one-row path).
#define KERNELS_Q8_0_WEIGHT_ROWS 2
#define KERNELS_SCALES_A (KERNELS_CHUNK_BYTES / sizeof (quant_block_q8_0_t))
#define KERNELS_SCALES_W 1024

//  --- Setup -------------------------------------------------------------------------------

static pthread_once_t s_init_once = PTHREAD_ONCE_INIT;
static kernels_level_t s_best_level = KERNELS_SCALAR;
static atomic_int s_level = KERNELS_SCALAR;

//  OpenBLAS's cblas_sgemm, as loaded: the enums are ints (CblasRowMajor 101,
//  CblasNoTrans 111, CblasTrans 112) and blasint is int in the 32-bit-index build.
typedef void (s_sgemm_fn) (int order, int trans_a, int trans_b, int m, int n, int k,
                           float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc);
typedef void (s_set_num_threads_fn) (int n);
static s_sgemm_fn *s_sgemm = NULL;
static atomic_bool s_blas_enabled = false;

//  AVX2 and FMA as the compiler's runtime reports them (which checks that the OS saves
//  the AVX registers too); F16C from CPUID leaf 1 (not every compiler's
//  __builtin_cpu_supports knows it).
static bool
s_cpu_has_avx2 (void)
{
#if defined(KERNELS_HAVE_X86)
    __builtin_cpu_init ();
    unsigned int eax, ebx, ecx, edx;
    bool f16c = __get_cpuid (1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    return __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma") && f16c;
#else
    return false;
#endif
}

//  What OpenBLAS's SkylakeX kernels need.
static bool
s_cpu_has_avx512 (void)
{
#if defined(KERNELS_HAVE_X86)
    __builtin_cpu_init ();
    return __builtin_cpu_supports ("avx512f") && __builtin_cpu_supports ("avx512bw")
        && __builtin_cpu_supports ("avx512vl") && __builtin_cpu_supports ("avx512dq")
        && __builtin_cpu_supports ("avx512cd");
#else
    return false;
#endif
}

//  Load OpenBLAS, telling it first which kernels to use and to start no threads of its
//  own. Both settings are read only while the library loads, so a value the user set
//  is kept.
static void
s_load_blas (void)
{
    const char *setting = getenv ("ZLLM_BLAS");
    if (setting && (strcmp (setting, "off") == 0 || strcmp (setting, "0") == 0))
        return;
    if (!getenv ("OPENBLAS_CORETYPE") && s_cpu_has_avx512 ())
        setenv ("OPENBLAS_CORETYPE", "SkylakeX", 0);
    if (!getenv ("OPENBLAS_NUM_THREADS"))
        setenv ("OPENBLAS_NUM_THREADS", "1", 0);
    void *library = dlopen ("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!library)
        library = dlopen ("libopenblas.so", RTLD_NOW | RTLD_LOCAL);
    if (!library)
        return;                         //  kept loaded for the life of the process
    s_sgemm_fn *sgemm = (s_sgemm_fn *) dlsym (library, "cblas_sgemm");
    s_set_num_threads_fn *set_num_threads =
        (s_set_num_threads_fn *) dlsym (library, "openblas_set_num_threads");
    if (!sgemm)
        return;
    if (set_num_threads)
        set_num_threads (1);
    s_sgemm = sgemm;
    atomic_store (&s_blas_enabled, true);
}

static void
s_init (void)
{
    s_best_level = s_cpu_has_avx2 ()? KERNELS_AVX2: KERNELS_SCALAR;
    kernels_level_t level = s_best_level;
    const char *setting = getenv ("ZLLM_KERNELS");
    if (setting && strcmp (setting, "scalar") == 0)
        level = KERNELS_SCALAR;
    atomic_store (&s_level, (int) level);
    s_load_blas ();
}

void
kernels_init (void)
{
    pthread_once (&s_init_once, s_init);
}

kernels_level_t
kernels_level (void)
{
    kernels_init ();
    return (kernels_level_t) atomic_load (&s_level);
}

kernels_level_t
kernels_best_level (void)
{
    kernels_init ();
    return s_best_level;
}

const char *
kernels_level_name (kernels_level_t level)
{
    return level == KERNELS_AVX2? "avx2": "scalar";
}

void
kernels_set_level (kernels_level_t level)
{
    kernels_init ();
    if (level > s_best_level)
        level = s_best_level;
    atomic_store (&s_level, (int) level);
}

//  --- Activations -------------------------------------------------------------------------

bool
kernels_supports (ggml_type_t weight_type)
{
    switch (weight_type) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K:
            return true;
        default:
            return false;
    }
}

size_t
kernels_activation_row_bytes (ggml_type_t weight_type, size_t n)
{
    switch (weight_type) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
            return n * sizeof (float);
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0:
            return n / QUANT_32_BLOCK * sizeof (quant_block_q8_0_t);
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K:
            return n / QUANT_K_BLOCK * sizeof (kernels_block_q8_K_t);
        default:
            return 0;
    }
}

//  Nearest integer, ties to even, for |value| < 2^22: adding 1.5 * 2^23 puts the
//  integer in the low bits of the float's mantissa, rounded in the default rounding
//  mode. It is ggml's nearest_int, and what _mm256_round_ps (_MM_ROUND_NEAREST) gives.
static int
s_nearest_int (float value)
{
    float shifted = value + 12582912.0f;
    int32_t bits;
    memcpy (&bits, &shifted, sizeof bits);
    return (bits & 0x007FFFFF) - 0x00400000;
}

//  As llama.cpp's x86 quantize_row_q8_0: d = amax / 127 stored as F16, and each value
//  multiplied by 127 / amax (not divided by d) and rounded to nearest even.
static void
s_quantize_row_q8_0_reference (const float *x, quant_block_q8_0_t *out, size_t n)
{
    for (size_t b = 0; b < n / QUANT_32_BLOCK; b++) {
        const float *values = x + b * QUANT_32_BLOCK;
        float amax = 0;
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            if (fabsf (values [i]) > amax)
                amax = fabsf (values [i]);
        float inverse = amax != 0.0f? 127.0f / amax: 0.0f;
        out [b].d = quant_f32_to_f16 (amax / 127.0f);
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            out [b].qs [i] = (int8_t) s_nearest_int (values [i] * inverse);
    }
}

#if defined(KERNELS_HAVE_X86)
#define AVX2_TARGET __attribute__ ((target ("avx2,fma,f16c")))

//  The same, eight values at a time: the largest magnitude by max over |x| (the sign
//  bit cleared), then x * (127 / amax) rounded to nearest even (_mm256_round_ps) and
//  packed to bytes. The packs work within 128-bit lanes, so a last permutation puts
//  the 32 bytes back in order.
static AVX2_TARGET void
s_quantize_row_q8_0_avx2 (const float *x, quant_block_q8_0_t *out, size_t n)
{
    const __m256 sign_bit = _mm256_set1_ps (-0.0f);
    const __m256i order = _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t b = 0; b < n / QUANT_32_BLOCK; b++) {
        const float *values = x + b * QUANT_32_BLOCK;
        __m256 v [4];
        __m256 amax8 = _mm256_setzero_ps ();
        for (int j = 0; j < 4; j++) {
            v [j] = _mm256_loadu_ps (values + 8 * j);
            amax8 = _mm256_max_ps (amax8, _mm256_andnot_ps (sign_bit, v [j]));
        }
        __m128 amax4 = _mm_max_ps (_mm256_castps256_ps128 (amax8),
                                   _mm256_extractf128_ps (amax8, 1));
        amax4 = _mm_max_ps (amax4, _mm_movehl_ps (amax4, amax4));
        amax4 = _mm_max_ss (amax4, _mm_movehdup_ps (amax4));
        float amax = _mm_cvtss_f32 (amax4);
        float inverse = amax != 0.0f? 127.0f / amax: 0.0f;
        out [b].d = quant_f32_to_f16 (amax / 127.0f);
        __m256 scale = _mm256_set1_ps (inverse);
        __m256i q [4];
        for (int j = 0; j < 4; j++)
            q [j] = _mm256_cvtps_epi32 (_mm256_round_ps (_mm256_mul_ps (v [j], scale),
                                                         _MM_FROUND_TO_NEAREST_INT
                                                         | _MM_FROUND_NO_EXC));
        __m256i q16_low = _mm256_packs_epi32 (q [0], q [1]);
        __m256i q16_high = _mm256_packs_epi32 (q [2], q [3]);
        __m256i q8 = _mm256_packs_epi16 (q16_low, q16_high);
        _mm256_storeu_si256 ((__m256i *) out [b].qs, _mm256_permutevar8x32_epi32 (q8, order));
    }
}
#endif

void
kernels_quantize_row_q8_0 (const float *x, quant_block_q8_0_t *out, size_t n)
{
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2) {
        s_quantize_row_q8_0_avx2 (x, out, n);
        return;
    }
#endif
    s_quantize_row_q8_0_reference (x, out, n);
}

//  As ggml's quantize_row_q8_K_ref (which its x86 build uses): the value of largest
//  magnitude, with its sign, maps to -127; d = 1 / scale is kept as a float.
void
kernels_quantize_row_q8_K (const float *x, kernels_block_q8_K_t *out, size_t n)
{
    for (size_t b = 0; b < n / QUANT_K_BLOCK; b++) {
        const float *values = x + b * QUANT_K_BLOCK;
        kernels_block_q8_K_t *block = &out [b];
        float amax = 0, extreme = 0;
        for (int i = 0; i < QUANT_K_BLOCK; i++)
            if (fabsf (values [i]) > amax) {
                amax = fabsf (values [i]);
                extreme = values [i];
            }
        if (amax == 0) {
            memset (block, 0, sizeof *block);
            continue;
        }
        float scale = -127.0f / extreme;
        for (int i = 0; i < QUANT_K_BLOCK; i++) {
            int q = s_nearest_int (scale * values [i]);
            block->qs [i] = (int8_t) (q < 127? q: 127);
        }
        for (int j = 0; j < QUANT_K_BLOCK / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++)
                sum += block->qs [16 * j + i];
            block->bsums [j] = (int16_t) sum;
        }
        block->d = 1 / scale;
    }
}

#if defined(KERNELS_HAVE_X86)
//  x rounded to F16 and back, 8 at a time (F16C rounds to nearest even, as
//  quant_f32_to_f16 does).
static AVX2_TARGET void
s_round_f16_avx2 (const float *x, float *out, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i half = _mm256_cvtps_ph (_mm256_loadu_ps (x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps (out + i, _mm256_cvtph_ps (half));
    }
    for (; i < n; i++)
        out [i] = quant_f16_to_f32 (quant_f32_to_f16 (x [i]));
}
#endif

void
kernels_prepare_activation (ggml_type_t weight_type, const float *x, void *out, size_t n)
{
    float *values = out;
    switch (weight_type) {
        case GGML_TYPE_F32:
            memcpy (values, x, n * sizeof (float));
            break;
        case GGML_TYPE_F16:
#if defined(KERNELS_HAVE_X86)
            if (kernels_level () == KERNELS_AVX2) {
                s_round_f16_avx2 (x, values, n);
                break;
            }
#endif
            for (size_t i = 0; i < n; i++)
                values [i] = quant_f16_to_f32 (quant_f32_to_f16 (x [i]));
            break;
        case GGML_TYPE_BF16:
            for (size_t i = 0; i < n; i++)
                values [i] = quant_bf16_to_f32 (quant_f32_to_bf16 (x [i]));
            break;
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0:
            kernels_quantize_row_q8_0 (x, out, n);
            break;
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K:
            kernels_quantize_row_q8_K (x, out, n);
            break;
        default:
            break;
    }
}

//  --- Block helpers ---------------------------------------------------------------------

//  The 6-bit scales and mins of a Q4_K block's 8 sub-blocks of 32, from the 12 packed
//  bytes: sub-blocks 0..3 keep theirs in the low 6 bits of bytes j (scale) and j + 4
//  (min); sub-blocks 4..7 keep their low 4 bits in the nibbles of byte j + 4 and their
//  top 2 bits in the top bits of bytes j - 4 (scale) and j (min).
static void
s_q4_K_scales_mins (const uint8_t *packed, uint8_t *scales, uint8_t *mins)
{
    for (int j = 0; j < 4; j++) {
        scales [j] = packed [j] & 63;
        mins [j] = packed [j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        scales [j] = (uint8_t) ((packed [j + 4] & 0x0F) | ((packed [j - 4] >> 6) << 4));
        mins [j] = (uint8_t) ((packed [j + 4] >> 4) | ((packed [j] >> 6) << 4));
    }
}

//  Element i (0..255) of a Q4_K block, 0..15: the 64 elements of sub-blocks 2k and
//  2k + 1 share bytes qs[32k .. 32k + 31], low nibbles first.
static int
s_q4_K_value (const quant_block_q4_K_t *block, int i)
{
    int group = i / 64, within = i % 64;
    uint8_t byte = block->qs [32 * group + within % 32];
    return within < 32? (byte & 0x0F): (byte >> 4);
}

//  Element i (0..255) of a Q6_K block, 0..63 (stored with +32): see quant.h.
static int
s_q6_K_value (const quant_block_q6_K_t *block, int i)
{
    int half = i / 128, e = i % 128, quarter = e / 32, l = e % 32;
    uint8_t low_byte = block->ql [64 * half + l + 32 * (quarter % 2)];
    int low = quarter < 2? (low_byte & 0x0F): (low_byte >> 4);
    int high = (block->qh [32 * half + l] >> (2 * quarter)) & 3;
    return low | (high << 4);
}

//  --- Reference products ---------------------------------------------------------------
//
//  One weight row against one activation row, in plain loops. Float products are summed
//  in double (closer to the exact sum than the SIMD float lanes, which the tests allow
//  for); integer products are exact per block, then scaled.

static float
s_dot_f32_reference (size_t n, const void *weights, const void *activation)
{
    const float *w = weights;
    const float *a = activation;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double) w [i] * a [i];
    return (float) sum;
}

static float
s_dot_f16_reference (size_t n, const void *weights, const void *activation)
{
    const uint16_t *w = weights;
    const float *a = activation;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double) (quant_f16_to_f32 (w [i]) * a [i]);      //  exact in float
    return (float) sum;
}

static float
s_dot_bf16_reference (size_t n, const void *weights, const void *activation)
{
    const uint16_t *w = weights;
    const float *a = activation;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double) (quant_bf16_to_f32 (w [i]) * a [i]);     //  exact in float
    return (float) sum;
}

static float
s_dot_q8_0_reference (size_t n, const void *weights, const void *activation)
{
    const quant_block_q8_0_t *w = weights;
    const quant_block_q8_0_t *a = activation;
    double sum = 0;
    for (size_t b = 0; b < n / QUANT_32_BLOCK; b++) {
        int32_t products = 0;
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            products += w [b].qs [i] * a [b].qs [i];
        float d = quant_f16_to_f32 (w [b].d) * quant_f16_to_f32 (a [b].d);
        sum += (double) d * products;
    }
    return (float) sum;
}

static float
s_dot_q4_0_reference (size_t n, const void *weights, const void *activation)
{
    const quant_block_q4_0_t *w = weights;
    const quant_block_q8_0_t *a = activation;
    double sum = 0;
    for (size_t b = 0; b < n / QUANT_32_BLOCK; b++) {
        int32_t products = 0;
        for (int j = 0; j < QUANT_32_BLOCK / 2; j++) {
            products += ((w [b].qs [j] & 0x0F) - 8) * a [b].qs [j];
            products += ((w [b].qs [j] >> 4) - 8) * a [b].qs [j + 16];
        }
        float d = quant_f16_to_f32 (w [b].d) * quant_f16_to_f32 (a [b].d);
        sum += (double) d * products;
    }
    return (float) sum;
}

//  Each sub-block j contributes d * scale_j * sum (q * a) - dmin * min_j * sum (a).
static float
s_dot_q4_K_reference (size_t n, const void *weights, const void *activation)
{
    const quant_block_q4_K_t *w = weights;
    const kernels_block_q8_K_t *a = activation;
    double sum = 0;
    for (size_t b = 0; b < n / QUANT_K_BLOCK; b++) {
        uint8_t scales [8], mins [8];
        s_q4_K_scales_mins (w [b].scales, scales, mins);
        int32_t scaled = 0, offset = 0;
        for (int j = 0; j < 8; j++) {
            int32_t products = 0, values = 0;
            for (int l = 0; l < 32; l++) {
                int i = 32 * j + l;
                products += s_q4_K_value (&w [b], i) * a [b].qs [i];
                values += a [b].qs [i];
            }
            scaled += scales [j] * products;
            offset += mins [j] * values;
        }
        float d = quant_f16_to_f32 (w [b].d) * a [b].d;
        float dmin = quant_f16_to_f32 (w [b].dmin) * a [b].d;
        sum += (double) d * scaled - (double) dmin * offset;
    }
    return (float) sum;
}

//  Each sub-block of 16 contributes d * scale * sum ((q - 32) * a).
static float
s_dot_q6_K_reference (size_t n, const void *weights, const void *activation)
{
    const quant_block_q6_K_t *w = weights;
    const kernels_block_q8_K_t *a = activation;
    double sum = 0;
    for (size_t b = 0; b < n / QUANT_K_BLOCK; b++) {
        int32_t scaled = 0;
        for (int j = 0; j < 16; j++) {
            int32_t products = 0;
            for (int l = 0; l < 16; l++) {
                int i = 16 * j + l;
                products += (s_q6_K_value (&w [b], i) - 32) * a [b].qs [i];
            }
            scaled += w [b].scales [j] * products;
        }
        float d = quant_f16_to_f32 (w [b].d) * a [b].d;
        sum += (double) d * scaled;
    }
    return (float) sum;
}

typedef float (s_dot_fn) (size_t n, const void *weights, const void *activation);

static s_dot_fn *
s_dot_reference_for (ggml_type_t type)
{
    switch (type) {
        case GGML_TYPE_F32:  return s_dot_f32_reference;
        case GGML_TYPE_F16:  return s_dot_f16_reference;
        case GGML_TYPE_BF16: return s_dot_bf16_reference;
        case GGML_TYPE_Q8_0: return s_dot_q8_0_reference;
        case GGML_TYPE_Q4_0: return s_dot_q4_0_reference;
        case GGML_TYPE_Q4_K: return s_dot_q4_K_reference;
        case GGML_TYPE_Q6_K: return s_dot_q6_K_reference;
        default:             return NULL;
    }
}

//  --- AVX2 products -----------------------------------------------------------------------
//
//  Each s_*_rows_avx2 does one weight row against `count` activation rows (1..4, given
//  as a constant after inlining so the loops over rows unroll and their accumulators
//  live in registers). The exported kernels are s_*_avx2, which pick the count.

typedef void (s_rows_fn) (size_t n, const void *weights, const uint8_t *activations,
                          size_t stride, int count, float *out);

//  The products walk the weights in tiles of rows that stay in the cache (about
//  KERNELS_TILE_BYTES, a multiple of `multiple` rows, at least that many) ...
static size_t
s_tile_rows (size_t weight_stride, size_t multiple)
{
    size_t rows = KERNELS_TILE_BYTES / (weight_stride? weight_stride: 1);
    rows = rows / multiple * multiple;
    return rows < multiple? multiple: rows;
}

//  ... and the activations in chunks of rows (about KERNELS_CHUNK_BYTES, a multiple of
//  KERNELS_MAX_COUNT rows, at least that many), every tile against a whole chunk.
static size_t
s_activation_chunk (size_t activation_stride)
{
    size_t rows = KERNELS_CHUNK_BYTES / (activation_stride? activation_stride: 1);
    rows = rows / KERNELS_MAX_COUNT * KERNELS_MAX_COUNT;
    return rows < KERNELS_MAX_COUNT? KERNELS_MAX_COUNT: rows;
}

#if defined(KERNELS_HAVE_X86)
#define AVX2_INLINE static inline __attribute__ ((always_inline)) AVX2_TARGET

AVX2_INLINE float
s_hsum_avx2 (__m256 v)
{
    __m128 sum = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
    sum = _mm_add_ps (sum, _mm_movehl_ps (sum, sum));
    sum = _mm_add_ss (sum, _mm_movehdup_ps (sum));
    return _mm_cvtss_f32 (sum);
}

AVX2_INLINE float
s_hsum4_avx2 (__m128 v)
{
    __m128 sum = _mm_add_ps (v, _mm_movehl_ps (v, v));
    sum = _mm_add_ss (sum, _mm_movehdup_ps (sum));
    return _mm_cvtss_f32 (sum);
}

//  Eight weights as floats, and one, for weights stored as F32, F16 or BF16.
AVX2_INLINE __m256
s_load_weights_avx2 (const void *weights, size_t i, ggml_type_t type)
{
    const __m128i *halves = (const __m128i *) ((const uint16_t *) weights + i);
    if (type == GGML_TYPE_F16)
        return _mm256_cvtph_ps (_mm_loadu_si128 (halves));
    if (type == GGML_TYPE_BF16) {
        __m256i wide = _mm256_cvtepu16_epi32 (_mm_loadu_si128 (halves));
        return _mm256_castsi256_ps (_mm256_slli_epi32 (wide, 16));
    }
    return _mm256_loadu_ps ((const float *) weights + i);
}

AVX2_INLINE float
s_weight_avx2 (const void *weights, size_t i, ggml_type_t type)
{
    if (type == GGML_TYPE_F16)
        return _cvtsh_ss (((const uint16_t *) weights) [i]);
    if (type == GGML_TYPE_BF16)
        return quant_bf16_to_f32 (((const uint16_t *) weights) [i]);
    return ((const float *) weights) [i];
}

//  The Q8_0 or Q8_K block b of activation row r.
AVX2_INLINE const quant_block_q8_0_t *
s_q8_0_block (const uint8_t *activations, size_t stride, int r, size_t b)
{
    return (const quant_block_q8_0_t *) (activations + r * stride) + b;
}

AVX2_INLINE const kernels_block_q8_K_t *
s_q8_K_block (const uint8_t *activations, size_t stride, int r, size_t b)
{
    return (const kernels_block_q8_K_t *) (activations + r * stride) + b;
}

AVX2_INLINE __m256i
s_load_256 (const void *p)
{
    return _mm256_loadu_si256 ((const __m256i *) p);
}

//  The 16-bit value at 16-bit position `index` of each 128-bit lane of v, in every
//  position of that lane (lane 0 takes index_low, lane 1 index_high).
AVX2_INLINE __m256i
s_spread_16 (__m256i v, int index_low, int index_high)
{
    __m128i low = _mm_set1_epi16 ((short) (((2 * index_low + 1) << 8) | (2 * index_low)));
    __m128i high = _mm_set1_epi16 ((short) (((2 * index_high + 1) << 8) | (2 * index_high)));
    return _mm256_shuffle_epi8 (v, _mm256_set_m128i (high, low));
}

//  F32, F16 and BF16 weights against float activations: two accumulators of eight
//  lanes per activation row (16 values a step), then the lanes added (s_float_lanes_avx2,
//  the first n / 8 * 8 values), then across the lanes, then the last n % 8 values one
//  by one (s_float_rows_avx2).
AVX2_INLINE void
s_float_lanes_avx2 (size_t n, const void *weights, const uint8_t *activations, size_t stride,
                    int count, __m256 *lanes, ggml_type_t type)
{
    __m256 even [KERNELS_MAX_COUNT], odd [KERNELS_MAX_COUNT];
    const float *a [KERNELS_MAX_COUNT];
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++) {
        even [r] = _mm256_setzero_ps ();
        odd [r] = _mm256_setzero_ps ();
        a [r] = (const float *) (activations + r * stride);
    }
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = s_load_weights_avx2 (weights, i, type);
        __m256 w1 = s_load_weights_avx2 (weights, i + 8, type);
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++) {
            even [r] = _mm256_fmadd_ps (w0, _mm256_loadu_ps (a [r] + i), even [r]);
            odd [r] = _mm256_fmadd_ps (w1, _mm256_loadu_ps (a [r] + i + 8), odd [r]);
        }
    }
    if (i + 8 <= n) {
        __m256 w0 = s_load_weights_avx2 (weights, i, type);
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++)
            even [r] = _mm256_fmadd_ps (w0, _mm256_loadu_ps (a [r] + i), even [r]);
    }
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++)
        lanes [r] = _mm256_add_ps (even [r], odd [r]);
}

AVX2_INLINE void
s_float_rows_avx2 (size_t n, const void *weights, const uint8_t *activations, size_t stride,
                   int count, float *out, ggml_type_t type)
{
    __m256 lanes [KERNELS_MAX_COUNT];
    s_float_lanes_avx2 (n, weights, activations, stride, count, lanes, type);
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++) {
        const float *a = (const float *) (activations + r * stride);
        float sum = s_hsum_avx2 (lanes [r]);
        for (size_t j = n / 8 * 8; j < n; j++)
            sum += s_weight_avx2 (weights, j, type) * a [j];
        out [r] = sum;
    }
}

//  s_hsum_avx2 of eight vectors at once, the same sums in the same order: lane i of the
//  result is v[i]'s low half plus its high half (four lanes), then lanes 0 + 2 and
//  1 + 3, then those two; the halves of two vectors go through one addition, and so on.
AVX2_INLINE __m256
s_hsum8_avx2 (const __m256 *v)
{
    __m256 x [4];
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++)                 //  [x(v[2k]) | x(v[2k + 1])]
        x [k] = _mm256_add_ps (_mm256_permute2f128_ps (v [2 * k], v [2 * k + 1], 0x20),
                               _mm256_permute2f128_ps (v [2 * k], v [2 * k + 1], 0x31));
    __m256 y [2];
    #pragma GCC unroll 2
    for (int k = 0; k < 2; k++)                 //  [y(v[4k]) y(v[4k + 2]) | y(v[4k + 1]) y(v[4k + 3])]
        y [k] = _mm256_add_ps (_mm256_shuffle_ps (x [2 * k], x [2 * k + 1], 0x44),
                               _mm256_shuffle_ps (x [2 * k], x [2 * k + 1], 0xEE));
    //  [z(v[0]) z(v[2]) z(v[4]) z(v[6]) | z(v[1]) z(v[3]) z(v[5]) z(v[7])]
    __m256 z = _mm256_add_ps (_mm256_shuffle_ps (y [0], y [1], 0x88),
                              _mm256_shuffle_ps (y [0], y [1], 0xDD));
    return _mm256_permutevar8x32_ps (z, _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7));
}

//  kernels_matmul for F32, F16 and BF16 weights with n a multiple of 8: up to eight
//  weight rows, one by one against `count` activation rows as s_float_rows_avx2 takes
//  them, then each activation row's eight sums reduced at once (s_hsum8_avx2):
//  out[r * out_stride + w] for activation row r and weight row w, kernels_dot's numbers.
AVX2_INLINE void
s_float_group_avx2 (size_t n, const uint8_t *weights, size_t weight_stride, int n_w,
                    const uint8_t *activations, size_t stride, int count, float *out,
                    size_t out_stride, ggml_type_t type)
{
    __m256 lanes [KERNELS_MAX_COUNT][8];
    for (int w = 0; w < 8; w++) {
        __m256 row_lanes [KERNELS_MAX_COUNT];
        if (w < n_w) {
            s_float_lanes_avx2 (n, weights + w * weight_stride, activations, stride, count,
                                row_lanes, type);
            #pragma GCC unroll 4
            for (int r = 0; r < count; r++)
                lanes [r][w] = row_lanes [r];
        }
        else
            #pragma GCC unroll 4
            for (int r = 0; r < count; r++)
                lanes [r][w] = _mm256_setzero_ps ();
    }
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++) {
        __m256 sums = s_hsum8_avx2 (lanes [r]);
        if (n_w == 8)
            _mm256_storeu_ps (out + r * out_stride, sums);
        else {
            float some [8];
            _mm256_storeu_ps (some, sums);
            memcpy (out + r * out_stride, some, (size_t) n_w * sizeof (float));
        }
    }
}

//  One Q8_0 or Q4_0 weight block, as 32 signed bytes q_w, against block b of `count`
//  Q8_0 activation rows: the weight's sign moved onto the activation, 32 products summed
//  into eight 32-bit lanes, converted to float and added times d_w * d_a into acc[r].
AVX2_INLINE void
s_q8_0_block_avx2 (__m256i q_w, float d_w, const uint8_t *activations, size_t stride,
                   size_t b, int count, __m256 *acc)
{
    const __m256i ones = _mm256_set1_epi16 (1);
    __m256i abs_w = _mm256_sign_epi8 (q_w, q_w);
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++) {
        const quant_block_q8_0_t *a = s_q8_0_block (activations, stride, r, b);
        __m256i pairs = _mm256_maddubs_epi16 (abs_w, _mm256_sign_epi8 (s_load_256 (a->qs), q_w));
        __m256i sums = _mm256_madd_epi16 (pairs, ones);
        __m256 d = _mm256_set1_ps (d_w * _cvtsh_ss (a->d));
        acc [r] = _mm256_fmadd_ps (d, _mm256_cvtepi32_ps (sums), acc [r]);
    }
}

//  A Q4_0 block's 32 values as signed bytes: the nibbles unpacked (low nibbles are
//  elements 0..15, high nibbles 16..31), less 8.
AVX2_INLINE __m256i
s_q4_0_values_avx2 (const quant_block_q4_0_t *block)
{
    __m128i packed = _mm_loadu_si128 ((const __m128i *) block->qs);
    __m256i nibbles = _mm256_set_m128i (_mm_srli_epi16 (packed, 4), packed);
    nibbles = _mm256_and_si256 (nibbles, _mm256_set1_epi8 (0x0F));
    return _mm256_sub_epi8 (nibbles, _mm256_set1_epi8 (8));
}

//  Q8_0 and Q4_0 weights against Q8_0 activations. Even and odd blocks go to two
//  accumulators per row (one would make every block wait for the previous one's
//  multiply-add); they are added at the end.
AVX2_INLINE void
s_q8_0_rows_avx2 (size_t n, const void *weights, const uint8_t *activations, size_t stride,
                  int count, float *out, ggml_type_t type)
{
    const quant_block_q8_0_t *w8 = weights;
    const quant_block_q4_0_t *w4 = weights;
    size_t blocks = n / QUANT_32_BLOCK;
    __m256 even [KERNELS_MAX_COUNT], odd [KERNELS_MAX_COUNT];
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++) {
        even [r] = _mm256_setzero_ps ();
        odd [r] = _mm256_setzero_ps ();
    }
    for (size_t b = 0; b < blocks; b += 2) {
        bool q4 = type == GGML_TYPE_Q4_0;
        __m256i q_w = q4? s_q4_0_values_avx2 (&w4 [b]): s_load_256 (w8 [b].qs);
        float d_w = _cvtsh_ss (q4? w4 [b].d: w8 [b].d);
        s_q8_0_block_avx2 (q_w, d_w, activations, stride, b, count, even);
        if (b + 1 == blocks)
            break;
        q_w = q4? s_q4_0_values_avx2 (&w4 [b + 1]): s_load_256 (w8 [b + 1].qs);
        d_w = _cvtsh_ss (q4? w4 [b + 1].d: w8 [b + 1].d);
        s_q8_0_block_avx2 (q_w, d_w, activations, stride, b + 1, count, odd);
    }
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++)
        out [r] = s_hsum_avx2 (_mm256_add_ps (even [r], odd [r]));
}

//  kernels_matmul's Q8_0 and Q4_0 path: `n_w` weight rows (1..KERNELS_Q8_0_WEIGHT_ROWS)
//  against `count` activation rows (1..4) at once, every block scale already a float
//  (d_w: n_w rows of `blocks` scales, d_a: count rows of them). Each weight block is
//  loaded and unpacked once for all the activation rows, and each activation block once
//  for all the weight rows. Every (weight row, activation row) pair takes exactly the
//  steps of s_q8_0_rows_avx2: the block's products in eight 32-bit lanes, converted to
//  float, times the float product d_w * d_a, added into the even or the odd accumulator;
//  so the results are kernels_dot's, bit for bit. One pass takes the even blocks, a
//  second the odd ones, so that only n_w * count accumulators are live at a time.
AVX2_INLINE void
s_q8_0_pass_avx2 (size_t blocks, size_t parity, const uint8_t *weights, size_t weight_stride,
                  const float *d_w, int n_w, const uint8_t *activations, size_t stride,
                  const float *d_a, int count, __m256 *acc, ggml_type_t type)
{
    const __m256i ones = _mm256_set1_epi16 (1);
    #pragma GCC unroll 8
    for (int i = 0; i < n_w * count; i++)
        acc [i] = _mm256_setzero_ps ();
    for (size_t b = parity; b < blocks; b += 2) {
        __m256i q_w [KERNELS_Q8_0_WEIGHT_ROWS], abs_w [KERNELS_Q8_0_WEIGHT_ROWS];
        __m256 scale_w [KERNELS_Q8_0_WEIGHT_ROWS];
        #pragma GCC unroll 4
        for (int w = 0; w < n_w; w++) {
            const uint8_t *row = weights + w * weight_stride;
            q_w [w] = type == GGML_TYPE_Q4_0
                    ? s_q4_0_values_avx2 ((const quant_block_q4_0_t *) row + b)
                    : s_load_256 (((const quant_block_q8_0_t *) row) [b].qs);
            abs_w [w] = _mm256_sign_epi8 (q_w [w], q_w [w]);
            scale_w [w] = _mm256_broadcast_ss (d_w + w * blocks + b);
        }
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++) {
            __m256i q_a = s_load_256 (s_q8_0_block (activations, stride, r, b)->qs);
            __m256 scale_a = _mm256_broadcast_ss (d_a + r * blocks + b);
            #pragma GCC unroll 4
            for (int w = 0; w < n_w; w++) {
                __m256i pairs = _mm256_maddubs_epi16 (abs_w [w], _mm256_sign_epi8 (q_a, q_w [w]));
                __m256i sums = _mm256_madd_epi16 (pairs, ones);
                __m256 d = _mm256_mul_ps (scale_w [w], scale_a);
                acc [w * count + r] = _mm256_fmadd_ps (d, _mm256_cvtepi32_ps (sums),
                                                       acc [w * count + r]);
            }
        }
    }
}

//  The two passes, then each pair's lanes added as s_q8_0_rows_avx2 adds them:
//  out[r * out_stride + w] for activation row r and weight row w.
AVX2_INLINE void
s_q8_0_tile_rows_avx2 (size_t blocks, const uint8_t *weights, size_t weight_stride,
                       const float *d_w, int n_w, const uint8_t *activations, size_t stride,
                       const float *d_a, int count, float *out, size_t out_stride,
                       ggml_type_t type)
{
    __m256 even [KERNELS_Q8_0_WEIGHT_ROWS * KERNELS_MAX_COUNT];
    __m256 odd [KERNELS_Q8_0_WEIGHT_ROWS * KERNELS_MAX_COUNT];
    s_q8_0_pass_avx2 (blocks, 0, weights, weight_stride, d_w, n_w, activations, stride, d_a,
                      count, even, type);
    s_q8_0_pass_avx2 (blocks, 1, weights, weight_stride, d_w, n_w, activations, stride, d_a,
                      count, odd, type);
    #pragma GCC unroll 4
    for (int w = 0; w < n_w; w++)
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++)
            out [r * out_stride + w] = s_hsum_avx2 (_mm256_add_ps (even [w * count + r],
                                                                   odd [w * count + r]));
}

//  Q4_K weights against Q8_K activations. Per block: the 6-bit scales and mins unpacked
//  with 32-bit word operations (the bit moves of s_q4_K_scales_mins, four at a time)
//  into sixteen 16-bit values; for each group of 64 elements, the low nibbles
//  (sub-block 2k) and high nibbles (2k + 1) times the activations, each pair sum times
//  its sub-block's scale, into eight 32-bit lanes; the mins part comes from the
//  activation's bsums (two per sub-block) times the mins.
AVX2_INLINE void
s_q4_K_rows_avx2 (size_t n, const void *weights, const uint8_t *activations, size_t stride,
                  int count, float *out)
{
    const quant_block_q4_K_t *w = weights;
    const __m256i low_nibbles = _mm256_set1_epi8 (0x0F);
    __m256 acc [KERNELS_MAX_COUNT];
    __m128 acc_mins [KERNELS_MAX_COUNT];
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++) {
        acc [r] = _mm256_setzero_ps ();
        acc_mins [r] = _mm_setzero_ps ();
    }
    for (size_t b = 0; b < n / QUANT_K_BLOCK; b++) {
        uint32_t packed [3];
        memcpy (packed, w [b].scales, 12);
        __m128i scales_mins8 = _mm_setr_epi32 (
            (int) (packed [0] & 0x3F3F3F3F),                                    //  scales 0..3
            (int) ((packed [2] & 0x0F0F0F0F) | ((packed [0] >> 2) & 0x30303030)), //  4..7
            (int) (packed [1] & 0x3F3F3F3F),                                    //  mins 0..3
            (int) (((packed [2] >> 4) & 0x0F0F0F0F) | ((packed [1] >> 2) & 0x30303030)));
        __m256i scales_mins = _mm256_cvtepu8_epi16 (scales_mins8);
        __m256i scales = _mm256_permute2x128_si256 (scales_mins, scales_mins, 0x00);
        __m128i mins = _mm256_extracti128_si256 (scales_mins, 1);
        float d_w = _cvtsh_ss (w [b].d);
        float dmin_w = _cvtsh_ss (w [b].dmin);
        __m256i sums [KERNELS_MAX_COUNT];
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++)
            sums [r] = _mm256_setzero_si256 ();
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256i packed_q = s_load_256 (w [b].qs + 32 * k);
            __m256i low = _mm256_and_si256 (packed_q, low_nibbles);
            __m256i high = _mm256_and_si256 (_mm256_srli_epi16 (packed_q, 4), low_nibbles);
            __m256i scale_low = s_spread_16 (scales, 2 * k, 2 * k);
            __m256i scale_high = s_spread_16 (scales, 2 * k + 1, 2 * k + 1);
            #pragma GCC unroll 4
            for (int r = 0; r < count; r++) {
                const int8_t *q_a = s_q8_K_block (activations, stride, r, b)->qs + 64 * k;
                __m256i p_low = _mm256_maddubs_epi16 (low, s_load_256 (q_a));
                __m256i p_high = _mm256_maddubs_epi16 (high, s_load_256 (q_a + 32));
                p_low = _mm256_madd_epi16 (p_low, scale_low);
                p_high = _mm256_madd_epi16 (p_high, scale_high);
                sums [r] = _mm256_add_epi32 (sums [r], _mm256_add_epi32 (p_low, p_high));
            }
        }
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++) {
            const kernels_block_q8_K_t *a = s_q8_K_block (activations, stride, r, b);
            __m256i bsums = s_load_256 (a->bsums);
            __m128i sub_sums = _mm_hadd_epi16 (_mm256_castsi256_si128 (bsums),
                                               _mm256_extracti128_si256 (bsums, 1));
            __m128i offsets = _mm_madd_epi16 (mins, sub_sums);
            __m256 d = _mm256_set1_ps (d_w * a->d);
            acc [r] = _mm256_fmadd_ps (d, _mm256_cvtepi32_ps (sums [r]), acc [r]);
            __m128 dmin = _mm_set1_ps (-dmin_w * a->d);
            acc_mins [r] = _mm_fmadd_ps (dmin, _mm_cvtepi32_ps (offsets), acc_mins [r]);
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++)
        out [r] = s_hsum_avx2 (acc [r]) + s_hsum4_avx2 (acc_mins [r]);
}

//  Q6_K weights against Q8_K activations. Each half of 128 elements is four runs of 32
//  6-bit values q (0..63), each run two sub-blocks of 16 with their own scale; the -32
//  of every value is taken off at the end of the block as 32 * scale * (sum of the
//  sub-block's activations), from bsums. Low 4 bits: low nibbles of ql[0..31] and
//  ql[32..63] for runs 0, 1, high nibbles for runs 2, 3; high 2 bits: bits 2 * run of
//  qh, moved to bits 4, 5.
AVX2_INLINE void
s_q6_K_rows_avx2 (size_t n, const void *weights, const uint8_t *activations, size_t stride,
                  int count, float *out)
{
    const quant_block_q6_K_t *w = weights;
    const __m256i low_nibbles = _mm256_set1_epi8 (0x0F);
    const __m256i high_bits = _mm256_set1_epi8 (0x30);
    __m256 acc [KERNELS_MAX_COUNT];
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++)
        acc [r] = _mm256_setzero_ps ();
    for (size_t b = 0; b < n / QUANT_K_BLOCK; b++) {
        float d_w = _cvtsh_ss (w [b].d);
        __m256i sums [KERNELS_MAX_COUNT];
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++)
            sums [r] = _mm256_setzero_si256 ();
        for (int half = 0; half < 2; half++) {
            __m256i ql0 = s_load_256 (w [b].ql + 64 * half);
            __m256i ql1 = s_load_256 (w [b].ql + 64 * half + 32);
            __m256i qh = s_load_256 (w [b].qh + 32 * half);
            //  This half's eight scales as 16-bit values, in both lanes.
            __m128i scales8 = _mm_loadl_epi64 ((const __m128i *) (w [b].scales + 8 * half));
            __m256i scales = _mm256_broadcastsi128_si256 (_mm_cvtepi8_epi16 (scales8));
            __m256i runs [4];
            runs [0] = _mm256_or_si256 (_mm256_and_si256 (ql0, low_nibbles),
                                        _mm256_and_si256 (_mm256_slli_epi16 (qh, 4), high_bits));
            runs [1] = _mm256_or_si256 (_mm256_and_si256 (ql1, low_nibbles),
                                        _mm256_and_si256 (_mm256_slli_epi16 (qh, 2), high_bits));
            runs [2] = _mm256_or_si256 (_mm256_and_si256 (_mm256_srli_epi16 (ql0, 4), low_nibbles),
                                        _mm256_and_si256 (qh, high_bits));
            runs [3] = _mm256_or_si256 (_mm256_and_si256 (_mm256_srli_epi16 (ql1, 4), low_nibbles),
                                        _mm256_and_si256 (_mm256_srli_epi16 (qh, 2), high_bits));
            #pragma GCC unroll 4
            for (int run = 0; run < 4; run++) {
                __m256i scale = s_spread_16 (scales, 2 * run, 2 * run + 1);
                #pragma GCC unroll 4
                for (int r = 0; r < count; r++) {
                    const int8_t *q_a = s_q8_K_block (activations, stride, r, b)->qs
                                      + 128 * half + 32 * run;
                    __m256i pairs = _mm256_maddubs_epi16 (runs [run], s_load_256 (q_a));
                    sums [r] = _mm256_add_epi32 (sums [r], _mm256_madd_epi16 (pairs, scale));
                }
            }
        }
        __m256i scales16 = _mm256_cvtepi8_epi16 (_mm_loadu_si128 ((const __m128i *) w [b].scales));
        #pragma GCC unroll 4
        for (int r = 0; r < count; r++) {
            const kernels_block_q8_K_t *a = s_q8_K_block (activations, stride, r, b);
            __m256i offsets = _mm256_madd_epi16 (scales16, s_load_256 (a->bsums));
            sums [r] = _mm256_sub_epi32 (sums [r], _mm256_slli_epi32 (offsets, 5));
            __m256 d = _mm256_set1_ps (d_w * a->d);
            acc [r] = _mm256_fmadd_ps (d, _mm256_cvtepi32_ps (sums [r]), acc [r]);
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < count; r++)
        out [r] = s_hsum_avx2 (acc [r]);
}

//  The exported kernels: the count made a constant for each case.
static AVX2_TARGET void
s_f32_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_float_rows_avx2 (n, w, a, stride, 4, out, GGML_TYPE_F32); break;
        case 3: s_float_rows_avx2 (n, w, a, stride, 3, out, GGML_TYPE_F32); break;
        case 2: s_float_rows_avx2 (n, w, a, stride, 2, out, GGML_TYPE_F32); break;
        default: s_float_rows_avx2 (n, w, a, stride, 1, out, GGML_TYPE_F32); break;
    }
}

static AVX2_TARGET void
s_f16_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_float_rows_avx2 (n, w, a, stride, 4, out, GGML_TYPE_F16); break;
        case 3: s_float_rows_avx2 (n, w, a, stride, 3, out, GGML_TYPE_F16); break;
        case 2: s_float_rows_avx2 (n, w, a, stride, 2, out, GGML_TYPE_F16); break;
        default: s_float_rows_avx2 (n, w, a, stride, 1, out, GGML_TYPE_F16); break;
    }
}

static AVX2_TARGET void
s_bf16_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_float_rows_avx2 (n, w, a, stride, 4, out, GGML_TYPE_BF16); break;
        case 3: s_float_rows_avx2 (n, w, a, stride, 3, out, GGML_TYPE_BF16); break;
        case 2: s_float_rows_avx2 (n, w, a, stride, 2, out, GGML_TYPE_BF16); break;
        default: s_float_rows_avx2 (n, w, a, stride, 1, out, GGML_TYPE_BF16); break;
    }
}

static AVX2_TARGET void
s_q8_0_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_q8_0_rows_avx2 (n, w, a, stride, 4, out, GGML_TYPE_Q8_0); break;
        case 3: s_q8_0_rows_avx2 (n, w, a, stride, 3, out, GGML_TYPE_Q8_0); break;
        case 2: s_q8_0_rows_avx2 (n, w, a, stride, 2, out, GGML_TYPE_Q8_0); break;
        default: s_q8_0_rows_avx2 (n, w, a, stride, 1, out, GGML_TYPE_Q8_0); break;
    }
}

static AVX2_TARGET void
s_q4_0_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_q8_0_rows_avx2 (n, w, a, stride, 4, out, GGML_TYPE_Q4_0); break;
        case 3: s_q8_0_rows_avx2 (n, w, a, stride, 3, out, GGML_TYPE_Q4_0); break;
        case 2: s_q8_0_rows_avx2 (n, w, a, stride, 2, out, GGML_TYPE_Q4_0); break;
        default: s_q8_0_rows_avx2 (n, w, a, stride, 1, out, GGML_TYPE_Q4_0); break;
    }
}

static AVX2_TARGET void
s_q4_K_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_q4_K_rows_avx2 (n, w, a, stride, 4, out); break;
        case 3: s_q4_K_rows_avx2 (n, w, a, stride, 3, out); break;
        case 2: s_q4_K_rows_avx2 (n, w, a, stride, 2, out); break;
        default: s_q4_K_rows_avx2 (n, w, a, stride, 1, out); break;
    }
}

static AVX2_TARGET void
s_q6_K_avx2 (size_t n, const void *w, const uint8_t *a, size_t stride, int count, float *out)
{
    switch (count) {
        case 4: s_q6_K_rows_avx2 (n, w, a, stride, 4, out); break;
        case 3: s_q6_K_rows_avx2 (n, w, a, stride, 3, out); break;
        case 2: s_q6_K_rows_avx2 (n, w, a, stride, 2, out); break;
        default: s_q6_K_rows_avx2 (n, w, a, stride, 1, out); break;
    }
}
//  Up to eight weight rows of F32, F16 or BF16 against `count` activation rows, the
//  count made a constant.
#define S_FLOAT_GROUP_CASES(TYPE)                                                            \
    switch (count) {                                                                         \
        case 4: s_float_group_avx2 (n, w, ws, n_w, a, as, 4, out, os, TYPE); break;          \
        case 3: s_float_group_avx2 (n, w, ws, n_w, a, as, 3, out, os, TYPE); break;          \
        case 2: s_float_group_avx2 (n, w, ws, n_w, a, as, 2, out, os, TYPE); break;          \
        default: s_float_group_avx2 (n, w, ws, n_w, a, as, 1, out, os, TYPE); break;         \
    }

static AVX2_TARGET __attribute__ ((noinline)) void
s_f32_group_avx2 (size_t n, const uint8_t *w, size_t ws, int n_w, const uint8_t *a, size_t as,
                  int count, float *out, size_t os)
{
    S_FLOAT_GROUP_CASES (GGML_TYPE_F32)
}

static AVX2_TARGET __attribute__ ((noinline)) void
s_f16_group_avx2 (size_t n, const uint8_t *w, size_t ws, int n_w, const uint8_t *a, size_t as,
                  int count, float *out, size_t os)
{
    S_FLOAT_GROUP_CASES (GGML_TYPE_F16)
}

static AVX2_TARGET __attribute__ ((noinline)) void
s_bf16_group_avx2 (size_t n, const uint8_t *w, size_t ws, int n_w, const uint8_t *a, size_t as,
                   int count, float *out, size_t os)
{
    S_FLOAT_GROUP_CASES (GGML_TYPE_BF16)
}

//  kernels_matmul for F32, F16 and BF16 weights, n a multiple of 8: the same chunks and
//  tiles, eight weight rows at a time against four activation rows at a time.
static AVX2_TARGET void
s_float_matmul_avx2 (ggml_type_t type, size_t n, const uint8_t *weights, size_t weight_stride,
                     size_t n_rows, const uint8_t *activations, size_t activation_stride,
                     size_t n_activations, float *out, size_t out_stride)
{
    size_t tile_rows = s_tile_rows (weight_stride, 8);
    size_t chunk = s_activation_chunk (activation_stride);
    for (size_t first_m = 0; first_m < n_activations; first_m += chunk) {
        size_t last_m = n_activations - first_m < chunk? n_activations: first_m + chunk;
        for (size_t first_row = 0; first_row < n_rows; first_row += tile_rows) {
            size_t last_row = n_rows - first_row < tile_rows? n_rows: first_row + tile_rows;
            for (size_t m = first_m; m < last_m; m += KERNELS_MAX_COUNT) {
                int count = last_m - m < KERNELS_MAX_COUNT? (int) (last_m - m): KERNELS_MAX_COUNT;
                const uint8_t *activation = activations + m * activation_stride;
                for (size_t r = first_row; r < last_row; r += 8) {
                    int n_w = last_row - r < 8? (int) (last_row - r): 8;
                    const uint8_t *row = weights + r * weight_stride;
                    float *results = out + m * out_stride + r;
                    if (type == GGML_TYPE_F16)
                        s_f16_group_avx2 (n, row, weight_stride, n_w, activation,
                                          activation_stride, count, results, out_stride);
                    else
                    if (type == GGML_TYPE_BF16)
                        s_bf16_group_avx2 (n, row, weight_stride, n_w, activation,
                                           activation_stride, count, results, out_stride);
                    else
                        s_f32_group_avx2 (n, row, weight_stride, n_w, activation,
                                          activation_stride, count, results, out_stride);
                }
            }
        }
    }
}

//  A tile of kernels_matmul for Q8_0 or Q4_0 weights: n_w weight rows against count
//  activation rows, both made constants. The two weight types are separate functions so
//  that each inlines only its own unpacking.
#define S_Q8_0_TILE_CASES(TYPE)                                                             \
    switch (n_w * 8 + count) {                                                              \
        case 2 * 8 + 4: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 2, a, as, da, 4, out, os, TYPE); break; \
        case 2 * 8 + 3: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 2, a, as, da, 3, out, os, TYPE); break; \
        case 2 * 8 + 2: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 2, a, as, da, 2, out, os, TYPE); break; \
        case 2 * 8 + 1: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 2, a, as, da, 1, out, os, TYPE); break; \
        case 1 * 8 + 4: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 1, a, as, da, 4, out, os, TYPE); break; \
        case 1 * 8 + 3: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 1, a, as, da, 3, out, os, TYPE); break; \
        case 1 * 8 + 2: s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 1, a, as, da, 2, out, os, TYPE); break; \
        default:        s_q8_0_tile_rows_avx2 (blocks, w, ws, dw, 1, a, as, da, 1, out, os, TYPE); break; \
    }

static AVX2_TARGET __attribute__ ((noinline)) void
s_q8_0_tile_avx2 (size_t blocks, const uint8_t *w, size_t ws, const float *dw, int n_w,
                  const uint8_t *a, size_t as, const float *da, int count, float *out, size_t os)
{
    S_Q8_0_TILE_CASES (GGML_TYPE_Q8_0)
}

static AVX2_TARGET __attribute__ ((noinline)) void
s_q4_0_tile_avx2 (size_t blocks, const uint8_t *w, size_t ws, const float *dw, int n_w,
                  const uint8_t *a, size_t as, const float *da, int count, float *out, size_t os)
{
    S_Q8_0_TILE_CASES (GGML_TYPE_Q4_0)
}

//  The block scales of `n_rows` rows of Q8_0 or Q4_0 blocks (`stride` bytes apart) as
//  floats, `blocks` per row.
static AVX2_TARGET void
s_block_scales_avx2 (const uint8_t *rows, size_t stride, size_t n_rows, size_t blocks,
                     size_t block_bytes, float *scales)
{
    for (size_t r = 0; r < n_rows; r++)
        for (size_t b = 0; b < blocks; b++) {
            uint16_t d;
            memcpy (&d, rows + r * stride + b * block_bytes, sizeof d);
            scales [r * blocks + b] = _cvtsh_ss (d);
        }
}

//  kernels_matmul for Q8_0 and Q4_0 weights: as there, chunks of activation rows and
//  tiles of weight rows; per chunk the activations' block scales are made floats once,
//  per tile the weights'; then KERNELS_Q8_0_WEIGHT_ROWS weight rows at a time against
//  four activation rows at a time. Returns false (nothing done) for rows too long for
//  the scale buffers.
static AVX2_TARGET bool
s_q8_0_matmul_avx2 (ggml_type_t type, size_t n, const uint8_t *weights, size_t weight_stride,
                    size_t n_rows, const uint8_t *activations, size_t activation_stride,
                    size_t n_activations, float *out, size_t out_stride)
{
    size_t blocks = n / QUANT_32_BLOCK;
    size_t block_bytes = type == GGML_TYPE_Q4_0? sizeof (quant_block_q4_0_t)
                                               : sizeof (quant_block_q8_0_t);
    float d_a [KERNELS_SCALES_A];
    float d_w [KERNELS_SCALES_W];
    size_t tile_rows = s_tile_rows (weight_stride, KERNELS_Q8_0_WEIGHT_ROWS);
    size_t chunk = s_activation_chunk (activation_stride);
    if (blocks == 0 || chunk * blocks > KERNELS_SCALES_A || tile_rows * blocks > KERNELS_SCALES_W)
        return false;
    for (size_t first_m = 0; first_m < n_activations; first_m += chunk) {
        size_t last_m = n_activations - first_m < chunk? n_activations: first_m + chunk;
        s_block_scales_avx2 (activations + first_m * activation_stride, activation_stride,
                             last_m - first_m, blocks, sizeof (quant_block_q8_0_t), d_a);
        for (size_t first_row = 0; first_row < n_rows; first_row += tile_rows) {
            size_t last_row = n_rows - first_row < tile_rows? n_rows: first_row + tile_rows;
            s_block_scales_avx2 (weights + first_row * weight_stride, weight_stride,
                                 last_row - first_row, blocks, block_bytes, d_w);
            //  The next tile is fetched from memory while this one is computed, a few
            //  cache lines per step, spread over all the steps (reading it in a burst
            //  when its scales are converted would leave the core waiting).
            size_t next_last = n_rows - last_row < tile_rows? n_rows: last_row + tile_rows;
            const char *fetch = (const char *) (weights + last_row * weight_stride);
            const char *fetch_end = (const char *) (weights + next_last * weight_stride);
            size_t steps = (last_m - first_m + KERNELS_MAX_COUNT - 1) / KERNELS_MAX_COUNT
                         * ((last_row - first_row + KERNELS_Q8_0_WEIGHT_ROWS - 1)
                            / KERNELS_Q8_0_WEIGHT_ROWS);
            size_t fetch_step = ((size_t) (fetch_end - fetch) / steps + 64) / 64 * 64;
            for (size_t m = first_m; m < last_m; m += KERNELS_MAX_COUNT) {
                int count = last_m - m < KERNELS_MAX_COUNT? (int) (last_m - m): KERNELS_MAX_COUNT;
                const uint8_t *activation = activations + m * activation_stride;
                const float *scales_a = d_a + (m - first_m) * blocks;
                for (size_t r = first_row; r < last_row; r += KERNELS_Q8_0_WEIGHT_ROWS) {
                    int n_w = last_row - r < KERNELS_Q8_0_WEIGHT_ROWS? (int) (last_row - r)
                                                                     : KERNELS_Q8_0_WEIGHT_ROWS;
                    const uint8_t *row = weights + r * weight_stride;
                    const float *scales_w = d_w + (r - first_row) * blocks;
                    for (size_t offset = 0; offset < fetch_step && fetch < fetch_end; offset += 64) {
                        _mm_prefetch (fetch, _MM_HINT_T0);
                        fetch += 64;
                    }
                    if (type == GGML_TYPE_Q4_0)
                        s_q4_0_tile_avx2 (blocks, row, weight_stride, scales_w, n_w, activation,
                                          activation_stride, scales_a, count,
                                          out + m * out_stride + r, out_stride);
                    else
                        s_q8_0_tile_avx2 (blocks, row, weight_stride, scales_w, n_w, activation,
                                          activation_stride, scales_a, count,
                                          out + m * out_stride + r, out_stride);
                }
            }
        }
    }
    return true;
}
#endif

//  --- Dispatch and matmul -----------------------------------------------------------------

static s_rows_fn *
s_rows_for (ggml_type_t type, kernels_level_t level)
{
#if defined(KERNELS_HAVE_X86)
    if (level == KERNELS_AVX2) {
        switch (type) {
            case GGML_TYPE_F32:  return s_f32_avx2;
            case GGML_TYPE_F16:  return s_f16_avx2;
            case GGML_TYPE_BF16: return s_bf16_avx2;
            case GGML_TYPE_Q8_0: return s_q8_0_avx2;
            case GGML_TYPE_Q4_0: return s_q4_0_avx2;
            case GGML_TYPE_Q4_K: return s_q4_K_avx2;
            case GGML_TYPE_Q6_K: return s_q6_K_avx2;
            default:             return NULL;
        }
    }
#else
    (void) level;
    (void) type;
#endif
    return NULL;
}

float
kernels_dot (ggml_type_t weight_type, size_t n, const void *weights, const void *activation)
{
    s_rows_fn *rows = s_rows_for (weight_type, kernels_level ());
    if (rows) {
        float result;
        rows (n, weights, activation, 0, 1, &result);
        return result;
    }
    s_dot_fn *dot = s_dot_reference_for (weight_type);
    return dot? dot (n, weights, activation): 0.0f;
}

void
kernels_matmul (ggml_type_t weight_type, size_t n,
                const void *weights, size_t weight_stride, size_t n_rows,
                const void *activations, size_t activation_stride, size_t n_activations,
                float *out, size_t out_stride)
{
    const uint8_t *weight_bytes = weights;
    const uint8_t *activation_bytes = activations;
    s_rows_fn *rows = s_rows_for (weight_type, kernels_level ());
    s_dot_fn *dot = rows? NULL: s_dot_reference_for (weight_type);
    if (!rows && !dot)
        return;
#if defined(KERNELS_HAVE_X86)
    if (rows && (weight_type == GGML_TYPE_F32 || weight_type == GGML_TYPE_F16
                 || weight_type == GGML_TYPE_BF16)
    &&  n % 8 == 0 && n > 0) {
        s_float_matmul_avx2 (weight_type, n, weight_bytes, weight_stride, n_rows,
                             activation_bytes, activation_stride, n_activations, out, out_stride);
        return;
    }
    if (rows && (weight_type == GGML_TYPE_Q8_0 || weight_type == GGML_TYPE_Q4_0)
    &&  n_activations > 1
    &&  s_q8_0_matmul_avx2 (weight_type, n, weight_bytes, weight_stride, n_rows,
                            activation_bytes, activation_stride, n_activations, out, out_stride))
        return;
#endif
    //  Chunks of activation rows, tiles of weight rows (attention passes keys as rows
    //  a KV row apart), up to four activation rows per call.
    size_t tile_rows = s_tile_rows (weight_stride, 1);
    size_t chunk = s_activation_chunk (activation_stride);
    for (size_t first_m = 0; first_m < n_activations; first_m += chunk) {
        size_t last_m = n_activations - first_m < chunk? n_activations: first_m + chunk;
        for (size_t first_row = 0; first_row < n_rows; first_row += tile_rows) {
            size_t last_row = n_rows - first_row < tile_rows? n_rows: first_row + tile_rows;
            for (size_t m = first_m; m < last_m; m += KERNELS_MAX_COUNT) {
                int count = last_m - m < KERNELS_MAX_COUNT? (int) (last_m - m): KERNELS_MAX_COUNT;
                const uint8_t *activation = activation_bytes + m * activation_stride;
                for (size_t r = first_row; r < last_row; r++) {
                    const uint8_t *row = weight_bytes + r * weight_stride;
                    float results [KERNELS_MAX_COUNT];
                    if (rows)
                        rows (n, row, activation, activation_stride, count, results);
                    else
                        for (int c = 0; c < count; c++)
                            results [c] = dot (n, row, activation + c * activation_stride);
                    for (int c = 0; c < count; c++)
                        out [(m + c) * out_stride + r] = results [c];
                }
            }
        }
    }
}

//  --- F16 vectors -----------------------------------------------------------------------

#if defined(KERNELS_HAVE_X86)
static AVX2_TARGET void
s_f16_mad_avx2 (uint16_t *y, const uint16_t *x, float v, size_t n)
{
    __m256 scale = _mm256_set1_ps (v);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 sum = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (y + i)));
        __m256 term = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (x + i)));
        sum = _mm256_fmadd_ps (term, scale, sum);
        _mm_storeu_si128 ((__m128i *) (y + i), _mm256_cvtps_ph (sum, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        y [i] = quant_f32_to_f16 (fmaf (quant_f16_to_f32 (x [i]), v, quant_f16_to_f32 (y [i])));
}

static AVX2_TARGET void
s_f16_scale_avx2 (uint16_t *y, float v, size_t n)
{
    __m256 scale = _mm256_set1_ps (v);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 value = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (y + i)));
        value = _mm256_mul_ps (value, scale);
        _mm_storeu_si128 ((__m128i *) (y + i), _mm256_cvtps_ph (value, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        y [i] = quant_f32_to_f16 (quant_f16_to_f32 (y [i]) * v);
}

//  x rounded to F16 and back (what storing to F16 and loading again gives).
AVX2_INLINE __m256
s_round_through_f16_avx2 (__m256 x)
{
    return _mm256_cvtph_ps (_mm256_cvtps_ph (x, _MM_FROUND_TO_NEAREST_INT));
}

//  `registers` * 8 elements of the weighted sum, kept in registers while every position
//  passes: each step's rounding to F16 is a chain of a few cycles, so the more
//  independent registers, the better.
AVX2_INLINE void
s_f16_weighted_run_avx2 (uint16_t *sum, const uint16_t *values, size_t value_stride,
                         const float *scales, const float *weights, size_t n_positions,
                         int registers)
{
    __m256 acc [8];
    #pragma GCC unroll 8
    for (int j = 0; j < registers; j++)
        acc [j] = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (sum + 8 * j)));
    for (size_t t = 0; t < n_positions; t++) {
        const uint16_t *value = values + t * value_stride;
        if (scales [t] != 1.0f) {
            __m256 scale = _mm256_set1_ps (scales [t]);
            #pragma GCC unroll 8
            for (int j = 0; j < registers; j++)
                acc [j] = s_round_through_f16_avx2 (_mm256_mul_ps (acc [j], scale));
        }
        __m256 weight = _mm256_set1_ps (weights [t]);
        #pragma GCC unroll 8
        for (int j = 0; j < registers; j++) {
            __m256 v = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (value + 8 * j)));
            acc [j] = s_round_through_f16_avx2 (_mm256_fmadd_ps (v, weight, acc [j]));
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < registers; j++)
        _mm_storeu_si128 ((__m128i *) (sum + 8 * j),
                          _mm256_cvtps_ph (acc [j], _MM_FROUND_TO_NEAREST_INT));
}

//  64 elements at a time, then 32, then 8; the last n % 8 by the one-step functions.
static AVX2_TARGET void
s_f16_weighted_sum_avx2 (uint16_t *sum, const uint16_t *values, size_t value_stride,
                         const float *scales, const float *weights, size_t n_positions,
                         size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        s_f16_weighted_run_avx2 (sum + i, values + i, value_stride, scales, weights,
                                 n_positions, 8);
    for (; i + 32 <= n; i += 32)
        s_f16_weighted_run_avx2 (sum + i, values + i, value_stride, scales, weights,
                                 n_positions, 4);
    for (; i + 8 <= n; i += 8)
        s_f16_weighted_run_avx2 (sum + i, values + i, value_stride, scales, weights,
                                 n_positions, 1);
    if (i < n)
        for (size_t t = 0; t < n_positions; t++) {
            if (scales [t] != 1.0f)
                s_f16_scale_avx2 (sum + i, scales [t], n - i);
            s_f16_mad_avx2 (sum + i, values + t * value_stride + i, weights [t], n - i);
        }
}

//  The weighted sums of `heads` heads (1 to 4) that share their values: `registers` * 8
//  elements of each head's sum (heads * registers at most 12) kept in registers while
//  every position passes. At each position every head whose scale is not 1 is scaled
//  first; then each eight values are converted from F16 once and added into every
//  head's sum. Each element of each sum takes the steps s_f16_weighted_run_avx2 gives
//  it, in the same order: only the conversion of the values is shared.
AVX2_INLINE void
s_f16_weighted_heads_avx2 (uint16_t *sums, size_t sum_stride, const uint16_t *values,
                           size_t value_stride, const float *scales, const float *weights,
                           size_t weight_stride, size_t n_positions, int heads, int registers)
{
    __m256 acc [4][4];
    #pragma GCC unroll 4
    for (int g = 0; g < heads; g++)
        #pragma GCC unroll 4
        for (int j = 0; j < registers; j++)
            acc [g][j] = _mm256_cvtph_ps (_mm_loadu_si128 (
                             (const __m128i *) (sums + g * sum_stride + 8 * j)));
    for (size_t t = 0; t < n_positions; t++) {
        const uint16_t *value = values + t * value_stride;
        #pragma GCC unroll 4
        for (int g = 0; g < heads; g++) {
            float scale = scales [g * weight_stride + t];
            if (scale != 1.0f) {
                __m256 by = _mm256_set1_ps (scale);
                #pragma GCC unroll 4
                for (int j = 0; j < registers; j++)
                    acc [g][j] = s_round_through_f16_avx2 (_mm256_mul_ps (acc [g][j], by));
            }
        }
        #pragma GCC unroll 4
        for (int j = 0; j < registers; j++) {
            __m256 v = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (value + 8 * j)));
            #pragma GCC unroll 4
            for (int g = 0; g < heads; g++) {
                __m256 weight = _mm256_set1_ps (weights [g * weight_stride + t]);
                acc [g][j] = s_round_through_f16_avx2 (_mm256_fmadd_ps (v, weight, acc [g][j]));
            }
        }
    }
    #pragma GCC unroll 4
    for (int g = 0; g < heads; g++)
        #pragma GCC unroll 4
        for (int j = 0; j < registers; j++)
            _mm_storeu_si128 ((__m128i *) (sums + g * sum_stride + 8 * j),
                              _mm256_cvtps_ph (acc [g][j], _MM_FROUND_TO_NEAREST_INT));
}

//  s_f16_weighted_heads_avx2 with heads and registers made constants: `registers` is
//  4 for two or three heads, 2 for four, or 1 (the last elements of a head before its
//  n % 8).
static AVX2_TARGET __attribute__ ((noinline)) void
s_f16_weighted_slice_avx2 (uint16_t *sums, size_t sum_stride, const uint16_t *values,
                           size_t value_stride, const float *scales, const float *weights,
                           size_t weight_stride, size_t n_positions, int heads, int registers)
{
    if (registers == 1)
        switch (heads) {
            case 2: s_f16_weighted_heads_avx2 (sums, sum_stride, values, value_stride, scales,
                                               weights, weight_stride, n_positions, 2, 1);
                    return;
            case 3: s_f16_weighted_heads_avx2 (sums, sum_stride, values, value_stride, scales,
                                               weights, weight_stride, n_positions, 3, 1);
                    return;
            default: s_f16_weighted_heads_avx2 (sums, sum_stride, values, value_stride, scales,
                                                weights, weight_stride, n_positions, 4, 1);
                    return;
        }
    switch (heads) {
        case 2: s_f16_weighted_heads_avx2 (sums, sum_stride, values, value_stride, scales,
                                           weights, weight_stride, n_positions, 2, 4);
                return;
        case 3: s_f16_weighted_heads_avx2 (sums, sum_stride, values, value_stride, scales,
                                           weights, weight_stride, n_positions, 3, 4);
                return;
        default: s_f16_weighted_heads_avx2 (sums, sum_stride, values, value_stride, scales,
                                            weights, weight_stride, n_positions, 4, 2);
                return;
    }
}

//  Heads four at a time at most (one alone goes to s_f16_weighted_sum_avx2); within
//  them, slices of registers * 8 elements, then 8 at a time, then each head's last
//  n % 8 elements by the one-step functions.
static AVX2_TARGET void
s_f16_weighted_sums_avx2 (uint16_t *sums, size_t n_sums, const uint16_t *values,
                          size_t value_stride, const float *scales, const float *weights,
                          size_t weight_stride, size_t n_positions, size_t n)
{
    for (size_t first = 0; first < n_sums; ) {
        size_t heads = n_sums - first < 4? n_sums - first: 4;
        uint16_t *head_sums = sums + first * n;
        const float *head_scales = scales + first * weight_stride;
        const float *head_weights = weights + first * weight_stride;
        if (heads == 1) {
            s_f16_weighted_sum_avx2 (head_sums, values, value_stride, head_scales, head_weights,
                                     n_positions, n);
            first++;
            continue;
        }
        size_t registers = heads == 4? 2: 4;
        size_t i = 0;
        for (; i + 8 * registers <= n; i += 8 * registers)
            s_f16_weighted_slice_avx2 (head_sums + i, n, values + i, value_stride, head_scales,
                                       head_weights, weight_stride, n_positions, (int) heads,
                                       (int) registers);
        for (; i + 8 <= n; i += 8)
            s_f16_weighted_slice_avx2 (head_sums + i, n, values + i, value_stride, head_scales,
                                       head_weights, weight_stride, n_positions, (int) heads, 1);
        if (i < n)
            for (size_t g = 0; g < heads; g++)
                for (size_t t = 0; t < n_positions; t++) {
                    if (head_scales [g * weight_stride + t] != 1.0f)
                        s_f16_scale_avx2 (head_sums + g * n + i,
                                          head_scales [g * weight_stride + t], n - i);
                    s_f16_mad_avx2 (head_sums + g * n + i, values + t * value_stride + i,
                                    head_weights [g * weight_stride + t], n - i);
                }
        first += heads;
    }
}

static AVX2_TARGET void
s_f32_to_f16_avx2 (const float *x, uint16_t *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128 ((__m128i *) (y + i),
                          _mm256_cvtps_ph (_mm256_loadu_ps (x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y [i] = quant_f32_to_f16 (x [i]);
}

static AVX2_TARGET void
s_row_to_f32_avx2 (ggml_type_t type, const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps (y + i, s_load_weights_avx2 (x, i, type));
    for (; i < n; i++)
        y [i] = s_weight_avx2 (x, i, type);
}
#endif

void
kernels_row_to_f32 (ggml_type_t type, const void *x, float *y, size_t n)
{
    if (type == GGML_TYPE_F32) {
        memcpy (y, x, n * sizeof (float));
        return;
    }
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2 && (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16)) {
        s_row_to_f32_avx2 (type, x, y, n);
        return;
    }
#endif
    quant_dequantize_row (type, x, y, n);
}

void
kernels_f16_mad (uint16_t *y, const uint16_t *x, float v, size_t n)
{
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2) {
        s_f16_mad_avx2 (y, x, v, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        y [i] = quant_f32_to_f16 (fmaf (quant_f16_to_f32 (x [i]), v, quant_f16_to_f32 (y [i])));
}

void
kernels_f16_scale (uint16_t *y, float v, size_t n)
{
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2) {
        s_f16_scale_avx2 (y, v, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        y [i] = quant_f32_to_f16 (quant_f16_to_f32 (y [i]) * v);
}

void
kernels_f16_weighted_sum (uint16_t *sum, const uint16_t *values, size_t value_stride,
                          const float *scales, const float *weights, size_t n_positions,
                          size_t n)
{
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2) {
        s_f16_weighted_sum_avx2 (sum, values, value_stride, scales, weights, n_positions, n);
        return;
    }
#endif
    for (size_t t = 0; t < n_positions; t++) {
        if (scales [t] != 1.0f)
            kernels_f16_scale (sum, scales [t], n);
        kernels_f16_mad (sum, values + t * value_stride, weights [t], n);
    }
}

void
kernels_f16_weighted_sums (uint16_t *sums, size_t n_sums, const uint16_t *values,
                           size_t value_stride, const float *scales, const float *weights,
                           size_t weight_stride, size_t n_positions, size_t n)
{
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2) {
        s_f16_weighted_sums_avx2 (sums, n_sums, values, value_stride, scales, weights,
                                  weight_stride, n_positions, n);
        return;
    }
#endif
    //  The reference: one head after the other, each position's steps one by one.
    for (size_t s = 0; s < n_sums; s++) {
        uint16_t *sum = sums + s * n;
        const float *head_scales = scales + s * weight_stride;
        const float *head_weights = weights + s * weight_stride;
        for (size_t t = 0; t < n_positions; t++) {
            if (head_scales [t] != 1.0f)
                kernels_f16_scale (sum, head_scales [t], n);
            kernels_f16_mad (sum, values + t * value_stride, head_weights [t], n);
        }
    }
}

void
kernels_f32_to_f16 (const float *x, uint16_t *y, size_t n)
{
#if defined(KERNELS_HAVE_X86)
    if (kernels_level () == KERNELS_AVX2) {
        s_f32_to_f16_avx2 (x, y, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        y [i] = quant_f32_to_f16 (x [i]);
}

//  --- OpenBLAS ------------------------------------------------------------------------------

bool
kernels_blas_available (void)
{
    kernels_init ();
    return s_sgemm && atomic_load (&s_blas_enabled);
}

void
kernels_set_blas (bool enabled)
{
    kernels_init ();
    atomic_store (&s_blas_enabled, enabled && s_sgemm);
}

int
kernels_sgemm (size_t m, size_t n, size_t k, const float *a, size_t lda,
               const float *b, size_t ldb, float *c, size_t ldc)
{
    if (!kernels_blas_available () || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX
    ||  lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX)
        return -1;
    s_sgemm (101, 111, 112, (int) m, (int) n, (int) k, 1.0f, a, (int) lda, b, (int) ldb,
             0.0f, c, (int) ldc);
    return 0;
}

//  --- Thread pool ---------------------------------------------------------------------------
//
//  A run is published as a generation number in the top 32 bits of `state`, whose low
//  32 bits count the tasks taken; a thread takes a task by incrementing the count with a
//  compare-and-swap that also checks the generation, so a thread that comes late (the
//  run is over, or a new one began) takes nothing. The caller waits only for the tasks
//  to be done, never for the other threads to show up: on a busy machine a thread that
//  is not scheduled just does less of the work.
//
//  A run's function, argument and task count sit in one of two slots, by the parity of
//  its generation. The caller fills the slot of run g + 1 while run g may still look
//  open to a late thread (all its tasks taken, its generation still published); that
//  thread reads run g's slot, untouched, and its compare-and-swap fails once it sees
//  the count. Slot g is rewritten only for run g + 2, after run g + 1 was published,
//  when no compare-and-swap for generation g can succeed any more.

//  How long an idle thread waits for the next run before it sleeps: long enough to
//  bridge the serial work between the products of one forward pass (norms, RoPE,
//  sampling), short enough not to hold a core once the work stops. The first part it
//  spins, then it yields the core to whatever else wants it.
#define POOL_SPIN_NS 50000
#define POOL_YIELD_NS 500000

typedef struct {
    kernels_pool_t *pool;
    uint32_t index;                     //  1 .. n_threads - 1
} pool_thread_t;

//  What a run does, written before its generation is published.
typedef struct {
    _Atomic (kernels_task_fn *) fn;
    _Atomic (void *) arg;
    atomic_uint n_tasks;
} pool_run_t;

struct _kernels_pool_t {
    uint32_t n_threads;                 //  the caller too
    uint32_t n_started;                 //  threads running
    pthread_t *threads;
    pool_thread_t *thread_args;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    atomic_bool stopping;
    uint32_t generation;                //  of the last run (the caller's copy)
    _Atomic uint64_t state;             //  generation << 32 | tasks taken
    atomic_uint done;                   //  tasks finished in this run
    pool_run_t runs [2];                //  by generation % 2
};

static void
s_pause (void)
{
#if defined(KERNELS_HAVE_X86)
    __builtin_ia32_pause ();
#endif
}

static int64_t
s_now_ns (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000000000 + now.tv_nsec;
}

//  Take and run tasks of run `generation` until none is left.
static void
s_pool_work (kernels_pool_t *self, uint32_t generation, uint32_t thread)
{
    pool_run_t *run = &self->runs [generation % 2];
    kernels_task_fn *fn = atomic_load (&run->fn);
    void *arg = atomic_load (&run->arg);
    uint32_t n_tasks = atomic_load (&run->n_tasks);
    uint64_t state = atomic_load (&self->state);
    for (;;) {
        if ((uint32_t) (state >> 32) != generation || (uint32_t) state >= n_tasks)
            return;                     //  another run, or every task taken
        if (!atomic_compare_exchange_weak (&self->state, &state, state + 1))
            continue;                   //  state was reloaded: look again
        //  The task is ours, so the run is still this one and fn, arg, n_tasks are its.
        fn (arg, (uint32_t) state, thread);
        atomic_fetch_add (&self->done, 1);
        state = atomic_load (&self->state);
    }
}

static void *
s_pool_thread (void *arg)
{
    pool_thread_t *me = arg;
    kernels_pool_t *self = me->pool;
    uint32_t seen = 0;
    for (;;) {
        //  Wait for a run: spin a while, yield a while, then sleep.
        int64_t wait_start = s_now_ns ();
        for (uint32_t spins = 1; ; spins++) {
            if ((uint32_t) (atomic_load (&self->state) >> 32) != seen
            ||  atomic_load (&self->stopping))
                break;
            int64_t waited = spins % 64 == 0? s_now_ns () - wait_start: 0;
            if (waited > POOL_YIELD_NS) {
                pthread_mutex_lock (&self->mutex);
                while ((uint32_t) (atomic_load (&self->state) >> 32) == seen
                &&     !atomic_load (&self->stopping))
                    pthread_cond_wait (&self->wake, &self->mutex);
                pthread_mutex_unlock (&self->mutex);
                break;
            }
            if (waited > POOL_SPIN_NS)
                sched_yield ();
            else
                s_pause ();
        }
        if (atomic_load (&self->stopping))
            return NULL;
        seen = (uint32_t) (atomic_load (&self->state) >> 32);
        s_pool_work (self, seen, me->index);
    }
}

kernels_pool_t *
kernels_pool_new (uint32_t n_threads)
{
    if (n_threads == 0)
        return NULL;
    kernels_init ();
    kernels_pool_t *self = calloc (1, sizeof (kernels_pool_t));
    if (!self)
        return NULL;
    self->n_threads = n_threads;
    self->threads = calloc (n_threads, sizeof (pthread_t));
    self->thread_args = calloc (n_threads, sizeof (pool_thread_t));
    pthread_mutex_init (&self->mutex, NULL);
    pthread_cond_init (&self->wake, NULL);
    atomic_init (&self->stopping, false);
    atomic_init (&self->state, 0);
    atomic_init (&self->done, 0);
    for (int i = 0; i < 2; i++) {
        atomic_init (&self->runs [i].fn, NULL);
        atomic_init (&self->runs [i].arg, NULL);
        atomic_init (&self->runs [i].n_tasks, 0);
    }
    if (!self->threads || !self->thread_args) {
        kernels_pool_destroy (&self);
        return NULL;
    }
    for (uint32_t i = 1; i < n_threads; i++) {
        self->thread_args [i].pool = self;
        self->thread_args [i].index = i;
        if (pthread_create (&self->threads [i], NULL, s_pool_thread, &self->thread_args [i]) != 0) {
            kernels_pool_destroy (&self);
            return NULL;
        }
        self->n_started++;
    }
    return self;
}

void
kernels_pool_destroy (kernels_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    kernels_pool_t *self = *self_p;
    pthread_mutex_lock (&self->mutex);
    atomic_store (&self->stopping, true);
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->mutex);
    for (uint32_t i = 1; i <= self->n_started; i++)
        pthread_join (self->threads [i], NULL);
    pthread_mutex_destroy (&self->mutex);
    pthread_cond_destroy (&self->wake);
    free (self->threads);
    free (self->thread_args);
    free (self);
    *self_p = NULL;
}

uint32_t
kernels_pool_threads (const kernels_pool_t *self)
{
    return self? self->n_threads: 1;
}

void
kernels_pool_run (kernels_pool_t *self, kernels_task_fn *fn, void *arg, uint32_t n_tasks)
{
    if (!self || self->n_started == 0 || n_tasks <= 1) {
        for (uint32_t task = 0; task < n_tasks; task++)
            fn (arg, task, 0);
        return;
    }
    self->generation++;
    pool_run_t *run = &self->runs [self->generation % 2];
    atomic_store (&run->fn, fn);
    atomic_store (&run->arg, arg);
    atomic_store (&run->n_tasks, n_tasks);
    atomic_store (&self->done, 0);         //  every task of the last run is done
    pthread_mutex_lock (&self->mutex);
    atomic_store (&self->state, (uint64_t) self->generation << 32);
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->mutex);
    s_pool_work (self, self->generation, 0);
    //  Wait for the tasks other threads took; let them have the core if they share it.
    for (uint32_t spins = 1; atomic_load (&self->done) < n_tasks; spins++) {
        if (spins > 256)
            sched_yield ();
        else
            s_pause ();
    }
}
