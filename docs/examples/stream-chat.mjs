// Streams a chat completion from zllm with the official OpenAI Node SDK and prints it
// token by token. Usage: node stream-chat.mjs [BASE_URL]   (default http://127.0.0.1:8000/v1)
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.argv[2] ?? 'http://127.0.0.1:8000/v1',
  apiKey: process.env.OPENAI_API_KEY ?? 'EMPTY',
});

const stream = await client.chat.completions.create({
  model: 'toy-chat',
  messages: [{ role: 'user', content: 'Say this is a test' }],
  stream: true,
});
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content ?? '');
}
process.stdout.write('\n');
