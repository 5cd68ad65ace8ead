/*  test_gguf — the GGUF reader (npu/gguf) on the real models in ZLLM_SHARED_DIR/models,
    on every truncation of a real header, on thousands of corrupted headers, and on
    small hand-built files with one defect each.

    Corrupt images are opened from buffers of exactly their size, so that under
    AddressSanitizer any read past the end is caught.
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
#include <unistd.h>

#include "gguf.h"

//  --- Helpers -----------------------------------------------------------------------------

//  Full path of a file under $ZLLM_SHARED_DIR/models.
static const char *
s_model_path (const char *name)
{
    static char path [1024];
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    snprintf (path, sizeof path, "%s/models/%s", shared? shared: "../shared", name);
    return path;
}

static gguf_t *
s_open_model (const char *name)
{
    char err [512] = "";
    gguf_t *gguf = gguf_open (s_model_path (name), err, sizeof err);
    if (!gguf)
        fail_msg ("cannot open %s: %s", name, err);
    return gguf;
}

//  Read a whole file into a buffer of exactly its size.
static uint8_t *
s_read_file (const char *path, size_t *size)
{
    FILE *file = fopen (path, "rb");
    assert_non_null (file);
    fseek (file, 0, SEEK_END);
    long length = ftell (file);
    fseek (file, 0, SEEK_SET);
    assert_true (length > 0);
    uint8_t *data = malloc ((size_t) length);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) length, file), (size_t) length);
    fclose (file);
    *size = (size_t) length;
    return data;
}

static bool
s_str_is (gguf_str_t s, const char *text)
{
    return s.len == strlen (text) && memcmp (s.ptr, text, s.len) == 0;
}

static uint32_t
s_u32 (const gguf_t *gguf, const char *key)
{
    uint32_t value = 0;
    if (gguf_get_u32 (gguf, key, &value) != 0)
        fail_msg ("no uint32 %s", key);
    return value;
}

static void
s_assert_tensor (const gguf_t *gguf, const char *name, ggml_type_t type,
                 uint32_t n_dims, uint64_t ne0, uint64_t ne1)
{
    const gguf_tensor_t *tensor = gguf_find_tensor (gguf, name);
    if (!tensor)
        fail_msg ("no tensor %s", name);
    assert_true (s_str_is (tensor->name, name));
    assert_int_equal (tensor->type, type);
    assert_int_equal (tensor->n_dims, n_dims);
    assert_int_equal (tensor->ne [0], ne0);
    assert_int_equal (tensor->ne [1], ne1);
    assert_int_equal (tensor->ne [2], 1);
    assert_int_equal (tensor->ne [3], 1);
    assert_int_equal (tensor->size, ggml_row_bytes (type, ne0) * ne1);
    assert_non_null (tensor->data);
}

//  Where the data section starts, from the first tensor's data pointer.
static size_t
s_data_offset (const gguf_t *gguf, const uint8_t *base)
{
    const gguf_tensor_t *tensor = gguf_tensor (gguf, 0);
    assert_non_null (tensor);
    return (size_t) ((const uint8_t *) tensor->data - base) - tensor->offset;
}

//  Open size bytes of data from a fresh buffer of exactly that size. Returns the
//  gguf_t (owning the copy through *copy_p) or NULL with err filled.
static gguf_t *
s_open_copy (const uint8_t *data, size_t size, uint8_t **copy_p, char *err, size_t err_size)
{
    uint8_t *copy = malloc (size? size: 1);
    assert_non_null (copy);
    if (size)
        memcpy (copy, data, size);
    err [0] = 0;
    gguf_t *gguf = gguf_open_memory (copy, size, err, err_size);
    *copy_p = copy;
    return gguf;
}

//  Open must fail, with a message.
static void
s_assert_refused (const uint8_t *data, size_t size, const char *why)
{
    char err [512];
    uint8_t *copy;
    gguf_t *gguf = s_open_copy (data, size, &copy, err, sizeof err);
    if (gguf)
        fail_msg ("a file with %s (%zu bytes) was accepted", why, size);
    if (strlen (err) == 0)
        fail_msg ("a file with %s was refused without a message", why);
    free (copy);
}

//  A small generator for the corruption tests (xorshift64*), so they repeat exactly.
static uint64_t
s_random (uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

//  Walk everything an opened (possibly corrupt) file offers, checking that it stays
//  inside the buffer.
static void
s_walk (const gguf_t *gguf, const uint8_t *base, size_t size)
{
    for (size_t i = 0; i < gguf_key_count (gguf); i++) {
        gguf_str_t name = gguf_key_name (gguf, i);
        assert_true ((const uint8_t *) name.ptr >= base);
        assert_true ((const uint8_t *) name.ptr + name.len <= base + size);
        char key [128];
        if (name.len >= sizeof key)
            continue;
        memcpy (key, name.ptr, name.len);
        key [name.len] = 0;
        uint64_t u64;
        int64_t i64;
        float f32;
        bool flag;
        gguf_str_t text;
        gguf_get_u64 (gguf, key, &u64);
        gguf_get_i64 (gguf, key, &i64);
        gguf_get_f32 (gguf, key, &f32);
        gguf_get_bool (gguf, key, &flag);
        if (gguf_get_str (gguf, key, &text) == 0)
            assert_true ((const uint8_t *) text.ptr + text.len <= base + size);
        gguf_type_t elem_type;
        uint64_t count;
        const void *elements;
        if (gguf_get_array (gguf, key, &elem_type, &count, &elements) == 0) {
            if (elem_type == GGUF_TYPE_STRING && count > 0) {
                assert_int_equal (gguf_array_str (gguf, key, count - 1, &text), 0);
                assert_true ((const uint8_t *) text.ptr + text.len <= base + size);
            }
            float few [4];
            int32_t some [4];
            gguf_array_f32 (gguf, key, few, count < 4? count: 4);
            gguf_array_i32 (gguf, key, some, count < 4? count: 4);
        }
    }
    for (size_t i = 0; i < gguf_tensor_count (gguf); i++) {
        const gguf_tensor_t *tensor = gguf_tensor (gguf, i);
        assert_true ((const uint8_t *) tensor->data >= base);
        assert_true (tensor->size <= size);
        assert_true ((const uint8_t *) tensor->data + tensor->size <= base + size);
    }
    gguf_fingerprint (gguf);
}

//  --- The real models ---------------------------------------------------------------------

static void
test_stories260k_metadata (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    assert_int_equal (gguf_version (gguf), 3);
    assert_int_equal (gguf_file_size (gguf), 1185376);
    assert_int_equal (gguf_key_count (gguf), 19);
    assert_int_equal (gguf_tensor_count (gguf), 48);

    gguf_str_t text;
    assert_int_equal (gguf_get_str (gguf, "general.architecture", &text), 0);
    assert_true (s_str_is (text, "llama"));
    assert_int_equal (gguf_get_str (gguf, "tokenizer.ggml.model", &text), 0);
    assert_true (s_str_is (text, "llama"));
    assert_int_equal (s_u32 (gguf, "llama.embedding_length"), 64);
    assert_int_equal (s_u32 (gguf, "llama.block_count"), 5);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count"), 8);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count_kv"), 4);
    assert_int_equal (s_u32 (gguf, "llama.feed_forward_length"), 172);
    assert_int_equal (s_u32 (gguf, "llama.context_length"), 2048);
    assert_int_equal (s_u32 (gguf, "llama.rope.dimension_count"), 8);
    assert_int_equal (s_u32 (gguf, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal (s_u32 (gguf, "tokenizer.ggml.eos_token_id"), 2);
    float eps = 0;
    assert_int_equal (gguf_get_f32 (gguf, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    assert_true (fabsf (eps - 1e-5f) < 1e-9f);

    //  A uint32 of 4294967295 is no int32 but is an int64.
    uint32_t separator;
    int64_t wide;
    assert_int_equal (gguf_get_u32 (gguf, "tokenizer.ggml.seperator_token_id", &separator), 0);
    assert_true (separator == UINT32_MAX);
    assert_int_equal (gguf_get_i64 (gguf, "tokenizer.ggml.seperator_token_id", &wide), 0);
    assert_true (wide == 4294967295LL);

    //  Wrong type and missing keys.
    uint32_t number;
    assert_int_equal (gguf_get_u32 (gguf, "general.architecture", &number), -1);
    assert_int_equal (gguf_get_str (gguf, "llama.block_count", &text), -1);
    assert_int_equal (gguf_get_u32 (gguf, "llama.no_such_key", &number), -1);
    assert_true (gguf_find_key (gguf, "llama.no_such_key") < 0);
    assert_true (gguf_find_key (gguf, "llama.block_count") >= 0);

    //  The vocabulary arrays.
    gguf_type_t elem_type;
    uint64_t count;
    const void *elements;
    assert_int_equal (gguf_get_array (gguf, "tokenizer.ggml.tokens", &elem_type, &count,
                                      &elements), 0);
    assert_int_equal (elem_type, GGUF_TYPE_STRING);
    assert_int_equal (count, 512);
    assert_int_equal (gguf_array_str (gguf, "tokenizer.ggml.tokens", 0, &text), 0);
    assert_true (s_str_is (text, "<unk>"));
    assert_int_equal (gguf_array_str (gguf, "tokenizer.ggml.tokens", 1, &text), 0);
    assert_true (s_str_is (text, "<s>"));
    assert_int_equal (gguf_array_str (gguf, "tokenizer.ggml.tokens", 512, &text), -1);
    static float scores [512];
    static int32_t types [512];
    assert_int_equal (gguf_array_f32 (gguf, "tokenizer.ggml.scores", scores, 512), 0);
    assert_int_equal (gguf_array_f32 (gguf, "tokenizer.ggml.scores", scores, 511), -1);
    assert_int_equal (gguf_array_i32 (gguf, "tokenizer.ggml.token_type", types, 512), 0);
    assert_int_equal (types [0], 2);
    assert_int_equal (types [1], 3);
    assert_int_equal (gguf_array_i32 (gguf, "tokenizer.ggml.tokens", types, 512), -1);

    //  Tensors: ne[0] is the innermost dimension.
    s_assert_tensor (gguf, "token_embd.weight", GGML_TYPE_F32, 2, 64, 512);
    s_assert_tensor (gguf, "output_norm.weight", GGML_TYPE_F32, 1, 64, 1);
    s_assert_tensor (gguf, "output.weight", GGML_TYPE_F32, 2, 64, 512);
    s_assert_tensor (gguf, "blk.0.attn_q.weight", GGML_TYPE_F32, 2, 64, 64);
    s_assert_tensor (gguf, "blk.0.attn_k.weight", GGML_TYPE_F32, 2, 64, 32);
    s_assert_tensor (gguf, "blk.3.attn_v.weight", GGML_TYPE_F32, 2, 64, 32);
    s_assert_tensor (gguf, "blk.4.ffn_gate.weight", GGML_TYPE_F32, 2, 64, 172);
    s_assert_tensor (gguf, "blk.4.ffn_down.weight", GGML_TYPE_F32, 2, 172, 64);
    s_assert_tensor (gguf, "blk.4.ffn_norm.weight", GGML_TYPE_F32, 1, 64, 1);
    assert_null (gguf_find_tensor (gguf, "blk.5.ffn_norm.weight"));
    assert_null (gguf_tensor (gguf, 48));
    const gguf_tensor_t *first = gguf_tensor (gguf, 0);
    assert_true (s_str_is (first->name, "token_embd.weight"));
    assert_int_equal (first->offset, 0);
    //  The last tensor ends at the end of the file.
    const gguf_tensor_t *last = gguf_tensor (gguf, 47);
    assert_int_equal (last->offset, 1170944);

    //  The fingerprint is a function of the header.
    gguf_t *again = s_open_model ("stories260K.gguf");
    assert_true (gguf_fingerprint (gguf) == gguf_fingerprint (again));
    gguf_t *other = s_open_model ("llama-2-tiny-random.gguf");
    assert_true (gguf_fingerprint (gguf) != gguf_fingerprint (other));
    gguf_destroy (&other);
    gguf_destroy (&again);
    gguf_destroy (&gguf);
    assert_null (gguf);
    gguf_destroy (&gguf);           //  destroying twice is harmless
}

static void
test_tiny_random_metadata (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("llama-2-tiny-random.gguf");
    assert_int_equal (gguf_key_count (gguf), 18);
    assert_int_equal (gguf_tensor_count (gguf), 12);
    assert_int_equal (s_u32 (gguf, "llama.embedding_length"), 8);
    assert_int_equal (s_u32 (gguf, "llama.block_count"), 1);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count"), 2);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count_kv"), 2);
    assert_int_equal (s_u32 (gguf, "llama.feed_forward_length"), 32);
    assert_int_equal (s_u32 (gguf, "llama.context_length"), 4096);
    assert_int_equal (s_u32 (gguf, "general.file_type"), 1);
    gguf_str_t text;
    assert_int_equal (gguf_get_str (gguf, "general.name", &text), 0);
    assert_true (s_str_is (text, "LLaMA v2"));
    uint64_t count;
    assert_int_equal (gguf_get_array (gguf, "tokenizer.ggml.tokens", NULL, &count, NULL), 0);
    assert_int_equal (count, 32000);
    s_assert_tensor (gguf, "token_embd.weight", GGML_TYPE_F16, 2, 8, 32000);
    s_assert_tensor (gguf, "output.weight", GGML_TYPE_F16, 2, 8, 32000);
    s_assert_tensor (gguf, "blk.0.attn_q.weight", GGML_TYPE_F16, 2, 8, 8);
    s_assert_tensor (gguf, "blk.0.ffn_down.weight", GGML_TYPE_F16, 2, 32, 8);
    s_assert_tensor (gguf, "blk.0.attn_norm.weight", GGML_TYPE_F32, 1, 8, 1);
    gguf_destroy (&gguf);
}

static void
test_toy_chat_metadata (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("toy-chat.gguf");
    assert_int_equal (gguf_tensor_count (gguf), 38);
    assert_int_equal (s_u32 (gguf, "llama.embedding_length"), 256);
    assert_int_equal (s_u32 (gguf, "llama.block_count"), 4);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count"), 8);
    assert_int_equal (s_u32 (gguf, "llama.attention.head_count_kv"), 4);
    assert_int_equal (s_u32 (gguf, "llama.feed_forward_length"), 704);
    assert_int_equal (s_u32 (gguf, "llama.vocab_size"), 32064);
    assert_int_equal (s_u32 (gguf, "tokenizer.ggml.eos_token_id"), 32007);
    float base = 0;
    assert_int_equal (gguf_get_f32 (gguf, "llama.rope.freq_base", &base), 0);
    assert_true (base == 10000.0f);
    bool add_bos = false;
    assert_int_equal (gguf_get_bool (gguf, "tokenizer.ggml.add_bos_token", &add_bos), 0);
    assert_true (add_bos);
    assert_int_equal (gguf_get_bool (gguf, "tokenizer.ggml.add_eos_token", &add_bos), 0);
    assert_false (add_bos);
    gguf_str_t text;
    assert_int_equal (gguf_get_str (gguf, "tokenizer.chat_template", &text), 0);
    assert_true (text.len > 100);
    assert_int_equal (gguf_array_str (gguf, "tokenizer.ggml.tokens", 32007, &text), 0);
    assert_true (s_str_is (text, "<|end|>"));
    s_assert_tensor (gguf, "token_embd.weight", GGML_TYPE_F32, 2, 256, 32064);
    s_assert_tensor (gguf, "blk.3.attn_k.weight", GGML_TYPE_F32, 2, 256, 128);
    s_assert_tensor (gguf, "blk.3.ffn_up.weight", GGML_TYPE_F32, 2, 256, 704);
    assert_null (gguf_find_tensor (gguf, "output.weight"));
    gguf_destroy (&gguf);
}

static void
test_vocab_only_file (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("vocab/ggml-vocab-llama-spm.gguf");
    assert_int_equal (gguf_tensor_count (gguf), 0);
    assert_int_equal (s_u32 (gguf, "llama.vocab_size"), 32000);
    assert_null (gguf_tensor (gguf, 0));
    gguf_destroy (&gguf);
}

static void
test_open_errors (void **state)
{
    (void) state;
    char err [512] = "";
    assert_null (gguf_open ("/nonexistent/zllm/model.gguf", err, sizeof err));
    assert_non_null (strstr (err, "/nonexistent/zllm/model.gguf"));
    err [0] = 0;
    assert_null (gguf_open ("/tmp", err, sizeof err));
    assert_true (strlen (err) > 0);
    //  A file that is no GGUF.
    err [0] = 0;
    char path [1024];
    snprintf (path, sizeof path, "%s/models/SOURCES.tsv",
              getenv ("ZLLM_SHARED_DIR")? getenv ("ZLLM_SHARED_DIR"): "../shared");
    assert_null (gguf_open (path, err, sizeof err));
    assert_non_null (strstr (err, "GGUF"));
    //  A tiny error buffer still gets a terminated (truncated) message.
    char small [8];
    memset (small, 'x', sizeof small);
    assert_null (gguf_open ("/nonexistent", small, sizeof small));
    assert_true (memchr (small, 0, sizeof small) != NULL);
}

//  --- Truncation --------------------------------------------------------------------------

static void
test_truncated_in_memory (void **state)
{
    (void) state;
    size_t size;
    uint8_t *data = s_read_file (s_model_path ("stories260K.gguf"), &size);
    char err [512];
    gguf_t *whole = gguf_open_memory (data, size, err, sizeof err);
    assert_non_null (whole);
    size_t data_offset = s_data_offset (whole, data);
    assert_true (data_offset > 10000 && data_offset % 32 == 0);
    gguf_destroy (&whole);

    //  Every prefix up to and including the start of the data section.
    for (size_t length = 0; length <= data_offset; length++)
        s_assert_refused (data, length, "a truncated header");
    //  A sample of longer prefixes, and the file less its last byte or two.
    for (size_t length = data_offset + 1; length < size; length += 16381)
        s_assert_refused (data, length, "truncated tensor data");
    s_assert_refused (data, size - 1, "its last byte missing");
    s_assert_refused (data, size - 2, "its last two bytes missing");

    //  And the whole file from an exact copy opens.
    uint8_t *copy;
    gguf_t *gguf = s_open_copy (data, size, &copy, err, sizeof err);
    assert_non_null (gguf);
    s_walk (gguf, copy, size);
    gguf_destroy (&gguf);
    free (copy);
    free (data);
}

static void
test_truncated_files (void **state)
{
    (void) state;
    size_t size;
    uint8_t *data = s_read_file (s_model_path ("stories260K.gguf"), &size);
    const size_t lengths [] = { 0, 3, 4, 23, 24, 100, 5000, 14151, 14176, 600000, 1185375 };
    for (size_t i = 0; i < sizeof lengths / sizeof lengths [0]; i++) {
        char path [] = "/tmp/zllm-test-gguf-XXXXXX";
        int fd = mkstemp (path);
        assert_true (fd >= 0);
        assert_int_equal (write (fd, data, lengths [i]), (ssize_t) lengths [i]);
        close (fd);
        char err [512] = "";
        gguf_t *gguf = gguf_open (path, err, sizeof err);
        unlink (path);
        if (gguf)
            fail_msg ("a file truncated to %zu bytes was accepted", lengths [i]);
        assert_non_null (strstr (err, path));       //  the message names the file
    }
    free (data);
}

//  --- Corruption --------------------------------------------------------------------------

static void
test_bit_flips (void **state)
{
    (void) state;
    size_t size;
    uint8_t *data = s_read_file (s_model_path ("stories260K.gguf"), &size);
    char err [512];
    gguf_t *whole = gguf_open_memory (data, size, err, sizeof err);
    assert_non_null (whole);
    size_t header_size = s_data_offset (whole, data);
    gguf_destroy (&whole);

    uint64_t random_state = 0x5EED0F2011ULL;
    int opened = 0, refused = 0;
    for (int round = 0; round < 6000; round++) {
        size_t where = (size_t) (s_random (&random_state) % header_size);
        uint8_t saved = data [where];
        if (round % 3 == 2)
            data [where] = (uint8_t) s_random (&random_state);      //  a whole byte
        else
            data [where] ^= (uint8_t) (1u << (s_random (&random_state) % 8));
        err [0] = 0;
        gguf_t *gguf = gguf_open_memory (data, size, err, sizeof err);
        if (gguf) {
            s_walk (gguf, data, size);
            gguf_destroy (&gguf);
            opened++;
        }
        else {
            assert_true (strlen (err) > 0);
            refused++;
        }
        data [where] = saved;
    }
    //  Most flips land in strings' text and leave a valid file; some do not.
    assert_true (opened > 0);
    assert_true (refused > 0);
    print_message ("# bit flips: %d opened, %d refused\n", opened, refused);
    free (data);
}

//  --- Hand-built files --------------------------------------------------------------------

typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
} buffer_t;

static void
s_put (buffer_t *buffer, const void *bytes, size_t count)
{
    if (buffer->size + count > buffer->capacity) {
        buffer->capacity = (buffer->size + count) * 2 + 64;
        buffer->data = realloc (buffer->data, buffer->capacity);
        assert_non_null (buffer->data);
    }
    memcpy (buffer->data + buffer->size, bytes, count);
    buffer->size += count;
}

static void
s_put_u32 (buffer_t *buffer, uint32_t value)
{
    s_put (buffer, &value, sizeof value);
}

static void
s_put_u64 (buffer_t *buffer, uint64_t value)
{
    s_put (buffer, &value, sizeof value);
}

static void
s_put_str (buffer_t *buffer, const char *text)
{
    s_put_u64 (buffer, strlen (text));
    s_put (buffer, text, strlen (text));
}

typedef enum {
    DEFECT_NONE,
    DEFECT_MAGIC,
    DEFECT_VERSION_1,
    DEFECT_VERSION_4,
    DEFECT_HUGE_STRING,
    DEFECT_HUGE_ARRAY,
    DEFECT_HUGE_STRING_ARRAY,
    DEFECT_HUGE_KEY_COUNT,
    DEFECT_HUGE_TENSOR_COUNT,
    DEFECT_UNKNOWN_VALUE_TYPE,
    DEFECT_NESTED_ARRAY,
    DEFECT_BAD_BOOL,
    DEFECT_DUPLICATE_KEY,
    DEFECT_ALIGNMENT_NOT_POWER_OF_TWO,
    DEFECT_OFFSET_PAST_END,
    DEFECT_OFFSET_MISALIGNED,
    DEFECT_N_DIMS_5,
    DEFECT_N_DIMS_0,
    DEFECT_DIMENSION_0,
    DEFECT_TENSOR_TOO_LARGE,
    DEFECT_UNKNOWN_TYPE_4,
    DEFECT_UNKNOWN_TYPE_99,
    DEFECT_ROW_NOT_BLOCKS,
    DEFECT_DUPLICATE_TENSOR,
    DEFECT_COUNT
} defect_t;

static const char *s_defect_names [DEFECT_COUNT] = {
    "no defect", "a bad magic", "version 1", "version 4", "a huge string length",
    "a huge array count", "a huge string array count", "a huge key count",
    "a huge tensor count", "an unknown value type", "a nested array", "a bool of 2",
    "a duplicate key", "alignment 48", "a tensor offset past the end",
    "a misaligned tensor offset", "a tensor of 5 dimensions", "a tensor of 0 dimensions",
    "a dimension of 0", "a tensor too large to address", "unknown ggml type 4",
    "unknown ggml type 99", "a Q8_0 row of 8 elements", "a duplicate tensor"
};

//  A small GGUF v3 file: six keys and two F32 tensors ("weights" [8], "matrix" [4, 2]),
//  with one defect.
static buffer_t
s_build (defect_t defect)
{
    buffer_t b = { NULL, 0, 0 };
    s_put (&b, defect == DEFECT_MAGIC? "GGUG": "GGUF", 4);
    s_put_u32 (&b, defect == DEFECT_VERSION_1? 1: defect == DEFECT_VERSION_4? 4: 3);
    uint64_t tensor_count = defect == DEFECT_DUPLICATE_TENSOR? 3: 2;
    s_put_u64 (&b, defect == DEFECT_HUGE_TENSOR_COUNT? 1ULL << 40: tensor_count);
    uint64_t key_count = defect == DEFECT_DUPLICATE_KEY? 7: 6;
    s_put_u64 (&b, defect == DEFECT_HUGE_KEY_COUNT? UINT64_MAX / 3: key_count);

    s_put_str (&b, "general.architecture");
    s_put_u32 (&b, defect == DEFECT_UNKNOWN_VALUE_TYPE? 13: GGUF_TYPE_STRING);
    if (defect == DEFECT_HUGE_STRING) {
        s_put_u64 (&b, 1ULL << 62);
        s_put (&b, "llama", 5);
    }
    else
        s_put_str (&b, "llama");

    s_put_str (&b, "general.alignment");
    s_put_u32 (&b, GGUF_TYPE_UINT32);
    s_put_u32 (&b, defect == DEFECT_ALIGNMENT_NOT_POWER_OF_TWO? 48: 32);

    s_put_str (&b, "test.numbers");
    s_put_u32 (&b, GGUF_TYPE_ARRAY);
    s_put_u32 (&b, defect == DEFECT_NESTED_ARRAY? GGUF_TYPE_ARRAY: GGUF_TYPE_INT32);
    s_put_u64 (&b, defect == DEFECT_HUGE_ARRAY? 1ULL << 61: 3);
    s_put_u32 (&b, 7);
    s_put_u32 (&b, (uint32_t) -5);
    s_put_u32 (&b, 1000000);

    s_put_str (&b, "test.words");
    s_put_u32 (&b, GGUF_TYPE_ARRAY);
    s_put_u32 (&b, GGUF_TYPE_STRING);
    s_put_u64 (&b, defect == DEFECT_HUGE_STRING_ARRAY? 1ULL << 60: 2);
    s_put_str (&b, "a");
    s_put_str (&b, "bc");

    s_put_str (&b, "test.flag");
    s_put_u32 (&b, GGUF_TYPE_BOOL);
    uint8_t flag = defect == DEFECT_BAD_BOOL? 2: 1;
    s_put (&b, &flag, 1);

    s_put_str (&b, "test.double");
    s_put_u32 (&b, GGUF_TYPE_FLOAT64);
    double value = 0.25;
    s_put (&b, &value, sizeof value);

    if (defect == DEFECT_DUPLICATE_KEY) {
        s_put_str (&b, "test.flag");
        s_put_u32 (&b, GGUF_TYPE_UINT32);
        s_put_u32 (&b, 1);
    }

    //  Tensor "weights": [8] F32 at offset 0.
    s_put_str (&b, "weights");
    uint32_t n_dims = defect == DEFECT_N_DIMS_5? 5: defect == DEFECT_N_DIMS_0? 0: 1;
    s_put_u32 (&b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        s_put_u64 (&b, d > 0? 1: defect == DEFECT_DIMENSION_0? 0: 8);
    uint32_t type = defect == DEFECT_UNKNOWN_TYPE_4? 4
                  : defect == DEFECT_UNKNOWN_TYPE_99? 99
                  : defect == DEFECT_ROW_NOT_BLOCKS? GGML_TYPE_Q8_0: GGML_TYPE_F32;
    s_put_u32 (&b, type);
    s_put_u64 (&b, defect == DEFECT_OFFSET_PAST_END? 4096
                 : defect == DEFECT_OFFSET_MISALIGNED? 4: 0);

    //  Tensor "matrix": [4, 2] F32 at offset 32.
    s_put_str (&b, "matrix");
    s_put_u32 (&b, 2);
    s_put_u64 (&b, 4);
    s_put_u64 (&b, defect == DEFECT_TENSOR_TOO_LARGE? 1ULL << 62: 2);
    s_put_u32 (&b, GGML_TYPE_F32);
    s_put_u64 (&b, 32);

    if (defect == DEFECT_DUPLICATE_TENSOR) {
        s_put_str (&b, "weights");
        s_put_u32 (&b, 1);
        s_put_u64 (&b, 8);
        s_put_u32 (&b, GGML_TYPE_F32);
        s_put_u64 (&b, 0);
    }

    //  Padding to 32, then the data: weights 0..7, matrix 10..17.
    while (b.size % 32 != 0)
        s_put (&b, "", 1);
    for (int i = 0; i < 8; i++) {
        float element = (float) i;
        s_put (&b, &element, sizeof element);
    }
    for (int i = 0; i < 8; i++) {
        float element = (float) (10 + i);
        s_put (&b, &element, sizeof element);
    }
    return b;
}

static void
test_built_file (void **state)
{
    (void) state;
    buffer_t b = s_build (DEFECT_NONE);
    char err [512] = "";
    uint8_t *copy;
    gguf_t *gguf = s_open_copy (b.data, b.size, &copy, err, sizeof err);
    if (!gguf)
        fail_msg ("the valid built file was refused: %s", err);
    assert_int_equal (gguf_key_count (gguf), 6);
    assert_int_equal (gguf_tensor_count (gguf), 2);
    assert_true (s_str_is (gguf_key_name (gguf, 1), "general.alignment"));
    assert_int_equal (gguf_key_type (gguf, 2), GGUF_TYPE_ARRAY);

    int32_t numbers [3];
    assert_int_equal (gguf_array_i32 (gguf, "test.numbers", numbers, 3), 0);
    assert_int_equal (numbers [0], 7);
    assert_int_equal (numbers [1], -5);
    assert_int_equal (numbers [2], 1000000);
    float as_floats [3];
    assert_int_equal (gguf_array_f32 (gguf, "test.numbers", as_floats, 3), 0);
    assert_true (as_floats [1] == -5.0f);
    gguf_str_t text;
    assert_int_equal (gguf_array_str (gguf, "test.words", 1, &text), 0);
    assert_true (s_str_is (text, "bc"));
    assert_int_equal (gguf_array_str (gguf, "test.numbers", 0, &text), -1);
    bool flag = false;
    assert_int_equal (gguf_get_bool (gguf, "test.flag", &flag), 0);
    assert_true (flag);
    float quarter = 0;
    assert_int_equal (gguf_get_f32 (gguf, "test.double", &quarter), 0);
    assert_true (quarter == 0.25f);
    uint32_t alignment = 0;
    assert_int_equal (gguf_get_u32 (gguf, "general.alignment", &alignment), 0);
    assert_int_equal (alignment, 32);

    const gguf_tensor_t *weights = gguf_find_tensor (gguf, "weights");
    assert_non_null (weights);
    assert_int_equal (weights->size, 32);
    assert_int_equal ((const uint8_t *) weights->data - copy, b.size - 64);
    float element;
    memcpy (&element, (const uint8_t *) weights->data + 7 * 4, 4);
    assert_true (element == 7.0f);
    const gguf_tensor_t *matrix = gguf_find_tensor (gguf, "matrix");
    assert_non_null (matrix);
    assert_int_equal (matrix->n_dims, 2);
    assert_int_equal (matrix->ne [1], 2);
    memcpy (&element, matrix->data, 4);
    assert_true (element == 10.0f);
    s_walk (gguf, copy, b.size);
    gguf_destroy (&gguf);
    free (copy);

    //  Every truncation of the built file is refused too.
    for (size_t length = 0; length < b.size; length++)
        s_assert_refused (b.data, length, "a truncated built file");
    free (b.data);
}

static void
test_built_defects (void **state)
{
    (void) state;
    for (int defect = DEFECT_NONE + 1; defect < DEFECT_COUNT; defect++) {
        buffer_t b = s_build ((defect_t) defect);
        char err [512] = "";
        uint8_t *copy;
        gguf_t *gguf = s_open_copy (b.data, b.size, &copy, err, sizeof err);
        if (gguf)
            fail_msg ("a file with %s was accepted", s_defect_names [defect]);
        if (strlen (err) == 0)
            fail_msg ("a file with %s was refused without a message", s_defect_names [defect]);
        print_message ("# %s: %s\n", s_defect_names [defect], err);
        free (copy);
        free (b.data);
    }
}

static void
test_type_table (void **state)
{
    (void) state;
    assert_string_equal (ggml_type_name (GGML_TYPE_F32), "F32");
    assert_string_equal (ggml_type_name (GGML_TYPE_Q4_K), "Q4_K");
    assert_string_equal (ggml_type_name ((ggml_type_t) 4), "unknown");
    assert_string_equal (ggml_type_name ((ggml_type_t) 1000), "unknown");
    assert_int_equal (ggml_type_block_elements (GGML_TYPE_Q8_0), 32);
    assert_int_equal (ggml_type_block_bytes (GGML_TYPE_Q8_0), 34);
    assert_int_equal (ggml_type_block_elements ((ggml_type_t) 5), 0);
    assert_int_equal (ggml_row_bytes (GGML_TYPE_F16, 64), 128);
    assert_int_equal (ggml_row_bytes (GGML_TYPE_Q8_0, 64), 68);
    assert_int_equal (ggml_row_bytes (GGML_TYPE_Q4_K, 256), 144);
    assert_int_equal (ggml_row_bytes (GGML_TYPE_Q6_K, 512), 420);
    assert_int_equal (ggml_row_bytes (GGML_TYPE_Q8_0, 33), 0);
    assert_int_equal (ggml_row_bytes ((ggml_type_t) 99, 32), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_stories260k_metadata),
        cmocka_unit_test (test_tiny_random_metadata),
        cmocka_unit_test (test_toy_chat_metadata),
        cmocka_unit_test (test_vocab_only_file),
        cmocka_unit_test (test_open_errors),
        cmocka_unit_test (test_truncated_in_memory),
        cmocka_unit_test (test_truncated_files),
        cmocka_unit_test (test_bit_flips),
        cmocka_unit_test (test_built_file),
        cmocka_unit_test (test_built_defects),
        cmocka_unit_test (test_type_table),
    };
    return cmocka_run_group_tests_name ("gguf", tests, NULL, NULL);
}
