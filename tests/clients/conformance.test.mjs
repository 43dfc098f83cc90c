// The public MCP conformance suite (@modelcontextprotocol/conformance, its `authorization` command)
// judges the gateway as an authorization server: the metadata document (RFC 8414, PKCE S256, client ID
// metadata documents), then an authorization code grant with PKCE and a resource indicator, run by a
// registered public client. The suite prints the authorization URL and waits on its own loopback
// callback; this test is the browser: it approves at the consent page and follows the redirect.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, approveInBrowser, freePort } from './harness.mjs';

const MODULES = join(import.meta.dirname, 'node_modules');
// The suite needs Node >= 22; the pinned `node` package brings one whatever runs this file.
const NODE_22 = join(MODULES, 'node', 'bin', 'node');
const SUITE = join(MODULES, '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
// The suite would wait 5 minutes for the browser; a run takes about a second.
const SUITE_TIMEOUT_MS = 60_000;

let stack;
const resultsDir = mkdtempSync(join(tmpdir(), 'oauth-conformance-'));
before(async () => { stack = await startStack(); });
after(async () => {
  await stack?.stop();
  rmSync(resultsDir, { recursive: true, force: true });
});

// Runs the suite to its end, playing the user when it prints an authorization URL.
// Resolves with its exit code and output; the output is only shown when something fails.
function runSuite(args, authorizationEndpoint) {
  return new Promise((ok, fail) => {
    const suite = spawn(NODE_22, [SUITE, ...args], {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let unfinishedLine = '';
    let authorizationUrl = null;
    let callbackListening = false;
    let browser = null;
    const timer = setTimeout(() => suite.kill('SIGKILL'), SUITE_TIMEOUT_MS);
    suite.stderr.on('data', (chunk) => { output += chunk; });
    suite.stdout.on('data', (chunk) => {
      output += chunk;
      const lines = (unfinishedLine + chunk).split('\n');
      unfinishedLine = lines.pop();
      authorizationUrl ??= lines.find((line) => line.startsWith(`${authorizationEndpoint}?`))?.trim();
      // The suite prints the URL before its callback server is listening, and says when it is.
      callbackListening ||= lines.some((line) => line.startsWith('Callback server started:'));
      if (!authorizationUrl || !callbackListening || browser) return;
      // Approve, then deliver the redirect to the suite's callback server as the browser would.
      browser = approveInBrowser(authorizationUrl).then((back) => fetch(back)).then((resp) => resp.text())
        .catch((error) => { output += `\n[browser] ${error.stack}\n`; suite.kill('SIGKILL'); });
    });
    suite.on('error', fail);
    suite.on('exit', async (code, signal) => {
      clearTimeout(timer);
      await browser;
      ok({ code, signal, output });
    });
  });
}

// Every checks.json the suite wrote under `dir` (one directory per scenario).
function checksWritten(dir) {
  return readdirSync(dir, { recursive: true })
    .filter((file) => file.endsWith('checks.json'))
    .flatMap((file) => JSON.parse(readFileSync(join(dir, file), 'utf8')));
}

// Registers a public client for the suite's callback, runs every authorization-server scenario
// with it (`resource` as the RFC 8707 indicator when given) and asserts that every check passed.
async function assertSuitePasses({ resource }) {
  assert.ok(existsSync(NODE_22), `no Node 22 at ${NODE_22} (npm ci installs it)`);
  const callbackPort = await freePort();
  const registration = await fetch(`${stack.issuer}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'MCP conformance suite',
      redirect_uris: [`http://127.0.0.1:${callbackPort}/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }),
  });
  assert.equal(registration.status, 201, await registration.clone().text());
  const { client_id: clientId } = await registration.json();

  const metadata = await (await fetch(`${stack.issuer}/.well-known/oauth-authorization-server`)).json();
  const outputDir = mkdtempSync(join(resultsDir, 'run-'));
  const run = await runSuite([
    'authorization', '--url', stack.issuer, '--client-id', clientId, ...(resource ? ['--resource', resource] : []),
    '--port', String(callbackPort), '--output-dir', outputDir,
  ], metadata.authorization_endpoint);

  const checks = checksWritten(outputDir);
  const summary = checks.map((check) => `${check.id}: ${check.status}${check.errorMessage ? ` (${check.errorMessage})` : ''}`);
  const context = `${summary.join('\n')}\n--- suite output ---\n${run.output}`;
  assert.equal(run.signal, null, `the suite was killed (timeout or browser failure)\n${context}`);
  assert.deepEqual(checks.map((check) => check.id).sort(), [
    'authorization-code-grant', 'authorization-server-metadata', 'authorization-server-metadata-cimd',
  ], context);
  assert.deepEqual(checks.filter((check) => check.status !== 'SUCCESS').map((check) => check.id), [], context);
  assert.equal(run.code, 0, context);
  const grant = checks.find((check) => check.id === 'authorization-code-grant');
  assert.equal(new URL(grant.details.authorizationResponseUrl).searchParams.get('iss'), stack.issuer, 'RFC 9207 iss came back');
}

const perRun = { timeout: SUITE_TIMEOUT_MS + 15_000 };

test('the MCP conformance suite finds the gateway a conforming authorization server', perRun, async () => {
  await assertSuitePasses({ resource: stack.mcpUrl });
});

// Clients that predate RFC 8707 in MCP omit `resource`: the grant must still complete.
test('the MCP conformance suite passes without a resource indicator too', perRun, async () => {
  await assertSuitePasses({ resource: null });
});
