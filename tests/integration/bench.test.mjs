// `zllm bench`: the load generator, against `zllm serve` (stories260K) over HTTP/1.1 and
// HTTP/2 on both endpoints, against a port where nothing listens, with a bad flag, and
// against a small fake OpenAI server in this process: one that has vLLM's /tokenize and
// /detokenize (prompts of exactly --input-len tokens), and ones whose streams break the
// rules in different ways (each must count as a failed request).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startServer, freePort, sharedDir, zllmBin } from './server.mjs';

let server;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zllm-bench-'));

before(async () => {
  server = await startServer('stories260K.gguf',
    ['--threads', '1', '--chat-template', path.join(sharedDir, 'templates', 'chatml.jinja')]);
});
after(async () => {
  // (stop's own timer keeps node alive until it runs out: a short one keeps the file fast)
  await server.stop('SIGTERM', 3000);
  fs.rmSync(tmp, { recursive: true, force: true });
});

// Run `zllm bench ...args` without blocking the event loop (the fake server below lives in
// this process); returns { code, stdout, stderr, json } (json: what --json wrote, if any).
let runCount = 0;
function bench(args, { json = true } = {}) {
  const jsonPath = path.join(tmp, `bench-${runCount++}.json`);
  const all = ['bench', ...args, ...(json ? ['--json', jsonPath] : [])];
  return new Promise((resolve) => {
    const proc = spawn(zllmBin, all, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (chunk) => { stdout += chunk; });
    proc.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30000);
    proc.on('close', (code) => {
      clearTimeout(timer);
      let result;
      try { result = JSON.parse(fs.readFileSync(jsonPath, 'utf8')); } catch { result = undefined; }
      resolve({ code, stdout, stderr, json: result });
    });
  });
}

const small = ['--requests', '8', '--concurrency', '4', '--input-len', '16', '--output-len', '8'];

for (const endpoint of ['completions', 'chat']) {
  for (const http2 of [false, true]) {
    test(`${endpoint} over HTTP/${http2 ? '2' : '1.1'}: 8 requests, all counted and timed`,
         async () => {
      const r = await bench(['--url', server.url, '--endpoint', endpoint, ...small,
                             ...(http2 ? ['--http2'] : [])]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const j = r.json;
      assert.ok(j, 'no JSON written');
      assert.equal(j.successful, 8);
      assert.equal(j.failed, 0);
      assert.equal(j.first_error, null);
      assert.equal(j.total_output_tokens, 8 * 8);
      assert.ok(j.total_input_tokens >= 8 * 16, `input tokens ${j.total_input_tokens}`);
      assert.equal(j.settings.endpoint, endpoint);
      assert.equal(j.settings.http2, http2);
      assert.equal(j.settings.model, 'stories260K');
      assert.equal(j.settings.requests, 8);
      assert.equal(j.settings.concurrency, 4);
      assert.equal(j.settings.prompts, 'tokenizer');   // zllm serve has /tokenize
      assert.ok(j.duration > 0);
      assert.ok(j.request_throughput > 0 && j.output_throughput > 0);
      assert.ok(j.total_token_throughput > j.output_throughput);
      assert.equal(typeof j.token_count_mismatches, 'number');
      // keep-alive: one connection per client; HTTP/2: every stream on one connection
      if (http2)
        assert.equal(j.connections, 1);
      else
        assert.ok(j.connections >= 1 && j.connections <= 4, `connections ${j.connections}`);
      for (const name of ['ttft', 'tpot', 'itl', 'e2el']) {
        for (const stat of ['mean', 'median', 'p90', 'p99']) {
          const value = j[`${stat}_${name}_ms`];
          assert.equal(typeof value, 'number', `${stat}_${name}_ms`);
          assert.ok(value >= 0, `${stat}_${name}_ms = ${value}`);
        }
        assert.ok(j[`median_${name}_ms`] <= j[`p90_${name}_ms`]);
        assert.ok(j[`p90_${name}_ms`] <= j[`p99_${name}_ms`]);
      }
      assert.ok(j.mean_ttft_ms <= j.mean_e2el_ms);
      assert.ok(j.p99_ttft_ms <= j.p99_e2el_ms);
      // the table on stdout
      assert.match(r.stdout, /Successful requests:\s+8\n/);
      assert.match(r.stdout, /Failed requests:\s+0\n/);
      assert.match(r.stdout, /Mean TTFT \(ms\):\s+\d/);
    });
  }
}

test('--rate: Poisson arrivals, all requests done', async () => {
  const r = await bench(['--url', server.url, '--rate', '100', '--requests', '6',
                         '--input-len', '8', '--output-len', '4', '--seed', '7']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.json.successful, 6);
  assert.equal(r.json.settings.rate, 100);
  assert.equal(r.json.settings.concurrency, null);
  assert.equal(r.json.total_output_tokens, 6 * 4);
});

test('nothing listening: every request fails, exit 1, the error said', async () => {
  const port = await freePort();
  const r = await bench(['--url', `http://127.0.0.1:${port}`, '--concurrency', '2',
                         '--requests', '5', '--input-len', '8', '--output-len', '4']);
  assert.equal(r.code, 1, r.stderr + r.stdout);
  assert.equal(r.json.successful, 0);
  assert.equal(r.json.failed, 5);
  assert.match(r.json.first_error, /connect/i);
  assert.equal(r.json.mean_ttft_ms, null);
  assert.match(r.stderr, /5 of 5 requests failed/);
});

test('a bad command line: exit 2 with a clear message', async () => {
  for (const args of [['--concurrency', '2', '--no-such-flag'],
                      ['--requests', '4'],                       // neither --concurrency nor --rate
                      ['--concurrency', '0'],
                      ['--rate', 'fast'],
                      ['--endpoint', 'embeddings', '--concurrency', '1'],
                      ['--url', 'localhost:8000', '--concurrency', '1']]) {
    const r = await bench(args, { json: false });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /zllm bench --help/);
    assert.equal(r.stdout, '');
  }
  const help = await bench(['--help'], { json: false });
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--concurrency C/);
});

// --- A fake OpenAI-compatible server --------------------------------------------------------
// One word is one token. The model name picks a behaviour: 'good', or a way to break the
// stream ('no-done', 'no-usage', 'bad-json', 'http-error', 'two-ids').

async function startFake({ tokenize = true } = {}) {
  const words = new Map();        // token id -> word
  const ids = new Map();          // word -> token id
  const tokenOf = (word) => {
    if (!ids.has(word)) { ids.set(word, ids.size + 1); words.set(ids.size, word); }
    return ids.get(word);
  };
  const fake = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const json = (status, value) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (req.url === '/v1/models')
      return json(200, { object: 'list', data: [{ id: 'good', object: 'model' }] });
    const request = JSON.parse(body || '{}');
    if (req.url === '/tokenize' && tokenize)
      return json(200, { tokens: request.prompt.split(' ').map(tokenOf) });
    if (req.url === '/detokenize' && tokenize)
      return json(200, { prompt: request.tokens.map((t) => words.get(t)).join(' ') });
    if (req.url !== '/v1/completions')
      return json(404, { error: { message: 'no such endpoint' } });
    const mode = request.model;
    if (mode === 'http-error')
      return json(500, { error: { message: 'the fake is out of order' } });
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    const send = (value) => res.write(`data: ${typeof value === 'string' ? value
                                                                         : JSON.stringify(value)}\n\n`);
    const chunk = (i, text, finish) => ({
      id: mode === 'two-ids' && i > 0 ? 'cmpl-other' : 'cmpl-1', object: 'text_completion',
      created: 1, model: mode, choices: [{ index: 0, text, finish_reason: finish }],
      usage: null });
    for (let i = 0; i < request.max_tokens; i++)
      send(chunk(i, ` w${i}`, i === request.max_tokens - 1 ? 'length' : null));
    if (mode === 'bad-json')
      send('{"id": ');
    const promptTokens = request.prompt.split(' ').length;
    if (mode !== 'no-usage')
      send({ id: 'cmpl-1', object: 'text_completion', created: 1, model: mode, choices: [],
             usage: { prompt_tokens: promptTokens, completion_tokens: request.max_tokens,
                      total_tokens: promptTokens + request.max_tokens } });
    if (mode !== 'no-done')
      send('[DONE]');
    res.end();
  });
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  fake.url = `http://127.0.0.1:${fake.address().port}`;
  return fake;
}

test('a server with /tokenize: prompts of exactly --input-len tokens', async (t) => {
  const fake = await startFake();
  t.after(() => fake.close());
  const r = await bench(['--url', fake.url, '--concurrency', '3', '--requests', '5',
                         '--input-len', '20', '--output-len', '6']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.json.settings.prompts, 'tokenizer');
  assert.equal(r.json.settings.model, 'good');
  assert.equal(r.json.successful, 5);
  assert.equal(r.json.total_input_tokens, 5 * 20);
  assert.equal(r.json.total_output_tokens, 5 * 6);
  assert.equal(r.json.token_count_mismatches, 0);
  assert.match(r.stdout, /Prompts:\s+cut to length by the server's \/tokenize/);
});

test('a server without /tokenize: prompts of --input-len words from the word list', async (t) => {
  const fake = await startFake({ tokenize: false });
  t.after(() => fake.close());
  const r = await bench(['--url', fake.url, '--concurrency', '2', '--requests', '4',
                         '--input-len', '12', '--output-len', '3']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.json.settings.prompts, 'word list');
  assert.equal(r.json.successful, 4);
  assert.equal(r.json.total_input_tokens, 4 * 12);      // the fake: one word, one token
});

test('broken streams are failed requests, with the first error said', async (t) => {
  const fake = await startFake();
  t.after(() => fake.close());
  const cases = { 'no-done': /\[DONE\]/, 'no-usage': /usage/, 'bad-json': /not a JSON/,
                  'http-error': /HTTP 500: the fake is out of order/, 'two-ids': /ids differ/ };
  for (const [mode, message] of Object.entries(cases)) {
    const r = await bench(['--url', fake.url, '--model', mode, '--concurrency', '2',
                           '--requests', '3', '--input-len', '4', '--output-len', '3']);
    assert.equal(r.code, 1, `${mode}: ${r.stderr}`);
    assert.equal(r.json.failed, 3, mode);
    assert.equal(r.json.successful, 0, mode);
    assert.match(r.json.first_error, message, mode);
  }
});
