import { ROOT_CONTEXT, trace, type TextMapGetter } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { formatTraceParent, parseTraceParent } from '../../src/util/trace-context';

// The libraries' own traceparent reader (they load no OpenTelemetry package for it),
// held to the SDK's propagator, which the relay uses.

const propagator = new W3CTraceContextPropagator();
const getter: TextMapGetter<Record<string, string>> = { keys: (c) => Object.keys(c), get: (c, k) => c[k] };

function sdkReads(value: string): { traceId: string; spanId: string; traceFlags: number } | undefined {
  const context = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, { traceparent: value }, getter));
  return context && { traceId: context.traceId, spanId: context.spanId, traceFlags: context.traceFlags };
}

const VALUES = [
  '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00',
  '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03',
  ' 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ',
  '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future',
  '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  '00-00000000000000000000000000000000-b7ad6b7169203331-01',
  '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
  '00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01',
  '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra',
  '00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01',
  '0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331',
  '',
  'garbage',
];

test.each(VALUES)('parseTraceParent(%j) reads what the SDK propagator reads', (value) => {
  expect(parseTraceParent(value)).toEqual(sdkReads(value));
});

test('only strings are trace context', () => {
  expect(parseTraceParent(undefined)).toBeUndefined();
  expect(parseTraceParent(12)).toBeUndefined();
  expect(parseTraceParent(Buffer.from(VALUES[0]!))).toBeUndefined();
});

test('formatTraceParent writes version 00, and reads back', () => {
  const context = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 };
  expect(formatTraceParent(context)).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  expect(parseTraceParent(formatTraceParent(context))).toEqual(context);
});
