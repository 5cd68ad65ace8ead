/*  quant — ggml's tensor element formats, converted to and from float.

    For each stored type the worker reads (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) this
    module turns a row of n elements into floats (dequantize) and floats into a row
    (quantize), in exactly the byte layout that ggml and llama.cpp use, so that GGUF files
    made by llama.cpp decode correctly and files we write load in llama.cpp.

    This is the plain reference code: readable loops that say what each bit means. Fast
    kernels elsewhere are tested against it.

    Block layouts (ggml-common.h; every multi-byte field is little-endian, f16 is IEEE
    half precision):

      Q8_0, 32 elements in 34 bytes:   { f16 d; int8 qs[32]; }
            x[i] = d * qs[i]
      Q4_0, 32 elements in 18 bytes:   { f16 d; uint8 qs[16]; }
            the low nibble of qs[j] is element j, the high nibble element j + 16;
            x = d * (q - 8)
      Q4_K, 256 elements in 144 bytes: { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]; }
            8 sub-blocks of 32, each with a 6-bit scale sc and a 6-bit min m packed in
            scales[] (see quant.c, s_q4_K_scale_min); x = d * sc * q - dmin * m, q in 0..15.
            qs holds the elements 64 at a time: for the 64 elements of sub-blocks 2k and
            2k+1, byte qs[32k + l] has element 64k + l in its low nibble and element
            64k + 32 + l in its high nibble.
      Q6_K, 256 elements in 210 bytes: { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d; }
            16 sub-blocks of 16, each with an 8-bit signed scale; q in 0..63 made of 4 low
            bits in ql and 2 high bits in qh; x = d * scales[sub] * (q - 32). The bits of
            each half of 128 elements are spread as ggml spreads them (see quant.c).

    The quantizers: Q8_0 and Q4_0 are ggml's reference ones (quantize_row_q8_0_ref,
    quantize_row_q4_0_ref: d = amax / 127, and d = (signed value of largest magnitude) / -8).
    Q4_K and Q6_K use our own search, in the spirit of ggml's make_qkx / make_qx: for each
    sub-block a few candidate scales are tried, each followed by a least-squares refit of
    scale (and min) to the integers it chose, and the one with the smallest squared error
    is kept; then the sub-block scales (and mins) are themselves quantized (6 bits for
    Q4_K, 8 bits for Q6_K): of the integers just below and just above each ideal one, the
    one whose decoded sub-block is closest to the input is kept, with the elements'
    integers chosen again against it. Measured relative RMS error on Gaussian data: Q8_0
    0.005, Q4_0 0.086, Q4_K 0.070, Q6_K 0.017; tests/unit/test_quant.c bounds them.

    F16 and BF16 conversions round to nearest, ties to even; NaN stays NaN (quiet, sign
    kept), infinities stay infinities, values too large for F16 become infinity, and F16
    subnormals are produced and read exactly.

    Who owns what: callers own every buffer; nothing here allocates or keeps state.
    Every function is safe to call from many threads at once.
*/
#ifndef ZLLM_QUANT_H
#define ZLLM_QUANT_H

#include <stdbool.h>
#include <stdint.h>
#include "gguf.h"

//  Elements per block of the K-quants, and of Q8_0 / Q4_0.
#define QUANT_K_BLOCK 256
#define QUANT_32_BLOCK 32

//  The blocks as C structs. They have no padding (every one is a whole number of
//  2-byte units and only holds 1- and 2-byte fields), so sizeof is the size in the file.
//  Tensor data in a mapping may sit at any even offset: read blocks with memcpy when in
//  doubt about alignment, as quant.c does.
typedef struct {
    uint16_t d;                     //  f16 scale
    int8_t qs [QUANT_32_BLOCK];
} quant_block_q8_0_t;

typedef struct {
    uint16_t d;                     //  f16 scale
    uint8_t qs [QUANT_32_BLOCK / 2];
} quant_block_q4_0_t;

typedef struct {
    uint16_t d;                     //  f16 scale of the sub-block scales
    uint16_t dmin;                  //  f16 scale of the sub-block mins
    uint8_t scales [12];            //  8 scales and 8 mins, 6 bits each
    uint8_t qs [QUANT_K_BLOCK / 2];
} quant_block_q4_K_t;

typedef struct {
    uint8_t ql [QUANT_K_BLOCK / 2]; //  low 4 bits of each q
    uint8_t qh [QUANT_K_BLOCK / 4]; //  high 2 bits of each q
    int8_t scales [QUANT_K_BLOCK / 16];
    uint16_t d;                     //  f16 scale of the sub-block scales
} quant_block_q6_K_t;

//  --- Scalars --------------------------------------------------------------------------

uint16_t
    quant_f32_to_f16 (float value);
float
    quant_f16_to_f32 (uint16_t bits);
uint16_t
    quant_f32_to_bf16 (float value);
float
    quant_bf16_to_f32 (uint16_t bits);

//  --- Rows -----------------------------------------------------------------------------

//  True for the types this module converts: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K.
bool
    quant_supports (ggml_type_t type);

//  Decode n elements stored as `type` at src into dst[0..n-1]. src needs no alignment.
//  Returns 0, or -1 when the type is not supported or n is not a multiple of its block
//  (ggml_type_block_elements).
int
    quant_dequantize_row (ggml_type_t type, const void *src, float *dst, uint64_t n);

//  Encode src[0..n-1] as `type` into dst (ggml_row_bytes (type, n) bytes; no alignment
//  needed). Returns 0, or -1 as quant_dequantize_row does. Values should be finite:
//  a block holding inf or NaN decodes to garbage, as in ggml.
int
    quant_quantize_row (ggml_type_t type, const float *src, void *dst, uint64_t n);

#endif
