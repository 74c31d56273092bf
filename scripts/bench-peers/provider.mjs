// A minimal node-oidc-provider for scripts/bench-peers.sh: one confidential
// client (client_secret_basic) allowed the client_credentials grant, whose
// access tokens are ES256-signed JWTs (RFC 9068) for one resource server —
// the same request and the same kind of answer as Latchkey's benchmark.
// Environment: PORT, CLIENT_ID, CLIENT_SECRET, AUDIENCE.
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 18081);
const audience = process.env.AUDIENCE ?? 'https://api.bench.test';
const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), alg: 'ES256', use: 'sig', kid: 'bench-es256' };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: process.env.CLIENT_ID ?? 'bench',
    client_secret: process.env.CLIENT_SECRET ?? 'bench-secret-bench-secret-bench-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    // Its only key is ES256 (the default, RS256, would need an RSA key).
    id_token_signed_response_alg: 'ES256',
    scope: 'read',
  }],
  jwks: { keys: [jwk] },
  scopes: ['read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // JWT access tokens need a resource server: every request gets this one.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'read',
        audience,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 900,
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.listen(port, '127.0.0.1', () => {
  console.error(`node-oidc-provider listening on http://127.0.0.1:${port}`);
});
