// Chat completions on toy-chat.gguf, a small model that really calls tools: every
// conversation of ../shared/reference/toy-chat.json gives llama.cpp's greedy reply (as
// content, or as parsed llama3_json tool calls), streamed and not; its rendered prompt
// sent to /v1/completions gives the same reply; the README's SDK examples run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { startServer, postJson, sharedDir, repoRoot, zllmBin, modelPath } from './server.mjs';

const allCases = JSON.parse(fs.readFileSync(path.join(sharedDir, 'reference',
                                                     'toy-chat.json')));
// ZLLM_TEST_SAMPLE=k keeps every k-th conversation: the sanitizer run of the suite uses it,
// the plain run checks all of them.
const sample = Number(process.env.ZLLM_TEST_SAMPLE ?? 1);
const cases = allCases.filter((_, i) => i % sample === 0);
let server;

before(async () => {
  server = await startServer('toy-chat.gguf',
    ['--enable-auto-tool-choice', '--tool-call-parser', 'llama3_json']);
});
after(async () => {
  const { code } = await server.stop('SIGTERM');
  assert.equal(code, 0, server.log);
});

// The reply llama.cpp gave, as the server must return it.
function expected(c) {
  let call;
  try { call = JSON.parse(c.output_text); } catch { call = undefined; }
  if (c.tools && call && typeof call.name === 'string' && call.parameters)
    return { toolCall: { name: call.name, arguments: call.parameters } };
  return { content: c.output_text };
}

function checkMessage(c, message, finishReason) {
  const want = expected(c);
  if (want.toolCall) {
    assert.equal(finishReason, 'tool_calls', JSON.stringify(message));
    assert.equal(message.content, null);
    assert.equal(message.tool_calls.length, 1);
    const call = message.tool_calls[0];
    assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, want.toolCall.name);
    assert.equal(typeof call.function.arguments, 'string');
    assert.deepEqual(JSON.parse(call.function.arguments), want.toolCall.arguments);
  } else {
    assert.equal(finishReason, 'stop');
    assert.equal(message.content, want.content, JSON.stringify(c.messages));
    assert.ok(!message.tool_calls || message.tool_calls.length === 0);
  }
}

function request(c, extra = {}) {
  const body = { model: 'toy-chat', messages: c.messages, temperature: 0, ...extra };
  if (c.tools)
    body.tools = c.tools;
  return body;
}

// Reassemble a streamed chat completion from its SSE events.
function readStream(text) {
  const events = text.split('\n\n').filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const message = { content: '', tool_calls: [] };
  let finishReason = null;
  let usage = null;
  for (const chunk of chunks) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage)
      usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.content)
        message.content += choice.delta.content;
      for (const delta of choice.delta.tool_calls ?? []) {
        const call = message.tool_calls[delta.index] ??= { function: { arguments: '' } };
        if (delta.id) call.id = delta.id;
        if (delta.type) call.type = delta.type;
        if (delta.function?.name) call.function.name = delta.function.name;
        call.function.arguments += delta.function?.arguments ?? '';
      }
      if (choice.finish_reason)
        finishReason = choice.finish_reason;
    }
  }
  if (message.tool_calls.length > 0 && message.content === '')
    message.content = null;
  return { message, finishReason, usage };
}

test('every toy-chat conversation gives llama.cpp\'s reply (non-streamed)', () => {
  assert.equal(allCases.length, 60);
  for (const c of cases) {
    const r = postJson(`${server.url}/v1/chat/completions`, request(c));
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.object, 'chat.completion');
    assert.match(r.json.id, /^chatcmpl-/);
    assert.equal(r.json.choices[0].message.role, 'assistant');
    checkMessage(c, r.json.choices[0].message, r.json.choices[0].finish_reason);
    assert.equal(r.json.usage.prompt_tokens, c.prompt_ids.length);
    assert.equal(r.json.usage.completion_tokens, c.output_ids.length);
  }
});

test('every toy-chat conversation gives the same reply streamed (h2c and HTTP/1.1)', () => {
  cases.forEach((c, i) => {
    const r = postJson(`${server.url}/v1/chat/completions`,
      request(c, { stream: true, stream_options: { include_usage: true } }),
      { http2: i % 2 === 0 });
    assert.equal(r.status, 200, r.body);
    const { message, finishReason, usage } = readStream(r.body);
    checkMessage(c, message, finishReason);
    assert.equal(usage.completion_tokens, c.output_ids.length);
  });
});

test('the rendered prompts through /v1/completions give the same text and token counts', () => {
  for (const c of cases) {
    const r = postJson(`${server.url}/v1/completions`,
      { model: 'toy-chat', prompt: c.prompt, max_tokens: 200, temperature: 0 });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.choices[0].text, c.output_text);
    assert.equal(r.json.choices[0].finish_reason, 'stop');
    assert.equal(r.json.usage.prompt_tokens, c.prompt_ids.length);
    assert.equal(r.json.usage.completion_tokens, c.output_ids.length);
  }
});

test('the token ids are llama.cpp\'s: the prompt through zllm tokenize, the reply through ' +
     'zllm generate (the tokenizer and engine code the server runs)', () => {
  const model = modelPath('toy-chat.gguf');
  // Every prompt is tokenized; a tenth of the replies (each a new process that loads the
  // model) are generated: the server's replies already equal llama.cpp's text and count.
  cases.forEach((c, i) => {
    const tokenized = spawnSync(zllmBin, ['tokenize', '--model', model, '--special',
                                          '--file', '-'],
                                { input: c.prompt, encoding: 'utf8' });
    assert.equal(tokenized.status, 0, tokenized.stderr);
    assert.deepEqual(tokenized.stdout.trim().split(' ').map(Number), c.prompt_ids);
    if (i % 10 !== 1)
      return;
    const generated = spawnSync(zllmBin, ['generate', model, '--prompt', c.prompt,
                                          '-n', '64', '--ids'], { encoding: 'utf8' });
    assert.equal(generated.status, 0, generated.stderr);
    const line = generated.stdout.split('\n').find((l) => l.startsWith('generated ids:'));
    assert.deepEqual(line.slice('generated ids:'.length).trim().split(' ').map(Number),
                     c.output_ids);
  });
});

test('tool_choice "none" renders the tools but never parses a call', () => {
  const c = allCases[1];
  const r = postJson(`${server.url}/v1/chat/completions`, request(c, { tool_choice: 'none' }));
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.equal(r.json.choices[0].message.content, c.output_text);
  assert.ok(!r.json.choices[0].message.tool_calls);
});

test('continue_final_message continues the assistant\'s message (vLLM extension)', () => {
  const r = postJson(`${server.url}/v1/chat/completions`,
    { model: 'toy-chat', temperature: 0, continue_final_message: true,
      add_generation_prompt: false,
      messages: [{ role: 'user', content: 'What is the capital of France?' },
                 { role: 'assistant', content: 'The capital of France' }] });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.choices[0].message.content, ' is Paris.');
  const both = postJson(`${server.url}/v1/chat/completions`,
    { model: 'toy-chat', continue_final_message: true,
      messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'He' }] });
  assert.equal(both.status, 400, both.body);
});

test('stop_token_ids end the reply at that token, without its text (vLLM extension)', () => {
  // "The capital of France is Paris." is 1576 7483 310 3444 338 3681 29889 <|end|>.
  const r = postJson(`${server.url}/v1/chat/completions`,
    request(allCases[0], { stop_token_ids: [3444] }));
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.choices[0].message.content, 'The capital of');
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.equal(r.json.usage.completion_tokens, 4);
  const bad = postJson(`${server.url}/v1/chat/completions`,
    request(allCases[0], { stop_token_ids: [-1] }));
  assert.equal(bad.status, 400, bad.body);
  assert.equal(bad.json.error.param, 'stop_token_ids');
});

test('a stop string ends the reply before it', () => {
  const r = postJson(`${server.url}/v1/chat/completions`,
    request(allCases[0], { stop: [' is'] }));
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.choices[0].message.content, 'The capital of France');
  assert.equal(r.json.choices[0].finish_reason, 'stop');
});

test('the README\'s SDK examples run and print what the README shows', () => {
  const examples = path.join(repoRoot, 'docs', 'examples');
  const stream = spawnSync('node', [path.join(examples, 'stream-chat.mjs'), `${server.url}/v1`],
                           { encoding: 'utf8', timeout: 60000 });
  assert.equal(stream.status, 0, stream.stderr);
  assert.equal(stream.stdout, 'This is a test.\n');
  const tool = spawnSync('node', [path.join(examples, 'tool-call.mjs'), `${server.url}/v1`],
                         { encoding: 'utf8', timeout: 60000 });
  assert.equal(tool.status, 0, tool.stderr);
  assert.match(tool.stdout, /finish_reason: tool_calls/);
  assert.match(tool.stdout, /Function called: get_weather/);
  assert.match(tool.stdout, /Arguments: \{"location": "San Francisco, CA", "unit": "fahrenheit"\}/);
  assert.match(tool.stdout, /Answer: It is 64 degrees fahrenheit in San Francisco, CA\./);
});

test('tools without --enable-auto-tool-choice get a clear 400', async (t) => {
  const plain = await startServer('toy-chat.gguf');
  t.after(() => plain.stop('SIGTERM'));
  const r = postJson(`${plain.url}/v1/chat/completions`, request(allCases[1]));
  assert.equal(r.status, 400, r.body);
  assert.match(r.json.error.message, /enable-auto-tool-choice/);
  const none = postJson(`${plain.url}/v1/chat/completions`,
                        request(allCases[1], { tool_choice: 'none' }));
  assert.equal(none.status, 200, none.body);
});

test('a chat request to a model without a chat template is a clear 400', async (t) => {
  const stories = await startServer('stories260K.gguf');
  t.after(() => stories.stop('SIGTERM'));
  const r = postJson(`${stories.url}/v1/chat/completions`,
    { model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }] });
  assert.equal(r.status, 400, r.body);
  assert.match(r.json.error.message, /chat template/);
});

// n choices: each choice samples with seed + i, so it equals the request with n=1 and
// that seed; at temperature 0 every choice is the greedy reply.

// A streamed chat of n choices, reassembled per index: the role chunks of choices
// 0 .. n-1 first, every chunk one choice, one finish per choice and nothing after it,
// the usage chunk (when asked for) after the last finish, then [DONE].
function readChoices(body, n) {
  const events = body.split('\n\n').filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  for (let i = 0; i < n; i++) {
    assert.equal(chunks[i].choices.length, 1);
    assert.equal(chunks[i].choices[0].index, i);
    assert.deepEqual(chunks[i].choices[0].delta, { role: 'assistant', content: '' });
  }
  const choices = Array.from({ length: n }, (_, index) => ({ index, content: '',
                                                             finish_reason: null }));
  let usage = null;
  let finished = 0;
  for (const chunk of chunks.slice(n)) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(usage, null, 'nothing after the usage chunk');
    if (chunk.choices.length === 0) {
      assert.equal(finished, n, 'the usage chunk comes after every finish');
      usage = chunk.usage;
      continue;
    }
    assert.equal(chunk.choices.length, 1);
    const { index, delta, finish_reason: finish } = chunk.choices[0];
    assert.ok(Number.isInteger(index) && index >= 0 && index < n, `index ${index}`);
    assert.equal(choices[index].finish_reason, null, `chunk for choice ${index} after its finish`);
    choices[index].content += delta.content ?? '';
    if (finish) {
      choices[index].finish_reason = finish;
      finished++;
    }
  }
  assert.equal(finished, n);
  return { choices, usage };
}

test('n=2 at temperature 0: both choices are llama.cpp\'s reply, tool calls too', () => {
  for (const c of [allCases[0], allCases[1]]) {
    const r = postJson(`${server.url}/v1/chat/completions`, request(c, { n: 2 }));
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.choices.length, 2);
    r.json.choices.forEach((choice, i) => {
      assert.equal(choice.index, i);
      assert.equal(choice.logprobs, null);
      checkMessage(c, choice.message, choice.finish_reason);
    });
    assert.equal(r.json.usage.prompt_tokens, c.prompt_ids.length);
    assert.equal(r.json.usage.completion_tokens, 2 * c.output_ids.length);
  }
});

for (const http2 of [false, true]) {
  test(`n=3 with a seed: each choice is that of n=1 with seed+i, plain and streamed ` +
       `(${http2 ? 'h2c' : 'HTTP/1.1'})`, () => {
    const url = `${server.url}/v1/chat/completions`;
    const body = { model: 'toy-chat', temperature: 1, seed: 77, n: 3, max_tokens: 24,
                   messages: [{ role: 'user', content: 'Tell me something nice.' }] };
    const r = postJson(url, body, { http2 });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.choices.length, 3);
    let completionTokens = 0;
    for (let i = 0; i < 3; i++) {
      assert.equal(r.json.choices[i].index, i);
      const single = postJson(url, { ...body, n: 1, seed: body.seed + i }, { http2 });
      assert.equal(single.status, 200, single.body);
      assert.deepEqual(r.json.choices[i].message, single.json.choices[0].message, `choice ${i}`);
      assert.equal(r.json.choices[i].finish_reason, single.json.choices[0].finish_reason);
      completionTokens += single.json.usage.completion_tokens;
    }
    assert.equal(r.json.usage.completion_tokens, completionTokens);
    const again = postJson(url, body, { http2: !http2 });
    assert.deepEqual(again.json.choices, r.json.choices);

    const s = postJson(url, { ...body, stream: true, stream_options: { include_usage: true } },
                       { http2 });
    assert.equal(s.status, 200, s.body);
    const { choices, usage } = readChoices(s.body, 3);
    assert.deepEqual(choices.map((c) => c.content), r.json.choices.map((c) => c.message.content));
    assert.deepEqual(choices.map((c) => c.finish_reason),
                     r.json.choices.map((c) => c.finish_reason));
    assert.deepEqual(usage, r.json.usage);
  });
}

test('the OpenAI SDK\'s streaming helper assembles n=2 choices', async () => {
  const require = createRequire(path.join(repoRoot, 'tests', 'client', 'package.json'));
  const { default: OpenAI } = await import(require.resolve('openai'));
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
  const body = { model: 'toy-chat', temperature: 1, seed: 5, n: 2, max_tokens: 24,
                 messages: [{ role: 'user', content: 'What is the capital of Italy?' }] };
  const plain = await client.chat.completions.create(body);
  assert.deepEqual(plain.choices.map((c) => c.index), [0, 1]);
  const stream = client.chat.completions.stream({ ...body,
                                                  stream_options: { include_usage: true } });
  const deltas = ['', ''];
  for await (const chunk of stream)
    for (const choice of chunk.choices)
      deltas[choice.index] += choice.delta.content ?? '';
  const final = await stream.finalChatCompletion();
  assert.equal(final.choices.length, 2);
  final.choices.forEach((choice, i) => {
    assert.equal(choice.index, i);
    assert.equal(choice.message.role, 'assistant');
    assert.equal(choice.message.content, plain.choices[i].message.content);
    assert.equal(choice.message.content, deltas[i]);
    assert.equal(choice.finish_reason, plain.choices[i].finish_reason);
  });
  assert.deepEqual(final.usage, plain.usage);
  assert.equal(plain.usage.completion_tokens,
               plain.usage.total_tokens - plain.usage.prompt_tokens);
});

test('chat validates n, best_of, beam search and vLLM\'s output options', () => {
  const url = `${server.url}/v1/chat/completions`;
  const base = { model: 'toy-chat', messages: [{ role: 'user', content: 'Hi' }] };
  const beam = { use_beam_search: true };
  for (const [extra, param] of [[{ n: 0 }, 'n'], [{ n: 129 }, 'n'],
                                [{ n: 2, best_of: 1 }, 'best_of'],
                                [{ n: 2, best_of: 3, stream: true }, 'best_of'],
                                [{ ...beam, stream: true }, 'use_beam_search'],
                                [{ ...beam, logprobs: true }, 'logprobs'],
                                [{ ...beam, logprobs: true, top_logprobs: 2 }, 'logprobs'],
                                [{ ...beam, temperature: 0.7 }, 'temperature'],
                                [{ ...beam, top_p: 0.9 }, 'top_p'],
                                [{ ...beam, top_k: 4 }, 'top_k'],
                                [{ ...beam, min_p: 0.1 }, 'min_p'],
                                [{ ...beam, early_stopping: 'maybe' }, 'early_stopping'],
                                [{ use_beam_search: 1 }, 'use_beam_search'],
                                [{ length_penalty: 0.5 }, 'length_penalty'],
                                [{ early_stopping: 'never' }, 'early_stopping'],
                                [{ include_stop_str_in_output: 1 }, 'include_stop_str_in_output'],
                                [{ skip_special_tokens: 'no' }, 'skip_special_tokens']]) {
    const r = postJson(url, { ...base, ...extra });
    assert.equal(r.status, 400, r.body);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.equal(r.json.error.param, param);
  }
});

test('use_beam_search: n beams, the best first; on a model this sure of its answer, ' +
     'the greedy reply', () => {
  const url = `${server.url}/v1/chat/completions`;
  const greedy = postJson(url, request(allCases[0]));
  assert.equal(greedy.status, 200, greedy.body);
  const body = { model: 'toy-chat', messages: allCases[0].messages, use_beam_search: true,
                 n: 2, best_of: 3, max_tokens: 16 };
  const r = postJson(url, body);
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.object, 'chat.completion');
  assert.deepEqual(r.json.choices.map((c) => c.index), [0, 1]);
  for (const choice of r.json.choices) {
    assert.equal(choice.message.role, 'assistant');
    assert.ok(['stop', 'length'].includes(choice.finish_reason), choice.finish_reason);
  }
  assert.equal(r.json.choices[0].message.content, greedy.json.choices[0].message.content);
  assert.notEqual(r.json.choices[1].message.content, r.json.choices[0].message.content);
  assert.equal(r.json.usage.prompt_tokens, greedy.json.usage.prompt_tokens);
  const again = postJson(url, body, { http2: true });
  assert.deepEqual(again.json.choices, r.json.choices);
  assert.deepEqual(again.json.usage, r.json.usage);
});

test('include_stop_str_in_output keeps the stop string (vLLM extension)', () => {
  const r = postJson(`${server.url}/v1/chat/completions`,
    request(allCases[0], { stop: [' is'], include_stop_str_in_output: true }));
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.choices[0].message.content, 'The capital of France is');
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  const skip = postJson(`${server.url}/v1/chat/completions`,
    request(allCases[0], { skip_special_tokens: true }));
  assert.equal(skip.status, 200, skip.body);
  checkMessage(allCases[0], skip.json.choices[0].message, skip.json.choices[0].finish_reason);
});

test('logprobs and top_logprobs through the OpenAI SDK', async () => {
  const require = createRequire(path.join(repoRoot, 'tests', 'client', 'package.json'));
  const { default: OpenAI } = await import(require.resolve('openai'));
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
  const reply = await client.chat.completions.create({
    model: 'toy-chat', temperature: 0, max_tokens: 6, logprobs: true, top_logprobs: 2,
    messages: [{ role: 'user', content: 'What is the capital of France?' }] });
  const choice = reply.choices[0];
  const content = choice.logprobs.content;
  assert.equal(content.length, reply.usage.completion_tokens);
  assert.equal(content.map((e) => e.token).join(''), choice.message.content);
  for (const entry of content) {
    assert.ok(entry.logprob <= 0);
    assert.deepEqual(entry.bytes, [...Buffer.from(entry.token, 'utf8')]);
    assert.equal(entry.top_logprobs.length, 2);
    assert.equal(entry.top_logprobs[0].token, entry.token);       // greedy
    assert.ok(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob);
  }
  // Without top_logprobs: the chosen tokens only.
  const plain = await client.chat.completions.create({
    model: 'toy-chat', temperature: 0, max_tokens: 3, logprobs: true,
    messages: [{ role: 'user', content: 'What is the capital of France?' }] });
  assert.deepEqual(plain.choices[0].logprobs.content.map((e) => e.top_logprobs.length),
                   [0, 0, 0]);
  // Streamed: the SDK gathers the chunks' entries into the same list.
  const stream = client.chat.completions.stream({
    model: 'toy-chat', temperature: 0, max_tokens: 6, logprobs: true, top_logprobs: 2,
    messages: [{ role: 'user', content: 'What is the capital of France?' }] });
  const final = await stream.finalChatCompletion();
  assert.deepEqual(final.choices[0].logprobs.content, content);
});
