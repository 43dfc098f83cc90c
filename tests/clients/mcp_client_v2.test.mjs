// The v2 MCP client (@modelcontextprotocol/client), which also checks the RFC 9207 `iss` of the
// authorization response against the metadata issuer, runs the whole flow through the gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';
import { startStack, approveInBrowser } from './harness.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

function memoryProvider() {
  const store = {};
  const redirectUrl = 'http://127.0.0.1:33419/callback';
  return {
    store,
    get redirectUrl() { return redirectUrl; },
    get clientMetadata() {
      return { client_name: 'MCP client v2 test', redirect_uris: [redirectUrl], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' };
    },
    state() { store.state = `v2-${Math.random()}`; return store.state; },
    clientInformation() { return store.client; },
    saveClientInformation(client) { store.client = client; },
    tokens() { return store.tokens; },
    saveTokens(tokens) { store.tokens = tokens; },
    saveCodeVerifier(verifier) { store.verifier = verifier; },
    codeVerifier() { return store.verifier; },
    saveDiscoveryState(state) { store.discovery = state; },
    discoveryState() { return store.discovery; },
    async redirectToAuthorization(url) { store.returned = await approveInBrowser(url); },
  };
}

test('the v2 MCP client validates iss, then calls a tool through the gateway', async () => {
  const provider = memoryProvider();
  const client = new Client({ name: 'v2-test', version: '1.0.0' });
  await assert.rejects(client.connect(new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider })), UnauthorizedError);
  const back = provider.store.returned;
  assert.equal(back.searchParams.get('iss'), stack.issuer);

  // A forged iss is refused by the client (mix-up defence); the genuine callback is accepted.
  const forged = new URLSearchParams(back.searchParams);
  forged.set('iss', 'https://evil.example');
  await assert.rejects(new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider }).finishAuth(forged));

  const transport = new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider });
  await transport.finishAuth(back.searchParams);
  await client.connect(transport);
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  assert.equal(result.structuredContent.subject, 'alice');
  assert.equal(result.structuredContent.authorization_header_seen, false);
  await client.close();
});
