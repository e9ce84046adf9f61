// The account and administration pages as hospital IT uses them, then the login's defences.
// An admin creates a viewer (its generated password shown once), the viewer signs in and gets 403
// on the users page, the admin ends the viewer's session (the viewer is sent to the login page
// with words), changes its role, disables and enables it; creates an API token (shown once; it
// works; revoked, it no longer does); looks at its sessions and at the audit log (filters,
// paging, CSV and JSON export). Screenshots of every page at both sizes, light and dark.
// Then: a cross-site POST from a page of another origin (a tiny server here, on `localhost`
// while the console is on 127.0.0.1) refused — neither a user created nor a forged login;
// throttling after repeated failures said in words; a session idle longer than its limit (the
// test's fleet: 1 minute) sent back to the login page.
// Environment (besides lib.mjs's): ADMIN_USER, ADMIN_PASSWORD, THROTTLE_USER.
import { createServer } from 'node:http';
import { scenario, step, check, env, shootAll, shot, login, BASE_URL } from './lib.mjs';

const ADMIN = env('ADMIN_USER');
const PASSWORD = env('ADMIN_PASSWORD');
const THROTTLE_USER = env('THROTTLE_USER');

const path = (page) => new URL(page.url()).pathname;
const text = async (page, sel = 'main') => page.locator(sel).innerText();

/** A page of another site that posts a form to the console by itself (the attacker's). */
function attacker() {
  const forms = {
    '/forge-user': { action: `${BASE_URL}/users`, fields: { name: 'mallory', role: 'admin', password: 'mallory owns this fleet now' } },
    '/forge-login': { action: `${BASE_URL}/login`, fields: { user: ADMIN, password: PASSWORD } },
  };
  const server = createServer((req, res) => {
    const f = forms[req.url];
    if (!f) { res.writeHead(404).end(); return; }
    const inputs = Object.entries(f.fields)
      .map(([k, v]) => `<input type="hidden" name="${k}" value="${v}">`).join('');
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!DOCTYPE html><title>You won a prize</title><form id="f" method="post" action="${f.action}">${inputs}</form>
      <script>document.getElementById('f').submit()</script>`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

await scenario('console_admin', async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const page = await ctx.newPage();
  await login(page, ADMIN, PASSWORD);
  check(path(page) === '/', 'the admin is signed in', page.url());

  step('the users page lists users; the admin creates a viewer of st-marien with a generated password');
  let r = await page.goto('/users');
  check(r.status() === 200, '/users answers 200', r.status());
  check((await text(page, 'table')).includes(ADMIN), 'the admin is listed');
  await page.getByLabel(/User name/).fill('vera.viewer');
  await page.locator('select[name="role"]').selectOption('viewer');
  await page.getByLabel(/St[.-]? ?Marien|st-marien/i).check();
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Create user' }).click()]);
  let body = await text(page);
  check(/User vera\.viewer created with role viewer/.test(body), 'the page says the user was created', body.slice(0, 400));
  const generated = (await page.locator('#secret').innerText()).trim();
  check(generated.length === 20, 'a generated password of 20 characters, shown once', generated);
  const row = await page.locator('tr', { hasText: 'vera.viewer' }).innerText();
  check(/viewer/.test(row) && /st-marien/.test(row) && /password/.test(row), 'vera: viewer of st-marien, password', row);

  step('the viewer signs in with it, sees devices, and gets 403 on the users page');
  const vctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const vpage = await vctx.newPage();
  await login(vpage, 'vera.viewer', generated);
  check(path(vpage) === '/', 'the viewer is signed in', vpage.url());
  r = await vpage.goto('/devices');
  check(r.status() === 200 && (await text(vpage)).includes('ct-room-1'), 'the viewer sees st-marien\'s devices');
  r = await vpage.goto('/users');
  check(r.status() === 403 && /your role viewer may not/.test(await text(vpage)), 'and gets 403 on /users', r.status());

  step('the admin opens the viewer\'s page and ends its session; the viewer is told at its next click');
  await page.getByRole('link', { name: 'vera.viewer' }).click();
  await page.waitForLoadState('load');
  check(path(page) === '/users/vera.viewer', 'the user\'s page', page.url());
  check(await page.getByRole('button', { name: 'End session' }).count() === 1, 'one open session of vera');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'End session' }).click()]);
  check(/A session of vera\.viewer was ended/.test(await text(page)), 'the admin page says so');
  await vpage.goto('/devices');
  check(path(vpage) === '/login' && /Your session has ended/.test(await text(vpage)),
    'the viewer is back at the login page, told why', { url: vpage.url() });
  await vctx.close();

  step('the admin changes the viewer\'s role, disables and enables it, resets its password');
  await page.locator('select[name="role"]').selectOption('operator');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Save role and sites' }).click()]);
  check(/vera\.viewer now has the role operator/.test(await text(page)), 'the role is changed');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Disable vera.viewer' }).click()]);
  check(/vera\.viewer is disabled/.test(await text(page)), 'disabled');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Enable vera.viewer' }).click()]);
  check(/vera\.viewer is enabled again/.test(await text(page)), 'enabled again');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Reset password' }).click()]);
  const reset = (await page.locator('#secret').innerText()).trim();
  check(reset.length === 20 && reset !== generated, 'a new password, shown once', reset);

  step('the admin creates an API token: shown once, it works; revoked, it does not');
  await page.getByRole('link', { name: 'API tokens' }).click();
  await page.waitForLoadState('load');
  await page.getByLabel('What it is for').fill('backup script on it-srv-2');
  await page.locator('select[name="role"]').selectOption('viewer');
  await page.getByLabel(/Expires in/).fill('30');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Create token' }).click()]);
  const token = (await page.locator('#secret').innerText()).trim();
  check(/^mgt_[0-9a-f]{64}$/.test(token), 'the token is shown once', token);
  let api = await fetch(`${BASE_URL}/api/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } });
  const me = await api.json();
  check(api.status === 200 && me.user === ADMIN && me.role === 'viewer', 'the token authenticates as the admin, with role viewer', me);
  await page.goto('/tokens');
  check(!(await text(page)).includes(token), 'opened again, the page no longer shows the token');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Revoke token backup script on it-srv-2' }).click()]);
  check(/The token is revoked/.test(await text(page)), 'revoked');
  check((await page.locator('tr', { hasText: 'backup script' }).innerText()).includes('revoked'), 'listed as revoked');
  api = await fetch(`${BASE_URL}/api/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } });
  check(api.status === 401, 'a revoked token is refused', api.status);

  step('my sessions: this browser is marked');
  await page.getByRole('link', { name: 'Sessions' }).click();
  await page.waitForLoadState('load');
  check(/this browser/.test(await text(page)), 'the current session is marked "this browser"');

  step('the audit log: filters, paging, export');
  r = await page.goto(`/audit?actor=${ADMIN}&action=user.`);
  check(r.status() === 200, '/audit answers 200', r.status());
  body = await text(page, 'table');
  check(/user\.create/.test(body) && /user\.update/.test(body) && !/token\.create/.test(body),
    'the admin\'s user changes, nothing else', body.slice(0, 500));
  r = await page.goto('/audit?action=device.patch');
  let rows = await page.locator('table.audit tbody tr').count();
  check(rows === 50, 'a page holds 50 entries', rows);
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: 'Older →' }).click()]);
  rows = await page.locator('table.audit tbody tr').count();
  check(rows === 10 && await page.getByRole('link', { name: /Newest/ }).count() === 1, 'the next page has the other 10', rows);
  await page.goto('/audit?action=user.');
  const csvHref = await page.getByRole('link', { name: 'CSV' }).getAttribute('href');
  const csv = await page.request.get(csvHref);
  const csvText = await csv.text();
  check(csv.status() === 200 && csv.headers()['content-type'].startsWith('text/csv')
    && csvText.startsWith('id,at_ms,actor,source,action,target,outcome,before,after') && /user\.create/.test(csvText),
  'the CSV export of the same selection', csvText.slice(0, 200));
  const json = await (await page.request.get(await page.getByRole('link', { name: 'JSON' }).getAttribute('href'))).json();
  check(json.entries.length > 0 && json.entries.every((e) => e.action.startsWith('user.')), 'the JSON export of the same selection', json.entries.length);

  step('screenshots of users, a user, tokens, sessions and the audit log');
  await shootAll(browser, await ctx.storageState(), 'console-admin', {
    users: '/users', user: '/users/vera.viewer', tokens: '/tokens', sessions: '/sessions', audit: '/audit',
  });

  step('a cross-site POST from another origin is refused: no user made, no forged login');
  const evil = await attacker();
  const evilBase = `http://localhost:${evil.address().port}`;
  const epage = await ctx.newPage();
  await Promise.all([epage.waitForURL((u) => u.href.startsWith(BASE_URL)), epage.goto(`${evilBase}/forge-user`)]);
  await epage.waitForLoadState('load');
  check(path(epage) === '/login', 'the forged POST /users did not reach a signed-in handler (sent to the login page)', epage.url());
  await page.goto('/users');
  check(!(await text(page, 'table')).includes('mallory'), 'no user "mallory" was created');
  const fctx = await browser.newContext({ baseURL: BASE_URL });
  const fpage = await fctx.newPage();
  const [forged] = await Promise.all([
    fpage.waitForResponse((x) => x.url() === `${BASE_URL}/login` && x.request().method() === 'POST'),
    fpage.goto(`${evilBase}/forge-login`),
  ]);
  await fpage.waitForLoadState('load');
  check(forged.status() === 403 && /did not come from this console/.test(await text(fpage)),
    'the forged login is refused with words (403)', forged.status());
  check(!(await fpage.getByRole('button', { name: 'Log out' }).count()), 'and nobody is signed in');
  await fctx.close();
  await new Promise((resolve) => evil.close(resolve));

  step('repeated failures pause the logins of an account, said in words');
  const tctx = await browser.newContext({ baseURL: BASE_URL });
  const tpage = await tctx.newPage();
  for (let i = 1; i <= 5; i++) {
    await login(tpage, THROTTLE_USER, `wrong password number ${i}`);
    check(/user name or password wrong/.test(await text(tpage)), `failure ${i} says the password was wrong`);
  }
  await login(tpage, THROTTLE_USER, 'the right one, long enough');
  body = await text(tpage);
  check(/Too many failed logins/.test(body) && /try again in about 15 minutes/.test(body),
    'the sixth attempt, even with the right password, is paused with words', body);
  await shot(tpage, 'console-admin-login-throttled-1366x768-light');
  await tctx.close();

  step('a session idle longer than its limit (1 minute here) ends: back to the login page, told why');
  await page.goto('/users');
  await page.waitForTimeout(65_000);
  await page.goto('/users');
  check(path(page) === '/login' && /Your session has ended/.test(await text(page)),
    'after 65 s without a request the console asks for a login again', page.url());
  await ctx.close();
});
