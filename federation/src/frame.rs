//! The wire codec: envelopes and their length-prefixed framing.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload, a
//! bincode (2.x, standard config) encoding of the envelope. The length is
//! checked against the configured maximum *before* any payload byte is read,
//! so an oversized frame costs four bytes of memory. Decoding is pure (no
//! I/O) so it can be fuzzed (`fuzz/fuzz_targets/frame_decode.rs`) and, as
//! bincode is unmaintained (RUSTSEC-2025-0141), swapped for another format
//! without touching the transport: nothing outside this module knows the
//! payload layout.
//!
//! The sender field is checked here, not trusted: [`decode_payload`] takes the
//! peer's authenticated [`NodeId`] (from its TLS certificate) and refuses an
//! envelope that claims anyone else ([`FrameError::ForgedSender`]). The body
//! is encoded as one length-prefixed byte run and decoded without copying
//! (a [`Bytes`] slice of the received payload).

use std::fmt;

use bytes::Bytes;
use federact_config::NodeId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::FrameError;
use crate::trace::TraceContext;

/// Length of the frame length prefix.
pub const PREFIX_LEN: usize = 4;
/// Longest actor address an envelope may carry.
pub const MAX_ACTOR_LEN: usize = 255;
/// Longest W3C `traceparent` accepted (version 00 is 55 characters; later
/// versions may append fields).
pub const MAX_TRACEPARENT_LEN: usize = 128;
/// Longest W3C `tracestate` accepted (the W3C recommends propagating at least
/// 512 characters).
pub const MAX_TRACESTATE_LEN: usize = 1024;

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A request; the sender waits for a `Response` or `Error` on the same
    /// stream.
    Request,
    /// The answer to a request.
    Response,
    /// A message that expects no answer.
    OneWay,
    /// The header of a bulk transfer; raw chunks follow on the stream.
    Stream,
    /// The actor failed the request; the body is a UTF-8 message.
    Error,
}

/// A decoded envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender: always the authenticated peer (see [`decode_payload`]).
    pub from: NodeId,
    /// The target actor's address on the receiving node.
    pub to: String,
    /// Correlates a response with its request.
    pub correlation: u64,
    /// What the envelope is.
    pub kind: Kind,
    /// The sender's W3C trace context (empty when not tracing).
    pub trace: TraceContext,
    /// The payload.
    pub body: Bytes,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("correlation", &self.correlation)
            .field("kind", &self.kind)
            .field("trace", &self.trace)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// An envelope to encode, borrowing its parts (no copies before encoding).
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeRef<'a> {
    /// The sender (our own id).
    pub from: &'a NodeId,
    /// The target actor.
    pub to: &'a str,
    /// Correlation id.
    pub correlation: u64,
    /// What the envelope is.
    pub kind: Kind,
    /// The trace context to propagate.
    pub trace: &'a TraceContext,
    /// The payload.
    pub body: &'a [u8],
}

/// Serde adapter: a byte slice encoded as one length-prefixed run (serde's
/// default for `[u8]` is a sequence, one call per byte).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawBytes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RawBytes<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(RawBytes(v))
            }
        }
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
}

/// The payload layout. Field order is the wire order.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    from: [u8; 32],
    to: &'a str,
    correlation: u64,
    kind: Kind,
    traceparent: &'a str,
    tracestate: &'a str,
    #[serde(borrow)]
    body: RawBytes<'a>,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `env` as one frame (prefix included). Fails with
/// [`FrameError::TooLarge`] if the payload would exceed `max` bytes, in which
/// case nothing should be sent.
pub fn encode(env: &EnvelopeRef<'_>, max: u32) -> Result<Vec<u8>, FrameError> {
    let wire = Wire {
        from: *env.from.as_bytes(),
        to: env.to,
        correlation: env.correlation,
        kind: env.kind,
        traceparent: env.trace.traceparent(),
        tracestate: env.trace.tracestate(),
        body: RawBytes(env.body),
    };
    // Upper bound of the payload: fixed fields + varint lengths + strings.
    let estimate = 32 + 10 + 5 + 3 * 9 + env.to.len() + env.trace.len() + env.body.len();
    let mut out = Vec::with_capacity(PREFIX_LEN + estimate);
    out.extend_from_slice(&[0; PREFIX_LEN]);
    bincode::serde::encode_into_std_write(&wire, &mut out, config())
        .map_err(|_| FrameError::Malformed("envelope does not encode"))?;
    let len = out.len() - PREFIX_LEN;
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= max)
        .ok_or(FrameError::TooLarge {
            len: len as u64,
            max,
        })?;
    out[..PREFIX_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(out)
}

/// Reads a length prefix and checks it against `max`: the number of payload
/// bytes to read next.
pub fn payload_len(prefix: [u8; PREFIX_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len: u64::from(len),
        max,
    })
}

/// Decodes one payload (without its prefix) received from the authenticated
/// `peer`. The body is a zero-copy slice of `payload`.
pub fn decode_payload(payload: Bytes, peer: &NodeId) -> Result<Envelope, FrameError> {
    let (wire, used): (Wire<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(&payload, config())
            .map_err(|_| FrameError::Malformed("not a bincode envelope"))?;
    if used != payload.len() {
        return Err(FrameError::Malformed("trailing bytes after the envelope"));
    }
    if wire.from != *peer.as_bytes() {
        return Err(FrameError::ForgedSender);
    }
    if wire.to.is_empty() || wire.to.len() > MAX_ACTOR_LEN {
        return Err(FrameError::Malformed("actor address empty or too long"));
    }
    if wire.traceparent.len() > MAX_TRACEPARENT_LEN || wire.tracestate.len() > MAX_TRACESTATE_LEN {
        return Err(FrameError::Malformed("trace context too long"));
    }
    let trace = TraceContext::from_parts(wire.traceparent, wire.tracestate);
    let body = payload.slice_ref(wire.body.0);
    let to = wire.to.to_owned();
    Ok(Envelope {
        from: *peer,
        to,
        correlation: wire.correlation,
        kind: wire.kind,
        trace,
        body,
    })
}

/// Decodes the first frame of `buf`, a byte stream from `peer`.
///
/// Returns `Ok(None)` if `buf` does not yet hold a whole frame (a partial
/// frame is an expected outcome, not an error), or the envelope and the
/// number of bytes it used. A prefix over `max` is refused before the payload
/// is looked at.
pub fn decode(
    buf: &[u8],
    max: u32,
    peer: &NodeId,
) -> Result<Option<(Envelope, usize)>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let mut p = [0; PREFIX_LEN];
    p.copy_from_slice(prefix);
    let len = payload_len(p, max)?;
    let Some(payload) = buf.get(PREFIX_LEN..PREFIX_LEN + len) else {
        return Ok(None);
    };
    let env = decode_payload(Bytes::copy_from_slice(payload), peer)?;
    Ok(Some((env, PREFIX_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use federact_config::NodeKey;

    fn sample<'a>(from: &'a NodeId, trace: &'a TraceContext, body: &'a [u8]) -> EnvelopeRef<'a> {
        EnvelopeRef {
            from,
            to: "thumbnail",
            correlation: 42,
            kind: Kind::Request,
            trace,
            body,
        }
    }

    #[test]
    fn round_trips_and_reports_partial_frames() {
        let id = NodeKey::from_seed(&[1; 32]).id();
        let trace = TraceContext::from_parts(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "vendor=x",
        );
        let frame = encode(&sample(&id, &trace, b"hello"), 1024).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut], 1024, &id).unwrap(), None, "cut {cut}");
        }
        let (env, used) = decode(&frame, 1024, &id).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(env.from, id);
        assert_eq!(env.to, "thumbnail");
        assert_eq!(env.correlation, 42);
        assert_eq!(env.kind, Kind::Request);
        assert_eq!(env.trace, trace);
        assert_eq!(&env.body[..], b"hello");
    }

    #[test]
    fn refusals_are_specific() {
        let id = NodeKey::from_seed(&[1; 32]).id();
        let other = NodeKey::from_seed(&[2; 32]).id();
        let empty = TraceContext::default();
        let frame = encode(&sample(&id, &empty, &[7; 100]), 1024).unwrap();
        let cases: Vec<(&str, Vec<u8>, u32, &NodeId, FrameError)> = vec![
            (
                "prefix over max, payload absent",
                vec![0, 0, 4, 1],
                1024,
                &id,
                FrameError::TooLarge {
                    len: 1025,
                    max: 1024,
                },
            ),
            (
                "forged sender",
                frame.clone(),
                1024,
                &other,
                FrameError::ForgedSender,
            ),
            (
                "garbage payload",
                vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
                1024,
                &id,
                FrameError::Malformed("not a bincode envelope"),
            ),
            (
                "trailing bytes",
                {
                    let mut f = frame.clone();
                    f.push(0);
                    let len = (f.len() - PREFIX_LEN) as u32;
                    f[..4].copy_from_slice(&len.to_be_bytes());
                    f
                },
                1024,
                &id,
                FrameError::Malformed("trailing bytes after the envelope"),
            ),
        ];
        for (desc, input, max, peer, expected) in cases {
            assert_eq!(decode(&input, max, peer), Err(expected), "{desc}");
        }
        assert!(matches!(
            encode(&sample(&id, &empty, &[0; 2000]), 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn kind() -> impl Strategy<Value = Kind> {
            prop_oneof![
                Just(Kind::Request),
                Just(Kind::Response),
                Just(Kind::OneWay),
                Just(Kind::Stream),
                Just(Kind::Error),
            ]
        }

        proptest! {
            #[test]
            fn any_envelope_round_trips(
                to in "[a-z0-9/._-]{1,255}",
                correlation in any::<u64>(),
                kind in kind(),
                tp in "[0-9a-f-]{0,64}",
                ts in "[ -~]{0,200}",
                body in proptest::collection::vec(any::<u8>(), 0..2048),
            ) {
                let id = NodeKey::from_seed(&[5; 32]).id();
                let trace = TraceContext::from_parts(&tp, &ts);
                let env = EnvelopeRef { from: &id, to: &to, correlation, kind, trace: &trace, body: &body };
                let frame = encode(&env, 1 << 16).unwrap();
                let (back, used) = decode(&frame, 1 << 16, &id).unwrap().unwrap();
                prop_assert_eq!(used, frame.len());
                prop_assert_eq!(back.to, to);
                prop_assert_eq!(back.correlation, correlation);
                prop_assert_eq!(back.kind, kind);
                prop_assert_eq!(back.trace, trace);
                prop_assert_eq!(&back.body[..], &body[..]);
            }

            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let id = NodeKey::from_seed(&[5; 32]).id();
                let mut rest = &data[..];
                while let Ok(Some((_, used))) = decode(rest, 1 << 12, &id) {
                    prop_assert!(used <= rest.len());
                    rest = &rest[used..];
                }
            }

            #[test]
            fn corrupted_frames_are_refused_or_partial(
                body in proptest::collection::vec(any::<u8>(), 0..256),
                flip in any::<usize>(),
                bit in 0u8..8,
            ) {
                let id = NodeKey::from_seed(&[5; 32]).id();
                let trace = TraceContext::default();
                let env = EnvelopeRef { from: &id, to: "a", correlation: 1, kind: Kind::OneWay, trace: &trace, body: &body };
                let mut frame = encode(&env, 1 << 16).unwrap();
                let i = flip % frame.len();
                frame[i] ^= 1 << bit;
                // Must not panic; a flipped sender byte is a forgery.
                let r = decode(&frame, 1 << 16, &id);
                if (PREFIX_LEN..PREFIX_LEN + 32).contains(&i) {
                    prop_assert_eq!(r, Err(FrameError::ForgedSender));
                }
            }
        }
    }
}
