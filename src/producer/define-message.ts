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

/** Declares a message type; give the payload type explicitly: `defineMessage<Payload>({ … })`. */
export function defineMessage<TPayload>(options: DefineMessageOptions<TPayload>): MessageDefinition<TPayload> {
  if (typeof options.type !== 'string' || options.type.trim() === '') {
    throw new TypeError('defineMessage: type must be a non-empty string, e.g. "order.created"');
  }
  const exchange = options.exchange ?? '';
  if (typeof exchange !== 'string') throw new TypeError(`defineMessage(${options.type}): exchange must be a string`);
  const routingKey = options.routingKey ?? options.type;
  if (typeof routingKey === 'string' && exchange === '' && routingKey === '') {
    throw new TypeError(`defineMessage(${options.type}): a command (default exchange) needs a routing key naming the target queue`);
  }
  return Object.freeze({ type: options.type, exchange, routingKey, contentType: options.contentType ?? 'application/json' });
}
