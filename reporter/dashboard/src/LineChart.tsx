// A line chart (Chart.js) kept in step with its props: created once per canvas, data replaced on
// every render, destroyed on unmount.
import { useEffect, useRef } from 'react';
import {
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from 'chart.js';

Chart.register(CategoryScale, LinearScale, LineController, LineElement, PointElement, Legend, Tooltip, Filler);

export interface Line {
  label: string;
  data: (number | null)[];
  color: string;
  axis?: 'y' | 'y1';
  dashed?: boolean;
}

export function LineChart(props: { id: string; labels: string[]; lines: Line[]; yTitle?: string; y1Title?: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);

  useEffect(() => {
    if (!canvas.current) return;
    const c = new Chart(canvas.current, {
      type: 'line',
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: 'index', intersect: false },
        plugins: { legend: { position: 'bottom' } },
        scales: {
          x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
          y: { beginAtZero: true, position: 'left' },
          y1: { beginAtZero: true, position: 'right', grid: { drawOnChartArea: false }, display: false },
        },
      },
    });
    chart.current = c;
    return () => {
      c.destroy();
      chart.current = null;
    };
  }, []);

  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    c.data.labels = props.labels;
    c.data.datasets = props.lines.map((l) => ({
      label: l.label,
      data: l.data,
      borderColor: l.color,
      backgroundColor: l.color,
      borderDash: l.dashed ? [6, 4] : [],
      pointRadius: 0,
      borderWidth: 2,
      yAxisID: l.axis ?? 'y',
      spanGaps: true,
    }));
    const scales = c.options.scales as Record<string, { display?: boolean; title?: { display: boolean; text: string } }>;
    scales.y1.display = props.lines.some((l) => l.axis === 'y1');
    scales.y.title = { display: !!props.yTitle, text: props.yTitle ?? '' };
    scales.y1.title = { display: !!props.y1Title, text: props.y1Title ?? '' };
    c.update();
  }, [props.labels, props.lines, props.yTitle, props.y1Title]);

  return (
    <div className="chart" data-testid={props.id}>
      <canvas ref={canvas} />
    </div>
  );
}
