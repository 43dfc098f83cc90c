// The MCP TypeScript SDK (v1) pointed at the protected URL runs the whole flow by itself:
// 401 → RFC 9728 metadata → RFC 8414 discovery → RFC 7591 registration → PKCE authorization →
// token → tools/call, then refreshes when its access token is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { startStack, memoryProvider } from './harness.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

// Each test registers anew: the same client name and callback, its own grant types.
const sdkProvider = (options = {}) => memoryProvider({ clientName: 'MCP SDK test', redirectUrl: 'http://127.0.0.1:33418/callback', ...options });

test('the MCP SDK discovers, registers, authorizes and calls a tool through the gateway', async () => {
  const provider = sdkProvider();
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

  // Refresh through the SDK: the rotated token differs. Presented again at once (a parallel tool
  // call's refresh) the old one gets the same successor; once the grace window is over (here
  // switched off) it is refused as reuse.
  const before = provider.store.tokens.refresh_token;
  provider.store.tokens = { ...provider.store.tokens, access_token: 'expired' };
  assert.equal(await auth(provider, { serverUrl: new URL(stack.mcpUrl) }), 'AUTHORIZED');
  assert.notEqual(provider.store.tokens.refresh_token, before, 'refresh tokens rotate');
  const presentOld = () => fetch(`${stack.issuer}/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: before, client_id: provider.store.client.client_id }),
  });
  const parallel = await presentOld();
  assert.equal(parallel.status, 200);
  assert.equal((await parallel.json()).refresh_token, provider.store.tokens.refresh_token, 'the same successor');
  stack.sql("SELECT oauth.configure(refresh_reuse_grace => '0')");
  const reuse = await presentOld();
  assert.equal(reuse.status, 400);
  assert.equal((await reuse.json()).error, 'invalid_grant');
  stack.sql("SELECT oauth.configure(refresh_reuse_grace => '5 seconds')");
});

// SDK 1.32.2 answers a 403 by refreshing when it holds a refresh token, and a refresh cannot widen
// scope (RFC 6749 §6), so it gives up; a client without refresh tokens re-authorizes as intended.
// The SDK registers with the scope of its first challenge only ("mcp"); the registration must not
// stop it from stepping up later.
test('a 403 insufficient_scope makes the MCP SDK step up to the wider scope', async () => {
  const provider = sdkProvider({ grantTypes: ['authorization_code'] });
  const connectTo = async (url) => {
    const client = new Client({ name: 'sdk-step-up', version: '1.0.0' });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: provider }));
      return client;
    } catch (error) {
      if (!(error instanceof UnauthorizedError)) throw error;
      const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
      await transport.finishAuth(provider.store.returned.searchParams.get('code'));
      await client.connect(transport);
      return client;
    }
  };
  const narrow = await connectTo(stack.mcpUrl);
  assert.equal((await narrow.callTool({ name: 'whoami', arguments: {} })).structuredContent.scope, 'mcp');
  await narrow.close();

  // Same token, an operation that needs more: 403 → the SDK asks for "mcp email" and retries.
  provider.store.returned = null;
  const wide = await connectTo(stack.adminUrl);
  assert.ok(provider.store.returned, 'the 403 sent the user back to consent for the wider scope');
  const who = (await wide.callTool({ name: 'whoami', arguments: {} })).structuredContent;
  assert.deepEqual(who.scope.split(' ').sort(), ['email', 'mcp']);
  await wide.close();
});
