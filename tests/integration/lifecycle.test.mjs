// The zllm program's life: its command line, bad model files, and a clean shutdown on
// SIGINT / SIGTERM with requests in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run, startServer, startWorker, postJson, postJsonAsync, curl, freePort, sleep,
         modelPath } from './server.mjs';

test('--help describes every command and flag; bad command lines exit 2', () => {
  const top = run(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /serve/);
  assert.match(top.stdout, /worker/);
  const serve = run(['serve', '--help']);
  assert.equal(serve.code, 0);
  for (const flag of ['--host', '--port', '--chat-template', '--served-model-name', '--devices',
                      '--worker-listen', '--max-model-len', '--max-num-seqs', '--max-body-size',
                      '--shutdown-timeout', '--log-level', '--threads',
                      '--enable-auto-tool-choice', '--tool-call-parser', '--response-role'])
    assert.ok(serve.stdout.includes(flag), flag);
  const worker = run(['worker', '--help']);
  assert.equal(worker.code, 0);
  assert.match(worker.stdout, /--connect/);

  const model = modelPath('stories260K.gguf');
  for (const args of [[], ['frobnicate'], ['serve'], ['serve', model, '--bogus'],
                      ['serve', model, '--port', '70000'], ['serve', model, '--port', 'x'],
                      ['serve', model, '--devices', 'cuda:0'],
                      ['serve', model, '--devices', 'cpu:0,cpu:0'],
                      ['serve', model, '--devices', 'none'],
                      ['serve', model, '--log-level', 'loud'],
                      ['worker', model], ['worker', model, '--connect', 'tcp://x:1',
                                          '--device', 'npu:0']]) {
    const r = run(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.length > 0);
  }
  const cuda = run(['serve', model, '--devices', 'cuda:0']);
  assert.match(cuda.stderr, /not built into this zllm/);
});

test('a missing, truncated or corrupt model file is a clean error, exit 1', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zllm-'));
  const bytes = fs.readFileSync(modelPath('stories260K.gguf'));
  const truncated = path.join(dir, 'truncated.gguf');
  fs.writeFileSync(truncated, bytes.subarray(0, 5000));
  const noTensors = path.join(dir, 'short.gguf');
  fs.writeFileSync(noTensors, bytes.subarray(0, bytes.length - 1000));
  const flipped = path.join(dir, 'flipped.gguf');
  const copy = Buffer.from(bytes);
  copy.writeUInt32LE(0xfffffff0, 8);           // tensor count
  fs.writeFileSync(flipped, copy);
  const template = path.join(dir, 'template.jinja');
  fs.writeFileSync(template, '{{ messages }}');
  for (const file of [path.join(dir, 'absent.gguf'), truncated, noTensors, flipped]) {
    const r = run(['serve', file, '--port', '0', '--chat-template', template]);
    assert.equal(r.code, 1, `${file}: ${r.stderr}`);
    assert.match(r.stderr, /zllm: .+/);
  }
  const r = run(['serve', modelPath('stories260K.gguf'), '--port', '0',
                 '--chat-template', path.join(dir, 'absent.jinja')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /chat-template/);
  fs.rmSync(dir, { recursive: true });
});

test('a port in use is a clean error', async (t) => {
  const server = await startServer('stories260K.gguf');
  t.after(() => server.stop());
  const r = run(['serve', modelPath('stories260K.gguf'), '--port', String(server.port)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /frontend/);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`${signal} stops an idle server within a few seconds, exit 0`, async () => {
    const server = await startServer('stories260K.gguf');
    assert.equal(postJson(`${server.url}/v1/completions`, { model: 'stories260K', prompt: 'Hi', max_tokens: 4 })
                 .status, 200);
    const { code, ms } = await server.stop(signal);
    assert.equal(code, 0, server.log);
    assert.ok(ms < 3000, `took ${ms} ms`);
    assert.match(server.log, /stopped/);
  });
}

test('SIGTERM with a request in flight: it gets an answer, the server exits', async (t) => {
  // A frozen remote worker holds the request in flight for as long as we like.
  const endpoint = `tcp://127.0.0.1:${await freePort()}`;
  const server = await startServer('stories260K.gguf',
    ['--devices', 'none', '--worker-listen', endpoint, '--shutdown-timeout', '1'],
    { waitHealthy: false });
  const worker = startWorker('stories260K.gguf', ['--connect', endpoint]);
  t.after(() => worker.stop('SIGKILL'));
  const deadline = Date.now() + 10000;
  while (curl([`${server.url}/health`]).status !== 200 && Date.now() < deadline)
    await sleep(50);
  worker.proc.kill('SIGSTOP');
  const pending = postJsonAsync(`${server.url}/v1/completions`,
                                { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 8 });
  await sleep(300);
  const { code, ms } = await server.stop('SIGTERM');
  const r = await pending;
  assert.equal(r.status, 503, r.body);
  assert.equal(code, 0, server.log);
  assert.ok(ms < 4000, `took ${ms} ms`);
});
