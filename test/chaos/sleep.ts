/** Waits `ms`: the chaos run paces its producers and its fault schedule with it. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
