// Helpers the integration tests share: start `zllm serve` / `zllm worker` on free
// loopback ports, wait until they are ready, drive them with curl, stop them.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const zllmBin = process.env.ZLLM_BIN ?? path.join(repoRoot, 'build', 'actors', 'zllm');
export const sharedDir = process.env.ZLLM_SHARED_DIR ?? path.resolve(repoRoot, '..', 'shared');
export const modelPath = (name) => path.join(sharedDir, 'models', name);

export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A child process whose output goes to a log file, so a failing test can show it. (Not a
// pipe: tests block node's event loop in spawnSync, and a pipe nobody reads fills up and
// stops the server at its next log line.)
let childCount = 0;
class Child {
  constructor(args) {
    this.args = args;
    this.logPath = path.join(os.tmpdir(), `zllm-test-${process.pid}-${childCount++}.log`);
    const logFd = fs.openSync(this.logPath, 'w');
    this.proc = spawn(zllmBin, args, { stdio: ['ignore', logFd, logFd] });
    fs.closeSync(logFd);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve({ code, signal }));
    });
    process.on('exit', () => { try { fs.rmSync(this.logPath); } catch { /* gone */ } });
  }

  get log() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  // Send a signal and wait for the exit, at most timeoutMs; returns { code, signal, ms }.
  async stop(signal = 'SIGTERM', timeoutMs = 10000) {
    const started = Date.now();
    if (this.proc.exitCode === null && this.proc.signalCode === null)
      this.proc.kill(signal);
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), timeoutMs); });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (!result) {
      this.proc.kill('SIGKILL');
      throw new Error(`zllm ${this.args[0]} did not exit within ${timeoutMs} ms after ` +
                      `${signal}; log:\n${this.log}`);
    }
    return { ...result, ms: Date.now() - started };
  }
}

// Start `zllm serve MODEL ...extra` on a free port and wait until /health says ok
// (or, with waitHealthy false, until the port answers at all).
export async function startServer(model, extra = [], { waitHealthy = true } = {}) {
  const port = await freePort();
  const child = new Child(['serve', modelPath(model), '--host', '127.0.0.1',
                           '--port', String(port), ...extra]);
  child.port = port;
  child.url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if (child.proc.exitCode !== null)
      throw new Error(`zllm serve exited with ${child.proc.exitCode}; log:\n${child.log}`);
    const health = curl(['-s', `${child.url}/health`]);
    if (health.status === 200 || (!waitHealthy && health.status > 0))
      return child;
    await sleep(50);
  }
  await child.stop('SIGKILL');
  throw new Error(`zllm serve did not become ready; log:\n${child.log}`);
}

export function startWorker(model, extra = []) {
  return new Child(['worker', modelPath(model), ...extra]);
}

// Run curl; returns { status, body, json, exitCode }. status is 0 when no HTTP answer.
export function curl(args, { input } = {}) {
  const marker = '\n--zllm-status--';
  const result = spawnSync('curl', ['-sS', '--max-time', '60', '-w', `${marker}%{http_code}`,
                                    ...args],
                           { encoding: 'utf8', input, maxBuffer: 64 * 1024 * 1024 });
  const out = result.stdout ?? '';
  const at = out.lastIndexOf(marker);
  const body = at >= 0 ? out.slice(0, at) : out;
  const status = at >= 0 ? Number(out.slice(at + marker.length)) : 0;
  let json;
  try { json = JSON.parse(body); } catch { json = undefined; }
  return { status, body, json, exitCode: result.status, stderr: result.stderr };
}

// POST a JSON body (an object, or a string sent as it is) over HTTP/1.1 or h2c.
export function postJson(url, body, { http2 = false, extra = [] } = {}) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  return curl([...(http2 ? ['--http2-prior-knowledge'] : ['--http1.1']),
               '-H', 'Content-Type: application/json', '--data-binary', '@-', ...extra, url],
              { input: data });
}

// The same, without blocking the event loop (for concurrent requests).
export function postJsonAsync(url, body, { http2 = false } = {}) {
  return new Promise((resolve) => {
    const marker = '\n--zllm-status--';
    const proc = spawn('curl', ['-sS', '--max-time', '60', '-w', `${marker}%{http_code}`,
                                http2 ? '--http2-prior-knowledge' : '--http1.1',
                                '-H', 'Content-Type: application/json',
                                '--data-binary', '@-', url]);
    let out = '';
    proc.stdout.on('data', (chunk) => { out += chunk; });
    // 'close', not 'exit': only then has all of curl's output been read.
    proc.on('close', (exitCode) => {
      const at = out.lastIndexOf(marker);
      const text = at >= 0 ? out.slice(0, at) : out;
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      resolve({ status: at >= 0 ? Number(out.slice(at + marker.length)) : 0, body: text,
                json, exitCode });
    });
    proc.stdin.end(typeof body === 'string' ? body : JSON.stringify(body));
  });
}

export function run(args) {
  const result = spawnSync(zllmBin, args, { encoding: 'utf8', timeout: 30000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}
