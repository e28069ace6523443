// Real-browser checks of the gateway's /ui dashboard, driven by
// tests/tests/dashboard.rs (or by hand):
//
//   node dashboard.mjs render <url> --members K --arcs A --screenshot PATH
//   node dashboard.mjs down   <url> --member ID [--within-ms 10000] --screenshot PATH
//
// `render` waits for the page's first render (body[data-ready="1"]) with
// exactly K member rows and A ring arcs; `down` waits for member ID's row to
// read down (or left). Every wait is bounded, the browser is always closed,
// and one line of JSON goes to stdout: {"ok":true|false,...}. Exit 0 on
// success, 1 on a failed check, 2 on bad usage.
//
// The browser: $SHOAL_CHROMIUM, else /usr/bin/chromium, else
// /usr/bin/chromium-browser.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

const READY_MS = 20_000;
const LAUNCH_MS = 30_000;
const NAV_MS = 15_000;

function usage(msg) {
  process.stdout.write(JSON.stringify({ ok: false, error: `usage: ${msg}` }) + '\n');
  process.stderr.write(
    'usage: node dashboard.mjs render <url> --members K --arcs A --screenshot PATH\n' +
      '       node dashboard.mjs down <url> --member ID [--within-ms MS] --screenshot PATH\n',
  );
  process.exit(2);
}

function parse(argv) {
  const [mode, url, ...rest] = argv;
  if (!mode || !url) usage('a mode and a url are required');
  if (mode !== 'render' && mode !== 'down') usage(`unknown mode ${mode}`);
  const opts = {};
  for (let i = 0; i < rest.length; i += 2) {
    const k = rest[i];
    const v = rest[i + 1];
    if (!k.startsWith('--') || v === undefined) usage(`bad option ${k}`);
    opts[k.slice(2)] = v;
  }
  const int = (name, dflt) => {
    if (opts[name] === undefined) {
      if (dflt === undefined) usage(`--${name} is required`);
      return dflt;
    }
    const n = Number(opts[name]);
    if (!Number.isInteger(n) || n < 0) usage(`--${name} must be a whole number`);
    return n;
  };
  const cfg = { mode, url: url.replace(/\/+$/, ''), screenshot: opts.screenshot ?? null };
  if (mode === 'render') {
    cfg.members = int('members');
    cfg.arcs = int('arcs');
  } else {
    if (!opts.member) usage('--member is required');
    cfg.member = opts.member;
    cfg.withinMs = int('within-ms', 10_000);
  }
  return cfg;
}

function browserPath() {
  const env = process.env.SHOAL_CHROMIUM;
  if (env) return env;
  return ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p)) ?? null;
}

/// What the page shows now, for the result line and failure messages.
async function seen(page) {
  try {
    return await page.evaluate(() => ({
      ready: document.body?.dataset.ready ?? null,
      members: document.querySelectorAll('tr.member').length,
      arcs: document.querySelectorAll('.arc').length,
      statuses: Object.fromEntries(
        [...document.querySelectorAll('tr.member')].map((r) => [r.dataset.id, r.dataset.status]),
      ),
      banner: (() => {
        const b = document.getElementById('banner');
        return b && !b.hidden ? b.textContent : null;
      })(),
      token_form: (() => {
        const a = document.getElementById('auth');
        return a ? !a.hidden : false;
      })(),
    }));
  } catch (e) {
    return { error: String(e?.message ?? e) };
  }
}

async function shoot(page, path) {
  if (!path) return null;
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true, timeout: 10_000 });
  return path;
}

async function main(cfg) {
  const executablePath = browserPath();
  const result = { ok: false, mode: cfg.mode, url: `${cfg.url}/ui` };
  if (!executablePath || !existsSync(executablePath)) {
    result.error = `no browser: set SHOAL_CHROMIUM or install chromium (${executablePath ?? 'none found'})`;
    return result;
  }
  const started = Date.now();
  let browser = null;
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
      timeout: LAUNCH_MS,
    });
    const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
    const consoleErrors = [];
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e?.message ?? e)));
    const resp = await page.goto(result.url, { waitUntil: 'domcontentloaded', timeout: NAV_MS });
    result.http_status = resp ? resp.status() : null;
    if (!resp || !resp.ok()) {
      result.error = `GET /ui answered ${result.http_status}`;
      return result;
    }

    if (cfg.mode === 'render') {
      const want = { members: cfg.members, arcs: cfg.arcs };
      try {
        await page.waitForFunction(
          ({ members, arcs }) =>
            document.body?.dataset.ready === '1' &&
            document.querySelectorAll('tr.member').length === members &&
            document.querySelectorAll('.arc').length === arcs,
          want,
          { timeout: READY_MS, polling: 100 },
        );
      } catch {
        result.seen = await seen(page);
        result.console_errors = consoleErrors;
        result.error =
          `within ${READY_MS} ms the page did not show ready with ${want.members} member rows and ` +
          `${want.arcs} arcs; it shows ready=${result.seen.ready}, ${result.seen.members} member rows, ` +
          `${result.seen.arcs} arcs` +
          (result.seen.banner ? `, banner: ${result.seen.banner}` : '') +
          (result.seen.token_form ? ', the token form' : '');
        await shoot(page, cfg.screenshot).catch(() => null);
        return result;
      }
    } else {
      try {
        await page.waitForFunction(() => document.body?.dataset.ready === '1', null, {
          timeout: READY_MS,
          polling: 100,
        });
      } catch {
        result.seen = await seen(page);
        result.console_errors = consoleErrors;
        result.error = `the page was not ready within ${READY_MS} ms (banner: ${result.seen.banner ?? 'none'})`;
        await shoot(page, cfg.screenshot).catch(() => null);
        return result;
      }
      const t0 = Date.now();
      try {
        await page.waitForFunction(
          (id) => {
            const row = [...document.querySelectorAll('tr.member')].find((r) => r.dataset.id === id);
            return !!row && (row.dataset.status === 'down' || row.dataset.status === 'left');
          },
          cfg.member,
          { timeout: cfg.withinMs, polling: 100 },
        );
        result.took_ms = Date.now() - t0;
      } catch {
        result.seen = await seen(page);
        result.console_errors = consoleErrors;
        const last = result.seen.statuses?.[cfg.member];
        result.error =
          `within ${cfg.withinMs} ms ${cfg.member} did not read down or left; ` +
          (last === undefined ? 'it has no row' : `its last status was ${last}`);
        await shoot(page, cfg.screenshot).catch(() => null);
        return result;
      }
    }
    result.seen = await seen(page);
    result.console_errors = consoleErrors;
    result.screenshot = await shoot(page, cfg.screenshot);
    result.ok = true;
    return result;
  } catch (e) {
    result.error = String(e?.message ?? e).split('\n')[0];
    return result;
  } finally {
    result.elapsed_ms = Date.now() - started;
    if (browser) await browser.close().catch(() => {});
  }
}

const cfg = parse(process.argv.slice(2));
// A hard stop in case anything above hangs past every bound.
const guardMs = LAUNCH_MS + NAV_MS + READY_MS + (cfg.withinMs ?? 0) + 20_000;
const guard = setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, mode: cfg.mode, error: `dashboard.mjs overran its ${guardMs} ms guard` }) + '\n');
  process.exit(1);
}, guardMs);
guard.unref();

const result = await main(cfg);
process.stdout.write(JSON.stringify(result) + '\n');
if (!result.ok) process.stderr.write(`dashboard.mjs ${result.mode}: ${result.error}\n`);
process.exit(result.ok ? 0 : 1);
