//! QUIC application error codes used on the wire.
//!
//! Stream codes go in `STOP_SENDING` / `RESET_STREAM` and tell the other side
//! precisely why one stream was refused (the connection stays up);
//! connection codes go in `CONNECTION_CLOSE`.

/// Stream: the frame's length prefix was over the receiver's maximum.
pub const FRAME_TOO_LARGE: u32 = 0x10;
/// Stream: the frame did not decode.
pub const FRAME_MALFORMED: u32 = 0x11;
/// Stream: the envelope's `from` was not the authenticated peer.
pub const FORGED_SENDER: u32 = 0x12;
/// Stream: no actor of that name is registered.
pub const UNKNOWN_ACTOR: u32 = 0x13;
/// Stream: the actor's inbox is full and the receiver fails fast.
pub const INBOX_FULL: u32 = 0x14;
/// Stream: the actor dropped the request without answering.
pub const NO_RESPONSE: u32 = 0x15;
/// Stream: the receiver rejected a transfer.
pub const TRANSFER_REJECTED: u32 = 0x16;
/// Stream or connection: the node is shutting down.
pub const SHUTDOWN: u32 = 0x17;

/// Connection: a second connection between the same two nodes lost the
/// tie-break (the one dialed by the smaller node id wins). Streams opened on
/// it were never processed, so the sender may retry them.
pub const DUPLICATE: u32 = 0x01;
/// Connection: the peer is not (or no longer) a member, or spoke the wrong
/// ALPN.
pub const NOT_MEMBER: u32 = 0x02;
/// Connection: the peer replaced this connection after a restart.
pub const SUPERSEDED: u32 = 0x03;
