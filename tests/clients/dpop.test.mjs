// DPoP (RFC 9449) with oauth4webapi's own proofs, end to end: the token endpoint binds the access
// token (cnf.jkt, token_type DPoP) and a public client's refresh token to the proof's key; the
// guard in front of the MCP server takes the token only with a fresh proof by that key; nonces.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as oauth from 'oauth4webapi';
import { startStack, approveInBrowser } from './harness.mjs';

const insecure = { [oauth.allowInsecureRequests]: true };
const redirectUri = 'http://127.0.0.1:45782/cb';
const stacks = [];
after(async () => { for (const stack of stacks) await stack.stop(); });

async function start(options) {
  const stack = await startStack(options);
  stacks.push(stack);
  const issuer = new URL(stack.issuer);
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }));
  return { stack, as };
}

async function register(as, metadata) {
  return oauth.processDynamicClientRegistrationResponse(await oauth.dynamicClientRegistrationRequest(as, metadata, insecure));
}

// A request retried once when the server asks for its nonce (the handle keeps the nonce it was given).
async function withNonce(request) {
  try {
    return await request();
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    return request();
  }
}

// Authorizes `client` as alice and redeems the code with `DPoP` proofs (none when undefined).
async function authorize({ stack, as }, client, DPoP) {
  const verifier = oauth.generateRandomCodeVerifier();
  const url = new URL(as.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: client.client_id, redirect_uri: redirectUri, response_type: 'code', scope: 'mcp',
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', resource: stack.mcpUrl,
  }).toString();
  const params = oauth.validateAuthResponse(as, client, await approveInBrowser(url), oauth.expectNoState);
  return withNonce(async () => oauth.processAuthorizationCodeResponse(as, client,
    await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri, verifier, {
      ...insecure, DPoP, additionalParameters: { resource: stack.mcpUrl },
    })));
}

const ping = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
const mcpHeaders = () => new Headers({ 'content-type': 'application/json', accept: 'application/json, text/event-stream' });

// A call of the MCP server through the guard; a refusal's response is returned, not thrown.
async function callMcp(stack, accessToken, DPoP) {
  const once = () => oauth.protectedResourceRequest(accessToken, 'POST', new URL(stack.mcpUrl), mcpHeaders(), ping, { ...insecure, DPoP });
  try {
    return await withNonce(once);
  } catch (err) {
    if (err instanceof oauth.WWWAuthenticateChallengeError) return err.response;
    throw err;
  }
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));

test('DPoP binds the tokens to the client key, and the guard wants a proof by that key on every call', async () => {
  const deployment = await start({ settings: 'dpop_supported => true' });
  const { stack, as } = deployment;
  assert.ok(as.dpop_signing_alg_values_supported.includes('ES256'));
  assert.ok(!as.dpop_signing_alg_values_supported.includes('none'));
  const client = { client_id: (await register(as, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', client_name: 'dpop client' })).client_id };
  const keyPair = await oauth.generateKeyPair('ES256');
  const DPoP = oauth.DPoP(client, keyPair);
  const jkt = await DPoP.calculateThumbprint();

  const tokens = await authorize(deployment, client, DPoP);
  assert.equal(tokens.token_type, 'dpop');
  assert.deepEqual(claimsOf(tokens.access_token).cnf, { jkt });
  assert.equal((await callMcp(stack, tokens.access_token, DPoP)).status, 200);

  // The same token as a bearer token, or with a proof by another key, is refused with a DPoP challenge.
  const asBearer = await fetch(stack.mcpUrl, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: ping });
  assert.equal(asBearer.status, 401);
  assert.match(asBearer.headers.get('www-authenticate'), /^DPoP algs="[^"]*ES256[^"]*".*error="invalid_token"/);
  assert.equal(asBearer.headers.get('cache-control'), 'no-store');
  const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
  const stolen = await callMcp(stack, tokens.access_token, thief);
  assert.equal(stolen.status, 401);
  assert.match(stolen.headers.get('www-authenticate'), /error="invalid_dpop_proof"/);

  // Proofs made wrong by the client library itself: for another URL, replayed (same jti), stale.
  const tampered = (change) => oauth.DPoP(client, keyPair, { [oauth.modifyAssertion]: (_header, payload) => change(payload) });
  const elsewhere = await callMcp(stack, tokens.access_token, tampered((p) => { p.htu = `${stack.issuer}/elsewhere`; }));
  assert.equal(elsewhere.status, 401);
  assert.match(elsewhere.headers.get('www-authenticate'), /htu/);
  const fixedJti = tampered((p) => { p.jti = 'the-same-jti'; });
  assert.equal((await callMcp(stack, tokens.access_token, fixedJti)).status, 200);
  const replayed = await callMcp(stack, tokens.access_token, fixedJti);
  assert.equal(replayed.status, 401);
  assert.match(replayed.headers.get('www-authenticate'), /used before/);
  const stale = await callMcp(stack, tokens.access_token, tampered((p) => { p.iat -= 600; }));
  assert.equal(stale.status, 401);
  const noAth = await callMcp(stack, tokens.access_token, tampered((p) => { delete p.ath; }));
  assert.equal(noAth.status, 401);

  // The refresh token is bound too (a public client, RFC 9449 §5): without a proof, or with another
  // key, it is refused and stays good for the key's holder.
  const refresh = (handle) => oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token, { ...insecure, DPoP: handle });
  await assert.rejects(async () => oauth.processRefreshTokenResponse(as, client, await refresh(undefined)),
    (err) => err.error === 'invalid_grant' && /DPoP/.test(err.error_description));
  await assert.rejects(async () => oauth.processRefreshTokenResponse(as, client, await refresh(thief)),
    (err) => err.error === 'invalid_grant');
  const refreshed = await oauth.processRefreshTokenResponse(as, client, await refresh(DPoP));
  assert.equal(refreshed.token_type, 'dpop');
  assert.equal((await callMcp(stack, refreshed.access_token, DPoP)).status, 200);

  // Introspection tells a resource server which key the token needs (RFC 9449 §6.2).
  const rs = await register(as, { redirect_uris: ['https://rs.example/cb'], token_endpoint_auth_method: 'client_secret_basic', client_name: 'resource server' });
  const introspected = await oauth.processIntrospectionResponse(as, { client_id: rs.client_id },
    await oauth.introspectionRequest(as, { client_id: rs.client_id }, oauth.ClientSecretBasic(rs.client_secret), refreshed.access_token, insecure));
  assert.equal(introspected.active, true);
  assert.deepEqual(introspected.cnf, { jkt });
  assert.equal(introspected.token_type, 'DPoP');

  // A client that registered dpop_bound_access_tokens gets nothing without a proof.
  const strict = { client_id: (await register(as, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', dpop_bound_access_tokens: true })).client_id };
  await assert.rejects(() => authorize(deployment, strict, undefined), (err) => err.error === 'invalid_dpop_proof');
  const strictTokens = await authorize(deployment, strict, oauth.DPoP(strict, await oauth.generateKeyPair('ES256')));
  assert.equal(strictTokens.token_type, 'dpop');
});

test('with nonces required, a proof without the server nonce is answered use_dpop_nonce and the retry succeeds', async () => {
  const deployment = await start({ settings: 'dpop_supported => true', args: ['--dpop-require-nonce'] });
  const { stack, as } = deployment;
  const client = { client_id: (await register(as, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' })).client_id };
  const keyPair = await oauth.generateKeyPair('ES256');
  const DPoP = oauth.DPoP(client, keyPair);
  // The first token request has no nonce: use_dpop_nonce with DPoP-Nonce; authorize() retries once.
  let refused = 0;
  const counting = oauth.DPoP(client, await oauth.generateKeyPair('ES256'), { [oauth.modifyAssertion]: (_h, p) => { if (!p.nonce) refused += 1; } });
  const tokens = await authorize(deployment, client, counting);
  assert.equal(refused, 1, 'the first proof had no nonce and was refused');
  assert.equal(tokens.token_type, 'dpop');
  assert.equal((await callMcp(stack, tokens.access_token, counting)).status, 200);
  // A nonce the server never gave is refused at the guard with a new one to use.
  const forged = oauth.DPoP(client, keyPair, { [oauth.modifyAssertion]: (_h, p) => { p.nonce = '1.AAAA'; } });
  const other = await authorize(deployment, client, DPoP);
  const resp = await oauth.protectedResourceRequest(other.access_token, 'POST', new URL(stack.mcpUrl), mcpHeaders(), ping, { ...insecure, DPoP: forged })
    .catch((err) => err.response);
  assert.equal(resp.status, 401);
  assert.match(resp.headers.get('www-authenticate'), /^DPoP .*error="use_dpop_nonce"/);
  assert.ok(resp.headers.get('dpop-nonce'));
});

test('with DPoP off, a proof is ignored and the tokens are bearer tokens', async () => {
  const { stack, as } = await start();
  assert.equal(as.dpop_signing_alg_values_supported, undefined);
  const client = { client_id: (await register(as, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' })).client_id };
  await assert.rejects(() => register(as, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', dpop_bound_access_tokens: true }),
    (err) => err.error === 'invalid_client_metadata');
  const tokens = await authorize({ stack, as }, client, oauth.DPoP(client, await oauth.generateKeyPair('ES256')));
  assert.equal(tokens.token_type, 'bearer');
  assert.equal(claimsOf(tokens.access_token).cnf, undefined);
});
