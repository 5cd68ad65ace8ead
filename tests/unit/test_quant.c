/*  test_quant — ggml's element formats (npu/quant): F16 and BF16 conversions at every
    rounding boundary, blocks written by hand in ggml's documented bit layout (this pins
    the layout: real llama.cpp files must decode right), hand-computed quantizations,
    and round-trip error bounds on random data for every type.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

//  --- Helpers -----------------------------------------------------------------------------

static uint32_t
s_bits (float value)
{
    uint32_t bits;
    memcpy (&bits, &value, sizeof bits);
    return bits;
}

static float
s_float (uint32_t bits)
{
    float value;
    memcpy (&value, &bits, sizeof value);
    return value;
}

//  A small deterministic generator (xorshift64*), and normal values from it.
static uint64_t s_state = 0x9E3779B97F4A7C15ULL;

static uint64_t
s_next (void)
{
    s_state ^= s_state >> 12;
    s_state ^= s_state << 25;
    s_state ^= s_state >> 27;
    return s_state * 2685821657736338717ULL;
}

static double
s_uniform (void)
{
    return ((s_next () >> 11) + 1) * (1.0 / 9007199254740992.0);
}

static float
s_normal (void)
{
    return (float) (sqrt (-2.0 * log (s_uniform ())) * cos (2.0 * M_PI * s_uniform ()));
}

//  The value of F16 bits, computed independently of quant.c: sign * 2^(e-15) * 1.m, or
//  2^-14 * 0.m for subnormals.
static double
s_f16_value (uint16_t bits)
{
    int sign = bits >> 15;
    int exponent = (bits >> 10) & 31;
    int mantissa = bits & 1023;
    double magnitude;
    if (exponent == 0)
        magnitude = ldexp (mantissa / 1024.0, -14);
    else
    if (exponent == 31)
        magnitude = mantissa? NAN: INFINITY;
    else
        magnitude = ldexp (1.0 + mantissa / 1024.0, exponent - 15);
    return sign? -magnitude: magnitude;
}

//  Reference F32 -> F16 for finite values: the nearest F16 by binary search over the
//  (monotonic) positive bit patterns, ties to the even pattern; 65520 and above round to
//  infinity as IEEE says (as if 0x7C00 were 65536).
static uint16_t
s_reference_f16 (float value)
{
    double magnitude = fabs ((double) value);
    uint16_t sign = signbit (value)? 0x8000: 0;
    //  Largest pattern h in 0..0x7BFF with value(h) <= magnitude.
    uint32_t low = 0, high = 0x7BFF;
    if (magnitude >= s_f16_value (0x7BFF))
        low = 0x7BFF;
    else
        while (low < high) {
            uint32_t middle = (low + high + 1) / 2;
            if (s_f16_value ((uint16_t) middle) <= magnitude)
                low = middle;
            else
                high = middle - 1;
        }
    double below = s_f16_value ((uint16_t) low);
    double above = low == 0x7BFF? 65536.0: s_f16_value ((uint16_t) (low + 1));
    uint32_t chosen;
    if (magnitude - below < above - magnitude)
        chosen = low;
    else
    if (magnitude - below > above - magnitude)
        chosen = low + 1;
    else
        chosen = (low & 1)? low + 1: low;
    return (uint16_t) (sign | chosen);
}

//  Worst absolute difference, and root-mean-square of the error relative to that of x.
static void
s_errors (const float *x, const float *y, size_t n, double *worst, double *relative_rms)
{
    double error_sum = 0, value_sum = 0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double difference = fabs ((double) x [i] - y [i]);
        if (difference > *worst)
            *worst = difference;
        error_sum += difference * difference;
        value_sum += (double) x [i] * x [i];
    }
    *relative_rms = value_sum > 0? sqrt (error_sum / value_sum): sqrt (error_sum);
}

//  --- F16 ---------------------------------------------------------------------------------

static void
test_f16_exact_values (void **state)
{
    (void) state;
    assert_int_equal (quant_f32_to_f16 (0.0f), 0x0000);
    assert_int_equal (quant_f32_to_f16 (-0.0f), 0x8000);
    assert_int_equal (quant_f32_to_f16 (1.0f), 0x3C00);
    assert_int_equal (quant_f32_to_f16 (-2.0f), 0xC000);
    assert_int_equal (quant_f32_to_f16 (0.5f), 0x3800);
    assert_int_equal (quant_f32_to_f16 (65504.0f), 0x7BFF);            //  largest finite
    assert_int_equal (quant_f32_to_f16 (ldexpf (1, -14)), 0x0400);     //  smallest normal
    assert_int_equal (quant_f32_to_f16 (ldexpf (1, -24)), 0x0001);     //  smallest subnormal
    assert_int_equal (quant_f32_to_f16 (ldexpf (1023, -24)), 0x03FF);  //  largest subnormal
    assert_true (quant_f16_to_f32 (0x3C00) == 1.0f);
    assert_true (quant_f16_to_f32 (0x7BFF) == 65504.0f);
    assert_true (quant_f16_to_f32 (0x0001) == ldexpf (1, -24));
    assert_true (quant_f16_to_f32 (0x8001) == -ldexpf (1, -24));
    assert_true (quant_f16_to_f32 (0x03FF) == ldexpf (1023, -24));
    assert_int_equal (s_bits (quant_f16_to_f32 (0x8000)), 0x80000000u);
}

static void
test_f16_inf_nan_overflow (void **state)
{
    (void) state;
    assert_int_equal (quant_f32_to_f16 (INFINITY), 0x7C00);
    assert_int_equal (quant_f32_to_f16 (-INFINITY), 0xFC00);
    assert_int_equal (quant_f32_to_f16 (1e10f), 0x7C00);
    assert_int_equal (quant_f32_to_f16 (-1e10f), 0xFC00);
    assert_int_equal (quant_f32_to_f16 (65519.0f), 0x7BFF);            //  below the midpoint
    assert_int_equal (quant_f32_to_f16 (65520.0f), 0x7C00);            //  midpoint: to even (inf)
    assert_true (isinf (quant_f16_to_f32 (0x7C00)) && quant_f16_to_f32 (0x7C00) > 0);
    assert_true (isinf (quant_f16_to_f32 (0xFC00)) && quant_f16_to_f32 (0xFC00) < 0);

    //  NaN stays NaN, keeps its sign, even when its payload is only in the low bits.
    uint16_t nan = quant_f32_to_f16 (NAN);
    assert_int_equal (nan & 0x7C00, 0x7C00);
    assert_true ((nan & 0x03FF) != 0);
    uint16_t low_payload = quant_f32_to_f16 (s_float (0x7F800001));
    assert_true ((low_payload & 0x7C00) == 0x7C00 && (low_payload & 0x03FF) != 0);
    uint16_t negative_nan = quant_f32_to_f16 (s_float (0xFFC00000));
    assert_int_equal (negative_nan & 0x8000, 0x8000);
    assert_true (isnan (quant_f16_to_f32 (0x7E00)));
    assert_true (isnan (quant_f16_to_f32 (0x7C01)));
}

static void
test_f16_rounding_ties (void **state)
{
    (void) state;
    //  1 + 2^-11 is halfway between 1 (0x3C00, even) and 1 + 2^-10 (0x3C01).
    assert_int_equal (quant_f32_to_f16 (1.0f + ldexpf (1, -11)), 0x3C00);
    //  1 + 3 * 2^-11 is halfway between 0x3C01 and 0x3C02 (even).
    assert_int_equal (quant_f32_to_f16 (1.0f + 3 * ldexpf (1, -11)), 0x3C02);
    //  Just above a tie rounds up, just below rounds down.
    assert_int_equal (quant_f32_to_f16 (nextafterf (1.0f + ldexpf (1, -11), 2)), 0x3C01);
    assert_int_equal (quant_f32_to_f16 (nextafterf (1.0f + 3 * ldexpf (1, -11), 0)), 0x3C01);
    //  Subnormal ties: 2^-25 is halfway between 0 and 2^-24; 3 * 2^-25 between 1 and 2.
    assert_int_equal (quant_f32_to_f16 (ldexpf (1, -25)), 0x0000);
    assert_int_equal (quant_f32_to_f16 (ldexpf (3, -25)), 0x0002);
    assert_int_equal (quant_f32_to_f16 (nextafterf (ldexpf (1, -25), 1)), 0x0001);
    assert_int_equal (quant_f32_to_f16 (-ldexpf (1, -25)), 0x8000);
    //  Halfway between the largest subnormal and the smallest normal: to the even normal.
    assert_int_equal (quant_f32_to_f16 (ldexpf (2047, -25)), 0x0400);
    //  Float subnormals and tiny floats become zero.
    assert_int_equal (quant_f32_to_f16 (s_float (0x00000001)), 0x0000);
    assert_int_equal (quant_f32_to_f16 (ldexpf (1, -30)), 0x0000);
}

//  Every F16 value converts to float and back unchanged, and every rounding boundary
//  between two neighbours (the midpoint, and the floats just beside it) lands where the
//  independent reference says.
static void
test_f16_every_value_and_boundary (void **state)
{
    (void) state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float value = quant_f16_to_f32 ((uint16_t) h);
        if (((h >> 10) & 31) == 31 && (h & 1023))
            assert_true (isnan (value));
        else {
            assert_true ((double) value == s_f16_value ((uint16_t) h));
            assert_int_equal (quant_f32_to_f16 (value), h);
        }
    }
    for (uint32_t h = 0; h < 0x7BFF; h++) {
        //  The midpoint of two neighbouring F16 values is exact in float.
        float middle = (float) ((s_f16_value ((uint16_t) h) + s_f16_value ((uint16_t) (h + 1))) / 2);
        float probes [3] = { nextafterf (middle, 0), middle, nextafterf (middle, INFINITY) };
        for (int p = 0; p < 3; p++) {
            assert_int_equal (quant_f32_to_f16 (probes [p]), s_reference_f16 (probes [p]));
            assert_int_equal (quant_f32_to_f16 (-probes [p]), s_reference_f16 (-probes [p]));
        }
    }
}

static void
test_f16_random_against_reference (void **state)
{
    (void) state;
    for (int i = 0; i < 200000; i++) {
        //  Floats with exponents spread over and beyond F16's range.
        float value = ldexpf ((float) (s_uniform () * 2 - 1), (int) (s_next () % 50) - 30);
        assert_int_equal (quant_f32_to_f16 (value), s_reference_f16 (value));
    }
}

//  --- BF16 --------------------------------------------------------------------------------

static void
test_bf16_values_and_ties (void **state)
{
    (void) state;
    assert_int_equal (quant_f32_to_bf16 (1.0f), 0x3F80);
    assert_int_equal (quant_f32_to_bf16 (-2.0f), 0xC000);
    assert_int_equal (quant_f32_to_bf16 (0.0f), 0x0000);
    assert_int_equal (quant_f32_to_bf16 (-0.0f), 0x8000);
    //  Ties to even, just above and below.
    assert_int_equal (quant_f32_to_bf16 (s_float (0x3F808000)), 0x3F80);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x3F818000)), 0x3F82);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x3F808001)), 0x3F81);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x3F807FFF)), 0x3F80);
    //  Infinities, overflow of the largest floats, NaN (quiet, sign kept).
    assert_int_equal (quant_f32_to_bf16 (INFINITY), 0x7F80);
    assert_int_equal (quant_f32_to_bf16 (-INFINITY), 0xFF80);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x7F7FFFFF)), 0x7F80);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x7F7F7FFF)), 0x7F7F);
    uint16_t nan = quant_f32_to_bf16 (s_float (0x7F800001));
    assert_true ((nan & 0x7F80) == 0x7F80 && (nan & 0x007F) != 0);
    assert_int_equal (quant_f32_to_bf16 (s_float (0xFFC00000)) & 0x8000, 0x8000);
    assert_true (isnan (quant_bf16_to_f32 (0x7FC0)));
    //  Float subnormals round like everything else.
    assert_int_equal (quant_f32_to_bf16 (s_float (0x00000001)), 0x0000);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x00008000)), 0x0000);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x00018000)), 0x0002);
    assert_int_equal (quant_f32_to_bf16 (s_float (0x00008001)), 0x0001);
    //  Every BF16 value is a float with the low 16 bits zero, and comes back unchanged.
    for (uint32_t h = 0; h < 0x10000; h++) {
        float value = quant_bf16_to_f32 ((uint16_t) h);
        assert_int_equal (s_bits (value), h << 16);
        if (!isnan (value))
            assert_int_equal (quant_f32_to_bf16 (value), h);
    }
}

//  --- Blocks written by hand ------------------------------------------------------------------

static void
test_q8_0_hand_block (void **state)
{
    (void) state;
    uint8_t block [34];
    block [0] = 0x00;                   //  d = 0.5 (F16 0x3800), little-endian
    block [1] = 0x38;
    for (int i = 0; i < 32; i++)
        block [2 + i] = (uint8_t) (int8_t) (i * 8 - 128);
    float y [32];
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q8_0, block, y, 32), 0);
    for (int i = 0; i < 32; i++)
        assert_true (y [i] == 0.5f * (i * 8 - 128));
}

static void
test_q4_0_hand_block (void **state)
{
    (void) state;
    uint8_t block [18];
    block [0] = 0x00;                   //  d = 2.0 (F16 0x4000)
    block [1] = 0x40;
    //  Byte j: low nibble j (element j), high nibble 15 - j (element j + 16).
    for (int j = 0; j < 16; j++)
        block [2 + j] = (uint8_t) (j | ((15 - j) << 4));
    float y [32];
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q4_0, block, y, 32), 0);
    for (int j = 0; j < 16; j++) {
        assert_true (y [j] == 2.0f * (j - 8));
        assert_true (y [j + 16] == 2.0f * (15 - j - 8));
    }
}

static void
test_q4_K_hand_block (void **state)
{
    (void) state;
    //  Sub-block scales and mins, with values above 15 in sub-blocks 4..7 so that the
    //  top bits they keep in bytes 0..7 are exercised (scales' and mins' top bits differ,
    //  so a mix-up of the two shows).
    static const int scale [8] = { 1, 2, 3, 4, 17, 33, 49, 63 };
    static const int min [8] = { 0, 5, 10, 15, 52, 4, 40, 27 };
    //  Packed by hand: bytes 0-3 = scale[0..3] | top 2 bits of scale[4..7] << 6
    //  (1, 2, 3, 3); bytes 4-7 = min[0..3] | top 2 bits of min[4..7] << 6 (3, 0, 2, 1);
    //  bytes 8-11 = low 4 bits of scale[4..7] (1, 1, 1, 15) | low 4 bits of min[4..7]
    //  (4, 4, 8, 11) << 4.
    static const uint8_t packed [12] = {
        0x41, 0x82, 0xC3, 0xC4, 0xC0, 0x05, 0x8A, 0x4F, 0x41, 0x41, 0x81, 0xBF
    };
    uint8_t block [144];
    block [0] = 0x00;                   //  d = 1.0 (0x3C00)
    block [1] = 0x3C;
    block [2] = 0x00;                   //  dmin = 0.5 (0x3800)
    block [3] = 0x38;
    memcpy (block + 4, packed, 12);
    //  qs[32k + l]: low nibble l % 16 (element 64k + l), high nibble 15 - l % 16
    //  (element 64k + 32 + l).
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 32; l++)
            block [16 + 32 * k + l] = (uint8_t) ((l % 16) | ((15 - l % 16) << 4));
    float y [256];
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q4_K, block, y, 256), 0);
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 32; l++) {
            float low = 1.0f * scale [2 * k] * (l % 16) - 0.5f * min [2 * k];
            float high = 1.0f * scale [2 * k + 1] * (15 - l % 16) - 0.5f * min [2 * k + 1];
            assert_true (y [64 * k + l] == low);
            assert_true (y [64 * k + 32 + l] == high);
        }
    //  A few by hand: element 0 = 1*0 - 0 = 0; element 33 = 2*14 - 2.5 = 25.5;
    //  element 130 (sub-block 4) = 17*2 - 26 = 8; element 160 (sub-block 5) = 33*15 - 2;
    //  element 255 (sub-block 7) = 63*0 - 13.5.
    assert_true (y [0] == 0.0f);
    assert_true (y [33] == 25.5f);
    assert_true (y [130] == 8.0f);
    assert_true (y [160] == 493.0f);
    assert_true (y [255] == -13.5f);
}

static void
test_q6_K_hand_block (void **state)
{
    (void) state;
    uint8_t block [210];
    memset (block, 0, sizeof block);
    //  ql at 0, qh at 128, scales at 192, d at 208.
    uint8_t *ql = block, *qh = block + 128;
    int8_t scales [16];
    for (int i = 0; i < 16; i++)
        scales [i] = (int8_t) ((i % 2)? -(i + 1): (i + 1));
    memcpy (block + 192, scales, 16);
    block [208] = 0x00;                 //  d = 0.5 (0x3800)
    block [209] = 0x38;
    //  First half (elements 0..127): qh[0] holds the top 2 bits of elements 0, 32, 64, 96
    //  in bit pairs 0-1, 2-3, 4-5, 6-7; ql[0] the low 4 bits of elements 0 (low nibble)
    //  and 64 (high nibble); ql[32] those of elements 32 and 96.
    qh [0] = 0xE4;                      //  pairs 0, 1, 2, 3
    ql [0] = 0x21;                      //  element 0: 1, element 64: 2
    ql [32] = 0x43;                     //  element 32: 3, element 96: 4
    //  Second half: ql[64], qh[32] play the same part for element 128.
    ql [64] = 0x05;
    qh [32] = 0x02;
    //  And element 127: l = 31 of quarter 3: ql[63] high nibble, qh[31] bits 6-7.
    ql [63] = 0x70;
    qh [31] = 0xC0;
    float y [256];
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q6_K, block, y, 256), 0);
    //  q = low | high << 4, value d * scale[i / 16] * (q - 32).
    assert_true (y [0] == 0.5f * 1 * (1 - 32));             //  scale[0] = 1
    assert_true (y [32] == 0.5f * 3 * (16 + 3 - 32));       //  scale[2] = 3
    assert_true (y [64] == 0.5f * 5 * (32 + 2 - 32));       //  scale[4] = 5
    assert_true (y [96] == 0.5f * 7 * (48 + 4 - 32));       //  scale[6] = 7
    assert_true (y [127] == 0.5f * -8 * (48 + 7 - 32));     //  scale[7] = -8
    assert_true (y [128] == 0.5f * 9 * (32 + 5 - 32));      //  scale[8] = 9
    //  Everything else is q = 0: -32 times its scale.
    assert_true (y [1] == 0.5f * 1 * -32);
    assert_true (y [16] == 0.5f * -2 * -32);
    assert_true (y [255] == 0.5f * -16 * -32);
}

//  --- Quantizations computed by hand --------------------------------------------------------

static void
test_q8_0_ramp (void **state)
{
    (void) state;
    //  x = 0, 1, ..., 31: amax 31, d = 31/127 = 0.244094 -> F16 0x33D0 (0.244140625),
    //  q = round (k * 127 / 31) (no ties: k * 127 / 31 is never a half).
    static const int8_t expected [32] = {
        0, 4, 8, 12, 16, 20, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61,
        66, 70, 74, 78, 82, 86, 90, 94, 98, 102, 107, 111, 115, 119, 123, 127
    };
    float x [32];
    for (int k = 0; k < 32; k++)
        x [k] = (float) k;
    uint8_t block [34];
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q8_0, x, block, 32), 0);
    assert_int_equal (block [0] | (block [1] << 8), 0x33D0);
    assert_memory_equal (block + 2, expected, 32);
    float y [32];
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q8_0, block, y, 32), 0);
    for (int k = 0; k < 32; k++)
        assert_true (y [k] == 0.244140625f * expected [k]);
}

static void
test_q4_0_by_hand (void **state)
{
    (void) state;
    //  Elements 0..15 are -8..7 and 16..31 are 7..-8: the largest magnitude is -8, so
    //  d = -8 / -8 = 1 and q = x + 8 exactly.
    float x [32];
    for (int j = 0; j < 16; j++) {
        x [j] = (float) (j - 8);
        x [16 + j] = (float) (7 - j);
    }
    uint8_t block [18];
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q4_0, x, block, 32), 0);
    assert_int_equal (block [0] | (block [1] << 8), 0x3C00);
    for (int j = 0; j < 16; j++)
        assert_int_equal (block [2 + j], j | ((15 - j) << 4));
    //  With +8 the largest: d = 8 / -8 = -1 and q = 8 - x; x = 8 gives q = 0.
    for (int j = 0; j < 32; j++)
        x [j] = 0;
    x [3] = 8;
    x [20] = -4;
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q4_0, x, block, 32), 0);
    assert_int_equal (block [0] | (block [1] << 8), 0xBC00);
    assert_int_equal (block [2 + 3], 0x80 | 0x00);         //  element 3: 0, element 19: 8
    assert_int_equal (block [2 + 4], 0xC0 | 0x08);         //  element 4: 8, element 20: 12
    float y [32];
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q4_0, block, y, 32), 0);
    for (int j = 0; j < 32; j++)
        assert_true (y [j] == x [j]);           //  (q - 8) * -1 gives -0 for the zeros
}

//  --- Round trips ------------------------------------------------------------------------------

//  n values: normal with std 1, some blocks scaled up or down, a few outliers.
static float *
s_random_values (size_t n)
{
    float *x = malloc (n * sizeof (float));
    assert_non_null (x);
    for (size_t i = 0; i < n; i++) {
        float scale = (i / 256) % 3 == 0? 0.01f: (i / 256) % 3 == 1? 1.0f: 30.0f;
        x [i] = scale * s_normal ();
        if (s_next () % 200 == 0)
            x [i] *= 8;
    }
    return x;
}

static void
test_round_trip_f16_bf16 (void **state)
{
    (void) state;
    size_t n = 4096;
    float *x = s_random_values (n);
    float *y = malloc (n * sizeof (float));
    uint8_t *row = malloc (n * 2);
    assert_true (y && row);
    assert_int_equal (quant_quantize_row (GGML_TYPE_F16, x, row, n), 0);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_F16, row, y, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_true (fabs ((double) x [i] - y [i]) <= fabs ((double) x [i]) * ldexp (1, -11)
                     + ldexp (1, -25));
    assert_int_equal (quant_quantize_row (GGML_TYPE_BF16, x, row, n), 0);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_BF16, row, y, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_true (fabs ((double) x [i] - y [i]) <= fabs ((double) x [i]) * ldexp (1, -8));
    //  F32 is a copy.
    assert_int_equal (quant_quantize_row (GGML_TYPE_F32, x, y, n), 0);
    assert_memory_equal (x, y, n * sizeof (float));
    free (x);
    free (y);
    free (row);
}

//  Per-element bounds for the 32-element types: Q8_0 is within half a step (d = amax /
//  127) plus the F16 rounding of d; Q4_0 within one step (d = amax / 8; the top end is
//  clamped from 16 to 15).
static void
test_round_trip_q8_0_q4_0 (void **state)
{
    (void) state;
    size_t n = 8192;
    float *x = s_random_values (n);
    float *y = malloc (n * sizeof (float));
    uint8_t *row = malloc (n * 2);
    assert_true (y && row);
    ggml_type_t types [2] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_0 };
    double steps [2] = { 127, 8 };
    double allowed [2] = { 0.5, 1.0 };
    for (int t = 0; t < 2; t++) {
        assert_int_equal (quant_quantize_row (types [t], x, row, n), 0);
        assert_int_equal (quant_dequantize_row (types [t], row, y, n), 0);
        for (size_t b = 0; b < n / 32; b++) {
            double amax = 0;
            for (int i = 0; i < 32; i++)
                amax = fmax (amax, fabs ((double) x [32 * b + i]));
            double d = amax / steps [t];
            for (int i = 0; i < 32; i++) {
                double error = fabs ((double) x [32 * b + i] - y [32 * b + i]);
                //  d's F16 rounding moves the top value by at most amax * 2^-11.
                assert_true (error <= allowed [t] * d + amax * ldexp (1, -10));
            }
        }
        double worst, relative;
        s_errors (x, y, n, &worst, &relative);
        printf ("# %s: relative rms error %.5f\n", ggml_type_name (types [t]), relative);
    }
    free (x);
    free (y);
    free (row);
}

//  The K-quants: relative RMS error per super-block (Gaussian data of any scale), and
//  every element within a small number of its sub-block's steps.
static void
test_round_trip_k_quants (void **state)
{
    (void) state;
    size_t n = 256 * 96;
    float *x = s_random_values (n);
    float *y = malloc (n * sizeof (float));
    uint8_t *row = malloc (n);
    assert_true (y && row);

    //  Q4_K: 16 levels over each sub-block's range; measured 0.070 relative rms on plain
    //  Gaussian data, 0.086 on this mix with outliers.
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q4_K, x, row, n), 0);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q4_K, row, y, n), 0);
    for (size_t b = 0; b < n / 256; b++) {
        double worst, relative;
        s_errors (x + 256 * b, y + 256 * b, 256, &worst, &relative);
        assert_true (relative < 0.12);
        for (int s = 0; s < 8; s++) {
            const float *sub = x + 256 * b + 32 * s;
            double low = 0, high = sub [0];
            for (int i = 0; i < 32; i++) {
                low = fmin (low, sub [i]);
                high = fmax (high, sub [i]);
            }
            double step = (high - low) / 15;
            for (int i = 0; i < 32; i++)
                assert_true (fabs ((double) sub [i] - y [256 * b + 32 * s + i]) <= 1.5 * step
                             + 1e-6);
        }
    }
    double worst, relative;
    s_errors (x, y, n, &worst, &relative);
    assert_true (relative < 0.10);
    printf ("# Q4_K: relative rms error %.5f\n", relative);

    //  Q6_K: 64 levels per 16 elements; measured 0.017 relative rms on plain Gaussian
    //  data, 0.025 on this mix (up to 0.03 in a block with an outlier, whose large
    //  sub-block scale coarsens the 8-bit scales of the others).
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q6_K, x, row, n), 0);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q6_K, row, y, n), 0);
    for (size_t b = 0; b < n / 256; b++) {
        s_errors (x + 256 * b, y + 256 * b, 256, &worst, &relative);
        assert_true (relative < 0.04);
        for (int s = 0; s < 16; s++) {
            const float *sub = x + 256 * b + 16 * s;
            double amax = 0;
            for (int i = 0; i < 16; i++)
                amax = fmax (amax, fabs ((double) sub [i]));
            double step = amax / 32;
            for (int i = 0; i < 16; i++)
                assert_true (fabs ((double) sub [i] - y [256 * b + 16 * s + i]) <= 1.5 * step
                             + 1e-6);
        }
    }
    s_errors (x, y, n, &worst, &relative);
    assert_true (relative < 0.03);
    printf ("# Q6_K: relative rms error %.5f\n", relative);
    free (x);
    free (y);
    free (row);
}

//  Special blocks: all zeros decode to zeros; a constant block and a block of one sign
//  decode closely (Q4_K's min handles all-negative data, and all-positive data has min 0).
static void
test_special_blocks (void **state)
{
    (void) state;
    ggml_type_t types [] = { GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                             GGML_TYPE_Q4_K, GGML_TYPE_Q6_K };
    //  For the ramp 5 .. 9: within half a step of each type (Q4_0's step is amax / 8).
    float ramp_allowed [] = { 0.005f, 0.05f, 0.05f, 0.6f, 0.35f, 0.15f };
    float x [256], y [256];
    uint8_t row [512];
    for (size_t t = 0; t < sizeof types / sizeof types [0]; t++) {
        memset (x, 0, sizeof x);
        memset (row, 0xAB, sizeof row);
        assert_int_equal (quant_quantize_row (types [t], x, row, 256), 0);
        assert_int_equal (quant_dequantize_row (types [t], row, y, 256), 0);
        for (int i = 0; i < 256; i++)
            assert_true (y [i] == 0.0f);

        for (int i = 0; i < 256; i++)
            x [i] = -3.0f;
        assert_int_equal (quant_quantize_row (types [t], x, row, 256), 0);
        assert_int_equal (quant_dequantize_row (types [t], row, y, 256), 0);
        for (int i = 0; i < 256; i++)
            assert_true (fabsf (y [i] + 3.0f) < 0.01f);

        for (int i = 0; i < 256; i++)
            x [i] = 5.0f + (float) i / 64;          //  all positive, 5 .. 9
        assert_int_equal (quant_quantize_row (types [t], x, row, 256), 0);
        assert_int_equal (quant_dequantize_row (types [t], row, y, 256), 0);
        for (int i = 0; i < 256; i++)
            assert_true (fabsf (y [i] - x [i]) < ramp_allowed [t]);
    }
}

//  Rows at odd addresses (tensor data in a mapping need not be aligned for us).
static void
test_unaligned_rows (void **state)
{
    (void) state;
    float *x = s_random_values (512);
    uint8_t *buffer = malloc (2 * 512 * 4 + 8);
    float *y = malloc (513 * sizeof (float));
    assert_true (buffer && y);
    ggml_type_t types [] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                             GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K };
    for (size_t t = 0; t < sizeof types / sizeof types [0]; t++) {
        float aligned [512];
        uint8_t *odd = buffer + 1;
        assert_int_equal (quant_quantize_row (types [t], x, odd, 512), 0);
        assert_int_equal (quant_dequantize_row (types [t], odd, aligned, 512), 0);
        //  The same bytes at an aligned address decode the same.
        memmove (buffer + 8, odd, ggml_row_bytes (types [t], 512));
        assert_int_equal (quant_dequantize_row (types [t], buffer + 8, y, 512), 0);
        assert_memory_equal (aligned, y, sizeof aligned);
    }
    free (x);
    free (y);
    free (buffer);
}

static void
test_bad_arguments (void **state)
{
    (void) state;
    float x [64] = { 0 };
    uint8_t row [256];
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q8_0, x, row, 33), -1);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q4_0, row, x, 40), -1);
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q4_K, x, row, 64), -1);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q6_K, row, x, 64), -1);
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q5_K, x, row, 256), -1);
    assert_int_equal (quant_dequantize_row (GGML_TYPE_Q4_1, row, x, 32), -1);
    assert_int_equal (quant_dequantize_row ((ggml_type_t) 99, row, x, 32), -1);
    assert_false (quant_supports (GGML_TYPE_Q5_0));
    assert_true (quant_supports (GGML_TYPE_Q6_K));
    //  n = 0 is an empty row.
    assert_int_equal (quant_quantize_row (GGML_TYPE_Q4_K, x, row, 0), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_f16_exact_values),
        cmocka_unit_test (test_f16_inf_nan_overflow),
        cmocka_unit_test (test_f16_rounding_ties),
        cmocka_unit_test (test_f16_every_value_and_boundary),
        cmocka_unit_test (test_f16_random_against_reference),
        cmocka_unit_test (test_bf16_values_and_ties),
        cmocka_unit_test (test_q8_0_hand_block),
        cmocka_unit_test (test_q4_0_hand_block),
        cmocka_unit_test (test_q4_K_hand_block),
        cmocka_unit_test (test_q6_K_hand_block),
        cmocka_unit_test (test_q8_0_ramp),
        cmocka_unit_test (test_q4_0_by_hand),
        cmocka_unit_test (test_round_trip_f16_bf16),
        cmocka_unit_test (test_round_trip_q8_0_q4_0),
        cmocka_unit_test (test_round_trip_k_quants),
        cmocka_unit_test (test_special_blocks),
        cmocka_unit_test (test_unaligned_rows),
        cmocka_unit_test (test_bad_arguments),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
