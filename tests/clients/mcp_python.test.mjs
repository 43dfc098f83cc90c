// The Python `mcp` SDK (PyPI, pinned in python/requirements.lock, installed by scripts/test into
// build/pyvenv) runs its OAuthClientProvider flow against the gateway's protected /mcp.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { startStack } from './harness.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

test('the Python mcp SDK discovers, registers, authorizes and calls a tool through the gateway', async () => {
  const python = process.env.OAUTH_TEST_PYTHON ?? join(ROOT, 'build', 'pyvenv', 'bin', 'python');
  const { stdout } = await promisify(execFile)(python, [join(import.meta.dirname, 'python', 'mcp_python_flow.py'), stack.mcpUrl, 'alice'], { timeout: 60000 });
  assert.match(stdout, /tools\/call whoami: ok/);
});
