/**
 * The server side of a connection's handshake: `hello` (protocol version, frame limits) and,
 * when the server requires a shared secret, `auth` (HMAC challenge-response; the secret never
 * crosses the wire). Until it completes, frames are tiny and no method of the table runs; a
 * connection that does not complete it within helloTimeoutMs is closed.
 */
import type { z } from 'zod';
import { AuthError, ProtocolError, type DfaissError } from '../errors.js';
import { AUTH_SCHEME, clientProof, newNonce, proofsEqual, serverProof } from './auth.js';
import type { Envelope, RequestEnvelope } from './codec.js';
import { errorToWire } from './errors-wire.js';
import { DEFAULT_MAX_FRAME_BYTES } from './frame.js';
import { AUTH_METHOD, HELLO_METHOD, authArgsSchema, helloArgsSchema, type ServerInfo } from './hello.js';
import { parseWith } from './validate.js';

/** What the handshake needs of the server. */
export interface HandshakeServer {
  readonly version: number;
  readonly rank: number;
  readonly helloTimeoutMs: number;
  /** The shared secret's bytes when clients must authenticate. */
  readonly secret: Buffer | undefined;
  helloInfo(): ServerInfo;
}

/** What the handshake needs of its connection (the session). */
export interface HandshakeLink {
  readonly remote: string;
  /** Sends a reply, never throws. */
  send(env: Envelope): void;
  /** Reports `err` (once: the close does not report it again) and closes the connection with it. */
  fail(err: DfaissError): void;
  /** Reports `logged`, sends `reply` (the error that explains the refusal) and closes the connection after it. */
  refuse(logged: DfaissError, method: string, reply: Envelope): void;
  /** The handshake completed: full-size frames from here on. */
  ready(): void;
}

export class Handshake {
  /** Progress: waiting for hello, waiting for auth (secret required), done. */
  private stage: 'hello' | 'auth' | 'ready' = 'hello';
  private clientNonce = '';
  private serverNonce = '';
  private timer: NodeJS.Timeout | undefined;
  /** The largest frame the client accepts, from its hello. */
  peerMaxFrameBytes = DEFAULT_MAX_FRAME_BYTES;

  constructor(
    private readonly server: HandshakeServer,
    private readonly link: HandshakeLink,
  ) {
    this.timer = setTimeout(() => {
      if (this.stage === 'auth') link.fail(new AuthError(`no auth within ${server.helloTimeoutMs} ms of connecting; closing the connection`));
      else link.fail(new ProtocolError(`no hello within ${server.helloTimeoutMs} ms of connecting; closing the idle connection`));
    }, server.helloTimeoutMs);
    this.timer.unref();
  }

  get done(): boolean {
    return this.stage === 'ready';
  }

  /** The connection closed: no more deadline. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }

  /** A request while the handshake is not done (its frame is already released). */
  onRequest(env: RequestEnvelope): void {
    if (this.stage === 'hello') {
      if (env.method !== HELLO_METHOD) {
        this.link.fail(new ProtocolError(`the first request must be '${HELLO_METHOD}', got '${env.method}'`));
        return;
      }
      this.hello(env);
      return;
    }
    if (env.v !== this.server.version) {
      this.link.fail(new ProtocolError(`request uses protocol version ${env.v}, but this connection agreed on ${this.server.version}`));
      return;
    }
    if (env.method !== AUTH_METHOD) {
      this.link.fail(new AuthError(`client ${this.link.remote} sent '${env.method}' before authenticating: this server requires a shared secret`));
      return;
    }
    this.authenticate(env);
  }

  private hello(env: RequestEnvelope): void {
    const version = this.server.version;
    let err: DfaissError | undefined;
    let args: z.infer<typeof helloArgsSchema> | undefined;
    try {
      args = parseWith(helloArgsSchema, env.args, 'args');
    } catch (e) {
      err = new ProtocolError(`bad hello from ${this.link.remote}: ${(e as Error).message}`);
    }
    if (args && args.version !== version) {
      err = new ProtocolError(
        `client ${this.link.remote} speaks protocol version ${args.version} but this server (rank ${this.server.rank}) speaks version ${version}: run the same dfaiss version on clients and servers`,
      );
    }
    if (!err && args && this.server.secret && args.nonce === undefined) {
      err = new AuthError(
        `server rank ${this.server.rank} requires a shared secret, and the client sent no credentials: pass { secret } (IndexClient / RpcClient option), or --secret-file / DFAISS_SECRET on the command line`,
      );
    }
    if (err || !args) {
      this.refuse(env.id, err ?? new ProtocolError('bad hello'), HELLO_METHOD);
      return;
    }
    if (args.maxFrameBytes !== undefined) this.peerMaxFrameBytes = args.maxFrameBytes;
    if (this.server.secret && args.nonce !== undefined) {
      // Challenge: the client must prove it knows the secret before anything else.
      this.stage = 'auth';
      this.clientNonce = args.nonce;
      this.serverNonce = newNonce();
      const result: ServerInfo = { ...this.server.helloInfo(), auth: { scheme: AUTH_SCHEME, nonce: this.serverNonce } };
      this.link.send({ v: version, id: env.id, ok: true, result });
      return;
    }
    this.ready();
    this.link.send({ v: version, id: env.id, ok: true, result: this.server.helloInfo() });
  }

  /** Second step: checks the client's proof and answers with the server's. */
  private authenticate(env: RequestEnvelope): void {
    const secret = this.server.secret as Buffer;
    const version = this.server.version;
    const parsed = authArgsSchema.safeParse(env.args);
    const expected = clientProof(secret, this.serverNonce, this.clientNonce, version);
    if (!parsed.success || !proofsEqual(expected, parsed.data.proof)) {
      this.refuse(
        env.id,
        new AuthError(
          `authentication failed: the client's shared secret does not match the one of server rank ${this.server.rank}; give clients and servers the same secret (--secret-file / DFAISS_SECRET / { secret })`,
        ),
        AUTH_METHOD,
      );
      return;
    }
    this.ready();
    const result = { proof: serverProof(secret, this.clientNonce, this.serverNonce, version) };
    this.link.send({ v: version, id: env.id, ok: true, result });
  }

  private ready(): void {
    this.stage = 'ready';
    this.stop();
    this.link.ready();
  }

  /** Answers a handshake request with an error, logs it, and closes the connection. */
  private refuse(id: number, e: DfaissError, method: string): void {
    this.stop();
    const logged = e instanceof AuthError ? new AuthError(`client ${this.link.remote} refused: ${e.message}`) : e;
    this.link.refuse(logged, method, { v: this.server.version, id, ok: false, error: errorToWire(e) });
  }
}
