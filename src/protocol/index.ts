/** Wire protocol and transport (internal barrel; see docs/protocol.md). */
export {
  PROTOCOL_VERSION,
  DEFAULT_MAX_FRAME_BYTES,
  MAX_FRAME_BYTES_LIMIT,
  HEADER_BYTES,
  FRAME_ALIGN,
  FRAME_MAGIC,
  encodeFrame,
  decodeFrame,
  parseHeader,
  dtypeOf,
  align8,
  type Attachment,
  type Dtype,
  type EncodedFrame,
  type DecodedFrame,
  type FrameHeader,
} from './frame.js';
export {
  isRequest,
  packEnvelope,
  unpackEnvelope,
  assertPlain,
  type Envelope,
  type RequestEnvelope,
  type ReplyEnvelope,
  type OkReplyEnvelope,
  type ErrorReplyEnvelope,
  type WireError,
  type AttachmentDescriptor,
} from './codec.js';
export { errorToWire, errorFromWire, knownErrorCodes } from './errors-wire.js';
export { BufferPool, type PoolOptions, type Lease } from './pool.js';
export { FrameAssembler, type RawFrame, type AssemblerOptions } from './assembler.js';
export type { Transport, Connection, Listener, ReceivedFrame, ConnectionOptions, ConnectOptions, ListenOptions } from './transport.js';
export { TcpTransport, SocketConnection, formatHostPort, type TcpTransportOptions } from './tcp.js';
export { TlsTransport, readPem, explainTlsError, type TlsTransportOptions, type TlsServerOptions, type TlsClientOptions, type PemSource } from './tls.js';
export {
  HELLO_METHOD,
  AUTH_METHOD,
  HANDSHAKE_METHODS,
  helloArgsSchema,
  helloResultSchema,
  authArgsSchema,
  authResultSchema,
  type HelloArgs,
  type ServerInfo,
} from './hello.js';
export { AUTH_SCHEME, MIN_SECRET_BYTES, clientProof, serverProof, newNonce, proofsEqual, readSecretFile, secretBytes, type Secret } from './auth.js';
export { parseWith, issueToValidationError } from './validate.js';
export {
  RpcServer,
  DEFAULT_MAX_CONNECTIONS,
  defineMethod,
  type RpcServerOptions,
  type MethodSpec,
  type MethodTable,
  type CallContext,
  type HandlerReply,
  type AttachmentRule,
} from './rpc-server.js';
export { RpcClient, type RpcClientOptions, type CallOptions, type CallResult } from './rpc-client.js';
