// The upstream identity provider of gateway/tests/upstream_sign_in.rs: oidc-provider (panva, a
// certified OpenID provider) from tests/clients/node_modules, with one confidential client (the
// gateway under test). Sign-in is a form the test posts like a browser (login=<user>), with consent
// granted along with it, so no browser is needed. Every account has a verified email at
// example.com, a name and groups; "outsider" is in no group.
//
//   PORT=4110 CLIENT_ID=gw CLIENT_SECRET=s node tests/upstream/oidc_provider.mjs
//   curl 'http://127.0.0.1:4110/configure?redirect_uri=http://127.0.0.1:8080/login/callback'
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { default: Provider } = await import(
  pathToFileURL(path.join(here, '..', 'clients', 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const port = Number(process.env.PORT);
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
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    async findAccount(_ctx, id) {
      return { accountId: id, async claims() { return claimsOf(id); } };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'email', 'profile', 'groups'],
    pkce: { required: () => true },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['upstream-test-cookie-key'] },
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
        res.setHeader('content-type', 'text/html');
        return res.end('<form method="post"><input name="login"><button>Sign in</button></form>');
      }
      return login(req, res).catch((err) => {
        res.statusCode = 400;
        res.end(String(err));
      });
    }
    return callback(req, res);
  })
  .listen(port, '127.0.0.1', () => console.log(`upstream provider listening on ${issuer}`));
