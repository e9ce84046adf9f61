// alerts (issue 13 part 3): the Alerts page as hospital IT uses it. An operator of st-marien sees
// only st-marien's alerts, firing first (severity as an icon and a word, never colour alone),
// then the resolved ones; filters by state; acknowledges one (the page says by whom) and silences
// another for 4 h (the page says until when). A viewer sees the same list without the buttons.
// Screenshots at both sizes, light and dark.
// Environment (besides lib.mjs's): OPERATOR_USER, VIEWER_USER, PASSWORD.
import { scenario, step, check, env, shootAll, login, BASE_URL } from './lib.mjs';

const OPERATOR = env('OPERATOR_USER');
const VIEWER = env('VIEWER_USER');
const PASSWORD = env('PASSWORD');

const text = async (page, sel = 'main') => page.locator(sel).innerText();

await scenario('console_alerts', async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const page = await ctx.newPage();
  await login(page, OPERATOR, PASSWORD);

  step('the navigation leads to the Alerts page');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: 'Alerts', exact: true }).click()]);
  check(new URL(page.url()).pathname === '/alerts', 'the Alerts link opens /alerts', page.url());
  let body = await text(page);
  check(/3 firing, 1 resolved shown/.test(body), 'st-marien: 3 firing, 1 resolved', body.slice(0, 300));
  check(!body.includes('dx-room-1'), "another site's alert is not shown", body);
  const rows = await page.locator('table.alerts tbody tr').allInnerTexts();
  check(rows.length === 4, 'four rows', rows);
  check(rows.slice(0, 3).every((r) => /Firing/.test(r)) && /Resolved/.test(rows[3]), 'firing first, then resolved', rows);
  check(rows.some((r) => /Critical/.test(r) && /archive unreachable/.test(r) && /12 objects waiting/.test(r)), 'severity, rule and figures in words', rows);

  step('filtered to resolved');
  await page.locator('select[name="state"]').selectOption('resolved');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Show' }).click()]);
  const resolved = await page.locator('table.alerts tbody tr').allInnerTexts();
  check(resolved.length === 1 && /after 12 min/.test(resolved[0]), 'the resolved alert with its duration', resolved);

  step('acknowledge the archive alert');
  await page.goto('/alerts?state=firing');
  const archive = page.locator('tr', { hasText: 'archive unreachable' });
  await Promise.all([page.waitForLoadState('load'), archive.getByRole('button', { name: 'Acknowledge' }).click()]);
  body = await text(page);
  check(/Done\./.test(body), 'the page says it is done', body.slice(0, 300));
  const acked = await page.locator('tr', { hasText: 'archive unreachable' }).innerText();
  check(new RegExp(`Acknowledged by ${OPERATOR}`).test(acked), 'acknowledged by the operator', acked);
  check(new URL(page.url()).searchParams.get('state') === 'firing', 'back to the same filter', page.url());

  step('silence the disk alert for 4 h');
  const disk = page.locator('tr', { hasText: 'disk use' });
  await disk.locator('select[name="minutes"]').selectOption('240');
  await Promise.all([page.waitForLoadState('load'), disk.getByRole('button', { name: 'Silence' }).click()]);
  const silenced = await page.locator('tr', { hasText: 'disk use' }).innerText();
  check(/Silenced until \d{4}-\d\d-\d\d \d\d:\d\d UTC/.test(silenced), 'silenced until a time', silenced);

  await shootAll(browser, await ctx.storageState(), 'alerts', { operator: '/alerts' });

  step('a viewer sees the list without the buttons');
  const vctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const vpage = await vctx.newPage();
  await login(vpage, VIEWER, PASSWORD);
  await vpage.goto('/alerts');
  check((await vpage.locator('table.alerts tbody tr').count()) >= 4, 'the viewer sees the alerts');
  check((await vpage.getByRole('button', { name: 'Acknowledge' }).count()) === 0, 'no Acknowledge button for a viewer');
  await shootAll(browser, await vctx.storageState(), 'alerts', { viewer: '/alerts' });
});
