import { escapeHtml } from './html.js';

/** The dashboard's page: layout and styles; src/dashboard/web/app.ts fills it from the event stream. */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gpt-ddp dashboard</title>
<style>
  body { font-family: "DejaVu Sans", system-ui, sans-serif; margin: 0 auto; padding: 12px 20px; max-width: 1280px; color: #222; }
  h1 { font-size: 20px; margin: 4px 0 12px; }
  h2 { font-size: 15px; margin: 18px 0 6px; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(720px, 1fr)); gap: 8px 24px; }
  table { border-collapse: collapse; font-size: 13px; width: 100%; }
  th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }
  td.num, th.num { text-align: right; }
  #status { font-size: 13px; color: #555; }
  #samples div, #events div { font-size: 13px; margin: 3px 0; white-space: pre-wrap; }
  label { font-size: 13px; }
</style>
</head>
<body>
<h1>gpt-ddp <span id="status">connecting…</span></h1>
<table id="runs"></table>
<div class="grid">
  <section><h2>Loss <label>against <select id="x"><option value="step">step</option><option value="tokens">tokens seen</option><option value="time">wall time</option></select></label></h2><div id="loss"></div></section>
  <section><h2>Step time by phase (median of the last 20 steps)</h2><div id="phases"></div></section>
</div>
<h2>Workers (figures of the last step)</h2>
<table id="workers"></table>
<div class="grid">
  <section><h2>Membership</h2><div id="events"></div></section>
  <section><h2>Samples</h2><div id="samples"></div></section>
</div>
<script src="/vendor/vega.js"></script>
<script src="/vendor/vega-lite.js"></script>
<script type="module" src="/web/src/dashboard/web/app.js"></script>
</body>
</html>
`;

/** The sign-in form of a dashboard on a non-loopback address: the token goes in a POST body, never a URL. */
export const LOGIN_PAGE = (error: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpt-ddp dashboard: sign in</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 480px; margin: 40px auto">
<h1 style="font-size: 20px">gpt-ddp dashboard</h1>
<p>This dashboard listens beyond this machine: enter the run's token (the <code>token</code> file of the run directory, or the one named by <code>--token-file</code>).</p>
<form method="post" action="/login"><input type="password" name="token" autofocus style="width: 100%"> <button type="submit">Sign in</button></form>
<p style="color: #b00">${escapeHtml(error)}</p>
</body></html>
`;
