import { OutboxError } from '../errors';
import { checkText, shown, ValueProblem } from './storable';

/**
 * A typed message definition: what a service publishes, with the payload type checked
 * at compile time by `enqueue`.
 *
 * ```ts
 * const OrderCreated = defineMessage<{ orderId: string; total: number }>({
 *   type: 'order.created',
 *   exchange: 'orders',
 *   routingKey: 'order.created',
 * });
 * await enqueue(client, OrderCreated, { orderId: 'o-1', total: 1990 }, { partitionKey: 'o-1' });
 * ```
 */
export interface MessageDefinition<TPayload> {
  /** AMQP `type`, e.g. `order.created`. */
  readonly type: string;
  /** Exchange to publish to; `''` (the default exchange) sends a command to the queue named by the routing key. */
  readonly exchange: string;
  /** Routing key; a function derives it from the payload. Default: `type`. */
  readonly routingKey: string | ((payload: TPayload) => string);
  /** AMQP `content-type`. Default `application/json`; a Buffer payload is sent as raw bytes. */
  readonly contentType: string;
  /** Phantom field carrying the payload type; never set at run time. */
  readonly __payload?: (payload: TPayload) => void;
}

/** Options of `defineMessage`. */
export interface DefineMessageOptions<TPayload> {
  readonly type: string;
  readonly exchange?: string;
  readonly routingKey?: string | ((payload: TPayload) => string);
  readonly contentType?: string;
}

function invalid(what: string): OutboxError {
  return new OutboxError('INVALID_ARGUMENT', what);
}

/**
 * Declares a message type; give the payload type explicitly: `defineMessage<Payload>({ … })`.
 * Throws an `OutboxError` `INVALID_ARGUMENT` for a definition no row could carry: an empty
 * type or content type, a command without a queue, a value that is not a string or that
 * PostgreSQL cannot store (a NUL character, a lone surrogate).
 */
export function defineMessage<TPayload>(options: DefineMessageOptions<TPayload>): MessageDefinition<TPayload> {
  if (typeof options.type !== 'string' || options.type.trim() === '') {
    throw invalid('defineMessage: type must be a non-empty string, e.g. "order.created"');
  }
  const name = `defineMessage(${shown(options.type)})`;
  const text = (field: string, value: unknown): void => {
    try {
      checkText(field, value);
    } catch (err: unknown) {
      if (err instanceof ValueProblem) throw invalid(`${name}: ${err.message}`);
      throw err;
    }
  };
  text('type', options.type);
  const exchange = options.exchange ?? '';
  text('exchange', exchange);
  const routingKey = options.routingKey ?? options.type;
  if (typeof routingKey !== 'function') text('routingKey', routingKey);
  if (typeof routingKey === 'string' && exchange === '' && routingKey === '') {
    throw invalid(`${name}: a command (default exchange) needs a routing key naming the target queue`);
  }
  const contentType = options.contentType ?? 'application/json';
  text('contentType', contentType);
  if (contentType === '') throw invalid(`${name}: contentType must not be empty`);
  return Object.freeze({ type: options.type, exchange, routingKey, contentType });
}
