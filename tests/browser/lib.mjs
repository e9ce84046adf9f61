// Shared by the browser scenarios: Debian's chromium through playwright-core, the viewport and
// colour scheme of each screenshot, assertions that say what was expected and what was seen.
//
// A scenario is a script `node tests/browser/<name>.mjs`, started by a Rust e2e test
// (tests/tests/console_browser.rs) that runs the real fleet (and appliances) and passes what the
// script needs in the environment:
//   BASE_URL        the console, e.g. http://127.0.0.1:41234
//   SCREENSHOT_DIR  where screenshots go (target/screenshots by default)
//   CHROMIUM        the browser (default /usr/bin/chromium)
// plus the scenario's own variables. Exit status 0 = passed; any failure prints the step, what was
// expected and what the page showed, and saves a screenshot of the failing page.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** The two screen sizes every page is looked at: a hospital laptop and a desktop monitor. */
export const SIZES = {
  '1366x768': { width: 1366, height: 768 },
  '1920x1080': { width: 1920, height: 1080 },
};
export const SCHEMES = ['light', 'dark'];

export function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`environment variable ${name} is not set (the Rust test sets it)`);
  return v;
}

export const BASE_URL = env('BASE_URL', 'http://127.0.0.1:8443');
const SHOTS = env('SCREENSHOT_DIR', 'target/screenshots');

/** Headless chromium with the flags this sandbox needs (no background connections to Google). */
export async function launch() {
  return chromium.launch({
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** A fresh browser context (own cookies) at a size and colour scheme. */
export async function context(browser, { size = '1366x768', scheme = 'light' } = {}) {
  const viewport = SIZES[size];
  if (!viewport) throw new Error(`unknown size ${size}`);
  return browser.newContext({ viewport, colorScheme: scheme, baseURL: BASE_URL });
}

/** Saves a full-page screenshot as SCREENSHOT_DIR/<name>.png; returns its path. */
export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  // Chromium's compositor now and then refuses a capture while the shared machine is loaded
  // ("Unable to capture screenshot"); that says nothing about the page, so try again.
  for (let attempt = 1; ; attempt++) {
    try {
      await page.screenshot({ path, fullPage: true });
      return path;
    } catch (e) {
      if (attempt >= 4 || !/Unable to capture screenshot/.test(String(e))) throw e;
      await page.waitForTimeout(500 * attempt);
    }
  }
}

/** Every page of `paths` at both sizes, light and dark: <prefix>-<page>-<size>-<scheme>.png. */
export async function shootAll(browser, storageState, prefix, paths) {
  const saved = [];
  for (const size of Object.keys(SIZES)) {
    for (const scheme of SCHEMES) {
      const ctx = await browser.newContext({
        viewport: SIZES[size], colorScheme: scheme, baseURL: BASE_URL, storageState,
      });
      const page = await ctx.newPage();
      for (const [name, path] of Object.entries(paths)) {
        const r = await page.goto(path);
        check(r && r.status() === 200, `${path} answers 200 for the screenshot`, r && r.status());
        saved.push(await shot(page, `${prefix}-${name}-${size}-${scheme}`));
      }
      await ctx.close();
    }
  }
  return saved;
}

/** Fails the scenario with what was expected and what was seen. */
export function check(cond, expected, seen) {
  if (!cond) {
    const e = new Error(`expected: ${expected}${seen === undefined ? '' : `; seen: ${JSON.stringify(seen)}`}`);
    e.checked = true;
    throw e;
  }
}

/** Logs a step, so a failure's output shows how far the scenario got. */
export function step(what) {
  console.log(`step: ${what}`);
}

/** Signs in with a password on /login; returns the page after the redirect. */
export async function login(page, user, password) {
  await page.goto('/login');
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: /log in/i }).click()]);
  return page;
}

/** Runs a scenario: on failure, a screenshot of every open page and exit status 1. */
export async function scenario(name, body) {
  const browser = await launch();
  try {
    await body(browser);
    console.log(`scenario ${name}: passed`);
  } catch (e) {
    console.error(`scenario ${name}: FAILED: ${e.checked ? e.message : e.stack}`);
    let i = 0;
    for (const ctx of browser.contexts()) {
      for (const page of ctx.pages()) {
        try {
          const p = await shot(page, `FAILED-${name}-${i++}`);
          console.error(`  page ${page.url()} saved as ${p}`);
        } catch { /* the page may be gone */ }
      }
    }
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
