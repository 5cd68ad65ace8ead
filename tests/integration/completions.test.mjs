// /v1/completions through all four actors, on stories260K: the README's curl, every
// greedy reference case, HTTP/1.1 and h2c, the OpenAI Node SDK, concurrency, bad input;
// n, best_of, beam search, echo, logprobs, vLLM's output options, prompts as arrays of
// strings or token ids, the queue-time metric.
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

// n choices. Choice i samples with seed + i (the scheduler's promise), so each equals a
// request with n=1 and that seed; the same request gives the same choices again.

// A streamed completion of n choices, reassembled per index from its SSE events: every
// chunk one choice, one finish per choice and nothing after it, the usage chunk (when
// asked for) after the last finish, then [DONE].
function readChoices(body, n) {
  const events = body.split('\n\n').filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const choices = Array.from({ length: n }, (_, index) => ({ index, text: '',
                                                             finish_reason: null }));
  let usage = null;
  let finished = 0;
  for (const chunk of events.slice(0, -1).map((e) => JSON.parse(e))) {
    assert.equal(chunk.object, 'text_completion');
    assert.equal(usage, null, 'nothing after the usage chunk');
    if (chunk.choices.length === 0) {
      assert.equal(finished, n, 'the usage chunk comes after every finish');
      usage = chunk.usage;
      continue;
    }
    assert.equal(chunk.choices.length, 1);
    const { index, text, finish_reason: finish } = chunk.choices[0];
    assert.ok(Number.isInteger(index) && index >= 0 && index < n, `index ${index}`);
    assert.equal(choices[index].finish_reason, null, `chunk for choice ${index} after its finish`);
    choices[index].text += text;
    if (finish) {
      choices[index].finish_reason = finish;
      finished++;
    }
  }
  assert.equal(finished, n);
  return { choices, usage };
}

function checkChoices(json, n) {
  assert.equal(json.object, 'text_completion');
  assert.equal(json.choices.length, n);
  json.choices.forEach((choice, i) => {
    assert.equal(choice.index, i);
    assert.equal(choice.logprobs, null);
    assert.ok(['stop', 'length'].includes(choice.finish_reason), choice.finish_reason);
    assert.equal(typeof choice.text, 'string');
  });
  assert.equal(json.usage.total_tokens, json.usage.prompt_tokens + json.usage.completion_tokens);
}

for (const http2 of [false, true]) {
  test(`n=3 with a seed: 3 choices, each that of n=1 with seed+i, plain and streamed ` +
       `(${http2 ? 'h2c' : 'HTTP/1.1'})`, () => {
    const url = `${server.url}/v1/completions`;
    const body = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 24,
                   temperature: 1, seed: 1234, n: 3 };
    const r = postJson(url, body, { http2 });
    assert.equal(r.status, 200, r.body);
    checkChoices(r.json, 3);
    const texts = r.json.choices.map((c) => c.text);
    assert.ok(new Set(texts).size > 1, `three seeds, one text: ${texts}`);

    // The same request again (over the other protocol): the same choices.
    const again = postJson(url, body, { http2: !http2 });
    assert.equal(again.status, 200, again.body);
    assert.deepEqual(again.json.choices, r.json.choices);
    assert.deepEqual(again.json.usage, r.json.usage);

    // Choice i is the request with n=1 and seed+i; usage is the sum.
    let completionTokens = 0;
    for (let i = 0; i < 3; i++) {
      const single = postJson(url, { ...body, n: 1, seed: body.seed + i }, { http2 });
      assert.equal(single.status, 200, single.body);
      assert.equal(r.json.choices[i].text, single.json.choices[0].text, `choice ${i}`);
      assert.equal(r.json.choices[i].finish_reason, single.json.choices[0].finish_reason);
      assert.equal(r.json.usage.prompt_tokens, single.json.usage.prompt_tokens);
      completionTokens += single.json.usage.completion_tokens;
    }
    assert.equal(r.json.usage.completion_tokens, completionTokens);

    // Streamed: the same choices, chunk by chunk, and the same usage.
    const s = postJson(url, { ...body, stream: true, stream_options: { include_usage: true } },
                       { http2 });
    assert.equal(s.status, 200, s.body);
    const { choices, usage } = readChoices(s.body, 3);
    assert.deepEqual(choices.map((c) => c.text), texts);
    assert.deepEqual(choices.map((c) => c.finish_reason),
                     r.json.choices.map((c) => c.finish_reason));
    assert.deepEqual(usage, r.json.usage);
  });
}

test('n=2 at temperature 0 gives two identical greedy choices', () => {
  const c = stories[0];
  const r = postJson(`${server.url}/v1/completions`,
    { model: 'stories260K', prompt: c.prompt, max_tokens: c.n_predict, temperature: 0, n: 2 });
  assert.equal(r.status, 200, r.body);
  checkChoices(r.json, 2);
  assert.equal(r.json.choices[0].text, c.output_text);
  assert.equal(r.json.choices[1].text, c.output_text);
  assert.deepEqual(r.json.usage, { prompt_tokens: c.prompt_ids.length,
                                   completion_tokens: 2 * c.n_predict,
                                   total_tokens: c.prompt_ids.length + 2 * c.n_predict });
});

test('n, best_of and use_beam_search are validated', () => {
  const url = `${server.url}/v1/completions`;
  const base = { model: 'stories260K', prompt: 'x', max_tokens: 2 };
  checkError(postJson(url, { ...base, n: 0 }), 400, 'n');
  checkError(postJson(url, { ...base, n: 129 }), 400, 'n');
  checkError(postJson(url, { ...base, n: 'two' }), 400, 'n');
  const low = postJson(url, { ...base, n: 3, best_of: 2 });
  checkError(low, 400, 'best_of');
  assert.match(low.json.error.message, /best_of must be greater than or equal to n/);
  const streamed = postJson(url, { ...base, n: 2, best_of: 4, stream: true });
  checkError(streamed, 400, 'best_of');
  assert.match(streamed.json.error.message, /cannot be streamed/);
  checkError(postJson(url, { ...base, use_beam_search: true, stream: true }), 400,
             'use_beam_search');
  const fine = postJson(url, { ...base, n: 2, best_of: 2, use_beam_search: false });
  assert.equal(fine.status, 200, fine.body);
  assert.equal(fine.json.choices.length, 2);
});

test('best_of=4, n=2 returns 2 of the 4 sequences n=4 gives', () => {
  const url = `${server.url}/v1/completions`;
  const base = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 12,
                 temperature: 1, seed: 31 };
  const all = postJson(url, { ...base, n: 4 });
  assert.equal(all.status, 200, all.body);
  const texts = all.json.choices.map((c) => c.text);
  const best = postJson(url, { ...base, n: 2, best_of: 4 });
  assert.equal(best.status, 200, best.body);
  assert.deepEqual(best.json.choices.map((c) => c.index), [0, 1]);
  const chosen = best.json.choices.map((c) => c.text);
  assert.notEqual(chosen[0], chosen[1]);
  for (const text of chosen)
    assert.ok(texts.includes(text), `${text} is not among ${JSON.stringify(texts)}`);
  // Only the 2 returned count as completion tokens.
  assert.equal(best.json.usage.completion_tokens, 24);
});

test('the OpenAI Node SDK gets n=3 choices, plain and streamed', async () => {
  const require = createRequire(path.join(repoRoot, 'tests', 'client', 'package.json'));
  const { default: OpenAI } = await import(require.resolve('openai'));
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
  const body = { model: 'stories260K', prompt: 'The little dog', max_tokens: 20,
                 temperature: 1, seed: 99, n: 3 };
  const completion = await client.completions.create(body);
  assert.deepEqual(completion.choices.map((c) => c.index), [0, 1, 2]);
  let completionTokens = 0;
  for (let i = 0; i < 3; i++) {
    const single = await client.completions.create({ ...body, n: 1, seed: body.seed + i });
    assert.equal(completion.choices[i].text, single.choices[0].text, `choice ${i}`);
    completionTokens += single.usage.completion_tokens;
  }
  assert.equal(completion.usage.completion_tokens, completionTokens);
  assert.equal(completion.usage.total_tokens,
               completion.usage.prompt_tokens + completionTokens);

  const stream = await client.completions.create({ ...body, stream: true,
                                                   stream_options: { include_usage: true } });
  const texts = ['', '', ''];
  let usage = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices)
      texts[choice.index] += choice.text;
    if (chunk.usage)
      usage = chunk.usage;
  }
  assert.deepEqual(texts, completion.choices.map((c) => c.text));
  assert.deepEqual(usage, completion.usage);
});

test('/tokenize and /detokenize (vLLM\'s) give the ids the model runs and their text', () => {
  const c = stories[0];
  for (const http2 of [false, true]) {
    const r = postJson(`${server.url}/tokenize`, { model: 'stories260K', prompt: c.prompt },
                       { http2 });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { count: c.prompt_ids.length, max_model_len: r.json.max_model_len,
                               tokens: c.prompt_ids });
    assert.ok(r.json.max_model_len > 0);
  }
  const plain = postJson(`${server.url}/tokenize`, { prompt: c.prompt, add_special_tokens: false });
  assert.deepEqual(plain.json.tokens, c.prompt_ids.slice(1));
  const text = postJson(`${server.url}/detokenize`, { tokens: c.output_ids.slice(0, 8) });
  assert.equal(text.status, 200, text.body);
  assert.ok(c.output_text.startsWith(text.json.prompt), text.body);
  checkError(postJson(`${server.url}/detokenize`, { tokens: [1, 100000] }), 400, null);
  checkError(postJson(`${server.url}/detokenize`, { tokens: 'x' }), 400, 'tokens');
  checkError(postJson(`${server.url}/tokenize`, { prompt: 5 }), 400, 'prompt');
  checkError(postJson(`${server.url}/tokenize`, { model: 'other', prompt: 'a' }), 404, 'model');
  const get = curl(['-s', `${server.url}/tokenize`]);
  assert.equal(get.status, 405);
});

test('echo puts the prompt in front of the text, plain and streamed; suffix is refused', async () => {
  const url = `${server.url}/v1/completions`;
  const c = stories[0];
  const base = { model: 'stories260K', prompt: c.prompt, max_tokens: 8, temperature: 0 };
  const plain = postJson(url, base);
  const echoed = postJson(url, { ...base, echo: true, n: 2 });
  assert.equal(echoed.status, 200, echoed.body);
  for (const choice of echoed.json.choices)
    assert.equal(choice.text, c.prompt + plain.json.choices[0].text);
  assert.equal(echoed.json.usage.completion_tokens, 16);
  const streamed = await postJsonAsync(url, { ...base, echo: true, stream: true });
  const chunks = streamed.body.split('\n').filter((l) => l.startsWith('data: {'))
                              .map((l) => JSON.parse(l.slice(6)));
  assert.equal(chunks[0].choices[0].text, c.prompt);
  assert.equal(chunks.map((k) => k.choices[0]?.text ?? '').join(''),
               c.prompt + plain.json.choices[0].text);
  checkError(postJson(url, { ...base, suffix: 'The end.' }), 400, 'suffix');
  assert.equal(postJson(url, { ...base, suffix: '' }).status, 200);
});

test('logprobs: the chosen tokens, their log-probabilities and the most likely others',
     async () => {
  const url = `${server.url}/v1/completions`;
  const c = stories[0];
  const r = postJson(url, { model: 'stories260K', prompt: c.prompt, max_tokens: 8,
                            temperature: 0, logprobs: 3, echo: true });
  assert.equal(r.status, 200, r.body);
  const { text, logprobs } = r.json.choices[0];
  assert.equal(logprobs.tokens.length, 8);
  assert.equal(c.prompt + logprobs.tokens.join(''), text);
  for (let i = 0; i < 8; i++) {
    assert.ok(logprobs.token_logprobs[i] <= 0);
    const top = Object.entries(logprobs.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 3);
    // Greedy: the chosen token is the most likely one.
    const best = Math.max(...top.map(([, lp]) => lp));
    assert.equal(logprobs.token_logprobs[i], best);
    assert.equal(logprobs.top_logprobs[i][logprobs.tokens[i]], logprobs.token_logprobs[i]);
    // Offsets count from the end of the echoed prompt.
    assert.equal(logprobs.text_offset[i],
                 c.prompt.length + logprobs.tokens.slice(0, i).join('').length);
  }
  const none = postJson(url, { model: 'stories260K', prompt: c.prompt, max_tokens: 2,
                               logprobs: 0 });
  assert.equal(none.json.choices[0].logprobs.tokens.length, 2);
  assert.deepEqual(none.json.choices[0].logprobs.top_logprobs, [{}, {}]);
  checkError(postJson(url, { model: 'stories260K', prompt: 'a', logprobs: 21 }), 400,
             'logprobs');
  checkError(postJson(url, { model: 'stories260K', prompt: 'a', logprobs: 1, best_of: 2 }),
             400, 'logprobs');
  // Streamed: each chunk carries its tokens' log-probabilities, offsets continuing.
  const streamed = await postJsonAsync(url, { model: 'stories260K', prompt: c.prompt,
                                              max_tokens: 8, temperature: 0, logprobs: 3,
                                              stream: true });
  const chunks = streamed.body.split('\n').filter((l) => l.startsWith('data: {'))
                              .map((l) => JSON.parse(l.slice(6)))
                              .filter((k) => k.choices[0].logprobs);
  assert.deepEqual(chunks.flatMap((k) => k.choices[0].logprobs.tokens), logprobs.tokens);
  assert.deepEqual(chunks.flatMap((k) => k.choices[0].logprobs.token_logprobs),
                   logprobs.token_logprobs);
  assert.deepEqual(chunks.flatMap((k) => k.choices[0].logprobs.text_offset),
                   logprobs.text_offset.map((o) => o - c.prompt.length));
});

// Prompts as arrays (OpenAI's four forms): k prompts give k x n choices, choice j of
// prompt i at index i * n + j; usage sums every prompt's tokens.

const url = () => `${server.url}/v1/completions`;

// The greedy completion of each prompt sent alone.
function alone(prompts, extra) {
  return prompts.map((prompt) => {
    const r = postJson(url(), { model: 'stories260K', prompt, temperature: 0, ...extra });
    assert.equal(r.status, 200, r.body);
    return r.json;
  });
}

function checkPrompts(json, singles, n) {
  assert.equal(json.object, 'text_completion');
  assert.equal(json.choices.length, singles.length * n);
  json.choices.forEach((choice, index) => {
    const single = singles[Math.floor(index / n)].choices[0];
    assert.equal(choice.index, index);
    assert.equal(choice.text, single.text, `choice ${index}`);
    assert.equal(choice.finish_reason, single.finish_reason);
  });
  const sum = (key) => singles.reduce((total, s) => total + s.usage[key], 0);
  assert.deepEqual(json.usage, { prompt_tokens: sum('prompt_tokens'),
                                 completion_tokens: n * sum('completion_tokens'),
                                 total_tokens: sum('prompt_tokens') + n * sum('completion_tokens') });
}

for (const http2 of [false, true]) {
  test(`an array of string prompts: each prompt's n choices are its greedy text alone ` +
       `(${http2 ? 'h2c' : 'HTTP/1.1'})`, () => {
    const prompts = [stories[0].prompt, stories[1].prompt, 'The little dog'];
    const singles = alone(prompts, { max_tokens: 12 });
    const r = postJson(url(), { model: 'stories260K', prompt: prompts, max_tokens: 12,
                                temperature: 0, n: 2 }, { http2 });
    assert.equal(r.status, 200, r.body);
    checkPrompts(r.json, singles, 2);
    // One string in an array is the string; an empty string is a prompt too (BOS only).
    const one = postJson(url(), { model: 'stories260K', prompt: [prompts[0]], max_tokens: 12,
                                  temperature: 0 }, { http2 });
    assert.equal(one.status, 200, one.body);
    checkPrompts(one.json, singles.slice(0, 1), 1);
    const empty = postJson(url(), { model: 'stories260K', prompt: ['', prompts[1]],
                                    max_tokens: 12, temperature: 0 }, { http2 });
    assert.equal(empty.status, 200, empty.body);
    checkPrompts(empty.json, [...alone([''], { max_tokens: 12 }), singles[1]], 1);
  });
}

test('echo with an array of string prompts puts each prompt in front of its choices', () => {
  const prompts = [stories[0].prompt, 'The little dog'];
  const singles = alone(prompts, { max_tokens: 6 });
  const r = postJson(url(), { model: 'stories260K', prompt: prompts, max_tokens: 6,
                              temperature: 0, echo: true, n: 2 });
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json.choices.map((c) => c.text),
                   [0, 0, 1, 1].map((i) => prompts[i] + singles[i].choices[0].text));
});

// A prompt of token ids is used as it is: /tokenize with add_special_tokens (BOS, as a
// text prompt gets it) gives the ids the text prompt runs.
function tokenize(prompt) {
  const r = postJson(`${server.url}/tokenize`, { prompt, add_special_tokens: true });
  assert.equal(r.status, 200, r.body);
  return r.json.tokens;
}

test('a prompt of token ids gives the text prompt\'s greedy completion', () => {
  const prompts = [stories[0].prompt, stories[1].prompt];
  const singles = alone(prompts, { max_tokens: 12 });
  const ids = prompts.map(tokenize);
  assert.equal(ids[0][0], 1, 'BOS first');
  const flat = postJson(url(), { model: 'stories260K', prompt: ids[0], max_tokens: 12,
                                 temperature: 0 });
  assert.equal(flat.status, 200, flat.body);
  checkPrompts(flat.json, singles.slice(0, 1), 1);
  assert.equal(flat.json.usage.prompt_tokens, ids[0].length);
  const nested = postJson(url(), { model: 'stories260K', prompt: ids, max_tokens: 12,
                                   temperature: 0, n: 2 }, { http2: true });
  assert.equal(nested.status, 200, nested.body);
  checkPrompts(nested.json, singles, 2);
});

test('a token id outside the vocabulary fails the whole request with 400', () => {
  const ids = tokenize(stories[0].prompt);
  for (const prompt of [[1, 100000], [ids, [1, 512]]]) {
    const r = postJson(url(), { model: 'stories260K', prompt, max_tokens: 4 });
    checkError(r, 400);
    assert.match(r.json.error.message, /vocabulary/);
  }
  // The server is still fine.
  assert.equal(postJson(url(), { model: 'stories260K', prompt: ids, max_tokens: 2 }).status,
               200);
});

for (const http2 of [false, true]) {
  test(`several prompts streamed: chunks by global index, one end after all ` +
       `(${http2 ? 'h2c' : 'HTTP/1.1'})`, () => {
    const prompts = [stories[0].prompt, 'The little dog', stories[2].prompt];
    const body = { model: 'stories260K', prompt: prompts, max_tokens: 10, temperature: 0,
                   n: 2 };
    const plain = postJson(url(), body, { http2 });
    assert.equal(plain.status, 200, plain.body);
    const s = postJson(url(), { ...body, stream: true,
                                stream_options: { include_usage: true } }, { http2 });
    assert.equal(s.status, 200, s.body);
    const { choices, usage } = readChoices(s.body, 6);
    assert.deepEqual(choices.map((c) => c.text), plain.json.choices.map((c) => c.text));
    assert.deepEqual(choices.map((c) => c.finish_reason),
                     plain.json.choices.map((c) => c.finish_reason));
    assert.deepEqual(usage, plain.json.usage);
  });
}

test('prompt arrays are validated, naming the element at fault', () => {
  const base = { model: 'stories260K', max_tokens: 2 };
  const cases = [
    [[], 'prompt'], [[[]], 'prompt[0]'], [[[1], []], 'prompt[1]'], [[1, -2], 'prompt[1]'],
    [[1, 2 ** 32], 'prompt[1]'], [[1.5], 'prompt[0]'], [[[1, 2], [3, 'x']], 'prompt[1][1]'],
    [['a', 1], 'prompt[1]'], [[[1], 'a'], 'prompt[1]'], [[true], 'prompt[0]'],
    [Array(65).fill('a'), 'prompt'], [{}, 'prompt'],
  ];
  for (const [prompt, param] of cases) {
    const r = postJson(url(), { ...base, prompt });
    checkError(r, 400, param);
    assert.equal(r.json.error.type, 'invalid_request_error');
  }
  const echo = postJson(url(), { ...base, prompt: [1, 2], echo: true });
  checkError(echo, 400, 'echo');
  assert.match(echo.json.error.message, /token ids/);
  assert.equal(postJson(url(), { ...base, prompt: Array(64).fill('a') }).json.choices.length,
               64);
});

test('the OpenAI Node SDK sends arrays of prompts and of token ids', async () => {
  const require = createRequire(path.join(repoRoot, 'tests', 'client', 'package.json'));
  const { default: OpenAI } = await import(require.resolve('openai'));
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
  const prompts = [stories[0].prompt, 'The little dog'];
  const singles = alone(prompts, { max_tokens: 8 });
  const completion = await client.completions.create({
    model: 'stories260K', prompt: prompts, max_tokens: 8, temperature: 0 });
  checkPrompts(completion, singles, 1);
  const ids = await client.completions.create({
    model: 'stories260K', prompt: prompts.map(tokenize), max_tokens: 8, temperature: 0 });
  checkPrompts(ids, singles, 1);
});

// Beam search (vLLM's use_beam_search, length_penalty, early_stopping).

test('use_beam_search: what cannot go with it is a 400 naming the parameter', () => {
  const base = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 4,
                 use_beam_search: true };
  const cases = [
    [{ stream: true }, 'use_beam_search', /cannot be streamed/],
    [{ logprobs: 2 }, 'logprobs', /beam search/],
    [{ temperature: 0.8 }, 'temperature', /leave 'temperature' out or set it to 0/],
    [{ top_p: 0.5 }, 'top_p', /leave 'top_p' out or set it to 1/],
    [{ top_k: 3 }, 'top_k', /leave 'top_k' out or set it to -1/],
    [{ min_p: 0.2 }, 'min_p', /leave 'min_p' out or set it to 0/],
    [{ n: 3, best_of: 2 }, 'best_of', /best_of must be greater than or equal to n/],
    [{ use_beam_search: 'yes' }, 'use_beam_search', /boolean/],
    [{ early_stopping: 'sometimes' }, 'early_stopping', /true, false or "never"/],
    [{ length_penalty: 'long' }, 'length_penalty', /finite number/],
    [{ use_beam_search: false, length_penalty: 2 }, 'length_penalty', /only used by beam search/],
    [{ use_beam_search: false, early_stopping: true }, 'early_stopping',
     /only used by beam search/],
  ];
  for (const [extra, param, message] of cases) {
    const r = postJson(url(), { ...base, ...extra });
    checkError(r, 400, param);
    assert.match(r.json.error.message, message);
  }
});

test('use_beam_search returns n beams, whole and the same each time', () => {
  const body = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 10,
                 use_beam_search: true, n: 2, best_of: 3, length_penalty: 1.0,
                 early_stopping: 'never' };
  const r = postJson(url(), body);
  assert.equal(r.status, 200, r.body);
  checkChoices(r.json, 2);
  assert.notEqual(r.json.choices[0].text, r.json.choices[1].text);
  assert.ok(r.json.usage.completion_tokens >= 2 && r.json.usage.completion_tokens <= 20,
            JSON.stringify(r.json.usage));
  const again = postJson(url(), body, { http2: true });
  assert.equal(again.status, 200, again.body);
  assert.deepEqual(again.json.choices, r.json.choices);
  // Several prompts: each its own beam search.
  const both = postJson(url(), { ...body, prompt: [body.prompt, body.prompt] });
  assert.equal(both.status, 200, both.body);
  assert.deepEqual(both.json.choices.map((c) => c.text),
                   [...r.json.choices, ...r.json.choices].map((c) => c.text));
});

// vLLM's output options.

test('include_stop_str_in_output keeps the stop string in the text', () => {
  const c = stories[0];
  // A word in the middle of the greedy text.
  const words = c.output_text.split(' ');
  const stop = ` ${words[Math.floor(words.length / 2)]}`;
  const before = c.output_text.slice(0, c.output_text.indexOf(stop));
  const body = { model: 'stories260K', prompt: c.prompt, max_tokens: c.n_predict,
                 temperature: 0, stop: [stop] };
  const plain = postJson(url(), body);
  assert.equal(plain.status, 200, plain.body);
  assert.equal(plain.json.choices[0].text, before);
  const kept = postJson(url(), { ...body, include_stop_str_in_output: true });
  assert.equal(kept.status, 200, kept.body);
  assert.equal(kept.json.choices[0].text, before + stop);
  assert.equal(kept.json.choices[0].finish_reason, 'stop');
  checkError(postJson(url(), { ...body, include_stop_str_in_output: 'yes' }), 400,
             'include_stop_str_in_output');
});

test('skip_special_tokens is a boolean; true is the default', () => {
  const c = stories[0];
  const body = { model: 'stories260K', prompt: c.prompt, max_tokens: 8, temperature: 0 };
  const plain = postJson(url(), body);
  const skip = postJson(url(), { ...body, skip_special_tokens: true });
  assert.equal(skip.status, 200, skip.body);
  assert.deepEqual(skip.json.choices, plain.json.choices);
  const keep = postJson(url(), { ...body, skip_special_tokens: false });
  assert.equal(keep.status, 200, keep.body);
  checkError(postJson(url(), { ...body, skip_special_tokens: 0 }), 400, 'skip_special_tokens');
});

// /metrics: zllm:request_queue_time_seconds, one sample per prompt.

function metric(name) {
  const r = curl([`${server.url}/metrics`]);
  assert.equal(r.status, 200);
  const line = r.body.split('\n').find((l) => l.startsWith(`${name}{model_name="stories260K"} `));
  assert.ok(line, `no ${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

test('request_queue_time_seconds counts one sample per prompt', () => {
  const count = metric('zllm:request_queue_time_seconds_count');
  const r = postJson(url(), { model: 'stories260K', prompt: ['a', 'b', 'c'], max_tokens: 2 });
  assert.equal(r.status, 200, r.body);
  assert.equal(metric('zllm:request_queue_time_seconds_count'), count + 3);
});

test('request_queue_time_seconds says how long requests waited for their first step',
     async () => {
  const sum = metric('zllm:request_queue_time_seconds_sum');
  const jobs = [];
  for (let i = 0; i < 6; i++)
    jobs.push(postJsonAsync(url(), { model: 'stories260K', prompt: stories[i % stories.length].prompt,
                                     max_tokens: 24, temperature: 0 }));
  for (const r of await Promise.all(jobs))
    assert.equal(r.status, 200, r.body);
  assert.ok(metric('zllm:request_queue_time_seconds_sum') > sum);
});
