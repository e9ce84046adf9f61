// Single sign-on with a real OpenID provider (oidc_provider.mjs, started by the Rust test).
// PHASE=provider-up: the login page's "Sign in with …" button (screenshots at both sizes, light
// and dark); rita.radiology (group radiology-it → operator of st-marien) signs in at the
// provider, sees st-marien's devices and not nordklinik's, gets 403 on the users and audit
// pages, logs out through the provider's logout; carl.cleaner (no mapped group) is refused in
// words; adam.admin (region-admins → admin) sees rita on the users page, marked single sign-on.
// PHASE=provider-down (the provider stopped): the button says it is not available, and the local
// break-glass login works.
// Environment (besides lib.mjs's): PHASE, PROVIDER_URL, LOCAL_USER, LOCAL_PASSWORD.
import { scenario, step, check, env, shootAll, login, BASE_URL } from './lib.mjs';

const PHASE = env('PHASE');
const PROVIDER = env('PROVIDER_URL');
const LOCAL_USER = env('LOCAL_USER');
const LOCAL_PASSWORD = env('LOCAL_PASSWORD');

const path = (page) => new URL(page.url()).pathname;

/** Only the fleet and the provider: nothing from the internet. */
async function isolated(browser) {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  await ctx.route((url) => !url.href.startsWith(BASE_URL) && !url.href.startsWith(PROVIDER),
    (route) => route.abort());
  return ctx;
}

/** The SSO button, then the provider's own login form (devInteractions), back to the console. */
async function ssoLogin(page, account) {
  await page.goto('/login');
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(PROVIDER)),
    page.getByRole('link', { name: 'Sign in with Region login' }).click(),
  ]);
  check(await page.locator('input[name="login"]').isVisible(), 'the provider asks who signs in', page.url());
  await page.locator('input[name="login"]').fill(account);
  await page.locator('input[name="password"]').fill('any password: devInteractions');
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(BASE_URL)),
    page.locator('button[type="submit"]').click(),
  ]);
  await page.waitForLoadState('load');
  // A successful sign-in answers a page that moves on by itself (meta refresh) to the console;
  // a refused one stays on the callback with its words.
  if (path(page).startsWith('/auth/oidc')) {
    await page.waitForURL((u) => !u.pathname.startsWith('/auth/oidc'), { timeout: 4000 }).catch(() => {});
  }
  await page.waitForLoadState('load');
  return page;
}

await scenario(`console_sso (${PHASE})`, async (browser) => {
  if (PHASE === 'provider-up') {
    step('the login page offers single sign-on beside the local login');
    {
      const ctx = await isolated(browser);
      const page = await ctx.newPage();
      const r = await page.goto('/login');
      check(r.status() === 200, 'the login page answers 200', r.status());
      check(await page.getByRole('link', { name: 'Sign in with Region login' }).isVisible(),
        'a "Sign in with Region login" button');
      check(await page.getByLabel('User name').isVisible(), 'the local login form stays (break-glass)');
      await ctx.close();
    }
    await shootAll(browser, undefined, 'console-sso', { login: '/login' });

    step('rita.radiology signs in at the provider and lands on the overview as operator of st-marien');
    const ctx = await isolated(browser);
    const page = await ssoLogin(await ctx.newPage(), 'rita.radiology');
    check(path(page) === '/', 'back on the console overview after the provider', page.url());
    const who = await page.locator('header .who').innerText();
    check(/rita\.radiology · operator \(sites st-marien\)/.test(who), 'signed in as operator of st-marien', who);

    step('the operator sees its site\'s devices, not the other site\'s');
    let r = await page.goto('/devices');
    check(r.status() === 200, '/devices answers 200', r.status());
    const list = await page.locator('#device-table').innerText();
    check(list.includes('ct-room-1') && !list.includes('dx-room-1'), 'st-marien\'s device only', list.slice(0, 400));

    step('the admin pages answer 403 with words');
    for (const p of ['/users', '/audit']) {
      r = await page.goto(p);
      check(r.status() === 403, `${p} is refused to an operator`, r.status());
      const body = await page.locator('main').innerText();
      check(/your role operator may not/.test(body), `${p} says why`, body);
    }
    check(!(await page.getByRole('link', { name: 'Users' }).count()), 'no Users link in the navigation of an operator');

    step('logout ends the session here and at the provider (RP-initiated logout)');
    await page.goto('/');
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(PROVIDER)),
      page.getByRole('button', { name: 'Log out' }).click(),
    ]);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(BASE_URL)),
      page.getByRole('button', { name: 'Yes, sign me out' }).click(),
    ]);
    check(path(page) === '/login', 'back on the fleet\'s login page', page.url());
    r = await page.goto('/');
    check(path(page) === '/login', 'the overview needs a login again', page.url());
    // Signed out at the provider too: the button asks who signs in again.
    await page.goto('/login');
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(PROVIDER)),
      page.getByRole('link', { name: 'Sign in with Region login' }).click(),
    ]);
    check(await page.locator('input[name="login"]').isVisible(), 'the provider asks again after its logout', page.url());
    await ctx.close();

    step('a user whose groups map to no role is refused in words');
    {
      const c = await isolated(browser);
      const p = await ssoLogin(await c.newPage(), 'carl.cleaner');
      const body = await p.locator('main').innerText();
      check(path(p) === '/auth/oidc/callback' && /none of your groups/.test(body),
        'the callback says no group gives a role', { url: p.url(), body });
      check(!(await p.getByRole('button', { name: 'Log out' }).count()), 'not signed in');
      await c.close();
    }

    step('adam.admin (region-admins) is admin and sees rita as a single sign-on user');
    {
      const c = await isolated(browser);
      const p = await ssoLogin(await c.newPage(), 'adam.admin');
      r = await p.goto('/users');
      check(r.status() === 200, 'an admin by group opens /users', r.status());
      const row = await p.locator('tr', { hasText: 'rita.radiology' }).innerText();
      check(/operator/.test(row) && /single sign-on/.test(row) && /st-marien/.test(row),
        'rita: operator of st-marien, single sign-on', row);
      await c.close();
    }
  } else {
    step('with the provider down, its button says so in words');
    const ctx = await isolated(browser);
    const page = await ctx.newPage();
    await page.goto('/login');
    const [resp] = await Promise.all([
      page.waitForResponse((x) => x.url().endsWith('/auth/oidc/start')),
      page.getByRole('link', { name: 'Sign in with Region login' }).click(),
    ]);
    await page.waitForLoadState('load');
    const body = await page.locator('main').innerText();
    check(resp.status() === 502 && /not available right now/.test(body) && /local Medgate account/.test(body),
      'a 502 page saying single sign-on is unavailable and to use a local account', { status: resp.status(), body });

    step('the local break-glass login still works');
    await login(page, LOCAL_USER, LOCAL_PASSWORD);
    check(path(page) === '/', 'signed in locally', page.url());
    const who = await page.locator('header .who').innerText();
    check(who.includes(`${LOCAL_USER} · admin`), 'as the local admin', who);
    await ctx.close();
  }
});
