/*  test_completions — the frontend's pure JSON functions: request parsing and
    validation (the prompt's four forms, stop, stream and stream_options, beam search
    and vLLM's output options included), the completion and its
    streamed chunks, the usage chunk, model list and error bodies.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "completions.h"

#define MODEL "stories260K"

//  Parse body; return the rc, with request and error filled.
static int
s_parse (const char *body, completion_request_t *request, api_error_t *error)
{
    return completion_request_parse (body, strlen (body), MODEL, request, error);
}

//  Assert that body is refused with this status and param ("" for none), and that the
//  message contains fragment.
static void
s_assert_refused (const char *body, int status, const char *param, const char *fragment)
{
    completion_request_t request;
    api_error_t error;
    int rc = s_parse (body, &request, &error);
    if (rc != -1 || error.status != status || strcmp (error.param, param) != 0
    ||  strstr (error.message, fragment) == NULL)
        print_error ("body %s: rc=%d status=%d param='%s' message='%s'\n",
                     body, rc, error.status, error.param, error.message);
    assert_int_equal (rc, -1);
    assert_int_equal (error.status, status);
    assert_string_equal (error.param, param);
    assert_non_null (strstr (error.message, fragment));
    assert_null (request.prompts);
    assert_null (request.options.stops);
}

//  Assert that body is refused with 400, this param and exactly this message.
static void
s_assert_refused_exactly (const char *body, const char *param, const char *message)
{
    s_assert_refused (body, 400, param, message);
    completion_request_t request;
    api_error_t error;
    assert_int_equal (s_parse (body, &request, &error), -1);
    if (strcmp (error.message, message) != 0)
        print_error ("body %s: message '%s', expected '%s'\n", body, error.message, message);
    assert_string_equal (error.message, message);
}

static void
test_parse_defaults (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":\"Once upon\"}",
                               &request, &error), 0);
    assert_int_equal (error.status, 0);
    assert_string_equal (request.prompts [0].text, "Once upon");
    assert_int_equal (request.options.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS);
    assert_true (request.options.sampling.temperature == 1.0f);
    assert_false (request.options.has_seed);
    assert_int_equal (request.options.n_stops, 0);
    assert_null (request.options.stops);
    assert_false (request.options.stream);
    assert_false (request.options.include_usage);
    assert_int_equal (request.options.n, 1);
    assert_int_equal (request.n_prompts, 1);
    assert_null (request.prompts [0].tokens);
    assert_int_equal (request.options.best_of, 0);
    assert_int_equal (generation_options_width (&request.options), 1);
    assert_false (request.options.use_beam_search);
    assert_true (request.options.length_penalty == 1.0f);
    assert_int_equal (request.options.early_stopping, PROTO_EARLY_STOPPING_FALSE);
    assert_false (request.options.include_stop_str_in_output);
    assert_false (request.options.keep_special_tokens);
    completion_request_reset (&request);
    assert_null (request.prompts);
    assert_int_equal (request.n_prompts, 0);
}

static void
test_parse_all_fields (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    const char *body =
        "{\"model\":\"" MODEL "\",\"prompt\":\"caf\\u00e9 \\ud83d\\ude00\","
        "\"max_tokens\":100,\"temperature\":0,\"seed\":-1,\"stream\":false,\"n\":1,"
        "\"top_p\":0.5,\"unknown\":{\"nested\":[1,2]},\"user\":\"x\"}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    assert_string_equal (request.prompts [0].text, "caf\xC3\xA9 \xF0\x9F\x98\x80");
    assert_int_equal (request.options.max_tokens, 100);
    assert_true (request.options.sampling.temperature == 0.0f);
    assert_true (request.options.has_seed);
    assert_true (request.options.sampling.seed == UINT64_MAX);
    completion_request_reset (&request);

    //  Nulls mean defaults; integer temperature, empty prompt are fine.
    body = "{\"model\":\"" MODEL "\",\"prompt\":\"\",\"max_tokens\":null,"
           "\"temperature\":2,\"seed\":null,\"stream\":null,\"n\":null}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    assert_string_equal (request.prompts [0].text, "");
    assert_int_equal (request.options.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS);
    assert_true (request.options.sampling.temperature == 2.0f);
    assert_false (request.options.has_seed);
    completion_request_reset (&request);

    body = "{\"model\":\"" MODEL "\",\"prompt\":\"x\",\"temperature\":0.7,"
           "\"seed\":42,\"max_tokens\":4294967295}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    assert_true (request.options.sampling.temperature > 0.69f && request.options.sampling.temperature < 0.71f);
    assert_true (request.options.sampling.seed == 42);
    assert_int_equal (request.options.max_tokens, UINT32_MAX);
    completion_request_reset (&request);
}

static void
test_parse_body_not_sized_string (void **state)
{
    (void) state;
    //  The body need not end with a NUL: only size bytes are read.
    const char *text = "{\"model\":\"" MODEL "\",\"prompt\":\"abc\"}GARBAGE";
    size_t size = strlen (text) - strlen ("GARBAGE");
    completion_request_t request;
    api_error_t error;
    assert_int_equal (completion_request_parse (text, size, MODEL, &request, &error), 0);
    assert_string_equal (request.prompts [0].text, "abc");
    completion_request_reset (&request);
}

static void
test_parse_malformed_json (void **state)
{
    (void) state;
    s_assert_refused ("{\"model\": ", 400, "", "not valid JSON");
    s_assert_refused ("{\"model\": \"x\",\n \"prompt\": tru}", 400, "", "line 2");
    s_assert_refused ("", 400, "", "not valid JSON");
    s_assert_refused ("{\"prompt\":\"a\\u0000b\",\"model\":\"" MODEL "\"}", 400, "",
                      "not valid JSON");
    s_assert_refused ("{} trailing", 400, "", "not valid JSON");
    //  Invalid UTF-8 in the body
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"\xff\"}", 400, "",
                      "not valid JSON");
}

static void
test_parse_not_object (void **state)
{
    (void) state;
    s_assert_refused ("[1,2]", 400, "", "must be a JSON object");
    s_assert_refused ("42", 400, "", "must be a JSON object");
    s_assert_refused ("\"text\"", 400, "", "must be a JSON object");
    s_assert_refused ("null", 400, "", "must be a JSON object");
}

static void
test_parse_model (void **state)
{
    (void) state;
    s_assert_refused ("{\"prompt\":\"a\"}", 400, "model", "provide a model");
    s_assert_refused ("{\"model\":null,\"prompt\":\"a\"}", 400, "model", "provide a model");
    s_assert_refused ("{\"model\":7,\"prompt\":\"a\"}", 400, "model", "must be a string");

    completion_request_t request;
    api_error_t error;
    assert_int_equal (s_parse ("{\"model\":\"gpt-4\",\"prompt\":\"a\"}", &request, &error), -1);
    assert_int_equal (error.status, 404);
    assert_string_equal (error.code, "model_not_found");
    assert_string_equal (error.param, "model");
    assert_non_null (strstr (error.message, "gpt-4"));

    //  A prefix of the served name is another model.
    assert_int_equal (s_parse ("{\"model\":\"stories\",\"prompt\":\"a\"}", &request, &error), -1);
    assert_int_equal (error.status, 404);
    //  So is the name with a NUL inside.
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\\u0000x\",\"prompt\":\"a\"}",
                               &request, &error), -1);
    assert_int_equal (error.status, 400);
}

#define S_PROMPT(prompt) "{\"model\":\"" MODEL "\",\"prompt\":" prompt "}"

//  prompt: a string, an array of strings, an array of token ids, an array of arrays of
//  token ids; an empty string is a prompt.
static void
test_parse_prompt (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    assert_int_equal (s_parse (S_PROMPT ("\"\""), &request, &error), 0);
    assert_int_equal (request.n_prompts, 1);
    assert_string_equal (request.prompts [0].text, "");
    completion_request_reset (&request);

    assert_int_equal (s_parse (S_PROMPT ("[\"a\",\"\",\"caf\\u00e9\"]"), &request, &error), 0);
    assert_int_equal (request.n_prompts, 3);
    assert_string_equal (request.prompts [0].text, "a");
    assert_string_equal (request.prompts [1].text, "");
    assert_string_equal (request.prompts [2].text, "caf\xC3\xA9");
    for (uint32_t index = 0; index < 3; index++) {
        assert_null (request.prompts [index].tokens);
        assert_int_equal (request.prompts [index].n_tokens, 0);
    }
    completion_request_reset (&request);

    //  An array of ids is one prompt.
    assert_int_equal (s_parse (S_PROMPT ("[1,0,4294967295]"), &request, &error), 0);
    assert_int_equal (request.n_prompts, 1);
    assert_null (request.prompts [0].text);
    assert_int_equal (request.prompts [0].n_tokens, 3);
    assert_int_equal (request.prompts [0].tokens [0], 1);
    assert_int_equal (request.prompts [0].tokens [1], 0);
    assert_int_equal (request.prompts [0].tokens [2], UINT32_MAX);
    completion_request_reset (&request);

    assert_int_equal (s_parse (S_PROMPT ("[[7],[8,9]]"), &request, &error), 0);
    assert_int_equal (request.n_prompts, 2);
    assert_null (request.prompts [0].text);
    assert_int_equal (request.prompts [0].n_tokens, 1);
    assert_int_equal (request.prompts [0].tokens [0], 7);
    assert_int_equal (request.prompts [1].n_tokens, 2);
    assert_int_equal (request.prompts [1].tokens [0], 8);
    assert_int_equal (request.prompts [1].tokens [1], 9);
    completion_request_reset (&request);

    s_assert_refused_exactly ("{\"model\":\"" MODEL "\"}", "prompt",
                              "you must provide a prompt");
    s_assert_refused_exactly (S_PROMPT ("null"), "prompt", "you must provide a prompt");
    const char *forms = "'prompt' must be a string, an array of strings, an array of token "
                        "ids or an array of arrays of token ids";
    s_assert_refused_exactly (S_PROMPT ("5"), "prompt", forms);
    s_assert_refused_exactly (S_PROMPT ("{}"), "prompt", forms);
    s_assert_refused_exactly (S_PROMPT ("true"), "prompt", forms);
    s_assert_refused_exactly (S_PROMPT ("[]"), "prompt",
                              "'prompt' must not be an empty array: give at least one prompt");
    s_assert_refused_exactly (S_PROMPT ("[[]]"), "prompt[0]",
                              "'prompt[0]' must not be an empty array: give at least one "
                              "token id");
    s_assert_refused_exactly (S_PROMPT ("[[1],[]]"), "prompt[1]",
                              "'prompt[1]' must not be an empty array: give at least one "
                              "token id");
    s_assert_refused_exactly (S_PROMPT ("[1,-2]"), "prompt[1]",
                              "'prompt[1]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[1,4294967296]"), "prompt[1]",
                              "'prompt[1]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[1.5]"), "prompt[0]",
                              "'prompt[0]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[1,\"a\"]"), "prompt[1]",
                              "'prompt[1]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[1,[2]]"), "prompt[1]",
                              "'prompt[1]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[[1,2],[3,\"x\"]]"), "prompt[1][1]",
                              "'prompt[1][1]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[[1,2],[3,4294967296]]"), "prompt[1][1]",
                              "'prompt[1][1]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[[\"a\"]]"), "prompt[0][0]",
                              "'prompt[0][0]' must be a token id: an integer from 0 to "
                              "4294967295");
    s_assert_refused_exactly (S_PROMPT ("[\"a\",1]"), "prompt[1]",
                              "'prompt[1]' must be a string, as 'prompt[0]' is: an array of "
                              "prompts holds strings or arrays of token ids, not both");
    s_assert_refused_exactly (S_PROMPT ("[\"a\",\"b\",[2]]"), "prompt[2]",
                              "'prompt[2]' must be a string, as 'prompt[0]' is: an array of "
                              "prompts holds strings or arrays of token ids, not both");
    s_assert_refused_exactly (S_PROMPT ("[[1],\"a\"]"), "prompt[1]",
                              "'prompt[1]' must be an array of token ids, as 'prompt[0]' is: "
                              "an array of prompts holds strings or arrays of token ids, not "
                              "both");
    s_assert_refused_exactly (S_PROMPT ("[true]"), "prompt[0]",
                              "'prompt[0]' must be a string, a token id or an array of token "
                              "ids");
    s_assert_refused_exactly (S_PROMPT ("[null,\"a\"]"), "prompt[0]",
                              "'prompt[0]' must be a string, a token id or an array of token "
                              "ids");

    //  At most COMPLETION_MAX_PROMPTS prompts, of either kind.
    for (int kind = 0; kind < 2; kind++) {
        for (int count = COMPLETION_MAX_PROMPTS; count <= COMPLETION_MAX_PROMPTS + 1; count++) {
            char body [1024];
            size_t used = (size_t) snprintf (body, sizeof body,
                                             "{\"model\":\"" MODEL "\",\"prompt\":[");
            for (int index = 0; index < count; index++)
                used += (size_t) snprintf (body + used, sizeof body - used, "%s%s",
                                           index? ",": "", kind? "[5]": "\"p\"");
            snprintf (body + used, sizeof body - used, "]}");
            if (count == COMPLETION_MAX_PROMPTS) {
                assert_int_equal (s_parse (body, &request, &error), 0);
                assert_int_equal (request.n_prompts, COMPLETION_MAX_PROMPTS);
                completion_request_reset (&request);
            }
            else
                s_assert_refused_exactly (body, "prompt",
                                          "'prompt' may hold at most 64 prompts, got 65");
        }
    }

    //  echo needs the prompts' text.
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":[\"a\",\"b\"],"
                               "\"echo\":true}", &request, &error), 0);
    assert_true (request.options.echo);
    completion_request_reset (&request);
    const char *echo = "'echo' is not supported with a prompt of token ids: send the "
                       "prompt as text, or leave 'echo' out";
    s_assert_refused_exactly ("{\"model\":\"" MODEL "\",\"prompt\":[1,2],\"echo\":true}",
                              "echo", echo);
    s_assert_refused_exactly ("{\"model\":\"" MODEL "\",\"prompt\":[[1],[2]],\"echo\":true}",
                              "echo", echo);
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":[1,2],\"echo\":false}",
                               &request, &error), 0);
    completion_request_reset (&request);
}

static void
test_parse_max_tokens (void **state)
{
    (void) state;
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":0}",
                      400, "max_tokens", "at least 1");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":-5}",
                      400, "max_tokens", "at least 1");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":4294967296}",
                      400, "max_tokens", "too large");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":1.5}",
                      400, "max_tokens", "must be an integer");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":\"10\"}",
                      400, "max_tokens", "must be an integer");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":true}",
                      400, "max_tokens", "must be an integer");
}

static void
test_parse_temperature (void **state)
{
    (void) state;
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"temperature\":-0.1}",
                      400, "temperature", "between 0 and 2");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"temperature\":2.5}",
                      400, "temperature", "between 0 and 2");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"temperature\":1e400}",
                      400, "", "not valid JSON");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"temperature\":\"hot\"}",
                      400, "temperature", "must be a number");
}

static void
test_parse_sampling (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    const char *body =
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"max_tokens\":10,\"top_p\":0.5,"
        "\"top_k\":40,\"min_p\":0.05,\"presence_penalty\":-2,\"frequency_penalty\":1.5,"
        "\"repetition_penalty\":1.1,\"min_tokens\":10,\"ignore_eos\":true,"
        "\"logit_bias\":{\"7\":-100,\"4294967295\":2.5}}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    const proto_sampling_t *sampling = &request.options.sampling;
    assert_true (sampling->top_p == 0.5f);
    assert_int_equal (sampling->top_k, 40);
    assert_true (sampling->min_p == 0.05f);
    assert_true (sampling->presence_penalty == -2.0f);
    assert_true (sampling->frequency_penalty == 1.5f);
    assert_true (sampling->repetition_penalty == 1.1f);
    assert_int_equal (sampling->min_tokens, 10);
    assert_true (request.options.ignore_eos);
    assert_int_equal (sampling->n_bias, 2);
    assert_int_equal (sampling->bias_tokens [0], 7);
    assert_true (sampling->bias_values [0] == -100.0f);
    assert_int_equal (sampling->bias_tokens [1], UINT32_MAX);
    assert_true (sampling->bias_values [1] == 2.5f);
    completion_request_reset (&request);

    //  vLLM's top_k -1 is every token, as 0 is.
    body = "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"top_k\":-1}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    assert_int_equal (request.options.sampling.top_k, 0);
    completion_request_reset (&request);

#define S_BODY(members) "{\"model\":\"" MODEL "\",\"prompt\":\"a\"," members "}"
    s_assert_refused (S_BODY ("\"top_p\":0"), 400, "top_p", "above 0");
    s_assert_refused (S_BODY ("\"top_p\":1.01"), 400, "top_p", "at most 1");
    s_assert_refused (S_BODY ("\"top_k\":-2"), 400, "top_k", "from -1");
    s_assert_refused (S_BODY ("\"top_k\":1.5"), 400, "top_k", "must be an integer");
    s_assert_refused (S_BODY ("\"min_p\":-0.1"), 400, "min_p", "between 0 and 1");
    s_assert_refused (S_BODY ("\"presence_penalty\":2.5"), 400, "presence_penalty",
                      "between -2 and 2");
    s_assert_refused (S_BODY ("\"frequency_penalty\":\"x\""), 400, "frequency_penalty",
                      "must be a number");
    s_assert_refused (S_BODY ("\"repetition_penalty\":0"), 400, "repetition_penalty",
                      "above 0");
    s_assert_refused (S_BODY ("\"min_tokens\":-1"), 400, "min_tokens", "from 0");
    s_assert_refused (S_BODY ("\"max_tokens\":4,\"min_tokens\":5"), 400, "min_tokens",
                      "above max_tokens");
    s_assert_refused (S_BODY ("\"ignore_eos\":1"), 400, "ignore_eos", "must be a boolean");
    s_assert_refused (S_BODY ("\"logit_bias\":[1]"), 400, "logit_bias", "must be an object");
    s_assert_refused (S_BODY ("\"logit_bias\":{\"x\":1}"), 400, "logit_bias",
                      "token ids");
    s_assert_refused (S_BODY ("\"logit_bias\":{\"-1\":1}"), 400, "logit_bias",
                      "token ids");
    s_assert_refused (S_BODY ("\"logit_bias\":{\"4294967296\":1}"), 400, "logit_bias",
                      "token ids");
    s_assert_refused (S_BODY ("\"logit_bias\":{\"5\":101}"), 400, "logit_bias",
                      "from -100 to 100");
    s_assert_refused (S_BODY ("\"logit_bias\":{\"5\":true}"), 400, "logit_bias",
                      "from -100 to 100");
#undef S_BODY
}

static void
test_parse_seed_n_stream (void **state)
{
    (void) state;
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"seed\":1.5}",
                      400, "seed", "must be an integer");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"seed\":\"1\"}",
                      400, "seed", "must be an integer");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"n\":0}",
                      400, "n", "must be from 1 to 128, got 0");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"n\":\"1\"}",
                      400, "n", "must be an integer");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":1}",
                      400, "stream", "must be a boolean");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":\"yes\"}",
                      400, "stream", "must be a boolean");
}

//  n: 1 .. 128; best_of: n .. 128 (OpenAI's "at least n" first), above n not streamed.
static void
test_parse_n_best_of (void **state)
{
    (void) state;
#define S_BODY(members) "{\"model\":\"" MODEL "\",\"prompt\":\"a\"," members "}"
    struct {
        const char *body;
        uint32_t n;
        uint32_t best_of;
    } accepted [] = {
        { S_BODY ("\"n\":null"), 1, 0 },
        { S_BODY ("\"n\":1,\"best_of\":1"), 1, 1 },
        { S_BODY ("\"n\":3"), 3, 0 },
        { S_BODY ("\"n\":3,\"best_of\":3,\"use_beam_search\":false"), 3, 3 },
        { S_BODY ("\"n\":3,\"best_of\":null,\"use_beam_search\":null"), 3, 0 },
        { S_BODY ("\"n\":128,\"stream\":true"), 128, 0 },
        { S_BODY ("\"best_of\":1"), 1, 1 },
        { S_BODY ("\"n\":2,\"best_of\":4"), 2, 4 },
        { S_BODY ("\"best_of\":128"), 1, 128 },
        { S_BODY ("\"n\":2,\"best_of\":2,\"stream\":true"), 2, 2 },
    };
    for (size_t index = 0; index < sizeof accepted / sizeof accepted [0]; index++) {
        completion_request_t request;
        api_error_t error;
        int rc = s_parse (accepted [index].body, &request, &error);
        if (rc != 0)
            print_error ("body %s: refused %d param='%s' message='%s'\n",
                         accepted [index].body, error.status, error.param, error.message);
        assert_int_equal (rc, 0);
        assert_int_equal (request.options.n, accepted [index].n);
        assert_int_equal (request.options.best_of, accepted [index].best_of);
        completion_request_reset (&request);
    }
    s_assert_refused (S_BODY ("\"n\":129"), 400, "n", "must be from 1 to 128, got 129");
    s_assert_refused (S_BODY ("\"n\":-1"), 400, "n", "must be from 1 to 128");
    s_assert_refused (S_BODY ("\"n\":2.5"), 400, "n", "must be an integer");
    s_assert_refused (S_BODY ("\"n\":true"), 400, "n", "must be an integer");
    s_assert_refused (S_BODY ("\"n\":3,\"best_of\":2"), 400, "best_of",
                      "best_of must be greater than or equal to n, got n=3 and best_of=2");
    s_assert_refused (S_BODY ("\"best_of\":0"), 400, "best_of",
                      "best_of must be greater than or equal to n");
    s_assert_refused (S_BODY ("\"n\":2,\"best_of\":4,\"stream\":true"), 400, "best_of",
                      "best_of above n cannot be streamed");
    s_assert_refused (S_BODY ("\"best_of\":129"), 400, "best_of",
                      "best_of may be at most 128, got 129");
    s_assert_refused (S_BODY ("\"best_of\":\"2\""), 400, "best_of", "must be an integer");
#undef S_BODY
}

//  use_beam_search, length_penalty, early_stopping, as vLLM's SamplingParams checks them:
//  the width is best_of, else n; no sampling parameter may ask for sampling; temperature
//  becomes 0; not streamed; no log-probabilities; length_penalty and early_stopping only
//  with beam search.
static void
test_parse_beam_search (void **state)
{
    (void) state;
#define S_BODY(members) "{\"model\":\"" MODEL "\",\"prompt\":\"a\"," members "}"
    struct {
        const char *body;
        bool use_beam_search;
        uint32_t width;
        float length_penalty;
        proto_early_stopping_t early_stopping;
        float temperature;
    } accepted [] = {
        { S_BODY ("\"use_beam_search\":true,\"n\":2"), true, 2, 1.0f,
          PROTO_EARLY_STOPPING_FALSE, 0.0f },
        { S_BODY ("\"use_beam_search\":true"), true, 1, 1.0f,
          PROTO_EARLY_STOPPING_FALSE, 0.0f },
        { S_BODY ("\"use_beam_search\":true,\"n\":2,\"best_of\":4,\"length_penalty\":0.5,"
                  "\"early_stopping\":\"never\""), true, 4, 0.5f,
          PROTO_EARLY_STOPPING_NEVER, 0.0f },
        { S_BODY ("\"use_beam_search\":true,\"best_of\":3,\"early_stopping\":true,"
                  "\"length_penalty\":-2"), true, 3, -2.0f,
          PROTO_EARLY_STOPPING_TRUE, 0.0f },
        { S_BODY ("\"use_beam_search\":true,\"early_stopping\":false,\"length_penalty\":1,"
                  "\"temperature\":0,\"top_p\":1,\"top_k\":-1,\"min_p\":0,\"seed\":3,"
                  "\"repetition_penalty\":1.2"), true, 1, 1.0f,
          PROTO_EARLY_STOPPING_FALSE, 0.0f },
        { S_BODY ("\"use_beam_search\":true,\"top_k\":0,\"temperature\":null,"
                  "\"early_stopping\":null,\"length_penalty\":null"), true, 1, 1.0f,
          PROTO_EARLY_STOPPING_FALSE, 0.0f },
        //  Without beam search, the defaults may be written out.
        { S_BODY ("\"use_beam_search\":false,\"n\":3,\"length_penalty\":1,"
                  "\"early_stopping\":false,\"temperature\":0.5"), false, 3, 1.0f,
          PROTO_EARLY_STOPPING_FALSE, 0.5f },
        { S_BODY ("\"use_beam_search\":null,\"n\":2,\"best_of\":5"), false, 5, 1.0f,
          PROTO_EARLY_STOPPING_FALSE, 1.0f },
    };
    for (size_t index = 0; index < sizeof accepted / sizeof accepted [0]; index++) {
        completion_request_t request;
        api_error_t error;
        int rc = s_parse (accepted [index].body, &request, &error);
        if (rc != 0)
            print_error ("body %s: refused %d param='%s' message='%s'\n",
                         accepted [index].body, error.status, error.param, error.message);
        assert_int_equal (rc, 0);
        assert_true (request.options.use_beam_search == accepted [index].use_beam_search);
        assert_int_equal (generation_options_width (&request.options),
                          accepted [index].width);
        assert_true (request.options.length_penalty == accepted [index].length_penalty);
        assert_int_equal (request.options.early_stopping, accepted [index].early_stopping);
        assert_true (request.options.sampling.temperature == accepted [index].temperature);
        completion_request_reset (&request);
    }

    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":1"), "use_beam_search",
                              "'use_beam_search' must be a boolean or null");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":\"true\""), "use_beam_search",
                              "'use_beam_search' must be a boolean or null");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"stream\":true"),
                              "use_beam_search", "beam search cannot be streamed: the best "
                              "beams are known only when all have finished");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"n\":2,\"best_of\":4,"
                                      "\"stream\":true"),
                              "use_beam_search", "beam search cannot be streamed: the best "
                              "beams are known only when all have finished");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"temperature\":0.5"),
                              "temperature", "beam search is deterministic: leave "
                              "'temperature' out or set it to 0");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"temperature\":1"),
                              "temperature", "beam search is deterministic: leave "
                              "'temperature' out or set it to 0");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"top_p\":0.9"),
                              "top_p", "beam search is deterministic: leave 'top_p' out or "
                              "set it to 1");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"top_k\":5"),
                              "top_k", "beam search is deterministic: leave 'top_k' out or "
                              "set it to -1");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"min_p\":0.1"),
                              "min_p", "beam search is deterministic: leave 'min_p' out or "
                              "set it to 0");
    //  The ranges are checked first, as without beam search.
    s_assert_refused (S_BODY ("\"use_beam_search\":true,\"temperature\":3"), 400,
                      "temperature", "between 0 and 2");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"logprobs\":1"),
                              "logprobs", "log-probabilities are not kept for beam search yet");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"logprobs\":0"),
                              "logprobs", "log-probabilities are not kept for beam search yet");
    s_assert_refused (S_BODY ("\"use_beam_search\":true,\"n\":3,\"best_of\":2"), 400,
                      "best_of", "best_of must be greater than or equal to n");
    s_assert_refused (S_BODY ("\"use_beam_search\":true,\"best_of\":129"), 400,
                      "best_of", "best_of may be at most 128");
    s_assert_refused_exactly (S_BODY ("\"length_penalty\":2"), "length_penalty",
                              "'length_penalty' is only used by beam search: leave it out "
                              "or set it to 1, or set 'use_beam_search' to true");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":false,\"length_penalty\":0"),
                              "length_penalty",
                              "'length_penalty' is only used by beam search: leave it out "
                              "or set it to 1, or set 'use_beam_search' to true");
    s_assert_refused_exactly (S_BODY ("\"early_stopping\":true"), "early_stopping",
                              "'early_stopping' is only used by beam search: leave it out "
                              "or set it to false, or set 'use_beam_search' to true");
    s_assert_refused_exactly (S_BODY ("\"early_stopping\":\"never\""), "early_stopping",
                              "'early_stopping' is only used by beam search: leave it out "
                              "or set it to false, or set 'use_beam_search' to true");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"length_penalty\":\"x\""),
                              "length_penalty", "'length_penalty' must be a finite number or "
                              "null");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"length_penalty\":1e300"),
                              "length_penalty", "'length_penalty' must be a finite number or "
                              "null");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"early_stopping\":\"always\""),
                              "early_stopping",
                              "'early_stopping' must be true, false or \"never\"");
    s_assert_refused_exactly (S_BODY ("\"use_beam_search\":true,\"early_stopping\":1"),
                              "early_stopping",
                              "'early_stopping' must be true, false or \"never\"");
#undef S_BODY
}

//  include_stop_str_in_output (default false) and skip_special_tokens (default true:
//  keep_special_tokens false), vLLM's.
static void
test_parse_output_options (void **state)
{
    (void) state;
#define S_BODY(members) "{\"model\":\"" MODEL "\",\"prompt\":\"a\"," members "}"
    struct {
        const char *body;
        bool include_stop_str_in_output;
        bool keep_special_tokens;
    } accepted [] = {
        { S_BODY ("\"include_stop_str_in_output\":true"), true, false },
        { S_BODY ("\"skip_special_tokens\":false"), false, true },
        { S_BODY ("\"skip_special_tokens\":true,\"include_stop_str_in_output\":false"),
          false, false },
        { S_BODY ("\"skip_special_tokens\":null,\"include_stop_str_in_output\":null"),
          false, false },
        { S_BODY ("\"skip_special_tokens\":false,\"include_stop_str_in_output\":true,"
                  "\"stream\":true"), true, true },
    };
    for (size_t index = 0; index < sizeof accepted / sizeof accepted [0]; index++) {
        completion_request_t request;
        api_error_t error;
        assert_int_equal (s_parse (accepted [index].body, &request, &error), 0);
        assert_true (request.options.include_stop_str_in_output
                     == accepted [index].include_stop_str_in_output);
        assert_true (request.options.keep_special_tokens
                     == accepted [index].keep_special_tokens);
        completion_request_reset (&request);
    }
    s_assert_refused_exactly (S_BODY ("\"include_stop_str_in_output\":\"yes\""),
                              "include_stop_str_in_output",
                              "'include_stop_str_in_output' must be a boolean or null");
    s_assert_refused_exactly (S_BODY ("\"skip_special_tokens\":0"), "skip_special_tokens",
                              "'skip_special_tokens' must be a boolean or null");
#undef S_BODY
}

static void
test_parse_stop (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":\"\\n\"}",
                               &request, &error), 0);
    assert_int_equal (request.options.n_stops, 1);
    assert_string_equal (request.options.stops [0], "\n");
    completion_request_reset (&request);
    assert_null (request.options.stops);
    assert_int_equal (request.options.n_stops, 0);

    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":\"a\","
                               "\"stop\":[\"END\",\"caf\\u00e9\",\"x y\",\"\\\"\"]}",
                               &request, &error), 0);
    assert_int_equal (request.options.n_stops, 4);
    assert_string_equal (request.options.stops [0], "END");
    assert_string_equal (request.options.stops [1], "caf\xC3\xA9");
    assert_string_equal (request.options.stops [2], "x y");
    assert_string_equal (request.options.stops [3], "\"");
    completion_request_reset (&request);

    //  Null, an empty array, empty strings: no stop strings.
    const char *none [] = {
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":null}",
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":[]}",
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":\"\"}",
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":[\"\",\"\"]}",
    };
    for (size_t index = 0; index < sizeof none / sizeof none [0]; index++) {
        assert_int_equal (s_parse (none [index], &request, &error), 0);
        assert_int_equal (request.options.n_stops, 0);
        completion_request_reset (&request);
    }
    //  An empty string among others is left out.
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":\"a\","
                               "\"stop\":[\"\",\"b\"]}", &request, &error), 0);
    assert_int_equal (request.options.n_stops, 1);
    assert_string_equal (request.options.stops [0], "b");
    completion_request_reset (&request);

    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\","
                      "\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}",
                      400, "stop", "at most 4");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":5}",
                      400, "stop", "must be a string");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":[\"a\",1]}",
                      400, "stop", "array of strings");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stop\":{}}",
                      400, "stop", "must be a string");
}

static void
test_parse_stream (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true}",
                               &request, &error), 0);
    assert_true (request.options.stream);
    assert_false (request.options.include_usage);
    completion_request_reset (&request);

    assert_int_equal (s_parse ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true,"
                               "\"stream_options\":{\"include_usage\":true,\"other\":1}}",
                               &request, &error), 0);
    assert_true (request.options.stream);
    assert_true (request.options.include_usage);
    completion_request_reset (&request);

    const char *fine [] = {
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true,"
        "\"stream_options\":{\"include_usage\":false}}",
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true,\"stream_options\":{}}",
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true,"
        "\"stream_options\":{\"include_usage\":null}}",
        "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":false,\"stream_options\":null}",
    };
    for (size_t index = 0; index < sizeof fine / sizeof fine [0]; index++) {
        assert_int_equal (s_parse (fine [index], &request, &error), 0);
        assert_false (request.options.include_usage);
        completion_request_reset (&request);
    }
    //  stream_options only with stream true, as OpenAI says.
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\","
                      "\"stream_options\":{\"include_usage\":true}}",
                      400, "stream_options", "only allowed when 'stream' is enabled");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":false,"
                      "\"stream_options\":{}}",
                      400, "stream_options", "only allowed when 'stream' is enabled");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true,"
                      "\"stream_options\":true}",
                      400, "stream_options", "must be an object");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":\"yes\"}}",
                      400, "stream_options.include_usage", "must be a boolean");
}

static void
test_completion_id (void **state)
{
    (void) state;
    char id [COMPLETION_ID_SIZE];
    completion_id_format (0x00a1b2c3d4e5f601ull, id);
    assert_string_equal (id, "cmpl-00a1b2c3d4e5f601");
    completion_id_format (UINT64_MAX, id);
    assert_string_equal (id, "cmpl-ffffffffffffffff");
    assert_int_equal (strlen (id), COMPLETION_ID_SIZE - 1);
}

static void
test_completion_response (void **state)
{
    (void) state;
    const char *text = "Once upon a \"time\"\n";
    completion_choice_t one = { text, strlen (text), "length", NULL, 0 };
    char *body = completion_response_json ("cmpl-0000000000000001", 1767322000, MODEL,
                                           &one, 1, 7, 16);
    assert_non_null (body);
    json_error_t json_error;
    json_t *root = json_loads (body, 0, &json_error);
    assert_non_null (root);
    assert_string_equal (json_string_value (json_object_get (root, "id")),
                         "cmpl-0000000000000001");
    assert_string_equal (json_string_value (json_object_get (root, "object")),
                         "text_completion");
    assert_int_equal (json_integer_value (json_object_get (root, "created")), 1767322000);
    assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
    json_t *choices = json_object_get (root, "choices");
    assert_true (json_is_array (choices));
    assert_int_equal (json_array_size (choices), 1);
    json_t *choice = json_array_get (choices, 0);
    assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
    assert_string_equal (json_string_value (json_object_get (choice, "text")), text);
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                         "length");
    json_t *usage = json_object_get (root, "usage");
    assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")), 7);
    assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")), 16);
    assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")), 23);
    json_decref (root);
    free (body);
}

//  Parse a chunk and check what every completion chunk has.
static json_t *
s_check_completion_chunk (const char *body, const char *text, const char *finish_reason,
                          bool usage_null)
{
    assert_non_null (body);
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    assert_string_equal (json_string_value (json_object_get (root, "id")),
                         "cmpl-0000000000000003");
    assert_string_equal (json_string_value (json_object_get (root, "object")),
                         "text_completion");
    assert_int_equal (json_integer_value (json_object_get (root, "created")), 1767322000);
    assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
    json_t *choices = json_object_get (root, "choices");
    assert_int_equal (json_array_size (choices), 1);
    json_t *choice = json_array_get (choices, 0);
    assert_int_equal (json_object_size (choice), 4);
    assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
    assert_string_equal (json_string_value (json_object_get (choice, "text")), text);
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    if (finish_reason)
        assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                             finish_reason);
    else
        assert_true (json_is_null (json_object_get (choice, "finish_reason")));
    if (usage_null) {
        assert_non_null (json_object_get (root, "usage"));
        assert_true (json_is_null (json_object_get (root, "usage")));
    }
    else
        assert_null (json_object_get (root, "usage"));
    return root;
}

static void
test_completion_chunks (void **state)
{
    (void) state;
    char *body = completion_chunk_json ("cmpl-0000000000000003", 1767322000, MODEL, 0,
                                        "Once", 4, NULL, false, NULL, 0);
    json_decref (s_check_completion_chunk (body, "Once", NULL, false));
    free (body);

    body = completion_chunk_json ("cmpl-0000000000000003", 1767322000, MODEL, 0,
                                  "ab\xE2\x82", 4, NULL, true, NULL, 0);
    json_decref (s_check_completion_chunk (body, "ab\xEF\xBF\xBD", NULL, true));
    free (body);

    body = completion_chunk_json ("cmpl-0000000000000003", 1767322000, MODEL, 0,
                                  "", 0, "length", true, NULL, 0);
    json_decref (s_check_completion_chunk (body, "", "length", true));
    free (body);

    //  One line of JSON: an SSE event cannot hold a newline.
    body = completion_chunk_json ("cmpl-0000000000000003", 1767322000, MODEL, 0,
                                  "a\nb\n", 4, "stop", false, NULL, 0);
    assert_null (strchr (body, '\n'));
    free (body);
}

//  Three choices: each its own text and finish reason, in index order; one usage.
static void
test_completion_response_choices (void **state)
{
    (void) state;
    completion_choice_t choices [3] = {
        { "Once", 4, "stop", NULL, 0 },
        { "Upon a\ntime", 11, "length", NULL, 0 },
        { NULL, 0, "stop", NULL, 0 },
    };
    char *body = completion_response_json ("cmpl-0000000000000005", 1767322000, MODEL,
                                           choices, 3, 4, 9);
    assert_non_null (body);
    assert_string_equal (body,
        "{\"id\":\"cmpl-0000000000000005\",\"object\":\"text_completion\","
        "\"created\":1767322000,\"model\":\"" MODEL "\",\"choices\":["
        "{\"index\":0,\"text\":\"Once\",\"logprobs\":null,\"finish_reason\":\"stop\"},"
        "{\"index\":1,\"text\":\"Upon a\\ntime\",\"logprobs\":null,"
        "\"finish_reason\":\"length\"},"
        "{\"index\":2,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":9,\"total_tokens\":13}}");
    free (body);

    //  A chunk names its choice.
    body = completion_chunk_json ("cmpl-0000000000000005", 1767322000, MODEL, 2,
                                  " upon", 5, NULL, true, NULL, 0);
    assert_non_null (body);
    assert_string_equal (body,
        "{\"id\":\"cmpl-0000000000000005\",\"object\":\"text_completion\","
        "\"created\":1767322000,\"model\":\"" MODEL "\",\"choices\":["
        "{\"index\":2,\"text\":\" upon\",\"logprobs\":null,\"finish_reason\":null}],"
        "\"usage\":null}");
    free (body);
    body = completion_chunk_json ("cmpl-0000000000000005", 1767322000, MODEL, 127,
                                  "", 0, "length", false, NULL, 0);
    assert_non_null (body);
    assert_string_equal (body,
        "{\"id\":\"cmpl-0000000000000005\",\"object\":\"text_completion\","
        "\"created\":1767322000,\"model\":\"" MODEL "\",\"choices\":["
        "{\"index\":127,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\"}]}");
    free (body);
}

static void
test_usage_chunk (void **state)
{
    (void) state;
    const char *objects [] = { "text_completion", "chat.completion.chunk" };
    for (size_t index = 0; index < 2; index++) {
        char *body = usage_chunk_json ("cmpl-0000000000000004", objects [index], 5, MODEL,
                                       9, 3);
        assert_non_null (body);
        json_t *root = json_loads (body, 0, NULL);
        assert_non_null (root);
        assert_string_equal (json_string_value (json_object_get (root, "id")),
                             "cmpl-0000000000000004");
        assert_string_equal (json_string_value (json_object_get (root, "object")),
                             objects [index]);
        assert_int_equal (json_integer_value (json_object_get (root, "created")), 5);
        assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
        json_t *choices = json_object_get (root, "choices");
        assert_true (json_is_array (choices));
        assert_int_equal (json_array_size (choices), 0);
        json_t *usage = json_object_get (root, "usage");
        assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")), 9);
        assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")),
                          3);
        assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")), 12);
        json_decref (root);
        free (body);
    }
}

static void
test_completion_response_bad_utf8 (void **state)
{
    (void) state;
    //  A byte-level model can end on half a character: the body must stay valid JSON.
    const char text [] = "ab\xF0\x9F\x98";
    completion_choice_t one = { text, sizeof text - 1, "stop", NULL, 0 };
    char *body = completion_response_json ("cmpl-0000000000000002", 0, MODEL,
                                           &one, 1, 1, 1);
    assert_non_null (body);
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    json_t *choice = json_array_get (json_object_get (root, "choices"), 0);
    assert_string_equal (json_string_value (json_object_get (choice, "text")),
                         "ab\xEF\xBF\xBD");
    assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                         "stop");
    json_decref (root);
    free (body);
}

static void
test_utf8_sanitize (void **state)
{
    (void) state;
    struct {
        const char *input;
        size_t size;
        const char *output;
    } cases [] = {
        { "plain", 5, "plain" },
        { "caf\xC3\xA9", 5, "caf\xC3\xA9" },
        { "\xE2\x82\xAC", 3, "\xE2\x82\xAC" },                  //  euro sign
        { "\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80" },          //  emoji
        { "a\x00" "b", 3, "a\xEF\xBF\xBD" "b" },                //  NUL
        { "\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD" },          //  overlong
        { "\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },  //  surrogate
        { "\xE2\x82", 2, "\xEF\xBF\xBD" },                      //  truncated, one U+FFFD
        { "\xE2\x82x", 3, "\xEF\xBF\xBDx" },
        { "\x80", 1, "\xEF\xBF\xBD" },
        { "\xF4\x90\x80\x80", 4,
          "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" }, //  above U+10FFFF
        { "", 0, "" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        size_t size;
        char *clean = utf8_sanitize (cases [i].input, cases [i].size, &size);
        assert_non_null (clean);
        assert_string_equal (clean, cases [i].output);
        assert_int_equal (size, strlen (cases [i].output));
        free (clean);
    }
}

static void
test_models_list (void **state)
{
    (void) state;
    char *body = models_list_json (MODEL, 1767322000, 512);
    assert_non_null (body);
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    assert_string_equal (json_string_value (json_object_get (root, "object")), "list");
    json_t *data = json_object_get (root, "data");
    assert_int_equal (json_array_size (data), 1);
    json_t *model = json_array_get (data, 0);
    assert_string_equal (json_string_value (json_object_get (model, "id")), MODEL);
    assert_string_equal (json_string_value (json_object_get (model, "object")), "model");
    assert_int_equal (json_integer_value (json_object_get (model, "created")), 1767322000);
    assert_string_equal (json_string_value (json_object_get (model, "owned_by")), "zllm");
    assert_int_equal (json_integer_value (json_object_get (model, "max_model_len")), 512);
    json_decref (root);
    free (body);
}

//  Check an error body's fields; param and code NULL mean JSON null.
static void
s_assert_error_body (const char *body, const char *message, const char *type,
                     const char *param, const char *code)
{
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    assert_int_equal (json_object_size (root), 1);
    json_t *error = json_object_get (root, "error");
    assert_true (json_is_object (error));
    assert_string_equal (json_string_value (json_object_get (error, "message")), message);
    assert_string_equal (json_string_value (json_object_get (error, "type")), type);
    if (param)
        assert_string_equal (json_string_value (json_object_get (error, "param")), param);
    else
        assert_true (json_is_null (json_object_get (error, "param")));
    if (code)
        assert_string_equal (json_string_value (json_object_get (error, "code")), code);
    else
        assert_true (json_is_null (json_object_get (error, "code")));
    json_decref (root);
}

static void
test_error_bodies (void **state)
{
    (void) state;
    char *body = api_error_json (400, "bad \"thing\"", "prompt", NULL);
    assert_non_null (body);
    s_assert_error_body (body, "bad \"thing\"", "invalid_request_error", "prompt", NULL);
    free (body);

    body = api_error_json (503, "no worker is available", NULL, "");
    s_assert_error_body (body, "no worker is available", "server_error", NULL, NULL);
    free (body);

    body = api_error_json (500, NULL, NULL, NULL);
    s_assert_error_body (body, "", "server_error", NULL, NULL);
    free (body);

    //  A message cut inside a character stays valid JSON.
    body = api_error_json (400, "cut \xE2\x82", NULL, NULL);
    s_assert_error_body (body, "cut \xEF\xBF\xBD", "invalid_request_error", NULL, NULL);
    free (body);

    api_error_t error;
    completion_request_t request;
    assert_int_equal (s_parse ("{\"model\":\"other\",\"prompt\":\"a\"}", &request, &error), -1);
    body = api_error_to_json (&error);
    s_assert_error_body (body, error.message, "invalid_request_error", "model",
                         "model_not_found");
    free (body);

    assert_string_equal (api_error_type (401), "authentication_error");
    assert_string_equal (api_error_type (404), "invalid_request_error");
    assert_string_equal (api_error_type (413), "invalid_request_error");
    assert_string_equal (api_error_type (502), "server_error");
    assert_string_equal (http_status_reason (405), "Method Not Allowed");
    assert_string_equal (http_status_reason (299), "Error");
}

static void
test_api_error_set_truncates (void **state)
{
    (void) state;
    api_error_t error;
    char long_param [100];
    memset (long_param, 'p', sizeof long_param - 1);
    long_param [sizeof long_param - 1] = 0;
    api_error_set (&error, 400, long_param, NULL, "%0600d", 1);
    assert_int_equal (error.status, 400);
    assert_int_equal (strlen (error.param), sizeof error.param - 1);
    assert_int_equal (strlen (error.message), sizeof error.message - 1);
    assert_string_equal (error.code, "");
}

//  echo (a boolean) and suffix (refused unless empty or null).
static void
test_parse_echo_suffix (void **state)
{
    (void) state;
    completion_request_t request;
    api_error_t error;
    const char *body = "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"echo\":true,"
                       "\"suffix\":\"\"}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    assert_true (request.options.echo);
    completion_request_reset (&request);
    body = "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"suffix\":null}";
    assert_int_equal (s_parse (body, &request, &error), 0);
    assert_false (request.options.echo);
    completion_request_reset (&request);
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"echo\":1}", 400, "echo",
                      "must be a boolean");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"suffix\":\"b\"}", 400,
                      "suffix", "'suffix' is not supported");
    s_assert_refused ("{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"suffix\":2}", 400,
                      "suffix", "must be a string");
}

//  The tokenizer's log-probability entries in the completions shape, offsets counted
//  from text_offset; with a choice that has none, logprobs stays null.
static void
test_completion_logprobs (void **state)
{
    (void) state;
    const char *entries =
        "[{\"token\":\",\",\"logprob\":-0.5,\"bytes\":[44],\"top_logprobs\":["
        "{\"token\":\",\",\"logprob\":-0.5,\"bytes\":[44]},"
        "{\"token\":\" the\",\"logprob\":-1.5,\"bytes\":[32,116,104,101]}]},"
        "{\"token\":\" there\",\"logprob\":-0.25,\"bytes\":[32],\"top_logprobs\":[]}]";
    completion_choice_t choices [2] = {
        { "Hi, there", 9, "length", entries, 2 },
        { "x", 1, "stop", NULL, 0 },
    };
    char *body = completion_response_json ("cmpl-0000000000000007", 5, MODEL, choices, 2,
                                           3, 3);
    assert_string_equal (body,
        "{\"id\":\"cmpl-0000000000000007\",\"object\":\"text_completion\",\"created\":5,"
        "\"model\":\"" MODEL "\",\"choices\":["
        "{\"index\":0,\"text\":\"Hi, there\",\"logprobs\":{\"tokens\":[\",\",\" there\"],"
        "\"token_logprobs\":[-0.5,-0.25],\"top_logprobs\":[{\",\":-0.5,\" the\":-1.5},{}],"
        "\"text_offset\":[2,3]},\"finish_reason\":\"length\"},"
        "{\"index\":1,\"text\":\"x\",\"logprobs\":null,\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":3,\"total_tokens\":6}}");
    free (body);
    //  Entries that are not an array of such objects: no body (a 500 upstream).
    choices [0].logprobs = "{\"not\":\"a list\"}";
    assert_null (completion_response_json ("cmpl-0000000000000007", 5, MODEL, choices, 1,
                                           3, 3));
}

//  /tokenize and /detokenize bodies, and their answers.
static void
test_tokenize_requests (void **state)
{
    (void) state;
    tokenize_request_t request;
    api_error_t error;
    const char *body = "{\"prompt\":\"caf\\u00e9\"}";
    assert_int_equal (tokenize_request_parse (body, strlen (body), MODEL, false, &request,
                                              &error), 0);
    assert_string_equal (request.prompt, "caf\xC3\xA9");
    assert_true (request.add_special_tokens);
    tokenize_request_reset (&request);
    body = "{\"model\":\"" MODEL "\",\"prompt\":\"\",\"add_special_tokens\":false}";
    assert_int_equal (tokenize_request_parse (body, strlen (body), MODEL, false, &request,
                                              &error), 0);
    assert_false (request.add_special_tokens);
    tokenize_request_reset (&request);
    body = "{\"tokens\":[1,4294967295,0]}";
    assert_int_equal (tokenize_request_parse (body, strlen (body), MODEL, true, &request,
                                              &error), 0);
    assert_int_equal (request.n_tokens, 3);
    assert_int_equal (request.tokens [1], UINT32_MAX);
    tokenize_request_reset (&request);

    struct {
        const char *body;
        bool detokenize;
        int status;
        const char *param;
    } refused [] = {
        { "{\"prompt\":1}", false, 400, "prompt" },
        { "{}", false, 400, "prompt" },
        { "{\"messages\":[]}", false, 400, "messages" },
        { "{\"prompt\":\"a\",\"add_special_tokens\":1}", false, 400, "add_special_tokens" },
        { "{\"model\":\"other\",\"prompt\":\"a\"}", false, 404, "model" },
        { "{\"tokens\":\"1\"}", true, 400, "tokens" },
        { "{\"tokens\":[-1]}", true, 400, "tokens" },
        { "{\"tokens\":[4294967296]}", true, 400, "tokens" },
        { "[1]", true, 400, "" },
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused [0]; i++) {
        int rc = tokenize_request_parse (refused [i].body, strlen (refused [i].body), MODEL,
                                         refused [i].detokenize, &request, &error);
        assert_int_equal (rc, -1);
        assert_int_equal (error.status, refused [i].status);
        assert_string_equal (error.param, refused [i].param);
        assert_null (request.prompt);
        assert_null (request.tokens);
    }

    uint32_t ids [] = { 1, 403, 407 };
    char *json = tokenize_response_json (ids, 3, 2048);
    assert_string_equal (json, "{\"count\":3,\"max_model_len\":2048,\"tokens\":[1,403,407]}");
    free (json);
    json = tokenize_response_json (NULL, 0, 16);
    assert_string_equal (json, "{\"count\":0,\"max_model_len\":16,\"tokens\":[]}");
    free (json);
    json = detokenize_response_json (" Once \xff", 7);
    assert_string_equal (json, "{\"prompt\":\" Once \xEF\xBF\xBD\"}");
    free (json);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_parse_defaults),
        cmocka_unit_test (test_parse_all_fields),
        cmocka_unit_test (test_parse_body_not_sized_string),
        cmocka_unit_test (test_parse_malformed_json),
        cmocka_unit_test (test_parse_not_object),
        cmocka_unit_test (test_parse_model),
        cmocka_unit_test (test_parse_prompt),
        cmocka_unit_test (test_parse_max_tokens),
        cmocka_unit_test (test_parse_temperature),
        cmocka_unit_test (test_parse_sampling),
        cmocka_unit_test (test_tokenize_requests),
        cmocka_unit_test (test_parse_echo_suffix),
        cmocka_unit_test (test_completion_logprobs),
        cmocka_unit_test (test_parse_seed_n_stream),
        cmocka_unit_test (test_parse_n_best_of),
        cmocka_unit_test (test_parse_beam_search),
        cmocka_unit_test (test_parse_output_options),
        cmocka_unit_test (test_parse_stop),
        cmocka_unit_test (test_parse_stream),
        cmocka_unit_test (test_completion_id),
        cmocka_unit_test (test_completion_response),
        cmocka_unit_test (test_completion_response_bad_utf8),
        cmocka_unit_test (test_completion_chunks),
        cmocka_unit_test (test_completion_response_choices),
        cmocka_unit_test (test_usage_chunk),
        cmocka_unit_test (test_utf8_sanitize),
        cmocka_unit_test (test_models_list),
        cmocka_unit_test (test_error_bodies),
        cmocka_unit_test (test_api_error_set_truncates),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
