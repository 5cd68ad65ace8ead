/*  gguf — read-only access to a GGUF model file. See gguf.h.

    The parser walks the header once with a bounds-checked cursor (reader_t): every read
    first checks that the bytes are there, every count is checked against the bytes left
    before anything is allocated for it, and every size computation is checked for
    overflow. What it learns is kept in two tables: keys (name, type, where the value is)
    and tensors.
*/
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32

//  Limits that no real model comes near; they keep a corrupt count from asking for an
//  absurd allocation before the bytes-left check can catch it.
#define GGUF_MAX_KEYS (1u << 20)
#define GGUF_MAX_TENSORS (1u << 24)

typedef struct {
    gguf_str_t name;
    gguf_type_t type;
    const uint8_t *value;           //  where the value starts in the mapping
    //  For arrays:
    gguf_type_t elem_type;
    uint64_t count;
    gguf_str_t *strings;            //  for string arrays: one entry per element
} gguf_key_t;

struct _gguf_t {
    const uint8_t *base;            //  the mapping (or caller's buffer)
    size_t size;
    bool mapped;                    //  true when we own an mmap of base
    uint32_t version;
    size_t header_bytes;            //  bytes before the data section's padding
    size_t data_offset;             //  start of the data section
    uint32_t alignment;
    uint64_t fingerprint;
    gguf_key_t *keys;
    size_t key_count;
    gguf_tensor_t *tensors;
    size_t tensor_count;
};

//  --- Bounds-checked reading of the header ---------------------------------------------

typedef struct {
    const uint8_t *base;
    size_t size;
    size_t pos;
    char *err;
    size_t err_size;
} reader_t;

static int
s_fail (reader_t *r, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    char message [256];
    vsnprintf (message, sizeof message, format, args);
    va_end (args);
    snprintf (r->err, r->err_size, "%s (at byte %zu of %zu)", message, r->pos, r->size);
    return -1;
}

static int
s_read (reader_t *r, void *out, size_t bytes, const char *what)
{
    if (r->size - r->pos < bytes)
        return s_fail (r, "file ends inside %s", what);
    memcpy (out, r->base + r->pos, bytes);
    r->pos += bytes;
    return 0;
}

static int
s_skip (reader_t *r, uint64_t bytes, const char *what)
{
    if ((uint64_t) (r->size - r->pos) < bytes)
        return s_fail (r, "file ends inside %s", what);
    r->pos += (size_t) bytes;
    return 0;
}

static int
s_read_str (reader_t *r, gguf_str_t *out, const char *what)
{
    uint64_t len = 0;
    if (s_read (r, &len, sizeof len, what))
        return -1;
    if ((uint64_t) (r->size - r->pos) < len)
        return s_fail (r, "%s has length %llu, more than the %zu bytes left in the file",
                       what, (unsigned long long) len, r->size - r->pos);
    out->ptr = (const char *) r->base + r->pos;
    out->len = len;
    r->pos += (size_t) len;
    return 0;
}

//  Bytes of one value of a fixed-size type; 0 for strings and arrays.
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

static bool
s_str_equals (gguf_str_t s, const char *text)
{
    size_t len = strlen (text);
    return s.len == len && memcmp (s.ptr, text, len) == 0;
}

//  Read one key/value pair into *key.
static int
s_read_key (reader_t *r, gguf_key_t *key)
{
    if (s_read_str (r, &key->name, "a metadata key name"))
        return -1;
    uint32_t type = 0;
    if (s_read (r, &type, sizeof type, "a metadata value type"))
        return -1;
    if (type >= GGUF_TYPE_COUNT)
        return s_fail (r, "metadata key '%.*s' has unknown value type %u",
                       (int) key->name.len, key->name.ptr, type);
    key->type = (gguf_type_t) type;
    key->value = r->base + r->pos;

    if (key->type == GGUF_TYPE_STRING) {
        gguf_str_t value;
        return s_read_str (r, &value, "a metadata string");
    }
    if (key->type != GGUF_TYPE_ARRAY) {
        if (s_skip (r, s_type_bytes (key->type), "a metadata value"))
            return -1;
        if (key->type == GGUF_TYPE_BOOL && key->value [0] > 1)
            return s_fail (r, "metadata key '%.*s' has a boolean that is neither 0 nor 1",
                           (int) key->name.len, key->name.ptr);
        return 0;
    }
    uint32_t elem_type = 0;
    if (s_read (r, &elem_type, sizeof elem_type, "an array's element type")
    ||  s_read (r, &key->count, sizeof key->count, "an array's length"))
        return -1;
    if (elem_type >= GGUF_TYPE_COUNT || elem_type == GGUF_TYPE_ARRAY)
        return s_fail (r, "array '%.*s' has unsupported element type %u",
                       (int) key->name.len, key->name.ptr, elem_type);
    key->elem_type = (gguf_type_t) elem_type;
    key->value = r->base + r->pos;          //  for arrays: the first element
    if (key->elem_type == GGUF_TYPE_STRING) {
        //  Each string takes at least its 8-byte length: check before allocating.
        if (key->count > (r->size - r->pos) / 8)
            return s_fail (r, "array '%.*s' claims %llu strings, more than the file holds",
                           (int) key->name.len, key->name.ptr, (unsigned long long) key->count);
        key->strings = malloc ((key->count ? key->count : 1) * sizeof (gguf_str_t));
        if (!key->strings)
            return s_fail (r, "out of memory for array '%.*s'", (int) key->name.len, key->name.ptr);
        for (uint64_t i = 0; i < key->count; i++)
            if (s_read_str (r, &key->strings [i], "a string in an array"))
                return -1;
        return 0;
    }
    size_t elem_bytes = s_type_bytes (key->elem_type);
    if (key->count > (r->size - r->pos) / elem_bytes)
        return s_fail (r, "array '%.*s' claims %llu elements, more than the file holds",
                       (int) key->name.len, key->name.ptr, (unsigned long long) key->count);
    return s_skip (r, key->count * elem_bytes, "an array");
}

//  Read one tensor description. Its data is checked later, once the data section's
//  start is known.
static int
s_read_tensor_info (reader_t *r, gguf_tensor_t *tensor)
{
    if (s_read_str (r, &tensor->name, "a tensor name"))
        return -1;
    if (s_read (r, &tensor->n_dims, sizeof tensor->n_dims, "a tensor's dimension count"))
        return -1;
    if (tensor->n_dims == 0 || tensor->n_dims > GGUF_MAX_DIMS)
        return s_fail (r, "tensor '%.*s' has %u dimensions (1 to %d allowed)",
                       (int) tensor->name.len, tensor->name.ptr, tensor->n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        tensor->ne [d] = 1;
    for (uint32_t d = 0; d < tensor->n_dims; d++) {
        if (s_read (r, &tensor->ne [d], sizeof tensor->ne [d], "a tensor dimension"))
            return -1;
        if (tensor->ne [d] == 0 || tensor->ne [d] > INT64_MAX)
            return s_fail (r, "tensor '%.*s' has dimension %u of size %llu",
                           (int) tensor->name.len, tensor->name.ptr, d,
                           (unsigned long long) tensor->ne [d]);
    }
    uint32_t type = 0;
    if (s_read (r, &type, sizeof type, "a tensor type")
    ||  s_read (r, &tensor->offset, sizeof tensor->offset, "a tensor offset"))
        return -1;
    tensor->type = (ggml_type_t) type;
    if (type >= GGML_TYPE_COUNT || ggml_type_block_elements (tensor->type) == 0)
        return s_fail (r, "tensor '%.*s' has unknown type %u",
                       (int) tensor->name.len, tensor->name.ptr, type);
    //  Size: rows of ne[0] elements, times the other dimensions, without overflow.
    uint64_t bytes = ggml_row_bytes (tensor->type, tensor->ne [0]);
    if (bytes == 0)
        return s_fail (r, "tensor '%.*s' has a row of %llu elements, not a multiple of %s's "
                       "block of %u", (int) tensor->name.len, tensor->name.ptr,
                       (unsigned long long) tensor->ne [0], ggml_type_name (tensor->type),
                       ggml_type_block_elements (tensor->type));
    for (uint32_t d = 1; d < GGUF_MAX_DIMS; d++) {
        if (bytes > UINT64_MAX / tensor->ne [d])
            return s_fail (r, "tensor '%.*s' is too large", (int) tensor->name.len, tensor->name.ptr);
        bytes *= tensor->ne [d];
    }
    tensor->size = bytes;
    return 0;
}

static uint64_t
s_fnv1a (const uint8_t *data, size_t size)
{
    uint64_t hash = 14695981039346656037ULL;
    for (size_t i = 0; i < size; i++) {
        hash ^= data [i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

//  Parse and validate self->base[0..size-1]. Returns 0 or -1 with err filled.
static int
s_compare_names (const void *a, const void *b)
{
    const gguf_str_t *left = (const gguf_str_t *) a;
    const gguf_str_t *right = (const gguf_str_t *) b;
    size_t common = left->len < right->len ? left->len : right->len;
    int order = common ? memcmp (left->ptr, right->ptr, common) : 0;
    if (order != 0)
        return order;
    return left->len < right->len ? -1 : left->len > right->len ? 1 : 0;
}

//  Fails when two of names[0..count-1] are equal. Sorts names.
static int
s_check_unique (reader_t *r, gguf_str_t *names, size_t count, const char *what)
{
    qsort (names, count, sizeof (gguf_str_t), s_compare_names);
    for (size_t i = 1; i < count; i++)
        if (s_compare_names (&names [i - 1], &names [i]) == 0)
            return s_fail (r, "%s '%.*s' appears twice", what, (int) names [i].len,
                           names [i].ptr);
    return 0;
}

static int
s_parse (gguf_t *self, char *err, size_t err_size)
{
    reader_t reader = { self->base, self->size, 0, err, err_size };
    reader_t *r = &reader;

    char magic [4] = { 0 };
    if (s_read (r, magic, 4, "the magic number"))
        return -1;
    if (memcmp (magic, GGUF_MAGIC, 4) != 0)
        return s_fail (r, "not a GGUF file (the first bytes are not 'GGUF')");
    if (s_read (r, &self->version, sizeof self->version, "the version"))
        return -1;
    if (self->version == 1)
        return s_fail (r, "GGUF version 1 is not supported (convert the file again)");
    if ((self->version & 0xFFFF) == 0 && self->version != 0)
        return s_fail (r, "big-endian GGUF files are not supported");
    if (self->version != 2 && self->version != 3)
        return s_fail (r, "unknown GGUF version %u", self->version);

    uint64_t tensor_count = 0, key_count = 0;
    if (s_read (r, &tensor_count, sizeof tensor_count, "the tensor count")
    ||  s_read (r, &key_count, sizeof key_count, "the metadata count"))
        return -1;
    //  A key takes at least 12 bytes (name length, type), a tensor at least 24.
    if (key_count > GGUF_MAX_KEYS || key_count > (r->size - r->pos) / 12)
        return s_fail (r, "metadata count %llu is impossible for this file",
                       (unsigned long long) key_count);
    if (tensor_count > GGUF_MAX_TENSORS || tensor_count > (r->size - r->pos) / 24)
        return s_fail (r, "tensor count %llu is impossible for this file",
                       (unsigned long long) tensor_count);

    self->keys = calloc (key_count ? key_count : 1, sizeof (gguf_key_t));
    self->tensors = calloc (tensor_count ? tensor_count : 1, sizeof (gguf_tensor_t));
    if (!self->keys || !self->tensors)
        return s_fail (r, "out of memory");

    self->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < key_count; i++) {
        gguf_key_t *key = &self->keys [i];
        self->key_count = i + 1;        //  so that gguf_destroy frees what this key holds
        if (s_read_key (r, key))
            return -1;
        if (s_str_equals (key->name, "general.alignment")) {
            if (key->type != GGUF_TYPE_UINT32)
                return s_fail (r, "general.alignment must be a uint32");
            memcpy (&self->alignment, key->value, 4);
            if (self->alignment == 0 || (self->alignment & (self->alignment - 1)) != 0)
                return s_fail (r, "general.alignment %u is not a power of two", self->alignment);
        }
    }

    for (uint64_t i = 0; i < tensor_count; i++) {
        gguf_tensor_t *tensor = &self->tensors [i];
        if (s_read_tensor_info (r, tensor))
            return -1;
        self->tensor_count = i + 1;
    }
    //  Names must be unique (found by sorting: a hostile file may hold millions).
    gguf_str_t *names = calloc (self->key_count + self->tensor_count + 1, sizeof (gguf_str_t));
    if (!names)
        return s_fail (r, "out of memory");
    for (size_t i = 0; i < self->key_count; i++)
        names [i] = self->keys [i].name;
    int rc = s_check_unique (r, names, self->key_count, "metadata key");
    for (size_t i = 0; i < self->tensor_count && rc == 0; i++)
        names [i] = self->tensors [i].name;
    if (rc == 0)
        rc = s_check_unique (r, names, self->tensor_count, "tensor");
    free (names);
    if (rc != 0)
        return -1;

    self->header_bytes = r->pos;
    self->fingerprint = s_fnv1a (self->base, self->header_bytes);
    size_t padding = (self->alignment - r->pos % self->alignment) % self->alignment;
    if (tensor_count > 0 && r->size - r->pos < padding)
        return s_fail (r, "file ends before its data section");
    self->data_offset = r->pos + padding;

    uint64_t data_size = self->size >= self->data_offset? self->size - self->data_offset: 0;
    for (size_t i = 0; i < self->tensor_count; i++) {
        gguf_tensor_t *tensor = &self->tensors [i];
        if (tensor->offset % self->alignment != 0)
            return s_fail (r, "tensor '%.*s' has offset %llu, not a multiple of the alignment %u",
                           (int) tensor->name.len, tensor->name.ptr,
                           (unsigned long long) tensor->offset, self->alignment);
        if (tensor->offset > data_size || tensor->size > data_size - tensor->offset)
            return s_fail (r, "tensor '%.*s' (%llu bytes at offset %llu) lies past the end of "
                           "the file (truncated?)", (int) tensor->name.len, tensor->name.ptr,
                           (unsigned long long) tensor->size, (unsigned long long) tensor->offset);
        tensor->data = self->base + self->data_offset + tensor->offset;
    }
    return 0;
}

//  --- Construction ----------------------------------------------------------------------

static gguf_t *
s_open_checked (gguf_t *self, char *err, size_t err_size)
{
    if (s_parse (self, err, err_size)) {
        gguf_destroy (&self);
        return NULL;
    }
    return self;
}

gguf_t *
gguf_open_memory (const void *data, size_t size, char *err, size_t err_size)
{
    gguf_t *self = calloc (1, sizeof (gguf_t));
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->base = data;
    self->size = size;
    return s_open_checked (self, err, err_size);
}

gguf_t *
gguf_open (const char *path, char *err, size_t err_size)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf (err, err_size, "cannot open %s: %s", path, strerror (errno));
        return NULL;
    }
    struct stat st;
    if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode)) {
        snprintf (err, err_size, "%s is not a regular file", path);
        close (fd);
        return NULL;
    }
    if (st.st_size == 0) {
        snprintf (err, err_size, "%s: file is empty", path);
        close (fd);
        return NULL;
    }
    void *map = mmap (NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close (fd);
    if (map == MAP_FAILED) {
        snprintf (err, err_size, "cannot map %s: %s", path, strerror (errno));
        return NULL;
    }
    gguf_t *self = calloc (1, sizeof (gguf_t));
    if (!self) {
        munmap (map, (size_t) st.st_size);
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->base = map;
    self->size = (size_t) st.st_size;
    self->mapped = true;
    char parse_err [320];
    self = s_open_checked (self, parse_err, sizeof parse_err);
    if (!self)
        snprintf (err, err_size, "%s: %s", path, parse_err);
    return self;
}

void
gguf_destroy (gguf_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gguf_t *self = *self_p;
    for (size_t i = 0; i < self->key_count; i++)
        free (self->keys [i].strings);
    free (self->keys);
    free (self->tensors);
    if (self->mapped)
        munmap ((void *) self->base, self->size);
    free (self);
    *self_p = NULL;
}

uint32_t
gguf_version (const gguf_t *self)
{
    return self->version;
}

size_t
gguf_file_size (const gguf_t *self)
{
    return self->size;
}

uint64_t
gguf_fingerprint (const gguf_t *self)
{
    return self->fingerprint;
}

//  --- Metadata --------------------------------------------------------------------------

size_t
gguf_key_count (const gguf_t *self)
{
    return self->key_count;
}

int64_t
gguf_find_key (const gguf_t *self, const char *key)
{
    for (size_t i = 0; i < self->key_count; i++)
        if (s_str_equals (self->keys [i].name, key))
            return (int64_t) i;
    return -1;
}

gguf_str_t
gguf_key_name (const gguf_t *self, size_t index)
{
    return self->keys [index].name;
}

gguf_type_t
gguf_key_type (const gguf_t *self, size_t index)
{
    return self->keys [index].type;
}

static const gguf_key_t *
s_key (const gguf_t *self, const char *name)
{
    int64_t index = gguf_find_key (self, name);
    return index < 0? NULL: &self->keys [index];
}

//  Read an integer value of any integer type at p as signed or unsigned 64-bit.
//  Returns 0 and sets *is_signed_negative when the value is below zero.
static int
s_integer_at (gguf_type_t type, const uint8_t *p, uint64_t *magnitude, bool *negative)
{
    *negative = false;
    switch (type) {
        case GGUF_TYPE_UINT8:  { uint8_t v;  memcpy (&v, p, 1); *magnitude = v; return 0; }
        case GGUF_TYPE_UINT16: { uint16_t v; memcpy (&v, p, 2); *magnitude = v; return 0; }
        case GGUF_TYPE_UINT32: { uint32_t v; memcpy (&v, p, 4); *magnitude = v; return 0; }
        case GGUF_TYPE_UINT64: { uint64_t v; memcpy (&v, p, 8); *magnitude = v; return 0; }
        case GGUF_TYPE_INT8:   { int8_t v;   memcpy (&v, p, 1); *negative = v < 0;
                                 *magnitude = (uint64_t) (v < 0? -(int64_t) v: v); return 0; }
        case GGUF_TYPE_INT16:  { int16_t v;  memcpy (&v, p, 2); *negative = v < 0;
                                 *magnitude = (uint64_t) (v < 0? -(int64_t) v: v); return 0; }
        case GGUF_TYPE_INT32:  { int32_t v;  memcpy (&v, p, 4); *negative = v < 0;
                                 *magnitude = (uint64_t) (v < 0? -(int64_t) v: v); return 0; }
        case GGUF_TYPE_INT64:  { int64_t v;  memcpy (&v, p, 8); *negative = v < 0;
                                 *magnitude = v < 0? (uint64_t) 0 - (uint64_t) v: (uint64_t) v;
                                 return 0; }
        default: return -1;
    }
}

int
gguf_get_u64 (const gguf_t *self, const char *key, uint64_t *value)
{
    const gguf_key_t *k = s_key (self, key);
    uint64_t magnitude;
    bool negative;
    if (!k || s_integer_at (k->type, k->value, &magnitude, &negative) || negative)
        return -1;
    *value = magnitude;
    return 0;
}

int
gguf_get_u32 (const gguf_t *self, const char *key, uint32_t *value)
{
    uint64_t wide;
    if (gguf_get_u64 (self, key, &wide) || wide > UINT32_MAX)
        return -1;
    *value = (uint32_t) wide;
    return 0;
}

int
gguf_get_i64 (const gguf_t *self, const char *key, int64_t *value)
{
    const gguf_key_t *k = s_key (self, key);
    uint64_t magnitude;
    bool negative;
    if (!k || s_integer_at (k->type, k->value, &magnitude, &negative))
        return -1;
    if (negative) {
        if (magnitude > (uint64_t) INT64_MAX + 1)
            return -1;
        *value = magnitude == (uint64_t) INT64_MAX + 1? INT64_MIN: -(int64_t) magnitude;
    }
    else {
        if (magnitude > INT64_MAX)
            return -1;
        *value = (int64_t) magnitude;
    }
    return 0;
}

int
gguf_get_f32 (const gguf_t *self, const char *key, float *value)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k)
        return -1;
    if (k->type == GGUF_TYPE_FLOAT32) {
        memcpy (value, k->value, 4);
        return 0;
    }
    if (k->type == GGUF_TYPE_FLOAT64) {
        double wide;
        memcpy (&wide, k->value, 8);
        *value = (float) wide;
        return 0;
    }
    return -1;
}

int
gguf_get_bool (const gguf_t *self, const char *key, bool *value)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k || k->type != GGUF_TYPE_BOOL)
        return -1;
    *value = k->value [0] != 0;
    return 0;
}

int
gguf_get_str (const gguf_t *self, const char *key, gguf_str_t *value)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k || k->type != GGUF_TYPE_STRING)
        return -1;
    uint64_t len = 0;
    memcpy (&len, k->value, 8);
    value->ptr = (const char *) k->value + 8;
    value->len = len;
    return 0;
}

int
gguf_get_array (const gguf_t *self, const char *key,
                gguf_type_t *elem_type, uint64_t *count, const void **data)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k || k->type != GGUF_TYPE_ARRAY)
        return -1;
    if (elem_type)
        *elem_type = k->elem_type;
    if (count)
        *count = k->count;
    if (data)
        *data = k->value;
    return 0;
}

int
gguf_array_str (const gguf_t *self, const char *key, uint64_t i, gguf_str_t *value)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k || k->type != GGUF_TYPE_ARRAY || k->elem_type != GGUF_TYPE_STRING || i >= k->count)
        return -1;
    *value = k->strings [i];
    return 0;
}

int
gguf_array_f32 (const gguf_t *self, const char *key, float *out, uint64_t count)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k || k->type != GGUF_TYPE_ARRAY || k->count != count)
        return -1;
    size_t elem_bytes = s_type_bytes (k->elem_type);
    if (elem_bytes == 0 || k->elem_type == GGUF_TYPE_BOOL)
        return -1;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *p = k->value + i * elem_bytes;
        if (k->elem_type == GGUF_TYPE_FLOAT32)
            memcpy (&out [i], p, 4);
        else
        if (k->elem_type == GGUF_TYPE_FLOAT64) {
            double wide;
            memcpy (&wide, p, 8);
            out [i] = (float) wide;
        }
        else {
            uint64_t magnitude;
            bool negative;
            s_integer_at (k->elem_type, p, &magnitude, &negative);
            out [i] = negative? -(float) magnitude: (float) magnitude;
        }
    }
    return 0;
}

int
gguf_array_i32 (const gguf_t *self, const char *key, int32_t *out, uint64_t count)
{
    const gguf_key_t *k = s_key (self, key);
    if (!k || k->type != GGUF_TYPE_ARRAY || k->count != count)
        return -1;
    size_t elem_bytes = s_type_bytes (k->elem_type);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t magnitude;
        bool negative;
        if (s_integer_at (k->elem_type, k->value + i * elem_bytes, &magnitude, &negative))
            return -1;
        if (negative? magnitude > (uint64_t) INT32_MAX + 1: magnitude > INT32_MAX)
            return -1;
        out [i] = negative? (int32_t) (0 - magnitude): (int32_t) magnitude;
    }
    return 0;
}

//  --- Tensors ---------------------------------------------------------------------------

size_t
gguf_tensor_count (const gguf_t *self)
{
    return self->tensor_count;
}

const gguf_tensor_t *
gguf_tensor (const gguf_t *self, size_t index)
{
    return index < self->tensor_count? &self->tensors [index]: NULL;
}

const gguf_tensor_t *
gguf_find_tensor (const gguf_t *self, const char *name)
{
    for (size_t i = 0; i < self->tensor_count; i++)
        if (s_str_equals (self->tensors [i].name, name))
            return &self->tensors [i];
    return NULL;
}

//  --- Tensor types ----------------------------------------------------------------------

typedef struct {
    const char *name;
    uint32_t block_elements;
    uint32_t block_bytes;
} type_info_t;

//  Block layouts as ggml defines them (ggml-common.h); QK_K = 256.
static const type_info_t s_types [GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32]     = { "F32",     1,   4 },
    [GGML_TYPE_F16]     = { "F16",     1,   2 },
    [GGML_TYPE_Q4_0]    = { "Q4_0",    32,  18 },
    [GGML_TYPE_Q4_1]    = { "Q4_1",    32,  20 },
    [GGML_TYPE_Q5_0]    = { "Q5_0",    32,  22 },
    [GGML_TYPE_Q5_1]    = { "Q5_1",    32,  24 },
    [GGML_TYPE_Q8_0]    = { "Q8_0",    32,  34 },
    [GGML_TYPE_Q8_1]    = { "Q8_1",    32,  36 },
    [GGML_TYPE_Q2_K]    = { "Q2_K",    256, 84 },
    [GGML_TYPE_Q3_K]    = { "Q3_K",    256, 110 },
    [GGML_TYPE_Q4_K]    = { "Q4_K",    256, 144 },
    [GGML_TYPE_Q5_K]    = { "Q5_K",    256, 176 },
    [GGML_TYPE_Q6_K]    = { "Q6_K",    256, 210 },
    [GGML_TYPE_Q8_K]    = { "Q8_K",    256, 292 },
    [GGML_TYPE_IQ2_XXS] = { "IQ2_XXS", 256, 66 },
    [GGML_TYPE_IQ2_XS]  = { "IQ2_XS",  256, 74 },
    [GGML_TYPE_IQ3_XXS] = { "IQ3_XXS", 256, 98 },
    [GGML_TYPE_IQ1_S]   = { "IQ1_S",   256, 50 },
    [GGML_TYPE_IQ4_NL]  = { "IQ4_NL",  32,  18 },
    [GGML_TYPE_IQ3_S]   = { "IQ3_S",   256, 110 },
    [GGML_TYPE_IQ2_S]   = { "IQ2_S",   256, 82 },
    [GGML_TYPE_IQ4_XS]  = { "IQ4_XS",  256, 136 },
    [GGML_TYPE_I8]      = { "I8",      1,   1 },
    [GGML_TYPE_I16]     = { "I16",     1,   2 },
    [GGML_TYPE_I32]     = { "I32",     1,   4 },
    [GGML_TYPE_I64]     = { "I64",     1,   8 },
    [GGML_TYPE_F64]     = { "F64",     1,   8 },
    [GGML_TYPE_IQ1_M]   = { "IQ1_M",   256, 56 },
    [GGML_TYPE_BF16]    = { "BF16",    1,   2 },
    [GGML_TYPE_TQ1_0]   = { "TQ1_0",   256, 54 },
    [GGML_TYPE_TQ2_0]   = { "TQ2_0",   256, 66 },
    [GGML_TYPE_MXFP4]   = { "MXFP4",   32,  17 },
};

const char *
ggml_type_name (ggml_type_t type)
{
    if ((unsigned) type >= GGML_TYPE_COUNT || !s_types [type].name)
        return "unknown";
    return s_types [type].name;
}

uint32_t
ggml_type_block_elements (ggml_type_t type)
{
    return (unsigned) type < GGML_TYPE_COUNT? s_types [type].block_elements: 0;
}

uint32_t
ggml_type_block_bytes (ggml_type_t type)
{
    return (unsigned) type < GGML_TYPE_COUNT? s_types [type].block_bytes: 0;
}

uint64_t
ggml_row_bytes (ggml_type_t type, uint64_t n)
{
    uint32_t block = ggml_type_block_elements (type);
    if (block == 0 || n % block != 0)
        return 0;
    uint64_t blocks = n / block;
    if (blocks > UINT64_MAX / ggml_type_block_bytes (type))
        return 0;
    return blocks * ggml_type_block_bytes (type);
}
