// The other models through the server. llama-2-tiny-random (F16 weights, 32k vocabulary):
// llama.cpp's greedy reference (../shared/reference/greedy.json) must match up to the
// first near-tie (stable_text); the stories260K cases are in completions.test.mjs, and
// the token ids themselves are compared in the forward pass's unit test (test_model).
// toy-chat: a generation that ends with the model's end-of-sequence token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, postJson, sharedDir } from './server.mjs';

const greedy = JSON.parse(fs.readFileSync(path.join(sharedDir, 'reference', 'greedy.json')));
const cases = greedy.filter((c) => c.model === 'llama-2-tiny-random.gguf');
let server;

before(async () => { server = await startServer('llama-2-tiny-random.gguf'); });
after(async () => { await server.stop('SIGTERM'); });

test('toy-chat: the end-of-sequence token ends the text with "stop", and gives no text',
     async (t) => {
  const chat = await startServer('toy-chat.gguf');
  t.after(() => chat.stop('SIGTERM'));
  // Without its chat markup the toy model answers this with <|end|> (its EOS) at once.
  const r = postJson(`${chat.url}/v1/completions`,
    { model: 'toy-chat', prompt: 'What is the capital of France?', max_tokens: 50,
      temperature: 0 });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.ok(r.json.usage.completion_tokens < 50);
  assert.ok(!r.json.choices[0].text.includes('<|end|>'));
});

test('llama-2-tiny-random: every case matches llama.cpp up to its first near-tie', () => {
  assert.equal(cases.length, 3);
  for (const c of cases) {
    for (const http2 of [false, true]) {
      const r = postJson(`${server.url}/v1/completions`,
        { model: 'llama-2-tiny-random', prompt: c.prompt, max_tokens: c.n_predict,
          temperature: 0 }, { http2 });
      assert.equal(r.status, 200, r.body);
      const { text, finish_reason } = r.json.choices[0];
      assert.ok(text.startsWith(c.stable_text),
                `case ${JSON.stringify(c.prompt)}: got ${JSON.stringify(text)}`);
      if (c.stable_steps === c.n_predict)
        assert.equal(text, c.output_text);
      assert.equal(r.json.usage.prompt_tokens, c.prompt_ids.length);
      assert.equal(finish_reason, r.json.usage.completion_tokens === c.n_predict ? 'length'
                                                                                  : 'stop');
    }
  }
});
