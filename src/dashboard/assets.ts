/** The scripts the dashboard's page loads: its own modules, as the web build emitted them, and the charting libraries. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url));
const PAGE_SCRIPT = 'src/dashboard/web/app.js';

/**
 * The page's script and the modules it imports, transitively, as paths under a web build's output.
 * The web build (src/dashboard/web/tsconfig.emit.json) compiles exactly these: a test checks it.
 */
export function pageModules(webDir: string): string[] {
  const seen = new Set<string>();
  const visit = (path: string) => {
    if (seen.has(path)) return;
    seen.add(path);
    for (const m of readFileSync(join(webDir, path), 'utf8').matchAll(/\b(?:from|import)\s*['"](\.\.?\/[^'"]+)['"]/g)) visit(posix.join(posix.dirname(path), m[1]!));
  };
  visit(PAGE_SCRIPT);
  return [...seen].sort();
}

let scripts: Map<string, string> | undefined;

/** Every script the page may load, by URL path: nothing else under the build is served. Found once per process. */
export function scriptFiles(): Map<string, string> {
  return (scripts ??= findScripts());
}

function findScripts(): Map<string, string> {
  let modules: string[];
  try {
    modules = pageModules(WEB_DIR);
  } catch (err) {
    throw new Error(`the dashboard's page is not built, or only in part (${(err as Error).message}): run npm run build`);
  }
  const require = createRequire(import.meta.url);
  return new Map([
    ['/vendor/vega.js', join(dirname(require.resolve('vega')), 'vega.min.js')],
    ['/vendor/vega-lite.js', join(dirname(require.resolve('vega-lite')), 'vega-lite.min.js')],
    ...modules.map((m): [string, string] => [`/web/${m}`, join(WEB_DIR, m)]),
  ]);
}
