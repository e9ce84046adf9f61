// The device page with a real appliance behind it, as an operator and a viewer meet it:
// the state, live figures and charts of real traffic; the configuration edited with a wrong key
// (the error shows at that key and its line), fixed, saved, and `in_sync` once the appliance
// applied it; a viewer sees the page but is refused (403) when changing the configuration,
// through the page's form and through the API; screenshots at both sizes, light and dark.
// Environment (besides lib.mjs's): DEVICE, OPERATOR_USER, VIEWER_USER, PASSWORD, CONFIG_TOML
// (a valid desired configuration), WRONG_KEY and RIGHT_KEY (a key of CONFIG_TOML misspelt, and
// as it is), FORBIDDEN (patient data sent through the appliance, one value a line: none of it
// may be in the diagnostics bundle).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { scenario, step, check, env, login, shot, SIZES, SCHEMES, BASE_URL } from './lib.mjs';

const DEVICE = env('DEVICE');
const PAGE = `/devices/${DEVICE}`;
const OPERATOR = env('OPERATOR_USER');
const VIEWER = env('VIEWER_USER');
const PASSWORD = env('PASSWORD');
const CONFIG = env('CONFIG_TOML');
const WRONG_KEY = env('WRONG_KEY');
const RIGHT_KEY = env('RIGHT_KEY');
const FORBIDDEN = env('FORBIDDEN').split('\n').filter((v) => v.length > 0);

/** The 1-based line of the first line of `text` that starts with `key`. */
function lineOf(text, key) {
  return text.split('\n').findIndex((l) => l.trim().startsWith(key)) + 1;
}

/** Waits until every chart has drawn (a canvas each) and says how many points it shows. */
async function chartsDrawn(page) {
  await page.waitForFunction(() => {
    const figs = document.querySelectorAll('figure.chart');
    const drawn = document.querySelectorAll('figure.chart canvas');
    const status = document.querySelector('.chart-status');
    return figs.length > 0 && drawn.length === figs.length && status && /points/.test(status.textContent);
  }, null, { timeout: 20000 });
}

/** The session's CSRF token, as the page gives it to htmx. */
async function csrfOf(page) {
  const headers = await page.locator('body').getAttribute('hx-headers');
  return JSON.parse(headers || '{}')['X-CSRF-Token'];
}

await scenario('console_device', async (browser) => {
  const ctx = await browser.newContext({ viewport: SIZES['1366x768'], baseURL: BASE_URL });
  const page = await ctx.newPage();
  const problems = [];
  // Script errors and CSP or integrity refusals show on the console; failed loads by their
  // response (the browser's own /favicon.ico request is no page resource).
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) problems.push(`${r.status()} ${r.url()}`);
  });

  step('the operator opens the device page: state in words, destinations, inventory, charts');
  await login(page, OPERATOR, PASSWORD);
  let r = await page.goto(PAGE);
  check(r.status() === 200, `${PAGE} answers 200`, r.status());
  check((await page.locator('h1').innerText()).includes(DEVICE), 'the heading names the device');
  const live = page.locator('#live');
  check(/online/.test(await live.locator('.badges').innerText()), 'the device is shown online');
  check(await live.locator('table.destinations').getByText('archive').isVisible(),
    'the archive destination is listed with its queue');
  check(await page.locator('#inv-h').isVisible() && /Hardware profile/.test(await page.locator('dl.facts').innerText()),
    'the inventory shows the hardware profile');
  await chartsDrawn(page);
  check(problems.length === 0, 'no script errors (CSP, integrity, uPlot)', problems);

  step('a wrong key: the problem is shown at that key and its line, nothing can be sent');
  const wrong = CONFIG.replace(RIGHT_KEY, WRONG_KEY);
  check(wrong !== CONFIG, 'the wrong key replaced the right one in the text');
  const text = page.getByLabel('Desired configuration (TOML)');
  await text.fill(wrong);
  const result = page.locator('#config-check');
  await result.locator('ol.problems li', { hasText: `listener.${WRONG_KEY}` }).waitFor({ timeout: 10000 });
  const listed = await result.locator('ol.problems li').allInnerTexts();
  const line = lineOf(wrong, WRONG_KEY);
  check(listed.some((l) => l.includes(`listener.${WRONG_KEY}`) && l.includes(`line ${line}`)),
    `a problem at listener.${WRONG_KEY}, line ${line}`, listed);
  const annotated = await result.locator('pre.annotated').innerText();
  check(annotated.includes(`${line} ${WRONG_KEY}`) || annotated.includes(WRONG_KEY),
    'the annotated text marks the line with the wrong key', annotated);
  await shot(page, 'console-device-config-error-1366x768-light');

  step('saving it anyway is refused with the problem at its key');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: /save/i }).click()]);
  check(/Not saved/.test(await page.locator('p.notice').innerText()), 'the page says it was not saved');
  check((await page.locator('#config-check ol.problems').innerText()).includes(`listener.${WRONG_KEY}`),
    'the refused save names the key');

  step('fixed: valid, saved, sent, and in_sync once the appliance applied it');
  await page.getByLabel('Desired configuration (TOML)').fill(CONFIG);
  await page.locator('#config-check').getByText('Valid for the device.').waitFor({ timeout: 10000 });
  await Promise.all([
    page.waitForURL(/saved=1/),
    page.getByRole('button', { name: /save/i }).click(),
  ]);
  check(/Saved: version 1/.test(await page.locator('p.notice').innerText()), 'the page says version 1 was saved');
  await page.locator('#drift[data-drift="in_sync"]').waitFor({ timeout: 60000 });
  check(/in_sync/.test(await page.locator('#live p.drift').innerText()), 'the drift line says in_sync');
  // What the device runs is now the saved document: no change left.
  await page.reload();
  await page.locator('#config-check').getByText('No change: this is what the device runs.').waitFor({ timeout: 10000 });

  step('the operator collects a diagnostics bundle and downloads it from the Commands table');
  await Promise.all([
    page.waitForLoadState('load'),
    page.getByRole('button', { name: 'Collect diagnostics bundle' }).click(),
  ]);
  const link = page.locator('#commands a.download');
  for (let i = 0; i < 60 && (await link.count()) === 0; i++) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  check(await link.count() > 0, 'a Download link appears once the bundle is in',
    await page.locator('#commands').innerText());
  const href = await link.first().getAttribute('href');
  check(/Download diag-\d+\.json \(\d/.test(await link.first().innerText()), 'the link names the file and its size',
    await link.first().innerText());
  const [download] = await Promise.all([page.waitForEvent('download'), link.first().click()]);
  const bundle = await readFile(await download.path());
  check(/^diag-\d+\.json$/.test(download.suggestedFilename()), 'saved under its own name', download.suggestedFilename());
  const got = await page.request.get(href);
  const sha = createHash('sha256').update(bundle).digest('hex');
  check(got.headers()['x-content-sha256'] === sha, 'the bytes saved have the digest the appliance announced',
    [sha, got.headers()['x-content-sha256']]);
  const bundleText = bundle.toString('utf8');
  check(JSON.parse(bundleText) && /"logs"/.test(bundleText), 'the bundle is the appliance\'s JSON with its log lines');
  const leaked = FORBIDDEN.filter((v) => bundleText.includes(v));
  check(leaked.length === 0, 'no patient name, ID, birth date or accession number in the bundle', leaked);

  step('screenshots of the device page at both sizes, light and dark, charts drawn');
  const state = await ctx.storageState();
  for (const size of Object.keys(SIZES)) {
    for (const scheme of SCHEMES) {
      const c = await browser.newContext({ viewport: SIZES[size], colorScheme: scheme, baseURL: BASE_URL, storageState: state });
      const p = await c.newPage();
      r = await p.goto(PAGE);
      check(r.status() === 200, `${PAGE} answers 200 for the screenshot`, r.status());
      await chartsDrawn(p);
      await shot(p, `console-device-${size}-${scheme}`);
      await c.close();
    }
  }
  await ctx.close();

  step('a viewer sees the page, read-only');
  const vctx = await browser.newContext({ viewport: SIZES['1366x768'], baseURL: BASE_URL });
  const vpage = await vctx.newPage();
  await login(vpage, VIEWER, PASSWORD);
  r = await vpage.goto(PAGE);
  check(r.status() === 200, 'the viewer gets the device page', r.status());
  check(await vpage.getByLabel('Desired configuration (TOML)').getAttribute('readonly') !== null,
    'the viewer\'s editor is read-only');
  check(await vpage.getByRole('button', { name: /save/i }).count() === 0, 'the viewer has no save button');
  check(await vpage.locator('#commands a.download').count() === 0, 'the viewer has no download link');
  const vdl = await vpage.request.get(href);
  check(vdl.status() === 403, 'the viewer downloading the bundle by its URL gets 403', vdl.status());

  step('the viewer changing the configuration: 403 through the page\'s form and through the API');
  const csrf = await csrfOf(vpage);
  check(typeof csrf === 'string' && csrf.length > 0, 'the viewer\'s session has a CSRF token');
  const form = await vpage.request.post(`${PAGE}/config`, {
    form: { csrf_token: csrf, config: CONFIG.replace('= 12', '= 3') },
    maxRedirects: 0,
  });
  check(form.status() === 403, 'the page\'s form POST is refused with 403', form.status());
  check(/may not/.test(await form.text()), 'the refusal says the role may not');
  const json = await vpage.request.put(`/api/v1/devices/${DEVICE}/config`, {
    headers: { 'X-CSRF-Token': csrf },
    data: { config: { listener: { ae_title: 'X', bind: '0.0.0.0:104' } } },
  });
  check(json.status() === 403, 'the API PUT is refused with 403', json.status());
  const after = await (await vpage.request.get(`/api/v1/devices/${DEVICE}/config`)).json();
  check(after.desired && after.desired.version === 1, 'the desired configuration is still version 1', after.desired);
  await shot(vpage, 'console-device-viewer-1366x768-light');
  await vctx.close();
});
