/*  gguf_writer — write a GGUF version 3 file: metadata, tensor table, tensor data.

    Two ways to use it:

      In memory (small files, tests): set metadata, add tensors with their data, then
      gguf_writer_write (self, path, ...). add_tensor copies the data.

      Streaming (models larger than memory): set metadata, declare every tensor with
      add_tensor (data NULL), then gguf_writer_begin writes the header; hand over each
      tensor's bytes in declaration order with gguf_writer_append (a tensor's bytes may
      come in any number of pieces), and gguf_writer_finish. Only the metadata and the
      tensor table are ever held in memory.

    The file is written to a temporary file beside `path` and renamed onto it once
    complete, so a reader never sees half a file, and a failed or abandoned write (error,
    or gguf_writer_destroy before finish) leaves nothing behind.

    Layout written (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): "GGUF",
    u32 version 3, u64 tensor count, u64 metadata count; each key as u64 length + bytes,
    u32 value type, value (strings as u64 length + bytes, arrays as u32 element type,
    u64 count, elements); each tensor as name, u32 n_dims, u64 ne[n_dims] (ne[0]
    innermost), u32 ggml type, u64 offset; zero padding to the alignment; then the data,
    each tensor starting at a multiple of the alignment from the data section's start and
    followed by zero padding to the next multiple (the last one too, as ggml does).

    The alignment is 32, or the value of a "general.alignment" key when one was set (it
    must be a UINT32 power of two). Metadata keys are written in the order first set;
    setting a key again replaces its value in place. Tensors are written in the order
    added. Numbers are written little-endian (the host must be little-endian).

    Errors: setters and add_tensor return 0 or -1; the first failure's message is kept
    (gguf_writer_error) and makes begin / write fail with it, so a caller may make many
    calls and check once. begin, append, finish and write fill err; any error while a file
    is being written removes that unfinished file. Once a file is finished the same
    writer may write it again (to another path, say).

    Who owns what: the writer copies every key, string, array and in-memory tensor data
    it is given; the caller keeps nothing alive for it. gguf_writer_copy_key reads from
    an open gguf_t only during the call.
*/
#ifndef ZLLM_GGUF_WRITER_H
#define ZLLM_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

#define GGUF_WRITER_VERSION 3
#define GGUF_WRITER_DEFAULT_ALIGNMENT 32

typedef struct _gguf_writer_t gguf_writer_t;

gguf_writer_t *
    gguf_writer_new (void);

//  Destroys the writer; a file begun but not finished is removed.
void
    gguf_writer_destroy (gguf_writer_t **self_p);

//  The first error met by a setter or add_tensor, or "" when none.
const char *
    gguf_writer_error (const gguf_writer_t *self);

//  --- Metadata --------------------------------------------------------------------------

int gguf_writer_set_u8 (gguf_writer_t *self, const char *key, uint8_t value);
int gguf_writer_set_i8 (gguf_writer_t *self, const char *key, int8_t value);
int gguf_writer_set_u16 (gguf_writer_t *self, const char *key, uint16_t value);
int gguf_writer_set_i16 (gguf_writer_t *self, const char *key, int16_t value);
int gguf_writer_set_u32 (gguf_writer_t *self, const char *key, uint32_t value);
int gguf_writer_set_i32 (gguf_writer_t *self, const char *key, int32_t value);
int gguf_writer_set_u64 (gguf_writer_t *self, const char *key, uint64_t value);
int gguf_writer_set_i64 (gguf_writer_t *self, const char *key, int64_t value);
int gguf_writer_set_f32 (gguf_writer_t *self, const char *key, float value);
int gguf_writer_set_f64 (gguf_writer_t *self, const char *key, double value);
int gguf_writer_set_bool (gguf_writer_t *self, const char *key, bool value);

//  A NUL-terminated string, and a string of `length` bytes (may hold NULs).
int gguf_writer_set_str (gguf_writer_t *self, const char *key, const char *value);
int gguf_writer_set_strn (gguf_writer_t *self, const char *key, const char *value,
                          uint64_t length);

//  An array of `count` numbers of elem_type (any type but STRING and ARRAY), given as
//  the C array of that type (uint8_t for BOOL, each 0 or 1).
int gguf_writer_set_array (gguf_writer_t *self, const char *key, gguf_type_t elem_type,
                           const void *values, uint64_t count);

//  An array of `count` NUL-terminated strings.
int gguf_writer_set_str_array (gguf_writer_t *self, const char *key,
                               const char *const *values, uint64_t count);

//  Copy `key` from an open GGUF file: same type, same value (arrays whole). Exact for
//  every type except a scalar FLOAT64, which gguf.h only reads as float: it is written
//  back as FLOAT64 with float precision. Returns -1 (and records why) if the file has no
//  such key.
int gguf_writer_copy_key (gguf_writer_t *self, const gguf_t *source, const char *key);

//  Copy every key of `source` whose name starts with prefix (e.g. "tokenizer."), in the
//  file's order. Returns the number copied, or -1.
int64_t gguf_writer_copy_prefix (gguf_writer_t *self, const gguf_t *source,
                                 const char *prefix);

size_t
    gguf_writer_key_count (const gguf_writer_t *self);

//  --- Tensors ---------------------------------------------------------------------------

//  Add a tensor of n_dims (1..4) dimensions ne[0..n_dims-1], ne[0] innermost. ne[0] must
//  be a multiple of the type's block. With data, size must be the tensor's size in bytes
//  (ggml_row_bytes (type, ne[0]) times the other dimensions) and the data is copied.
//  With data NULL (size ignored) the tensor is only declared, its bytes to come through
//  gguf_writer_append. Names must be unique.
int gguf_writer_add_tensor (gguf_writer_t *self, const char *name, ggml_type_t type,
                            uint32_t n_dims, const uint64_t *ne, const void *data,
                            uint64_t size);

size_t
    gguf_writer_tensor_count (const gguf_writer_t *self);

//  Bytes of the tensor added at `index` (0 when there is no such tensor).
uint64_t
    gguf_writer_tensor_size (const gguf_writer_t *self, size_t index);

//  --- Writing ---------------------------------------------------------------------------

//  Write the whole file: every tensor must have been added with its data.
int gguf_writer_write (gguf_writer_t *self, const char *path, char *err, size_t err_size);

//  Streaming: write the header to a temporary file beside path. Tensors added with data
//  are written by begin / append as their turn comes, so a writer may mix both kinds.
int gguf_writer_begin (gguf_writer_t *self, const char *path, char *err, size_t err_size);

//  Streaming: the next `size` bytes of tensor data, in declaration order. A piece may
//  end inside a tensor or span several (padding is inserted between tensors).
int gguf_writer_append (gguf_writer_t *self, const void *data, uint64_t size,
                        char *err, size_t err_size);

//  Streaming: check that every tensor's bytes were given, flush, and rename onto path.
//  Total size of the file written is in *file_size when not NULL.
int gguf_writer_finish (gguf_writer_t *self, uint64_t *file_size, char *err, size_t err_size);

#endif
