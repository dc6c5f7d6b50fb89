import type { Writable } from 'node:stream';
import { errorMessage } from '../errors';

/** Where a command writes: stdout for results, stderr for diagnostics. Injectable for tests. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

/**
 * The CLI's two output streams, written so that the output is whole when the process
 * exits. A pipe takes 64 KiB at a time; the rest waits in the stream's buffer until the
 * reader catches up, and is lost if the process exits first: `flush()` waits for it.
 *
 * A reader that goes away (`| head`, EPIPE) is no failure: what it did not read is dropped
 * quietly and the command's exit code stands. Any other write error on stdout (a full
 * disk, `/dev/full`) means the output is not whole: `writeError` names it, and the caller
 * reports it on stderr and exits 1. Nothing here ever throws or prints a stack trace.
 */
export class CliOutput {
  private readonly gone = new Set<Writable>();
  private stdoutError: Error | undefined;

  constructor(
    private readonly stdout: Writable,
    private readonly stderr: Writable,
  ) {
    for (const stream of [stdout, stderr]) {
      stream.on('error', (err: NodeJS.ErrnoException) => {
        this.gone.add(stream);
        if (stream === stdout && err.code !== 'EPIPE') this.stdoutError ??= err;
      });
    }
  }

  /** Writes `text` to stdout as it is (no newline added). */
  writeOut(text: string): void {
    this.write(this.stdout, text);
  }

  /** Writes `text` to stderr as it is (no newline added). */
  writeErr(text: string): void {
    this.write(this.stderr, text);
  }

  /** The write error that cut stdout short (not a reader that went away), if any. */
  get writeError(): string | undefined {
    return this.stdoutError === undefined ? undefined : `cannot write the output: ${errorMessage(this.stdoutError)}`;
  }

  /**
   * Resolves once everything written so far has reached the operating system (the pipe,
   * the file, the terminal), or could not: a reader that never reads keeps it waiting,
   * as any program writing to it would.
   */
  async flush(): Promise<void> {
    await Promise.all([this.stdout, this.stderr].map((stream) => this.drained(stream)));
    // A write that failed at once reports it on a later tick: let it arrive.
    await new Promise((resolve) => setImmediate(resolve));
  }

  private write(stream: Writable, text: string): void {
    if (this.gone.has(stream) || stream.destroyed) return;
    stream.write(text);
  }

  private drained(stream: Writable): Promise<void> {
    // Nothing buffered: a file or terminal took it synchronously, or a pipe has it all.
    if (this.gone.has(stream) || stream.destroyed || stream.writableLength === 0) return Promise.resolve();
    // Writes complete in order: the callback of an empty write comes after every earlier one.
    return new Promise((resolve) => {
      const done = (): void => {
        stream.off('error', done);
        stream.off('close', done);
        resolve();
      };
      stream.once('error', done);
      stream.once('close', done);
      stream.write('', done);
    });
  }
}
