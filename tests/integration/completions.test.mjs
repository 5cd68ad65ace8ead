// /v1/completions through all four actors, on stories260K: the README's curl, every
// greedy reference case, HTTP/1.1 and h2c, the OpenAI Node SDK, concurrency, bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { startServer, postJson, postJsonAsync, curl, sharedDir, repoRoot } from './server.mjs';

const greedy = JSON.parse(fs.readFileSync(path.join(sharedDir, 'reference', 'greedy.json')));
const stories = greedy.filter((c) => c.model === 'stories260K.gguf');
let server;

before(async () => {
  server = await startServer('stories260K.gguf',
    ['--chat-template', path.join(sharedDir, 'templates', 'chatml.jinja')]);
});
after(async () => {
  const { code } = await server.stop('SIGTERM');
  assert.equal(code, 0, server.log);
});

function checkCompletion(json, { text, promptTokens, completionTokens, finish }) {
  assert.equal(json.object, 'text_completion');
  assert.match(json.id, /^cmpl-[0-9a-f]{16}$/);
  assert.equal(typeof json.created, 'number');
  assert.equal(json.model, 'stories260K');
  assert.equal(json.choices.length, 1);
  assert.equal(json.choices[0].index, 0);
  assert.equal(json.choices[0].logprobs, null);
  assert.equal(json.choices[0].finish_reason, finish);
  if (text !== undefined)
    assert.equal(json.choices[0].text, text);
  assert.deepEqual(json.usage, { prompt_tokens: promptTokens, completion_tokens: completionTokens,
                                 total_tokens: promptTokens + completionTokens });
}

for (const http2 of [false, true]) {
  test(`the README's curl over ${http2 ? 'h2c' : 'HTTP/1.1'}`, () => {
    const c = stories[0];
    const r = postJson(`${server.url}/v1/completions`,
      { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 32, temperature: 0 },
      { http2 });
    assert.equal(r.status, 200, r.body);
    checkCompletion(r.json, { promptTokens: c.prompt_ids.length, completionTokens: 32,
                              finish: 'length' });
    // 32 tokens of the 48 in the reference: its text is a prefix of the reference's.
    assert.ok(c.output_text.startsWith(r.json.choices[0].text), r.json.choices[0].text);
    assert.ok(r.json.choices[0].text.length > 40);
  });
}

test('every stories260K greedy reference case gives llama.cpp\'s text', () => {
  for (const c of stories) {
    const r = postJson(`${server.url}/v1/completions`,
      { model: 'stories260K', prompt: c.prompt, max_tokens: c.n_predict, temperature: 0 });
    assert.equal(r.status, 200, r.body);
    checkCompletion(r.json, { text: c.output_text, promptTokens: c.prompt_ids.length,
                              completionTokens: c.n_predict, finish: 'length' });
  }
});

test('default max_tokens is 16', () => {
  const r = postJson(`${server.url}/v1/completions`, { model: 'stories260K',
                                                       prompt: 'Once upon a time',
                                                       temperature: 0 });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.usage.completion_tokens, 16);
  assert.equal(r.json.choices[0].finish_reason, 'length');
});

test('sampling with a seed is repeatable, and differs from greedy', () => {
  const body = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 24,
                 temperature: 1.5, seed: 7 };
  const a = postJson(`${server.url}/v1/completions`, body);
  const b = postJson(`${server.url}/v1/completions`, body, { http2: true });
  assert.equal(a.status, 200, a.body);
  assert.equal(a.json.choices[0].text, b.json.choices[0].text);
  const others = [1, 2, 3].map((seed) => postJson(`${server.url}/v1/completions`,
    { ...body, seed }).json.choices[0].text);
  assert.ok(others.some((text) => text !== a.json.choices[0].text));
});

test('16 concurrent requests over both protocols all get their own right answer', async () => {
  const jobs = [];
  for (let i = 0; i < 16; i++) {
    const c = stories[i % stories.length];
    jobs.push(postJsonAsync(`${server.url}/v1/completions`,
      { model: 'stories260K', prompt: c.prompt, max_tokens: c.n_predict, temperature: 0 },
      { http2: i % 2 === 1 })
      .then((r) => ({ r, c })));
  }
  for (const { r, c } of await Promise.all(jobs)) {
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.choices[0].text, c.output_text);
  }
});

for (const http2 of [false, true]) {
  test(`a streamed completion gives the same text in SSE chunks (${http2 ? 'h2c' : 'HTTP/1.1'})`,
       () => {
    const c = stories[1];
    const r = postJson(`${server.url}/v1/completions`,
      { model: 'stories260K', prompt: c.prompt, max_tokens: c.n_predict, temperature: 0,
        stream: true, stream_options: { include_usage: true } }, { http2 });
    assert.equal(r.status, 200, r.body);
    const events = r.body.split('\n\n').filter((e) => e.startsWith('data: '))
      .map((e) => e.slice(6));
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    let text = '';
    let finish = null;
    for (const chunk of chunks.slice(0, -1)) {
      assert.equal(chunk.object, 'text_completion');
      assert.equal(chunk.usage, null);
      text += chunk.choices[0].text;
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    assert.equal(text, c.output_text);
    assert.equal(finish, 'length');
    const usage = chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, c.n_predict);
  });
}

test('GET /v1/models and /health', () => {
  const models = curl([`${server.url}/v1/models`]);
  assert.equal(models.status, 200);
  assert.equal(models.json.object, 'list');
  assert.equal(models.json.data[0].id, 'stories260K');
  assert.equal(models.json.data[0].object, 'model');
  const health = curl([`${server.url}/health`]);
  assert.equal(health.status, 200);
});

function checkError(r, status, param) {
  assert.equal(r.status, status, r.body);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.length > 0);
  assert.ok('type' in r.json.error && 'param' in r.json.error && 'code' in r.json.error);
  if (param !== undefined)
    assert.equal(r.json.error.param, param);
}

for (const http2 of [false, true]) {
  test(`bad requests get OpenAI error bodies (${http2 ? 'h2c' : 'HTTP/1.1'})`, () => {
    const url = `${server.url}/v1/completions`;
    checkError(postJson(url, '{"prompt": "x",', { http2 }), 400);
    checkError(postJson(url, '[1, 2]', { http2 }), 400);
    const model = 'stories260K';
    checkError(postJson(url, { model, max_tokens: 3 }, { http2 }), 400, 'prompt');
    checkError(postJson(url, { prompt: 'x' }, { http2 }), 400, 'model');
    checkError(postJson(url, { model, prompt: 'x', max_tokens: 'many' }, { http2 }), 400,
               'max_tokens');
    checkError(postJson(url, { model, prompt: 'x', max_tokens: 0 }, { http2 }), 400,
               'max_tokens');
    checkError(postJson(url, { model, prompt: 'x', temperature: -1 }, { http2 }), 400,
               'temperature');
    checkError(postJson(url, { model, prompt: 7 }, { http2 }), 400, 'prompt');
    checkError(postJson(url, { model, prompt: 'x', stream: 'yes' }, { http2 }), 400, 'stream');
    checkError(postJson(url, { prompt: 'x', model: 'gpt-4' }, { http2 }), 404, 'model');
    checkError(postJson(`${server.url}/v1/nothing`, { model, prompt: 'x' }, { http2 }), 404);
    checkError(curl([http2 ? '--http2-prior-knowledge' : '--http1.1', url]), 405);
    // The server is still fine.
    assert.equal(postJson(url, { model, prompt: 'x', max_tokens: 2 }, { http2 }).status, 200);
  });
}

test('a prompt longer than the context gets 400 with the numbers', () => {
  const r = postJson(`${server.url}/v1/completions`,
    { model: 'stories260K', prompt: 'the little dog '.repeat(800), max_tokens: 4 });
  checkError(r, 400);
  assert.match(r.json.error.message, /2048/);
});

test('a body over --max-body-size gets 413 and harms nothing else', () => {
  const huge = JSON.stringify({ model: 'stories260K', prompt: 'x'.repeat(17 * 1024 * 1024) });
  const r = postJson(`${server.url}/v1/completions`, huge);
  assert.equal(r.status, 413);
  const ok = postJson(`${server.url}/v1/completions`, { model: 'stories260K',
                                                        prompt: 'Once upon a time',
                                                        max_tokens: 4, temperature: 0 });
  assert.equal(ok.status, 200);
});

test('the official OpenAI Node SDK gets the same completion', async () => {
  const require = createRequire(path.join(repoRoot, 'tests', 'client', 'package.json'));
  const { default: OpenAI } = await import(require.resolve('openai'));
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
  const completion = await client.completions.create({
    model: 'stories260K', prompt: stories[0].prompt, max_tokens: 48, temperature: 0 });
  assert.equal(completion.choices[0].text, stories[0].output_text);
  assert.equal(completion.usage.completion_tokens, 48);
  const stream = await client.completions.create({
    model: 'stories260K', prompt: stories[0].prompt, max_tokens: 48, temperature: 0,
    stream: true });
  let streamed = '';
  for await (const chunk of stream)
    streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, stories[0].output_text);
  const models = await client.models.list();
  assert.equal(models.data[0].id, 'stories260K');
  await assert.rejects(client.completions.create({ model: 'stories260K', prompt: 'x',
                                                   max_tokens: -1 }),
                       (error) => error.status === 400);
});
