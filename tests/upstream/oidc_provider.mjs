// The upstream identity provider of the gateway's sign-in tests (gateway/tests/common/upstream.rs)
// and of scripts/run: oidc-provider (panva, a certified OpenID provider) from
// tests/clients/node_modules, with one confidential client (the gateway). Sign-in is a form
// (login=<user>, any name), with consent granted along with it, so a test can post it without a
// browser. Every account has a verified email at example.com, a name and groups; "outsider" is in
// no group. The provider keeps no sign-in of its own: every authorization request shows the form,
// so signing out at the gateway visibly means signing in again.
//
//   PORT=4110 CLIENT_ID=gw CLIENT_SECRET=s node tests/upstream/oidc_provider.mjs
//   curl 'http://127.0.0.1:4110/configure?redirect_uri=http://127.0.0.1:8080/login/callback'
//
// or, when the gateway's callback is known before the start, REDIRECT_URI=… instead of /configure.
//
// REFRESH_TOKENS=1: the gateway's client may refresh, and every code exchange brings a refresh
// token (no offline_access and prompt=consent needed: the tests of kept upstream tokens want one
// from the plain sign-in), rotated at each use and outliving the provider's own session;
// ACCESS_TOKEN_TTL=<seconds> shortens access tokens so that a test sees them expire.
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { default: Provider, interactionPolicy } = await import(
  pathToFileURL(path.join(here, '..', 'clients', 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const port = Number(process.env.PORT);
const refreshTokens = process.env.REFRESH_TOKENS === '1';
const accessTokenTtl = Number(process.env.ACCESS_TOKEN_TTL ?? 3600);
const issuer = `http://127.0.0.1:${port}`;

function claimsOf(login) {
  return {
    sub: login,
    email: `${login}@example.com`,
    email_verified: true,
    name: `User ${login}`,
    groups: login === 'outsider' ? [] : ['mcp-users'],
  };
}

// A sign-in is asked for on every authorization request, unless this request has just had one
// (the interaction's result), which a session at the provider would otherwise skip.
function signInEveryTime() {
  const { Check, base } = interactionPolicy;
  const policy = base();
  policy.get('login').checks.add(new Check(
    'every_time',
    'this provider keeps no sign-in of its own',
    (ctx) => (ctx.oidc.result?.login ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT),
  ));
  return policy;
}

// The gateway's callback URL is known once the gateway listens, after this provider: the test
// names it with GET /configure?redirect_uri=…, and the provider is made then.
let provider;
function configure(redirectUri) {
  provider = new Provider(issuer, {
    clients: [
      {
        client_id: process.env.CLIENT_ID,
        client_secret: process.env.CLIENT_SECRET,
        redirect_uris: [redirectUri],
        grant_types: refreshTokens ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    async findAccount(_ctx, id) {
      return { accountId: id, async claims() { return claimsOf(id); } };
    },
    // amr with openid: how the user signed in (the form: pwd), which the gateway keeps with the
    // session; oidc-provider leaves it out of the ID token unless a scope or the request names it.
    claims: { openid: ['sub', 'amr'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'email', 'profile', 'groups'],
    pkce: { required: () => true },
    interactions: { policy: signInEveryTime(), url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['upstream-test-cookie-key'] },
    ttl: { AccessToken: accessTokenTtl },
    ...(refreshTokens ? {
      issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
      rotateRefreshToken: () => true,
      expiresWithSession: async () => false,
    } : {}),
    features: { devInteractions: { enabled: false } },
  });
  callback = provider.callback();
}
let callback;

// What a login form and an "Allow" button would submit, in one POST.
async function login(req, res) {
  const body = await new Promise((resolve) => {
    let text = '';
    req.on('data', (c) => { text += c; });
    req.on('end', () => resolve(new URLSearchParams(text)));
  });
  const { params } = await provider.interactionDetails(req, res);
  const accountId = body.get('login');
  const grant = new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope));
  const grantId = await grant.save();
  await provider.interactionFinished(
    req,
    res,
    { login: { accountId, amr: ['pwd'] }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

const signInPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in – test provider</title></head>
<body><main><h1>Sign in</h1>
<p>This is the local test provider: any user name signs in, with the email
<i>name</i>@example.com; the user <code>outsider</code> is in no group.</p>
<form method="post"><label for="login">User name</label>
<input id="login" name="login" autocomplete="username" required autofocus>
<button type="submit">Sign in</button></form></main></body></html>
`;

if (process.env.REDIRECT_URI) configure(process.env.REDIRECT_URI);

http
  .createServer((req, res) => {
    if (req.url === '/healthz') return res.end('ok');
    if (req.url.startsWith('/configure?')) {
      configure(new URLSearchParams(req.url.split('?')[1]).get('redirect_uri'));
      return res.end('ok');
    }
    if (!provider) {
      res.statusCode = 503;
      return res.end('not configured');
    }
    if (req.url.startsWith('/interaction/')) {
      if (req.method === 'GET') {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(signInPage);
      }
      return login(req, res).catch((err) => {
        res.statusCode = 400;
        res.end(String(err));
      });
    }
    return callback(req, res);
  })
  .listen(port, '127.0.0.1', () => console.log(`upstream provider listening on ${issuer}`));
