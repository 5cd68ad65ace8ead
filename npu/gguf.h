/*  gguf — read-only access to a GGUF model file (versions 2 and 3).

    The file is mapped with mmap and never copied. gguf_open validates the whole header
    before it returns: the magic and version, every count, string length, array size,
    value type, tensor dimension, tensor type and data offset is checked against the size
    of the file, so a truncated or corrupt file gives an error message that says what is
    wrong and where, never a read past the end of the mapping.

    Strings in GGUF are not NUL-terminated: they are returned as gguf_str_t, a pointer into
    the mapping and a length, valid until gguf_destroy.

    Who owns what: the gguf_t owns the mapping; tensors' data pointers point into it. Many
    threads may read one gguf_t at once (nothing in it changes after gguf_open).

    Format reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
*/
#ifndef ZLLM_GGUF_H
#define ZLLM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Types of metadata values, as numbered in the file.
typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT = 13
} gguf_type_t;

//  Tensor element types, numbered as ggml numbers them. Only the ones that the reader
//  knows the block layout of are listed; any other number in a file is an error.
typedef enum {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_COUNT = 40
} ggml_type_t;

//  A string inside the mapping: not NUL-terminated.
typedef struct {
    const char *ptr;
    uint64_t len;
} gguf_str_t;

#define GGUF_MAX_DIMS 4

typedef struct {
    gguf_str_t name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];     //  elements per dimension, ne[0] innermost; unused dims are 1
    ggml_type_t type;
    uint64_t offset;                //  from the start of the data section
    uint64_t size;                  //  bytes
    const void *data;               //  into the mapping
} gguf_tensor_t;

typedef struct _gguf_t gguf_t;

//  Open and validate a GGUF file. On error returns NULL and writes a message into err.
gguf_t *
    gguf_open (const char *path, char *err, size_t err_size);

//  Validate a GGUF image already in memory (for tests and fuzzing). The buffer is not
//  copied and must outlive the gguf_t.
gguf_t *
    gguf_open_memory (const void *data, size_t size, char *err, size_t err_size);

void
    gguf_destroy (gguf_t **self_p);

uint32_t
    gguf_version (const gguf_t *self);

size_t
    gguf_file_size (const gguf_t *self);

//  A 64-bit hash of the header (metadata and tensor table, not the weights). Two files
//  with the same vocabulary, shapes and settings have the same fingerprint; peers compare
//  it to check that they serve the same model.
uint64_t
    gguf_fingerprint (const gguf_t *self);

//  --- Metadata --------------------------------------------------------------------------

size_t
    gguf_key_count (const gguf_t *self);

//  Returns the key's index, or -1 if the file has no such key.
int64_t
    gguf_find_key (const gguf_t *self, const char *key);

gguf_str_t
    gguf_key_name (const gguf_t *self, size_t index);

gguf_type_t
    gguf_key_type (const gguf_t *self, size_t index);

//  Typed getters. Each returns 0 and fills *value when the key exists and its value fits
//  the asked type; -1 when the key is missing or its type does not fit. Integer getters
//  accept any integer type whose value is in range; gguf_get_f32 accepts FLOAT32 and
//  FLOAT64.
int
    gguf_get_u32 (const gguf_t *self, const char *key, uint32_t *value);
int
    gguf_get_u64 (const gguf_t *self, const char *key, uint64_t *value);
int
    gguf_get_i64 (const gguf_t *self, const char *key, int64_t *value);
int
    gguf_get_f32 (const gguf_t *self, const char *key, float *value);
int
    gguf_get_bool (const gguf_t *self, const char *key, bool *value);
int
    gguf_get_str (const gguf_t *self, const char *key, gguf_str_t *value);

//  Arrays. gguf_get_array gives the element type and count. For arrays of numbers,
//  *data points at the raw little-endian elements in the mapping (possibly unaligned:
//  read them with memcpy, or with gguf_array_*). For arrays of strings use gguf_array_str.
int
    gguf_get_array (const gguf_t *self, const char *key,
                    gguf_type_t *elem_type, uint64_t *count, const void **data);

//  Element i of a string array (key must name an array of strings; i < count).
int
    gguf_array_str (const gguf_t *self, const char *key, uint64_t i, gguf_str_t *value);

//  Copy a numeric array into out[0..count-1], converting each element to float / int32.
//  Fails (-1) if the key is missing, is not a numeric array, has another length than
//  count, or (for int32) holds a value out of range.
int
    gguf_array_f32 (const gguf_t *self, const char *key, float *out, uint64_t count);
int
    gguf_array_i32 (const gguf_t *self, const char *key, int32_t *out, uint64_t count);

//  --- Tensors ---------------------------------------------------------------------------

size_t
    gguf_tensor_count (const gguf_t *self);

const gguf_tensor_t *
    gguf_tensor (const gguf_t *self, size_t index);

//  NULL when the file has no tensor of that name.
const gguf_tensor_t *
    gguf_find_tensor (const gguf_t *self, const char *name);

//  --- Tensor types ----------------------------------------------------------------------

//  "F32", "Q4_K", ...; "unknown" for a number the reader does not know.
const char *
    ggml_type_name (ggml_type_t type);

//  Elements per block (1 for plain types, 32 for Q8_0, 256 for K-quants) and bytes per
//  block; both 0 for a type the reader does not know.
uint32_t
    ggml_type_block_elements (ggml_type_t type);
uint32_t
    ggml_type_block_bytes (ggml_type_t type);

//  Bytes of a row of n elements, or 0 when n is not a multiple of the block size.
uint64_t
    ggml_row_bytes (ggml_type_t type, uint64_t n);

#endif
