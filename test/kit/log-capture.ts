import { Writable } from 'node:stream';

/** The JSON log lines an in-process relay (or the demo) wrote, kept instead of printed. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _encoding, callback) => {
      this.lines.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((l) => l.length > 0),
      );
      callback();
    },
  });

  entries(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  has(msg: string): boolean {
    return this.entries().some((e) => e['msg'] === msg);
  }
}
