// The fleet pages as hospital IT and a site's operator use them, in two phases the Rust test
// (tests/tests/console_browser.rs) runs around a real appliance's enrollment:
//   PHASE=admin     the admin creates a site with rooms, issues a claim token for a room (shown
//                   once) and downloads the provisioning file to PROVISIONING_PATH; screenshots
//                   of the sites, site and claim pages.
//   PHASE=operator  (the appliance enrolled with that file and reports) the operator of site A
//                   sees only site A's appliances, is refused site B's by URL and through the API,
//                   runs a bulk action over "all" (the Rust test checks that only site A's devices
//                   changed); the admin finds the new appliance online in the list; screenshots
//                   of the devices list, plain and filtered.
// Environment (besides lib.mjs's): PHASE, ADMIN_USER, OP_USER, PASSWORD, NEW_SITE, NEW_DEVICE,
// PROVISIONING_PATH, SITE_A, SITE_B, B_DEVICE, BULK_TAG.
import { scenario, step, check, env, shootAll, shot, login, context, SIZES, SCHEMES } from './lib.mjs';

const PHASE = env('PHASE');
const PASSWORD = env('PASSWORD');

async function loggedIn(browser, user) {
  const ctx = await context(browser, { size: '1366x768', scheme: 'light' });
  ctx.setDefaultTimeout(15000);
  const page = await ctx.newPage();
  await login(page, user, PASSWORD);
  check(await page.getByRole('button', { name: 'Log out' }).isVisible(), `${user} is logged in`);
  return { ctx, page };
}

async function rowsOf(page) {
  return page.locator('table.devices tbody tr td:nth-child(2) strong').allInnerTexts();
}

await scenario(`console_fleet_${PHASE}`, async (browser) => {
  if (PHASE === 'admin') {
    const NEW_SITE = env('NEW_SITE');
    const NEW_DEVICE = env('NEW_DEVICE');
    const { ctx, page } = await loggedIn(browser, env('ADMIN_USER'));

    step('the admin creates a site with a time zone and two rooms');
    await page.getByRole('link', { name: 'Sites' }).click();
    await page.waitForURL(/\/sites$/);
    await page.getByLabel(/Site id/).fill(NEW_SITE);
    await page.getByLabel('Name', { exact: true }).fill('Nordklinik Tromsø');
    await page.getByLabel(/Time zone/).fill('Europe/Oslo');
    await page.getByLabel(/Rooms, one per line/).fill('CT 1\nMR 2');
    await Promise.all([page.waitForURL(new RegExp(`/sites/${NEW_SITE}\\?saved=1`)), page.getByRole('button', { name: 'Create site' }).click()]);
    check(await page.getByText('Saved.').isVisible(), 'the site page says it was saved');

    step('a wrong time zone is refused with words');
    await page.getByLabel(/Time zone/).fill('Tromsø');
    await page.getByRole('button', { name: 'Save site' }).click();
    await page.waitForLoadState('load');
    const err = await page.getByRole('alert').innerText();
    check(/IANA name/.test(err), 'the error names what a time zone looks like', err);
    await page.goto(`/sites/${NEW_SITE}`);

    step('a claim token for a room, shown once, and its provisioning file');
    await page.getByLabel(/Device id/).fill(NEW_DEVICE);
    await page.locator('select[name=room]').selectOption('CT 1');
    await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Issue claim token' }).click()]);
    const token = await page.getByLabel('Claim token').inputValue();
    check(/^[0-9a-f]{64}$/.test(token), 'a 64-character claim token on the page', token);
    check(await page.getByText('This token is shown only now').isVisible(), 'the page says it is shown once');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download provisioning file' }).click(),
    ]);
    check(download.suggestedFilename() === `provisioning-${NEW_DEVICE}.toml`, 'the file is named after the device', download.suggestedFilename());
    await download.saveAs(env('PROVISIONING_PATH'));

    step('screenshots of the claim page (the token is only on this page: one page, every size and scheme)');
    for (const size of Object.keys(SIZES)) {
      for (const scheme of SCHEMES) {
        await page.setViewportSize(SIZES[size]);
        await page.emulateMedia({ colorScheme: scheme });
        await shot(page, `console-claim-${size}-${scheme}`);
      }
    }
    step('screenshots of the sites pages');
    await shootAll(browser, await ctx.storageState(), 'console', {
      sites: '/sites',
      site: `/sites/${NEW_SITE}`,
    });
    await ctx.close();
    return;
  }

  const SITE_A = env('SITE_A');
  const SITE_B = env('SITE_B');
  const B_DEVICE = env('B_DEVICE');
  step('the operator of site A sees only site A\'s appliances');
  const op = await loggedIn(browser, env('OP_USER'));
  let r = await op.page.goto('/devices');
  check(r.status() === 200, 'the devices list answers 200', r.status());
  let rows = await rowsOf(op.page);
  check(rows.length > 0 && !rows.includes(B_DEVICE), `site A's devices, not ${B_DEVICE}`, rows);
  r = await op.page.goto(`/devices?site=${SITE_B}`);
  check((await rowsOf(op.page)).length === 0 && await op.page.getByText('No device matches').isVisible(),
    'filtering on site B shows nothing');

  step('site B by URL and through the API: refused, its device not even said to exist');
  r = await op.page.goto(`/sites/${SITE_B}`);
  check(r.status() === 403, 'site B\'s page is 403', r.status());
  const byUrl = await op.ctx.request.get(`/devices/${B_DEVICE}`);
  check(byUrl.status() === 404, `${B_DEVICE}'s page is 404`, byUrl.status());
  const api = await op.ctx.request.get(`/api/v1/devices/${B_DEVICE}`);
  check(api.status() === 404, `GET /api/v1/devices/${B_DEVICE} is 404`, api.status());

  step('a bulk action over every matching device, confirmed, touches site A only');
  await op.page.goto('/devices');
  const total = (await rowsOf(op.page)).length;
  await op.page.getByLabel('Apply to').selectOption('all');
  await op.page.getByLabel('Action').selectOption('tag');
  await op.page.getByLabel('Tag (add or remove)').fill(env('BULK_TAG'));
  await Promise.all([op.page.waitForLoadState('load'), op.page.getByRole('button', { name: 'Run' }).click()]);
  check(await op.page.getByRole('heading', { name: 'Confirm bulk action' }).isVisible(), 'a confirmation first');
  await shot(op.page, 'console-bulk-confirm-1366x768-light');
  await Promise.all([op.page.waitForLoadState('load'), op.page.getByRole('button', { name: /Yes, run it/ }).click()]);
  const summary = await op.page.getByRole('status').innerText();
  check(summary.includes(`${total} tagged`), `the summary says ${total} tagged`, summary);
  await shot(op.page, 'console-bulk-result-1366x768-light');
  await op.ctx.close();

  step('the admin finds the enrolled appliance online, in its room');
  const admin = await loggedIn(browser, env('ADMIN_USER'));
  const NEW_DEVICE = env('NEW_DEVICE');
  await admin.page.goto(`/devices?q=${NEW_DEVICE}`);
  const row = admin.page.locator('table.devices tbody tr', { hasText: NEW_DEVICE });
  const text = await row.innerText();
  check(/online/.test(text) && /CT 1/.test(text), `${NEW_DEVICE} is listed online in CT 1`, text);

  step('screenshots of the devices list, plain, filtered and sorted');
  await shootAll(browser, await admin.ctx.storageState(), 'console', {
    devices: '/devices',
    'devices-filtered': `/devices?site=${SITE_A}&attention=1&sort=last_seen&dir=desc`,
  });
  await admin.ctx.close();
});
