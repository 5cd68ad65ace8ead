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
  checkError(postJson(url, { ...base, use_beam_search: true }), 400, 'use_beam_search');
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
