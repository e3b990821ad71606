// A job's events and the charts its metrics events make: each metrics event carries the step and
// every value the worker recorded for it (OpenAI's train/valid/full-valid loss and token accuracy,
// DPO rewards and margin, reinforcement reward mean/std and KL, and whatever a method adds later).
import { api, type JobEvent, type ListObject } from './api.ts';
import type { Series } from './chart.tsx';

/** A job's events as they arrive: newest first, in the API's order. */
export class EventLog {
  readonly events: JobEvent[] = [];
  private readonly ids = new Set<string>();

  constructor(readonly jobId: string) {}

  /** Fetches the events not seen yet (pages until one reaches a known event). Whether any came. */
  async update(): Promise<boolean> {
    const fresh: JobEvent[] = [];
    let after = '';
    for (;;) {
      const page = await api<ListObject<JobEvent>>('GET', `/fine_tuning/jobs/${encodeURIComponent(this.jobId)}/events?limit=100${after}`);
      const unseen = page.data.filter((e) => !this.ids.has(e.id));
      fresh.push(...unseen);
      if (unseen.length < page.data.length || !page.has_more || page.data.length === 0) break;
      after = `&after=${encodeURIComponent(page.data[page.data.length - 1].id)}`;
    }
    for (const e of fresh) this.ids.add(e.id);
    this.events.unshift(...fresh);
    return fresh.length > 0;
  }
}

/** Each metric's points (step, value), from the metrics events. */
export function metricPoints(events: Iterable<JobEvent>): Map<string, [number, number][]> {
  const byMetric = new Map<string, [number, number][]>();
  for (const e of events) {
    if (e.type !== 'metrics') continue;
    const step = Number(e.data.step);
    for (const [key, value] of Object.entries(e.data)) {
      if (key === 'step' || key === 'total_steps' || typeof value !== 'number' || !Number.isFinite(value)) continue;
      let points = byMetric.get(key);
      if (!points) byMetric.set(key, (points = []));
      points.push([step, value]);
    }
  }
  for (const points of byMetric.values()) points.sort((a, b) => a[0] - b[0]);
  return byMetric;
}

/** Metrics that share a scale share a chart; anything else gets a chart of its own. */
const GROUPS: [string, RegExp][] = [
  ['Loss', /loss$/],
  ['Token accuracy', /mean_token_accuracy$/],
  ['Rewards (chosen, rejected, margin)', /rewards_(chosen|rejected)$|reward_margin$/],
  ['Reward accuracy', /reward_accuracy$/],
  ['Reward', /reward_(mean|std)$/],
  ['KL from the reference', /^kl$/],
];

export function chartsOf(points: Map<string, [number, number][]>): { title: string; series: Series[] }[] {
  const charts = new Map<string, Series[]>();
  for (const [metric, values] of points) {
    const title = GROUPS.find(([, pattern]) => pattern.test(metric))?.[0] ?? metric;
    if (!charts.has(title)) charts.set(title, []);
    charts.get(title)!.push({ label: metric, points: values });
  }
  const order = (title: string) => {
    const i = GROUPS.findIndex(([t]) => t === title);
    return i < 0 ? GROUPS.length : i;
  };
  return [...charts].sort((a, b) => order(a[0]) - order(b[0])).map(([title, series]) => ({ title, series }));
}
