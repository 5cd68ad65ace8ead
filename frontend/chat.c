/*  chat — OpenAI's Chat Completions JSON in and out for the frontend. See chat.h.

    Validation follows OpenAI's rules and wording where clients see them: a 400 naming
    the parameter at fault, down to the element ("messages[2].tool_calls[0].function.name").
    What the server cannot do yet (tool_choice "required" or a named function, JSON
    response formats, log-probabilities with beam search) is refused with a 400 that
    says so.
    Unknown members are ignored, as OpenAI ignores them.

    The chat passed on to the tokenizer holds the messages as the client sent them
    (validated), except that role "developer" becomes "system": OpenAI's newer name for
    the system prompt, which chat templates do not know.
*/
#include "chat.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Longest tool (function) name, as OpenAI allows: ^[a-zA-Z0-9_-]{1,64}$
#define TOOL_NAME_MAX   64
//  Room for the longest param name: "messages[<20 digits>].tool_calls[<20 digits>]
//  .function.arguments"
#define PARAM_SIZE      96

struct _chat_tool_calls_t {
    //  Merged calls in index order: {"index", "id", "type", "function": {"name",
    //  "arguments"}}; "index" is left out of the answer.
    json_t *calls;
};


//  --------------------------------------------------------------------------
//  Small helpers

static bool
s_streq (json_t *string, const char *text)
{
    return json_is_string (string) && strcmp (json_string_value (string), text) == 0;
}

//  Is member absent or JSON null?
static bool
s_absent (json_t *member)
{
    return !member || json_is_null (member);
}

static void
s_out_of_memory (api_error_t *error)
{
    api_error_set (error, 500, NULL, NULL, "out of memory");
}

//  Serialize and release root; NULL when root is NULL or out of memory.
static char *
s_dump (json_t *root)
{
    if (!root)
        return NULL;
    char *text = json_dumps (root, JSON_COMPACT);
    json_decref (root);
    return text;
}


//  --------------------------------------------------------------------------
//  Messages

//  A string member that must be there ("id", "tool_call_id", "function.name", ...).
static int
s_check_required_string (json_t *object, const char *name, const char *param,
                         api_error_t *error)
{
    json_t *member = json_object_get (object, name);
    if (s_absent (member)) {
        api_error_set (error, 400, param, NULL, "Missing required parameter: '%s'.", param);
        return -1;
    }
    if (!json_is_string (member)) {
        api_error_set (error, 400, param, NULL, "Invalid '%s': expected a string.", param);
        return -1;
    }
    return 0;
}

//  Content given as an array of parts: only {"type": "text", "text": string}.
static int
s_check_content_parts (json_t *parts, size_t at, api_error_t *error)
{
    char param [PARAM_SIZE];
    if (json_array_size (parts) == 0) {
        snprintf (param, sizeof param, "messages[%zu].content", at);
        api_error_set (error, 400, param, NULL,
                       "Invalid '%s': empty array. Expected an array with minimum length 1.",
                       param);
        return -1;
    }
    size_t index;
    json_t *part;
    json_array_foreach (parts, index, part) {
        snprintf (param, sizeof param, "messages[%zu].content[%zu]", at, index);
        if (!json_is_object (part)) {
            api_error_set (error, 400, param, NULL,
                           "Invalid '%s': expected an object (a content part).", param);
            return -1;
        }
        snprintf (param, sizeof param, "messages[%zu].content[%zu].type", at, index);
        if (s_check_required_string (part, "type", param, error) != 0)
            return -1;
        json_t *type = json_object_get (part, "type");
        if (!s_streq (type, "text")) {
            api_error_set (error, 400, param, NULL,
                           "only text content is supported: '%s' is '%.40s'",
                           param, json_string_value (type));
            return -1;
        }
        snprintf (param, sizeof param, "messages[%zu].content[%zu].text", at, index);
        if (s_check_required_string (part, "text", param, error) != 0)
            return -1;
    }
    return 0;
}

//  A message's content: a string, text parts, or (assistant with tool calls) null.
static int
s_check_content (json_t *message, size_t at, bool may_be_null, api_error_t *error)
{
    char param [PARAM_SIZE];
    snprintf (param, sizeof param, "messages[%zu].content", at);
    json_t *content = json_object_get (message, "content");
    if (s_absent (content)) {
        if (may_be_null)
            return 0;
        api_error_set (error, 400, param, NULL,
                       "Missing required parameter: '%s' (only an assistant message with "
                       "tool_calls may leave it out).", param);
        return -1;
    }
    if (json_is_string (content))
        return 0;
    if (json_is_array (content))
        return s_check_content_parts (content, at, error);
    api_error_set (error, 400, param, NULL,
                   "Invalid '%s': expected a string or an array of content parts.", param);
    return -1;
}

//  An assistant message's tool_calls: {id, type "function", function {name, arguments}}.
//  *count gets how many there are.
static int
s_check_message_tool_calls (json_t *message, size_t at, size_t *count, api_error_t *error)
{
    char param [PARAM_SIZE];
    *count = 0;
    json_t *tool_calls = json_object_get (message, "tool_calls");
    if (s_absent (tool_calls))
        return 0;
    snprintf (param, sizeof param, "messages[%zu].tool_calls", at);
    if (!json_is_array (tool_calls)) {
        api_error_set (error, 400, param, NULL, "Invalid '%s': expected an array.", param);
        return -1;
    }
    size_t index;
    json_t *call;
    json_array_foreach (tool_calls, index, call) {
        snprintf (param, sizeof param, "messages[%zu].tool_calls[%zu]", at, index);
        if (!json_is_object (call)) {
            api_error_set (error, 400, param, NULL, "Invalid '%s': expected an object.",
                           param);
            return -1;
        }
        snprintf (param, sizeof param, "messages[%zu].tool_calls[%zu].id", at, index);
        if (s_check_required_string (call, "id", param, error) != 0)
            return -1;
        snprintf (param, sizeof param, "messages[%zu].tool_calls[%zu].type", at, index);
        if (s_check_required_string (call, "type", param, error) != 0)
            return -1;
        if (!s_streq (json_object_get (call, "type"), "function")) {
            api_error_set (error, 400, param, NULL,
                           "Invalid value for '%s': expected 'function'.", param);
            return -1;
        }
        json_t *function = json_object_get (call, "function");
        snprintf (param, sizeof param, "messages[%zu].tool_calls[%zu].function", at, index);
        if (!json_is_object (function)) {
            api_error_set (error, 400, param, NULL,
                           "Missing required parameter: '%s' (an object).", param);
            return -1;
        }
        snprintf (param, sizeof param, "messages[%zu].tool_calls[%zu].function.name",
                  at, index);
        if (s_check_required_string (function, "name", param, error) != 0)
            return -1;
        snprintf (param, sizeof param, "messages[%zu].tool_calls[%zu].function.arguments",
                  at, index);
        if (s_check_required_string (function, "arguments", param, error) != 0)
            return -1;
    }
    *count = json_array_size (tool_calls);
    return 0;
}

static int
s_check_message (json_t *message, size_t at, api_error_t *error)
{
    char param [PARAM_SIZE];
    snprintf (param, sizeof param, "messages[%zu]", at);
    if (!json_is_object (message)) {
        api_error_set (error, 400, param, NULL,
                       "Invalid '%s': expected an object (a message).", param);
        return -1;
    }
    snprintf (param, sizeof param, "messages[%zu].role", at);
    json_t *role = json_object_get (message, "role");
    if (s_check_required_string (message, "role", param, error) != 0)
        return -1;
    bool is_assistant = s_streq (role, "assistant");
    bool is_tool = s_streq (role, "tool");
    if (!is_assistant && !is_tool && !s_streq (role, "system")
    &&  !s_streq (role, "developer") && !s_streq (role, "user")) {
        api_error_set (error, 400, param, NULL,
                       "Invalid value for '%s': '%.40s'. Supported values are: 'system', "
                       "'developer', 'user', 'assistant' and 'tool'.",
                       param, json_string_value (role));
        return -1;
    }
    json_t *name = json_object_get (message, "name");
    if (!s_absent (name) && !json_is_string (name)) {
        snprintf (param, sizeof param, "messages[%zu].name", at);
        api_error_set (error, 400, param, NULL, "Invalid '%s': expected a string.", param);
        return -1;
    }
    size_t n_tool_calls = 0;
    if (is_assistant && s_check_message_tool_calls (message, at, &n_tool_calls, error) != 0)
        return -1;
    if (s_check_content (message, at, is_assistant && n_tool_calls > 0, error) != 0)
        return -1;
    if (is_tool) {
        snprintf (param, sizeof param, "messages[%zu].tool_call_id", at);
        if (s_check_required_string (message, "tool_call_id", param, error) != 0)
            return -1;
    }
    return 0;
}

//  Check messages and return the copy the tokenizer gets, or NULL with error filled.
static json_t *
s_parse_messages (json_t *root, api_error_t *error)
{
    json_t *messages = json_object_get (root, "messages");
    if (s_absent (messages)) {
        api_error_set (error, 400, "messages", NULL,
                       "Missing required parameter: 'messages'.");
        return NULL;
    }
    if (!json_is_array (messages)) {
        api_error_set (error, 400, "messages", NULL,
                       "Invalid 'messages': expected an array of messages.");
        return NULL;
    }
    if (json_array_size (messages) == 0) {
        api_error_set (error, 400, "messages", NULL,
                       "Invalid 'messages': empty array. Expected an array with minimum "
                       "length 1, but got an empty array instead.");
        return NULL;
    }
    size_t index;
    json_t *message;
    json_array_foreach (messages, index, message)
        if (s_check_message (message, index, error) != 0)
            return NULL;

    json_t *copy = json_deep_copy (messages);
    if (!copy) {
        s_out_of_memory (error);
        return NULL;
    }
    json_array_foreach (copy, index, message)
        if (s_streq (json_object_get (message, "role"), "developer")
        &&  json_object_set_new (message, "role", json_string ("system")) != 0) {
            json_decref (copy);
            s_out_of_memory (error);
            return NULL;
        }
    return copy;
}


//  --------------------------------------------------------------------------
//  Tools and the other chat parameters

static bool
s_tool_name_valid (json_t *name)
{
    size_t length = json_string_length (name);
    if (length < 1 || length > TOOL_NAME_MAX)
        return false;
    const char *text = json_string_value (name);
    for (size_t at = 0; at < length; at++) {
        char c = text [at];
        bool fine = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                 || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!fine)
            return false;
    }
    return true;
}

static int
s_check_tool (json_t *tool, size_t at, api_error_t *error)
{
    char param [PARAM_SIZE];
    snprintf (param, sizeof param, "tools[%zu]", at);
    if (!json_is_object (tool)) {
        api_error_set (error, 400, param, NULL, "Invalid '%s': expected an object.", param);
        return -1;
    }
    snprintf (param, sizeof param, "tools[%zu].type", at);
    if (s_check_required_string (tool, "type", param, error) != 0)
        return -1;
    if (!s_streq (json_object_get (tool, "type"), "function")) {
        api_error_set (error, 400, param, NULL,
                       "Invalid value for '%s': expected 'function'.", param);
        return -1;
    }
    snprintf (param, sizeof param, "tools[%zu].function", at);
    json_t *function = json_object_get (tool, "function");
    if (!json_is_object (function)) {
        api_error_set (error, 400, param, NULL,
                       "Missing required parameter: '%s' (an object).", param);
        return -1;
    }
    snprintf (param, sizeof param, "tools[%zu].function.name", at);
    if (s_check_required_string (function, "name", param, error) != 0)
        return -1;
    if (!s_tool_name_valid (json_object_get (function, "name"))) {
        api_error_set (error, 400, param, NULL,
                       "Invalid '%s': string does not match pattern. Expected a string "
                       "that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", param);
        return -1;
    }
    json_t *description = json_object_get (function, "description");
    if (!s_absent (description) && !json_is_string (description)) {
        snprintf (param, sizeof param, "tools[%zu].function.description", at);
        api_error_set (error, 400, param, NULL, "Invalid '%s': expected a string.", param);
        return -1;
    }
    json_t *parameters = json_object_get (function, "parameters");
    if (!s_absent (parameters) && !json_is_object (parameters)) {
        snprintf (param, sizeof param, "tools[%zu].function.parameters", at);
        api_error_set (error, 400, param, NULL,
                       "Invalid '%s': expected an object (a JSON Schema).", param);
        return -1;
    }
    json_t *strict = json_object_get (function, "strict");
    if (!s_absent (strict) && !json_is_boolean (strict)) {
        snprintf (param, sizeof param, "tools[%zu].function.strict", at);
        api_error_set (error, 400, param, NULL, "Invalid '%s': expected a boolean.", param);
        return -1;
    }
    return 0;
}

//  Check tools; *tools_p gets them (borrowed) when there is at least one, else NULL.
static int
s_parse_tools (json_t *root, json_t **tools_p, api_error_t *error)
{
    *tools_p = NULL;
    json_t *tools = json_object_get (root, "tools");
    if (s_absent (tools))
        return 0;
    if (!json_is_array (tools)) {
        api_error_set (error, 400, "tools", NULL,
                       "Invalid 'tools': expected an array of tools.");
        return -1;
    }
    size_t index;
    json_t *tool;
    json_array_foreach (tools, index, tool)
        if (s_check_tool (tool, index, error) != 0)
            return -1;
    if (json_array_size (tools) > 0)
        *tools_p = tools;
    return 0;
}

//  tool_choice: "none", "auto" (the default with tools), for now not "required" nor a
//  named function. *is_auto says which it is.
static int
s_parse_tool_choice (json_t *root, bool has_tools, bool enable_auto_tool_choice,
                     bool *is_auto, api_error_t *error)
{
    json_t *choice = json_object_get (root, "tool_choice");
    *is_auto = has_tools;
    if (!s_absent (choice)) {
        if (json_is_object (choice)) {
            api_error_set (error, 400, "tool_choice", NULL,
                           "a named function in 'tool_choice' is not supported yet: use "
                           "\"auto\" or \"none\"");
            return -1;
        }
        if (s_streq (choice, "required")) {
            api_error_set (error, 400, "tool_choice", NULL,
                           "'tool_choice' \"required\" is not supported yet: use \"auto\" "
                           "or \"none\"");
            return -1;
        }
        if (!s_streq (choice, "auto") && !s_streq (choice, "none")) {
            api_error_set (error, 400, "tool_choice", NULL,
                           "Invalid value for 'tool_choice': expected \"none\", \"auto\", "
                           "\"required\" or an object naming a function.");
            return -1;
        }
        *is_auto = s_streq (choice, "auto");
        if (*is_auto && !has_tools) {
            api_error_set (error, 400, "tool_choice", NULL,
                           "Invalid value for 'tool_choice': 'tool_choice' is only allowed "
                           "when 'tools' are specified.");
            return -1;
        }
    }
    if (*is_auto && !enable_auto_tool_choice) {
        api_error_set (error, 400, "tool_choice", NULL,
                       "\"auto\" tool choice requires --enable-auto-tool-choice and "
                       "--tool-call-parser to be set");
        return -1;
    }
    return 0;
}

static int
s_check_boolean (json_t *root, const char *name, api_error_t *error)
{
    json_t *member = json_object_get (root, name);
    if (!s_absent (member) && !json_is_boolean (member)) {
        api_error_set (error, 400, name, NULL, "'%s' must be a boolean or null", name);
        return -1;
    }
    return 0;
}

static int
s_parse_response_format (json_t *root, api_error_t *error)
{
    json_t *format = json_object_get (root, "response_format");
    if (s_absent (format))
        return 0;
    json_t *type = json_is_object (format)? json_object_get (format, "type"): NULL;
    if (!json_is_string (type)) {
        api_error_set (error, 400, "response_format", NULL,
                       "'response_format' must be an object with a 'type'");
        return -1;
    }
    if (s_streq (type, "text"))
        return 0;
    if (s_streq (type, "json_object") || s_streq (type, "json_schema")) {
        api_error_set (error, 400, "response_format", NULL,
                       "'response_format' of type '%s' is not supported yet: only 'text'",
                       json_string_value (type));
        return -1;
    }
    api_error_set (error, 400, "response_format.type", NULL,
                   "Invalid value for 'response_format.type': '%.40s'. Supported values "
                   "are: 'text', 'json_object' and 'json_schema'.", json_string_value (type));
    return -1;
}

//  logprobs (a boolean) and top_logprobs (0 .. PROTO_MAX_LOGPROBS, only with logprobs
//  true), as OpenAI checks them.
static int
s_parse_logprobs (json_t *root, generation_options_t *options, api_error_t *error)
{
    if (s_check_boolean (root, "logprobs", error) != 0)
        return -1;
    options->want_logprobs = json_is_true (json_object_get (root, "logprobs"));
    json_t *top_logprobs = json_object_get (root, "top_logprobs");
    if (s_absent (top_logprobs))
        return 0;
    if (!json_is_integer (top_logprobs) || json_integer_value (top_logprobs) < 0
    ||  json_integer_value (top_logprobs) > PROTO_MAX_LOGPROBS) {
        api_error_set (error, 400, "top_logprobs", NULL, "'top_logprobs' must be an "
                       "integer from 0 to %d, or null", PROTO_MAX_LOGPROBS);
        return -1;
    }
    if (!options->want_logprobs) {
        api_error_set (error, 400, "top_logprobs", NULL,
                       "'top_logprobs' is only allowed when 'logprobs' is true");
        return -1;
    }
    options->sampling.n_logprobs = (uint32_t) json_integer_value (top_logprobs);
    return 0;
}

static int
s_parse_user (json_t *root, api_error_t *error)
{
    json_t *user = json_object_get (root, "user");
    if (!s_absent (user) && !json_is_string (user)) {
        api_error_set (error, 400, "user", NULL, "'user' must be a string or null");
        return -1;
    }
    return 0;
}

//  The compact JSON for the tokenizer: {"messages", "tools" (when there are some),
//  "tool_choice"}. Takes messages.
//  vLLM's chat extensions: add_generation_prompt (default true), continue_final_message
//  (default false; the last message must be the assistant's, and both cannot be true) and
//  chat_template_kwargs (an object of extra template variables). They go to the tokenizer
//  in *extras (a new object).
static int
s_parse_chat_extensions (json_t *root, json_t *messages, json_t **extras, api_error_t *error)
{
    json_t *add = json_object_get (root, "add_generation_prompt");
    json_t *cont = json_object_get (root, "continue_final_message");
    json_t *kwargs = json_object_get (root, "chat_template_kwargs");
    if (add && !json_is_null (add) && !json_is_boolean (add)) {
        api_error_set (error, 400, "add_generation_prompt", NULL,
                       "'add_generation_prompt' must be a boolean");
        return -1;
    }
    if (cont && !json_is_null (cont) && !json_is_boolean (cont)) {
        api_error_set (error, 400, "continue_final_message", NULL,
                       "'continue_final_message' must be a boolean");
        return -1;
    }
    if (kwargs && !json_is_null (kwargs) && !json_is_object (kwargs)) {
        api_error_set (error, 400, "chat_template_kwargs", NULL,
                       "'chat_template_kwargs' must be an object");
        return -1;
    }
    bool add_generation_prompt = !add || json_is_null (add) || json_is_true (add);
    bool continue_final_message = cont && json_is_true (cont);
    //  As vLLM: add_generation_prompt is true unless said otherwise.
    if (continue_final_message && add_generation_prompt) {
        api_error_set (error, 400, "continue_final_message", NULL,
                       "Cannot set both continue_final_message and add_generation_prompt "
                       "to True.");
        return -1;
    }
    if (continue_final_message) {
        add_generation_prompt = false;
        json_t *last = json_array_get (messages, json_array_size (messages) - 1);
        const char *role = json_string_value (json_object_get (last, "role"));
        if (!role || strcmp (role, "assistant") != 0) {
            api_error_set (error, 400, "continue_final_message", NULL,
                           "continue_final_message needs the last message to be the "
                           "assistant's");
            return -1;
        }
    }
    *extras = json_object ();
    if (!*extras
    ||  json_object_set_new (*extras, "add_generation_prompt",
                             json_boolean (add_generation_prompt)) != 0
    ||  json_object_set_new (*extras, "continue_final_message",
                             json_boolean (continue_final_message)) != 0
    ||  (kwargs && json_is_object (kwargs)
         && json_object_set (*extras, "chat_template_kwargs", kwargs) != 0)) {
        json_decref (*extras);
        *extras = NULL;
        s_out_of_memory (error);
        return -1;
    }
    return 0;
}

static char *
s_chat_json (json_t *messages, json_t *tools, bool auto_tool_choice, json_t *extras)
{
    json_t *chat = json_object ();
    if (!chat) {
        json_decref (messages);
        return NULL;
    }
    int rc = json_object_set_new (chat, "messages", messages);
    if (rc == 0 && tools)
        rc = json_object_set (chat, "tools", tools);
    if (rc == 0)
        rc = json_object_set_new (chat, "tool_choice",
                                  json_string (auto_tool_choice? "auto": "none"));
    if (rc == 0 && extras)
        rc = json_object_update (chat, extras);
    if (rc != 0) {
        json_decref (chat);
        return NULL;
    }
    return s_dump (chat);
}


//  --------------------------------------------------------------------------
//  Request

int
chat_request_parse (const char *body, size_t size, const char *model_name,
                    bool enable_auto_tool_choice, chat_request_t *request,
                    api_error_t *error)
{
    memset (request, 0, sizeof *request);
    memset (error, 0, sizeof *error);
    generation_options_init (&request->options, 0);

    json_t *root = request_body_load (body, size, error);
    if (!root)
        return -1;
    json_t *messages = NULL;
    json_t *tools = NULL;
    int rc = request_model_check (root, model_name, error);
    if (rc == 0) {
        messages = s_parse_messages (root, error);
        rc = messages? 0: -1;
    }
    //  max_tokens is the deprecated name; max_completion_tokens wins when both are there.
    if (rc == 0)
        rc = request_max_tokens_parse (root, "max_tokens", &request->options.max_tokens,
                                       error);
    if (rc == 0)
        rc = request_max_tokens_parse (root, "max_completion_tokens",
                                       &request->options.max_tokens, error);
    if (rc == 0)
        rc = generation_options_parse (root, &request->options, error);
    if (rc == 0)
        rc = s_parse_tools (root, &tools, error);
    if (rc == 0) {
        request->has_tools = tools != NULL;
        rc = s_parse_tool_choice (root, request->has_tools, enable_auto_tool_choice,
                                  &request->auto_tool_choice, error);
    }
    if (rc == 0)
        rc = s_check_boolean (root, "parallel_tool_calls", error);
    if (rc == 0)
        rc = s_parse_response_format (root, error);
    if (rc == 0)
        rc = s_parse_logprobs (root, &request->options, error);
    if (rc == 0)
        rc = generation_options_check_logprobs (&request->options, error);
    if (rc == 0)
        rc = s_parse_user (root, error);
    json_t *extras = NULL;
    if (rc == 0)
        rc = s_parse_chat_extensions (root, messages, &extras, error);
    if (rc == 0) {
        request->chat = s_chat_json (messages, tools, request->auto_tool_choice, extras);
        messages = NULL;                //  taken, even on failure
        if (!request->chat) {
            s_out_of_memory (error);
            rc = -1;
        }
    }
    json_decref (extras);
    json_decref (messages);
    json_decref (root);
    if (rc != 0)
        chat_request_reset (request);
    return rc;
}

void
chat_request_reset (chat_request_t *request)
{
    free (request->chat);
    generation_options_reset (&request->options);
    memset (request, 0, sizeof *request);
}

void
chat_id_format (uint64_t request_id, char buffer [CHAT_ID_SIZE])
{
    snprintf (buffer, CHAT_ID_SIZE, "chatcmpl-%016" PRIx64, request_id);
}


//  --------------------------------------------------------------------------
//  Tool calls

chat_tool_calls_t *
chat_tool_calls_new (void)
{
    chat_tool_calls_t *self = (chat_tool_calls_t *) calloc (1, sizeof (chat_tool_calls_t));
    if (!self)
        return NULL;
    self->calls = json_array ();
    if (!self->calls) {
        free (self);
        return NULL;
    }
    return self;
}

void
chat_tool_calls_destroy (chat_tool_calls_t **self_p)
{
    chat_tool_calls_t *self = *self_p;
    if (self) {
        json_decref (self->calls);
        free (self);
        *self_p = NULL;
    }
}

//  Is member absent or a string?
static bool
s_optional_string (json_t *object, const char *name)
{
    json_t *member = json_object_get (object, name);
    return !member || json_is_string (member);
}

static bool
s_delta_valid (json_t *delta)
{
    if (!json_is_object (delta))
        return false;
    json_t *index = json_object_get (delta, "index");
    if (!json_is_integer (index) || json_integer_value (index) < 0)
        return false;
    if (!s_optional_string (delta, "id") || !s_optional_string (delta, "type"))
        return false;
    json_t *function = json_object_get (delta, "function");
    if (!function)
        return true;
    return json_is_object (function)
        && s_optional_string (function, "name")
        && s_optional_string (function, "arguments");
}

//  Parse deltas; the array, or NULL when it is not a valid array of deltas.
static json_t *
s_deltas_load (const char *deltas)
{
    if (!deltas)
        return NULL;
    json_t *array = json_loads (deltas, 0, NULL);
    if (!json_is_array (array)) {
        json_decref (array);
        return NULL;
    }
    size_t index;
    json_t *delta;
    json_array_foreach (array, index, delta)
        if (!s_delta_valid (delta)) {
            json_decref (array);
            return NULL;
        }
    return array;
}

bool
chat_tool_calls_valid (const char *deltas)
{
    json_t *array = s_deltas_load (deltas);
    json_decref (array);
    return array != NULL;
}

//  The string member name of object, or "" when absent.
static const char *
s_string_or_empty (json_t *object, const char *name)
{
    const char *value = json_string_value (json_object_get (object, name));
    return value? value: "";
}

//  Set object.name to the string value (kept as it is when value is "").
static int
s_fill_string (json_t *object, const char *name, const char *value)
{
    if (!*value)
        return 0;
    return json_object_set_new (object, name, json_string (value));
}

//  Append more to the string object.name.
static int
s_append_string (json_t *object, const char *name, const char *more)
{
    if (!*more)
        return 0;
    json_t *current = json_object_get (object, name);
    size_t current_size = json_string_length (current);
    size_t more_size = strlen (more);
    char *joined = (char *) malloc (current_size + more_size + 1);
    if (!joined)
        return -1;
    memcpy (joined, json_string_value (current), current_size);
    memcpy (joined + current_size, more, more_size + 1);
    int rc = json_object_set_new (object, name, json_stringn (joined, current_size + more_size));
    free (joined);
    return rc;
}

//  Merge one (valid) delta.
static int
s_merge_delta (chat_tool_calls_t *self, json_t *delta)
{
    json_int_t index = json_integer_value (json_object_get (delta, "index"));
    json_t *function = json_object_get (delta, "function");
    size_t at;
    json_t *call = NULL;
    for (at = 0; at < json_array_size (self->calls); at++) {
        json_t *candidate = json_array_get (self->calls, at);
        json_int_t candidate_index = json_integer_value (json_object_get (candidate, "index"));
        if (candidate_index == index)
            call = candidate;
        if (candidate_index >= index)
            break;
    }
    if (!call) {
        //  The first delta of this index: a new call, kept in index order.
        call = json_pack ("{s:I, s:s, s:s, s:{s:s, s:s}}",
                          "index", index,
                          "id", s_string_or_empty (delta, "id"),
                          "type", "function",
                          "function",
                          "name", s_string_or_empty (function, "name"),
                          "arguments", s_string_or_empty (function, "arguments"));
        if (!call || json_array_insert_new (self->calls, at, call) != 0)
            return -1;
        return 0;
    }
    json_t *merged_function = json_object_get (call, "function");
    //  A later delta appends to arguments; an id or name that came late fills in.
    if (!*s_string_or_empty (call, "id")
    &&  s_fill_string (call, "id", s_string_or_empty (delta, "id")) != 0)
        return -1;
    if (!*s_string_or_empty (merged_function, "name")
    &&  s_fill_string (merged_function, "name", s_string_or_empty (function, "name")) != 0)
        return -1;
    return s_append_string (merged_function, "arguments",
                            s_string_or_empty (function, "arguments"));
}

int
chat_tool_calls_add (chat_tool_calls_t *self, const char *deltas)
{
    json_t *array = s_deltas_load (deltas);
    if (!array)
        return -1;
    int rc = 0;
    size_t index;
    json_t *delta;
    json_array_foreach (array, index, delta)
        if (rc == 0)
            rc = s_merge_delta (self, delta);
    json_decref (array);
    return rc;
}

size_t
chat_tool_calls_count (const chat_tool_calls_t *self)
{
    return self? json_array_size (self->calls): 0;
}

//  The merged calls as the answer shows them (no "index").
static json_t *
s_tool_calls_answer (const chat_tool_calls_t *self)
{
    json_t *answer = json_array ();
    if (!answer)
        return NULL;
    size_t index;
    json_t *call;
    json_array_foreach (self->calls, index, call) {
        json_t *copy = json_pack ("{s:O, s:s, s:O}",
                                  "id", json_object_get (call, "id"),
                                  "type", "function",
                                  "function", json_object_get (call, "function"));
        if (!copy || json_array_append_new (answer, copy) != 0) {
            json_decref (answer);
            return NULL;
        }
    }
    return answer;
}


//  --------------------------------------------------------------------------
//  Responses

//  A JSON string of any bytes (sanitized), or null when text is NULL.
static json_t *
s_text_or_null (const char *text, size_t size)
{
    return text? api_json_string (text, size): json_null ();
}

static json_t *
s_usage (uint32_t prompt_tokens, uint32_t completion_tokens)
{
    return json_pack ("{s:I, s:I, s:I}",
                      "prompt_tokens", (json_int_t) prompt_tokens,
                      "completion_tokens", (json_int_t) completion_tokens,
                      "total_tokens",
                      (json_int_t) prompt_tokens + (json_int_t) completion_tokens);
}

//  One choice's message: {"role", "content", "tool_calls" (only when there are some)}.
static json_t *
s_message (const char *role, const chat_choice_t *choice)
{
    bool has_calls = chat_tool_calls_count (choice->tool_calls) > 0;
    bool content_null = has_calls && (!choice->content || choice->content_size == 0);
    json_t *message = json_pack ("{s:o, s:o}",
                                 "role", api_json_string (role, strlen (role)),
                                 "content", content_null? json_null ()
                                          : api_json_string (choice->content,
                                                             choice->content_size));
    if (message && has_calls
    &&  json_object_set_new (message, "tool_calls",
                             s_tool_calls_answer (choice->tool_calls)) != 0) {
        json_decref (message);
        return NULL;
    }
    return message;
}

//  {"index", key: value (taken), "logprobs", "finish_reason"}: a choice of the answer
//  (key "message") or of a chunk (key "delta"). logprobs: NULL (JSON null) or the
//  tokenizer's JSON array of entries, which becomes {"content": [...]}.
static json_t *
s_choice (uint32_t index, const char *key, json_t *value, const char *finish_reason,
          const char *logprobs)
{
    json_t *content = logprobs? json_loads (logprobs, 0, NULL): NULL;
    json_t *logprobs_object = content? json_pack ("{s:o}", "content", content)
                                     : json_null ();
    return json_pack ("{s:I, s:o, s:o, s:o}",
                      "index", (json_int_t) index,
                      key, value,
                      "logprobs", logprobs_object,
                      "finish_reason",
                      s_text_or_null (finish_reason,
                                      finish_reason? strlen (finish_reason): 0));
}

char *
chat_response_json (const char *id, int64_t created, const char *model, const char *role,
                    const chat_choice_t *choices, size_t n_choices,
                    uint32_t prompt_tokens, uint32_t completion_tokens)
{
    json_t *array = json_array ();
    for (size_t index = 0; array && index < n_choices; index++) {
        const chat_choice_t *choice = &choices [index];
        if (json_array_append_new (array,
                s_choice ((uint32_t) index, "message", s_message (role, choice),
                          choice->finish_reason, choice->logprobs)) != 0) {
            json_decref (array);
            array = NULL;
        }
    }
    json_t *root = json_pack ("{s:o, s:s, s:I, s:o, s:o, s:o}",
                              "id", api_json_string (id, strlen (id)),
                              "object", "chat.completion",
                              "created", (json_int_t) created,
                              "model", api_json_string (model, strlen (model)),
                              "choices", array,
                              "usage", s_usage (prompt_tokens, completion_tokens));
    return s_dump (root);
}

//  One chat.completion.chunk with the choice index, this delta (taken), finish_reason
//  (NULL: null) and logprobs (NULL: null).
static char *
s_chunk_json (const char *id, int64_t created, const char *model, uint32_t index,
              json_t *delta, const char *finish_reason, bool include_usage,
              const char *logprobs)
{
    json_t *root = json_pack ("{s:o, s:s, s:I, s:o, s:[o]}",
                              "id", api_json_string (id, strlen (id)),
                              "object", "chat.completion.chunk",
                              "created", (json_int_t) created,
                              "model", api_json_string (model, strlen (model)),
                              "choices", s_choice (index, "delta", delta, finish_reason,
                                                   logprobs));
    if (root && include_usage && json_object_set_new (root, "usage", json_null ()) != 0) {
        json_decref (root);
        return NULL;
    }
    return s_dump (root);
}

char *
chat_chunk_role_json (const char *id, int64_t created, const char *model, uint32_t index,
                      const char *role, bool include_usage)
{
    json_t *delta = json_pack ("{s:o, s:s}", "role", api_json_string (role, strlen (role)),
                               "content", "");
    if (!delta)
        return NULL;
    return s_chunk_json (id, created, model, index, delta, NULL, include_usage, NULL);
}

char *
chat_chunk_delta_json (const char *id, int64_t created, const char *model, uint32_t index,
                       const char *content, size_t content_size, const char *tool_calls,
                       bool include_usage, const char *logprobs)
{
    json_t *delta = json_object ();
    if (!delta)
        return NULL;
    if (content && json_object_set_new (delta, "content",
                                        api_json_string (content, content_size)) != 0) {
        json_decref (delta);
        return NULL;
    }
    if (tool_calls) {
        json_t *deltas = s_deltas_load (tool_calls);
        if (!deltas || json_object_set_new (delta, "tool_calls", deltas) != 0) {
            json_decref (delta);
            return NULL;
        }
    }
    return s_chunk_json (id, created, model, index, delta, NULL, include_usage, logprobs);
}

char *
chat_chunk_finish_json (const char *id, int64_t created, const char *model, uint32_t index,
                        const char *finish_reason, bool include_usage)
{
    json_t *delta = json_object ();
    if (!delta)
        return NULL;
    return s_chunk_json (id, created, model, index, delta, finish_reason, include_usage,
                         NULL);
}
