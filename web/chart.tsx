// A line chart (uPlot) of one or more series over training steps; series may have different steps
// (validation runs every few steps, compared jobs differ): gaps are spanned.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { useEffect, useRef } from 'preact/hooks';

export interface Series {
  label: string;
  points: [number, number][];
}

/** Whole steps only on the x axis. */
const STEP_INCREMENTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000];

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];

/** uPlot's data: one shared x axis (every step any series has), null where a series has none. */
function aligned(series: Series[]): uPlot.AlignedData {
  const xs = [...new Set(series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const column: (number | null)[] = new Array(xs.length).fill(null);
    for (const [x, y] of s.points) column[index.get(x)!] = y;
    return column;
  });
  return [xs, ...ys];
}

export function Chart({ title, series }: { title: string; series: Series[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const labels = series.map((s) => s.label).join('\n');

  useEffect(() => {
    const width = Math.max(280, (box.current!.clientWidth || 480) - 8);
    plot.current = new uPlot(
      {
        width,
        height: 220,
        title,
        scales: { x: { time: false } },
        axes: [{ label: 'step', incrs: STEP_INCREMENTS }, {}],
        legend: { live: false }, // the legend names the series; values show on the axes
        series: [{ label: 'step' }, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
      },
      aligned(series),
      box.current!,
    );
    return () => plot.current?.destroy();
  }, [title, labels]);

  useEffect(() => plot.current?.setData(aligned(series)), [series]);

  const count = Math.max(0, ...series.map((s) => s.points.length));
  return <figure class="chart" ref={box} aria-label={`${title}: ${count} points`} data-points={count} />;
}
