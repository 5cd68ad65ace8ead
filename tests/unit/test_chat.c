/*  test_chat — the frontend's chat JSON: validation of /v1/chat/completions bodies, the
    chat passed on to the tokenizer, merged tool calls, the chat.completion body and the
    chat.completion.chunk bodies of a stream.

    Bodies are written with single quotes for readability; s_json turns them into
    double quotes (no test text needs an apostrophe).
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

#define MODEL "toy-chat"
#define USER_HI "{'role':'user','content':'Hi'}"
#define TOOL "{'type':'function','function':{'name':'get_weather','description':'Weather'," \
             "'parameters':{'type':'object','properties':{'location':{'type':'string'}}}}}"

//  text with every ' turned into ", in a static buffer.
static const char *
s_json (const char *text)
{
    static char buffer [8192];
    size_t size = strlen (text);
    assert_true (size < sizeof buffer);
    for (size_t at = 0; at <= size; at++)
        buffer [at] = text [at] == '\'' ? '"': text [at];
    return buffer;
}

//  A body with the model and these members ("'messages':[...],...").
static const char *
s_body (const char *members)
{
    static char buffer [8192];
    snprintf (buffer, sizeof buffer, "{'model':'" MODEL "',%s}", members);
    return s_json (buffer);
}

static int
s_parse (const char *body, bool enable_auto, chat_request_t *request, api_error_t *error)
{
    return chat_request_parse (body, strlen (body), MODEL, enable_auto, request, error);
}

//  Assert that members are refused with this status and param ("" for none), and that
//  the message contains fragment.
static void
s_assert_refused_with (const char *members, bool enable_auto, int status, const char *param,
                       const char *fragment)
{
    chat_request_t request;
    api_error_t error;
    const char *body = s_body (members);
    int rc = s_parse (body, enable_auto, &request, &error);
    if (rc != -1 || error.status != status || strcmp (error.param, param) != 0
    ||  strstr (error.message, fragment) == NULL)
        print_error ("body %s: rc=%d status=%d param='%s' message='%s'\n",
                     body, rc, error.status, error.param, error.message);
    assert_int_equal (rc, -1);
    assert_int_equal (error.status, status);
    assert_string_equal (error.param, param);
    assert_non_null (strstr (error.message, fragment));
    assert_null (request.chat);
    assert_null (request.options.stops);
}

static void
s_assert_refused (const char *members, const char *param, const char *fragment)
{
    s_assert_refused_with (members, true, 400, param, fragment);
}

//  Parse members (accepted) and return the chat JSON the tokenizer would get.
static json_t *
s_accepted (const char *members, bool enable_auto, chat_request_t *request)
{
    api_error_t error;
    const char *body = s_body (members);
    int rc = s_parse (body, enable_auto, request, &error);
    if (rc != 0)
        print_error ("body %s: refused %d param='%s' message='%s'\n",
                     body, error.status, error.param, error.message);
    assert_int_equal (rc, 0);
    assert_int_equal (error.status, 0);
    assert_non_null (request->chat);
    json_t *chat = json_loads (request->chat, 0, NULL);
    assert_non_null (chat);
    return chat;
}


//  --------------------------------------------------------------------------
//  Requests

static void
test_chat_template_extensions (void **state)
{
    (void) state;
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI ",{'role':'assistant','content':'Par'}],"
                               "'continue_final_message':true,'add_generation_prompt':false,"
                               "'chat_template_kwargs':{'enable_thinking':false}",
                               false, &request);
    assert_true (json_is_false (json_object_get (chat, "add_generation_prompt")));
    assert_true (json_is_true (json_object_get (chat, "continue_final_message")));
    assert_true (json_is_false (json_object_get (json_object_get (chat, "chat_template_kwargs"),
                                                 "enable_thinking")));
    json_decref (chat);
    chat_request_reset (&request);

    s_assert_refused ("'messages':[" USER_HI "],'continue_final_message':true,"
                      "'add_generation_prompt':false", "continue_final_message",
                      "last message");
    s_assert_refused ("'messages':[" USER_HI ",{'role':'assistant','content':'P'}],"
                      "'continue_final_message':true", "continue_final_message",
                      "Cannot set both");
    s_assert_refused ("'messages':[" USER_HI ",{'role':'assistant','content':'P'}],"
                      "'continue_final_message':true,'add_generation_prompt':true",
                      "continue_final_message", "Cannot set both");
    s_assert_refused ("'messages':[" USER_HI "],'add_generation_prompt':1",
                      "add_generation_prompt", "boolean");
    s_assert_refused ("'messages':[" USER_HI "],'chat_template_kwargs':[]",
                      "chat_template_kwargs", "object");
}

static void
test_parse_minimal (void **state)
{
    (void) state;
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI "]", false, &request);
    //  Compact JSON: messages, tool_choice and the generation prompt flags.
    assert_string_equal (request.chat,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"tool_choice\":\"none\","
        "\"add_generation_prompt\":true,\"continue_final_message\":false}");
    assert_int_equal (json_object_size (chat), 4);
    assert_false (request.has_tools);
    assert_false (request.auto_tool_choice);
    assert_int_equal (request.options.max_tokens, 0);
    assert_true (request.options.sampling.temperature == 1.0f);
    assert_false (request.options.has_seed);
    assert_int_equal (request.options.n_stops, 0);
    assert_false (request.options.stream);
    assert_false (request.options.include_usage);
    json_decref (chat);
    chat_request_reset (&request);
    assert_null (request.chat);
}

static void
test_parse_all_fields (void **state)
{
    (void) state;
    chat_request_t request;
    json_t *chat = s_accepted (
        "'messages':[{'role':'system','content':'Be brief.'}," USER_HI "],"
        "'max_completion_tokens':50,'temperature':0.5,'seed':3,'stop':['a','b'],"
        "'stream':true,'stream_options':{'include_usage':true},'n':1,"
        "'tools':[" TOOL "],'tool_choice':'auto','parallel_tool_calls':false,"
        "'response_format':{'type':'text'},'logprobs':false,'top_logprobs':null,"
        "'user':'u-1','top_p':0.9,'frequency_penalty':0,'metadata':{'x':1}",
        true, &request);
    assert_int_equal (request.options.max_tokens, 50);
    assert_true (request.options.sampling.temperature == 0.5f);
    assert_true (request.options.has_seed);
    assert_true (request.options.sampling.seed == 3);
    assert_int_equal (request.options.n_stops, 2);
    assert_string_equal (request.options.stops [0], "a");
    assert_string_equal (request.options.stops [1], "b");
    assert_true (request.options.stream);
    assert_true (request.options.include_usage);
    assert_true (request.has_tools);
    assert_true (request.auto_tool_choice);

    //  The tokenizer gets messages, tools, tool_choice and the generation prompt flags.
    assert_int_equal (json_object_size (chat), 5);
    json_t *messages = json_object_get (chat, "messages");
    assert_int_equal (json_array_size (messages), 2);
    assert_string_equal (json_string_value (json_object_get (json_array_get (messages, 0),
                                                             "content")), "Be brief.");
    json_t *tools = json_object_get (chat, "tools");
    assert_int_equal (json_array_size (tools), 1);
    json_t *expected_tool = json_loads (s_json (TOOL), 0, NULL);
    assert_true (json_equal (json_array_get (tools, 0), expected_tool));
    json_decref (expected_tool);
    assert_string_equal (json_string_value (json_object_get (chat, "tool_choice")), "auto");
    json_decref (chat);
    chat_request_reset (&request);
    assert_null (request.options.stops);
}

static void
test_parse_max_tokens (void **state)
{
    (void) state;
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI "],'max_tokens':7", false, &request);
    assert_int_equal (request.options.max_tokens, 7);
    json_decref (chat);
    chat_request_reset (&request);

    //  Both: max_completion_tokens wins.
    chat = s_accepted ("'messages':[" USER_HI "],'max_tokens':7,'max_completion_tokens':9",
                       false, &request);
    assert_int_equal (request.options.max_tokens, 9);
    json_decref (chat);
    chat_request_reset (&request);

    chat = s_accepted ("'messages':[" USER_HI "],'max_tokens':null,"
                       "'max_completion_tokens':null", false, &request);
    assert_int_equal (request.options.max_tokens, 0);
    json_decref (chat);
    chat_request_reset (&request);

    s_assert_refused ("'messages':[" USER_HI "],'max_completion_tokens':0",
                      "max_completion_tokens", "at least 1");
    s_assert_refused ("'messages':[" USER_HI "],'max_completion_tokens':'5'",
                      "max_completion_tokens", "must be an integer");
    s_assert_refused ("'messages':[" USER_HI "],'max_tokens':-1", "max_tokens", "at least 1");
    s_assert_refused ("'messages':[" USER_HI "],'max_tokens':1.5", "max_tokens",
                      "must be an integer");
    s_assert_refused ("'messages':[" USER_HI "],'max_tokens':4294967296", "max_tokens",
                      "too large");
}

static void
test_parse_model_and_body (void **state)
{
    (void) state;
    chat_request_t request;
    api_error_t error;
    assert_int_equal (s_parse (s_json ("{'messages':[" USER_HI "]}"), true, &request, &error),
                      -1);
    assert_int_equal (error.status, 400);
    assert_string_equal (error.param, "model");
    assert_int_equal (s_parse (s_json ("{'model':'gpt-4o','messages':[" USER_HI "]}"), true,
                               &request, &error), -1);
    assert_int_equal (error.status, 404);
    assert_string_equal (error.code, "model_not_found");
    assert_int_equal (s_parse ("{\"model\": ", true, &request, &error), -1);
    assert_int_equal (error.status, 400);
    assert_non_null (strstr (error.message, "not valid JSON"));
    assert_int_equal (s_parse ("[]", true, &request, &error), -1);
    assert_non_null (strstr (error.message, "JSON object"));
    assert_null (request.chat);
}

static void
test_parse_messages (void **state)
{
    (void) state;
    s_assert_refused ("'stream':false", "messages", "Missing required parameter: 'messages'");
    s_assert_refused ("'messages':null", "messages", "Missing required parameter");
    s_assert_refused ("'messages':'Hi'", "messages", "expected an array");
    s_assert_refused ("'messages':{}", "messages", "expected an array");
    s_assert_refused ("'messages':[]", "messages", "empty array");
    s_assert_refused ("'messages':[" USER_HI ",'Hi']", "messages[1]", "expected an object");
    s_assert_refused ("'messages':[{'content':'Hi'}]", "messages[0].role",
                      "Missing required parameter: 'messages[0].role'");
    s_assert_refused ("'messages':[{'role':7,'content':'Hi'}]", "messages[0].role",
                      "expected a string");
    s_assert_refused ("'messages':[{'role':'robot','content':'Hi'}]", "messages[0].role",
                      "'robot'");
    s_assert_refused ("'messages':[{'role':'function','content':'Hi','name':'f'}]",
                      "messages[0].role", "Supported values");
    s_assert_refused ("'messages':[{'role':'user','content':'Hi','name':3}]",
                      "messages[0].name", "expected a string");

    //  content: a string or text parts; null only for an assistant with tool calls.
    s_assert_refused ("'messages':[{'role':'user'}]", "messages[0].content",
                      "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'system','content':null}]", "messages[0].content",
                      "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'user','content':5}]", "messages[0].content",
                      "expected a string or an array");
    s_assert_refused ("'messages':[{'role':'user','content':{'type':'text','text':'x'}}]",
                      "messages[0].content", "expected a string or an array");
    s_assert_refused ("'messages':[{'role':'user','content':[]}]", "messages[0].content",
                      "empty array");
    s_assert_refused ("'messages':[{'role':'user','content':[{'type':'text','text':'a'},"
                      "{'type':'image_url','image_url':{'url':'http://x/y.png'}}]}]",
                      "messages[0].content[1].type", "only text content is supported");
    s_assert_refused ("'messages':[{'role':'user','content':[{'type':'input_audio'}]}]",
                      "messages[0].content[0].type", "only text content is supported");
    s_assert_refused ("'messages':[{'role':'user','content':['text']}]",
                      "messages[0].content[0]", "expected an object");
    s_assert_refused ("'messages':[{'role':'user','content':[{'text':'a'}]}]",
                      "messages[0].content[0].type", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'user','content':[{'type':'text'}]}]",
                      "messages[0].content[0].text", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'user','content':[{'type':'text','text':1}]}]",
                      "messages[0].content[0].text", "expected a string");
    s_assert_refused ("'messages':[{'role':'user','content':[{'type':3,'text':'a'}]}]",
                      "messages[0].content[0].type", "expected a string");
    s_assert_refused ("'messages':[" USER_HI ",{'role':'assistant'}]",
                      "messages[1].content", "only an assistant message with tool_calls");
    s_assert_refused ("'messages':[" USER_HI ",{'role':'assistant','content':null,"
                      "'tool_calls':[]}]", "messages[1].content", "Missing required");

    //  Text parts pass on as they are (the tokenizer joins them).
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[{'role':'user','content':[{'type':'text',"
                               "'text':'a'},{'type':'text','text':'b'}]}]", false, &request);
    json_t *content = json_object_get (json_array_get (json_object_get (chat, "messages"), 0),
                                       "content");
    assert_int_equal (json_array_size (content), 2);
    assert_string_equal (json_string_value (json_object_get (json_array_get (content, 1),
                                                             "text")), "b");
    json_decref (chat);
    chat_request_reset (&request);

    //  developer becomes system; everything else is kept.
    chat = s_accepted ("'messages':[{'role':'developer','content':'Rules','name':'ops'},"
                       USER_HI "]", false, &request);
    json_t *first = json_array_get (json_object_get (chat, "messages"), 0);
    assert_string_equal (json_string_value (json_object_get (first, "role")), "system");
    assert_string_equal (json_string_value (json_object_get (first, "content")), "Rules");
    assert_string_equal (json_string_value (json_object_get (first, "name")), "ops");
    json_decref (chat);
    chat_request_reset (&request);
}

static void
test_parse_tool_messages (void **state)
{
    (void) state;
    //  A whole tool round trip, content null and absent on the assistant's turn.
    const char *round_trip =
        "'messages':[" USER_HI ","
        "{'role':'assistant','content':null,'tool_calls':[{'id':'call_1','type':'function',"
        "'function':{'name':'get_weather','arguments':'{\\'location\\':\\'Paris\\'}'}}]},"
        "{'role':'tool','tool_call_id':'call_1','content':'20 C'},"
        "{'role':'assistant','tool_calls':[{'id':'call_2','type':'function',"
        "'function':{'name':'get_weather','arguments':'{}'}}]},"
        "{'role':'tool','tool_call_id':'call_2','content':[{'type':'text','text':'21 C'}]}]";
    chat_request_t request;
    json_t *chat = s_accepted (round_trip, false, &request);
    json_t *messages = json_object_get (chat, "messages");
    assert_int_equal (json_array_size (messages), 5);
    json_t *call = json_array_get (json_object_get (json_array_get (messages, 1), "tool_calls"),
                                   0);
    assert_string_equal (json_string_value (json_object_get (json_object_get (call, "function"),
                                                             "arguments")),
                         "{\"location\":\"Paris\"}");
    json_decref (chat);
    chat_request_reset (&request);

    s_assert_refused ("'messages':[{'role':'tool','content':'x'}]",
                      "messages[0].tool_call_id", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'tool','content':'x','tool_call_id':1}]",
                      "messages[0].tool_call_id", "expected a string");
    s_assert_refused ("'messages':[{'role':'tool','tool_call_id':'c'}]",
                      "messages[0].content", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':{}}]",
                      "messages[0].tool_calls", "expected an array");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':['x']}]",
                      "messages[0].tool_calls[0]", "expected an object");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':[{'type':'function',"
                      "'function':{'name':'f','arguments':'{}'}}]}]",
                      "messages[0].tool_calls[0].id", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':[{'id':'c',"
                      "'function':{'name':'f','arguments':'{}'}}]}]",
                      "messages[0].tool_calls[0].type", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':[{'id':'c','type':'code',"
                      "'function':{'name':'f','arguments':'{}'}}]}]",
                      "messages[0].tool_calls[0].type", "expected 'function'");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':[{'id':'c',"
                      "'type':'function'}]}]",
                      "messages[0].tool_calls[0].function", "Missing required parameter");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':[{'id':'c',"
                      "'type':'function','function':{'arguments':'{}'}}]}]",
                      "messages[0].tool_calls[0].function.name", "Missing required");
    s_assert_refused ("'messages':[{'role':'assistant','tool_calls':[{'id':'c',"
                      "'type':'function','function':{'name':'f'}}]}]",
                      "messages[0].tool_calls[0].function.arguments", "Missing required");
    s_assert_refused ("'messages':[" USER_HI ",{'role':'assistant','tool_calls':[{'id':'c',"
                      "'type':'function','function':{'name':'f','arguments':{'a':1}}}]}]",
                      "messages[1].tool_calls[0].function.arguments", "expected a string");
}

static void
test_parse_tools (void **state)
{
    (void) state;
    s_assert_refused ("'messages':[" USER_HI "],'tools':{}", "tools", "expected an array");
    s_assert_refused ("'messages':[" USER_HI "],'tools':['f']", "tools[0]",
                      "expected an object");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'function':{'name':'f'}}]",
                      "tools[0].type", "Missing required parameter");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'retrieval',"
                      "'function':{'name':'f'}}]", "tools[0].type", "expected 'function'");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[" TOOL ",{'type':'function'}]",
                      "tools[1].function", "Missing required parameter");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function','function':{}}]",
                      "tools[0].function.name", "Missing required parameter");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                      "'function':{'name':'get weather'}}]",
                      "tools[0].function.name", "^[a-zA-Z0-9_-]{1,64}$");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                      "'function':{'name':''}}]",
                      "tools[0].function.name", "does not match pattern");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                      "'function':{'name':'caf\\u00e9'}}]",
                      "tools[0].function.name", "does not match pattern");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function','function':{"
                      "'name':'a12345678901234567890123456789012345678901234567890123456789"
                      "01234'}}]", "tools[0].function.name", "does not match pattern");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                      "'function':{'name':'f','description':1}}]",
                      "tools[0].function.description", "expected a string");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                      "'function':{'name':'f','parameters':'{}'}}]",
                      "tools[0].function.parameters", "expected an object");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                      "'function':{'name':'f','strict':'yes'}}]",
                      "tools[0].function.strict", "expected a boolean");

    //  64 characters, digits, _ and - are fine; so is a tool with only a name.
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI "],'tools':[{'type':'function',"
                               "'function':{'name':'a1234567890123456789012345678901234567890"
                               "12345678901234567890123'}},{'type':'function','function':{"
                               "'name':'Get_Weather-2','strict':true}}]", true, &request);
    assert_int_equal (json_array_size (json_object_get (chat, "tools")), 2);
    assert_true (request.auto_tool_choice);
    json_decref (chat);
    chat_request_reset (&request);

    //  An empty tools array is no tools.
    chat = s_accepted ("'messages':[" USER_HI "],'tools':[]", false, &request);
    assert_false (request.has_tools);
    assert_null (json_object_get (chat, "tools"));
    assert_string_equal (json_string_value (json_object_get (chat, "tool_choice")), "none");
    json_decref (chat);
    chat_request_reset (&request);
}

static void
test_parse_tool_choice (void **state)
{
    (void) state;
    //  Without --enable-auto-tool-choice: tools need tool_choice "none" (vLLM's message).
    s_assert_refused_with ("'messages':[" USER_HI "],'tools':[" TOOL "]", false, 400,
                           "tool_choice", "\"auto\" tool choice requires "
                           "--enable-auto-tool-choice and --tool-call-parser to be set");
    s_assert_refused_with ("'messages':[" USER_HI "],'tools':[" TOOL "],'tool_choice':'auto'",
                           false, 400, "tool_choice", "--enable-auto-tool-choice");
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI "],'tools':[" TOOL "],"
                               "'tool_choice':'none'", false, &request);
    assert_true (request.has_tools);
    assert_false (request.auto_tool_choice);
    assert_string_equal (json_string_value (json_object_get (chat, "tool_choice")), "none");
    assert_int_equal (json_array_size (json_object_get (chat, "tools")), 1);
    json_decref (chat);
    chat_request_reset (&request);

    //  With it, "auto" is the default when there are tools.
    chat = s_accepted ("'messages':[" USER_HI "],'tools':[" TOOL "],'tool_choice':null",
                       true, &request);
    assert_true (request.auto_tool_choice);
    assert_string_equal (json_string_value (json_object_get (chat, "tool_choice")), "auto");
    json_decref (chat);
    chat_request_reset (&request);

    //  "none" without tools is fine; "auto" without tools is not.
    chat = s_accepted ("'messages':[" USER_HI "],'tool_choice':'none'", false, &request);
    assert_false (request.auto_tool_choice);
    json_decref (chat);
    chat_request_reset (&request);
    s_assert_refused ("'messages':[" USER_HI "],'tool_choice':'auto'", "tool_choice",
                      "only allowed when 'tools' are specified");

    s_assert_refused ("'messages':[" USER_HI "],'tools':[" TOOL "],'tool_choice':'required'",
                      "tool_choice", "not supported yet");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[" TOOL "],'tool_choice':"
                      "{'type':'function','function':{'name':'get_weather'}}",
                      "tool_choice", "not supported yet");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[" TOOL "],'tool_choice':'sometimes'",
                      "tool_choice", "Invalid value for 'tool_choice'");
    s_assert_refused ("'messages':[" USER_HI "],'tools':[" TOOL "],'tool_choice':1",
                      "tool_choice", "Invalid value for 'tool_choice'");
}

static void
test_parse_other_parameters (void **state)
{
    (void) state;
    s_assert_refused ("'messages':[" USER_HI "],'n':0", "n", "must be from 1 to 128");
    s_assert_refused ("'messages':[" USER_HI "],'n':129", "n", "must be from 1 to 128");
    s_assert_refused ("'messages':[" USER_HI "],'n':2,'best_of':1", "best_of",
                      "best_of must be greater than or equal to n");
    s_assert_refused ("'messages':[" USER_HI "],'n':2,'best_of':3,'stream':true", "best_of",
                      "best_of above n cannot be streamed");
    s_assert_refused ("'messages':[" USER_HI "],'temperature':2.5", "temperature",
                      "between 0 and 2");
    s_assert_refused ("'messages':[" USER_HI "],'seed':'x'", "seed", "must be an integer");
    s_assert_refused ("'messages':[" USER_HI "],'stop':['1','2','3','4','5']", "stop",
                      "at most 4");
    s_assert_refused ("'messages':[" USER_HI "],'stream':'true'", "stream",
                      "must be a boolean");
    s_assert_refused ("'messages':[" USER_HI "],'stream_options':{'include_usage':true}",
                      "stream_options", "only allowed when 'stream' is enabled");
    s_assert_refused ("'messages':[" USER_HI "],'parallel_tool_calls':'yes'",
                      "parallel_tool_calls", "must be a boolean");
    s_assert_refused ("'messages':[" USER_HI "],'response_format':{'type':'json_object'}",
                      "response_format", "not supported yet");
    s_assert_refused ("'messages':[" USER_HI "],'response_format':{'type':'json_schema',"
                      "'json_schema':{'name':'x','schema':{}}}",
                      "response_format", "not supported yet");
    s_assert_refused ("'messages':[" USER_HI "],'response_format':{'type':'xml'}",
                      "response_format.type", "'xml'");
    s_assert_refused ("'messages':[" USER_HI "],'response_format':'text'",
                      "response_format", "must be an object");
    s_assert_refused ("'messages':[" USER_HI "],'logprobs':true,'n':1,'best_of':2",
                      "logprobs", "not kept for best_of above n");
    s_assert_refused ("'messages':[" USER_HI "],'logprobs':true,'top_logprobs':21",
                      "top_logprobs", "from 0 to 20");
    s_assert_refused ("'messages':[" USER_HI "],'logprobs':1", "logprobs",
                      "must be a boolean");
    s_assert_refused ("'messages':[" USER_HI "],'top_logprobs':2", "top_logprobs",
                      "only allowed when 'logprobs' is true");
    s_assert_refused ("'messages':[" USER_HI "],'logprobs':false,'top_logprobs':0",
                      "top_logprobs", "only allowed when 'logprobs' is true");
    s_assert_refused ("'messages':[" USER_HI "],'top_logprobs':'2'", "top_logprobs",
                      "must be an integer");
    {
        chat_request_t with_logprobs;
        json_t *accepted = s_accepted ("'messages':[" USER_HI "],'logprobs':true,"
                                       "'top_logprobs':3", false, &with_logprobs);
        assert_true (with_logprobs.options.want_logprobs);
        assert_int_equal (with_logprobs.options.sampling.n_logprobs, 3);
        json_decref (accepted);
        chat_request_reset (&with_logprobs);
    }
    s_assert_refused ("'messages':[" USER_HI "],'user':5", "user", "must be a string");

    //  Accepted as they are.
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI "],'parallel_tool_calls':true,"
                               "'response_format':null,'logprobs':null,'user':null,"
                               "'stop':'\\n','stream':true,'stream_options':null,"
                               "'n':4,'best_of':4,'use_beam_search':false",
                               false, &request);
    assert_int_equal (request.options.n, 4);
    assert_int_equal (request.options.n_stops, 1);
    assert_string_equal (request.options.stops [0], "\n");
    assert_true (request.options.stream);
    assert_false (request.options.include_usage);
    json_decref (chat);
    chat_request_reset (&request);
}

//  Beam search and vLLM's output options, as completions parse them (the shared
//  generation options): chat's default temperature (1) becomes 0 with beam search; the
//  chat's logprobs and top_logprobs are refused with it.
static void
test_parse_beam_search_and_output_options (void **state)
{
    (void) state;
    chat_request_t request;
    json_t *chat = s_accepted ("'messages':[" USER_HI "],'use_beam_search':true,'n':2,"
                               "'length_penalty':0.75,'early_stopping':'never',"
                               "'include_stop_str_in_output':true,"
                               "'skip_special_tokens':false", false, &request);
    assert_true (request.options.use_beam_search);
    assert_int_equal (request.options.n, 2);
    assert_int_equal (generation_options_width (&request.options), 2);
    assert_true (request.options.length_penalty == 0.75f);
    assert_int_equal (request.options.early_stopping, PROTO_EARLY_STOPPING_NEVER);
    assert_true (request.options.sampling.temperature == 0.0f);
    assert_int_equal (request.options.max_tokens, 0);
    assert_true (request.options.include_stop_str_in_output);
    assert_true (request.options.keep_special_tokens);
    json_decref (chat);
    chat_request_reset (&request);

    chat = s_accepted ("'messages':[" USER_HI "],'use_beam_search':true,'best_of':3,"
                       "'early_stopping':true,'temperature':0,'logprobs':false",
                       false, &request);
    assert_int_equal (generation_options_width (&request.options), 3);
    assert_int_equal (request.options.early_stopping, PROTO_EARLY_STOPPING_TRUE);
    assert_true (request.options.length_penalty == 1.0f);
    json_decref (chat);
    chat_request_reset (&request);

    //  The defaults.
    chat = s_accepted ("'messages':[" USER_HI "]", false, &request);
    assert_false (request.options.use_beam_search);
    assert_true (request.options.length_penalty == 1.0f);
    assert_int_equal (request.options.early_stopping, PROTO_EARLY_STOPPING_FALSE);
    assert_true (request.options.sampling.temperature == 1.0f);
    assert_false (request.options.include_stop_str_in_output);
    assert_false (request.options.keep_special_tokens);
    json_decref (chat);
    chat_request_reset (&request);

    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'stream':true",
                      "use_beam_search", "beam search cannot be streamed: the best beams "
                      "are known only when all have finished");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'logprobs':true",
                      "logprobs", "log-probabilities are not kept for beam search yet");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'logprobs':true,"
                      "'top_logprobs':2",
                      "logprobs", "log-probabilities are not kept for beam search yet");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'temperature':0.7",
                      "temperature", "beam search is deterministic: leave 'temperature' "
                      "out or set it to 0");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'top_p':0.5",
                      "top_p", "beam search is deterministic: leave 'top_p' out or set "
                      "it to 1");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'top_k':2",
                      "top_k", "beam search is deterministic: leave 'top_k' out or set "
                      "it to -1");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'min_p':0.5",
                      "min_p", "beam search is deterministic: leave 'min_p' out or set "
                      "it to 0");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':'yes'", "use_beam_search",
                      "'use_beam_search' must be a boolean or null");
    s_assert_refused ("'messages':[" USER_HI "],'length_penalty':0.5", "length_penalty",
                      "'length_penalty' is only used by beam search: leave it out or set "
                      "it to 1, or set 'use_beam_search' to true");
    s_assert_refused ("'messages':[" USER_HI "],'early_stopping':'never'", "early_stopping",
                      "'early_stopping' is only used by beam search: leave it out or set "
                      "it to false, or set 'use_beam_search' to true");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,"
                      "'early_stopping':'sometimes'", "early_stopping",
                      "'early_stopping' must be true, false or ");
    s_assert_refused ("'messages':[" USER_HI "],'use_beam_search':true,'length_penalty':[]",
                      "length_penalty", "'length_penalty' must be a finite number or null");
    s_assert_refused ("'messages':[" USER_HI "],'include_stop_str_in_output':1",
                      "include_stop_str_in_output",
                      "'include_stop_str_in_output' must be a boolean or null");
    s_assert_refused ("'messages':[" USER_HI "],'skip_special_tokens':'no'",
                      "skip_special_tokens", "'skip_special_tokens' must be a boolean or null");
}

static void
test_chat_id (void **state)
{
    (void) state;
    char id [CHAT_ID_SIZE];
    chat_id_format (0x00a1b2c3d4e5f601ull, id);
    assert_string_equal (id, "chatcmpl-00a1b2c3d4e5f601");
    chat_id_format (UINT64_MAX, id);
    assert_int_equal (strlen (id), CHAT_ID_SIZE - 1);
}


//  The body of a chat completion with one choice.
static char *
s_response_one (const char *id, int64_t created, const char *role, const char *content,
                size_t content_size, const chat_tool_calls_t *tool_calls,
                const char *finish_reason, uint32_t prompt_tokens, uint32_t completion_tokens)
{
    chat_choice_t choice = { content, content_size, tool_calls, finish_reason, NULL };
    return chat_response_json (id, created, MODEL, role, &choice, 1, prompt_tokens,
                               completion_tokens);
}


//  --------------------------------------------------------------------------
//  Tool calls

static void
test_tool_calls_merge (void **state)
{
    (void) state;
    chat_tool_calls_t *calls = chat_tool_calls_new ();
    assert_non_null (calls);
    assert_int_equal (chat_tool_calls_count (calls), 0);
    //  A call in pieces, then a second call whole, then a late piece of the first.
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'id':'call_a','type':'function','function':{'name':'get_weather',"
        "'arguments':''}}]")), 0);
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'function':{'arguments':'{\\'loc'}}]")), 0);
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':1,'id':'call_b','type':'function','function':{'name':'get_time',"
        "'arguments':'{}'}},{'index':0,'function':{'arguments':'ation\\': 1'}}]")), 0);
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'function':{'arguments':'}'}}]")), 0);
    assert_int_equal (chat_tool_calls_add (calls, "[]"), 0);
    assert_int_equal (chat_tool_calls_count (calls), 2);

    char *body = s_response_one ("chatcmpl-0000000000000001", 7, "assistant",
                                 "", 0, calls, "tool_calls", 10, 20);
    assert_non_null (body);
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    json_t *message = json_object_get (json_array_get (json_object_get (root, "choices"), 0),
                                       "message");
    json_t *expected = json_loads (s_json (
        "[{'id':'call_a','type':'function','function':{'name':'get_weather',"
        "'arguments':'{\\'location\\': 1}'}},"
        "{'id':'call_b','type':'function','function':{'name':'get_time','arguments':'{}'}}]"),
        0, NULL);
    assert_non_null (expected);
    assert_true (json_equal (json_object_get (message, "tool_calls"), expected));
    json_decref (expected);
    json_decref (root);
    free (body);
    chat_tool_calls_destroy (&calls);
    assert_null (calls);
    chat_tool_calls_destroy (&calls);
}

static void
test_tool_calls_order_and_late_fields (void **state)
{
    (void) state;
    chat_tool_calls_t *calls = chat_tool_calls_new ();
    assert_non_null (calls);
    //  Index 1 comes first; index 0's id and name come after its first delta.
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':1,'id':'b','function':{'name':'g','arguments':'2'}}]")), 0);
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'function':{'arguments':'1'}}]")), 0);
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'id':'a','function':{'name':'f'}}]")), 0);
    char *body = s_response_one ("chatcmpl-0000000000000001", 7, "assistant",
                                 NULL, 0, calls, "tool_calls", 1, 1);
    json_t *root = json_loads (body, 0, NULL);
    json_t *message = json_object_get (json_array_get (json_object_get (root, "choices"), 0),
                                       "message");
    json_t *expected = json_loads (s_json (
        "[{'id':'a','type':'function','function':{'name':'f','arguments':'1'}},"
        "{'id':'b','type':'function','function':{'name':'g','arguments':'2'}}]"), 0, NULL);
    assert_true (json_equal (json_object_get (message, "tool_calls"), expected));
    json_decref (expected);
    json_decref (root);
    free (body);
    chat_tool_calls_destroy (&calls);
}

static void
test_tool_calls_invalid (void **state)
{
    (void) state;
    const char *invalid [] = {
        "not json", "{}", "[1]", "[{}]", "[{'index':-1}]", "[{'index':'0'}]",
        "[{'index':0,'id':5}]", "[{'index':0,'type':null}]", "[{'index':0,'function':'f'}]",
        "[{'index':0,'function':{'name':1}}]", "[{'index':0,'function':{'arguments':{}}}]",
        "[{'index':0}] trailing",
    };
    chat_tool_calls_t *calls = chat_tool_calls_new ();
    for (size_t index = 0; index < sizeof invalid / sizeof invalid [0]; index++) {
        const char *deltas = s_json (invalid [index]);
        if (chat_tool_calls_valid (deltas))
            print_error ("accepted: %s\n", deltas);
        assert_false (chat_tool_calls_valid (deltas));
        assert_int_equal (chat_tool_calls_add (calls, deltas), -1);
        assert_null (chat_chunk_delta_json ("chatcmpl-1", 1, MODEL, 0, NULL, 0, deltas, false,
                                            NULL));
    }
    assert_false (chat_tool_calls_valid (NULL));
    assert_int_equal (chat_tool_calls_count (calls), 0);
    assert_true (chat_tool_calls_valid (s_json ("[{'index':0}]")));
    assert_true (chat_tool_calls_valid ("[]"));
    chat_tool_calls_destroy (&calls);
}


//  --------------------------------------------------------------------------
//  Responses

//  Parse a chat.completion body and return its message; *root_p gets the root.
static json_t *
s_check_response (const char *body, const char *finish_reason, json_t **root_p)
{
    assert_non_null (body);
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    assert_string_equal (json_string_value (json_object_get (root, "id")),
                         "chatcmpl-0000000000000002");
    assert_string_equal (json_string_value (json_object_get (root, "object")),
                         "chat.completion");
    assert_int_equal (json_integer_value (json_object_get (root, "created")), 1767322000);
    assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
    json_t *choices = json_object_get (root, "choices");
    assert_int_equal (json_array_size (choices), 1);
    json_t *choice = json_array_get (choices, 0);
    assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                         finish_reason);
    json_t *usage = json_object_get (root, "usage");
    assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")), 12);
    assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")), 5);
    assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")), 17);
    *root_p = root;
    return json_object_get (choice, "message");
}

static void
test_response_content (void **state)
{
    (void) state;
    const char *text = "The capital of France is Paris.";
    char *body = s_response_one ("chatcmpl-0000000000000002", 1767322000,
                                 "assistant", text, strlen (text), NULL, "stop", 12, 5);
    json_t *root;
    json_t *message = s_check_response (body, "stop", &root);
    assert_int_equal (json_object_size (message), 2);
    assert_string_equal (json_string_value (json_object_get (message, "role")), "assistant");
    assert_string_equal (json_string_value (json_object_get (message, "content")), text);
    assert_null (json_object_get (message, "tool_calls"));
    json_decref (root);
    free (body);

    //  No text and no calls: content "", not null. Another role; bad UTF-8 sanitized.
    chat_tool_calls_t *none = chat_tool_calls_new ();
    body = s_response_one ("chatcmpl-0000000000000002", 1767322000, "bot",
                               "", 0, none, "length", 12, 5);
    message = s_check_response (body, "length", &root);
    assert_string_equal (json_string_value (json_object_get (message, "role")), "bot");
    assert_string_equal (json_string_value (json_object_get (message, "content")), "");
    assert_null (json_object_get (message, "tool_calls"));
    json_decref (root);
    free (body);
    chat_tool_calls_destroy (&none);

    body = s_response_one ("chatcmpl-0000000000000002", 1767322000, "assistant",
                           "ok\xF0\x9F", 4, NULL, "stop", 12, 5);
    message = s_check_response (body, "stop", &root);
    assert_string_equal (json_string_value (json_object_get (message, "content")),
                         "ok\xEF\xBF\xBD");
    json_decref (root);
    free (body);
}

static void
test_response_tool_calls (void **state)
{
    (void) state;
    chat_tool_calls_t *calls = chat_tool_calls_new ();
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'id':'call_x','type':'function','function':{'name':'get_weather',"
        "'arguments':'{}'}}]")), 0);
    //  Tool calls and no text: content null.
    char *body = s_response_one ("chatcmpl-0000000000000002", 1767322000,
                                 "assistant", "", 0, calls, "tool_calls", 12, 5);
    json_t *root;
    json_t *message = s_check_response (body, "tool_calls", &root);
    assert_int_equal (json_object_size (message), 3);
    assert_non_null (json_object_get (message, "content"));
    assert_true (json_is_null (json_object_get (message, "content")));
    json_t *tool_calls = json_object_get (message, "tool_calls");
    assert_int_equal (json_array_size (tool_calls), 1);
    json_t *call = json_array_get (tool_calls, 0);
    assert_int_equal (json_object_size (call), 3);
    assert_string_equal (json_string_value (json_object_get (call, "id")), "call_x");
    assert_string_equal (json_string_value (json_object_get (call, "type")), "function");
    json_decref (root);
    free (body);

    //  Tool calls with text: the text stays.
    body = s_response_one ("chatcmpl-0000000000000002", 1767322000, "assistant",
                           "Let me check.", 13, calls, "tool_calls", 12, 5);
    message = s_check_response (body, "tool_calls", &root);
    assert_string_equal (json_string_value (json_object_get (message, "content")),
                         "Let me check.");
    assert_int_equal (json_array_size (json_object_get (message, "tool_calls")), 1);
    json_decref (root);
    free (body);
    chat_tool_calls_destroy (&calls);
}

//  Parse a chunk, check what every chat chunk has, return its delta; *root_p gets the
//  root.
static json_t *
s_check_chunk (const char *body, const char *finish_reason, bool usage_null,
               json_t **root_p)
{
    assert_non_null (body);
    assert_null (strchr (body, '\n'));
    json_t *root = json_loads (body, 0, NULL);
    assert_non_null (root);
    assert_string_equal (json_string_value (json_object_get (root, "id")),
                         "chatcmpl-0000000000000003");
    assert_string_equal (json_string_value (json_object_get (root, "object")),
                         "chat.completion.chunk");
    assert_int_equal (json_integer_value (json_object_get (root, "created")), 99);
    assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
    assert_int_equal (json_object_size (root), usage_null? 6: 5);
    if (usage_null)
        assert_true (json_is_null (json_object_get (root, "usage")));
    json_t *choices = json_object_get (root, "choices");
    assert_int_equal (json_array_size (choices), 1);
    json_t *choice = json_array_get (choices, 0);
    assert_int_equal (json_object_size (choice), 4);
    assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    if (finish_reason)
        assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                             finish_reason);
    else
        assert_true (json_is_null (json_object_get (choice, "finish_reason")));
    *root_p = root;
    json_t *delta = json_object_get (choice, "delta");
    assert_true (json_is_object (delta));
    return delta;
}

static void
test_chunks (void **state)
{
    (void) state;
    const char *id = "chatcmpl-0000000000000003";
    json_t *root;
    char *body = chat_chunk_role_json (id, 99, MODEL, 0, "assistant", false);
    json_t *delta = s_check_chunk (body, NULL, false, &root);
    assert_int_equal (json_object_size (delta), 2);
    assert_string_equal (json_string_value (json_object_get (delta, "role")), "assistant");
    assert_string_equal (json_string_value (json_object_get (delta, "content")), "");
    json_decref (root);
    free (body);

    body = chat_chunk_role_json (id, 99, MODEL, 0, "assistant", true);
    s_check_chunk (body, NULL, true, &root);
    json_decref (root);
    free (body);

    body = chat_chunk_delta_json (id, 99, MODEL, 0, "Par\nis", 6, NULL, false, NULL);
    delta = s_check_chunk (body, NULL, false, &root);
    assert_int_equal (json_object_size (delta), 1);
    assert_string_equal (json_string_value (json_object_get (delta, "content")), "Par\nis");
    json_decref (root);
    free (body);

    //  Tool-call deltas pass on as they came.
    const char *deltas = s_json ("[{'index':0,'id':'call_1','type':'function',"
                                 "'function':{'name':'get_weather','arguments':'{}'}}]");
    body = chat_chunk_delta_json (id, 99, MODEL, 0, NULL, 0, deltas, true, NULL);
    delta = s_check_chunk (body, NULL, true, &root);
    assert_int_equal (json_object_size (delta), 1);
    json_t *expected = json_loads (deltas, 0, NULL);
    assert_true (json_equal (json_object_get (delta, "tool_calls"), expected));
    json_decref (root);
    free (body);

    //  Both in one chunk.
    body = chat_chunk_delta_json (id, 99, MODEL, 0, "x", 1, deltas, false, NULL);
    delta = s_check_chunk (body, NULL, false, &root);
    assert_int_equal (json_object_size (delta), 2);
    assert_string_equal (json_string_value (json_object_get (delta, "content")), "x");
    assert_true (json_equal (json_object_get (delta, "tool_calls"), expected));
    json_decref (root);
    free (body);
    json_decref (expected);

    const char *reasons [] = { "stop", "length", "tool_calls" };
    for (size_t index = 0; index < 3; index++) {
        body = chat_chunk_finish_json (id, 99, MODEL, 0, reasons [index], index == 1);
        delta = s_check_chunk (body, reasons [index], index == 1, &root);
        assert_int_equal (json_object_size (delta), 0);
        json_decref (root);
        free (body);
    }
}

//  Three choices, exact bodies: each with its message (text, tool calls, or both),
//  its own finish reason, in index order; one usage. Chunks name their choice.
static void
test_response_choices (void **state)
{
    (void) state;
    chat_tool_calls_t *calls = chat_tool_calls_new ();
    assert_int_equal (chat_tool_calls_add (calls, s_json (
        "[{'index':0,'id':'call_x','type':'function','function':{'name':'get_weather',"
        "'arguments':'{}'}}]")), 0);
    chat_choice_t choices [3] = {
        { "Paris.", 6, NULL, "stop", NULL },
        { "", 0, calls, "tool_calls", NULL },
        { "Lyon", 4, NULL, "length", NULL },
    };
    char *body = chat_response_json ("chatcmpl-0000000000000009", 1767322000, MODEL,
                                     "assistant", choices, 3, 12, 20);
    assert_non_null (body);
    assert_string_equal (body, s_json (
        "{'id':'chatcmpl-0000000000000009','object':'chat.completion',"
        "'created':1767322000,'model':'" MODEL "','choices':["
        "{'index':0,'message':{'role':'assistant','content':'Paris.'},'logprobs':null,"
        "'finish_reason':'stop'},"
        "{'index':1,'message':{'role':'assistant','content':null,'tool_calls':["
        "{'id':'call_x','type':'function','function':{'name':'get_weather',"
        "'arguments':'{}'}}]},'logprobs':null,'finish_reason':'tool_calls'},"
        "{'index':2,'message':{'role':'assistant','content':'Lyon'},'logprobs':null,"
        "'finish_reason':'length'}],"
        "'usage':{'prompt_tokens':12,'completion_tokens':20,'total_tokens':32}}"));
    free (body);
    chat_tool_calls_destroy (&calls);

    const char *id = "chatcmpl-0000000000000009";
    body = chat_chunk_role_json (id, 99, MODEL, 2, "assistant", true);
    assert_string_equal (body, s_json (
        "{'id':'chatcmpl-0000000000000009','object':'chat.completion.chunk','created':99,"
        "'model':'" MODEL "','choices':[{'index':2,'delta':{'role':'assistant',"
        "'content':''},'logprobs':null,'finish_reason':null}],'usage':null}"));
    free (body);
    body = chat_chunk_delta_json (id, 99, MODEL, 1, "Hi", 2, NULL, false, NULL);
    assert_string_equal (body, s_json (
        "{'id':'chatcmpl-0000000000000009','object':'chat.completion.chunk','created':99,"
        "'model':'" MODEL "','choices':[{'index':1,'delta':{'content':'Hi'},"
        "'logprobs':null,'finish_reason':null}]}"));
    free (body);
    body = chat_chunk_finish_json (id, 99, MODEL, 127, "stop", false);
    assert_string_equal (body, s_json (
        "{'id':'chatcmpl-0000000000000009','object':'chat.completion.chunk','created':99,"
        "'model':'" MODEL "','choices':[{'index':127,'delta':{},'logprobs':null,"
        "'finish_reason':'stop'}]}"));
    free (body);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_parse_minimal),
        cmocka_unit_test (test_chat_template_extensions),
        cmocka_unit_test (test_parse_all_fields),
        cmocka_unit_test (test_parse_max_tokens),
        cmocka_unit_test (test_parse_model_and_body),
        cmocka_unit_test (test_parse_messages),
        cmocka_unit_test (test_parse_tool_messages),
        cmocka_unit_test (test_parse_tools),
        cmocka_unit_test (test_parse_tool_choice),
        cmocka_unit_test (test_parse_other_parameters),
        cmocka_unit_test (test_parse_beam_search_and_output_options),
        cmocka_unit_test (test_chat_id),
        cmocka_unit_test (test_tool_calls_merge),
        cmocka_unit_test (test_tool_calls_order_and_late_fields),
        cmocka_unit_test (test_tool_calls_invalid),
        cmocka_unit_test (test_response_content),
        cmocka_unit_test (test_response_tool_calls),
        cmocka_unit_test (test_chunks),
        cmocka_unit_test (test_response_choices),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
