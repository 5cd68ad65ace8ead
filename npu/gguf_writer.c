/*  gguf_writer — write a GGUF version 3 file. See gguf_writer.h.

    Each metadata value is kept already encoded, as the bytes that follow its type in the
    file; so writing the header is copying those bytes, and copying a key from another
    file is encoding it once. Tensors keep their description, and their data when it was
    given in memory.

    Writing is a small state machine: begin writes the header and opens the data
    section; the tensor being filled is `current`, with `current_written` of its bytes
    written; each time a tensor is complete its padding follows and, if the next tensors
    came with their data, they are written at once.
*/
#include "gguf_writer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined (__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#   error "gguf_writer writes numbers in host order and needs a little-endian host"
#endif

#define GGUF_MAX_NAME 65535             //  a key's length must fit GGUF's limits
#define GGUF_MAX_TENSOR_NAME 64         //  the spec's limit on tensor names

typedef struct {
    char *name;
    gguf_type_t type;
    uint8_t *value;                     //  the value's bytes as in the file
    size_t value_size;
} writer_key_t;

typedef struct {
    char *name;
    ggml_type_t type;
    uint32_t n_dims;
    uint64_t ne [GGUF_MAX_DIMS];
    uint64_t size;                      //  bytes of data
    uint64_t offset;                    //  from the start of the data section
    uint8_t *data;                      //  our copy, or NULL when streamed
} writer_tensor_t;

//  A growable byte buffer, to encode values.
typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
    bool failed;                        //  out of memory at some point
} buffer_t;

struct _gguf_writer_t {
    writer_key_t *keys;
    size_t key_count;
    size_t key_capacity;
    writer_tensor_t *tensors;
    size_t tensor_count;
    size_t tensor_capacity;
    char error [256];                   //  first error of a setter, "" if none

    //  While writing (between begin and finish):
    FILE *file;
    char *path;
    char *temp_path;
    uint32_t alignment;
    uint64_t data_start;                //  file position of the data section
    uint64_t position;                  //  bytes written to the file so far
    size_t current;                     //  the tensor being filled
    uint64_t current_written;           //  bytes of it written
};

//  --- Helpers -----------------------------------------------------------------------------

//  Record the first error of a setter; returns -1.
static int
s_error (gguf_writer_t *self, const char *format, ...)
{
    if (self->error [0] == 0) {
        va_list args;
        va_start (args, format);
        vsnprintf (self->error, sizeof self->error, format, args);
        va_end (args);
    }
    return -1;
}

static int
s_fail (char *err, size_t err_size, const char *format, ...)
{
    if (err && err_size > 0) {
        va_list args;
        va_start (args, format);
        vsnprintf (err, err_size, format, args);
        va_end (args);
    }
    return -1;
}

static void
s_buffer_put (buffer_t *buffer, const void *bytes, size_t size)
{
    if (buffer->failed)
        return;
    if (buffer->size + size > buffer->capacity) {
        size_t capacity = buffer->capacity? buffer->capacity: 64;
        while (capacity < buffer->size + size)
            capacity *= 2;
        uint8_t *data = realloc (buffer->data, capacity);
        if (!data) {
            buffer->failed = true;
            return;
        }
        buffer->data = data;
        buffer->capacity = capacity;
    }
    if (size > 0)
        memcpy (buffer->data + buffer->size, bytes, size);
    buffer->size += size;
}

static void
s_buffer_put_u32 (buffer_t *buffer, uint32_t value)
{
    s_buffer_put (buffer, &value, sizeof value);
}

static void
s_buffer_put_u64 (buffer_t *buffer, uint64_t value)
{
    s_buffer_put (buffer, &value, sizeof value);
}

//  A GGUF string: u64 length, then the bytes.
static void
s_buffer_put_string (buffer_t *buffer, const char *text, uint64_t length)
{
    s_buffer_put_u64 (buffer, length);
    s_buffer_put (buffer, text, (size_t) length);
}

//  Bytes of one value of a fixed-size type; 0 for strings, arrays and unknown types.
static size_t
s_type_bytes (gguf_type_t type)
{
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

static uint64_t
s_align (uint64_t value, uint32_t alignment)
{
    return (value + alignment - 1) / alignment * alignment;
}

//  --- Construction ----------------------------------------------------------------------

gguf_writer_t *
gguf_writer_new (void)
{
    gguf_writer_t *self = calloc (1, sizeof (gguf_writer_t));
    if (self)
        self->alignment = GGUF_WRITER_DEFAULT_ALIGNMENT;
    return self;
}

//  Close and remove an unfinished file.
static void
s_abandon_file (gguf_writer_t *self)
{
    if (self->file) {
        fclose (self->file);
        self->file = NULL;
    }
    if (self->temp_path)
        unlink (self->temp_path);
    free (self->temp_path);
    free (self->path);
    self->temp_path = NULL;
    self->path = NULL;
}

void
gguf_writer_destroy (gguf_writer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gguf_writer_t *self = *self_p;
    s_abandon_file (self);
    for (size_t i = 0; i < self->key_count; i++) {
        free (self->keys [i].name);
        free (self->keys [i].value);
    }
    free (self->keys);
    for (size_t i = 0; i < self->tensor_count; i++) {
        free (self->tensors [i].name);
        free (self->tensors [i].data);
    }
    free (self->tensors);
    free (self);
    *self_p = NULL;
}

const char *
gguf_writer_error (const gguf_writer_t *self)
{
    return self->error;
}

//  --- Metadata --------------------------------------------------------------------------

static writer_key_t *
s_find_key (gguf_writer_t *self, const char *name)
{
    for (size_t i = 0; i < self->key_count; i++)
        if (strcmp (self->keys [i].name, name) == 0)
            return &self->keys [i];
    return NULL;
}

//  Set key to a value of `type` whose encoding is in `encoded` (taken over: freed here
//  on failure, kept by the key on success).
static int
s_set_encoded (gguf_writer_t *self, const char *name, gguf_type_t type, buffer_t *encoded)
{
    if (encoded->failed) {
        free (encoded->data);
        return s_error (self, "out of memory for metadata key '%s'", name);
    }
    if (self->file) {
        free (encoded->data);
        return s_error (self, "metadata key '%s' set after the header was written", name);
    }
    writer_key_t *key = s_find_key (self, name);
    if (key) {
        free (key->value);
        key->type = type;
        key->value = encoded->data;
        key->value_size = encoded->size;
        return 0;
    }
    if (self->key_count == self->key_capacity) {
        size_t capacity = self->key_capacity? self->key_capacity * 2: 16;
        writer_key_t *keys = realloc (self->keys, capacity * sizeof (writer_key_t));
        if (!keys) {
            free (encoded->data);
            return s_error (self, "out of memory for metadata key '%s'", name);
        }
        self->keys = keys;
        self->key_capacity = capacity;
    }
    char *copy = strdup (name);
    if (!copy) {
        free (encoded->data);
        return s_error (self, "out of memory for metadata key '%s'", name);
    }
    key = &self->keys [self->key_count++];
    key->name = copy;
    key->type = type;
    key->value = encoded->data;
    key->value_size = encoded->size;
    return 0;
}

static int
s_check_key_name (gguf_writer_t *self, const char *name)
{
    if (!name || name [0] == 0)
        return s_error (self, "metadata key name is empty");
    if (strlen (name) > GGUF_MAX_NAME)
        return s_error (self, "metadata key name is longer than %d bytes", GGUF_MAX_NAME);
    return 0;
}

//  Set a scalar of a fixed-size type from its bytes.
static int
s_set_scalar (gguf_writer_t *self, const char *name, gguf_type_t type, const void *value)
{
    if (s_check_key_name (self, name))
        return -1;
    buffer_t encoded = { 0 };
    s_buffer_put (&encoded, value, s_type_bytes (type));
    return s_set_encoded (self, name, type, &encoded);
}

int
gguf_writer_set_u8 (gguf_writer_t *self, const char *key, uint8_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_UINT8, &value);
}

int
gguf_writer_set_i8 (gguf_writer_t *self, const char *key, int8_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_INT8, &value);
}

int
gguf_writer_set_u16 (gguf_writer_t *self, const char *key, uint16_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_UINT16, &value);
}

int
gguf_writer_set_i16 (gguf_writer_t *self, const char *key, int16_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_INT16, &value);
}

int
gguf_writer_set_u32 (gguf_writer_t *self, const char *key, uint32_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_UINT32, &value);
}

int
gguf_writer_set_i32 (gguf_writer_t *self, const char *key, int32_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_INT32, &value);
}

int
gguf_writer_set_u64 (gguf_writer_t *self, const char *key, uint64_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_UINT64, &value);
}

int
gguf_writer_set_i64 (gguf_writer_t *self, const char *key, int64_t value)
{
    return s_set_scalar (self, key, GGUF_TYPE_INT64, &value);
}

int
gguf_writer_set_f32 (gguf_writer_t *self, const char *key, float value)
{
    return s_set_scalar (self, key, GGUF_TYPE_FLOAT32, &value);
}

int
gguf_writer_set_f64 (gguf_writer_t *self, const char *key, double value)
{
    return s_set_scalar (self, key, GGUF_TYPE_FLOAT64, &value);
}

int
gguf_writer_set_bool (gguf_writer_t *self, const char *key, bool value)
{
    uint8_t byte = value? 1: 0;
    return s_set_scalar (self, key, GGUF_TYPE_BOOL, &byte);
}

int
gguf_writer_set_strn (gguf_writer_t *self, const char *key, const char *value,
                      uint64_t length)
{
    if (s_check_key_name (self, key))
        return -1;
    if (!value && length > 0)
        return s_error (self, "metadata key '%s': string is NULL", key);
    buffer_t encoded = { 0 };
    s_buffer_put_string (&encoded, value, length);
    return s_set_encoded (self, key, GGUF_TYPE_STRING, &encoded);
}

int
gguf_writer_set_str (gguf_writer_t *self, const char *key, const char *value)
{
    if (!value)
        return s_error (self, "metadata key '%s': string is NULL", key? key: "");
    return gguf_writer_set_strn (self, key, value, strlen (value));
}

int
gguf_writer_set_array (gguf_writer_t *self, const char *key, gguf_type_t elem_type,
                       const void *values, uint64_t count)
{
    if (s_check_key_name (self, key))
        return -1;
    size_t elem_bytes = s_type_bytes (elem_type);
    if (elem_bytes == 0)
        return s_error (self, "metadata key '%s': arrays of type %d are not arrays of "
                        "numbers", key, (int) elem_type);
    if (count > 0 && !values)
        return s_error (self, "metadata key '%s': array values are NULL", key);
    if (count > SIZE_MAX / elem_bytes)
        return s_error (self, "metadata key '%s': array too large", key);
    if (elem_type == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < count; i++)
            if (((const uint8_t *) values) [i] > 1)
                return s_error (self, "metadata key '%s': boolean %llu is neither 0 nor 1",
                                key, (unsigned long long) i);
    buffer_t encoded = { 0 };
    s_buffer_put_u32 (&encoded, (uint32_t) elem_type);
    s_buffer_put_u64 (&encoded, count);
    s_buffer_put (&encoded, values, (size_t) count * elem_bytes);
    return s_set_encoded (self, key, GGUF_TYPE_ARRAY, &encoded);
}

int
gguf_writer_set_str_array (gguf_writer_t *self, const char *key,
                           const char *const *values, uint64_t count)
{
    if (s_check_key_name (self, key))
        return -1;
    if (count > 0 && !values)
        return s_error (self, "metadata key '%s': array values are NULL", key);
    buffer_t encoded = { 0 };
    s_buffer_put_u32 (&encoded, GGUF_TYPE_STRING);
    s_buffer_put_u64 (&encoded, count);
    for (uint64_t i = 0; i < count; i++) {
        if (!values [i]) {
            free (encoded.data);
            return s_error (self, "metadata key '%s': string %llu is NULL", key,
                            (unsigned long long) i);
        }
        s_buffer_put_string (&encoded, values [i], strlen (values [i]));
    }
    return s_set_encoded (self, key, GGUF_TYPE_ARRAY, &encoded);
}

//  Copy an array key from source (its encoding is rebuilt from the reader's view).
static int
s_copy_array (gguf_writer_t *self, const gguf_t *source, const char *key)
{
    gguf_type_t elem_type;
    uint64_t count;
    const void *data;
    if (gguf_get_array (source, key, &elem_type, &count, &data))
        return s_error (self, "cannot read array '%s' from the source file", key);
    buffer_t encoded = { 0 };
    s_buffer_put_u32 (&encoded, (uint32_t) elem_type);
    s_buffer_put_u64 (&encoded, count);
    if (elem_type == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < count; i++) {
            gguf_str_t value;
            if (gguf_array_str (source, key, i, &value)) {
                free (encoded.data);
                return s_error (self, "cannot read string %llu of '%s' from the source file",
                                (unsigned long long) i, key);
            }
            s_buffer_put_string (&encoded, value.ptr, value.len);
        }
    }
    else {
        size_t elem_bytes = s_type_bytes (elem_type);
        if (elem_bytes == 0) {
            free (encoded.data);
            return s_error (self, "array '%s' has elements of unsupported type %d", key,
                            (int) elem_type);
        }
        //  The reader checked that count elements lie inside its file.
        s_buffer_put (&encoded, data, (size_t) count * elem_bytes);
    }
    return s_set_encoded (self, key, GGUF_TYPE_ARRAY, &encoded);
}

int
gguf_writer_copy_key (gguf_writer_t *self, const gguf_t *source, const char *key)
{
    if (s_check_key_name (self, key))
        return -1;
    int64_t index = gguf_find_key (source, key);
    if (index < 0)
        return s_error (self, "the source file has no key '%s'", key);
    gguf_type_t type = gguf_key_type (source, (size_t) index);
    uint64_t unsigned_value = 0;
    int64_t signed_value = 0;
    float float_value = 0;
    bool bool_value = false;
    gguf_str_t string_value;
    switch (type) {
        case GGUF_TYPE_UINT8:
        case GGUF_TYPE_UINT16:
        case GGUF_TYPE_UINT32:
        case GGUF_TYPE_UINT64:
            if (gguf_get_u64 (source, key, &unsigned_value))
                break;
            if (type == GGUF_TYPE_UINT8)
                return gguf_writer_set_u8 (self, key, (uint8_t) unsigned_value);
            if (type == GGUF_TYPE_UINT16)
                return gguf_writer_set_u16 (self, key, (uint16_t) unsigned_value);
            if (type == GGUF_TYPE_UINT32)
                return gguf_writer_set_u32 (self, key, (uint32_t) unsigned_value);
            return gguf_writer_set_u64 (self, key, unsigned_value);
        case GGUF_TYPE_INT8:
        case GGUF_TYPE_INT16:
        case GGUF_TYPE_INT32:
        case GGUF_TYPE_INT64:
            if (gguf_get_i64 (source, key, &signed_value))
                break;
            if (type == GGUF_TYPE_INT8)
                return gguf_writer_set_i8 (self, key, (int8_t) signed_value);
            if (type == GGUF_TYPE_INT16)
                return gguf_writer_set_i16 (self, key, (int16_t) signed_value);
            if (type == GGUF_TYPE_INT32)
                return gguf_writer_set_i32 (self, key, (int32_t) signed_value);
            return gguf_writer_set_i64 (self, key, signed_value);
        case GGUF_TYPE_FLOAT32:
            if (gguf_get_f32 (source, key, &float_value))
                break;
            return gguf_writer_set_f32 (self, key, float_value);
        case GGUF_TYPE_FLOAT64:
            //  gguf.h reads FLOAT64 scalars only as float.
            if (gguf_get_f32 (source, key, &float_value))
                break;
            return gguf_writer_set_f64 (self, key, (double) float_value);
        case GGUF_TYPE_BOOL:
            if (gguf_get_bool (source, key, &bool_value))
                break;
            return gguf_writer_set_bool (self, key, bool_value);
        case GGUF_TYPE_STRING:
            if (gguf_get_str (source, key, &string_value))
                break;
            return gguf_writer_set_strn (self, key, string_value.ptr, string_value.len);
        case GGUF_TYPE_ARRAY:
            return s_copy_array (self, source, key);
        default:
            break;
    }
    return s_error (self, "cannot copy key '%s' (type %d) from the source file", key,
                    (int) type);
}

int64_t
gguf_writer_copy_prefix (gguf_writer_t *self, const gguf_t *source, const char *prefix)
{
    size_t prefix_length = strlen (prefix);
    int64_t copied = 0;
    for (size_t i = 0; i < gguf_key_count (source); i++) {
        gguf_str_t name = gguf_key_name (source, i);
        if (name.len < prefix_length || memcmp (name.ptr, prefix, prefix_length) != 0)
            continue;
        char *key = malloc ((size_t) name.len + 1);
        if (!key)
            return s_error (self, "out of memory");
        memcpy (key, name.ptr, (size_t) name.len);
        key [name.len] = 0;
        int rc = gguf_writer_copy_key (self, source, key);
        free (key);
        if (rc)
            return -1;
        copied++;
    }
    return copied;
}

size_t
gguf_writer_key_count (const gguf_writer_t *self)
{
    return self->key_count;
}

//  --- Tensors ---------------------------------------------------------------------------

int
gguf_writer_add_tensor (gguf_writer_t *self, const char *name, ggml_type_t type,
                        uint32_t n_dims, const uint64_t *ne, const void *data,
                        uint64_t size)
{
    if (!name || name [0] == 0)
        return s_error (self, "tensor name is empty");
    if (strlen (name) > GGUF_MAX_TENSOR_NAME)
        return s_error (self, "tensor name '%s' is longer than %d bytes", name,
                        GGUF_MAX_TENSOR_NAME);
    if (self->file)
        return s_error (self, "tensor '%s' added after the header was written", name);
    for (size_t i = 0; i < self->tensor_count; i++)
        if (strcmp (self->tensors [i].name, name) == 0)
            return s_error (self, "tensor '%s' added twice", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return s_error (self, "tensor '%s' has %u dimensions (1 to %d allowed)", name,
                        n_dims, GGUF_MAX_DIMS);
    if ((unsigned) type >= GGML_TYPE_COUNT || ggml_type_block_elements (type) == 0)
        return s_error (self, "tensor '%s' has unknown type %d", name, (int) type);

    writer_tensor_t tensor = { 0 };
    tensor.type = type;
    tensor.n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        tensor.ne [d] = d < n_dims? ne [d]: 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne [d] == 0 || ne [d] > INT64_MAX)
            return s_error (self, "tensor '%s' has dimension %u of size %llu", name, d,
                            (unsigned long long) ne [d]);
    tensor.size = ggml_row_bytes (type, tensor.ne [0]);
    if (tensor.size == 0)
        return s_error (self, "tensor '%s': a row of %llu elements is not a whole number "
                        "of %s blocks of %u", name, (unsigned long long) tensor.ne [0],
                        ggml_type_name (type), ggml_type_block_elements (type));
    for (uint32_t d = 1; d < GGUF_MAX_DIMS; d++) {
        if (tensor.size > (UINT64_MAX / 2) / tensor.ne [d])
            return s_error (self, "tensor '%s' is too large", name);
        tensor.size *= tensor.ne [d];
    }
    if (data) {
        if (size != tensor.size)
            return s_error (self, "tensor '%s' is %llu bytes, not the %llu given", name,
                            (unsigned long long) tensor.size, (unsigned long long) size);
        if (tensor.size > SIZE_MAX)
            return s_error (self, "tensor '%s' is too large to hold in memory", name);
        tensor.data = malloc ((size_t) tensor.size);
        if (!tensor.data)
            return s_error (self, "out of memory for tensor '%s'", name);
        memcpy (tensor.data, data, (size_t) tensor.size);
    }
    if (self->tensor_count == self->tensor_capacity) {
        size_t capacity = self->tensor_capacity? self->tensor_capacity * 2: 64;
        writer_tensor_t *tensors = realloc (self->tensors, capacity * sizeof (writer_tensor_t));
        if (!tensors) {
            free (tensor.data);
            return s_error (self, "out of memory for tensor '%s'", name);
        }
        self->tensors = tensors;
        self->tensor_capacity = capacity;
    }
    tensor.name = strdup (name);
    if (!tensor.name) {
        free (tensor.data);
        return s_error (self, "out of memory for tensor '%s'", name);
    }
    self->tensors [self->tensor_count++] = tensor;
    return 0;
}

size_t
gguf_writer_tensor_count (const gguf_writer_t *self)
{
    return self->tensor_count;
}

uint64_t
gguf_writer_tensor_size (const gguf_writer_t *self, size_t index)
{
    return index < self->tensor_count? self->tensors [index].size: 0;
}

//  --- Writing ---------------------------------------------------------------------------

//  Write bytes to the file.
static int
s_write (gguf_writer_t *self, const void *bytes, uint64_t size, char *err, size_t err_size)
{
    if (size > 0 && fwrite (bytes, 1, (size_t) size, self->file) != (size_t) size)
        return s_fail (err, err_size, "cannot write %s: %s", self->temp_path, strerror (errno));
    self->position += size;
    return 0;
}

//  Zeros up to the next multiple of the alignment (file positions and data offsets
//  agree on that, since the data section starts on one).
static int
s_write_padding (gguf_writer_t *self, char *err, size_t err_size)
{
    static const uint8_t zeros [256] = { 0 };
    uint64_t padding = s_align (self->position, self->alignment) - self->position;
    while (padding > 0) {
        uint64_t piece = padding < sizeof zeros? padding: sizeof zeros;
        if (s_write (self, zeros, piece, err, err_size))
            return -1;
        padding -= piece;
    }
    return 0;
}

//  Write the tensors from `current` on that came with their data, stopping at the first
//  one whose bytes are to be streamed.
static int
s_write_stored_tensors (gguf_writer_t *self, char *err, size_t err_size)
{
    while (self->current < self->tensor_count && self->tensors [self->current].data) {
        writer_tensor_t *tensor = &self->tensors [self->current];
        if (s_write (self, tensor->data, tensor->size, err, err_size)
        ||  s_write_padding (self, err, err_size))
            return -1;
        self->current++;
    }
    return 0;
}

//  The current tensor is complete: pad, move on to the next one.
static int
s_next_tensor (gguf_writer_t *self, char *err, size_t err_size)
{
    if (s_write_padding (self, err, err_size))
        return -1;
    self->current++;
    self->current_written = 0;
    return s_write_stored_tensors (self, err, err_size);
}

//  The alignment from a general.alignment key, if any.
static int
s_find_alignment (gguf_writer_t *self, char *err, size_t err_size)
{
    self->alignment = GGUF_WRITER_DEFAULT_ALIGNMENT;
    writer_key_t *key = s_find_key (self, "general.alignment");
    if (!key)
        return 0;
    if (key->type != GGUF_TYPE_UINT32)
        return s_fail (err, err_size, "general.alignment must be a UINT32");
    uint32_t alignment;
    memcpy (&alignment, key->value, sizeof alignment);
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        return s_fail (err, err_size, "general.alignment %u is not a power of two", alignment);
    self->alignment = alignment;
    return 0;
}

//  The header: counts, keys, tensor table.
static int
s_write_header (gguf_writer_t *self, char *err, size_t err_size)
{
    buffer_t header = { 0 };
    s_buffer_put (&header, "GGUF", 4);
    s_buffer_put_u32 (&header, GGUF_WRITER_VERSION);
    s_buffer_put_u64 (&header, self->tensor_count);
    s_buffer_put_u64 (&header, self->key_count);
    for (size_t i = 0; i < self->key_count; i++) {
        writer_key_t *key = &self->keys [i];
        s_buffer_put_string (&header, key->name, strlen (key->name));
        s_buffer_put_u32 (&header, (uint32_t) key->type);
        s_buffer_put (&header, key->value, key->value_size);
    }
    for (size_t i = 0; i < self->tensor_count; i++) {
        writer_tensor_t *tensor = &self->tensors [i];
        s_buffer_put_string (&header, tensor->name, strlen (tensor->name));
        s_buffer_put_u32 (&header, tensor->n_dims);
        for (uint32_t d = 0; d < tensor->n_dims; d++)
            s_buffer_put_u64 (&header, tensor->ne [d]);
        s_buffer_put_u32 (&header, (uint32_t) tensor->type);
        s_buffer_put_u64 (&header, tensor->offset);
    }
    if (header.failed) {
        free (header.data);
        return s_fail (err, err_size, "out of memory for the GGUF header");
    }
    int rc = s_write (self, header.data, header.size, err, err_size);
    free (header.data);
    return rc;
}

int
gguf_writer_begin (gguf_writer_t *self, const char *path, char *err, size_t err_size)
{
    if (self->error [0])
        return s_fail (err, err_size, "%s", self->error);
    if (self->file)
        return s_fail (err, err_size, "the writer is already writing %s", self->path);
    if (s_find_alignment (self, err, err_size))
        return -1;
    //  Where each tensor's data goes.
    uint64_t offset = 0;
    for (size_t i = 0; i < self->tensor_count; i++) {
        writer_tensor_t *tensor = &self->tensors [i];
        tensor->offset = offset;
        if (tensor->size > UINT64_MAX / 2 - offset)
            return s_fail (err, err_size, "the tensors are too large for one file");
        offset = s_align (offset + tensor->size, self->alignment);
    }
    //  A temporary file in the same folder, so that the rename is atomic.
    size_t path_length = strlen (path);
    self->path = strdup (path);
    char *temp_path = malloc (path_length + 8);
    if (!self->path || !temp_path) {
        free (temp_path);
        s_abandon_file (self);
        return s_fail (err, err_size, "out of memory");
    }
    snprintf (temp_path, path_length + 8, "%s.XXXXXX", path);
    int fd = mkstemp (temp_path);
    if (fd < 0) {
        int error = errno;
        free (temp_path);
        s_abandon_file (self);
        return s_fail (err, err_size, "cannot create a file beside %s: %s", path,
                       strerror (error));
    }
    self->temp_path = temp_path;        //  from here on, s_abandon_file removes it
    if (fchmod (fd, 0644) != 0 || !(self->file = fdopen (fd, "wb"))) {
        int error = errno;
        close (fd);
        s_abandon_file (self);
        return s_fail (err, err_size, "cannot open a file beside %s: %s", path,
                       strerror (error));
    }
    self->position = 0;
    self->current = 0;
    self->current_written = 0;
    if (s_write_header (self, err, err_size)
    ||  s_write_padding (self, err, err_size)) {
        s_abandon_file (self);
        return -1;
    }
    self->data_start = self->position;
    //  Tensors at the head of the list that came with their data go out now.
    if (s_write_stored_tensors (self, err, err_size)) {
        s_abandon_file (self);
        return -1;
    }
    return 0;
}

int
gguf_writer_append (gguf_writer_t *self, const void *data, uint64_t size,
                    char *err, size_t err_size)
{
    if (!self->file)
        return s_fail (err, err_size, "no file is being written (call gguf_writer_begin)");
    const uint8_t *bytes = data;
    while (size > 0) {
        if (self->current >= self->tensor_count) {
            s_abandon_file (self);
            return s_fail (err, err_size, "%llu bytes more than the tensors declared",
                           (unsigned long long) size);
        }
        writer_tensor_t *tensor = &self->tensors [self->current];
        uint64_t missing = tensor->size - self->current_written;
        uint64_t piece = size < missing? size: missing;
        if (s_write (self, bytes, piece, err, err_size)) {
            s_abandon_file (self);
            return -1;
        }
        bytes += piece;
        size -= piece;
        self->current_written += piece;
        if (self->current_written == tensor->size && s_next_tensor (self, err, err_size)) {
            s_abandon_file (self);
            return -1;
        }
    }
    return 0;
}

int
gguf_writer_finish (gguf_writer_t *self, uint64_t *file_size, char *err, size_t err_size)
{
    if (!self->file)
        return s_fail (err, err_size, "no file is being written (call gguf_writer_begin)");
    int rc = 0;
    if (self->current < self->tensor_count) {
        writer_tensor_t *tensor = &self->tensors [self->current];
        rc = s_fail (err, err_size, "tensor '%s' has %llu of its %llu bytes", tensor->name,
                     (unsigned long long) self->current_written,
                     (unsigned long long) tensor->size);
    }
    if (rc == 0 && (fflush (self->file) != 0 || fsync (fileno (self->file)) != 0))
        rc = s_fail (err, err_size, "cannot write %s: %s", self->temp_path, strerror (errno));
    if (rc == 0) {
        int closed = fclose (self->file);
        self->file = NULL;
        if (closed != 0)
            rc = s_fail (err, err_size, "cannot write %s: %s", self->temp_path,
                         strerror (errno));
    }
    if (rc == 0 && rename (self->temp_path, self->path) != 0)
        rc = s_fail (err, err_size, "cannot rename %s to %s: %s", self->temp_path,
                     self->path, strerror (errno));
    if (rc == 0) {
        free (self->temp_path);         //  renamed: nothing left to remove
        self->temp_path = NULL;
        if (file_size)
            *file_size = self->position;
    }
    s_abandon_file (self);
    return rc;
}

int
gguf_writer_write (gguf_writer_t *self, const char *path, char *err, size_t err_size)
{
    if (self->error [0])
        return s_fail (err, err_size, "%s", self->error);
    for (size_t i = 0; i < self->tensor_count; i++)
        if (!self->tensors [i].data)
            return s_fail (err, err_size, "tensor '%s' was declared without data (stream it "
                           "with gguf_writer_begin / append / finish)", self->tensors [i].name);
    if (gguf_writer_begin (self, path, err, err_size))
        return -1;
    return gguf_writer_finish (self, NULL, err, err_size);
}
