// Enterprise-Managed Authorization (the MCP extension; draft-ietf-oauth-identity-assertion-authz-grant)
// with the v2 MCP client's own CrossAppAccessProvider and exchangeJwtAuthGrant: the enterprise IdP's
// ID-JAG and a workload's token are signed with the jose library (an independent JOSE
// implementation), the administrator trusts their issuers from SQL, and the client reaches the demo
// MCP server through the gateway with the token the JWT bearer grant (RFC 7523 §2.1) gave it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { Client, CrossAppAccessProvider, StreamableHTTPClientTransport, exchangeJwtAuthGrant } from '@modelcontextprotocol/client';
import { startStack } from './harness.mjs';

const IDP = 'https://idp.corp.example';
const CLUSTER = 'https://kubernetes.corp.example';
const ID_JAG_TYPE = 'oauth-id-jag+jwt';

let stack;
let idpKey;
let clusterKey;
before(async () => {
  idpKey = await generateKeyPair('ES256');
  clusterKey = await generateKeyPair('RS256');
  const jwks = async (pair, kid, alg) => JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid, alg, use: 'sig' }] });
  const idpJwks = await jwks(idpKey, 'idp-1', 'ES256');
  const clusterJwks = await jwks(clusterKey, 'sa-1', 'RS256');
  // Trusted before the gateway starts, so its discovery metadata advertises the grant at once.
  stack = await startStack({
    setup: (sql) => {
      const [clientId, clientSecret] = sql(
        "SELECT client_id || ' ' || client_secret FROM oauth.create_client('EMA client', '{}', '{mcp}', 'client_secret_basic', '{client_credentials}')",
      ).split(' ');
      const workloadId = sql(
        "SELECT client_id FROM oauth.create_client('payments workload', '{http://127.0.0.1/unused}', '{mcp}', 'none', '{authorization_code}', 'native')",
      );
      sql(`SELECT oauth.add_trusted_issuer('${IDP}', 'id-jag', ARRAY['${clientId}'], '{mcp}',
                                          jwks => '${idpJwks}', algorithms => '{ES256}')`);
      sql(`SELECT oauth.add_trusted_issuer('${CLUSTER}', 'workload', ARRAY['${workloadId}'], '{mcp}',
                                          jwks => '${clusterJwks}', algorithms => '{RS256}',
                                          subjects => '{system:serviceaccount:payments:*}')`);
      return { clientId, clientSecret, workloadId };
    },
  });
});
after(async () => { await stack?.stop(); });

// What the IdP's token exchange would answer: an ID-JAG for this client, this server and resource.
function idJag({ clientId, audience, resource, typ = ID_JAG_TYPE, jti = randomUUID() }) {
  return new SignJWT({ client_id: clientId, resource, scope: 'mcp' })
    .setProtectedHeader({ alg: 'ES256', typ, kid: 'idp-1' })
    .setIssuer(IDP)
    .setSubject('alice@corp.example')
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime('5m')
    .setJti(jti)
    .sign(idpKey.privateKey);
}

test('discovery advertises the JWT bearer grant and the ID-JAG profile', async () => {
  const metadata = await (await fetch(`${stack.issuer}/.well-known/oauth-authorization-server`)).json();
  assert.ok(metadata.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:jwt-bearer'));
  assert.deepEqual(metadata.authorization_grant_profiles_supported, ['urn:ietf:params:oauth:grant-profile:id-jag']);
});

test('the v2 MCP client presents an ID-JAG through CrossAppAccessProvider and calls a tool as the user', async () => {
  const { clientId, clientSecret } = stack.setupResult;
  const seen = [];
  const provider = new CrossAppAccessProvider({
    clientId,
    clientSecret,
    expectedIssuer: stack.issuer,
    assertion: async (ctx) => {
      seen.push(ctx);
      return idJag({ clientId, audience: ctx.authorizationServerUrl, resource: ctx.resourceUrl });
    },
  });
  const client = new Client({ name: 'ema-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(stack.mcpUrl), { authProvider: provider }));
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  assert.equal(result.structuredContent.subject, 'alice@corp.example');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].resourceUrl, stack.mcpUrl);
  assert.equal(provider.tokens().refresh_token, undefined, 'no refresh token for an ID-JAG');
  await client.close();
});

test('exchangeJwtAuthGrant: a replayed or mistyped ID-JAG is refused with invalid_grant', async () => {
  const { clientId, clientSecret } = stack.setupResult;
  const tokenEndpoint = `${stack.issuer}/token`;
  const grant = await idJag({ clientId, audience: stack.issuer, resource: stack.mcpUrl });
  const tokens = await exchangeJwtAuthGrant({ tokenEndpoint, jwtAuthGrant: grant, clientId, clientSecret });
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  await assert.rejects(exchangeJwtAuthGrant({ tokenEndpoint, jwtAuthGrant: grant, clientId, clientSecret }), /invalid_grant|already used/);
  const mistyped = await idJag({ clientId, audience: stack.issuer, resource: stack.mcpUrl, typ: 'JWT' });
  await assert.rejects(exchangeJwtAuthGrant({ tokenEndpoint, jwtAuthGrant: mistyped, clientId, clientSecret }), /invalid_grant|typ/);
  const elsewhere = await idJag({ clientId, audience: 'https://other-as.example', resource: stack.mcpUrl });
  await assert.rejects(exchangeJwtAuthGrant({ tokenEndpoint, jwtAuthGrant: elsewhere, clientId, clientSecret }), /invalid_grant|aud/);
});

test('a workload presents its service-account token as a public client and reaches the MCP server', async () => {
  const { workloadId } = stack.setupResult;
  const serviceAccountToken = (sub) => new SignJWT({ 'kubernetes.io': { namespace: 'payments' } })
    .setProtectedHeader({ alg: 'RS256', kid: 'sa-1' })
    .setIssuer(CLUSTER)
    .setSubject(sub)
    .setAudience([stack.issuer])
    .setIssuedAt()
    .setNotBefore('0s')
    .setExpirationTime('1h')
    .sign(clusterKey.privateKey);
  const tokens = await exchangeJwtAuthGrant({
    tokenEndpoint: `${stack.issuer}/token`,
    jwtAuthGrant: await serviceAccountToken('system:serviceaccount:payments:api'),
    clientId: workloadId,
    authMethod: 'none',
  });
  const resp = await fetch(stack.mcpUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'workload', version: '1' } } }),
  });
  assert.equal(resp.status, 200, await resp.text());
  await assert.rejects(exchangeJwtAuthGrant({
    tokenEndpoint: `${stack.issuer}/token`,
    jwtAuthGrant: await serviceAccountToken('system:serviceaccount:default:api'),
    clientId: workloadId,
    authMethod: 'none',
  }), /invalid_grant|subject/);
});
