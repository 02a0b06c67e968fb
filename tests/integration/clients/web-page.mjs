// Drives Debian's chromium through vidmill's web page as a user would:
// signs in with a token in the address, uploads a file, waits for it to
// become ready through the live list, and plays it. Prints one JSON line.
//
//   node web-page.mjs BASE_URL TOKEN FILE
import { chromium } from 'playwright-core';

const [base, token, file] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('response', (r) => r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`));
  await page.goto(`${base}/#token=${token}`);
  await page.waitForSelector('#upload:not([hidden])', { timeout: 10000 });
  const hashAfterSignIn = await page.evaluate(() => location.hash);
  await page.setInputFiles('#file', file);
  const card = page.locator('.video[data-state="ready"]');
  await card.waitFor({ timeout: 90000 });
  const playback = await page.evaluate(async () => {
    const v = document.querySelector('.video[data-state="ready"] video');
    v.muted = true;
    await v.play();
    const started = Date.now();
    while (v.currentTime < 0.5 && Date.now() - started < 20000) {
      await new Promise((r) => setTimeout(r, 50));
    }
    return {
      currentTime: v.currentTime,
      videoWidth: v.videoWidth,
      videoHeight: v.videoHeight,
      links: [...document.querySelectorAll('.video[data-state="ready"] a')].map((a) => a.href),
    };
  });
  const name = (await card.locator('.name').textContent()).trim();
  console.log(JSON.stringify({ ...playback, name, hashAfterSignIn, errors }));
} finally {
  await browser.close();
}
