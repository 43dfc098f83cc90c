// The v2 MCP client (@modelcontextprotocol/client), which also checks the RFC 9207 `iss` of the
// authorization response against the metadata issuer, runs the whole flow through the gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';
import { startStack, memoryProvider } from './harness.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

test('the v2 MCP client validates iss, then calls a tool through the gateway', async () => {
  const provider = memoryProvider({ clientName: 'MCP client v2 test', redirectUrl: 'http://127.0.0.1:33419/callback', rememberDiscovery: true });
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
