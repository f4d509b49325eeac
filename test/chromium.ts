import { chromium, type Browser } from 'playwright-core';

/** Debian's chromium (.ci/run installs it), for the browser test and bench:dashboard. */
export const CHROMIUM = '/usr/bin/chromium';

/** Starts it headless; the flags keep it off a network this machine does not have. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
