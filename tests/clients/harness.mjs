// Starts what a real client talks to: a fresh database with the extension, the demo MCP server,
// and an oauth-gateway process (development mode, built-in consent page, /mcp guarded).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'target', 'testing'); // scripts/test builds with --profile testing

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (scripts/test sets it)`);
  return value;
}

function psql(conninfo, sql) {
  return execFileSync('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', conninfo, '-c', sql], { encoding: 'utf8' }).trim();
}

export async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    }).on('error', fail);
  });
}

async function waitFor(child, text) {
  return new Promise((ok, fail) => {
    let seen = '';
    const timer = setTimeout(() => fail(new Error(`timed out waiting for "${text}": ${seen}`)), 15000);
    const onData = (chunk) => {
      seen += chunk;
      if (seen.includes(text)) { clearTimeout(timer); ok(); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { seen += chunk; });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`exited with ${code}: ${seen}`)); });
  });
}

// `extraToml` is appended to the gateway's configuration file (e.g. a [cimd] section), `settings`
// to oauth.configure's arguments (e.g. "dpop_supported => true"), `args` to the gateway's; `setup`
// runs SQL (its argument) on the database before the gateway starts and reads its settings.
export async function startStack({ extraToml = '', settings = '', args = [], setup } = {}) {
  const admin = env('OAUTH_TEST_DATABASE_URL');
  const gatewayUrl = env('OAUTH_TEST_GATEWAY_DATABASE_URL');
  const db = `js_${randomBytes(5).toString('hex')}`;
  psql(admin, `CREATE DATABASE ${db}`);
  const dbAdmin = `${admin} dbname=${db}`;
  psql(dbAdmin, 'CREATE EXTENSION oauth_provider');
  const [port, demoPort] = [await freePort(), await freePort()];
  const issuer = `http://127.0.0.1:${port}`;
  psql(dbAdmin, `SELECT oauth.configure(issuer => '${issuer}'${settings ? `, ${settings}` : ''})`);
  const setupResult = setup ? await setup((query) => psql(dbAdmin, query), issuer) : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'oauth-js-'));
  // As scripts/run: ES256 signs access tokens, RS256 the ID tokens of clients that name no
  // id_token_signed_response_alg (OpenID Connect's default, which strict clients check).
  execFileSync(join(BIN, 'oauth-gateway'), ['keys', 'generate', '--alg', 'ES256', '--out', join(dir, 'key.pem')]);
  execFileSync(join(BIN, 'oauth-gateway'), ['keys', 'generate', '--alg', 'RS256', '--out', join(dir, 'rs256.pem')]);
  const demo = spawn(join(BIN, 'oauth-demo-mcp'), ['--listen', `127.0.0.1:${demoPort}`]);
  await waitFor(demo, 'listening');
  // Two routes to one MCP server under one resource: /mcp needs "mcp", /mcp/admin also "email",
  // so a token good for /mcp meets a 403 insufficient_scope at /mcp/admin (step-up).
  writeFileSync(join(dir, 'gateway.toml'), `
[[routes]]
prefix = "/mcp"
upstream = "http://127.0.0.1:${demoPort}/mcp"
scopes = ["mcp"]
resource = "${issuer}/mcp"

[[routes]]
prefix = "/mcp/admin"
upstream = "http://127.0.0.1:${demoPort}/mcp"
scopes = ["mcp", "email"]
resource = "${issuer}/mcp"
${extraToml}
`);
  const gateway = spawn(join(BIN, 'oauth-gateway'), [
    'serve', '--config', join(dir, 'gateway.toml'), '--issuer', issuer, '--listen', `127.0.0.1:${port}`,
    '--database-url', `${gatewayUrl} dbname=${db}`, '--key', `ES256:${join(dir, 'key.pem')}`,
    '--key', `RS256:${join(dir, 'rs256.pem')}`,
    '--dev-mode', '--dev-user', 'alice', ...args,
  ]);
  await waitFor(gateway, 'listening');
  return {
    issuer,
    mcpUrl: `${issuer}/mcp`,
    adminUrl: `${issuer}/mcp/admin`,
    sql: (query) => psql(dbAdmin, query),
    setupResult,
    async stop() {
      gateway.kill('SIGTERM');
      demo.kill('SIGTERM');
      await new Promise((ok) => gateway.once('exit', ok));
      psql(admin, `DROP DATABASE ${db} WITH (FORCE)`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// Plays the user at the built-in consent page: follows /authorize to /consent, approves the
// form, and returns the URL the browser would be sent back to (with code, state, iss).
export async function approveInBrowser(authorizationUrl) {
  let resp = await fetch(authorizationUrl, { redirect: 'manual' });
  if (resp.status !== 302) throw new Error(`authorize answered ${resp.status}: ${await resp.text()}`);
  const consentUrl = resp.headers.get('location');
  if (!consentUrl.startsWith(new URL(authorizationUrl).origin)) throw new Error(`authorize redirected to the client: ${consentUrl}`);
  const page = await (await fetch(consentUrl)).text();
  const field = (name) => {
    const match = page.match(new RegExp(`name="${name}" value="([^"]*)"`));
    if (!match) throw new Error(`no ${name} on the consent page`);
    return match[1];
  };
  resp = await fetch(new URL(consentUrl).origin + new URL(consentUrl).pathname, {
    method: 'POST',
    redirect: 'manual',
    body: new URLSearchParams({ request_id: field('request_id'), csrf_token: field('csrf_token'), decision: 'approve' }),
  });
  if (resp.status !== 303) throw new Error(`consent answered ${resp.status}: ${await resp.text()}`);
  return new URL(resp.headers.get('location'));
}

// An MCP SDK OAuthClientProvider that keeps everything in memory (`store`) and plays the user at
// the consent page (`store.returned` is where the browser came back to, `store.authorizationUrl`
// where it was sent). `clientMetadataUrl` identifies the client by a metadata document instead of
// registration; `rememberDiscovery` adds the v2 client's discovery-state hooks.
export function memoryProvider({ clientName, redirectUrl, grantTypes = ['authorization_code', 'refresh_token'], clientMetadataUrl, rememberDiscovery = false }) {
  const store = { returned: null };
  const provider = {
    store,
    get redirectUrl() { return redirectUrl; },
    get clientMetadata() {
      return { client_name: clientName, redirect_uris: [redirectUrl], grant_types: grantTypes, response_types: ['code'], token_endpoint_auth_method: 'none' };
    },
    state() { store.state = `state-${Math.random()}`; return store.state; },
    clientInformation() { return store.client; },
    saveClientInformation(client) { store.client = client; },
    tokens() { return store.tokens; },
    saveTokens(tokens) { store.tokens = tokens; },
    saveCodeVerifier(verifier) { store.verifier = verifier; },
    codeVerifier() { return store.verifier; },
    async redirectToAuthorization(url) {
      store.authorizationUrl = url;
      store.returned = await approveInBrowser(url);
    },
  };
  if (clientMetadataUrl) provider.clientMetadataUrl = clientMetadataUrl;
  if (rememberDiscovery) {
    provider.saveDiscoveryState = (state) => { store.discovery = state; };
    provider.discoveryState = () => store.discovery;
  }
  return provider;
}
