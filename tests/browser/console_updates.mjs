// ota (issue 14): the Updates pages as hospital IT uses them. An admin opens Updates from the
// navigation, sees the uploaded bundle, creates a campaign with the form (a canary, then the
// rest), approves it, and watches it live: the canary waiting for idle DICOM while the others
// wait for their wave, then every device healthy and the campaign completed. A refused upload
// says why. A viewer of another hospital sees no campaign and no admin controls, and is refused
// the campaign's page. Screenshots at both sizes, light and dark.
// The wall in the corridor shows the rollout meanwhile.
// Environment (besides lib.mjs's): ADMIN_USER, VIEWER_USER, PASSWORD, BAD_BUNDLE (a file path),
// WALL_PATH (a display link).
import { scenario, step, check, env, shot, shootAll, login, BASE_URL } from './lib.mjs';

const ADMIN = env('ADMIN_USER');
const VIEWER = env('VIEWER_USER');
const PASSWORD = env('PASSWORD');
const BAD_BUNDLE = env('BAD_BUNDLE');
const WALL_PATH = env('WALL_PATH');

const text = async (page, sel = 'main') => page.locator(sel).innerText();

await scenario('console_updates', async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Failed loads are judged by the response listener (the favicon's 404 and the refused upload's 422 are expected).
  page.on('console', (m) => { if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(m.text()); });
  page.on('response', (r) => {
    const u = new URL(r.url());
    // The refused upload below answers 422 on purpose.
    if (r.status() >= 400 && u.pathname !== '/favicon.ico' && !(u.pathname === '/api/v1/bundles' && r.status() === 422)) {
      errors.push(`${r.status()} ${u.pathname}`);
    }
  });
  await login(page, ADMIN, PASSWORD);

  step('the navigation leads to Updates');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: 'Updates', exact: true }).click()]);
  check(new URL(page.url()).pathname === '/updates', 'the Updates link opens /updates', page.url());
  let body = await text(page);
  check(/No campaign yet/.test(body), 'no campaign yet', body.slice(0, 600));
  const bundles = await page.locator('table.bundles').innerText();
  check(/0\.2\.0/.test(bundles) && /medgate-appliance/.test(bundles) && /qemu-vm/.test(bundles), 'the stored bundle is listed', bundles);

  step('a tampered bundle is refused with its reason');
  await page.locator('#bundle-upload input[type=file]').setInputFiles(BAD_BUNDLE);
  await page.getByRole('button', { name: 'Upload and verify' }).click();
  await page.waitForFunction(() => /Refused/.test(document.getElementById('bundle-upload-result').textContent), null, { timeout: 10000 });
  const refusal = await page.locator('#bundle-upload-result').innerText();
  check(/payload_digest_mismatch/.test(refusal) && /Nothing was stored/.test(refusal), 'the refusal names its code', refusal);
  await shot(page, 'updates-refused-upload-1366x768-light');

  step('a campaign from the form: the canary first, then the rest');
  await page.getByLabel('Name').fill('0.2.0 for St Marien');
  await page.getByLabel('Sites').fill('st-marien');
  await page.getByLabel(/Canary devices/).fill('ct-room-1');
  await page.getByLabel(/Then shares of the rest/).fill('100');
  await page.getByLabel(/Soak, minutes/).fill('0');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: /Create/ }).click()]);
  const campaignPath = new URL(page.url()).pathname;
  check(/^\/updates\/campaigns\/cmp-/.test(campaignPath), 'the new campaign opens', page.url());
  body = await text(page);
  check(/Draft: waits for an admin's approval; 3 devices targeted/.test(body), 'a draft, three devices', body.slice(0, 900));
  check(/canary ct-room-1, then 100 %/.test(body), 'the waves in words', body.slice(0, 900));

  step('approved: the canary waits for idle DICOM, the others for their wave');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Approve and start' }).click()]);
  await page.waitForFunction(
    () => /waiting for idle DICOM: associations are open/.test(document.querySelector('tr[data-device="ct-room-1"]')?.textContent ?? ''),
    null, { timeout: 30000 });
  const rows = await page.locator('table.campaign-devices').innerText();
  check(/Waits for its wave/.test(rows), 'the others wait for their wave', rows);
  check(/Running: 0 of 3 healthy/.test(await text(page, '#campaign-state')), 'running, none healthy yet');
  await shot(page, 'updates-campaign-canary-waiting-1366x768-light');

  step('the wall shows the rollout and the canary waiting');
  const wctx = await browser.newContext({ viewport: { width: 1920, height: 1080 }, baseURL: BASE_URL, colorScheme: 'dark' });
  const wall = await wctx.newPage();
  await wall.goto(WALL_PATH);
  const line = await wall.locator('ul.rollouts').innerText();
  check(/Update 0\.2\.0 \(0\.2\.0 for St Marien\): 0 of 3 done, 1 waiting for idle DICOM/.test(line), 'the rollout on the wall', line);
  await shot(wall, 'wall-rollout-1920x1080');
  await wctx.close();
  // The corridor's 4K screen.
  const w4 = await browser.newContext({ viewport: { width: 3840, height: 2160 }, baseURL: BASE_URL, colorScheme: 'dark' });
  const wall4 = await w4.newPage();
  await wall4.goto(WALL_PATH);
  check(/waiting for idle DICOM/.test(await wall4.locator('ul.rollouts').innerText()), 'the rollout on the 4K wall');
  await shot(wall4, 'wall-rollout-3840x2160');
  await w4.close();

  step('the rest follow the healthy canary; completed');
  await page.waitForFunction(() => document.querySelector('#campaign-live')?.dataset.state === 'completed', null, { timeout: 90000 });
  body = await text(page);
  check(/Completed: 3 of 3 healthy on 0\.2\.0, 0 failed/.test(body), 'completed, all healthy', body.slice(0, 1200));
  check((await page.locator('tr[data-state="healthy"]').count()) === 3, 'three healthy rows');
  await shootAll(browser, await ctx.storageState(), 'updates', { 'campaign-completed': campaignPath, list: '/updates' });
  await page.goto('/updates');
  const list = await text(page);
  check(/completed/.test(list) && /3 \/ 3 healthy/.test(list), 'the list shows the campaign completed', list.slice(0, 900));

  step('a viewer of another hospital sees none of it');
  const vctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const v = await vctx.newPage();
  await login(v, VIEWER, PASSWORD);
  await v.goto('/updates');
  const vbody = await text(v);
  check(/No campaign yet/.test(vbody), "no campaign of another hospital's devices", vbody.slice(0, 600));
  check((await v.locator('#bundle-upload').count()) === 0 && (await v.locator('form.campaign-form').count()) === 0, 'no admin controls');
  const r = await v.goto(campaignPath);
  check(r.status() === 404, "the campaign's page is refused", r.status());
  check(errors.length === 0, 'no script errors or failed loads', errors);
});
