import { writeFileSync } from 'node:fs';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export interface RenderedChart {
  svg: string;
  png: Buffer;
  width: number;
  height: number;
}

/** Renders a Vega-Lite spec headless: SVG from Vega's own renderer, PNG from it via resvg. */
export async function renderChart(spec: TopLevelSpec, scale = 2): Promise<RenderedChart> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const resvg = new Resvg(svg, {
    background: 'white',
    fitTo: { mode: 'zoom', value: scale },
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  });
  const image = resvg.render();
  return { svg, png: image.asPng(), width: image.width, height: image.height };
}

/** Writes `<base>.svg` and `<base>.png`. */
export async function writeChart(spec: TopLevelSpec, base: string): Promise<RenderedChart> {
  const chart = await renderChart(spec);
  writeFileSync(`${base}.svg`, chart.svg);
  writeFileSync(`${base}.png`, chart.png);
  return chart;
}
