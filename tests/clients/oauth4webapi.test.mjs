// oauth4webapi, a strict RFC client: discovery, registration, PKCE + state + nonce, RFC 9207 iss
// validation, ID token validation, refresh, revocation and introspection against the gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as oauth from 'oauth4webapi';
import { startStack, approveInBrowser } from './harness.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const insecure = { [oauth.allowInsecureRequests]: true };
const redirectUri = 'http://127.0.0.1:45781/cb';

async function register(as, metadata) {
  const resp = await oauth.dynamicClientRegistrationRequest(as, metadata, insecure);
  return oauth.processDynamicClientRegistrationResponse(resp);
}

test('oauth4webapi completes a strict OpenID Connect code flow, refreshes, revokes and introspects', async () => {
  const issuer = new URL(stack.issuer);
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }));
  assert.equal(as.issuer, stack.issuer);
  assert.deepEqual(as.code_challenge_methods_supported, ['S256']);

  const registered = await register(as, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', scope: 'openid email mcp', client_name: 'oauth4webapi' });
  const client = { client_id: registered.client_id };
  const clientAuth = oauth.None();

  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const url = new URL(as.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: client.client_id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid mcp',
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce,
    resource: stack.mcpUrl,
  }).toString();
  const back = await approveInBrowser(url);
  const params = oauth.validateAuthResponse(as, client, back, state); // checks iss (RFC 9207)

  const codeResp = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, redirectUri, verifier, {
    ...insecure, additionalParameters: { resource: stack.mcpUrl },
  });
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, codeResp, { expectedNonce: nonce, requireIdToken: true });
  assert.equal(oauth.getValidatedIdTokenClaims(tokens).sub, 'alice');
  // Registered without id_token_signed_response_alg: RS256, OpenID Connect's default.
  assert.equal(JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url')).alg, 'RS256');
  assert.equal(as.id_token_signing_alg_values_supported[0], 'RS256');
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  assert.equal(tokens.scope, 'openid mcp');

  // The access token works at the protected MCP endpoint (audience = the resource asked for).
  const call = await fetch(stack.mcpUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
  });
  assert.equal(call.status, 200);

  const refreshed = await oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure));
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);

  // A resource server (confidential client) introspects; the public client revokes its token.
  const rs = await register(as, { redirect_uris: ['https://rs.example/cb'], token_endpoint_auth_method: 'client_secret_basic', client_name: 'resource server' });
  const rsClient = { client_id: rs.client_id };
  const rsAuth = oauth.ClientSecretBasic(rs.client_secret);
  const introspect = async (token) => oauth.processIntrospectionResponse(as, rsClient,
    await oauth.introspectionRequest(as, rsClient, rsAuth, token, insecure));
  assert.equal((await introspect(refreshed.access_token)).active, true);
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, clientAuth, refreshed.refresh_token, insecure));
  assert.equal((await introspect(refreshed.access_token)).active, false, 'revocation is seen at once');
  assert.equal((await introspect(refreshed.refresh_token)).active, false);
});
