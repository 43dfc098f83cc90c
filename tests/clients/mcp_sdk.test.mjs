// The MCP TypeScript SDK (v1) pointed at the protected URL runs the whole flow by itself:
// 401 → RFC 9728 metadata → RFC 8414 discovery → RFC 7591 registration → PKCE authorization →
// token → tools/call, then refreshes when its access token is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { startStack, approveInBrowser } from './harness.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

function memoryProvider() {
  const store = { returned: null };
  const redirectUrl = 'http://127.0.0.1:33418/callback';
  return {
    store,
    get redirectUrl() { return redirectUrl; },
    get clientMetadata() {
      return { client_name: 'MCP SDK test', redirect_uris: [redirectUrl], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' };
    },
    state() { store.state = `state-${Math.random()}`; return store.state; },
    clientInformation() { return store.client; },
    saveClientInformation(client) { store.client = client; },
    tokens() { return store.tokens; },
    saveTokens(tokens) { store.tokens = tokens; },
    saveCodeVerifier(verifier) { store.verifier = verifier; },
    codeVerifier() { return store.verifier; },
    async redirectToAuthorization(url) { store.returned = await approveInBrowser(url); },
  };
}

test('the MCP SDK discovers, registers, authorizes and calls a tool through the gateway', async () => {
  const provider = memoryProvider();
  const client = new Client({ name: 'sdk-test', version: '1.0.0' });
  await assert.rejects(client.connect(new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider })), UnauthorizedError);

  const back = provider.store.returned;
  assert.ok(back, 'the SDK sent the user to the authorization endpoint');
  assert.equal(back.searchParams.get('iss'), stack.issuer, 'RFC 9207 iss on the redirect');
  assert.equal(back.searchParams.get('state'), provider.store.state);
  assert.ok(provider.store.client.client_id, 'registered dynamically');

  const transport = new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider });
  await transport.finishAuth(back.searchParams.get('code'));
  assert.ok(provider.store.tokens.refresh_token, 'a refresh token was issued');
  await client.connect(transport);
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name), ['whoami']);
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  assert.equal(result.structuredContent.subject, 'alice', 'the upstream saw the verified user');
  assert.equal(result.structuredContent.authorization_header_seen, false, 'the token never reached the upstream');
  assert.equal(result.structuredContent.client_id, provider.store.client.client_id);
  await client.close();

  // Refresh through the SDK: the rotated token differs, and the old one is now refused.
  const before = provider.store.tokens.refresh_token;
  provider.store.tokens = { ...provider.store.tokens, access_token: 'expired' };
  assert.equal(await auth(provider, { serverUrl: new URL(stack.mcpUrl) }), 'AUTHORIZED');
  assert.notEqual(provider.store.tokens.refresh_token, before, 'refresh tokens rotate');
  const reuse = await fetch(`${stack.issuer}/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: before, client_id: provider.store.client.client_id }),
  });
  assert.equal(reuse.status, 400);
  assert.equal((await reuse.json()).error, 'invalid_grant');
});
