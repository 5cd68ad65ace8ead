// A worker in another process: `zllm serve --devices none --worker-listen tcp://...` plus
// `zllm worker --connect tcp://...` serve the same request with the same result; a worker
// that freezes or dies gives errors, not hangs; a worker for another model is refused;
// garbage on the worker port harms nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startServer, startWorker, postJson, postJsonAsync, curl, freePort, sleep,
         sharedDir } from './server.mjs';

const greedy = JSON.parse(fs.readFileSync(path.join(sharedDir, 'reference', 'greedy.json')));
const reference = greedy[0];

async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check())
      return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('a remote worker serves the same request with the same result', async (t) => {
  const workerPort = await freePort();
  const endpoint = `tcp://127.0.0.1:${workerPort}`;
  const server = await startServer('stories260K.gguf',
    ['--devices', 'none', '--worker-listen', endpoint], { waitHealthy: false });
  const workers = [];
  t.after(async () => {
    for (const worker of workers)
      await worker.stop('SIGKILL');
    await server.stop('SIGTERM');
  });
  const request = { model: 'stories260K', prompt: reference.prompt,
                    max_tokens: reference.n_predict, temperature: 0 };

  // No worker yet: not healthy, and a request is refused at once, not left hanging.
  assert.equal(curl([`${server.url}/health`]).status, 503);
  let r = postJson(`${server.url}/v1/completions`, request);
  assert.equal(r.status, 503, r.body);

  // Garbage on the worker port: raw bytes, then a half-open connection.
  for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.alloc(4096, 0xff),
                       Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0])]) {
    const socket = net.connect(workerPort, '127.0.0.1');
    socket.on('error', () => {});
    socket.end(bytes);
  }

  workers.push(startWorker('stories260K.gguf', ['--connect', endpoint, '--device', 'cpu:0']));
  await waitFor(() => curl([`${server.url}/health`]).status === 200, 10000, 'the worker');
  r = postJson(`${server.url}/v1/completions`, request);
  assert.equal(r.status, 200, r.body + server.log);
  assert.equal(r.json.choices[0].text, reference.output_text);
  r = postJson(`${server.url}/v1/completions`, request, { http2: true });
  assert.equal(r.json.choices[0].text, reference.output_text);

  // A frozen worker: its request fails once the heartbeat times out (5 s), no hang.
  workers[0].proc.kill('SIGSTOP');
  const started = Date.now();
  r = await postJsonAsync(`${server.url}/v1/completions`, request);
  assert.equal(r.status, 503, r.body);
  assert.match(r.json.error.message, /worker/);
  assert.ok(Date.now() - started < 15000);
  assert.equal(curl([`${server.url}/health`]).status, 503);
  workers[0].proc.kill('SIGKILL');
  await workers[0].exited;

  // A new worker brings the server back.
  workers.push(startWorker('stories260K.gguf', ['--connect', endpoint]));
  await waitFor(() => curl([`${server.url}/health`]).status === 200, 10000, 'a new worker');
  r = postJson(`${server.url}/v1/completions`, request);
  assert.equal(r.json.choices[0].text, reference.output_text);

  // Killed: the next request is refused at once; the scheduler noticed.
  workers[1].proc.kill('SIGKILL');
  await workers[1].exited;
  await waitFor(() => curl([`${server.url}/health`]).status === 503, 10000,
                'the scheduler to notice the dead worker');
  r = postJson(`${server.url}/v1/completions`, request);
  assert.equal(r.status, 503, r.body);
});

test('a worker for another model is refused and says why', async (t) => {
  const endpoint = `tcp://127.0.0.1:${await freePort()}`;
  const server = await startServer('stories260K.gguf',
    ['--devices', 'none', '--worker-listen', endpoint], { waitHealthy: false });
  t.after(() => server.stop('SIGTERM'));
  const worker = startWorker('llama-2-tiny-random.gguf', ['--connect', endpoint]);
  const { code } = await Promise.race([worker.exited,
                                       sleep(10000).then(() => ({ code: 'timeout' }))]);
  if (code === 'timeout')
    await worker.stop('SIGKILL');
  assert.equal(code, 1, worker.log);
  assert.match(worker.log, /refused.*another model/);
  assert.equal(curl([`${server.url}/health`]).status, 503);
});

test('a worker started before its server joins when the server comes up', async (t) => {
  const port = await freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  const worker = startWorker('stories260K.gguf', ['--connect', endpoint]);
  t.after(() => worker.stop('SIGTERM'));
  await sleep(300);
  const server = await startServer('stories260K.gguf',
    ['--devices', 'none', '--worker-listen', endpoint]);
  t.after(() => server.stop('SIGTERM'));
  const r = postJson(`${server.url}/v1/completions`,
    { model: 'stories260K', prompt: reference.prompt, max_tokens: 8, temperature: 0 });
  assert.equal(r.status, 200, r.body);
});
