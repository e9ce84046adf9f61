// A real OpenID provider for the single sign-on tests: oidc-provider (the certified package
// from npm) on loopback, with one confidential client — the fleet — that must use PKCE, and the
// users below, whose `groups` claim the fleet maps to roles. Its own login form (devInteractions)
// takes a user name and any password; consent is skipped for the fleet (a first-party client,
// as a hospital's provider would configure it). Prints "ready" once listening.
//
// Environment (set by the Rust test): OIDC_PORT, FLEET_REDIRECT_URI, FLEET_POST_LOGOUT_URI,
// OIDC_CLIENT_SECRET. Optional OIDC_ALG (RS256, default, or ES256).
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set (the Rust test sets it)`);
  return v;
};
const port = Number(need('OIDC_PORT'));
const alg = process.env.OIDC_ALG || 'RS256';

// The users: account id → claims. `groups` is what the fleet maps (auth.oidc.roles).
const USERS = {
  'rita.radiology': { name: 'Rita Radiology IT', groups: ['radiology-it', 'staff'] },
  'adam.admin': { name: 'Adam Region Admin', groups: ['region-admins'] },
  'carl.cleaner': { name: 'Carl No Mapped Group', groups: ['facilities'] },
};

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const configuration = {
  clients: [{
    client_id: 'medgate-fleet',
    client_secret: need('OIDC_CLIENT_SECRET'),
    redirect_uris: [need('FLEET_REDIRECT_URI')],
    post_logout_redirect_uris: [need('FLEET_POST_LOGOUT_URI')],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [{ ...rsa, kid: 'rsa-1', use: 'sig', alg: 'RS256' }, { ...ec, kid: 'ec-1', use: 'sig', alg: 'ES256' }] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  // The claims of the scopes asked for go into the ID token itself (the fleet reads no userinfo).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    // A plain page without outside fonts (nothing is loaded from the internet in these tests).
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign out</title></head><body>
          <h1>Sign out of the test provider?</h1>${form}
          <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
          <button type="submit" form="op.logoutForm">No, stay signed in</button></body></html>`;
      },
    },
  },
  cookies: { keys: ['medgate-test-provider-cookie-key'] },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AuthorizationCode: 60, IdToken: 600, AccessToken: 600 },
  async findAccount(_ctx, id) {
    const u = USERS[id];
    if (!u) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: u.name, groups: u.groups };
      },
    };
  },
  // Consent is implied for the fleet (first-party client).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile groups');
    grant.addOIDCClaims(['preferred_username', 'name', 'groups']);
    await grant.save();
    return grant;
  },
};

const oidc = new Provider(`http://127.0.0.1:${port}`, configuration);
oidc.on('server_error', (_ctx, err) => console.error(`provider server_error: ${err.stack}`));
oidc.on('grant.error', (_ctx, err) => console.error(`provider grant.error: ${err.message} ${err.error_description ?? ''}`));
oidc.on('authorization.error', (_ctx, err) => console.error(`provider authorization.error: ${err.message} ${err.error_description ?? ''}`));
oidc.listen(port, '127.0.0.1', () => {
  console.log(`ready: issuer http://127.0.0.1:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
