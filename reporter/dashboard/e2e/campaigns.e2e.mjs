// End-to-end test of the campaign editor in Debian's Chromium (playwright-core; never a
// downloaded browser). Run by scripts/test.d/campaigns-dashboard.sh against a reporter with
// campaign management on (PostgreSQL + Redis). Creates a campaign through the form: a bid the
// bidder refuses shows the API's error next to the bid field and publishes nothing; the fixed
// form is saved and the campaign is in the set published to Redis; a budget change reaches the
// pacing controller's Redis key; the creative preview is drawn.
//
// Environment: BASE_URL, TOKEN (advertiser ADVERTISER_ID), REDIS_CLI (e.g. "redis-cli -p 6398"),
// ARTIFACT_DIR.
import { chromium } from 'playwright-core';
import { execSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE_URL = env('BASE_URL');
const TOKEN = env('TOKEN');
const REDIS_CLI = env('REDIS_CLI');
const ARTIFACT_DIR = env('ARTIFACT_DIR');
const redis = (args) => execSync(`${REDIS_CLI} ${args}`).toString().trim();

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
let failed = false;
const page = await browser.newPage({ viewport: { width: 1300, height: 1600 } });
try {
  page.on('pageerror', (e) => {
    throw new Error('page error: ' + e.message);
  });
  await page.goto(BASE_URL + '/');
  await page.getByTestId('token-input').fill(TOKEN);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('new-campaign').click();
  await page.getByTestId('campaign-editor').waitFor();
  const before = redis('GET helios:campaigns:version');

  // A bid of 0 is refused by the bidder's rules: the error is next to the bid field.
  await page.getByTestId('f-name').fill('Browser sale');
  await page.getByTestId('f-bid').fill('0');
  await page.getByTestId('f-total').fill('250');
  await page.getByTestId('f-daily').fill('50');
  await page.getByTestId('f-countries').fill('USA, CAN');
  await page.getByTestId('f-cap-imps').fill('3');
  await page.getByTestId('f-cap-window').fill('3600');
  await page.getByTestId('cr-0-adm').fill('<div style="background:#2563eb;color:#fff;height:250px">Browser sale</div>');
  await page.getByTestId('save').click();
  await page.getByTestId('err-bid_cpm_micros').waitFor();
  assert.match(await page.getByTestId('err-bid_cpm_micros').innerText(), /must be > 0/);
  assert.equal(redis('GET helios:campaigns:version'), before, 'nothing published for a refused form');

  // A lower-case country is refused too, next to the countries field.
  await page.getByTestId('f-bid').fill('2.5');
  await page.getByTestId('f-countries').fill('usa');
  await page.getByTestId('save').click();
  await page.getByTestId('err-targeting.countries').waitFor();
  assert.equal(await page.getByTestId('err-bid_cpm_micros').count(), 0, 'the fixed field has no error');

  // Fixed: saved, live, and in the set the appliances read.
  await page.getByTestId('f-countries').fill('USA, CAN');
  await page.getByTestId('save').click();
  await page.getByTestId('saved').waitFor();
  assert.match(await page.getByTestId('saved').innerText(), /\(live\)/);
  await page.waitForURL(/#\/campaigns\/\d+\/edit/);
  const id = Number(/#\/campaigns\/(\d+)\/edit/.exec(page.url())[1]);
  const set = JSON.parse(redis('GET helios:campaigns'));
  const c = set.advertisers.flatMap((a) => a.campaigns).find((x) => x.id === id);
  assert.ok(c, `campaign ${id} is in the published set`);
  assert.equal(c.bid_cpm_micros, 2_500_000);
  assert.deepEqual(c.targeting.countries, ['USA', 'CAN']);
  assert.deepEqual(c.frequency_cap, { impressions: 3, window_s: 3600 });
  assert.equal(redis(`GET helios:budget:{${id}}:remaining`), '250000000');

  // The preview draws the creative at its size.
  const box = await page.getByTestId('cr-0-preview').boundingBox();
  assert.ok(box && Math.round(box.width) >= 300 && Math.round(box.height) >= 250, 'preview drawn at 300×250');

  // The edit form loads the stored campaign; a budget raise reaches the pacing controller's key.
  await page.reload();
  await page.getByTestId('f-total').waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="f-name"]').value === 'Browser sale');
  assert.equal(await page.getByTestId('f-total').inputValue(), '250');
  await page.getByTestId('f-total').fill('300');
  await page.getByTestId('save').click();
  await page.getByTestId('saved').waitFor();
  assert.equal(redis(`GET helios:budget:{${id}}:remaining`), '300000000');

  // Pause from the editor.
  await page.getByTestId('pause').click();
  await page.getByTestId('saved').filter({ hasText: 'paused' }).waitFor();
  const paused = JSON.parse(redis('GET helios:campaigns'))
    .advertisers.flatMap((a) => a.campaigns)
    .find((x) => x.id === id);
  assert.equal(paused.status, 'paused');

  mkdirSync(ARTIFACT_DIR, { recursive: true });
  await page.screenshot({ path: `${ARTIFACT_DIR}/campaign-editor.png`, fullPage: true });
  console.log(`campaign editor e2e: passed (campaign ${id}; screenshot ${ARTIFACT_DIR}/campaign-editor.png)`);
} catch (e) {
  failed = true;
  console.error('campaign editor e2e failed:', e);
  try {
    mkdirSync(ARTIFACT_DIR, { recursive: true });
    await page.screenshot({ path: `${ARTIFACT_DIR}/campaign-editor-failure.png`, fullPage: true });
  } catch {
    /* best effort */
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
