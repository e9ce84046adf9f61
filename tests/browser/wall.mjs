// The wall as the IT office's TV meets it (tests/tests/wall_browser.rs runs it against the real
// fleet binary and simulated appliances):
//  1. an admin creates a display link in the console; the wall opens from it with no session;
//  2. an appliance that connects turns green within 2 s; killed, it turns red with its reason
//     within its heartbeat timeout; back, green again;
//  3. 100 state changes (a room renamed through the API): change → pixels latency, p50 / p99,
//     measured in the browser (the event's change time vs. the paint after it, same machine)
//     and from here (the API call vs. the text on screen);
//  4. the alarms band: the appliances' firing alerts (short thresholds in the fleet's config);
//     an archive taken down raises a real alert that shows within 2 s of being raised,
//     acknowledged says so (never by whom), cleared leaves the band within 2 s; a link of a
//     hospital without alarms says "No active alarms"; exams today by modality, the last hour,
//     the region's totals; the screen's UTC offset goes with the events URL (checked: 400);
//  5. screenshots at 1920×1080 and 3840×2160, day and night, with no scrolling;
//  6. the fleet killed: "FEED LOST" within 10 s and the tiles greyed; restarted on the same
//     port and database: live again by itself, without a reload;
//  7. the link revoked in the console: the open wall says it is not valid at once, and the
//     stream and the page answer 404.
// Environment (besides lib.mjs's): CONTROL_DIR (actions for the Rust test), ADMIN_USER,
// ADMIN_PASSWORD, ADMIN_TOKEN (the fleet's API), LIVE_DEVICE, LATENCY_DEVICE, ALARM_DEVICE (its
// archive is taken down and up), CALM_SITE (a hospital without alarms).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scenario, step, check, env, login, shot, BASE_URL } from './lib.mjs';

const CONTROL = env('CONTROL_DIR');
const ADMIN = env('ADMIN_USER');
const PASSWORD = env('ADMIN_PASSWORD');
const TOKEN = env('ADMIN_TOKEN');
const LIVE = env('LIVE_DEVICE');
const LAT = env('LATENCY_DEVICE');
const ALARM = env('ALARM_DEVICE');
const CALM = env('CALM_SITE');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let asked = 0;
/** Asks the Rust test to do something (start/kill an appliance, kill/restart the fleet). */
async function ask(action) {
  const n = asked++;
  writeFileSync(join(CONTROL, `${n}.req`), action);
  const done = join(CONTROL, `${n}.done`);
  const until = Date.now() + 60000;
  while (!existsSync(done)) {
    check(Date.now() < until, `the test carried out "${action}" within 60 s`);
    await sleep(20);
  }
  const answer = readFileSync(done, 'utf8');
  check(answer === 'ok', `"${action}" done`, answer);
}

/** Waits until the tile of `device` has `level` (and its reason matches `reason`); returns ms. */
async function tileIs(page, device, level, reason, timeout) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(([d, l, r]) => {
      const t = document.querySelector(`#live li.tile[data-device="${d}"]`);
      return t && t.classList.contains(l) && (!r || new RegExp(r).test(t.querySelector('.t-reason').textContent));
    }, [device, level, reason], { timeout, polling: 50 });
  } catch {
    const seen = await page.evaluate((d) => {
      const t = document.querySelector(`#live li.tile[data-device="${d}"]`);
      return t ? `${t.className}: ${t.innerText}` : 'no tile';
    }, device);
    check(false, `tile ${device} ${level}${reason ? ` (${reason})` : ''} within ${timeout} ms`, seen);
  }
  return Date.now() - t0;
}

/** GET on the fleet's API as the admin token. */
async function api(path, method = 'GET', body) {
  const rsp = await fetch(`${BASE_URL}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await rsp.text();
  check(rsp.status === 200, `${method} ${path} answers 200`, `${rsp.status} ${text}`);
  return JSON.parse(text);
}

/** Waits until the alarms band has (or, `present` false, no longer has) a row for `device`
 *  whose text matches `re`; returns the browser's clock at that moment (Unix ms). */
async function alarmRow(page, device, re, present, timeout) {
  try {
    const h = await page.waitForFunction(([d, r, want]) => {
      const row = document.querySelector(`#live .alarms li.alarm[data-device="${d}"]`);
      const ok = row && (!r || new RegExp(r).test(row.innerText));
      return (want ? ok : !row) ? Date.now() : false;
    }, [device, re, present], { timeout, polling: 50 });
    return await h.jsonValue();
  } catch {
    const seen = await page.evaluate(() => document.querySelector('#live .alarms')?.innerText ?? 'no band');
    check(false, `alarm of ${device}${re ? ` (${re})` : ''} ${present ? 'shown' : 'gone'} within ${timeout} ms`, seen);
  }
}

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** The wall fits its screen: no scrolling, every tile inside the viewport. */
async function fits(page, what) {
  const m = await page.evaluate(() => {
    const tiles = [...document.querySelectorAll('#live li.tile, #live .alarms li, #live .alarms p, #live .region')];
    return {
      sw: document.documentElement.scrollWidth, sh: document.documentElement.scrollHeight,
      w: innerWidth, h: innerHeight, tiles: tiles.length,
      outside: tiles.filter((t) => { const r = t.getBoundingClientRect(); return r.bottom > innerHeight + 1 || r.right > innerWidth + 1; })
        .map((t) => t.dataset.device || t.className),
      smallest: Math.min(...[...document.querySelectorAll('#live .t-reason, #live .figures, #live h2, #live .alarms li, #live .region')]
        .map((e) => parseFloat(getComputedStyle(e).fontSize))),
    };
  });
  check(m.sw <= m.w && m.sh <= m.h, `${what}: no scrolling`, m);
  check(m.outside.length === 0, `${what}: every tile on screen`, m);
  check(m.smallest >= m.h * 0.018, `${what}: text at least 1.8 % of the screen height (read from 5 m)`, m);
  return m;
}

await scenario('wall', async (browser) => {
  step('an admin creates a display link in the console');
  const adminCtx = await browser.newContext({ viewport: { width: 1366, height: 768 }, baseURL: BASE_URL });
  const admin = await login(await adminCtx.newPage(), ADMIN, PASSWORD);
  await admin.goto('/displays');
  check(await admin.getByRole('link', { name: 'Wall displays' }).isVisible(), 'the navigation offers Wall displays to an admin');
  await admin.getByLabel('Which screen').fill('IT office TV');
  await admin.getByLabel('From hour').fill('20');
  await admin.getByLabel('to hour').fill('7');
  await Promise.all([admin.waitForLoadState('load'), admin.getByRole('button', { name: 'Create display link' }).click()]);
  const url = (await admin.locator('#secret').innerText()).trim();
  check(/\/wall\/mgd_[0-9a-f]{64}$/.test(url), 'the new link is shown once, as a URL', url);
  await shot(admin, 'wall-displays-console');

  step('the wall opens from the link, without a session');
  const tv = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
  const wall = await tv.newPage();
  const problems = [];
  wall.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_INCOMPLETE_CHUNKED|ERR_EMPTY_RESPONSE/.test(m.text())) problems.push(m.text()); });
  wall.on('pageerror', (e) => problems.push(String(e)));
  const streams = [];
  wall.on('request', (q) => { if (/\/events/.test(q.url())) streams.push(q.url()); });
  let r = await wall.goto(`${url}?night=off`);
  check(r.status() === 200, 'the wall answers 200', r.status());
  await wall.waitForFunction(() => window.__wall && window.__wall.snapshots >= 1, null, { timeout: 10000 });
  await wall.evaluate(() => { window.__noReload = true; });
  const names = await wall.locator('#live .site h2').allInnerTexts();
  check(names.length === 4 && names.includes('St. Marien Hospital'), 'the four hospitals, by name', names);
  await tileIs(wall, LIVE, 'grey', 'never connected', 5000);
  await tileIs(wall, 'mr-1', 'red', 'archive unreachable 12 min', 5000);
  await tileIs(wall, 'us-1', 'amber', 'disk 91 %', 5000);
  await tileIs(wall, 'ct-2', 'amber', 'update waiting for idle DICOM', 5000);
  await tileIs(wall, 'dx-2', 'amber', 'queue oldest 14 min', 5000);
  check(/data \d+ s old/.test(await wall.locator(`li.tile[data-device="mr-1"] .t-age`).innerText()), 'each tile says how old its data is');
  check(/Images today/.test(await wall.locator('#live .site').first().innerText()), "a hospital shows today's images");

  step("today's exams by hospital and modality, the last hour, the region's totals");
  // The day's figures are reused for 15 s: the study events of the start may take that long.
  const marien = wall.locator('#live .site', { has: wall.getByRole('heading', { name: 'St. Marien Hospital' }) });
  try {
    await wall.waitForFunction(() => {
      const s = [...document.querySelectorAll('#live .site')].find((e) => e.querySelector('h2').textContent === 'St. Marien Hospital');
      return s && /Exams today\s*6 — (MR|US) 3 · (MR|US) 3/.test(s.innerText);
    }, null, { timeout: 20000, polling: 200 });
  } catch {
    check(false, 'St. Marien: 6 exams today, MR 3 and US 3', await marien.innerText());
  }
  const lakeside = await wall.locator('#live .site', { has: wall.getByRole('heading', { name: CALM }) }).innerText();
  check(/Exams today\s*6 — CT 3 · other 3/.test(lakeside), 'no modality counts as "other"', lakeside);
  check(/Last hour\s*\d+ in · \d+ out/.test(lakeside), 'a hospital shows the last hour in and out', lakeside);
  const region = await wall.locator('#live .region').innerText();
  check(/Region today \d+ exams \(.*\) · images \d[\d\u202f]* in · \d[\d\u202f]* out · last hour \d[\d\u202f]* in · \d[\d\u202f]* out/.test(region), 'the totals bar has the region today', region);

  step('the alarms band: the firing alerts, critical first, with their words');
  await alarmRow(wall, 'mr-1', 'critical[\\s\\S]*St\\. Marien Hospital[\\s\\S]*archive unreachable', true, 15000);
  await alarmRow(wall, 'us-1', 'warning[\\s\\S]*disk', true, 15000);
  const sev = await wall.locator('#live .alarms li.alarm .a-sev').allInnerTexts();
  check(sev.length >= 2 && sev.findIndex((t) => /warning/.test(t)) > sev.findLastIndex((t) => /critical/.test(t)), 'critical alarms first', sev);

  step('the screen\'s UTC offset: sent with the events URL, checked by the server');
  const sent = streams.slice();
  const mine = await wall.evaluate(() => new Date().getTimezoneOffset());
  check(sent.length > 0 && sent.every((n) => n.endsWith(`tz=${mine}`)), 'the events URL carries this screen\'s offset', { sent, mine });
  for (const bad of ['841', '1.5', 'UTC']) {
    const rsp = await fetch(`${url}/events?tz=${bad}`);
    const text = await rsp.text();
    check(rsp.status === 400 && /whole minutes from -840 to 840/.test(text), `tz=${bad}: 400 with words`, `${rsp.status} ${text}`);
  }
  r = await fetch(`${url}?tz=900`);
  check(r.status === 400, 'the page refuses an offset beyond 14 h too', r.status);

  step('an archive goes down: its alert in the band within 2 s of being raised');
  await ask(`archive down ${ALARM}`);
  const shownAt = await alarmRow(wall, ALARM, 'critical[\\s\\S]*archive unreachable', true, 20000);
  const raised = (await api(`/api/v1/alerts?state=firing&device=${ALARM}`)).alerts.find((a) => a.kind === 'archive_unreachable');
  check(raised, `the fleet raised archive_unreachable for ${ALARM}`);
  console.log(`measured: alert raised → alarms band ${shownAt - raised.raised_ms} ms`);
  check(shownAt - raised.raised_ms < 2000, 'the alarm shows within 2 s of being raised', shownAt - raised.raised_ms);
  const row = await wall.locator(`#live .alarms li.alarm[data-device="${ALARM}"]`).innerText();
  check(/Kinderspital/.test(row) && /for \d+ s/.test(row), 'the row says the hospital and for how long', row);
  check(/archive unreachable: destination archive with 25 objects waiting/.test(row), "the row has the alert's words", row);

  step('acknowledged: the band says so, never by whom');
  const acked = await api(`/api/v1/alerts/${raised.id}/ack`, 'POST');
  check(acked.acked_by, 'the alert is acknowledged', acked);
  const t0 = Date.now();
  await alarmRow(wall, ALARM, 'acknowledged', true, 2000);
  console.log(`measured: acknowledged → alarms band ${Date.now() - t0} ms`);
  const band = await wall.locator('#live .alarms').innerText();
  check(!band.includes(acked.acked_by) && !band.includes(ADMIN) && !/token/.test(band), 'no user name on the wall', band);
  await shot(wall, 'wall-1920x1080-alarms');

  step('a link of a hospital without alarms: "No active alarms"');
  await admin.goto('/displays');
  await admin.getByLabel('Which screen').fill('Lakeside TV');
  await admin.getByLabel(CALM).check();
  await Promise.all([admin.waitForLoadState('load'), admin.getByRole('button', { name: 'Create display link' }).click()]);
  const calmUrl = (await admin.locator('#secret').innerText()).trim();
  const calmCtx = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
  const calm = await calmCtx.newPage();
  await calm.goto(`${calmUrl}?night=off`);
  await calm.waitForFunction(() => window.__wall && window.__wall.snapshots >= 1, null, { timeout: 10000 });
  check(await calm.locator('#live .alarms').innerText() === '✔ No active alarms', 'a calm "No active alarms"', await calm.locator('#live .alarms').innerText());
  check((await calm.locator('#live .site h2').allInnerTexts()).join() === CALM, 'only its hospital');
  await calmCtx.close();

  step('an appliance connects: green within 2 s');
  await ask(`start ${LIVE}`);
  const appeared = await tileIs(wall, LIVE, 'green', '', 2000);
  console.log(`measured: ${LIVE} green ${appeared} ms after it started`);

  step('killed: red with its reason within its heartbeat timeout');
  await ask(`kill ${LIVE}`);
  const red = await tileIs(wall, LIVE, 'red', 'no heartbeat', 15000);
  console.log(`measured: ${LIVE} red ("no heartbeat") ${red} ms after it was killed`);

  step('back: green again');
  await ask(`start ${LIVE}`);
  const back = await tileIs(wall, LIVE, 'green', '', 5000);
  console.log(`measured: ${LIVE} green again ${back} ms after it restarted`);

  step('100 state changes: change → pixels latency');
  await wall.evaluate(() => { window.__wall.latencies = []; });
  const outside = [];
  for (let i = 0; i < 100; i++) {
    const room = `X-ray room ${i}`;
    const t0 = performance.now();
    const rsp = await fetch(`${BASE_URL}/api/v1/devices/${LAT}`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ room }),
    });
    check(rsp.status === 200, `PATCH room ${i} answers 200`, rsp.status);
    await wall.waitForFunction(([d, text]) => {
      const t = document.querySelector(`#live li.tile[data-device="${d}"] .t-room`);
      return t && t.textContent === text;
    }, [LAT, room], { timeout: 5000, polling: 'raf' });
    outside.push(performance.now() - t0);
  }
  const inside = await wall.evaluate(() => window.__wall.latencies.slice());
  check(inside.length >= 100, 'a latency per pushed change', inside.length);
  const fmt = (v) => `${Math.round(v)} ms`;
  console.log(`measured: change → pixels in the browser (server change time → after paint, ${inside.length} pushes): p50 ${fmt(pct(inside, 50))}, p99 ${fmt(pct(inside, 99))}`);
  console.log(`measured: API call → text on screen (100 room changes): p50 ${fmt(pct(outside, 50))}, p99 ${fmt(pct(outside, 99))}`);
  check(pct(inside, 99) < 1000, 'p99 change → pixels under 1 s', pct(inside, 99));

  step('screenshots: 1920×1080 and 3840×2160, day and night, no scrolling');
  for (const [size, viewport] of [['1920x1080', { width: 1920, height: 1080 }], ['3840x2160', { width: 3840, height: 2160 }]]) {
    for (const mode of ['day', 'night']) {
      // One screen in India (UTC+5:30): its offset goes with its events URL.
      const india = size === '3840x2160' && mode === 'night';
      const ctx = await browser.newContext({ viewport, ...(india ? { timezoneId: 'Asia/Kolkata' } : {}) });
      const p = await ctx.newPage();
      const opened = [];
      p.on('request', (q) => { if (/\/events/.test(q.url())) opened.push(q.url()); });
      await p.goto(`${url}?night=${mode === 'night' ? 'on' : 'off'}`);
      await p.waitForFunction(() => window.__wall && window.__wall.snapshots >= 1, null, { timeout: 10000 });
      check(await p.evaluate(() => document.documentElement.classList.contains('night')) === (mode === 'night'), `${mode} mode is ${mode}`);
      await fits(p, `${size} ${mode}`);
      if (india) {
        check(opened.length > 0 && opened.every((n) => n.endsWith('?tz=-330')), 'a screen in India sends tz=-330', opened);
      }
      await shot(p, `wall-${size}-${mode}`);
      await ctx.close();
    }
  }

  step('the archive back: the alert clears and leaves the band within 2 s');
  await ask(`archive up ${ALARM}`);
  const goneAt = await alarmRow(wall, ALARM, '', false, 20000);
  const cleared = (await api(`/api/v1/alerts?state=resolved&device=${ALARM}`)).alerts.find((a) => a.id === raised.id);
  check(cleared && cleared.cleared_ms, 'the fleet cleared it', cleared);
  console.log(`measured: alert cleared → gone from the band ${goneAt - cleared.cleared_ms} ms`);
  check(goneAt - cleared.cleared_ms < 2000, 'the alarm leaves within 2 s of being cleared', goneAt - cleared.cleared_ms);

  step('the fleet killed: FEED LOST within 10 s, tiles greyed');
  await ask('kill fleet');
  const killed = Date.now();
  await wall.locator('#feed').waitFor({ state: 'visible', timeout: 10000 });
  const lostAfter = Date.now() - killed;
  const banner = await wall.locator('#feed').innerText();
  check(/FEED LOST — data from \d\d:\d\d:\d\d/.test(banner), 'the banner says the feed is lost and how old the data is', banner);
  check(await wall.evaluate(() => document.body.classList.contains('stale')), 'the tiles are greyed');
  console.log(`measured: "feed lost" shown ${lostAfter} ms after the fleet was killed`);
  await shot(wall, 'wall-1920x1080-feed-lost');

  step('restarted on the same port and database: live again by itself');
  await ask('restart fleet');
  const restarted = Date.now();
  await wall.waitForFunction(() => window.__wall.state === 'live' && document.getElementById('feed').hidden, null, { timeout: 30000 });
  console.log(`measured: the wall live again ${Date.now() - restarted} ms after the fleet restarted`);
  check(await wall.evaluate(() => window.__noReload === true), 'the wall recovered without a reload');
  await tileIs(wall, 'mr-1', 'red', 'archive unreachable', 10000);

  step('the link revoked in the console: the open wall closes at once');
  await admin.goto('/displays');
  const revokedAt = Date.now();
  await Promise.all([admin.waitForLoadState('load'), admin.getByRole('button', { name: 'Revoke display link IT office TV' }).click()]);
  check(/revoked/.test(await admin.locator('p.notice').innerText()), 'the console says it is revoked');
  await wall.getByRole('heading', { name: 'This display link is not valid any more' }).waitFor({ timeout: 3000 });
  console.log(`measured: the open wall said "not valid" ${Date.now() - revokedAt} ms after the revoke was clicked`);
  await shot(wall, 'wall-revoked');
  r = await fetch(url);
  check(r.status === 404, 'the revoked link answers 404', r.status);
  check(/not valid any more/.test(await r.text()), 'the 404 page says the link is not valid any more');
  r = await fetch(`${url}/events`);
  check(r.status === 404, 'its stream answers 404', r.status);
  check(problems.length === 0, 'no script errors (CSP, integrity)', problems);
});
