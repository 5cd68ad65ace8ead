/*  test_kernels — npu/kernels: the activation quantizers against ggml's rules, every
    reference product against a dequantize-to-double sum, every fast product against its
    reference (float paths within a stated rounding bound, integer paths exactly, on data
    chosen so that every float step is exact), products of many rows against one row at
    a time, the F16 vector helpers (the weighted sums of heads that share their values
    against each head's alone), the level switch (ZLLM_KERNELS=scalar), OpenBLAS's
    sgemm when it is there, and the thread pool.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"

static const ggml_type_t s_types [] = {
    GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
    GGML_TYPE_Q4_K, GGML_TYPE_Q6_K
};
#define TYPE_COUNT (sizeof s_types / sizeof s_types [0])

static char *s_program;                 //  argv[0], to run ourselves with another env

//  --- Helpers -----------------------------------------------------------------------------

static uint64_t s_random_state = 0x9E3779B97F4A7C15ULL;

static uint64_t
s_random (void)
{
    s_random_state ^= s_random_state >> 12;
    s_random_state ^= s_random_state << 25;
    s_random_state ^= s_random_state >> 27;
    return s_random_state * 2685821657736338717ULL;
}

//  Uniform in [-1, 1).
static float
s_uniform (void)
{
    return (float) ((double) (s_random () >> 11) / 4503599627370496.0 - 1.0);
}

//  An integer in low .. high.
static int
s_integer (int low, int high)
{
    return low + (int) (s_random () % (uint64_t) (high - low + 1));
}

static bool
s_is_quantized (ggml_type_t type)
{
    return ggml_type_block_elements (type) > 1;
}

//  A weight row of n random values stored as `type` (malloc'd).
static void *
s_random_weights (ggml_type_t type, size_t n, float scale)
{
    float *values = malloc (n * sizeof (float));
    void *row = malloc (ggml_row_bytes (type, n));
    assert_non_null (values);
    assert_non_null (row);
    for (size_t i = 0; i < n; i++)
        values [i] = scale * s_uniform ();
    assert_int_equal (quant_quantize_row (type, values, row, n), 0);
    free (values);
    return row;
}

//  An activation row of n random values prepared for `type` (malloc'd).
static void *
s_random_activation (ggml_type_t type, size_t n, float scale)
{
    float *values = malloc (n * sizeof (float));
    void *row = malloc (kernels_activation_row_bytes (type, n));
    assert_non_null (values);
    assert_non_null (row);
    for (size_t i = 0; i < n; i++)
        values [i] = scale * s_uniform ();
    kernels_prepare_activation (type, values, row, n);
    free (values);
    return row;
}

//  The prepared activation row as floats: the values the product multiplies by.
static void
s_activation_values (ggml_type_t type, const void *activation, float *out, size_t n)
{
    if (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0) {
        const quant_block_q8_0_t *blocks = activation;
        for (size_t i = 0; i < n; i++)
            out [i] = quant_f16_to_f32 (blocks [i / 32].d) * blocks [i / 32].qs [i % 32];
    }
    else
    if (type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q6_K) {
        const kernels_block_q8_K_t *blocks = activation;
        for (size_t i = 0; i < n; i++)
            out [i] = blocks [i / 256].d * blocks [i / 256].qs [i % 256];
    }
    else
        memcpy (out, activation, n * sizeof (float));
}

//  The exact dot product of the row's values, in double, and the sum of the absolute
//  values of its terms (for rounding bounds).
static double
s_exact_dot (ggml_type_t type, const void *weights, const void *activation, size_t n,
             double *magnitude)
{
    float *w = malloc (n * sizeof (float));
    float *a = malloc (n * sizeof (float));
    assert_non_null (w);
    assert_non_null (a);
    assert_int_equal (quant_dequantize_row (type, weights, w, n), 0);
    s_activation_values (type, activation, a, n);
    double sum = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (double) w [i] * a [i];
        total += fabs ((double) w [i] * a [i]);
    }
    free (w);
    free (a);
    if (magnitude)
        *magnitude = total;
    return sum;
}

//  Sizes to try for a type: odd ones for the float types, a few blocks for the others.
static size_t
s_sizes (ggml_type_t type, size_t *sizes)
{
    static const size_t plain [] = { 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 577, 1536, 4099 };
    static const size_t blocks_32 [] = { 32, 64, 96, 160, 576, 1536, 4096 };
    static const size_t blocks_256 [] = { 256, 512, 768, 1536, 2304, 4096 };
    const size_t *chosen = plain;
    size_t count = sizeof plain / sizeof plain [0];
    if (ggml_type_block_elements (type) == 32) {
        chosen = blocks_32;
        count = sizeof blocks_32 / sizeof blocks_32 [0];
    }
    else
    if (ggml_type_block_elements (type) == 256) {
        chosen = blocks_256;
        count = sizeof blocks_256 / sizeof blocks_256 [0];
    }
    memcpy (sizes, chosen, count * sizeof (size_t));
    return count;
}

static bool
s_have_fast (void)
{
    if (kernels_best_level () == KERNELS_SCALAR) {
        print_message ("# this CPU has no AVX2 + FMA + F16C: only the reference runs\n");
        return false;
    }
    return true;
}

//  --- Activations -------------------------------------------------------------------------

static void
test_quantize_q8_0 (void **state)
{
    (void) state;
    //  amax 127: the multiplier is exactly 1, so halves show the rounding (to even).
    float x [64] = { 0 };
    x [0] = 127;
    x [1] = 2.5f;
    x [2] = 3.5f;
    x [3] = -2.5f;
    x [4] = -0.5f;
    x [5] = 1.49f;
    x [6] = -127;
    quant_block_q8_0_t blocks [2];
    kernels_quantize_row_q8_0 (x, blocks, 64);
    assert_true (quant_f16_to_f32 (blocks [0].d) == 1.0f);
    const int expected [7] = { 127, 2, 4, -2, 0, 1, -127 };
    for (int i = 0; i < 7; i++)
        assert_int_equal (blocks [0].qs [i], expected [i]);
    //  An all-zero block: d 0 and zeros.
    assert_int_equal (blocks [1].d, 0);
    for (int i = 0; i < 32; i++)
        assert_int_equal (blocks [1].qs [i], 0);

    //  The multiplier is 127 / amax (as a float), not 1 / d.
    float y [32];
    for (int i = 0; i < 32; i++)
        y [i] = 3.0f * s_uniform ();
    y [7] = 3.0f;
    kernels_quantize_row_q8_0 (y, blocks, 32);
    float inverse = 127.0f / 3.0f;
    for (int i = 0; i < 32; i++)
        assert_int_equal (blocks [0].qs [i], (int) nearbyintf (y [i] * inverse));
    assert_int_equal (blocks [0].d, quant_f32_to_f16 (3.0f / 127.0f));
}

static void
test_quantize_q8_K (void **state)
{
    (void) state;
    float x [512] = { 0 };
    //  Block 0: the extreme is -127, so the scale is exactly 1.
    x [0] = -127;
    x [1] = 2.5f;
    x [2] = 3.5f;
    x [3] = 127;
    x [20] = -5;
    //  Block 1: the extreme is +100: the scale is -1.27 and d is its inverse.
    x [256] = 100;
    x [257] = -100;
    x [258] = 50;
    kernels_block_q8_K_t blocks [2];
    kernels_quantize_row_q8_K (x, blocks, 512);
    assert_true (blocks [0].d == 1.0f);
    assert_int_equal (blocks [0].qs [0], -127);
    assert_int_equal (blocks [0].qs [1], 2);         //  ties to even
    assert_int_equal (blocks [0].qs [2], 4);
    assert_int_equal (blocks [0].qs [3], 127);
    assert_int_equal (blocks [0].bsums [0], -127 + 2 + 4 + 127);
    assert_int_equal (blocks [0].bsums [1], -5);
    float scale = -127.0f / 100.0f;
    assert_true (blocks [1].d == 1 / scale);
    assert_int_equal (blocks [1].qs [0], -127);
    assert_int_equal (blocks [1].qs [1], 127);       //  clamped at 127
    assert_int_equal (blocks [1].qs [2], (int) nearbyintf (scale * 50));
    for (int j = 0; j < 16; j++) {
        int sum = 0;
        for (int i = 0; i < 16; i++)
            sum += blocks [1].qs [16 * j + i];
        assert_int_equal (blocks [1].bsums [j], sum);
    }
    //  An all-zero block.
    memset (x, 0, sizeof x);
    kernels_quantize_row_q8_K (x, blocks, 256);
    assert_true (blocks [0].d == 0.0f);
    for (int j = 0; j < 16; j++)
        assert_int_equal (blocks [0].bsums [j], 0);
}

//  F16 and BF16 activations are the values rounded through the 16-bit type; the fast
//  rounding equals the scalar one.
static void
test_prepare_rounding (void **state)
{
    (void) state;
    const size_t n = 1003;
    float *x = malloc (n * sizeof (float));
    float *fast = malloc (n * sizeof (float));
    float *plain = malloc (n * sizeof (float));
    for (size_t i = 0; i < n; i++)
        x [i] = s_uniform () * powf (2.0f, (float) s_integer (-30, 20));
    x [0] = 65520.0f;                   //  rounds to infinity in F16
    x [1] = 1e-8f;                      //  F16 subnormal
    kernels_set_level (KERNELS_SCALAR);
    kernels_prepare_activation (GGML_TYPE_F16, x, plain, n);
    for (size_t i = 0; i < n; i++)
        assert_true (plain [i] == quant_f16_to_f32 (quant_f32_to_f16 (x [i])));
    kernels_set_level (kernels_best_level ());
    kernels_prepare_activation (GGML_TYPE_F16, x, fast, n);
    assert_memory_equal (fast, plain, n * sizeof (float));
    kernels_prepare_activation (GGML_TYPE_BF16, x, fast, n);
    for (size_t i = 0; i < n; i++)
        assert_true (fast [i] == quant_bf16_to_f32 (quant_f32_to_bf16 (x [i])));
    free (x);
    free (fast);
    free (plain);
}

//  The fast Q8_0 quantizer gives the reference's bytes, ties and zero blocks included;
//  the fast row conversions give quant_dequantize_row's floats.
static void
test_fast_conversions (void **state)
{
    (void) state;
    const size_t n = 32 * 41;
    float *x = malloc (n * sizeof (float));
    quant_block_q8_0_t *fast = malloc (n / 32 * sizeof (quant_block_q8_0_t));
    quant_block_q8_0_t *plain = malloc (n / 32 * sizeof (quant_block_q8_0_t));
    for (int round = 0; round < 100; round++) {
        for (size_t i = 0; i < n; i++)
            x [i] = s_uniform () * powf (2.0f, (float) s_integer (-20, 10));
        //  Blocks whose multiplier is exactly 1 or 2, so that halves are exact ties;
        //  and an all-zero block.
        for (int i = 0; i < 32; i++) {
            x [i] = (float) s_integer (-254, 254) / 2;
            x [32 + i] = (float) s_integer (-254, 254) / 4;
            x [64 + i] = 0;
        }
        x [0] = 127;
        x [32] = -63.5f;
        kernels_set_level (KERNELS_SCALAR);
        kernels_quantize_row_q8_0 (x, plain, n);
        kernels_set_level (kernels_best_level ());
        kernels_quantize_row_q8_0 (x, fast, n);
        assert_memory_equal (fast, plain, n / 32 * sizeof (quant_block_q8_0_t));
    }
    const ggml_type_t types [3] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16 };
    float *expected = malloc (n * sizeof (float));
    float *converted = malloc (n * sizeof (float));
    for (int t = 0; t < 3; t++)
        for (size_t length = 1; length < 40; length += 3) {
            void *row = s_random_weights (types [t], length, 100.0f);
            assert_int_equal (quant_dequantize_row (types [t], row, expected, length), 0);
            for (int level = 0; level <= (int) kernels_best_level (); level++) {
                kernels_set_level ((kernels_level_t) level);
                kernels_row_to_f32 (types [t], row, converted, length);
                assert_memory_equal (converted, expected, length * sizeof (float));
            }
            free (row);
        }
    kernels_set_level (kernels_best_level ());
    free (x);
    free (fast);
    free (plain);
    free (expected);
    free (converted);
}

//  --- Products ----------------------------------------------------------------------------

//  The reference product is the dot product of the values it stands for.
static void
test_reference_products (void **state)
{
    (void) state;
    kernels_set_level (KERNELS_SCALAR);
    for (size_t t = 0; t < TYPE_COUNT; t++) {
        ggml_type_t type = s_types [t];
        size_t sizes [16];
        size_t count = s_sizes (type, sizes);
        for (size_t s = 0; s < count; s++) {
            size_t n = sizes [s];
            void *w = s_random_weights (type, n, 1.0f);
            void *a = s_random_activation (type, n, 3.0f);
            double magnitude;
            double exact = s_exact_dot (type, w, a, n, &magnitude);
            float result = kernels_dot (type, n, w, a);
            //  Double sums, then one rounding to float (the block scales' product is
            //  rounded to float first: a relative 2^-24 per term).
            double bound = 2.4e-7 * magnitude + 1.2e-7 * fabs (exact) + 1e-30;
            if (fabs (result - exact) > bound)
                fail_msg ("%s n=%zu: reference %.9g, exact %.9g", ggml_type_name (type), n,
                          (double) result, exact);
            free (w);
            free (a);
        }
    }
    kernels_set_level (kernels_best_level ());
}

//  Fast against reference on random data: within float rounding. The fast sums run in
//  float lanes: each lane adds at most n / 8 terms (blocks for the quantized types),
//  then the lanes are added, so |error| <= (steps + 16) * 2^-24 * sum |terms|.
static void
test_fast_products (void **state)
{
    (void) state;
    if (!s_have_fast ())
        return;
    double worst [TYPE_COUNT] = { 0 };
    for (size_t t = 0; t < TYPE_COUNT; t++) {
        ggml_type_t type = s_types [t];
        size_t sizes [16];
        size_t count = s_sizes (type, sizes);
        for (size_t s = 0; s < count; s++)
            for (int round = 0; round < 3; round++) {
                size_t n = sizes [s];
                void *w = s_random_weights (type, n, 1.0f);
                void *a = s_random_activation (type, n, round == 2? 1e-3f: 2.0f);
                double magnitude;
                s_exact_dot (type, w, a, n, &magnitude);
                kernels_set_level (KERNELS_SCALAR);
                float reference = kernels_dot (type, n, w, a);
                kernels_set_level (KERNELS_AVX2);
                float fast = kernels_dot (type, n, w, a);
                size_t steps = s_is_quantized (type)? n / ggml_type_block_elements (type): n / 8;
                double bound = (double) (steps + 16) * 6e-8 * magnitude + 1e-30;
                double error = fabs ((double) fast - reference);
                if (error > bound)
                    fail_msg ("%s n=%zu: fast %.9g, reference %.9g (bound %.3g)",
                              ggml_type_name (type), n, (double) fast, (double) reference, bound);
                if (magnitude > 0 && error / magnitude > worst [t])
                    worst [t] = error / magnitude;
                free (w);
                free (a);
            }
    }
    for (size_t t = 0; t < TYPE_COUNT; t++)
        print_message ("# %-5s fast vs reference: worst |difference| / sum |terms| = %.2g\n",
                       ggml_type_name (s_types [t]), worst [t]);
}

//  --- Integer paths, exactly ----------------------------------------------------------------
//
//  Weight and activation blocks built with power-of-two scales and small integers, so
//  that every partial sum, in any order, is exact in float: the fast and reference
//  products must then both equal the exact value, bit for bit.

static uint16_t
s_power_of_two_f16 (void)
{
    return quant_f32_to_f16 (ldexpf (1.0f, s_integer (-1, 1)));
}

static void
s_pack_q4_K_scales (uint8_t *packed, const int *scale, const int *min)
{
    memset (packed, 0, 12);
    for (int j = 0; j < 4; j++) {
        packed [j] = (uint8_t) scale [j];
        packed [j + 4] = (uint8_t) min [j];
    }
    for (int j = 4; j < 8; j++) {
        packed [j + 4] = (uint8_t) ((scale [j] & 0x0F) | ((min [j] & 0x0F) << 4));
        packed [j - 4] |= (uint8_t) ((scale [j] >> 4) << 6);
        packed [j] |= (uint8_t) ((min [j] >> 4) << 6);
    }
}

//  A weight row of `type` with exact-friendly contents; `extreme` fills it with the
//  largest magnitudes the format holds instead (for the overflow check).
static void *
s_integer_weights (ggml_type_t type, size_t n, bool extreme)
{
    size_t blocks = n / ggml_type_block_elements (type);
    uint8_t *row = malloc (ggml_row_bytes (type, n));
    assert_non_null (row);
    for (size_t b = 0; b < blocks; b++) {
        if (type == GGML_TYPE_Q8_0) {
            quant_block_q8_0_t block;
            block.d = s_power_of_two_f16 ();
            for (int i = 0; i < 32; i++)
                block.qs [i] = (int8_t) (extreme? (i % 2? -128: 127): s_integer (-127, 127));
            memcpy (row + b * sizeof block, &block, sizeof block);
        }
        else
        if (type == GGML_TYPE_Q4_0) {
            quant_block_q4_0_t block;
            block.d = s_power_of_two_f16 ();
            for (int i = 0; i < 16; i++)
                block.qs [i] = (uint8_t) (extreme? (i % 2? 0x00: 0xFF): s_integer (0, 255));
            memcpy (row + b * sizeof block, &block, sizeof block);
        }
        else
        if (type == GGML_TYPE_Q4_K) {
            quant_block_q4_K_t block;
            block.d = s_power_of_two_f16 ();
            block.dmin = s_power_of_two_f16 ();
            int scale [8], min [8];
            for (int j = 0; j < 8; j++) {
                scale [j] = extreme? 63: s_integer (0, 15);
                min [j] = extreme? 63: s_integer (0, 15);
            }
            s_pack_q4_K_scales (block.scales, scale, min);
            for (int i = 0; i < 128; i++)
                block.qs [i] = (uint8_t) (extreme? 0xFF: s_integer (0, 255));
            memcpy (row + b * sizeof block, &block, sizeof block);
        }
        else {
            quant_block_q6_K_t block;
            block.d = s_power_of_two_f16 ();
            for (int j = 0; j < 16; j++)
                block.scales [j] = (int8_t) (extreme? (j % 2? -128: 127): s_integer (-15, 15));
            for (int i = 0; i < 128; i++)
                block.ql [i] = (uint8_t) (extreme? (i % 3? 0xFF: 0x00): s_integer (0, 255));
            for (int i = 0; i < 64; i++)
                block.qh [i] = (uint8_t) (extreme? (i % 5? 0xFF: 0x00): s_integer (0, 255));
            memcpy (row + b * sizeof block, &block, sizeof block);
        }
    }
    return row;
}

static void *
s_integer_activation (ggml_type_t type, size_t n, int largest)
{
    void *row = malloc (kernels_activation_row_bytes (type, n));
    assert_non_null (row);
    if (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0) {
        quant_block_q8_0_t *blocks = row;
        for (size_t b = 0; b < n / 32; b++) {
            blocks [b].d = s_power_of_two_f16 ();
            for (int i = 0; i < 32; i++)
                blocks [b].qs [i] = (int8_t) s_integer (-largest, largest);
        }
    }
    else {
        kernels_block_q8_K_t *blocks = row;
        for (size_t b = 0; b < n / 256; b++) {
            blocks [b].d = ldexpf (1.0f, s_integer (-1, 0));
            for (int i = 0; i < 256; i++)
                blocks [b].qs [i] = (int8_t) s_integer (-largest, largest);
            for (int j = 0; j < 16; j++) {
                int sum = 0;
                for (int i = 0; i < 16; i++)
                    sum += blocks [b].qs [16 * j + i];
                blocks [b].bsums [j] = (int16_t) sum;
            }
        }
    }
    return row;
}

static void
test_integer_products_exact (void **state)
{
    (void) state;
    //  The sizes and largest activation keep every partial sum below 2^24 units of
    //  the smallest scale product (see each type's bound in the comments).
    const struct { ggml_type_t type; size_t n; int largest; } cases [] = {
        { GGML_TYPE_Q8_0, 256, 15 },     //  32 * 127 * 15 * 16 per block, 8 blocks
        { GGML_TYPE_Q4_0, 512, 127 },    //  32 * 8 * 127 * 16 per block, 16 blocks
        { GGML_TYPE_Q4_K, 512, 15 },     //  8 * 32 * 15 * 15 * 15 * 8 per block, 2 blocks
        { GGML_TYPE_Q6_K, 512, 7 },      //  16 * 16 * 32 * 7 * 15 * 8 per block, 2 blocks
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++)
        for (int round = 0; round < 50; round++) {
            ggml_type_t type = cases [c].type;
            size_t n = cases [c].n;
            void *w = s_integer_weights (type, n, false);
            void *a = s_integer_activation (type, n, cases [c].largest);
            double exact = s_exact_dot (type, w, a, n, NULL);
            assert_true (fabs (exact) < 16777216.0 / 16);
            kernels_set_level (KERNELS_SCALAR);
            float reference = kernels_dot (type, n, w, a);
            kernels_set_level (kernels_best_level ());
            float fast = kernels_dot (type, n, w, a);
            if (reference != (float) exact || fast != (float) exact)
                fail_msg ("%s round %d: exact %.1f, reference %.9g, fast %.9g",
                          ggml_type_name (type), round, exact, (double) reference, (double) fast);
            free (w);
            free (a);
        }
}

//  The largest magnitudes each format holds (weights of -128, 15, 63 and scales of 63,
//  -128; activations of +-127): the 16-bit pair sums must not saturate.
static void
test_integer_products_extreme (void **state)
{
    (void) state;
    const ggml_type_t types [4] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K,
                                    GGML_TYPE_Q6_K };
    for (int t = 0; t < 4; t++) {
        size_t n = 512;
        void *w = s_integer_weights (types [t], n, true);
        void *a = s_integer_activation (types [t], n, 127);
        //  Make the activations the extremes too: +-127 with the weights' signs.
        if (types [t] == GGML_TYPE_Q8_0 || types [t] == GGML_TYPE_Q4_0) {
            quant_block_q8_0_t *blocks = a;
            for (size_t b = 0; b < n / 32; b++)
                for (int i = 0; i < 32; i++)
                    blocks [b].qs [i] = (int8_t) (i % 2? -127: 127);
        }
        else {
            kernels_block_q8_K_t *blocks = a;
            for (size_t b = 0; b < n / 256; b++) {
                for (int i = 0; i < 256; i++)
                    blocks [b].qs [i] = (int8_t) (i % 7? 127: -127);
                for (int j = 0; j < 16; j++) {
                    int sum = 0;
                    for (int i = 0; i < 16; i++)
                        sum += blocks [b].qs [16 * j + i];
                    blocks [b].bsums [j] = (int16_t) sum;
                }
            }
        }
        double magnitude;
        double exact = s_exact_dot (types [t], w, a, n, &magnitude);
        kernels_set_level (KERNELS_SCALAR);
        float reference = kernels_dot (types [t], n, w, a);
        kernels_set_level (kernels_best_level ());
        float fast = kernels_dot (types [t], n, w, a);
        double bound = 1e-6 * magnitude;
        if (fabs (reference - exact) > bound || fabs (fast - exact) > bound)
            fail_msg ("%s extremes: exact %.1f, reference %.9g, fast %.9g",
                      ggml_type_name (types [t]), exact, (double) reference, (double) fast);
        free (w);
        free (a);
    }
}

//  kernels_matmul over many weight and activation rows gives, for every pair, exactly
//  what kernels_dot gives for that pair alone (at both levels).
static void
test_matmul_equals_dot (void **state)
{
    (void) state;
    for (int level = 0; level <= (int) kernels_best_level (); level++) {
        kernels_set_level ((kernels_level_t) level);
        for (size_t t = 0; t < TYPE_COUNT; t++) {
            ggml_type_t type = s_types [t];
            size_t n = s_is_quantized (type)? 512: 77;
            size_t n_rows = 37, n_activations = 7;
            size_t weight_stride = ggml_row_bytes (type, n);
            size_t activation_stride = kernels_activation_row_bytes (type, n);
            uint8_t *weights = malloc (n_rows * weight_stride);
            uint8_t *activations = malloc (n_activations * activation_stride);
            float *out = malloc (n_activations * (n_rows + 3) * sizeof (float));
            for (size_t r = 0; r < n_rows; r++) {
                void *row = s_random_weights (type, n, 0.5f);
                memcpy (weights + r * weight_stride, row, weight_stride);
                free (row);
            }
            for (size_t m = 0; m < n_activations; m++) {
                void *row = s_random_activation (type, n, 1.0f);
                memcpy (activations + m * activation_stride, row, activation_stride);
                free (row);
            }
            //  Rows 5..36 only, into a wider output (stride n_rows + 3).
            kernels_matmul (type, n, weights + 5 * weight_stride, weight_stride, n_rows - 5,
                            activations, activation_stride, n_activations, out, n_rows + 3);
            for (size_t m = 0; m < n_activations; m++)
                for (size_t r = 5; r < n_rows; r++) {
                    float alone = kernels_dot (type, n, weights + r * weight_stride,
                                               activations + m * activation_stride);
                    float together = out [m * (n_rows + 3) + (r - 5)];
                    if (memcmp (&alone, &together, sizeof (float)) != 0)
                        fail_msg ("%s level %s: row %zu, activation %zu: %.9g alone, %.9g in "
                                  "a matmul", ggml_type_name (type),
                                  kernels_level_name ((kernels_level_t) level), r, m,
                                  (double) alone, (double) together);
                }
            free (weights);
            free (activations);
            free (out);
        }
    }
    kernels_set_level (kernels_best_level ());
}

//  One kernels_matmul of n_rows weight rows against n_activations activation rows, with
//  the rows `weight_pad` and `activation_pad` bytes further apart than they need and the
//  output three floats wider: every result equals kernels_dot's for that pair alone, bit
//  for bit, and the output's padding is left alone.
static void
s_check_matmul (ggml_type_t type, size_t n, size_t n_rows, size_t n_activations,
                size_t weight_pad, size_t activation_pad)
{
    size_t row_bytes = ggml_row_bytes (type, n);
    size_t weight_stride = row_bytes + weight_pad;
    size_t activation_bytes = kernels_activation_row_bytes (type, n);
    size_t activation_stride = activation_bytes + activation_pad;
    size_t out_stride = n_rows + 3;
    uint8_t *weights = malloc (n_rows * weight_stride + 1);
    uint8_t *activations = malloc (n_activations * activation_stride + 1);
    float *out = malloc ((n_activations * out_stride + 1) * sizeof (float));
    assert_non_null (weights);
    assert_non_null (activations);
    assert_non_null (out);
    memset (weights, 0x5A, n_rows * weight_stride);
    memset (activations, 0xA5, n_activations * activation_stride);
    for (size_t r = 0; r < n_rows; r++) {
        void *row = s_random_weights (type, n, 0.5f);
        memcpy (weights + r * weight_stride, row, row_bytes);
        free (row);
    }
    for (size_t m = 0; m < n_activations; m++) {
        void *row = s_random_activation (type, n, 1.0f + (float) m);
        memcpy (activations + m * activation_stride, row, activation_bytes);
        free (row);
    }
    for (size_t i = 0; i < n_activations * out_stride; i++)
        out [i] = 12345.0f;
    kernels_matmul (type, n, weights, weight_stride, n_rows, activations, activation_stride,
                    n_activations, out, out_stride);
    for (size_t m = 0; m < n_activations; m++) {
        for (size_t r = 0; r < n_rows; r++) {
            float alone = kernels_dot (type, n, weights + r * weight_stride,
                                       activations + m * activation_stride);
            float together = out [m * out_stride + r];
            if (memcmp (&alone, &together, sizeof (float)) != 0)
                fail_msg ("%s n=%zu, %zu x %zu rows, level %s: row %zu, activation %zu: "
                          "%.9g alone, %.9g in a matmul", ggml_type_name (type), n, n_rows,
                          n_activations, kernels_level_name (kernels_level ()), r, m,
                          (double) alone, (double) together);
        }
        for (size_t r = n_rows; r < out_stride; r++)
            assert_true (out [m * out_stride + r] == 12345.0f);
    }
    free (weights);
    free (activations);
    free (out);
}

//  The Q8_0 and Q4_0 matmul takes weight rows two at a time and activation rows four at
//  a time, with the block scales made floats first; the float matmul (n a multiple of 8)
//  takes eight weight rows at a time and adds up their sums together. Every count of
//  activation rows from 1 to 9 against weight row counts that are and are not multiples
//  of those, with padded strides; a chunk of activation rows and its remainder; Q8_0
//  rows too long for the scale buffers and float rows with a tail (the one-row paths).
//  Each pair must come out as it does alone, at both levels.
static void
test_matmul_blocking (void **state)
{
    (void) state;
    const ggml_type_t quantized [2] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_0 };
    const size_t quantized_sizes [4] = { 32, 96, 576, 1536 };
    const size_t quantized_rows [6] = { 1, 2, 3, 5, 8, 37 };
    const ggml_type_t floats [3] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16 };
    const size_t float_sizes [5] = { 8, 16, 64, 72, 77 };
    const size_t float_rows [6] = { 1, 7, 8, 9, 17, 45 };
    for (int level = 0; level <= (int) kernels_best_level (); level++) {
        kernels_set_level ((kernels_level_t) level);
        for (int t = 0; t < 2; t++) {
            for (int s = 0; s < 4; s++)
                for (int c = 0; c < 6; c++)
                    for (size_t m = 1; m <= 9; m++)
                        s_check_matmul (quantized [t], quantized_sizes [s], quantized_rows [c],
                                        m, (m % 3) * 2, (m % 2) * 34);
            //  Rows of 4096: a chunk is 60 activation rows (262144 bytes of 4352), so
            //  65 run as a chunk and a rest of 5; a tile is 2 weight rows of Q8_0.
            s_check_matmul (quantized [t], 4096, 7, 65, 0, 0);
            //  Rows of 1056 blocks, more than the scale buffers hold.
            s_check_matmul (quantized [t], 32 * 1056, 3, 5, 2, 2);
        }
        for (int t = 0; t < 3; t++) {
            for (int s = 0; s < 5; s++)
                for (int c = 0; c < 6; c++)
                    for (size_t m = 1; m <= 9; m++)
                        s_check_matmul (floats [t], float_sizes [s], float_rows [c], m,
                                        (m % 3) * 4, (m % 2) * 8);
            //  Rows of 4096 floats: a chunk is 16 activation rows, a tile 8 weight rows
            //  (F16: 16), so both run over several.
            s_check_matmul (floats [t], 4096, 19, 21, 0, 4);
        }
    }
    kernels_set_level (kernels_best_level ());
}

//  --- F16 vectors ---------------------------------------------------------------------------

static void
test_f16_vectors (void **state)
{
    (void) state;
    const size_t n = 203;
    uint16_t *x = malloc (n * sizeof (uint16_t));
    uint16_t *y_fast = malloc (n * sizeof (uint16_t));
    uint16_t *y_plain = malloc (n * sizeof (uint16_t));
    float *values = malloc (n * sizeof (float));
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < n; i++) {
            x [i] = quant_f32_to_f16 (4 * s_uniform ());
            y_plain [i] = quant_f32_to_f16 (100 * s_uniform ());
        }
        memcpy (y_fast, y_plain, n * sizeof (uint16_t));
        float v = s_uniform ();
        kernels_set_level (KERNELS_SCALAR);
        kernels_f16_mad (y_plain, x, v, n);
        //  The reference is the fused formula, element by element.
        kernels_set_level (kernels_best_level ());
        kernels_f16_mad (y_fast, x, v, n);
        assert_memory_equal (y_fast, y_plain, n * sizeof (uint16_t));

        kernels_set_level (KERNELS_SCALAR);
        kernels_f16_scale (y_plain, v, n);
        kernels_set_level (kernels_best_level ());
        kernels_f16_scale (y_fast, v, n);
        assert_memory_equal (y_fast, y_plain, n * sizeof (uint16_t));
    }
    //  The weighted sum over many positions equals the one-step calls, at both levels,
    //  for sums of 32-element runs and not (head sizes 64, 80, 8, 4, 100).
    const size_t head_sizes [5] = { 64, 80, 8, 4, 100 };
    const size_t n_positions = 57, value_stride = 133;
    uint16_t *values_f16 = malloc (n_positions * value_stride * sizeof (uint16_t));
    float scales [57], weights [57];
    for (size_t i = 0; i < n_positions * value_stride; i++)
        values_f16 [i] = quant_f32_to_f16 (3 * s_uniform ());
    for (size_t t = 0; t < n_positions; t++) {
        scales [t] = t % 5 == 0? expf (-2 * fabsf (s_uniform ())): 1.0f;
        weights [t] = t % 5 == 0? 1.0f: expf (-3 * fabsf (s_uniform ()));
    }
    scales [0] = 0;
    for (size_t h = 0; h < 5; h++) {
        size_t head = head_sizes [h];
        uint16_t expected [100] = { 0 }, got [100] = { 0 };
        kernels_set_level (KERNELS_SCALAR);
        for (size_t t = 0; t < n_positions; t++) {
            if (scales [t] != 1.0f)
                kernels_f16_scale (expected, scales [t], head);
            kernels_f16_mad (expected, values_f16 + t * value_stride, weights [t], head);
        }
        for (int level = 0; level <= (int) kernels_best_level (); level++) {
            kernels_set_level ((kernels_level_t) level);
            memset (got, 0, sizeof got);
            kernels_f16_weighted_sum (got, values_f16, value_stride, scales, weights,
                                      n_positions, head);
            assert_memory_equal (got, expected, head * sizeof (uint16_t));
        }
    }
    free (values_f16);

    //  F32 to F16, special values included.
    for (size_t i = 0; i < n; i++)
        values [i] = s_uniform () * powf (2.0f, (float) s_integer (-28, 18));
    values [0] = INFINITY;
    values [1] = -INFINITY;
    values [2] = 70000.0f;
    values [3] = 6e-8f;
    values [4] = -0.0f;
    values [5] = 65504.0f;
    kernels_set_level (kernels_best_level ());
    kernels_f32_to_f16 (values, y_fast, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal (y_fast [i], quant_f32_to_f16 (values [i]));
    free (x);
    free (y_fast);
    free (y_plain);
    free (values);
}

//  The weighted sums of heads that share their values (grouped-query attention), at
//  every level, against each head's sum alone by the reference: bit for bit, for 1 to 9
//  heads (the fast version takes up to four at a time), head sizes with and without
//  whole runs of 32 and of 8 elements, sums that start from earlier runs, scales that
//  differ from head to head, values from tiny to large (F16 subnormals and infinities
//  on the way), and the positions split into two calls (as the model does over runs of
//  blocks).
static void
test_f16_weighted_sums (void **state)
{
    (void) state;
    const size_t head_sizes [] = { 64, 40, 80, 36, 8, 4, 100 };
    const size_t n_positions = 83, value_stride = 907, weight_stride = 97;
    const size_t max_heads = 9, max_head = 100;
    uint16_t *values = malloc (n_positions * value_stride * sizeof (uint16_t));
    float *scales = malloc (max_heads * weight_stride * sizeof (float));
    float *weights = malloc (max_heads * weight_stride * sizeof (float));
    uint16_t *start = malloc (max_heads * max_head * sizeof (uint16_t));
    uint16_t *expected = malloc (max_heads * max_head * sizeof (uint16_t));
    uint16_t *got = malloc (max_heads * max_head * sizeof (uint16_t));
    assert_true (values && scales && weights && start && expected && got);
    for (int round = 0; round < 6; round++) {
        for (size_t i = 0; i < n_positions * value_stride; i++) {
            float magnitude = round == 5? powf (2.0f, (float) s_integer (-30, 14)): 3.0f;
            values [i] = quant_f32_to_f16 (magnitude * s_uniform ());
        }
        //  As the online softmax gives them: a scale below 1 (0 at first) where the
        //  maximum grew, with the weight 1 there; a weight below 1 elsewhere.
        for (size_t g = 0; g < max_heads; g++)
            for (size_t t = 0; t < n_positions; t++) {
                bool grew = t == 0 || s_integer (0, 6) == 0;
                float scale = t == 0? 0.0f: expf (-2 * fabsf (s_uniform ()));
                scales [g * weight_stride + t] = grew? scale: 1.0f;
                weights [g * weight_stride + t] = grew? 1.0f: expf (-3 * fabsf (s_uniform ()));
            }
        for (size_t i = 0; i < max_heads * max_head; i++)
            start [i] = round % 2? quant_f32_to_f16 (10 * s_uniform ()): 0;
        for (size_t h = 0; h < sizeof head_sizes / sizeof head_sizes [0]; h++)
            for (size_t n_sums = 1; n_sums <= max_heads; n_sums++) {
                size_t n = head_sizes [h];
                size_t offset = (size_t) s_integer (0, (int) (value_stride - n));
                size_t split = (size_t) s_integer (0, (int) n_positions);
                memcpy (expected, start, n_sums * n * sizeof (uint16_t));
                kernels_set_level (KERNELS_SCALAR);
                for (size_t g = 0; g < n_sums; g++)
                    kernels_f16_weighted_sum (expected + g * n, values + offset, value_stride,
                                              scales + g * weight_stride,
                                              weights + g * weight_stride, n_positions, n);
                for (int level = 0; level <= (int) kernels_best_level (); level++) {
                    kernels_set_level ((kernels_level_t) level);
                    memcpy (got, start, n_sums * n * sizeof (uint16_t));
                    kernels_f16_weighted_sums (got, n_sums, values + offset, value_stride,
                                               scales, weights, weight_stride, split, n);
                    const uint16_t *later = values + offset + split * value_stride;
                    kernels_f16_weighted_sums (got, n_sums, later, value_stride, scales + split,
                                               weights + split, weight_stride,
                                               n_positions - split, n);
                    if (memcmp (got, expected, n_sums * n * sizeof (uint16_t)) != 0)
                        fail_msg ("round %d, %s: %zu heads of %zu: the weighted sums differ "
                                  "from each head's alone", round,
                                  kernels_level_name ((kernels_level_t) level), n_sums, n);
                }
            }
    }
    kernels_set_level (kernels_best_level ());
    free (values);
    free (scales);
    free (weights);
    free (start);
    free (expected);
    free (got);
}

//  --- Levels ------------------------------------------------------------------------------

static void
test_levels (void **state)
{
    (void) state;
    kernels_level_t best = kernels_best_level ();
    print_message ("# best level on this CPU: %s; OpenBLAS %s\n", kernels_level_name (best),
                   kernels_blas_available ()? "loaded": "not available");
    kernels_set_level (KERNELS_SCALAR);
    assert_int_equal (kernels_level (), KERNELS_SCALAR);
    kernels_set_level (KERNELS_AVX2);
    assert_int_equal (kernels_level (), best);      //  never above what the CPU has
    assert_string_equal (kernels_level_name (KERNELS_SCALAR), "scalar");
    assert_string_equal (kernels_level_name (KERNELS_AVX2), "avx2");

    //  ZLLM_KERNELS=scalar, read when the process starts using the kernels.
    char command [4200];
    snprintf (command, sizeof command, "ZLLM_KERNELS=scalar ZLLM_BLAS=off '%s' --print-level",
              s_program);
    FILE *child = popen (command, "r");
    assert_non_null (child);
    char line [64] = "";
    assert_non_null (fgets (line, sizeof line, child));
    assert_int_equal (pclose (child), 0);
    assert_string_equal (line, "scalar no-blas\n");
    snprintf (command, sizeof command, "ZLLM_KERNELS= ZLLM_BLAS=off '%s' --print-level",
              s_program);
    child = popen (command, "r");
    assert_non_null (child);
    assert_non_null (fgets (line, sizeof line, child));
    assert_int_equal (pclose (child), 0);
    char expected [64];
    snprintf (expected, sizeof expected, "%s no-blas\n", kernels_level_name (best));
    assert_string_equal (line, expected);
}

//  --- OpenBLAS ------------------------------------------------------------------------------

static void
test_sgemm (void **state)
{
    (void) state;
    if (!kernels_blas_available ()) {
        print_message ("# OpenBLAS is not available: kernels_sgemm refuses\n");
        assert_int_equal (kernels_sgemm (1, 1, 1, NULL, 1, NULL, 1, NULL, 1), -1);
        return;
    }
    const size_t m = 5, n = 37, k = 129, lda = 131, ldb = 130, ldc = 41;
    float *a = malloc (m * lda * sizeof (float));
    float *b = malloc (n * ldb * sizeof (float));
    float *c = malloc (m * ldc * sizeof (float));
    for (size_t i = 0; i < m * lda; i++)
        a [i] = s_uniform ();
    for (size_t i = 0; i < n * ldb; i++)
        b [i] = s_uniform ();
    for (size_t i = 0; i < m * ldc; i++)
        c [i] = 12345.0f;
    assert_int_equal (kernels_sgemm (m, n, k, a, lda, b, ldb, c, ldc), 0);
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            double sum = 0, magnitude = 0;
            for (size_t l = 0; l < k; l++) {
                sum += (double) a [i * lda + l] * b [j * ldb + l];
                magnitude += fabs ((double) a [i * lda + l] * b [j * ldb + l]);
            }
            assert_true (fabs (c [i * ldc + j] - sum) <= 1e-6 * magnitude * k);
        }
        for (size_t j = n; j < ldc; j++)
            assert_true (c [i * ldc + j] == 12345.0f);      //  outside C: untouched
    }
    kernels_set_blas (false);
    assert_false (kernels_blas_available ());
    assert_int_equal (kernels_sgemm (m, n, k, a, lda, b, ldb, c, ldc), -1);
    kernels_set_blas (true);
    assert_true (kernels_blas_available ());
    free (a);
    free (b);
    free (c);
}

//  --- Thread pool ---------------------------------------------------------------------------

typedef struct {
    atomic_int *runs;                   //  per task: how many times it ran
    uint32_t n_threads;
    atomic_int bad_thread;
} pool_check_t;

static void
s_count_task (void *arg, uint32_t task, uint32_t thread)
{
    pool_check_t *check = arg;
    atomic_fetch_add (&check->runs [task], 1);
    if (thread >= check->n_threads)
        atomic_store (&check->bad_thread, 1);
}

static void
test_pool (void **state)
{
    (void) state;
    assert_null (kernels_pool_new (0));
    const uint32_t thread_counts [3] = { 1, 2, 4 };
    const uint32_t n_tasks = 300;
    atomic_int runs [2][300];
    for (int p = 0; p < 4; p++) {
        kernels_pool_t *pool = p < 3? kernels_pool_new (thread_counts [p]): NULL;
        uint32_t n_threads = p < 3? thread_counts [p]: 1;
        if (p < 3)
            assert_non_null (pool);
        assert_int_equal (kernels_pool_threads (pool), n_threads);
        //  Consecutive runs alternate between two arguments and change their task
        //  counts, so that a thread mixing up two runs would be seen.
        pool_check_t checks [2] = { { runs [0], n_threads, 0 }, { runs [1], n_threads, 0 } };
        for (int round = 0; round < 2000; round++) {
            pool_check_t *check = &checks [round % 2];
            uint32_t count = round % 7 == 0? (uint32_t) (round % 3)
                                           : n_tasks - (uint32_t) (round * 13) % 200;
            for (uint32_t i = 0; i < n_tasks; i++)
                atomic_init (&check->runs [i], 0);
            kernels_pool_run (pool, s_count_task, check, count);
            for (uint32_t i = 0; i < n_tasks; i++)
                assert_int_equal (atomic_load (&check->runs [i]), i < count? 1: 0);
        }
        assert_int_equal (atomic_load (&checks [0].bad_thread), 0);
        assert_int_equal (atomic_load (&checks [1].bad_thread), 0);
        kernels_pool_destroy (&pool);
        assert_null (pool);
    }
}

int
main (int argc, char **argv)
{
    s_program = argv [0];
    if (argc > 1 && strcmp (argv [1], "--print-level") == 0) {
        printf ("%s%s\n", kernels_level_name (kernels_level ()),
                kernels_blas_available ()? "": " no-blas");
        return 0;
    }
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_quantize_q8_0),
        cmocka_unit_test (test_quantize_q8_K),
        cmocka_unit_test (test_prepare_rounding),
        cmocka_unit_test (test_fast_conversions),
        cmocka_unit_test (test_reference_products),
        cmocka_unit_test (test_fast_products),
        cmocka_unit_test (test_integer_products_exact),
        cmocka_unit_test (test_integer_products_extreme),
        cmocka_unit_test (test_matmul_equals_dot),
        cmocka_unit_test (test_matmul_blocking),
        cmocka_unit_test (test_f16_vectors),
        cmocka_unit_test (test_f16_weighted_sums),
        cmocka_unit_test (test_levels),
        cmocka_unit_test (test_sgemm),
        cmocka_unit_test (test_pool),
    };
    return cmocka_run_group_tests_name ("kernels", tests, NULL, NULL);
}
