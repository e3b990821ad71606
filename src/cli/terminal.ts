// What the command line prints with: colours only when stdout is a terminal, and durations as m:ss.

export const stdoutIsTty = Boolean(process.stdout.isTTY);

const paint = (code: number) => (s: string) => (stdoutIsTty ? `\x1b[${code}m${s}\x1b[0m` : s);
export const bold = paint(1);
export const dim = paint(2);
export const red = paint(31);
export const green = paint(32);
export const cyan = paint(36);

/** Seconds as m:ss. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}
