/*  test_gguf_writer — the GGUF writer (npu/gguf_writer) and the random-model maker built
    on it (npu/mkmodel).

    Files written are read back twice: with zllm's reader (npu/gguf), comparing every key,
    value and tensor byte; and with a tiny parser written here from the GGUF spec alone,
    which checks the layout field by field (magic, version, u64 counts, key encoding,
    array headers, tensor table, alignment of the data section and of every offset, zero
    padding). Streaming, errors and clean-up of unfinished files are tested too, and tiny
    models are made through the same function `zllm mkmodel` uses.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"

//  --- Helpers -----------------------------------------------------------------------------

static char s_folder [256];             //  a fresh temporary folder for the whole run

static const char *
s_path (const char *name)
{
    static char path [4][512];
    static int next = 0;
    next = (next + 1) % 4;
    snprintf (path [next], sizeof path [next], "%s/%s", s_folder, name);
    return path [next];
}

static const char *
s_shared_path (const char *name)
{
    static char path [1024];
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    snprintf (path, sizeof path, "%s/%s", shared? shared: "../shared", name);
    return path;
}

static uint8_t *
s_read_file (const char *path, size_t *size)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        fail_msg ("cannot open %s", path);
    fseek (file, 0, SEEK_END);
    long length = ftell (file);
    fseek (file, 0, SEEK_SET);
    uint8_t *data = malloc (length > 0? (size_t) length: 1);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) length, file), (size_t) length);
    fclose (file);
    *size = (size_t) length;
    return data;
}

static bool
s_exists (const char *path)
{
    struct stat st;
    return stat (path, &st) == 0;
}

//  Entries in the temporary folder (to see that no unfinished file is left behind).
static int
s_folder_entries (void)
{
    DIR *dir = opendir (s_folder);
    assert_non_null (dir);
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir (dir)))
        if (strcmp (entry->d_name, ".") != 0 && strcmp (entry->d_name, "..") != 0)
            count++;
    closedir (dir);
    return count;
}

static void
s_remove (const char *name)
{
    unlink (s_path (name));
}

static bool
s_str_is (gguf_str_t s, const char *text)
{
    return s.len == strlen (text) && memcmp (s.ptr, text, s.len) == 0;
}

static gguf_t *
s_open (const char *path)
{
    char err [512] = "";
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    if (!gguf)
        fail_msg ("cannot open %s: %s", path, err);
    return gguf;
}

//  --- An independent parser, from the GGUF spec ------------------------------------------

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} cursor_t;

static void
s_take (cursor_t *c, void *out, size_t bytes)
{
    if (c->size - c->pos < bytes)
        fail_msg ("file ends at %zu, wanted %zu more bytes", c->pos, bytes);
    memcpy (out, c->data + c->pos, bytes);
    c->pos += bytes;
}

static uint32_t
s_take_u32 (cursor_t *c)
{
    uint32_t value;
    s_take (c, &value, 4);
    return value;
}

static uint64_t
s_take_u64 (cursor_t *c)
{
    uint64_t value;
    s_take (c, &value, 8);
    return value;
}

//  A string: u64 length, bytes. Returns where its bytes are.
static const uint8_t *
s_take_string (cursor_t *c, uint64_t *length)
{
    *length = s_take_u64 (c);
    if (c->size - c->pos < *length)
        fail_msg ("string of %llu bytes past the end", (unsigned long long) *length);
    const uint8_t *bytes = c->data + c->pos;
    c->pos += (size_t) *length;
    return bytes;
}

static size_t
s_value_bytes (uint32_t type)
{
    switch (type) {
        case 0: case 1: case 7: return 1;           //  u8, i8, bool
        case 2: case 3: return 2;                   //  u16, i16
        case 4: case 5: case 6: return 4;           //  u32, i32, f32
        case 10: case 11: case 12: return 8;        //  u64, i64, f64
        default: return 0;
    }
}

//  What the parser learned; tensors' fields as the spec orders them.
typedef struct {
    uint64_t tensor_count;
    uint64_t key_count;
    uint32_t alignment;
    size_t data_start;
    struct {
        char name [80];
        uint32_t n_dims;
        uint64_t ne [4];
        uint32_t type;
        uint64_t offset;
    } tensors [64];
} parsed_t;

static void
s_parse_spec (const uint8_t *data, size_t size, parsed_t *parsed)
{
    memset (parsed, 0, sizeof *parsed);
    cursor_t c = { data, size, 0 };
    char magic [4];
    s_take (&c, magic, 4);
    assert_memory_equal (magic, "GGUF", 4);
    assert_int_equal (s_take_u32 (&c), 3);
    parsed->tensor_count = s_take_u64 (&c);
    parsed->key_count = s_take_u64 (&c);
    assert_true (parsed->tensor_count <= 64);
    parsed->alignment = 32;
    for (uint64_t k = 0; k < parsed->key_count; k++) {
        uint64_t length;
        const uint8_t *name = s_take_string (&c, &length);
        assert_true (length > 0);
        uint32_t type = s_take_u32 (&c);
        assert_true (type <= 12);
        if (length == 17 && memcmp (name, "general.alignment", 17) == 0) {
            assert_int_equal (type, 4);
            size_t before = c.pos;
            parsed->alignment = s_take_u32 (&c);
            c.pos = before;
        }
        if (type == 8)
            s_take_string (&c, &length);
        else
        if (type == 9) {
            uint32_t elem_type = s_take_u32 (&c);
            uint64_t count = s_take_u64 (&c);
            assert_true (elem_type <= 12 && elem_type != 9);
            for (uint64_t i = 0; i < count; i++) {
                if (elem_type == 8)
                    s_take_string (&c, &length);
                else {
                    assert_true (c.size - c.pos >= s_value_bytes (elem_type));
                    c.pos += s_value_bytes (elem_type);
                }
            }
        }
        else {
            assert_true (c.size - c.pos >= s_value_bytes (type));
            if (type == 7)
                assert_true (c.data [c.pos] <= 1);
            c.pos += s_value_bytes (type);
        }
    }
    for (uint64_t t = 0; t < parsed->tensor_count; t++) {
        uint64_t length;
        const uint8_t *name = s_take_string (&c, &length);
        assert_true (length > 0 && length <= 64);
        memcpy (parsed->tensors [t].name, name, (size_t) length);
        parsed->tensors [t].n_dims = s_take_u32 (&c);
        assert_true (parsed->tensors [t].n_dims >= 1 && parsed->tensors [t].n_dims <= 4);
        for (int d = 0; d < 4; d++)
            parsed->tensors [t].ne [d] = 1;
        for (uint32_t d = 0; d < parsed->tensors [t].n_dims; d++)
            parsed->tensors [t].ne [d] = s_take_u64 (&c);
        parsed->tensors [t].type = s_take_u32 (&c);
        parsed->tensors [t].offset = s_take_u64 (&c);
        assert_int_equal (parsed->tensors [t].offset % parsed->alignment, 0);
    }
    //  Zero padding up to the alignment, then the data section.
    size_t padded = (c.pos + parsed->alignment - 1) / parsed->alignment * parsed->alignment;
    if (parsed->tensor_count > 0) {
        assert_true (padded <= size);
        for (size_t i = c.pos; i < padded; i++)
            assert_int_equal (data [i], 0);
    }
    parsed->data_start = padded;
}

//  --- Writing and reading back every kind of value ------------------------------------------

static const uint8_t s_u8s [] = { 0, 1, 255 };
static const int8_t s_i8s [] = { -128, 0, 127 };
static const uint16_t s_u16s [] = { 0, 65535, 1234 };
static const int16_t s_i16s [] = { -32768, 32767 };
static const uint32_t s_u32s [] = { 0, 4294967295u, 7 };
static const int32_t s_i32s [] = { INT32_MIN, -1, INT32_MAX };
static const uint64_t s_u64s [] = { 0, UINT64_MAX, 1ull << 40 };
static const int64_t s_i64s [] = { INT64_MIN, -5, INT64_MAX };
static const float s_f32s [] = { 1.5f, -0.0f, 3.0e38f, 1e-40f };
static const double s_f64s [] = { 3.141592653589793, -1e300 };
static const uint8_t s_bools [] = { 1, 0, 0, 1 };
static const char *s_strings [] = { "", "hello", "ünïcödé ✓", "<|im_end|>" };

//  Tensor contents: byte i of tensor t is (i * 7 + t) & 255, so any mix-up shows.
static uint8_t *
s_tensor_bytes (uint64_t size, int t)
{
    uint8_t *data = malloc (size);
    assert_non_null (data);
    for (uint64_t i = 0; i < size; i++)
        data [i] = (uint8_t) ((i * 7 + (uint64_t) t) & 255);
    return data;
}

typedef struct {
    const char *name;
    ggml_type_t type;
    uint32_t n_dims;
    uint64_t ne [4];
} tensor_spec_t;

//  Odd sizes on purpose, so that padding is needed after most of them.
static const tensor_spec_t s_tensor_specs [] = {
    { "small.f32", GGML_TYPE_F32, 2, { 3, 5 } },                //  60 bytes
    { "vector.f16", GGML_TYPE_F16, 1, { 7 } },                  //  14 bytes
    { "blocks.q8_0", GGML_TYPE_Q8_0, 2, { 64, 3 } },            //  204 bytes
    { "k.q4_K", GGML_TYPE_Q4_K, 3, { 256, 2, 1 } },             //  288 bytes
    { "four.dims", GGML_TYPE_I8, 4, { 2, 3, 1, 5 } },           //  30 bytes
};
#define TENSOR_SPECS (sizeof s_tensor_specs / sizeof s_tensor_specs [0])

static uint64_t
s_spec_size (const tensor_spec_t *spec)
{
    uint64_t size = ggml_row_bytes (spec->type, spec->ne [0]);
    for (uint32_t d = 1; d < spec->n_dims; d++)
        size *= spec->ne [d];
    return size;
}

//  Every metadata type, in a known order.
static void
s_set_every_type (gguf_writer_t *writer)
{
    assert_int_equal (gguf_writer_set_u8 (writer, "t.u8", 200), 0);
    assert_int_equal (gguf_writer_set_i8 (writer, "t.i8", -100), 0);
    assert_int_equal (gguf_writer_set_u16 (writer, "t.u16", 60000), 0);
    assert_int_equal (gguf_writer_set_i16 (writer, "t.i16", -30000), 0);
    assert_int_equal (gguf_writer_set_u32 (writer, "t.u32", 4000000000u), 0);
    assert_int_equal (gguf_writer_set_i32 (writer, "t.i32", -2000000000), 0);
    assert_int_equal (gguf_writer_set_u64 (writer, "t.u64", 18000000000000000000ull), 0);
    assert_int_equal (gguf_writer_set_i64 (writer, "t.i64", -9000000000000000000ll), 0);
    assert_int_equal (gguf_writer_set_f32 (writer, "t.f32", 0.25f), 0);
    assert_int_equal (gguf_writer_set_f64 (writer, "t.f64", 2.718281828459045), 0);
    assert_int_equal (gguf_writer_set_bool (writer, "t.true", true), 0);
    assert_int_equal (gguf_writer_set_bool (writer, "t.false", false), 0);
    assert_int_equal (gguf_writer_set_str (writer, "t.str", "a string ✓"), 0);
    assert_int_equal (gguf_writer_set_str (writer, "t.empty", ""), 0);
    assert_int_equal (gguf_writer_set_strn (writer, "t.nul", "a\0b", 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.u8", GGUF_TYPE_UINT8, s_u8s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.i8", GGUF_TYPE_INT8, s_i8s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.u16", GGUF_TYPE_UINT16, s_u16s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.i16", GGUF_TYPE_INT16, s_i16s, 2), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.u32", GGUF_TYPE_UINT32, s_u32s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.i32", GGUF_TYPE_INT32, s_i32s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.u64", GGUF_TYPE_UINT64, s_u64s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.i64", GGUF_TYPE_INT64, s_i64s, 3), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.f32", GGUF_TYPE_FLOAT32, s_f32s, 4), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.f64", GGUF_TYPE_FLOAT64, s_f64s, 2), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.bool", GGUF_TYPE_BOOL, s_bools, 4), 0);
    assert_int_equal (gguf_writer_set_array (writer, "a.empty", GGUF_TYPE_INT32, NULL, 0), 0);
    assert_int_equal (gguf_writer_set_str_array (writer, "a.str", s_strings, 4), 0);
}

#define EVERY_TYPE_KEYS 28

static void
s_check_array (const gguf_t *gguf, const char *key, gguf_type_t type, const void *values,
               uint64_t count, size_t elem_bytes)
{
    gguf_type_t elem_type;
    uint64_t found_count;
    const void *data;
    if (gguf_get_array (gguf, key, &elem_type, &found_count, &data))
        fail_msg ("no array %s", key);
    assert_int_equal (elem_type, type);
    assert_int_equal (found_count, count);
    if (count)
        assert_memory_equal (data, values, count * elem_bytes);
}

//  Every value set by s_set_every_type, read with zllm's reader.
static void
s_check_every_type (const gguf_t *gguf)
{
    uint64_t u;
    int64_t i;
    float f;
    bool b;
    gguf_str_t s;
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.u8")), GGUF_TYPE_UINT8);
    assert_int_equal (gguf_get_u64 (gguf, "t.u8", &u), 0);
    assert_int_equal (u, 200);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.i8")), GGUF_TYPE_INT8);
    assert_int_equal (gguf_get_i64 (gguf, "t.i8", &i), 0);
    assert_int_equal (i, -100);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.u16")), GGUF_TYPE_UINT16);
    assert_int_equal (gguf_get_u64 (gguf, "t.u16", &u), 0);
    assert_int_equal (u, 60000);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.i16")), GGUF_TYPE_INT16);
    assert_int_equal (gguf_get_i64 (gguf, "t.i16", &i), 0);
    assert_int_equal (i, -30000);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.u32")), GGUF_TYPE_UINT32);
    assert_int_equal (gguf_get_u64 (gguf, "t.u32", &u), 0);
    assert_int_equal (u, 4000000000u);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.i32")), GGUF_TYPE_INT32);
    assert_int_equal (gguf_get_i64 (gguf, "t.i32", &i), 0);
    assert_int_equal (i, -2000000000);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.u64")), GGUF_TYPE_UINT64);
    assert_int_equal (gguf_get_u64 (gguf, "t.u64", &u), 0);
    assert_true (u == 18000000000000000000ull);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.i64")), GGUF_TYPE_INT64);
    assert_int_equal (gguf_get_i64 (gguf, "t.i64", &i), 0);
    assert_true (i == -9000000000000000000ll);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.f32")), GGUF_TYPE_FLOAT32);
    assert_int_equal (gguf_get_f32 (gguf, "t.f32", &f), 0);
    assert_true (f == 0.25f);
    assert_int_equal (gguf_key_type (gguf, (size_t) gguf_find_key (gguf, "t.f64")), GGUF_TYPE_FLOAT64);
    assert_int_equal (gguf_get_f32 (gguf, "t.f64", &f), 0);
    assert_true (f == (float) 2.718281828459045);
    assert_int_equal (gguf_get_bool (gguf, "t.true", &b), 0);
    assert_true (b);
    assert_int_equal (gguf_get_bool (gguf, "t.false", &b), 0);
    assert_false (b);
    assert_int_equal (gguf_get_str (gguf, "t.str", &s), 0);
    assert_true (s_str_is (s, "a string ✓"));
    assert_int_equal (gguf_get_str (gguf, "t.empty", &s), 0);
    assert_int_equal (s.len, 0);
    assert_int_equal (gguf_get_str (gguf, "t.nul", &s), 0);
    assert_int_equal (s.len, 3);
    assert_memory_equal (s.ptr, "a\0b", 3);
    s_check_array (gguf, "a.u8", GGUF_TYPE_UINT8, s_u8s, 3, 1);
    s_check_array (gguf, "a.i8", GGUF_TYPE_INT8, s_i8s, 3, 1);
    s_check_array (gguf, "a.u16", GGUF_TYPE_UINT16, s_u16s, 3, 2);
    s_check_array (gguf, "a.i16", GGUF_TYPE_INT16, s_i16s, 2, 2);
    s_check_array (gguf, "a.u32", GGUF_TYPE_UINT32, s_u32s, 3, 4);
    s_check_array (gguf, "a.i32", GGUF_TYPE_INT32, s_i32s, 3, 4);
    s_check_array (gguf, "a.u64", GGUF_TYPE_UINT64, s_u64s, 3, 8);
    s_check_array (gguf, "a.i64", GGUF_TYPE_INT64, s_i64s, 3, 8);
    s_check_array (gguf, "a.f32", GGUF_TYPE_FLOAT32, s_f32s, 4, 4);
    s_check_array (gguf, "a.f64", GGUF_TYPE_FLOAT64, s_f64s, 2, 8);
    s_check_array (gguf, "a.bool", GGUF_TYPE_BOOL, s_bools, 4, 1);
    s_check_array (gguf, "a.empty", GGUF_TYPE_INT32, NULL, 0, 4);
    gguf_type_t elem_type;
    uint64_t count;
    assert_int_equal (gguf_get_array (gguf, "a.str", &elem_type, &count, NULL), 0);
    assert_int_equal (elem_type, GGUF_TYPE_STRING);
    assert_int_equal (count, 4);
    for (uint64_t k = 0; k < 4; k++) {
        assert_int_equal (gguf_array_str (gguf, "a.str", k, &s), 0);
        assert_true (s_str_is (s, s_strings [k]));
    }
}

static gguf_writer_t *
s_writer_with_everything (void)
{
    gguf_writer_t *writer = gguf_writer_new ();
    assert_non_null (writer);
    s_set_every_type (writer);
    for (size_t t = 0; t < TENSOR_SPECS; t++) {
        const tensor_spec_t *spec = &s_tensor_specs [t];
        uint64_t size = s_spec_size (spec);
        uint8_t *data = s_tensor_bytes (size, (int) t);
        assert_int_equal (gguf_writer_add_tensor (writer, spec->name, spec->type, spec->n_dims,
                                                  spec->ne, data, size), 0);
        free (data);                    //  the writer made its copy
    }
    assert_string_equal (gguf_writer_error (writer), "");
    assert_int_equal (gguf_writer_key_count (writer), EVERY_TYPE_KEYS);
    assert_int_equal (gguf_writer_tensor_count (writer), TENSOR_SPECS);
    return writer;
}

//  Keys, values and tensor bytes through zllm's reader.
static void
s_check_everything (const char *path)
{
    gguf_t *gguf = s_open (path);
    assert_int_equal (gguf_version (gguf), 3);
    assert_int_equal (gguf_key_count (gguf), EVERY_TYPE_KEYS);
    assert_true (s_str_is (gguf_key_name (gguf, 0), "t.u8"));       //  order kept
    assert_true (s_str_is (gguf_key_name (gguf, EVERY_TYPE_KEYS - 1), "a.str"));
    s_check_every_type (gguf);
    assert_int_equal (gguf_tensor_count (gguf), TENSOR_SPECS);
    for (size_t t = 0; t < TENSOR_SPECS; t++) {
        const tensor_spec_t *spec = &s_tensor_specs [t];
        const gguf_tensor_t *tensor = gguf_tensor (gguf, t);
        assert_true (s_str_is (tensor->name, spec->name));
        assert_int_equal (tensor->type, spec->type);
        assert_int_equal (tensor->n_dims, spec->n_dims);
        for (uint32_t d = 0; d < spec->n_dims; d++)
            assert_int_equal (tensor->ne [d], spec->ne [d]);
        uint64_t size = s_spec_size (spec);
        assert_int_equal (tensor->size, size);
        uint8_t *expected = s_tensor_bytes (size, (int) t);
        assert_memory_equal (tensor->data, expected, size);
        free (expected);
    }
    gguf_destroy (&gguf);
}

//  The layout field by field with the spec parser, and the data section's padding.
static void
s_check_layout (const char *path, uint32_t alignment)
{
    size_t size;
    uint8_t *data = s_read_file (path, &size);
    parsed_t parsed;
    s_parse_spec (data, size, &parsed);
    assert_int_equal (parsed.alignment, alignment);
    assert_int_equal (parsed.tensor_count, TENSOR_SPECS);
    assert_int_equal (parsed.data_start % alignment, 0);
    uint64_t expected_offset = 0;
    for (size_t t = 0; t < TENSOR_SPECS; t++) {
        const tensor_spec_t *spec = &s_tensor_specs [t];
        assert_string_equal (parsed.tensors [t].name, spec->name);
        assert_int_equal (parsed.tensors [t].n_dims, spec->n_dims);
        for (uint32_t d = 0; d < spec->n_dims; d++)
            assert_int_equal (parsed.tensors [t].ne [d], spec->ne [d]);
        assert_int_equal (parsed.tensors [t].type, (uint32_t) spec->type);
        //  Tensors follow each other, each at the next multiple of the alignment.
        assert_int_equal (parsed.tensors [t].offset, expected_offset);
        uint64_t tensor_size = s_spec_size (spec);
        uint8_t *expected = s_tensor_bytes (tensor_size, (int) t);
        assert_memory_equal (data + parsed.data_start + parsed.tensors [t].offset, expected,
                             tensor_size);
        free (expected);
        uint64_t end = parsed.tensors [t].offset + tensor_size;
        expected_offset = (end + alignment - 1) / alignment * alignment;
        for (uint64_t i = end; i < expected_offset; i++)
            assert_int_equal (data [parsed.data_start + i], 0);
    }
    //  The file ends after the last tensor's padding.
    assert_int_equal (size, parsed.data_start + expected_offset);
    free (data);
}

static void
test_every_type_round_trip (void **state)
{
    (void) state;
    gguf_writer_t *writer = s_writer_with_everything ();
    char err [512] = "";
    if (gguf_writer_write (writer, s_path ("every.gguf"), err, sizeof err))
        fail_msg ("write: %s", err);
    //  The same writer can write again.
    assert_int_equal (gguf_writer_write (writer, s_path ("every2.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);
    assert_null (writer);
    s_check_everything (s_path ("every.gguf"));
    s_check_layout (s_path ("every.gguf"), 32);
    size_t size1, size2;
    uint8_t *first = s_read_file (s_path ("every.gguf"), &size1);
    uint8_t *second = s_read_file (s_path ("every2.gguf"), &size2);
    assert_int_equal (size1, size2);
    assert_memory_equal (first, second, size1);
    free (first);
    free (second);
    s_remove ("every.gguf");
    s_remove ("every2.gguf");
    assert_int_equal (s_folder_entries (), 0);
}

//  Exact bytes of a small file, written out by hand from the spec.
static void
test_exact_bytes (void **state)
{
    (void) state;
    gguf_writer_t *writer = gguf_writer_new ();
    gguf_writer_set_u32 (writer, "k", 7);
    gguf_writer_set_str_array (writer, "s", (const char *[]) { "ab" }, 1);
    float values [2] = { 1.0f, -2.0f };
    gguf_writer_add_tensor (writer, "w", GGML_TYPE_F32, 1, (uint64_t []) { 2 }, values, 8);
    char err [256];
    assert_int_equal (gguf_writer_write (writer, s_path ("exact.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);
    static const uint8_t expected [] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0,                     //  magic, version 3
        1, 0, 0, 0, 0, 0, 0, 0,                             //  1 tensor
        2, 0, 0, 0, 0, 0, 0, 0,                             //  2 keys
        1, 0, 0, 0, 0, 0, 0, 0, 'k', 4, 0, 0, 0, 7, 0, 0, 0,            //  k: u32 7
        1, 0, 0, 0, 0, 0, 0, 0, 's', 9, 0, 0, 0, 8, 0, 0, 0,            //  s: array of string
        1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 'a', 'b',       //  1 string "ab"
        1, 0, 0, 0, 0, 0, 0, 0, 'w', 1, 0, 0, 0,                        //  tensor w, 1 dim
        2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     //  ne 2, F32, offset 0
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       //  header is 109: pad to 128
        0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,                 //  1.0, -2.0
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0  //  padding
    };
    size_t size;
    uint8_t *data = s_read_file (s_path ("exact.gguf"), &size);
    assert_int_equal (size, sizeof expected);
    assert_memory_equal (data, expected, sizeof expected);
    free (data);
    s_remove ("exact.gguf");
}

static void
test_alignment_key (void **state)
{
    (void) state;
    gguf_writer_t *writer = s_writer_with_everything ();
    assert_int_equal (gguf_writer_set_u32 (writer, "general.alignment", 64), 0);
    char err [512] = "";
    assert_int_equal (gguf_writer_write (writer, s_path ("aligned.gguf"), err, sizeof err), 0);
    s_check_layout (s_path ("aligned.gguf"), 64);
    gguf_t *gguf = s_open (s_path ("aligned.gguf"));
    for (size_t t = 0; t < gguf_tensor_count (gguf); t++)
        assert_int_equal (gguf_tensor (gguf, t)->offset % 64, 0);
    gguf_destroy (&gguf);
    s_remove ("aligned.gguf");

    //  Not a power of two, or not a UINT32: refused, and no file.
    gguf_writer_set_u32 (writer, "general.alignment", 48);
    assert_int_equal (gguf_writer_write (writer, s_path ("bad.gguf"), err, sizeof err), -1);
    assert_non_null (strstr (err, "power of two"));
    gguf_writer_set_u64 (writer, "general.alignment", 64);
    assert_int_equal (gguf_writer_write (writer, s_path ("bad.gguf"), err, sizeof err), -1);
    assert_non_null (strstr (err, "UINT32"));
    assert_int_equal (s_folder_entries (), 0);
    gguf_writer_destroy (&writer);
}

//  Setting a key again replaces its value (and type) where it was.
static void
test_replace_key (void **state)
{
    (void) state;
    gguf_writer_t *writer = gguf_writer_new ();
    gguf_writer_set_str (writer, "first", "one");
    gguf_writer_set_u32 (writer, "second", 2);
    gguf_writer_set_str (writer, "first", "uno");
    gguf_writer_set_i8 (writer, "second", -2);
    assert_int_equal (gguf_writer_key_count (writer), 2);
    char err [256];
    assert_int_equal (gguf_writer_write (writer, s_path ("replace.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);
    gguf_t *gguf = s_open (s_path ("replace.gguf"));
    assert_int_equal (gguf_key_count (gguf), 2);
    assert_true (s_str_is (gguf_key_name (gguf, 0), "first"));
    gguf_str_t s;
    assert_int_equal (gguf_get_str (gguf, "first", &s), 0);
    assert_true (s_str_is (s, "uno"));
    assert_int_equal (gguf_key_type (gguf, 1), GGUF_TYPE_INT8);
    gguf_destroy (&gguf);
    s_remove ("replace.gguf");
}

//  A file with no tensors is valid too (a vocab-only GGUF).
static void
test_no_tensors (void **state)
{
    (void) state;
    gguf_writer_t *writer = gguf_writer_new ();
    gguf_writer_set_str (writer, "general.architecture", "llama");
    char err [256];
    assert_int_equal (gguf_writer_write (writer, s_path ("empty.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);
    gguf_t *gguf = s_open (s_path ("empty.gguf"));
    assert_int_equal (gguf_tensor_count (gguf), 0);
    assert_int_equal (gguf_key_count (gguf), 1);
    gguf_destroy (&gguf);
    s_remove ("empty.gguf");
}

//  --- Streaming ---------------------------------------------------------------------------

//  Declared tensors streamed in pieces of odd sizes that end inside tensors and span
//  several give exactly the bytes of the in-memory write.
static void
test_streaming_matches_memory (void **state)
{
    (void) state;
    gguf_writer_t *memory = s_writer_with_everything ();
    char err [512] = "";
    assert_int_equal (gguf_writer_write (memory, s_path ("memory.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&memory);

    size_t pieces [] = { 1, 7, 50, 3, 1000 };
    for (size_t p = 0; p < sizeof pieces / sizeof pieces [0]; p++) {
        gguf_writer_t *stream = gguf_writer_new ();
        s_set_every_type (stream);
        //  All the tensors' bytes, one after another without padding.
        uint8_t all [1024];
        uint64_t total = 0;
        for (size_t t = 0; t < TENSOR_SPECS; t++) {
            const tensor_spec_t *spec = &s_tensor_specs [t];
            uint64_t size = s_spec_size (spec);
            uint8_t *data = s_tensor_bytes (size, (int) t);
            //  Tensor 2 comes with its data: the writer puts it out in its turn.
            if (t == 2)
                assert_int_equal (gguf_writer_add_tensor (stream, spec->name, spec->type,
                                                          spec->n_dims, spec->ne, data, size), 0);
            else {
                assert_int_equal (gguf_writer_add_tensor (stream, spec->name, spec->type,
                                                          spec->n_dims, spec->ne, NULL, 0), 0);
                assert_true (total + size <= sizeof all);
                memcpy (all + total, data, size);
                total += size;
            }
            free (data);
        }
        assert_int_equal (gguf_writer_begin (stream, s_path ("stream.gguf"), err, sizeof err), 0);
        //  Nothing appears under the final name before finish.
        assert_false (s_exists (s_path ("stream.gguf")));
        for (uint64_t at = 0; at < total; at += pieces [p]) {
            uint64_t piece = total - at < pieces [p]? total - at: pieces [p];
            if (gguf_writer_append (stream, all + at, piece, err, sizeof err))
                fail_msg ("append: %s", err);
        }
        uint64_t file_size = 0;
        assert_int_equal (gguf_writer_finish (stream, &file_size, err, sizeof err), 0);
        gguf_writer_destroy (&stream);

        size_t size1, size2;
        uint8_t *first = s_read_file (s_path ("memory.gguf"), &size1);
        uint8_t *second = s_read_file (s_path ("stream.gguf"), &size2);
        assert_int_equal (size1, size2);
        assert_int_equal (file_size, size2);
        assert_memory_equal (first, second, size1);
        free (first);
        free (second);
        s_remove ("stream.gguf");
    }
    s_remove ("memory.gguf");
    assert_int_equal (s_folder_entries (), 0);
}

//  Streaming errors: too many bytes, too few, abandoning; none leaves a file behind.
static void
test_streaming_errors (void **state)
{
    (void) state;
    char err [512] = "";
    uint8_t bytes [64] = { 0 };
    uint64_t ne [1] = { 4 };

    //  More bytes than declared.
    gguf_writer_t *writer = gguf_writer_new ();
    gguf_writer_add_tensor (writer, "a", GGML_TYPE_F32, 1, ne, NULL, 0);
    assert_int_equal (gguf_writer_append (writer, bytes, 4, err, sizeof err), -1);  //  not begun
    assert_int_equal (gguf_writer_begin (writer, s_path ("too-many.gguf"), err, sizeof err), 0);
    assert_int_equal (gguf_writer_begin (writer, s_path ("twice.gguf"), err, sizeof err), -1);
    assert_int_equal (gguf_writer_append (writer, bytes, 20, err, sizeof err), -1);
    assert_non_null (strstr (err, "more than"));
    assert_int_equal (gguf_writer_finish (writer, NULL, err, sizeof err), -1);
    gguf_writer_destroy (&writer);
    assert_int_equal (s_folder_entries (), 0);

    //  Fewer bytes than declared.
    writer = gguf_writer_new ();
    gguf_writer_add_tensor (writer, "a", GGML_TYPE_F32, 1, ne, NULL, 0);
    gguf_writer_add_tensor (writer, "b", GGML_TYPE_F32, 1, ne, NULL, 0);
    assert_int_equal (gguf_writer_begin (writer, s_path ("too-few.gguf"), err, sizeof err), 0);
    assert_int_equal (gguf_writer_append (writer, bytes, 20, err, sizeof err), 0);
    assert_int_equal (gguf_writer_finish (writer, NULL, err, sizeof err), -1);
    assert_non_null (strstr (err, "'b' has 4 of its 16 bytes"));
    gguf_writer_destroy (&writer);
    assert_int_equal (s_folder_entries (), 0);

    //  Abandoned: destroyed before finish.
    writer = gguf_writer_new ();
    gguf_writer_add_tensor (writer, "a", GGML_TYPE_F32, 1, ne, NULL, 0);
    assert_int_equal (gguf_writer_begin (writer, s_path ("abandoned.gguf"), err, sizeof err), 0);
    assert_int_equal (s_folder_entries (), 1);                  //  the temporary file
    gguf_writer_destroy (&writer);
    assert_int_equal (s_folder_entries (), 0);

    //  A declared tensor without data cannot go through gguf_writer_write.
    writer = gguf_writer_new ();
    gguf_writer_add_tensor (writer, "a", GGML_TYPE_F32, 1, ne, NULL, 0);
    assert_int_equal (gguf_writer_write (writer, s_path ("nodata.gguf"), err, sizeof err), -1);
    assert_non_null (strstr (err, "without data"));
    gguf_writer_destroy (&writer);

    //  A folder that does not exist.
    writer = gguf_writer_new ();
    assert_int_equal (gguf_writer_write (writer, s_path ("no/such/folder.gguf"), err,
                                         sizeof err), -1);
    assert_true (strlen (err) > 0);
    gguf_writer_destroy (&writer);
    assert_int_equal (s_folder_entries (), 0);
}

//  Bad keys and tensors are refused with a message; the first error sticks and makes
//  the write fail without creating anything.
static void
test_bad_input (void **state)
{
    (void) state;
    gguf_writer_t *writer = gguf_writer_new ();
    uint8_t data [1024] = { 0 };
    assert_int_equal (gguf_writer_add_tensor (writer, "ok", GGML_TYPE_Q8_0, 1,
                                              (uint64_t []) { 32 }, data, 34), 0);
    assert_string_equal (gguf_writer_error (writer), "");
    assert_int_equal (gguf_writer_add_tensor (writer, "ok", GGML_TYPE_F32, 1,
                                              (uint64_t []) { 1 }, data, 4), -1);
    assert_non_null (strstr (gguf_writer_error (writer), "added twice"));
    //  Later errors are refused too, but the first message is kept.
    assert_int_equal (gguf_writer_add_tensor (writer, "rows", GGML_TYPE_Q4_K, 1,
                                              (uint64_t []) { 100 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "size", GGML_TYPE_F32, 1,
                                              (uint64_t []) { 4 }, data, 15), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "dims", GGML_TYPE_F32, 5,
                                              (uint64_t []) { 1, 1, 1, 1, 1 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "dims0", GGML_TYPE_F32, 0,
                                              (uint64_t []) { 1 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "zero", GGML_TYPE_F32, 2,
                                              (uint64_t []) { 4, 0 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "type", (ggml_type_t) 31, 1,
                                              (uint64_t []) { 4 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "a-name-longer-than-sixty-four-bytes-"
                                              "is-not-allowed-by-the-gguf-spec", GGML_TYPE_F32,
                                              1, (uint64_t []) { 4 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_add_tensor (writer, "", GGML_TYPE_F32, 1,
                                              (uint64_t []) { 4 }, NULL, 0), -1);
    assert_int_equal (gguf_writer_set_u32 (writer, "", 1), -1);
    assert_int_equal (gguf_writer_set_u32 (writer, NULL, 1), -1);
    assert_int_equal (gguf_writer_set_str (writer, "k", NULL), -1);
    assert_int_equal (gguf_writer_set_array (writer, "k", GGUF_TYPE_STRING, data, 1), -1);
    assert_int_equal (gguf_writer_set_array (writer, "k", GGUF_TYPE_ARRAY, data, 1), -1);
    assert_int_equal (gguf_writer_set_array (writer, "k", GGUF_TYPE_UINT8, NULL, 3), -1);
    uint8_t not_bool [2] = { 1, 2 };
    assert_int_equal (gguf_writer_set_array (writer, "k", GGUF_TYPE_BOOL, not_bool, 2), -1);
    assert_int_equal (gguf_writer_set_str_array (writer, "k", (const char *[]) { "a", NULL },
                                                 2), -1);
    assert_non_null (strstr (gguf_writer_error (writer), "added twice"));
    assert_int_equal (gguf_writer_tensor_count (writer), 1);
    assert_int_equal (gguf_writer_key_count (writer), 0);
    char err [512] = "";
    assert_int_equal (gguf_writer_write (writer, s_path ("bad.gguf"), err, sizeof err), -1);
    assert_non_null (strstr (err, "added twice"));
    assert_int_equal (gguf_writer_begin (writer, s_path ("bad.gguf"), err, sizeof err), -1);
    assert_int_equal (s_folder_entries (), 0);
    gguf_writer_destroy (&writer);
    gguf_writer_destroy (&writer);      //  a second destroy is harmless
}

//  --- Copying keys from another file ----------------------------------------------------------

//  Every key of the every-type file copied into a new file reads back the same (a FLOAT64
//  scalar only to float precision: gguf.h reads it as float).
static void
test_copy_every_type (void **state)
{
    (void) state;
    gguf_writer_t *writer = s_writer_with_everything ();
    char err [512] = "";
    assert_int_equal (gguf_writer_write (writer, s_path ("source.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);

    gguf_t *source = s_open (s_path ("source.gguf"));
    gguf_writer_t *copy = gguf_writer_new ();
    assert_int_equal (gguf_writer_copy_prefix (copy, source, "t."), 15);
    assert_int_equal (gguf_writer_copy_prefix (copy, source, "a."), 13);
    assert_int_equal (gguf_writer_copy_prefix (copy, source, "nothing."), 0);
    assert_int_equal (gguf_writer_copy_key (copy, source, "no.such.key"), -1);
    assert_non_null (strstr (gguf_writer_error (copy), "no.such.key"));
    gguf_writer_destroy (&copy);

    copy = gguf_writer_new ();
    for (size_t i = 0; i < gguf_key_count (source); i++) {
        gguf_str_t name = gguf_key_name (source, i);
        char key [64];
        snprintf (key, sizeof key, "%.*s", (int) name.len, name.ptr);
        assert_int_equal (gguf_writer_copy_key (copy, source, key), 0);
    }
    assert_int_equal (gguf_writer_write (copy, s_path ("copy.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&copy);
    gguf_t *copied = s_open (s_path ("copy.gguf"));
    assert_int_equal (gguf_key_count (copied), EVERY_TYPE_KEYS);
    for (size_t i = 0; i < gguf_key_count (source); i++) {
        assert_int_equal (gguf_key_type (copied, i), gguf_key_type (source, i));
        gguf_str_t a = gguf_key_name (source, i), b = gguf_key_name (copied, i);
        assert_true (a.len == b.len && memcmp (a.ptr, b.ptr, a.len) == 0);
    }
    s_check_every_type (copied);
    gguf_destroy (&copied);
    gguf_destroy (&source);
    s_remove ("source.gguf");
    s_remove ("copy.gguf");
}

//  A real vocab's tokenizer keys copy exactly: every string, every number.
static void
test_copy_real_vocab (void **state)
{
    (void) state;
    gguf_t *vocab = s_open (s_shared_path ("models/vocab/ggml-vocab-llama-spm.gguf"));
    gguf_writer_t *writer = gguf_writer_new ();
    int64_t copied = gguf_writer_copy_prefix (writer, vocab, "tokenizer.");
    assert_true (copied >= 5);
    char err [512] = "";
    assert_int_equal (gguf_writer_write (writer, s_path ("vocab.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);
    gguf_t *copy = s_open (s_path ("vocab.gguf"));
    assert_int_equal (gguf_key_count (copy), (size_t) copied);
    for (size_t i = 0; i < gguf_key_count (copy); i++) {
        gguf_str_t name = gguf_key_name (copy, i);
        char key [128];
        snprintf (key, sizeof key, "%.*s", (int) name.len, name.ptr);
        int64_t index = gguf_find_key (vocab, key);
        assert_true (index >= 0);
        gguf_type_t type = gguf_key_type (copy, i);
        assert_int_equal (type, gguf_key_type (vocab, (size_t) index));
        if (type == GGUF_TYPE_ARRAY) {
            gguf_type_t elem_a, elem_b;
            uint64_t count_a, count_b;
            const void *data_a, *data_b;
            gguf_get_array (vocab, key, &elem_a, &count_a, &data_a);
            gguf_get_array (copy, key, &elem_b, &count_b, &data_b);
            assert_int_equal (elem_a, elem_b);
            assert_int_equal (count_a, count_b);
            for (uint64_t k = 0; k < count_a && elem_a == GGUF_TYPE_STRING; k++) {
                gguf_str_t a, b;
                gguf_array_str (vocab, key, k, &a);
                gguf_array_str (copy, key, k, &b);
                assert_true (a.len == b.len && memcmp (a.ptr, b.ptr, a.len) == 0);
            }
            if (elem_a != GGUF_TYPE_STRING)
                assert_memory_equal (data_a, data_b, count_a * s_value_bytes (elem_a));
        }
        else
        if (type == GGUF_TYPE_STRING) {
            gguf_str_t a, b;
            gguf_get_str (vocab, key, &a);
            gguf_get_str (copy, key, &b);
            assert_true (a.len == b.len && memcmp (a.ptr, b.ptr, a.len) == 0);
        }
        else {
            int64_t a = 0, b = 0;
            bool flag_a = false, flag_b = false;
            if (type == GGUF_TYPE_BOOL) {
                gguf_get_bool (vocab, key, &flag_a);
                gguf_get_bool (copy, key, &flag_b);
                assert_int_equal (flag_a, flag_b);
            }
            else {
                gguf_get_i64 (vocab, key, &a);
                gguf_get_i64 (copy, key, &b);
                assert_true (a == b);
            }
        }
    }
    gguf_destroy (&copy);
    gguf_destroy (&vocab);
    s_remove ("vocab.gguf");
}

//  --- mkmodel -----------------------------------------------------------------------------------

//  Width 256 so that the K-quants fit every matrix; tied output.
static const mkmodel_shape_t s_tiny_k = {
    "tiny-k", "Tiny K", 2, 256, 4, 2, 512, 512, 10000.0f, 1e-5f, true
};
//  Width 96, FFN 160: nothing fits 256-wide blocks; separate output matrix.
static const mkmodel_shape_t s_tiny_odd = {
    "tiny-odd", "Tiny odd", 2, 96, 3, 1, 160, 256, 500000.0f, 1e-6f, false
};

static const char *
s_stories_path (void)
{
    return s_shared_path ("models/stories260K.gguf");
}

static void
s_make_model (const mkmodel_shape_t *shape, ggml_type_t type, uint64_t seed, const char *name)
{
    char err [512] = "";
    if (mkmodel_write (shape, s_stories_path (), type, seed, s_path (name), err, sizeof err))
        fail_msg ("mkmodel_write %s %s: %s", shape->name, ggml_type_name (type), err);
}

static uint32_t
s_u32 (const gguf_t *gguf, const char *key)
{
    uint32_t value = 0;
    if (gguf_get_u32 (gguf, key, &value))
        fail_msg ("no uint32 %s", key);
    return value;
}

//  Mean and standard deviation of a tensor's decoded values.
static void
s_tensor_stats (const gguf_tensor_t *tensor, double *mean, double *std)
{
    uint64_t n = tensor->ne [0] * tensor->ne [1];
    float *values = malloc (n * sizeof (float));
    assert_non_null (values);
    assert_int_equal (quant_dequantize_row (tensor->type, tensor->data, values, n), 0);
    double sum = 0, sum_squares = 0;
    for (uint64_t i = 0; i < n; i++) {
        sum += values [i];
        sum_squares += (double) values [i] * values [i];
    }
    *mean = sum / n;
    *std = sqrt (sum_squares / n - *mean * *mean);
    free (values);
}

static void
s_check_model (const char *path, const mkmodel_shape_t *shape, ggml_type_t type)
{
    gguf_t *gguf = s_open (path);
    gguf_t *vocab = s_open (s_stories_path ());
    gguf_str_t s;
    assert_int_equal (gguf_get_str (gguf, "general.architecture", &s), 0);
    assert_true (s_str_is (s, "llama"));
    assert_int_equal (gguf_get_str (gguf, "general.name", &s), 0);
    assert_true (s_str_is (s, shape->display_name));
    assert_int_equal (s_u32 (gguf, "general.file_type"), mkmodel_file_type (type));
    assert_int_equal (s_u32 (gguf, "llama.context_length"), shape->context_length);
    assert_int_equal (s_u32 (gguf, "llama.embedding_length"), shape->dim);
    assert_int_equal (s_u32 (gguf, "llama.block_count"), shape->n_layers);
    assert_int_equal (s_u32 (gguf, "llama.feed_forward_length"), shape->ffn_dim);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count"), shape->n_heads);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count_kv"), shape->n_kv_heads);
    assert_int_equal (s_u32 (gguf, "llama.rope.dimension_count"), shape->dim / shape->n_heads);
    assert_int_equal (s_u32 (gguf, "llama.vocab_size"), 512);
    float f;
    assert_int_equal (gguf_get_f32 (gguf, "llama.rope.freq_base", &f), 0);
    assert_true (f == shape->rope_theta);
    assert_int_equal (gguf_get_f32 (gguf, "llama.attention.layer_norm_rms_epsilon", &f), 0);
    assert_true (f == shape->rms_eps);
    //  The tokenizer: every tokenizer.* key of the vocab, and the ChatML template.
    for (size_t i = 0; i < gguf_key_count (vocab); i++) {
        gguf_str_t name = gguf_key_name (vocab, i);
        if (name.len < 10 || memcmp (name.ptr, "tokenizer.", 10) != 0)
            continue;
        char key [128];
        snprintf (key, sizeof key, "%.*s", (int) name.len, name.ptr);
        int64_t index = gguf_find_key (gguf, key);
        if (index < 0)
            fail_msg ("the model lacks %s", key);
        assert_int_equal (gguf_key_type (gguf, (size_t) index), gguf_key_type (vocab, i));
    }
    gguf_str_t token;
    assert_int_equal (gguf_array_str (gguf, "tokenizer.ggml.tokens", 511, &token), 0);
    gguf_str_t source_token;
    gguf_array_str (vocab, "tokenizer.ggml.tokens", 511, &source_token);
    assert_true (token.len == source_token.len
                 && memcmp (token.ptr, source_token.ptr, token.len) == 0);
    assert_int_equal (gguf_get_str (gguf, "tokenizer.chat_template", &s), 0);
    size_t template_size;
    uint8_t *template = s_read_file (s_shared_path ("templates/chatml.jinja"), &template_size);
    while (template_size > 0 && template [template_size - 1] == '\n')
        template_size--;
    assert_int_equal (s.len, template_size);
    assert_memory_equal (s.ptr, template, template_size);
    free (template);

    //  The tensors: names, shapes, types; norms all ones, weights about N(0, 0.02).
    uint64_t dim = shape->dim, kv_dim = dim / shape->n_heads * shape->n_kv_heads;
    size_t expected_count = 2 + 9 * shape->n_layers + (shape->tied_output? 0: 1);
    assert_int_equal (gguf_tensor_count (gguf), expected_count);
    for (size_t i = 0; i < gguf_tensor_count (gguf); i++) {
        const gguf_tensor_t *tensor = gguf_tensor (gguf, i);
        char name [80];
        snprintf (name, sizeof name, "%.*s", (int) tensor->name.len, tensor->name.ptr);
        bool is_norm = strstr (name, "norm") != NULL;
        bool is_output = strcmp (name, "output.weight") == 0
                      || (shape->tied_output && strcmp (name, "token_embd.weight") == 0);
        if (is_norm) {
            assert_int_equal (tensor->type, GGML_TYPE_F32);
            assert_int_equal (tensor->n_dims, 1);
            assert_int_equal (tensor->ne [0], dim);
            for (uint64_t k = 0; k < dim; k++)
                assert_true (((const float *) tensor->data) [k] == 1.0f);
            continue;
        }
        assert_int_equal (tensor->n_dims, 2);
        assert_int_equal (tensor->type, mkmodel_weight_type (type, is_output, tensor->ne [0]));
        uint64_t ne0 = dim, ne1 = dim;
        if (strstr (name, "attn_k") || strstr (name, "attn_v"))
            ne1 = kv_dim;
        else
        if (strstr (name, "ffn_gate") || strstr (name, "ffn_up"))
            ne1 = shape->ffn_dim;
        else
        if (strstr (name, "ffn_down"))
            ne0 = shape->ffn_dim;
        else
        if (strstr (name, "token_embd") || strcmp (name, "output.weight") == 0)
            ne1 = 512;
        else
            assert_true (strstr (name, "attn_q") || strstr (name, "attn_output"));
        assert_int_equal (tensor->ne [0], ne0);
        assert_int_equal (tensor->ne [1], ne1);
        double mean, std;
        s_tensor_stats (tensor, &mean, &std);
        assert_true (fabs (mean) < 0.002);
        assert_true (std > 0.018 && std < 0.022);
    }
    //  Every layer's tensors are there.
    for (uint32_t layer = 0; layer < shape->n_layers; layer++) {
        const char *parts [] = { "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down" };
        for (int p = 0; p < 9; p++) {
            char name [80];
            snprintf (name, sizeof name, "blk.%u.%s.weight", layer, parts [p]);
            assert_non_null (gguf_find_tensor (gguf, name));
        }
    }
    assert_non_null (gguf_find_tensor (gguf, "token_embd.weight"));
    assert_non_null (gguf_find_tensor (gguf, "output_norm.weight"));
    assert_true ((gguf_find_tensor (gguf, "output.weight") != NULL) == !shape->tied_output);
    gguf_destroy (&vocab);
    gguf_destroy (&gguf);
}

static void
test_mkmodel_every_type (void **state)
{
    (void) state;
    ggml_type_t types [] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                             GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K };
    for (size_t t = 0; t < sizeof types / sizeof types [0]; t++) {
        s_make_model (&s_tiny_k, types [t], 7, "tiny-k.gguf");
        s_check_model (s_path ("tiny-k.gguf"), &s_tiny_k, types [t]);
        s_remove ("tiny-k.gguf");
        s_make_model (&s_tiny_odd, types [t], 7, "tiny-odd.gguf");
        s_check_model (s_path ("tiny-odd.gguf"), &s_tiny_odd, types [t]);
        s_remove ("tiny-odd.gguf");
    }
    assert_int_equal (s_folder_entries (), 0);
}

static void
test_mkmodel_fallback_types (void **state)
{
    (void) state;
    //  K-quants where rows fit 256; Q4_K's output is Q6_K, as in llama.cpp.
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q4_K, false, 2048), GGML_TYPE_Q4_K);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q4_K, true, 2048), GGML_TYPE_Q6_K);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q6_K, false, 1536), GGML_TYPE_Q6_K);
    //  Rows of 576 (SmolLM2-135M): Q4_K -> Q4_0, Q6_K -> Q8_0.
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q4_K, false, 576), GGML_TYPE_Q4_0);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q4_K, true, 576), GGML_TYPE_Q8_0);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q6_K, false, 960), GGML_TYPE_Q8_0);
    //  Rows that do not fit 32 either: F16.
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q4_K, false, 48), GGML_TYPE_F16);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q8_0, false, 100), GGML_TYPE_F16);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_Q4_0, true, 96), GGML_TYPE_Q4_0);
    //  Plain types never change.
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_BF16, true, 7), GGML_TYPE_BF16);
    assert_int_equal (mkmodel_weight_type (GGML_TYPE_F32, false, 576), GGML_TYPE_F32);
    assert_int_equal (mkmodel_file_type (GGML_TYPE_Q8_0), 7);
    assert_int_equal (mkmodel_file_type (GGML_TYPE_Q4_K), 14);
    assert_int_equal (mkmodel_file_type (GGML_TYPE_BF16), 32);
    assert_false (mkmodel_supports_type (GGML_TYPE_Q5_K));
}

//  The same arguments give the same bytes; another seed other weights, same header size.
static void
test_mkmodel_deterministic (void **state)
{
    (void) state;
    s_make_model (&s_tiny_odd, GGML_TYPE_Q8_0, 42, "one.gguf");
    s_make_model (&s_tiny_odd, GGML_TYPE_Q8_0, 42, "two.gguf");
    s_make_model (&s_tiny_odd, GGML_TYPE_Q8_0, 43, "three.gguf");
    size_t size1, size2, size3;
    uint8_t *one = s_read_file (s_path ("one.gguf"), &size1);
    uint8_t *two = s_read_file (s_path ("two.gguf"), &size2);
    uint8_t *three = s_read_file (s_path ("three.gguf"), &size3);
    assert_int_equal (size1, size2);
    assert_memory_equal (one, two, size1);
    assert_int_equal (size1, size3);
    assert_true (memcmp (one, three, size1) != 0);
    free (one);
    free (two);
    free (three);
    s_remove ("one.gguf");
    s_remove ("two.gguf");
    s_remove ("three.gguf");
}

//  The model loads in zllm's model and runs a step with finite logits.
static void
test_mkmodel_runs (void **state)
{
    (void) state;
    ggml_type_t types [] = { GGML_TYPE_F32, GGML_TYPE_F16 };
    for (size_t t = 0; t < 2; t++) {
        s_make_model (&s_tiny_odd, types [t], 3, "run.gguf");
        gguf_t *gguf = s_open (s_path ("run.gguf"));
        char err [512] = "";
        model_t *model = model_new (gguf, 16, err, sizeof err);
        if (!model)
            fail_msg ("model_new: %s", err);
        if (model_cache_new (model, 1, 16, err, sizeof err) != 0)
            fail_msg ("model_cache_new: %s", err);
        assert_int_equal (model_config (model)->n_vocab, 512);
        assert_int_equal (model_config (model)->n_kv_heads, 1);
        uint32_t tokens [3] = { 1, 100, 200 };
        const uint32_t table [1] = { 0 };
        model_seq_t seq = { tokens, 3, 0, table, 1, true };
        const float *logits = model_forward_seqs (model, &seq, 1, err, sizeof err);
        if (!logits)
            fail_msg ("model_forward_seqs: %s", err);
        for (uint32_t i = 0; i < 512; i++)
            assert_true (isfinite (logits [i]));
        model_destroy (&model);
        gguf_destroy (&gguf);
        s_remove ("run.gguf");
    }
}

static void
test_mkmodel_errors (void **state)
{
    (void) state;
    char err [512] = "";
    //  No such vocab file.
    assert_int_equal (mkmodel_write (&s_tiny_odd, s_path ("missing.gguf"), GGML_TYPE_F32, 1,
                                     s_path ("out.gguf"), err, sizeof err), -1);
    assert_non_null (strstr (err, "missing.gguf"));
    //  A GGUF without a tokenizer.
    gguf_writer_t *writer = gguf_writer_new ();
    gguf_writer_set_str (writer, "general.architecture", "llama");
    assert_int_equal (gguf_writer_write (writer, s_path ("novocab.gguf"), err, sizeof err), 0);
    gguf_writer_destroy (&writer);
    assert_int_equal (mkmodel_write (&s_tiny_odd, s_path ("novocab.gguf"), GGML_TYPE_F32, 1,
                                     s_path ("out.gguf"), err, sizeof err), -1);
    assert_non_null (strstr (err, "tokenizer.ggml.tokens"));
    s_remove ("novocab.gguf");
    //  A type that cannot be made, a shape that does not divide into heads.
    assert_int_equal (mkmodel_write (&s_tiny_odd, s_stories_path (), GGML_TYPE_Q5_K, 1,
                                     s_path ("out.gguf"), err, sizeof err), -1);
    mkmodel_shape_t bad = s_tiny_odd;
    bad.n_heads = 5;
    assert_int_equal (mkmodel_write (&bad, s_stories_path (), GGML_TYPE_F32, 1,
                                     s_path ("out.gguf"), err, sizeof err), -1);
    //  An output folder that does not exist.
    assert_int_equal (mkmodel_write (&s_tiny_odd, s_stories_path (), GGML_TYPE_F32, 1,
                                     s_path ("no/such/out.gguf"), err, sizeof err), -1);
    assert_int_equal (s_folder_entries (), 0);
}

//  The built-in shapes are the real models'.
static void
test_mkmodel_real_shapes (void **state)
{
    (void) state;
    assert_int_equal (mkmodel_shape_count (), 3);
    const mkmodel_shape_t *small = mkmodel_find_shape ("smollm2-135m");
    assert_non_null (small);
    assert_int_equal (small->n_layers, 30);
    assert_int_equal (small->dim, 576);
    assert_int_equal (small->n_heads, 9);
    assert_int_equal (small->n_kv_heads, 3);
    assert_int_equal (small->ffn_dim, 1536);
    assert_true (small->tied_output);
    const mkmodel_shape_t *medium = mkmodel_find_shape ("smollm2-360m");
    assert_non_null (medium);
    assert_int_equal (medium->n_layers, 32);
    assert_int_equal (medium->dim, 960);
    assert_int_equal (medium->n_heads, 15);
    assert_int_equal (medium->n_kv_heads, 5);
    assert_int_equal (medium->ffn_dim, 2560);
    const mkmodel_shape_t *llama = mkmodel_find_shape ("llama-3.2-1b");
    assert_non_null (llama);
    assert_int_equal (llama->n_layers, 16);
    assert_int_equal (llama->dim, 2048);
    assert_int_equal (llama->n_heads, 32);
    assert_int_equal (llama->n_kv_heads, 8);
    assert_int_equal (llama->ffn_dim, 8192);
    assert_true (llama->rope_theta == 500000.0f);
    assert_null (mkmodel_find_shape ("llama-70b"));
    assert_null (mkmodel_shape (3));
}

//  --- Main ----------------------------------------------------------------------------------------

static int
s_setup (void **state)
{
    (void) state;
    const char *tmp = getenv ("TMPDIR");
    snprintf (s_folder, sizeof s_folder, "%s/test_gguf_writer.XXXXXX", tmp && *tmp? tmp: "/tmp");
    return mkdtemp (s_folder)? 0: -1;
}

static int
s_teardown (void **state)
{
    (void) state;
    //  Tests remove what they write; a failed test may leave files behind.
    DIR *dir = opendir (s_folder);
    if (dir) {
        struct dirent *entry;
        while ((entry = readdir (dir)))
            if (strcmp (entry->d_name, ".") != 0 && strcmp (entry->d_name, "..") != 0)
                unlink (s_path (entry->d_name));
        closedir (dir);
    }
    rmdir (s_folder);
    return 0;
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_every_type_round_trip),
        cmocka_unit_test (test_exact_bytes),
        cmocka_unit_test (test_alignment_key),
        cmocka_unit_test (test_replace_key),
        cmocka_unit_test (test_no_tensors),
        cmocka_unit_test (test_streaming_matches_memory),
        cmocka_unit_test (test_streaming_errors),
        cmocka_unit_test (test_bad_input),
        cmocka_unit_test (test_copy_every_type),
        cmocka_unit_test (test_copy_real_vocab),
        cmocka_unit_test (test_mkmodel_every_type),
        cmocka_unit_test (test_mkmodel_fallback_types),
        cmocka_unit_test (test_mkmodel_deterministic),
        cmocka_unit_test (test_mkmodel_runs),
        cmocka_unit_test (test_mkmodel_errors),
        cmocka_unit_test (test_mkmodel_real_shapes),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
