// Calls a tool through zllm with the official OpenAI Node SDK: the model asks for
// get_weather, we run it (here: a fixed answer) and send the result back, and the model
// answers from it. Usage: node tool-call.mjs [BASE_URL]   (default http://127.0.0.1:8000/v1)
// The server must run with --enable-auto-tool-choice --tool-call-parser llama3_json.
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.argv[2] ?? 'http://127.0.0.1:8000/v1',
  apiKey: process.env.OPENAI_API_KEY ?? 'EMPTY',
});

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather in a given location',
    parameters: {
      type: 'object',
      properties: {
        location: { type: 'string', description: 'City and state, e.g., San Francisco, CA' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      },
      required: ['location', 'unit'],
    },
  },
}];

// The tool itself: a real program would ask a weather service.
function getWeather({ unit }) {
  return { temperature: unit === 'celsius' ? 18 : 64, unit };
}

// JSON as Python's json.dumps writes it ({"a": 1, "b": 2}): the small toy model was
// trained on tool results written that way and reads them best so.
function toJson(object) {
  return '{' + Object.entries(object)
    .map(([key, value]) => `${JSON.stringify(key)}: ${JSON.stringify(value)}`)
    .join(', ') + '}';
}

const messages = [{ role: 'user', content: "What's the weather like in San Francisco?" }];
const response = await client.chat.completions.create({
  model: 'toy-chat', messages, tools, tool_choice: 'auto',
});
const message = response.choices[0].message;
console.log(`finish_reason: ${response.choices[0].finish_reason}`);
for (const call of message.tool_calls ?? []) {
  console.log(`Function called: ${call.function.name}`);
  console.log(`Arguments: ${call.function.arguments}`);
}

// Run the tools and send their results back.
messages.push(message);
for (const call of message.tool_calls ?? []) {
  const result = toJson(getWeather(JSON.parse(call.function.arguments)));
  console.log(`Result: ${result}`);
  messages.push({ role: 'tool', tool_call_id: call.id, content: result });
}
const answer = await client.chat.completions.create({ model: 'toy-chat', messages, tools });
console.log(`Answer: ${answer.choices[0].message.content}`);
