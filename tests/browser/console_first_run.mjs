// First run of the console, as hospital IT meets it: the one-time setup link the fleet printed,
// the first admin created in the browser, the overview and device list (screenshots at both sizes,
// light and dark), log out, a wrong password refused with words, the right one let in.
// Environment (besides lib.mjs's): SETUP_URL, ADMIN_USER, ADMIN_PASSWORD.
import { scenario, step, check, env, shootAll } from './lib.mjs';

const SETUP_URL = env('SETUP_URL');
const USER = env('ADMIN_USER');
const PASSWORD = env('ADMIN_PASSWORD');

await scenario('console_first_run', async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await ctx.newPage();

  step('the setup link opens the form to create the first admin');
  let r = await page.goto(SETUP_URL);
  check(r.status() === 200, 'the setup page answers 200', r.status());
  await page.getByLabel('User name').fill(USER);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByLabel('Password again').fill(PASSWORD);
  await Promise.all([
    page.waitForURL((u) => new URL(u).pathname === '/'),
    page.getByRole('button', { name: /create admin/i }).click(),
  ]);
  check(await page.getByRole('button', { name: 'Log out' }).isVisible(), 'signed in after setup: a Log out button');

  step('the setup link is dead once an admin exists');
  const again = await (await browser.newContext()).newPage();
  r = await again.goto(SETUP_URL);
  check(r.status() >= 400, 'a used setup link is refused', r.status());

  step('screenshots of the overview and the device list');
  const state = await ctx.storageState();
  await shootAll(browser, state, 'console', { overview: '/', devices: '/devices' });

  step('log out: back to the login page, the overview needs a login again');
  await Promise.all([page.waitForURL(/\/login/), page.getByRole('button', { name: 'Log out' }).click()]);
  r = await page.goto('/');
  check(new URL(page.url()).pathname === '/login', 'the overview redirects to /login after logout', page.url());

  step('a wrong password is refused with words, the right one lets in');
  await page.getByLabel('User name').fill(USER);
  await page.getByLabel('Password').fill(PASSWORD + 'x');
  await page.getByRole('button', { name: /log in/i }).click();
  await page.waitForLoadState('load');
  const body = await page.locator('body').innerText();
  check(/not|wrong|invalid|incorrect/i.test(body) && new URL(page.url()).pathname === '/login',
    'the login page says the password was not accepted', body.slice(0, 300));
  await page.getByLabel('User name').fill(USER);
  await page.getByLabel('Password').fill(PASSWORD);
  await Promise.all([page.waitForURL((u) => new URL(u).pathname === '/'), page.getByRole('button', { name: /log in/i }).click()]);
  check(await page.getByRole('button', { name: 'Log out' }).isVisible(), 'signed in again');
  await ctx.close();
});
