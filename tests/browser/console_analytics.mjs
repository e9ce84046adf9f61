// analytics (issue 13 part 2): the Analytics pages as hospital IT reads them. An IT user of every
// site opens Analytics from the navigation: this year's figures (the same as the API's), the
// trend charts drawn by uPlot, the 7/30/365-day ranges, forwarding delays per hospital in words,
// appliances by hospital and modality; the per-day table and its limit said in words. A viewer of
// one hospital sees only that hospital and is refused another. Screenshots at both sizes, light
// and dark.
// Environment (besides lib.mjs's): IT_USER, VIEWER_USER, PASSWORD, REGION_STUDIES (this year's
// studies, grouped as the page writes them).
import { scenario, step, check, env, shootAll, login, BASE_URL } from './lib.mjs';

const IT = env('IT_USER');
const VIEWER = env('VIEWER_USER');
const PASSWORD = env('PASSWORD');
const REGION_STUDIES = env('REGION_STUDIES');

const text = async (page, sel = 'main') => page.locator(sel).innerText();

await scenario('console_analytics', async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const page = await ctx.newPage();
  const errors = [];
  // Script errors, and any failed load but the refusal asked for below (and the browser's own
  // favicon request: the console has none).
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (r.status() >= 400 && u.pathname !== '/favicon.ico' && !u.search.includes('from=2026-01-01')) {
      errors.push(`${r.status()} ${u.pathname}${u.search}`);
    }
  });
  await login(page, IT, PASSWORD);

  step('the navigation leads to Analytics');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: 'Analytics', exact: true }).click()]);
  check(new URL(page.url()).pathname === '/analytics', 'the Analytics link opens /analytics', page.url());
  let body = await text(page);
  check(body.includes(REGION_STUDIES), `this year's studies as the API counts them (${REGION_STUDIES})`, body.slice(0, 600));
  check(/st-marien/.test(body) && /nordklinik/.test(body), 'both hospitals in the year table', body.slice(0, 900));
  check(/The last 30 days/.test(body), 'the default range is 30 days', body.slice(0, 900));

  step('the charts are drawn');
  await page.waitForFunction(() => document.querySelectorAll('#analytics-charts figure.chart canvas').length >= 2, null, { timeout: 10000 });
  const caption = await page.locator('figure[data-chart="studies"] .latest').innerText();
  check(/(today so far|\d{4}-\d\d-\d\d:) \d/.test(caption), "the chart's caption names the latest day's figure", caption);

  step('365 days');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: '365 days' }).click()]);
  body = await text(page);
  check(/The last 365 days/.test(body), 'the 365-day range', body.slice(0, 900));
  check((await page.locator('nav.ranges a[aria-current="true"]').innerText()) === '365 days', 'the chosen range is marked');

  step('forwarding delay and appliances');
  const delays = await page.locator('table.analytics').nth(1).innerText();
  check(/p50/.test(delays) && /p99/.test(delays) && /(ms|s|min)\b/.test(delays), 'delays per hospital in words', delays);
  const mix = await page.locator('table.analytics').nth(2).innerText();
  check(/CT/.test(mix) && /DX/.test(mix) && /US/.test(mix) && /studies/.test(mix), 'appliances by hospital and modality', mix);

  step('the per-day table');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: /Per day and modality/ }).click()]);
  body = await text(page);
  check(/Studies and images per day/.test(body), 'the per-day page', body.slice(0, 300));
  const rows = await page.locator('table.daily tbody tr').count();
  check(rows >= 7, 'a row per day and hospital', rows);
  const r = await page.goto('/analytics/daily?from=2026-01-01&to=2026-06-30');
  check(r.status() === 400, 'half a year is refused', r.status());
  body = await text(page);
  check(/at most 92 days/.test(body), 'the limit in words', body.slice(0, 300));
  check(errors.length === 0, 'no script error on the pages', errors);

  await shootAll(browser, await ctx.storageState(), 'analytics', {
    'region-30d': '/analytics?days=30',
    'region-365d': '/analytics?days=365',
    daily: '/analytics/daily?days=7',
  });

  step('a viewer of one hospital');
  const vctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const vpage = await vctx.newPage();
  await login(vpage, VIEWER, PASSWORD);
  await vpage.goto('/analytics');
  body = await text(vpage);
  check(/st-marien/.test(body) && !/nordklinik/.test(body), 'only st-marien', body.slice(0, 900));
  const refused = await vpage.goto('/analytics?site=nordklinik');
  check(refused.status() === 403, 'another hospital is refused', refused.status());
  check(/not one of your sites/.test(await text(vpage)), 'the refusal in words');
  await shootAll(browser, await vctx.storageState(), 'analytics', { 'one-hospital': '/analytics?days=30' });
});
