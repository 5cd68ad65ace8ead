// The HTTP features around the endpoints, through `zllm serve` on stories260K: the API key
// (curl and the OpenAI SDK's AuthenticationError), CORS (preflight and simple requests,
// allowed and refused origins), /version, /v1/models/{id}, TLS with ALPN (curl over h2
// and HTTP/1.1, the SDK over https), the queue limit (429 with Retry-After), /metrics
// (Prometheus text, counters that follow the requests), and the command-line flags of
// this issue (bad values exit 2).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { startServer, postJson, curl, run, freePort, sleep, zllmBin, modelPath,
         repoRoot } from './server.mjs';

const MODEL = 'stories260K';
const KEY = 'sk-zllm-integration-test';
const GOOD_ORIGIN = 'https://good.example';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zllm-http-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

async function openAI() {
  const require = createRequire(path.join(repoRoot, 'tests', 'client', 'package.json'));
  return (await import(require.resolve('openai'))).default;
}

// curl with the response's headers: { status, headers (lower-case names), body, json,
// version }. args are curl's, the URL last.
let headerCount = 0;
function request(args, { input } = {}) {
  const headersPath = path.join(tmp, `headers-${headerCount++}`);
  const marker = '\n--zllm-status--';
  const result = spawnSync('curl', ['-sS', '--max-time', '60', '-D', headersPath,
                                    '-w', `${marker}%{http_code} %{http_version}`, ...args],
                           { encoding: 'utf8', input, maxBuffer: 64 * 1024 * 1024 });
  const out = result.stdout ?? '';
  const at = out.lastIndexOf(marker);
  const body = at >= 0 ? out.slice(0, at) : out;
  const [status, version] = at >= 0 ? out.slice(at + marker.length).split(' ') : ['0', ''];
  const headers = {};
  let text = '';
  try { text = fs.readFileSync(headersPath, 'utf8'); fs.rmSync(headersPath); } catch { /* none */ }
  // The last response's headers (after a possible 100 Continue).
  const blocks = text.split('\r\n\r\n').filter((block) => block.length > 0);
  for (const line of (blocks.at(-1) ?? '').split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0)
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  let json;
  try { json = JSON.parse(body); } catch { json = undefined; }
  return { status: Number(status), version, headers, body, json, stderr: result.stderr };
}

// /metrics as a map: sample (name{labels}) -> number.
function metrics(url, extra = []) {
  const r = request([...extra, `${url}/metrics`]);
  assert.equal(r.status, 200, r.body);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  const samples = new Map();
  for (const line of r.body.split('\n')) {
    if (line === '' || line.startsWith('#'))
      continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return { text: r.body, samples };
}

const label = `{model_name="${MODEL}"}`;
const reasonLabel = (reason) => `{model_name="${MODEL}",finished_reason="${reason}"}`;

// A self-signed certificate and key (CN localhost) made with the openssl command.
function makeCertificate(name) {
  const cert = path.join(tmp, `${name}.crt`);
  const key = path.join(tmp, `${name}.key`);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                                  '-subj', '/CN=localhost', '-keyout', key, '-out', cert],
                      { encoding: 'utf8' });
  assert.equal(r.status, 0, `openssl req failed (is the openssl command installed?): ` +
                            `${r.stderr ?? r.error}`);
  return { cert, key };
}


// --------------------------------------------------------------------------
// One server with an API key and a restricted CORS policy; one with the defaults.

let keyed;
let plain;

before(async () => {
  // The key from the environment, as vLLM's VLLM_API_KEY; the server inherits it.
  process.env.ZLLM_API_KEY = KEY;
  try {
    keyed = await startServer('stories260K.gguf',
      ['--allowed-origins', JSON.stringify([GOOD_ORIGIN]), '--allowed-methods', '["POST","GET"]',
       '--allowed-headers', '["Authorization","Content-Type","X-Custom"]',
       '--allow-credentials']);
  } finally {
    delete process.env.ZLLM_API_KEY;
  }
  plain = await startServer('stories260K.gguf',
    ['--block-size', '32', '--kv-cache-memory', '64MiB', '--max-num-batched-tokens', '256',
     '--no-prefix-caching']);
});

after(async () => {
  for (const server of [keyed, plain]) {
    if (!server)
      continue;
    const { code } = await server.stop('SIGTERM');
    assert.equal(code, 0, server.log);
  }
});

test('API key: /v1 needs "Authorization: Bearer KEY", 401 otherwise; /health, /version, ' +
     '/metrics stay open', () => {
  const body = JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 4,
                                temperature: 0 });
  const post = (extra) => request(['-H', 'Content-Type: application/json', ...extra,
                                   '--data-binary', '@-', `${keyed.url}/v1/completions`],
                                  { input: body });
  for (const extra of [[], ['-H', 'Authorization: Bearer sk-wrong'],
                       ['-H', `Authorization: Bearer ${KEY}x`], ['-H', `Authorization: ${KEY}`],
                       ['--http2-prior-knowledge', '-H', 'Authorization: Bearer nope']]) {
    const r = post(extra);
    assert.equal(r.status, 401, `${extra.join(' ')}: ${r.body}`);
    assert.equal(r.json.error.type, 'authentication_error');
    assert.equal(r.json.error.code, 'invalid_api_key');
    assert.equal(r.json.error.param, null);
    assert.match(r.json.error.message, extra.length === 0 ? /didn't provide an API key/
                                                          : /Incorrect API key provided/);
    assert.equal(r.headers['www-authenticate'], 'Bearer');
  }
  const ok = post(['-H', `Authorization: Bearer ${KEY}`]);
  assert.equal(ok.status, 200, ok.body);
  assert.equal(ok.json.usage.completion_tokens, 4);
  assert.equal(request([`${keyed.url}/v1/models`]).status, 401);
  assert.equal(request([`${keyed.url}/v1/models/${MODEL}`]).status, 401);
  assert.equal(request(['-H', `Authorization: Bearer ${KEY}`, `${keyed.url}/v1/models`]).status,
               200);
  for (const open of ['/health', '/version', '/metrics'])
    assert.equal(request([`${keyed.url}${open}`]).status, 200, open);
});

test('API key: the OpenAI SDK raises AuthenticationError for a wrong key, works with the ' +
     'right one', async () => {
  const OpenAI = await openAI();
  const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(wrong.completions.create({ model: MODEL, prompt: 'x', max_tokens: 2 }),
                       (error) => error instanceof OpenAI.AuthenticationError
                                  && error.status === 401 && error.code === 'invalid_api_key');
  await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
  const right = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: KEY });
  const completion = await right.completions.create({ model: MODEL, prompt: 'Once upon a time',
                                                      max_tokens: 4, temperature: 0 });
  assert.equal(completion.usage.completion_tokens, 4);
  const model = await right.models.retrieve(MODEL);
  assert.equal(model.id, MODEL);
});

test('CORS restricted: the allowed origin is named with credentials, others get nothing; ' +
     'preflights answered without a key', () => {
  const good = request(['-H', `Origin: ${GOOD_ORIGIN}`, '-H', `Authorization: Bearer ${KEY}`,
                        `${keyed.url}/v1/models`]);
  assert.equal(good.status, 200);
  assert.equal(good.headers['access-control-allow-origin'], GOOD_ORIGIN);
  assert.equal(good.headers['access-control-allow-credentials'], 'true');
  assert.equal(good.headers.vary, 'Origin');
  // Errors carry them too, so the page can read the 401.
  const denied = request(['-H', `Origin: ${GOOD_ORIGIN}`, `${keyed.url}/v1/models`]);
  assert.equal(denied.status, 401);
  assert.equal(denied.headers['access-control-allow-origin'], GOOD_ORIGIN);
  const evil = request(['-H', 'Origin: https://evil.example', '-H', `Authorization: Bearer ${KEY}`,
                        `${keyed.url}/v1/models`]);
  assert.equal(evil.status, 200);
  assert.equal(evil.headers['access-control-allow-origin'], undefined);

  for (const http2 of [false, true]) {
    const preflight = request([http2 ? '--http2-prior-knowledge' : '--http1.1', '-X', 'OPTIONS',
                               '-H', `Origin: ${GOOD_ORIGIN}`,
                               '-H', 'Access-Control-Request-Method: POST',
                               '-H', 'Access-Control-Request-Headers: authorization,content-type',
                               `${keyed.url}/v1/chat/completions`]);
    assert.equal(preflight.status, 204, preflight.body);
    assert.equal(preflight.body, '');
    assert.equal(preflight.headers['access-control-allow-origin'], GOOD_ORIGIN);
    assert.equal(preflight.headers['access-control-allow-methods'], 'POST, GET');
    assert.match(preflight.headers['access-control-allow-headers'], /Authorization/);
    assert.equal(preflight.headers['access-control-max-age'], '600');
  }
  for (const [origin, method, headers] of [['https://evil.example', 'POST', 'content-type'],
                                           [GOOD_ORIGIN, 'DELETE', 'content-type'],
                                           [GOOD_ORIGIN, 'POST', 'x-other']]) {
    const refused = request(['-X', 'OPTIONS', '-H', `Origin: ${origin}`,
                             '-H', `Access-Control-Request-Method: ${method}`,
                             '-H', `Access-Control-Request-Headers: ${headers}`,
                             `${keyed.url}/v1/completions`]);
    assert.equal(refused.status, 400, `${origin} ${method} ${headers}`);
    assert.match(refused.json.error.message, /Disallowed CORS/);
    assert.equal(refused.headers['access-control-allow-origin'], undefined);
  }
});

test('CORS default (as vLLM): every origin gets "*", preflights allow what they ask', () => {
  const r = request(['-H', 'Origin: https://anywhere.example', `${plain.url}/v1/models`]);
  assert.equal(r.status, 200);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.equal(r.headers['access-control-allow-credentials'], undefined);
  assert.equal(request([`${plain.url}/v1/models`]).headers['access-control-allow-origin'],
               undefined);
  const preflight = request(['-X', 'OPTIONS', '-H', 'Origin: https://anywhere.example',
                             '-H', 'Access-Control-Request-Method: POST',
                             '-H', 'Access-Control-Request-Headers: authorization, x-stainless-os',
                             `${plain.url}/v1/completions`]);
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers['access-control-allow-origin'], '*');
  assert.match(preflight.headers['access-control-allow-methods'], /POST/);
  assert.equal(preflight.headers['access-control-allow-headers'], 'authorization, x-stainless-os');
  // A streamed answer carries the header too.
  const stream = postJson(`${plain.url}/v1/completions`,
                          { model: MODEL, prompt: 'Once', max_tokens: 3, stream: true },
                          { extra: ['-H', 'Origin: https://anywhere.example', '-D', '-'] });
  assert.equal(stream.status, 200);
  assert.match(stream.body, /access-control-allow-origin: \*/i);
});

test('/version and /v1/models/{id}', async () => {
  const version = request([`${plain.url}/version`]);
  assert.equal(version.status, 200);
  const printed = run(['--version']).stdout.trim();
  assert.equal(`zllm ${version.json.version}`, printed);
  const list = request([`${plain.url}/v1/models`]).json;
  for (const http2 of [false, true]) {
    const one = request([http2 ? '--http2-prior-knowledge' : '--http1.1',
                         `${plain.url}/v1/models/${MODEL}`]);
    assert.equal(one.status, 200);
    assert.deepEqual(one.json, list.data[0]);
    const missing = request([`${plain.url}/v1/models/gpt-4o`]);
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.code, 'model_not_found');
    assert.equal(missing.json.error.type, 'invalid_request_error');
    assert.match(missing.json.error.message, /gpt-4o/);
  }
  const OpenAI = await openAI();
  const client = new OpenAI({ baseURL: `${plain.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  assert.deepEqual(await client.models.retrieve(MODEL), list.data[0]);
  await assert.rejects(client.models.retrieve('gpt-4o'), OpenAI.NotFoundError);
});

test('/metrics: Prometheus text; token totals follow usage, success by finish reason, ' +
     'histograms count the requests, running back to 0', async () => {
  const before = metrics(plain.url);
  for (const [name, type] of [['zllm:num_requests_running', 'gauge'],
                              ['zllm:num_requests_waiting', 'gauge'],
                              ['zllm:kv_cache_usage_perc', 'gauge'],
                              ['zllm:prompt_tokens_total', 'counter'],
                              ['zllm:generation_tokens_total', 'counter'],
                              ['zllm:request_success_total', 'counter'],
                              ['zllm:prefix_cache_queries_total', 'counter'],
                              ['zllm:prefix_cache_hits_total', 'counter'],
                              ['zllm:num_preemptions_total', 'counter'],
                              ['zllm:time_to_first_token_seconds', 'histogram'],
                              ['zllm:inter_token_latency_seconds', 'histogram'],
                              ['zllm:e2e_request_latency_seconds', 'histogram']]) {
    assert.ok(before.text.includes(`# HELP ${name} `), name);
    assert.ok(before.text.includes(`# TYPE ${name} ${type}\n`), name);
  }
  assert.ok(before.samples.has(`zllm:time_to_first_token_seconds_bucket{model_name="${MODEL}",` +
                               'le="+Inf"}'));

  const OpenAI = await openAI();
  const client = new OpenAI({ baseURL: `${plain.url}/v1`, apiKey: 'unused' });
  let prompt = 0, completion = 0;
  const reasons = { stop: 0, length: 0 };
  for (const maxTokens of [5, 12]) {
    const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time',
                                                max_tokens: maxTokens, temperature: 0 });
    prompt += r.usage.prompt_tokens;
    completion += r.usage.completion_tokens;
    reasons[r.choices[0].finish_reason]++;
  }
  const stream = await client.completions.create({ model: MODEL, prompt: 'The cat', max_tokens: 9,
                                                   temperature: 0, stream: true,
                                                   stream_options: { include_usage: true } });
  for await (const chunk of stream) {
    if (chunk.usage) {
      prompt += chunk.usage.prompt_tokens;
      completion += chunk.usage.completion_tokens;
    }
    const finish = chunk.choices[0]?.finish_reason;
    if (finish)
      reasons[finish]++;
  }

  const delta = (after, name) => after.samples.get(name) - before.samples.get(name);
  // The scheduler's STATUS comes on every change: running goes back to 0.
  let after;
  for (let tries = 0; tries < 100; tries++) {
    after = metrics(plain.url);
    if (after.samples.get(`zllm:num_requests_running${label}`) === 0)
      break;
    await sleep(50);
  }
  assert.equal(after.samples.get(`zllm:num_requests_running${label}`), 0);
  assert.equal(after.samples.get(`zllm:num_requests_waiting${label}`), 0);
  assert.equal(delta(after, `zllm:prompt_tokens_total${label}`), prompt);
  assert.equal(delta(after, `zllm:generation_tokens_total${label}`), completion);
  assert.equal(delta(after, `zllm:request_success_total${reasonLabel('stop')}`), reasons.stop);
  assert.equal(delta(after, `zllm:request_success_total${reasonLabel('length')}`), reasons.length);
  assert.equal(delta(after, `zllm:request_success_total${reasonLabel('tool_calls')}`), 0);
  assert.equal(delta(after, `zllm:time_to_first_token_seconds_count${label}`), 3);
  assert.equal(delta(after, `zllm:e2e_request_latency_seconds_count${label}`), 3);
  assert.ok(delta(after, `zllm:e2e_request_latency_seconds_sum${label}`) > 0);
  // One inter-token sample per token after the first text, at most.
  const itl = delta(after, `zllm:inter_token_latency_seconds_count${label}`);
  assert.ok(itl > 0 && itl <= completion - 3, `${itl} inter-token samples`);
  const usage = after.samples.get(`zllm:kv_cache_usage_perc${label}`);
  assert.ok(usage >= 0 && usage <= 1, `kv usage ${usage}`);
  assert.ok(after.samples.get(`zllm:prefix_cache_hits_total${label}`) <=
            after.samples.get(`zllm:prefix_cache_queries_total${label}`));
});


// --------------------------------------------------------------------------
// The queue limit: one sequence at a time, one request may wait. On toy-chat, whose
// tokens take milliseconds each (stories260K writes 400 in a fifth of a second): a
// request of 1000 tokens runs for seconds, long enough to look at the queue.

test('--max-queued-requests: a request that finds the queue full gets 429 with Retry-After',
     async (t) => {
  const server = await startServer('toy-chat.gguf',
    ['--max-num-seqs', '1', '--max-queued-requests', '1']);
  t.after(async () => {
    const { code } = await server.stop('SIGTERM');
    assert.equal(code, 0, server.log);
  });
  const label = '{model_name="toy-chat"}';
  // A long request, streamed, that runs (its first chunk has come).
  const long = { model: 'toy-chat', prompt: 'Once upon a time', max_tokens: 1000,
                 temperature: 1, ignore_eos: true, stream: true };
  const running = new AbortController();
  const first = await fetch(`${server.url}/v1/completions`,
                            { method: 'POST', headers: { 'Content-Type': 'application/json' },
                              body: JSON.stringify(long), signal: running.signal });
  assert.equal(first.status, 200);
  const reader = first.body.getReader();
  await reader.read();
  // A second one waits behind it (max-num-seqs 1).
  const waiting = new AbortController();
  const second = fetch(`${server.url}/v1/completions`,
                       { method: 'POST', headers: { 'Content-Type': 'application/json' },
                         body: JSON.stringify(long), signal: waiting.signal })
    .catch(() => null);
  let m;
  for (let tries = 0; tries < 100; tries++) {
    m = metrics(server.url);
    if (m.samples.get(`zllm:num_requests_waiting${label}`) === 1)
      break;
    await sleep(20);
  }
  assert.equal(m.samples.get(`zllm:num_requests_waiting${label}`), 1, m.text);
  assert.equal(m.samples.get(`zllm:num_requests_running${label}`), 1, m.text);

  // A third: 429, over HTTP/1.1 and h2c, and the SDK's RateLimitError.
  for (const http2 of [false, true]) {
    const r = request([http2 ? '--http2-prior-knowledge' : '--http1.1',
                       '-H', 'Content-Type: application/json', '--data-binary', '@-',
                       `${server.url}/v1/completions`],
                      { input: JSON.stringify({ model: 'toy-chat', prompt: 'x', max_tokens: 2 }) });
    assert.equal(r.status, 429, r.body);
    assert.equal(r.headers['retry-after'], '1');
    assert.equal(r.json.error.type, 'rate_limit_error');
    assert.match(r.json.error.message, /--max-queued-requests 1/);
  }
  const OpenAI = await openAI();
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  await assert.rejects(client.chat.completions.create({
    model: 'toy-chat', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
    OpenAI.RateLimitError);
  // Other endpoints are not limited.
  assert.equal(request([`${server.url}/v1/models`]).status, 200);

  // Gone: the running one and the waiting one; then requests are taken again.
  running.abort();
  waiting.abort();
  await second;
  let free;
  for (let tries = 0; tries < 200; tries++) {
    free = metrics(server.url);
    if (free.samples.get(`zllm:num_requests_running${label}`) === 0
        && free.samples.get(`zllm:num_requests_waiting${label}`) === 0)
      break;
    await sleep(25);
  }
  assert.equal(free.samples.get(`zllm:num_requests_running${label}`), 0, free.text);
  const ok = postJson(`${server.url}/v1/completions`,
                      { model: 'toy-chat', prompt: 'Once', max_tokens: 3, temperature: 0 });
  assert.equal(ok.status, 200, ok.body);
});


// --------------------------------------------------------------------------
// TLS

// `zllm serve` on TLS: its own start, since /health is over https.
async function startTlsServer(extra) {
  const port = await freePort();
  const logPath = path.join(tmp, `tls-${port}.log`);
  const logFd = fs.openSync(logPath, 'w');
  const proc = spawn(zllmBin, ['serve', modelPath('stories260K.gguf'), '--host', '127.0.0.1',
                               '--port', String(port), ...extra],
                     { stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  const server = { url: `https://127.0.0.1:${port}`, proc,
                   log: () => fs.readFileSync(logPath, 'utf8'),
                   stop: async () => { proc.kill('SIGTERM'); return exited; } };
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null)
      throw new Error(`zllm serve exited with ${proc.exitCode}; log:\n${server.log()}`);
    if (curl(['-sk', `${server.url}/health`]).status === 200)
      return server;
    await sleep(50);
  }
  proc.kill('SIGKILL');
  throw new Error(`zllm serve on TLS did not become ready; log:\n${server.log()}`);
}

test('TLS: h2 and http/1.1 by ALPN with a self-signed certificate; the SDK over https',
     async (t) => {
  const { cert, key } = makeCertificate('server');
  const server = await startTlsServer(['--ssl-certfile', cert, '--ssl-keyfile', key]);
  t.after(async () => assert.equal(await server.stop(), 0, server.log()));
  const body = JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 6,
                                temperature: 0 });
  const texts = [];
  for (const [flag, version] of [['--http2', '2'], ['--http1.1', '1.1']]) {
    const r = request(['-k', flag, '-H', 'Content-Type: application/json',
                       '--data-binary', '@-', `${server.url}/v1/completions`], { input: body });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.version, version, flag);
    texts.push(r.json.choices[0].text);
    // Verbose curl names the protocol ALPN chose.
    const verbose = spawnSync('curl', ['-sk', '-v', flag, '-o', '/dev/null',
                                       `${server.url}/v1/models`], { encoding: 'utf8' });
    assert.match(verbose.stderr, flag === '--http2' ? /ALPN: server accepted h2/
                                                    : /ALPN: server accepted http\/1\.1/);
  }
  assert.equal(texts[0], texts[1]);
  // Streaming over h2 on TLS.
  const stream = request(['-k', '--http2', '-N', '-H', 'Content-Type: application/json',
                          '--data-binary', '@-', `${server.url}/v1/completions`],
                         { input: JSON.stringify({ model: MODEL, prompt: 'Once', max_tokens: 5,
                                                   stream: true }) });
  assert.equal(stream.status, 200);
  assert.ok(stream.body.trimEnd().endsWith('data: [DONE]'), stream.body);
  // Cleartext on the TLS port: no HTTP answer.
  assert.equal(curl([`http://127.0.0.1:${new URL(server.url).port}/health`]).status, 0);

  // The OpenAI SDK (Node's fetch) with the self-signed certificate accepted.
  const saved = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  try {
    const OpenAI = await openAI();
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
    const completion = await client.completions.create({ model: MODEL, prompt: 'Once upon a time',
                                                         max_tokens: 6, temperature: 0 });
    assert.equal(completion.choices[0].text, texts[0]);
  } finally {
    if (saved === undefined)
      delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else
      process.env.NODE_TLS_REJECT_UNAUTHORIZED = saved;
  }
});


// --------------------------------------------------------------------------
// The command line

test('flags of this issue: in --help; bad values exit 2 with a message', () => {
  const help = run(['serve', '--help']).stdout;
  for (const flag of ['--api-key', '--allowed-origins', '--allowed-methods', '--allowed-headers',
                      '--allow-credentials', '--ssl-certfile', '--ssl-keyfile',
                      '--max-queued-requests', '--max-num-seqs', '--max-num-batched-tokens',
                      '--no-prefix-caching', '--block-size', '--kv-cache-memory'])
    assert.ok(help.includes(flag), flag);
  const workerHelp = run(['worker', '--help']).stdout;
  for (const flag of ['--block-size', '--kv-cache-memory'])
    assert.ok(workerHelp.includes(flag), flag);
  // The scheduler decides how many run at once: the worker has no such option.
  assert.doesNotMatch(workerHelp, /^\s+--max-num-seqs/m);

  const model = modelPath('stories260K.gguf');
  const { cert, key } = makeCertificate('flags');
  const other = makeCertificate('other');
  const cases = [
    [['--allowed-origins', '[bad'], /--allowed-origins: not valid JSON/],
    [['--allowed-origins', '"*"'], /--allowed-origins: not a JSON list/],
    [['--allowed-methods', '[1]'], /--allowed-methods: element 0/],
    [['--allowed-headers', '{}'], /--allowed-headers: not a JSON list/],
    [['--api-key', ''], /--api-key/],
    [['--ssl-certfile', cert], /go together/],
    [['--ssl-certfile', path.join(tmp, 'absent.crt'), '--ssl-keyfile', key],
     /--ssl-certfile: cannot read .*No such file/],
    [['--ssl-certfile', cert, '--ssl-keyfile', other.key], /does not match/],
    [['--ssl-certfile', key, '--ssl-keyfile', key], /--ssl-certfile: .* no usable PEM certificate/],
    [['--max-queued-requests', '0'], /--max-queued-requests/],
    [['--max-num-seqs', '0'], /--max-num-seqs/],
    [['--max-num-seqs', '4097'], /--max-num-seqs/],
    [['--max-num-batched-tokens', 'lots'], /--max-num-batched-tokens/],
    [['--block-size', '0'], /--block-size/],
    [['--block-size', '2048'], /--block-size/],
    [['--kv-cache-memory', '1e9'], /--kv-cache-memory: '1e9' is not a size/],
    [['--kv-cache-memory', '2GB'], /not a size/],
    [['--kv-cache-memory', '-1G'], /not a size/],
    [['--kv-cache-memory', '1.5'], /more than 0 and at most 1/],
    [['--kv-cache-memory', '0.0'], /more than 0 and at most 1/],
    [['--kv-cache-memory', '100'], /too small/],
    [['--kv-cache-memory', '99999999T'], /too large/],
  ];
  for (const [args, message] of cases) {
    const r = run(['serve', model, '--port', '0', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
  for (const [args, message] of [[['--max-num-seqs', '4'], /unrecognized option/],
                                 [['--kv-cache-memory', '12XB'], /not a size/],
                                 [['--block-size', '0'], /--block-size/]]) {
    const r = run(['worker', model, '--connect', 'tcp://127.0.0.1:1', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
});
