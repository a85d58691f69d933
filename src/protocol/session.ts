/**
 * One client connection on the server: the handshake (handshake.ts), then requests run
 * concurrently up to maxInFlight; at the limit the connection stops reading, so a fast
 * client is slowed down by TCP itself rather than piling frames up in server memory. A
 * request frame is released (its receive buffer reused) only after its handler settled and
 * the reply was written, because the reply may reference the request's attachment views.
 */
import { ConnectionError, DfaissError, ProtocolError, ValidationError } from '../errors.js';
import { isRequest, type Envelope, type ReplyEnvelope, type RequestEnvelope } from './codec.js';
import { errorFromWire, errorToWire } from './errors-wire.js';
import { encodeFrame, type Attachment, type EncodedFrame } from './frame.js';
import { Handshake, type HandshakeServer } from './handshake.js';
import { HANDSHAKE_METHODS } from './hello.js';
import { checkAttachments, type CallContext, type MethodSpec } from './rpc-methods.js';
import type { Connection, ReceivedFrame } from './transport.js';
import { parseWith } from './validate.js';

/** What a session needs of its server. */
export interface SessionServer extends HandshakeServer {
  readonly maxFrameBytes: number;
  readonly maxInFlight: number;
  readonly methodNames: string[];
  method(name: string): MethodSpec<unknown, unknown> | undefined;
  /** Passes one answered request to the server's onCall. */
  observe(method: string, seconds: number, ok: boolean): void;
  report(err: Error, info: { remote: string; method?: string }): void;
}

export class Session {
  private readonly handshake: Handshake;
  private inFlight = 0;
  private paused = false;
  private draining = false;
  private readonly ids = new Set<number>();
  private readonly abort = new AbortController();
  private idle: (() => void) | undefined;
  private reported: Error | undefined;
  readonly closed: Promise<void>;

  constructor(
    private readonly server: SessionServer,
    private readonly conn: Connection,
  ) {
    this.handshake = new Handshake(server, {
      remote: conn.remote,
      send: (env) => void this.sendReply(env).catch(() => {}),
      fail: (err) => this.fail(err),
      refuse: (logged, method, reply) => {
        this.reported = logged;
        this.server.report(logged, { remote: this.conn.remote, method });
        // The error reply explains the refusal; close() flushes it before the FIN.
        this.sendReply(reply).catch(() => {});
        this.conn.close();
      },
      ready: () => this.conn.setMaxFrameBytes(this.server.maxFrameBytes),
    });
    this.closed = new Promise<void>((resolve) => {
      conn.onClose((reason) => {
        this.handshake.stop();
        this.abort.abort(reason ?? new ConnectionError(`connection to ${conn.remote} closed`));
        if (reason && reason !== this.reported) this.server.report(reason, { remote: conn.remote });
        resolve();
      });
    });
    conn.onFrame((frame) => this.onFrame(frame));
  }

  async shutdown(reason: DfaissError, graceMs: number): Promise<void> {
    if (graceMs > 0 && this.inFlight > 0 && !this.conn.closed) {
      this.draining = true;
      this.conn.pause();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.conn.close(reason);
    await this.closed;
  }

  private onFrame(frame: ReceivedFrame): void {
    const env = frame.envelope;
    if (!isRequest(env)) {
      frame.release();
      if (env.id === 0 && !env.ok) {
        // The client says why it is leaving; report it and let the close follow.
        const err = errorFromWire(env.error);
        this.reported = err;
        this.server.report(err, { remote: this.conn.remote });
        return;
      }
      this.fail(new ProtocolError(`client sent a reply (id ${env.id}) but clients may only send requests`));
      return;
    }
    if (env.id === 0) {
      // Reserved for goodbye frames in every stage: a reply with id 0 would read as one.
      frame.release();
      this.fail(new ProtocolError(`request id 0 is reserved (for goodbye frames); '${env.method}' must use an id from 1`));
      return;
    }
    if (!this.handshake.done) {
      frame.release();
      this.handshake.onRequest(env);
      return;
    }
    if (env.v !== this.server.version) {
      frame.release();
      this.fail(new ProtocolError(`request uses protocol version ${env.v}, but this connection agreed on ${this.server.version}`));
      return;
    }
    if (this.ids.has(env.id)) {
      frame.release();
      this.fail(new ProtocolError(`request id ${env.id} is already in flight on this connection`));
      return;
    }
    const spec = HANDSHAKE_METHODS.includes(env.method) ? undefined : this.server.method(env.method);
    if (spec === undefined) {
      frame.release();
      const err =
        HANDSHAKE_METHODS.includes(env.method)
          ? new ProtocolError(`'${env.method}' was already exchanged on this connection`)
          : new ValidationError('method', `one of: ${this.server.methodNames.join(', ') || '(none)'}`, env.method);
      this.sendReply({ v: this.server.version, id: env.id, ok: false, error: errorToWire(err) }).catch(() => {});
      return;
    }
    this.ids.add(env.id);
    this.inFlight++;
    if (this.inFlight >= this.server.maxInFlight && !this.paused) {
      this.paused = true;
      this.conn.pause();
    }
    void this.run(env, spec, frame);
  }

  private async run(env: RequestEnvelope, spec: MethodSpec<unknown, unknown>, frame: ReceivedFrame): Promise<void> {
    const method = env.method;
    const t0 = performance.now();
    let reply: EncodedFrame;
    let retained = false;
    let ok = false;
    try {
      const args = parseWith(spec.schema, env.args, 'args');
      if (spec.attachments) checkAttachments(spec.attachments, frame.attachments);
      const ctx: CallContext = {
        method,
        requestId: env.id,
        attachments: frame.attachments,
        remote: this.conn.remote,
        signal: this.abort.signal,
        retainAttachments: () => {
          retained = true;
          return frame.release;
        },
      };
      const out = await spec.handler(args, ctx);
      reply = this.encodeOkReply({ v: this.server.version, id: env.id, ok: true, result: out?.result }, out?.attachments ?? [], method);
      ok = true;
    } catch (err) {
      reply = this.errorReply(env.id, err, method);
    }
    try {
      await this.conn.send(reply.parts);
    } catch {
      // The connection is gone; its close is reported once by the close handler.
    } finally {
      if (!retained) frame.release();
      this.server.observe(method, (performance.now() - t0) / 1000, ok);
      this.ids.delete(env.id);
      this.inFlight--;
      if (this.paused && this.inFlight < this.server.maxInFlight && !this.draining) {
        this.paused = false;
        this.conn.resume();
      }
      if (this.inFlight === 0) this.idle?.();
    }
  }

  /** Encodes an ok reply; throws (the caller answers with the error) when it cannot be sent as is. */
  private encodeOkReply(env: ReplyEnvelope, attachments: readonly Attachment[], method: string): EncodedFrame {
    const frame = encodeFrame(env, attachments);
    const limit = this.handshake.peerMaxFrameBytes;
    if (frame.byteLength > limit) {
      throw new ProtocolError(
        `the reply to '${method}' is ${frame.byteLength} bytes, more than the client's limit of ${limit} bytes (maxFrameBytes): request less data per call`,
      );
    }
    return frame;
  }

  private errorReply(id: number, err: unknown, method: string): EncodedFrame {
    if (!(err instanceof DfaissError)) {
      this.server.report(err instanceof Error ? err : new Error(String(err)), { remote: this.conn.remote, method });
    }
    return encodeFrame({ v: this.server.version, id, ok: false, error: errorToWire(err) });
  }

  private sendReply(env: Envelope, attachments: readonly Attachment[] = []): Promise<void> {
    return this.conn.send(encodeFrame(env, attachments).parts);
  }

  /** Reports `err` once (the close handler skips it) and closes the connection with it. */
  private fail(err: DfaissError): void {
    this.reported = err;
    this.server.report(err, { remote: this.conn.remote });
    this.conn.close(err);
  }
}
