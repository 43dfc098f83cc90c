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

test('oauth4webapi pushes its authorization request (RFC 9126) and the browser carries only the request_uri', async () => {
  const issuer = new URL(stack.issuer);
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }));
  assert.equal(as.pushed_authorization_request_endpoint, new URL('par', stack.issuer.replace(/\/?$/, '/')).href);
  assert.equal(as.require_pushed_authorization_requests, false);

  // A confidential client that asks for its requests to be accepted only when pushed (§6).
  const registered = await register(as, {
    redirect_uris: [redirectUri], token_endpoint_auth_method: 'client_secret_basic', scope: 'openid mcp',
    client_name: 'oauth4webapi PAR', require_pushed_authorization_requests: true,
  });
  assert.equal(registered.require_pushed_authorization_requests, true);
  const client = { client_id: registered.client_id };
  const clientAuth = oauth.ClientSecretBasic(registered.client_secret);

  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const parameters = {
    redirect_uri: redirectUri, response_type: 'code', scope: 'openid mcp', state, nonce,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    resource: stack.mcpUrl,
  };

  // Not pushed: refused, on the server's own page (a dynamically registered client's redirect URI
  // is not trusted with errors).
  const direct = new URL(as.authorization_endpoint);
  direct.search = new URLSearchParams({ client_id: client.client_id, ...parameters }).toString();
  const refused = await fetch(direct, { redirect: 'manual' });
  assert.equal(refused.status, 400);

  const pushedResp = await oauth.pushedAuthorizationRequest(as, client, clientAuth, parameters, insecure);
  assert.equal(pushedResp.status, 201);
  assert.equal(pushedResp.headers.get('cache-control'), 'no-store');
  const pushed = await oauth.processPushedAuthorizationResponse(as, client, pushedResp);
  assert.match(pushed.request_uri, /^urn:ietf:params:oauth:request_uri:/);
  assert.ok(pushed.expires_in > 0 && pushed.expires_in <= 600);

  const url = new URL(as.authorization_endpoint);
  url.search = new URLSearchParams({ client_id: client.client_id, request_uri: pushed.request_uri }).toString();
  const back = await approveInBrowser(url);
  const params = oauth.validateAuthResponse(as, client, back, state);
  const codeResp = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, redirectUri, verifier, {
    ...insecure, additionalParameters: { resource: stack.mcpUrl },
  });
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, codeResp, { expectedNonce: nonce, requireIdToken: true });
  assert.equal(tokens.scope, 'openid mcp');

  // The request_uri was used: the same URL again is refused.
  const replay = await fetch(url, { redirect: 'manual' });
  assert.equal(replay.status, 400);
  assert.match(await replay.text(), /invalid_request_uri|request_uri/);

  // A push with the wrong secret or a bad request is a JSON error, as at /token.
  await assert.rejects(
    oauth.pushedAuthorizationRequest(as, client, oauth.ClientSecretBasic('wrong'), parameters, insecure)
      .then((resp) => oauth.processPushedAuthorizationResponse(as, client, resp)),
    // 401 with a Basic challenge (RFC 6749 §5.2), which oauth4webapi reports as the challenge.
    (e) => e instanceof oauth.WWWAuthenticateChallengeError && e.status === 401 && e.cause[0]?.scheme === 'basic',
  );
  await assert.rejects(
    oauth.pushedAuthorizationRequest(as, client, clientAuth, { ...parameters, code_challenge_method: 'plain' }, insecure)
      .then((resp) => oauth.processPushedAuthorizationResponse(as, client, resp)),
    (e) => e.error === 'invalid_request' && e.status === 400,
  );
});
