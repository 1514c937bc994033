// A real OpenID Connect provider (the npm package `oidc-provider`, installed by
// scripts/test under target/test-deps) for the connection tests: discovery,
// the client credentials grant, introspection and revocation.
//
//   node tests/oidc/server.mjs <path to oidc-provider's lib/index.js> [token lifetime in seconds, default 600]
//
// Prints `listening http://127.0.0.1:PORT` once it serves. Clients:
//   dibop / dibop-oidc-secret  (client_secret_basic, client_credentials)
//   api   / api-secret         (the resource server: introspection only)
// With OIDC_REDIRECT_URIS (comma-separated), also a client for the console's
// single sign-on, and the provider's own login pages (any login; the login
// is the person's email):
//   dibop-console / console-secret  (authorization code with PKCE)
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const { default: Provider } = await import(pathToFileURL(process.argv[2]).href);

let handle = (_req, res) => { res.statusCode = 503; res.end(); };
const server = http.createServer((req, res) => handle(req, res));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const redirects = (process.env.OIDC_REDIRECT_URIS || '').split(',').filter(Boolean);
  const people = redirects.length > 0;
  const consoleClient = people ? [{
    client_id: 'dibop-console',
    client_secret: 'console-secret',
    grant_types: ['authorization_code'],
    redirect_uris: redirects,
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }] : [];
  const provider = new Provider(issuer, {
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: id, email_verified: true }),
    }),
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    clients: [
      ...consoleClient,
      {
        client_id: 'dibop',
        client_secret: 'dibop-oidc-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'api',
        client_secret: 'api-secret',
        grant_types: [],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['openid', 'email', 'profile', 'vehicles:read'],
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      devInteractions: { enabled: people },
    },
    ttl: { ClientCredentials: Number(process.argv[3] || 600) },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc server_error', err));
  handle = provider.callback();
  console.log(`listening ${issuer}`);
});
