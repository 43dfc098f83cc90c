// The MCP TypeScript SDK (v1) identifies itself with a Client ID Metadata Document
// (`clientMetadataUrl`, SEP-991) instead of registering: the gateway advertises
// client_id_metadata_document_supported, fetches the document over TLS (a loopback server with a
// test CA the gateway is configured to trust) and the whole flow runs to a tool call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { startStack, memoryProvider } from './harness.mjs';

let stack;
let documentServer;
let documentUrl;
let documentHits = 0;
const dir = mkdtempSync(join(tmpdir(), 'oauth-cimd-'));

// A throw-away CA and a certificate for 127.0.0.1 signed by it.
function testCertificates() {
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' });
  const file = (name) => join(dir, name);
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=oauth_provider test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', file('leaf.key'), '-out', file('leaf.csr'), '-subj', '/CN=127.0.0.1');
  writeFileSync(file('leaf.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', file('leaf.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-CAcreateserial', '-out', file('leaf.pem'), '-days', '1', '-extfile', file('leaf.ext'));
  return { ca: file('ca.pem'), key: readFileSync(file('leaf.key')), cert: readFileSync(file('leaf.pem')) };
}

before(async () => {
  const certs = testCertificates();
  documentServer = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    if (req.url !== '/oauth/client.json') { res.writeHead(404).end(); return; }
    documentHits += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=3600' });
    // Port-less loopback redirect URI, as widely used CLI clients publish it: any port matches.
    res.end(JSON.stringify({
      client_id: documentUrl,
      client_name: 'CIMD test CLI',
      client_uri: 'https://cli.example.com',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }));
  });
  await new Promise((ok) => documentServer.listen(0, '127.0.0.1', ok));
  documentUrl = `https://127.0.0.1:${documentServer.address().port}/oauth/client.json`;
  stack = await startStack({ extraToml: `[cimd]\nallow_loopback = true\nextra_ca_file = "${certs.ca}"\n` });
});

after(async () => {
  await stack?.stop();
  documentServer?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the MCP SDK identified by a client ID metadata document authorizes and calls a tool', async () => {
  const provider = memoryProvider({ clientName: 'CIMD test CLI', redirectUrl: 'http://127.0.0.1:33419/callback', clientMetadataUrl: documentUrl });
  const { store } = provider;
  const client = new Client({ name: 'sdk-cimd', version: '1.0.0' });
  await assert.rejects(client.connect(new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider })), UnauthorizedError);
  assert.equal(store.client.client_id, documentUrl, 'the SDK used its document URL as client_id');
  assert.equal(store.authorizationUrl.searchParams.get('client_id'), documentUrl);
  assert.equal(store.returned.searchParams.get('iss'), stack.issuer);

  const transport = new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider });
  await transport.finishAuth(store.returned.searchParams.get('code'));
  await client.connect(transport);
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  assert.equal(result.structuredContent.subject, 'alice');
  assert.equal(result.structuredContent.client_id, documentUrl, 'the upstream saw the URL client');
  await client.close();

  assert.equal(documentHits, 1, 'fetched once, then served from the database');
  assert.equal(stack.sql('SELECT count(*) FROM oauth.clients WHERE registered_dynamically'), '0', 'no dynamic registration');
  assert.equal(stack.sql(`SELECT client_name FROM oauth.clients WHERE client_id = '${documentUrl}'`), 'CIMD test CLI');
});
