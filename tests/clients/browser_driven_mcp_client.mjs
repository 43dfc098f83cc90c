// The MCP TypeScript SDK (v1) as a native MCP client whose user is a real browser: started by
// gateway/tests/browser_mcp_sdk.rs, which plays the person. The SDK does everything a client does
// by itself (401 → RFC 9728 → RFC 8414 → RFC 7591 registration → PKCE → token → tools/call →
// refresh on a 401); this program only hands the authorization URL to the test and receives the
// browser at its loopback callback, as Claude Code or Cursor do.
//
// Environment: MCP_URL (the guarded MCP endpoint), CALLBACK_PORT (its loopback redirect URI's port).
// It writes one JSON object per line on stdout:
//   {"authorize": url}                      the SDK sends the user to this URL
//   {"connected": client_id, "whoami": {…}} the browser came back, tokens were issued, a tool answered
//   {"called": {…}} | {"refused": message}  the answer to a "call" line on stdin
//   {"signed_out": query}                   the browser reached the post-logout redirect URI
// and reads lines on stdin: "call" (call the tool again), "exit".
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const mcpUrl = new URL(process.env.MCP_URL);
const origin = `http://127.0.0.1:${Number(process.env.CALLBACK_PORT)}`;
const redirectUrl = `${origin}/callback`;
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

// Callbacks that arrive before anyone waits for them are kept.
const arrived = [];
let waiting = null;
const server = createServer((req, res) => {
  const url = new URL(req.url, origin);
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end('<!doctype html><title>MCP client</title><h1>You can close this window.</h1>');
  if (url.pathname === '/signed-out') {
    say({ signed_out: Object.fromEntries(url.searchParams) });
  } else if (url.pathname === '/callback') {
    if (waiting) { waiting(url); waiting = null; } else arrived.push(url);
  }
});
await new Promise((ok) => server.listen(Number(process.env.CALLBACK_PORT), '127.0.0.1', ok));
const nextCallback = () => (arrived.length ? Promise.resolve(arrived.shift()) : new Promise((ok) => { waiting = ok; }));

const store = {};
const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadata() {
    return {
      client_name: 'Notes MCP client', redirect_uris: [redirectUrl], post_logout_redirect_uris: [`${origin}/signed-out`],
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none',
    };
  },
  state() { store.state = crypto.randomUUID(); return store.state; },
  clientInformation() { return store.client; },
  saveClientInformation(client) { store.client = client; },
  tokens() { return store.tokens; },
  saveTokens(tokens) { store.tokens = tokens; },
  saveCodeVerifier(verifier) { store.verifier = verifier; },
  codeVerifier() { return store.verifier; },
  redirectToAuthorization(url) { say({ authorize: url.href }); },
  // What a client forgets when the server refuses it (the SDK then starts a new authorization).
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') delete store.client;
    if (scope === 'all' || scope === 'tokens') delete store.tokens;
    if (scope === 'all' || scope === 'verifier') delete store.verifier;
  },
};

const client = new Client({ name: 'notes', version: '1.0.0' });
try {
  await client.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }));
  throw new Error('connected without authorization');
} catch (error) {
  if (!(error instanceof UnauthorizedError)) throw error;
}
const back = await nextCallback();
if (back.searchParams.get('state') !== store.state) throw new Error(`state ${back.searchParams.get('state')} is not ours`);
const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
await transport.finishAuth(back.searchParams.get('code'));
await client.connect(transport);
const whoami = async () => (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent;
say({ connected: store.client.client_id, whoami: await whoami() });

for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'exit') break;
  if (line === 'call') {
    try {
      say({ called: await whoami() });
    } catch (error) {
      say({ refused: String(error?.message ?? error), unauthorized: error instanceof UnauthorizedError });
    }
  }
}
await client.close().catch(() => {});
server.close();
process.exit(0);
