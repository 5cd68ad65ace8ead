/*  quant — ggml's tensor element formats, converted to and from float. See quant.h.

    Every block is read from and written to memory with memcpy into a local struct, so
    that rows may sit at any address (tensor data in a GGUF mapping is only aligned to
    the file's alignment, and callers pass plain byte buffers).
*/
#include "quant.h"

#include <math.h>
#include <string.h>

_Static_assert (sizeof (quant_block_q8_0_t) == 34, "Q8_0 block is 34 bytes");
_Static_assert (sizeof (quant_block_q4_0_t) == 18, "Q4_0 block is 18 bytes");
_Static_assert (sizeof (quant_block_q4_K_t) == 144, "Q4_K block is 144 bytes");
_Static_assert (sizeof (quant_block_q6_K_t) == 210, "Q6_K block is 210 bytes");

//  --- Scalars --------------------------------------------------------------------------

static uint32_t
s_float_bits (float value)
{
    uint32_t bits;
    memcpy (&bits, &value, sizeof bits);
    return bits;
}

static float
s_bits_float (uint32_t bits)
{
    float value;
    memcpy (&value, &bits, sizeof value);
    return value;
}

//  Shift `mantissa` right by `shift` (1..31) bits, rounding to nearest, ties to even.
static uint32_t
s_shift_round_even (uint32_t mantissa, uint32_t shift)
{
    uint32_t kept = mantissa >> shift;
    uint32_t dropped = mantissa & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (dropped > half || (dropped == half && (kept & 1)))
        kept++;
    return kept;
}

uint16_t
quant_f32_to_f16 (float value)
{
    uint32_t bits = s_float_bits (value);
    uint32_t sign = (bits >> 16) & 0x8000;
    uint32_t exponent = (bits >> 23) & 0xFF;
    uint32_t mantissa = bits & 0x7FFFFF;

    if (exponent == 0xFF) {
        if (mantissa == 0)
            return (uint16_t) (sign | 0x7C00);                          //  infinity
        return (uint16_t) (sign | 0x7C00 | 0x0200 | (mantissa >> 13));  //  quiet NaN
    }
    //  The exponent as F16 would store it (bias 15 instead of 127).
    int32_t half_exponent = (int32_t) exponent - 127 + 15;
    if (half_exponent >= 31)
        return (uint16_t) (sign | 0x7C00);                              //  too large
    if (half_exponent <= 0) {
        //  An F16 subnormal (or zero): value = m * 2^-24 with m in 0..1023. The float is
        //  (2^23 + mantissa) * 2^(exponent - 150), so m is that shifted right by
        //  (126 - exponent) = 14 - half_exponent bits.
        if (half_exponent < -10)
            return (uint16_t) sign;                                     //  below 2^-25
        uint32_t full = mantissa | 0x800000;
        uint32_t shift = (uint32_t) (14 - half_exponent);
        //  Rounding up may give 0x400, the smallest normal: the bits say so already.
        return (uint16_t) (sign | s_shift_round_even (full, shift));
    }
    //  A normal: keep 10 of 23 mantissa bits. Rounding up may carry into the exponent,
    //  and from the largest finite value into infinity (0x7C00), both of which are right.
    uint32_t half = ((uint32_t) half_exponent << 10) | (mantissa >> 13);
    uint32_t dropped = mantissa & 0x1FFF;
    if (dropped > 0x1000 || (dropped == 0x1000 && (half & 1)))
        half++;
    return (uint16_t) (sign | half);
}

float
quant_f16_to_f32 (uint16_t bits)
{
    uint32_t sign = (uint32_t) (bits & 0x8000) << 16;
    uint32_t exponent = (bits >> 10) & 0x1F;
    uint32_t mantissa = bits & 0x3FF;

    if (exponent == 0) {
        //  Zero or subnormal: mantissa * 2^-24, exact in float.
        float magnitude = ldexpf ((float) mantissa, -24);
        return sign? -magnitude: magnitude;
    }
    if (exponent == 31)
        return s_bits_float (sign | 0x7F800000 | (mantissa << 13));    //  inf or NaN
    return s_bits_float (sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

uint16_t
quant_f32_to_bf16 (float value)
{
    uint32_t bits = s_float_bits (value);
    if ((bits & 0x7FFFFFFF) > 0x7F800000)
        return (uint16_t) ((bits >> 16) | 0x0040);                      //  quiet NaN
    //  Round the low 16 bits away, to nearest, ties to even. Overflow gives infinity.
    uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
    return (uint16_t) ((bits + rounding) >> 16);
}

float
quant_bf16_to_f32 (uint16_t bits)
{
    return s_bits_float ((uint32_t) bits << 16);
}

//  --- Helpers --------------------------------------------------------------------------

static int
s_clamp (int value, int low, int high)
{
    return value < low? low: value > high? high: value;
}

//  Nearest integer, halves away from zero (roundf): what ggml's Q8_0 and Q4_0 reference
//  quantizers use.
static int
s_round (float value)
{
    return (int) roundf (value);
}

//  Nearest integer, halves to even (rintf in the default rounding mode, which compilers
//  inline): what ggml's K-quant searches use (nearest_int), and much faster than roundf.
static int
s_nearest (float value)
{
    return (int) rintf (value);
}

static uint16_t
s_read_u16 (const uint8_t *bytes)
{
    uint16_t value;
    memcpy (&value, bytes, sizeof value);
    return value;
}

static void
s_write_u16 (uint8_t *bytes, uint16_t value)
{
    memcpy (bytes, &value, sizeof value);
}

//  --- Q8_0 -----------------------------------------------------------------------------

static void
s_dequantize_q8_0 (const uint8_t *src, float *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        quant_block_q8_0_t block;
        memcpy (&block, src + b * sizeof block, sizeof block);
        float d = quant_f16_to_f32 (block.d);
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            dst [b * QUANT_32_BLOCK + i] = d * block.qs [i];
    }
}

static void
s_quantize_q8_0 (const float *src, uint8_t *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        const float *x = src + b * QUANT_32_BLOCK;
        float amax = 0;
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            if (fabsf (x [i]) > amax)
                amax = fabsf (x [i]);
        float d = amax / 127;
        float inverse = d != 0? 1.0f / d: 0;
        quant_block_q8_0_t block;
        block.d = quant_f32_to_f16 (d);
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            block.qs [i] = (int8_t) s_round (x [i] * inverse);
        memcpy (dst + b * sizeof block, &block, sizeof block);
    }
}

//  --- Q4_0 -----------------------------------------------------------------------------

static void
s_dequantize_q4_0 (const uint8_t *src, float *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        quant_block_q4_0_t block;
        memcpy (&block, src + b * sizeof block, sizeof block);
        float d = quant_f16_to_f32 (block.d);
        float *y = dst + b * QUANT_32_BLOCK;
        for (int j = 0; j < QUANT_32_BLOCK / 2; j++) {
            y [j] = d * ((block.qs [j] & 0x0F) - 8);
            y [j + 16] = d * ((block.qs [j] >> 4) - 8);
        }
    }
}

static void
s_quantize_q4_0 (const float *src, uint8_t *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        const float *x = src + b * QUANT_32_BLOCK;
        //  The value of largest magnitude, with its sign, maps to q = 0 (that is, -8):
        //  the end of the range with one more step.
        float amax = 0, extreme = 0;
        for (int i = 0; i < QUANT_32_BLOCK; i++)
            if (fabsf (x [i]) > amax) {
                amax = fabsf (x [i]);
                extreme = x [i];
            }
        float d = extreme / -8;
        float inverse = d != 0? 1.0f / d: 0;
        quant_block_q4_0_t block;
        block.d = quant_f32_to_f16 (d);
        for (int j = 0; j < QUANT_32_BLOCK / 2; j++) {
            //  x * inverse lies in [-8, 8]; + 8.5 then truncation rounds it into 0..16.
            int low = s_clamp ((int) (x [j] * inverse + 8.5f), 0, 15);
            int high = s_clamp ((int) (x [j + 16] * inverse + 8.5f), 0, 15);
            block.qs [j] = (uint8_t) (low | (high << 4));
        }
        memcpy (dst + b * sizeof block, &block, sizeof block);
    }
}

//  --- Q4_K -----------------------------------------------------------------------------

//  The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. Sub-blocks
//  0..3 keep theirs in the low 6 bits of bytes j (scale) and j + 4 (min); sub-blocks
//  4..7 keep their low 4 bits in the two nibbles of byte j + 4 and their top 2 bits in
//  the top 2 bits of bytes j - 4 (scale) and j (min).
static void
s_q4_K_scale_min (const uint8_t *scales, int j, int *scale, int *min)
{
    if (j < 4) {
        *scale = scales [j] & 63;
        *min = scales [j + 4] & 63;
    }
    else {
        *scale = (scales [j + 4] & 0x0F) | ((scales [j - 4] >> 6) << 4);
        *min = (scales [j + 4] >> 4) | ((scales [j] >> 6) << 4);
    }
}

//  The inverse of s_q4_K_scale_min: packs 8 scales and 8 mins (each 0..63).
static void
s_q4_K_pack_scales (uint8_t *scales, const int *scale, const int *min)
{
    memset (scales, 0, 12);
    for (int j = 0; j < 4; j++) {
        scales [j] = (uint8_t) scale [j];
        scales [j + 4] = (uint8_t) min [j];
    }
    for (int j = 4; j < 8; j++) {
        scales [j + 4] = (uint8_t) ((scale [j] & 0x0F) | ((min [j] & 0x0F) << 4));
        scales [j - 4] |= (uint8_t) ((scale [j] >> 4) << 6);
        scales [j] |= (uint8_t) ((min [j] >> 4) << 6);
    }
}

static void
s_dequantize_q4_K (const uint8_t *src, float *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        quant_block_q4_K_t block;
        memcpy (&block, src + b * sizeof block, sizeof block);
        float d = quant_f16_to_f32 (block.d);
        float dmin = quant_f16_to_f32 (block.dmin);
        float *y = dst + b * QUANT_K_BLOCK;
        //  Four groups of 64 elements; group k uses qs[32k .. 32k+31] and sub-blocks 2k
        //  (low nibbles) and 2k + 1 (high nibbles).
        for (int k = 0; k < 4; k++) {
            int scale_low, min_low, scale_high, min_high;
            s_q4_K_scale_min (block.scales, 2 * k, &scale_low, &min_low);
            s_q4_K_scale_min (block.scales, 2 * k + 1, &scale_high, &min_high);
            const uint8_t *q = block.qs + 32 * k;
            for (int l = 0; l < 32; l++) {
                y [64 * k + l] = d * scale_low * (q [l] & 0x0F) - dmin * min_low;
                y [64 * k + 32 + l] = d * scale_high * (q [l] >> 4) - dmin * min_high;
            }
        }
    }
}

//  Fit x[0..n-1] ~ scale * q + offset with q in 0..q_max and offset <= 0, minimizing the
//  squared error. Tries the plain range fit and a spread of scales around it; each
//  choice of integers is refitted by least squares. Returns the scale (>= 0) and the
//  offset (<= 0).
static void
s_fit_scale_offset (const float *x, int n, int q_max, float *scale_out, float *offset_out)
{
    float low = 0, high = x [0];
    double sum_x = 0, sum_xx = 0;
    for (int i = 0; i < n; i++) {
        if (x [i] < low)
            low = x [i];
        if (x [i] > high)
            high = x [i];
        sum_x += x [i];
        sum_xx += (double) x [i] * x [i];
    }
    //  offset <= 0 means the smallest value representable is <= 0: low includes 0.
    if (high <= low) {
        *scale_out = 0;
        *offset_out = low;      //  every x equals low (<= 0): represented with q = 0
        return;
    }
    float best_scale = (high - low) / q_max;
    float best_offset = low;
    double best_error = INFINITY;
    for (int step = -10; step <= 10; step++) {
        float inverse = (q_max + 0.1f * step) / (high - low);
        //  Integers for this candidate, then the least-squares line through them.
        int sum_q = 0, sum_qq = 0;
        double sum_qx = 0;
        for (int i = 0; i < n; i++) {
            int q = s_clamp (s_nearest ((x [i] - low) * inverse), 0, q_max);
            sum_q += q;
            sum_qq += q * q;
            sum_qx += (double) q * x [i];
        }
        double determinant = (double) n * sum_qq - (double) sum_q * sum_q;
        double scale, offset;
        if (determinant > 0) {
            scale = (n * sum_qx - sum_q * sum_x) / determinant;
            offset = (sum_x - scale * sum_q) / n;
        }
        else {
            scale = 0;
            offset = sum_x / n;
        }
        if (offset > 0) {
            //  The format cannot add: fit through the origin instead.
            offset = 0;
            scale = sum_qq > 0? sum_qx / sum_qq: 0;
        }
        if (scale < 0)
            continue;
        //  The squared error sum of (scale * q + offset - x)^2, expanded into the sums.
        double error = scale * scale * sum_qq + 2 * scale * offset * sum_q + n * offset * offset
                     - 2 * scale * sum_qx - 2 * offset * sum_x + sum_xx;
        if (error < best_error) {
            best_error = error;
            best_scale = (float) scale;
            best_offset = (float) offset;
        }
    }
    *scale_out = best_scale;
    *offset_out = best_offset;
}

//  The integers (0..15) of 32 values x for the decoded step and shift (x ~ step * q -
//  shift), and the squared error they leave.
static float
s_q4_K_sub_block (const float *x, float step, float shift, uint8_t *q)
{
    float error = 0;
    float inverse = step > 0? 1.0f / step: 0;
    for (int i = 0; i < 32; i++) {
        q [i] = (uint8_t) s_clamp (s_nearest ((x [i] + shift) * inverse), 0, 15);
        float difference = step * q [i] - shift - x [i];
        error += difference * difference;
    }
    return error;
}

static void
s_quantize_q4_K (const float *src, uint8_t *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        const float *x = src + b * QUANT_K_BLOCK;
        //  First level: a scale and a min (= -offset) for each sub-block of 32.
        float sub_scale [8], sub_min [8];
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float offset;
            s_fit_scale_offset (x + 32 * j, 32, 15, &sub_scale [j], &offset);
            sub_min [j] = -offset;
            if (sub_scale [j] > max_scale)
                max_scale = sub_scale [j];
            if (sub_min [j] > max_min)
                max_min = sub_min [j];
        }
        //  Second level: the scales and mins as 6-bit multiples of d and dmin.
        quant_block_q4_K_t block;
        block.d = quant_f32_to_f16 (max_scale / 63);
        block.dmin = quant_f32_to_f16 (max_min / 63);
        float d = quant_f16_to_f32 (block.d);
        float dmin = quant_f16_to_f32 (block.dmin);
        //  Each sub-block's 6-bit scale and min: of the integers just below and above the
        //  ideal ones, the pair whose decoded values are closest to x.
        int scale [8], min [8];
        uint8_t q [QUANT_K_BLOCK];
        for (int j = 0; j < 8; j++) {
            float ideal_scale = d > 0? sub_scale [j] / d: 0;
            float ideal_min = dmin > 0? sub_min [j] / dmin: 0;
            float best_error = INFINITY;
            for (int up_scale = 0; up_scale < 2; up_scale++)
                for (int up_min = 0; up_min < 2; up_min++) {
                    int try_scale = s_clamp ((int) floorf (ideal_scale) + up_scale, 0, 63);
                    int try_min = s_clamp ((int) floorf (ideal_min) + up_min, 0, 63);
                    uint8_t try_q [32];
                    float error = s_q4_K_sub_block (x + 32 * j, d * try_scale, dmin * try_min,
                                                    try_q);
                    if (error < best_error) {
                        best_error = error;
                        scale [j] = try_scale;
                        min [j] = try_min;
                        memcpy (q + 32 * j, try_q, 32);
                    }
                }
        }
        s_q4_K_pack_scales (block.scales, scale, min);
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++)
                block.qs [32 * k + l] = (uint8_t) (q [64 * k + l] | (q [64 * k + 32 + l] << 4));
        memcpy (dst + b * sizeof block, &block, sizeof block);
    }
}

//  --- Q6_K -----------------------------------------------------------------------------
//
//  A block is two halves of 128 elements; half h uses ql[64h .. 64h+63] and
//  qh[32h .. 32h+31]. Inside a half, element e (0..127) is quarter e / 32, position
//  l = e % 32: its low 4 bits are the low nibble (quarters 0, 1) or high nibble
//  (quarters 2, 3) of ql[l + 32 * (quarter % 2)], its high 2 bits are bits
//  2 * quarter, 2 * quarter + 1 of qh[l]. Element i of the block has scale scales[i / 16].

static void
s_dequantize_q6_K (const uint8_t *src, float *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        quant_block_q6_K_t block;
        memcpy (&block, src + b * sizeof block, sizeof block);
        float d = quant_f16_to_f32 (block.d);
        float *y = dst + b * QUANT_K_BLOCK;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = block.ql + 64 * h;
            const uint8_t *qh = block.qh + 32 * h;
            for (int e = 0; e < 128; e++) {
                int quarter = e / 32;
                int l = e % 32;
                uint8_t low_byte = ql [l + 32 * (quarter % 2)];
                int low = quarter < 2? (low_byte & 0x0F): (low_byte >> 4);
                int high = (qh [l] >> (2 * quarter)) & 3;
                int q = (low | (high << 4)) - 32;
                int i = 128 * h + e;
                y [i] = d * block.scales [i / 16] * q;
            }
        }
    }
}

//  Fit x[0..n-1] ~ scale * q with q in -32..31, minimizing the squared error. The value
//  of largest magnitude is mapped near -32 (the end with one more step), trying a spread
//  of scales around that, each refitted by least squares to its integers.
static float
s_fit_symmetric_scale (const float *x, int n)
{
    float amax = 0, extreme = 0;
    for (int i = 0; i < n; i++)
        if (fabsf (x [i]) > amax) {
            amax = fabsf (x [i]);
            extreme = x [i];
        }
    if (amax == 0)
        return 0;
    float best_scale = extreme / -32;
    double best_fit = -1;
    for (int step = -9; step <= 9; step++) {
        float inverse = -(32 + 0.1f * step) / extreme;
        int sum_qq = 0;
        double sum_qx = 0;
        for (int i = 0; i < n; i++) {
            int q = s_clamp (s_nearest (x [i] * inverse), -32, 31);
            sum_qq += q * q;
            sum_qx += (double) q * x [i];
        }
        if (sum_qq == 0)
            continue;
        //  With the least-squares scale sum_qx / sum_qq the squared error is
        //  sum (x^2) - sum_qx^2 / sum_qq: the larger sum_qx^2 / sum_qq, the better.
        double fit = sum_qx * sum_qx / sum_qq;
        if (fit > best_fit) {
            best_fit = fit;
            best_scale = (float) (sum_qx / sum_qq);
        }
    }
    return best_scale;
}

//  The integers (stored + 32, so 0..63) of 16 values x for the decoded step, and the
//  squared error they leave.
static float
s_q6_K_sub_block (const float *x, float step, uint8_t *q)
{
    float error = 0;
    float inverse = step != 0? 1.0f / step: 0;
    for (int i = 0; i < 16; i++) {
        int value = s_clamp (s_nearest (x [i] * inverse), -32, 31);
        q [i] = (uint8_t) (value + 32);
        float difference = step * value - x [i];
        error += difference * difference;
    }
    return error;
}

static void
s_quantize_q6_K (const float *src, uint8_t *dst, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        const float *x = src + b * QUANT_K_BLOCK;
        //  First level: a signed scale for each sub-block of 16.
        float sub_scale [16];
        float extreme = 0;
        for (int j = 0; j < 16; j++) {
            sub_scale [j] = s_fit_symmetric_scale (x + 16 * j, 16);
            if (fabsf (sub_scale [j]) > fabsf (extreme))
                extreme = sub_scale [j];
        }
        //  Second level: the scales as 8-bit multiples of d; the largest maps to -128.
        quant_block_q6_K_t block;
        block.d = quant_f32_to_f16 (extreme / -128);
        float d = quant_f16_to_f32 (block.d);
        //  Each sub-block's 8-bit scale: of the integers just below and above the ideal
        //  one, the one whose decoded values are closest to x.
        uint8_t q [QUANT_K_BLOCK];
        for (int j = 0; j < 16; j++) {
            float ideal = d != 0? sub_scale [j] / d: 0;
            float best_error = INFINITY;
            for (int up = 0; up < 2; up++) {
                int try_scale = s_clamp ((int) floorf (ideal) + up, -128, 127);
                uint8_t try_q [16];
                float error = s_q6_K_sub_block (x + 16 * j, d * try_scale, try_q);
                if (error < best_error) {
                    best_error = error;
                    block.scales [j] = (int8_t) try_scale;
                    memcpy (q + 16 * j, try_q, 16);
                }
            }
        }
        memset (block.ql, 0, sizeof block.ql);
        memset (block.qh, 0, sizeof block.qh);
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = block.ql + 64 * h;
            uint8_t *qh = block.qh + 32 * h;
            for (int e = 0; e < 128; e++) {
                int quarter = e / 32;
                int l = e % 32;
                int value = q [128 * h + e];
                int low = value & 0x0F;
                int high = value >> 4;
                if (quarter < 2)
                    ql [l + 32 * (quarter % 2)] |= (uint8_t) low;
                else
                    ql [l + 32 * (quarter % 2)] |= (uint8_t) (low << 4);
                qh [l] |= (uint8_t) (high << (2 * quarter));
            }
        }
        memcpy (dst + b * sizeof block, &block, sizeof block);
    }
}

//  --- Rows -----------------------------------------------------------------------------

bool
quant_supports (ggml_type_t type)
{
    switch (type) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K:
            return true;
        default:
            return false;
    }
}

//  Number of blocks in a row of n elements, or -1 when the type is not supported or
//  n is not a whole number of blocks.
static int64_t
s_block_count (ggml_type_t type, uint64_t n)
{
    if (!quant_supports (type))
        return -1;
    uint32_t block = ggml_type_block_elements (type);
    if (n % block != 0 || n / block > INT64_MAX)
        return -1;
    return (int64_t) (n / block);
}

int
quant_dequantize_row (ggml_type_t type, const void *src, float *dst, uint64_t n)
{
    int64_t blocks = s_block_count (type, n);
    if (blocks < 0)
        return -1;
    const uint8_t *bytes = src;
    switch (type) {
        case GGML_TYPE_F32:
            memcpy (dst, bytes, n * sizeof (float));
            break;
        case GGML_TYPE_F16:
            for (uint64_t i = 0; i < n; i++)
                dst [i] = quant_f16_to_f32 (s_read_u16 (bytes + 2 * i));
            break;
        case GGML_TYPE_BF16:
            for (uint64_t i = 0; i < n; i++)
                dst [i] = quant_bf16_to_f32 (s_read_u16 (bytes + 2 * i));
            break;
        case GGML_TYPE_Q8_0: s_dequantize_q8_0 (bytes, dst, (uint64_t) blocks); break;
        case GGML_TYPE_Q4_0: s_dequantize_q4_0 (bytes, dst, (uint64_t) blocks); break;
        case GGML_TYPE_Q4_K: s_dequantize_q4_K (bytes, dst, (uint64_t) blocks); break;
        case GGML_TYPE_Q6_K: s_dequantize_q6_K (bytes, dst, (uint64_t) blocks); break;
        default: return -1;
    }
    return 0;
}

int
quant_quantize_row (ggml_type_t type, const float *src, void *dst, uint64_t n)
{
    int64_t blocks = s_block_count (type, n);
    if (blocks < 0)
        return -1;
    uint8_t *bytes = dst;
    switch (type) {
        case GGML_TYPE_F32:
            memcpy (bytes, src, n * sizeof (float));
            break;
        case GGML_TYPE_F16:
            for (uint64_t i = 0; i < n; i++)
                s_write_u16 (bytes + 2 * i, quant_f32_to_f16 (src [i]));
            break;
        case GGML_TYPE_BF16:
            for (uint64_t i = 0; i < n; i++)
                s_write_u16 (bytes + 2 * i, quant_f32_to_bf16 (src [i]));
            break;
        case GGML_TYPE_Q8_0: s_quantize_q8_0 (src, bytes, (uint64_t) blocks); break;
        case GGML_TYPE_Q4_0: s_quantize_q4_0 (src, bytes, (uint64_t) blocks); break;
        case GGML_TYPE_Q4_K: s_quantize_q4_K (src, bytes, (uint64_t) blocks); break;
        case GGML_TYPE_Q6_K: s_quantize_q6_K (src, bytes, (uint64_t) blocks); break;
        default: return -1;
    }
    return 0;
}
