// End-to-end test of the dashboard in Debian's Chromium (driven by playwright-core; never a
// downloaded browser). Run by scripts/test.d/reporter-dashboard.sh after a generated run of
// events has been ingested. Checks the figures shown against the raw events table (not the
// rollups the API reads), the isolation between advertisers, the empty and error states, and
// saves a screenshot.
//
// Environment: BASE_URL, TOKEN (advertiser ADVERTISER_ID), PG_URL, CAMPAIGN_ID, ADVERTISER_ID,
// ARTIFACT_DIR.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE_URL = env('BASE_URL');
const TOKEN = env('TOKEN');
const PG_URL = env('PG_URL');
const CAMPAIGN_ID = Number(env('CAMPAIGN_ID'));
const ADVERTISER_ID = Number(env('ADVERTISER_ID'));
const ARTIFACT_DIR = env('ARTIFACT_DIR');

const psql = (sql) => execFileSync('psql', [PG_URL, '-AtF', '|', '-c', sql]).toString().trim();
const money = (micros) => {
  const whole = Math.floor(micros / 1e6);
  const frac = String(micros % 1e6).padStart(6, '0').slice(0, 2);
  return whole.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',') + '.' + frac;
};

// Truth from the raw table: each event id once, test requests left out.
const [imps, spend, bids, wins, clicks] = psql(
  `SELECT count(*) FILTER (WHERE kind = 4), coalesce(sum(clear_price_micros) FILTER (WHERE kind = 4), 0)::bigint / 1000,
          count(*) FILTER (WHERE kind = 1), count(*) FILTER (WHERE kind = 3), count(*) FILTER (WHERE kind = 6)
   FROM events WHERE campaign_id = ${CAMPAIGN_ID} AND flags & 1 = 0`,
)
  .split('|')
  .map(Number);
const ownCampaigns = Number(
  psql(`SELECT count(DISTINCT campaign_id) FROM events WHERE advertiser_id = ${ADVERTISER_ID} AND campaign_id <> 0`),
);
const otherCampaign = Number(
  psql(`SELECT min(campaign_id) FROM events WHERE advertiser_id <> ${ADVERTISER_ID} AND campaign_id <> 0`),
);
assert.ok(imps > 0 && bids > 0, `the run gave campaign ${CAMPAIGN_ID} traffic (${imps} impressions)`);
console.log(`truth: campaign ${CAMPAIGN_ID}: ${imps} impressions, ${spend} µ spend, ${bids} bids, ${wins} wins, ${clicks} clicks`);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
let failed = false;
const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
try {
  page.on('pageerror', (e) => {
    throw new Error('page error: ' + e.message);
  });
  await page.goto(BASE_URL + '/');

  // A bad token is refused with the API's message.
  await page.getByTestId('token-input').fill('not-a-token');
  await page.getByTestId('login-submit').click();
  await page.getByTestId('login-error').waitFor();
  assert.match(await page.getByTestId('login-error').innerText(), /token/i);

  // Log in.
  await page.getByTestId('token-input').fill(TOKEN);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('campaign-table').waitFor();
  assert.equal(await page.getByTestId('who').innerText(), `Advertiser #${ADVERTISER_ID}`);
  const rows = await page.locator('[data-testid^="campaign-row-"]').count();
  assert.equal(rows, ownCampaigns, 'only this advertiser\'s campaigns are listed');
  assert.equal(await page.getByTestId(`campaign-row-${otherCampaign}`).count(), 0, 'another advertiser\'s campaign is not listed');
  const row = page.getByTestId(`campaign-row-${CAMPAIGN_ID}`);
  assert.equal(Number(await row.locator('td').nth(2).getAttribute('data-value')), imps, 'list impressions');
  assert.equal(Number(await row.locator('td').nth(3).getAttribute('data-value')), spend, 'list spend');

  // Open the campaign.
  await page.getByTestId(`campaign-link-${CAMPAIGN_ID}`).click();
  await page.getByTestId('kpi-impressions').waitFor();
  const kpi = async (id) => Number(await page.getByTestId('kpi-' + id).getAttribute('data-value'));
  assert.equal(await kpi('impressions'), imps, 'impressions');
  assert.equal(await kpi('spend'), spend, 'spend micros');
  assert.equal(await page.getByTestId('kpi-spend').innerText(), money(spend), 'spend as shown');
  assert.equal(await kpi('bids'), bids, 'bids');
  assert.equal(await kpi('wins'), wins, 'wins');
  assert.equal(await kpi('clicks'), clicks, 'clicks');
  assert.match(await page.getByTestId('pacing-summary').innerText(), /of [\d,]+\.\d\d/, 'pacing against a budget');
  for (const id of ['chart-delivery', 'chart-efficiency', 'chart-pacing']) {
    const box = await page.getByTestId(id).locator('canvas').boundingBox();
    assert.ok(box && box.width > 100 && box.height > 100, `${id} is drawn`);
  }
  mkdirSync(ARTIFACT_DIR, { recursive: true });
  const shot = `${ARTIFACT_DIR}/reporter-dashboard.png`;
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  // Empty state: a range with no traffic.
  await page.getByTestId('range-from').fill('2020-01-01');
  await page.getByTestId('range-to').fill('2020-01-02');
  await page.getByTestId('range-apply').click();
  await page.getByTestId('empty').first().waitFor();
  assert.equal(await kpi('impressions'), 0, 'no impressions in 2020');

  // Error state: another advertiser's campaign is refused, with the API's message.
  await page.goto(BASE_URL + `/#/campaigns/${otherCampaign}`);
  await page.getByTestId('error').waitFor();
  assert.match(await page.getByTestId('error').innerText(), /Not allowed/);
  await page.screenshot({ path: `${ARTIFACT_DIR}/reporter-dashboard-forbidden.png` });
  console.log('dashboard e2e: 1 passed, 0 failed');
} catch (e) {
  failed = true;
  console.error('dashboard e2e failed:', e);
  try {
    mkdirSync(ARTIFACT_DIR, { recursive: true });
    await page.screenshot({ path: `${ARTIFACT_DIR}/reporter-dashboard-failure.png`, fullPage: true });
  } catch {
    /* best effort */
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
