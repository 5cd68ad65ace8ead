/*  test_chat_template — chat requests rendered by real chat templates, byte for byte as
    Hugging Face's apply_chat_template renders them.

    - templates/cases.json: every case of the 55 real templates renders exactly its
      `expected` prompt, and every `expected_error` case is refused with that error
      (strftime_now's clock fixed at 2026-01-02 03:04:05, as for the reference).
    - reference/toy-chat.json: toy-chat.gguf's own template, with its bos and eos
      tokens, renders each conversation's `prompt`.
    - How a request becomes variables: content parts joined, tool call arguments parsed,
      tools and documents only when given, chat_template_kwargs, add_generation_prompt;
      requests that do not fit are refused with a message, as are broken templates.

    Test data comes from ZLLM_SHARED_DIR (set by meson); a test skips when it is absent.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "chat_template.h"
#include "gguf.h"

//  2026-01-02 03:04:05 UTC: the clock of the reference renderings (TZ is UTC here).
#define FIXED_NOW ((time_t) 1767323045)

//  --- Helpers ---------------------------------------------------------------------------

//  Path of a file under the shared test data, or NULL when the data is not there.
static char *
s_shared_path (const char *relative)
{
    const char *dir = getenv ("ZLLM_SHARED_DIR");
    if (!dir)
        return NULL;
    size_t size = strlen (dir) + strlen (relative) + 2;
    char *path = malloc (size);
    assert_non_null (path);
    snprintf (path, size, "%s/%s", dir, relative);
    FILE *file = fopen (path, "rb");
    if (!file) {
        free (path);
        return NULL;
    }
    fclose (file);
    return path;
}

static char *
s_read_file (const char *path)
{
    FILE *file = fopen (path, "rb");
    assert_non_null (file);
    fseek (file, 0, SEEK_END);
    long size = ftell (file);
    fseek (file, 0, SEEK_SET);
    char *data = malloc ((size_t) size + 1);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) size, file), (size_t) size);
    data [size] = 0;
    fclose (file);
    return data;
}

//  Render a request (JSON text) with a template (source text).
static char *
s_render (const char *source, const char *request_text, bool generation_prompt,
          char *err, size_t err_size)
{
    chat_template_t *template = chat_template_new (source, "<s>", "</s>", err, err_size);
    if (!template)
        return NULL;
    json_error_t error;
    json_t *request = json_loads (request_text, 0, &error);
    assert_non_null (request);
    chat_template_options_t options = { .add_generation_prompt = generation_prompt,
                                        .now = FIXED_NOW };
    char *prompt = chat_template_render (template, request, &options, err, err_size);
    json_decref (request);
    chat_template_destroy (&template);
    return prompt;
}

static void
s_expect_prompt (const char *source, const char *request_text, const char *expected)
{
    char err [1024] = "";
    char *prompt = s_render (source, request_text, true, err, sizeof (err));
    if (!prompt || strcmp (prompt, expected) != 0) {
        print_error ("template: %s\nrequest: %s\nexpected: %s\ngot: %s\n", source, request_text,
                     expected, prompt? prompt: err);
        free (prompt);
        fail ();
    }
    free (prompt);
}

//  --- The reference renderings ---------------------------------------------------------

static void
test_cases_json (void **state)
{
    (void) state;
    char *path = s_shared_path ("templates/cases.json");
    if (!path)
        skip ();
    json_error_t error;
    json_t *cases = json_load_file (path, 0, &error);
    free (path);
    assert_non_null (cases);
    assert_true (json_array_size (cases) > 0);

    size_t passed = 0, failed = 0;
    size_t index;
    json_t *entry;
    json_array_foreach (cases, index, entry) {
        const char *name = json_string_value (json_object_get (entry, "template"));
        const char *label = json_string_value (json_object_get (entry, "case"));
        const json_t *expected = json_object_get (entry, "expected");
        const char *expected_error = json_string_value (json_object_get (entry, "expected_error"));
        assert_non_null (name);

        char relative [512];
        snprintf (relative, sizeof (relative), "templates/%s", name);
        char *template_path = s_shared_path (relative);
        assert_non_null (template_path);
        char *source = s_read_file (template_path);
        free (template_path);

        char err [2048] = "";
        char *prompt = NULL;
        chat_template_t *template = chat_template_new (
            source, json_string_value (json_object_get (entry, "bos_token")),
            json_string_value (json_object_get (entry, "eos_token")), err, sizeof (err));
        free (source);
        if (template) {
            chat_template_options_t options = { .add_generation_prompt = true,
                                                .now = FIXED_NOW };
            prompt = chat_template_render (template, json_object_get (entry, "request"),
                                           &options, err, sizeof (err));
            chat_template_destroy (&template);
        }
        bool ok;
        if (expected)
            ok = prompt && strcmp (prompt, json_string_value (expected)) == 0;
        else
            ok = !prompt && expected_error && strstr (err, expected_error);
        if (ok)
            passed++;
        else {
            failed++;
            print_error ("not ok %s %s: %s\n", name, label,
                         prompt? "the prompt differs": err);
        }
        free (prompt);
    }
    printf ("# cases.json: %zu of %zu cases as Hugging Face renders them\n",
                   passed, passed + failed);
    json_decref (cases);
    assert_int_equal (failed, 0);
}

//  A GGUF string as a C string.
static char *
s_gguf_text (gguf_str_t text)
{
    char *copy = malloc (text.len + 1);
    assert_non_null (copy);
    memcpy (copy, text.ptr, text.len);
    copy [text.len] = 0;
    return copy;
}

static char *
s_token_text (const gguf_t *gguf, const char *id_key)
{
    uint32_t id;
    gguf_str_t text;
    assert_int_equal (gguf_get_u32 (gguf, id_key, &id), 0);
    assert_int_equal (gguf_array_str (gguf, "tokenizer.ggml.tokens", id, &text), 0);
    return s_gguf_text (text);
}

static void
test_toy_chat (void **state)
{
    (void) state;
    char *model_path = s_shared_path ("models/toy-chat.gguf");
    char *reference_path = s_shared_path ("reference/toy-chat.json");
    if (!model_path || !reference_path) {
        free (model_path);
        free (reference_path);
        skip ();
    }
    char err [1024];
    gguf_t *gguf = gguf_open (model_path, err, sizeof (err));
    assert_non_null (gguf);
    gguf_str_t text;
    assert_int_equal (gguf_get_str (gguf, "tokenizer.chat_template", &text), 0);
    char *source = s_gguf_text (text);
    char *bos = s_token_text (gguf, "tokenizer.ggml.bos_token_id");
    char *eos = s_token_text (gguf, "tokenizer.ggml.eos_token_id");
    gguf_destroy (&gguf);
    chat_template_t *template = chat_template_new (source, bos, eos, err, sizeof (err));
    assert_non_null (template);
    free (source);
    free (bos);
    free (eos);

    json_error_t error;
    json_t *cases = json_load_file (reference_path, 0, &error);
    assert_non_null (cases);
    size_t passed = 0, failed = 0;
    size_t index;
    json_t *entry;
    json_array_foreach (cases, index, entry) {
        json_t *request = json_pack ("{s:O,s:O}", "messages", json_object_get (entry, "messages"),
                                     "tools", json_object_get (entry, "tools"));
        assert_non_null (request);
        chat_template_options_t options = { .add_generation_prompt = true, .now = FIXED_NOW };
        char *prompt = chat_template_render (template, request, &options, err, sizeof (err));
        const char *expected = json_string_value (json_object_get (entry, "prompt"));
        if (prompt && expected && strcmp (prompt, expected) == 0)
            passed++;
        else {
            failed++;
            print_error ("not ok toy-chat conversation %zu: %s\n", index,
                         prompt? "the prompt differs": err);
        }
        free (prompt);
        json_decref (request);
    }
    printf ("# toy-chat.json: %zu of %zu prompts as the reference\n", passed,
                   passed + failed);
    json_decref (cases);
    chat_template_destroy (&template);
    free (model_path);
    free (reference_path);
    assert_int_equal (failed, 0);
}

//  --- How a request becomes variables -------------------------------------------------

static void
test_request_variables (void **state)
{
    (void) state;
    //  content parts are joined with newlines (only the text ones)
    s_expect_prompt ("{% for m in messages %}[{{ m.content }}]{% endfor %}",
                     "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\","
                     " \"text\": \"a\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}},"
                     " {\"type\": \"text\", \"text\": \"b\"}]}]}",
                     "[a\nb]");
    //  a tool call's arguments string becomes the object it encodes; a bad one stays
    s_expect_prompt ("{% for c in messages[0].tool_calls %}{{ c.function.arguments | tojson }}"
                     "{{ c.function.arguments is mapping }};{% endfor %}",
                     "{\"messages\": [{\"role\": \"assistant\", \"content\": null, \"tool_calls\": ["
                     "{\"id\": \"1\", \"type\": \"function\", \"function\": {\"name\": \"f\","
                     " \"arguments\": \"{\\\"city\\\": \\\"Paris\\\", \\\"n\\\": 2}\"}},"
                     "{\"id\": \"2\", \"type\": \"function\", \"function\": {\"name\": \"g\","
                     " \"arguments\": \"not json\"}}]}]}",
                     "{\"city\": \"Paris\", \"n\": 2}True;\"not json\"False;");
    //  tools only when given and not null; documents likewise
    const char *probe = "{{ tools is defined }}{{ documents is defined }}{{ bos_token }}"
                        "{{ eos_token }}{{ add_generation_prompt }}";
    s_expect_prompt (probe, "{\"messages\": []}", "FalseFalse<s></s>True");
    s_expect_prompt (probe, "{\"messages\": [], \"tools\": null, \"documents\": null}",
                     "FalseFalse<s></s>True");
    s_expect_prompt (probe, "{\"messages\": [], \"tools\": [], \"documents\": [{\"text\": \"d\"}]}",
                     "TrueTrue<s></s>True");
    //  chat_template_kwargs become variables
    s_expect_prompt ("{{ enable_thinking }}|{{ messages | length }}",
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
                     " \"chat_template_kwargs\": {\"enable_thinking\": false, \"messages\": 5}}",
                     "False|1");
    //  the request itself is not changed
    char err [256];
    chat_template_t *template = chat_template_new ("{{ messages[0].content }}", NULL, NULL,
                                                   err, sizeof (err));
    assert_non_null (template);
    json_t *request = json_pack ("{s:[{s:s,s:[{s:s,s:s}]}]}", "messages", "role", "user",
                                 "content", "type", "text", "text", "hi");
    chat_template_options_t options = { .add_generation_prompt = false, .now = FIXED_NOW };
    char *prompt = chat_template_render (template, request, &options, err, sizeof (err));
    assert_non_null (prompt);
    assert_string_equal (prompt, "hi");
    free (prompt);
    assert_true (json_is_array (json_object_get (json_array_get (json_object_get (request,
                                "messages"), 0), "content")));
    json_decref (request);
    chat_template_destroy (&template);
}

static void
test_generation_prompt (void **state)
{
    (void) state;
    char err [256];
    const char *source = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}";
    const char *request = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    char *with = s_render (source, request, true, err, sizeof (err));
    char *without = s_render (source, request, false, err, sizeof (err));
    assert_non_null (with);
    assert_non_null (without);
    assert_string_equal (with, "<user>hi<assistant>");
    assert_string_equal (without, "<user>hi");
    free (with);
    free (without);
}

static void
test_refusals (void **state)
{
    (void) state;
    char err [1024];
    //  a broken template names the line and column
    chat_template_t *template = chat_template_new ("ok\n{% if x %}", NULL, NULL, err, sizeof (err));
    assert_null (template);
    assert_non_null (strstr (err, "line 2, column 11"));
    //  requests that do not fit
    const char *source = "{{ messages | length }}";
    assert_null (s_render (source, "{\"messages\": \"hi\"}", true, err, sizeof (err)));
    assert_non_null (strstr (err, "messages must be an array"));
    assert_null (s_render (source, "{\"prompt\": \"hi\"}", true, err, sizeof (err)));
    assert_non_null (strstr (err, "messages must be an array"));
    assert_null (s_render (source, "{\"messages\": [1]}", true, err, sizeof (err)));
    assert_non_null (strstr (err, "messages[0] is not an object"));
    assert_null (s_render (source, "[1]", true, err, sizeof (err)));
    //  the template refuses
    assert_null (s_render ("{% if messages[0].role == 'system' %}"
                           "{{ raise_exception('System role not supported') }}{% endif %}",
                           "{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}",
                           true, err, sizeof (err)));
    assert_non_null (strstr (err, "TemplateError: System role not supported"));
    assert_non_null (strstr (err, "line 1, column"));
    //  bos and eos must be text
    template = chat_template_new ("x", "\xff", NULL, err, sizeof (err));
    assert_null (template);
}

static void
test_real_clock (void **state)
{
    (void) state;
    char err [256];
    chat_template_t *template = chat_template_new ("{{ strftime_now('%Y') }}", NULL, NULL,
                                                   err, sizeof (err));
    assert_non_null (template);
    json_t *request = json_pack ("{s:[]}", "messages");
    chat_template_options_t options = { .add_generation_prompt = true, .now = 0 };
    char *prompt = chat_template_render (template, request, &options, err, sizeof (err));
    assert_non_null (prompt);
    char expected [16];
    time_t now = time (NULL);
    struct tm local;
    localtime_r (&now, &local);
    strftime (expected, sizeof (expected), "%Y", &local);
    assert_string_equal (prompt, expected);
    free (prompt);
    json_decref (request);
    chat_template_destroy (&template);
}

int
main (void)
{
    setenv ("TZ", "UTC", 1);
    tzset ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_cases_json),
        cmocka_unit_test (test_toy_chat),
        cmocka_unit_test (test_request_variables),
        cmocka_unit_test (test_generation_prompt),
        cmocka_unit_test (test_refusals),
        cmocka_unit_test (test_real_clock),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
